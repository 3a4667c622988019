//! An adaptive jitter buffer driven by a playout schedule.
//!
//! Packet *i* (media time `m`) is due at `m + base + target` on the receiver's sample clock,
//! where `base` is the smallest `arrival − media` seen over a recent window (the fastest path)
//! and `target` a high quantile of how much later than that packets arrive, plus a margin.
//! At each playout request the buffer compares the moment the frame will be heard (`now`) with
//! the schedule:
//!
//! - due packet here → play it, early or late; when playout has drifted off the schedule by
//!   more than a millisecond or two the buffer asks for a [`Rescale`]: the stream takes a
//!   stretch out of decoded audio or puts one in where the waveform repeats ([`crate::tsm`]),
//!   so the delay moves without a skipped or a concealed frame, and within the dead band it
//!   holds still;
//! - due packet missing and newer ones here → it is lost: conceal and move on;
//! - due packet missing and nothing newer → a delay spike: conceal without moving on, so the
//!   delay grows at once; the statistics window then raises the target if spikes recur.
//!
//! Pure: no clock, no I/O; times are the caller's sample counts. No allocation after
//! construction.

pub use super::decision::{AdaptiveConfig, AdaptiveStats, Decision, Rescale};
use super::drift::DriftEstimator;
use super::seq_ahead;
use super::spikes::Spikes;
use crate::packet::PacketSlot;

/// Packets held at most (see [`super::JITTER_CAPACITY`]).
const CAPACITY: usize = super::JITTER_CAPACITY;

/// How long after a path change or a long host block has passed its stalls are still its
/// own (1 s): a stall later than that is the path's.
const FORGIVE_SAMPLES: u64 = 48_000;

/// Arrivals seen before playout starts.
const START_AFTER_PACKETS: usize = 8;

/// Playout during which stalls do not hold the delay up: two seconds, long enough to cover the
/// connection's set-up and the switch from the relay to a direct path (about one second in).
const WARMUP_SAMPLES: u64 = 2 * 48_000;

/// Playout this far behind its schedule (2.5 ms, the shortest splice) asks to shrink the
/// delay; a splice never takes playout ahead of its moment, where a packet within the target
/// would be late.
pub const SHRINK_AT: i64 = crate::tsm::MIN_LAG as i64;
/// Within the splices' dead band, playout runs this much faster (slower) while it is behind
/// (ahead of) its schedule: 250 ppm (0.4 cent) takes the last couple of milliseconds out in
/// seconds, and on a clean path the delay then holds still.
const SLEW_PPM: f64 = 250.0;
/// Beyond this (1 ms) off its moment, inside the dead band, the slew runs four times as fast
/// (0.1 %, 1.7 cent): the last of a change is out within a second or two.
const FAST_SLEW_BEYOND: f64 = 48.0;
/// Within this much of its moment playout is on time and the slew rests.
const ON_TIME: (f64, f64) = (-12.0, 24.0);
/// Playout this far ahead of its schedule (1 ms) asks to grow it: less slack on the early side,
/// where a late packet means a stall.
pub const GROW_AT: i64 = 48;
/// Beyond this (10 ms) off the schedule a change is urgent: splice where the waveform is only
/// fairly alike rather than wait for a better place.
pub const URGENT_AT: i64 = 480;

/// Packets this much (2.5 ms) faster than any the window knew, [`NEW_PATH_RUN`] of them with
/// few others between, show a shorter path: no jitter makes a path faster than its fastest.
const NEW_PATH_SAMPLES: i64 = 120;
const NEW_PATH_RUN: u32 = 8;
/// Packets the window holds before a faster run can mean a shorter path (160 ms): before that
/// nothing of a path is known, and the newer packets of a burst the stream began in are not
/// faster than their path, only less held up.
const KNOWN_PATH: usize = 64;

/// After a path hint (the sender's [`PacketSlot::path_epoch`] changed: a direct path came up
/// or carries again), the packets that may still be the old way's stragglers, and then how many
/// of the new way's rebuild the window: 40 ms and 160 ms at 2.5 ms frames.
const HINT_SKIP: u32 = 16;
const HINT_KEEP: usize = 64;

/// What [`JitterBuffer::straggler_peak`] keeps per refresh (every 16 packets, 40 ms at 2.5 ms
/// frames): half of it after 30 s.
const STRAGGLER_MEMORY: f64 = 0.999_08;

/// After a wait, playout this long (50 ms) before a shrink: the packets that follow show
/// whether the path got slower (a shrink would only wait again) or a burst came in.
const SHRINK_AFTER_WAIT: u64 = 2_400;

/// The most one late packet raises the target for good (5 ms).
const MAX_BUMP: i64 = 240;

/// How far above the quantile the target reaches to cover the slowest packets of the window
/// (2.5 ms).
const HEADROOM: i64 = 120;

/// A move of the fastest-path reference beyond this (1 ms) at once is a jump, not a creep.
const REBASE_JUMP: i64 = 48;

/// The adaptive jitter buffer.
///
/// # Thread
/// Owned by the audio thread; no method allocates.
pub struct JitterBuffer {
    config: AdaptiveConfig,
    slots: Vec<PacketSlot>,
    /// Samples in each held packet.
    lens: Vec<u64>,
    /// When each held packet arrived (receiver samples).
    arrived: Vec<u64>,
    held: Vec<bool>,
    /// Next sequence number to play, once started.
    next_seq: Option<u32>,
    newest_seq: u32,
    /// Media time of `next_seq` (advances by the last frame length when it is missing).
    next_media: u64,
    frame_samples: u64,
    /// `arrival − end` (the end of a packet's audio: its delay does not depend on the frame
    /// length) of the last `window` packets (ring), when each arrived, and a scratch
    /// copy for quantiles.
    delays: Vec<i64>,
    arrivals: Vec<u64>,
    delays_len: usize,
    delays_at: usize,
    scratch: Vec<i64>,
    since_quantile: usize,
    base: i64,
    target: i64,
    quantile_target: i64,
    /// The quantile target without the render-size floor: what the path alone asks for.
    path_target: i64,
    /// Frames concealed while waiting since the last one played. Packets that then prove lost
    /// are covered by them (no second concealment, no added delay); the rest is delay added.
    stall_credit: u32,
    /// The least adaptive target: the receiver's render size.
    render_ahead: i64,
    /// Samples played since the last stall.
    since_stall: u64,
    /// How far behind its moment the last frame played (negative: ahead), in samples.
    last_error: i64,
    /// The same averaged over a quarter second, for the slew: arrivals seen at block starts
    /// make each frame's error jump by up to a block.
    error_avg: f64,
    drift: DriftEstimator,
    /// How far the slowest packets lately came beyond the quantile, fading over half a minute.
    straggler_peak: f64,
    /// The stalls waited so far were the host's (a long block) or the path change's, not the
    /// path's: they neither raise the target nor hold it up. For this much more playout
    /// (samples), after which a stall is the path's again.
    forgive_for: u64,
    /// Packets well below `run_floor`, the fastest delay known before the first of them, and
    /// packets since the last of them.
    faster_run: u32,
    since_faster: u32,
    run_floor: i64,
    /// The sender's path epoch last seen, and packets since it changed (until the window is
    /// rebuilt from the new way's).
    path_epoch: Option<u8>,
    since_hint: Option<u32>,
    /// Samples played since the last frame concealed while waiting.
    since_wait: u64,
    /// `since_stall` before a first stall on a packet, restored if that packet proves lost.
    since_stall_saved: Option<u64>,
    /// The delay spikes lately beyond the quantile.
    spikes: Spikes,
    /// The delay holds where it is (a take is recorded from the outputs): no splice, no
    /// slew, and a late packet is concealed rather than waited for.
    hold: bool,
    stats: AdaptiveStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: AdaptiveConfig) -> Self {
        let window = config.window.max(16);
        let target = i64::from(
            config
                .manual_target_samples
                .unwrap_or(config.margin_samples),
        );
        Self {
            config: AdaptiveConfig { window, ..config },
            slots: vec![PacketSlot::empty(); CAPACITY],
            lens: vec![120; CAPACITY],
            arrived: vec![0; CAPACITY],
            held: vec![false; CAPACITY],
            next_seq: None,
            newest_seq: 0,
            next_media: 0,
            frame_samples: 120,
            delays: vec![0; window],
            arrivals: vec![0; window],
            delays_len: 0,
            delays_at: 0,
            scratch: vec![0; window],
            since_quantile: 0,
            base: i64::MAX,
            target,
            quantile_target: target,
            path_target: target,
            stall_credit: 0,
            render_ahead: 0,
            since_stall: u64::MAX,
            since_stall_saved: None,
            since_wait: u64::MAX,
            forgive_for: 0,
            straggler_peak: 0.0,
            faster_run: 0,
            since_faster: 0,
            run_floor: 0,
            path_epoch: None,
            since_hint: None,
            last_error: 0,
            error_avg: 0.0,
            drift: DriftEstimator::default(),
            spikes: Spikes::default(),
            hold: false,
            stats: AdaptiveStats::default(),
        }
    }

    /// Holds the delay where it is (`true`), e.g. while the outputs are recorded: anything
    /// that moved it would shift what follows on the recording. Only the clock drift is still
    /// played out (a few samples a minute). Late packets are concealed meanwhile. A stream
    /// still learns its path first (its warm-up), held or not.
    pub fn set_hold(&mut self, on: bool) {
        self.hold = on;
    }

    fn holding(&self) -> bool {
        self.hold && !self.warming_up()
    }

    /// The next packet to play is here: decoding it now never conceals.
    pub fn ready(&self) -> bool {
        self.next_seq.is_some_and(|seq| {
            let idx = Self::index(seq);
            self.held[idx] && self.slots[idx].seq == seq
        }) && self.stats.played > 0
    }

    /// Counters.
    pub fn stats(&self) -> AdaptiveStats {
        self.stats
    }

    /// How much slower the sender's clock runs than ours, in ppm (negative: faster). Playing
    /// each frame stretched by `1 + ppm·10⁻⁶` keeps the buffer from draining or filling.
    pub fn drift_ppm(&self) -> f64 {
        self.drift.ppm()
    }

    /// Receiver samples each sample of decoded audio should last: the clock drift, within
    /// ±0.1 %, and the slow slew inside the dead band. Playout is drawn onto its schedule by
    /// [`Self::rescale`] beyond it.
    pub fn stretch(&self) -> f64 {
        let e = self.error_avg;
        let pace = if e.abs() > FAST_SLEW_BEYOND { 4.0 } else { 1.0 } * SLEW_PPM;
        let slew = if self.holding() {
            0.0
        } else if e > ON_TIME.1 {
            pace
        } else if e < ON_TIME.0 {
            -pace
        } else {
            0.0
        };
        1.0 + (self.drift.ppm().clamp(-1000.0, 1000.0) - slew) * 1e-6
    }

    /// The change of delay playout needs now, if any: more than [`SHRINK_AT`] behind its
    /// schedule (too much delay), or more than [`GROW_AT`] ahead (too little). Within that
    /// dead band the delay holds still. Make it with [`crate::tsm`], then report it with
    /// [`Self::rescaled`].
    pub fn rescale(&self) -> Option<Rescale> {
        if self.stats.played == 0 || self.holding() {
            return None;
        }
        let e = self.last_error;
        let urgent = e.unsigned_abs() > URGENT_AT as u64;
        if e > SHRINK_AT && self.since_wait >= SHRINK_AFTER_WAIT {
            // Never so far that it would ask to grow again.
            let want = e as usize;
            Some(Rescale {
                shrink: true,
                want,
                max: want,
                urgent,
            })
        } else if -e > GROW_AT {
            // Past the moment is safe (a little more delay), short of asking to shrink again.
            let want = (-e) as usize;
            Some(Rescale {
                shrink: false,
                want,
                max: want + SHRINK_AT as usize - 1,
                urgent,
            })
        } else {
            None
        }
    }

    /// `frames` were taken out of (positive) or put into (negative) the decoded audio ahead of
    /// playout: everything after them is heard that much earlier (later).
    pub fn rescaled(&mut self, frames: i64) {
        self.last_error -= frames;
        self.error_avg -= frames as f64;
        if frames > 0 {
            self.stats.shrunk += 1;
        } else if frames < 0 {
            self.stats.grown += 1;
        }
    }

    /// How far behind the schedule the last played frame was (negative: ahead), in samples.
    pub fn schedule_error(&self) -> i64 {
        self.last_error
    }

    /// Current target, in samples above the fastest path.
    pub fn target_samples(&self) -> u64 {
        self.target.max(0) as u64
    }

    /// Switches between adaptive (`None`) and a fixed target of `samples` (manual mode), keeping
    /// the packets and statistics held.
    pub fn set_manual_target(&mut self, samples: Option<u32>) {
        if samples == self.config.manual_target_samples {
            return;
        }
        self.config.manual_target_samples = samples;
        self.target = match samples {
            Some(n) => i64::from(n.min(self.config.max_target_samples)),
            None => self
                .quantile_target
                .max(i64::from(self.config.margin_samples))
                .max(self.render_ahead),
        };
    }

    /// Sets the least target: the receiver's render size (its largest block, in samples).
    /// Arrivals are stamped per block, so a block of spread is in the statistics anyway; this
    /// keeps the first packets, before any statistics, from stalling on it.
    ///
    /// When it falls (a long block that has passed), a target the old size held up falls with
    /// it, and the frames concealed while that block was rendered are not held against
    /// shrinking: playout sheds the delay the block added within seconds.
    pub fn set_render_ahead(&mut self, samples: u32) {
        let old = self.render_ahead;
        self.render_ahead = i64::from(samples.min(self.config.max_target_samples));
        if self.config.manual_target_samples.is_some() {
            return;
        }
        let wanted = self.path_target.max(self.render_ahead);
        if self.render_ahead < old && self.target > wanted {
            self.target = wanted;
            self.since_stall = u64::MAX;
            self.since_stall_saved = None;
            self.forgive_for = FORGIVE_SAMPLES;
            // The block's late stamps looked like spikes.
            self.spikes.clear();
        }
        self.target = self.target.max(self.render_ahead);
    }

    /// Forgets everything but the configuration and the render size, in place (no allocation).
    pub fn reset(&mut self) {
        let target = i64::from(
            self.config
                .manual_target_samples
                .unwrap_or(self.config.margin_samples),
        );
        self.held.fill(false);
        self.next_seq = None;
        self.newest_seq = 0;
        self.next_media = 0;
        self.delays_len = 0;
        self.delays_at = 0;
        self.since_quantile = 0;
        self.base = i64::MAX;
        self.target = target;
        self.quantile_target = target;
        self.path_target = target;
        self.stall_credit = 0;
        self.since_stall = u64::MAX;
        self.since_stall_saved = None;
        self.since_wait = u64::MAX;
        self.faster_run = 0;
        self.path_epoch = None;
        self.since_hint = None;
        self.forgive_for = 0;
        self.straggler_peak = 0.0;
        self.spikes.clear();
        self.last_error = 0;
        self.error_avg = 0.0;
        self.drift.reset();
        self.stats = AdaptiveStats::default();
        let ahead = self.render_ahead;
        self.render_ahead = 0;
        self.set_render_ahead(ahead as u32);
    }

    fn index(seq: u32) -> usize {
        seq as usize % CAPACITY
    }

    /// When the frame whose audio ends at `end` is due, on the receiver's clock.
    fn due(&self, end: u64) -> i64 {
        end as i64 + self.base + self.target
    }

    /// Stores a packet as long as the frames played so far that arrived at `arrival`
    /// (receiver samples).
    pub fn insert(&mut self, arrival: u64, packet: &PacketSlot) {
        self.insert_sized(arrival, packet, self.frame_samples);
    }

    /// Stores a packet of `samples` that arrived at `arrival`. Its delay counts from the end
    /// of its audio, so a sender that changes its frame length moves playout by the change
    /// (a longer frame cannot be heard before it is whole) and the path statistics hold.
    pub fn insert_sized(&mut self, arrival: u64, packet: &PacketSlot, samples: u64) {
        let samples = samples.max(1);
        let delay = arrival as i64 - (packet.media_time + samples) as i64;
        if self.path_epoch != Some(packet.path_epoch) {
            if self.path_epoch.is_some() {
                self.since_hint = Some(0);
            }
            self.path_epoch = Some(packet.path_epoch);
        }
        self.drift.observe(arrival, delay);
        self.record_delay(delay, arrival);
        if let Some(next) = self.next_seq {
            let ahead = seq_ahead(packet.seq, next);
            if ahead < 0 && packet.media_time < self.next_media {
                // Its moment passed. The delay statistics already hold it; one straggler of a
                // heavy tail must not move the target (bursts do, through the quantile).
                self.stats.late += 1;
                return;
            }
            // Far ahead, or numbered behind yet later in the stream: the sender's numbering
            // started over (it rejoined the room), so the old numbers mean nothing now.
            if ahead >= CAPACITY as i64 || ahead < 0 {
                self.reset_playout();
            }
        }
        let idx = Self::index(packet.seq);
        if self.held[idx] && self.slots[idx].seq == packet.seq {
            self.stats.duplicate += 1;
            return;
        }
        self.slots[idx].copy_from(packet);
        self.lens[idx] = samples;
        self.arrived[idx] = arrival;
        self.held[idx] = true;
        match self.next_seq {
            None => {
                self.next_seq = Some(packet.seq);
                self.next_media = packet.media_time;
                self.newest_seq = packet.seq;
            }
            Some(next) => {
                if seq_ahead(packet.seq, self.newest_seq) > 0 {
                    self.newest_seq = packet.seq;
                }
                // An earlier packet than the one we wait for (reordered before we started).
                if seq_ahead(packet.seq, next) < 0 {
                    self.next_seq = Some(packet.seq);
                    self.next_media = packet.media_time;
                }
            }
        }
    }

    /// After the receiver's clock jumped to `now` (the host paused): what fell due meanwhile
    /// is gone, playout goes on from what is due now, and the delay is where it was. Neither a
    /// loss nor a late packet: nobody could have heard them.
    pub fn skip_to(&mut self, now: u64) {
        let Some(mut seq) = self.next_seq else {
            return;
        };
        let frame = self.frame_samples;
        let mut media = self.next_media;
        for _ in 0..CAPACITY {
            if self.due(media + frame) + frame as i64 > now as i64
                || seq_ahead(seq, self.newest_seq) > 0
            {
                break;
            }
            let idx = Self::index(seq);
            if self.held[idx] && self.slots[idx].seq == seq {
                self.held[idx] = false;
                self.stats.dropped += 1;
                media = self.slots[idx].media_time;
            }
            media += frame;
            seq = seq.wrapping_add(1);
        }
        self.next_seq = Some(seq);
        self.next_media = media;
        self.stall_credit = 0;
        self.since_stall_saved = None;
    }

    fn reset_playout(&mut self) {
        self.held.fill(false);
        self.next_seq = None;
    }

    fn record_delay(&mut self, delay: i64, now: u64) {
        let floor = if self.faster_run == 0 {
            self.base
        } else {
            self.run_floor
        };
        if self.base != i64::MAX
            && self.delays_len >= KNOWN_PATH
            && delay.saturating_add(NEW_PATH_SAMPLES) < floor
        {
            if self.faster_run == 0 {
                self.run_floor = self.base;
            }
            self.faster_run += 1;
            self.since_faster = 0;
            if self.faster_run >= NEW_PATH_RUN {
                self.new_path();
            }
        } else if self.faster_run > 0 {
            // Stragglers of the old path arrive among the first of the new one.
            self.since_faster += 1;
            if self.since_faster > 4 * NEW_PATH_RUN {
                self.faster_run = 0;
            }
        }
        let w = self.config.window;
        self.delays[self.delays_at] = delay;
        self.arrivals[self.delays_at] = now;
        self.delays_at = (self.delays_at + 1) % w;
        self.delays_len = (self.delays_len + 1).min(w);
        if delay < self.base {
            self.rebase(delay);
        }
        self.note_spike(delay, now);
        if let Some(n) = self.since_hint.as_mut() {
            *n += 1;
            if *n >= HINT_SKIP + HINT_KEEP as u32 {
                self.since_hint = None;
                self.forget_all_but(HINT_KEEP, HINT_KEEP, i64::MAX);
                self.since_quantile = 16;
            }
        }
        self.since_quantile += 1;
        // A quantile over the window every 16 packets: ~40 ms at 2.5 ms frames.
        if self.since_quantile >= 16 || self.delays_len < 16 {
            self.since_quantile = 0;
            self.refresh_quantile(now);
        }
    }

    /// A packet later than the quantile and its headroom allow: part of a delay spike.
    fn note_spike(&mut self, delay: i64, now: u64) {
        let height = delay.saturating_sub(self.base) + self.config.margin_samples as i64;
        if self.delays_len >= START_AFTER_PACKETS && height > self.path_target + HEADROOM {
            self.spikes.note(height, now);
        }
    }

    /// Recomputes base (window minimum) and the quantile target: up at once, down past a dead band once the path has been clean a while.
    fn refresh_quantile(&mut self, now: u64) {
        let n = self.delays_len;
        if n == 0 {
            return;
        }
        // Each delay as it would be now: a drifting clock moves every delay by `ppm` per
        // sample, and a window of seconds would otherwise lag that by many samples.
        let rate = self.drift.ppm() * 1e-6;
        let mut base = i64::MAX;
        for ((d, &delay), &at) in self.scratch[..n]
            .iter_mut()
            .zip(&self.delays[..n])
            .zip(&self.arrivals)
        {
            *d = delay + (rate * now.saturating_sub(at) as f64).round() as i64;
            base = base.min(*d);
        }
        self.rebase(base);
        let s = &mut self.scratch[..n];
        let k = ((n as f32 - 1.0) * self.config.quantile.clamp(0.5, 1.0)).round() as usize;
        let (_, q, above) = s.select_nth_unstable(k.min(n - 1));
        let q = *q;
        // The stragglers beyond the quantile, as far as a frame above it: on a clean path
        // (a busy computer's rare late wake-up) that costs a millisecond or two and spares a
        // concealed frame each time; on a rough one the quantile governs.
        let most = above.iter().copied().max().unwrap_or(q);
        // Remembered beyond the window: a straggler every few seconds is the path's too.
        self.straggler_peak = (self.straggler_peak * STRAGGLER_MEMORY).max((most - q) as f64);
        let q = q + (self.straggler_peak as i64).min(HEADROOM);
        self.path_target = (q - self.base + self.config.margin_samples as i64)
            .min(self.config.max_target_samples as i64);
        let wanted = self.path_target.max(self.render_ahead);
        self.quantile_target = wanted;
        if self.config.manual_target_samples.is_some() {
            // Manual: the base still follows the path; the target stays where it was set.
            return;
        }
        if wanted > self.target {
            self.target = wanted;
            return;
        }
        // A spike that recurs is the path's: the target keeps covering it. Nothing falls while
        // a spike's packets are still coming in.
        let floor = self.spikes.floor(now, self.render_ahead);
        let lowest = wanted.max(floor.min(self.config.max_target_samples as i64));
        if lowest + i64::from(self.config.shrink_hysteresis_samples) < self.target
            && self.since_stall >= u64::from(self.config.settle_samples)
            && !self.spikes.under_way(now)
        {
            // Down at once: the stream's time-scaling takes the delay out inaudibly, a period
            // at a time, so a shorter path pays off within a second or two.
            self.target = lowest;
        }
    }

    /// After [`Decision::Idle`]: how much silence to play before asking again, so the first
    /// frame starts on its moment (1 sample to one frame).
    pub fn idle_samples(&self, now: u64) -> u64 {
        let frame = self.frame_samples;
        let Some(seq) = self.next_seq else {
            return frame;
        };
        let idx = Self::index(seq);
        if !(self.held[idx] && self.slots[idx].seq == seq) {
            return frame;
        }
        if self.delays_len < START_AFTER_PACKETS {
            return frame;
        }
        let due = self.due(self.slots[idx].media_time + self.lens[idx]);
        (due - now as i64).clamp(1, frame as i64) as u64
    }

    /// Decides the next frame, to be heard from receiver time `now`. `beyond`: the host renders
    /// so far ahead that this frame's packet cannot have arrived yet, so a missing one is
    /// concealed and passed over, not waited for (the delay stays).
    pub fn next(&mut self, now: u64, beyond: bool) -> Decision<'_> {
        let Some(seq) = self.next_seq else {
            return Decision::Idle;
        };
        let now = now as i64;
        let idx = Self::index(seq);
        let present = self.held[idx] && self.slots[idx].seq == seq;
        let frame = self.frame_samples as i64;
        if present {
            let media = self.slots[idx].media_time;
            let end = media + self.lens[idx];
            let due = self.due(end);
            let next_idx = Self::index(seq.wrapping_add(1));
            let next_here = self.held[next_idx] && self.slots[next_idx].seq == seq.wrapping_add(1);
            if self.stats.played == 0 {
                if now < due || self.delays_len < START_AFTER_PACKETS {
                    // Before the start: silence until the moment (see `idle_samples`), and
                    // until a few arrivals show the path (the first packet may be unusually
                    // fast).
                    return Decision::Idle;
                }
                if now > due && next_here {
                    // Its moment passed while we waited to start: start on the next one's
                    // moment instead, exactly.
                    self.held[idx] = false;
                    self.advance(seq, end);
                    return self.next(now as u64, beyond);
                }
            }
            if self.stall_credit > 0
                && std::mem::take(&mut self.forgive_for) == 0
                && now > due
                && !self.warming_up()
                && self.lens[idx] == self.frame_samples
                && self.config.manual_target_samples.is_none()
            {
                // It came late, after we had waited for it: the path needs that much more
                // delay. Keep it (the target moves to where the packet came, not to where
                // playout resumed a frame's wait later) rather than taking it out again only
                // to wait once more at the next late packet; the target falls
                // again once the path has been clean for the settle time. Kept up to
                // [`MAX_BUMP`]: a longer wait is a hiccup (the computer, a Wi-Fi scan), not
                // the path's, and is taken out again by splices. A wait for a longer frame
                // than the last is the sender's, not the path's.
                let late = (self.arrived[idx] as i64 - due).clamp(0, MAX_BUMP);
                self.target = (self.target + late).min(self.config.max_target_samples as i64);
            }
            let due = self.due(end);
            self.held[idx] = false;
            self.stats.played += 1;
            self.last_error = now - due;
            let alpha = (self.frame_samples as f64 / 12_000.0).min(1.0);
            self.error_avg += ((now - due) as f64 - self.error_avg) * alpha;
            self.since_stall = self.since_stall.saturating_add(self.frame_samples);
            self.since_wait = self.since_wait.saturating_add(self.frame_samples);
            self.forgive_for = self.forgive_for.saturating_sub(self.frame_samples);
            self.stall_credit = 0;
            self.advance(seq, end);
            return Decision::Play(&self.slots[idx]);
        }
        let due = self.due(self.next_media + self.frame_samples);
        if now < due + frame / 2 {
            // Not due yet and not here: wait quietly only if we never played; otherwise this
            // is a gap in a playing stream — conceal without moving on.
            return if self.stats.played == 0 {
                Decision::Idle
            } else if self.holding() {
                self.pass_over(seq)
            } else {
                self.stall()
            };
        }
        if beyond {
            self.stats.ahead += 1;
            self.advance(seq, self.next_media + self.frame_samples);
            return Decision::Lost;
        }
        if seq_ahead(self.newest_seq, seq) > 0 {
            self.stats.lost += 1;
            self.advance(seq, self.next_media + self.frame_samples);
            if self.stall_credit > 0 {
                // Already concealed while we waited for it: play on.
                self.stall_credit -= 1;
                if self.stall_credit == 0 {
                    // Every frame of waiting stood in for a lost packet: no delay was added,
                    // so nothing holds the delay up.
                    if let Some(saved) = self.since_stall_saved.take() {
                        self.since_stall = saved;
                    }
                }
                return self.next(now as u64, false);
            }
            Decision::Lost
        } else if self.holding() {
            self.pass_over(seq)
        } else {
            self.stall()
        }
    }

    /// While the delay holds: the due packet is not here, so it is concealed and playout moves
    /// on (it counts as lost; if it comes, it is late).
    fn pass_over(&mut self, seq: u32) -> Decision<'static> {
        self.stats.lost += 1;
        self.advance(seq, self.next_media + self.frame_samples);
        Decision::Lost
    }

    /// The first two seconds of playout, while the path is being learnt.
    fn warming_up(&self) -> bool {
        self.stats.played * self.frame_samples < WARMUP_SAMPLES
    }

    fn stall(&mut self) -> Decision<'static> {
        self.stats.stalled += 1;
        if self.stall_credit == 0 {
            self.since_stall_saved = Some(self.since_stall);
        }
        // While the first second plays the path is still being learnt (connection set-up
        // bursts): a stall then is not held against shrinking back.
        if !self.warming_up() && self.forgive_for == 0 {
            self.since_stall = 0;
        }
        self.stall_credit += 1;
        self.since_wait = 0;
        Decision::Stall
    }

    fn advance(&mut self, seq: u32, next_media: u64) {
        self.next_seq = Some(seq.wrapping_add(1));
        self.next_media = next_media;
    }

    /// Records the length of the frames being played (from the decoder).
    pub fn set_frame_samples(&mut self, samples: u64) {
        self.frame_samples = samples.max(1);
    }
}

#[path = "adaptive_path.rs"]
mod path;

#[cfg(test)]
#[path = "adaptive_tests.rs"]
mod tests;

const _: () = assert!(SHRINK_AT as usize >= crate::tsm::MIN_LAG);
