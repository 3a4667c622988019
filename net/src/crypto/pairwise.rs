//! Keys between two members (document messages, a rotated room secret) and presence under
//! the sender's epoch: what only the members meant to read can open.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand_core::CryptoRngCore;
use x25519_dalek::PublicKey;

use super::{
    derive_key, CryptoError, Epoch, KeyAnnounce, KeyEnd, KeyGrant, MemberKeys, MemberPublic,
    SIGNATURE_LEN,
};
use crate::wire::{MemberId, TAG_LEN};

impl MemberKeys {
    /// A key to seal a new room secret to `to` under, as [`Self::doc_sealer`] but for that
    /// use only.
    pub fn secret_sealer(&self, to: MemberId) -> Result<(DocCipher, DocEnds), CryptoError> {
        self.pair_sealer(b"echoel v2 room secret", to)
    }

    /// The key a new room secret from `from` opens with (see [`Self::doc_opener`]).
    pub fn secret_opener(
        &self,
        from: MemberId,
        signer: &MemberPublic,
        ends: &DocEnds,
    ) -> Result<DocCipher, CryptoError> {
        self.pair_opener(b"echoel v2 room secret", from, signer, ends)
    }

    /// A key to seal a take's frames (or the asking for them) to `to` under, as
    /// [`Self::doc_sealer`] but for that use only.
    pub fn take_sealer(&self, to: MemberId) -> Result<(DocCipher, DocEnds), CryptoError> {
        self.pair_sealer(b"echoel v2 take", to)
    }

    /// The key a take message from `from` opens with (see [`Self::doc_opener`]).
    pub fn take_opener(
        &self,
        from: MemberId,
        signer: &MemberPublic,
        ends: &DocEnds,
    ) -> Result<DocCipher, CryptoError> {
        self.pair_opener(b"echoel v2 take", from, signer, ends)
    }

    /// The key our document messages to `to` are sealed under, and what names it: our newest
    /// ephemeral and `to`'s newest announced one. Only the two of us can derive it, so a
    /// member that left (or any other) reads none of them, and none can be made as ours.
    /// `UnknownKey` until `to` has announced itself.
    pub fn doc_sealer(&self, to: MemberId) -> Result<(DocCipher, DocEnds), CryptoError> {
        self.pair_sealer(DOC_LABEL, to)
    }

    /// The key a document message from `from` (member key `signer`), sealed under `ends`,
    /// opens with: the sender's signed announcement travels with it (so it never waits on the
    /// announcement by the relay), ours must be one we still hold.
    pub fn doc_opener(
        &self,
        from: MemberId,
        signer: &MemberPublic,
        ends: &DocEnds,
    ) -> Result<DocCipher, CryptoError> {
        self.pair_opener(DOC_LABEL, from, signer, ends)
    }

    /// Our newest sender key sealed from our newest ephemeral to `to`'s newest announced one,
    /// naming `from` and `from_epoch` as its sender (ourselves, but for a test's forger).
    pub(super) fn seal_grant_as(
        &self,
        from: MemberId,
        from_epoch: Epoch,
        to: MemberId,
    ) -> Result<KeyGrant, CryptoError> {
        let (to_epoch, to_pub) = self.latest_announced(to)?;
        let cur = self.current();
        let dh = cur.secret.diffie_hellman(&to_pub);
        let from_end = KeyEnd {
            member: from,
            epoch: from_epoch,
            public: *cur.public.as_bytes(),
        };
        let to_end = KeyEnd {
            member: to,
            epoch: to_epoch,
            public: *to_pub.as_bytes(),
        };
        let cipher = self.pair_key(dh.as_bytes(), from_end, to_end);
        let mut sealed = cur.sender_key.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(&Nonce::default(), b"", &mut sealed)
            .map_err(|_| CryptoError::Malformed)?;
        sealed.extend_from_slice(&tag);
        Ok(KeyGrant {
            from,
            from_epoch,
            from_public: *cur.public.as_bytes(),
            to,
            to_epoch,
            to_public: *to_pub.as_bytes(),
            sealed,
        })
    }

    fn pair_sealer(&self, label: &[u8], to: MemberId) -> Result<(DocCipher, DocEnds), CryptoError> {
        let (to_epoch, to_pub) = self.latest_announced(to)?;
        let cur = self.current();
        let ends = DocEnds {
            from: self.announce(),
            to_epoch,
            to_public: *to_pub.as_bytes(),
        };
        let dh = cur.secret.diffie_hellman(&to_pub);
        Ok((
            self.ends_cipher(label, dh.as_bytes(), self.me, to, &ends),
            ends,
        ))
    }

    fn pair_opener(
        &self,
        label: &[u8],
        from: MemberId,
        signer: &MemberPublic,
        ends: &DocEnds,
    ) -> Result<DocCipher, CryptoError> {
        if from == self.me {
            return Err(CryptoError::NotForUs);
        }
        self.check_announce(&ends.from, from, signer)?;
        let own = self
            .own
            .iter()
            .find(|o| o.epoch == ends.to_epoch && o.public.as_bytes() == &ends.to_public)
            .ok_or(CryptoError::UnknownKey)?;
        let dh = own
            .secret
            .diffie_hellman(&PublicKey::from(ends.from.public));
        Ok(self.ends_cipher(label, dh.as_bytes(), from, self.me, ends))
    }

    fn ends_cipher(
        &self,
        label: &[u8],
        dh: &[u8; 32],
        from: MemberId,
        to: MemberId,
        ends: &DocEnds,
    ) -> DocCipher {
        let from = KeyEnd {
            member: from,
            epoch: ends.from.epoch,
            public: ends.from.public,
        };
        let to = KeyEnd {
            member: to,
            epoch: ends.to_epoch,
            public: ends.to_public,
        };
        DocCipher::new(&self.pair_secret(label, dh, from, to))
    }

    /// Seals a presence update under the epoch we seal audio with: those we granted it to
    /// read it, a member that left reads none sealed after the switch. Signed inside by our
    /// member key, so no other member can make one as ours. Returns the epoch.
    pub fn seal_presence(
        &self,
        plain: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> (Epoch, [u8; 12], Vec<u8>) {
        let sealer = self.sealer();
        let mut body = plain.to_vec();
        body.extend(
            self.identity
                .sign(&presence_message(self.me, sealer.epoch, plain)),
        );
        let (nonce, sealed) = sealer.presence.seal(self.me, &[], &body, rng);
        (sealer.epoch, nonce, sealed)
    }

    /// Opens `from`'s presence update sealed under its `epoch` and signed by `signer`.
    pub fn open_presence(
        &self,
        from: MemberId,
        signer: &MemberPublic,
        epoch: Epoch,
        nonce: &[u8; 12],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let key = self
            .remotes
            .get(&from)
            .and_then(|r| r.keys.iter().rev().find(|k| k.epoch == epoch))
            .ok_or(CryptoError::UnknownKey)?;
        let mut body = key.presence.open(from, &[], nonce, sealed)?;
        let split = body
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(CryptoError::Malformed)?;
        let (plain, signature) = body.split_at(split);
        if !signer.verify(&presence_message(from, epoch, plain), signature) {
            return Err(CryptoError::Forged);
        }
        body.truncate(split);
        Ok(body)
    }
}

/// What a member (holding the room secret, the keys granted to it and its own member key)
/// can make in another member's name, for tests of a member with the relay on its side.
impl MemberKeys {
    /// Our ephemeral announced as `victim`'s: the MAC holds (we have the member-auth key),
    /// the signature is ours.
    pub(crate) fn danger_announce_as(&self, victim: MemberId) -> KeyAnnounce {
        let cur = self.current();
        let public = *cur.public.as_bytes();
        KeyAnnounce {
            member: victim,
            epoch: cur.epoch,
            public,
            mac: self.announce_mac(victim, cur.epoch, &public),
            signature: self
                .identity
                .sign(&super::announce_message(victim, cur.epoch, &public)),
        }
    }

    /// Our own sender key granted to `to` as `victim`'s next epoch, from our ephemeral: it
    /// opens at `to` unless the grant's ephemeral is checked against what `victim` announced.
    pub(crate) fn danger_grant_as(&self, victim: MemberId, to: MemberId) -> Option<KeyGrant> {
        let epoch = self
            .remotes
            .get(&victim)
            .and_then(|r| r.announced.last())
            .map_or(0, |(e, _)| (e + 1) % super::EPOCH_MODULUS);
        self.seal_grant_as(victim, epoch, to).ok()
    }

    /// A document key to `to` as if we were `victim`: it opens at `to` unless the
    /// announcement's signer is checked.
    pub(crate) fn danger_doc_sealer_as(
        &self,
        victim: MemberId,
        to: MemberId,
    ) -> Option<(DocCipher, DocEnds)> {
        let (to_epoch, to_pub) = self.latest_announced(to).ok()?;
        let ends = DocEnds {
            from: self.danger_announce_as(victim),
            to_epoch,
            to_public: *to_pub.as_bytes(),
        };
        let dh = self.current().secret.diffie_hellman(&to_pub);
        Some((
            self.ends_cipher(DOC_LABEL, dh.as_bytes(), victim, to, &ends),
            ends,
        ))
    }

    /// A presence update sealed under the key `victim` granted us, signed by us.
    pub(crate) fn danger_presence_as(
        &self,
        victim: MemberId,
        plain: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Option<(Epoch, [u8; 12], Vec<u8>)> {
        let key = self.remotes.get(&victim)?.keys.last()?;
        let mut body = plain.to_vec();
        body.extend(
            self.identity
                .sign(&presence_message(victim, key.epoch, plain)),
        );
        let (nonce, sealed) = key.presence.seal(victim, &[], &body, rng);
        Some((key.epoch, nonce, sealed))
    }
}

/// What document keys are derived for.
const DOC_LABEL: &[u8] = b"echoel v2 doc";

/// What a member key signs of a presence update.
fn presence_message(member: MemberId, epoch: Epoch, plain: &[u8]) -> Vec<u8> {
    [
        b"echoel v2 presence".as_slice(),
        &member.to_be_bytes(),
        &[epoch],
        plain,
    ]
    .concat()
}

/// Which two ephemerals a document message between two members is sealed under (see
/// [`MemberKeys::doc_sealer`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocEnds {
    /// The sender's announcement of its ephemeral, signed: it need not have come first.
    pub from: KeyAnnounce,
    /// The recipient's epoch.
    pub to_epoch: Epoch,
    /// The recipient's ephemeral public key of that epoch.
    pub to_public: [u8; 32],
}

/// Seals session document messages between two members (under their pairwise key) and
/// presence (under the sender's epoch): the relay that carries them reads none, and neither
/// does a member that has left.
pub struct DocCipher(ChaCha20Poly1305);

impl DocCipher {
    fn new(key: &[u8; 32]) -> Self {
        Self(ChaCha20Poly1305::new(Key::from_slice(key)))
    }

    /// Presence's key of a sender key: its own, so a presence update is never taken for audio.
    pub(super) fn presence(sender_key: &[u8; 32]) -> Self {
        Self::new(&derive_key(sender_key, None, &[b"echoel v2 presence"]))
    }

    /// A cipher under a raw key, for tests of what uses one.
    #[cfg(any(test, feature = "danger-test-hooks"))]
    pub fn danger_from_key(key: [u8; 32]) -> Self {
        Self::new(&key)
    }

    /// Seals `plain` from `from` with a fresh random nonce; `context` (the message's place
    /// among the sender's messages, for example) is authenticated with it.
    pub fn seal(
        &self,
        from: MemberId,
        context: &[u8],
        plain: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> ([u8; 12], Vec<u8>) {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let mut body = plain.to_vec();
        let tag = self
            .0
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &Self::aad(from, context),
                &mut body,
            )
            .expect("a session document message is far below the AEAD limit");
        body.extend_from_slice(&tag);
        (nonce, body)
    }

    /// Sender and context, as authenticated: the context is short and fixed per use.
    fn aad(from: MemberId, context: &[u8]) -> Vec<u8> {
        let mut aad = from.to_be_bytes().to_vec();
        aad.extend_from_slice(context);
        aad
    }

    /// Opens what [`Self::seal`] made for a message from `from` with this `context`.
    pub fn open(
        &self,
        from: MemberId,
        context: &[u8],
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
                &Self::aad(from, context),
                &mut body,
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Forged)?;
        Ok(body)
    }
}
