//! The session's direct paths: dialled when the core asks, accepted when a member dials us,
//! and reported to the core as they come up and go down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Connection;
use tokio::sync::mpsc;

use super::{receive_datagram, Shared};
use crate::tls::{direct_client_config, SERVER_NAME};
use crate::transport::{read_frame, write_frame};
use crate::wire::{MemberId, MemberInfo, PeerMessage};

/// How long a direct path may take before the relay carries that member's audio.
pub const DIRECT_PATH_TIMEOUT: Duration = Duration::from_secs(1);
/// Direct paths are tried this many times, this far apart (NAT mappings and busy peers
/// settle); meanwhile and afterwards the relay carries the audio.
const DIRECT_PATH_ATTEMPTS: u32 = 3;
const DIRECT_PATH_RETRY: Duration = Duration::from_secs(2);
/// An incoming direct path may arrive before we have processed the relay's news of its
/// dialler; wait this long to recognise it.
const RECOGNISE_TIMEOUT: Duration = Duration::from_millis(500);

/// Dials `other` (the core asks the lower id of a pair to: zero-length connection ids route
/// by address, so one connection per pair).
pub(super) fn dial(endpoint: quinn::Endpoint, shared: Arc<Shared>, other: MemberInfo) {
    let Ok(client) = direct_client_config(shared.congestion.clone()) else {
        return;
    };
    tokio::spawn(async move {
        for attempt in 1..=DIRECT_PATH_ATTEMPTS {
            let still_here = shared.core().members().any(|m| m.id == other.id);
            let already = shared.links().direct.contains_key(&other.id);
            if !still_here || already || shared.stopped.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let Ok(connecting) = endpoint.connect_with(client.clone(), other.observed, SERVER_NAME)
            else {
                return;
            };
            match tokio::time::timeout(DIRECT_PATH_TIMEOUT, connecting).await {
                Ok(Ok(conn)) => {
                    tracing::info!("direct path to {} ({:?})", other.name, other.id);
                    adopt(&shared, other.id, conn).await;
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
pub(super) async fn accept(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let remote = conn.remote_address();
            let find = || {
                shared
                    .core()
                    .members()
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
            adopt(&shared, id, conn).await;
        });
    }
}

/// Uses `conn` for `member`'s audio and document until it closes, then falls back to the
/// relay.
async fn adopt(shared: &Arc<Shared>, member: MemberId, conn: Connection) {
    let (tx, rx) = mpsc::unbounded_channel::<PeerMessage>();
    {
        let mut links = shared.links();
        links.direct.insert(member, conn.clone());
        links.direct_control.insert(member, tx.clone());
    }
    shared.core().handle_path_up(Instant::now(), member);
    shared.flush();
    let control = tokio::spawn(serve_control(shared.clone(), member, conn.clone(), rx));
    while let Ok(d) = conn.read_datagram().await {
        receive_datagram(shared, &d);
    }
    control.abort();
    {
        let mut links = shared.links();
        if links
            .direct_control
            .get(&member)
            .is_some_and(|t| t.same_channel(&tx))
        {
            links.direct_control.remove(&member);
        }
        if links
            .direct
            .get(&member)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            links.direct.remove(&member);
        }
    }
    shared.core().handle_path_down(Instant::now(), member);
    shared.flush();
}

/// The direct path's control streams: we send on one stream we open, and read the one the
/// member opens. Only session-document messages travel here; keys and presence stay on the
/// relay, which every member reaches. Either stream ending closes the path.
async fn serve_control(
    shared: Arc<Shared>,
    member: MemberId,
    conn: Connection,
    mut outbox: mpsc::UnboundedReceiver<PeerMessage>,
) {
    let writer = async {
        let Ok(mut send) = conn.open_uni().await else {
            return;
        };
        while let Some(msg) = outbox.recv().await {
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
            shared.core().handle_direct(Instant::now(), member, &msg);
            shared.flush();
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    conn.close(0u32.into(), b"direct control stream ended");
}
