//! Trace-driven comparison of playout algorithms: a sender's packets cross a network described
//! by a per-packet delay (or loss), the receiver plays them in host blocks, and each algorithm
//! decides frame by frame what to play. Deterministic (seeded traces, no clock).

use super::adaptive::{AdaptiveConfig, Decision, JitterBuffer};
use crate::packet::{PacketSlot, StreamId};
use crate::tsm;

pub use super::baselines::{baselines, sweeps, Fixed, JamulusLike, NetEqLike, SonoBusLike};

/// 48 kHz samples per millisecond.
pub(super) const PER_MS: f64 = 48.0;

/// A network trace: what happened to each packet of one sender.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Name for tables.
    pub name: String,
    /// Frame length in samples.
    pub frame: u64,
    /// Sender clock error: its samples last `1 + drift_ppm·1e-6` receiver samples.
    pub drift_ppm: f64,
    /// One-way network delay of each packet in samples; `None` if lost.
    pub delays: Vec<Option<u32>>,
}

/// Deterministic xorshift generator for traces and impairments (seed: any non-zero value).
pub struct Rng(pub u64);
impl Rng {
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
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
        let mk = |name: &str, drift_ppm, f: &mut dyn FnMut(usize, &mut Rng) -> Option<u32>| {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            Trace {
                name: name.to_owned(),
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

    /// Parses a trace file: `#` comments, a `frame N` line, then one line per packet with
    /// its one-way delay in samples or `-` if it was lost.
    pub fn parse(name: &str, text: &str) -> Result<Trace, String> {
        let mut frame = None;
        let mut delays = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(f) = line.strip_prefix("frame ") {
                frame = Some(
                    f.parse()
                        .map_err(|_| format!("line {}: bad frame", i + 1))?,
                );
            } else if line == "-" {
                delays.push(None);
            } else {
                let d = line
                    .parse()
                    .map_err(|_| format!("line {}: not a delay: {line}", i + 1))?;
                delays.push(Some(d));
            }
        }
        let frame = frame.ok_or("no `frame` line")?;
        if delays.is_empty() {
            return Err("no packets".into());
        }
        Ok(Trace {
            name: name.to_owned(),
            frame,
            drift_ppm: 0.0,
            delays,
        })
    }

    /// The traces recorded from real loopback jams through the userspace impairment proxy
    /// (`echoel bench record-trace`), kept under `tests/traces/`.
    pub fn recorded() -> Vec<Trace> {
        [
            (
                "rec-wifi",
                include_str!("../../../../tests/traces/wifi-loopback.trace"),
            ),
            (
                "rec-congested",
                include_str!("../../../../tests/traces/congested-loopback.trace"),
            ),
        ]
        .into_iter()
        .filter_map(|(name, text)| Trace::parse(name, text).ok())
        .collect()
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
    /// After [`Step::Idle`] at `now`: silence to play before asking again.
    fn idle_samples(&self, _now: u64, frame: u64) -> f64 {
        frame as f64 / 4.0
    }
    /// Receiver samples each played or concealed frame sample lasts (drift correction).
    fn stretch(&self) -> f64 {
        1.0
    }
    /// After a played frame: receiver samples time-scaling adds to it (negative: takes out).
    fn rescale(&mut self, _frame: u64) -> f64 {
        0.0
    }
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
    fn stretch(&self) -> f64 {
        self.0.stretch()
    }
    fn idle_samples(&self, now: u64, _frame: u64) -> f64 {
        self.0.idle_samples(now) as f64
    }
    fn next(&mut self, now: u64) -> Step {
        match self.0.next(now, false) {
            Decision::Play(p) => Step::Play(p.seq),
            Decision::Lost | Decision::Stall => Step::Conceal,
            Decision::Idle => Step::Idle,
        }
    }
    /// As the stream splices: a period where it asks, here taken to fit exactly (a tone's
    /// worst case is a period away); out at most a frame per frame, as a splice reads two
    /// stretches to write one.
    fn rescale(&mut self, frame: u64) -> f64 {
        let Some(r) = self.0.rescale() else {
            return 0.0;
        };
        let lag = r.want.clamp(tsm::MIN_LAG, r.max.max(tsm::MIN_LAG)) as i64;
        let lag = if r.shrink {
            lag.min(frame as i64)
        } else {
            -lag
        };
        self.0.rescaled(lag);
        -lag as f64
    }
}

/// What a simulation measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Mean delay from sending to playing, over played packets, ms.
    pub mean_delay_ms: f64,
    /// 99th percentile of that delay, ms.
    pub p99_delay_ms: f64,
    /// Packets that arrived but were never played, from the first one played on, % of
    /// packets sent.
    pub late_loss_pct: f64,
    /// Concealed frames, % of frames output after the start.
    pub concealed_pct: f64,
    /// Times playout switched from audio to concealment, or skipped a packet.
    pub discontinuities: u64,
}

/// Whether ours meets its target against one other row.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Met.
    pub pass: bool,
    /// `pass`/`FAIL` with the ratios that decided it.
    pub text: String,
}

impl Verdict {
    /// Ours must keep its mean delay within 1.15× the hindsight-optimal fixed depth's.
    pub fn against_best_fixed(ours: &Outcome, best: &Outcome) -> Self {
        let ratio = ours.mean_delay_ms / best.mean_delay_ms.max(1e-9);
        let pass = ratio <= 1.15;
        Self {
            pass,
            text: format!("{} ours/fixed mean {ratio:.2}x", pass_fail(pass)),
        }
    }

    /// Ours must have no more late loss and no more mean delay than an adaptive baseline
    /// (to 0.01 % and 0.01 ms: equal within the table's precision counts as equal).
    pub fn against_adaptive(ours: &Outcome, other: &Outcome) -> Self {
        let late = ours.late_loss_pct <= other.late_loss_pct + 0.01;
        let delay = ours.mean_delay_ms <= other.mean_delay_ms + 0.01;
        let pass = late && delay;
        Self {
            pass,
            text: format!(
                "{} ours late {:+.3} pp, mean {:+.2} ms",
                pass_fail(pass),
                ours.late_loss_pct - other.late_loss_pct,
                ours.mean_delay_ms - other.mean_delay_ms
            ),
        }
    }
}

fn pass_fail(pass: bool) -> &'static str {
    if pass {
        "pass"
    } else {
        "FAIL"
    }
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
    let (mut next_arrival, mut produced, mut t) = (0usize, 0f64, 0u64);
    let mut played = vec![false; n];
    let mut delays = Vec::with_capacity(n);
    let (mut frames, mut concealed, mut disc, mut last_seq) = (0u64, 0u64, 0u64, None::<u32>);
    let mut was_playing = false;
    while t < end {
        // Arrivals are seen, and stamped, at block boundaries, as on a real audio thread.
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= t {
            let (_, seq) = arrivals[next_arrival];
            algo.arrive(t, seq, u64::from(seq) * trace.frame);
            next_arrival += 1;
        }
        while produced < (t + block) as f64 {
            let step = algo.next(produced as u64);
            // Silence before the start is as long as the algorithm asks (a quarter frame unless
            // it knows better); audio lasts a frame, stretched by drift correction.
            let mut length = match step {
                Step::Idle => algo.idle_samples(produced as u64, trace.frame),
                _ => trace.frame as f64 * algo.stretch(),
            };
            match step {
                Step::Play(seq) => {
                    length += algo.rescale(trace.frame);
                    played[seq as usize] = true;
                    delays.push((produced - trace.sent_at(seq as usize)) / PER_MS);
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
            produced += length;
        }
        t += block;
    }
    // Late loss counts from the first packet played: what an algorithm passes over before
    // it starts is never a gap anyone hears.
    let first = played.iter().position(|&p| p).unwrap_or(n);
    let arrived_unplayed = trace.delays[first..]
        .iter()
        .zip(&played[first..])
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
        let o = simulate(trace, &mut Fixed::new(depth, trace), block);
        if o.late_loss_pct <= 0.5 || depth > 48 * 500 {
            return (depth, o);
        }
        depth += step;
    }
}

/// The mean delay (ms) at which a curve of (mean delay, concealed %) points first conceals no
/// more than `concealed` %, interpolated between the points either side; `None` if no point
/// does. Points are taken on their lower envelope (more delay never counts as more loss).
pub fn delay_for_loss(points: &[(f64, f64)], concealed: f64) -> Option<f64> {
    let mut pts = points.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = f64::INFINITY;
    for p in &mut pts {
        best = best.min(p.1);
        p.1 = best;
    }
    let i = pts.iter().position(|p| p.1 <= concealed)?;
    if i == 0 {
        return Some(pts[0].0);
    }
    let (a, b) = (pts[i - 1], pts[i]);
    let f = if a.1 > b.1 {
        (a.1 - concealed) / (a.1 - b.1)
    } else {
        1.0
    };
    Some(a.0 + f * (b.0 - a.0))
}

/// One baseline's delay–loss curve on a trace, against ours at equal loss.
#[derive(Debug, Clone)]
pub struct EqualLoss {
    /// The baseline.
    pub baseline: &'static str,
    /// (mean delay ms, concealed %) at each setting of its knob.
    pub curve: Vec<(f64, f64)>,
    /// The mean delay it needs to conceal no more than ours; `None`: no setting does.
    pub needs_ms: Option<f64>,
    /// Ours lies on or below the curve: no more delay than it needs for our loss.
    pub pass: bool,
}

/// Each baseline swept over its own knob on `trace` (what a listener hears: losses, late
/// packets and waits), against `ours` there.
pub fn equal_loss(trace: &Trace, ours: &Outcome, block: u64) -> Vec<EqualLoss> {
    let mut rows: Vec<EqualLoss> = Vec::new();
    for (name, _setting, mut algo) in sweeps(trace.frame) {
        let b = simulate(trace, algo.as_mut(), block);
        let point = (b.mean_delay_ms, b.concealed_pct);
        match rows.iter_mut().find(|r| r.baseline == name) {
            Some(r) => r.curve.push(point),
            None => rows.push(EqualLoss {
                baseline: name,
                curve: vec![point],
                needs_ms: None,
                pass: false,
            }),
        }
    }
    for r in &mut rows {
        r.needs_ms = delay_for_loss(&r.curve, ours.concealed_pct);
        r.pass = r.needs_ms.is_none_or(|d| ours.mean_delay_ms <= d);
    }
    rows
}

/// Our algorithm with its default configuration, for a receiver rendering `block` samples.
pub fn ours(block: u64) -> Ours {
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    jb.set_render_ahead(block as u32);
    Ours(jb)
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
