//! A member's session: the driver of a [`RoomCore`]. It joins a room through the relay, feeds
//! the core what the relay and direct paths deliver, sends what the core gives, dials and
//! accepts the direct paths it asks for, and reconnects with backoff when the relay goes away.
//! The room protocol itself (keys, membership, document sync, presence, paths) lives in the
//! core.
//!
//! Audio enters through [`SessionHandle::send_audio`] (any thread, never blocks on the
//! network) and leaves through the `on_audio` callback (network thread) as [`AudioFrame`]s.

mod direct;
mod driver;
mod portmap;
mod protection;
mod route;
mod socket;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::Connection;
use thiserror::Error;
use tokio::sync::{mpsc, Notify};

use crate::congestion::CongestionSignal;
pub use crate::core::member::TakeFrames;
use crate::core::member::{RoomCore, RoomEvent, RoomSetup, Transmit, Via};
use crate::core::sync::DocReplica;
use crate::crypto::{MemberKey, MemberPublic, RotationPolicy};
use crate::doc::{DocError, SessionDoc};
use crate::invite::Invite;
use crate::presence::{PeerPresence, Presence};
use crate::relay::channel_binding;
use crate::tls::{
    endpoint_config, is_pin_mismatch, relay_client_config, Identity,
    MEMBER_DATAGRAM_SEND_BUFFER_BYTES, SEND_QUEUE_FRAMES, SERVER_NAME,
};
use crate::transport::{read_frame, write_frame};
use crate::wire::{
    encode_peer, ClientMessage, MemberId, MemberInfo, ParticipantId, PeerMessage, Refusal,
    RelayMessage, Role, StemId,
};

pub use direct::{candidates, Candidate, DIRECT_PATH_TIMEOUT};
pub use portmap::PortMapStatus;
pub use protection::{LossProtection, ProtectionStatus};
pub use route::{RelayWhy, Route};
pub use socket::{canonical, reflect, PunchSocket, PROBE, PUNCH};

/// Reconnect backoff bounds: a band waits at most a second between attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A relay handshake unanswered this long is abandoned and retried on a fresh socket. Long
/// enough for a lossy line's retransmissions to get through (at 30 % loss each way a QUIC
/// handshake rarely completes in its first flight), short enough that a dead relay is reported
/// within seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How to join a room.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The room.
    pub invite: Invite,
    /// Name shown to the others.
    pub name: String,
    /// Never try direct paths.
    pub force_relay: bool,
    /// Ask the home router to forward a port to us (PCP, NAT-PMP or UPnP), for direct paths
    /// its own mappings would defeat. Never asked when the relay is on this machine.
    pub port_mapping: bool,
    /// Key rotation policy.
    pub rotation: RotationPolicy,
    /// The session document to start from (saved in the DAW project or the room's store);
    /// `None` starts from the room's genesis document.
    pub initial_doc: Option<Vec<u8>>,
    /// A performer sends and hears; a listener only hears (its audio is never sent, and the
    /// others see it as listening).
    pub role: Role,
    /// Who we are: the room's member key kept in the user's data folder, at an instance of its
    /// own (see [`crate::identity_store::IdentityStore::key_for`]). `None`: a key of this
    /// session's own (a new person to the room).
    pub identity: Option<Arc<MemberKey>>,
}

impl SessionConfig {
    /// A performer in `invite`'s room as `name`, a new person to it: direct paths where they
    /// come up, no port mapping, the default key rotation, the room's genesis document.
    pub fn new(invite: Invite, name: &str) -> Self {
        Self {
            invite,
            name: name.to_owned(),
            force_relay: false,
            port_mapping: false,
            rotation: RotationPolicy::default(),
            initial_doc: None,
            role: Role::Performer,
            identity: None,
        }
    }
}

/// A path to another member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight to the member.
    Direct,
    /// Through the relay.
    Relay,
}

/// What we know about another member.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// The member.
    pub info: MemberInfo,
    /// How its audio reaches us / ours reaches it.
    pub path: Path,
    /// The way its audio takes, and why.
    pub route: Route,
    /// Round-trip time of the path, if measured.
    pub rtt: Option<Duration>,
    /// Whether we hold its audio key yet.
    pub keyed: bool,
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Connecting to the relay (first time or again).
    Connecting,
    /// In the room.
    Joined {
        /// Our member id.
        you: MemberId,
    },
    /// The relay refused us; the session stopped.
    Refused(Refusal),
    /// The relay's certificate is not the one the invite pins; the session stopped (retrying
    /// cannot help: a different relay answers, or this one's identity was made anew).
    WrongRelay,
    /// Waiting to retry after an error.
    Retrying(String),
}

impl SessionState {
    /// What a musician is told when the relay's certificate is not the invite's.
    pub const WRONG_RELAY: &'static str =
        "the relay's certificate does not match the invite — ask for a fresh invite";

    /// Why the session stopped for good, in a musician's words; `None` while it goes on.
    pub fn stopped_because(&self) -> Option<&'static str> {
        match self {
            Self::Refused(r) => Some(r.explain()),
            Self::WrongRelay => Some(Self::WRONG_RELAY),
            Self::Connecting | Self::Joined { .. } | Self::Retrying(_) => None,
        }
    }
}

/// Counters of the session's datagrams.
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Audio datagrams sent (per destination).
    pub sent: AtomicU64,
    /// Audio datagrams opened and delivered.
    pub delivered: AtomicU64,
    /// Dropped: tag did not verify.
    pub forged: AtomicU64,
    /// Dropped: seen before.
    pub replayed: AtomicU64,
    /// Dropped: the second copy of a frame from a member we also have a direct path with (the
    /// relay carries every frame as a standby).
    pub duplicates: AtomicU64,
    /// Dropped: no key (yet) for that sender and epoch.
    pub unkeyed: AtomicU64,
    /// Dropped: not an audio datagram.
    pub malformed: AtomicU64,
    /// Times the session (re)joined the room.
    pub joins: AtomicU64,
    /// Lost frames recovered from the redundancy of later datagrams.
    pub recovered: AtomicU64,
    /// Session-document messages received over direct paths (the rest came by the relay).
    pub doc_direct: AtomicU64,
    /// Audio datagrams dropped at the sender: a path's queue already held a few frames, so
    /// this one would have arrived too late to play.
    pub stale: AtomicU64,
    /// Datagrams dropped on arrival: the session's driver was too far behind to open them.
    pub overload: AtomicU64,
    /// Direct paths closed because their far end did not prove it is the member it named.
    pub unproven_paths: AtomicU64,
}

/// What quinn counts against its send buffer for each queued datagram besides its bytes (the
/// `Bytes` handle), and once more for the next one.
const QUEUED_DATAGRAM_OVERHEAD: usize = std::mem::size_of::<Bytes>();

/// Bytes waiting in `conn`'s datagram send queue.
fn queued_bytes(conn: &Connection) -> usize {
    MEMBER_DATAGRAM_SEND_BUFFER_BYTES
        .saturating_sub(conn.datagram_send_buffer_space() + QUEUED_DATAGRAM_OVERHEAD)
}

/// Queues an audio datagram on `conn` unless [`SEND_QUEUE_FRAMES`] datagrams of its size were
/// already waiting there when this burst began (`queued`, from [`queued_bytes`]): only a link
/// that does not take what we send drops frames here. Frames that piled up in our ring while
/// the driver was held up go out together, as the listener's buffer, held up alike on one
/// machine, still plays them (quinn's byte bound drops the oldest of a longer burst).
fn send_fresh(
    conn: &Connection,
    queued: usize,
    datagram: Bytes,
    counters: &SessionCounters,
) -> bool {
    if queued / (datagram.len() + QUEUED_DATAGRAM_OVERHEAD) >= SEND_QUEUE_FRAMES {
        counters.stale.fetch_add(1, Relaxed);
        return false;
    }
    conn.send_datagram(datagram).is_ok()
}

/// A snapshot for the GUI and the CLI.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    /// Connection state.
    pub state: SessionState,
    /// Other members.
    pub members: Vec<MemberStatus>,
    /// Whether our router forwards a port to us.
    pub port_mapping: PortMapStatus,
}

/// Why a session could not start.
#[derive(Debug, Error)]
pub enum SessionError {
    /// Local socket or TLS setup.
    #[error("cannot start networking: {0}")]
    Setup(String),
}

/// One opened audio frame, as handed to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFrame<'a> {
    /// The sender's stream.
    pub stem: StemId,
    /// Its sequence number on that stream (consecutive per stream while the session lasts).
    pub seq: u32,
    /// Position of its first sample in the sender's stream, 48 kHz samples.
    pub media_time: u64,
    /// The encoded frame.
    pub payload: &'a [u8],
    /// It came only as a later datagram's redundancy (the network lost its own).
    pub recovered: bool,
    /// Counts the times a shorter way from the sender opened: a direct path came up, or
    /// carries again after going quiet (wraps). The playout's cue that its statistics
    /// describe the way it came before.
    pub path_epoch: u8,
}

type AudioCallback = Box<dyn FnMut(ParticipantId, AudioFrame<'_>) + Send>;

/// Largest encoded frame the send ring carries (a datagram holds no more).
const MAX_FRAME_BYTES: usize = 1400;
/// Frames the send ring holds: the driver takes them at once, so more waiting means it is
/// behind, and older frames would play late anyway. Room for a few frames of each of the
/// stems one person may send from one process.
const SEND_RING_FRAMES: usize = 128;

/// One encoded frame on its way from the pump thread to the driver.
struct OutFrame {
    stem: StemId,
    media_time: u64,
    len: usize,
    bytes: [u8; MAX_FRAME_BYTES],
}

/// What the handles (pump, control thread, editor) and the session's driver task share.
struct Shared {
    /// The session document: the musician edits it, the driver syncs it. Each holds the lock
    /// only for one edit, read or sync step.
    doc: Mutex<DocReplica>,
    /// Our frames, pump thread → driver (single producer: the pump).
    audio_out: Mutex<rtrb::Producer<OutFrame>>,
    /// Asks of the handles, taken by the driver when woken.
    asks: Mutex<Asks>,
    /// Wakes the driver: frames queued or something asked.
    wake: Notify,
    /// What the driver last published.
    published: Mutex<Arc<Published>>,
    counters: Arc<SessionCounters>,
    stopped: AtomicBool,
    /// Whether our router holds a port mapping for us that we have not yet asked it to drop.
    port_mapped: Arc<AtomicBool>,
    /// The name given when joining; presence shows it until it is given another.
    name: String,
    /// Our member key's public half: who we are in the room.
    member: MemberPublic,
    /// Earlier frames each audio datagram carries: the setting and what it does now.
    protection: protection::Protection,
    /// Queueing delay reported by the congestion controllers of all our connections.
    congestion: Arc<CongestionSignal>,
    /// We only listen: our frames are not sent.
    listening: bool,
    /// Each sender's stems' clocks as their frames told them, on ours (see
    /// [`SessionHandle::clock_of`]); and our clock's start.
    clocks: Mutex<BTreeMap<(ParticipantId, StemId), crate::room_clock::ClockTrack>>,
    epoch: Instant,
}

/// Stems whose clocks a session follows at most.
const MAX_CLOCKS: usize = 256;

/// What the handles asked since the driver last looked: the latest of each, so nothing here
/// grows however often they ask.
#[derive(Default)]
struct Asks {
    doc_edited: bool,
    rotate: bool,
    presence: Option<Presence>,
    /// Asks for a take's frames, to send to their senders.
    takes: Vec<TakeAsk>,
    #[cfg(feature = "danger-test-hooks")]
    seal: Option<SealAsk>,
}

/// An ask for frames of a take: whose, which stem, which stretches, where the answers go.
type TakeAsk = (
    ParticipantId,
    StemId,
    Vec<(u64, u64)>,
    std::sync::mpsc::Sender<TakeFrames>,
);

/// Asks for a take's frames queued at most before the driver takes them.
const MAX_TAKE_ASKS: usize = 64;

/// A test's request to seal a frame without sending it: media time, payload, where to answer.
#[cfg(feature = "danger-test-hooks")]
type SealAsk = (u64, Vec<u8>, std::sync::mpsc::SyncSender<Option<Vec<u8>>>);

/// The driver's view for the handles, replaced whole on every change.
#[derive(Clone)]
struct Published {
    state: SessionState,
    /// The other members, and whether we hold their keys.
    members: Vec<(MemberInfo, bool)>,
    presence: Vec<PeerPresence>,
    relay: Option<Connection>,
    direct: BTreeMap<MemberId, Connection>,
    /// How each member is reached.
    routes: BTreeMap<MemberId, Route>,
    /// The room's invite: a rotation changes its secret.
    invite: Invite,
    port_mapping: PortMapStatus,
}

impl Shared {
    fn doc(&self) -> MutexGuard<'_, DocReplica> {
        self.doc.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn asks(&self) -> MutexGuard<'_, Asks> {
        self.asks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn published(&self) -> Arc<Published> {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn publish(&self, edit: impl FnOnce(&mut Published)) {
        let mut slot = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (**slot).clone();
        edit(&mut next);
        *slot = Arc::new(next);
    }
}

/// The application's side of a running session.
///
/// # Thread
/// Any thread. [`SessionHandle::send_audio`] copies the frame into a ring and wakes the
/// session's driver task, which seals and sends it; call it from one thread at a time (the
/// pump), never the audio thread. Reads come from what the driver last published; document
/// edits take the document's lock for the edit alone.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Our member key's public half: the relay admits us as its participant.
    ///
    /// # Thread
    /// Any.
    pub fn member(&self) -> MemberPublic {
        self.shared.member
    }

    /// Queues one encoded frame of our stream `stem`, starting at `media_time` (48 kHz samples
    /// in that stream), for every member: directly where a direct path exists, once through
    /// the relay for the rest. The session numbers it; the caller's own counters play no part
    /// in the nonce. A frame the driver has no room for is dropped and counted as stale.
    pub fn send_audio(&self, stem: StemId, media_time: u64, payload: &[u8]) {
        let s = &self.shared;
        if s.listening {
            return;
        }
        if payload.len() > MAX_FRAME_BYTES {
            s.counters.malformed.fetch_add(1, Relaxed);
            return;
        }
        let mut frame = OutFrame {
            stem,
            media_time,
            len: payload.len(),
            bytes: [0; MAX_FRAME_BYTES],
        };
        frame.bytes[..payload.len()].copy_from_slice(payload);
        let pushed = s
            .audio_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(frame)
            .is_ok();
        if pushed {
            s.wake.notify_one();
        } else {
            s.counters.stale.fetch_add(1, Relaxed);
        }
    }

    /// Asks `from` for the frames of its stem `stem` that start within `ranges` (its media
    /// time, `[from, to)`), from what it kept of its stream: a recorder fills the gaps of a
    /// take with what was played. The answers come on the returned channel, the last with
    /// `last` set (an empty one if `from` is not in the room, left, or did not answer within a
    /// minute); the channel closes if the session stops.
    pub fn ask_take(
        &self,
        from: ParticipantId,
        stem: StemId,
        ranges: Vec<(u64, u64)>,
    ) -> std::sync::mpsc::Receiver<TakeFrames> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut asks = self.shared.asks();
        if asks.takes.len() >= MAX_TAKE_ASKS {
            let _ = tx.send(TakeFrames {
                id: 0,
                from,
                stem,
                frames: Vec::new(),
                last: true,
            });
        } else {
            asks.takes.push((from, stem, ranges, tx));
        }
        drop(asks);
        self.shared.wake.notify_one();
        rx
    }

    /// Where `from`'s stem `stem` puts its media time on our clock ([`Self::clock_epoch`] on,
    /// 48 kHz samples): the room's clock, so that what members in different studios played at
    /// one moment can be laid side by side. The one-way delay is half the route's least round
    /// trip (by the relay, our least round trip to it: the sender's own leg is taken to be like
    /// ours).
    /// `None` before a second of its frames came.
    pub fn clock_of(
        &self,
        from: ParticipantId,
        stem: StemId,
    ) -> Option<crate::room_clock::ClockMap> {
        let p = self.shared.published();
        let (info, _) = p.members.iter().find(|(m, _)| m.participant == from)?;
        // The least round trip: the envelope is made of the frames that met no queue too.
        let min_rtt = |c: &Connection| c.stats().path.min_rtt.as_secs_f64() * 48_000.0;
        let one_way = match p.direct.get(&info.id) {
            Some(path) => min_rtt(path) / 2.0,
            None => p.relay.as_ref().map_or(0.0, min_rtt),
        };
        let clocks = self.shared.clocks.lock().unwrap_or_else(|e| e.into_inner());
        clocks.get(&(from, stem))?.map(one_way)
    }

    /// Where [`Self::clock_of`]'s clock starts.
    pub fn clock_epoch(&self) -> Instant {
        self.shared.epoch
    }

    /// How audio datagrams carry the frames before them (up to [`crate::wire::MAX_REDUNDANT`]), so a
    /// receiver fills single and double losses from the next datagram at the cost of that much
    /// more bitrate: by the loss the listeners report ([`LossProtection::Auto`], the default) or
    /// always as many as forced.
    pub fn set_loss_protection(&self, p: LossProtection) {
        self.shared.protection.set(p);
        self.shared.wake.notify_one();
    }

    /// What the loss protection does now.
    pub fn loss_protection(&self) -> ProtectionStatus {
        self.shared.protection.status()
    }

    /// Edits the room's session document; the change goes to every member.
    pub fn edit_doc<T>(
        &self,
        edit: impl FnOnce(&mut SessionDoc) -> Result<T, DocError>,
    ) -> Result<T, DocError> {
        let result = edit(self.shared.doc().doc())?;
        self.shared.asks().doc_edited = true;
        self.shared.wake.notify_one();
        Ok(result)
    }

    /// Gives the room a new secret: the members in it move to it without dropping out, the
    /// relay admits by it alone, and every invite made before stops working. Once the relay
    /// confirms, [`Self::invite`] is the new invite (at every member).
    pub fn rotate_secret(&self) {
        self.shared.asks().rotate = true;
        self.shared.wake.notify_one();
    }

    /// The room's invite as it stands: the one joined with, or the new one after a rotation.
    pub fn invite(&self) -> Invite {
        self.shared.published().invite.clone()
    }

    /// Reads the session document.
    pub fn read_doc<T>(&self, read: impl FnOnce(&mut SessionDoc) -> T) -> T {
        read(self.shared.doc().doc())
    }

    /// Test hook: seals `payload` as our next audio frame of stream 0 at `media_time`, as the
    /// relay gets it (the recipients' MACs behind it), without sending it.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_seal(&self, media_time: u64, payload: &[u8]) -> Option<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.shared.asks().seal = Some((media_time, payload.to_vec(), tx));
        self.shared.wake.notify_one();
        rx.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }

    /// Test hook: sends raw bytes as a datagram to the relay.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_send_raw(&self, datagram: &[u8]) -> bool {
        self.shared
            .published()
            .relay
            .as_ref()
            .is_some_and(|c| c.send_datagram(Bytes::copy_from_slice(datagram)).is_ok())
    }

    /// The largest queueing delay any of our paths showed since the last call (how far a
    /// round trip rose above its recent minimum), or a listener reports our audio meets on
    /// its way to it, if more. A growing queue means a path carries less than we send; the
    /// caller should ask its encoder for less.
    pub fn take_queue_delay(&self) -> Duration {
        self.shared.congestion.take_peak()
    }

    /// The session's counters.
    pub fn counters(&self) -> &SessionCounters {
        &self.shared.counters
    }

    /// Current state and members.
    pub fn status(&self) -> SessionStatus {
        let p = self.shared.published();
        let relay_rtt = p.relay.as_ref().map(Connection::rtt);
        let members = p
            .members
            .iter()
            .map(|(info, keyed)| {
                let d = p.direct.get(&info.id);
                let route = p.routes.get(&info.id).cloned();
                MemberStatus {
                    route: route.unwrap_or(Route::Relay(RelayWhy::Trying)),
                    info: info.clone(),
                    path: if d.is_some() {
                        Path::Direct
                    } else {
                        Path::Relay
                    },
                    rtt: d.map(Connection::rtt).or(relay_rtt),
                    keyed: *keyed,
                }
            })
            .collect();
        SessionStatus {
            state: p.state.clone(),
            members,
            port_mapping: p.port_mapping.clone(),
        }
    }

    /// Sets what the others see of us: sent within a tenth of a second (and once a second
    /// regardless, as a heartbeat).
    pub fn set_presence(&self, mut presence: Presence) {
        if presence.name.is_empty() {
            presence.name.clone_from(&self.shared.name);
        }
        self.shared.asks().presence = Some(presence);
        self.shared.wake.notify_one();
    }

    /// Everyone's presence as last heard, with those silent for a while marked gone (as of the
    /// driver's last tick, a tenth of a second at most ago).
    pub fn presence(&self) -> Vec<PeerPresence> {
        self.shared.published().presence.clone()
    }

    /// UDP payload bytes (QUIC headers included) and UDP datagrams sent on every path of the
    /// current connection, for on-wire bitrates.
    pub fn wire_tx(&self) -> (u64, u64) {
        let p = self.shared.published();
        p.relay
            .iter()
            .chain(p.direct.values())
            .map(|c| c.stats().udp_tx)
            .fold((0, 0), |(b, d), u| (b + u.bytes, d + u.datagrams))
    }

    /// Leaves the room and stops reconnecting.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Relaxed);
        let p = self.shared.published();
        for c in p.relay.iter().chain(p.direct.values()) {
            c.close(0u32.into(), b"bye");
        }
        self.shared.wake.notify_one();
    }

    /// After [`Self::stop`], waits at most `limit` until our router was asked to drop the
    /// port it forwards to us; whether it was. For a process about to end: without it the
    /// router forwards the port to nobody until the lease runs out. Not from the runtime's
    /// own threads: it sleeps.
    pub fn wait_port_mapping_released(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.shared.port_mapped.load(Relaxed) {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// Starts a session on the current tokio runtime. `on_audio(from, frame)` receives every
/// opened audio frame on the session's driver task; `from` identifies the musician across
/// reconnections.
pub fn start(
    config: SessionConfig,
    on_audio: impl FnMut(ParticipantId, AudioFrame<'_>) + Send + 'static,
) -> Result<SessionHandle, SessionError> {
    // Fail now, not in the background, if TLS cannot be set up at all.
    let identity = Identity::generate().map_err(|e| SessionError::Setup(e.to_string()))?;
    relay_client_config(config.invite.fingerprint, Arc::default())
        .map_err(|e| SessionError::Setup(e.to_string()))?;
    let doc = config
        .initial_doc
        .as_deref()
        .map(SessionDoc::load)
        .transpose()
        .map_err(|e| SessionError::Setup(e.to_string()))?
        .map_or_else(SessionDoc::new, Ok)
        .map_err(|e| SessionError::Setup(e.to_string()))?;
    let member = config
        .identity
        .clone()
        .unwrap_or_else(|| Arc::new(MemberKey::generate(&mut rand_core::OsRng)));
    let participant = member.participant();
    let (secret, room) = (&config.invite.secret, &config.invite.room);
    let counters = Arc::new(SessionCounters::default());
    let core = RoomCore::new(
        RoomSetup {
            identity: member.clone(),
            presence: Presence {
                name: config.name.clone(),
                ..Presence::default()
            },
            auth: secret.member_auth(room),
            room: room.clone(),
            rotation: config.rotation,
            force_relay: config.force_relay,
            rng: Box::new(rand_core::OsRng),
        },
        counters.clone(),
    );
    let (producer, consumer) = rtrb::RingBuffer::new(SEND_RING_FRAMES);
    let shared = Arc::new(Shared {
        doc: Mutex::new(DocReplica::new(doc, participant)),
        audio_out: Mutex::new(producer),
        asks: Mutex::default(),
        wake: Notify::new(),
        published: Mutex::new(Arc::new(Published {
            state: SessionState::Connecting,
            members: Vec::new(),
            presence: Vec::new(),
            relay: None,
            direct: BTreeMap::new(),
            routes: BTreeMap::new(),
            invite: config.invite.clone(),
            port_mapping: PortMapStatus::Off,
        })),
        counters,
        stopped: AtomicBool::new(false),
        port_mapped: Arc::default(),
        name: config.name.clone(),
        member: member.public(),
        protection: protection::Protection::default(),
        congestion: Arc::default(),
        listening: config.role == Role::Listener,
        clocks: Mutex::default(),
        epoch: Instant::now(),
    });
    let driver = driver::Driver {
        shared: shared.clone(),
        core,
        audio_in: consumer,
        on_audio: Box::new(on_audio),
        config,
        identity,
        member,
        protection: Default::default(),
        take_answers: BTreeMap::new(),
    };
    tokio::spawn(driver.run());
    Ok(SessionHandle { shared })
}
