//! The fastest path and changes of path: the reference every delay is measured from, a
//! shorter path found from the packets themselves, and a window rebuilt for a new way.

use super::{
    JitterBuffer, FORGIVE_SAMPLES, HINT_KEEP, NEW_PATH_RUN, NEW_PATH_SAMPLES, REBASE_JUMP,
};

impl JitterBuffer {
    /// Moves the fastest-path reference. A creep (the clock drift, a minimum that left the
    /// window) moves the schedule with it; a jump (a slower path's packets now the fastest
    /// left) keeps the schedule where it is, the target taking up the difference, so the
    /// statistics, not a bookkeeping step, decide when the delay changes. A shorter path is
    /// [`Self::new_path`]'s.
    pub(super) fn rebase(&mut self, base: i64) {
        let moved = base.saturating_sub(self.base);
        if self.base != i64::MAX
            && moved.abs() > REBASE_JUMP
            && self.config.manual_target_samples.is_none()
        {
            self.target = (self.target - moved).clamp(0, self.config.max_target_samples as i64);
        }
        self.base = base;
    }

    /// [`NEW_PATH_RUN`] packets came well below the fastest delay the window knew: a
    /// shorter path (relay → direct). What the window holds describes the old one, so it is
    /// forgotten, all but that run (not the old path's stragglers that came among them).
    pub(super) fn new_path(&mut self) {
        let floor = self.run_floor - NEW_PATH_SAMPLES;
        self.forget_all_but(5 * NEW_PATH_RUN as usize, NEW_PATH_RUN as usize, floor);
    }

    /// Forgets the window but the newest `most` packets below `below` among the last
    /// `look_back`, and what held the delay up (stalls on the old path) with it: a shorter
    /// path's gain is taken within a second or two instead of once the window has turned over.
    pub(super) fn forget_all_but(&mut self, look_back: usize, most: usize, below: i64) {
        let w = self.config.window;
        let mut recent = [(0i64, 0u64); HINT_KEEP];
        let most = most.min(recent.len());
        let mut keep = 0;
        for back in 1..=self.delays_len.min(look_back) {
            let at = (self.delays_at + w - back) % w;
            if self.delays[at] < below && keep < most {
                recent[keep] = (self.delays[at], self.arrivals[at]);
                keep += 1;
            }
        }
        recent[..keep].reverse();
        for (k, &(d, a)) in recent.iter().take(keep).enumerate() {
            self.delays[k] = d;
            self.arrivals[k] = a;
        }
        self.delays_len = keep;
        self.delays_at = keep % w;
        self.base = recent[..keep].iter().map(|r| r.0).min().unwrap_or(i64::MAX);
        self.since_stall = u64::MAX;
        self.since_stall_saved = None;
        self.forgive_for = FORGIVE_SAMPLES;
        self.faster_run = 0;
        self.spikes.clear();
        self.drift.reset();
    }
}
