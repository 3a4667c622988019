//! The adaptive buffer's decisions on scripted arrivals.

use super::*;
use crate::packet::StreamId;
use proptest::prelude::*;

const F: u64 = 120;

fn pkt(seq: u32) -> PacketSlot {
    PacketSlot::new(StreamId(1), seq, u64::from(seq) * F, &seq.to_le_bytes()).unwrap()
}

/// Plays `frames` frames at 120-sample ticks with packets arriving per `arrival(seq)`
/// (None = lost); returns the decisions as (seq played | None) and the buffer.
fn run(frames: u32, arrival: impl Fn(u32) -> Option<u64>) -> (Vec<Option<u32>>, AdaptiveStats) {
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    let mut arrivals: Vec<(u64, u32)> = (0..frames + 50)
        .filter_map(|s| arrival(s).map(|a| (a, s)))
        .collect();
    arrivals.sort();
    let mut next_arrival = 0;
    let mut out = Vec::new();
    for tick in 0..u64::from(frames) {
        let now = tick * F;
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= now {
            jb.insert(arrivals[next_arrival].0, &pkt(arrivals[next_arrival].1));
            next_arrival += 1;
        }
        match jb.next(now, false) {
            Decision::Play(p) => out.push(Some(p.seq)),
            Decision::Lost | Decision::Stall => out.push(None),
            Decision::Idle => {}
        }
    }
    (out, jb.stats())
}

#[test]
fn steady_arrivals_play_everything_in_order_without_concealment() {
    let (out, stats) = run(400, |s| Some(u64::from(s) * F + 30));
    let played: Vec<u32> = out.iter().flatten().copied().collect();
    assert!(played.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(stats.lost + stats.stalled, 0, "{stats:?}");
    assert!(stats.played >= 390);
}

#[test]
fn a_lost_packet_is_concealed_once_and_playout_moves_on() {
    let (out, stats) = run(200, |s| (s != 50).then(|| u64::from(s) * F + 30));
    assert_eq!(stats.lost, 1, "{stats:?}");
    assert!(out.contains(&Some(51)));
    assert!(!out.contains(&Some(50)));
}

#[test]
fn a_delay_spike_grows_the_delay_instead_of_losing_audio() {
    // Packets 100..110 are held up 10 frames (a Wi-Fi stall), then arrive together.
    let (out, stats) = run(300, |s| {
        let base = u64::from(s) * F + 30;
        Some(if (100..110).contains(&s) {
            110 * F + 30
        } else {
            base
        })
    });
    let played: Vec<u32> = out.iter().flatten().copied().collect();
    let kept = (100..110).filter(|s| played.contains(s)).count();
    assert!(kept == 10, "only {kept} of the delayed packets were played");
    assert!(stats.stalled > 0 && stats.lost == 0, "{stats:?}");
}

#[test]
fn a_sender_whose_numbering_starts_over_plays_on() {
    // 300 frames, then the sender rejoins the room: its sequence numbers start again at 0
    // while its media time runs on. Each arrives 30 samples after it was made.
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    let packet = |i: u64| {
        let seq = if i < 300 { i } else { i - 300 } as u32;
        PacketSlot::new(StreamId(1), seq, i * F, &[1]).unwrap()
    };
    let (mut next, mut played_after) = (0u64, 0);
    for tick in 0..600u64 {
        let now = tick * F;
        while next * F + 30 <= now {
            jb.insert(next * F + 30, &packet(next));
            next += 1;
        }
        if let (Decision::Play(_), true) = (jb.next(now, false), tick >= 320) {
            played_after += 1;
        }
    }
    assert_eq!(
        jb.stats().late,
        0,
        "the new numbers were taken for stragglers"
    );
    assert!(
        played_after > 250,
        "{played_after} frames played after the restart"
    );
}

proptest! {
    /// Whatever the arrival pattern: nothing plays twice, order is kept.
    #[test]
    fn never_plays_twice_or_out_of_order(
        jitter in proptest::collection::vec(0u64..2000, 300),
        lost in proptest::collection::vec(any::<bool>(), 300),
    ) {
        let (out, _) = run(290, |s| {
            let i = s as usize % 300;
            (!lost[i] || !i.is_multiple_of(7)).then(|| u64::from(s) * F + jitter[i])
        });
        let played: Vec<u32> = out.iter().flatten().copied().collect();
        for w in played.windows(2) {
            prop_assert!(w[1] > w[0], "{} after {}", w[1], w[0]);
        }
    }

    /// Across the sequence wrap, with duplicates and reordering: each packet plays at most
    /// once, in order, and the delay stays bounded by the configured maximum.
    #[test]
    fn wrap_duplicates_and_reordering_keep_order_and_bounded_delay(
        start in (u32::MAX - 200)..=u32::MAX,
        jitter in proptest::collection::vec(0u64..3000, 400),
        dup in proptest::collection::vec(any::<bool>(), 400),
    ) {
        let config = AdaptiveConfig::default();
        let mut jb = JitterBuffer::new(config);
        let mut arrivals: Vec<(u64, u32)> = Vec::new();
        for i in 0..400u32 {
            let at = u64::from(i) * F + jitter[i as usize];
            arrivals.push((at, i));
            if dup[i as usize] {
                arrivals.push((at + jitter[(i as usize + 1) % 400], i));
            }
        }
        arrivals.sort();
        let (mut next, mut seen) = (0, std::collections::HashSet::new());
        let mut last: Option<u32> = None;
        for tick in 0..390u64 {
            let now = tick * F;
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, i) = arrivals[next];
                let seq = start.wrapping_add(i);
                let p = PacketSlot::new(StreamId(1), seq, u64::from(i) * F, &[1]).unwrap();
                jb.insert(at, &p);
                next += 1;
            }
            if let Decision::Play(p) = jb.next(now, false) {
                let seq = p.seq;
                prop_assert!(seen.insert(seq), "{seq} came out twice");
                if let Some(l) = last {
                    prop_assert!(seq_ahead(seq, l) > 0, "{seq} after {l}");
                }
                last = Some(seq);
                let media = u64::from(seq.wrapping_sub(start)) * F;
                prop_assert!(
                    now.saturating_sub(media) <= u64::from(config.max_target_samples) + 4000,
                    "frame {seq} played {} samples after its media time",
                    now - media
                );
            }
            prop_assert!(jb.target_samples() <= u64::from(config.max_target_samples));
        }
    }
}

/// After a played frame of `len` samples: the splice the buffer asks for, made at once and at
/// most the frame long; the samples the frame then lasts.
fn splice_at_once(jb: &mut JitterBuffer, len: u64) -> u64 {
    let spliced = jb.rescale().map_or(0, |r| {
        let want = (r.want as i64).min(len as i64);
        let frames = if r.shrink { want } else { -want };
        jb.rescaled(frames);
        frames
    });
    (len as i64 - spliced) as u64
}

/// A sender switches from `from` to `to` samples per frame after 3 s; each packet arrives 30
/// samples after its audio ends; every splice asked for is made. Returns the samples concealed
/// after the switch, what was lost, and the schedule error and target before and after.
fn switch_frames(from: u64, to: u64) -> (u64, u64, (i64, i64), (u64, u64)) {
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    jb.set_frame_samples(from);
    let switch = 144_000;
    let mut packets = Vec::new();
    let (mut media, mut seq) = (0u64, 0u32);
    while media < 2 * switch {
        let len = if media < switch { from } else { to };
        packets.push((media + len + 30, seq, media, len));
        media += len;
        seq += 1;
    }
    let (mut now, mut next, mut concealed) = (0u64, 0, 0);
    let mut target_before = 0;
    let mut error_before = 0;
    while now < 2 * switch - 9600 {
        while next < packets.len() && packets[next].0 <= now {
            let (at, seq, media, len) = packets[next];
            let p = PacketSlot::new(StreamId(1), seq, media, &[1]).unwrap();
            jb.insert_sized(at, &p, len);
            next += 1;
        }
        if now < switch {
            (target_before, error_before) = (jb.target_samples(), jb.schedule_error());
        }
        now += match jb.next(now, false) {
            Decision::Play(p) => {
                let len = packets[p.seq as usize].3;
                jb.set_frame_samples(len);
                splice_at_once(&mut jb, len)
            }
            Decision::Lost | Decision::Stall => {
                let len = jb.frame_samples;
                concealed += if now > switch { len } else { 0 };
                len
            }
            Decision::Idle => jb.idle_samples(now),
        };
    }
    let stats = jb.stats();
    (
        concealed,
        stats.lost,
        (error_before, jb.schedule_error()),
        (target_before, jb.target_samples()),
    )
}

#[test]
fn a_longer_frame_waits_exactly_for_its_own_length_and_keeps_the_path_delay() {
    let (concealed, lost, _, (before, after)) = switch_frames(120, 960);
    // The 20 ms frame is whole 17.5 ms after the 2.5 ms frame would have been: that wait, no
    // more (a frame's worth of rounding).
    assert!(
        (840..=960).contains(&concealed),
        "{concealed} samples concealed at the switch"
    );
    assert_eq!(lost, 0);
    assert_eq!(
        before, after,
        "the path did not change, the target must not"
    );
}

#[test]
fn a_shorter_frame_conceals_nothing_and_asks_for_the_gain_to_be_spliced_out() {
    let (concealed, lost, (before, after), _) = switch_frames(480, 120);
    assert_eq!((concealed, lost), (0, 0));
    // Its audio is whole 7.5 ms sooner, and playout has caught up with that.
    assert!(
        before.abs() <= SHRINK_AT && after.abs() <= SHRINK_AT,
        "schedule error {before} before, {after} after"
    );
}

/// 2.5 ms frames on a direct path; from 3 s to 6 s the path is blocked and the relay, 15 ms
/// longer, brings them; then the direct path carries again, its packets marked with a new path
/// epoch if `hint`. Every splice asked for is made at once. Returns the median playout delay
/// (ms) before the block, by the relay, and from 0.5 s to 1 s after the direct path is back.
fn direct_path_back(hint: bool) -> (f64, f64, f64) {
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    let (block, lift, end) = (1200u32, 2400u32, 3200u32);
    let arrival = |s: u32| {
        let relay = if (block..lift).contains(&s) { 720 } else { 0 };
        u64::from(s) * F + F + 30 + u64::from(s * 7919 % 97) + relay
    };
    let mut packets: Vec<(u64, u32)> = (0..end).map(|s| (arrival(s), s)).collect();
    packets.sort();
    let (mut now, mut next) = (0u64, 0);
    let mut heard = Vec::new();
    while now < u64::from(end - 20) * F {
        while next < packets.len() && packets[next].0 <= now {
            let (at, seq) = packets[next];
            let mut p = pkt(seq);
            p.path_epoch = u8::from(hint && seq >= lift);
            jb.insert(at, &p);
            next += 1;
        }
        now += match jb.next(now, false) {
            Decision::Play(p) => {
                heard.push((now, p.seq));
                splice_at_once(&mut jb, F)
            }
            Decision::Lost | Decision::Stall => F,
            Decision::Idle => jb.idle_samples(now),
        };
    }
    let delay = |from: u32, to: u32| {
        let mut d: Vec<f64> = heard
            .iter()
            .filter(|(_, s)| (from..to).contains(s))
            .map(|&(at, s)| (at - u64::from(s) * F) as f64 / 48.0)
            .collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    };
    (
        delay(800, block),
        delay(block + 800, lift),
        delay(lift + 200, lift + 400),
    )
}

#[test]
fn a_direct_path_that_carries_again_pays_off_at_once_when_its_packets_say_so() {
    let (before, relay, back) = direct_path_back(true);
    println!("with the hint: {before:.2} ms direct, {relay:.2} ms by the relay, {back:.2} ms back");
    assert!(relay - before > 12.0, "the relay's 15 ms were not taken up");
    assert!(
        back - before < 1.0,
        "0.5 s after the path came back still {:.2} ms above it",
        back - before
    );
    // Without the hint the window still holds the relay's packets from before: the gain waits.
    let (before, relay, back) = direct_path_back(false);
    println!("without: {before:.2} ms direct, {relay:.2} ms by the relay, {back:.2} ms back");
    assert!(back - before > 10.0, "the control took the gain as well");
}

/// Inserts packets `next`, `next + 1`, … while `arrival` says they have come by `now`.
fn arrive_until(jb: &mut JitterBuffer, next: &mut u64, now: u64, arrival: impl Fn(u64) -> u64) {
    while arrival(*next) <= now {
        jb.insert(arrival(*next), &pkt(*next as u32));
        *next += 1;
    }
}

/// A long host block that has passed forgives the stalls it caused, for a second: a late
/// packet seconds later is the path's, and the delay keeps what it was late by.
#[test]
fn a_passed_long_block_forgives_its_own_stalls_only() {
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    jb.set_render_ahead(64);
    // Packet 2800 (at 7 s) is held up 3 frames and arrives with the next ones.
    let arrival = |s: u64| {
        s * F
            + 30
            + if (2800..2803).contains(&s) {
                (2803 - s) * F
            } else {
                0
            }
    };
    let mut next = 0u64;
    let mut before = 0;
    for tick in 0..3400u64 {
        let now = tick * F;
        arrive_until(&mut jb, &mut next, now, arrival);
        if tick == 1600 {
            // A 2048-sample block at 4 s, then the host goes back to 64.
            jb.set_render_ahead(2048);
            jb.set_render_ahead(64);
        }
        if tick == 2790 {
            before = jb.target_samples();
        }
        jb.next(now, false);
    }
    let s = jb.stats();
    assert!(s.stalled >= 2, "{s:?}");
    let after = jb.target_samples();
    assert!(
        after > before + 2 * F / 2,
        "the late packet 3 s after the block was forgiven: target {before} → {after}, {s:?}"
    );
}

/// While a take is recorded the delay holds: the same spike that grows it otherwise is
/// concealed in place (its packets come too late and are passed over), every later frame
/// plays at its moment, and no change of delay is asked for.
#[test]
fn a_held_delay_conceals_a_spike_in_place_and_moves_nothing() {
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    let arrival = |s: u64| {
        if (1000..1010).contains(&s) {
            1010 * F + 30
        } else {
            s * F + 30
        }
    };
    let mut next = 0u64;
    let mut offsets = Vec::new();
    let mut asked = 0;
    for tick in 0..1200u64 {
        let now = tick * F;
        arrive_until(&mut jb, &mut next, now, arrival);
        jb.set_hold(tick >= 900);
        let played = match jb.next(now, false) {
            Decision::Play(p) => Some(p.seq),
            _ => None,
        };
        if tick >= 900 {
            asked += usize::from(jb.rescale().is_some());
            // Each frame plays as many ticks after it was made as the one before.
            offsets.extend(played.map(|seq| tick - u64::from(seq)));
        }
    }
    let s = jb.stats();
    assert_eq!(s.stalled, 0, "it waited: {s:?}");
    assert_eq!(s.lost, 10, "{s:?}");
    assert_eq!(asked, 0, "a change of delay was asked for");
    offsets.dedup();
    assert_eq!(offsets.len(), 1, "playout moved: {offsets:?}");
}

/// The stream starts in the middle of a 50 ms stall: its first 20 packets come together, the
/// oldest 50 ms late, then the rest on time. The newer ones of that burst are not a shorter
/// path (nothing was known of a path yet); the spread is the path's, and the delay covers it.
#[test]
fn a_burst_at_the_start_is_the_paths_spread_not_a_shorter_path() {
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    jb.set_render_ahead(64);
    // The older half first, then the newer from the newest: each far faster than the first.
    let burst = 20 * F + 240;
    for seq in (0..10).chain((10..20).rev()) {
        jb.insert(burst, &pkt(seq));
    }
    let mut next = 20;
    for tick in 20..120 {
        arrive_until(&mut jb, &mut next, tick * F, |s| s * F + 240);
        let _ = jb.next(tick * F, false);
    }
    let target = jb.target_samples();
    assert!(
        target >= 17 * F,
        "target {target} samples forgets the start's {} of spread",
        20 * F
    );
}
