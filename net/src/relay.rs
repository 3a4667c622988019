//! The relay's driver: the QUIC endpoint, one task per connection and one per room. Each room
//! task owns its [`RelayCore`] (admission, membership, routing, batching) and the room's
//! connections; connection tasks read and write their streams and hand what arrives to it
//! through bounded channels. It holds room verifiers and its own TLS key, nothing that opens
//! audio or key grants.

mod gate;
#[cfg(feature = "danger-test-hooks")]
mod hooks;
mod metrics;
mod reflector;
pub use gate::{HANDSHAKES_PER_SECOND, HANDSHAKE_BURST};
pub mod scripted;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::Connection;
use rand_core::OsRng;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::core::batch::bundles;
pub use crate::core::batch::BATCH_WINDOW;
pub use crate::core::relay::RelayMetrics;
use crate::core::relay::{
    CloseReason, ConnId, JoinRequest, Outgoing, RelayCore, RelayEvent, RoomLimits, JOIN_TIMEOUT,
};
use crate::crypto::AdmissionVerifier;
use crate::invite::{CertFingerprint, RoomId};
use crate::store::{RoomStore, StoreError, StoreStamp};
use crate::tls::{relay_endpoint_config, Identity, TlsError};
use crate::transport::{read_frame, write_frame};
use crate::wire::{ClientMessage, Refusal, RelayMessage};

/// Control inputs a room task may have waiting: a connection's reader waits when it is full.
const ROOM_INPUTS: usize = 1024;
/// Datagrams a room task may have waiting; more are dropped and counted, so a flood from one
/// member costs the room a burst of loss, never unbounded memory.
const ROOM_DATAGRAMS: usize = 4096;
/// Datagrams a room task takes per wake before it looks at control input and timers again.
const DATAGRAMS_PER_WAKE: usize = 64;
/// Connections that may be between their first packet and a read Join at once (each is
/// bounded in time by two [`JOIN_TIMEOUT`]s: handshake, then Join). Musicians join in well
/// under a second, so this is hundreds of joins a second; a flood of handshakes that never
/// join costs the relay this many connections' state, no more.
const MAX_PENDING_JOINS: usize = 256;
/// The share of those one address may hold: a flood from one host leaves room for everyone
/// else, and a whole band behind one router (one address) still joins at once.
const MAX_PENDING_JOINS_PER_ADDRESS: usize = 32;
/// How long a refusal gets to reach the client before its connection closes.
const REFUSAL_GRACE: Duration = Duration::from_millis(50);

/// Makes a room in the relay's state folder (creating the relay identity if needed) and returns
/// its invite. `relay_addr` is how musicians reach the relay, `HOST:PORT`. A room that exists
/// is refused: making it again would replace its secret and break every invite sent.
pub fn create_room(
    state_dir: &std::path::Path,
    relay_addr: &str,
    room: Option<&str>,
) -> Result<crate::Invite, CreateRoomError> {
    let room = match room {
        Some(r) => RoomId::new(r).map_err(|_| CreateRoomError::RoomName)?,
        None => RoomId::random(),
    };
    new_secret(state_dir, relay_addr, &room, |store, v| {
        store.create(&room, v)
    })
}

/// Gives a room that exists a new secret and returns the new invite: invites made before stop
/// working, for joins from now on (also on a relay that is running).
pub fn rotate_room(
    state_dir: &std::path::Path,
    relay_addr: &str,
    room: &str,
) -> Result<crate::Invite, CreateRoomError> {
    let room = RoomId::new(room).map_err(|_| CreateRoomError::RoomName)?;
    new_secret(state_dir, relay_addr, &room, |store, v| {
        store.rotate(&room, v)
    })
}

fn new_secret(
    state_dir: &std::path::Path,
    relay_addr: &str,
    room: &RoomId,
    save: impl FnOnce(&RoomStore, &crate::crypto::AdmissionVerifier) -> Result<(), StoreError>,
) -> Result<crate::Invite, CreateRoomError> {
    let identity = Identity::load_or_create(state_dir)?;
    let secret = crate::RoomSecret::generate();
    // Through the invite parser, so a bad address is caught here and not by the band.
    let invite: crate::Invite = format!(
        "echoel://{relay_addr}/{room}?fp={}&secret={}",
        identity.fingerprint(),
        secret.to_base64()
    )
    .parse()
    .map_err(|_| CreateRoomError::Address(relay_addr.to_owned()))?;
    save(&RoomStore::new(state_dir), &secret.verifier(room)).map_err(|e| match e {
        StoreError::Io(source) => CreateRoomError::Store {
            path: state_dir.display().to_string(),
            source,
        },
        refused => CreateRoomError::Refused(refused),
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
    /// The room exists (making it) or does not (rotating it).
    #[error(transparent)]
    Refused(StoreError),
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

/// The rooms this relay serves, each by its own task.
struct Directory {
    #[cfg(feature = "danger-test-hooks")]
    hooks: hooks::Hooks,
    store: RoomStore,
    known: Mutex<KnownRooms>,
    rooms: Mutex<HashMap<RoomId, RoomHandle>>,
    metrics: Arc<RelayMetrics>,
    next_conn: AtomicU64,
    pending: Mutex<PendingJoins>,
    rate: Mutex<gate::HandshakeRate>,
}

/// Connections not yet past their Join, in all and by address.
#[derive(Default)]
struct PendingJoins {
    total: usize,
    by_address: HashMap<std::net::IpAddr, usize>,
}

/// A place among the pending joins, given back when dropped.
struct PendingSlot {
    directory: Arc<Directory>,
    address: std::net::IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut p = self
            .directory
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        p.total -= 1;
        if let Some(n) = p.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                p.by_address.remove(&self.address);
            }
        }
    }
}

/// The rooms file as last read, and when it had last changed then: a join for a room nobody
/// made costs a `stat`, not a read of the file.
#[derive(Default)]
struct KnownRooms {
    stamp: Option<StoreStamp>,
    verifiers: HashMap<RoomId, AdmissionVerifier>,
}

/// How connection tasks reach a room task.
#[derive(Clone)]
struct RoomHandle {
    inputs: mpsc::Sender<RoomInput>,
    datagrams: mpsc::Sender<(ConnId, Bytes)>,
}

enum RoomInput {
    Join {
        id: ConnId,
        conn: Connection,
        writer: mpsc::Sender<Write>,
        request: JoinRequest,
    },
    Message(ConnId, ClientMessage),
    Written(ConnId),
    Closed(ConnId),
}

/// What a connection's writer task is asked to do, in order.
enum Write {
    Control(RelayMessage),
    Close(CloseReason),
}

impl Directory {
    /// A place for a new connection from `address` among the pending joins, if there is one.
    fn pending_slot(self: &Arc<Self>, address: std::net::IpAddr) -> Option<PendingSlot> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mine = p.by_address.get(&address).copied().unwrap_or(0);
        if p.total >= MAX_PENDING_JOINS || mine >= MAX_PENDING_JOINS_PER_ADDRESS {
            return None;
        }
        p.total += 1;
        *p.by_address.entry(address).or_default() += 1;
        Some(PendingSlot {
            directory: self.clone(),
            address,
        })
    }

    /// The room's verifier as the store has it now, read again only if the file changed.
    fn verifier(&self, id: &RoomId) -> Option<AdmissionVerifier> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = self.store.stamp();
        if known.stamp != Some(stamp) {
            match self.store.load() {
                Ok(file) => {
                    known.verifiers = file.rooms;
                    known.stamp = Some(stamp);
                }
                // Rooms already known keep being served; the read is tried again next join.
                Err(e) => tracing::warn!("cannot read the room store: {e}"),
            }
        }
        known.verifiers.get(id).cloned()
    }

    /// The room's task and its current verifier, the task started if the relay has not served
    /// the room yet: rooms made by `echoel invite` while the relay runs are found, and a room
    /// taken out of the store admits no one new.
    fn room(self: &Arc<Self>, id: &RoomId) -> Option<RoomHandle> {
        let verifier = self.verifier(id)?;
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = rooms.get(id).filter(|r| !r.inputs.is_closed()) {
            return Some(r.clone());
        }
        let core = RelayCore::new(
            verifier.clone(),
            RoomLimits::default(),
            Box::new(OsRng),
            self.metrics.clone(),
        );
        let (inputs, inputs_rx) = mpsc::channel(ROOM_INPUTS);
        let (datagrams, datagrams_rx) = mpsc::channel(ROOM_DATAGRAMS);
        tokio::spawn(serve_room(
            id.clone(),
            core,
            inputs_rx,
            datagrams_rx,
            self.clone(),
        ));
        let handle = RoomHandle { inputs, datagrams };
        rooms.insert(id.clone(), handle.clone());
        Some(handle)
    }
}

/// A bound relay, ready to run.
pub struct Relay {
    endpoint: quinn::Endpoint,
    /// Tells a member the address it is seen at from here (a second port: a member whose
    /// router gives it another port than the QUIC connection's is behind a symmetric NAT).
    reflector: Option<tokio::net::UdpSocket>,
    directory: Arc<Directory>,
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
        let reflector = reflector::bind(endpoint.local_addr().ok()).await;
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
            reflector,
            directory: Arc::new(Directory {
                #[cfg(feature = "danger-test-hooks")]
                hooks: hooks::Hooks::default(),
                store: RoomStore::new(&config.state_dir),
                known: Mutex::default(),
                rooms: Mutex::new(HashMap::new()),
                metrics: Arc::default(),
                next_conn: AtomicU64::new(0),
                pending: Mutex::default(),
                rate: Mutex::default(),
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
    pub fn metrics(&self) -> Arc<RelayMetrics> {
        self.directory.metrics.clone()
    }

    /// Test hook: every datagram the relay receives from a joined member, as received.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_tap_datagrams(&self) -> mpsc::UnboundedReceiver<Bytes> {
        self.directory.hooks.tap()
    }

    /// Test hook: drops every `n`-th audio datagram members send (0: none).
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_drop_every(&self, n: u64) {
        self.directory.hooks.drop_every.store(n, Relaxed);
    }

    /// Test hook: holds every datagram members send this long before the relay forwards it,
    /// a relay far away (the lab has no kernel delay).
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_hold_datagrams(&self, hold: Duration) {
        let micros = u64::try_from(hold.as_micros()).unwrap_or(u64::MAX);
        self.directory.hooks.hold_micros.store(micros, Relaxed);
    }

    /// Serves until `shutdown` completes, then closes every connection cleanly.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let metrics = self
            .metrics_listener
            .map(|l| tokio::spawn(metrics::serve(l, self.directory.clone())));
        let reflector = self.reflector.map(|r| tokio::spawn(reflector::serve(r)));
        let accept = async {
            while let Some(incoming) = self.endpoint.accept().await {
                let address = incoming.remote_address().ip().to_canonical();
                let validated = incoming.remote_address_validated();
                let gate = self
                    .directory
                    .rate
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .check(address, validated, Instant::now());
                match gate {
                    gate::Gate::Accept => {}
                    gate::Gate::Validate => {
                        self.directory.metrics.retried.fetch_add(1, Relaxed);
                        if let Err(e) = incoming.retry() {
                            e.into_incoming().refuse();
                        }
                        continue;
                    }
                    gate::Gate::Refuse => {
                        self.directory.metrics.refused_rate.fetch_add(1, Relaxed);
                        incoming.refuse();
                        continue;
                    }
                }
                let Some(slot) = self.directory.pending_slot(address) else {
                    self.directory.metrics.refused_busy.fetch_add(1, Relaxed);
                    incoming.refuse();
                    continue;
                };
                let directory = self.directory.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(JOIN_TIMEOUT, incoming).await {
                        Ok(Ok(conn)) => serve_connection(conn, directory, slot).await,
                        Ok(Err(e)) => tracing::debug!("handshake failed: {e}"),
                        Err(_) => tracing::debug!("handshake timed out"),
                    }
                });
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = shutdown => {}
        }
        for task in [metrics, reflector].into_iter().flatten() {
            task.abort();
        }
        self.endpoint.close(0u32.into(), b"relay shutting down");
        // The room tasks end once their connections' tasks have.
        self.directory
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
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

/// One connection from handshake to close: reads its Join, finds its room, then hands the
/// room task everything it sends.
async fn serve_connection(conn: Connection, directory: Arc<Directory>, slot: PendingSlot) {
    let metrics = &directory.metrics;
    let Ok(Ok((send, mut recv))) = tokio::time::timeout(JOIN_TIMEOUT, conn.accept_bi()).await
    else {
        metrics.refused_other.fetch_add(1, Relaxed);
        conn.close(1u32.into(), Refusal::Protocol.explain().as_bytes());
        return;
    };
    let join = tokio::time::timeout(JOIN_TIMEOUT, read_frame::<ClientMessage>(&mut recv)).await;
    let Ok(Ok(Some(ClientMessage::Join {
        room,
        name,
        member,
        instance,
        role,
        local,
    }))) = join
    else {
        metrics.refused_other.fetch_add(1, Relaxed);
        return refuse(&conn, send, Refusal::Protocol).await;
    };
    // Past its Join: from here the room's own limits hold the connection.
    drop(slot);
    let found = RoomId::new(&room)
        .ok()
        .and_then(|id| Some((directory.room(&id)?, id)));
    let Some((room, room_id)) = found else {
        metrics.refused_unknown_room.fetch_add(1, Relaxed);
        return refuse(&conn, send, Refusal::UnknownRoom).await;
    };
    let Some(binding) = channel_binding(&conn, &room_id) else {
        metrics.refused_other.fetch_add(1, Relaxed);
        return refuse(&conn, send, Refusal::Protocol).await;
    };
    let id = ConnId(directory.next_conn.fetch_add(1, Relaxed));
    // The core gives up on a member before this fills (`RoomLimits::max_unwritten`).
    let (writer, writes) = mpsc::channel(RoomLimits::default().max_unwritten as usize + 8);
    tokio::spawn(write_control(
        id,
        conn.clone(),
        send,
        writes,
        room.inputs.clone(),
    ));
    let request = JoinRequest {
        name,
        member,
        instance,
        role,
        observed: crate::session::canonical(conn.remote_address()),
        local,
        binding,
    };
    let joined = RoomInput::Join {
        id,
        conn: conn.clone(),
        writer,
        request,
    };
    if room.inputs.send(joined).await.is_err() {
        return;
    }
    let datagrams = tokio::spawn(read_datagrams(
        id,
        conn.clone(),
        room.datagrams.clone(),
        directory.clone(),
    ));
    loop {
        tokio::select! {
            frame = read_frame::<ClientMessage>(&mut recv) => match frame {
                Ok(Some(msg)) => {
                    if room.inputs.send(RoomInput::Message(id, msg)).await.is_err() {
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            },
            _ = conn.closed() => break,
        }
    }
    datagrams.abort();
    let _ = room.inputs.send(RoomInput::Closed(id)).await;
}

/// Refuses a connection the room task never saw.
async fn refuse(conn: &Connection, mut send: quinn::SendStream, refusal: Refusal) {
    let _ = write_frame(&mut send, &RelayMessage::Refused(refusal)).await;
    let _ = send.finish();
    tokio::time::sleep(REFUSAL_GRACE).await;
    conn.close(1u32.into(), refusal.explain().as_bytes());
}

/// Writes what the room task queued for one connection, in order, and reports each control
/// message written.
async fn write_control(
    id: ConnId,
    conn: Connection,
    mut send: quinn::SendStream,
    mut writes: mpsc::Receiver<Write>,
    room: mpsc::Sender<RoomInput>,
) {
    while let Some(w) = writes.recv().await {
        match w {
            Write::Control(msg) => {
                if write_frame(&mut send, &msg).await.is_err() {
                    conn.close(0u32.into(), b"control stream failed");
                    return;
                }
                if room.send(RoomInput::Written(id)).await.is_err() {
                    return;
                }
            }
            Write::Close(reason) => {
                let _ = send.finish();
                tokio::time::sleep(REFUSAL_GRACE).await;
                conn.close(reason.code().into(), reason.explain().as_bytes());
                return;
            }
        }
    }
}

/// Hands a joined connection's datagrams to its room task, dropping (and counting) what the
/// room has no room for.
async fn read_datagrams(
    id: ConnId,
    conn: Connection,
    room: mpsc::Sender<(ConnId, Bytes)>,
    directory: Arc<Directory>,
) {
    while let Ok(datagram) = conn.read_datagram().await {
        #[cfg(feature = "danger-test-hooks")]
        if !directory.hooks.admit(&datagram) {
            continue;
        }
        #[cfg(feature = "danger-test-hooks")]
        if let Some(hold) = directory.hooks.hold() {
            let room = room.clone();
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                let _ = room.try_send((id, datagram));
            });
            continue;
        }
        match room.try_send((id, datagram)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                directory.metrics.dropped_overload.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// A connection the room task serves.
struct Peer {
    conn: Connection,
    writer: mpsc::Sender<Write>,
}

/// One room: owns its core and its connections.
async fn serve_room(
    room: RoomId,
    mut core: RelayCore,
    mut inputs: mpsc::Receiver<RoomInput>,
    mut datagrams: mpsc::Receiver<(ConnId, Bytes)>,
    directory: Arc<Directory>,
) {
    let metrics = directory.metrics.clone();
    let mut peers: HashMap<ConnId, Peer> = HashMap::new();
    loop {
        let timeout = core.poll_timeout();
        let sleep = tokio::time::sleep_until(timeout.unwrap_or_else(Instant::now).into());
        tokio::select! {
            biased;
            input = inputs.recv() => {
                let Some(input) = input else { break };
                let now = Instant::now();
                match input {
                    RoomInput::Join { id, conn, writer, request } => {
                        peers.insert(id, Peer { conn, writer });
                        // As the store has it now: `echoel invite --rotate` or a member's
                        // rotation (written here, so read in order) holds from this join on.
                        if let Some(verifier) = directory.verifier(&room) {
                            core.set_verifier(verifier);
                        }
                        core.handle_join(now, id, request);
                    }
                    RoomInput::Message(id, msg) => core.handle_message(now, id, msg),
                    RoomInput::Written(id) => core.handle_written(now, id),
                    RoomInput::Closed(id) => {
                        peers.remove(&id);
                        core.handle_closed(now, id);
                    }
                }
            }
            Some((id, d)) = datagrams.recv() => {
                let now = Instant::now();
                core.handle_datagram(now, id, &d);
                for _ in 1..DATAGRAMS_PER_WAKE {
                    let Ok((id, d)) = datagrams.try_recv() else { break };
                    core.handle_datagram(now, id, &d);
                }
            }
            _ = sleep, if timeout.is_some() => core.handle_timeout(Instant::now()),
        }
        transmit(&mut core, &mut peers, &metrics);
        while let Some(e) = core.poll_event() {
            match e {
                RelayEvent::Joined(m) => {
                    tracing::info!("member {} joined room {room} as {:?}", m.name, m.id)
                }
                RelayEvent::Left(m) => tracing::info!("member {} left room {room}", m.name),
                RelayEvent::Refused(r) => tracing::info!("a join to room {room} refused: {r:?}"),
                RelayEvent::Rotate { by, verifier } => {
                    // Stored before it holds: a relay restart keeps the new secret.
                    let stored = directory.store.rotate(&room, &verifier);
                    match &stored {
                        Ok(()) => tracing::info!("room {room}: a member rotated its secret"),
                        Err(e) => tracing::warn!("room {room}: rotation not stored: {e}"),
                    }
                    core.handle_rotated(Instant::now(), by, verifier, stored.is_ok());
                    transmit(&mut core, &mut peers, &metrics);
                }
            }
        }
    }
}

/// Sends what the core has for the room's connections. A connection whose writer is full is
/// closed and reported gone.
fn transmit(core: &mut RelayCore, peers: &mut HashMap<ConnId, Peer>, metrics: &RelayMetrics) {
    let mut gone = Vec::new();
    loop {
        while let Some(t) = core.poll_transmit() {
            let Some(peer) = peers.get(&t.to) else {
                continue;
            };
            match t.what {
                Outgoing::Datagrams(items) => {
                    let max = peer.conn.max_datagram_size().unwrap_or(1200);
                    let mut sent = 0;
                    let mut refused = 0;
                    for (d, n) in bundles(items, max) {
                        match peer.conn.send_datagram(d) {
                            Ok(()) => sent += n as u64,
                            Err(_) => refused += n as u64,
                        }
                    }
                    metrics.batches.fetch_add(1, Relaxed);
                    metrics.datagrams_forwarded.fetch_add(sent, Relaxed);
                    metrics.dropped_send.fetch_add(refused, Relaxed);
                }
                Outgoing::Control(msg) => {
                    if peer.writer.try_send(Write::Control(msg)).is_err() {
                        gone.push(t.to);
                    }
                }
                Outgoing::Close(reason) => {
                    if let Some(peer) = peers.remove(&t.to) {
                        if peer.writer.try_send(Write::Close(reason)).is_err() {
                            peer.conn
                                .close(reason.code().into(), reason.explain().as_bytes());
                        }
                    }
                }
            }
        }
        if gone.is_empty() {
            return;
        }
        let now = Instant::now();
        for id in gone.drain(..) {
            if let Some(peer) = peers.remove(&id) {
                let reason = CloseReason::TooSlow;
                peer.conn
                    .close(reason.code().into(), reason.explain().as_bytes());
            }
            core.handle_closed(now, id);
        }
    }
}
