//! The relay's reflector: on the port after the relay's, it tells each member the address it
//! sees it at, so a member whose router shows it another port than its QUIC connection knows
//! it is behind a symmetric NAT.

use std::net::SocketAddr;

/// The reflector's socket on the port after `quic`'s, where it can be had.
pub(super) async fn bind(quic: Option<SocketAddr>) -> Option<tokio::net::UdpSocket> {
    match quic {
        Some(a) if a.port() < u16::MAX => {
            let at = SocketAddr::new(a.ip(), a.port() + 1);
            match tokio::net::UdpSocket::bind(at).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(
                        "no reflector on {at} ({e}): members cannot tell a symmetric NAT"
                    );
                    None
                }
            }
        }
        _ => None,
    }
}

/// Answers each probe with the address it came from: no state, and an answer no larger than
/// the probe, so it is no use for amplification.
pub(super) async fn serve(socket: tokio::net::UdpSocket) {
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        if buf[..n] == crate::session::PROBE[..] {
            let _ = socket.send_to(&crate::session::reflect(from), from).await;
        }
    }
}
