//! A host that stops calling for a while (an xrun, a hiccup, a render in between) costs the
//! audio of the pause, never delay: two engines on one simulated clock, one sending to the
//! other over a 1 ms path, one of them paused for 200 ms.

use std::collections::VecDeque;

use echoel_engine::analysis::align;
use echoel_engine::signal::TestSignal;
use echoel_engine::{Engine, EngineConfig, EngineParams, PacketSlot, StatsSnapshot};

const RATE: u32 = 48_000;
const BLOCK: usize = 64;
const BLOCK_NS: u64 = 1_000_000_000 * BLOCK as u64 / RATE as u64;
const PATH_NS: u64 = 1_000_000;

struct Run {
    /// What the sender played and what the receiver's output carried, on the wall clock
    /// (zeros where the receiver's host did not call).
    sent: Vec<f32>,
    heard: Vec<f32>,
    /// The receiver's counters at the end of each second.
    stats: Vec<StatsSnapshot>,
}

/// What a host does out of step.
#[derive(Clone, Copy)]
enum Event {
    /// Host `who` (0: the sender's, 1: the receiver's) makes no call from `at` s for `len` s.
    Pause { who: usize, at: f64, len: f64 },
    /// The receiver's host renders one block of `frames` at `at` s, then waits for the device
    /// to play it.
    LongBlock { at: f64, frames: usize },
}

/// `seconds` of a sender → receiver jam with `event` on the way.
fn jam(seconds: f64, event: Option<Event>) -> Run {
    let config = EngineConfig {
        sample_rate_hz: RATE,
        host_channels: 2,
        max_block_frames: BLOCK,
    };
    let (mut tx, mut tx_link) = Engine::new(config).unwrap();
    let (mut rx, mut rx_link) = Engine::new(EngineConfig {
        max_block_frames: 8192,
        ..config
    })
    .unwrap();
    let params = EngineParams {
        monitor_gain: 0.0,
        ..EngineParams::default()
    };
    let mut sig = TestSignal::new(RATE);
    let mut in_flight: VecDeque<PacketSlot> = VecDeque::new();
    let (mut sent, mut heard, mut stats) = (Vec::new(), Vec::new(), Vec::new());
    let ticks = (seconds * f64::from(RATE) / BLOCK as f64) as u64;
    let per_second = u64::from(RATE) / BLOCK as u64;
    let seconds_at = |tick: u64| tick as f64 * BLOCK as f64 / f64::from(RATE);
    let paused = |who: usize, tick: u64| {
        let t = seconds_at(tick);
        matches!(event, Some(Event::Pause { who: w, at, len }) if w == who && t >= at && t < at + len)
    };
    // Receiver output still to come from a long block, and whether it was rendered.
    let (mut long_left, mut long_done) = (Vec::<f32>::new(), false);
    for tick in 0..ticks {
        let now = 1 + tick * BLOCK_NS;
        let input = sig.take_mono(BLOCK);
        sent.extend_from_slice(&input);
        if !paused(0, tick) {
            let (mut l, mut r) = (input.clone(), input.clone());
            tx.process_at(&mut [&mut l[..], &mut r[..]], &params, now);
            while let Ok(mut p) = tx_link.outgoing.pop() {
                p.arrival_ns = now + PATH_NS;
                in_flight.push_back(p);
            }
        }
        while in_flight.front().is_some_and(|p| p.arrival_ns <= now) {
            let p = in_flight.pop_front().unwrap();
            rx_link.incoming.push(p).unwrap();
        }
        if paused(1, tick) {
            heard.extend(std::iter::repeat_n(0.0, BLOCK));
        } else if !long_left.is_empty() {
            heard.extend(long_left.drain(..BLOCK));
        } else if let (Some(Event::LongBlock { at, frames }), false) = (event, long_done) {
            if seconds_at(tick) >= at {
                long_done = true;
                let (mut l, mut r) = (vec![0.0; frames], vec![0.0; frames]);
                rx.process_at(&mut [&mut l[..], &mut r[..]], &params, now);
                heard.extend_from_slice(&l[..BLOCK]);
                long_left = l[BLOCK..].to_vec();
            } else {
                let (mut l, mut r) = (vec![0.0; BLOCK], vec![0.0; BLOCK]);
                rx.process_at(&mut [&mut l[..], &mut r[..]], &params, now);
                heard.extend_from_slice(&l);
            }
        } else {
            let (mut l, mut r) = (vec![0.0; BLOCK], vec![0.0; BLOCK]);
            rx.process_at(&mut [&mut l[..], &mut r[..]], &params, now);
            heard.extend_from_slice(&l);
        }
        if (tick + 1) % per_second == 0 {
            stats.push(rx.stats().snapshot());
        }
    }
    Run { sent, heard, stats }
}

/// Latency over one second from `at` (seconds), in ms.
fn latency_ms(run: &Run, at: f64) -> f32 {
    let from = (at * f64::from(RATE)) as usize;
    let a = align(
        &run.sent[from..from + RATE as usize / 2],
        &run.heard[from..],
        RATE as usize / 5,
    )
    .expect("the signal came through");
    assert!(a.correlation > 0.9, "at {at} s: {a:?}");
    a.lag_ms(RATE)
}

fn check_recovers(who: usize) {
    let plain = jam(7.0, None);
    let before = latency_ms(&plain, 5.0);
    let run = jam(
        7.0,
        Some(Event::Pause {
            who,
            at: 3.0,
            len: 0.2,
        }),
    );
    let (early, after) = (latency_ms(&run, 2.0), latency_ms(&run, 5.0));
    // Concealment in the last two seconds (from 5 s on: within 2 s of the pause's end).
    let late = run.stats[6].frames_concealed - run.stats[4].frames_concealed;
    println!(
        "host {who} paused 200 ms: latency {early:.2} ms before, {after:.2} ms 2 s after (no pause: {before:.2} ms); \
         {late} frames concealed from 5 s on; {:?}",
        run.stats[6]
    );
    assert!(
        (after - early).abs() < 1.5 && (after - before).abs() < 1.5,
        "a 200 ms pause left the latency at {after:.2} ms (before it {early:.2} ms)"
    );
    assert_eq!(late, 0, "frames concealed long after the pause");
}

#[test]
fn a_receiver_whose_host_pauses_is_back_at_its_delay_at_once() {
    check_recovers(1);
}

#[test]
fn a_sender_whose_host_pauses_leaves_a_gap_not_a_delay() {
    check_recovers(0);
}

#[test]
fn one_long_block_does_not_hold_the_delay_up() {
    // The receiver's host renders one 8192-frame block (170 ms) among 64-frame ones. That
    // block is mostly concealment (its packets are not made yet) and the delay grows by it;
    // four seconds on, the delay and the buffer's depth are back where small blocks put them.
    let plain = jam(7.0, None);
    let before = latency_ms(&plain, 6.0);
    let run = jam(
        7.0,
        Some(Event::LongBlock {
            at: 2.0,
            frames: 8192,
        }),
    );
    let after = latency_ms(&run, 6.0);
    let (depth, plain_depth) = (
        run.stats[6].jitter_depth_samples,
        plain.stats[6].jitter_depth_samples,
    );
    println!(
        "one long block: latency {after:.2} ms 4 s on (no long block: {before:.2} ms), depth {depth} \
         samples (no long block: {plain_depth}); {:?}",
        run.stats[6]
    );
    assert!(
        (after - before).abs() < 1.5,
        "one long block left the latency at {after:.2} ms (small blocks: {before:.2} ms)"
    );
    assert!(
        depth <= plain_depth + 48,
        "the depth stayed at {depth} samples"
    );
}
