//! The baselines the simulator runs ours against: a fixed delay and three adaptive buffers in
//! the manner of WebRTC NetEQ, Jamulus and SonoBus, each with its own knob.

use super::sim::{Algorithm, Step, Trace, PER_MS};

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

/// The playout core the queue-based baselines share: packets held by sequence number, one
/// frame per tick; a missing frame with newer ones held is lost (conceal, move on), with
/// nothing held it is an underrun (conceal, wait: the delay grows by a frame); a frame is
/// dropped when the policy asks to shrink.
struct Queue {
    held: std::collections::BTreeSet<u32>,
    next: u32,
    started: bool,
}

/// What the queue did in one tick, for the policy to learn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    Played,
    Lost,
    Underrun,
    Waiting,
}

impl Queue {
    fn new() -> Self {
        Self {
            held: Default::default(),
            next: 0,
            started: false,
        }
    }
    fn arrive(&mut self, seq: u32) {
        if !self.started || seq >= self.next {
            self.held.insert(seq);
        }
    }
    /// Frames waiting: from the next one to the newest held.
    fn level(&self) -> u64 {
        self.held
            .last()
            .map_or(0, |&n| u64::from(n.saturating_sub(self.next)) + 1)
    }
    /// Plays a frame; starts once `target` frames wait; drops one first if `shrink`.
    fn tick(&mut self, target: u64, shrink: bool) -> (Step, Tick) {
        if !self.started {
            if self.level() < target.max(1) {
                return (Step::Idle, Tick::Waiting);
            }
            self.started = true;
            self.next = self.held.first().copied().unwrap_or(0);
        }
        if shrink && self.held.contains(&self.next) && self.held.contains(&(self.next + 1)) {
            self.held.remove(&self.next);
            self.next += 1;
        }
        if self.held.remove(&self.next) {
            self.next += 1;
            return (Step::Play(self.next - 1), Tick::Played);
        }
        if self.held.range(self.next..).next().is_some() {
            self.next += 1;
            (Step::Conceal, Tick::Lost)
        } else {
            (Step::Conceal, Tick::Underrun)
        }
    }
}

/// WebRTC NetEQ-style: a histogram of each packet's delay relative to the fastest recent one,
/// in frame-sized buckets with exponential forgetting; the target level is its 97th
/// percentile; the buffer accelerates (drops a frame, at most one in four) while the level is
/// above target and expands (conceals, waiting) on underrun.
pub struct NetEqLike {
    queue: Queue,
    frame: u64,
    quantile: f64,
    hist: Vec<f64>,
    recent: std::collections::VecDeque<i64>,
    since_accel: u32,
}

impl NetEqLike {
    /// Forgetting factor per packet (NetEQ's 0.9993: a time constant of ~1400 packets).
    const FORGET: f64 = 0.9993;
    /// NetEQ's target quantile.
    pub const QUANTILE: f64 = 0.97;
    /// Packets the fastest-delay reference spans (2 s at 2.5 ms).
    const WINDOW: usize = 800;

    /// A fresh instance for `frame`-sample packets.
    pub fn new(frame: u64) -> Self {
        Self::with_quantile(frame, Self::QUANTILE)
    }

    /// With its knob, the target quantile, at `quantile`.
    pub fn with_quantile(frame: u64, quantile: f64) -> Self {
        let mut hist = vec![0.0; 64];
        hist[0] = 1.0;
        Self {
            queue: Queue::new(),
            frame,
            quantile,
            hist,
            recent: Default::default(),
            since_accel: 0,
        }
    }

    fn target(&self) -> u64 {
        let mut sum = 0.0;
        for (i, p) in self.hist.iter().enumerate() {
            sum += p;
            if sum >= self.quantile {
                return i as u64 + 1;
            }
        }
        self.hist.len() as u64
    }
}

impl Algorithm for NetEqLike {
    fn name(&self) -> String {
        "neteq-style".into()
    }
    fn arrive(&mut self, arrival: u64, seq: u32, media: u64) {
        let delay = arrival as i64 - media as i64;
        self.recent.push_back(delay);
        if self.recent.len() > Self::WINDOW {
            self.recent.pop_front();
        }
        let fastest = self.recent.iter().copied().min().unwrap_or(delay);
        let bucket = (((delay - fastest) as u64).div_ceil(self.frame) as usize).min(63);
        for p in &mut self.hist {
            *p *= Self::FORGET;
        }
        self.hist[bucket] += 1.0 - Self::FORGET;
        self.queue.arrive(seq);
    }
    fn next(&mut self, _now: u64) -> Step {
        let target = self.target();
        self.since_accel += 1;
        let shrink = self.queue.level() > target + 1 && self.since_accel >= 4;
        if shrink {
            self.since_accel = 0;
        }
        self.queue.tick(target, shrink).0
    }
}

/// Jamulus-style auto buffer: the same arrivals feed simulated FIFOs of every size; each
/// counts its overruns and underruns; the buffer takes the smallest size whose error rate is
/// under the bound, growing at once and shrinking only after the smaller size has stayed good
/// for a while (hysteresis).
pub struct JamulusLike {
    queue: Queue,
    /// Per simulated size (index + 1 frames): frames held and a running error rate.
    sims: Vec<(u64, f64)>,
    size: u64,
    smaller_good_for: u32,
    bound: f64,
}

impl JamulusLike {
    const MAX_SIZE: usize = 40;
    /// Jamulus's error-rate bound.
    pub const ERROR_BOUND: f64 = 0.001;
    /// Averaging time constant in events (~10 s at 2.5 ms).
    const AVERAGE: f64 = 4000.0;
    /// Ticks a smaller size must stay under the bound before we shrink (2 s at 2.5 ms).
    const HYSTERESIS: u32 = 800;

    /// A fresh instance.
    pub fn new() -> Self {
        Self::with_bound(Self::ERROR_BOUND)
    }

    /// With its knob, the error-rate bound, at `bound`.
    pub fn with_bound(bound: f64) -> Self {
        Self {
            bound,
            queue: Queue::new(),
            sims: (1..=Self::MAX_SIZE as u64)
                .map(|size| (size.div_ceil(2), 0.0))
                .collect(),
            size: 2,
            smaller_good_for: 0,
        }
    }

    fn record(rate: &mut f64, error: bool) {
        *rate += (f64::from(u8::from(error)) - *rate) / Self::AVERAGE;
    }
}

impl Default for JamulusLike {
    fn default() -> Self {
        Self::new()
    }
}

impl Algorithm for JamulusLike {
    fn name(&self) -> String {
        "jamulus-style".into()
    }
    fn arrive(&mut self, _arrival: u64, seq: u32, _media: u64) {
        for (i, (held, rate)) in self.sims.iter_mut().enumerate() {
            let size = i as u64 + 1;
            let overrun = *held >= size;
            // Like Jamulus's buffers, an error re-centres the simulated buffer.
            *held = if overrun { size.div_ceil(2) } else { *held + 1 };
            Self::record(rate, overrun);
        }
        self.queue.arrive(seq);
    }
    fn next(&mut self, _now: u64) -> Step {
        if self.queue.held.is_empty() && !self.queue.started {
            // No stream yet: nothing to measure.
            return Step::Idle;
        }
        for (i, (held, rate)) in self.sims.iter_mut().enumerate() {
            let underrun = *held == 0;
            *held = if underrun {
                (i as u64 + 1).div_ceil(2)
            } else {
                *held - 1
            };
            Self::record(rate, underrun);
        }
        // The smallest size under the bound; if none is, the one with the fewest errors.
        let best = self
            .sims
            .iter()
            .position(|(_, r)| *r < self.bound)
            .or_else(|| {
                (0..self.sims.len()).min_by(|&a, &b| self.sims[a].1.total_cmp(&self.sims[b].1))
            })
            .map_or(Self::MAX_SIZE as u64, |i| i as u64 + 1);
        let mut shrink = false;
        if best > self.size {
            self.size = best;
            self.smaller_good_for = 0;
        } else if best < self.size {
            self.smaller_good_for += 1;
            if self.smaller_good_for >= Self::HYSTERESIS {
                self.size -= 1;
                self.smaller_good_for = 0;
            }
        } else {
            self.smaller_good_for = 0;
        }
        // A FIFO of `size` frames: more waiting than it holds overflows.
        if self.queue.level() > self.size {
            shrink = true;
        }
        self.queue.tick(self.size, shrink).0
    }
}

/// SonoBus-style: start at one frame, grow by one frame per burst of dropouts, shrink by one
/// frame after 10 s without any.
pub struct SonoBusLike {
    queue: Queue,
    target: u64,
    in_burst: bool,
    quiet_ticks: u64,
    /// Dropout-free ticks before shrinking.
    shrink_after_ticks: u64,
}

impl SonoBusLike {
    /// A fresh instance for `frame`-sample packets.
    pub fn new(frame: u64) -> Self {
        Self::with_quiet_seconds(frame, 10)
    }

    /// With its knob, the dropout-free time after which it shrinks, at `seconds`.
    pub fn with_quiet_seconds(frame: u64, seconds: u64) -> Self {
        Self {
            queue: Queue::new(),
            target: 1,
            in_burst: false,
            quiet_ticks: 0,
            shrink_after_ticks: seconds * 48_000 / frame.max(1),
        }
    }
}

impl Algorithm for SonoBusLike {
    fn name(&self) -> String {
        "sonobus-style".into()
    }
    fn arrive(&mut self, _arrival: u64, seq: u32, _media: u64) {
        self.queue.arrive(seq);
    }
    fn next(&mut self, _now: u64) -> Step {
        self.quiet_ticks += 1;
        let shrink = self.quiet_ticks >= self.shrink_after_ticks && self.target > 1;
        if shrink {
            self.target -= 1;
            self.quiet_ticks = 0;
        }
        let shrink = shrink || self.queue.level() > self.target + 1;
        let (step, what) = self.queue.tick(self.target, shrink);
        let dropout = matches!(what, Tick::Underrun | Tick::Lost);
        if dropout {
            if !self.in_burst {
                self.target += 1;
            }
            self.quiet_ticks = 0;
        }
        self.in_burst = dropout;
        step
    }
}

/// Each adaptive baseline swept over its own knob, from its least delay to its least loss:
/// (baseline, knob, setting, fresh instance) for `frame`-sample packets.
pub fn sweeps(frame: u64) -> Vec<(&'static str, String, Box<dyn Algorithm>)> {
    let mut all: Vec<(&'static str, String, Box<dyn Algorithm>)> = Vec::new();
    for q in [0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999] {
        all.push((
            "neteq-style",
            format!("quantile {q}"),
            Box::new(NetEqLike::with_quantile(frame, q)),
        ));
    }
    for b in [0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001, 0.000_01] {
        all.push((
            "jamulus-style",
            format!("bound {b}"),
            Box::new(JamulusLike::with_bound(b)),
        ));
    }
    for s in [1, 2, 5, 10, 30, 120] {
        all.push((
            "sonobus-style",
            format!("shrink after {s} s"),
            Box::new(SonoBusLike::with_quiet_seconds(frame, s)),
        ));
    }
    all
}

/// The three adaptive baselines, fresh, for `frame`-sample packets.
pub fn baselines(frame: u64) -> Vec<Box<dyn Algorithm>> {
    vec![
        Box::new(NetEqLike::new(frame)),
        Box::new(JamulusLike::new()),
        Box::new(SonoBusLike::new(frame)),
    ]
}
