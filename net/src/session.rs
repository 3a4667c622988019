//! A member's session: the driver of a [`RoomCore`]. It joins a room through the relay, feeds
//! the core what the relay and direct paths deliver, sends what the core gives, dials and
//! accepts the direct paths it asks for, and reconnects with backoff when the relay goes away.
//! The room protocol itself (keys, membership, document sync, presence, paths) lives in the
//! core.
//!
//! Audio enters through [`SessionHandle::send_audio`] (any thread, never blocks on the
//! network) and leaves through the `on_audio` callback (network thread) as [`AudioFrame`]s.

mod direct;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::Connection;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::congestion::CongestionSignal;
use crate::core::member::{RoomCore, RoomEvent, RoomSetup, Transmit};
use crate::crypto::RotationPolicy;
use crate::doc::{DocError, SessionDoc};
use crate::invite::Invite;
use crate::presence::{PeerPresence, Presence};
use crate::relay::channel_binding;
use crate::tls::{
    endpoint_config, relay_client_config, Identity, DATAGRAM_SEND_BUFFER_BYTES, SEND_QUEUE_FRAMES,
    SERVER_NAME,
};
use crate::transport::{read_frame, write_frame};
use crate::wire::{
    encode_peer, ClientMessage, MemberId, MemberInfo, ParticipantId, PeerMessage, Refusal,
    RelayMessage, Role, StemId, MAX_REDUNDANT,
};

pub use direct::DIRECT_PATH_TIMEOUT;

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
    /// Key rotation policy.
    pub rotation: RotationPolicy,
    /// The session document to start from (saved in the DAW project or the room's store);
    /// `None` starts from the room's genesis document.
    pub initial_doc: Option<Vec<u8>>,
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
    /// Waiting to retry after an error.
    Retrying(String),
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
}

/// What quinn counts against its send buffer for each queued datagram besides its bytes (the
/// `Bytes` handle), and once more for the next one.
const QUEUED_DATAGRAM_OVERHEAD: usize = std::mem::size_of::<Bytes>();

/// Queues an audio datagram on `conn` unless [`SEND_QUEUE_FRAMES`] datagrams of its size are
/// already waiting there.
fn send_fresh(conn: &Connection, datagram: Bytes, counters: &SessionCounters) -> bool {
    let used = DATAGRAM_SEND_BUFFER_BYTES
        .saturating_sub(conn.datagram_send_buffer_space() + QUEUED_DATAGRAM_OVERHEAD);
    if used / (datagram.len() + QUEUED_DATAGRAM_OVERHEAD) >= SEND_QUEUE_FRAMES {
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
}

type AudioCallback = Box<dyn FnMut(ParticipantId, AudioFrame<'_>) + Send>;

/// What the handle (send path, editor) and the network tasks share. No two of these locks are
/// held at once, except `core` then `on_audio` while a datagram's frames are handed out.
struct Shared {
    /// The room protocol.
    core: Mutex<RoomCore>,
    /// The connections it runs on.
    links: Mutex<Links>,
    state: Mutex<SessionState>,
    on_audio: Mutex<AudioCallback>,
    counters: Arc<SessionCounters>,
    stopped: AtomicBool,
    /// The name given when joining; presence shows it until it is given another.
    name: String,
    participant: ParticipantId,
    /// Earlier frames each audio datagram carries (0 to [`MAX_REDUNDANT`]).
    redundancy: AtomicU8,
    /// Queueing delay reported by the congestion controllers of all our connections.
    congestion: Arc<CongestionSignal>,
}

/// The current relay connection and direct paths, with their control outboxes.
#[derive(Default)]
struct Links {
    endpoint: Option<quinn::Endpoint>,
    relay: Option<Connection>,
    control: Option<mpsc::UnboundedSender<ClientMessage>>,
    direct: BTreeMap<MemberId, Connection>,
    direct_control: BTreeMap<MemberId, mpsc::UnboundedSender<PeerMessage>>,
}

impl Shared {
    fn core(&self) -> std::sync::MutexGuard<'_, RoomCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what the core has to send and acts on what it asks (after the core's lock is
    /// released).
    fn flush(self: &Arc<Self>) {
        let (transmits, events): (Vec<Transmit>, Vec<RoomEvent>) = {
            let mut core = self.core();
            (
                std::iter::from_fn(|| core.poll_transmit()).collect(),
                std::iter::from_fn(|| core.poll_event()).collect(),
            )
        };
        let mut links = self.links();
        for t in transmits {
            match t {
                Transmit::Relay(msg) => {
                    if let Some(out) = &links.control {
                        let _ = out.send(msg);
                    }
                }
                Transmit::Direct(to, msg) => {
                    match (links.direct_control.get(&to), &links.control) {
                        (Some(path), _) => {
                            let _ = path.send(msg);
                        }
                        (None, Some(out)) => {
                            let _ = out.send(ClientMessage::Send {
                                to: Some(to),
                                body: encode_peer(&msg),
                            });
                        }
                        (None, None) => {}
                    }
                }
            }
        }
        for e in events {
            match e {
                RoomEvent::Dial(other) => {
                    if let Some(endpoint) = &links.endpoint {
                        direct::dial(endpoint.clone(), self.clone(), other);
                    }
                }
                RoomEvent::ClosePath(id) => {
                    if let Some(c) = links.direct.remove(&id) {
                        c.close(0u32.into(), b"left");
                    }
                }
                RoomEvent::DocChanged => {}
            }
        }
    }
}

/// Opens what a relay or a direct path delivered and hands its frames to the application.
fn receive_datagram(shared: &Shared, bytes: &[u8]) {
    let mut core = shared.core();
    let mut on_audio = shared.on_audio.lock().unwrap_or_else(|e| e.into_inner());
    core.open_datagram(bytes, &mut |from, frame| on_audio(from, frame));
}

/// The application's side of a running session.
///
/// # Thread
/// Any thread; [`SessionHandle::send_audio`] takes short locks and never waits on I/O, so a
/// pump thread (not the audio thread) calls it.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Seals one encoded frame of our stream `stem`, starting at `media_time` (48 kHz samples
    /// in that stream), and sends it to every member: directly where a direct path exists,
    /// once through the relay for the rest. The session numbers it; the caller's own counters
    /// play no part in the nonce.
    pub fn send_audio(&self, stem: StemId, media_time: u64, payload: &[u8]) {
        let s = &self.shared;
        let redundancy = usize::from(s.redundancy.load(Relaxed));
        let (with_id, prefix, needs_relay) = {
            let mut core = s.core();
            let Some((datagram, prefix, relay)) =
                core.seal_audio(stem, media_time, payload, redundancy)
            else {
                return;
            };
            (Bytes::copy_from_slice(datagram), prefix, relay)
        };
        let links = s.links();
        for conn in links.direct.values() {
            if send_fresh(conn, with_id.clone(), &s.counters) {
                s.counters.sent.fetch_add(1, Relaxed);
            }
        }
        if let (true, Some(relay)) = (needs_relay, links.relay.as_ref()) {
            if send_fresh(relay, with_id.slice(prefix..), &s.counters) {
                s.counters.sent.fetch_add(1, Relaxed);
            }
        }
    }

    /// Makes every audio datagram also carry the `frames` frames before it (0 to
    /// [`MAX_REDUNDANT`]), so a receiver fills single and double losses from the next
    /// datagram, at the cost of that much more bitrate.
    pub fn set_redundancy(&self, frames: u8) {
        self.shared
            .redundancy
            .store(frames.min(MAX_REDUNDANT as u8), Relaxed);
    }

    /// Edits the room's session document and sends the change to every member.
    pub fn edit_doc<T>(
        &self,
        edit: impl FnOnce(&mut SessionDoc) -> Result<T, DocError>,
    ) -> Result<T, DocError> {
        let result = {
            let mut core = self.shared.core();
            let result = edit(core.doc())?;
            core.edited(Instant::now());
            result
        };
        self.shared.flush();
        Ok(result)
    }

    /// Reads the session document.
    pub fn read_doc<T>(&self, read: impl FnOnce(&mut SessionDoc) -> T) -> T {
        read(self.shared.core().doc())
    }

    /// Test hook: seals `payload` as our next audio frame of stream 0 at `media_time` without
    /// sending it.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_seal(&self, media_time: u64, payload: &[u8]) -> Option<Vec<u8>> {
        let mut core = self.shared.core();
        let mut out = Vec::new();
        core.danger_keys()?
            .seal_audio(StemId(0), media_time, payload, false, &mut out);
        Some(out)
    }

    /// Test hook: sends raw bytes as a datagram to the relay.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_send_raw(&self, datagram: &[u8]) -> bool {
        let links = self.shared.links();
        links
            .relay
            .as_ref()
            .is_some_and(|c| c.send_datagram(Bytes::copy_from_slice(datagram)).is_ok())
    }

    /// The largest queueing delay any of our paths showed since the last call: how far a
    /// round trip rose above its recent minimum. A growing queue means the path carries less
    /// than we send; the caller should ask its encoder for less.
    pub fn take_queue_delay(&self) -> Duration {
        self.shared.congestion.take_peak()
    }

    /// The session's counters.
    pub fn counters(&self) -> &SessionCounters {
        &self.shared.counters
    }

    /// Current state and members.
    pub fn status(&self) -> SessionStatus {
        let s = &self.shared;
        let known: Vec<(MemberInfo, bool)> = {
            let core = s.core();
            core.members()
                .map(|m| (m.clone(), core.keyed(m.id)))
                .collect()
        };
        let links = s.links();
        let relay_rtt = links.relay.as_ref().map(Connection::rtt);
        let members = known
            .into_iter()
            .map(|(info, keyed)| {
                let d = links.direct.get(&info.id);
                MemberStatus {
                    path: if d.is_some() {
                        Path::Direct
                    } else {
                        Path::Relay
                    },
                    rtt: d.map(Connection::rtt).or(relay_rtt),
                    keyed,
                    info,
                }
            })
            .collect();
        drop(links);
        SessionStatus {
            state: s.state.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            members,
        }
    }

    /// Sets what the others see of us: sent within a tenth of a second (and once a second
    /// regardless, as a heartbeat).
    pub fn set_presence(&self, mut presence: Presence) {
        if presence.name.is_empty() {
            presence.name.clone_from(&self.shared.name);
        }
        self.shared.core().set_presence(presence);
    }

    /// Everyone's presence as last heard, with those silent for a while marked gone.
    pub fn presence(&self) -> Vec<PeerPresence> {
        self.shared.core().presence(Instant::now())
    }

    /// UDP payload bytes (QUIC headers included) and UDP datagrams sent on every path of the
    /// current connection, for on-wire bitrates.
    pub fn wire_tx(&self) -> (u64, u64) {
        let links = self.shared.links();
        links
            .relay
            .iter()
            .chain(links.direct.values())
            .map(|c| c.stats().udp_tx)
            .fold((0, 0), |(b, d), u| (b + u.bytes, d + u.datagrams))
    }

    /// Leaves the room and stops reconnecting.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Relaxed);
        let mut links = self.shared.links();
        if let Some(c) = links.relay.take() {
            c.close(0u32.into(), b"bye");
        }
        for (_, c) in std::mem::take(&mut links.direct) {
            c.close(0u32.into(), b"bye");
        }
    }
}

/// Starts a session on the current tokio runtime. `on_audio(from, frame)` receives every
/// opened audio frame on the network thread; `from` identifies the musician across
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
    let participant = ParticipantId(rand_core::RngCore::next_u64(&mut rand_core::OsRng));
    let (secret, room) = (&config.invite.secret, &config.invite.room);
    let counters = Arc::new(SessionCounters::default());
    let core = RoomCore::new(
        RoomSetup {
            participant,
            presence: Presence {
                name: config.name.clone(),
                ..Presence::default()
            },
            auth: secret.member_auth(room),
            rotation: config.rotation,
            doc,
            doc_cipher: secret.doc_cipher(room),
            presence_cipher: secret.presence_cipher(room),
            force_relay: config.force_relay,
        },
        counters.clone(),
    );
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        links: Mutex::default(),
        state: Mutex::new(SessionState::Connecting),
        on_audio: Mutex::new(Box::new(on_audio)),
        counters,
        stopped: AtomicBool::new(false),
        name: config.name.clone(),
        participant,
        redundancy: AtomicU8::new(0),
        congestion: Arc::default(),
    });
    tokio::spawn(run(identity, config, shared.clone()));
    Ok(SessionHandle { shared })
}

/// A fresh endpoint on a new socket. Each connection attempt gets its own: with zero-length
/// connection ids quinn routes by address, and a draining connection to the old relay would
/// otherwise swallow the new handshake.
fn make_endpoint(
    identity: &Identity,
    config: &SessionConfig,
    signal: &Arc<CongestionSignal>,
) -> Result<quinn::Endpoint, String> {
    let bind: SocketAddr = if config.invite.host.contains(':') {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let socket =
        std::net::UdpSocket::bind(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let server = identity
        .server_config(signal.clone())
        .map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::new(
        endpoint_config(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    endpoint.set_default_client_config(
        relay_client_config(config.invite.fingerprint, signal.clone())
            .map_err(|e| e.to_string())?,
    );
    Ok(endpoint)
}

fn set_state(shared: &Shared, state: SessionState) {
    *shared.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
}

/// Connects, serves until disconnected, and retries with backoff until stopped or refused.
async fn run(identity: Identity, config: SessionConfig, shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    while !shared.stopped.load(Relaxed) {
        set_state(&shared, SessionState::Connecting);
        let endpoint = match make_endpoint(&identity, &config, &shared.congestion) {
            Ok(e) => e,
            Err(msg) => {
                set_state(&shared, SessionState::Retrying(msg));
                tokio::time::sleep(BACKOFF_MAX).await;
                continue;
            }
        };
        let acceptor = tokio::spawn(direct::accept(endpoint.clone(), shared.clone()));
        match join(&endpoint, &config, &shared).await {
            Ok(joined) => {
                backoff = BACKOFF_MIN;
                serve(&endpoint, &config, &shared, joined).await;
                tracing::info!("disconnected from the relay; reconnecting");
            }
            Err(JoinError::Refused(r)) => {
                tracing::error!("the relay refused to admit us: {}", r.explain());
                set_state(&shared, SessionState::Refused(r));
                acceptor.abort();
                endpoint.close(0u32.into(), b"refused");
                return;
            }
            Err(JoinError::Other(msg)) => {
                tracing::warn!("{msg}");
                set_state(&shared, SessionState::Retrying(msg));
            }
        }
        acceptor.abort();
        endpoint.close(0u32.into(), b"reconnecting");
        if shared.stopped.load(Relaxed) {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum JoinError {
    Refused(Refusal),
    Other(String),
}

struct Joined {
    conn: Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    me: MemberId,
    others: Vec<MemberInfo>,
}

async fn join(
    endpoint: &quinn::Endpoint,
    config: &SessionConfig,
    shared: &Shared,
) -> Result<Joined, JoinError> {
    let inv = &config.invite;
    let relay = format!("{}:{}", inv.host, inv.port);
    let addr = tokio::net::lookup_host(&relay)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            JoinError::Other(format!(
                "relay {relay} not found — check the invite's address"
            ))
        })?;
    let unreachable = |e: &dyn std::fmt::Display| {
        JoinError::Other(format!("relay {relay} unreachable ({e}) — is it running?"))
    };
    let connecting = endpoint
        .connect(addr, SERVER_NAME)
        .map_err(|e| unreachable(&e))?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| unreachable(&"no answer"))?
        .map_err(|e| unreachable(&e))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| unreachable(&e))?;
    let lost =
        |e: &dyn std::fmt::Display| JoinError::Other(format!("lost the relay while joining: {e}"));
    write_frame(
        &mut send,
        &ClientMessage::Join {
            room: inv.room.to_string(),
            name: config.name.clone(),
            participant: shared.participant,
            role: Role::Performer,
        },
    )
    .await
    .map_err(|e| lost(&e))?;
    let nonce = match read_frame::<RelayMessage>(&mut recv).await {
        Ok(Some(RelayMessage::Challenge { nonce })) => nonce,
        Ok(Some(RelayMessage::Refused(r))) => return Err(JoinError::Refused(r)),
        Ok(_) => return Err(JoinError::Refused(Refusal::Protocol)),
        Err(e) => return Err(lost(&e)),
    };
    let binding = channel_binding(&conn, &inv.room).ok_or_else(|| lost(&"no TLS exporter"))?;
    let proof = inv.secret.admission_proof(&inv.room, &nonce, &binding);
    write_frame(&mut send, &ClientMessage::Proof { proof })
        .await
        .map_err(|e| lost(&e))?;
    match read_frame::<RelayMessage>(&mut recv).await {
        Ok(Some(RelayMessage::Welcome { you, members, .. })) => {
            shared.counters.joins.fetch_add(1, Relaxed);
            Ok(Joined {
                conn,
                send,
                recv,
                me: you,
                others: members,
            })
        }
        Ok(Some(RelayMessage::Refused(r))) => Err(JoinError::Refused(r)),
        Ok(_) => Err(JoinError::Refused(Refusal::Protocol)),
        // A refusal closes the connection; the reason arrives as the close frame.
        Err(e) => Err(lost(&e)),
    }
}

/// In the room until the relay connection ends.
async fn serve(
    endpoint: &quinn::Endpoint,
    config: &SessionConfig,
    shared: &Arc<Shared>,
    joined: Joined,
) {
    let Joined {
        conn,
        mut send,
        mut recv,
        me,
        others,
    } = joined;
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
    {
        let mut links = shared.links();
        links.endpoint = Some(endpoint.clone());
        links.relay = Some(conn.clone());
        links.control = Some(out_tx);
    }
    let count = others.len();
    shared.core().handle_welcome(Instant::now(), me, others);
    shared.flush();
    set_state(shared, SessionState::Joined { you: me });
    tracing::info!(
        "joined room {} as {me:?} with {count} others",
        config.invite.room
    );

    let writer = async {
        while let Some(msg) = out_rx.recv().await {
            if write_frame(&mut send, &msg).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        while let Ok(Some(msg)) = read_frame::<RelayMessage>(&mut recv).await {
            shared.core().handle_relay(Instant::now(), msg);
            shared.flush();
        }
    };
    let datagrams = async {
        while let Ok(d) = conn.read_datagram().await {
            receive_datagram(shared, &d);
        }
    };
    let timers = async {
        loop {
            let due = shared.core().poll_timeout();
            let due = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::time::sleep_until(due.into()).await;
            shared.core().handle_timeout(Instant::now());
            shared.flush();
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = datagrams => {}
        _ = timers => {}
        _ = conn.closed() => {}
    }
    {
        let mut links = shared.links();
        links.relay = None;
        links.control = None;
        links.direct_control.clear();
        for (_, c) in std::mem::take(&mut links.direct) {
            c.close(0u32.into(), b"rejoining");
        }
    }
    shared.core().handle_disconnected(Instant::now());
}
