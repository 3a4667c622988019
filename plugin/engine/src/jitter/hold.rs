//! What holds the adaptive buffer's target up: the last seconds' highest wanted target and
//! highest delay.

/// Seconds for which the highest target the statistics asked for holds the target up: a path
/// whose quantile wanders (it does, as the window slides over a few late packets) keeps one
/// delay instead of following each wiggle.
pub(crate) const HOLD_SECONDS: usize = 10;

/// Per second of arrivals over the last [`HOLD_SECONDS`]: the highest target wanted and the
/// highest delay (`arrival − media`) seen. `i64::MIN` where there was none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hold {
    wanted: [i64; HOLD_SECONDS],
    delay: [i64; HOLD_SECONDS],
    /// The slot of the current second, and which second it is.
    at: usize,
    second: u64,
}

impl Default for Hold {
    fn default() -> Self {
        Self {
            wanted: [i64::MIN; HOLD_SECONDS],
            delay: [i64::MIN; HOLD_SECONDS],
            at: 0,
            second: 0,
        }
    }
}

impl Hold {
    /// Moves on to the second `now` falls in, forgetting what is older than the hold.
    pub(crate) fn advance(&mut self, now: u64) {
        let second = now / 48_000;
        if second > self.second {
            for _ in 0..(second - self.second).min(HOLD_SECONDS as u64) {
                self.at = (self.at + 1) % HOLD_SECONDS;
                self.wanted[self.at] = i64::MIN;
                self.delay[self.at] = i64::MIN;
            }
            self.second = second;
        }
    }

    pub(crate) fn want(&mut self, target: i64) {
        self.wanted[self.at] = self.wanted[self.at].max(target);
    }

    pub(crate) fn saw(&mut self, delay: i64) {
        self.delay[self.at] = self.delay[self.at].max(delay);
    }

    /// The highest target wanted in the hold.
    pub(crate) fn peak(&self) -> i64 {
        self.wanted.iter().copied().max().unwrap_or(i64::MIN)
    }

    /// The highest delay seen in the hold, above `base`.
    pub(crate) fn slowest(&self, base: i64) -> i64 {
        let delay = self.delay.iter().copied().max().unwrap_or(i64::MIN);
        delay.saturating_sub(base)
    }
}
