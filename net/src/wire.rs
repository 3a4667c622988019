//! The wire format.
//!
//! The protocol version is negotiated once per connection by ALPN ([`ALPN`]); packets carry no
//! version byte, because at 2.5 ms frames every header byte costs 3.2 kbit/s per stream.
//!
//! **Audio datagrams** (QUIC unreliable datagrams):
//!
//! ```text
//! member → relay, or member → member (direct):
//!     [kind:4|epoch:4] [stem:8] [seq:16 BE] sealed([media:16 BE] [frame or container]) [tag:16]
//! relay → member: [sender: 1 or 2 bytes, see encode_sender] and the above
//! ```
//!
//! The header is authenticated as AEAD associated data. `stem` is which of the sender's
//! streams it is ([`StemId`]). The sequence number is the low 16 bits of that stream's 32-bit
//! counter, kept by the sender's network layer (never by the audio engine), so no two
//! datagrams under one key share a nonce; receivers widen it (see
//! [`crate::crypto::widen_seq`]). `media` is the frame's position in the sender's stream in
//! units of [`MEDIA_UNIT_SAMPLES`], low 16 bits (163.84 s), widened the same way: the
//! receiver's schedule follows the sender's own clock, whatever frame sizes it uses.
//!
//! **Control messages** (one reliable bidirectional QUIC stream per connection): frames of a
//! 2-byte big-endian length and a postcard-encoded [`ClientMessage`] or [`RelayMessage`].
//! Member-to-member messages ([`PeerMessage`]) travel inside them as opaque bytes.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::{DocEnds, Epoch, KeyAnnounce, KeyGrant, MemberPublic};

/// ALPN protocol id: the wire version.
pub const ALPN: &[u8] = b"echoel/11";
/// Audio header bytes before the ciphertext.
pub const AUDIO_HEADER_LEN: usize = 4;
/// Media-time bytes at the start of an audio datagram's plaintext.
pub const MEDIA_TIME_LEN: usize = 2;
/// Media time travels in units of 2.5 ms (120 samples at 48 kHz): the shortest Opus frame, so
/// every frame starts on a unit.
pub const MEDIA_UNIT_SAMPLES: u64 = 120;
/// AEAD tag bytes after the ciphertext.
pub const TAG_LEN: usize = 16;
/// Largest control frame.
pub const MAX_CONTROL_FRAME: usize = 16 * 1024;
/// Kind nibble of an audio datagram.
const KIND_AUDIO: u8 = 0x1;
/// Kind nibble of an audio datagram that also carries earlier frames (see [`pack_frames`]).
const KIND_AUDIO_REDUNDANT: u8 = 0x2;
/// Earlier frames an audio datagram may carry.
pub const MAX_REDUNDANT: usize = 2;

/// One of a member's audio streams (stems): 0 is its main send.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct StemId(pub u8);

/// A member's index in its room, assigned by the relay at admission (lowest free first, so
/// small rooms keep one-byte sender prefixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub u16);

impl MemberId {
    /// The highest id a sender prefix can carry.
    pub const MAX: MemberId = MemberId(0x3fff);

    /// The id's bytes for MACs and nonces.
    pub fn to_be_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

/// Writes a sender prefix: ids below 128 in one byte, the rest up to [`MemberId::MAX`] in two
/// (`10` and 14 bits). First bytes from `0xC0` up never start a prefix: [`BUNDLE_MARKER`]
/// is one.
pub fn encode_sender(sender: MemberId, out: &mut Vec<u8>) {
    let id = sender.0.min(MemberId::MAX.0);
    if id < 0x80 {
        out.push(id as u8);
    } else {
        out.extend_from_slice(&(0x8000 | id).to_be_bytes());
    }
}

/// Reads a sender prefix written by [`encode_sender`]: the id and the rest.
pub fn decode_sender(bytes: &[u8]) -> Result<(MemberId, &[u8]), WireError> {
    match *bytes {
        [b, ref rest @ ..] if b < 0x80 => Ok((MemberId(u16::from(b)), rest)),
        [b, lo, ref rest @ ..] if b & 0xc0 == 0x80 => {
            Ok((MemberId(u16::from_be_bytes([b & 0x3f, lo])), rest))
        }
        [] | [_] => Err(WireError::Truncated),
        _ => Err(WireError::UnknownKind),
    }
}

/// A parse failure; the packet is dropped and counted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its header (plus tag).
    #[error("packet too short")]
    Truncated,
    /// Unknown kind nibble.
    #[error("unknown packet kind")]
    UnknownKind,
    /// A control frame over [`MAX_CONTROL_FRAME`].
    #[error("control frame too large")]
    TooLarge,
    /// The bytes do not decode as the expected message.
    #[error("malformed message")]
    Malformed,
}

/// The clear header of an audio datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioHeader {
    /// Key epoch (4 bits).
    pub epoch: Epoch,
    /// Which of the sender's streams.
    pub stem: StemId,
    /// Low 16 bits of the stream's sequence number.
    pub seq_low: u16,
    /// The sealed body is a [`pack_frames`] container, not a bare frame.
    pub redundant: bool,
}

impl AudioHeader {
    /// The header bytes.
    pub fn encode(&self) -> [u8; AUDIO_HEADER_LEN] {
        let [hi, lo] = self.seq_low.to_be_bytes();
        let kind = if self.redundant {
            KIND_AUDIO_REDUNDANT
        } else {
            KIND_AUDIO
        };
        [(kind << 4) | (self.epoch & 0x0f), self.stem.0, hi, lo]
    }

    /// Parses the header at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let [b0, stem, hi, lo] = *bytes
            .first_chunk::<AUDIO_HEADER_LEN>()
            .ok_or(WireError::Truncated)?;
        let redundant = match b0 >> 4 {
            KIND_AUDIO => false,
            KIND_AUDIO_REDUNDANT => true,
            _ => return Err(WireError::UnknownKind),
        };
        Ok(Self {
            epoch: b0 & 0x0f,
            stem: StemId(stem),
            seq_low: u16::from_be_bytes([hi, lo]),
            redundant,
        })
    }
}

/// An earlier frame carried in a container: its bytes and how many [`MEDIA_UNIT_SAMPLES`]
/// before the primary frame it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OlderFrame<'a> {
    /// Media units from this frame's start to the primary's (1 to 255).
    pub units_back: u8,
    /// The encoded frame.
    pub frame: &'a [u8],
}

/// Packs a frame with up to [`MAX_REDUNDANT`] earlier ones (newest first: `older[0]` is the
/// frame before `primary`), so a receiver that lost those can fill the gap:
/// `[count] ([len:16 BE] [units back:8] [frame])* [primary]`.
pub fn pack_frames(primary: &[u8], older: &[OlderFrame<'_>], out: &mut Vec<u8>) {
    let older = &older[..older.len().min(MAX_REDUNDANT)];
    out.push(older.len() as u8);
    for o in older {
        let len = o.frame.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.push(o.units_back);
        out.extend_from_slice(&o.frame[..len]);
    }
    out.extend_from_slice(primary);
}

/// The earlier frames of a container, newest first.
pub type OlderFrames<'a> = [Option<OlderFrame<'a>>; MAX_REDUNDANT];

/// Splits a [`pack_frames`] container into the primary frame and the earlier ones (newest
/// first).
pub fn unpack_frames(bytes: &[u8]) -> Result<(&[u8], OlderFrames<'_>), WireError> {
    let (&count, mut rest) = bytes.split_first().ok_or(WireError::Truncated)?;
    if usize::from(count) > MAX_REDUNDANT {
        return Err(WireError::Malformed);
    }
    let mut older = [None; MAX_REDUNDANT];
    for slot in older.iter_mut().take(usize::from(count)) {
        let (len, tail) = rest.split_first_chunk::<2>().ok_or(WireError::Truncated)?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (&units_back, tail) = tail.split_first().ok_or(WireError::Truncated)?;
        if units_back == 0 {
            return Err(WireError::Malformed);
        }
        if tail.len() < len {
            return Err(WireError::Truncated);
        }
        let (frame, tail) = tail.split_at(len);
        *slot = Some(OlderFrame { units_back, frame });
        rest = tail;
    }
    Ok((rest, older))
}

/// A datagram as the relay forwards it: the sender's id, then the member's datagram untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// Who sent it.
    pub sender: MemberId,
    /// The sealed audio datagram.
    pub datagram: &'a [u8],
}

impl<'a> Forwarded<'a> {
    /// Splits a relay-forwarded datagram; checks only the framing, not the seal.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let (sender, datagram) = decode_sender(bytes)?;
        if datagram.len() < AUDIO_HEADER_LEN + TAG_LEN {
            return Err(WireError::Truncated);
        }
        AudioHeader::decode(datagram)?;
        Ok(Self { sender, datagram })
    }
}

/// A musician's identity for the life of a session: stays the same when it rejoins after a
/// relay restart and gets a new [`MemberId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ParticipantId(pub u64);

/// First byte of a relay bundle: several forwarded datagrams for one member in one QUIC
/// datagram. No sender prefix starts with it (see [`encode_sender`]).
pub const BUNDLE_MARKER: u8 = 0xff;

/// Packs forwarded datagrams (`[sender][datagram]` each) into one bundle:
/// `[BUNDLE_MARKER] ([len:16 BE] [forwarded])*`.
pub fn bundle<'a>(items: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    out.clear();
    out.push(BUNDLE_MARKER);
    for item in items {
        out.extend_from_slice(&(item.len() as u16).to_be_bytes());
        out.extend_from_slice(item);
    }
}

/// Bytes a bundle adds per item.
pub const BUNDLE_ITEM_OVERHEAD: usize = 2;

/// The forwarded datagrams in what a relay sent: one, or each item of a bundle. A malformed
/// item ends the walk with an error.
pub fn forwarded_items(bytes: &[u8]) -> impl Iterator<Item = Result<Forwarded<'_>, WireError>> {
    let mut rest = match bytes.split_first() {
        Some((&BUNDLE_MARKER, items)) => Some(items),
        _ => None,
    };
    let mut single = if rest.is_none() { Some(bytes) } else { None };
    std::iter::from_fn(move || {
        if let Some(one) = single.take() {
            return Some(Forwarded::parse(one));
        }
        let items = rest.take()?;
        if items.is_empty() {
            return None;
        }
        let Some((len, tail)) = items.split_first_chunk::<2>() else {
            return Some(Err(WireError::Truncated));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        let Some((item, tail)) = tail.split_at_checked(len) else {
            return Some(Err(WireError::Truncated));
        };
        rest = Some(tail);
        Some(Forwarded::parse(item))
    })
}

/// Local addresses a member may name for direct paths; the relay passes on no more.
pub const MAX_LOCAL_ADDRESSES: usize = 8;

/// Information about a room member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's id.
    pub id: MemberId,
    /// Who it is, across reconnections: its member key's as its instance (see
    /// [`MemberPublic::participant`]).
    pub participant: ParticipantId,
    /// Its member key, which signs what it says to the others. Members that share a key are
    /// one person (plugins of one musician in several processes).
    pub member: MemberPublic,
    /// Which of its key's participants it is.
    pub instance: u32,
    /// Display name.
    pub name: String,
    /// The member's address as the relay sees it (for direct paths).
    pub observed: SocketAddr,
    /// The addresses its socket has on its own networks (for a direct path over a LAN), and
    /// those its router forwards to it (a mapped port).
    pub local: Vec<SocketAddr>,
    /// What it does in the room: a listener sends nothing.
    pub role: Role,
}

/// Why the relay refused a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The proof did not match the room's verifier.
    WrongSecret,
    /// The relay hosts no such room.
    UnknownRoom,
    /// No free member slot.
    RoomFull,
    /// The member key named in the join did not sign the challenge.
    Impostor,
    /// The join was malformed or out of order.
    Protocol,
}

impl Refusal {
    /// The message a musician sees.
    pub fn explain(self) -> &'static str {
        match self {
            Self::WrongSecret => "wrong room secret — ask for a fresh invite",
            Self::UnknownRoom => "the relay does not host this room — check the invite",
            Self::RoomFull => "the room is full",
            Self::Impostor => "the relay could not verify this member's key — update Echoel Jam",
            Self::Protocol => "the relay did not understand this client — update Echoel Jam",
        }
    }
}

/// What a member does in its room; the relay routes by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Role {
    /// Sends its streams and hears everyone's.
    #[default]
    Performer,
    /// Hears the room and sends nothing: the relay drops its audio.
    Listener,
}

/// One stream, or all of a member's streams, a member asks to hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRef {
    /// Whose.
    pub member: MemberId,
    /// Which of its streams; `None`: all of them.
    pub stem: Option<StemId>,
}

/// Which streams a member asks the relay for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Subscription {
    /// Everyone's streams (what a member gets after joining).
    #[default]
    All,
    /// Only these.
    Only(Vec<StreamRef>),
    /// Everyone's but these members' (our own plugins in other processes).
    AllBut(Vec<MemberId>),
}

/// Client → relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// First message: which room, as whom.
    Join {
        /// Room id.
        room: String,
        /// Display name.
        name: String,
        /// The member's public key: its identity across reconnections (the participant id
        /// is derived from it and the instance).
        member: MemberPublic,
        /// Which of the key's participants joins: one person's plugins in several processes
        /// share a key, each as its own instance.
        instance: u32,
        /// What it does in the room.
        role: Role,
        /// Its socket's addresses on its own networks, for members behind the same router
        /// (at most [`MAX_LOCAL_ADDRESSES`] are passed on).
        local: Vec<SocketAddr>,
    },
    /// Answer to [`RelayMessage::Challenge`].
    Proof {
        /// The room admission key's signature of the challenge on this TLS session: the
        /// joiner holds the room secret (see [`crate::crypto::AdmissionVerifier`]).
        proof: Vec<u8>,
        /// The member key's signature of the challenge on this TLS session: the joiner holds
        /// the key it named.
        signature: Vec<u8>,
    },
    /// Members this client now reaches directly: the relay stops forwarding its audio to
    /// them (and resumes when they leave the list).
    Route {
        /// Directly reached members.
        direct: Vec<MemberId>,
    },
    /// An end-to-end message for one member (`Some`) or everyone else (`None`).
    Send {
        /// Recipient.
        to: Option<MemberId>,
        /// A postcard-encoded [`PeerMessage`], opaque to the relay.
        body: Vec<u8>,
    },
    /// The streams this client wants forwarded to it from now on.
    Subscribe(Subscription),
    /// Admit by this verifier from now on: the room has a new secret, which the members in
    /// it were given end to end ([`PeerMessage::Secret`]). Old invites stop working.
    Rotate {
        /// The new secret's verifier.
        verifier: [u8; 32],
        /// The current secret's admission key's signature of it on this TLS session.
        proof: Vec<u8>,
    },
    /// Our addresses to pass on from now on, in place of those we joined with: a router
    /// mapped a port for us after we joined (at most [`MAX_LOCAL_ADDRESSES`] are passed on).
    Addresses {
        /// Addresses on our own networks, and those our routers forward to our socket.
        local: Vec<SocketAddr>,
    },
}

/// Relay → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayMessage {
    /// Prove knowledge of the room secret for this nonce.
    Challenge {
        /// Fresh random nonce.
        nonce: [u8; 32],
    },
    /// Admitted.
    Welcome {
        /// Our id in the room.
        you: MemberId,
        /// Our address as the relay sees it.
        observed: SocketAddr,
        /// Everyone already there.
        members: Vec<MemberInfo>,
    },
    /// Not admitted; the connection closes.
    Refused(Refusal),
    /// Someone joined.
    Joined(MemberInfo),
    /// Someone left.
    Left(MemberId),
    /// An end-to-end message from a member.
    From {
        /// Sender.
        from: MemberId,
        /// A postcard-encoded [`PeerMessage`].
        body: Vec<u8>,
    },
    /// The room admits by a new secret's verifier from now on, as `by` asked.
    Rotated {
        /// Who rotated.
        by: MemberId,
        /// The new secret's verifier.
        verifier: [u8; 32],
    },
    /// A rotation we asked for did not happen (not proved, or the relay could not store it).
    RotationRefused,
    /// A member's addresses changed (see [`ClientMessage::Addresses`]).
    Moved {
        /// The member.
        id: MemberId,
        /// Its addresses from now on.
        local: Vec<SocketAddr>,
    },
}

/// Where a document message part stands among its sender's messages, as its AEAD
/// authenticates it: no one without the pair's key can move a part to another message or
/// place, or make a replayed message look new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocPlace {
    /// The sender's message number.
    pub message: u32,
    /// This part's index.
    pub part: u16,
    /// How many parts the message has.
    pub parts: u16,
}

impl DocPlace {
    /// The bytes authenticated beside the sender's id: the recipient, so a message cannot be
    /// handed to another member, and the place.
    pub fn context(&self, to: ParticipantId) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&to.0.to_be_bytes());
        c[8..12].copy_from_slice(&self.message.to_be_bytes());
        c[12..14].copy_from_slice(&self.part.to_be_bytes());
        c[14..].copy_from_slice(&self.parts.to_be_bytes());
        c
    }
}

/// Member → member, end to end (through the relay's control stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// My ephemeral key for an epoch.
    Announce(KeyAnnounce),
    /// My sender key, sealed to you.
    Grant(KeyGrant),
    /// I hold your sender key of this epoch: once everyone does, you may seal with it.
    Keyed {
        /// Your epoch whose key I hold.
        epoch: Epoch,
    },
    /// Part of a session-document sync message, sealed under the key only its sender and
    /// recipient derive (named by `ends`). A message larger than one control frame goes as
    /// several parts, in order. The message number, part and parts are authenticated with the
    /// sender (see [`DocPlace`]).
    Doc {
        /// Whose ephemerals the key is of.
        ends: DocEnds,
        /// AEAD nonce.
        nonce: [u8; 12],
        /// Ciphertext and tag.
        sealed: Vec<u8>,
        /// The sender's number for this message to this recipient (every part of it carries
        /// the same): a receiver takes each number once.
        message: u32,
        /// This part's index.
        part: u16,
        /// How many parts the message has.
        parts: u16,
    },
    /// A new room secret, sealed to one member (as a document message is): the room is
    /// rotating to it.
    Secret {
        /// Whose ephemerals the key is of.
        ends: DocEnds,
        /// AEAD nonce.
        nonce: [u8; 12],
        /// The sealed secret and tag.
        sealed: Vec<u8>,
    },
    /// A presence update, sealed under the sender's key of `epoch`.
    Presence {
        /// The sender's epoch.
        epoch: Epoch,
        /// AEAD nonce.
        nonce: [u8; 12],
        /// Ciphertext and tag.
        sealed: Vec<u8>,
    },
    /// A [`TakeMessage`], sealed to one member (as a document message is).
    Take {
        /// Whose ephemerals the key is of.
        ends: DocEnds,
        /// AEAD nonce.
        nonce: [u8; 12],
        /// Ciphertext and tag.
        sealed: Vec<u8>,
    },
}

/// Filling a recorded take's gaps: a recorder asks a sender for the frames it missed, the
/// sender answers from what it kept of its own stream. Sealed to the one member it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TakeMessage {
    /// Send me the frames of your stem `stem` that start within these media-time stretches
    /// (`[from, to)`, 48 kHz samples).
    Ask {
        /// The asker's number for this request; the answer carries it.
        id: u32,
        /// Which stem.
        stem: StemId,
        /// The stretches.
        ranges: Vec<(u64, u64)>,
    },
    /// Frames asked for: (media time, Opus payload), oldest first.
    Frames {
        /// The request's number.
        id: u32,
        /// Which stem.
        stem: StemId,
        /// The frames.
        frames: Vec<(u64, Vec<u8>)>,
        /// Nothing more follows for this request.
        last: bool,
    },
}

/// The first frame each end of a direct path writes on its stream: who it is, proven on this
/// TLS session (see [`crate::crypto::MemberKey::sign_path`]). A path is a member's only once
/// its proof holds for the key the relay named for that member; its address proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathProof {
    /// The participant it is.
    pub participant: ParticipantId,
    /// Its member key's signature over the session's keying material and `participant`.
    pub signature: Vec<u8>,
}

/// Encodes a control message as one length-prefixed frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let body = postcard::to_stdvec(msg).map_err(|_| WireError::Malformed)?;
    if body.len() > MAX_CONTROL_FRAME {
        return Err(WireError::TooLarge);
    }
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame body (without its length prefix).
pub fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WireError> {
    if body.len() > MAX_CONTROL_FRAME {
        return Err(WireError::TooLarge);
    }
    postcard::from_bytes(body).map_err(|_| WireError::Malformed)
}

/// Encodes a [`PeerMessage`] for a [`ClientMessage::Send`] body.
pub fn encode_peer(msg: &PeerMessage) -> Vec<u8> {
    postcard::to_stdvec(msg).unwrap_or_default()
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
