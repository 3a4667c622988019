//! Trace-driven comparison of playout algorithms: a sender's packets cross a network described
//! by a per-packet delay (or loss), the receiver plays them in host blocks, and each algorithm
//! decides frame by frame what to play. Deterministic (seeded traces, no clock).

use super::adaptive::{AdaptiveConfig, Decision, JitterBuffer};
use crate::packet::{PacketSlot, StreamId};

/// 48 kHz samples per millisecond.
const PER_MS: f64 = 48.0;

/// A network trace: what happened to each packet of one sender.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Name for tables.
    pub name: &'static str,
    /// Frame length in samples.
    pub frame: u64,
    /// Sender clock error: its samples last `1 + drift_ppm·1e-6` receiver samples.
    pub drift_ppm: f64,
    /// One-way network delay of each packet in samples; `None` if lost.
    pub delays: Vec<Option<u32>>,
}

/// Deterministic xorshift generator for traces.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next_f64().max(1e-12), self.next_f64());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn ms(x: f64) -> Option<u32> {
    Some((x.max(0.0) * PER_MS) as u32)
}

impl Trace {
    /// The six synthetic traces, `seconds` long at 2.5 ms frames.
    pub fn synthetic(seconds: f64, seed: u64) -> Vec<Trace> {
        let n = (seconds * 400.0) as usize;
        let mk = |name, drift_ppm, f: &mut dyn FnMut(usize, &mut Rng) -> Option<u32>| {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            Trace {
                name,
                frame: 120,
                drift_ppm,
                delays: (0..n).map(|i| f(i, &mut rng)).collect(),
            }
        };
        let mut ge_bad = false;
        vec![
            mk("gaussian", 0.0, &mut |_, r| ms(10.0 + 2.0 * r.normal())),
            mk("pareto", 0.0, &mut |_, r| {
                ms(10.0 + 0.5 * (1.0 - r.next_f64()).powf(-1.0 / 2.5) - 0.5)
            }),
            mk("wifi-spikes", 0.0, &mut |i, r| {
                // Every 2 s the link stalls 40 ms; queued packets drain over the next 40 ms.
                let t = (i % 800) as f64 * 2.5;
                let spike = if t < 40.0 { 40.0 - t } else { 0.0 };
                ms(5.0 + spike + 0.5 * r.normal().abs())
            }),
            mk("bursty-loss", 0.0, &mut |_, r| {
                // Gilbert–Elliott: good→bad 1 %, bad→good 30 %, half the packets lost when bad.
                ge_bad = if ge_bad {
                    r.next_f64() > 0.3
                } else {
                    r.next_f64() < 0.01
                };
                if ge_bad && r.next_f64() < 0.5 {
                    None
                } else {
                    ms(8.0 + 0.7 * r.normal().abs())
                }
            }),
            mk("route-change", 0.0, &mut |i, r| {
                let base = if i < n / 2 { 10.0 } else { 25.0 };
                ms(base + r.normal().abs())
            }),
            mk("drift-100ppm", 100.0, &mut |_, r| {
                ms(10.0 + 0.8 * r.normal().abs())
            }),
        ]
    }

    /// When packet `i` left the sender, in receiver samples.
    fn sent_at(&self, i: usize) -> f64 {
        i as f64 * self.frame as f64 * (1.0 + self.drift_ppm * 1e-6)
    }
}

/// One frame's worth of playout, as the simulator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Play packet `seq`.
    Play(u32),
    /// Conceal a frame.
    Conceal,
    /// Play silence (not started).
    Idle,
}

/// A playout algorithm under test.
pub trait Algorithm {
    /// Short name for tables.
    fn name(&self) -> String;
    /// Packet `seq` (media time `media`) arrived at receiver time `arrival`.
    fn arrive(&mut self, arrival: u64, seq: u32, media: u64);
    /// The frame to be heard from receiver time `now`.
    fn next(&mut self, now: u64) -> Step;
}

/// Ours: [`JitterBuffer`].
pub struct Ours(pub JitterBuffer);

impl Algorithm for Ours {
    fn name(&self) -> String {
        "echoel adaptive".into()
    }
    fn arrive(&mut self, arrival: u64, seq: u32, media: u64) {
        let p = PacketSlot::new(StreamId(0), seq, media, &[0xfc]).expect("one byte fits");
        self.0.insert(arrival, &p);
    }
    fn next(&mut self, now: u64) -> Step {
        match self.0.next(now) {
            Decision::Play(p) => Step::Play(p.seq),
            Decision::Lost | Decision::Stall => Step::Conceal,
            Decision::Idle => Step::Idle,
        }
    }
}

/// A fixed playout delay: packet `i` plays `depth` samples after the first packet's arrival
/// plus its media offset; anything later is concealed.
pub struct Fixed {
    depth: u64,
    anchor: Option<u64>,
    next: u32,
    arrived: std::collections::BTreeSet<u32>,
    frame: u64,
}

impl Fixed {
    /// A fixed delay of `depth` samples.
    pub fn new(depth: u64, frame: u64) -> Self {
        Self {
            depth,
            anchor: None,
            next: 0,
            arrived: Default::default(),
            frame,
        }
    }
}

impl Algorithm for Fixed {
    fn name(&self) -> String {
        format!("fixed {:.1} ms", self.depth as f64 / PER_MS)
    }
    fn arrive(&mut self, arrival: u64, seq: u32, media: u64) {
        if self.anchor.is_none() {
            self.anchor = Some(arrival.saturating_sub(media));
        }
        if seq >= self.next {
            self.arrived.insert(seq);
        }
    }
    fn next(&mut self, now: u64) -> Step {
        let Some(anchor) = self.anchor else {
            return Step::Idle;
        };
        let due = anchor + u64::from(self.next) * self.frame + self.depth;
        if now + self.frame / 2 < due {
            return Step::Idle;
        }
        let seq = self.next;
        self.next += 1;
        if self.arrived.remove(&seq) {
            Step::Play(seq)
        } else {
            Step::Conceal
        }
    }
}

/// What a simulation measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Mean delay from sending to playing, over played packets, ms.
    pub mean_delay_ms: f64,
    /// 99th percentile of that delay, ms.
    pub p99_delay_ms: f64,
    /// Packets that arrived but were never played, % of packets sent.
    pub late_loss_pct: f64,
    /// Concealed frames, % of frames output after the start.
    pub concealed_pct: f64,
    /// Times playout switched from audio to concealment, or skipped a packet.
    pub discontinuities: u64,
}

/// Runs `algo` over `trace` with a receiver playing `block`-sample host blocks.
pub fn simulate(trace: &Trace, algo: &mut dyn Algorithm, block: u64) -> Outcome {
    let n = trace.delays.len();
    let mut arrivals: Vec<(u64, u32)> = trace
        .delays
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.map(|d| ((trace.sent_at(i) + f64::from(d)) as u64, i as u32)))
        .collect();
    arrivals.sort_unstable();
    let end = trace.sent_at(n) as u64;
    let (mut next_arrival, mut produced, mut t) = (0usize, 0u64, 0u64);
    let mut played = vec![false; n];
    let mut delays = Vec::with_capacity(n);
    let (mut frames, mut concealed, mut disc, mut last_seq) = (0u64, 0u64, 0u64, None::<u32>);
    let mut was_playing = false;
    while t < end {
        // Arrivals are seen at block boundaries, as on a real audio thread.
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= t {
            let (a, seq) = arrivals[next_arrival];
            algo.arrive(a, seq, u64::from(seq) * trace.frame);
            next_arrival += 1;
        }
        while produced < t + block {
            match algo.next(produced) {
                Step::Play(seq) => {
                    played[seq as usize] = true;
                    delays.push((produced as f64 - trace.sent_at(seq as usize)) / PER_MS);
                    if last_seq.is_some_and(|l| seq > l + 1) {
                        disc += 1;
                    }
                    last_seq = Some(seq);
                    was_playing = true;
                    frames += 1;
                }
                Step::Conceal => {
                    if was_playing {
                        disc += 1;
                    }
                    was_playing = false;
                    concealed += 1;
                    frames += 1;
                }
                Step::Idle => {}
            }
            produced += trace.frame;
        }
        t += block;
    }
    let arrived_unplayed = trace
        .delays
        .iter()
        .zip(&played)
        .filter(|(d, p)| d.is_some() && !**p)
        .count();
    delays.sort_by(|a, b| a.total_cmp(b));
    let p99 = delays
        .get((delays.len() as f64 * 0.99) as usize)
        .copied()
        .unwrap_or(0.0);
    Outcome {
        mean_delay_ms: delays.iter().sum::<f64>() / delays.len().max(1) as f64,
        p99_delay_ms: p99,
        late_loss_pct: 100.0 * arrived_unplayed as f64 / n as f64,
        concealed_pct: 100.0 * concealed as f64 / frames.max(1) as f64,
        discontinuities: disc,
    }
}

/// The hindsight-optimal fixed depth: the smallest fixed delay whose late loss is ≤ 0.5 %
/// on this trace (searched in 0.25 ms steps).
pub fn best_fixed(trace: &Trace, block: u64) -> (u64, Outcome) {
    let step = 12;
    let mut depth = 0;
    loop {
        let o = simulate(trace, &mut Fixed::new(depth, trace.frame), block);
        if o.late_loss_pct <= 0.5 || depth > 48 * 500 {
            return (depth, o);
        }
        depth += step;
    }
}

/// Our algorithm with its default configuration.
pub fn ours() -> Ours {
    Ours(JitterBuffer::new(AdaptiveConfig::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_stays_close_to_the_hindsight_optimum_on_gaussian_jitter() {
        let traces = Trace::synthetic(20.0, 7);
        let gaussian = &traces[0];
        let (_, best) = best_fixed(gaussian, 64);
        let o = simulate(gaussian, &mut ours(), 64);
        println!("best fixed {best:?}\nours {o:?}");
        assert!(o.late_loss_pct <= 1.0, "{o:?}");
        assert!(
            o.mean_delay_ms <= 1.15 * best.mean_delay_ms,
            "ours {o:?} vs best fixed {best:?}"
        );
    }

    #[test]
    fn traces_are_deterministic() {
        let a = Trace::synthetic(2.0, 3);
        let b = Trace::synthetic(2.0, 3);
        assert_eq!(a[1].delays, b[1].delays);
        assert_eq!(a.len(), 6);
    }
}
