//! Invites: everything a musician needs to join a room, in one line to paste.
//!
//! `echoel://HOST:PORT/ROOM?fp=CERT_SHA256_HEX&secret=BASE64URL`
//!
//! - `HOST:PORT`: the relay (a name, an IPv4 address or a bracketed IPv6 address).
//! - `ROOM`: the room id, 1–64 characters of `A–Z a–z 0–9 - _ .`.
//! - `fp`: SHA-256 of the relay's certificate (64 hex digits), pinned: no CA is trusted.
//! - `secret`: the 32-byte room secret, base64url without padding. It never leaves the members:
//!   the relay holds only a verifier derived from it.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use thiserror::Error;

use crate::crypto::RoomSecret;

/// The scheme every invite starts with.
pub const SCHEME: &str = "echoel://";

/// A relay certificate's SHA-256 fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

impl FromStr for CertFingerprint {
    type Err = InviteError;
    fn from_str(s: &str) -> Result<Self, InviteError> {
        let mut out = [0u8; 32];
        if crate::hex::decode_into(s.as_bytes(), &mut out) {
            Ok(Self(out))
        } else {
            Err(InviteError::Fingerprint)
        }
    }
}

/// A room id as it appears in invites and on the relay.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    /// Longest room id accepted.
    pub const MAX_LEN: usize = 64;

    /// Checks the characters and length.
    pub fn new(id: &str) -> Result<Self, InviteError> {
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(InviteError::Room)
        }
    }

    /// A fresh random id, `room-` and eight hex digits.
    pub fn random() -> Self {
        use rand_core::{OsRng, RngCore};
        Self(format!("room-{:08x}", OsRng.next_u32()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed invite.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// Relay host (name or address, IPv6 without brackets).
    pub host: String,
    /// Relay UDP port.
    pub port: u16,
    /// The room.
    pub room: RoomId,
    /// Pinned relay certificate.
    pub fingerprint: CertFingerprint,
    /// The room secret.
    pub secret: RoomSecret,
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("Invite")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("room", &self.room)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// What is wrong with an invite, worded for the person who pasted it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InviteError {
    /// Wrong or missing scheme.
    #[error("an invite starts with echoel:// — paste the whole invite line")]
    Scheme,
    /// Host or port missing or malformed.
    #[error("the invite's relay address is not HOST:PORT — paste the whole invite line")]
    Address,
    /// Room id missing or malformed.
    #[error(
        "the invite's room name is missing or has characters other than letters, digits, - _ ."
    )]
    Room,
    /// `fp=` missing or not 64 hex digits.
    #[error("the invite's relay fingerprint (fp=) is missing or not 64 hex digits — paste the whole invite line")]
    Fingerprint,
    /// `secret=` missing or not 32 bytes of base64url.
    #[error("the invite is missing the room secret (secret=) or it is damaged — paste the whole invite line")]
    Secret,
    /// An unknown query parameter, likely a typo.
    #[error("the invite has an unknown part `{0}`")]
    Unknown(String),
}

impl FromStr for Invite {
    type Err = InviteError;

    fn from_str(s: &str) -> Result<Self, InviteError> {
        let rest = s.trim().strip_prefix(SCHEME).ok_or(InviteError::Scheme)?;
        let (authority, rest) = rest.split_once('/').ok_or(InviteError::Room)?;
        let (host, port) = split_host_port(authority)?;
        let (room, query) = rest.split_once('?').unwrap_or((rest, ""));
        let room = RoomId::new(room)?;
        let (mut fingerprint, mut secret) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("fp", v)) => fingerprint = Some(v.parse()?),
                Some(("secret", v)) => secret = Some(RoomSecret::from_base64(v)?),
                _ => {
                    let key = pair.split('=').next().unwrap_or(pair);
                    return Err(InviteError::Unknown(key.chars().take(32).collect()));
                }
            }
        }
        Ok(Invite {
            host,
            port,
            room,
            fingerprint: fingerprint.ok_or(InviteError::Fingerprint)?,
            secret: secret.ok_or(InviteError::Secret)?,
        })
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), InviteError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').ok_or(InviteError::Address)?;
        (host, rest.strip_prefix(':').ok_or(InviteError::Address)?)
    } else {
        authority.rsplit_once(':').ok_or(InviteError::Address)?
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
    let port: u16 = port.parse().map_err(|_| InviteError::Address)?;
    if !valid_host || port == 0 {
        return Err(InviteError::Address);
    }
    Ok((host.to_owned(), port))
}

impl fmt::Display for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{SCHEME}{host}:{}/{}?fp={}&secret={}",
            self.port,
            self.room,
            self.fingerprint,
            self.secret.to_base64()
        )
    }
}

impl RoomSecret {
    /// Decodes the invite's `secret=` value.
    pub fn from_base64(s: &str) -> Result<Self, InviteError> {
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| InviteError::Secret)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| InviteError::Secret)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Encodes for an invite.
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Invite {
        Invite {
            host: "relay.example.org".into(),
            port: 4433,
            room: RoomId::new("friday-band").unwrap(),
            fingerprint: CertFingerprint([0xab; 32]),
            secret: RoomSecret::from_bytes([7; 32]),
        }
    }

    #[test]
    fn round_trips_including_ipv6() {
        let inv = sample();
        assert_eq!(inv.to_string().parse::<Invite>().unwrap(), inv);
        let v6 = Invite {
            host: "::1".into(),
            ..sample()
        };
        let text = v6.to_string();
        assert!(text.starts_with("echoel://[::1]:4433/"), "{text}");
        assert_eq!(text.parse::<Invite>().unwrap(), v6);
    }

    #[test]
    fn each_broken_part_is_named() {
        let good = sample().to_string();
        let cases = [
            (good.replace("echoel://", "http://"), InviteError::Scheme),
            (good.replace(":4433", ""), InviteError::Address),
            (good.replace(":4433", ":0"), InviteError::Address),
            (
                good.replace("friday-band", "friday band"),
                InviteError::Room,
            ),
            (good.replace("fp=abab", "fp=zzab"), InviteError::Fingerprint),
            (
                good.split("&secret").next().unwrap().to_owned(),
                InviteError::Secret,
            ),
            (good.replace("secret=", "secret=AA"), InviteError::Secret),
            (
                format!("{good}&colour=red"),
                InviteError::Unknown("colour".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Invite>().unwrap_err(), want, "{text}");
        }
        let msg = InviteError::Secret.to_string();
        assert!(msg.contains("missing the room secret"), "{msg}");
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let inv = sample();
        let shown = format!("{inv:?}");
        assert!(!shown.contains(&inv.secret.to_base64()), "{shown}");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = s.parse::<Invite>();
        }

        #[test]
        fn arbitrary_suffix_never_panics(s in "[ -~]{0,120}") {
            let _ = format!("echoel://{s}").parse::<Invite>();
        }
    }
}
