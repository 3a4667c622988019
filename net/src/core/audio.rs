//! Sealed audio in and out of a member: frames sealed with the redundancy a path needs, and
//! datagrams (one or a relay bundle) opened, with the frames their redundancy recovers.
//! Pure: no socket, no lock; the buffers are reused so a steady stream allocates nothing on
//! the send side.

use std::collections::BTreeMap;

use crate::crypto::{CryptoError, MemberKeys};
use crate::session::{AudioFrame, SessionCounters};
use crate::wire::{
    encode_sender, forwarded_items, pack_frames, unpack_frames, Forwarded, MemberId, OlderFrame,
    ParticipantId, StemId, AUDIO_HEADER_LEN, MAX_REDUNDANT, MEDIA_TIME_LEN, MEDIA_UNIT_SAMPLES,
    TAG_LEN,
};
use std::sync::atomic::Ordering::Relaxed;

/// The last frames sent on one stream, newest first, with their media times.
type SentFrames = [(Option<u64>, Vec<u8>); MAX_REDUNDANT];

/// The most a sealed datagram may be: QUIC carries about 1,150 bytes of datagram on a path of
/// 1,200, and the relay puts a sender prefix of up to 2 bytes in front.
pub const MAX_DATAGRAM: usize = 1_140;

/// The send path's reusable buffers.
#[derive(Default)]
pub struct AudioOut {
    /// The sealed datagram, behind our sender prefix.
    buf: Vec<u8>,
    /// The plaintext container when frames are sent redundantly.
    plain: Vec<u8>,
    /// Each stream's last frames, for redundancy.
    history: BTreeMap<StemId, SentFrames>,
}

impl AudioOut {
    /// Buffers for datagrams up to a typical path's size.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(1500),
            plain: Vec::with_capacity(1500),
            history: BTreeMap::new(),
        }
    }

    /// Seals one frame of `stem` as `me`, carrying up to `redundancy` earlier frames: the
    /// datagram as a direct path carries it (behind our sender prefix) and, when `relay`, as
    /// the relay gets it (no prefix; the recipients' MACs behind it).
    pub fn seal(
        &mut self,
        keys: &mut MemberKeys,
        me: MemberId,
        (stem, media_time): (StemId, u64),
        payload: &[u8],
        (redundancy, relay): (usize, bool),
    ) -> SealedAudio<'_> {
        let Self {
            buf,
            plain,
            history,
        } = self;
        buf.clear();
        encode_sender(me, buf);
        let prefix = buf.len();
        let sent = history
            .entry(stem)
            .or_insert_with(|| std::array::from_fn(|_| (None, Vec::with_capacity(1500))));
        let redundancy = redundancy.min(MAX_REDUNDANT);
        // Earlier frames only as far as the datagram still fits a path (long frames at a high
        // bitrate), the relay's copy with its MACs: past that it would be dropped whole.
        let room = MAX_DATAGRAM
            .saturating_sub(AUDIO_HEADER_LEN + MEDIA_TIME_LEN + TAG_LEN + 1)
            .saturating_sub(if relay { keys.audio_macs_len() } else { 0 })
            .saturating_sub(payload.len());
        let seq = if redundancy == 0 {
            keys.seal_audio(stem, media_time, payload, false, buf)
        } else {
            plain.clear();
            let (older, n) = older_frames(sent, media_time, (redundancy, room));
            pack_frames(payload, &older[..n], plain);
            keys.seal_audio(stem, media_time, plain, true, buf)
        };
        sent.rotate_right(1);
        sent[0].0 = Some(media_time);
        sent[0].1.clear();
        sent[0].1.extend_from_slice(payload);
        let direct = buf.len();
        if relay {
            keys.seal_audio_macs(buf, prefix, seq);
        }
        SealedAudio {
            direct: &buf[..direct],
            relay: relay.then(|| &buf[prefix..]),
        }
    }

    /// Forgets what was sent (a new key state numbers from zero).
    pub fn reset(&mut self) {
        self.history.clear();
    }
}

/// One sealed frame, as each way carries it.
#[derive(Debug, Clone, Copy)]
pub struct SealedAudio<'a> {
    /// For a direct path: our sender prefix, then the sealed datagram.
    pub direct: &'a [u8],
    /// For the relay, if it carries it: the sealed datagram, then the recipients' MACs.
    pub relay: Option<&'a [u8]>,
}

/// The frames of `history` that fit in a container before a frame at `media_time`, newest
/// first, and how many there are: at most `n`, in `room` bytes of container; each must start
/// earlier, by at most 255 media units. No allocation: this runs for every datagram.
fn older_frames<'a>(
    history: &'a SentFrames,
    media_time: u64,
    (n, mut room): (usize, usize),
) -> ([OlderFrame<'a>; MAX_REDUNDANT], usize) {
    let mut older = [OlderFrame {
        units_back: 1,
        frame: &[],
    }; MAX_REDUNDANT];
    let mut count = 0;
    for (media, frame) in history.iter().take(n.min(MAX_REDUNDANT)) {
        let Some(back) = media.and_then(|m| media_time.checked_sub(m)) else {
            break;
        };
        let Some(units_back) = u8::try_from(back / MEDIA_UNIT_SAMPLES)
            .ok()
            .filter(|b| *b > 0)
        else {
            break;
        };
        let Some(left) = room.checked_sub(3 + frame.len()) else {
            break;
        };
        room = left;
        older[count] = OlderFrame { units_back, frame };
        count += 1;
    }
    (older, count)
}

/// Which connection a datagram arrived on: that, not a byte in the packet, says who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The relay, which names the sender of each datagram by the connection it came on.
    Relay,
    /// The direct path to this member: only its own datagrams, one at a time, come this way.
    Direct(MemberId),
}

/// Opens what a relay or a direct path delivered: one `[sender][sealed audio]` datagram or a
/// bundle of them, and hands each frame to `sink` with the musician it came from. On a direct
/// path the sender is the path's member: a datagram naming anyone else (a member re-sealing
/// audio with a sender key it was granted, to speak as that member) is refused as forged. A
/// frame seen before from a `doubled` member (one both the relay and a direct path carry) is
/// counted as a duplicate, not a replay. `participant_of` gives a member's participant and
/// path epoch ([`AudioFrame::path_epoch`]); it is asked once for each first copy opened.
#[allow(clippy::too_many_arguments)]
pub fn open_datagram(
    keys: &mut MemberKeys,
    mut participant_of: impl FnMut(MemberId) -> Option<(ParticipantId, u8)>,
    doubled: impl Fn(MemberId) -> bool,
    counters: &SessionCounters,
    via: Via,
    bytes: &[u8],
    sink: &mut dyn FnMut(ParticipantId, AudioFrame<'_>),
    no_key: &mut dyn FnMut(MemberId),
) {
    let mut items = 0;
    for item in forwarded_items(bytes) {
        items += 1;
        match item {
            Ok(fwd) if matches!(via, Via::Direct(m) if m != fwd.sender || items > 1) => {
                counters.forged.fetch_add(1, Relaxed);
            }
            Ok(fwd) => open_forwarded(
                keys,
                (&mut participant_of, &doubled),
                counters,
                (via, fwd),
                sink,
                no_key,
            ),
            Err(_) => {
                counters.malformed.fetch_add(1, Relaxed);
                return;
            }
        }
    }
}

fn open_forwarded(
    keys: &mut MemberKeys,
    (participant_of, doubled): (
        &mut impl FnMut(MemberId) -> Option<(ParticipantId, u8)>,
        &impl Fn(MemberId) -> bool,
    ),
    c: &SessionCounters,
    (via, fwd): (Via, Forwarded<'_>),
    sink: &mut dyn FnMut(ParticipantId, AudioFrame<'_>),
    no_key: &mut dyn FnMut(MemberId),
) {
    let mut buf = fwd.datagram.to_vec();
    // Earlier frames the datagram carries that we never had (redundancy), newest first.
    let mut fresh = [false; MAX_REDUNDANT];
    let opened = match via {
        Via::Relay => keys.open_relayed_audio(fwd.sender, &mut buf),
        Via::Direct(_) => keys.open_audio(fwd.sender, &mut buf),
    };
    let o = match opened {
        Ok(o) => o,
        Err(e) => {
            if e == CryptoError::UnknownKey {
                no_key(fwd.sender);
            }
            match e {
                CryptoError::Replay | CryptoError::TooOld if doubled(fwd.sender) => &c.duplicates,
                CryptoError::Replay | CryptoError::TooOld => &c.replayed,
                CryptoError::UnknownKey => &c.unkeyed,
                CryptoError::Forged => &c.forged,
                _ => &c.malformed,
            }
            .fetch_add(1, Relaxed);
            return;
        }
    };
    if let (true, Ok((_, older))) = (o.redundant, unpack_frames(o.body)) {
        for (i, frame) in older.iter().enumerate() {
            let back = o.seq.wrapping_sub(i as u32 + 1);
            fresh[i] = frame.is_some() && keys.missing(fwd.sender, o.epoch, o.stem, back);
        }
    }
    let Some((participant, path_epoch)) = participant_of(fwd.sender) else {
        c.unkeyed.fetch_add(1, Relaxed);
        return;
    };
    c.delivered.fetch_add(1, Relaxed);
    let frame = |seq, media_time, payload, recovered| AudioFrame {
        stem: o.stem,
        seq,
        media_time,
        payload,
        recovered,
        path_epoch,
    };
    if !o.redundant {
        sink(participant, frame(o.seq, o.media_time, o.body, false));
        return;
    }
    // Sealed by a member but not a container: nothing we can play.
    let Ok((primary, older)) = unpack_frames(o.body) else {
        c.malformed.fetch_add(1, Relaxed);
        return;
    };
    // Recovered frames first, oldest first, so they arrive in order.
    for i in (0..MAX_REDUNDANT).rev() {
        let (true, Some(older)) = (fresh[i], older[i]) else {
            continue;
        };
        let back = u64::from(older.units_back) * MEDIA_UNIT_SAMPLES;
        let Some(media_time) = o.media_time.checked_sub(back) else {
            continue;
        };
        c.recovered.fetch_add(1, Relaxed);
        sink(
            participant,
            frame(
                o.seq.wrapping_sub(i as u32 + 1),
                media_time,
                older.frame,
                true,
            ),
        );
    }
    sink(participant, frame(o.seq, o.media_time, primary, false));
}
