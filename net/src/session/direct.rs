//! The tasks of the session's paths: dialling and accepting direct paths, and reading and
//! writing a path's streams. They hold no session state; what they learn goes to the driver.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::Connection;
use tokio::sync::mpsc;

use super::driver::Input;
use super::SessionCounters;
use crate::congestion::CongestionSignal;
use crate::core::member::Via;
use crate::tls::{direct_client_config, SERVER_NAME};
use crate::transport::{read_frame, write_frame};
use crate::wire::{MemberId, MemberInfo, PeerMessage};
use std::sync::atomic::Ordering::Relaxed;

/// How long a direct path may take before the relay carries that member's audio.
pub const DIRECT_PATH_TIMEOUT: Duration = Duration::from_secs(1);
/// Direct paths are tried this many times, this far apart (NAT mappings and busy peers
/// settle); meanwhile and afterwards the relay carries the audio.
const DIRECT_PATH_ATTEMPTS: u32 = 3;
const DIRECT_PATH_RETRY: Duration = Duration::from_secs(2);

/// Dials `other` (the core asks the lower id of a pair to: zero-length connection ids route
/// by address, so one connection per pair) and hands the driver the path once it is up.
pub(super) fn dial(
    endpoint: quinn::Endpoint,
    signal: Arc<CongestionSignal>,
    other: MemberInfo,
    driver: mpsc::Sender<Input>,
) {
    let Ok(client) = direct_client_config(signal) else {
        return;
    };
    tokio::spawn(async move {
        for attempt in 1..=DIRECT_PATH_ATTEMPTS {
            if driver.is_closed() {
                return;
            }
            let Ok(connecting) = endpoint.connect_with(client.clone(), other.observed, SERVER_NAME)
            else {
                return;
            };
            match tokio::time::timeout(DIRECT_PATH_TIMEOUT, connecting).await {
                Ok(Ok(conn)) => {
                    tracing::info!("direct path to {} ({:?})", other.name, other.id);
                    let _ = driver.send(Input::Dialled(other.id, conn)).await;
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
    conn: Connection,
    mut outbox: mpsc::Receiver<PeerMessage>,
    driver: mpsc::Sender<Input>,
    datagrams: mpsc::Sender<(Via, Bytes)>,
    counters: Arc<SessionCounters>,
) {
    let id = conn.stable_id();
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
