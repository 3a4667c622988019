//! How each member's audio travels, and why it takes the relay when it does: what the editor's
//! People table and `echoel peer` tell the musician.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The way to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Straight to the member.
    Direct {
        /// Its address on the path.
        addr: SocketAddr,
        /// On one of our own networks (no router between us).
        lan: bool,
        /// From hearing of the member to the path being up.
        after: Duration,
    },
    /// Through the relay.
    Relay(RelayWhy),
}

/// Why a member's audio goes by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayWhy {
    /// This session asked for no direct paths.
    Off,
    /// A direct path is being tried.
    Trying,
    /// Tried, and nothing got through: a router on the way lets nothing in that did not go
    /// out to the same address and port first.
    Blocked {
        /// Our router gave the relay's reflector another port than our QUIC connection:
        /// it gives each destination its own (a symmetric NAT), so the port the others
        /// were told of is no use to them.
        our_ports_differ: bool,
        /// Their punches reached us from a port other than the one the relay sees them at:
        /// their router gives each destination its own port (a symmetric NAT).
        their_ports_differ: bool,
    },
    /// The direct path is up but nothing came over it lately (a router on the way started
    /// dropping it?): the relay carries the audio too until it carries again.
    Quiet,
    /// The direct path carries, but the relay's copies of their audio arrive first: the
    /// relay is the shorter way, and what we play.
    Faster,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct { addr, lan, after } => {
                let net = if *lan {
                    "over the LAN"
                } else {
                    "across the internet"
                };
                write!(
                    f,
                    "direct to {addr} {net}, up {:.2} s after they came in",
                    after.as_secs_f64()
                )
            }
            Route::Relay(why) => write!(f, "relay — {why}"),
        }
    }
}

impl fmt::Display for RelayWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelayWhy::Off => "direct paths are off for this session",
            RelayWhy::Trying => "trying a direct path; the relay carries the audio meanwhile",
            RelayWhy::Blocked {
                our_ports_differ: true,
                ..
            } => {
                "our router gives each destination a new port (a symmetric NAT), so theirs \
                 finds no way in — audio goes by the relay"
            }
            RelayWhy::Blocked {
                their_ports_differ: true,
                ..
            } => {
                "their router gives each destination a new port (a symmetric NAT), so our \
                 packets find no way in — audio goes by the relay"
            }
            RelayWhy::Blocked { .. } => {
                "no direct packet got through: a router on the way blocks incoming traffic \
                 (a symmetric NAT or a strict firewall) — audio goes by the relay"
            }
            RelayWhy::Quiet => {
                "the direct path went quiet; the relay carries the audio until it is back"
            }
            RelayWhy::Faster => {
                "the relay is faster than the direct path: its copies of their audio arrive \
                 first, so those are what we play"
            }
        })
    }
}

/// Where the driver stands with one member's direct path.
#[derive(Debug)]
pub(super) struct Reaching {
    /// When we first heard of the member (this stay in the room).
    pub since: Instant,
    /// Why the relay carries its audio while no path is up.
    pub why: RelayWhy,
    /// When its last path went down.
    pub down_at: Option<Instant>,
    /// When to try a direct path again, after a try that reached nothing.
    pub again: Option<Instant>,
    /// Tries that reached nothing so far.
    pub tries: u32,
    /// The try under way: a newer one, or a path, ends it.
    pub trying: super::direct::Trying,
}
