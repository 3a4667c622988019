//! The audio thread's one wake-up per block of the thread that drains its outgoing ring, so a
//! frame leaves as soon as it is encoded without that thread polling.

use std::sync::OnceLock;
use std::thread::Thread;

/// Wakes the registered drain thread.
///
/// # Thread
/// [`SendWake::wake`] runs on the audio thread: an atomic load and, only if the drain thread is
/// parked, one futex wake that never waits (`Thread::unpark`); it never allocates or locks.
/// [`SendWake::register_current`] runs once, on the drain thread.
#[derive(Debug, Default)]
pub struct SendWake {
    thread: OnceLock<Thread>,
}

impl SendWake {
    /// Makes the calling thread the one [`Self::wake`] wakes; false if one already is.
    pub fn register_current(&self) -> bool {
        self.thread.set(std::thread::current()).is_ok()
    }

    /// Wakes the drain thread, if one is registered.
    pub fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}
