//! A deterministic network simulator for the room cores: one [`RelayCore`](crate::core::relay)
//! and N [`RoomCore`](crate::core::member)s on a virtual clock, joined by simulated links with
//! delay, jitter, bursty loss and duplication, through disconnects, partitions (any set of
//! members cut off from the relay for a while) and a relay crash and restart. No sockets, no
//! sleeps: a run is a pure function of its seed and [`SimConfig`], so a failing seed replays
//! exactly.

mod clock;
mod direct;
mod hostile;
mod link;
mod member;
mod report;
mod rng;
mod world;

pub use direct::Nat;
pub use hostile::Hostile;
pub use link::{Link, LinkConfig};
pub use report::{AudioCheck, SimReport};
pub use rng::DangerSeededRng;
pub use world::{run, SimConfig};

#[cfg(test)]
mod tests;
