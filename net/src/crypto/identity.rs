//! A member's identity: an Ed25519 signing key whose public half names the member in its room.
//! The participant id is derived from the public key and the instance (one person's plugins in
//! several processes are several instances of one key), so claiming someone's id means holding
//! their private key; the relay checks a signature bound to the TLS session at admission.

use rand_core::CryptoRngCore;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::wire::ParticipantId;

/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A member's public key, as it travels in its Join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MemberPublic(pub [u8; 32]);

impl MemberPublic {
    /// The participant id this key speaks for as its `instance`: the first 8 bytes of the
    /// SHA-256 of both.
    pub fn participant(&self, instance: u32) -> ParticipantId {
        let digest = Sha256::digest(
            [
                b"echoel v2 participant".as_slice(),
                &self.0,
                &instance.to_be_bytes(),
            ]
            .concat(),
        );
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        ParticipantId(u64::from_be_bytes(id))
    }

    /// Whether `signature` proves the holder of this key answered `challenge` on the TLS
    /// session with keying material `binding`.
    pub fn verify_admission(&self, challenge: &[u8; 32], binding: &[u8], signature: &[u8]) -> bool {
        self.verify_challenge(MEMBER_LABEL, challenge, binding, signature)
    }

    /// Whether `signature` proves the holder of this key is `participant` at the far end of
    /// the direct path with keying material `binding`.
    pub fn verify_path(
        &self,
        participant: ParticipantId,
        binding: &[u8; 32],
        signature: &[u8],
    ) -> bool {
        self.verify(&path_message(binding, participant), signature)
    }

    /// Whether `signature` is this key's over `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(message, signature)
            .is_ok()
    }

    pub(crate) fn verify_challenge(
        &self,
        label: &[u8],
        challenge: &[u8; 32],
        binding: &[u8],
        signature: &[u8],
    ) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(&challenge_message(label, challenge, binding), signature)
            .is_ok()
    }
}

/// A member's private signing key, as one of its instances: kept per room in the user's data
/// folder (see [`crate::identity_store`]) or made for one session; never sent.
pub struct MemberKey {
    pair: Ed25519KeyPair,
    public: MemberPublic,
    instance: u32,
}

impl MemberKey {
    /// A fresh key from `rng`.
    pub fn generate(rng: &mut dyn CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        Self::from_seed(&seed)
    }

    /// The key whose private seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .expect("every 32-byte seed is an Ed25519 private key");
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Self {
            pair,
            public: MemberPublic(public),
            instance: 0,
        }
    }

    /// The same key as its `instance`: another participant of the same person.
    pub fn at_instance(mut self, instance: u32) -> Self {
        self.instance = instance;
        self
    }

    /// The public half.
    pub fn public(&self) -> MemberPublic {
        self.public
    }

    /// Which of its key's participants this is.
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// The participant id this key speaks for.
    pub fn participant(&self) -> ParticipantId {
        self.public.participant(self.instance)
    }

    /// Signs the relay's `challenge` on the TLS session with keying material `binding`: the
    /// signature is worth nothing on any other connection.
    pub fn sign_admission(&self, challenge: &[u8; 32], binding: &[u8]) -> Vec<u8> {
        self.sign_challenge(MEMBER_LABEL, challenge, binding)
    }

    /// Proves we are our participant at our end of the direct path with keying material
    /// `binding`: worth nothing on any other connection, or for any other participant.
    pub fn sign_path(&self, binding: &[u8; 32]) -> Vec<u8> {
        self.sign(&path_message(binding, self.participant()))
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    pub(crate) fn sign_challenge(
        &self,
        label: &[u8],
        challenge: &[u8; 32],
        binding: &[u8],
    ) -> Vec<u8> {
        self.pair
            .sign(&challenge_message(label, challenge, binding))
            .as_ref()
            .to_vec()
    }
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemberKey({:?})", self.participant())
    }
}

/// What a member key signs at admission; the room key signs under its own label, so one
/// signature never stands for the other.
const MEMBER_LABEL: &[u8] = b"echoel v1 member admission";

/// What a member key signs to prove itself on a direct path.
const PATH_LABEL: &[u8] = b"echoel v1 direct path";

fn path_message(binding: &[u8; 32], participant: ParticipantId) -> Vec<u8> {
    [PATH_LABEL, binding, &participant.0.to_be_bytes()].concat()
}

fn challenge_message(label: &[u8], challenge: &[u8; 32], binding: &[u8]) -> Vec<u8> {
    [label, challenge, binding].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_key_challenge_and_session() {
        let (a, b) = (
            MemberKey::generate(&mut rand_core::OsRng),
            MemberKey::generate(&mut rand_core::OsRng),
        );
        assert_ne!(a.participant(), b.participant());
        assert_eq!(a.participant(), a.public().participant(0));
        let sig = a.sign_admission(&[1; 32], &[2; 32]);
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert!(a.public().verify_admission(&[1; 32], &[2; 32], &sig));
        let a1 = MemberKey::from_seed(&[7; 32]).at_instance(1);
        assert_ne!(
            a1.participant(),
            MemberKey::from_seed(&[7; 32]).participant(),
            "another instance of one key, another participant"
        );
        assert_eq!(a1.participant(), a1.public().participant(1));
        let path = a1.sign_path(&[3; 32]);
        assert!(a1.public().verify_path(a1.participant(), &[3; 32], &path));
        assert!(
            !a1.public()
                .verify_path(a.public().participant(0), &[3; 32], &path),
            "another participant"
        );
        assert!(
            !a1.public().verify_path(a1.participant(), &[4; 32], &path),
            "another path"
        );
        assert!(
            !b.public().verify_path(a1.participant(), &[3; 32], &path),
            "another key"
        );
        assert!(
            !b.public().verify_admission(&[1; 32], &[2; 32], &sig),
            "another key"
        );
        assert!(
            !a.public().verify_admission(&[3; 32], &[2; 32], &sig),
            "another challenge"
        );
        assert!(
            !a.public().verify_admission(&[1; 32], &[4; 32], &sig),
            "another session"
        );
        assert!(
            !a.public().verify_admission(&[1; 32], &[2; 32], &sig[..63]),
            "cut short"
        );
        assert_eq!(
            MemberKey::from_seed(&[7; 32]).participant(),
            MemberKey::from_seed(&[7; 32]).participant(),
            "the same seed, the same member"
        );
    }
}
