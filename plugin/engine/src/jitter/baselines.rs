//! The adaptive playout baselines ours is compared with in the simulator: queue-based
//! models of WebRTC NetEQ's, Jamulus's and SonoBus's buffers, each with its own knob.

use super::sim::{Algorithm, Step};

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
    const QUANTILE: f64 = 0.97;
    /// Packets the fastest-delay reference spans (2 s at 2.5 ms).
    const WINDOW: usize = 800;

    /// A fresh instance for `frame`-sample packets.
    pub fn new(frame: u64) -> Self {
        Self::with_quantile(frame, Self::QUANTILE)
    }

    /// With its knob, the target quantile, set to `quantile`.
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
    error_bound: f64,
}

impl JamulusLike {
    const MAX_SIZE: usize = 40;
    /// Jamulus's error-rate bound.
    const ERROR_BOUND: f64 = 0.001;
    /// Averaging time constant in events (~10 s at 2.5 ms).
    const AVERAGE: f64 = 4000.0;
    /// Ticks a smaller size must stay under the bound before we shrink (2 s at 2.5 ms).
    const HYSTERESIS: u32 = 800;

    /// A fresh instance.
    pub fn new() -> Self {
        Self::with_error_bound(Self::ERROR_BOUND)
    }

    /// With its knob, the error-rate bound, set to `bound`.
    pub fn with_error_bound(bound: f64) -> Self {
        Self {
            error_bound: bound,
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
            .position(|(_, r)| *r < self.error_bound)
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
    /// The least target, frames (its safety margin).
    least: u64,
    in_burst: bool,
    quiet_ticks: u64,
    ticks_per_10s: u64,
}

impl SonoBusLike {
    /// A fresh instance for `frame`-sample packets.
    pub fn new(frame: u64) -> Self {
        Self::with_least_frames(frame, 1)
    }

    /// With its knob, the least buffer (a safety margin), set to `least` frames.
    pub fn with_least_frames(frame: u64, least: u64) -> Self {
        Self {
            queue: Queue::new(),
            target: least.max(1),
            least: least.max(1),
            in_burst: false,
            quiet_ticks: 0,
            ticks_per_10s: 480_000 / frame.max(1),
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
        let shrink = self.quiet_ticks >= self.ticks_per_10s && self.target > self.least;
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

/// One setting of a baseline's knob (as printed) and a fresh instance with it.
pub type Setting = (String, Box<dyn Algorithm>);

/// Each baseline with its own knob swept from lean to safe, for `frame`-sample packets: its
/// name, and per setting the knob's value (as printed) and a fresh instance.
pub fn baseline_sweeps(frame: u64) -> Vec<(String, Vec<Setting>)> {
    let neteq = [0.9, 0.95, 0.97, 0.99, 0.995, 0.999].map(|q| -> Setting {
        (
            format!("quantile {q}"),
            Box::new(NetEqLike::with_quantile(frame, q)),
        )
    });
    let jamulus = [0.03, 0.01, 0.003, 0.001, 0.000_3, 0.000_1].map(|b| -> Setting {
        (
            format!("bound {b}"),
            Box::new(JamulusLike::with_error_bound(b)),
        )
    });
    let sonobus = [1, 2, 3, 4, 6, 8].map(|n| -> Setting {
        (
            format!("least {n} frames"),
            Box::new(SonoBusLike::with_least_frames(frame, n)),
        )
    });
    vec![
        ("neteq-style".into(), neteq.into()),
        ("jamulus-style".into(), jamulus.into()),
        ("sonobus-style".into(), sonobus.into()),
    ]
}

/// The three adaptive baselines, fresh, for `frame`-sample packets.
pub fn baselines(frame: u64) -> Vec<Box<dyn Algorithm>> {
    vec![
        Box::new(NetEqLike::new(frame)),
        Box::new(JamulusLike::new()),
        Box::new(SonoBusLike::new(frame)),
    ]
}
