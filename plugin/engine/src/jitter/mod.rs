//! Jitter buffers: packets held by sequence number and released for playout.
//!
//! - [`adaptive`]: the playout schedule the engine uses, learned from arrival statistics
//!   (or fixed, in manual mode);
//! - [`drift`]: the sender's clock rate against ours, from the same arrivals;
//! - `spikes`: delay spikes the path has shown, kept while they recur;
//! - [`sim`]: trace-driven comparison with baseline algorithms (in `baselines`).

pub mod adaptive;
mod baselines;
mod decision;
pub mod drift;
pub mod sim;
mod spikes;

pub use adaptive::{AdaptiveConfig, AdaptiveStats, Decision, JitterBuffer};

/// The deepest playout delay the buffer chooses (auto) or is given (manual), above the fastest
/// path: beyond it a live performance cannot bear the delay anyway.
pub const MAX_DEPTH_MS: u32 = 200;

/// [`MAX_DEPTH_MS`] in 48 kHz samples.
pub const MAX_DEPTH_SAMPLES: u32 = 48 * MAX_DEPTH_MS;

/// The shortest frame a sender uses (2.5 ms), in 48 kHz samples: it sets how many packets a
/// given depth holds.
const SHORTEST_FRAME_SAMPLES: u32 = 120;

/// Packets held at most: the deepest target, plus as much again for a host block rendered at
/// once and for packets that arrive early in a burst, at the shortest frame (480 ms at 2.5 ms
/// frames). A packet further ahead than this restarts playout, so it must never be reachable
/// by a depth the buffer can choose.
pub const JITTER_CAPACITY: usize = (2 * MAX_DEPTH_SAMPLES / SHORTEST_FRAME_SAMPLES) as usize + 32;

const _: () = assert!(JITTER_CAPACITY as u32 * SHORTEST_FRAME_SAMPLES > 2 * MAX_DEPTH_SAMPLES);

/// Signed distance from `b` to `a` in wrapping sequence space.
pub(crate) fn seq_ahead(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}
