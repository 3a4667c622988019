//! Counters and meters the audio thread publishes for the GUI, the CLI and tests.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use atomic_float::AtomicF32;

/// Counters of one remote stream slot.
///
/// # Thread
/// Written by the audio thread; read from any thread.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// The stream in this slot, or [`StreamStats::FREE`].
    pub stream: AtomicU32,
    /// Frames decoded from real packets.
    pub frames_decoded: AtomicU64,
    /// Frames concealed.
    pub frames_concealed: AtomicU64,
    /// Packets that arrived after their playout moment.
    pub packets_late: AtomicU64,
    /// Jitter-buffer playout delay above the fastest path, in 48 kHz samples.
    pub depth_samples: AtomicU32,
    /// Packets that never came (concealed once newer ones had arrived).
    pub packets_lost: AtomicU64,
    /// Packets skipped (blended away) to bring the delay down.
    pub packets_dropped: AtomicU64,
    /// The sender's clock against ours, ppm (positive: theirs is slower).
    pub drift_ppm: AtomicF32,
    /// Peak absolute sample of the stream's last block, before its mix gain.
    pub peak: AtomicF32,
    /// Written by the control thread: this stream's linear gain in our mix (0 mutes it). Read
    /// once per block; a slot that changes hands starts again at unity.
    pub mix_gain: AtomicF32,
}

impl StreamStats {
    /// Marks a slot with no stream.
    pub const FREE: u32 = u32::MAX;
}

/// A copy of one stream's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamSnapshot {
    /// The stream.
    pub stream: crate::StreamId,
    /// Frames decoded from real packets.
    pub frames_decoded: u64,
    /// Frames concealed.
    pub frames_concealed: u64,
    /// Late packets.
    pub packets_late: u64,
    /// Jitter-buffer playout delay above the fastest path, in 48 kHz samples.
    pub depth_samples: u32,
    /// Packets that never came.
    pub packets_lost: u64,
    /// Packets skipped to bring the delay down.
    pub packets_dropped: u64,
    /// The sender's clock against ours, ppm.
    pub drift_ppm: f32,
    /// Peak of the last block.
    pub peak: f32,
}

/// Engine counters, written by the audio thread with relaxed atomics (no ordering is implied
/// between fields; each is individually exact).
///
/// # Thread
/// Written by the audio thread; read from any thread.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Per stream slot (remote streams, then the loopback stream).
    pub streams: Vec<StreamStats>,
    /// Written by the network and control threads: the mix gain of each stream id below
    /// [`EngineStats::GAIN_IDS`], before and after it has a slot, so a stream's first block
    /// already plays at its member's level (a muted member is never heard, even for a block).
    pub stream_gains: Vec<AtomicF32>,
    /// Written by the control thread: the output each stream id below
    /// [`EngineStats::GAIN_IDS`] plays on (0: the main mix; `k`: auxiliary bus `k`).
    pub stream_routes: Vec<AtomicU8>,
    /// Frames encoded and handed to the network ring.
    pub packets_sent: AtomicU64,
    /// Encoded frames dropped because the network side had not drained its ring.
    pub send_ring_full: AtomicU64,
    /// Packets taken from the network ring (including loopback's own packets).
    pub packets_received: AtomicU64,
    /// Packets that arrived after their playout moment.
    pub packets_late: AtomicU64,
    /// Packets received twice.
    pub packets_duplicate: AtomicU64,
    /// Packets passed over after the host paused (their moment had gone).
    pub packets_overrun: AtomicU64,
    /// Stretches of decoded audio taken out or put in to move the playout delay.
    pub delay_splices: AtomicU64,
    /// Packets from a new stream when every stream slot was taken.
    pub stream_table_full: AtomicU64,
    /// Frames decoded from real packets.
    pub frames_decoded: AtomicU64,
    /// Frames concealed by Opus packet-loss concealment.
    pub frames_concealed: AtomicU64,
    /// Payloads Opus refused to decode (concealed instead).
    pub decode_errors: AtomicU64,
    /// Frames Opus failed to encode (not sent).
    pub encode_errors: AtomicU64,
    /// Non-finite input samples replaced by silence.
    pub samples_sanitised: AtomicU64,
    /// Pauses in the host's calls (an xrun, a render in between) skipped over.
    pub host_pauses: AtomicU64,
    /// Remote streams currently playing or buffering.
    pub streams_active: AtomicU32,
    /// Jitter-buffer delay of the most recently rendered stream, in 48 kHz samples.
    pub jitter_depth_samples: AtomicU32,
    /// Peak absolute input sample of the last block.
    pub input_peak: AtomicF32,
    /// Peak absolute output sample of the last block.
    pub output_peak: AtomicF32,
}

impl EngineStats {
    /// Counters with `slots` per-stream slots, all free.
    pub fn with_stream_slots(slots: usize) -> Self {
        let streams = (0..slots)
            .map(|_| StreamStats {
                stream: AtomicU32::new(StreamStats::FREE),
                mix_gain: AtomicF32::new(1.0),
                ..StreamStats::default()
            })
            .collect();
        Self {
            streams,
            stream_gains: (0..Self::GAIN_IDS).map(|_| AtomicF32::new(1.0)).collect(),
            stream_routes: (0..Self::GAIN_IDS).map(|_| AtomicU8::new(0)).collect(),
            ..Self::default()
        }
    }

    /// Stream ids with a gain of their own; higher ones start at unity.
    pub const GAIN_IDS: usize = 1024;

    /// Sets the mix gain stream `id` starts at (and the network side's later updates).
    pub fn set_stream_gain(&self, id: crate::StreamId, gain: f32) {
        if let Some(g) = self.stream_gains.get(usize::from(id.0)) {
            g.store(gain, Relaxed);
        }
    }

    /// The gain stream `id` starts at.
    pub fn stream_gain(&self, id: crate::StreamId) -> f32 {
        self.stream_gains
            .get(usize::from(id.0))
            .map_or(1.0, |g| g.load(Relaxed))
    }

    /// Routes stream `id` to output `bus` (0: the main mix).
    pub fn set_stream_route(&self, id: crate::StreamId, bus: u8) {
        if let Some(r) = self.stream_routes.get(usize::from(id.0)) {
            r.store(bus, Relaxed);
        }
    }

    /// The output stream `id` plays on (0: the main mix).
    pub fn stream_route(&self, id: crate::StreamId) -> u8 {
        self.stream_routes
            .get(usize::from(id.0))
            .map_or(0, |r| r.load(Relaxed))
    }

    /// Every stream slot in use.
    pub fn stream_snapshots(&self) -> Vec<StreamSnapshot> {
        self.streams
            .iter()
            .filter_map(|s| {
                let id = s.stream.load(Relaxed);
                (id != StreamStats::FREE).then(|| StreamSnapshot {
                    stream: crate::StreamId(id as u16),
                    frames_decoded: s.frames_decoded.load(Relaxed),
                    frames_concealed: s.frames_concealed.load(Relaxed),
                    packets_late: s.packets_late.load(Relaxed),
                    depth_samples: s.depth_samples.load(Relaxed),
                    packets_lost: s.packets_lost.load(Relaxed),
                    packets_dropped: s.packets_dropped.load(Relaxed),
                    drift_ppm: s.drift_ppm.load(Relaxed),
                    peak: s.peak.load(Relaxed),
                })
            })
            .collect()
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// A plain copy of every counter, for printing.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            packets_sent: self.packets_sent.load(Relaxed),
            send_ring_full: self.send_ring_full.load(Relaxed),
            packets_received: self.packets_received.load(Relaxed),
            packets_late: self.packets_late.load(Relaxed),
            packets_duplicate: self.packets_duplicate.load(Relaxed),
            packets_overrun: self.packets_overrun.load(Relaxed),
            delay_splices: self.delay_splices.load(Relaxed),
            stream_table_full: self.stream_table_full.load(Relaxed),
            frames_decoded: self.frames_decoded.load(Relaxed),
            frames_concealed: self.frames_concealed.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            samples_sanitised: self.samples_sanitised.load(Relaxed),
            host_pauses: self.host_pauses.load(Relaxed),
            streams_active: self.streams_active.load(Relaxed),
            jitter_depth_samples: self.jitter_depth_samples.load(Relaxed),
        }
    }
}

/// A copy of [`EngineStats`] at one moment; fields as documented there.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub packets_sent: u64,
    pub send_ring_full: u64,
    pub packets_received: u64,
    pub packets_late: u64,
    pub packets_duplicate: u64,
    pub packets_overrun: u64,
    pub delay_splices: u64,
    pub stream_table_full: u64,
    pub frames_decoded: u64,
    pub frames_concealed: u64,
    pub decode_errors: u64,
    pub samples_sanitised: u64,
    pub host_pauses: u64,
    pub streams_active: u32,
    pub jitter_depth_samples: u32,
}
