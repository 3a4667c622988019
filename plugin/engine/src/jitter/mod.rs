//! Jitter buffers: packets held by sequence number and released for playout.
//!
//! - [`adaptive`]: the playout schedule the engine uses, learned from arrival statistics
//!   (or fixed, in manual mode);
//! - [`drift`]: the sender's clock rate against ours, from the same arrivals;
//! - [`sim`]: trace-driven comparison with baseline algorithms.

pub mod adaptive;
pub mod drift;
pub mod sim;

pub use adaptive::{AdaptiveConfig, AdaptiveStats, Decision, JitterBuffer};

/// Packets held at most. 64 covers 160 ms at 2.5 ms frames and 1.28 s at 20 ms frames, beyond
/// any depth a live performance can bear.
pub const JITTER_CAPACITY: usize = 64;

/// Signed distance from `b` to `a` in wrapping sequence space.
pub(crate) fn seq_ahead(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}
