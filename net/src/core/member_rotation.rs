//! Moving the room to a new secret from inside it: the secret goes to every member end to
//! end, the relay admits by it once it confirms, and every member moves over then.

use std::collections::BTreeSet;
use std::time::Instant;

use super::*;

/// A rotation of the room secret, as far as we know it.
#[derive(Default)]
pub(super) struct SecretRotation {
    pub(super) next: Option<RoomSecret>,
    pub(super) confirmed: Option<[u8; 32]>,
    pub(super) given: BTreeSet<MemberId>,
}

impl RoomCore {
    /// Moves the room to `next`: every member is given it end to end, then the relay is asked
    /// (with `proof`, the current secret's [`RoomSecret::rotation_proof`] on our relay
    /// connection) to admit by it alone. Once the relay confirms, [`RoomEvent::SecretRotated`]
    /// comes here and at every member: no one drops out, and invites of the old secret stop
    /// working.
    pub fn rotate_secret(&mut self, _now: Instant, next: RoomSecret, proof: Vec<u8>) {
        let Some(j) = self.joined.as_mut() else {
            self.events.push_back(RoomEvent::RotationRefused);
            return;
        };
        j.keys.accept_auth(next.member_auth(&self.room));
        let verifier = next.verifier(&self.room).to_bytes();
        self.rekeying = SecretRotation {
            next: Some(next),
            confirmed: None,
            given: BTreeSet::new(),
        };
        let members: Vec<MemberId> = j.members.keys().copied().collect();
        for m in members {
            self.give_secret(m);
        }
        // After the secrets: the relay forwards in order, so each member holds the secret
        // before it hears the relay admits by it.
        self.transmits
            .push_back(Transmit::Relay(ClientMessage::Rotate { verifier, proof }));
    }

    /// Gives `to` the next secret of a rotation under way, once.
    pub(super) fn give_secret(&mut self, to: MemberId) {
        let Some(j) = self.joined.as_ref() else {
            return;
        };
        let Some(next) = &self.rekeying.next else {
            return;
        };
        if self.rekeying.given.contains(&to) {
            return;
        }
        let Ok((key, ends)) = j.keys.secret_sealer(to) else {
            // Not announced yet: its announcement brings it on.
            return;
        };
        let (nonce, sealed) = key.seal(j.me, &to.to_be_bytes(), next.expose(), &mut *self.rng);
        self.rekeying.given.insert(to);
        let msg = PeerMessage::Secret {
            ends,
            nonce,
            sealed,
        };
        self.relay(Some(to), msg);
    }

    /// A member gave us the next secret.
    pub(super) fn secret_message(
        &mut self,
        from: MemberId,
        ends: &DocEnds,
        nonce: &[u8; 12],
        sealed: &[u8],
    ) {
        let Some((_, signer)) = self.signer_of(from) else {
            return;
        };
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let opened = j
            .keys
            .secret_opener(from, &signer, ends)
            .and_then(|key| key.open(from, &j.me.to_be_bytes(), nonce, sealed));
        let bytes: [u8; 32] = match opened.map(<[u8; 32]>::try_from) {
            Ok(Ok(b)) => b,
            _ => {
                self.counters.forged.fetch_add(1, Relaxed);
                let notice = format!("a room secret from {from:?} refused");
                self.events.push_back(RoomEvent::Notice(notice));
                return;
            }
        };
        let next = RoomSecret::from_bytes(bytes);
        if self.rekeying.next.as_ref() == Some(&next) {
            return;
        }
        j.keys.accept_auth(next.member_auth(&self.room));
        self.rekeying.next = Some(next);
        self.rekeying.given.clear();
        self.rekeying.given.insert(from);
        self.maybe_adopt();
    }

    /// The relay admits by the next secret and we hold it: ours from now on. Members that
    /// have not got it yet (they joined a moment ago) are given it.
    pub(super) fn maybe_adopt(&mut self) {
        let (Some(next), Some(confirmed)) = (&self.rekeying.next, self.rekeying.confirmed) else {
            return;
        };
        if next.verifier(&self.room) != AdmissionVerifier::from_bytes(confirmed) {
            return;
        }
        let next = next.clone();
        let auth = next.member_auth(&self.room);
        self.setup_auth = auth.clone();
        if let Some(j) = self.joined.as_mut() {
            j.keys.use_auth(auth);
        }
        self.events.push_back(RoomEvent::SecretRotated(next));
    }
}
