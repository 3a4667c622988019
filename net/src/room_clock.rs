//! The room's clock: each sender's media clock put on ours, so that what different studios
//! played at the same moment can be laid side by side (takes, the editor's timeline).
//!
//! A frame cannot arrive before it was whole, so `arrival − end of frame` is the sender's
//! clock against ours plus the one-way delay of that frame; its lowest values (the frames
//! that met no queue) trace a line whose slope is the two clocks' drift. That line, less the
//! one-way delay half the round trip gives, maps the sender's media time to ours.

use std::collections::VecDeque;

/// Each point of the lower envelope covers this much of the sender's media (1 s at 48 kHz).
const WINDOW: u64 = 48_000;
/// Points the line is fitted through: the last 30 s.
const POINTS: usize = 30;
/// The two points the drift is measured between lie at least this far apart (5 s).
const MIN_SPAN: u64 = 5 * 48_000;
/// A lead this far (1 s) from the line's is a sender that started over, not a queue.
const RESTART: u64 = 48_000;
/// Drift beyond this (parts per million) is a clock that jumped, not one that drifts.
const MAX_DRIFT_PPM: f64 = 1_000.0;

/// Samples (48 kHz, per channel) an Opus packet holds, from its table of contents (RFC 6716
/// §3.1); `None` for what is not one.
pub fn opus_samples(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let per_frame: u64 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3F),
    };
    (frames > 0).then_some(per_frame * frames)
}

/// A sender's media time on our clock: `ours(media) = media + offset + drift × (media −
/// at_media)`, all in 48 kHz samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockMap {
    /// Our clock less the sender's at `at_media`.
    pub offset: f64,
    /// Where the offset holds: the newest point of the envelope.
    pub at_media: u64,
    /// How much faster our clock runs than the sender's, in parts per million.
    pub drift_ppm: f64,
}

impl ClockMap {
    /// The moment on our clock (48 kHz samples) the sender played `media`.
    pub fn ours(&self, media: u64) -> f64 {
        let since = media as f64 - self.at_media as f64;
        media as f64 + self.offset + self.drift_ppm * 1e-6 * since
    }
}

/// What one sender's frames told of its clock.
#[derive(Debug, Default, Clone)]
pub struct ClockTrack {
    /// (media time at the window's middle, least `arrival − end` in it) per window, oldest
    /// first.
    points: VecDeque<(u64, i64)>,
    /// The window being filled: its index and least lead so far.
    current: Option<(u64, i64)>,
}

impl ClockTrack {
    /// A frame whose sender's media time ended at `media_end` arrived at `arrival` (both in
    /// 48 kHz samples, `arrival` on our clock).
    pub fn observe(&mut self, media_end: u64, arrival: u64) {
        let lead =
            (arrival as i128 - media_end as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let w = media_end / WINDOW;
        match &mut self.current {
            Some((cw, least)) if *cw == w => *least = (*least).min(lead),
            Some((cw, least)) if w < *cw && (lead - *least).unsigned_abs() <= RESTART => {
                // A late or recovered frame of an earlier window: it can only lower that one.
                if let Some(p) = self.points.iter_mut().find(|p| p.0 / WINDOW == w) {
                    p.1 = p.1.min(lead);
                }
            }
            Some((cw, _)) if w < *cw => {
                // Its media time went back a long way: the sender started over.
                self.points.clear();
                self.current = Some((w, lead));
            }
            _ => {
                if let Some((cw, least)) = self.current.take() {
                    self.push(cw, least);
                }
                self.current = Some((w, lead));
            }
        }
    }

    fn push(&mut self, window: u64, least: i64) {
        // A sender that started over (a new engine) starts a new line.
        if self
            .points
            .back()
            .is_some_and(|&(m, l)| (least - l).unsigned_abs() > RESTART || m / WINDOW >= window)
        {
            self.points.clear();
        }
        self.points.push_back((window * WINDOW + WINDOW / 2, least));
        while self.points.len() > POINTS {
            self.points.pop_front();
        }
    }

    /// The sender's clock on ours, its frames' one-way delay taken as `one_way` (half the
    /// round trip): once a window is complete.
    pub fn map(&self, one_way: f64) -> Option<ClockMap> {
        let n = self.points.len();
        let &(last_m, last_l) = self.points.back()?;
        // The line under the envelope, through the lowest point of its older half and that of
        // its newer: windows a queue held up lie above it and move neither (a line fitted
        // through every point would tilt toward them).
        let lowest = |pts: &mut dyn Iterator<Item = &(u64, i64)>| pts.min_by_key(|p| p.1).copied();
        let half = n / 2;
        let drift = match (
            lowest(&mut self.points.iter().take(half)),
            lowest(&mut self.points.iter().skip(half)),
        ) {
            (Some(a), Some(b)) if n >= 4 && b.0 >= a.0 + MIN_SPAN => {
                let slope = (b.1 - a.1) as f64 / (b.0 - a.0) as f64;
                (slope * 1e6).clamp(-MAX_DRIFT_PPM, MAX_DRIFT_PPM)
            }
            _ => 0.0,
        };
        // The line's value at the newest point: the least lead of all, each carried to the
        // newest along the slope.
        let at = |&(m, l): &(u64, i64)| l as f64 + drift * 1e-6 * (last_m as f64 - m as f64);
        let floor = self.points.iter().map(at).fold(last_l as f64, f64::min);
        Some(ClockMap {
            offset: floor - one_way,
            at_media: last_m,
            drift_ppm: drift,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::DangerSeededRng;

    /// A sender `offset` samples behind us whose clock runs `ppm` slow, its frames 2.5 ms,
    /// each delayed by `base` plus up to `jitter` samples (a few with no jitter at all).
    fn track(offset: i64, ppm: f64, base: u64, jitter: u64, seconds: u64, seed: u64) -> ClockTrack {
        let mut rng = DangerSeededRng::new(seed);
        let mut t = ClockTrack::default();
        for k in 0..seconds * 400 {
            let end = (k + 1) * 120;
            let ours = end as f64 * (1.0 + ppm * 1e-6) + offset as f64;
            let late = if rng.below(8) == 0 {
                0
            } else {
                rng.below(jitter + 1)
            };
            t.observe(end, ours as u64 + base + late);
        }
        t
    }

    #[test]
    fn a_senders_clock_is_put_on_ours_within_a_sample_or_two_through_jitter() {
        for (seed, ppm) in [(1u64, 0.0), (2, 40.0), (3, -120.0)] {
            let t = track(1_000_000, ppm, 480, 960, 40, seed);
            let map = t.map(480.0).expect("a line");
            for media in [20 * 48_000u64, 39 * 48_000] {
                let truth = media as f64 * (1.0 + ppm * 1e-6) + 1_000_000.0;
                let err = map.ours(media) - truth;
                assert!(
                    err.abs() <= 24.0,
                    "seed {seed}, {ppm} ppm: {err} samples off ({map:?})"
                );
            }
            assert!((map.drift_ppm - ppm).abs() < 5.0, "{map:?}");
        }
    }

    #[test]
    fn an_opus_packets_length_is_read_from_its_table_of_contents() {
        assert_eq!(opus_samples(&[28 << 3]), Some(120), "CELT 2.5 ms");
        assert_eq!(
            opus_samples(&[31 << 3 | 1, 0, 0]),
            Some(1920),
            "two CELT 20 ms"
        );
        assert_eq!(
            opus_samples(&[1 << 3 | 3, 3]),
            Some(2880),
            "three SILK 20 ms"
        );
        assert_eq!(opus_samples(&[13 << 3]), Some(960), "hybrid 20 ms");
        assert_eq!(opus_samples(&[]), None);
        assert_eq!(opus_samples(&[3]), None, "code 3 without its count");
    }

    #[test]
    fn a_sender_that_starts_over_starts_a_new_line() {
        let mut t = track(0, 0.0, 100, 50, 10, 4);
        // Its engine is new: media time from zero again, 10 s later on our clock.
        for k in 0..4_000u64 {
            let end = (k + 1) * 120;
            t.observe(end, end + 10 * 48_000 * 2 + 100);
        }
        let map = t.map(100.0).unwrap();
        assert!(
            (map.ours(48_000) - (48_000.0 + 960_000.0)).abs() <= 2.0,
            "{map:?}"
        );
    }
}
