//! One stem's take: frames as they arrive (late, twice, out of order, or never) written in
//! the order of the sender's media time, each at its place, so a file's sample `k` is what
//! the sender played at media time `origin + k` whatever the network did to it.

use std::collections::BTreeMap;
use std::io;

use echoel_engine::packet::opus_packet_samples;

use super::sinks::Sink;

/// How long a missing frame is waited for (1 s of newer audio) before its place is written
/// as a gap: a recovered or reordered frame comes well within it.
const REORDER: u64 = 48_000;

/// Frames held at most while waiting: a sender cannot make the recorder hold more.
const MAX_PENDING: usize = 2_048;

/// A frame whose media time lies this far (2 s) from where our clock says the sender is,
/// either way, shows its clock jumped (it rejoined with a new engine, rendered offline, or
/// lies): the file goes on by our clock rather than writing a jump's worth of nothing or
/// dropping all that follows as late. Whatever a sender does, its file grows no faster than
/// real time.
const JUMP: i128 = 2 * 48_000;

/// Gaps a file remembers for filling: more than an hour of single lost 2.5 ms frames at 5 %.
const MAX_GAPS: usize = 200_000;

/// A stretch written as a gap: where in the file (samples from its first packet), the
/// sender's media time there, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub at: u64,
    pub media: u64,
    pub samples: u64,
}

/// What a stem's take met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StemCounts {
    /// Frames written.
    pub frames: u64,
    /// Samples (per channel) the file holds: its frames and its gaps.
    pub samples: u64,
    /// Samples (per channel) written as gaps: nothing arrived for them.
    pub gap_samples: u64,
    /// Frames that came after their place was written, or twice.
    pub late: u64,
    /// Not Opus.
    pub invalid: u64,
    /// Times the sender's clock started over.
    pub restarts: u64,
    /// Samples (per channel) of gaps filled afterwards with what the sender played.
    pub filled_samples: u64,
}

/// One stem's file, fed frames as they come.
pub struct StemFile {
    sink: Box<dyn Sink>,
    /// The media time of the file's next sample, in the sender's clock shifted by `shift`.
    next: Option<u64>,
    /// Added to each frame's media time: moves when the sender's clock jumps.
    shift: i128,
    /// Our clock less the sender's (as shifted) for its fastest frames: where it should be.
    lead: i128,
    /// Our clock when the take began, and at the newest arrival: the file never holds more
    /// than the time between (and [`JUMP`]), whatever the sender's media times say.
    start: u64,
    newest_at: u64,
    /// Frames waiting for an earlier one: media time → (payload, samples).
    pending: BTreeMap<u64, (Vec<u8>, u64)>,
    /// End of the newest frame seen.
    newest_end: u64,
    counts: StemCounts,
    /// Where the gaps are, for filling them after the take.
    gaps: Vec<Gap>,
}

impl StemFile {
    /// A take whose first sample is the sender's media time `origin` (`None`: its first
    /// frame's), written to `sink`; `lead`: our clock's time less the sender's media time at
    /// the end of a frame that came by the fastest path.
    /// `start`: our clock when the take began.
    pub fn new(sink: Box<dyn Sink>, origin: Option<u64>, lead: i64, start: u64) -> Self {
        Self {
            sink,
            next: origin,
            shift: 0,
            lead: i128::from(lead),
            start,
            newest_at: start,
            pending: BTreeMap::new(),
            newest_end: origin.unwrap_or(0),
            counts: StemCounts::default(),
            gaps: Vec::new(),
        }
    }

    /// A frame the sender numbered `media_time`, arrived at `at` on our clock.
    pub fn push(&mut self, media_time: u64, at: u64, payload: &[u8]) -> io::Result<()> {
        let Some(samples) = opus_packet_samples(payload).map(|n| n as u64) else {
            self.counts.invalid += 1;
            return Ok(());
        };
        self.newest_at = self.newest_at.max(at);
        let shifted = i128::from(media_time) + self.shift;
        let expected = i128::from(at) - self.lead - i128::from(samples);
        let shifted = if (shifted - expected).abs() > JUMP {
            // Its clock jumped: what it held is written, and it goes on by ours.
            self.drain(true)?;
            self.shift += expected - shifted;
            self.counts.restarts += 1;
            expected
        } else {
            shifted
        };
        let media = shifted.clamp(0, i128::from(u64::MAX)) as u64;
        self.next.get_or_insert(media);
        let next = self.next.unwrap_or(media);
        if media < next {
            // Its place is written (a frame from before the take began counts here too).
            self.counts.late += 1;
            return Ok(());
        }
        if self.pending.contains_key(&media) {
            self.counts.late += 1;
            return Ok(());
        }
        self.pending.insert(media, (payload.to_vec(), samples));
        self.newest_end = self.newest_end.max(media.saturating_add(samples));
        self.drain(false)
    }

    /// Writes what can be written: frames in order, and a gap where nothing came within the
    /// reorder window (or the window is full); with `all`, everything held.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        while let Some((&media, _)) = self.pending.first_key_value() {
            let Some(next) = self.next else { break };
            if media > next {
                let waited = self.newest_end.saturating_sub(next) >= REORDER;
                if !(all || waited || self.pending.len() > MAX_PENDING) {
                    break;
                }
                // Never more than real time allows: a sender whose media times run ahead of
                // the clock moves its frames up instead of growing the file.
                let budget = (self
                    .newest_at
                    .saturating_sub(self.start)
                    .saturating_add(JUMP as u64))
                .saturating_sub(self.counts.samples);
                let gap = (media - next).min(budget);
                if gap > 0 {
                    self.sink.gap(gap)?;
                    if self.gaps.len() < MAX_GAPS {
                        let media = (i128::from(next) - self.shift).clamp(0, i128::from(u64::MAX));
                        self.gaps.push(Gap {
                            at: self.counts.samples,
                            media: media as u64,
                            samples: gap,
                        });
                    }
                }
                self.counts.gap_samples += gap;
                self.counts.samples += gap;
                self.next = Some(media);
            }
            let Some((media, (payload, samples))) = self.pending.pop_first() else {
                break;
            };
            self.sink.packet(&payload, samples)?;
            self.counts.frames += 1;
            self.counts.samples += samples;
            self.next = Some(media.saturating_add(samples));
        }
        Ok(())
    }

    /// Writes what is held and closes the file; its counts and where its gaps are.
    pub fn finish(mut self) -> io::Result<(StemCounts, Vec<Gap>)> {
        self.drain(true)?;
        self.sink.finish()?;
        Ok((self.counts, self.gaps))
    }

    /// After a failed write: closes the file at its last checkpoint.
    pub fn abandon(self) -> io::Result<StemCounts> {
        let counts = self.counts;
        self.sink.abandon()?;
        Ok(counts)
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.sink.bytes()
    }

    /// Counters so far.
    pub fn counts(&self) -> StemCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a sink was asked to write: `Some(second payload byte)` or `None` for a gap, and
    /// how many samples.
    type Written = Vec<(Option<u8>, u64)>;

    /// A sink that notes what it is asked to write.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Written>>);

    impl Sink for Log {
        fn packet(&mut self, payload: &[u8], samples: u64) -> io::Result<()> {
            self.0.lock().unwrap().push((Some(payload[1]), samples));
            Ok(())
        }
        fn gap(&mut self, samples: u64) -> io::Result<()> {
            self.0.lock().unwrap().push((None, samples));
            Ok(())
        }
        fn finish(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
        fn abandon(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
        fn bytes(&self) -> u64 {
            0
        }
    }

    /// A 2.5 ms stereo CELT frame whose second byte is `tag`.
    fn frame(tag: u8) -> [u8; 2] {
        [28 << 3 | 1 << 2, tag]
    }

    /// Frames as (media time, arrival, tag), from a sender on our clock (lead 0).
    fn take_at(origin: Option<u64>, frames: &[(u64, u64, u8)]) -> (Written, StemCounts) {
        let log = Log::default();
        let mut f = StemFile::new(Box::new(log.clone()), origin, 0, 0);
        for &(m, at, tag) in frames {
            f.push(m, at, &frame(tag)).unwrap();
        }
        let (counts, _) = f.finish().unwrap();
        let out = log.0.lock().unwrap().clone();
        (out, counts)
    }

    /// Frames as (media time, tag), each arriving once whole or just after the one before.
    fn take(origin: Option<u64>, frames: &[(u64, u8)]) -> (Written, StemCounts) {
        let mut at = 0;
        let timed: Vec<(u64, u64, u8)> = frames
            .iter()
            .map(|&(m, tag)| {
                at = (at + 1).max(m + 120);
                (m, at, tag)
            })
            .collect();
        take_at(origin, &timed)
    }

    #[test]
    fn frames_go_in_media_order_and_a_missing_one_leaves_its_length_of_gap() {
        let (out, c) = take(
            None,
            &[(1000, 1), (1240, 3), (1120, 2), (1600, 6), (1360, 4)],
        );
        assert_eq!(
            out,
            [
                (Some(1), 120),
                (Some(2), 120),
                (Some(3), 120),
                (Some(4), 120),
                (None, 120),
                (Some(6), 120)
            ]
        );
        assert_eq!(c.gap_samples, 120);
    }

    #[test]
    fn a_take_starts_at_its_origin_and_drops_what_came_before_it() {
        let (out, c) = take(Some(960), &[(720, 1), (840, 2), (1200, 3), (1320, 4)]);
        assert_eq!(out, [(None, 240), (Some(3), 120), (Some(4), 120)]);
        assert_eq!(c.late, 2);
    }

    #[test]
    fn duplicates_and_frames_later_than_the_window_are_refused() {
        let mut frames: Vec<(u64, u8)> = (0..500).map(|i| (i * 120, (i % 200) as u8)).collect();
        frames.retain(|&(m, _)| m != 1200);
        frames.push((1200, 99)); // 1.2 s after its place: past the window
        frames.push((2400, 7)); // a duplicate
        let (out, c) = take(None, &frames);
        assert_eq!(out[10], (None, 120), "its place was written as a gap");
        assert_eq!(out.len(), 500);
        assert_eq!(c.late, 2);
    }

    #[test]
    fn a_sender_whose_clock_jumps_goes_on_by_ours() {
        // It rejoined 5 s later with a new engine (its media time starts over): the file
        // holds the 5 s it was away, then goes on.
        let back = 5 * 48_000;
        let (out, c) = take_at(
            None,
            &[
                (0, 120, 1),
                (120, 240, 2),
                (0, back, 3),
                (120, back + 120, 4),
            ],
        );
        assert_eq!(
            out,
            [
                (Some(1), 120),
                (Some(2), 120),
                (None, back - 120 - 240),
                (Some(3), 120),
                (Some(4), 120)
            ]
        );
        assert_eq!(c.restarts, 1);
        // Ten minutes ahead in a frame's time: no ten minutes of nothing.
        let (out, c) = take_at(None, &[(0, 120, 1), (10 * 60 * 48_000, 240, 2)]);
        assert_eq!(out, [(Some(1), 120), (Some(2), 120)]);
        assert_eq!(c.restarts, 1);
    }

    #[test]
    fn a_hostile_sender_cannot_make_it_hold_more_than_the_window() {
        let log = Log::default();
        let mut f = StemFile::new(Box::new(log.clone()), Some(0), 0, 0);
        // Every other frame: a gap is written as soon as the newest is a window past it, so
        // little is held.
        for i in 1..5_000u64 {
            f.push(i * 240, i * 240 + 120, &frame(1)).unwrap();
            assert!(f.pending.len() <= MAX_PENDING + 1);
        }
        assert!(f.pending.len() < 500, "{}", f.pending.len());
        // Not Opus at all.
        f.push(10, 10, &[]).unwrap();
        assert_eq!(f.counts().invalid, 1);
        // Media times at the top of the range neither overflow nor write a lifetime of gap.
        let now = 5_000 * 240;
        f.push(u64::MAX - 50, now, &frame(2)).unwrap();
        f.push(u64::MAX, now + 120, &frame(3)).unwrap();
        let gaps: u64 = log
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.0.is_none())
            .map(|w| w.1)
            .sum();
        assert!(gaps < 5_000 * 120 + 48_000, "{gaps} samples of gap");
    }
}
