//! A member's side of a room: membership, end-to-end keys, direct paths, the session
//! document's sync and presence, as a state machine with no I/O (see the
//! [module docs](super)).
//!
//! The session document is not its own: the musician edits it too, so the driver holds it
//! and lends it to the calls that sync it. The driver hands in what the relay and direct paths
//! deliver and what the musician does (`handle_*`, edits, presence), sends what [`RoomCore::poll_transmit`] gives on the relay's
//! control stream or a direct path's, acts on [`RoomCore::poll_event`] (dial or close a direct
//! path) and wakes at [`RoomCore::poll_timeout`]. Audio goes through
//! [`RoomCore::seal_audio`] and [`RoomCore::open_datagram`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::CryptoRngCore;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audio::{open_datagram, AudioOut};
pub use super::audio::{SealedAudio, Via};
use super::loss::LossMeter;
use super::queue::{self, QueueMeter};
use super::sync::{DocPart, DocReplica, Received};
use crate::crypto::{
    AdmissionVerifier, CryptoError, DocEnds, KeyAnnounce, KeyGrant, MemberAuthKey, MemberKey,
    MemberKeys, MemberPublic, RoomSecret, RotationPolicy,
};
use crate::invite::RoomId;
use crate::presence::MAX_RATE_HZ;
use crate::presence::{PeerPresence, Presence, PresenceBook, PresenceOutbox, PresenceUpdate};
use crate::session::{AudioFrame, SessionCounters};
use crate::wire::{
    decode_body, encode_peer, ClientMessage, MemberId, MemberInfo, ParticipantId, PeerMessage,
    RelayMessage, StemId, Subscription,
};

/// Key rotation and expiry are checked this often.
pub const KEY_TICK: Duration = Duration::from_millis(250);
/// How often we ask a member again for a key it has not granted us.
const UNKEYED_ASK_EVERY: Duration = Duration::from_secs(1);
/// How often our presence says what each sender's audio loses on its way to us.
const LOSS_REPORT_EVERY: Duration = Duration::from_secs(2);

/// Edits within this long of a document sync go out together at its end: a dragged tempo or
/// typed chart costs one message per peer per window, not one per step.
pub const DOC_HOLD: Duration = Duration::from_millis(40);

/// What a member core starts from.
pub struct RoomSetup {
    /// Our member key: who we are (its participant id) across reconnections; it signs what
    /// we tell the others.
    pub identity: Arc<MemberKey>,
    /// The room: a rotated secret's keys are derived for it.
    pub room: RoomId,
    /// What the others see of us at first.
    pub presence: Presence,
    /// Authenticates our key messages to the room.
    pub auth: MemberAuthKey,
    /// Key rotation policy.
    pub rotation: RotationPolicy,
    /// Never ask for direct paths.
    pub force_relay: bool,
    /// Keys, nonces: the core's only source of randomness.
    pub rng: Box<dyn CryptoRngCore + Send>,
}

/// Something to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// On the relay's control stream.
    Relay(ClientMessage),
    /// On the direct path to a member (it is up: see [`RoomCore::handle_path_up`]).
    Direct(MemberId, PeerMessage),
}

/// What happened, and what the driver is to do. Audio frames do not come this way: they go
/// to the sink given to [`RoomCore::open_datagram`], with no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A member is in the room (from the Welcome, or joined since).
    MemberJoined(MemberInfo),
    /// A member left the room.
    MemberLeft(MemberInfo),
    /// Dial a direct path to this member (of a pair, the lower id dials), punching holes
    /// toward each of its addresses while at it.
    Dial(MemberInfo),
    /// Punch holes toward each of this member's addresses: it is dialling us at the same
    /// moment, and our router lets in only what answers something we sent.
    Punch(MemberInfo),
    /// This member left: close its direct path, if any.
    ClosePath(MemberId),
    /// A peer's message changed the session document.
    DocChanged,
    /// A member's presence changed.
    Presence(ParticipantId),
    /// Something refused or dropped that the musician's log should show.
    Notice(String),
    /// The room's secret was rotated and the relay admits by the new one: reconnect with it,
    /// and keep it (with the relay and fingerprint, it is the new invite).
    SecretRotated(RoomSecret),
    /// A rotation we asked for did not happen.
    RotationRefused,
    /// Frames of a take we asked a sender for ([`RoomCore::ask_take`]).
    TakeFrames(TakeFrames),
}

/// Our state while joined.
struct Joined {
    me: MemberId,
    keys: MemberKeys,
    members: BTreeMap<MemberId, MemberInfo>,
    /// Members reached over a direct path.
    paths: BTreeSet<MemberId>,
    /// Of them, those whose path has gone quiet: the relay carries our audio to them too.
    quiet: BTreeSet<MemberId>,
    /// Per member, how its audio reaches us (see [`paths::Way`]).
    ways: BTreeMap<MemberId, paths::Way>,
    /// Members whose audio came under a key we were never granted (a grant lost to a
    /// reconnection race), and when we last asked each for it again.
    unkeyed: BTreeMap<MemberId, Option<Instant>>,
    next_key_tick: Instant,
    next_presence_tick: Instant,
}

/// One member in one room.
pub struct RoomCore {
    setup_auth: MemberAuthKey,
    identity: Arc<MemberKey>,
    room: RoomId,
    /// A rotation under way: the next secret (learned from a member, or made by us), and the
    /// verifier the relay said it admits by, once it did; each member given the secret.
    rekeying: SecretRotation,
    rotation: RotationPolicy,
    force_relay: bool,
    rng: Box<dyn CryptoRngCore + Send>,
    joined: Option<Joined>,
    presence_out: PresenceOutbox,
    presence_in: PresenceBook,
    /// What each sender's audio loses on its way to us, reported in our presence.
    loss: LossMeter,
    next_loss_report: Option<Instant>,
    /// How far each sender's audio queues on its way to us, reported the same way.
    queue: QueueMeter,
    next_queue_report: Option<Instant>,
    audio: AudioOut,
    /// What we sent lately, and the takes' asks either way.
    takes: Takes,
    counters: Arc<SessionCounters>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<RoomEvent>,
    /// Edits sync no sooner than this; and whether some wait for it.
    doc_hold: Option<Instant>,
    doc_pending: bool,
}

impl RoomCore {
    /// A member not yet in the room.
    pub fn new(setup: RoomSetup, counters: Arc<SessionCounters>) -> Self {
        Self {
            setup_auth: setup.auth,
            identity: setup.identity,
            room: setup.room,
            rekeying: SecretRotation::default(),
            rotation: setup.rotation,
            force_relay: setup.force_relay,
            rng: setup.rng,
            joined: None,
            presence_out: PresenceOutbox::new(setup.presence),
            presence_in: PresenceBook::default(),
            loss: LossMeter::default(),
            next_loss_report: None,
            queue: QueueMeter::default(),
            next_queue_report: None,
            audio: AudioOut::new(),
            takes: Takes::default(),
            counters,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            doc_hold: None,
            doc_pending: false,
        }
    }

    /// The relay admitted us as `me`, with `others` already there: fresh keys, announced to
    /// all; direct paths asked for; a fresh document sync with everyone (they may have missed
    /// our edits while we were away).
    pub fn handle_welcome(
        &mut self,
        now: Instant,
        me: MemberId,
        others: Vec<MemberInfo>,
        doc: &mut DocReplica,
    ) {
        let keys = MemberKeys::new(
            me,
            self.setup_auth.clone(),
            self.identity.clone(),
            self.rotation,
            now,
            &mut *self.rng,
        );
        self.audio.reset();
        self.relay(None, PeerMessage::Announce(keys.announce()));
        let others: Vec<MemberInfo> = others.into_iter().filter(|m| self.is_genuine(m)).collect();
        self.joined = Some(Joined {
            me,
            keys,
            members: others.iter().map(|m| (m.id, m.clone())).collect(),
            paths: BTreeSet::new(),
            quiet: BTreeSet::new(),
            ways: BTreeMap::new(),
            unkeyed: BTreeMap::new(),
            next_key_tick: now + KEY_TICK,
            next_presence_tick: now,
        });
        for m in others {
            self.events.push_back(RoomEvent::MemberJoined(m.clone()));
            self.maybe_dial(&m);
        }
        self.leave_out_our_own();
        doc.restart_all();
        self.sync_all(doc);
    }

    /// Asks the relay not to send us our own plugins' audio (other instances of our key): it
    /// would be dropped on arrival (see [`Self::open_datagram`]). Said after the Welcome when
    /// any is here, and whenever another comes in (the relay forgets those who leave).
    fn leave_out_our_own(&mut self) {
        let Some(j) = self.joined.as_ref() else {
            return;
        };
        let me = self.identity.public();
        let ours: Vec<MemberId> = j
            .members
            .values()
            .filter(|m| m.member == me)
            .map(|m| m.id)
            .collect();
        if !ours.is_empty() {
            let subscription = Subscription::AllBut(ours);
            self.transmits
                .push_back(Transmit::Relay(ClientMessage::Subscribe(subscription)));
        }
    }

    /// The relay connection ended: out of the room until the next Welcome.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        self.joined = None;
    }

    /// A message on the relay's control stream.
    pub fn handle_relay(&mut self, now: Instant, msg: RelayMessage, doc: &mut DocReplica) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        match msg {
            RelayMessage::Joined(info) => {
                if !self.is_genuine(&info) {
                    return;
                }
                let Some(j) = self.joined.as_mut() else {
                    return;
                };
                j.members.insert(info.id, info.clone());
                self.events.push_back(RoomEvent::MemberJoined(info.clone()));
                // A new key for the newcomer to be given: nothing sealed before it came in
                // opens for it. Everyone already here is granted the key too. A key granted
                // and not yet sealing already is one.
                if j.keys.switch_pending() {
                    let announce = PeerMessage::Announce(j.keys.announce());
                    self.relay(Some(info.id), announce);
                } else {
                    self.rekey(now);
                }
                // A newcomer sees who is here at once, not at the next heartbeat.
                self.presence_out.touch();
                if info.member == self.identity.public() {
                    self.leave_out_our_own();
                }
                self.maybe_dial(&info);
                doc.restart(info.participant);
                self.sync_to(&info, doc);
            }
            RelayMessage::Left(id) => {
                if let Some(info) = j.members.remove(&id) {
                    doc.forget_partial(info.participant);
                    self.events.push_back(RoomEvent::MemberLeft(info));
                }
                j.keys.remove_member(id);
                j.unkeyed.remove(&id);
                // A new key the departed member is not given: once we seal with it, it
                // opens nothing more of ours.
                self.rekey(now);
                let Some(j) = self.joined.as_mut() else {
                    return;
                };
                j.quiet.remove(&id);
                j.paths.remove(&id);
                j.ways.remove(&id);
                self.events.push_back(RoomEvent::ClosePath(id));
                // What it had told only some of us must reach the rest.
                self.sync_all(doc);
            }
            RelayMessage::From { from, body } => self.peer_message(now, from, &body, doc),
            RelayMessage::Rotated { verifier, .. } => {
                self.rekeying.confirmed = Some(verifier);
                self.maybe_adopt();
            }
            RelayMessage::Moved { id, local } => self.moved(id, local),
            RelayMessage::RotationRefused => {
                self.rekeying = SecretRotation::default();
                self.events.push_back(RoomEvent::RotationRefused);
            }
            // Joining messages: the driver's business.
            RelayMessage::Challenge { .. } | RelayMessage::Welcome { .. } => {}
            RelayMessage::Refused(_) => {}
        }
    }

    /// A message on a direct path's control stream: only the session document travels there.
    pub fn handle_direct(
        &mut self,
        now: Instant,
        from: MemberId,
        msg: &PeerMessage,
        doc: &mut DocReplica,
    ) {
        if let PeerMessage::Doc { .. } = msg {
            self.counters.doc_direct.fetch_add(1, Relaxed);
            self.doc_message(now, from, msg, true, doc);
        }
    }

    /// Time passed: held edits go out, keys rotate and expire, presence goes out when due.
    pub fn handle_timeout(&mut self, now: Instant, doc: &mut DocReplica) {
        self.expire_asks(now);
        if self.doc_pending && self.doc_hold.is_none_or(|t| now >= t) {
            self.edited(now, doc);
        }
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        if j.keys.switch(now) {
            // Presence is sealed under the new key from now on: those who just got it (a
            // newcomer) hear ours at once.
            self.presence_out.touch();
        }
        if now >= j.next_key_tick {
            j.next_key_tick = now + KEY_TICK;
            // Our announcement again to whoever sends us audio we hold no key for: its
            // answer is a fresh grant. At most once a second each.
            let ask: Vec<MemberId> = j
                .unkeyed
                .iter_mut()
                .filter(|(_, asked)| asked.is_none_or(|t| now >= t + UNKEYED_ASK_EVERY))
                .map(|(m, asked)| {
                    *asked = Some(now);
                    *m
                })
                .collect();
            if let Some(rotation) = j.keys.maybe_rotate(now, &mut *self.rng) {
                // Goes to everyone, the members asked again among them.
                self.announce_rotation(rotation);
            } else if !ask.is_empty() {
                let announce = PeerMessage::Announce(j.keys.announce());
                for m in ask {
                    self.relay(Some(m), announce.clone());
                }
            }
            if let Some(j) = self.joined.as_mut() {
                j.keys.expire(now);
            }
        }
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        if now >= j.next_presence_tick {
            j.next_presence_tick = now + Duration::from_secs(1) / MAX_RATE_HZ;
            let report_due = self.next_loss_report.get_or_insert(now + LOSS_REPORT_EVERY);
            if now >= *report_due {
                *report_due = now + LOSS_REPORT_EVERY;
                self.presence_out.set_loss(self.loss.report());
            }
            let report_due = self.next_queue_report.get_or_insert(now + queue::PERIOD);
            if now >= *report_due {
                *report_due = now + queue::PERIOD;
                self.presence_out.set_queue(self.queue.report(now));
            }
            if let Some(update) = self.presence_out.due(now) {
                if let Ok(plain) = postcard::to_stdvec(&update) {
                    let (epoch, nonce, sealed) = j.keys.seal_presence(&plain, &mut *self.rng);
                    let msg = PeerMessage::Presence {
                        epoch,
                        nonce,
                        sealed,
                    };
                    self.relay(None, msg);
                }
            }
        }
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let j = self.joined.as_ref()?;
        let held = self.doc_hold.filter(|_| self.doc_pending);
        [j.next_key_tick, j.next_presence_tick]
            .into_iter()
            .chain(held)
            .chain(j.keys.switch_at())
            .min()
    }

    /// The next thing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing to act on.
    pub fn poll_event(&mut self) -> Option<RoomEvent> {
        self.events.pop_front()
    }

    /// The document was edited here: everyone gets the change (at once, or with the others
    /// made within [`DOC_HOLD`] of the last sync).
    pub fn edited(&mut self, now: Instant, doc: &mut DocReplica) {
        if self.doc_hold.is_some_and(|t| now < t) {
            self.doc_pending = true;
            return;
        }
        self.doc_pending = false;
        self.doc_hold = Some(now + DOC_HOLD);
        self.sync_all(doc);
    }

    /// Sets what the others see of us (sent within a tenth of a second, and once a second
    /// regardless).
    pub fn set_presence(&mut self, presence: Presence) {
        self.presence_out.set(presence);
    }

    /// The worst loss (‰, before redundancy) any member present reports of our audio lately;
    /// `None` while nobody has said.
    pub fn loss_reported(&mut self, now: Instant) -> Option<u16> {
        self.reported(now, |p| &p.heard_loss)
    }

    /// The worst queueing delay a listener reports our audio meets on its way to it (a
    /// downlink we send more than it carries), if any listener reports one.
    pub fn queue_reported(&mut self, now: Instant) -> Option<Duration> {
        self.reported(now, |p| &p.heard_queue)
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// The worst of what the listeners present report about us in `field`.
    fn reported(
        &mut self,
        now: Instant,
        field: fn(&Presence) -> &[(ParticipantId, u16)],
    ) -> Option<u16> {
        let me = self.identity.participant();
        self.presence_in
            .list(now)
            .iter()
            .filter(|p| !p.gone)
            .flat_map(|p| field(&p.presence).iter())
            .filter(|(about, _)| *about == me)
            .map(|(_, value)| *value)
            .max()
    }

    /// Everyone's presence as last heard, with those silent for a while marked gone.
    pub fn presence(&mut self, now: Instant) -> Vec<PeerPresence> {
        self.presence_in.list(now)
    }

    /// Our member id, while joined.
    pub fn me(&self) -> Option<MemberId> {
        self.joined.as_ref().map(|j| j.me)
    }

    /// The other members, while joined.
    pub fn members(&self) -> impl Iterator<Item = &MemberInfo> + '_ {
        self.joined.iter().flat_map(|j| j.members.values())
    }

    /// Whether we can open `member`'s audio yet.
    pub fn keyed(&self, member: MemberId) -> bool {
        self.joined
            .as_ref()
            .is_some_and(|j| j.keys.can_open_from(member))
    }

    /// Seals one frame of our stream `stem` at `media_time` with `redundancy` earlier frames:
    /// the datagram as direct paths carry it and, whenever anyone else is in the room, as the
    /// relay carries it. The relay's copy is a standby for the direct paths: a path that stops
    /// carrying (a router's rule, a Wi-Fi drop) costs no more than the relay's detour, where
    /// noticing it first would cost tens of milliseconds of silence; the receiver drops the
    /// second copy. `None` while not joined.
    pub fn seal_audio(
        &mut self,
        stem: StemId,
        media_time: u64,
        payload: &[u8],
        redundancy: usize,
    ) -> Option<SealedAudio<'_>> {
        let j = self.joined.as_mut()?;
        let relay = !j.members.is_empty();
        self.takes.archive.keep(stem, media_time, payload);
        Some(self.audio.seal(
            &mut j.keys,
            j.me,
            (stem, media_time),
            payload,
            (redundancy, relay),
        ))
    }

    /// Opens what the relay or a direct path delivered (`via`: which) and hands each frame to
    /// `sink`.
    pub fn open_datagram(
        &mut self,
        now: Instant,
        via: Via,
        bytes: &[u8],
        sink: &mut dyn FnMut(ParticipantId, AudioFrame<'_>),
    ) {
        let Some(j) = self.joined.as_mut() else {
            self.counters.unkeyed.fetch_add(1, Relaxed);
            return;
        };
        let members = &j.members;
        let (paths, quiet, ways) = (&j.paths, &j.quiet, &mut j.ways);
        let participant_of = |m: MemberId| {
            let carries = paths.contains(&m) && !quiet.contains(&m);
            let epoch = paths::Way::first_copy(ways, m, via, carries);
            members.get(&m).map(|i| (i.participant, epoch))
        };
        let doubled = |m: MemberId| paths.contains(&m);
        let (loss, queue) = (&mut self.loss, &mut self.queue);
        let me = self.identity.public();
        // Our own plugins in other processes (our key, other instances): their tracks are in
        // this DAW already, and would come back a round trip late. Their loss is still
        // reported, as anyone's.
        let ours = |from: ParticipantId| {
            members
                .values()
                .any(|i| i.participant == from && i.member == me)
        };
        let sink = &mut |from: ParticipantId, frame: AudioFrame<'_>| {
            loss.heard(from, frame.stem, frame.seq, frame.recovered);
            if !frame.recovered {
                queue.heard(from, frame.stem, via, frame.media_time, now);
            }
            if !ours(from) {
                sink(from, frame);
            }
        };
        let unkeyed = &mut j.unkeyed;
        let mut no_key = |m: MemberId| {
            if members.contains_key(&m) {
                unkeyed.entry(m).or_insert(None);
            }
        };
        open_datagram(
            &mut j.keys,
            participant_of,
            doubled,
            &self.counters,
            via,
            bytes,
            sink,
            &mut no_key,
        );
    }

    /// Test hook: our key state.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_keys(&mut self) -> Option<&mut MemberKeys> {
        self.danger_keys_mut()
    }

    /// Our key state, for the simulator's hostile member and the crate's tests.
    pub(crate) fn danger_keys_mut(&mut self) -> Option<&mut MemberKeys> {
        self.joined.as_mut().map(|j| &mut j.keys)
    }

    /// A new epoch of our sender key, granted to every member we hold a key announcement of.
    fn rekey(&mut self, now: Instant) {
        if let Some(j) = self.joined.as_mut() {
            let rotation = j.keys.rotate(now, &mut *self.rng);
            // Alone in the room: nobody to wait for.
            j.keys.switch(now);
            self.announce_rotation(rotation);
        }
    }

    fn announce_rotation(&mut self, (announce, grants): (KeyAnnounce, Vec<KeyGrant>)) {
        self.relay(None, PeerMessage::Announce(announce));
        for g in grants {
            self.relay(Some(g.to), PeerMessage::Grant(g));
        }
    }

    fn relay(&mut self, to: Option<MemberId>, msg: PeerMessage) {
        self.transmits
            .push_back(Transmit::Relay(ClientMessage::Send {
                to,
                body: encode_peer(&msg),
            }));
    }

    fn peer_message(&mut self, now: Instant, from: MemberId, body: &[u8], doc: &mut DocReplica) {
        let Ok(msg) = decode_body::<PeerMessage>(body) else {
            self.counters.malformed.fetch_add(1, Relaxed);
            return;
        };
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let result = match &msg {
            PeerMessage::Doc { .. } => return self.doc_message(now, from, &msg, false, doc),
            PeerMessage::Take {
                ends,
                nonce,
                sealed,
            } => return self.take_message(now, from, (ends, nonce, sealed)),
            PeerMessage::Presence {
                epoch,
                nonce,
                sealed,
            } => return self.presence_message(now, from, *epoch, nonce, sealed),
            PeerMessage::Announce(a) if a.member == from => {
                let Some(info) = j.members.get(&from).cloned() else {
                    return;
                };
                j.keys.accept_announce(a, &info.member).map(|g| {
                    self.transmits
                        .push_back(Transmit::Relay(ClientMessage::Send {
                            to: Some(from),
                            body: encode_peer(&PeerMessage::Grant(g)),
                        }));
                    // We can seal the document to it now (the first time), or to its new key.
                    self.sync_to(&info, doc);
                    self.give_secret(info.id);
                })
            }
            PeerMessage::Grant(g) if g.from == from => {
                j.unkeyed.remove(&from);
                j.keys.accept_grant(g, now).map(|()| {
                    // Its sender may seal with this key once everyone holds it.
                    let keyed = PeerMessage::Keyed {
                        epoch: g.from_epoch,
                    };
                    self.transmits
                        .push_back(Transmit::Relay(ClientMessage::Send {
                            to: Some(from),
                            body: encode_peer(&keyed),
                        }));
                })
            }
            PeerMessage::Secret {
                ends,
                nonce,
                sealed,
            } => return self.secret_message(from, ends, nonce, sealed),
            PeerMessage::Keyed { epoch } => {
                j.keys.acknowledged(from, *epoch);
                if j.keys.switch(now) {
                    self.presence_out.touch();
                }
                Ok(())
            }
            _ => Err(CryptoError::NotForUs),
        };
        match result {
            Ok(()) => {}
            // A grant sealed to an ephemeral of ours that is gone (we rejoined, or rotated
            // many times since): late, not hostile; the member grants again on our announce.
            Err(CryptoError::UnknownKey) => {
                self.counters.unkeyed.fetch_add(1, Relaxed);
            }
            Err(e) => {
                let notice = format!("key message from {from:?} refused: {e}");
                self.events.push_back(RoomEvent::Notice(notice));
                self.counters.forged.fetch_add(1, Relaxed);
            }
        }
    }

    fn presence_message(
        &mut self,
        now: Instant,
        from: MemberId,
        epoch: crate::crypto::Epoch,
        nonce: &[u8; 12],
        sealed: &[u8],
    ) {
        let Some((participant, signer)) = self.signer_of(from) else {
            return;
        };
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let plain = match j.keys.open_presence(from, &signer, epoch, nonce, sealed) {
            Ok(plain) => plain,
            // Sealed under a key of its we do not hold yet (we just came in): the next
            // update, under the key it grants us, opens.
            Err(CryptoError::UnknownKey) => {
                self.counters.unkeyed.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {
                self.counters.forged.fetch_add(1, Relaxed);
                return;
            }
        };
        let Ok(update) = decode_body::<PresenceUpdate>(&plain) else {
            self.counters.malformed.fetch_add(1, Relaxed);
            return;
        };
        if self.presence_in.receive(participant, update, now) {
            self.events.push_back(RoomEvent::Presence(participant));
        }
    }

    /// Whether the relay's word on a member holds together: the participant id is its key's.
    /// A relay that pairs one member's id with another's key is refused here.
    fn is_genuine(&mut self, info: &MemberInfo) -> bool {
        if info.member.participant(info.instance) == info.participant {
            return true;
        }
        self.counters.forged.fetch_add(1, Relaxed);
        let notice = format!("member {:?} refused: its id is not its key's", info.id);
        self.events.push_back(RoomEvent::Notice(notice));
        false
    }

    /// Who `member` is and the key that signs for it.
    fn signer_of(&self, member: MemberId) -> Option<(ParticipantId, MemberPublic)> {
        self.joined
            .as_ref()?
            .members
            .get(&member)
            .map(|m| (m.participant, m.member))
    }
}

#[path = "member_paths.rs"]
mod paths;

#[path = "member_doc.rs"]
mod doc_sync;

#[path = "member_rotation.rs"]
mod rotation;

#[path = "member_take.rs"]
mod take;
use rotation::SecretRotation;
use take::Takes;
pub use take::{SentArchive, TakeFrames, ARCHIVE_BYTES, MAX_RANGES};

#[cfg(test)]
#[path = "member_tests.rs"]
mod tests;
