//! A watch for the machine's own pauses: a virtual machine's host can hold every thread of
//! it up at once for tens of milliseconds, real-time or not. A test of timing that cannot tell
//! such a pause from the path judges the machine, not the code; with this it can leave the
//! stretches a pause fell in out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A 1 ms sleep that wakes this much late (4 ms) was a pause of the machine: a real-time
/// thread on an idle core wakes within a fraction of a millisecond.
const PAUSE: Duration = Duration::from_millis(4);

/// How long a watch may run at most, so that a test that forgets to stop it does not leave
/// a thread looping for good.
const LONGEST: Duration = Duration::from_secs(600);

/// A thread that notes each time the machine held it up.
pub struct PauseWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Pause>>,
}

/// One pause: when it began, in seconds from the watch's zero, and how long it lasted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pause {
    pub at: f32,
    pub ms: f32,
}

impl PauseWatch {
    /// Starts watching; pauses are timed from `zero` (before it: negative).
    pub fn start(zero: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // As the audio threads it watches over are; where that is refused it still sees
            // what holds a whole machine up.
            crate::realtime_thread();
            let began = Instant::now();
            let mut pauses = Vec::new();
            while !flag.load(Ordering::Relaxed) && began.elapsed() < LONGEST {
                let before = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                let slept = before.elapsed();
                if slept > PAUSE + Duration::from_millis(1) {
                    pauses.push(Pause {
                        at: secs_from(zero, before),
                        ms: slept.as_secs_f32() * 1000.0 - 1.0,
                    });
                }
            }
            pauses
        });
        Self { stop, thread }
    }

    /// Stops watching: the pauses seen, in order.
    pub fn stop(self) -> Vec<Pause> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn secs_from(zero: Instant, t: Instant) -> f32 {
    if t >= zero {
        (t - zero).as_secs_f32()
    } else {
        -(zero - t).as_secs_f32()
    }
}

/// Whether any pause falls within `[from, to)` seconds (a pause that began a little before
/// `from` and lasted into it counts).
pub fn paused_between(pauses: &[Pause], from: f32, to: f32) -> bool {
    pauses
        .iter()
        .any(|p| p.at < to && p.at + p.ms / 1000.0 >= from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_falls_in_the_stretches_it_touches_only() {
        let p = [Pause { at: 5.0, ms: 20.0 }];
        assert!(paused_between(&p, 4.0, 14.0));
        assert!(paused_between(&p, 5.01, 15.0), "it lasted into the stretch");
        assert!(!paused_between(&p, 5.03, 15.0));
        assert!(!paused_between(&p, 0.0, 5.0));
    }
}
