//! Sender/receiver clock-rate estimation from packet arrivals.
//!
//! Each packet's delay is `arrival − media` (receiver samples minus sender samples). Queues
//! only ever add to it, so the smallest delay of each second follows the path's fixed part,
//! and that floor moves by `ε` samples per sample when the sender's clock runs `ε` slow
//! relative to ours. A delay that wanders (a queue that swells and drains for seconds) lifts
//! the minima too, and a least-squares line through them follows the wander. So the line is
//! the lower support line of the minima (Moon, Skelly and Towsley's skew estimate: the line
//! under every point that lies highest at their mean time, an edge of their lower convex hull)
//! over up to four minutes, and it is believed only when each half of that history gives
//! the same slope within [`AGREE_PPM`]: a clock difference holds all along, a wander does not.
//! A level that moves by more than 2 ms and stays there for [`PERSIST`] seconds is a new
//! route: the fit starts afresh from it. Pure and allocation-free.

/// Seconds of history the fit uses.
const SEGMENTS: usize = 256;
/// Segments needed before an estimate is given: a minute, so that a wander of a few seconds
/// cannot pass for a trend in both halves of it.
const MIN_SEGMENTS: usize = 64;
/// A move of the per-second minimum beyond this (2 ms) is a new route or a wander, not drift:
/// even 1000 ppm moves it only 1 ms per second.
const ROUTE_CHANGE_SAMPLES: f64 = 96.0;
/// Seconds a moved level must hold to be a new route.
const PERSIST: usize = 8;
/// The whole history and each of its halves must agree this closely for the slope to count.
const AGREE_PPM: f64 = 3.0;
/// Studio clocks differ by a few hundred ppm at most; anything larger is a measuring error.
const MAX_PPM: f64 = 1000.0;

/// Estimates the sender's clock rate relative to ours.
#[derive(Debug, Clone)]
pub struct DriftEstimator {
    segment_samples: u64,
    /// Per-second minima as (mid time, minimum delay), oldest first from `start`.
    points: [(f64, f64); SEGMENTS],
    start: usize,
    len: usize,
    /// Indices (in history order) of the lower hull, for the fit; scratch.
    hull: [usize; SEGMENTS],
    /// A level shift under way: the level before it, its sign, and the minima since it began.
    shift: Option<(f64, f64, usize)>,
    current_start: Option<u64>,
    current_min: i64,
    ppm: f64,
}

impl Default for DriftEstimator {
    fn default() -> Self {
        Self::new(48_000)
    }
}

impl DriftEstimator {
    /// An estimator that takes one minimum per `segment_samples` of arrivals.
    pub fn new(segment_samples: u64) -> Self {
        Self {
            segment_samples: segment_samples.max(1),
            points: [(0.0, 0.0); SEGMENTS],
            start: 0,
            len: 0,
            hull: [0; SEGMENTS],
            shift: None,
            current_start: None,
            current_min: i64::MAX,
            ppm: 0.0,
        }
    }

    /// The sender's clock is slower than ours by this many ppm (negative: faster); 0 until
    /// enough history agrees.
    pub fn ppm(&self) -> f64 {
        self.ppm
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = Self::new(self.segment_samples);
    }

    /// A packet with `delay` (receiver samples) arrived at `arrival`.
    pub fn observe(&mut self, arrival: u64, delay: i64) {
        let start = *self.current_start.get_or_insert(arrival);
        if arrival >= start + self.segment_samples {
            if self.current_min != i64::MAX {
                let mid = start as f64 + self.segment_samples as f64 / 2.0;
                self.push(mid, self.current_min as f64);
            }
            // Whole segments only, so the minima stay evenly spaced.
            let skipped = (arrival - start) / self.segment_samples;
            self.current_start = Some(start + skipped * self.segment_samples);
            self.current_min = i64::MAX;
        }
        self.current_min = self.current_min.min(delay);
    }

    fn point(&self, i: usize) -> (f64, f64) {
        self.points[(self.start + i) % SEGMENTS]
    }

    fn push(&mut self, t: f64, min: f64) {
        if self.len > 0 {
            self.follow_level(min);
        }
        if self.len == SEGMENTS {
            self.start = (self.start + 1) % SEGMENTS;
            self.len -= 1;
        }
        self.points[(self.start + self.len) % SEGMENTS] = (t, min);
        self.len += 1;
        if self.len >= MIN_SEGMENTS {
            let half = self.len / 2;
            let whole = self.support_slope(0, self.len);
            let first = self.support_slope(0, half);
            let second = self.support_slope(half, self.len);
            if let (Some(w), Some(a), Some(b)) = (whole, first, second) {
                if (a - w).abs().max((b - w).abs()) * 1e6 <= AGREE_PPM {
                    self.ppm = (w * 1e6).clamp(-MAX_PPM, MAX_PPM);
                }
            }
        }
    }

    /// Watches for a level that moved by more than 2 ms; once it has held for [`PERSIST`]
    /// minima it is a new route, and the history before it goes.
    fn follow_level(&mut self, min: f64) {
        let (_, last) = self.point(self.len - 1);
        match self.shift {
            None if (min - last).abs() > ROUTE_CHANGE_SAMPLES => {
                self.shift = Some((last, (min - last).signum(), 1));
            }
            Some((level, sign, held)) => {
                if (min - level) * sign > ROUTE_CHANGE_SAMPLES {
                    if held + 1 >= PERSIST {
                        // Keep the minima since the move (this one is pushed next).
                        let keep = held.min(self.len);
                        self.start = (self.start + self.len - keep) % SEGMENTS;
                        self.len = keep;
                        self.shift = None;
                    } else {
                        self.shift = Some((level, sign, held + 1));
                    }
                } else {
                    self.shift = None;
                }
            }
            None => {}
        }
    }

    /// Slope of the lower support line of the minima `from..to`: the edge of their lower
    /// convex hull above their mean time. `None` for fewer than two points.
    fn support_slope(&mut self, from: usize, to: usize) -> Option<f64> {
        let n = to.saturating_sub(from);
        if n < 2 {
            return None;
        }
        let mut h = 0;
        let mut mean_t = 0.0;
        for i in from..to {
            let p = self.point(i);
            mean_t += p.0 / n as f64;
            while h >= 2 {
                let (a, b) = (self.point(self.hull[h - 2]), self.point(self.hull[h - 1]));
                // Drop `b` unless it lies below the chord from `a` to `p` (a lower hull turns
                // left).
                let cross = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
                if cross <= 0.0 {
                    h -= 1;
                } else {
                    break;
                }
            }
            self.hull[h] = i;
            h += 1;
        }
        (1..h).find_map(|k| {
            let (a, b) = (self.point(self.hull[k - 1]), self.point(self.hull[k]));
            (b.0 >= mean_t || k == h - 1).then(|| (b.1 - a.1) / (b.0 - a.0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets every 120 sender samples through a sender clock `ppm` slow, with jitter.
    fn run(ppm: f64, seconds: u64, step_at: Option<u64>) -> DriftEstimator {
        let mut d = DriftEstimator::default();
        let mut x = 12345u64;
        for i in 0..seconds * 400 {
            let media = i * 120;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let jitter = (x % 200) as f64;
            let step = step_at.map_or(0.0, |s| if i >= s * 400 { 700.0 } else { 0.0 });
            let arrival = (media as f64 * (1.0 + ppm * 1e-6) + 480.0 + jitter + step) as u64;
            d.observe(arrival, arrival as i64 - media as i64);
        }
        d
    }

    #[test]
    fn finds_the_rate_difference_within_a_few_ppm() {
        for ppm in [100.0, -200.0, 0.0] {
            let d = run(ppm, 90, None);
            assert!(
                (d.ppm() - ppm).abs() < 5.0,
                "{ppm} ppm estimated {}",
                d.ppm()
            );
        }
    }

    #[test]
    fn a_route_change_is_not_drift() {
        let d = run(50.0, 120, Some(30));
        assert!((d.ppm() - 50.0).abs() < 10.0, "estimated {}", d.ppm());
    }

    /// Packets every 2.5 ms for `seconds` through a delay that wanders as `echoel netem`'s
    /// does (to a random point of 0–8 ms at 0.8–8 ms a second, then another) over a sender
    /// clock `ppm` slow; the estimate after each second.
    fn wander(ppm: f64, seconds: u64, seed: u64) -> Vec<f64> {
        let mut d = DriftEstimator::default();
        let mut x = seed.max(1);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let (range, mut at, mut to, mut pace) = (8.0 * 48.0, 0.0f64, 0.0f64, 0.0f64);
        let mut out = Vec::new();
        for i in 0..seconds * 400 {
            let dt = 120.0 / 48_000.0;
            if (to - at).abs() <= pace * dt {
                at = to;
                to = range * next();
                pace = range * (0.1 + 0.9 * next());
            } else {
                at += pace * dt * (to - at).signum();
            }
            let media = i * 120;
            let arrival = (media as f64 * (1.0 + ppm * 1e-6) + 480.0 + at + 20.0 * next()) as u64;
            d.observe(arrival, arrival as i64 - media as i64);
            if i % 400 == 399 {
                out.push(d.ppm());
            }
        }
        out
    }

    #[test]
    fn a_wandering_delay_is_not_drift() {
        for seed in 1..=6 {
            let same_clock = wander(0.0, 300, seed);
            let worst = same_clock.iter().fold(0.0f64, |w, p| w.max(p.abs()));
            let drifting = wander(80.0, 300, seed);
            // Through the wander a real difference may stay unconfirmed (the slew inside the
            // dead band absorbs it); a value given is right.
            let wrong = drifting.iter().fold(0.0f64, |w, p| {
                if *p == 0.0 {
                    w
                } else {
                    w.max((p - 80.0).abs())
                }
            });
            let last = drifting[drifting.len() - 1];
            println!(
                "seed {seed}: same clock, worst {worst:.2} ppm; 80 ppm: at 5 min {last:.2}, worst given {:.2} off", wrong);
            assert!(worst <= 5.0, "seed {seed}: a wander read as {worst:.2} ppm");
            assert!(wrong <= 5.0, "seed {seed}: 80 ppm read {wrong:.2} ppm off");
        }
    }

    #[test]
    fn says_nothing_before_a_minute() {
        assert_eq!(run(300.0, 60, None).ppm(), 0.0);
    }
}
