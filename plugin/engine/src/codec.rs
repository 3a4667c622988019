//! Opus settings and the send-side encoder. The engine always runs Opus at 48 kHz stereo;
//! mono sending is Opus's forced-mono mode, so switching never rebuilds (allocates) the encoder.

use opus::{Application, Bitrate, Channels, Encoder};

use crate::{EngineError, INTERNAL_RATE_HZ};

/// Opus frame length. Shorter frames cut latency and cost header bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameDuration {
    /// 2.5 ms, 120 samples: the lowest latency Opus offers.
    #[default]
    Ms2_5,
    /// 5 ms, 240 samples.
    Ms5,
    /// 10 ms, 480 samples.
    Ms10,
    /// 20 ms, 960 samples.
    Ms20,
}

impl FrameDuration {
    /// Samples per channel at 48 kHz.
    pub const fn samples(self) -> usize {
        match self {
            Self::Ms2_5 => 120,
            Self::Ms5 => 240,
            Self::Ms10 => 480,
            Self::Ms20 => 960,
        }
    }

    /// Length in milliseconds.
    pub fn millis(self) -> f32 {
        self.samples() as f32 * 1000.0 / INTERNAL_RATE_HZ as f32
    }
}

/// Lowest bitrate offered: below 48 kbit/s Opus's low-delay mode loses too much for music.
pub const MIN_BITRATE_BPS: u32 = 48_000;
/// Highest bitrate offered: above 256 kbit/s stereo Opus is transparent and only costs bandwidth.
pub const MAX_BITRATE_BPS: u32 = 256_000;

/// What the encoder should do; applied between frames without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSettings {
    /// Constant bitrate in bit/s, clamped to 48–256 kbit/s.
    pub bitrate_bps: u32,
    /// Frame length.
    pub frame: FrameDuration,
    /// Send one channel (the input's sum) instead of two.
    pub send_mono: bool,
    /// Opus complexity 0–10; 10 is best quality, 0 cheapest.
    pub complexity: u8,
}

impl Default for CodecSettings {
    fn default() -> Self {
        Self {
            bitrate_bps: 128_000,
            frame: FrameDuration::Ms2_5,
            send_mono: false,
            complexity: 10,
        }
    }
}

/// The send-side Opus encoder (RESTRICTED_LOWDELAY, CBR, 48 kHz stereo).
///
/// # Thread
/// Built in `activate()`; [`FrameEncoder::apply`] and [`FrameEncoder::encode`] run on the audio
/// thread and do not allocate.
pub struct FrameEncoder {
    encoder: Encoder,
    applied: Option<CodecSettings>,
}

impl FrameEncoder {
    /// A low-delay encoder with `settings` applied.
    pub fn new(settings: CodecSettings) -> Result<Self, EngineError> {
        let mut encoder = Encoder::new(INTERNAL_RATE_HZ, Channels::Stereo, Application::LowDelay)
            .map_err(|e| EngineError::Codec(e.to_string()))?;
        // CBR: a steady packet size keeps the network queues and the bitrate display honest.
        encoder
            .set_vbr(false)
            .map_err(|e| EngineError::Codec(e.to_string()))?;
        let mut this = Self {
            encoder,
            applied: None,
        };
        this.apply(settings);
        Ok(this)
    }

    /// Applies whatever changed since the last call. Opus CTLs only set fields.
    pub fn apply(&mut self, s: CodecSettings) {
        let prev = self.applied;
        if prev.map(|p| p.bitrate_bps) != Some(s.bitrate_bps) {
            let bps = s.bitrate_bps.clamp(MIN_BITRATE_BPS, MAX_BITRATE_BPS);
            let _ = self.encoder.set_bitrate(Bitrate::Bits(bps as i32));
        }
        if prev.map(|p| p.complexity) != Some(s.complexity) {
            let _ = self.encoder.set_complexity(i32::from(s.complexity.min(10)));
        }
        if prev.map(|p| p.send_mono) != Some(s.send_mono) {
            let forced = s.send_mono.then_some(Channels::Mono);
            let _ = self.encoder.set_force_channels(forced);
        }
        self.applied = Some(s);
    }

    /// Encodes one frame of interleaved stereo samples into `out`; returns the payload length.
    pub fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, opus::Error> {
        self.encoder.encode_float(pcm, out)
    }

    /// Clears the encoder's history so a new stream starts clean.
    pub fn reset(&mut self) {
        let _ = self.encoder.reset_state();
    }

    /// Samples of look-ahead the encoder adds to the path (2.5 ms in low-delay mode).
    pub fn lookahead_samples(&mut self) -> usize {
        self.encoder
            .get_lookahead()
            .map_or(0, |l| l.max(0) as usize)
    }
}
