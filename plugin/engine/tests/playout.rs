//! Playout delay that moves unheard: through the whole engine (Opus, the jitter buffer, the
//! splices on decoded audio), a new route and a changed depth move the delay at once, with
//! nothing concealed, no level change and no step in the waveform.

mod common;

use common::{jam, jam_of, latency_ms, Event, Run, RATE};
use echoel_engine::signal::{phrase, sine};
use echoel_engine::JitterMode;

#[test]
fn a_route_20_ms_shorter_is_taken_within_two_seconds_with_nothing_concealed() {
    let run = jam(
        12.0,
        Some(Event::Route {
            at: 6.0,
            from_ns: 21_000_000,
            to_ns: 1_000_000,
        }),
    );
    let (before, after, end) = (
        latency_ms(&run, 5.0),
        latency_ms(&run, 8.0),
        latency_ms(&run, 11.0),
    );
    let (s4, s11) = (run.stats[4], run.stats[11]);
    let concealed = s11.frames_concealed - s4.frames_concealed;
    println!(
        "route 20 ms shorter at 6 s: latency {before:.2} ms before, {after:.2} ms 2 s after, \
         {end:.2} ms at 11 s; {} splices, {concealed} frames concealed from 5 s on",
        s11.splices - s4.splices
    );
    assert!(
        before - after > 17.0,
        "2 s after the switch the latency was {after:.2} ms (before it {before:.2} ms)"
    );
    assert!((after - end).abs() < 1.5, "{after:.2} ms, then {end:.2} ms");
    assert_eq!(concealed, 0, "frames concealed around the switch");
}

/// Level (dB) of `x` over each 10 ms from `from` to `to` seconds.
fn levels_db(x: &[f32], from: f64, to: f64) -> Vec<f32> {
    let per = RATE as usize / 100;
    let (a, b) = (
        (from * f64::from(RATE)) as usize,
        (to * f64::from(RATE)) as usize,
    );
    x[a..b]
        .chunks_exact(per)
        .map(|w| {
            10.0 * (w.iter().map(|v| v * v).sum::<f32>() / per as f32)
                .max(1e-12)
                .log10()
        })
        .collect()
}

/// Largest step between neighbouring samples from `from` to `to` seconds.
fn largest_step(x: &[f32], from: f64, to: f64) -> f32 {
    let (a, b) = (
        (from * f64::from(RATE)) as usize,
        (to * f64::from(RATE)) as usize,
    );
    x[a..b]
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max)
}

/// The receiver's depth moves from `from_ms` to `to_ms` at 3 s with `signal` playing, by
/// splices, concealing nothing.
fn depth_change(name: &str, signal: &[f32], from_ms: f32, to_ms: f32) -> Run {
    let mut at = 0;
    let run = jam_of(
        6.0,
        Some(Event::Jitter {
            at: 3.0,
            from: JitterMode::Manual { depth_ms: from_ms },
            to: JitterMode::Manual { depth_ms: to_ms },
        }),
        |n| {
            let out = (at..at + n).map(|i| signal[i % signal.len()]).collect();
            at += n;
            out
        },
    );
    let concealed = run.stats[5].frames_concealed - run.stats[1].frames_concealed;
    let splices = run.stats[5].splices - run.stats[1].splices;
    println!("{name}: {splices} splices, {concealed} frames concealed");
    assert!(splices > 0, "{name}: no splice");
    assert_eq!(concealed, 0, "{name}: frames concealed");
    run
}

/// Heard through a splice: as loud as before (10 ms windows within 1 dB of the level before
/// the change) and no step larger than the steady signal's.
fn assert_unheard(name: &str, run: &Run, level_window: (f64, f64)) {
    let steady = levels_db(&run.heard, 2.0, 2.9);
    let around = levels_db(&run.heard, level_window.0, level_window.1);
    let (lo, hi) = steady
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    for (i, l) in around.iter().enumerate() {
        assert!(
            *l > lo - 1.0 && *l < hi + 1.0,
            "{name}: {l:.2} dB at {:.2} s (steady {lo:.2}..{hi:.2} dB)",
            level_window.0 + i as f64 / 100.0
        );
    }
    assert_no_step(name, run, 1.5);
}

/// No step between neighbouring samples through the splices (2.9–4.5 s) larger than the
/// steady signal's from `steady_from` s to 2.9 s.
fn assert_no_step(name: &str, run: &Run, steady_from: f64) {
    let (steady_step, step) = (
        largest_step(&run.heard, steady_from, 2.9),
        largest_step(&run.heard, 2.9, 4.5),
    );
    assert!(
        step <= steady_step * 1.1,
        "{name}: a step of {step:.4} through the splices (steady: {steady_step:.4})"
    );
}

#[test]
fn a_depth_change_moves_the_delay_within_a_second() {
    // The test signal never repeats within the search, so its delay is unambiguous (a tone's
    // is not).
    let mut sig = echoel_engine::signal::TestSignal::new(RATE);
    let music = sig.take_mono(2 * RATE as usize);
    for (from, to) in [(5.0, 15.0), (15.0, 5.0)] {
        let run = depth_change(&format!("music {from} → {to} ms"), &music, from, to);
        let (before, after) = (latency_ms(&run, 2.0), latency_ms(&run, 4.0));
        println!("music {from} → {to} ms: latency {before:.2} → {after:.2} ms");
        assert!(
            (after - before - (to - from)).abs() < 1.5,
            "latency {before:.2} → {after:.2} ms"
        );
    }
}

#[test]
fn a_200_hz_tone_through_a_grow_and_a_shrink_keeps_its_level_with_no_step() {
    let tone = sine(RATE, 200.0, 0.4, RATE as usize);
    for (from, to) in [(5.0, 15.0), (15.0, 5.0)] {
        let name = format!("200 Hz tone {from} → {to} ms");
        let run = depth_change(&name, &tone, from, to);
        assert_unheard(&name, &run, (2.9, 4.5));
    }
}

#[test]
fn a_spoken_phrase_through_a_grow_and_a_shrink_has_no_step() {
    // A phrase's level moves by itself (pulses, a fricative): its 10 ms levels are compared
    // with the same stretch of the phrase heard without a depth change.
    let voice = phrase(RATE as usize);
    for (from, to) in [(5.0, 15.0), (15.0, 5.0)] {
        let name = format!("phrase {from} → {to} ms");
        let run = depth_change(&name, &voice, from, to);
        assert_no_step(&name, &run, 1.0);
        // Whole seconds of the phrase, before and after: as loud.
        let level = |from: f64| {
            let l = levels_db(&run.heard, from, from + 1.0);
            10.0 * (l.iter().map(|d| 10f32.powf(d / 10.0)).sum::<f32>() / l.len() as f32).log10()
        };
        let (before, after) = (level(1.5), level(3.5));
        assert!(
            (after - before).abs() < 1.0,
            "{name}: {before:.2} dB before, {after:.2} dB after"
        );
    }
}
