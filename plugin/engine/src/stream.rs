//! One remote stream on the receive side: jitter buffer → Opus decoder (or concealment) →
//! a small FIFO of decoded 48 kHz stereo that the mixer pulls from.

use opus::{Channels, Decoder};

use crate::fifo::SampleFifo;
use crate::jitter::{Arrival, FixedJitterBuffer, Playout};
use crate::packet::{PacketSlot, StreamId};
use std::sync::atomic::Ordering::Relaxed;

use crate::stats::{EngineStats, StreamStats};
use crate::{EngineError, INTERNAL_RATE_HZ};

/// Longest Opus packet: 120 ms (RFC 6716 §3.2.5), 5760 samples at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5760;

/// A stream that sends nothing for 2 s has left; its slot is freed for another.
const IDLE_FRAMES_BEFORE_FREE: u64 = 2 * INTERNAL_RATE_HZ as u64;

/// How much audio a stream holds ahead of playout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetDepth {
    /// One packet more than a host block of this many 48 kHz samples spans: the least that
    /// survives the block-versus-frame phase without concealing.
    Auto {
        /// The host's largest block, in 48 kHz samples.
        block_48k: usize,
    },
    /// A fixed amount of audio ahead, in 48 kHz samples.
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
    jitter: FixedJitterBuffer,
    decoder: Decoder,
    decoded: SampleFifo,
    last_packet_samples: usize,
    target: TargetDepth,
    idle_frames: u64,
}

impl RemoteStream {
    /// A free stream slot whose renders never ask for more than `max_render_frames`.
    pub fn new(max_render_frames: usize, slot: usize) -> Result<Self, EngineError> {
        Ok(Self {
            id: None,
            slot,
            jitter: FixedJitterBuffer::new(1),
            decoder: Decoder::new(INTERNAL_RATE_HZ, Channels::Stereo)
                .map_err(|e| EngineError::Codec(e.to_string()))?,
            // Room for a full render plus the largest packet decoded on top of a nearly full one.
            decoded: SampleFifo::with_capacity(2, max_render_frames + 2 * MAX_PACKET_SAMPLES),
            last_packet_samples: 120,
            target: TargetDepth::Samples(0),
            idle_frames: 0,
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
        if let Some(s) = stats.streams.get(self.slot) {
            s.stream.store(u32::from(id.0), Relaxed);
        }
    }

    /// Frees the slot.
    pub fn reset(&mut self, stats: &EngineStats) {
        if let Some(s) = stats.streams.get(self.slot) {
            s.stream.store(StreamStats::FREE, Relaxed);
            for c in [&s.frames_decoded, &s.frames_concealed, &s.packets_late] {
                c.store(0, Relaxed);
            }
        }
        self.id = None;
        self.jitter.reset();
        self.decoded.clear();
        let _ = self.decoder.reset_state();
        self.idle_frames = 0;
    }

    /// Sets the playout depth.
    pub fn set_target(&mut self, target: TargetDepth) {
        if target != self.target {
            self.target = target;
            self.update_depth();
        }
    }

    fn update_depth(&mut self) {
        let frame = self.last_packet_samples.max(1);
        let packets = match self.target {
            TargetDepth::Auto { block_48k } => block_48k.div_ceil(frame) + 1,
            TargetDepth::Samples(n) => n.div_ceil(frame),
        };
        self.jitter.set_depth(packets.max(1));
    }

    /// Jitter-buffer depth in packets.
    pub fn depth_packets(&self) -> usize {
        self.jitter.depth()
    }

    /// Queues a packet for playout.
    pub fn insert(&mut self, packet: &PacketSlot, stats: &EngineStats) {
        self.idle_frames = 0;
        match self.jitter.insert(packet) {
            Arrival::Queued | Arrival::Restarted => {}
            Arrival::Late => {
                EngineStats::add(&stats.packets_late, 1);
                self.count(stats, |s| &s.packets_late);
            }
            Arrival::Duplicate => EngineStats::add(&stats.packets_duplicate, 1),
        }
    }

    /// Adds `frames` frames of this stream, times `gain`, into the interleaved stereo `mix`.
    /// Returns false once the stream has been idle long enough to free its slot.
    pub fn render_into(&mut self, mix: &mut [f32], gain: f32, stats: &EngineStats) -> bool {
        let frames = mix.len() / 2;
        let overrun_before = self.jitter.overrun_drops();
        let mut concealed = 0u64;
        while self.decoded.frames() < frames {
            let want = frames - self.decoded.frames();
            let out = self.decoded.spare_mut(MAX_PACKET_SAMPLES);
            let made = match self.jitter.pop() {
                Playout::Packet(p) => match self.decoder.decode_float(p.payload(), out, false) {
                    Ok(n) if n > 0 => {
                        EngineStats::add(&stats.frames_decoded, 1);
                        self.count(stats, |s| &s.frames_decoded);
                        if n != self.last_packet_samples {
                            self.last_packet_samples = n;
                            self.update_depth();
                        }
                        n
                    }
                    _ => {
                        EngineStats::add(&stats.decode_errors, 1);
                        concealed += 1;
                        Self::conceal(&mut self.decoder, self.last_packet_samples, out, stats)
                    }
                },
                Playout::Missing => {
                    concealed += 1;
                    Self::conceal(&mut self.decoder, self.last_packet_samples, out, stats)
                }
                Playout::Silent => {
                    let n = want.min(out.len() / 2);
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
        if let Some(s) = stats.streams.get(self.slot) {
            s.frames_concealed.fetch_add(concealed, Relaxed);
            s.depth_packets.store(self.jitter.depth() as u32, Relaxed);
        }
        EngineStats::add(
            &stats.packets_overrun,
            self.jitter.overrun_drops() - overrun_before,
        );
        let held = &self.decoded.as_slice()[..2 * frames.min(self.decoded.frames())];
        for (m, s) in mix.iter_mut().zip(held) {
            *m += s * gain;
        }
        self.decoded.consume(frames);
        self.idle_frames += frames as u64;
        self.idle_frames < IDLE_FRAMES_BEFORE_FREE
    }

    fn count(
        &self,
        stats: &EngineStats,
        field: impl Fn(&StreamStats) -> &std::sync::atomic::AtomicU64,
    ) {
        if let Some(s) = stats.streams.get(self.slot) {
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
