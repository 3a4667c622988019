//! Echoel Jam's network side: invites, the wire format, end-to-end crypto and (in
//! `transport`, `relay`, `peer`) the QUIC runtime. Knows nothing of audio hosts: the plugin and
//! the headless peer bridge it to the engine's rings.

pub mod congestion;
pub mod core;
pub mod crypto;
pub mod doc;
pub mod fuzz;
mod hex;
pub mod identity_store;
pub mod invite;
pub mod presence;
pub mod relay;
pub mod room_clock;
pub mod session;
pub mod sim;
pub mod store;
pub mod tls;
pub mod transport;
pub mod wire;

pub use crypto::{MemberKeys, RoomSecret, RotationPolicy};
pub use invite::{CertFingerprint, Invite, InviteError, RoomId};
pub use wire::MemberId;
