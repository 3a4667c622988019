//! The tasks of the session's paths: punching, dialling and accepting direct paths, and
//! reading and writing a path's streams. They hold no session state; what they learn goes to the driver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::Connection;
use tokio::sync::mpsc;

use super::driver::Input;
use super::socket::PunchSocket;
use super::SessionCounters;
use crate::congestion::CongestionSignal;
use crate::core::member::Via;
use crate::crypto::MemberKey;
use crate::tls::{direct_client_config, path_binding, SERVER_NAME};
use crate::transport::{read_frame, write_frame};
use crate::wire::{MemberId, MemberInfo, PathProof, PeerMessage, MAX_LOCAL_ADDRESSES};
use std::sync::atomic::Ordering::Relaxed;

/// How long one try at a direct path may take before the relay carries that member's audio
/// (QUIC resends its first packet meanwhile: one dropped before the other's punch opened
/// its router costs a resend, not the try).
pub const DIRECT_PATH_TIMEOUT: Duration = Duration::from_millis(1500);
/// Direct paths are tried this many times, this far apart (NAT mappings and busy peers
/// settle); meanwhile and afterwards the relay carries the audio.
const DIRECT_PATH_ATTEMPTS: u32 = 3;
const DIRECT_PATH_RETRY: Duration = Duration::from_secs(1);
/// Each of a member's addresses is dialled this long after the one before, if no path is up
/// yet (the first that answers is the path: a LAN address goes first).
const CANDIDATE_STAGGER: Duration = Duration::from_millis(150);
/// Punches: quick while both ends start (the dialler's first packet must find a hole), then
/// now and then for as long as the dialler tries.
const PUNCH_QUICK: (u32, Duration) = (40, Duration::from_millis(50));
const PUNCH_SLOW: (u32, Duration) = (10, Duration::from_millis(500));

/// One of a member's addresses to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    /// On one of our own networks (a LAN path, no router between).
    pub lan: bool,
}

/// Our socket's addresses on our own networks (not loopback or link-local), with the prefix
/// length of each network: IPv4 ones, then (for a dual-stack socket, `v6`) IPv6 ones.
pub(super) fn local_networks(port: u16, v6: bool) -> Vec<(SocketAddr, u8)> {
    let Ok(mut ifs) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    ifs.sort_by_key(|i| i.ip().is_ipv6());
    ifs.into_iter()
        .filter(|i| !i.is_loopback() && !i.is_link_local() && (v6 || i.ip().is_ipv4()))
        .map(|i| {
            let prefix = match &i.addr {
                if_addrs::IfAddr::V4(a) => a.prefixlen,
                if_addrs::IfAddr::V6(a) => a.prefixlen,
            };
            (SocketAddr::new(i.ip(), port), prefix)
        })
        .take(MAX_LOCAL_ADDRESSES)
        .collect()
}

/// Whether `a` is on one of our networks (`ours`: our addresses and their prefix lengths): no
/// router between us.
pub(super) fn on_our_networks(ours: &[(SocketAddr, u8)], a: SocketAddr) -> bool {
    ours.iter().any(|(o, p)| same_network(o.ip(), a.ip(), *p))
}

fn same_network(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// `other`'s addresses in the order to try them: those on one of our networks, then the one
/// the relay saw, then its other local ones (a network routed between us, or IPv6 addresses
/// no NAT stands in front of); IPv6 ones only for a dual-stack socket (`v6`).
pub fn candidates(other: &MemberInfo, ours: &[(SocketAddr, u8)], v6: bool) -> Vec<Candidate> {
    let on_ours = |a: &SocketAddr| on_our_networks(ours, *a);
    let lan = other.local.iter().filter(|a| on_ours(a));
    let rest = other.local.iter().filter(|a| !on_ours(a));
    let order = lan
        .map(|&addr| Candidate { addr, lan: true })
        .chain(std::iter::once(Candidate {
            addr: other.observed,
            lan: false,
        }))
        .chain(rest.map(|&addr| Candidate { addr, lan: false }));
    let mut out: Vec<Candidate> = Vec::new();
    for c in order {
        if (v6 || c.addr.is_ipv4()) && !out.iter().any(|o| o.addr == c.addr) {
            out.push(c);
        }
    }
    out
}

/// Opens the way to `other`: punches toward each of its addresses from our endpoint's socket
/// and, if we are the dialler, dials them (the first that answers is the path). The driver
/// hears of the path, or of none.
pub(super) struct Reach {
    pub endpoint: quinn::Endpoint,
    pub socket: Arc<PunchSocket>,
    pub signal: Arc<CongestionSignal>,
    pub other: MemberInfo,
    pub candidates: Vec<Candidate>,
    pub dial: bool,
    /// Wait this long first (the path just went down: let the old one drain).
    pub delay: Duration,
    pub driver: mpsc::Sender<Input>,
}

/// The tasks of one try at a direct path, stopped when dropped: a second connection to a
/// member we have a path to would only be closed again, and quinn mixes up the two (the
/// first fell silent in tests).
#[derive(Debug, Default)]
pub(super) struct Trying(Vec<tokio::task::AbortHandle>);

impl Drop for Trying {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

impl Reach {
    pub(super) fn start(self) -> Trying {
        let punch = {
            let (socket, to, driver) = (
                self.socket.clone(),
                self.candidates.clone(),
                self.driver.clone(),
            );
            let delay = self.delay;
            async move {
                tokio::time::sleep(delay).await;
                for (n, every) in [PUNCH_QUICK, PUNCH_SLOW] {
                    for _ in 0..n {
                        if driver.is_closed() {
                            return;
                        }
                        for c in &to {
                            socket.punch(c.addr);
                        }
                        tokio::time::sleep(every).await;
                    }
                }
            }
        };
        if !self.dial {
            let (driver, id) = (self.driver.clone(), self.other.id);
            let task = tokio::spawn(async move {
                punch.await;
                // Nobody dialled us meanwhile (or the driver knows better: it has the path).
                let _ = driver.send(Input::NoPath(id)).await;
            });
            return Trying(vec![task.abort_handle()]);
        }
        let punching = tokio::spawn(punch);
        let dialling = tokio::spawn(self.dial());
        Trying(vec![punching.abort_handle(), dialling.abort_handle()])
    }

    async fn dial(self) {
        let Ok(client) = direct_client_config(self.signal.clone()) else {
            return;
        };
        // Our first packet waits for the other's first punch to leave its router.
        tokio::time::sleep(self.delay + PUNCH_QUICK.1).await;
        for attempt in 1..=DIRECT_PATH_ATTEMPTS {
            if self.driver.is_closed() {
                return;
            }
            // A router that gave a new port to its way here may let in what goes back to it.
            let mut candidates = self.candidates.clone();
            for addr in self.socket.heard_at(self.other.observed.ip()) {
                if !candidates.iter().any(|c| c.addr == addr) {
                    candidates.push(Candidate { addr, lan: false });
                }
            }
            let mut tries = tokio::task::JoinSet::new();
            for (k, c) in candidates.iter().enumerate() {
                let (endpoint, client, addr) = (self.endpoint.clone(), client.clone(), c.addr);
                let wait = CANDIDATE_STAGGER * k as u32;
                // Each handshake starts only when its turn comes: the other end takes the
                // first it sees, so a second one must not be under way for nothing.
                tries.spawn(async move {
                    tokio::time::sleep(wait).await;
                    let connecting = endpoint.connect_with(client, addr, SERVER_NAME).ok()?;
                    tokio::time::timeout(DIRECT_PATH_TIMEOUT, connecting)
                        .await
                        .ok()?
                        .ok()
                });
            }
            while let Some(done) = tries.join_next().await {
                if let Ok(Some(conn)) = done {
                    // The rest are dropped with the set: quinn closes them.
                    tracing::info!(
                        "direct path to {} at {} ({:?})",
                        self.other.name,
                        super::canonical(conn.remote_address()),
                        self.other.id
                    );
                    let _ = self.driver.send(Input::Dialled(self.other.id, conn)).await;
                    return;
                }
            }
            tracing::info!(
                "no direct path to {} (attempt {attempt}); the relay carries its audio",
                self.other.name
            );
            tokio::time::sleep(DIRECT_PATH_RETRY).await;
        }
        let _ = self.driver.send(Input::NoPath(self.other.id)).await;
    }
}

/// Hands the driver the direct paths other members dial.
pub(super) async fn accept(endpoint: quinn::Endpoint, driver: mpsc::Sender<Input>) {
    while let Some(incoming) = endpoint.accept().await {
        let driver = driver.clone();
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                let _ = driver.send(Input::Incoming(conn)).await;
            }
        });
    }
}

/// A direct path whose far end has said who it is; the driver checks the proof against the
/// key the relay named for that participant before the path carries anything.
pub(super) struct ClaimedPath {
    pub conn: Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// The connection's keying material the proofs are bound to.
    pub binding: [u8; 32],
    pub theirs: PathProof,
    /// The member we dialled, if we did.
    pub dialled: Option<MemberId>,
}

/// Each end writes its proof first on its stream and reads the other's: both at once, so it
/// costs the path half a round trip. A far end that proves nothing in time is closed.
pub(super) async fn exchange_proofs(
    conn: Connection,
    me: Arc<MemberKey>,
    dialled: Option<MemberId>,
    driver: mpsc::Sender<Input>,
) {
    let exchange = async {
        let binding = path_binding(&conn)?;
        let ours = PathProof {
            participant: me.participant(),
            signature: me.sign_path(&binding),
        };
        let mut send = conn.open_uni().await.ok()?;
        write_frame(&mut send, &ours).await.ok()?;
        let mut recv = conn.accept_uni().await.ok()?;
        let theirs = read_frame::<PathProof>(&mut recv).await.ok()??;
        Some((send, recv, binding, theirs))
    };
    match tokio::time::timeout(DIRECT_PATH_TIMEOUT, exchange).await {
        Ok(Some((send, recv, binding, theirs))) => {
            let claimed = ClaimedPath {
                conn,
                send,
                recv,
                binding,
                theirs,
                dialled,
            };
            let _ = driver.send(Input::Claimed(Box::new(claimed))).await;
        }
        _ => {
            conn.close(UNPROVEN.into(), b"no proof of who you are");
            if let Some(member) = dialled {
                let _ = driver.send(Input::NoPath(member)).await;
            }
        }
    }
}

/// The close code of a direct path whose far end did not prove who it is.
pub(super) const UNPROVEN: u32 = 4;

/// Hands the driver a connection's datagrams, each with the connection it came on,
/// dropping (and counting) what it has no room for.
pub(super) async fn forward_datagrams(
    conn: Connection,
    via: Via,
    driver: mpsc::Sender<(Via, Bytes)>,
    counters: Arc<SessionCounters>,
) {
    while let Ok(d) = conn.read_datagram().await {
        match driver.try_send((via, d)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                counters.overload.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// A direct path: its datagrams, and its control streams (we send on one stream we open and
/// read the one the member opens; only session-document messages travel there, keys and
/// presence stay on the relay, which every member reaches). Anything ending closes the path,
/// and the driver is told.
pub(super) async fn serve_path(
    member: MemberId,
    (conn, mut send, mut recv): (Connection, quinn::SendStream, quinn::RecvStream),
    mut outbox: mpsc::Receiver<PeerMessage>,
    driver: mpsc::Sender<Input>,
    datagrams: mpsc::Sender<(Via, Bytes)>,
    counters: Arc<SessionCounters>,
) {
    let id = conn.stable_id();
    let writer = async {
        while let Some(msg) = outbox.recv().await {
            if write_frame(&mut send, &msg).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        while let Ok(Some(msg)) = read_frame::<PeerMessage>(&mut recv).await {
            if driver.send(Input::Direct(member, id, msg)).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = forward_datagrams(conn.clone(), Via::Direct(member), datagrams, counters) => {}
    }
    conn.close(0u32.into(), b"path closed");
    let _ = driver.send(Input::PathDown(member, id)).await;
}
