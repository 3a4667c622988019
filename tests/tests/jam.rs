//! A relay and musicians over real QUIC sockets on loopback: audio arrives intact and on time,
//! in direct and relay mode, and the relay restarts without ending the jam.

use std::time::{Duration, Instant};

use echoel_net::Invite;
use echoel_plugin::engine::INTERNAL_RATE_HZ;
use echoel_plugin::headless::DocEdit;
use echoel_plugin::headless::{measure_lag, HeadlessReport, Source};
use echoel_tests::pauses::{paused_between, PauseWatch};
use echoel_tests::{
    lag_per_second, network_runtime, one_at_a_time, play, play_editing, play_realtime, play_with,
    realtime_runtime, Musician, TestRelay,
};

fn band() -> Vec<Musician> {
    ["ana", "ben", "cleo"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| Musician {
            name,
            source: Source::Voice(i as u32 + 1),
        })
        .collect()
}

/// Every musician heard every other, intact (correlation > 0.9) and on the expected path: the
/// slowest pair's latency in ms.
fn everyone_heard_everyone(reports: &[HeadlessReport], direct: bool) -> f32 {
    let mut slowest = 0.0f32;
    for listener in reports {
        assert_eq!(
            listener.recordings.len(),
            reports.len() - 1,
            "{} heard {:?}",
            listener.name,
            listener
                .recordings
                .values()
                .map(|r| &r.name)
                .collect::<Vec<_>>()
        );
        for rec in listener.recordings.values() {
            let sender = reports
                .iter()
                .find(|r| r.name == rec.name)
                .expect("known sender");
            let a = measure_lag(&sender.sent, &rec.samples, 200.0).expect("signal");
            let ms = a.lag_ms(INTERNAL_RATE_HZ);
            println!(
                "{} → {}: {:.2} ms, correlation {:.4}, {}, {:?}",
                rec.name,
                listener.name,
                ms,
                a.correlation,
                if rec.direct { "direct" } else { "relay" },
                rec.stream
            );
            assert!(
                a.correlation > 0.9,
                "{} → {}: {a:?}",
                rec.name,
                listener.name
            );
            slowest = slowest.max(ms);
            assert_eq!(rec.direct, direct, "{} → {} path", rec.name, listener.name);
        }
    }
    slowest
}

// Runs are 4 s: latency is measured over the last second, after the jitter buffer's two-second
// warm-up (connection set-up, switch to a direct path) has settled.
#[test]
fn three_musicians_hear_each_other_over_direct_paths() {
    let _one = one_at_a_time();
    let rt = network_runtime();
    let mut measured = Vec::new();
    // Up to three runs, the first within 40 ms passes: one run on a loaded machine can grow
    // its buffers for a moment, a regression shows in every run.
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start(dir.path());
        let invite = relay.room("direct");
        let reports: Vec<_> = play(&invite, band(), 4.0, false, &rt)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let slowest = everyone_heard_everyone(&reports, true);
        // Direct paths carry the audio and the relay stands by: its copies came second and
        // were dropped (on loopback either may win a race now and then).
        for r in &reports {
            let sent: u64 = reports.iter().map(|r| r.engine.packets_sent).sum();
            println!(
                "{}: {} second copies dropped of {sent} frames sent",
                r.name, r.duplicates
            );
            assert!(r.duplicates * 4 > sent, "{}: no standby copies", r.name);
        }
        measured.push(slowest);
        if slowest < 40.0 {
            return;
        }
    }
    panic!("slowest pair {measured:?} ms in every run");
}

#[test]
fn three_musicians_hear_each_other_through_the_relay() {
    let _one = one_at_a_time();
    let rt = network_runtime();
    let mut measured = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start(dir.path());
        let invite = relay.room("relayed");
        let reports: Vec<_> = play(&invite, band(), 4.0, true, &rt)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let slowest = everyone_heard_everyone(&reports, false);
        let forwarded = relay.metric("echoel_relay_datagrams_forwarded_total");
        assert!(forwarded > 3 * 2 * 1000, "relay forwarded only {forwarded}");
        measured.push(slowest);
        if slowest < 40.0 {
            return;
        }
    }
    panic!("slowest pair {measured:?} ms in every run");
}

#[test]
fn round_trip_to_an_echo_partner() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let invite = relay.room("echo");
    let rt = network_runtime();
    // One run on a loaded machine can grow its buffers for a moment; a real regression shows in
    // every run. Up to three runs, the first within the bound passes.
    let mut measured = Vec::new();
    for _ in 0..3 {
        let (rtt, correlation) = echo_round_trip(&invite, &rt);
        assert!(correlation > 0.8, "correlation {correlation}");
        measured.push(rtt);
        // Two coded passes plus two buffers; bounded generously here, the target is in the note.
        if rtt < 40.0 {
            return;
        }
    }
    panic!("round trip {measured:?} ms in every run");
}

/// One 4 s run of a player and a mirror that plays back what it hears: the player's
/// mouth-to-ear round trip in ms, and how well the echo matches what it sent.
fn echo_round_trip(invite: &Invite, rt: &tokio::runtime::Runtime) -> (f64, f64) {
    let band = vec![
        Musician {
            name: "player",
            source: Source::Voice(2),
        },
        Musician {
            name: "mirror",
            source: Source::Echo,
        },
    ];
    let reports: Vec<_> = play(invite, band, 4.0, false, rt)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let player = &reports[0];
    let heard = player
        .recordings
        .values()
        .next()
        .expect("player heard the mirror");
    let a = measure_lag(&player.sent, &heard.samples, 300.0).expect("signal");
    let rtt = a.lag_ms(INTERNAL_RATE_HZ);
    println!(
        "mouth-to-ear round trip at 2.5 ms frames, 32-frame blocks: {rtt:.2} ms (correlation {:.3}; target ≤ 16 ms)",
        a.correlation
    );
    for r in &reports {
        for rec in r.recordings.values() {
            println!(
                "  {} hears {}: {:?}, delay splices {}",
                r.name, rec.name, rec.stream, r.engine.delay_splices
            );
        }
    }
    (f64::from(rtt), f64::from(a.correlation))
}

#[test]
fn relay_restart_resumes_audio_within_three_seconds() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let addr = relay.addr;
    let invite = relay.room("restart");
    let rt = network_runtime();
    let seconds = 7.0;
    let band = vec![
        Musician {
            name: "ana",
            source: Source::Voice(1),
        },
        Musician {
            name: "ben",
            source: Source::Voice(2),
        },
    ];
    let start = std::time::Instant::now();
    let restarter = std::thread::spawn(move || {
        // Playing starts 1.2 s after `play` begins; stop the relay 2 s into the song.
        std::thread::sleep(std::time::Duration::from_millis(3200));
        relay.stop();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let back = TestRelay::start_with(addr, dir.path(), |_| {});
        let restarted_at = start.elapsed();
        (back, restarted_at, dir)
    });
    let reports: Vec<_> = play(&invite, band, seconds, true, &rt)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (_relay, restarted_at, _dir) = restarter.join().unwrap();
    // Timeline of the recordings starts 1.2 s after `start`.
    let restart_s = restarted_at.as_secs_f32() - 1.2;
    for r in &reports {
        let rec = r.recordings.values().next().expect("heard the other");
        let rate = INTERNAL_RATE_HZ as usize;
        // First 10 ms window after the restart with sound in it.
        let from = (restart_s * rate as f32) as usize;
        let window = rate / 100;
        let resumed = rec.samples[from..]
            .chunks(window)
            .position(|w| w.iter().map(|s| s * s).sum::<f32>() / window as f32 > 1e-4)
            .map(|i| (i * window) as f32 / rate as f32);
        println!(
            "{} heard {} again {:?} s after the relay restarted",
            r.name, rec.name, resumed
        );
        let resumed = resumed.expect("audio resumed");
        assert!(resumed < 3.0, "audio resumed after {resumed} s");
        assert!(r.engine.frames_decoded > 0);
    }
}

#[test]
fn redundancy_fills_the_losses_of_a_lossy_relay_path() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // The relay drops every 10th audio datagram: a 10 % lossy path.
    let relay = TestRelay::start_with("127.0.0.1:0".parse().unwrap(), dir.path(), |r| {
        r.danger_drop_every(10)
    });
    let rt = network_runtime();
    let duo = || {
        ["ana", "ben"]
            .into_iter()
            .enumerate()
            .map(|(i, name)| Musician {
                name,
                source: Source::Voice(i as u32 + 1),
            })
            .collect::<Vec<_>>()
    };
    let concealed = |reports: &[HeadlessReport]| -> (u64, u64, f32) {
        let mut total = (0, 0, 1.0f32);
        for listener in reports {
            total.1 += listener.recovered;
            for rec in listener.recordings.values() {
                total.0 += rec.stream.map_or(0, |s| s.frames_concealed);
                let sender = reports.iter().find(|r| r.name == rec.name).unwrap();
                let a = measure_lag(&sender.sent, &rec.samples, 200.0).expect("signal");
                total.2 = total.2.min(a.correlation);
            }
        }
        total
    };
    // A loaded moment conceals frames of its own (a late wake is not a lost packet): take the
    // first of up to three pairs of runs where redundancy shows; a regression shows in all.
    let mut runs = Vec::new();
    for attempt in 0..3 {
        let plain: Vec<_> = play_with(
            &relay.room(&format!("plain{attempt}")),
            duo(),
            2.5,
            true,
            0,
            &rt,
        )
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let red: Vec<_> = play_with(
            &relay.room(&format!("red{attempt}")),
            duo(),
            2.5,
            true,
            1,
            &rt,
        )
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let (c0, r0, _) = concealed(&plain);
        let (c1, r1, corr) = concealed(&red);
        println!("10 % loss: {c0} frames concealed without redundancy; with one frame of redundancy {c1} concealed, {r1} recovered (correlation {corr:.3})");
        runs.push((c0, r0, c1, r1, corr));
        if c1 * 4 < c0 {
            break;
        }
    }
    let (c0, r0, c1, r1, corr) = *runs.last().unwrap();
    assert_eq!(r0, 0);
    assert!(c0 > 100, "the path was not lossy: {c0} concealed");
    assert!(r1 > 100, "nothing recovered: {r1}");
    assert!(c1 * 4 < c0, "redundancy left {c1} of {c0} concealments");
    assert!(corr > 0.9, "correlation {corr}");
}

#[test]
fn three_members_edit_the_session_at_once_and_hold_the_same_document() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let rt = network_runtime();
    let edits = |i: usize| match i {
        0 => vec![DocEdit::SetTempo(96.0), DocEdit::AddTrack("bass".into())],
        1 => vec![DocEdit::SetTempo(132.0), DocEdit::AddTrack("keys".into())],
        _ => vec![DocEdit::ChartAppend("| Am | F | C | G |".into())],
    };
    let band = band()
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m, edits(i)))
        .collect();
    let reports: Vec<_> = play_editing(&relay.room("session"), band, 2.0, &rt)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let json = &reports[0].session_json;
    println!("{json}");
    for r in &reports[1..] {
        assert_eq!(&r.session_json, json, "{} holds another document", r.name);
    }
    assert!(json.contains("\"name\":\"bass\"") && json.contains("\"name\":\"keys\""));
    assert!(json.contains("| Am | F | C | G |"));
    assert!(
        json.contains("\"tempo\":96") || json.contains("\"tempo\":132"),
        "{json}"
    );
}

/// A clean path holds still. In a three-member jam on loopback, most pairs (4 of 6) have a
/// 10 s stretch after the warm-up that conceals nothing and whose latency, measured on the
/// audio itself second by second, varies by under 0.3 ms. A stretch rather than the whole
/// run: a busy machine's late wake now and then is a real hiccup the buffer has to answer (it
/// keeps the delay that hiccup needed). A buffer without hysteresis saw-tooths by 2.5 ms
/// every few seconds and has no such stretch.
///
/// The musicians' audio threads are scheduled real-time, as a DAW schedules its own, and so
/// are the relay's and the network's: on a shared two-core machine their late wakes were
/// heard as the path's. Where threads cannot be made real-time (not root, no rtprio limit),
/// the test says so and skips.
///
/// Real-time threads do not help when a virtual machine's host takes the whole machine away
/// (stalls of 10–50 ms that every pair hears at once, each holding the delay a little up): a
/// watch thread notes those pauses, and only stretches that began at least 2 s after the last
/// one and saw none are judged. Where the machine paused in every stretch, the run is played
/// again (three runs at most), and if none could be judged the test says so.
#[test]
fn a_clean_path_holds_its_delay_still() {
    let _one = one_at_a_time();
    let rt = network_runtime();
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let invite = relay.room("still");
    // The relay and the musicians' network thread too: on a shared two-core machine a stall
    // of either is heard by every pair at once, and it is the machine's, not the path's.
    if !(relay.realtime() && realtime_runtime(&rt)) {
        eprintln!("skipped: threads cannot be scheduled real-time here (as a DAW's are)");
        return;
    }
    for run in 1..=3 {
        match still_pairs(&invite, &rt) {
            Some(held) => {
                // Judged over the pairs: a late wake of one musician's thread is heard by
                // both its listeners, and can land in every stretch of a run.
                assert!(held >= 4, "only {held} of 6 pairs held still for 10 s");
                return;
            }
            None => println!("run {run}: the machine paused in every stretch"),
        }
    }
    println!("not judged: the machine paused in every 10 s stretch of three runs");
}

/// Plays a 32 s jam and counts the pairs with a still stretch among those no machine pause
/// touched; `None` where there was no such stretch.
fn still_pairs(invite: &Invite, rt: &tokio::runtime::Runtime) -> Option<usize> {
    let seconds = 32.0;
    let start_at = Instant::now() + Duration::from_millis(1200);
    let watch = PauseWatch::start(start_at);
    let reports = play_realtime(invite, band(), seconds, true, rt, start_at);
    let pauses = watch.stop();
    let Some(reports) = reports else {
        panic!("the audio threads were refused real-time after the relay's were granted it");
    };
    println!(
        "machine pauses (s, ms): {:?}",
        pauses
            .iter()
            .map(|p| format!("{:.2}/{:.0}", p.at, p.ms))
            .collect::<Vec<_>>()
    );
    // Each 10 s stretch from 3 s (the warm-up over) on that no pause touched.
    let judged: Vec<usize> = (3..seconds as usize - 9)
        .filter(|&s| !paused_between(&pauses, s as f32 - 2.0, s as f32 + 10.0))
        .collect();
    if judged.is_empty() {
        return None;
    }
    let reports: Vec<_> = reports.into_iter().map(Result::unwrap).collect();
    let rate = INTERNAL_RATE_HZ as usize;
    let mut held = 0;
    for listener in &reports {
        for rec in listener.recordings.values() {
            let sender = reports.iter().find(|r| r.name == rec.name).expect("sender");
            let per_second = lag_per_second(&sender.sent, &rec.samples, rate / 100);
            let stretches: Vec<(usize, u64)> = judged
                .iter()
                .filter(|&&s| s + 10 <= per_second.len())
                .filter_map(|&s| {
                    let lags: Vec<usize> =
                        per_second[s..s + 10].iter().flatten().copied().collect();
                    // Most seconds measured (a voice has quiet moments).
                    let spread = lags.iter().max()? - lags.iter().min()?;
                    let concealed = rec.frames_between(s as f32, s as f32 + 10.0).1;
                    (lags.len() >= 8).then_some((spread, concealed))
                })
                .collect();
            let still = |(spread, concealed): &(usize, u64)| {
                *spread * 1000 < 3 * rate / 10 && *concealed == 0
            };
            println!(
                "{} → {}: {} of {} judged stretches still; lag by second {per_second:?}",
                rec.name,
                listener.name,
                stretches.iter().filter(|s| still(s)).count(),
                stretches.len(),
            );
            if stretches.iter().any(still) {
                held += 1;
            } else {
                println!("  none held still (spread, concealed): {stretches:?}");
            }
        }
    }
    Some(held)
}
