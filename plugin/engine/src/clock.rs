//! Time on the audio thread: a monotonic clock shared with the network side, and the host's
//! calls measured against it, so a gap in `process()` calls (an xrun, a host that stopped
//! calling, an offline render in between) is not mistaken for a faster network; and the size
//! of the host's recent blocks, the floor of the delay.

use std::time::Instant;

use crate::INTERNAL_RATE_HZ;

/// A monotonic clock in nanoseconds since the engine was built. The network side stamps each
/// packet's arrival with it; the audio thread reads it once per block (`clock_gettime` on the
/// vDSO: no system call, no lock).
#[derive(Debug, Clone, Copy)]
pub struct MediaClock {
    epoch: Instant,
}

impl Default for MediaClock {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }
}

impl MediaClock {
    /// Nanoseconds since the epoch; never 0 (0 marks an unstamped packet).
    pub fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// `at` on this clock (never 0; an instant before the epoch reads as its start).
    pub fn ns_at(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
    }
}

/// 48 kHz samples in `ns` nanoseconds.
pub(crate) fn ns_to_samples(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(INTERNAL_RATE_HZ) / 1_000_000_000) as u64
}

/// How far the host's calls run behind the clock.
///
/// `lead` is the clock's time since the first block minus the audio rendered since, in 48 kHz
/// samples. A host that keeps time keeps it level (give or take its callback jitter); a host
/// that stops calling raises it by the pause. Its floor follows it down at once (a host that
/// renders ahead, or an offline render) and up by at most 100 ppm (an audio device whose clock
/// runs slower than the monotonic one), so a rise above the floor is a pause.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HostTiming {
    first_ns: Option<u64>,
    rendered: f64,
    floor: f64,
}

impl HostTiming {
    /// The floor's rise per sample rendered: 100 ppm of clock difference.
    const CREEP: f64 = 100e-6;

    /// At the start of a block at `now_ns`: the 48 kHz samples the host skipped since the last
    /// block, if more than `threshold`.
    pub(crate) fn gap(&mut self, now_ns: u64, threshold: u64) -> Option<u64> {
        let first = *self.first_ns.get_or_insert(now_ns);
        let lead = ns_to_samples(now_ns.saturating_sub(first)) as f64 - self.rendered;
        let above = lead - self.floor;
        if above > threshold as f64 {
            self.floor = lead;
            return Some(above as u64);
        }
        self.floor = self.floor.min(lead);
        None
    }

    /// After a block of `samples` (48 kHz).
    pub(crate) fn rendered(&mut self, samples: f64) {
        self.rendered += samples;
        self.floor += samples * Self::CREEP;
    }
}

/// The largest block over the last one to two seconds of audio: one long block (a host that
/// renders a bounce, or catches up after a hiccup) must not hold the delay up for good. A
/// block more than twice the recent ones is a one-off at first and leaves the floor alone; a
/// second one within two seconds shows the host has changed its pace, and raises it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecentMax {
    current: usize,
    previous: usize,
    elapsed: usize,
    /// Windows left during which a long block has been let pass.
    one_off: u8,
}

impl RecentMax {
    /// One second of 48 kHz audio per window.
    const WINDOW: usize = INTERNAL_RATE_HZ as usize;

    /// Takes a block; true if it is a one-off long block, not counted in the floor.
    pub(crate) fn observe(&mut self, block_48k: usize) -> bool {
        let floor = self.get();
        let one_off = floor > 0 && block_48k > 2 * floor && self.one_off == 0;
        if one_off {
            self.one_off = 2;
        } else {
            self.current = self.current.max(block_48k);
        }
        self.elapsed += block_48k;
        if self.elapsed >= Self::WINDOW {
            self.previous = self.current;
            self.current = 0;
            self.elapsed = 0;
            self.one_off = self.one_off.saturating_sub(1);
        }
        one_off
    }

    pub(crate) fn get(&self) -> usize {
        self.current.max(self.previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK_NS: u64 = 1_333_333;

    #[test]
    fn a_pause_is_found_and_jitter_and_drift_are_not() {
        let mut t = HostTiming::default();
        let mut now = 1_000;
        // A minute of 64-frame blocks with 0.5 ms of callback jitter, on a device 80 ppm slow.
        for i in 0..45_000u64 {
            let jitter = (i * 7919 % 500) * 1_000;
            assert_eq!(t.gap(now + jitter, 960), None, "block {i}");
            t.rendered(64.0);
            now += BLOCK_NS + BLOCK_NS * 80 / 1_000_000;
        }
        now += 200_000_000;
        let gap = t.gap(now, 960).expect("a 200 ms pause");
        assert!((9_500..=9_700).contains(&gap), "{gap}");
        t.rendered(64.0);
        assert_eq!(t.gap(now + BLOCK_NS, 960), None);
    }

    #[test]
    fn a_host_that_runs_ahead_is_no_pause() {
        let mut t = HostTiming::default();
        for i in 0..10_000u64 {
            // Offline: a block every 10 µs.
            assert_eq!(t.gap(1 + i * 10_000, 960), None);
            t.rendered(64.0);
        }
    }
}
