//! What each sender's audio loses on the way to us, before redundancy fills it in: reported
//! back in our presence, so each sender switches its loss protection on (and off) by what its
//! listeners really lose.

use crate::wire::{ParticipantId, StemId};

/// Streams measured at most (a sender's stems, from every member of a full room); one beyond
/// replaces the least heard.
const MAX_STREAMS: usize = 64;
/// Frames a stream must have been expected to send in a report's time to be reported: fewer
/// say little (40 frames: 0.1 s at 2.5 ms).
const MIN_EXPECTED: u32 = 40;

#[derive(Debug, Clone, Copy)]
struct Stream {
    from: ParticipantId,
    stem: StemId,
    /// First and highest sequence number heard since the last report.
    first: u32,
    highest: u32,
    /// Frames that came in their own datagram since then.
    heard: u32,
}

/// Per-stream network loss since the last report.
#[derive(Debug, Default)]
pub struct LossMeter {
    streams: Vec<Stream>,
}

impl LossMeter {
    /// Frame `seq` of `from`'s `stem` arrived, in its own datagram or (`recovered`) only as a
    /// later one's redundancy: the network lost it either way.
    pub fn heard(&mut self, from: ParticipantId, stem: StemId, seq: u32, recovered: bool) {
        let i = match self
            .streams
            .iter()
            .position(|s| s.from == from && s.stem == stem)
        {
            Some(i) => i,
            None => {
                if self.streams.len() == MAX_STREAMS {
                    let least = (0..self.streams.len())
                        .min_by_key(|&i| self.streams[i].heard)
                        .unwrap_or(0);
                    self.streams.swap_remove(least);
                }
                self.streams.push(Stream {
                    from,
                    stem,
                    first: seq,
                    highest: seq,
                    heard: 0,
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[i];
        let ahead = seq.wrapping_sub(s.highest) as i32;
        if ahead.unsigned_abs() > 1 << 16 {
            // Numbering started over (the sender joined again).
            *s = Stream {
                from,
                stem,
                first: seq,
                highest: seq,
                heard: 0,
            };
        } else if ahead > 0 {
            s.highest = seq;
        } else if (seq.wrapping_sub(s.first) as i32) < 0 {
            // Reordered from before this report's first.
            s.first = seq;
        }
        if !recovered {
            s.heard += 1;
        }
    }

    /// Each sender's worst stream's loss since the last report, in ‰, for senders heard enough
    /// to say; starts a new report.
    pub fn report(&mut self) -> Vec<(ParticipantId, u16)> {
        let mut out: Vec<(ParticipantId, u16)> = Vec::new();
        for s in &mut self.streams {
            let expected = s.highest.wrapping_sub(s.first).wrapping_add(1);
            if (MIN_EXPECTED..1 << 24).contains(&expected) {
                let lost = expected.saturating_sub(s.heard);
                let permille = (u64::from(lost) * 1000 / u64::from(expected)) as u16;
                match out.iter_mut().find(|(p, _)| *p == s.from) {
                    Some((_, worst)) => *worst = (*worst).max(permille),
                    None => out.push((s.from, permille)),
                }
            }
            *s = Stream {
                first: s.highest.wrapping_add(1),
                highest: s.highest,
                heard: 0,
                ..*s
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_the_network_lost_even_when_redundancy_filled_it() {
        let mut m = LossMeter::default();
        let (ana, ben) = (ParticipantId(1), ParticipantId(2));
        for seq in 0..1000u32 {
            // Ana's every 50th frame comes only as the next datagram's redundancy; Ben's all
            // arrive, some twice reordered.
            m.heard(ana, StemId(0), seq, seq % 50 == 0);
            m.heard(ben, StemId(0), seq ^ 1, false);
        }
        let r = m.report();
        assert_eq!(r, vec![(ana, 20), (ben, 0)]);
        // The next report starts afresh: nothing expected yet, nothing said.
        assert!(m.report().is_empty());
        for seq in 1000..1100u32 {
            if seq % 10 != 0 {
                m.heard(ana, StemId(0), seq, false);
            }
        }
        assert_eq!(m.report(), vec![(ana, 100)]);
    }

    #[test]
    fn a_sender_that_starts_over_is_not_a_loss() {
        let mut m = LossMeter::default();
        let p = ParticipantId(7);
        for seq in 0..500u32 {
            m.heard(p, StemId(0), 4_000_000 + seq, false);
        }
        for seq in 0..500u32 {
            m.heard(p, StemId(0), seq, false);
        }
        let r = m.report();
        assert_eq!(r, vec![(p, 0)], "{r:?}");
    }
}
