//! A fixed-depth jitter buffer: packets are held by sequence number and released one per
//! playout request once `depth` packets are waiting. Pure: no clock, no I/O, no allocation
//! after construction.

use super::seq_ahead;
use crate::packet::PacketSlot;

/// Packets held at most. 64 covers 160 ms at 2.5 ms frames and 1.28 s at 20 ms frames, beyond
/// any depth a live performance can bear.
pub const JITTER_CAPACITY: usize = 64;

/// After this many consecutive missing frames with nothing queued, the stream is treated as
/// stopped and buffers afresh when packets return, instead of concealing forever.
const REBUFFER_AFTER_MISSING: u32 = 8;

/// What happened to an inserted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Stored for playout.
    Queued,
    /// Its playout moment has passed; dropped.
    Late,
    /// Already held; dropped.
    Duplicate,
    /// So far ahead of playout that the stream was restarted from this packet.
    Restarted,
}

/// What to play next.
#[derive(Debug, Clone, Copy)]
pub enum Playout<'a> {
    /// The next packet in sequence.
    Packet(&'a PacketSlot),
    /// The next packet is missing: conceal it.
    Missing,
    /// Not playing (no stream yet, or buffering): output silence.
    Silent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Buffering,
    Playing,
}

/// Fixed-depth jitter buffer.
///
/// # Thread
/// Owned by the audio thread; no method allocates.
pub struct FixedJitterBuffer {
    slots: Vec<PacketSlot>,
    /// Whether `slots[i]` holds a packet not yet played or skipped.
    held: Vec<bool>,
    next_seq: u32,
    newest_seq: u32,
    depth: usize,
    state: State,
    missing_run: u32,
    overrun_drops: u64,
    /// Last sequence number played, kept across rebuffering so stragglers stay late.
    last_played: Option<u32>,
}

impl FixedJitterBuffer {
    /// An empty buffer that starts playing once `depth` packets wait (clamped to the capacity).
    pub fn new(depth: usize) -> Self {
        Self {
            slots: vec![PacketSlot::empty(); JITTER_CAPACITY],
            held: vec![false; JITTER_CAPACITY],
            next_seq: 0,
            newest_seq: 0,
            depth: depth.clamp(1, JITTER_CAPACITY / 2),
            state: State::Idle,
            missing_run: 0,
            overrun_drops: 0,
            last_played: None,
        }
    }

    /// Changes the depth; takes effect at the next playout request.
    pub fn set_depth(&mut self, depth: usize) {
        self.depth = depth.clamp(1, JITTER_CAPACITY / 2);
    }

    /// Current depth in packets.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Packets dropped because the buffer ran too far ahead of its depth.
    pub fn overrun_drops(&self) -> u64 {
        self.overrun_drops
    }

    /// Packets from the next one to play to the newest one received.
    pub fn span(&self) -> usize {
        if self.state == State::Idle {
            return 0;
        }
        (seq_ahead(self.newest_seq, self.next_seq) + 1).max(0) as usize
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.held.fill(false);
        self.state = State::Idle;
        self.missing_run = 0;
        self.last_played = None;
    }

    fn index(seq: u32) -> usize {
        seq as usize % JITTER_CAPACITY
    }

    /// Stores a packet.
    pub fn insert(&mut self, packet: &PacketSlot) -> Arrival {
        let seq = packet.seq;
        let mut outcome = Arrival::Queued;
        if self.state == State::Idle {
            // A straggler from before a rebuffer is late; a sequence far behind is a sender
            // that restarted its stream, and starts afresh.
            if let Some(last) = self.last_played {
                let behind = seq_ahead(seq, last);
                if behind <= 0 && behind > -(JITTER_CAPACITY as i64) {
                    return Arrival::Late;
                }
            }
            self.start_at(seq);
        } else {
            let ahead = seq_ahead(seq, self.next_seq);
            if ahead < 0 {
                return Arrival::Late;
            }
            if ahead >= JITTER_CAPACITY as i64 {
                self.reset();
                self.start_at(seq);
                outcome = Arrival::Restarted;
            }
        }
        let idx = Self::index(seq);
        if self.held[idx] && self.slots[idx].seq == seq {
            return Arrival::Duplicate;
        }
        self.slots[idx].copy_from(packet);
        self.held[idx] = true;
        if seq_ahead(seq, self.newest_seq) > 0 {
            self.newest_seq = seq;
        }
        outcome
    }

    fn start_at(&mut self, seq: u32) {
        self.state = State::Buffering;
        self.next_seq = seq;
        self.newest_seq = seq;
        self.missing_run = 0;
    }

    /// Releases the next frame to play.
    pub fn pop(&mut self) -> Playout<'_> {
        match self.state {
            State::Idle => return Playout::Silent,
            State::Buffering if self.span() < self.depth => return Playout::Silent,
            State::Buffering => self.state = State::Playing,
            State::Playing => {}
        }
        // Too far ahead (sender's clock faster, or a burst after a stall): skip the oldest so
        // latency returns to the target instead of growing for the rest of the session.
        let slack = self.depth.max(2);
        while self.span() > self.depth + slack {
            self.held[Self::index(self.next_seq)] = false;
            self.next_seq = self.next_seq.wrapping_add(1);
            self.overrun_drops += 1;
        }
        let seq = self.next_seq;
        let idx = Self::index(seq);
        let queued_after = self.span() > 1;
        self.next_seq = seq.wrapping_add(1);
        self.last_played = Some(seq);
        // A slot may still hold an older packet that shared its index; only `seq` counts.
        if self.held[idx] && self.slots[idx].seq == seq {
            self.held[idx] = false;
            self.missing_run = 0;
            return Playout::Packet(&self.slots[idx]);
        }
        self.missing_run += 1;
        if !queued_after && self.missing_run >= REBUFFER_AFTER_MISSING {
            self.state = State::Idle;
        }
        Playout::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::StreamId;
    use proptest::prelude::*;

    fn pkt(seq: u32) -> PacketSlot {
        PacketSlot::new(StreamId(1), seq, u64::from(seq) * 120, &seq.to_le_bytes()).unwrap()
    }

    fn popped_seq(jb: &mut FixedJitterBuffer) -> Option<Option<u32>> {
        match jb.pop() {
            Playout::Packet(p) => Some(Some(p.seq)),
            Playout::Missing => Some(None),
            Playout::Silent => None,
        }
    }

    #[test]
    fn buffers_to_depth_then_plays_in_order_and_conceals_gaps() {
        let mut jb = FixedJitterBuffer::new(2);
        assert_eq!(jb.insert(&pkt(10)), Arrival::Queued);
        assert!(popped_seq(&mut jb).is_none(), "one packet is below depth 2");
        jb.insert(&pkt(12));
        jb.insert(&pkt(11));
        assert_eq!(jb.insert(&pkt(11)), Arrival::Duplicate);
        assert_eq!(popped_seq(&mut jb), Some(Some(10)));
        assert_eq!(popped_seq(&mut jb), Some(Some(11)));
        assert_eq!(popped_seq(&mut jb), Some(Some(12)));
        assert_eq!(popped_seq(&mut jb), Some(None), "13 never came");
        assert_eq!(jb.insert(&pkt(13)), Arrival::Late);
    }

    #[test]
    fn sequence_wraps() {
        let mut jb = FixedJitterBuffer::new(4);
        for s in [u32::MAX - 1, u32::MAX, 0, 1] {
            jb.insert(&pkt(s));
        }
        let got: Vec<_> = (0..4).map(|_| popped_seq(&mut jb)).collect();
        assert_eq!(
            got,
            vec![
                Some(Some(u32::MAX - 1)),
                Some(Some(u32::MAX)),
                Some(Some(0)),
                Some(Some(1))
            ]
        );
    }

    #[test]
    fn long_silence_rebuffers_and_far_jump_restarts() {
        let mut jb = FixedJitterBuffer::new(1);
        jb.insert(&pkt(0));
        assert_eq!(popped_seq(&mut jb), Some(Some(0)));
        for _ in 0..REBUFFER_AFTER_MISSING {
            assert_eq!(popped_seq(&mut jb), Some(None));
        }
        assert!(popped_seq(&mut jb).is_none(), "stopped stream goes quiet");
        jb.insert(&pkt(500));
        assert_eq!(popped_seq(&mut jb), Some(Some(500)));
        assert_eq!(
            jb.insert(&pkt(500 + JITTER_CAPACITY as u32 * 3)),
            Arrival::Restarted
        );
    }

    proptest! {
        /// Under reordering by up to a dozen packets, duplicates and any playout pace, no
        /// packet plays twice, order is kept and the span stays bounded.
        #[test]
        fn never_plays_twice_or_out_of_order(
            arrivals in proptest::collection::vec((0u32..12, any::<bool>()), 1..400),
            pops_per_insert in 0usize..3,
            depth in 1usize..8,
        ) {
            let mut jb = FixedJitterBuffer::new(depth);
            let mut last: Option<u32> = None;
            for (i, (back, dup)) in arrivals.into_iter().enumerate() {
                let seq = (i as u32).saturating_sub(back);
                jb.insert(&pkt(seq));
                if dup {
                    jb.insert(&pkt(seq));
                }
                prop_assert!(jb.span() <= JITTER_CAPACITY);
                for _ in 0..pops_per_insert {
                    if let Some(Some(s)) = popped_seq(&mut jb) {
                        if let Some(l) = last {
                            prop_assert!(seq_ahead(s, l) > 0, "{} after {}", s, l);
                        }
                        last = Some(s);
                    }
                }
            }
        }
    }
}
