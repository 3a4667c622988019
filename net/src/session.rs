//! A member's session: joins a room through the relay, exchanges end-to-end keys, finds direct
//! paths to the other members, and carries sealed audio both ways. Reconnects with backoff when
//! the relay goes away.
//!
//! Audio enters through [`SessionHandle::send_audio`] (any thread, never blocks on the
//! network) and leaves through the `on_audio` callback (network thread) as [`AudioFrame`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::Connection;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::congestion::CongestionSignal;
use crate::crypto::{CryptoError, DocCipher, MemberKeys, RotationPolicy};
use crate::doc::{DocError, DocSync, SessionDoc};
use crate::invite::Invite;
use crate::presence::{
    PeerPresence, Presence, PresenceBook, PresenceOutbox, PresenceUpdate, MAX_RATE_HZ,
};
use crate::relay::channel_binding;
use crate::tls::{
    direct_client_config, endpoint_config, relay_client_config, Identity,
    DATAGRAM_SEND_BUFFER_BYTES, SEND_QUEUE_FRAMES, SERVER_NAME,
};
use crate::transport::{read_frame, write_frame};
use crate::wire::{
    decode_body, encode_peer, encode_sender, forwarded_items, unpack_frames, ClientMessage,
    Forwarded, MemberId, MemberInfo, OlderFrame, ParticipantId, PeerMessage, Refusal, RelayMessage,
    Role, StemId, MAX_REDUNDANT, MEDIA_UNIT_SAMPLES,
};

/// How long a direct path may take before the relay carries that member's audio.
pub const DIRECT_PATH_TIMEOUT: Duration = Duration::from_secs(1);
/// Direct paths are tried this many times, this far apart (NAT mappings and busy peers
/// settle); meanwhile and afterwards the relay carries the audio.
const DIRECT_PATH_ATTEMPTS: u32 = 3;
const DIRECT_PATH_RETRY: Duration = Duration::from_secs(2);
/// An incoming direct path may arrive before we have processed the relay's news of its
/// dialler; wait this long to recognise it.
const RECOGNISE_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnect backoff bounds: a band waits at most a second between attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A relay handshake unanswered this long is abandoned and retried on a fresh socket. Long
/// enough for a lossy line's retransmissions to get through (at 30 % loss each way a QUIC
/// handshake rarely completes in its first flight), short enough that a dead relay is reported
/// within seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Key rotation and expiry are checked this often.
const KEY_TICK: Duration = Duration::from_millis(250);

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

/// State shared by the handle (send path) and the network tasks.
/// Locks are taken in this field order (keys, me, scratch, direct, members, relay) whenever
/// more than one is held.
struct Shared {
    keys: Mutex<Option<MemberKeys>>,
    me: Mutex<Option<MemberId>>,
    relay: Mutex<Option<Connection>>,
    /// Direct connections by member.
    direct: Mutex<BTreeMap<MemberId, Connection>>,
    members: Mutex<BTreeMap<MemberId, MemberInfo>>,
    /// Outbox of the current relay connection's control stream.
    control: Mutex<Option<mpsc::UnboundedSender<ClientMessage>>>,
    state: Mutex<SessionState>,
    on_audio: Mutex<AudioCallback>,
    counters: SessionCounters,
    stopped: AtomicBool,
    participant: ParticipantId,
    /// The name given when joining; presence shows it until it is given another.
    name: String,
    scratch: Mutex<SendScratch>,
    /// Earlier frames each audio datagram carries (0 to [`MAX_REDUNDANT`]).
    redundancy: AtomicU8,
    /// The room's session document; taken alone (or before `control`).
    doc: Mutex<DocState>,
    /// Outboxes of the control streams of direct paths, by member; taken alone.
    direct_control: Mutex<BTreeMap<MemberId, mpsc::UnboundedSender<PeerMessage>>>,
    /// Presence: ours to send, everyone else's as received; each taken alone.
    presence_out: Mutex<PresenceOutbox>,
    presence_in: Mutex<PresenceBook>,
    presence_cipher: DocCipher,
    /// Queueing delay reported by the congestion controllers of all our connections.
    congestion: Arc<CongestionSignal>,
}

/// The session document, its sealing key and one sync state per peer.
struct DocState {
    doc: SessionDoc,
    /// By participant, so a peer that reconnects with a new member id is the same peer.
    peers: BTreeMap<ParticipantId, DocSync>,
    cipher: DocCipher,
    /// Parts of a message received so far, per peer and path (true: direct).
    partial: BTreeMap<(ParticipantId, bool), Vec<u8>>,
}

/// Largest plaintext of one document message part (sealed, it fits a control frame with
/// room for its framing).
const DOC_PART: usize = crate::wire::MAX_CONTROL_FRAME - 512;
/// Largest document message reassembled from parts; a peer cannot make us hold more.
const MAX_DOC_MESSAGE: usize = 64 * 1024 * 1024;

/// Sends `to` whatever of the session document it lacks, if anything, in as many parts as
/// control frames need.
fn sync_doc_to(
    shared: &Shared,
    out: &mpsc::UnboundedSender<ClientMessage>,
    me: MemberId,
    to: &MemberInfo,
) {
    let mut d = shared.doc.lock().unwrap_or_else(|e| e.into_inner());
    let DocState {
        doc, peers, cipher, ..
    } = &mut *d;
    let Some(msg) = peers.entry(to.participant).or_default().generate(doc) else {
        return;
    };
    let chunks: Vec<&[u8]> = msg.chunks(DOC_PART).collect();
    let Ok(parts) = u16::try_from(chunks.len()) else {
        tracing::warn!(
            "session document message of {} bytes is too large to send",
            msg.len()
        );
        return;
    };
    // A direct path carries it when there is one: one hop less, and no relay needed.
    let direct = shared
        .direct_control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&to.id)
        .cloned();
    for (part, chunk) in chunks.into_iter().enumerate() {
        let (nonce, sealed) = cipher.seal(me, chunk);
        let msg = PeerMessage::Doc {
            nonce,
            sealed,
            part: part as u16,
            parts,
        };
        match &direct {
            Some(d) => {
                let _ = d.send(msg);
            }
            None => {
                let _ = out.send(ClientMessage::Send {
                    to: Some(to.id),
                    body: encode_peer(&msg),
                });
            }
        }
    }
}

/// Who a member id stands for now.
fn participant_of(shared: &Shared, member: MemberId) -> Option<ParticipantId> {
    shared
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&member)
        .map(|m| m.participant)
}

/// A copy of a shared map's values, so no lock is held while they are used.
fn values_of<K, V: Clone>(map: &Mutex<BTreeMap<K, V>>) -> Vec<V> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

/// Syncs the document with every member we know.
fn sync_doc_all(shared: &Shared) {
    let me = *shared.me.lock().unwrap_or_else(|e| e.into_inner());
    let members = values_of(&shared.members);
    let out = shared
        .control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let (Some(me), Some(out)) = (me, out) {
        for m in &members {
            sync_doc_to(shared, &out, me, m);
        }
    }
}

/// A document sync message part from member `from`: once the message is whole, apply it,
/// then answer everyone who now lacks something (the sender first).
fn receive_doc(
    shared: &Shared,
    from: MemberId,
    direct: bool,
    msg: (&[u8; 12], &[u8]),
    (part, parts): (u16, u16),
) {
    let (nonce, sealed) = msg;
    let participant = participant_of(shared, from);
    let Some(participant) = participant else {
        return;
    };
    {
        let mut d = shared.doc.lock().unwrap_or_else(|e| e.into_inner());
        let DocState {
            doc,
            peers,
            cipher,
            partial,
        } = &mut *d;
        let Ok(plain) = cipher.open(from, nonce, sealed) else {
            shared.counters.forged.fetch_add(1, Relaxed);
            tracing::warn!("session document message from {from:?} did not verify");
            return;
        };
        let whole = if parts <= 1 {
            plain
        } else {
            // Parts come in order on the control stream; anything else starts over.
            let buf = partial.entry((participant, direct)).or_default();
            let expected = u16::try_from(buf.len() / DOC_PART).unwrap_or(u16::MAX);
            if part == 0 {
                buf.clear();
            } else if part != expected || buf.len() % DOC_PART != 0 {
                buf.clear();
                shared.counters.malformed.fetch_add(1, Relaxed);
                return;
            }
            if buf.len() + plain.len() > MAX_DOC_MESSAGE {
                buf.clear();
                shared.counters.malformed.fetch_add(1, Relaxed);
                return;
            }
            buf.extend_from_slice(&plain);
            if part + 1 < parts {
                return;
            }
            std::mem::take(buf)
        };
        if let Err(e) = peers.entry(participant).or_default().receive(doc, &whole) {
            shared.counters.malformed.fetch_add(1, Relaxed);
            tracing::warn!("session document message from {from:?} refused: {e}");
            return;
        }
    }
    sync_doc_all(shared);
}

/// A presence update from member `from`.
fn receive_presence(shared: &Shared, from: MemberId, nonce: &[u8; 12], sealed: &[u8]) {
    let participant = participant_of(shared, from);
    let Some(participant) = participant else {
        return;
    };
    let Ok(plain) = shared.presence_cipher.open(from, nonce, sealed) else {
        shared.counters.forged.fetch_add(1, Relaxed);
        return;
    };
    let Ok(update) = decode_body::<PresenceUpdate>(&plain) else {
        shared.counters.malformed.fetch_add(1, Relaxed);
        return;
    };
    shared
        .presence_in
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .receive(participant, update, Instant::now());
}

/// Our presence update to broadcast now, sealed, if one is due.
fn presence_due(shared: &Shared, me: MemberId) -> Option<ClientMessage> {
    let update = shared
        .presence_out
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .due(Instant::now())?;
    let plain = postcard::to_stdvec(&update).ok()?;
    let (nonce, sealed) = shared.presence_cipher.seal(me, &plain);
    Some(ClientMessage::Send {
        to: None,
        body: encode_peer(&PeerMessage::Presence { nonce, sealed }),
    })
}

/// The last frames sent on one stream, newest first, with their media times.
type SentFrames = [(Option<u64>, Vec<u8>); MAX_REDUNDANT];

/// The send path's reusable buffers.
struct SendScratch {
    /// The sealed datagram, behind a byte for our member id.
    buf: Vec<u8>,
    /// The plaintext container when frames are sent redundantly.
    plain: Vec<u8>,
    /// Each stream's last frames, for redundancy.
    history: BTreeMap<StemId, SentFrames>,
}

/// The frames of `history` that fit in a container before a frame at `media_time`, newest
/// first, and how many there are: each must start earlier, by at most 255 media units. No
/// allocation: this runs for every datagram.
fn older_frames<'a>(
    history: &'a SentFrames,
    media_time: u64,
    n: usize,
) -> ([OlderFrame<'a>; MAX_REDUNDANT], usize) {
    let mut older = [OlderFrame {
        units_back: 1,
        frame: &[],
    }; MAX_REDUNDANT];
    let mut count = 0;
    for (media, frame) in history.iter().take(n.min(MAX_REDUNDANT)) {
        let Some(back) = media.and_then(|m| media_time.checked_sub(m)) else {
            break;
        };
        let Some(units_back) = u8::try_from(back / MEDIA_UNIT_SAMPLES)
            .ok()
            .filter(|b| *b > 0)
        else {
            break;
        };
        older[count] = OlderFrame { units_back, frame };
        count += 1;
    }
    (older, count)
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
        let mut keys = s.keys.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(keys), Some(me)) = (
            keys.as_mut(),
            *s.me.lock().unwrap_or_else(|e| e.into_inner()),
        ) else {
            return;
        };
        let mut scratch = s.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let SendScratch {
            buf,
            plain,
            history,
        } = &mut *scratch;
        // Room for the member id in front, so the direct copy needs no second buffer.
        buf.clear();
        encode_sender(me, buf);
        let prefix = buf.len();
        let redundancy = usize::from(s.redundancy.load(Relaxed)).min(MAX_REDUNDANT);
        let sent = history
            .entry(stem)
            .or_insert_with(|| std::array::from_fn(|_| (None, Vec::with_capacity(1500))));
        if redundancy == 0 {
            keys.seal_audio(stem, media_time, payload, false, buf);
        } else {
            plain.clear();
            let (older, n) = older_frames(sent, media_time, redundancy);
            crate::wire::pack_frames(payload, &older[..n], plain);
            keys.seal_audio(stem, media_time, plain, true, buf);
        }
        sent.rotate_right(1);
        sent[0].0 = Some(media_time);
        sent[0].1.clear();
        sent[0].1.extend_from_slice(payload);
        let with_id = Bytes::copy_from_slice(buf);
        let plain = with_id.slice(prefix..);
        let direct = s.direct.lock().unwrap_or_else(|e| e.into_inner());
        for conn in direct.values() {
            if send_fresh(conn, with_id.clone(), &s.counters) {
                s.counters.sent.fetch_add(1, Relaxed);
            }
        }
        let members = s.members.lock().unwrap_or_else(|e| e.into_inner());
        let needs_relay = members.keys().any(|m| !direct.contains_key(m));
        if needs_relay {
            if let Some(relay) = s.relay.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                if send_fresh(relay, plain, &s.counters) {
                    s.counters.sent.fetch_add(1, Relaxed);
                }
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
        let result = edit(
            &mut self
                .shared
                .doc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .doc,
        )?;
        sync_doc_all(&self.shared);
        Ok(result)
    }

    /// Reads the session document.
    pub fn read_doc<T>(&self, read: impl FnOnce(&mut SessionDoc) -> T) -> T {
        read(
            &mut self
                .shared
                .doc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .doc,
        )
    }

    /// Test hook: seals `payload` as our next audio frame of stream 0 at `media_time` without
    /// sending it.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_seal(&self, media_time: u64, payload: &[u8]) -> Option<Vec<u8>> {
        let mut keys = self.shared.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        keys.as_mut()?
            .seal_audio(StemId(0), media_time, payload, false, &mut out);
        Some(out)
    }

    /// Test hook: sends raw bytes as a datagram to the relay.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_send_raw(&self, datagram: &[u8]) -> bool {
        let relay = self.shared.relay.lock().unwrap_or_else(|e| e.into_inner());
        relay
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
        // Lock order everywhere: keys, me, scratch, direct, members, relay.
        let keys = s.keys.lock().unwrap_or_else(|e| e.into_inner());
        let direct = s.direct.lock().unwrap_or_else(|e| e.into_inner());
        let members = s.members.lock().unwrap_or_else(|e| e.into_inner());
        let relay_rtt = s
            .relay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Connection::rtt);
        let members = members
            .values()
            .map(|info| {
                let d = direct.get(&info.id);
                MemberStatus {
                    info: info.clone(),
                    path: if d.is_some() {
                        Path::Direct
                    } else {
                        Path::Relay
                    },
                    rtt: d.map(Connection::rtt).or(relay_rtt),
                    keyed: keys.as_ref().is_some_and(|k| k.can_open_from(info.id)),
                }
            })
            .collect();
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
        self.shared
            .presence_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(presence);
    }

    /// Everyone's presence as last heard, with those silent for a while marked gone.
    pub fn presence(&self) -> Vec<PeerPresence> {
        self.shared
            .presence_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list(Instant::now())
    }

    /// UDP payload bytes (QUIC headers included) and UDP datagrams sent on every path of the
    /// current connection, for on-wire bitrates.
    pub fn wire_tx(&self) -> (u64, u64) {
        let s = &self.shared;
        let direct = values_of(&s.direct);
        let relay = s.relay.lock().unwrap_or_else(|e| e.into_inner()).clone();
        relay
            .iter()
            .chain(&direct)
            .map(|c| c.stats().udp_tx)
            .fold((0, 0), |(b, d), u| (b + u.bytes, d + u.datagrams))
    }

    /// Leaves the room and stops reconnecting.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Relaxed);
        if let Some(c) = self
            .shared
            .relay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            c.close(0u32.into(), b"bye");
        }
        for (_, c) in
            std::mem::take(&mut *self.shared.direct.lock().unwrap_or_else(|e| e.into_inner()))
        {
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
    let shared = Arc::new(Shared {
        keys: Mutex::new(None),
        me: Mutex::new(None),
        relay: Mutex::new(None),
        direct: Mutex::new(BTreeMap::new()),
        members: Mutex::new(BTreeMap::new()),
        control: Mutex::new(None),
        state: Mutex::new(SessionState::Connecting),
        on_audio: Mutex::new(Box::new(on_audio)),
        counters: SessionCounters::default(),
        stopped: AtomicBool::new(false),
        participant: ParticipantId(rand_core::RngCore::next_u64(&mut rand_core::OsRng)),
        name: config.name.clone(),
        scratch: Mutex::new(SendScratch {
            buf: Vec::with_capacity(1500),
            plain: Vec::with_capacity(1500),
            history: BTreeMap::new(),
        }),
        redundancy: AtomicU8::new(0),
        doc: Mutex::new(DocState {
            doc: config
                .initial_doc
                .as_deref()
                .map(SessionDoc::load)
                .transpose()
                .map_err(|e| SessionError::Setup(e.to_string()))?
                .map_or_else(SessionDoc::new, Ok)
                .map_err(|e| SessionError::Setup(e.to_string()))?,
            peers: BTreeMap::new(),
            cipher: config.invite.secret.doc_cipher(&config.invite.room),
            partial: BTreeMap::new(),
        }),
        direct_control: Mutex::new(BTreeMap::new()),
        presence_out: Mutex::new(PresenceOutbox::new(Presence {
            name: config.name.clone(),
            ..Presence::default()
        })),
        presence_in: Mutex::new(PresenceBook::default()),
        presence_cipher: config.invite.secret.presence_cipher(&config.invite.room),
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
        let acceptor = tokio::spawn(accept_direct(endpoint.clone(), shared.clone()));
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
    let now = Instant::now();
    let auth = config.invite.secret.member_auth(&config.invite.room);
    *shared.keys.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(MemberKeys::new(me, auth, config.rotation, now));
    *shared.me.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
    *shared.relay.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
    {
        let mut members = shared.members.lock().unwrap_or_else(|e| e.into_inner());
        members.clear();
        members.extend(others.iter().map(|m| (m.id, m.clone())));
    }
    set_state(shared, SessionState::Joined { you: me });
    tracing::info!(
        "joined room {} as {me:?} with {} others",
        config.invite.room,
        others.len()
    );

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
    *shared.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(out_tx.clone());
    let announce = |keys: &MemberKeys, to: Option<MemberId>| ClientMessage::Send {
        to,
        body: encode_peer(&PeerMessage::Announce(keys.announce())),
    };
    if let Some(k) = shared
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        let _ = out_tx.send(announce(k, None));
    }
    for m in &others {
        try_direct(endpoint, shared, config, me, m);
    }
    // A fresh sync with everyone: they may have missed our edits while we were away.
    shared
        .doc
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .peers
        .clear();
    sync_doc_all(shared);

    let writer = async {
        while let Some(msg) = out_rx.recv().await {
            if write_frame(&mut send, &msg).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        while let Ok(Some(msg)) = read_frame::<RelayMessage>(&mut recv).await {
            match msg {
                RelayMessage::Joined(info) => {
                    shared
                        .members
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(info.id, info.clone());
                    // A newcomer sees who is here at once, not at the next heartbeat.
                    shared
                        .presence_out
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .touch();
                    if let Some(k) = shared
                        .keys
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                    {
                        let _ = out_tx.send(announce(k, Some(info.id)));
                    }
                    try_direct(endpoint, shared, config, me, &info);
                    shared
                        .doc
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .peers
                        .remove(&info.participant);
                    sync_doc_to(shared, &out_tx, me, &info);
                }
                RelayMessage::Left(id) => {
                    shared
                        .members
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(c) = shared
                        .direct
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id)
                    {
                        c.close(0u32.into(), b"left");
                    }
                    if let Some(k) = shared
                        .keys
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                    {
                        k.remove_member(id);
                    }
                }
                RelayMessage::From { from, body } => {
                    handle_peer_message(shared, from, &body, &out_tx)
                }
                _ => {}
            }
        }
    };
    let datagrams = async {
        while let Ok(d) = conn.read_datagram().await {
            receive_datagram(shared, &d);
        }
    };
    let keys_tick = async {
        let mut tick = tokio::time::interval(KEY_TICK);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut keys = shared.keys.lock().unwrap_or_else(|e| e.into_inner());
            let Some(k) = keys.as_mut() else { continue };
            if let Some((ann, grants)) = k.maybe_rotate(now) {
                let _ = out_tx.send(ClientMessage::Send {
                    to: None,
                    body: encode_peer(&PeerMessage::Announce(ann)),
                });
                for g in grants {
                    let to = Some(g.to);
                    let _ = out_tx.send(ClientMessage::Send {
                        to,
                        body: encode_peer(&PeerMessage::Grant(g)),
                    });
                }
            }
            k.expire(now);
        }
    };
    let presence_tick = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / MAX_RATE_HZ);
        loop {
            tick.tick().await;
            let me = *shared.me.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(msg) = me.and_then(|me| presence_due(shared, me)) {
                let _ = out_tx.send(msg);
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = datagrams => {}
        _ = keys_tick => {}
        _ = presence_tick => {}
        _ = conn.closed() => {}
    }
    *shared.relay.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *shared.control.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *shared.me.lock().unwrap_or_else(|e| e.into_inner()) = None;
    for (_, c) in std::mem::take(&mut *shared.direct.lock().unwrap_or_else(|e| e.into_inner())) {
        c.close(0u32.into(), b"rejoining");
    }
    shared
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

fn handle_peer_message(
    shared: &Shared,
    from: MemberId,
    body: &[u8],
    out: &mpsc::UnboundedSender<ClientMessage>,
) {
    let Ok(msg) = decode_body::<PeerMessage>(body) else {
        shared.counters.malformed.fetch_add(1, Relaxed);
        return;
    };
    match &msg {
        PeerMessage::Doc {
            nonce,
            sealed,
            part,
            parts,
        } => return receive_doc(shared, from, false, (nonce, sealed), (*part, *parts)),
        PeerMessage::Presence { nonce, sealed } => {
            return receive_presence(shared, from, nonce, sealed)
        }
        _ => {}
    }
    let mut keys = shared.keys.lock().unwrap_or_else(|e| e.into_inner());
    let Some(k) = keys.as_mut() else { return };
    let result = match msg {
        PeerMessage::Announce(a) if a.member == from => k.accept_announce(&a).map(|grant| {
            let _ = out.send(ClientMessage::Send {
                to: Some(from),
                body: encode_peer(&PeerMessage::Grant(grant)),
            });
        }),
        PeerMessage::Grant(g) if g.from == from => k.accept_grant(&g, Instant::now()),
        _ => Err(CryptoError::NotForUs),
    };
    if let Err(e) = result {
        tracing::warn!("key message from {from:?} refused: {e}");
        shared.counters.forged.fetch_add(1, Relaxed);
    }
}

/// Opens what a relay or a direct path delivered: one `[sender][sealed audio]` datagram or a
/// bundle of them, and hands each frame to the application.
fn receive_datagram(shared: &Shared, bytes: &[u8]) {
    for item in forwarded_items(bytes) {
        match item {
            Ok(fwd) => receive_forwarded(shared, fwd),
            Err(_) => {
                shared.counters.malformed.fetch_add(1, Relaxed);
                return;
            }
        }
    }
}

fn receive_forwarded(shared: &Shared, fwd: Forwarded<'_>) {
    let c = &shared.counters;
    let mut buf = fwd.datagram.to_vec();
    // Earlier frames the datagram carries that we never had (redundancy), newest first.
    let mut fresh = [false; MAX_REDUNDANT];
    let opened = {
        let mut keys = shared.keys.lock().unwrap_or_else(|e| e.into_inner());
        let Some(k) = keys.as_mut() else {
            c.unkeyed.fetch_add(1, Relaxed);
            return;
        };
        let opened = k.open_audio(fwd.sender, &mut buf);
        if let Ok(o) = &opened {
            if let (true, Ok((_, older))) = (o.redundant, unpack_frames(o.body)) {
                for (i, frame) in older.iter().enumerate() {
                    let back = o.seq.wrapping_sub(i as u32 + 1);
                    fresh[i] = frame.is_some() && k.missing(fwd.sender, o.epoch, o.stem, back);
                }
            }
        }
        opened
    };
    let o = match opened {
        Ok(o) => o,
        Err(CryptoError::Replay | CryptoError::TooOld) => {
            c.replayed.fetch_add(1, Relaxed);
            return;
        }
        Err(CryptoError::UnknownKey) => {
            c.unkeyed.fetch_add(1, Relaxed);
            return;
        }
        Err(CryptoError::Forged) => {
            c.forged.fetch_add(1, Relaxed);
            return;
        }
        Err(_) => {
            c.malformed.fetch_add(1, Relaxed);
            return;
        }
    };
    let Some(participant) = participant_of(shared, fwd.sender) else {
        c.unkeyed.fetch_add(1, Relaxed);
        return;
    };
    c.delivered.fetch_add(1, Relaxed);
    let mut on_audio = shared.on_audio.lock().unwrap_or_else(|e| e.into_inner());
    let frame = |seq, media_time, payload| AudioFrame {
        stem: o.stem,
        seq,
        media_time,
        payload,
    };
    if !o.redundant {
        on_audio(participant, frame(o.seq, o.media_time, o.body));
        return;
    }
    // Sealed by a member but not a container: nothing we can play.
    let Ok((primary, older)) = unpack_frames(o.body) else {
        c.malformed.fetch_add(1, Relaxed);
        return;
    };
    // Recovered frames first, oldest first, so they arrive in order.
    for i in (0..MAX_REDUNDANT).rev() {
        let (true, Some(older)) = (fresh[i], older[i]) else {
            continue;
        };
        let back = u64::from(older.units_back) * MEDIA_UNIT_SAMPLES;
        let Some(media_time) = o.media_time.checked_sub(back) else {
            continue;
        };
        c.recovered.fetch_add(1, Relaxed);
        on_audio(
            participant,
            frame(o.seq.wrapping_sub(i as u32 + 1), media_time, older.frame),
        );
    }
    on_audio(participant, frame(o.seq, o.media_time, primary));
}

/// Tries a direct path to `other`. The member with the lower id dials (one connection per
/// pair: zero-length connection ids route by address); the other accepts.
fn try_direct(
    endpoint: &quinn::Endpoint,
    shared: &Arc<Shared>,
    config: &SessionConfig,
    me: MemberId,
    other: &MemberInfo,
) {
    if config.force_relay || me > other.id {
        return;
    }
    let Ok(client) = direct_client_config(shared.congestion.clone()) else {
        return;
    };
    let (endpoint, shared, other) = (endpoint.clone(), shared.clone(), other.clone());
    tokio::spawn(async move {
        for attempt in 1..=DIRECT_PATH_ATTEMPTS {
            let still_here = shared
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&other.id);
            let already = shared
                .direct
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&other.id);
            if !still_here || already || shared.stopped.load(Relaxed) {
                return;
            }
            let Ok(connecting) = endpoint.connect_with(client.clone(), other.observed, SERVER_NAME)
            else {
                return;
            };
            match tokio::time::timeout(DIRECT_PATH_TIMEOUT, connecting).await {
                Ok(Ok(conn)) => {
                    tracing::info!("direct path to {} ({:?})", other.name, other.id);
                    adopt_direct(&shared, other.id, conn).await;
                    return;
                }
                _ => tracing::info!(
                    "no direct path to {} (attempt {attempt}); the relay carries its audio",
                    other.name
                ),
            }
            tokio::time::sleep(DIRECT_PATH_RETRY).await;
        }
    });
}

/// Accepts direct paths dialled by other members, recognised by their observed address.
async fn accept_direct(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let remote = conn.remote_address();
            let find = || {
                shared
                    .members
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .find(|m| m.observed == remote)
                    .map(|m| m.id)
            };
            let deadline = tokio::time::Instant::now() + RECOGNISE_TIMEOUT;
            let mut member = find();
            while member.is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                member = find();
            }
            let Some(id) = member else {
                conn.close(2u32.into(), b"unknown member");
                return;
            };
            adopt_direct(&shared, id, conn).await;
        });
    }
}

/// The direct path's control streams: we send on one stream we open, and read the one the
/// member opens. Only session-document messages travel here; keys and presence stay on the
/// relay, which every member reaches.
fn serve_direct_control(
    shared: &Arc<Shared>,
    member: MemberId,
    conn: &Connection,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedSender<PeerMessage>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<PeerMessage>();
    shared
        .direct_control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(member, tx.clone());
    let ours = tx.clone();
    let (shared, conn) = (shared.clone(), conn.clone());
    let task = tokio::spawn(async move {
        let writer = async {
            let Ok(mut send) = conn.open_uni().await else {
                return;
            };
            while let Some(msg) = rx.recv().await {
                if write_frame(&mut send, &msg).await.is_err() {
                    return;
                }
            }
        };
        let reader = async {
            let Ok(mut recv) = conn.accept_uni().await else {
                return;
            };
            while let Ok(Some(msg)) = read_frame::<PeerMessage>(&mut recv).await {
                if let PeerMessage::Doc {
                    nonce,
                    sealed,
                    part,
                    parts,
                } = &msg
                {
                    shared.counters.doc_direct.fetch_add(1, Relaxed);
                    receive_doc(&shared, member, true, (nonce, sealed), (*part, *parts));
                }
            }
        };
        // Either side ending ends both; the document then goes by the relay.
        tokio::select! {
            _ = writer => {}
            _ = reader => {}
        }
        close_direct_control(&shared, member, &ours);
    });
    (task, tx)
}

/// Stops sending the document over a direct path (if `tx` is still its outbox) and starts
/// that peer's sync afresh by the relay: what was in flight on the path may be lost.
fn close_direct_control(
    shared: &Shared,
    member: MemberId,
    tx: &mpsc::UnboundedSender<PeerMessage>,
) {
    {
        let mut map = shared
            .direct_control
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !map.get(&member).is_some_and(|t| t.same_channel(tx)) {
            return;
        }
        map.remove(&member);
    }
    let participant = participant_of(shared, member);
    if let Some(p) = participant {
        shared
            .doc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peers
            .remove(&p);
    }
    sync_doc_all(shared);
}

/// Uses `conn` for `member`'s audio until it closes, then falls back to the relay.
async fn adopt_direct(shared: &Arc<Shared>, member: MemberId, conn: Connection) {
    // Tells the relay which members no longer need our audio forwarded.
    let update_route = |shared: &Shared| {
        let direct = shared
            .direct
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        if let Some(out) = shared
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = out.send(ClientMessage::Route { direct });
        }
    };
    shared
        .direct
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(member, conn.clone());
    update_route(shared);
    let (control, tx) = serve_direct_control(shared, member, &conn);
    // Sync again over the new path, so nothing waits on the relay.
    sync_doc_all(shared);
    while let Ok(d) = conn.read_datagram().await {
        receive_datagram(shared, &d);
    }
    control.abort();
    close_direct_control(shared, member, &tx);
    let mut direct = shared.direct.lock().unwrap_or_else(|e| e.into_inner());
    if direct
        .get(&member)
        .is_some_and(|c| c.stable_id() == conn.stable_id())
    {
        direct.remove(&member);
    }
    drop(direct);
    update_route(shared);
}
