//! The relay: admits members to rooms, tells them each other's addresses, forwards their sealed
//! datagrams (SFU) and their end-to-end control messages, and reports metrics. It holds room
//! verifiers and its own TLS key, nothing that opens audio or key grants.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::Connection;
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::crypto::AdmissionVerifier;
use crate::invite::{CertFingerprint, RoomId};
use crate::store::RoomStore;
use crate::tls::{relay_endpoint_config, Identity, TlsError};
use crate::transport::{read_frame, write_frame};
use crate::wire::{
    bundle, AudioHeader, ClientMessage, MemberId, MemberInfo, Refusal, RelayMessage,
    AUDIO_HEADER_LEN, BUNDLE_ITEM_OVERHEAD, TAG_LEN,
};

/// Most members per room: one bit each in the direct-route mask.
pub const MAX_MEMBERS: usize = 64;
/// A client must finish joining within this time.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Micro-batching window. A recipient that received a datagram less than this long ago gets
/// the next ones held until the oldest held is this old, then all at once: quinn packs them
/// into one UDP packet, which saves a packet's crypto, header and system call per datagram.
/// A recipient idle for longer is sent to at once, so small rooms see no added delay.
pub const BATCH_WINDOW: Duration = Duration::from_micros(400);
/// Most datagrams held for one recipient (a full packet's worth of low-delay frames).
const MAX_BATCH: usize = 16;
/// Held datagrams are flushed at least this often, whatever arrives.
const BATCH_SWEEP: Duration = Duration::from_millis(1);

/// Makes a room in the relay's state folder (creating the relay identity if needed) and returns
/// its invite. `relay_addr` is how musicians reach the relay, `HOST:PORT`.
pub fn create_room(
    state_dir: &std::path::Path,
    relay_addr: &str,
    room: Option<&str>,
) -> Result<crate::Invite, CreateRoomError> {
    let identity = Identity::load_or_create(state_dir)?;
    let room = match room {
        Some(r) => RoomId::new(r).map_err(|_| CreateRoomError::RoomName)?,
        None => RoomId::random(),
    };
    let secret = crate::RoomSecret::generate();
    // Through the invite parser, so a bad address is caught here and not by the band.
    let invite: crate::Invite = format!(
        "echoel://{relay_addr}/{room}?fp={}&secret={}",
        identity.fingerprint(),
        secret.to_base64()
    )
    .parse()
    .map_err(|_| CreateRoomError::Address(relay_addr.to_owned()))?;
    RoomStore::new(state_dir)
        .put(&room, &secret.verifier(&room))
        .map_err(|source| CreateRoomError::Store {
            path: state_dir.display().to_string(),
            source,
        })?;
    Ok(invite)
}

/// A room could not be made.
#[derive(Debug, Error)]
pub enum CreateRoomError {
    /// Identity setup.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Bad room name.
    #[error("room names use letters, digits, - _ . (1 to 64 characters)")]
    RoomName,
    /// Bad relay address.
    #[error("relay address `{0}` is not HOST:PORT")]
    Address(String),
    /// The room store could not be written.
    #[error("cannot save the room in {path}: {source}")]
    Store {
        /// State folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How to run a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// UDP address to serve on.
    pub listen: SocketAddr,
    /// Folder holding the certificate, key and rooms.
    pub state_dir: PathBuf,
    /// TCP address for Prometheus-style metrics, if any.
    pub metrics: Option<SocketAddr>,
}

/// The relay could not start.
#[derive(Debug, Error)]
pub enum RelayError {
    /// Identity or TLS setup.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source} — is another relay running there?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Relay counters, exported as metrics.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Members admitted.
    pub joins: AtomicU64,
    /// Joins refused for a wrong secret.
    pub refused_wrong_secret: AtomicU64,
    /// Joins refused for an unknown room.
    pub refused_unknown_room: AtomicU64,
    /// Joins refused otherwise (full, protocol, timeout).
    pub refused_other: AtomicU64,
    /// Datagrams received from members.
    pub datagrams_in: AtomicU64,
    /// Datagram copies sent to members.
    pub datagrams_forwarded: AtomicU64,
    /// Datagrams dropped: not an audio datagram.
    pub dropped_malformed: AtomicU64,
    /// Datagrams dropped: the sender was not (yet) admitted.
    pub dropped_not_member: AtomicU64,
    /// Datagram copies quinn refused to queue.
    pub dropped_send: AtomicU64,
    /// Batches handed to quinn (each one or more datagrams for one recipient).
    pub batches: AtomicU64,
    /// Control messages forwarded between members.
    pub control_forwarded: AtomicU64,
}

struct Member {
    info: MemberInfo,
    conn: Connection,
    control: mpsc::UnboundedSender<RelayMessage>,
    /// Members this one reaches directly: the relay does not forward its audio to them.
    direct: AtomicU64,
    /// Datagrams waiting to be sent to this member.
    outbox: Mutex<Outbox>,
}

/// A recipient's held datagrams.
#[derive(Default)]
struct Outbox {
    held: Vec<Bytes>,
    oldest: Option<Instant>,
    last_arrival: Option<Instant>,
}

impl Member {
    /// Queues `datagram` and sends what is due (see [`BATCH_WINDOW`]).
    fn forward(&self, datagram: Bytes, now: Instant, metrics: &RelayMetrics) {
        let mut ob = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        let busy = ob
            .last_arrival
            .is_some_and(|t| now.duration_since(t) < BATCH_WINDOW);
        ob.last_arrival = Some(now);
        ob.held.push(datagram);
        let oldest = *ob.oldest.get_or_insert(now);
        if !busy || now.duration_since(oldest) >= BATCH_WINDOW || ob.held.len() >= MAX_BATCH {
            self.flush(&mut ob, metrics);
        }
    }

    /// Sends everything held: a single datagram as is, several as bundles that fill the
    /// path's datagram size, so quinn handles one datagram per batch instead of one per item.
    fn flush(&self, ob: &mut Outbox, metrics: &RelayMetrics) {
        ob.oldest = None;
        if ob.held.is_empty() {
            return;
        }
        let items = ob.held.len() as u64;
        let sent = if ob.held.len() == 1 {
            let d = ob.held.pop().expect("one held");
            self.send(d)
        } else {
            let max = self.conn.max_datagram_size().unwrap_or(1200);
            let mut sent = 0;
            let mut start = 0;
            while start < ob.held.len() {
                let mut size = 1;
                let mut end = start;
                while end < ob.held.len() && size + BUNDLE_ITEM_OVERHEAD + ob.held[end].len() <= max
                {
                    size += BUNDLE_ITEM_OVERHEAD + ob.held[end].len();
                    end += 1;
                }
                if end == start {
                    // An item too large to bundle goes alone.
                    sent += self.send(ob.held[start].clone());
                    start += 1;
                    continue;
                }
                let mut buf = Vec::with_capacity(size);
                bundle(ob.held[start..end].iter().map(|b| &b[..]), &mut buf);
                if self.send(Bytes::from(buf)) == 1 {
                    sent += (end - start) as u64;
                }
                start = end;
            }
            ob.held.clear();
            sent
        };
        metrics.batches.fetch_add(1, Relaxed);
        metrics.datagrams_forwarded.fetch_add(sent, Relaxed);
        metrics.dropped_send.fetch_add(items - sent, Relaxed);
    }

    /// Hands one datagram to quinn; 1 if queued.
    fn send(&self, d: Bytes) -> u64 {
        u64::from(self.conn.send_datagram(d).is_ok())
    }

    /// Flushes if the oldest held datagram has waited a full window.
    fn flush_if_stale(&self, now: Instant, metrics: &RelayMetrics) {
        let mut ob = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if ob
            .oldest
            .is_some_and(|t| now.duration_since(t) >= BATCH_WINDOW)
        {
            self.flush(&mut ob, metrics);
        }
    }
}

struct Room {
    verifier: AdmissionVerifier,
    members: Mutex<BTreeMap<MemberId, Arc<Member>>>,
    /// Snapshot of `members` for the forwarding path, replaced on every join and leave.
    targets: RwLock<Arc<Vec<Arc<Member>>>>,
}

impl Room {
    fn refresh_targets(&self, members: &BTreeMap<MemberId, Arc<Member>>) {
        let snapshot = Arc::new(members.values().cloned().collect());
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    fn broadcast(&self, except: MemberId, msg: &RelayMessage) {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        for m in members.values().filter(|m| m.info.id != except) {
            let _ = m.control.send(msg.clone());
        }
    }
}

struct Shared {
    #[cfg(feature = "danger-test-hooks")]
    tap: Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
    /// Test hook: drop every n-th audio datagram (0: none), a lossy path on loopback.
    #[cfg(feature = "danger-test-hooks")]
    drop_every: AtomicU64,
    #[cfg(feature = "danger-test-hooks")]
    seen: AtomicU64,
    store: RoomStore,
    rooms: Mutex<HashMap<RoomId, Arc<Room>>>,
    metrics: RelayMetrics,
}

impl Shared {
    /// The room, loading it from the store if the relay has not seen it yet (rooms made by
    /// `echoel invite` while the relay runs).
    fn room(&self, id: &RoomId) -> Option<Arc<Room>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = rooms.get(id) {
            return Some(r.clone());
        }
        let verifier = match self.store.load() {
            Ok(mut all) => all.remove(id)?,
            Err(e) => {
                tracing::warn!("cannot read the room store: {e}");
                return None;
            }
        };
        let room = Arc::new(Room {
            verifier,
            members: Mutex::new(BTreeMap::new()),
            targets: RwLock::new(Arc::new(Vec::new())),
        });
        rooms.insert(id.clone(), room.clone());
        Some(room)
    }
}

/// A bound relay, ready to run.
pub struct Relay {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    metrics_listener: Option<tokio::net::TcpListener>,
    fingerprint: CertFingerprint,
}

impl Relay {
    /// Loads (or creates) the identity and binds the sockets. Call within a tokio runtime.
    pub async fn bind(config: &RelayConfig) -> Result<Self, RelayError> {
        let identity = Identity::load_or_create(&config.state_dir)?;
        let socket =
            std::net::UdpSocket::bind(config.listen).map_err(|source| RelayError::Bind {
                addr: config.listen,
                source,
            })?;
        let endpoint = quinn::Endpoint::new(
            relay_endpoint_config(&identity),
            Some(identity.relay_server_config()?),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics_listener = match config.metrics {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| RelayError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            endpoint,
            shared: Arc::new(Shared {
                #[cfg(feature = "danger-test-hooks")]
                tap: Mutex::new(None),
                #[cfg(feature = "danger-test-hooks")]
                drop_every: AtomicU64::new(0),
                #[cfg(feature = "danger-test-hooks")]
                seen: AtomicU64::new(0),
                store: RoomStore::new(&config.state_dir),
                rooms: Mutex::new(HashMap::new()),
                metrics: RelayMetrics::default(),
            }),
            metrics_listener,
            fingerprint: identity.fingerprint(),
        })
    }

    /// The UDP address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The metrics address actually bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The certificate fingerprint invites must pin.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// Live counters.
    pub fn metrics(&self) -> Arc<impl std::ops::Deref<Target = RelayMetrics>> {
        Arc::new(MetricsView(self.shared.clone()))
    }

    /// Test hook: every datagram the relay receives from an admitted member, as received.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_tap_datagrams(&self) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.shared.tap.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Test hook: drops every `n`-th audio datagram members send (0: none).
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_drop_every(&self, n: u64) {
        self.shared.drop_every.store(n, Relaxed);
    }

    /// Serves until `shutdown` completes, then closes every connection cleanly.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        if let Some(listener) = self.metrics_listener {
            tokio::spawn(serve_metrics(listener, self.shared.clone()));
        }
        let sweeper = tokio::spawn(sweep_batches(self.shared.clone()));
        let accept = async {
            while let Some(incoming) = self.endpoint.accept().await {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => serve_member(conn, shared).await,
                        Err(e) => tracing::debug!("handshake failed: {e}"),
                    }
                });
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = shutdown => {}
        }
        sweeper.abort();
        self.endpoint.close(0u32.into(), b"relay shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

struct MetricsView(Arc<Shared>);
impl std::ops::Deref for MetricsView {
    type Target = RelayMetrics;
    fn deref(&self) -> &RelayMetrics {
        &self.0.metrics
    }
}

/// A connection's membership, once admitted; read by its datagram forwarder.
type Membership = Arc<RwLock<Option<(Arc<Room>, Arc<Member>)>>>;

/// One member's connection from handshake to goodbye.
async fn serve_member(conn: Connection, shared: Arc<Shared>) {
    let admitted: Membership = Arc::new(RwLock::new(None));
    let datagrams = tokio::spawn(forward_datagrams(
        conn.clone(),
        admitted.clone(),
        shared.clone(),
    ));
    match admit(&conn, &shared).await {
        Ok((room, member, send, recv, rx)) => {
            *admitted.write().unwrap_or_else(|e| e.into_inner()) =
                Some((room.clone(), member.clone()));
            run_control(&room, &member, send, recv, rx, &shared).await;
            // Gone: out of the room, and everyone is told.
            let id = member.info.id;
            {
                let mut members = room.members.lock().unwrap_or_else(|e| e.into_inner());
                members.remove(&id);
                room.refresh_targets(&members);
            }
            room.broadcast(id, &RelayMessage::Left(id));
            tracing::info!("member {} left", member.info.name);
        }
        Err(refusal) => {
            let m = &shared.metrics;
            match refusal {
                Refusal::WrongSecret => &m.refused_wrong_secret,
                Refusal::UnknownRoom => &m.refused_unknown_room,
                _ => &m.refused_other,
            }
            .fetch_add(1, Relaxed);
            // Let the refusal reach the client before the close.
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.close(1u32.into(), refusal.explain().as_bytes());
        }
    }
    datagrams.abort();
}

type Admitted = (
    Arc<Room>,
    Arc<Member>,
    quinn::SendStream,
    quinn::RecvStream,
    mpsc::UnboundedReceiver<RelayMessage>,
);

/// Join → challenge → proof → welcome, or a refusal.
async fn admit(conn: &Connection, shared: &Shared) -> Result<Admitted, Refusal> {
    let (mut send, mut recv) = tokio::time::timeout(JOIN_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| Refusal::Protocol)?
        .map_err(|_| Refusal::Protocol)?;
    let result = async {
        let join = tokio::time::timeout(JOIN_TIMEOUT, read_frame::<ClientMessage>(&mut recv)).await;
        let Ok(Ok(Some(ClientMessage::Join {
            room,
            name,
            participant,
        }))) = join
        else {
            return Err(Refusal::Protocol);
        };
        let room_id = RoomId::new(&room).map_err(|_| Refusal::UnknownRoom)?;
        let room = shared.room(&room_id).ok_or(Refusal::UnknownRoom)?;
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        write_frame(&mut send, &RelayMessage::Challenge { nonce })
            .await
            .map_err(|_| Refusal::Protocol)?;
        let proof =
            tokio::time::timeout(JOIN_TIMEOUT, read_frame::<ClientMessage>(&mut recv)).await;
        let Ok(Ok(Some(ClientMessage::Proof { proof }))) = proof else {
            return Err(Refusal::Protocol);
        };
        let binding = channel_binding(conn, &room_id).ok_or(Refusal::Protocol)?;
        if !room.verifier.check(&nonce, &binding, &proof) {
            return Err(Refusal::WrongSecret);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (member, others) = {
            let mut members = room.members.lock().unwrap_or_else(|e| e.into_inner());
            let id = (0..MAX_MEMBERS as u8)
                .map(MemberId)
                .find(|id| !members.contains_key(id))
                .ok_or(Refusal::RoomFull)?;
            let member = Arc::new(Member {
                info: MemberInfo {
                    id,
                    participant,
                    name: name.chars().take(64).collect(),
                    observed: conn.remote_address(),
                },
                conn: conn.clone(),
                control: tx,
                direct: AtomicU64::new(0),
                outbox: Mutex::new(Outbox::default()),
            });
            let others: Vec<MemberInfo> = members.values().map(|m| m.info.clone()).collect();
            members.insert(id, member.clone());
            room.refresh_targets(&members);
            (member, others)
        };
        let welcome = RelayMessage::Welcome {
            you: member.info.id,
            observed: member.info.observed,
            members: others,
        };
        write_frame(&mut send, &welcome)
            .await
            .map_err(|_| Refusal::Protocol)?;
        room.broadcast(member.info.id, &RelayMessage::Joined(member.info.clone()));
        shared.metrics.joins.fetch_add(1, Relaxed);
        tracing::info!(
            "member {} joined room {room_id} as {:?}",
            member.info.name,
            member.info.id
        );
        Ok((room, member, rx))
    }
    .await;
    match result {
        Ok((room, member, rx)) => Ok((room, member, send, recv, rx)),
        Err(refusal) => {
            let _ = write_frame(&mut send, &RelayMessage::Refused(refusal)).await;
            let _ = send.finish();
            Err(refusal)
        }
    }
}

/// Keying material both ends derive from this TLS session, so a proof cannot be replayed on
/// another connection.
pub fn channel_binding(conn: &Connection, room: &RoomId) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(
        &mut out,
        b"EXPORTER-echoel-admission",
        room.as_str().as_bytes(),
    )
    .ok()?;
    Some(out)
}

/// Relays a member's control messages until it leaves.
async fn run_control(
    room: &Room,
    member: &Member,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut outbox: mpsc::UnboundedReceiver<RelayMessage>,
    shared: &Shared,
) {
    let writer = async {
        while let Some(msg) = outbox.recv().await {
            if write_frame(&mut send, &msg).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        loop {
            match read_frame::<ClientMessage>(&mut recv).await {
                Ok(Some(ClientMessage::Send { to, body })) => {
                    let msg = RelayMessage::From {
                        from: member.info.id,
                        body,
                    };
                    match to {
                        Some(to) => {
                            let members = room.members.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(m) = members.get(&to) {
                                let _ = m.control.send(msg);
                            }
                        }
                        None => room.broadcast(member.info.id, &msg),
                    }
                    shared.metrics.control_forwarded.fetch_add(1, Relaxed);
                }
                Ok(Some(ClientMessage::Route { direct })) => {
                    let mask = direct
                        .iter()
                        .filter(|m| usize::from(m.0) < MAX_MEMBERS)
                        .fold(0u64, |acc, m| acc | 1 << m.0);
                    member.direct.store(mask, Relaxed);
                }
                Ok(Some(_)) => {} // joining messages after joining: ignored
                Ok(None) | Err(_) => break,
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = member.conn.closed() => {}
    }
}

/// Forwards a member's datagrams to the rest of its room, prefixed with its id. Datagrams
/// before admission are counted and dropped.
async fn forward_datagrams(conn: Connection, admitted: Membership, shared: Arc<Shared>) {
    let m = &shared.metrics;
    while let Ok(datagram) = conn.read_datagram().await {
        m.datagrams_in.fetch_add(1, Relaxed);
        let Some((room, me)) = admitted.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            m.dropped_not_member.fetch_add(1, Relaxed);
            continue;
        };
        if datagram.len() < AUDIO_HEADER_LEN + TAG_LEN || AudioHeader::decode(&datagram).is_err() {
            m.dropped_malformed.fetch_add(1, Relaxed);
            continue;
        }
        #[cfg(feature = "danger-test-hooks")]
        if let Some(tap) = shared
            .tap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tap.send(datagram.clone());
        }
        #[cfg(feature = "danger-test-hooks")]
        {
            let n = shared.drop_every.load(Relaxed);
            if n > 0 && (shared.seen.fetch_add(1, Relaxed) + 1).is_multiple_of(n) {
                continue;
            }
        }
        let out = prefix(me.info.id, &datagram);
        let targets = room
            .targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let direct = me.direct.load(Relaxed);
        let now = Instant::now();
        for t in targets.iter() {
            let id = t.info.id;
            if id == me.info.id || direct & (1 << id.0) != 0 {
                continue;
            }
            t.forward(out.clone(), now, m);
        }
    }
}

/// Backstop for micro-batching: flushes what waited a full window when no later datagram
/// came to flush it.
async fn sweep_batches(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(BATCH_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let rooms: Vec<Arc<Room>> = shared
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        for room in rooms {
            let targets = room
                .targets
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for t in targets.iter() {
                t.flush_if_stale(now, &shared.metrics);
            }
        }
    }
}

fn prefix(sender: MemberId, datagram: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + datagram.len());
    b.put_u8(sender.0);
    b.extend_from_slice(datagram);
    b.freeze()
}

/// Prometheus text exposition of the relay's state.
fn render_metrics(shared: &Shared) -> String {
    let m = &shared.metrics;
    let rooms = shared.rooms.lock().unwrap_or_else(|e| e.into_inner());
    let members: usize = rooms
        .values()
        .map(|r| r.members.lock().unwrap_or_else(|e| e.into_inner()).len())
        .sum();
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "echoel_relay_rooms",
        "Rooms with state loaded.",
        rooms.len() as u64,
    );
    gauge("echoel_relay_members", "Members connected.", members as u64);
    let counters: [(&str, &str, &AtomicU64); 11] = [
        (
            "echoel_relay_batches_total",
            "Datagram batches handed to quinn.",
            &m.batches,
        ),
        ("echoel_relay_joins_total", "Members admitted.", &m.joins),
        (
            "echoel_relay_refused_wrong_secret_total",
            "Joins refused: wrong secret.",
            &m.refused_wrong_secret,
        ),
        (
            "echoel_relay_refused_unknown_room_total",
            "Joins refused: unknown room.",
            &m.refused_unknown_room,
        ),
        (
            "echoel_relay_refused_other_total",
            "Joins refused: full, timeout or protocol.",
            &m.refused_other,
        ),
        (
            "echoel_relay_datagrams_in_total",
            "Datagrams received.",
            &m.datagrams_in,
        ),
        (
            "echoel_relay_datagrams_forwarded_total",
            "Datagram copies forwarded.",
            &m.datagrams_forwarded,
        ),
        (
            "echoel_relay_dropped_malformed_total",
            "Datagrams dropped: malformed.",
            &m.dropped_malformed,
        ),
        (
            "echoel_relay_dropped_not_member_total",
            "Datagrams dropped: sender not admitted.",
            &m.dropped_not_member,
        ),
        (
            "echoel_relay_dropped_send_total",
            "Datagram copies not queued.",
            &m.dropped_send,
        ),
        (
            "echoel_relay_control_forwarded_total",
            "Control messages forwarded.",
            &m.control_forwarded,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Relaxed)
        );
    }
    s
}

async fn serve_metrics(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut req)).await;
            let body = render_metrics(&shared);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
