//! One remote stream on the receive side: jitter buffer → Opus decoder (or concealment) →
//! a small FIFO of decoded 48 kHz stereo that the mixer pulls from.

use opus::{Channels, Decoder};

use crate::fifo::SampleFifo;
use crate::jitter::adaptive::{AdaptiveConfig, Decision, JitterBuffer};
use crate::packet::{PacketSlot, StreamId};
use crate::resample::DriftStretcher;
use crate::tsm;
use std::sync::atomic::Ordering::Relaxed;

use crate::stats::{EngineStats, StreamStats};
use crate::{EngineError, INTERNAL_RATE_HZ};

/// Longest Opus packet: 120 ms (RFC 6716 §3.2.5), 5760 samples at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5760;

/// Splice searches (one per frame) after which a change of delay is made wherever the waveform
/// is likest: half a second at 2.5 ms frames.
const SPLICE_PATIENCE: u32 = 200;

/// A stream that sends nothing for 2 s has left; its slot is freed for another.
const IDLE_FRAMES_BEFORE_FREE: u64 = 2 * INTERNAL_RATE_HZ as u64;

/// How much later than the fastest path a stream plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetDepth {
    /// Learned from arrival statistics (the adaptive buffer).
    Auto,
    /// A fixed delay above the fastest path, in 48 kHz samples (manual mode).
    Samples(usize),
}

/// Receive state for one remote stream.
///
/// # Thread
/// Owned by the audio thread; allocated in `activate()`, never afterwards.
pub struct RemoteStream {
    id: Option<StreamId>,
    /// Index of this stream's counters in [`EngineStats::streams`].
    slot: usize,
    jitter: JitterBuffer,
    decoder: Decoder,
    decoded: SampleFifo,
    last_packet_samples: usize,
    target: TargetDepth,
    idle_frames: u64,
    /// 48 kHz samples this stream has rendered since it was claimed: the receiver clock its
    /// jitter buffer schedules against. Arrivals are stamped with it at block start.
    clock: u64,
    /// Packets dropped to shrink the delay, as last published.
    dropped_seen: u64,
    /// The mix gain the last block ended on; the next block ramps from it, so a fader move
    /// or a mute never clicks.
    gain_now: f32,
    /// The host's largest block at 48 kHz.
    block_48k: usize,
    /// Renders since the buffer asked for a change of delay that no splice has made yet: the
    /// longer it waits for a place where the waveform repeats, the less alike it needs one.
    splice_tries: u32,
    /// The stream clock before which no splice is looked for (one search per frame at most).
    next_splice_at: u64,
    /// Clock-drift correction from the sender's clock (`decoded`) to ours: each render is
    /// stretched into `stretched`, then mixed.
    drift: DriftStretcher,
    stretched: Vec<f32>,
    /// The host paused: skip what fell due meanwhile before the next render.
    skip_pending: bool,
}

impl RemoteStream {
    /// A free stream slot whose renders never ask for more than `max_render_frames`.
    pub fn new(max_render_frames: usize, slot: usize) -> Result<Self, EngineError> {
        Ok(Self {
            id: None,
            slot,
            jitter: JitterBuffer::new(AdaptiveConfig::default()),
            decoder: Decoder::new(INTERNAL_RATE_HZ, Channels::Stereo)
                .map_err(|e| EngineError::Codec(e.to_string()))?,
            // Room for a full render plus the largest packet decoded on top of a nearly full one.
            decoded: SampleFifo::with_capacity(2, max_render_frames + 2 * MAX_PACKET_SAMPLES),
            last_packet_samples: 120,
            target: TargetDepth::Auto,
            idle_frames: 0,
            clock: 0,
            dropped_seen: 0,
            gain_now: 1.0,
            block_48k: 0,
            splice_tries: 0,
            next_splice_at: 0,
            drift: DriftStretcher::default(),
            stretched: vec![0.0; 2 * max_render_frames],
            skip_pending: false,
        })
    }

    /// The stream this slot serves, if any.
    pub fn id(&self) -> Option<StreamId> {
        self.id
    }

    /// Claims the slot for `id`, clearing anything left from a previous stream.
    pub fn claim(&mut self, id: StreamId, stats: &EngineStats) {
        self.reset(stats);
        self.id = Some(id);
        // Starts at its member's level, not at unity: a muted member's first block is silent.
        let gain = stats.stream_gain(id);
        self.gain_now = if gain.is_finite() {
            gain.clamp(0.0, 4.0)
        } else {
            1.0
        };
        if let Some(s) = stats.streams.get(self.slot) {
            s.mix_gain.store(gain, Relaxed);
            s.stream.store(u32::from(id.0), Relaxed);
        }
    }

    /// Frees the slot.
    pub fn reset(&mut self, stats: &EngineStats) {
        if let Some(s) = stats.streams.get(self.slot) {
            s.stream.store(StreamStats::FREE, Relaxed);
            s.mix_gain.store(1.0, Relaxed);
            s.peak.store(0.0, Relaxed);
            for c in [
                &s.frames_decoded,
                &s.frames_concealed,
                &s.packets_late,
                &s.packets_lost,
                &s.packets_dropped,
            ] {
                c.store(0, Relaxed);
            }
            s.drift_ppm.store(0.0, Relaxed);
        }
        self.id = None;
        self.jitter.reset();
        self.decoded.clear();
        self.drift.reset();
        let _ = self.decoder.reset_state();
        self.idle_frames = 0;
        self.clock = 0;
        self.dropped_seen = 0;
        self.gain_now = 1.0;
        self.splice_tries = 0;
        self.next_splice_at = 0;
        self.skip_pending = false;
    }

    /// Holds the playout delay where it is, or lets it adapt again.
    pub fn set_hold(&mut self, on: bool) {
        self.jitter.set_hold(on);
    }

    /// Sets the playout depth.
    pub fn set_target(&mut self, target: TargetDepth) {
        if target != self.target {
            self.target = target;
            self.jitter.set_manual_target(match target {
                TargetDepth::Auto => None,
                TargetDepth::Samples(n) => Some(n.min(u32::MAX as usize) as u32),
            });
        }
    }

    /// Tells the jitter buffer the largest block the host renders, in 48 kHz samples.
    pub fn set_block(&mut self, block_48k: usize) {
        if block_48k != self.block_48k {
            self.block_48k = block_48k;
            self.jitter
                .set_render_ahead(block_48k.min(u32::MAX as usize) as u32);
        }
    }

    /// Playout delay above the fastest path, in 48 kHz samples.
    pub fn depth_samples(&self) -> u64 {
        self.jitter.target_samples()
    }

    /// Queues a packet for playout, stamped with this block's start on the stream's clock, or
    /// `back` samples before it if it came while the host was not calling.
    pub fn insert(&mut self, packet: &PacketSlot, back: u64, stats: &EngineStats) {
        self.idle_frames = 0;
        let before = self.jitter.stats();
        // The packet's own length (its TOC byte): the frame size can change mid-stream.
        let samples = opus::packet::get_nb_samples(packet.payload(), 48_000)
            .ok()
            .filter(|n| (1..=MAX_PACKET_SAMPLES).contains(n))
            .unwrap_or(self.last_packet_samples);
        self.jitter
            .insert_sized(self.clock.saturating_sub(back), packet, samples as u64);
        let after = self.jitter.stats();
        if after.late > before.late {
            EngineStats::add(&stats.packets_late, 1);
            Self::count(self.slot, stats, |s| &s.packets_late);
        }
        if after.duplicate > before.duplicate {
            EngineStats::add(&stats.packets_duplicate, 1);
        }
    }

    /// The host paused for `samples` (48 kHz): the stream's clock moves on by as much, and
    /// playout skips what fell due meanwhile.
    pub fn host_paused(&mut self, samples: u64) {
        self.clock += samples;
        // Skipped at the next render, once what arrived meanwhile is in the buffer.
        self.skip_pending = true;
    }

    /// Adds `frames` frames of this stream, times `gain`, into the interleaved stereo `mix`.
    /// Returns false once the stream has been idle long enough to free its slot.
    /// Packets for audio more than `horizon` samples into this render cannot have arrived (the
    /// host renders far ahead, for once): missing ones there are concealed without waiting.
    pub fn render_into(
        &mut self,
        mix: &mut [f32],
        gain: f32,
        horizon: usize,
        stats: &EngineStats,
    ) -> bool {
        let frames = mix.len() / 2;
        let mut concealed = 0u64;
        if std::mem::take(&mut self.skip_pending) {
            self.jitter
                .skip_to(self.clock + self.decoded.frames() as u64);
        }
        // Decoded audio runs on the sender's clock; the drift converter stretches it onto ours
        // by the measured rate difference, so the buffer neither drains nor fills.
        self.drift.set_ratio(self.jitter.stretch());
        let frames = frames.min(self.stretched.len() / 2);
        let need = self.drift.input_needed(frames);
        concealed += self.decode_until(need, horizon, stats);
        if self.rescale(stats) {
            concealed += self.decode_until(need, horizon, stats);
        }
        let out = &mut self.stretched[..2 * frames];
        let used = self.drift.process(self.decoded.as_slice(), out);
        self.decoded.consume(used);
        let dropped = self.jitter.stats().dropped;
        if let Some(s) = stats.streams.get(self.slot) {
            s.frames_concealed.fetch_add(concealed, Relaxed);
            s.depth_samples.store(
                self.depth_samples().min(u64::from(u32::MAX)) as u32,
                Relaxed,
            );
            let j = self.jitter.stats();
            s.packets_lost.store(j.lost, Relaxed);
            s.packets_dropped.store(j.dropped, Relaxed);
            s.drift_ppm.store(self.jitter.drift_ppm() as f32, Relaxed);
        }
        EngineStats::add(&stats.packets_overrun, dropped - self.dropped_seen);
        self.dropped_seen = dropped;
        let gain = gain
            * stats
                .streams
                .get(self.slot)
                .map_or(1.0, |s| s.mix_gain.load(Relaxed));
        let gain = if gain.is_finite() {
            gain.clamp(0.0, 4.0)
        } else {
            1.0
        };
        let (g0, step) = (self.gain_now, (gain - self.gain_now) / frames.max(1) as f32);
        self.gain_now = gain;
        let mut peak = 0.0f32;
        for (i, (m, s)) in mix
            .chunks_exact_mut(2)
            .zip(self.stretched[..2 * frames].chunks_exact(2))
            .enumerate()
        {
            let g = g0 + step * (i + 1) as f32;
            peak = peak.max(s[0].abs()).max(s[1].abs());
            m[0] += s[0] * g;
            m[1] += s[1] * g;
        }
        if let Some(s) = stats.streams.get(self.slot) {
            s.peak.store(peak, Relaxed);
        }
        self.clock += frames as u64;
        self.idle_frames += frames as u64;
        self.idle_frames < IDLE_FRAMES_BEFORE_FREE
    }

    /// Moves the delay towards the buffer's schedule by time-scaling decoded audio: reads ahead
    /// as far as packets are already here (never waiting for one), then takes a stretch out or
    /// puts one in where the waveform repeats. Returns true if it took audio out.
    fn rescale(&mut self, stats: &EngineStats) -> bool {
        let Some(r) = self.jitter.rescale() else {
            self.splice_tries = 0;
            return false;
        };
        if self.clock < self.next_splice_at {
            return false;
        }
        self.next_splice_at = self.clock + self.last_packet_samples as u64;
        let lookahead = 2 * r.max.clamp(tsm::MIN_LAG, tsm::MAX_LAG);
        while self.decoded.frames() < lookahead && self.jitter.ready() {
            let have = self.decoded.frames();
            self.decode_until(have + 1, usize::MAX, stats);
            if self.decoded.frames() == have {
                break;
            }
        }
        let Some(splice) = tsm::find(self.decoded.as_slice(), 2, tsm::MIN_LAG, r.max, r.want)
        else {
            return false;
        };
        // Alike enough: at once where the waveform repeats well; far off the schedule, where it
        // repeats fairly; and the bar falls the longer it waits (a dense mix may never repeat).
        let bar = if r.urgent { 0.5 } else { tsm::GOOD } - 0.005 * self.splice_tries as f32;
        if !(splice.acceptable(bar) || self.splice_tries >= SPLICE_PATIENCE) {
            self.splice_tries += 1;
            return false;
        }
        self.splice_tries = 0;
        let lag = splice.lag as i64;
        if r.shrink && tsm::shrink(&mut self.decoded, splice) {
            self.jitter.rescaled(lag);
            EngineStats::add(&stats.delay_splices, 1);
            return true;
        }
        if !r.shrink && tsm::grow(&mut self.decoded, splice) {
            self.jitter.rescaled(-lag);
            EngineStats::add(&stats.delay_splices, 1);
        }
        false
    }

    /// Decodes (or conceals, or waits in silence) until `decoded` holds `target` frames.
    /// Returns the frames concealed.
    fn decode_until(&mut self, target: usize, horizon: usize, stats: &EngineStats) -> u64 {
        let mut concealed = 0u64;
        while self.decoded.frames() < target {
            let want = target - self.decoded.frames();
            // The first sample of what is decoded now is heard after what is queued before it.
            let now = self.clock + self.decoded.frames() as u64;
            let beyond = self.decoded.frames() >= horizon;
            let out = self.decoded.spare_mut(MAX_PACKET_SAMPLES);
            let made = match self.jitter.next(now, beyond) {
                Decision::Play(p) => match self.decoder.decode_float(p.payload(), out, false) {
                    Ok(n) if n > 0 => {
                        EngineStats::add(&stats.frames_decoded, 1);
                        Self::count(self.slot, stats, |s| &s.frames_decoded);
                        if n != self.last_packet_samples {
                            self.last_packet_samples = n;
                            self.jitter.set_frame_samples(n as u64);
                        }
                        n
                    }
                    _ => {
                        EngineStats::add(&stats.decode_errors, 1);
                        concealed += 1;
                        Self::conceal(&mut self.decoder, self.last_packet_samples, out, stats)
                    }
                },
                Decision::Lost | Decision::Stall => {
                    concealed += 1;
                    Self::conceal(&mut self.decoder, self.last_packet_samples, out, stats)
                }
                Decision::Idle => {
                    // Not started: silence up to the first packet's moment.
                    let until = self.jitter.idle_samples(now) as usize;
                    let n = want.min(until).min(out.len() / 2);
                    out[..2 * n].fill(0.0);
                    n
                }
            };
            if made == 0 {
                // Unreachable with the FIFO sized in `new`; never spin on the audio thread.
                break;
            }
            self.decoded.commit(made);
        }
        concealed
    }

    fn count(
        slot: usize,
        stats: &EngineStats,
        field: impl Fn(&StreamStats) -> &std::sync::atomic::AtomicU64,
    ) {
        if let Some(s) = stats.streams.get(slot) {
            field(s).fetch_add(1, Relaxed);
        }
    }

    /// Opus packet-loss concealment for one frame of `frame` samples into `out`.
    fn conceal(decoder: &mut Decoder, frame: usize, out: &mut [f32], stats: &EngineStats) -> usize {
        EngineStats::add(&stats.frames_concealed, 1);
        let n = frame.min(MAX_PACKET_SAMPLES);
        match decoder.decode_float(&[], &mut out[..2 * n], false) {
            Ok(got) if got > 0 => got,
            _ => {
                out[..2 * n].fill(0.0);
                n
            }
        }
    }
}
