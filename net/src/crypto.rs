//! End-to-end keys: admission proofs, authenticated ephemeral key exchange, per-sender audio
//! keys with rotation, and sealing/opening of audio datagrams with a replay window.
//!
//! Key schedule (all HKDF-SHA256 over the 32-byte room secret, `info` = label ‖ room id):
//!
//! - `admission`   → the verifier the relay stores; proofs are HMACs under it, so the relay can
//!   check membership without ever holding the secret.
//! - `member-auth` → MACs on key announcements and the salt of every pairwise key; the relay
//!   cannot derive it, so it can neither forge an announcement nor read a grant.
//!
//! Each member, per key epoch, makes an ephemeral X25519 pair and a random 32-byte sender key.
//! It announces the public half (MAC'd) and grants its sender key to every other member, sealed
//! under `HKDF(salt = member-auth, ikm = X25519(own ephemeral, their ephemeral))`. Audio is
//! sealed once per sender with ChaCha20-Poly1305 under the sender key, so the relay forwards
//! identical bytes to every member. Rotation makes a fresh ephemeral and sender key (forward
//! secrecy: old keys are dropped after a short grace period).

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::invite::RoomId;
use crate::wire::{AudioHeader, MemberId, AUDIO_HEADER_LEN, TAG_LEN};

type HmacSha256 = Hmac<Sha256>;

/// The room secret: 32 random bytes shared by the members through the invite.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct RoomSecret([u8; 32]);

impl RoomSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        OsRng.fill_bytes(&mut b);
        Self(b)
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, label: &str, room: &RoomId) -> [u8; 32] {
        derive_key(
            &self.0,
            None,
            &[label.as_bytes(), b"|", room.as_str().as_bytes()],
        )
    }

    /// What the relay stores for a room.
    pub fn verifier(&self, room: &RoomId) -> AdmissionVerifier {
        AdmissionVerifier(self.derive("echoel v1 admission", room))
    }

    /// The key that seals the session document's sync messages between members.
    pub fn doc_cipher(&self, room: &RoomId) -> DocCipher {
        let key = self.derive("echoel v1 session-doc", room);
        DocCipher(ChaCha20Poly1305::new(Key::from_slice(&key)))
    }

    /// The key that seals presence updates; its own key, so a presence message can never be
    /// taken for a document message.
    pub fn presence_cipher(&self, room: &RoomId) -> DocCipher {
        let key = self.derive("echoel v1 presence", room);
        DocCipher(ChaCha20Poly1305::new(Key::from_slice(&key)))
    }

    /// The key that authenticates members to each other.
    pub fn member_auth(&self, room: &RoomId) -> MemberAuthKey {
        MemberAuthKey(self.derive("echoel v1 member-auth", room))
    }

    /// Proves knowledge of the secret for `challenge`, bound to this connection's `binding`
    /// (TLS exporter output), without revealing the secret.
    pub fn admission_proof(&self, room: &RoomId, challenge: &[u8; 32], binding: &[u8]) -> [u8; 32] {
        self.verifier(room).expected_proof(challenge, binding)
    }
}

impl std::fmt::Debug for RoomSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomSecret(..)")
    }
}

pub(crate) fn derive_key(ikm: &[u8], salt: Option<&[u8]>, info: &[&[u8]]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(salt, ikm);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    hk.expand_multi_info(info, &mut out)
        .expect("32-byte HKDF output is always valid");
    out
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    parts.iter().for_each(|p| m.update(p));
    m
}

/// The relay's stored proof-checker for one room. It cannot open audio or grants.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct AdmissionVerifier([u8; 32]);

impl AdmissionVerifier {
    /// Raw bytes, for the relay's room store.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// From the relay's room store.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    fn expected_proof(&self, challenge: &[u8; 32], binding: &[u8]) -> [u8; 32] {
        mac(&self.0, &[b"echoel v1 admit", challenge, binding])
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks a proof in constant time.
    pub fn check(&self, challenge: &[u8; 32], binding: &[u8], proof: &[u8]) -> bool {
        mac(&self.0, &[b"echoel v1 admit", challenge, binding])
            .verify_slice(proof)
            .is_ok()
    }
}

impl std::fmt::Debug for AdmissionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmissionVerifier(..)")
    }
}

/// Authenticates members to each other (announcements, grant keys).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MemberAuthKey([u8; 32]);

/// A key epoch: 4 bits on the wire, wrapping. Members hold the current and previous epoch.
pub type Epoch = u8;
/// Epochs wrap at 16 (4 bits in the audio header).
pub const EPOCH_MODULUS: u8 = 16;

/// A member's announcement of its ephemeral public key for an epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyAnnounce {
    /// Who announces.
    pub member: MemberId,
    /// For which epoch.
    pub epoch: Epoch,
    /// X25519 public key.
    pub public: [u8; 32],
    /// HMAC under the member-auth key.
    pub mac: [u8; 32],
}

/// A member's sender key for one epoch, sealed to one other member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyGrant {
    /// Whose sender key.
    pub from: MemberId,
    /// The granter's epoch (and so its ephemeral key).
    pub from_epoch: Epoch,
    /// The granter's ephemeral public key for that epoch.
    pub from_public: [u8; 32],
    /// To whom.
    pub to: MemberId,
    /// Which of the recipient's announced keys it is sealed to.
    pub to_epoch: Epoch,
    /// The sealed 32-byte sender key and its tag.
    pub sealed: Vec<u8>,
}

/// Why a key message or a datagram was refused. Each is counted, none is fatal.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// A MAC or AEAD tag did not verify: forged or damaged.
    #[error("authentication failed (forged or damaged)")]
    Forged,
    /// Seen before (replay window).
    #[error("replayed packet")]
    Replay,
    /// Too old for the replay window.
    #[error("packet too old for the replay window")]
    TooOld,
    /// No key for this sender and epoch (yet, or any more).
    #[error("no key for this sender and epoch")]
    UnknownKey,
    /// Not addressed to us or otherwise inapplicable.
    #[error("key message not meant for this member")]
    NotForUs,
    /// Structurally invalid.
    #[error("malformed packet")]
    Malformed,
}

/// When to rotate the sending key.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    /// Rotate after this long.
    pub max_age: Duration,
    /// Or after this many packets.
    pub max_packets: u32,
    /// How long previous keys stay usable after a rotation (packets in flight, slow grants).
    pub grace: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            // Two minutes or 2^18 packets (11 min at 2.5 ms frames), whichever comes first.
            max_age: Duration::from_secs(120),
            max_packets: 1 << 18,
            grace: Duration::from_secs(5),
        }
    }
}

struct OwnEpoch {
    epoch: Epoch,
    secret: StaticSecret,
    public: PublicKey,
    sender_key: [u8; 32],
    cipher: ChaCha20Poly1305,
    created: Instant,
}

impl OwnEpoch {
    fn new(epoch: Epoch, now: Instant) -> Self {
        let secret = StaticSecret::random_from_rng(OsRng);
        let public = PublicKey::from(&secret);
        let mut sender_key = [0u8; 32];
        OsRng.fill_bytes(&mut sender_key);
        Self {
            epoch,
            public,
            secret,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&sender_key)),
            sender_key,
            created: now,
        }
    }
}

impl Drop for OwnEpoch {
    fn drop(&mut self) {
        self.sender_key.zeroize();
    }
}

/// One side of a grant: whose ephemeral key, for which epoch.
#[derive(Clone, Copy)]
struct KeyEnd {
    member: MemberId,
    epoch: Epoch,
    public: [u8; 32],
}

/// What a peer has told us: its announced keys and the sender keys it granted us.
#[derive(Default)]
struct RemoteMember {
    /// Announced ephemeral public keys, newest last (current and previous epoch).
    announced: Vec<(Epoch, PublicKey)>,
    /// Sender keys granted to us, newest last, with the time they were superseded.
    keys: Vec<RemoteKey>,
    /// Highest full sequence number opened, for widening 16-bit wire sequence numbers.
    highest_seq: Option<u32>,
}

struct RemoteKey {
    epoch: Epoch,
    cipher: ChaCha20Poly1305,
    window: ReplayWindow,
    superseded: Option<Instant>,
}

/// The 128 most recent sequence numbers, as in IPsec/DTLS anti-replay.
#[derive(Debug, Clone, Default)]
struct ReplayWindow {
    top: Option<u32>,
    bits: u128,
}

impl ReplayWindow {
    fn check(&self, seq: u32) -> Result<(), CryptoError> {
        let Some(top) = self.top else { return Ok(()) };
        if seq > top {
            return Ok(());
        }
        let back = top - seq;
        if back >= 128 {
            return Err(CryptoError::TooOld);
        }
        if self.bits & (1u128 << back) != 0 {
            return Err(CryptoError::Replay);
        }
        Ok(())
    }

    fn mark(&mut self, seq: u32) {
        match self.top {
            Some(top) if seq <= top => self.bits |= 1u128 << (top - seq),
            Some(top) => {
                let shift = seq - top;
                self.bits = if shift >= 128 { 0 } else { self.bits << shift } | 1;
                self.top = Some(seq);
            }
            None => {
                self.top = Some(seq);
                self.bits = 1;
            }
        }
    }
}

/// Widens a 16-bit wire sequence number to the 32-bit value nearest `reference`.
pub fn widen_seq(reference: u32, low: u16) -> u32 {
    let candidate = (reference & !0xffff) | u32::from(low);
    let diff = candidate.wrapping_sub(reference) as i32;
    if diff > 0x8000 {
        candidate.wrapping_sub(0x1_0000)
    } else if diff < -0x8000 {
        candidate.wrapping_add(0x1_0000)
    } else {
        candidate
    }
}

fn nonce(member: MemberId, epoch: Epoch, seq: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = member.0;
    n[1] = epoch;
    n[4..8].copy_from_slice(&seq.to_be_bytes());
    *Nonce::from_slice(&n)
}

/// One member's end-to-end key state: its own epochs and what others granted it.
///
/// Sans-IO: methods take `now` and return messages to send; nothing here reads a clock or
/// touches a socket.
///
/// # Thread
/// Owned by the network thread.
pub struct MemberKeys {
    me: MemberId,
    auth: MemberAuthKey,
    policy: RotationPolicy,
    own: Vec<OwnEpoch>,
    sent_in_epoch: u32,
    remotes: std::collections::BTreeMap<MemberId, RemoteMember>,
}

impl MemberKeys {
    /// Key state for member `me`, with a first epoch ready.
    pub fn new(me: MemberId, auth: MemberAuthKey, policy: RotationPolicy, now: Instant) -> Self {
        Self {
            me,
            auth,
            policy,
            own: vec![OwnEpoch::new(0, now)],
            sent_in_epoch: 0,
            remotes: Default::default(),
        }
    }

    fn current(&self) -> &OwnEpoch {
        self.own.last().expect("there is always a current epoch")
    }

    /// Our current epoch.
    pub fn epoch(&self) -> Epoch {
        self.current().epoch
    }

    /// The announcement of our current ephemeral key.
    pub fn announce(&self) -> KeyAnnounce {
        let cur = self.current();
        let public = *cur.public.as_bytes();
        KeyAnnounce {
            member: self.me,
            epoch: cur.epoch,
            public,
            mac: self.announce_mac(self.me, cur.epoch, &public),
        }
    }

    fn announce_mac(&self, member: MemberId, epoch: Epoch, public: &[u8; 32]) -> [u8; 32] {
        mac(
            &self.auth.0,
            &[b"echoel v1 announce", &[member.0, epoch], public],
        )
        .finalize()
        .into_bytes()
        .into()
    }

    /// The key a grant from `from` to `to` is sealed under.
    fn pair_key(&self, dh: &[u8; 32], from: KeyEnd, to: KeyEnd) -> ChaCha20Poly1305 {
        let ids = [from.member.0, from.epoch, to.member.0, to.epoch];
        let info: [&[u8]; 4] = [b"echoel v1 grant", &ids, &from.public, &to.public];
        let key = derive_key(dh, Some(&self.auth.0), &info);
        ChaCha20Poly1305::new(Key::from_slice(&key))
    }

    /// Accepts another member's announcement. Returns the grant of our current sender key to
    /// that member, to send back.
    pub fn accept_announce(&mut self, a: &KeyAnnounce) -> Result<KeyGrant, CryptoError> {
        if a.member == self.me {
            return Err(CryptoError::NotForUs);
        }
        let expected = mac(
            &self.auth.0,
            &[b"echoel v1 announce", &[a.member.0, a.epoch], &a.public],
        );
        expected
            .verify_slice(&a.mac)
            .map_err(|_| CryptoError::Forged)?;
        let remote = self.remotes.entry(a.member).or_default();
        if !remote.announced.iter().any(|(e, _)| *e == a.epoch) {
            remote.announced.push((a.epoch, PublicKey::from(a.public)));
            if remote.announced.len() > 2 {
                remote.announced.remove(0);
            }
        }
        self.grant_to(a.member)
    }

    /// Our current sender key sealed to `to`'s newest announced key.
    fn grant_to(&self, to: MemberId) -> Result<KeyGrant, CryptoError> {
        let (to_epoch, to_pub) = *self
            .remotes
            .get(&to)
            .and_then(|r| r.announced.last())
            .ok_or(CryptoError::UnknownKey)?;
        let cur = self.current();
        let dh = cur.secret.diffie_hellman(&to_pub);
        let from = KeyEnd {
            member: self.me,
            epoch: cur.epoch,
            public: *cur.public.as_bytes(),
        };
        let to_end = KeyEnd {
            member: to,
            epoch: to_epoch,
            public: *to_pub.as_bytes(),
        };
        let cipher = self.pair_key(dh.as_bytes(), from, to_end);
        let mut sealed = cur.sender_key.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(&Nonce::default(), b"", &mut sealed)
            .map_err(|_| CryptoError::Malformed)?;
        sealed.extend_from_slice(&tag);
        Ok(KeyGrant {
            from: self.me,
            from_epoch: cur.epoch,
            from_public: *cur.public.as_bytes(),
            to,
            to_epoch,
            sealed,
        })
    }

    /// Accepts a sender key granted to us.
    pub fn accept_grant(&mut self, g: &KeyGrant, now: Instant) -> Result<(), CryptoError> {
        if g.to != self.me || g.from == self.me {
            return Err(CryptoError::NotForUs);
        }
        if g.sealed.len() != 32 + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let own = self
            .own
            .iter()
            .find(|o| o.epoch == g.to_epoch)
            .ok_or(CryptoError::UnknownKey)?;
        let from_pub = PublicKey::from(g.from_public);
        let dh = own.secret.diffie_hellman(&from_pub);
        let from = KeyEnd {
            member: g.from,
            epoch: g.from_epoch,
            public: g.from_public,
        };
        let to = KeyEnd {
            member: self.me,
            epoch: own.epoch,
            public: *own.public.as_bytes(),
        };
        let cipher = self.pair_key(dh.as_bytes(), from, to);
        let mut key = [0u8; 32];
        key.copy_from_slice(&g.sealed[..32]);
        let tag = Tag::from_slice(&g.sealed[32..]);
        cipher
            .decrypt_in_place_detached(&Nonce::default(), b"", &mut key, tag)
            .map_err(|_| CryptoError::Forged)?;
        let remote = self.remotes.entry(g.from).or_default();
        if remote.keys.iter().any(|k| k.epoch == g.from_epoch) {
            key.zeroize();
            return Ok(());
        }
        for k in remote.keys.iter_mut().filter(|k| k.superseded.is_none()) {
            k.superseded = Some(now);
        }
        remote.keys.push(RemoteKey {
            epoch: g.from_epoch,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            window: ReplayWindow::default(),
            superseded: None,
        });
        key.zeroize();
        Ok(())
    }

    /// Forgets a member that left.
    pub fn remove_member(&mut self, member: MemberId) {
        self.remotes.remove(&member);
    }

    /// Members we can currently send to (they granted nothing yet, but announced).
    pub fn known_members(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.remotes.keys().copied()
    }

    /// Whether `member` has granted us a key we can open its audio with.
    pub fn can_open_from(&self, member: MemberId) -> bool {
        self.remotes
            .get(&member)
            .is_some_and(|r| !r.keys.is_empty())
    }

    /// Rotates when the policy says so. Returns the new announcement and a grant per known
    /// member, to send; `None` if no rotation was due.
    pub fn maybe_rotate(&mut self, now: Instant) -> Option<(KeyAnnounce, Vec<KeyGrant>)> {
        let due = now.duration_since(self.current().created) >= self.policy.max_age
            || self.sent_in_epoch >= self.policy.max_packets;
        due.then(|| self.rotate(now))
    }

    /// Starts a new epoch now.
    pub fn rotate(&mut self, now: Instant) -> (KeyAnnounce, Vec<KeyGrant>) {
        let next = (self.epoch() + 1) % EPOCH_MODULUS;
        self.own.push(OwnEpoch::new(next, now));
        // Keep the previous ephemeral for grants sealed to it in flight; older ones go.
        while self.own.len() > 2 {
            self.own.remove(0);
        }
        self.sent_in_epoch = 0;
        let grants = self
            .remotes
            .keys()
            .copied()
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|m| self.grant_to(m).ok())
            .collect();
        (self.announce(), grants)
    }

    /// Drops keys whose grace period is over (forward secrecy).
    pub fn expire(&mut self, now: Instant) {
        let grace = self.policy.grace;
        for r in self.remotes.values_mut() {
            r.keys
                .retain(|k| k.superseded.is_none_or(|t| now.duration_since(t) < grace));
        }
        if self.own.len() > 1 && now.duration_since(self.current().created) >= grace {
            self.own.drain(..self.own.len() - 1);
        }
    }

    /// Seals one audio payload as a datagram (header ‖ ciphertext ‖ tag), appended to `out`
    /// (so a caller can put a prefix in front without a second buffer).
    pub fn seal_audio(&mut self, seq: u32, payload: &[u8], out: &mut Vec<u8>) {
        self.seal_audio_with(seq, payload, false, out);
    }

    /// [`Self::seal_audio`] with the header's redundancy flag: `payload` is then a
    /// [`crate::wire::pack_frames`] container.
    pub fn seal_audio_with(
        &mut self,
        seq: u32,
        payload: &[u8],
        redundant: bool,
        out: &mut Vec<u8>,
    ) {
        let cur = self.current();
        let header = AudioHeader {
            epoch: cur.epoch,
            seq_low: seq as u16,
            redundant,
        };
        let start = out.len();
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(payload);
        // The header is authenticated as associated data; only the payload is encrypted.
        let (aad, body) = out[start..].split_at_mut(AUDIO_HEADER_LEN);
        let tag = cur
            .cipher
            .encrypt_in_place_detached(&nonce(self.me, cur.epoch, seq), aad, body)
            .expect("ChaCha20-Poly1305 seals any datagram-sized payload");
        out.extend_from_slice(&tag);
        self.sent_in_epoch = self.sent_in_epoch.saturating_add(1);
    }

    /// Opens an audio datagram from `from`: returns the full sequence number and the payload
    /// (decrypted in place inside `datagram`).
    pub fn open_audio<'a>(
        &mut self,
        from: MemberId,
        datagram: &'a mut [u8],
    ) -> Result<(u32, &'a [u8]), CryptoError> {
        if datagram.len() < AUDIO_HEADER_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let header = AudioHeader::decode(datagram).map_err(|_| CryptoError::Malformed)?;
        let remote = self.remotes.get_mut(&from).ok_or(CryptoError::UnknownKey)?;
        let seq = widen_seq(
            remote.highest_seq.unwrap_or(u32::from(header.seq_low)),
            header.seq_low,
        );
        let key = remote
            .keys
            .iter_mut()
            .rev()
            .find(|k| k.epoch == header.epoch)
            .ok_or(CryptoError::UnknownKey)?;
        key.window.check(seq)?;
        let (aad, rest) = datagram.split_at_mut(AUDIO_HEADER_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        key.cipher
            .decrypt_in_place_detached(
                &nonce(from, header.epoch, seq),
                aad,
                body,
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Forged)?;
        key.window.mark(seq);
        if remote
            .highest_seq
            .is_none_or(|h| (seq.wrapping_sub(h) as i32) > 0)
        {
            remote.highest_seq = Some(seq);
        }
        Ok((seq, body))
    }
}

/// Seals the session document's sync messages (and, under another key, presence): only
/// members (who hold the room secret) can read or forge them; the relay that carries them
/// cannot.
pub struct DocCipher(ChaCha20Poly1305);

impl DocCipher {
    /// Seals `plain` from `from` with a fresh random nonce.
    pub fn seal(&self, from: MemberId, plain: &[u8]) -> ([u8; 12], Vec<u8>) {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let mut body = plain.to_vec();
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &[from.0], &mut body)
            .expect("a session document message is far below the AEAD limit");
        body.extend_from_slice(&tag);
        (nonce, body)
    }

    /// Opens what [`Self::seal`] made for a message from `from`.
    pub fn open(
        &self,
        from: MemberId,
        nonce: &[u8; 12],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut body = body.to_vec();
        self.0
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &[from.0],
                &mut body,
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Forged)?;
        Ok(body)
    }
}

impl MemberKeys {
    /// Whether frame `seq` from `from`, carried redundantly in a later datagram sealed under
    /// `epoch`, was never opened: only then is the copy worth handing on. It is not marked,
    /// so the frame's own datagram, if merely late, still opens (and is not taken for a
    /// replay).
    pub fn missing(&self, from: MemberId, epoch: Epoch, seq: u32) -> bool {
        self.remotes
            .get(&from)
            .and_then(|r| r.keys.iter().rev().find(|k| k.epoch == epoch))
            .is_some_and(|key| key.window.check(seq).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn room() -> RoomId {
        RoomId::new("band").unwrap()
    }

    fn pair(now: Instant) -> (MemberKeys, MemberKeys) {
        let secret = RoomSecret::from_bytes([9; 32]);
        let a = MemberKeys::new(
            MemberId(1),
            secret.member_auth(&room()),
            RotationPolicy::default(),
            now,
        );
        let b = MemberKeys::new(
            MemberId(2),
            secret.member_auth(&room()),
            RotationPolicy::default(),
            now,
        );
        (a, b)
    }

    /// A and B exchange announcements and grants both ways.
    fn introduce(a: &mut MemberKeys, b: &mut MemberKeys, now: Instant) {
        let ga = b.accept_announce(&a.announce()).unwrap();
        let gb = a.accept_announce(&b.announce()).unwrap();
        a.accept_grant(&ga, now).unwrap();
        b.accept_grant(&gb, now).unwrap();
    }

    #[test]
    fn admission_proof_checks_without_the_secret() {
        let secret = RoomSecret::generate();
        let verifier = secret.verifier(&room());
        let challenge = [3u8; 32];
        let proof = secret.admission_proof(&room(), &challenge, b"tls-binding");
        assert!(verifier.check(&challenge, b"tls-binding", &proof));
        assert!(!verifier.check(&challenge, b"other-connection", &proof));
        assert!(!verifier.check(&[4u8; 32], b"tls-binding", &proof));
        let wrong = RoomSecret::generate().admission_proof(&room(), &challenge, b"tls-binding");
        assert!(!verifier.check(&challenge, b"tls-binding", &wrong));
    }

    #[test]
    fn audio_round_trips_and_tampering_replay_and_forgery_are_refused() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        introduce(&mut a, &mut b, now);
        let mut dg = Vec::new();
        a.seal_audio(7, b"opus frame", &mut dg);
        assert!(
            !dg.windows(10).any(|w| w == b"opus frame"),
            "payload is encrypted"
        );
        let mut copy = dg.clone();
        let (seq, payload) = b.open_audio(MemberId(1), &mut copy).unwrap();
        assert_eq!((seq, payload), (7, &b"opus frame"[..]));
        let mut replay = dg.clone();
        assert_eq!(
            b.open_audio(MemberId(1), &mut replay).unwrap_err(),
            CryptoError::Replay
        );
        dg.clear();
        a.seal_audio(8, b"opus frame", &mut dg);
        let mut flipped8 = dg.clone();
        flipped8[5] ^= 0x40;
        assert_eq!(
            b.open_audio(MemberId(1), &mut flipped8).unwrap_err(),
            CryptoError::Forged
        );
        // The same bytes claimed by another sender do not open.
        let mut wrong_sender = dg.clone();
        assert_eq!(
            b.open_audio(MemberId(3), &mut wrong_sender).unwrap_err(),
            CryptoError::UnknownKey
        );
        // A forger who knows the room secret's admission verifier (the relay) cannot seal.
        let relay_guess =
            RoomSecret::from_bytes(RoomSecret::from_bytes([9; 32]).verifier(&room()).to_bytes());
        let mut mallory = MemberKeys::new(
            MemberId(1),
            relay_guess.member_auth(&room()),
            RotationPolicy::default(),
            now,
        );
        assert_eq!(
            b.accept_announce(&mallory.announce()).unwrap_err(),
            CryptoError::Forged
        );
        let mut forged = Vec::new();
        mallory.seal_audio(9, b"injected", &mut forged);
        assert_eq!(
            b.open_audio(MemberId(1), &mut forged).unwrap_err(),
            CryptoError::Forged
        );
    }

    #[test]
    fn rotation_keeps_audio_flowing_and_old_keys_expire() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        introduce(&mut a, &mut b, t0);
        let mut old = Vec::new();
        a.seal_audio(1, b"before", &mut old);
        let t1 = t0 + Duration::from_secs(121);
        let (ann, grants) = a.maybe_rotate(t1).expect("rotation due after max_age");
        assert_eq!(ann.epoch, 1);
        let back = b.accept_announce(&ann).unwrap();
        a.accept_grant(&back, t1).unwrap();
        for g in &grants {
            b.accept_grant(g, t1).unwrap();
        }
        let mut new = Vec::new();
        a.seal_audio(2, b"after", &mut new);
        assert_eq!(b.open_audio(MemberId(1), &mut new).unwrap().1, b"after");
        // In-flight packets of the old epoch still open during the grace period...
        let mut late = old.clone();
        assert_eq!(b.open_audio(MemberId(1), &mut late).unwrap().1, b"before");
        // ...and not after it: the old key is gone.
        b.expire(t1 + Duration::from_secs(6));
        let mut stale = old.clone();
        assert_eq!(
            b.open_audio(MemberId(1), &mut stale).unwrap_err(),
            CryptoError::UnknownKey
        );
    }

    #[test]
    fn packet_count_triggers_rotation() {
        let now = Instant::now();
        let secret = RoomSecret::generate();
        let policy = RotationPolicy {
            max_packets: 10,
            ..RotationPolicy::default()
        };
        let mut a = MemberKeys::new(MemberId(1), secret.member_auth(&room()), policy, now);
        let mut out = Vec::new();
        for s in 0..9 {
            a.seal_audio(s, b"p", &mut out);
        }
        assert!(a.maybe_rotate(now).is_none());
        a.seal_audio(9, b"p", &mut out);
        assert!(a.maybe_rotate(now).is_some());
    }

    #[test]
    fn widening_follows_wraps_both_ways() {
        assert_eq!(widen_seq(0x0001_fff0, 0x0005), 0x0002_0005);
        assert_eq!(widen_seq(0x0002_0005, 0xfff0), 0x0001_fff0);
        assert_eq!(widen_seq(10, 12), 12);
        assert_eq!(widen_seq(u32::MAX - 2, 3), 3);
    }

    proptest! {
        #[test]
        fn random_datagrams_never_panic_and_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let now = Instant::now();
            let (mut a, mut b) = pair(now);
            introduce(&mut a, &mut b, now);
            let mut d = bytes.clone();
            prop_assert!(b.open_audio(MemberId(1), &mut d).is_err());
        }

        #[test]
        fn replay_window_accepts_each_sequence_once(seqs in proptest::collection::vec(0u32..300, 1..200)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::HashSet::new();
            for s in seqs {
                let ok = w.check(s).is_ok();
                if ok {
                    prop_assert!(seen.insert(s), "{} accepted twice", s);
                    w.mark(s);
                }
            }
        }
    }
}
