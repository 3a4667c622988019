//! Direct paths between members: dialled when a core asks, through each member's router, cut
//! by splits of the members (the relay still reaching both sides), closed when either end
//! leaves the room.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::link::Link;
use super::world::{Delivery, World};
use crate::core::member::Via;
use crate::wire::MemberInfo;
use crate::wire::{MemberId, PeerMessage};

/// What stands between a member and the internet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Nat {
    /// Nothing: a public address, or a router that lets anything in.
    #[default]
    Open,
    /// A home router that lets in only replies to what went out: a dial from outside is
    /// dropped unless the member behind it punched toward the dialler first.
    Firewall,
    /// A home router with address translation that keeps each socket's port for every
    /// destination (what the relay sees is what anyone sees), and lets in only replies.
    PortPreserving,
    /// A router that gives each destination a new port: what the relay sees is no use to
    /// anyone else, and a punch opens a port nobody knows.
    Symmetric,
    /// A symmetric router that forwards a port to the member on request (UPnP, NAT-PMP,
    /// PCP): the member tells the room the mapped address once joined; whoever knows it
    /// gets in there, and what the member sends leaves from it.
    Mapped,
}

/// How long a router keeps a hole a punch opened with no answer (Linux: 30 s).
const HOLE_KEPT: Duration = Duration::from_secs(30);

/// Times a dial is sent again (QUIC resends its first packet) before it gives up, and how
/// long before the first resend (doubling after).
const DIAL_RESENDS: u32 = 6;
const FIRST_RESEND: Duration = Duration::from_millis(325);

/// How long a direct path's ends take to notice the other has gone silent.
const PATH_IDLE: Duration = Duration::from_secs(2);

/// How long a dialled member holds a connection from someone it does not know yet (the relay
/// may not have told it of the dialler).
const RECOGNISE: Duration = Duration::from_secs(5);

/// One direct path, between members `a < b`, for the member ids they had when it was made.
pub(super) struct Path {
    ids: [MemberId; 2],
    serial: usize,
    made: Instant,
    /// Each direction: its link, and when its in-order stream is next free.
    links: [Link; 2],
    ready: [Instant; 2],
}

/// Something on its way along a direct path, from member `from` to `to`.
pub(super) enum DirectDelivery {
    /// The dial got through: `to` (the dialler, then the dialled) has path `serial`.
    Up(usize),
    /// `to` notices path `serial`, to the member it knew by this id, is gone.
    Down(MemberId, usize),
    Msg(PeerMessage),
    Datagram(Vec<u8>),
    /// The dialler sends its dial to the member it knows by this id again.
    Resend(MemberId, u32),
}

impl World {
    fn key(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    /// Whether a split keeps `a` and `b` apart (on direct paths; the relay reaches both).
    fn apart(&self, a: usize, b: usize) -> bool {
        self.split.as_ref().is_some_and(|(side, until)| {
            self.now < *until && side.contains(&a) != side.contains(&b)
        })
    }

    /// The path between `a` and `b`, if it is still the one made for their current ids.
    fn live_path(&self, a: usize, b: usize) -> Option<&Path> {
        let (lo, hi) = Self::key(a, b);
        let p = self.paths.get(&(lo, hi))?;
        let ids = [self.members[lo].core.me()?, self.members[hi].core.me()?];
        (p.ids == ids).then_some(p)
    }

    fn nat(&self, i: usize) -> Nat {
        self.config
            .nat_each
            .get(i)
            .copied()
            .unwrap_or(self.config.nat)
    }

    fn member_of(&self, other: &MemberInfo) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.participant == other.participant)
    }

    /// Member `i`'s core asked to punch toward `other`: its router now lets in replies from
    /// the address the relay saw `other` at.
    pub(super) fn punch(&mut self, i: usize, other: &MemberInfo) {
        if let Some(j) = self.member_of(other) {
            self.punched.insert((i, j), self.now);
        }
    }

    /// The address member `i`'s router forwards to it, if it is a [`Nat::Mapped`] one.
    pub(super) fn mapped_addr(&self, i: usize) -> Option<std::net::SocketAddr> {
        let i8 = u8::try_from(i).ok()?;
        (self.nat(i) == Nat::Mapped).then(|| ([203, 0, 113, 100 + i8 % 100], 40_000).into())
    }

    fn router(&self, i: usize) -> usize {
        self.config.router_each.get(i).copied().unwrap_or(1000 + i)
    }

    /// Member `i`'s address on its router's LAN.
    pub(super) fn lan_addr(&self, i: usize) -> std::net::SocketAddr {
        let (r, i) = ((self.router(i) % 250) as u8, (i % 250) as u8);
        ([198, 18, r, 2 + i], 5000).into()
    }

    /// Whether `who` was told of `addr` among `of`'s addresses.
    fn told(&self, who: usize, of: usize, addr: std::net::SocketAddr) -> bool {
        let p = self.members[of].participant;
        self.members[who]
            .core
            .members()
            .any(|m| m.participant == p && m.local.contains(&addr))
    }

    /// Whether `who` was told where `of`'s router forwards a port to it.
    fn knows_mapping(&self, who: usize, of: usize) -> bool {
        self.mapped_addr(of).is_some_and(|a| self.told(who, of, a))
    }

    /// Whether `i`'s router lets in anything `j` sends it: an open router, or the port a
    /// router forwards to `i`, if `j` knows of it.
    fn open_to(&self, i: usize, j: usize) -> bool {
        self.nat(i) == Nat::Open || self.knows_mapping(j, i)
    }

    /// Whether `j`'s router lets in a dial from `i`.
    fn admits(&self, j: usize, i: usize) -> bool {
        let holed = self
            .punched
            .get(&(j, i))
            .is_some_and(|at| self.now < *at + HOLE_KEPT);
        // On one LAN: `i` dials `j`'s address there, and no router stands between.
        let lan = self.router(i) == self.router(j) && self.told(i, j, self.lan_addr(j));
        if lan || self.open_to(j, i) {
            return true;
        }
        match self.nat(j) {
            Nat::Open => true,
            // The hole is for the port the relay saw `i` at (or its mapped one, if `j` knows
            // it): one `i`'s dial does not come from if its router picks a new port per
            // destination.
            Nat::Firewall | Nat::PortPreserving => {
                holed
                    && match self.nat(i) {
                        Nat::Symmetric => false,
                        Nat::Mapped => self.knows_mapping(j, i),
                        _ => true,
                    }
            }
            // Its punch went out from a port nobody was told of: only a router open to it
            // lets it in, and the dialler behind it dials where it came from.
            Nat::Symmetric | Nat::Mapped => holed && self.open_to(i, j),
        }
    }

    /// Member `i`'s core asked to dial `other` (punching toward it as it does).
    pub(super) fn dial(&mut self, i: usize, other: &MemberInfo) {
        self.punch(i, other);
        if let Some(j) = self.member_of(other) {
            self.try_dial(i, j, other.id, 0);
        }
    }

    /// A dial (or its `attempt`-th resend) from `i` reaches `j`'s router, which knew of no
    /// hole for it the times before.
    fn try_dial(&mut self, i: usize, j: usize, other: MemberId, attempt: u32) {
        let (Some(me), Some(_)) = (self.members[i].core.me(), self.members[j].conn) else {
            return;
        };
        // Not yet welcomed, it has not punched: the dial is dropped and sent again. Under
        // another id, it rejoined: its core dials afresh.
        let rejoined = self.members[j].core.me().is_some_and(|id| id != other);
        if rejoined || self.live_path(i, j).is_some() {
            return;
        }
        if self.apart(i, j) || !self.admits(j, i) {
            if attempt < DIAL_RESENDS {
                let at = self.now + FIRST_RESEND * 2u32.pow(attempt.min(3));
                self.schedule(at, direct(i, j, DirectDelivery::Resend(other, attempt + 1)));
            }
            return;
        }
        let (lo, hi) = Self::key(i, j);
        let ids = if lo == i { [me, other] } else { [other, me] };
        let mut link = Link::new(self.config.direct_link.unwrap_or(self.config.link));
        let rtt = link.reliable(self.now, 1200, &mut self.rng) * 2;
        // From the later of the two joining to the dialled end having the path.
        let joined = self.members[i].joined_at.max(self.members[j].joined_at);
        let up = (self.now + rtt + rtt / 2).saturating_duration_since(joined);
        self.slowest_direct = self.slowest_direct.max(up);
        self.direct_pairs.insert((lo, hi));
        self.paths_made += 1;
        let serial = self.paths_made;
        let path = Path {
            ids,
            serial,
            made: self.now,
            links: [link.clone(), link],
            ready: [self.now; 2],
        };
        self.paths.insert((lo, hi), path);
        // The dialler has its path after one round trip, the dialled after one and a half.
        self.schedule(self.now + rtt, direct(j, i, DirectDelivery::Up(serial)));
        let at = self.now + rtt + rtt / 2;
        self.schedule(at, direct(i, j, DirectDelivery::Up(serial)));
    }

    /// Member `i` is out of the room (its core forgot its paths): the other ends notice.
    pub(super) fn drop_paths(&mut self, i: usize) {
        let gone: Vec<(usize, usize)> = self
            .paths
            .keys()
            .copied()
            .filter(|&(a, b)| a == i || b == i)
            .collect();
        for (a, b) in gone {
            let Some(p) = self.paths.remove(&(a, b)) else {
                continue;
            };
            let (other, id) = if a == i { (b, p.ids[0]) } else { (a, p.ids[1]) };
            let what = DirectDelivery::Down(id, p.serial);
            self.schedule(self.now + PATH_IDLE, direct(i, other, what));
        }
    }

    /// A split of the members begins: paths across it fall silent, and both ends notice.
    pub(super) fn split_members(&mut self, side: BTreeSet<usize>, until: Instant) {
        self.split = Some((side, until));
        let across: Vec<(usize, usize)> = self
            .paths
            .keys()
            .copied()
            .filter(|&(a, b)| self.apart(a, b))
            .collect();
        for (a, b) in across {
            let Some(p) = self.paths.remove(&(a, b)) else {
                continue;
            };
            let at = self.now + PATH_IDLE;
            self.schedule(at, direct(a, b, DirectDelivery::Down(p.ids[0], p.serial)));
            self.schedule(at, direct(b, a, DirectDelivery::Down(p.ids[1], p.serial)));
        }
    }

    /// Member `i`'s core sends `msg` on its path to the member now called `to`: in order,
    /// reliably, unless the path is gone (then it is lost with it, as with a real connection).
    pub(super) fn send_direct(&mut self, i: usize, to: MemberId, msg: PeerMessage) {
        let Some(j) = self.members.iter().position(|m| m.core.me() == Some(to)) else {
            return;
        };
        if self.live_path(i, j).is_none() || self.apart(i, j) {
            return;
        }
        let (now, dir) = (self.now, usize::from(i > j));
        let key = Self::key(i, j);
        let p = self.paths.get_mut(&key).expect("live");
        let at = (now + p.links[dir].reliable(now, 256, &mut self.rng)).max(p.ready[dir]);
        p.ready[dir] = at;
        self.schedule(at, direct(i, j, DirectDelivery::Msg(msg)));
    }

    /// Member `i`'s sealed audio datagram (with its own sender prefix) on each of its paths;
    /// whom it reached, so the relay carries it to the rest.
    pub(super) fn send_direct_audio(&mut self, i: usize, datagram: &[u8], media: u64) {
        let counted = self.in_tail(self.now);
        for j in 0..self.members.len() {
            if j == i || self.live_path(i, j).is_none() || self.apart(i, j) {
                continue;
            }
            let (now, dir) = (self.now, usize::from(i > j));
            let p = self.paths.get_mut(&Self::key(i, j)).expect("live");
            let copies = p.links[dir].datagram(now, datagram.len(), &mut self.rng);
            if counted && !copies.is_empty() {
                self.ledger.let_through(i, j, media);
            }
            for d in copies {
                let what = direct(i, j, DirectDelivery::Datagram(datagram.to_vec()));
                self.schedule(now + d, what);
            }
        }
    }

    /// The insider's forgery: a frame sealed as another member, with the sender key that
    /// member granted it, sent over each of the insider's own direct paths. Its payload is
    /// no member's, so the report fails the run if anyone plays it.
    pub(super) fn forge_direct_audio(&mut self, i: usize) {
        let n = self.members.len();
        let victim = self.rng.below(n as u64) as usize;
        let Some(vid) = self.members[victim].core.me().filter(|_| victim != i) else {
            return;
        };
        let mut d = Vec::new();
        crate::wire::encode_sender(vid, &mut d);
        let sealed = self.members[i].core.danger_keys_mut().is_some_and(|k| {
            k.danger_seal_as(vid, crate::wire::StemId(0), 3, 0, &[0xEE; 40], &mut d)
        });
        if !sealed {
            return;
        }
        for j in 0..n {
            if j == i || j == victim || self.live_path(i, j).is_none() || self.apart(i, j) {
                continue;
            }
            let (now, dir) = (self.now, usize::from(i > j));
            let p = self.paths.get_mut(&Self::key(i, j)).expect("live");
            for delay in p.links[dir].datagram(now, d.len(), &mut self.rng) {
                let what = direct(i, j, DirectDelivery::Datagram(d.clone()));
                self.schedule(now + delay, what);
            }
        }
    }

    pub(super) fn deliver_direct(&mut self, from: usize, to: usize, what: DirectDelivery) {
        let now = self.now;
        if let DirectDelivery::Resend(other, attempt) = what {
            return self.try_dial(from, to, other, attempt);
        }
        if let DirectDelivery::Down(peer, serial) = what {
            // Only if no newer path took its place (a path is its connection, not an id).
            let newer = self
                .paths
                .get(&Self::key(from, to))
                .is_some_and(|p| p.serial != serial);
            if !newer {
                let m = &mut self.members[to];
                m.core.handle_path_down(now, peer, &mut m.doc);
                self.drain_member(to);
            }
            return;
        }
        if let DirectDelivery::Up(serial) = what {
            let Some(p) = self
                .paths
                .get(&Self::key(from, to))
                .filter(|p| p.serial == serial)
            else {
                return;
            };
            let (made, peer) = (p.made, p.ids[usize::from(from > to)]);
            let m = &self.members[to];
            if m.core.members().any(|o| o.id == peer) && self.live_path(from, to).is_some() {
                let m = &mut self.members[to];
                m.core.handle_path_up(now, peer, &mut m.doc);
                self.drain_member(to);
            } else if now < made + RECOGNISE {
                // Not told of it yet, or not welcomed: held, and looked at again.
                let at = now + Duration::from_millis(50);
                self.schedule(at, direct(from, to, DirectDelivery::Up(serial)));
            }
            return;
        }
        let Some(peer) = self.members[from].core.me() else {
            return;
        };
        match what {
            DirectDelivery::Up(_) | DirectDelivery::Down(..) | DirectDelivery::Resend(..) => {}
            DirectDelivery::Msg(msg) => {
                if self.live_path(from, to).is_some() {
                    let m = &mut self.members[to];
                    m.core.handle_direct(now, peer, &msg, &mut m.doc);
                    self.drain_member(to);
                }
            }
            DirectDelivery::Datagram(d) => {
                if self.live_path(from, to).is_some() {
                    self.member_datagram(to, Via::Direct(peer), &d);
                }
            }
        }
    }
}

fn direct(from: usize, to: usize, what: DirectDelivery) -> Delivery {
    Delivery::Direct(from, to, what)
}
