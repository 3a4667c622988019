//! Gap-free takes: we keep what we sent lately (bounded), and a recorder that missed some of
//! it asks us for those frames; the asking and the answer go by the relay's reliable stream,
//! sealed to the two members alone. The answer holds the Opus frames as sent, so the
//! recorder's file holds what was played, not the concealment it heard.

use super::*;
use crate::wire::TakeMessage;

/// What we keep of our own stream: 48 MiB, about 45 minutes of one stem at 128 kbit/s in
/// 2.5 ms frames (the Opus bytes and 16 bytes of place per frame).
pub const ARCHIVE_BYTES: usize = 48 << 20;
/// Frames are kept in blocks of this size, the oldest block going first: one allocation per
/// block, not per frame.
const BLOCK_BYTES: usize = 256 << 10;
/// Stretches one ask may name.
pub const MAX_RANGES: usize = 1024;
/// The most one answer carries (4 MiB): an ask cannot make us send more.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Frames' bytes per sealed message: far below a control frame with the seal around it.
const CHUNK_BYTES: usize = 12 * 1024;
/// Asks we answer per member per window: a member cannot make us its file server.
const ASKS_PER_WINDOW: u32 = 16;
const ASK_WINDOW: Duration = Duration::from_secs(10);
/// The largest Opus frame a take holds (as the session sends).
const MAX_TAKE_PAYLOAD: usize = 1400;
/// Our own asks waiting for an answer at once, and how long one may wait.
const MAX_PENDING: usize = 64;
const ASK_EXPIRES: Duration = Duration::from_secs(60);

/// A block of kept frames: their bytes end to end, and where each lies.
struct Block {
    bytes: Vec<u8>,
    /// (stem, media time, offset, length).
    frames: Vec<(StemId, u64, u32, u16)>,
}

impl Block {
    fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(BLOCK_BYTES),
            frames: Vec::new(),
        }
    }

    fn cost(&self) -> usize {
        self.bytes.capacity() + self.frames.capacity() * 16
    }
}

/// Our own frames, oldest first, up to a size.
pub struct SentArchive {
    blocks: VecDeque<Block>,
    cap: usize,
}

impl SentArchive {
    /// Keeping at most about `cap` bytes.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            blocks: VecDeque::new(),
            cap,
        }
    }

    /// One frame of ours as sent; the oldest go when the archive is full.
    pub fn keep(&mut self, stem: StemId, media_time: u64, payload: &[u8]) {
        let Ok(len) = u16::try_from(payload.len()) else {
            return;
        };
        if self
            .blocks
            .back()
            .is_none_or(|b| b.bytes.len() + payload.len() > BLOCK_BYTES)
        {
            self.blocks.push_back(Block::new());
            let mut held: usize = self.blocks.iter().map(Block::cost).sum();
            while held > self.cap && self.blocks.len() > 1 {
                if let Some(old) = self.blocks.pop_front() {
                    held -= old.cost();
                }
            }
        }
        if let Some(b) = self.blocks.back_mut() {
            b.frames.push((stem, media_time, b.bytes.len() as u32, len));
            b.bytes.extend_from_slice(payload);
        }
    }

    /// The frames of `stem` that start within any of `ranges` (`[from, to)`), oldest first,
    /// up to `max_bytes` of payload.
    pub fn find(
        &self,
        stem: StemId,
        ranges: &[(u64, u64)],
        max_bytes: usize,
    ) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        'all: for b in &self.blocks {
            for &(s, media, at, len) in &b.frames {
                if s != stem || !ranges.iter().any(|(a, z)| (*a..*z).contains(&media)) {
                    continue;
                }
                bytes += usize::from(len);
                if bytes > max_bytes {
                    break 'all;
                }
                let at = at as usize;
                out.push((media, b.bytes[at..at + usize::from(len)].to_vec()));
            }
        }
        // A media time is sent once; an engine that started over may have sent it twice:
        // the newer is what was played last.
        out.reverse();
        out.sort_by_key(|(m, _)| *m);
        out.dedup_by_key(|(m, _)| *m);
        out
    }
}

/// One of our asks, waiting for its answer.
struct Pending {
    to: MemberId,
    participant: ParticipantId,
    stem: StemId,
    ranges: Vec<(u64, u64)>,
    asked: Instant,
}

/// Takes: what we keep of our stream, the asks we wait on, the asks we answered lately.
pub(super) struct Takes {
    pub(super) archive: SentArchive,
    next_id: u32,
    pending: BTreeMap<u32, Pending>,
    answered: BTreeMap<MemberId, (Instant, u32)>,
}

impl Default for Takes {
    fn default() -> Self {
        Self {
            archive: SentArchive::with_cap(ARCHIVE_BYTES),
            next_id: 1,
            pending: BTreeMap::new(),
            answered: BTreeMap::new(),
        }
    }
}

/// Frames of a take that came back from their sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeFrames {
    /// The ask they answer ([`RoomCore::ask_take`]).
    pub id: u32,
    /// Whose.
    pub from: ParticipantId,
    /// Their stem.
    pub stem: StemId,
    /// (media time, Opus payload), oldest first.
    pub frames: Vec<(u64, Vec<u8>)>,
    /// Nothing more comes for this ask (answered whole, or given up: the sender left, or
    /// did not answer within a minute).
    pub last: bool,
}

impl RoomCore {
    /// Asks `from` for the frames of its stem `stem` that start within `ranges` (`[from,
    /// to)`, its media time): they come as [`RoomEvent::TakeFrames`] with the returned number.
    /// `None` if it is not in the room or we cannot seal to it yet.
    pub fn ask_take(
        &mut self,
        now: Instant,
        from: ParticipantId,
        stem: StemId,
        mut ranges: Vec<(u64, u64)>,
    ) -> Option<u32> {
        self.expire_asks(now);
        ranges.truncate(MAX_RANGES);
        let j = self.joined.as_ref()?;
        let to = j.members.values().find(|m| m.participant == from)?.id;
        if self.takes.pending.len() >= MAX_PENDING {
            return None;
        }
        let id = self.takes.next_id;
        self.takes.next_id = id.wrapping_add(1).max(1);
        let ask = TakeMessage::Ask {
            id,
            stem,
            ranges: ranges.clone(),
        };
        self.seal_take(to, &ask)?;
        self.takes.pending.insert(
            id,
            Pending {
                to,
                participant: from,
                stem,
                ranges,
                asked: now,
            },
        );
        Some(id)
    }

    /// Seals `msg` to `to` and queues it for the relay; `None` if we cannot seal to it.
    pub(super) fn seal_take(&mut self, to: MemberId, msg: &TakeMessage) -> Option<()> {
        let j = self.joined.as_ref()?;
        let (key, ends) = j.keys.take_sealer(to).ok()?;
        let plain = postcard::to_stdvec(msg).ok()?;
        let (nonce, sealed) = key.seal(j.me, &to.to_be_bytes(), &plain, &mut *self.rng);
        self.relay(
            Some(to),
            PeerMessage::Take {
                ends,
                nonce,
                sealed,
            },
        );
        Some(())
    }

    /// A take message from `from`: an ask we answer from what we kept, or frames we asked
    /// for.
    pub(super) fn take_message(
        &mut self,
        now: Instant,
        from: MemberId,
        (ends, nonce, sealed): (&DocEnds, &[u8; 12], &[u8]),
    ) {
        let Some((participant, signer)) = self.signer_of(from) else {
            return;
        };
        let Some(j) = self.joined.as_ref() else {
            return;
        };
        let opened = j
            .keys
            .take_opener(from, &signer, ends)
            .and_then(|key| key.open(from, &j.me.to_be_bytes(), nonce, sealed));
        let msg = match opened.map(|p| decode_body::<TakeMessage>(&p)) {
            Ok(Ok(msg)) => msg,
            Ok(Err(_)) => {
                self.counters.malformed.fetch_add(1, Relaxed);
                return;
            }
            // Sealed to an ephemeral of ours we no longer hold: the asker asks again.
            Err(crate::crypto::CryptoError::UnknownKey) => {
                self.counters.unkeyed.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {
                self.counters.forged.fetch_add(1, Relaxed);
                return;
            }
        };
        match msg {
            TakeMessage::Ask { id, stem, ranges } => self.answer(now, from, id, stem, ranges),
            TakeMessage::Frames {
                id,
                stem,
                frames,
                last,
            } => self.frames_came(from, participant, id, stem, frames, last),
        }
    }

    fn answer(
        &mut self,
        now: Instant,
        to: MemberId,
        id: u32,
        stem: StemId,
        ranges: Vec<(u64, u64)>,
    ) {
        let (since, count) = self.takes.answered.entry(to).or_insert((now, 0));
        if now.duration_since(*since) > ASK_WINDOW {
            (*since, *count) = (now, 0);
        }
        *count += 1;
        if *count > ASKS_PER_WINDOW || ranges.len() > MAX_RANGES {
            self.counters.stale.fetch_add(1, Relaxed);
            return;
        }
        let frames = self.takes.archive.find(stem, &ranges, MAX_ANSWER_BYTES);
        let mut chunks: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new()];
        let mut bytes = 0;
        for f in frames {
            let size = f.1.len() + 16;
            if bytes + size > CHUNK_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(c) = chunks.last_mut() {
                c.push(f);
            }
        }
        let n = chunks.len();
        for (i, frames) in chunks.into_iter().enumerate() {
            let msg = TakeMessage::Frames {
                id,
                stem,
                frames,
                last: i + 1 == n,
            };
            if self.seal_take(to, &msg).is_none() {
                return;
            }
        }
    }

    /// Frames we asked for: only from the member asked, of the stem asked, within the
    /// stretches asked; anything else is counted as forged and dropped.
    fn frames_came(
        &mut self,
        from: MemberId,
        participant: ParticipantId,
        id: u32,
        stem: StemId,
        frames: Vec<(u64, Vec<u8>)>,
        last: bool,
    ) {
        let Some(p) = self.takes.pending.get(&id) else {
            self.counters.stale.fetch_add(1, Relaxed);
            return;
        };
        if p.to != from || p.participant != participant || p.stem != stem {
            self.counters.forged.fetch_add(1, Relaxed);
            return;
        }
        let asked = |m: &u64| p.ranges.iter().any(|(a, b)| (*a..*b).contains(m));
        let before = frames.len();
        let frames: Vec<(u64, Vec<u8>)> = frames
            .into_iter()
            .filter(|(m, payload)| {
                asked(m) && !payload.is_empty() && payload.len() <= MAX_TAKE_PAYLOAD
            })
            .collect();
        if frames.len() < before {
            self.counters
                .forged
                .fetch_add((before - frames.len()) as u64, Relaxed);
        }
        if last {
            self.takes.pending.remove(&id);
        }
        self.events.push_back(RoomEvent::TakeFrames(TakeFrames {
            id,
            from: participant,
            stem,
            frames,
            last,
        }));
    }

    /// Gives up on asks whose member left or that waited too long: each ends with an empty
    /// last answer, so the recorder writes what it has.
    pub(super) fn expire_asks(&mut self, now: Instant) {
        let members = self.joined.as_ref().map(|j| &j.members);
        let gone: Vec<u32> = self
            .takes
            .pending
            .iter()
            .filter(|(_, p)| {
                now.duration_since(p.asked) > ASK_EXPIRES
                    || !members.is_some_and(|m| m.contains_key(&p.to))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(p) = self.takes.pending.remove(&id) {
                self.events.push_back(RoomEvent::TakeFrames(TakeFrames {
                    id,
                    from: p.participant,
                    stem: p.stem,
                    frames: Vec::new(),
                    last: true,
                }));
            }
        }
    }
}
