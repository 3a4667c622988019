//! Sender/receiver clock-rate estimation from packet arrivals.
//!
//! Each packet's delay is `arrival − media` (receiver samples minus sender samples). Jitter
//! only ever adds to it, so the smallest delay of each second follows the path's fixed part,
//! and that minimum moves by `ε` samples per sample when the sender's clock runs `ε` slow
//! relative to ours. A least-squares line through the last minute of per-second minima gives
//! `ε`; a jump between two seconds far beyond any clock error is a route change and starts the
//! fit afresh. Pure and allocation-free.

/// Seconds of history the fit uses.
const SEGMENTS: usize = 64;
/// Segments needed before an estimate is given.
const MIN_SEGMENTS: usize = 8;
/// A change of the per-second minimum beyond this (2 ms) is a new route, not drift: even
/// 1000 ppm moves it only 1 ms per second.
const ROUTE_CHANGE_SAMPLES: f64 = 96.0;
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
            current_start: None,
            current_min: i64::MAX,
            ppm: 0.0,
        }
    }

    /// The sender's clock is slower than ours by this many ppm (negative: faster); 0 until
    /// enough history is in.
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

    fn push(&mut self, t: f64, min: f64) {
        if self.len > 0 {
            let (_, last) = self.points[(self.start + self.len - 1) % SEGMENTS];
            if (min - last).abs() > ROUTE_CHANGE_SAMPLES {
                self.start = 0;
                self.len = 0;
            }
        }
        if self.len == SEGMENTS {
            self.start = (self.start + 1) % SEGMENTS;
            self.len -= 1;
        }
        self.points[(self.start + self.len) % SEGMENTS] = (t, min);
        self.len += 1;
        if self.len >= MIN_SEGMENTS {
            self.ppm = (self.slope() * 1e6).clamp(-MAX_PPM, MAX_PPM);
        }
    }

    /// Least-squares slope of the minima (relative to the first point, for precision).
    fn slope(&self) -> f64 {
        let pts = (0..self.len).map(|i| self.points[(self.start + i) % SEGMENTS]);
        let (t0, y0) = self.points[self.start];
        let n = self.len as f64;
        let (mut st, mut sy, mut stt, mut sty) = (0.0, 0.0, 0.0, 0.0);
        for (t, y) in pts {
            let (t, y) = (t - t0, y - y0);
            st += t;
            sy += y;
            stt += t * t;
            sty += t * y;
        }
        let den = n * stt - st * st;
        if den.abs() < f64::EPSILON {
            0.0
        } else {
            (n * sty - st * sy) / den
        }
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
            let d = run(ppm, 60, None);
            assert!(
                (d.ppm() - ppm).abs() < 5.0,
                "{ppm} ppm estimated {}",
                d.ppm()
            );
        }
    }

    #[test]
    fn a_route_change_is_not_drift() {
        let d = run(50.0, 60, Some(30));
        assert!((d.ppm() - 50.0).abs() < 10.0, "estimated {}", d.ppm());
    }

    #[test]
    fn says_nothing_before_eight_seconds() {
        assert_eq!(run(300.0, 5, None).ppm(), 0.0);
    }
}
