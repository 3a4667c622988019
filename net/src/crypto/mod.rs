//! End-to-end keys: admission proofs, authenticated ephemeral key exchange, per-sender audio
//! keys with rotation, and sealing/opening of audio datagrams with a replay window.
//!
//! Key schedule (HKDF-SHA256 over the 32-byte room secret, `info` = label ‖ room id):
//!
//! - `admission`   → an Ed25519 key whose public half is the verifier the relay stores; a
//!   join signs the relay's challenge with it, so the relay checks what it cannot make.
//! - `member-auth` → MACs on key announcements; the relay cannot derive it, so it cannot pass
//!   off an ephemeral of its own as a member's (nor admit a member of its own making).
//!
//! Each member, per key epoch, makes an ephemeral X25519 pair and a random 32-byte sender key.
//! It announces the public half (MAC'd, and signed by its member key) and grants its sender key
//! to every other member, sealed under `HKDF(X25519(own ephemeral, their ephemeral))`. Audio is
//! sealed once per sender with ChaCha20-Poly1305 under the sender key, so the relay forwards
//! identical bytes to every member; presence under a key derived from it. Document messages
//! go to one member each, sealed under a pairwise key of the two ends' ephemerals. Every
//! membership change and a timer rotate the epoch (forward secrecy: old keys are dropped
//! after a short grace period), and nothing of the room secret alone opens any of it — which
//! is also why a member can move the room to a new secret without anyone rekeying.

mod audio;
mod audio_mac;
mod identity;
mod pairwise;

pub(crate) use audio::ReplayWindow;
pub use audio::{widen_media, widen_seq, OpenedAudio};
pub use audio_mac::{Relayed, AUDIO_MAC_ENTRY, AUDIO_MAC_LEN, MAX_AUDIO_MACS};
pub use identity::{MemberKey, MemberPublic, SIGNATURE_LEN};
pub use pairwise::{DocCipher, DocEnds};

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRngCore, OsRng, RngCore};
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::invite::RoomId;
use crate::wire::{MemberId, TAG_LEN};

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

    /// The room's admission signing key: members hold it (through the secret), the relay
    /// only its public half.
    fn admission_key(&self, room: &RoomId) -> MemberKey {
        let seed = zeroize::Zeroizing::new(self.derive("echoel v2 admission-signing", room));
        MemberKey::from_seed(&seed)
    }

    /// What the relay stores for a room.
    pub fn verifier(&self, room: &RoomId) -> AdmissionVerifier {
        AdmissionVerifier(self.admission_key(room).public())
    }

    /// The key that authenticates members to each other.
    pub fn member_auth(&self, room: &RoomId) -> MemberAuthKey {
        MemberAuthKey(self.derive("echoel v1 member-auth", room))
    }

    /// Proves knowledge of the secret for `challenge`, bound to this connection's `binding`
    /// (TLS exporter output), without revealing the secret: a signature the verifier checks
    /// and cannot make.
    pub fn admission_proof(&self, room: &RoomId, challenge: &[u8; 32], binding: &[u8]) -> Vec<u8> {
        self.admission_key(room)
            .sign_challenge(ROOM_ADMISSION_LABEL, challenge, binding)
    }

    /// Asks the relay, on the TLS session with keying material `binding`, to admit by `next`
    /// from now on: signed by this (the current) secret's admission key, so only a member
    /// can rotate the room's secret, and the relay, which holds the verifier, cannot.
    pub fn rotation_proof(
        &self,
        room: &RoomId,
        next: &AdmissionVerifier,
        binding: &[u8],
    ) -> Vec<u8> {
        self.admission_key(room)
            .sign_challenge(ROOM_ROTATION_LABEL, &next.to_bytes(), binding)
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

/// The relay's stored proof-checker for one room: the public half of a signing key derived
/// from the room secret. It opens no audio, grant or document, and it admits no one: a proof
/// is a signature only the secret's holders can make.
#[derive(Clone, PartialEq, Eq)]
pub struct AdmissionVerifier(MemberPublic);

/// What the room's admission key signs.
const ROOM_ADMISSION_LABEL: &[u8] = b"echoel v2 room admission";
/// What it signs to hand the room over to a new secret.
const ROOM_ROTATION_LABEL: &[u8] = b"echoel v2 room rotation";

impl AdmissionVerifier {
    /// Raw bytes, for the relay's room store.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0 .0
    }

    /// From the relay's room store.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(MemberPublic(b))
    }

    /// Checks a proof: a signature of `challenge` on the session with keying material
    /// `binding` by the room's admission key.
    pub fn check(&self, challenge: &[u8; 32], binding: &[u8], proof: &[u8]) -> bool {
        self.0
            .verify_challenge(ROOM_ADMISSION_LABEL, challenge, binding, proof)
    }

    /// Checks a member's request to admit by `next` from now on (see
    /// [`RoomSecret::rotation_proof`]).
    pub fn check_rotation(&self, next: &AdmissionVerifier, binding: &[u8], proof: &[u8]) -> bool {
        self.0
            .verify_challenge(ROOM_ROTATION_LABEL, &next.to_bytes(), binding, proof)
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
    /// HMAC under the member-auth key: made by someone holding the room secret.
    pub mac: [u8; 32],
    /// The member key's signature: made by this member, no other.
    pub signature: Vec<u8>,
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
    /// Which of the recipient's announced keys it is sealed to: its epoch and public half
    /// (a member that rejoined reuses epoch numbers with new keys).
    pub to_epoch: Epoch,
    /// The recipient's ephemeral public key it is sealed to.
    pub to_public: [u8; 32],
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
    /// The longest audio goes on under the old key after a rotation: it switches as soon as
    /// every member granted the new key says it holds it (about one round trip), so a
    /// rotation costs no one a frame, and at the latest after this, whoever has not answered.
    /// A departed member can read on until the switch, no longer.
    pub switch_delay: Duration,
}

/// Our own epochs kept at most: the sealing one and the newest few, whose ephemerals grants
/// in flight may be sealed to (every member rotates on a membership change, so a band
/// gathering or a flaky member makes several in a second). Half the epoch space, so an epoch
/// number never names two of them.
const OWN_EPOCHS_KEPT: usize = EPOCH_MODULUS as usize / 2;

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            // Two minutes or 2^18 packets (11 min at 2.5 ms frames), whichever comes first.
            max_age: Duration::from_secs(120),
            max_packets: 1 << 18,
            grace: Duration::from_secs(5),
            // Covers a grant and its answer retransmitted on a lossy path.
            switch_delay: Duration::from_secs(2),
        }
    }
}

struct OwnEpoch {
    epoch: Epoch,
    secret: StaticSecret,
    public: PublicKey,
    sender_key: [u8; 32],
    cipher: ChaCha20Poly1305,
    /// Seals our presence in this epoch: only members granted the epoch read it.
    presence: DocCipher,
    created: Instant,
}

impl OwnEpoch {
    fn new(epoch: Epoch, now: Instant, rng: &mut dyn CryptoRngCore) -> Self {
        let secret = StaticSecret::random_from_rng(&mut *rng);
        let public = PublicKey::from(&secret);
        let mut sender_key = [0u8; 32];
        rng.fill_bytes(&mut sender_key);
        Self {
            epoch,
            public,
            secret,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&sender_key)),
            presence: DocCipher::presence(&sender_key),
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
    /// Where each of its streams stands, for widening what the wire truncates.
    stems: audio::StemPositions,
}

struct RemoteKey {
    epoch: Epoch,
    /// The sender's ephemeral of that epoch, as it announced it (signed).
    public: PublicKey,
    cipher: ChaCha20Poly1305,
    presence: DocCipher,
    /// One replay window per stream: each stream numbers its datagrams on its own.
    windows: audio::ReplayWindows,
    superseded: Option<Instant>,
}

/// One member's end-to-end key state: its own epochs and what others granted it.
///
/// Sans-IO: methods take `now` and return messages to send; nothing here reads a clock or
/// touches a socket.
///
/// # Thread
/// Owned by a member's room core, which the session's driver task owns: sealing and opening
/// happen there, never on the audio or pump thread.
pub struct MemberKeys {
    me: MemberId,
    /// MACs our announcements.
    auth: MemberAuthKey,
    /// Also taken on others' announcements: the other side of a secret rotation (the next
    /// secret before the relay confirmed it, the previous one after).
    also: Vec<MemberAuthKey>,
    identity: std::sync::Arc<MemberKey>,
    policy: RotationPolicy,
    /// Our epochs, newest last: the one we seal with, the newest (granted, not yet sealing
    /// while a switch is pending) and a few before, whose ephemerals grants in flight may be
    /// sealed to.
    own: Vec<OwnEpoch>,
    /// The epoch we seal audio with.
    sealing: Epoch,
    /// When the newest epoch takes over sealing at the latest; sooner once every member we
    /// granted it to says it holds it, so no member meets a frame it has no key for.
    switch_at: Option<Instant>,
    /// Members granted the newest epoch's key, and whether each has said it holds it.
    granted: std::collections::BTreeMap<MemberId, bool>,
    /// Members that let a switch run out without answering (a connection gone dead that the
    /// relay has not noticed yet): no switch waits for them again until they answer.
    silent: std::collections::BTreeSet<MemberId>,
    sent_in_epoch: u32,
    /// The next sequence number of each of our streams: kept here, beside the key, so no
    /// two datagrams under one key share a nonce, whatever the audio engine does.
    next_seq: audio::StemCounters,
    remotes: std::collections::BTreeMap<MemberId, RemoteMember>,
    /// Pairwise keys of the MACs that say who sealed a datagram the relay carries.
    macs: audio_mac::MacKeys,
}

impl MemberKeys {
    /// Key state for member `me`, with a first epoch ready.
    pub fn new(
        me: MemberId,
        auth: MemberAuthKey,
        identity: std::sync::Arc<MemberKey>,
        policy: RotationPolicy,
        now: Instant,
        rng: &mut dyn CryptoRngCore,
    ) -> Self {
        Self {
            me,
            auth,
            also: Vec::new(),
            identity,
            policy,
            own: vec![OwnEpoch::new(0, now, rng)],
            sealing: 0,
            switch_at: None,
            granted: Default::default(),
            silent: Default::default(),
            sent_in_epoch: 0,
            next_seq: audio::StemCounters::default(),
            remotes: Default::default(),
            macs: Default::default(),
        }
    }

    /// Our newest epoch: what we announce and grant.
    fn current(&self) -> &OwnEpoch {
        self.own.last().expect("there is always a current epoch")
    }

    /// The epoch we seal audio with (the newest, unless a switch is pending).
    fn sealer(&self) -> &OwnEpoch {
        self.own
            .iter()
            .rev()
            .find(|o| o.epoch == self.sealing)
            .unwrap_or_else(|| self.current())
    }

    /// Our newest epoch.
    pub fn epoch(&self) -> Epoch {
        self.current().epoch
    }

    /// When a pending switch to the newest epoch is due (see [`Self::switch`]).
    pub fn switch_at(&self) -> Option<Instant> {
        self.switch_at
    }

    /// Whether a new epoch is granted but not yet sealing: a newcomer granted it now opens
    /// nothing sealed before.
    pub fn switch_pending(&self) -> bool {
        self.switch_at.is_some()
    }

    /// Seals with the newest epoch from now on, if its switch is due: every member granted
    /// it holds it, or the longest wait is over. Whether it switched now.
    pub fn switch(&mut self, now: Instant) -> bool {
        let everyone = self.granted.values().all(|held| *held);
        let due = self.switch_at.is_some_and(|t| now >= t || everyone);
        if due {
            let unanswered = self.granted.iter().filter(|(_, held)| !**held);
            self.silent.extend(unanswered.map(|(m, _)| *m));
            self.sealing = self.epoch();
            self.switch_at = None;
            self.sent_in_epoch = 0;
        }
        due
    }

    /// `member` says it holds our key of `epoch`.
    pub fn acknowledged(&mut self, member: MemberId, epoch: Epoch) {
        self.silent.remove(&member);
        if epoch == self.epoch() {
            if let Some(held) = self.granted.get_mut(&member) {
                *held = true;
            }
        }
    }

    /// Our member key's public half.
    pub fn public(&self) -> MemberPublic {
        self.identity.public()
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
            signature: self
                .identity
                .sign(&announce_message(self.me, cur.epoch, &public)),
        }
    }

    /// Whether `a` is an announcement by `member`, whose member key is `signer`: made by
    /// someone holding the room secret (the MAC) and by that member (the signature).
    fn check_announce(
        &self,
        a: &KeyAnnounce,
        member: MemberId,
        signer: &MemberPublic,
    ) -> Result<(), CryptoError> {
        if a.member != member {
            return Err(CryptoError::NotForUs);
        }
        let made_by_a_member = std::iter::once(&self.auth).chain(&self.also).any(|auth| {
            mac(
                &auth.0,
                &[
                    b"echoel v1 announce",
                    &a.member.to_be_bytes(),
                    &[a.epoch],
                    &a.public,
                ],
            )
            .verify_slice(&a.mac)
            .is_ok()
        });
        if !made_by_a_member {
            return Err(CryptoError::Forged);
        }
        if !signer.verify(
            &announce_message(a.member, a.epoch, &a.public),
            &a.signature,
        ) {
            return Err(CryptoError::Forged);
        }
        Ok(())
    }

    fn announce_mac(&self, member: MemberId, epoch: Epoch, public: &[u8; 32]) -> [u8; 32] {
        mac(
            &self.auth.0,
            &[
                b"echoel v1 announce",
                &member.to_be_bytes(),
                &[epoch],
                public,
            ],
        )
        .finalize()
        .into_bytes()
        .into()
    }

    /// The key a grant from `from` to `to` is sealed under.
    fn pair_key(&self, dh: &[u8; 32], from: KeyEnd, to: KeyEnd) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.pair_secret(
            b"echoel v1 grant",
            dh,
            from,
            to,
        )))
    }

    /// What only the two ends of a pair of ephemerals can derive, for one use (`label`).
    /// Both ephemerals are announced under the member-auth MAC and a member key's signature,
    /// so no one outside the room (the relay) can stand in for either end.
    fn pair_secret(&self, label: &[u8], dh: &[u8; 32], from: KeyEnd, to: KeyEnd) -> [u8; 32] {
        let [f0, f1] = from.member.to_be_bytes();
        let [t0, t1] = to.member.to_be_bytes();
        let ids = [f0, f1, from.epoch, t0, t1, to.epoch];
        let info: [&[u8]; 4] = [label, &ids, &from.public, &to.public];
        derive_key(dh, None, &info)
    }

    /// Takes announcements made under `auth` too (a rotation's next secret, before the relay
    /// confirms it). At most two kept beside our own.
    pub fn accept_auth(&mut self, auth: MemberAuthKey) {
        if self.also.iter().any(|a| a.0 == auth.0) || auth.0 == self.auth.0 {
            return;
        }
        self.also.push(auth);
        if self.also.len() > 2 {
            self.also.remove(0);
        }
    }

    /// Announces under `auth` from now on, still taking announcements under the one before
    /// (members that learn of the rotation a moment later).
    pub fn use_auth(&mut self, auth: MemberAuthKey) {
        self.also.retain(|a| a.0 != auth.0);
        let previous = std::mem::replace(&mut self.auth, auth);
        self.accept_auth(previous);
    }

    /// Accepts another member's announcement, signed by its member key `signer`. Returns the
    /// grant of our current sender key to that member, to send back.
    pub fn accept_announce(
        &mut self,
        a: &KeyAnnounce,
        signer: &MemberPublic,
    ) -> Result<KeyGrant, CryptoError> {
        if a.member == self.me {
            return Err(CryptoError::NotForUs);
        }
        self.check_announce(a, a.member, signer)?;
        let remote = self.remotes.entry(a.member).or_default();
        // An epoch behind the newest is an old announcement again (the relay replaying it):
        // taken as the newest, our grants and audio MACs would go to an ephemeral its member
        // no longer opens with.
        let behind = remote
            .announced
            .last()
            .map(|(newest, _)| newest.wrapping_sub(a.epoch) % EPOCH_MODULUS)
            .is_some_and(|back| (1..EPOCH_MODULUS / 2).contains(&back));
        if !behind && !remote.announced.iter().any(|(e, _)| *e == a.epoch) {
            remote.announced.push((a.epoch, PublicKey::from(a.public)));
            if remote.announced.len() > 2 {
                remote.announced.remove(0);
            }
        }
        self.grant_to(a.member)
    }

    /// Our newest sender key sealed to `to`'s newest announced key; while a switch is
    /// pending, `to` is waited for.
    fn grant_to(&mut self, to: MemberId) -> Result<KeyGrant, CryptoError> {
        let grant = self.seal_grant(to)?;
        if self.switch_at.is_some() && !self.silent.contains(&to) {
            self.granted.entry(to).or_insert(false);
        }
        Ok(grant)
    }

    /// `to`'s newest announced ephemeral: what we seal to it under.
    fn latest_announced(&self, to: MemberId) -> Result<(Epoch, PublicKey), CryptoError> {
        self.remotes
            .get(&to)
            .and_then(|r| r.announced.last().copied())
            .ok_or(CryptoError::UnknownKey)
    }

    fn seal_grant(&self, to: MemberId) -> Result<KeyGrant, CryptoError> {
        self.seal_grant_as(self.me, self.current().epoch, to)
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
            .find(|o| o.epoch == g.to_epoch && o.public.as_bytes() == &g.to_public)
            .ok_or(CryptoError::UnknownKey)?;
        // Only from an ephemeral its member announced (and signed): a grant names the sender
        // and its ephemeral in the clear, and the relay could deliver anyone's as theirs.
        let announced = self.remotes.get(&g.from).is_some_and(|r| {
            r.announced
                .iter()
                .any(|(e, p)| *e == g.from_epoch && p.as_bytes() == &g.from_public)
        });
        if !announced {
            return Err(CryptoError::UnknownKey);
        }
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
            public: from_pub,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            presence: DocCipher::presence(&key),
            windows: audio::ReplayWindows::default(),
            superseded: None,
        });
        key.zeroize();
        Ok(())
    }

    /// Forgets a member that left.
    pub fn remove_member(&mut self, member: MemberId) {
        self.remotes.remove(&member);
        self.granted.remove(&member);
        self.silent.remove(&member);
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
    pub fn maybe_rotate(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRngCore,
    ) -> Option<(KeyAnnounce, Vec<KeyGrant>)> {
        let due = now.duration_since(self.current().created) >= self.policy.max_age
            || self.sent_in_epoch >= self.policy.max_packets;
        (due && self.switch_at.is_none()).then(|| self.rotate(now, rng))
    }

    /// Makes a new epoch now and grants it to every member we know; audio is sealed with it
    /// from [`RotationPolicy::switch_delay`] on (see [`Self::switch`]). A member removed
    /// before this call never gets the new key: after the switch it opens nothing more.
    pub fn rotate(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRngCore,
    ) -> (KeyAnnounce, Vec<KeyGrant>) {
        let next = (self.epoch() + 1) % EPOCH_MODULUS;
        self.own.push(OwnEpoch::new(next, now, rng));
        // Keep the sealing epoch and the newest few ephemerals (grants in flight may be
        // sealed to any we announced lately); older ones go.
        while self.own.len() > OWN_EPOCHS_KEPT {
            let Some(oldest) = self.own.iter().position(|o| o.epoch != self.sealing) else {
                break;
            };
            self.own.remove(oldest);
        }
        self.switch_at = Some(now + self.policy.switch_delay);
        self.granted.clear();
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
        let settled = self.switch_at.is_none() && self.sealing == self.epoch();
        if settled && self.own.len() > 1 && now.duration_since(self.current().created) >= grace {
            self.own.drain(..self.own.len() - 1);
        }
    }
}

/// What a member key signs to announce an ephemeral: a label of its own, so the signature
/// stands for nothing else.
fn announce_message(member: MemberId, epoch: Epoch, public: &[u8; 32]) -> Vec<u8> {
    [
        b"echoel v2 announce".as_slice(),
        &member.to_be_bytes(),
        &[epoch],
        public,
    ]
    .concat()
}

#[cfg(test)]
mod tests;
