//! How far each sender's audio queues on its way to us, reported back in our presence: a
//! sender measures only its own path, and a stream that overflows a listener's downlink
//! queues where it cannot see (in the relay's connection to that listener). With the
//! listeners' reports it asks its encoder for less, as for a queue on its own path.
//!
//! The clocks differ by an unknown offset, so only change counts: `arrival − media time` is
//! that offset plus the frame's delay. The least of a period is a frame that met no burst
//! and no jitter (a DAW's large block sends its frames together); a queue that stays raises
//! it above the least of the last [`BASE_PERIODS`].

use std::time::{Duration, Instant};

use super::audio::Via;
use crate::wire::{ParticipantId, StemId};

/// How often the floor is taken, and reported.
pub const PERIOD: Duration = Duration::from_millis(500);
/// The base is the least floor of the last this many periods (20 s): a longer path is
/// learnt within that, and a queue that lasts longer is reported as gone.
const BASE_PERIODS: usize = 40;
/// Streams measured at most (per way they come); one beyond replaces the longest silent.
const MAX_STREAMS: usize = 64;
/// Silence this long starts a stream over: the sender stopped (a DAW that stopped calling
/// the plugin keeps its media time where it was while ours runs on) or the path went away.
const GAP: Duration = Duration::from_secs(1);
/// A frame this much later than the one before is a sender that started over, not a queue
/// (none grows by a second between two frames).
const JUMP_US: i64 = 1_000_000;
/// Reports are in steps this big; smaller queues are not reported (a quiet path's report
/// never changes, so it sends no presence updates).
const STEP_MS: u16 = 5;

#[derive(Debug, Clone)]
struct Stream {
    from: ParticipantId,
    stem: StemId,
    via: Via,
    last_heard: Instant,
    /// `arrival − media time` of the last frame, µs.
    last: i64,
    /// The least of this period so far.
    floor: Option<i64>,
    /// The floors of earlier periods, newest at `next - 1` (a ring).
    floors: [i64; BASE_PERIODS],
    filled: usize,
    next: usize,
}

impl Stream {
    fn new(from: ParticipantId, stem: StemId, via: Via, now: Instant, lead: i64) -> Self {
        Self {
            from,
            stem,
            via,
            last_heard: now,
            last: lead,
            floor: None,
            floors: [0; BASE_PERIODS],
            filled: 0,
            next: 0,
        }
    }

    /// The least floor of the earlier periods.
    fn base(&self) -> Option<i64> {
        self.floors[..self.filled].iter().copied().min()
    }
}

/// Per stream and way: how far its delay rose above its recent least.
#[derive(Debug, Default)]
pub struct QueueMeter {
    origin: Option<Instant>,
    streams: Vec<Stream>,
}

impl QueueMeter {
    /// Frame of `from`'s `stem` that began at `media_time` (48 kHz samples) came `via` at
    /// `now`. Frames recovered from a later datagram came late by design: leave them out.
    pub fn heard(
        &mut self,
        from: ParticipantId,
        stem: StemId,
        via: Via,
        media_time: u64,
        now: Instant,
    ) {
        let origin = *self.origin.get_or_insert(now);
        let arrival = now.saturating_duration_since(origin).as_micros() as i64;
        let sent = (u128::from(media_time) * 1_000_000 / 48_000).min(i64::MAX as u128) as i64;
        let lead = arrival.saturating_sub(sent);
        let found = self
            .streams
            .iter()
            .position(|s| s.from == from && s.stem == stem && s.via == via);
        let i = match found {
            Some(i) => i,
            None => {
                if self.streams.len() == MAX_STREAMS {
                    let oldest = (0..self.streams.len())
                        .min_by_key(|&i| self.streams[i].last_heard)
                        .unwrap_or(0);
                    self.streams.swap_remove(oldest);
                }
                self.streams.push(Stream::new(from, stem, via, now, lead));
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[i];
        if now.saturating_duration_since(s.last_heard) >= GAP
            || lead.saturating_sub(s.last) > JUMP_US
        {
            *s = Stream::new(from, stem, via, now, lead);
        }
        s.last_heard = now;
        s.last = lead;
        s.floor = Some(s.floor.map_or(lead, |f| f.min(lead)));
    }

    /// Each sender's queue since the last report, in ms (in [`STEP_MS`] steps; none below
    /// one step): the worst of its stems, each by the best way it came. Starts a new period.
    pub fn report(&mut self, now: Instant) -> Vec<(ParticipantId, u16)> {
        self.streams
            .retain(|s| now.saturating_duration_since(s.last_heard) < GAP * 10);
        let mut out: Vec<(ParticipantId, u16)> = Vec::new();
        // (from, stem) → the least queue over the ways it came this period.
        let mut best: Vec<(ParticipantId, StemId, i64)> = Vec::new();
        for s in &mut self.streams {
            let Some(floor) = s.floor.take() else {
                continue;
            };
            let queue = floor - s.base().map_or(floor, |b| b.min(floor));
            s.floors[s.next] = floor;
            s.next = (s.next + 1) % BASE_PERIODS;
            s.filled = (s.filled + 1).min(BASE_PERIODS);
            match best.iter_mut().find(|b| b.0 == s.from && b.1 == s.stem) {
                Some(b) => b.2 = b.2.min(queue),
                None => best.push((s.from, s.stem, queue)),
            }
        }
        for (from, _, queue_us) in best {
            let ms = (queue_us / 1000).clamp(0, i64::from(u16::MAX)) as u16;
            let stepped = ms / STEP_MS * STEP_MS;
            if stepped == 0 {
                continue;
            }
            match out.iter_mut().find(|(p, _)| *p == from) {
                Some((_, worst)) => *worst = (*worst).max(stepped),
                None => out.push((from, stepped)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MemberId;

    type Delay<'a> = &'a dyn Fn(u64) -> Duration;

    /// 2.5 ms frames of one stem from `from_s` for `seconds`, sent in blocks of `block`
    /// frames (a DAW's buffer), each way delaying frame `f` by its `delay(f)`: the reports
    /// of every period.
    fn run(
        m: &mut QueueMeter,
        t0: Instant,
        (from_s, seconds): (f64, f64),
        block: u64,
        ways: &[(Via, Delay<'_>)],
    ) -> Vec<Vec<(ParticipantId, u16)>> {
        let first = (from_s * 400.0) as u64;
        let frames = (seconds * 400.0) as u64;
        let mut arrivals: Vec<(Instant, Via, u64)> = (first..first + frames)
            .flat_map(|f| {
                let sent = t0 + Duration::from_micros((f / block + 1) * block * 2500);
                ways.iter()
                    .map(move |(via, delay)| (sent + delay(f), *via, f))
            })
            .collect();
        arrivals.sort_by_key(|a| a.0);
        let mut reports = Vec::new();
        let mut next_report = t0 + Duration::from_secs_f64(from_s) + PERIOD;
        for (at, via, f) in arrivals {
            while at >= next_report {
                reports.push(m.report(next_report));
                next_report += PERIOD;
            }
            m.heard(ParticipantId(1), StemId(0), via, f * 120, at);
        }
        reports
    }

    fn steady(ms: u64) -> impl Fn(u64) -> Duration {
        move |_| Duration::from_millis(ms)
    }

    /// From frame 2000 (5 s) on, 4 % more than the link carries: 40 ms more a second.
    fn growing(f: u64) -> Duration {
        Duration::from_millis(20) + Duration::from_micros(f.saturating_sub(2000) * 100)
    }

    #[test]
    fn bursts_and_jitter_are_no_queue() {
        let mut m = QueueMeter::default();
        // 8192-frame blocks (~68 frames at once) and up to 30 ms of jitter.
        let jitter = |f: u64| Duration::from_micros(20_000 + (f * 7919 % 30_000));
        let reports = run(
            &mut m,
            Instant::now(),
            (0.0, 20.0),
            68,
            &[(Via::Relay, &jitter)],
        );
        // A period holds only three blocks' last frames (the ones sent at once with their
        // audio): their jitter shows a little, far below a queue the sender acts on (40 ms).
        let worst = reports.iter().flatten().map(|r| r.1).max();
        assert!(worst.unwrap_or(0) <= 10, "{reports:?}");
        // Steady 2.5 ms frames show nothing.
        let mut m = QueueMeter::default();
        let reports = run(
            &mut m,
            Instant::now(),
            (0.0, 20.0),
            1,
            &[(Via::Relay, &jitter)],
        );
        assert!(reports.iter().all(Vec::is_empty), "{reports:?}");
    }

    #[test]
    fn a_queue_that_grows_is_reported_and_its_end_too() {
        let mut m = QueueMeter::default();
        let t0 = Instant::now();
        let clean = run(&mut m, t0, (0.0, 5.0), 4, &[(Via::Relay, &steady(20))]);
        assert!(clean.iter().all(Vec::is_empty), "{clean:?}");
        let grew = run(&mut m, t0, (5.0, 3.0), 4, &[(Via::Relay, &growing)]);
        let last = grew.last().expect("reports");
        assert_eq!(last.len(), 1, "{grew:?}");
        assert!((95..=125).contains(&last[0].1), "{grew:?}");
        let drained = run(&mut m, t0, (8.0, 2.0), 4, &[(Via::Relay, &steady(20))]);
        assert!(drained.last().expect("reports").is_empty(), "{drained:?}");
    }

    #[test]
    fn a_sender_that_paused_is_no_queue() {
        let mut m = QueueMeter::default();
        let t0 = Instant::now();
        run(&mut m, t0, (0.0, 5.0), 4, &[(Via::Relay, &steady(20))]);
        // Its DAW stopped calling the plugin for 3 s: media time went on from where it was.
        let paused = run(&mut m, t0, (5.0, 5.0), 4, &[(Via::Relay, &steady(3020))]);
        assert!(paused.iter().all(Vec::is_empty), "{paused:?}");
    }

    #[test]
    fn a_stream_is_judged_by_the_best_way_it_came() {
        let mut m = QueueMeter::default();
        let t0 = Instant::now();
        let direct = Via::Direct(MemberId(1));
        // The relay's copies queue, the direct path's do not: the audio gets through.
        let ways: [(Via, Delay<'_>); 2] = [(Via::Relay, &growing), (direct, &steady(5))];
        let reports = run(&mut m, t0, (0.0, 8.0), 4, &ways);
        assert!(reports.iter().all(Vec::is_empty), "{reports:?}");
        // Without the direct path, the same queue is reported.
        let mut m = QueueMeter::default();
        let reports = run(&mut m, t0, (0.0, 8.0), 4, &ways[..1]);
        assert!(!reports.last().expect("reports").is_empty(), "{reports:?}");
    }
}
