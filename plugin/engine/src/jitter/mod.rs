//! Jitter buffers: packets held by sequence number and released for playout.
//!
//! - [`fixed`]: a fixed depth in packets; what the engine plays through today.
//! - [`adaptive`]: a playout schedule learned from arrival statistics (work in progress: pure
//!   and tested, not yet wired into the engine).

pub mod adaptive;
pub mod fixed;
pub mod sim;

pub use fixed::{Arrival, FixedJitterBuffer, Playout, JITTER_CAPACITY};

/// Signed distance from `b` to `a` in wrapping sequence space.
pub(crate) fn seq_ahead(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}
