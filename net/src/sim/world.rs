//! The simulated room: the event loop that carries messages between the cores.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::direct::{DirectDelivery, Nat, Path};
use super::hostile::Hostile;
use super::link::LinkConfig;
use super::member::Member;
use super::report::{report, AudioLedger, SimReport};
use super::rng::DangerSeededRng;
use crate::core::member::{RoomEvent, Transmit, Via};
use crate::core::relay::{ConnId, JoinRequest, Outgoing, RelayCore, RoomLimits};
use crate::crypto::Relayed;
use crate::invite::RoomId;
use crate::wire::{
    decode_sender, encode_frame, AudioHeader, ClientMessage, RelayMessage, Role, StemId,
};
use crate::RoomSecret;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Members in the room.
    pub members: usize,
    /// Random document changes each member makes during the chaos.
    pub edits_per_member: usize,
    /// How long the chaos lasts (virtual time).
    pub chaos: Duration,
    /// How long everyone is left connected afterwards to settle.
    pub settle: Duration,
    /// Every path between a member and the relay, each way.
    pub link: LinkConfig,
    /// Members cut off on their own (connection lost, back after a while).
    pub disconnects: usize,
    /// Times a random set of members is cut off from the relay at once.
    pub partitions: usize,
    /// Whether the relay crashes (every connection lost) and comes back, once.
    pub relay_restart: bool,
    /// Audio frame length; every joined member sends one stream.
    pub frame: Duration,
    /// Who attacks the room (nobody by default).
    pub hostile: Hostile,
    /// Whether members make direct paths between each other when their routers let them.
    pub direct: bool,
    /// Every direct path, each way (by default like `link`).
    pub direct_link: Option<LinkConfig>,
    /// Every member's router...
    pub nat: Nat,
    /// ...but member i's is `nat_each[i]`, where given.
    pub nat_each: Vec<Nat>,
    /// Member i sits behind router `router_each[i]` (by default a router of its own): members
    /// behind one router reach each other on their LAN, whatever it does to the internet.
    pub router_each: Vec<usize>,
    /// Times the members are split in two for a while: the relay reaches both sides, but
    /// direct paths across fall silent.
    pub splits: usize,
    /// Times the last member, a guest, leaves and comes back during the settled tail, while
    /// the others stay: every join and leave makes everyone rekey, and the audio between those
    /// who stay is checked through it. The guest is left out of the checks.
    pub churn: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            members: 5,
            edits_per_member: 100,
            chaos: Duration::from_secs(60),
            settle: Duration::from_secs(20),
            link: LinkConfig::default(),
            disconnects: 3,
            partitions: 2,
            relay_restart: true,
            frame: Duration::from_millis(20),
            hostile: Hostile::default(),
            direct: true,
            direct_link: None,
            nat: Nat::Open,
            nat_each: Vec::new(),
            router_each: Vec::new(),
            splits: 2,
            churn: 0,
        }
    }
}

/// Runs one simulation.
pub fn run(seed: u64, config: &SimConfig) -> SimReport {
    World::new(seed, config.clone()).run()
}

impl Up {
    /// Its size on the wire, near enough for the rate cap.
    fn size(&self) -> usize {
        match self {
            Up::Join(_) => 96,
            Up::Msg(m) => encode_frame(m).map_or(64, |f| f.len()),
            Up::Datagram(d) => d.len(),
        }
    }
}

pub(super) enum Up {
    Join(JoinRequest),
    Msg(ClientMessage),
    Datagram(Vec<u8>),
}

pub(super) enum Down {
    Msg(RelayMessage),
    Datagram(Vec<u8>),
    Closed,
}

pub(super) enum Delivery {
    ToRelay(ConnId, Up),
    /// The relay notices a connection is gone (an idle timeout, in life).
    RelayClosed(ConnId),
    ToMember(usize, ConnId, Down),
    /// Along the direct path from one member to another.
    Direct(usize, usize, DirectDelivery),
}

struct Scheduled {
    at: Instant,
    seq: u64,
    what: Delivery,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

pub(super) struct World {
    pub(super) config: SimConfig,
    pub(super) seed: u64,
    pub(super) rng: DangerSeededRng,
    pub(super) now: Instant,
    pub(super) start: Instant,
    pub(super) secret: RoomSecret,
    pub(super) room: RoomId,
    pub(super) relay: RelayCore,
    pub(super) owners: BTreeMap<ConnId, usize>,
    pub(super) next_conn: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pub(super) seq: u64,
    pub(super) members: Vec<Member>,
    /// Scripted outages: (when, who, how long); and when the relay restarts.
    pub(super) outages: VecDeque<(Instant, Vec<usize>, Duration)>,
    pub(super) restart_at: Option<Instant>,
    /// Scripted splits: (when, one side, how long); the split in force; the direct paths.
    pub(super) splits: VecDeque<(Instant, BTreeSet<usize>, Duration)>,
    pub(super) split: Option<(BTreeSet<usize>, Instant)>,
    pub(super) paths: BTreeMap<(usize, usize), Path>,
    pub(super) paths_made: usize,
    /// When each member (first) last punched toward another (second).
    pub(super) punched: BTreeMap<(usize, usize), Instant>,
    /// The longest any direct path took from the later of its two members joining.
    pub(super) slowest_direct: Duration,
    pub(super) direct_pairs: BTreeSet<(usize, usize)>,
    /// Each receiver's clock track of each sender (receiver, sender), and the worst error in
    /// the settled tail of putting a sender's frame on the receiver's clock by it.
    pub(super) clocks: BTreeMap<(usize, usize), crate::room_clock::ClockTrack>,
    pub(super) clock_error: f64,
    /// Audio over the settled tail (from then on), frame by frame.
    pub(super) tail_start: Instant,
    pub(super) ledger: AudioLedger,
    /// Frames a receiver may take from their sending and still play: a fixed-depth playout.
    pub(super) depth: Duration,
    pub(super) longest_gap: Duration,
    pub(super) notices: usize,
    pub(super) reconnects: Vec<Duration>,
    /// Frames handed on that their sender never sent (forged or corrupted, by anyone).
    pub(super) forged_audio: usize,
    /// By (sender, receiver): the path epoch of the last frame played, and how often it
    /// changed.
    pub(super) path_epochs: BTreeMap<(usize, usize), (u8, u32)>,
}

fn new_relay(secret: &RoomSecret, room: &RoomId, rng: &mut DangerSeededRng) -> RelayCore {
    RelayCore::new(
        secret.verifier(room),
        RoomLimits::default(),
        Box::new(rng.fork()),
        Arc::default(),
    )
}

impl World {
    fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = DangerSeededRng::new(seed);
        let start = Instant::now();
        let room = RoomId::new("sim").expect("valid room name");
        let mut bytes = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rng, &mut bytes);
        let secret = RoomSecret::from_bytes(bytes);
        let relay = new_relay(&secret, &room, &mut rng);
        let chaos_end = start + config.chaos;
        let members = (0..config.members)
            .map(|i| Member::new(i, &config, &secret, &room, start, rng.fork()))
            .collect();
        let mut outages = Vec::new();
        for _ in 0..config.disconnects {
            let at = start + config.chaos.mul_f64(rng.unit() * 0.9);
            let who = vec![rng.below(config.members as u64) as usize];
            outages.push((at, who, Duration::from_millis(500 + rng.below(8000))));
        }
        for _ in 0..config.partitions {
            let at = start + config.chaos.mul_f64(rng.unit() * 0.9);
            let who: Vec<usize> = (0..config.members).filter(|_| rng.chance(0.5)).collect();
            outages.push((at, who, Duration::from_millis(1000 + rng.below(10_000))));
        }
        let tail_start = chaos_end + config.settle.mul_f64(0.5);
        let tail = (config.settle.mul_f64(0.5)).saturating_sub(Duration::from_secs(2));
        for k in 0..config.churn {
            let at = tail_start + tail.mul_f64(k as f64 / config.churn as f64);
            let away = tail.mul_f64(0.4 / config.churn as f64);
            outages.push((at, vec![config.members - 1], away));
        }
        outages.sort_by_key(|o| o.0);
        let mut splits = Vec::new();
        for _ in 0..config.splits {
            let at = start + config.chaos.mul_f64(rng.unit() * 0.9);
            let side: BTreeSet<usize> = (0..config.members).filter(|_| rng.chance(0.5)).collect();
            splits.push((at, side, Duration::from_millis(1000 + rng.below(10_000))));
        }
        splits.sort_by_key(|s| s.0);
        let restart_at = config
            .relay_restart
            .then(|| start + config.chaos.mul_f64(0.2 + 0.6 * rng.unit()));
        Self {
            depth: config.link.worst_datagram() * 2 + Duration::from_millis(5),
            tail_start,
            clocks: BTreeMap::new(),
            clock_error: 0.0,
            config,
            seed,
            rng,
            now: start,
            start,
            secret,
            room,
            relay,
            owners: BTreeMap::new(),
            next_conn: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            members,
            outages: outages.into(),
            restart_at,
            splits: splits.into(),
            split: None,
            paths: BTreeMap::new(),
            paths_made: 0,
            punched: BTreeMap::new(),
            slowest_direct: Duration::ZERO,
            direct_pairs: BTreeSet::new(),
            ledger: AudioLedger::default(),
            reconnects: Vec::new(),
            forged_audio: 0,
            path_epochs: BTreeMap::new(),
            longest_gap: Duration::ZERO,
            notices: 0,
        }
    }

    pub(super) fn schedule(&mut self, at: Instant, what: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            what,
        }));
    }

    pub(super) fn end(&self) -> Instant {
        self.start + self.config.chaos + self.config.settle
    }

    fn run(mut self) -> SimReport {
        // Bounded: every step advances the clock or drains a due item.
        for _ in 0..50_000_000u64 {
            let Some(next) = self.next_due() else { break };
            if next > self.end() {
                break;
            }
            self.now = next.max(self.now);
            self.step();
        }
        self.report()
    }

    fn next_due(&self) -> Option<Instant> {
        let mut due = self.queue.peek().map(|s| s.0.at);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                due = Some(due.map_or(t, |d| d.min(t)));
            }
        };
        consider(self.relay.poll_timeout());
        consider(self.outages.front().map(|o| o.0));
        consider(self.restart_at);
        consider(self.splits.front().map(|s| s.0));
        for m in &self.members {
            consider(m.core.poll_timeout());
            consider(m.reconnect_at.map(|t| t.max(m.offline_until)));
            consider(m.edits_at.front().copied());
            consider(m.joined.then_some(m.next_frame));
        }
        due
    }

    fn step(&mut self) {
        let now = self.now;
        while self.queue.peek().is_some_and(|s| s.0.at <= now) {
            let Reverse(s) = self.queue.pop().expect("peeked");
            self.deliver(s.what);
        }
        if self.relay.poll_timeout().is_some_and(|t| t <= now) {
            self.relay.handle_timeout(now);
            self.drain_relay();
        }
        while self.outages.front().is_some_and(|o| o.0 <= now) {
            let (_, who, outage) = self.outages.pop_front().expect("peeked");
            for i in who {
                self.cut(i, now + outage);
            }
        }
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            self.restart_relay();
        }
        while self.splits.front().is_some_and(|s| s.0 <= now) {
            let (_, side, lasts) = self.splits.pop_front().expect("peeked");
            self.split_members(side, now + lasts);
        }
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if m.core.poll_timeout().is_some_and(|t| t <= now) {
                m.core.handle_timeout(now, &mut m.doc);
                self.drain_member(i);
            }
            let m = &self.members[i];
            if m.reconnect_at
                .is_some_and(|t| t.max(m.offline_until) <= now)
            {
                self.connect(i);
            }
            while self.members[i].edits_at.front().is_some_and(|t| *t <= now) {
                self.members[i].edits_at.pop_front();
                if self.insider() != Some(i) && self.members[i].edit(i, now) {
                    self.drain_member(i);
                }
            }
            if self.members[i].joined && self.members[i].next_frame <= now {
                self.send_frame(i);
                if self.insider() == Some(i) {
                    self.insider_frame(i);
                }
            }
        }
    }

    fn connect(&mut self, i: usize) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.owners.insert(conn, i);
        let lan = self.lan_addr(i);
        let m = &mut self.members[i];
        m.reconnect_at = None;
        m.conn = Some(conn);
        rand_core::RngCore::fill_bytes(&mut m.rng, &mut m.binding);
        let request = JoinRequest {
            name: format!("m{i}"),
            member: m.key.public(),
            instance: m.key.instance(),
            role: Role::Performer,
            observed: SocketAddr::from(([192, 0, 2, 1], 5000 + i as u16)),
            local: vec![lan],
            binding: m.binding,
        };
        self.up_control(i, conn, Up::Join(request));
    }

    /// A member loses its connection until `until` (the relay notices a little later, as an
    /// idle timeout would tell it).
    fn cut(&mut self, i: usize, until: Instant) {
        let now = self.now;
        let m = &mut self.members[i];
        m.offline_until = m.offline_until.max(until);
        if let Some(conn) = m.conn.take() {
            m.core.handle_disconnected(now);
            m.joined = false;
            m.lost_at = now;
            m.reconnect_at = Some(until);
            self.owners.remove(&conn);
            self.drop_paths(i);
            self.schedule(now + Duration::from_secs(2), Delivery::RelayClosed(conn));
        }
    }

    fn restart_relay(&mut self) {
        self.relay = new_relay(&self.secret, &self.room, &mut self.rng);
        let owners = std::mem::take(&mut self.owners);
        for (conn, i) in owners {
            let at = self.now + self.config.link.delay;
            self.schedule(at, Delivery::ToMember(i, conn, Down::Closed));
        }
    }

    pub(super) fn up_control(&mut self, i: usize, conn: ConnId, what: Up) {
        let m = &mut self.members[i];
        let bytes = what.size();
        let at = (self.now + m.up.reliable(self.now, bytes, &mut m.rng)).max(m.up_ready);
        m.up_ready = at;
        self.schedule(at, Delivery::ToRelay(conn, what));
    }

    fn deliver(&mut self, what: Delivery) {
        let now = self.now;
        match what {
            Delivery::ToRelay(conn, up) => {
                if !self.owners.contains_key(&conn) {
                    return;
                }
                match up {
                    Up::Join(r) => self.relay.handle_join(now, conn, r),
                    Up::Msg(msg) => self.relay.handle_message(now, conn, msg),
                    Up::Datagram(d) => self.relay.handle_datagram(now, conn, &d),
                }
                self.drain_relay();
            }
            Delivery::RelayClosed(conn) => {
                self.relay.handle_closed(now, conn);
                self.drain_relay();
            }
            Delivery::Direct(from, to, what) => self.deliver_direct(from, to, what),
            Delivery::ToMember(i, conn, down) => {
                if self.members[i].conn != Some(conn) {
                    return;
                }
                match down {
                    Down::Closed => {
                        let m = &mut self.members[i];
                        m.conn = None;
                        m.joined = false;
                        m.core.handle_disconnected(now);
                        m.lost_at = now;
                        let backoff = Duration::from_millis(100 + m.rng.below(900));
                        m.reconnect_at = Some(now + backoff);
                        self.drop_paths(i);
                    }
                    Down::Msg(msg) => self.member_message(i, conn, msg),
                    Down::Datagram(d) => self.member_datagram(i, Via::Relay, &d),
                }
            }
        }
    }

    fn member_message(&mut self, i: usize, conn: ConnId, msg: RelayMessage) {
        let now = self.now;
        let m = &mut self.members[i];
        if !m.joined {
            match msg {
                RelayMessage::Challenge { nonce } => {
                    let proof = self.secret.admission_proof(&self.room, &nonce, &m.binding);
                    let signature = m.key.sign_admission(&nonce, &m.binding);
                    let msg = ClientMessage::Proof { proof, signature };
                    self.up_control(i, conn, Up::Msg(msg));
                }
                RelayMessage::Welcome { you, members, .. } => {
                    if m.welcomes > 0 {
                        self.reconnects.push(now - m.lost_at.max(m.offline_until));
                    }
                    m.joined = true;
                    m.core.handle_welcome(now, you, members, &mut m.doc);
                    // Its engine played on meanwhile: the media clock runs with time, and the
                    // frames of the time away were never sent.
                    if m.welcomes > 0 {
                        let frame = self.config.frame;
                        while m.next_frame < now {
                            m.next_frame += frame;
                            m.media += (frame.as_secs_f64() * 48_000.0) as u64;
                        }
                    } else {
                        m.next_frame = now;
                    }
                    m.welcomes += 1;
                    m.joined_at = now;
                    self.drain_member(i);
                    // Its router answered while it joined: the room is told.
                    if let Some(addr) = self.mapped_addr(i) {
                        let local = vec![addr, self.lan_addr(i)];
                        let msg = ClientMessage::Addresses { local };
                        self.up_control(i, conn, Up::Msg(msg));
                    }
                }
                RelayMessage::Refused(_) => {
                    // Cannot happen on honest links; start over rather than hang.
                    m.conn = None;
                    m.reconnect_at = Some(now + Duration::from_secs(1));
                    self.owners.remove(&conn);
                }
                _ => {}
            }
            return;
        }
        let insider = self.insider() == Some(i);
        let m = &mut self.members[i];
        if let (true, RelayMessage::From { body, .. }) = (insider, &msg) {
            m.heard_control = Some(body.clone());
        }
        m.core.handle_relay(now, msg, &mut m.doc);
        self.drain_member(i);
    }

    pub(super) fn member_datagram(&mut self, i: usize, via: Via, d: &[u8]) {
        let now = self.now;
        if self.insider() == Some(i) {
            let heard = &mut self.members[i].heard;
            if heard.len() < 4 {
                heard.push(d.to_vec());
            }
            return;
        }
        let mut heard = Vec::new();
        self.members[i]
            .core
            .open_datagram(now, via, d, &mut |from, f| {
                heard.push((from, f.media_time, f.payload.to_vec(), f.path_epoch))
            });
        for (from, media, payload, epoch) in heard {
            // Frames played as no member of the run, or with another's payload, are forged.
            let sender = self.members.iter().position(|m| m.participant == from);
            let sent_at = sender.and_then(|s| {
                let m = &self.members[s];
                m.sent
                    .iter()
                    .rev()
                    .find(|(_, m, _)| *m == media)
                    .map(|(_, _, at)| *at)
            });
            let genuine = sender.is_some_and(|s| payload == [s as u8; 40] && s != i);
            let (Some(sender), Some(sent_at)) = (sender, sent_at.filter(|_| genuine)) else {
                self.forged_audio += 1;
                continue;
            };
            let e = self.path_epochs.entry((sender, i)).or_insert((0, 0));
            if e.0 != epoch {
                *e = (epoch, e.1 + 1);
            }
            let both_since = self.members[i]
                .joined_at
                .max(self.members[sender].joined_at);
            if let Some(last) = self.members[i].last_heard.insert(from, now) {
                // A gap while both were in the room all along (not a cut-off's silence).
                if last >= both_since && now < self.start + self.config.chaos {
                    self.longest_gap = self.longest_gap.max(now - last);
                }
            }
            if self.in_tail(sent_at) {
                self.ledger.handed_on(sender, i, media, now - sent_at);
            }
            self.clock_check(sender, i, media, sent_at);
        }
    }

    fn drain_relay(&mut self) {
        while let Some(t) = self.relay.poll_transmit() {
            let Some(&i) = self.owners.get(&t.to) else {
                continue;
            };
            match t.what {
                Outgoing::Datagrams(items) => {
                    if self.withheld(i).is_some() {
                        continue;
                    }
                    for item in items {
                        self.down_datagram(i, t.to, item.to_vec());
                        self.relay_datagram_tricks(i, &item);
                    }
                }
                Outgoing::Control(msg) => {
                    self.relay.handle_written(self.now, t.to);
                    let m = &mut self.members[i];
                    let bytes = encode_frame(&msg).map_or(64, |f| f.len());
                    let at =
                        (self.now + m.down.reliable(self.now, bytes, &mut m.rng)).max(m.down_ready);
                    let at = self.withheld(i).map_or(at, |until| at.max(until));
                    self.members[i].down_ready = at;
                    self.relay_control_tricks(i, t.to, at, &msg);
                    self.schedule(at, Delivery::ToMember(i, t.to, Down::Msg(msg)));
                }
                Outgoing::Close(_) => {
                    self.owners.remove(&t.to);
                    let m = &mut self.members[i];
                    let at =
                        (self.now + m.down.reliable(self.now, 8, &mut m.rng)).max(m.down_ready);
                    self.schedule(at, Delivery::ToMember(i, t.to, Down::Closed));
                }
            }
        }
        // Log lines: nothing to simulate.
        while let Some(e) = self.relay.poll_event() {
            if let crate::core::relay::RelayEvent::Rotate { by, verifier } = e {
                self.relay.handle_rotated(self.now, by, verifier, true);
            }
        }
    }

    /// Whether a frame sent at `at` is accounted: sent in the settled tail, long enough before
    /// the end to arrive.
    pub(super) fn in_tail(&self, at: Instant) -> bool {
        at >= self.tail_start && at + Duration::from_secs(1) < self.end()
    }

    /// A forwarded datagram on its way down to member `i`: noted as let through if the link
    /// carries it and it was sent in the settled tail.
    fn down_datagram(&mut self, i: usize, conn: ConnId, item: Vec<u8>) {
        let copies = {
            let m = &mut self.members[i];
            m.down.datagram(self.now, item.len(), &mut m.rng)
        };
        if !copies.is_empty() && self.now >= self.tail_start {
            if let Ok((sender, rest)) = decode_sender(&item) {
                let from = self
                    .members
                    .iter()
                    .position(|m| m.core.me().is_some() && m.joined && m.core.me() == Some(sender));
                // A copy the relay made for another member carries no MAC of ours: it is
                // no frame we are owed.
                let ours = self.members[i].core.me().is_some_and(|me| {
                    Relayed::parse(rest).is_ok_and(|r| r.entry_for(me).is_some())
                });
                if let (Some(from), Ok(h), true) = (from, AudioHeader::decode(rest), ours) {
                    let sent = self.members[from]
                        .sent
                        .iter()
                        .rev()
                        .find(|(s, _, _)| *s == h.seq_low)
                        .map(|(_, m, at)| (*m, *at));
                    if let Some((media, _)) = sent.filter(|(_, at)| self.in_tail(*at)) {
                        self.ledger.let_through(from, i, media);
                    }
                }
            }
        }
        for delay in copies {
            let at = self.now + delay;
            self.schedule(
                at,
                Delivery::ToMember(i, conn, Down::Datagram(item.clone())),
            );
        }
    }

    pub(super) fn drain_member(&mut self, i: usize) {
        let Some(conn) = self.members[i].conn else {
            // Offline: what the core sends goes nowhere (its sync starts over on rejoin).
            while self.members[i].core.poll_transmit().is_some() {}
            self.drain_events(i);
            return;
        };
        while let Some(t) = self.members[i].core.poll_transmit() {
            if self.insider_withholds(i, &t) {
                continue;
            }
            let msg = match t {
                Transmit::Relay(msg) => msg,
                Transmit::Direct(to, msg) => {
                    self.send_direct(i, to, msg);
                    continue;
                }
            };
            if self.members[i].joined {
                self.up_control(i, conn, Up::Msg(msg));
            }
        }
        self.drain_events(i);
    }

    fn drain_events(&mut self, i: usize) {
        while let Some(e) = self.members[i].core.poll_event() {
            match e {
                RoomEvent::Notice(_) => self.notices += 1,
                RoomEvent::Dial(other) => self.dial(i, &other),
                RoomEvent::Punch(other) => self.punch(i, &other),
                _ => {}
            }
        }
    }

    fn send_frame(&mut self, i: usize) {
        let frame = self.config.frame;
        let m = &mut self.members[i];
        m.next_frame += frame;
        let media = m.media;
        m.media += (frame.as_secs_f64() * 48_000.0) as u64;
        let payload = [i as u8; 40];
        let Some(sealed) = m.core.seal_audio(StemId(0), media, &payload, 1) else {
            return;
        };
        let whole = sealed.direct.to_vec();
        let needs_relay = sealed.relay.is_some();
        let to_relay = sealed.relay.unwrap_or_default().to_vec();
        if let Ok(h) = decode_sender(&whole).and_then(|(_, d)| AudioHeader::decode(d)) {
            m.sent.push_back((h.seq_low, media, self.now));
            if m.sent.len() > 4096 {
                m.sent.pop_front();
            }
        }
        let Some(conn) = m.conn else { return };
        self.send_direct_audio(i, &whole, media);
        if !needs_relay {
            return;
        }
        let m = &mut self.members[i];
        for delay in m.up.datagram(self.now, to_relay.len(), &mut m.rng) {
            let at = self.now + delay;
            self.schedule(at, Delivery::ToRelay(conn, Up::Datagram(to_relay.clone())));
        }
    }

    fn report(mut self) -> SimReport {
        let honest = self.members.len()
            - usize::from(self.config.hostile.member)
            - usize::from(self.config.churn > 0);
        let h = report(&mut self.members, honest, &mut self.ledger, self.depth);
        let now = self.now;
        let forged = super::hostile::FORGED;
        let mut taken_in = 0;
        for m in &mut self.members[..honest] {
            let shown = m
                .core
                .presence(now)
                .iter()
                .any(|p| p.presence.name == forged);
            taken_in += usize::from(shown || m.doc.doc().chart().contains(forged));
        }
        let mut reconnects = self.reconnects;
        reconnects.sort();
        let mut relay_faster = BTreeSet::new();
        for (to, m) in self.members[..honest].iter().enumerate() {
            for (from, o) in self.members[..honest].iter().enumerate() {
                if o.core.me().is_some_and(|id| m.core.relay_faster(id)) {
                    relay_faster.insert((from, to));
                }
            }
        }
        SimReport {
            seed: self.seed,
            converged: h.converged && self.forged_audio == 0,
            lost_edits: h.lost_edits,
            audio: h.audio,
            longest_gap: self.longest_gap,
            rejoins: self
                .members
                .iter()
                .map(|m| m.welcomes.saturating_sub(1))
                .sum(),
            reconnects,
            notices: self.notices,
            direct_paths: self.paths_made,
            slowest_direct: self.slowest_direct,
            direct_pairs: self.direct_pairs.clone(),
            relay_faster,
            epoch_changes: self.path_epochs.iter().map(|(k, e)| (*k, e.1)).collect(),
            refused: h.refused,
            replayed: h.replayed,
            taken_in,
            clock_error_samples: self.clock_error,
        }
    }
}
