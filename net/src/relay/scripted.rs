//! A scripted client of the room protocol on its own QUIC connection: it sends what it is told,
//! not what a member would, and reads only when asked. For the security tests and the relay
//! benches that play a hostile or broken member against a real relay.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, RecvStream, SendStream};

use crate::crypto::MemberPublic;
use crate::invite::Invite;
use crate::relay::channel_binding;
use crate::tls::{endpoint_config, relay_client_config, SERVER_NAME};
use crate::transport::{read_frame, write_frame};
use crate::wire::{ClientMessage, RelayMessage, Role};

/// A connection to the relay that has sent its Join and Proof.
pub struct ScriptedMember {
    /// The connection (datagrams go here).
    pub conn: Connection,
    /// The control stream, to write on.
    pub send: SendStream,
    /// The control stream, to read when the script says so.
    pub recv: RecvStream,
    _endpoint: quinn::Endpoint,
}

/// Why a scripted join did not get as far as its Proof.
#[derive(Debug, thiserror::Error)]
#[error("scripted join: {0}")]
pub struct ScriptError(String);

fn fail(e: impl std::fmt::Display) -> ScriptError {
    ScriptError(e.to_string())
}

impl ScriptedMember {
    /// Connects from `bind` (port 0: any) to `relay`, joins `invite`'s room naming `member`,
    /// and answers the challenge with `answer(challenge, binding)` — the room proof and the
    /// member signature, honest or not. Reads nothing after the challenge.
    pub async fn join(
        bind: SocketAddr,
        relay: SocketAddr,
        invite: &Invite,
        member: MemberPublic,
        answer: impl FnOnce(&[u8; 32], &[u8; 32]) -> (Vec<u8>, Vec<u8>),
    ) -> Result<Self, ScriptError> {
        let socket = std::net::UdpSocket::bind(bind).map_err(fail)?;
        let mut endpoint = quinn::Endpoint::new(
            endpoint_config(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(fail)?;
        endpoint.set_default_client_config(
            relay_client_config(invite.fingerprint, Default::default()).map_err(fail)?,
        );
        let conn = endpoint
            .connect(relay, SERVER_NAME)
            .map_err(fail)?
            .await
            .map_err(fail)?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(fail)?;
        let join = ClientMessage::Join {
            room: invite.room.to_string(),
            name: "scripted".into(),
            member,
            instance: 0,
            role: Role::Performer,
            local: Vec::new(),
        };
        write_frame(&mut send, &join).await.map_err(fail)?;
        let Ok(Some(RelayMessage::Challenge { nonce })) = read_frame(&mut recv).await else {
            return Err(ScriptError("no challenge".into()));
        };
        let binding = channel_binding(&conn, &invite.room).ok_or_else(|| fail("no exporter"))?;
        let (proof, signature) = answer(&nonce, &binding);
        write_frame(&mut send, &ClientMessage::Proof { proof, signature })
            .await
            .map_err(fail)?;
        Ok(Self {
            conn,
            send,
            recv,
            _endpoint: endpoint,
        })
    }

    /// The relay's next control message, if any.
    pub async fn next(&mut self) -> Option<RelayMessage> {
        read_frame(&mut self.recv).await.ok().flatten()
    }

    /// Goes away at once, as a crashed client would say it.
    pub async fn vanish(self) {
        self.conn.close(0u32.into(), b"gone");
        self._endpoint.wait_idle().await;
    }
}
