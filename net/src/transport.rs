//! Pieces shared by the relay and the members: control-stream framing over quinn.

use quinn::{RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::wire::{decode_body, encode_frame, WireError, MAX_CONTROL_FRAME};

/// A control stream failed.
#[derive(Debug, Error)]
pub enum StreamError {
    /// The stream or connection closed or failed.
    #[error("connection lost: {0}")]
    Closed(String),
    /// The peer sent something unparsable.
    #[error("malformed control message: {0}")]
    Wire(#[from] WireError),
}

/// Reads one control frame; `Ok(None)` when the peer finished the stream cleanly.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
) -> Result<Option<T>, StreamError> {
    let mut len = [0u8; 2];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(StreamError::Closed(e.to_string())),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_CONTROL_FRAME {
        return Err(WireError::TooLarge.into());
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| StreamError::Closed(e.to_string()))?;
    Ok(Some(decode_body(&body)?))
}

/// Writes one control frame.
pub async fn write_frame<T: Serialize>(send: &mut SendStream, msg: &T) -> Result<(), StreamError> {
    let frame = encode_frame(msg)?;
    send.write_all(&frame)
        .await
        .map_err(|e| StreamError::Closed(e.to_string()))
}
