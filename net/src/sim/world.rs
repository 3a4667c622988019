//! The simulated room: the event loop that carries messages between the cores.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::link::{Link, LinkConfig};
use super::rng::DangerSeededRng;
use crate::core::member::{RoomCore, RoomEvent, RoomSetup, Transmit};
use crate::core::relay::{ConnId, JoinRequest, Outgoing, RelayCore, RoomLimits};
use crate::core::sync::DocReplica;
use crate::crypto::RotationPolicy;
use crate::doc::{Note, SessionDoc};
use crate::invite::RoomId;
use crate::presence::Presence;
use crate::session::SessionCounters;
use crate::wire::{
    decode_sender, encode_peer, AudioHeader, ClientMessage, ParticipantId, RelayMessage, Role,
    StemId,
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
        }
    }
}

/// Audio at one member from another, over the settled tail of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioCheck {
    /// Frames the links let through to this receiver.
    pub through: usize,
    /// Frames it opened and handed on (each once).
    pub delivered: usize,
    /// Frames let through but never handed on, or handed on twice.
    pub missing: usize,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed that replays it.
    pub seed: u64,
    /// Every member holds the same document: the same heads, and byte-identical changes.
    pub converged: bool,
    /// Edits some member made that some document lacks (`member: what`).
    pub lost_edits: Vec<String>,
    /// Per (sender, receiver), audio over the settled tail.
    pub audio: BTreeMap<(usize, usize), AudioCheck>,
    /// Longest stretch any member went without a frame from a connected sender, during the
    /// chaos (with both of them in the room).
    pub longest_gap: Duration,
    /// Times members joined the room after the first.
    pub rejoins: usize,
    /// Control messages the cores refused (notices): should be none on honest links.
    pub notices: usize,
}

impl SimReport {
    /// Whether nothing was lost: documents equal and complete, and every frame the links let
    /// through in the settled tail delivered once.
    pub fn ok(&self) -> bool {
        self.converged
            && self.lost_edits.is_empty()
            && self.audio.values().all(|a| a.missing == 0 && a.through > 0)
    }
}

/// A member's edits that must survive: its index, its labels, its tracks and their notes.
type OwnEdits = (usize, Vec<String>, Vec<(String, usize)>);

/// Runs one simulation.
pub fn run(seed: u64, config: &SimConfig) -> SimReport {
    World::new(seed, config.clone()).run()
}

enum Up {
    Join(JoinRequest),
    Msg(ClientMessage),
    Datagram(Vec<u8>),
}

enum Down {
    Msg(RelayMessage),
    Datagram(Vec<u8>),
    Closed,
}

enum Delivery {
    ToRelay(ConnId, Up),
    /// The relay notices a connection is gone (an idle timeout, in life).
    RelayClosed(ConnId),
    ToMember(usize, ConnId, Down),
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

/// One member: its core, its document and what the run remembers of it.
struct Member {
    core: RoomCore,
    doc: DocReplica,
    participant: ParticipantId,
    conn: Option<ConnId>,
    binding: [u8; 32],
    joined: bool,
    /// Times it was welcomed into the room, and when last.
    welcomes: usize,
    joined_at: Instant,
    /// Cut off until then: no connection is made before.
    offline_until: Instant,
    /// When to try connecting next, if not connected.
    reconnect_at: Option<Instant>,
    /// Markers, chart words, tracks it added (all must survive), and its notes per track.
    own: Vec<String>,
    tracks: Vec<(String, usize)>,
    edits_at: VecDeque<Instant>,
    next_frame: Instant,
    media: u64,
    /// (low sequence number, media time) of what it sent lately, for reading forwarded
    /// headers.
    sent: VecDeque<(u16, u64)>,
    /// Last time a frame arrived from each sender (for gaps).
    last_heard: BTreeMap<ParticipantId, Instant>,
    rng: DangerSeededRng,
    /// Control messages to it arrive in order: not before this.
    down_ready: Instant,
    up_ready: Instant,
    up: Link,
    down: Link,
}

struct World {
    config: SimConfig,
    seed: u64,
    rng: DangerSeededRng,
    now: Instant,
    start: Instant,
    secret: RoomSecret,
    room: RoomId,
    relay: RelayCore,
    owners: BTreeMap<ConnId, usize>,
    next_conn: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    members: Vec<Member>,
    /// Scripted outages: (when, who, how long); and when the relay restarts.
    outages: VecDeque<(Instant, Vec<usize>, Duration)>,
    restart_at: Option<Instant>,
    /// Audio over the settled tail: frames let through and frames delivered, by (from, to).
    tail_start: Instant,
    through: BTreeMap<(usize, usize), BTreeSet<u64>>,
    delivered: BTreeMap<(usize, usize), Vec<u64>>,
    longest_gap: Duration,
    notices: usize,
}

fn new_relay(secret: &RoomSecret, room: &RoomId, rng: &mut DangerSeededRng) -> RelayCore {
    RelayCore::new(
        secret.verifier(room),
        RoomLimits::default(),
        Box::new(rng.fork()),
        Arc::default(),
    )
}

/// When a member edits: in bursts of one to eight changes a few tens of milliseconds apart
/// (typing a chord, dragging the tempo), the bursts anywhere in the chaos.
fn edit_times(
    rng: &mut DangerSeededRng,
    start: Instant,
    chaos: Duration,
    n: usize,
) -> Vec<Instant> {
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let mut at = start + chaos.mul_f64(rng.unit());
        for _ in 0..(1 + rng.below(8)).min((n - times.len()) as u64) {
            times.push(at);
            at += Duration::from_millis(5 + rng.below(30));
        }
    }
    times
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
            .map(|i| {
                let mut mrng = rng.fork();
                let participant = ParticipantId(i as u64 + 1);
                let mut doc = SessionDoc::new().expect("genesis document");
                // Distinct in its first bytes: ids of tracks and notes take the actor's prefix.
                doc.danger_replay_actor(&[i as u8 + 1; 16]);
                let mut edits = edit_times(&mut mrng, start, config.chaos, config.edits_per_member);
                edits.sort();
                Member {
                    core: RoomCore::new(
                        RoomSetup {
                            participant,
                            presence: Presence {
                                name: format!("m{i}"),
                                ..Presence::default()
                            },
                            auth: secret.member_auth(&room),
                            rotation: RotationPolicy {
                                max_age: Duration::from_secs(3600),
                                ..RotationPolicy::default()
                            },
                            presence_cipher: secret.presence_cipher(&room),
                            force_relay: true,
                            rng: Box::new(mrng.fork()),
                        },
                        Arc::new(SessionCounters::default()),
                    ),
                    doc: DocReplica::new(doc, secret.doc_cipher(&room)),
                    participant,
                    conn: None,
                    binding: [0; 32],
                    joined: false,
                    welcomes: 0,
                    joined_at: start,
                    offline_until: start,
                    reconnect_at: Some(start + Duration::from_millis(mrng.below(500))),
                    own: Vec::new(),
                    tracks: Vec::new(),
                    edits_at: edits.into(),
                    next_frame: start + config.frame.mul_f64(mrng.unit()),
                    media: 0,
                    sent: VecDeque::new(),
                    last_heard: BTreeMap::new(),
                    down_ready: start,
                    up_ready: start,
                    up: Link::new(config.link),
                    down: Link::new(config.link),
                    rng: mrng,
                }
            })
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
        outages.sort_by_key(|o| o.0);
        let restart_at = config
            .relay_restart
            .then(|| start + config.chaos.mul_f64(0.2 + 0.6 * rng.unit()));
        Self {
            tail_start: chaos_end + config.settle.mul_f64(0.5),
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
            through: BTreeMap::new(),
            delivered: BTreeMap::new(),
            longest_gap: Duration::ZERO,
            notices: 0,
        }
    }

    fn schedule(&mut self, at: Instant, what: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            what,
        }));
    }

    fn end(&self) -> Instant {
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
                self.edit(i);
            }
            if self.members[i].joined && self.members[i].next_frame <= now {
                self.send_frame(i);
            }
        }
    }

    fn connect(&mut self, i: usize) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.owners.insert(conn, i);
        let m = &mut self.members[i];
        m.reconnect_at = None;
        m.conn = Some(conn);
        rand_core::RngCore::fill_bytes(&mut m.rng, &mut m.binding);
        let request = JoinRequest {
            name: format!("m{i}"),
            participant: m.participant,
            role: Role::Performer,
            observed: SocketAddr::from(([192, 0, 2, 1], 5000 + i as u16)),
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
            m.reconnect_at = Some(until);
            self.owners.remove(&conn);
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

    fn up_control(&mut self, i: usize, conn: ConnId, what: Up) {
        let m = &mut self.members[i];
        let at = (self.now + m.up.reliable(&mut m.rng)).max(m.up_ready);
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
                        let backoff = Duration::from_millis(100 + m.rng.below(900));
                        m.reconnect_at = Some(now + backoff);
                    }
                    Down::Msg(msg) => self.member_message(i, conn, msg),
                    Down::Datagram(d) => self.member_datagram(i, &d),
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
                    self.up_control(i, conn, Up::Msg(ClientMessage::Proof { proof }));
                }
                RelayMessage::Welcome { you, members, .. } => {
                    m.joined = true;
                    m.core.handle_welcome(now, you, members, &mut m.doc);
                    m.next_frame = now;
                    m.welcomes += 1;
                    m.joined_at = now;
                    self.drain_member(i);
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
        m.core.handle_relay(now, msg, &mut m.doc);
        self.drain_member(i);
    }

    fn member_datagram(&mut self, i: usize, d: &[u8]) {
        let now = self.now;
        let in_tail = now >= self.tail_start;
        let mut heard = Vec::new();
        self.members[i]
            .core
            .open_datagram(d, &mut |from, f| heard.push((from, f.media_time)));
        for (from, media) in heard {
            let sender = (from.0 - 1) as usize;
            let both_since = self.members[i]
                .joined_at
                .max(self.members[sender].joined_at);
            if let Some(last) = self.members[i].last_heard.insert(from, now) {
                // A gap while both were in the room all along (not a cut-off's silence).
                if last >= both_since && now < self.start + self.config.chaos {
                    self.longest_gap = self.longest_gap.max(now - last);
                }
            }
            if in_tail {
                self.delivered.entry((sender, i)).or_default().push(media);
            }
        }
    }

    fn drain_relay(&mut self) {
        while let Some(t) = self.relay.poll_transmit() {
            let Some(&i) = self.owners.get(&t.to) else {
                continue;
            };
            match t.what {
                Outgoing::Datagrams(items) => {
                    for item in items {
                        self.down_datagram(i, t.to, item.to_vec());
                    }
                }
                Outgoing::Control(msg) => {
                    self.relay.handle_written(self.now, t.to);
                    let m = &mut self.members[i];
                    let at = (self.now + m.down.reliable(&mut m.rng)).max(m.down_ready);
                    m.down_ready = at;
                    self.schedule(at, Delivery::ToMember(i, t.to, Down::Msg(msg)));
                }
                Outgoing::Close(_) => {
                    self.owners.remove(&t.to);
                    let m = &mut self.members[i];
                    let at = (self.now + m.down.reliable(&mut m.rng)).max(m.down_ready);
                    self.schedule(at, Delivery::ToMember(i, t.to, Down::Closed));
                }
            }
        }
        // Log lines: nothing to simulate.
        while self.relay.poll_event().is_some() {}
    }

    /// A forwarded datagram on its way down to member `i`: noted as let through if the link
    /// carries it in the settled tail.
    fn down_datagram(&mut self, i: usize, conn: ConnId, item: Vec<u8>) {
        let copies = {
            let m = &mut self.members[i];
            m.down.datagram(&mut m.rng)
        };
        let counted = self.now >= self.tail_start && self.now + Duration::from_secs(1) < self.end();
        if !copies.is_empty() && counted {
            if let Ok((sender, rest)) = decode_sender(&item) {
                let from = self
                    .members
                    .iter()
                    .position(|m| m.core.me().is_some() && m.joined && m.core.me() == Some(sender));
                if let (Some(from), Ok(h)) = (from, AudioHeader::decode(rest)) {
                    let media = self.members[from]
                        .sent
                        .iter()
                        .rev()
                        .find(|(s, _)| *s == h.seq_low)
                        .map(|(_, m)| *m);
                    if let Some(media) = media {
                        self.through.entry((from, i)).or_default().insert(media);
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

    fn drain_member(&mut self, i: usize) {
        let Some(conn) = self.members[i].conn else {
            // Offline: what the core sends goes nowhere (its sync starts over on rejoin).
            while self.members[i].core.poll_transmit().is_some() {}
            self.drain_events(i);
            return;
        };
        while let Some(t) = self.members[i].core.poll_transmit() {
            let msg = match t {
                Transmit::Relay(msg) => msg,
                Transmit::Direct(to, msg) => ClientMessage::Send {
                    to: Some(to),
                    body: encode_peer(&msg),
                },
            };
            if self.members[i].joined {
                self.up_control(i, conn, Up::Msg(msg));
            }
        }
        self.drain_events(i);
    }

    fn drain_events(&mut self, i: usize) {
        while let Some(e) = self.members[i].core.poll_event() {
            if let RoomEvent::Notice(_) = e {
                self.notices += 1;
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
        let Some((datagram, prefix, _)) = m.core.seal_audio(StemId(0), media, &payload, 1) else {
            return;
        };
        let to_relay = datagram[prefix..].to_vec();
        if let Ok(h) = AudioHeader::decode(&to_relay) {
            m.sent.push_back((h.seq_low, media));
            if m.sent.len() > 4096 {
                m.sent.pop_front();
            }
        }
        let Some(conn) = m.conn else { return };
        for delay in m.up.datagram(&mut m.rng) {
            let at = self.now + delay;
            self.schedule(at, Delivery::ToRelay(conn, Up::Datagram(to_relay.clone())));
        }
    }

    /// One random change to member `i`'s document; the set-like ones are remembered to check
    /// that they survive.
    fn edit(&mut self, i: usize) {
        let now = self.now;
        let m = &mut self.members[i];
        let k = m.own.len() + m.tracks.len();
        let doc = m.doc.doc();
        let kind = m.rng.below(7);
        let label = format!("m{i}e{k}");
        let done = match kind {
            0 => doc.set_tempo(60.0 + m.rng.below(120) as f64),
            1 => doc.set_time_signature(["4/4", "3/4", "7/8", "6/8"][m.rng.below(4) as usize]),
            2 => {
                doc.set_key(["C major", "A minor", "F# minor", "Bb major"][m.rng.below(4) as usize])
            }
            3 => doc.add_track(&label, &format!("m{i}"), "keys").map(|id| {
                m.tracks.push((id, 0));
            }),
            4 if !m.tracks.is_empty() => {
                let t = m.rng.below(m.tracks.len() as u64) as usize;
                let note = Note {
                    pitch: 40 + m.rng.below(40) as i64,
                    start: m.rng.below(64) as f64,
                    length: 1.0,
                    velocity: 100,
                };
                doc.add_note(&m.tracks[t].0, note)
                    .map(|_| m.tracks[t].1 += 1)
            }
            5 => doc
                .chart_append(&format!(" {label}"))
                .map(|_| m.own.push(label)),
            _ => doc
                .add_marker(m.rng.below(256) as f64, &label)
                .map(|_| m.own.push(label)),
        };
        if done.is_ok() && m.joined {
            m.core.edited(now, &mut m.doc);
            self.drain_member(i);
        }
    }

    fn report(mut self) -> SimReport {
        let mut lost = Vec::new();
        let mut saved = Vec::new();
        let mut heads = Vec::new();
        let owners: Vec<OwnEdits> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (i, m.own.clone(), m.tracks.clone()))
            .collect();
        for m in &mut self.members {
            let doc = m.doc.doc();
            let chart = doc.chart();
            let markers: BTreeSet<String> = doc.markers().into_iter().map(|(_, l)| l).collect();
            for (i, own, tracks) in &owners {
                for label in own {
                    if !markers.contains(label) && !chart.split_whitespace().any(|w| w == label) {
                        lost.push(format!("m{i}: {label}"));
                    }
                }
                for (track, notes) in tracks {
                    let held = doc.notes(track).len();
                    if held != *notes {
                        lost.push(format!("m{i}: track {track} holds {held} of {notes} notes"));
                    }
                }
            }
            heads.push(doc.heads());
            saved.push(doc.canonical_bytes());
        }
        lost.sort();
        lost.dedup();
        let same_heads = heads.windows(2).all(|w| w[0] == w[1]);
        let same_bytes = saved.windows(2).all(|w| w[0] == w[1]);
        let converged = same_heads && same_bytes;
        let mut audio = BTreeMap::new();
        for from in 0..self.members.len() {
            for to in 0..self.members.len() {
                if from == to {
                    continue;
                }
                let through = self.through.remove(&(from, to)).unwrap_or_default();
                let got = self.delivered.remove(&(from, to)).unwrap_or_default();
                let got_set: BTreeSet<u64> = got.iter().copied().collect();
                let missing = through.difference(&got_set).count() + (got.len() - got_set.len());
                audio.insert(
                    (from, to),
                    AudioCheck {
                        through: through.len(),
                        delivered: got_set.len(),
                        missing,
                    },
                );
            }
        }
        SimReport {
            seed: self.seed,
            converged,
            lost_edits: lost,
            audio,
            longest_gap: self.longest_gap,
            rejoins: self
                .members
                .iter()
                .map(|m| m.welcomes.saturating_sub(1))
                .sum(),
            notices: self.notices,
        }
    }
}
