//! Delay spikes a path has shown: a spike that comes back within a minute is the path's (a
//! Wi-Fi link's periodic scan), one that does not is a hiccup. The adaptive buffer keeps its
//! target over a recurring one instead of letting it fall after the settle time only to
//! relearn it at a loss.

/// Packets beyond the quantile this close (100 ms) belong to one spike.
const GAP: u64 = 4_800;
/// How long (60 s) a spike counts towards a recurrence.
const MEMORY: u64 = 60 * 48_000;

/// The latest two spikes, the older first: (height above the fastest path, when it began),
/// and when the last packet beyond the quantile came. Times and heights in samples.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Spikes {
    last_two: [Option<(i64, u64)>; 2],
    beyond_at: u64,
}

impl Spikes {
    /// A packet came `height` above the fastest path at `now`, later than the quantile and its
    /// headroom allow: part of the current spike if one was under way, else a new one. A
    /// spike is as high as its slowest packet.
    pub(super) fn note(&mut self, height: i64, now: u64) {
        match &mut self.last_two[1] {
            Some((h, _)) if now.saturating_sub(self.beyond_at) <= GAP => *h = (*h).max(height),
            _ => self.last_two = [self.last_two[1], Some((height, now))],
        }
        self.beyond_at = now;
    }

    /// Whether a spike's packets are still coming in at `now`: nothing should fall meanwhile.
    pub(super) fn under_way(&self, now: u64) -> bool {
        self.last_two[1].is_some() && now.saturating_sub(self.beyond_at) <= GAP
    }

    /// The least target that covers a recurring spike at `now`: the lesser of the last two,
    /// their packets here `ahead` samples (a render block) before they are heard. Zero after a
    /// one-off spike, or once the older of the two is a minute old.
    pub(super) fn floor(&self, now: u64, ahead: i64) -> i64 {
        match self.last_two {
            [Some((a, at)), Some((b, _))] if now.saturating_sub(at) <= MEMORY => a.min(b) + ahead,
            _ => 0,
        }
    }

    /// Forgets them (a new path; a long host block's late stamps, which looked like spikes).
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_that_recurs_holds_a_floor_a_one_off_does_not() {
        let mut s = Spikes::default();
        // A 40 ms spike: its packets over 40 ms, the highest first.
        for (k, h) in [1920, 1800, 1680].into_iter().enumerate() {
            s.note(h, 48_000 + k as u64 * 120);
        }
        assert!(s.under_way(48_300));
        assert_eq!(s.floor(60_000, 64), 0, "one spike is a hiccup");
        // It comes back 2 s later, a little lower.
        s.note(1850, 144_000);
        assert_eq!(s.floor(150_000, 64), 1850 + 64, "the lesser of the two");
        assert!(!s.under_way(150_000));
        // A minute after the older one, it no longer counts.
        assert_eq!(s.floor(48_000 + MEMORY + 1, 64), 0);
        s.clear();
        assert_eq!(s.floor(150_000, 64), 0);
    }
}
