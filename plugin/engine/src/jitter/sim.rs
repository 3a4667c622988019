//! Trace-driven comparison of playout algorithms: a sender's packets cross a network described
//! by a per-packet delay (or loss), the receiver plays them in host blocks, and each algorithm
//! decides frame by frame what to play. Deterministic (seeded traces, no clock).

use super::adaptive::{AdaptiveConfig, Decision, JitterBuffer};
use crate::packet::{PacketSlot, StreamId};
use crate::tsm;

pub use super::baselines::{
    baseline_sweeps, baselines, JamulusLike, NetEqLike, Setting, SonoBusLike,
};

/// 48 kHz samples per millisecond.
const PER_MS: f64 = 48.0;

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
    /// After [`Step::Play`]: samples the frame just played was made longer (negative:
    /// shorter) by a time-scale splice.
    fn spliced(&mut self) -> f64 {
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
    fn spliced(&mut self) -> f64 {
        splice_as_asked(&mut self.0) as f64
    }
}

/// Does the splice `jb` asks for where no audio is simulated: the lag asked for, within what
/// a splice can take. Returns the samples playout was made longer (negative: shorter).
pub(crate) fn splice_as_asked(jb: &mut JitterBuffer) -> i64 {
    let want = jb.splice_request();
    let lag = want
        .unsigned_abs()
        .clamp(tsm::MIN_LAG as u64, tsm::MAX_LAG as u64) as i64;
    let done = match want.signum() {
        1 => lag,
        -1 if want.unsigned_abs() >= tsm::MIN_LAG as u64 => -lag,
        _ => return 0,
    };
    jb.spliced(done);
    done
}

/// A fixed playout delay: packet `i` plays `depth` samples after the fastest path (the
/// trace's smallest delay, known in hindsight) plus its media offset; later is concealed.
pub struct Fixed {
    depth: u64,
    anchor: u64,
    started: bool,
    next: u32,
    arrived: std::collections::BTreeSet<u32>,
    frame: u64,
}

impl Fixed {
    /// A fixed delay of `depth` samples above the fastest path of `trace`.
    pub fn new(depth: u64, trace: &Trace) -> Self {
        let fastest = trace.delays.iter().flatten().min().copied().unwrap_or(0);
        Self {
            depth,
            anchor: u64::from(fastest),
            started: false,
            next: 0,
            arrived: Default::default(),
            frame: trace.frame,
        }
    }
}

impl Algorithm for Fixed {
    fn name(&self) -> String {
        format!("fixed {:.1} ms", self.depth as f64 / PER_MS)
    }
    fn arrive(&mut self, _arrival: u64, seq: u32, _media: u64) {
        self.started = true;
        if seq >= self.next {
            self.arrived.insert(seq);
        }
    }
    fn next(&mut self, now: u64) -> Step {
        if !self.started {
            return Step::Idle;
        }
        let due = self.anchor + u64::from(self.next) * self.frame + self.depth;
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
            let length = match step {
                Step::Idle => algo.idle_samples(produced as u64, trace.frame),
                Step::Play(_) => trace.frame as f64 * algo.stretch() + algo.spliced(),
                Step::Conceal => trace.frame as f64 * algo.stretch(),
            };
            match step {
                Step::Play(seq) => {
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

/// Our algorithm with its default configuration, for a receiver rendering `block` samples.
pub fn ours(block: u64) -> Ours {
    let mut jb = JitterBuffer::new(AdaptiveConfig::default());
    jb.set_render_ahead(block as u32);
    Ours(jb)
}

/// Where `ours` lies against a baseline's delay–concealment curve (its outcomes over a knob
/// sweep): the curve's mean delay at our concealment, interpolated between the settings either
/// side of it. Below (or on) the curve passes. Concealing less than any setting does passes if
/// we are no later than the setting that conceals least; more than every setting, if no later
/// than the one that conceals most.
pub fn against_curve(ours: &Outcome, curve: &[Outcome]) -> (bool, Option<f64>) {
    let mut points: Vec<(f64, f64)> = curve
        .iter()
        .map(|o| (o.concealed_pct, o.mean_delay_ms))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let (Some(&least), Some(&most)) = (points.first(), points.last()) else {
        return (true, None);
    };
    let x = ours.concealed_pct;
    let at = if x <= least.0 {
        least.1
    } else if x >= most.0 {
        most.1
    } else {
        // The lowest delay any setting reaches at this concealment or less.
        let i = points.partition_point(|p| p.0 <= x);
        let (a, b) = (points[i - 1], points[i]);
        let interpolated = a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0).max(1e-12);
        points[..i].iter().map(|p| p.1).fold(interpolated, f64::min)
    };
    (ours.mean_delay_ms <= at + 0.05, Some(at))
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
