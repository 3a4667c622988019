//! Loss protection that switches itself on: each audio datagram carries the frames before it
//! while the members who hear us say they lose enough of our audio, and stops once they have
//! not for a while. A setting forces it instead.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU16, AtomicU8};
use std::time::{Duration, Instant};

use crate::wire::MAX_REDUNDANT;

/// How the session protects its audio against loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossProtection {
    /// By what the listeners report: one earlier frame from 0.5 % loss, two from 5 %.
    Auto,
    /// Always this many earlier frames (0: none), whatever is reported.
    Frames(u8),
}

/// What the protection does now, for the editor and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectionStatus {
    /// Earlier frames each datagram carries now.
    pub frames: u8,
    /// Chosen by the reported loss (not forced by the setting).
    pub auto: bool,
    /// The worst loss (‰, before redundancy) a listener reports of our audio; `None` until one
    /// has said.
    pub reported_permille: Option<u16>,
}

/// Loss (‰) from which one earlier frame rides along; [`TWO_FROM`]: two.
const ONE_FROM: u16 = 5;
const TWO_FROM: u16 = 50;
/// Less protection only after the loss has stayed lower this long: a loss that comes in bursts
/// must not switch it off between them.
const DOWN_AFTER: Duration = Duration::from_secs(10);
/// `mode` value for [`LossProtection::Auto`].
const AUTO: u8 = u8::MAX;
/// `reported` value before anyone has reported.
const NONE_REPORTED: u16 = u16::MAX;

/// The protection shared between the handles (the setting, the status) and the driver.
#[derive(Debug)]
pub struct Protection {
    mode: AtomicU8,
    frames: AtomicU8,
    reported: AtomicU16,
}

impl Default for Protection {
    fn default() -> Self {
        Self {
            mode: AtomicU8::new(AUTO),
            frames: AtomicU8::new(0),
            reported: AtomicU16::new(NONE_REPORTED),
        }
    }
}

impl Protection {
    /// Sets the mode; a forced count applies at once.
    pub fn set(&self, p: LossProtection) {
        match p {
            LossProtection::Auto => self.mode.store(AUTO, Relaxed),
            LossProtection::Frames(n) => {
                let n = n.min(MAX_REDUNDANT as u8);
                self.mode.store(n, Relaxed);
                self.frames.store(n, Relaxed);
            }
        }
    }

    /// Earlier frames each datagram carries now.
    pub fn frames(&self) -> usize {
        usize::from(self.frames.load(Relaxed))
    }

    /// What it does now.
    pub fn status(&self) -> ProtectionStatus {
        let reported = self.reported.load(Relaxed);
        ProtectionStatus {
            frames: self.frames.load(Relaxed),
            auto: self.mode.load(Relaxed) == AUTO,
            reported_permille: (reported != NONE_REPORTED).then_some(reported),
        }
    }
}

/// The driver's side of [`LossProtection::Auto`]: more protection at once, less only after
/// [`DOWN_AFTER`].
#[derive(Debug, Default)]
pub struct AutoProtection {
    frames: u8,
    lower_since: Option<Instant>,
}

impl AutoProtection {
    /// Takes the latest report (the worst loss a listener sees of our audio) and sets what
    /// `shared` carries.
    pub fn update(&mut self, shared: &Protection, reported: Option<u16>, now: Instant) {
        shared.reported.store(
            reported.unwrap_or(NONE_REPORTED).min(NONE_REPORTED - 1),
            Relaxed,
        );
        if shared.mode.load(Relaxed) != AUTO {
            self.frames = shared.frames.load(Relaxed);
            self.lower_since = None;
            return;
        }
        let loss = reported.unwrap_or(0);
        let want = if loss >= TWO_FROM {
            2
        } else {
            u8::from(loss >= ONE_FROM)
        }
        .min(MAX_REDUNDANT as u8);
        let lower_long_enough = want < self.frames
            && now.saturating_duration_since(*self.lower_since.get_or_insert(now)) >= DOWN_AFTER;
        if want >= self.frames || lower_long_enough {
            self.frames = want;
            self.lower_since = None;
        }
        shared.frames.store(self.frames, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_on_at_once_and_off_after_ten_clean_seconds() {
        let shared = Protection::default();
        let mut auto = AutoProtection::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        auto.update(&shared, None, at(0));
        assert_eq!(shared.frames(), 0);
        auto.update(&shared, Some(20), at(2));
        assert_eq!(shared.status().frames, 1, "2 % loss: one earlier frame");
        auto.update(&shared, Some(80), at(4));
        assert_eq!(shared.frames(), 2);
        // Loss gone: kept through a burst's gap, dropped after ten seconds.
        auto.update(&shared, Some(0), at(6));
        auto.update(&shared, Some(20), at(10));
        auto.update(&shared, Some(0), at(12));
        assert_eq!(shared.frames(), 2, "dropped between bursts");
        auto.update(&shared, Some(0), at(23));
        assert_eq!(shared.frames(), 0);
        // A forced setting wins.
        shared.set(LossProtection::Frames(1));
        auto.update(&shared, Some(0), at(30));
        assert_eq!(
            shared.status(),
            ProtectionStatus {
                frames: 1,
                auto: false,
                reported_permille: Some(0)
            }
        );
    }
}
