//! Who sealed an audio datagram the relay carried. Every member holds every sender key, so the
//! seal alone says only that *a member* made it; the relay names the sender, and a member with
//! the relay on its side could pass its audio off as another's. So each datagram to the relay
//! also carries, for each recipient, a short MAC under a key only the sender and that
//! recipient can derive (a Diffie–Hellman of their announced, signed ephemerals). A direct path
//! needs none: there the sender is the path's member.
//!
//! Layout of a relayed datagram: `[sealed datagram][entry]*[count]`, each entry the
//! recipient's id (2 bytes) and the MAC ([`AUDIO_MAC_LEN`] bytes of Poly1305 over the sealed
//! datagram, under the datagram's own nonce). The key is made with the recipient's newest
//! announced ephemeral; the recipient tries the ephemerals it keeps, newest first (its
//! announcements of the last rotations may still be on their way to the sender: a DAW that
//! opens a project joins several plugins at once, and each join rotates every member).

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use x25519_dalek::{PublicKey, StaticSecret};

use super::audio::nonce;
use super::{derive_key, CryptoError, Epoch, MemberKeys};
use crate::wire::{AudioHeader, MemberId};

/// Bytes of each recipient's MAC: a forger gets one guess per datagram (two keys tried), 1 in
/// 2⁴⁷ each.
pub const AUDIO_MAC_LEN: usize = 6;
/// One recipient's entry.
pub const AUDIO_MAC_ENTRY: usize = 2 + AUDIO_MAC_LEN;
/// Recipients one datagram carries a MAC for, at most (257 bytes). In a room of more, the
/// members past them take the sender key's word for who sealed it.
pub const MAX_AUDIO_MACS: usize = 32;

const LABEL: &[u8] = b"echoel v2 audio mac";
/// Pairwise keys kept: a few epochs of each of the recipients a datagram names.
const MAX_KEYS: usize = 4 * MAX_AUDIO_MACS;

/// One end of a pairwise key: whose ephemeral, of which epoch.
#[derive(Clone, Copy, PartialEq, Eq)]
struct End {
    member: MemberId,
    epoch: Epoch,
    public: [u8; 32],
}

/// Pairwise MAC keys in use, newest last. Epoch numbers cycle, so the ephemerals name a key.
#[derive(Default)]
pub(super) struct MacKeys(Vec<(End, End, ChaCha20Poly1305)>);

impl MacKeys {
    /// The key for datagrams `from` seals to `to`; `mine` and `theirs` are the two
    /// ephemerals the Diffie–Hellman takes, whichever side we are.
    fn get(
        &mut self,
        from: End,
        to: End,
        mine: &StaticSecret,
        theirs: &PublicKey,
    ) -> &ChaCha20Poly1305 {
        let at = match self.0.iter().position(|(f, t, _)| *f == from && *t == to) {
            Some(at) => at,
            None => {
                if self.0.len() >= MAX_KEYS {
                    self.0.remove(0);
                }
                let dh = mine.diffie_hellman(theirs);
                let key = derive_key(
                    dh.as_bytes(),
                    None,
                    &[
                        LABEL,
                        &from.member.to_be_bytes(),
                        &[from.epoch],
                        &from.public,
                        &to.member.to_be_bytes(),
                        &[to.epoch],
                        &to.public,
                    ],
                );
                self.0
                    .push((from, to, ChaCha20Poly1305::new(Key::from_slice(&key))));
                self.0.len() - 1
            }
        };
        &self.0[at].2
    }
}

fn mac(key: &ChaCha20Poly1305, nonce: &Nonce, sealed: &[u8]) -> [u8; AUDIO_MAC_LEN] {
    let tag = key
        .encrypt_in_place_detached(nonce, sealed, &mut [])
        .expect("Poly1305 takes any datagram-sized input");
    let mut out = [0; AUDIO_MAC_LEN];
    out.copy_from_slice(&tag[..AUDIO_MAC_LEN]);
    out
}

/// Compares without a branch on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Where a relayed datagram's MAC entries begin, and how many there are.
fn trailer(datagram: &[u8]) -> Result<(usize, usize), CryptoError> {
    let (&count, rest) = datagram.split_last().ok_or(CryptoError::Malformed)?;
    let count = usize::from(count);
    if count > MAX_AUDIO_MACS {
        return Err(CryptoError::Malformed);
    }
    let sealed = rest
        .len()
        .checked_sub(count * AUDIO_MAC_ENTRY)
        .ok_or(CryptoError::Malformed)?;
    Ok((sealed, count))
}

/// Splits a relayed datagram into the sealed datagram and its MAC entries.
pub(super) fn split_macs(datagram: &mut [u8]) -> Result<(&mut [u8], &[u8]), CryptoError> {
    let (sealed, _) = trailer(datagram)?;
    let (sealed, entries) = datagram.split_at_mut(sealed);
    Ok((sealed, &entries[..entries.len() - 1]))
}

/// A datagram as a member sends it to the relay: the sealed datagram and its recipients'
/// MAC entries. The relay splits it without any key.
#[derive(Debug, Clone, Copy)]
pub struct Relayed<'a> {
    sealed: &'a [u8],
    entries: &'a [u8],
}

/// `to`'s entry among `entries`.
fn entry_for(entries: &[u8], to: MemberId) -> Option<&[u8]> {
    entries
        .chunks_exact(AUDIO_MAC_ENTRY)
        .find(|e| e[..2] == to.to_be_bytes())
}

impl<'a> Relayed<'a> {
    /// Splits `datagram`; an error for a malformed MAC block.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, CryptoError> {
        let (sealed, count) = trailer(datagram)?;
        Ok(Self {
            sealed: &datagram[..sealed],
            entries: &datagram[sealed..sealed + count * AUDIO_MAC_ENTRY],
        })
    }

    /// `to`'s MAC entry, if the sender made one.
    pub fn entry_for(&self, to: MemberId) -> Option<&'a [u8]> {
        entry_for(self.entries, to)
    }

    /// Appends the copy for recipient `to`: the sealed datagram with only `to`'s MAC entry
    /// (each recipient checks its own; the others' would only fill its downlink).
    pub fn copy_for(&self, to: MemberId, out: &mut Vec<u8>) {
        out.extend_from_slice(self.sealed);
        let own = self.entry_for(to);
        out.extend_from_slice(own.unwrap_or_default());
        out.push(u8::from(own.is_some()));
    }
}

impl MemberKeys {
    /// Bytes [`Self::seal_audio_macs`] appends now.
    pub fn audio_macs_len(&self) -> usize {
        let named = self
            .remotes
            .values()
            .filter(|r| !r.announced.is_empty())
            .count();
        1 + AUDIO_MAC_ENTRY * named.min(MAX_AUDIO_MACS)
    }

    /// Appends the MAC entries and their count to a datagram we sealed (`datagram[start..]`,
    /// number `seq` on its stream), for the relay to carry: one for each member whose
    /// ephemeral we know, up to [`MAX_AUDIO_MACS`].
    pub fn seal_audio_macs(&mut self, datagram: &mut Vec<u8>, start: usize, seq: u32) {
        let Self {
            me,
            own,
            remotes,
            macs,
            ..
        } = self;
        let end = datagram.len();
        let header = datagram
            .get(start..)
            .and_then(|d| AudioHeader::decode(d).ok());
        let ours = header.and_then(|h| own.iter().find(|o| o.epoch == h.epoch));
        let (Some(h), Some(ours)) = (header, ours) else {
            datagram.push(0);
            return;
        };
        let nonce = nonce(*me, h.epoch, h.stem, seq);
        let from = End {
            member: *me,
            epoch: h.epoch,
            public: *ours.public.as_bytes(),
        };
        let mut count = 0u8;
        for (&to, remote) in remotes.iter() {
            let Some(&(epoch, public)) = remote.announced.last() else {
                continue;
            };
            if usize::from(count) == MAX_AUDIO_MACS {
                break;
            }
            let recipient = End {
                member: to,
                epoch,
                public: *public.as_bytes(),
            };
            let key = macs.get(from, recipient, &ours.secret, &public);
            let tag = mac(key, &nonce, &datagram[start..end]);
            datagram.extend_from_slice(&to.to_be_bytes());
            datagram.extend_from_slice(&tag);
            count += 1;
        }
        datagram.push(count);
    }

    /// Whether `entries` hold our MAC of `sealed` (header `h`, full sequence number `seq`)
    /// by `from`. A datagram without one is refused unless the room is larger than the MACs
    /// a datagram carries.
    pub(super) fn check_audio_mac(
        &mut self,
        from: MemberId,
        h: &AudioHeader,
        seq: u32,
        sealed: &[u8],
        entries: &[u8],
    ) -> Result<(), CryptoError> {
        let Self {
            me,
            own,
            remotes,
            macs,
            ..
        } = self;
        let Some(entry) = entry_for(entries, *me) else {
            return if remotes.len() > MAX_AUDIO_MACS {
                Ok(())
            } else {
                Err(CryptoError::Forged)
            };
        };
        let theirs = remotes
            .get(&from)
            .and_then(|r| r.keys.iter().rev().find(|k| k.epoch == h.epoch))
            .map(|k| k.public)
            .ok_or(CryptoError::UnknownKey)?;
        let sender = End {
            member: from,
            epoch: h.epoch,
            public: *theirs.as_bytes(),
        };
        let nonce = nonce(from, h.epoch, h.stem, seq);
        for mine in own.iter().rev() {
            let us = End {
                member: *me,
                epoch: mine.epoch,
                public: *mine.public.as_bytes(),
            };
            let key = macs.get(sender, us, &mine.secret, &theirs);
            if same(&mac(key, &nonce, sealed), &entry[2..]) {
                return Ok(());
            }
        }
        Err(CryptoError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::tests::{identity, introduce, pair, room};
    use super::*;
    use crate::crypto::{RoomSecret, RotationPolicy};
    use crate::wire::StemId;

    fn relayed(k: &mut MemberKeys, media: u64) -> Vec<u8> {
        let mut d = Vec::new();
        let seq = k.seal_audio(StemId(0), media, b"frame", false, &mut d);
        k.seal_audio_macs(&mut d, 0, seq);
        d
    }

    /// Member 1 seals for 2 and 3; each opens it with its own MAC. Member 3, holding the
    /// sender key, makes a datagram as 1 with every MAC it can: 2 refuses it.
    #[test]
    fn each_recipient_checks_its_own_mac_and_no_third_member_can_make_it() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut c = MemberKeys::new(
            MemberId(3),
            RoomSecret::from_bytes([9; 32]).member_auth(&room()),
            identity(3),
            RotationPolicy::default(),
            now,
            &mut rand_core::OsRng,
        );
        introduce(&mut a, &mut b, now);
        introduce(&mut a, &mut c, now);
        introduce(&mut b, &mut c, now);
        let d = relayed(&mut a, 0);
        assert_eq!(
            usize::from(*d.last().unwrap()),
            2,
            "one MAC each for 2 and 3"
        );
        for k in [&mut b, &mut c] {
            let mut copy = d.clone();
            assert_eq!(
                k.open_relayed_audio(MemberId(1), &mut copy)
                    .map(|o| o.body.to_vec()),
                Ok(b"frame".to_vec())
            );
        }
        // A flipped byte of the sealed part, or of our MAC, is refused.
        let mut next = relayed(&mut a, 120);
        let theirs = next.clone();
        next[6] ^= 1;
        assert_eq!(
            b.open_relayed_audio(MemberId(1), &mut next).unwrap_err(),
            CryptoError::Forged
        );
        let mut copy = theirs.clone();
        let at = copy.len() - 1 - 2 * AUDIO_MAC_ENTRY + 2;
        copy[at] ^= 1;
        assert_eq!(
            b.open_relayed_audio(MemberId(1), &mut copy).unwrap_err(),
            CryptoError::Forged
        );
        // Member 3 seals as 1 (it holds 1's sender key) behind MACs of its own making.
        let mut forged = Vec::new();
        assert!(c.danger_seal_as(MemberId(1), StemId(0), 5, 960, b"lies!", &mut forged));
        let seq = u32::from(AudioHeader::decode(&forged).unwrap().seq_low);
        c.seal_audio_macs(&mut forged, 0, seq);
        let mut copy = forged.clone();
        assert_eq!(
            b.open_relayed_audio(MemberId(1), &mut copy).unwrap_err(),
            CryptoError::Forged
        );
        // The MAC block is parsed strictly.
        for bad in [vec![], vec![33], vec![2, 0, 0]] {
            let mut d = bad;
            assert_eq!(
                b.open_relayed_audio(MemberId(1), &mut d).unwrap_err(),
                CryptoError::Malformed
            );
        }
    }

    /// The relay hands Ana an announcement of Bo's again, three epochs on. Taken as Bo's
    /// newest, Ana's MACs (and grants, and document messages) would go to an ephemeral Bo no
    /// longer tries, and Bo would refuse Ana's audio as forged.
    #[test]
    fn a_replayed_old_announcement_does_not_take_the_newests_place() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        introduce(&mut a, &mut b, now);
        let old = b.announce();
        for _ in 0..3 {
            let (announce, _) = b.rotate(now, &mut rand_core::OsRng);
            a.accept_announce(&announce, &b.public()).expect("signed");
        }
        a.accept_announce(&old, &b.public())
            .expect("signed, if old");
        let mut d = relayed(&mut a, 0);
        assert_eq!(
            b.open_relayed_audio(MemberId(1), &mut d)
                .map(|o| o.body.to_vec()),
            Ok(b"frame".to_vec())
        );
    }

    /// Two joins within a round trip rotate Bo twice before Ana hears of either: her MACs
    /// still go to the ephemeral she knows, and Bo, who keeps it, opens her audio.
    #[test]
    fn rotations_still_on_their_way_to_the_sender_cost_no_frame() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        introduce(&mut a, &mut b, now);
        for _ in 0..3 {
            b.rotate(now, &mut rand_core::OsRng);
        }
        let mut d = relayed(&mut a, 0);
        assert_eq!(
            b.open_relayed_audio(MemberId(1), &mut d)
                .map(|o| o.body.to_vec()),
            Ok(b"frame".to_vec())
        );
    }
}
