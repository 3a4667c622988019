//! Joining the relay: a fresh endpoint on a new socket, the handshake, the proof and the
//! Welcome.

use super::*;

/// A fresh endpoint on a new socket. Each connection attempt gets its own: with zero-length
/// connection ids quinn routes by address, and a draining connection to the old relay would
/// otherwise swallow the new handshake.
pub(super) fn make_endpoint(
    identity: &Identity,
    config: &SessionConfig,
    signal: &Arc<CongestionSignal>,
) -> Result<(quinn::Endpoint, Arc<PunchSocket>), String> {
    // Dual stack where the system has IPv6: the relay by either family, and direct paths to
    // members' IPv6 addresses as well (no NAT in front of them, only a firewall to punch).
    let socket = match dual_stack_socket() {
        Ok(s) => s,
        Err(_) if !config.invite.host.contains(':') => {
            std::net::UdpSocket::bind(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)))
                .map_err(|e| format!("cannot open a UDP socket: {e}"))?
        }
        Err(e) => return Err(format!("cannot open an IPv6 UDP socket: {e}")),
    };
    let server = identity
        .server_config(signal.clone())
        .map_err(|e| e.to_string())?;
    let socket = PunchSocket::new(socket).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config(),
        Some(server),
        socket.clone(),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    endpoint.set_default_client_config(
        relay_client_config(config.invite.fingerprint, signal.clone())
            .map_err(|e| e.to_string())?,
    );
    Ok((endpoint, socket))
}

/// A UDP socket on every IPv6 and IPv4 address of ours (IPv4 peers appear v4-mapped: see
/// [`canonical`]).
fn dual_stack_socket() -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(false)?;
    s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)).into())?;
    Ok(s.into())
}

pub(super) enum JoinError {
    Refused(Refusal),
    WrongRelay,
    Other(String),
}

pub(super) struct Joined {
    pub(super) conn: Connection,
    pub(super) send: quinn::SendStream,
    pub(super) recv: quinn::RecvStream,
    pub(super) me: MemberId,
    /// Our address as the relay sees it.
    pub(super) observed: SocketAddr,
    pub(super) others: Vec<MemberInfo>,
}

pub(super) async fn join(
    endpoint: &quinn::Endpoint,
    config: &SessionConfig,
    member: &MemberKey,
    shared: &Shared,
    local: Vec<SocketAddr>,
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
        .map_err(|e| {
            if is_pin_mismatch(&e) {
                JoinError::WrongRelay
            } else {
                unreachable(&e)
            }
        })?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| unreachable(&e))?;
    let lost =
        |e: &dyn std::fmt::Display| JoinError::Other(format!("lost the relay while joining: {e}"));
    write_frame(
        &mut send,
        &ClientMessage::Join {
            room: inv.room.to_string(),
            name: config.name.clone(),
            member: member.public(),
            instance: member.instance(),
            role: config.role,
            local,
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
    let signature = member.sign_admission(&nonce, &binding);
    write_frame(&mut send, &ClientMessage::Proof { proof, signature })
        .await
        .map_err(|e| lost(&e))?;
    match read_frame::<RelayMessage>(&mut recv).await {
        Ok(Some(RelayMessage::Welcome {
            you,
            members,
            observed,
        })) => {
            shared.counters.joins.fetch_add(1, Relaxed);
            Ok(Joined {
                conn,
                send,
                recv,
                me: you,
                observed,
                others: members,
            })
        }
        Ok(Some(RelayMessage::Refused(r))) => Err(JoinError::Refused(r)),
        Ok(_) => Err(JoinError::Refused(Refusal::Protocol)),
        // A refusal closes the connection; the reason arrives as the close frame.
        Err(e) => Err(lost(&e)),
    }
}
