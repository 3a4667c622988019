//! What the sender asks of its encoder while a path is congested (one of ours, or a
//! listener's downlink as the listener reports it): a queue that keeps growing means the path
//! carries less than we send, and queueing audio only makes it late. Step by
//! step, a lower bitrate, then longer frames (at 2.5 ms frames the packet headers cost more
//! than the audio); back up one step at a time once the queue has stayed empty a while.

use std::time::Duration;

use echoel_engine::FrameDuration;

/// How often the queueing delay is read and a step considered.
pub const PERIOD: Duration = Duration::from_millis(500);
/// Queueing delay above this in a period is congestion: well over the controller's 25 ms aim
/// (`echoel_net::congestion::TARGET_QUEUE_DELAY`), so one late burst is not.
const CONGESTED: Duration = Duration::from_millis(40);
/// Below this the path is clear.
const CLEAR: Duration = Duration::from_millis(10);
/// Congested periods in a row before stepping down (two: one busy moment of the machine is
/// not a congested path), clear periods before stepping back up (ten: 5 s), and periods to
/// wait after a step down for it to show.
const PERIODS_TO_STEP_DOWN: u32 = 2;
const PERIODS_TO_STEP_UP: u32 = 10;
const PERIODS_AFTER_STEP: u32 = 2;

/// The steps, mildest first: (bitrate ceiling, shortest frame).
const STEPS: [(u32, FrameDuration); 5] = [
    (u32::MAX, FrameDuration::Ms2_5),
    (96_000, FrameDuration::Ms2_5),
    (64_000, FrameDuration::Ms5),
    (48_000, FrameDuration::Ms10),
    (48_000, FrameDuration::Ms20),
];

/// The sender's back-off state.
#[derive(Debug, Default)]
pub struct Backoff {
    step: usize,
    congested_periods: u32,
    clear_periods: u32,
    hold: u32,
}

impl Backoff {
    /// One period's largest queueing delay in; the limits to put on the encoder out.
    pub fn observe(&mut self, queue: Duration) -> (u32, FrameDuration) {
        self.congested_periods = if queue > CONGESTED {
            self.congested_periods + 1
        } else {
            0
        };
        if self.hold > 0 {
            self.hold -= 1;
        } else if self.congested_periods >= PERIODS_TO_STEP_DOWN && self.step + 1 < STEPS.len() {
            self.step += 1;
            self.hold = PERIODS_AFTER_STEP;
            self.congested_periods = 0;
        }
        if queue < CLEAR {
            self.clear_periods += 1;
            if self.clear_periods >= PERIODS_TO_STEP_UP && self.step > 0 {
                self.step -= 1;
                self.clear_periods = 0;
            }
        } else {
            self.clear_periods = 0;
        }
        STEPS[self.step]
    }

    /// How many steps down from the musician's own settings.
    pub fn step(&self) -> usize {
        self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_lasting_queue_steps_down_to_longer_frames_and_a_clear_path_steps_back() {
        let mut b = Backoff::default();
        assert_eq!(b.observe(ms(5)), STEPS[0]);
        // A late burst, or one busy period, is not congestion...
        assert_eq!(b.observe(ms(30)), STEPS[0]);
        assert_eq!(b.observe(ms(120)), STEPS[0]);
        assert_eq!(b.observe(ms(5)), STEPS[0]);
        // ...a lasting queue is: a step, then a wait for it to show.
        assert_eq!(b.observe(ms(120)), STEPS[0]);
        assert_eq!(b.observe(ms(120)), STEPS[1]);
        assert_eq!(b.observe(ms(120)), STEPS[1]);
        assert_eq!(b.observe(ms(120)), STEPS[1]);
        assert_eq!(b.observe(ms(120)), STEPS[2]);
        for _ in 0..20 {
            b.observe(ms(200));
        }
        assert_eq!(b.step(), STEPS.len() - 1);
        // Clear for 5 s: one step back up per 5 s.
        for _ in 0..9 {
            assert_eq!(b.observe(ms(2)).1, FrameDuration::Ms20);
        }
        assert_eq!(b.observe(ms(2)), STEPS[3]);
        for _ in 0..40 {
            b.observe(ms(2));
        }
        assert_eq!(b.observe(ms(2)), STEPS[0]);
    }
}
