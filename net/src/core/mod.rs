//! The room protocol as plain state machines, as `quinn-proto` is for QUIC: each takes `now`
//! and input through `handle_*`, gives transmits, events and its next timeout through
//! `poll_*`, and owns its state outright — no clock, no socket, no lock, RNG injected. A
//! driver task owns each one with its connections (see `crate::relay`).

pub mod audio;
pub mod batch;
pub mod loss;
pub mod member;
pub mod queue;
pub mod relay;
pub mod router;
pub mod sync;
