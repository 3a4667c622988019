//! The relay's side of one room: admission, membership, routing and batching, as a state
//! machine with no I/O (see the [module docs](super)).
//!
//! A connection is named by a [`ConnId`] its driver chooses. The driver hands in what arrives
//! (`handle_*`), then drains [`RelayCore::poll_transmit`], writes each control message in order
//! and reports it written ([`RelayCore::handle_written`]), and wakes at
//! [`RelayCore::poll_timeout`]. A member is in the room — told to the others, sent their audio
//! — only once its Welcome is written (or it has spoken since), and leaves it on any close.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::CryptoRngCore;

use super::batch::Batcher;
use super::router::{forwards, sends_audio, Routing};
use crate::crypto::{AdmissionVerifier, MemberPublic, Relayed};
use crate::wire::{
    encode_sender, AudioHeader, ClientMessage, MemberId, MemberInfo, Refusal, RelayMessage, Role,
    AUDIO_HEADER_LEN, MAX_LOCAL_ADDRESSES, TAG_LEN,
};

/// A joining member must answer the challenge within this time.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection, as its driver names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A room's bounds.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Most members at once (at most [`MemberId::MAX`] + 1).
    pub max_members: usize,
    /// Control messages a member may have queued and not yet written before the relay gives
    /// up on it: a member that stops reading must not make the relay hold its backlog.
    pub max_unwritten: u64,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_members: 256,
            // Catch-up of a 4 MiB document in 16 KiB parts, with presence on top.
            max_unwritten: 512,
        }
    }
}

/// What a connection asks as it joins.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Display name (cut to 64 characters).
    pub name: String,
    /// Its member key: who it is across reconnections (the participant id is derived from
    /// it and the instance, and it must sign the challenge).
    pub member: MemberPublic,
    /// Which of the key's participants joins.
    pub instance: u32,
    /// What it does in the room.
    pub role: Role,
    /// Its address as the relay sees it.
    pub observed: SocketAddr,
    /// The addresses it says its socket has on its own networks.
    pub local: Vec<SocketAddr>,
    /// Keying material of its TLS session (see [`crate::relay::channel_binding`]).
    pub binding: [u8; 32],
}

/// Why the relay closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Not admitted (the refusal was sent first).
    Refused(Refusal),
    /// It stopped reading its control stream.
    TooSlow,
    /// The same musician joined again on another connection.
    Replaced,
    /// It sent control messages faster than a member that reads could take them.
    Flooding,
}

impl CloseReason {
    /// The QUIC application close code.
    pub fn code(self) -> u32 {
        match self {
            Self::Refused(_) => 1,
            Self::TooSlow => 2,
            Self::Replaced => 3,
            Self::Flooding => 5,
        }
    }

    /// The close reason a musician sees.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Refused(r) => r.explain(),
            Self::TooSlow => "the relay dropped this connection: it fell too far behind",
            Self::Replaced => "this musician joined again from another connection",
            Self::Flooding => {
                "the relay dropped this connection: it sent more than the others could take"
            }
        }
    }
}

/// Something to send on a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// Forwarded datagrams, oldest first (see [`super::batch::bundles`]).
    Datagrams(Vec<Bytes>),
    /// A control message; report it with [`RelayCore::handle_written`] once written.
    Control(RelayMessage),
    /// Finish the control stream, then close the connection.
    Close(CloseReason),
}

/// Where to send what.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// The connection.
    pub to: ConnId,
    /// What.
    pub what: Outgoing,
}

/// What happened, for the relay's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// A member is in the room.
    Joined(MemberInfo),
    /// A member left (closed, too slow or replaced).
    Left(MemberInfo),
    /// A join was refused.
    Refused(Refusal),
    /// A member proved it holds the room secret and asks that the room admit by `verifier`
    /// from now on: store it, then report with [`RelayCore::handle_rotated`].
    Rotate {
        /// Who asks.
        by: ConnId,
        /// The next secret's verifier.
        verifier: AdmissionVerifier,
    },
}

/// Relay counters, exported as metrics. Shared by the cores and read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Members admitted.
    pub joins: AtomicU64,
    /// Members in rooms now.
    pub members: AtomicU64,
    /// Joins refused for a wrong secret.
    pub refused_wrong_secret: AtomicU64,
    /// Joins refused for an unknown room.
    pub refused_unknown_room: AtomicU64,
    /// Joins refused for a member key that did not sign the challenge: someone claiming
    /// another member's identity.
    pub refused_impostor: AtomicU64,
    /// Joins refused otherwise (full, protocol, timeout).
    pub refused_other: AtomicU64,
    /// Secret rotations refused: the proof was not the room secret's.
    pub refused_rotation: AtomicU64,
    /// Connections refused before their handshake: too many were already waiting to join
    /// (from all addresses, or from theirs).
    pub refused_busy: AtomicU64,
    /// Connections refused before their handshake: their address started more handshakes
    /// than its rate allows.
    pub refused_rate: AtomicU64,
    /// Connections asked to prove their address (QUIC retry) before a handshake.
    pub retried: AtomicU64,
    /// Members dropped for not reading their control stream.
    pub evicted_slow: AtomicU64,
    /// Members dropped for filling the control backlog of a member that reads.
    pub evicted_flooding: AtomicU64,
    /// Datagrams received from members.
    pub datagrams_in: AtomicU64,
    /// Datagram copies sent to members.
    pub datagrams_forwarded: AtomicU64,
    /// Datagrams dropped: not an audio datagram.
    pub dropped_malformed: AtomicU64,
    /// Datagrams dropped: the sender was not (yet) admitted, or its role sends nothing.
    pub dropped_not_member: AtomicU64,
    /// Datagrams dropped: the room was busier than the relay could forward.
    pub dropped_overload: AtomicU64,
    /// Datagram copies quinn refused to queue.
    pub dropped_send: AtomicU64,
    /// Batches handed to quinn (each one or more datagrams for one recipient).
    pub batches: AtomicU64,
    /// Control messages forwarded between members.
    pub control_forwarded: AtomicU64,
}

#[derive(Debug)]
enum Stage {
    /// Challenged; waiting for the proof.
    Challenged {
        nonce: [u8; 32],
        binding: [u8; 32],
        deadline: Instant,
        member: MemberPublic,
    },
    /// Welcome queued as control message number `welcome`; not yet told to the others.
    Welcomed { welcome: u64 },
    /// In the room.
    Admitted,
}

#[derive(Debug)]
struct Seat {
    stage: Stage,
    info: MemberInfo,
    /// The TLS session's keying material: a member's requests are bound to it.
    binding: [u8; 32],
    routing: Routing,
    batch: Batcher,
    /// Control messages queued for it, and how many of them were written.
    queued: u64,
    written: u64,
    /// Who sent each unwritten message (`None`: the relay), oldest first: at most
    /// [`RoomLimits::max_unwritten`].
    senders: VecDeque<Option<ConnId>>,
    /// `queued` when one was last written: a member that wrote none of its last
    /// `max_unwritten` messages has stopped reading.
    queued_at_write: u64,
    /// Over its backlog: removed once the current input is handled.
    overflowed: bool,
    /// Filled the backlog of a member that reads: removed once the current input is handled.
    flooding: bool,
}

impl Seat {
    fn has_id(&self) -> bool {
        !matches!(self.stage, Stage::Challenged { .. })
    }
}

/// One room at the relay.
pub struct RelayCore {
    verifier: AdmissionVerifier,
    limits: RoomLimits,
    rng: Box<dyn CryptoRngCore + Send>,
    metrics: Arc<RelayMetrics>,
    seats: BTreeMap<ConnId, Seat>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<RelayEvent>,
}

impl RelayCore {
    /// A room admitting those who prove they hold the secret behind `verifier`.
    pub fn new(
        verifier: AdmissionVerifier,
        limits: RoomLimits,
        rng: Box<dyn CryptoRngCore + Send>,
        metrics: Arc<RelayMetrics>,
    ) -> Self {
        Self {
            verifier,
            limits,
            rng,
            metrics,
            seats: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The room's secret was rotated: proofs checked from now on (also those answering a
    /// challenge already sent) must come from the new secret. Members already in stay.
    pub fn set_verifier(&mut self, verifier: AdmissionVerifier) {
        self.verifier = verifier;
    }

    /// The store holds `verifier` for the room now (`stored`), as member `by` asked: joins
    /// prove the new secret from now on, and every member is told (the members learned the
    /// secret from `by`, end to end). Not stored: `by` is told, nothing changes.
    pub fn handle_rotated(
        &mut self,
        _now: Instant,
        by: ConnId,
        verifier: AdmissionVerifier,
        stored: bool,
    ) {
        if !stored {
            self.control(by, RelayMessage::RotationRefused);
            return;
        }
        let Some(from) = self
            .seats
            .get(&by)
            .filter(|s| s.has_id())
            .map(|s| s.info.id)
        else {
            // It left meanwhile; the store holds the new secret all the same.
            self.verifier = verifier;
            return;
        };
        let msg = RelayMessage::Rotated {
            by: from,
            verifier: verifier.to_bytes(),
        };
        self.verifier = verifier;
        self.broadcast(by, &msg);
        self.control(by, msg);
    }

    /// A connection asks to join: it is challenged. A second join on one connection is
    /// ignored.
    pub fn handle_join(&mut self, now: Instant, conn: ConnId, join: JoinRequest) {
        if self.seats.contains_key(&conn) {
            return;
        }
        let mut nonce = [0u8; 32];
        self.rng.fill_bytes(&mut nonce);
        let seat = Seat {
            stage: Stage::Challenged {
                nonce,
                binding: join.binding,
                deadline: now + JOIN_TIMEOUT,
                member: join.member,
            },
            info: MemberInfo {
                id: MemberId(0),
                participant: join.member.participant(join.instance),
                member: join.member,
                instance: join.instance,
                name: join.name.chars().take(64).collect(),
                observed: join.observed,
                local: usable_local(&join.local),
                role: join.role,
            },
            binding: join.binding,
            routing: Routing::joining(join.role),
            batch: Batcher::default(),
            queued: 0,
            written: 0,
            senders: VecDeque::new(),
            queued_at_write: 0,
            overflowed: false,
            flooding: false,
        };
        self.seats.insert(conn, seat);
        self.control(conn, RelayMessage::Challenge { nonce });
        self.reap();
    }

    /// A control message from a connection.
    pub fn handle_message(&mut self, now: Instant, conn: ConnId, msg: ClientMessage) {
        let Some(seat) = self.seats.get(&conn) else {
            return;
        };
        match (&seat.stage, msg) {
            (Stage::Challenged { .. }, ClientMessage::Proof { proof, signature }) => {
                self.prove(conn, &proof, &signature)
            }
            (Stage::Challenged { .. }, _) => self.refuse(conn, Refusal::Protocol),
            (_, msg) => {
                self.promote(conn);
                self.member_message(now, conn, msg);
            }
        }
        self.reap();
    }

    /// A control message the driver queued for `conn` was written.
    pub fn handle_written(&mut self, _now: Instant, conn: ConnId) {
        let Some(seat) = self.seats.get_mut(&conn) else {
            return;
        };
        seat.written += 1;
        seat.senders.pop_front();
        seat.queued_at_write = seat.queued;
        if let Stage::Welcomed { welcome } = seat.stage {
            if seat.written >= welcome {
                self.promote(conn);
            }
        }
        self.reap();
    }

    /// The connection closed or failed, whatever its stage: it leaves the room.
    pub fn handle_closed(&mut self, _now: Instant, conn: ConnId) {
        self.remove(conn);
        self.reap();
    }

    /// An audio datagram from a connection: forwarded, prefixed with the sender's id, to
    /// everyone the router says hears it.
    pub fn handle_datagram(&mut self, now: Instant, conn: ConnId, datagram: &[u8]) {
        let m = &self.metrics;
        m.datagrams_in.fetch_add(1, Relaxed);
        let Some(seat) = self.seats.get(&conn).filter(|s| s.has_id()) else {
            m.dropped_not_member.fetch_add(1, Relaxed);
            return;
        };
        if !sends_audio(seat.routing.role) {
            m.dropped_not_member.fetch_add(1, Relaxed);
            return;
        }
        let parts = AudioHeader::decode(datagram)
            .ok()
            .zip(Relayed::parse(datagram).ok());
        let (header, relayed) = match parts {
            Some(p) if datagram.len() >= AUDIO_HEADER_LEN + TAG_LEN => p,
            _ => {
                m.dropped_malformed.fetch_add(1, Relaxed);
                return;
            }
        };
        self.promote(conn);
        let from = &self.seats[&conn];
        let sender = (from.info.id, &from.routing);
        let targets: Vec<ConnId> = self
            .seats
            .iter()
            .filter(|(_, s)| {
                matches!(s.stage, Stage::Admitted)
                    && forwards(sender, header.stem, (s.info.id, &s.routing))
            })
            .map(|(&c, _)| c)
            .collect();
        let from_id = from.info.id;
        for to in targets {
            let seat = self.seats.get_mut(&to).expect("target just seen");
            let mut out = Vec::with_capacity(2 + datagram.len());
            encode_sender(from_id, &mut out);
            relayed.copy_for(seat.info.id, &mut out);
            if seat.batch.push(now, Bytes::from(out)) {
                let held = seat.batch.take();
                self.push(to, Outgoing::Datagrams(held));
            }
        }
        self.reap();
    }

    /// Time passed: held datagrams that waited a full window go, joins that took too long are
    /// refused.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<ConnId> = self
            .seats
            .iter()
            .filter(
                |(_, s)| matches!(s.stage, Stage::Challenged { deadline, .. } if now >= deadline),
            )
            .map(|(&c, _)| c)
            .collect();
        for conn in late {
            self.refuse(conn, Refusal::Protocol);
        }
        for (&to, seat) in self.seats.iter_mut() {
            if seat.batch.due(now) {
                self.transmits.push_back(Transmit {
                    to,
                    what: Outgoing::Datagrams(seat.batch.take()),
                });
            }
        }
        self.reap();
    }

    /// The next thing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.seats
            .values()
            .flat_map(|s| {
                let join = match s.stage {
                    Stage::Challenged { deadline, .. } => Some(deadline),
                    _ => None,
                };
                [join, s.batch.deadline()]
            })
            .flatten()
            .min()
    }

    /// The members in the room.
    pub fn members(&self) -> impl Iterator<Item = &MemberInfo> + '_ {
        self.seats
            .values()
            .filter(|s| matches!(s.stage, Stage::Admitted))
            .map(|s| &s.info)
    }

    /// Whether no connection is joining or in the room.
    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    fn prove(&mut self, conn: ConnId, proof: &[u8], signature: &[u8]) {
        let Some(Seat {
            stage:
                Stage::Challenged {
                    nonce,
                    binding,
                    member,
                    ..
                },
            ..
        }) = self.seats.get(&conn)
        else {
            return;
        };
        if !self.verifier.check(nonce, binding, proof) {
            return self.refuse(conn, Refusal::WrongSecret);
        }
        // Only the holder of the member key may be its participant: no one takes another's
        // place (and with it their audio track and presence) by naming their id.
        if !member.verify_admission(nonce, binding, signature) {
            return self.refuse(conn, Refusal::Impostor);
        }
        // The same participant again (a reconnect the relay has not noticed the end of yet):
        // the old connection goes, so the room never shows one twice. Another instance of the
        // same key is another participant and stays.
        let participant = self.seats[&conn].info.participant;
        let stale: Vec<ConnId> = self
            .seats
            .iter()
            .filter(|(&c, s)| c != conn && s.has_id() && s.info.participant == participant)
            .map(|(&c, _)| c)
            .collect();
        for old in stale {
            self.remove(old);
            self.push(old, Outgoing::Close(CloseReason::Replaced));
        }
        let taken: std::collections::BTreeSet<MemberId> = self
            .seats
            .values()
            .filter(|s| s.has_id())
            .map(|s| s.info.id)
            .collect();
        let most = self
            .limits
            .max_members
            .min(usize::from(MemberId::MAX.0) + 1);
        let Some(id) = (0..=MemberId::MAX.0)
            .take(most)
            .map(MemberId)
            .find(|id| !taken.contains(id))
        else {
            return self.refuse(conn, Refusal::RoomFull);
        };
        let others: Vec<MemberInfo> = self
            .seats
            .values()
            .filter(|s| s.has_id())
            .map(|s| s.info.clone())
            .collect();
        let seat = self.seats.get_mut(&conn).expect("seat checked above");
        seat.info.id = id;
        seat.stage = Stage::Welcomed {
            welcome: seat.queued + 1,
        };
        let welcome = RelayMessage::Welcome {
            you: id,
            observed: seat.info.observed,
            members: others,
        };
        self.metrics.joins.fetch_add(1, Relaxed);
        self.control(conn, welcome);
    }

    /// Into the room, if not yet: the others are told.
    fn promote(&mut self, conn: ConnId) {
        let Some(seat) = self.seats.get_mut(&conn) else {
            return;
        };
        if !matches!(seat.stage, Stage::Welcomed { .. }) {
            return;
        }
        seat.stage = Stage::Admitted;
        let info = seat.info.clone();
        self.metrics.members.fetch_add(1, Relaxed);
        self.events.push_back(RelayEvent::Joined(info.clone()));
        self.broadcast(conn, &RelayMessage::Joined(info));
    }

    fn member_message(&mut self, _now: Instant, conn: ConnId, msg: ClientMessage) {
        let seat = self.seats.get_mut(&conn).expect("caller checked");
        match msg {
            ClientMessage::Route { direct } => seat.routing.set_direct(&direct),
            ClientMessage::Subscribe(s) => seat.routing.set_subscription(s),
            ClientMessage::Send { to, body } => {
                let from = seat.info.id;
                let msg = RelayMessage::From { from, body };
                match to {
                    Some(to) => {
                        // Never back to its sender: a member that sends to itself and never
                        // reads would only fill its own queue at the relay.
                        let target = self
                            .seats
                            .iter()
                            .find(|(&c, s)| c != conn && s.has_id() && s.info.id == to)
                            .map(|(&c, _)| c);
                        if let Some(target) = target {
                            self.control_from(target, msg, Some(conn));
                        }
                    }
                    None => {
                        let targets = self.others(conn);
                        for to in targets {
                            self.control_from(to, msg.clone(), Some(conn));
                        }
                    }
                }
                self.metrics.control_forwarded.fetch_add(1, Relaxed);
            }
            ClientMessage::Rotate { verifier, proof } => {
                let next = AdmissionVerifier::from_bytes(verifier);
                if self.verifier.check_rotation(&next, &seat.binding, &proof) {
                    self.events.push_back(RelayEvent::Rotate {
                        by: conn,
                        verifier: next,
                    });
                } else {
                    self.metrics.refused_rotation.fetch_add(1, Relaxed);
                    self.control(conn, RelayMessage::RotationRefused);
                }
            }
            ClientMessage::Addresses { local } => {
                let local = usable_local(&local);
                if local != seat.info.local {
                    seat.info.local = local.clone();
                    let id = seat.info.id;
                    self.broadcast(conn, &RelayMessage::Moved { id, local });
                }
            }
            // Joining messages after joining.
            ClientMessage::Join { .. } | ClientMessage::Proof { .. } => {}
        }
    }

    /// To every other connection that holds an id: those welcomed but not yet admitted too, so
    /// their view stays whole from their Welcome on.
    fn broadcast(&mut self, except: ConnId, msg: &RelayMessage) {
        for to in self.others(except) {
            self.control(to, msg.clone());
        }
    }

    /// Every connection that holds an id but `except`.
    fn others(&self, except: ConnId) -> Vec<ConnId> {
        self.seats
            .iter()
            .filter(|(&c, s)| c != except && s.has_id())
            .map(|(&c, _)| c)
            .collect()
    }

    fn refuse(&mut self, conn: ConnId, refusal: Refusal) {
        let m = &self.metrics;
        match refusal {
            Refusal::WrongSecret => &m.refused_wrong_secret,
            Refusal::UnknownRoom => &m.refused_unknown_room,
            Refusal::Impostor => &m.refused_impostor,
            _ => &m.refused_other,
        }
        .fetch_add(1, Relaxed);
        self.events.push_back(RelayEvent::Refused(refusal));
        self.push(conn, Outgoing::Control(RelayMessage::Refused(refusal)));
        self.push(conn, Outgoing::Close(CloseReason::Refused(refusal)));
        self.remove(conn);
    }

    /// Queues a control message of the relay's own, counting it against the member's backlog.
    fn control(&mut self, conn: ConnId, msg: RelayMessage) {
        self.control_from(conn, msg, None);
    }

    /// Queues a control message `from` a member (`None`: the relay's own). A full backlog is
    /// the recipient's fault if it stopped reading (it wrote none of its last `max_unwritten`
    /// messages), and then it goes; if it reads, the member that sent at least half of its
    /// backlog is flooding it, and that one goes instead. Until the flooder is gone (at the
    /// end of this input) its messages are not queued and the others' still are: a backlog
    /// may pass its bound by one input's worth.
    fn control_from(&mut self, conn: ConnId, msg: RelayMessage, from: Option<ConnId>) {
        let max = self.limits.max_unwritten;
        let Some(seat) = self.seats.get_mut(&conn) else {
            return;
        };
        if seat.overflowed {
            return;
        }
        if seat.queued - seat.written >= max {
            let reading = seat.queued - seat.queued_at_write < max;
            let flooder = reading.then(|| top_sender(&seat.senders)).flatten();
            match flooder.filter(|&(_, n)| 2 * n as u64 >= max) {
                Some((flooder, _)) => {
                    if let Some(f) = self.seats.get_mut(&flooder) {
                        f.flooding = true;
                    }
                }
                None => {
                    seat.overflowed = true;
                    return;
                }
            }
        }
        if from.is_some_and(|f| self.seats.get(&f).is_some_and(|s| s.flooding)) {
            return;
        }
        let seat = self.seats.get_mut(&conn).expect("looked up above");
        seat.queued += 1;
        seat.senders.push_back(from);
        self.push(conn, Outgoing::Control(msg));
    }

    fn push(&mut self, to: ConnId, what: Outgoing) {
        self.transmits.push_back(Transmit { to, what });
    }

    /// Out of the room; the others are told if they knew of it.
    fn remove(&mut self, conn: ConnId) {
        let Some(seat) = self.seats.remove(&conn) else {
            return;
        };
        if matches!(seat.stage, Stage::Admitted) {
            self.metrics.members.fetch_sub(1, Relaxed);
            self.events.push_back(RelayEvent::Left(seat.info.clone()));
            self.broadcast(conn, &RelayMessage::Left(seat.info.id));
        }
        // Its id goes to the next to join: nobody's routing may still name it.
        for other in self.seats.values_mut() {
            other.routing.forget(seat.info.id);
        }
    }

    /// Drops the members that overflowed their backlog or flooded another's (telling the
    /// rest may overflow more).
    fn reap(&mut self) {
        for _ in 0..=self.seats.len() {
            let Some((conn, flooding)) = self
                .seats
                .iter()
                .find(|(_, s)| s.overflowed || s.flooding)
                .map(|(&c, s)| (c, s.flooding))
            else {
                return;
            };
            let (counter, reason) = if flooding {
                (&self.metrics.evicted_flooding, CloseReason::Flooding)
            } else {
                (&self.metrics.evicted_slow, CloseReason::TooSlow)
            };
            counter.fetch_add(1, Relaxed);
            self.remove(conn);
            self.push(conn, Outgoing::Close(reason));
        }
    }
}

/// The member that sent most of a backlog, and how many of its messages.
fn top_sender(senders: &VecDeque<Option<ConnId>>) -> Option<(ConnId, usize)> {
    let mut counts: BTreeMap<ConnId, usize> = BTreeMap::new();
    for s in senders.iter().flatten() {
        *counts.entry(*s).or_default() += 1;
    }
    counts.into_iter().max_by_key(|&(_, n)| n)
}

/// The local addresses worth passing on: unicast, with a port, at most
/// [`MAX_LOCAL_ADDRESSES`] of them.
fn usable_local(local: &[SocketAddr]) -> Vec<SocketAddr> {
    local
        .iter()
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast())
        .take(MAX_LOCAL_ADDRESSES)
        .copied()
        .collect()
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
