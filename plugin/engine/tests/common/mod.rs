//! Two engines on one simulated clock, one sending to the other over a path whose delay the
//! test sets, each host calling as the test says.

#![allow(dead_code)]

use std::collections::VecDeque;

use echoel_engine::analysis::align;
use echoel_engine::signal::TestSignal;
use echoel_engine::{Engine, EngineConfig, EngineParams, JitterMode, PacketSlot, StatsSnapshot};

pub const RATE: u32 = 48_000;
const BLOCK: usize = 64;
const BLOCK_NS: u64 = 1_000_000_000 * BLOCK as u64 / RATE as u64;
/// The path's delay unless an event changes it.
pub const PATH_NS: u64 = 1_000_000;

pub struct Run {
    /// What the sender played and what the receiver's output carried, on the wall clock
    /// (zeros where the receiver's host did not call).
    pub sent: Vec<f32>,
    pub heard: Vec<f32>,
    /// The receiver's counters at the end of each second.
    pub stats: Vec<StatsSnapshot>,
}

/// What a host does out of step.
#[derive(Clone, Copy)]
pub enum Event {
    /// Host `who` (0: the sender's, 1: the receiver's) makes no call from `at` s for `len` s.
    Pause { who: usize, at: f64, len: f64 },
    /// The receiver's host renders one block of `frames` at `at` s, then waits for the device
    /// to play it.
    LongBlock { at: f64, frames: usize },
    /// Packets take `from_ns` to arrive until `at` s, then `to_ns` (a new route).
    Route { at: f64, from_ns: u64, to_ns: u64 },
    /// The receiver's jitter mode until `at` s, then another (a musician's change).
    Jitter {
        at: f64,
        from: JitterMode,
        to: JitterMode,
    },
}

/// `seconds` of a sender → receiver jam of the test signal with `event` on the way.
pub fn jam(seconds: f64, event: Option<Event>) -> Run {
    let mut sig = TestSignal::new(RATE);
    jam_of(seconds, event, move |n| sig.take_mono(n))
}

/// `seconds` of a sender → receiver jam of what `signal(frames)` plays, with `event` on the
/// way.
pub fn jam_of(
    seconds: f64,
    event: Option<Event>,
    mut signal: impl FnMut(usize) -> Vec<f32>,
) -> Run {
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
        let input = signal(BLOCK);
        let rx_params = match event {
            Some(Event::Jitter { at, to, .. }) if seconds_at(tick) >= at => EngineParams {
                jitter: to,
                ..params
            },
            Some(Event::Jitter { from, .. }) => EngineParams {
                jitter: from,
                ..params
            },
            _ => params,
        };
        sent.extend_from_slice(&input);
        if !paused(0, tick) {
            let (mut l, mut r) = (input.clone(), input.clone());
            tx.process_at(&mut [&mut l[..], &mut r[..]], &params, now);
            while let Ok(mut p) = tx_link.outgoing.pop() {
                let path = match event {
                    Some(Event::Route { at, to_ns, .. }) if seconds_at(tick) >= at => to_ns,
                    Some(Event::Route { from_ns, .. }) => from_ns,
                    _ => PATH_NS,
                };
                p.arrival_ns = now + path;
                in_flight.push_back(p);
            }
        }
        // A faster route overtakes what is still in flight on the old one.
        while let Some(i) = in_flight.iter().position(|p| p.arrival_ns <= now) {
            let p = in_flight.remove(i).unwrap();
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
                rx.process_at(&mut [&mut l[..], &mut r[..]], &rx_params, now);
                heard.extend_from_slice(&l[..BLOCK]);
                long_left = l[BLOCK..].to_vec();
            } else {
                let (mut l, mut r) = (vec![0.0; BLOCK], vec![0.0; BLOCK]);
                rx.process_at(&mut [&mut l[..], &mut r[..]], &rx_params, now);
                heard.extend_from_slice(&l);
            }
        } else {
            let (mut l, mut r) = (vec![0.0; BLOCK], vec![0.0; BLOCK]);
            rx.process_at(&mut [&mut l[..], &mut r[..]], &rx_params, now);
            heard.extend_from_slice(&l);
        }
        if (tick + 1) % per_second == 0 {
            stats.push(rx.stats().snapshot());
        }
    }
    Run { sent, heard, stats }
}

/// Latency over half a second from `at` (seconds), in ms.
pub fn latency_ms(run: &Run, at: f64) -> f32 {
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
