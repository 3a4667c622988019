//! The adaptive buffer's decisions on scripted arrivals.

use super::*;
use crate::packet::StreamId;
use proptest::prelude::*;

const F: u64 = 120;
const SKIPPED: u32 = 1 << 31;

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
        loop {
            match jb.next(now, false) {
                Decision::Play(p) => out.push(Some(p.seq)),
                Decision::Skip(p) => out.push(Some(p.seq | SKIPPED)),
                Decision::Lost | Decision::Stall => out.push(None),
                Decision::Idle => {}
            }
            if !matches!(out.last(), Some(Some(s)) if s & SKIPPED != 0) {
                break;
            }
            out.pop();
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
    // Skips are spaced out, so at most one falls in the burst itself.
    assert!(kept >= 9, "only {kept} of the delayed packets were played");
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
            loop {
                let (seq, skipped) = match jb.next(now, false) {
                    Decision::Play(p) => (p.seq, false),
                    Decision::Skip(p) => (p.seq, true),
                    _ => break,
                };
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
                if !skipped {
                    break;
                }
            }
            prop_assert!(jb.target_samples() <= u64::from(config.max_target_samples));
        }
    }
}
