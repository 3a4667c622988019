//! What the security, loss and path tests reach into.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

#[derive(Default)]
pub(super) struct Hooks {
    tap: Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
    /// Drop every n-th audio datagram (0: none), a lossy path on loopback.
    pub(super) drop_every: AtomicU64,
    seen: AtomicU64,
    /// How long each datagram waits before it is forwarded (0: not at all).
    pub(super) hold_micros: AtomicU64,
}

impl Hooks {
    pub(super) fn tap(&self) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.tap.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Taps a datagram; false if it is to be dropped.
    pub(super) fn admit(&self, datagram: &Bytes) -> bool {
        if let Some(tap) = self.tap.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tap.send(datagram.clone());
        }
        let n = self.drop_every.load(Relaxed);
        !(n > 0 && (self.seen.fetch_add(1, Relaxed) + 1).is_multiple_of(n))
    }

    pub(super) fn hold(&self) -> Option<Duration> {
        let micros = self.hold_micros.load(Relaxed);
        (micros > 0).then(|| Duration::from_micros(micros))
    }
}
