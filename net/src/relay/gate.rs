//! Which new connections the relay starts a handshake for: a token bucket per address, so one
//! host cannot keep the relay busy with TLS handshakes (a wrong-secret guesser, a reconnect
//! loop), and a stateless address check (QUIC retry) before an address gets a bucket once many
//! addresses have one, so spoofed sources cannot fill the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Handshakes one address may start at once: a band behind one router, each with a few
/// instances, reconnecting after a relay restart.
pub const HANDSHAKE_BURST: f64 = 64.0;
/// Handshakes one address may start per second, sustained.
pub const HANDSHAKES_PER_SECOND: f64 = 16.0;
/// Addresses with a bucket at most. Past half of it, an address proves it is real (a retry
/// round trip) before it gets one.
pub const RATE_TABLE: usize = 4096;

/// What to do with a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Start the handshake.
    Accept,
    /// Ask the client to prove its address first (QUIC retry: no state kept).
    Validate,
    /// Refuse: this address is over its rate, or the table is full of busy addresses.
    Refuse,
}

/// Token buckets by address. Sans-IO: the caller gives the time.
#[derive(Default)]
pub struct HandshakeRate {
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + dt * HANDSHAKES_PER_SECOND).min(HANDSHAKE_BURST)
    }
}

impl HandshakeRate {
    /// A connection attempt from `address` (`validated`: it answered a retry).
    pub fn check(&mut self, address: IpAddr, validated: bool, now: Instant) -> Gate {
        if !self.buckets.contains_key(&address) {
            if !validated && self.buckets.len() >= RATE_TABLE / 2 {
                return Gate::Validate;
            }
            if self.buckets.len() >= RATE_TABLE {
                // Addresses whose bucket is full again are as good as new: forget them.
                self.buckets
                    .retain(|_, b| b.refilled(now) < HANDSHAKE_BURST);
                if self.buckets.len() >= RATE_TABLE {
                    return Gate::Refuse;
                }
            }
        }
        let b = self.buckets.entry(address).or_insert(Bucket {
            tokens: HANDSHAKE_BURST,
            at: now,
        });
        let tokens = b.refilled(now);
        b.at = now;
        if tokens >= 1.0 {
            b.tokens = tokens - 1.0;
            Gate::Accept
        } else {
            b.tokens = tokens;
            Gate::Refuse
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(i: u32) -> IpAddr {
        // 198.18.0.0/15: the benchmarking range.
        IpAddr::from((0xc612_0000u32 + i).to_be_bytes())
    }

    #[test]
    fn one_address_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let mut g = HandshakeRate::default();
        let t0 = Instant::now();
        let accepted = (0..200)
            .filter(|_| g.check(addr(1), false, t0) == Gate::Accept)
            .count();
        assert_eq!(accepted, HANDSHAKE_BURST as usize);
        assert_eq!(g.check(addr(2), false, t0), Gate::Accept, "another host");
        // One second on: the sustained rate, no more.
        let t1 = t0 + Duration::from_secs(1);
        let accepted = (0..200)
            .filter(|_| g.check(addr(1), false, t1) == Gate::Accept)
            .count();
        assert_eq!(accepted, HANDSHAKES_PER_SECOND as usize);
    }

    #[test]
    fn a_spoofed_crowd_is_asked_to_prove_its_addresses_and_cannot_fill_the_table() {
        let mut g = HandshakeRate::default();
        let t0 = Instant::now();
        let mut asked = 0;
        for i in 0..100_000 {
            match g.check(addr(i), false, t0) {
                Gate::Accept => {}
                Gate::Validate => asked += 1,
                Gate::Refuse => panic!("refused before the table was full"),
            }
        }
        assert_eq!(g.len(), RATE_TABLE / 2, "unvalidated sources stop at half");
        assert_eq!(asked, 100_000 - RATE_TABLE / 2);
        // A real musician answers the retry and gets in.
        assert_eq!(g.check(addr(200_000), true, t0), Gate::Accept);

        // Validated addresses that are busy fill the table: newcomers are refused until
        // buckets refill, then the idle ones make room.
        for i in 0..RATE_TABLE as u32 {
            let _ = g.check(addr(300_000 + i), true, t0);
        }
        assert_eq!(g.len(), RATE_TABLE);
        assert_eq!(g.check(addr(900_000), true, t0), Gate::Refuse);
        let later = t0 + Duration::from_secs_f64(2.0 / HANDSHAKES_PER_SECOND);
        assert_eq!(g.check(addr(900_000), true, later), Gate::Accept);
        assert!(g.len() <= RATE_TABLE);
    }
}
