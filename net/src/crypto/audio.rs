//! Sealing and opening audio datagrams: per-stream sequence numbers owned here (beside the key
//! they number), media time inside the seal, a replay window per stream.

use std::collections::BTreeMap;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Nonce, Tag};

use super::{CryptoError, Epoch, MemberKeys};
use crate::wire::{
    AudioHeader, MemberId, StemId, AUDIO_HEADER_LEN, MEDIA_TIME_LEN, MEDIA_UNIT_SAMPLES, TAG_LEN,
};

/// The 128 most recent sequence numbers, as in IPsec/DTLS anti-replay.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayWindow {
    top: Option<u32>,
    bits: u128,
}

impl ReplayWindow {
    /// Whether `seq` is new (and not too old to tell).
    pub(crate) fn check(&self, seq: u32) -> Result<(), CryptoError> {
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

    /// Remembers `seq` as seen.
    pub(crate) fn mark(&mut self, seq: u32) {
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

/// A remote key's replay windows, one per stream (at most 256: a stream id is one byte).
pub(super) type ReplayWindows = BTreeMap<StemId, ReplayWindow>;

/// Our next sequence number on each stream.
#[derive(Debug, Clone)]
pub(super) struct StemCounters([u32; 256]);

impl Default for StemCounters {
    fn default() -> Self {
        Self([0; 256])
    }
}

/// Where a remote stream stands: its highest sequence number and media time (in units) opened.
#[derive(Debug, Clone, Copy)]
pub(super) struct StemPosition {
    seq: u32,
    media_units: u64,
}

/// A remote member's streams (at most 256).
pub(super) type StemPositions = BTreeMap<StemId, StemPosition>;

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

/// Widens a 16-bit wire media time (in [`MEDIA_UNIT_SAMPLES`] units) to the value nearest
/// `reference`, never below zero.
pub fn widen_media(reference: u64, low: u16) -> u64 {
    let candidate = (reference & !0xffff) | u64::from(low);
    if candidate > reference + 0x8000 && candidate >= 0x1_0000 {
        candidate - 0x1_0000
    } else if candidate + 0x8000 < reference {
        candidate + 0x1_0000
    } else {
        candidate
    }
}

/// Nonce of a datagram: (sender, epoch, stream, sequence number). Each stream counts on its own
/// and every epoch has a fresh key, so a nonce never repeats under one key.
pub(super) fn nonce(member: MemberId, epoch: Epoch, stem: StemId, seq: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[0..2].copy_from_slice(&member.to_be_bytes());
    n[2] = epoch;
    n[3] = stem.0;
    n[4..8].copy_from_slice(&seq.to_be_bytes());
    *Nonce::from_slice(&n)
}

/// An audio datagram opened by [`MemberKeys::open_audio`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedAudio<'a> {
    /// The sender's stream.
    pub stem: StemId,
    /// The datagram's full sequence number on that stream.
    pub seq: u32,
    /// Position of the frame's first sample in the sender's stream, 48 kHz samples.
    pub media_time: u64,
    /// The key epoch it was sealed under.
    pub epoch: Epoch,
    /// `body` is a [`crate::wire::pack_frames`] container, not a bare frame.
    pub redundant: bool,
    /// The frame (or container), decrypted in place.
    pub body: &'a [u8],
}

impl MemberKeys {
    /// Seals one audio frame of stream `stem` that starts at `media_time` (48 kHz samples; a
    /// multiple of [`MEDIA_UNIT_SAMPLES`], as every Opus frame boundary is) as a datagram,
    /// appended to `out` (so a caller can put a prefix in front without a second buffer).
    /// `redundant`: `body` is a [`crate::wire::pack_frames`] container. Returns the
    /// datagram's sequence number: the stream's next, which only this key state hands out.
    pub fn seal_audio(
        &mut self,
        stem: StemId,
        media_time: u64,
        body: &[u8],
        redundant: bool,
        out: &mut Vec<u8>,
    ) -> u32 {
        let seq = self.next_seq.0[usize::from(stem.0)];
        self.next_seq.0[usize::from(stem.0)] = seq.wrapping_add(1);
        let cur = self.sealer();
        let header = AudioHeader {
            epoch: cur.epoch,
            stem,
            seq_low: seq as u16,
            redundant,
        };
        let start = out.len();
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&((media_time / MEDIA_UNIT_SAMPLES) as u16).to_be_bytes());
        out.extend_from_slice(body);
        // The header is authenticated as associated data; media time and body are encrypted.
        let (aad, sealed) = out[start..].split_at_mut(AUDIO_HEADER_LEN);
        let tag = cur
            .cipher
            .encrypt_in_place_detached(&nonce(self.me, cur.epoch, stem, seq), aad, sealed)
            .expect("ChaCha20-Poly1305 seals any datagram-sized payload");
        out.extend_from_slice(&tag);
        self.sent_in_epoch = self.sent_in_epoch.saturating_add(1);
        seq
    }

    /// What a hostile member can do with a sender key `victim` granted it: seal a frame as
    /// `victim` (its newest key, the next sequence number it has seen on `stem` plus
    /// `ahead`), appended to `out`. For the simulator's insider and the tests that show such
    /// a datagram is refused; an honest member never calls it.
    pub(crate) fn danger_seal_as(
        &self,
        victim: MemberId,
        stem: StemId,
        ahead: u32,
        media_time: u64,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(remote) = self.remotes.get(&victim) else {
            return false;
        };
        let Some(key) = remote.keys.last() else {
            return false;
        };
        let seq = remote
            .stems
            .get(&stem)
            .map_or(0, |p| p.seq.wrapping_add(1))
            .wrapping_add(ahead);
        let header = AudioHeader {
            epoch: key.epoch,
            stem,
            seq_low: seq as u16,
            redundant: false,
        };
        let start = out.len();
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&((media_time / MEDIA_UNIT_SAMPLES) as u16).to_be_bytes());
        out.extend_from_slice(body);
        let (aad, sealed) = out[start..].split_at_mut(AUDIO_HEADER_LEN);
        let Ok(tag) =
            key.cipher
                .encrypt_in_place_detached(&nonce(victim, key.epoch, stem, seq), aad, sealed)
        else {
            return false;
        };
        out.extend_from_slice(&tag);
        true
    }

    /// Opens an audio datagram from `from` (decrypted in place inside `datagram`), as a
    /// direct path carries it: the path's member is the sender.
    pub fn open_audio<'a>(
        &mut self,
        from: MemberId,
        datagram: &'a mut [u8],
    ) -> Result<OpenedAudio<'a>, CryptoError> {
        self.open_sealed(from, datagram, None)
    }

    /// Opens an audio datagram the relay carried as `from`'s, once our MAC among those that
    /// follow it shows `from` sealed it (see [`super::audio_mac`]).
    pub fn open_relayed_audio<'a>(
        &mut self,
        from: MemberId,
        datagram: &'a mut [u8],
    ) -> Result<OpenedAudio<'a>, CryptoError> {
        let (sealed, entries) = super::audio_mac::split_macs(datagram)?;
        self.open_sealed(from, sealed, Some(entries))
    }

    fn open_sealed<'a>(
        &mut self,
        from: MemberId,
        datagram: &'a mut [u8],
        macs: Option<&[u8]>,
    ) -> Result<OpenedAudio<'a>, CryptoError> {
        if datagram.len() < AUDIO_HEADER_LEN + MEDIA_TIME_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let header = AudioHeader::decode(datagram).map_err(|_| CryptoError::Malformed)?;
        let remote = self.remotes.get(&from).ok_or(CryptoError::UnknownKey)?;
        let known = remote.stems.get(&header.stem).copied();
        let seq = widen_seq(
            known.map_or(u32::from(header.seq_low), |p| p.seq),
            header.seq_low,
        );
        if let Some(entries) = macs {
            self.check_audio_mac(from, &header, seq, datagram, entries)?;
        }
        let remote = self.remotes.get_mut(&from).ok_or(CryptoError::UnknownKey)?;
        let key = remote
            .keys
            .iter_mut()
            .rev()
            .find(|k| k.epoch == header.epoch)
            .ok_or(CryptoError::UnknownKey)?;
        let window = key.windows.entry(header.stem).or_default();
        window.check(seq)?;
        let (aad, rest) = datagram.split_at_mut(AUDIO_HEADER_LEN);
        let (sealed, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        key.cipher
            .decrypt_in_place_detached(
                &nonce(from, header.epoch, header.stem, seq),
                aad,
                sealed,
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Forged)?;
        window.mark(seq);
        let (media, body) = sealed.split_at(MEDIA_TIME_LEN);
        let low = u16::from_be_bytes([media[0], media[1]]);
        let media_units = widen_media(known.map_or(u64::from(low), |p| p.media_units), low);
        let newer = known.is_none_or(|p| (seq.wrapping_sub(p.seq) as i32) > 0);
        if newer {
            remote
                .stems
                .insert(header.stem, StemPosition { seq, media_units });
        }
        Ok(OpenedAudio {
            stem: header.stem,
            seq,
            media_time: media_units * MEDIA_UNIT_SAMPLES,
            epoch: header.epoch,
            redundant: header.redundant,
            body,
        })
    }

    /// Whether datagram `seq` of `from`'s stream `stem`, carried redundantly in a later
    /// datagram sealed under `epoch`, was never opened: only then is the copy worth handing
    /// on. It is not marked, so the frame's own datagram, if merely late, still opens (and is
    /// not taken for a replay).
    pub fn missing(&self, from: MemberId, epoch: Epoch, stem: StemId, seq: u32) -> bool {
        self.remotes
            .get(&from)
            .and_then(|r| r.keys.iter().rev().find(|k| k.epoch == epoch))
            .is_some_and(|key| key.windows.get(&stem).is_none_or(|w| w.check(seq).is_ok()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::super::tests::{identity, introduce, pair, room};
    use super::*;
    use crate::crypto::{RoomSecret, RotationPolicy};

    const MAIN: StemId = StemId(0);

    fn seal(k: &mut MemberKeys, media: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        k.seal_audio(MAIN, media, body, false, &mut out);
        out
    }

    #[test]
    fn audio_round_trips_and_tampering_replay_and_forgery_are_refused() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        introduce(&mut a, &mut b, now);
        let dg = seal(&mut a, 7 * 120, b"opus frame");
        assert!(
            !dg.windows(10).any(|w| w == b"opus frame"),
            "payload is encrypted"
        );
        let mut copy = dg.clone();
        let o = b.open_audio(MemberId(1), &mut copy).unwrap();
        assert_eq!((o.seq, o.media_time, o.body), (0, 840, &b"opus frame"[..]));
        let mut replay = dg.clone();
        assert_eq!(
            b.open_audio(MemberId(1), &mut replay).unwrap_err(),
            CryptoError::Replay
        );
        let dg = seal(&mut a, 8 * 120, b"opus frame");
        for byte in [1, 3, 5, 9] {
            // The stream, the sequence number, the media time and the frame are all sealed.
            let mut flipped = dg.clone();
            flipped[byte] ^= 0x40;
            assert_eq!(
                b.open_audio(MemberId(1), &mut flipped).unwrap_err(),
                CryptoError::Forged,
                "byte {byte}"
            );
        }
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
            identity(1),
            RotationPolicy::default(),
            now,
            &mut rand_core::OsRng,
        );
        assert_eq!(
            b.accept_announce(&mallory.announce(), &mallory.public())
                .unwrap_err(),
            CryptoError::Forged
        );
        // Numbered past what Bob has seen, so only the seal can refuse it.
        let mut forged = (0..5).fold(Vec::new(), |_, i| seal(&mut mallory, i * 120, b"injected"));
        assert_eq!(
            b.open_audio(MemberId(1), &mut forged).unwrap_err(),
            CryptoError::Forged
        );
    }

    #[test]
    fn streams_number_and_replay_check_their_datagrams_apart() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        introduce(&mut a, &mut b, now);
        let mut out = Vec::new();
        let s0 = a.seal_audio(StemId(0), 0, b"drums", false, &mut out);
        let mut d0 = std::mem::take(&mut out);
        let s1 = a.seal_audio(StemId(1), 0, b"bass", false, &mut out);
        let mut d1 = std::mem::take(&mut out);
        assert_eq!((s0, s1), (0, 0));
        let o0 = b.open_audio(MemberId(1), &mut d0).unwrap();
        assert_eq!((o0.stem, o0.body), (StemId(0), &b"drums"[..]));
        let o1 = b.open_audio(MemberId(1), &mut d1).unwrap();
        assert_eq!((o1.stem, o1.seq, o1.body), (StemId(1), 0, &b"bass"[..]));
    }

    #[test]
    fn media_time_and_sequence_numbers_widen_across_wraps() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        introduce(&mut a, &mut b, now);
        // Half an hour of 20 ms frames: the 16-bit media time wraps four times.
        let frame = 960u64;
        for i in 0..90_000u64 {
            let mut d = seal(&mut a, i * frame, b"x");
            if i % 7 == 3 {
                continue; // lost
            }
            let o = b.open_audio(MemberId(1), &mut d).unwrap();
            assert_eq!((o.seq, o.media_time), (i as u32, i * frame));
        }
        assert_eq!(widen_media(0x1_fff0, 0x0005), 0x2_0005);
        assert_eq!(widen_media(0x2_0005, 0xfff0), 0x1_fff0);
        assert_eq!(widen_media(10, 0xfff0), 0xfff0);
        assert_eq!(widen_seq(0x0001_fff0, 0x0005), 0x0002_0005);
        assert_eq!(widen_seq(0x0002_0005, 0xfff0), 0x0001_fff0);
        assert_eq!(widen_seq(10, 12), 12);
        assert_eq!(widen_seq(u32::MAX - 2, 3), 3);
    }

    /// Every (key, nonce) a member seals under, across streams, an engine that restarts its
    /// media time (a plugin re-activated on a kept session), rotations, and a reconnect (which
    /// starts a new key state): none repeats.
    #[test]
    fn no_nonce_ever_repeats_under_one_key() {
        let t0 = Instant::now();
        let secret = RoomSecret::from_bytes([9; 32]);
        let policy = RotationPolicy {
            max_packets: 1000,
            ..RotationPolicy::default()
        };
        let mut seen = HashSet::new();
        let mut sealed = 0;
        for session in 0..2 {
            let mut k = MemberKeys::new(
                MemberId(1),
                secret.member_auth(&room()),
                identity(1),
                policy,
                t0,
                &mut rand_core::OsRng,
            );
            for activation in 0..3u64 {
                // Each activation's engine starts its media time (and its own counter) at 0.
                for i in 0..1500u64 {
                    for stem in [StemId(0), StemId(1), StemId(7)] {
                        let mut out = Vec::new();
                        let seq = k.seal_audio(stem, i * 120, b"frame", false, &mut out);
                        let cur = k.sealer();
                        let header = AudioHeader::decode(&out).unwrap();
                        assert_eq!(header.epoch, cur.epoch);
                        let n = nonce(MemberId(1), cur.epoch, stem, seq);
                        assert!(
                            seen.insert((cur.sender_key, n.to_vec())),
                            "nonce repeated: session {session}, activation {activation}, \
                             frame {i}, {stem:?}, seq {seq}"
                        );
                        sealed += 1;
                    }
                    k.maybe_rotate(t0, &mut rand_core::OsRng);
                    k.switch(t0 + policy.switch_delay);
                }
            }
        }
        assert_eq!(seen.len(), sealed);
    }

    #[test]
    fn rotation_keeps_audio_flowing_and_old_keys_expire() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        introduce(&mut a, &mut b, t0);
        let old = seal(&mut a, 0, b"before");
        let t1 = t0 + Duration::from_secs(121);
        let (ann, grants) = a
            .maybe_rotate(t1, &mut rand_core::OsRng)
            .expect("rotation due after max_age");
        assert_eq!(ann.epoch, 1);
        let back = b.accept_announce(&ann, &a.public()).unwrap();
        a.accept_grant(&back, t1).unwrap();
        for g in &grants {
            b.accept_grant(g, t1).unwrap();
        }
        let mut new = seal(&mut a, 120, b"after");
        assert_eq!(b.open_audio(MemberId(1), &mut new).unwrap().body, b"after");
        // In-flight packets of the old epoch still open during the grace period...
        let mut late = old.clone();
        assert_eq!(
            b.open_audio(MemberId(1), &mut late).unwrap().body,
            b"before"
        );
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
        let mut a = MemberKeys::new(
            MemberId(1),
            secret.member_auth(&room()),
            identity(1),
            policy,
            now,
            &mut rand_core::OsRng,
        );
        for s in 0..9 {
            seal(&mut a, s * 120, b"p");
        }
        assert!(a.maybe_rotate(now, &mut rand_core::OsRng).is_none());
        seal(&mut a, 9 * 120, b"p");
        assert!(a.maybe_rotate(now, &mut rand_core::OsRng).is_some());
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
            let mut seen = HashSet::new();
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
