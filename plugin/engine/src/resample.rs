//! Streaming sample-rate conversion between the host's rate and the engine's 48 kHz, over
//! rubato's asynchronous sinc resampler with all buffers allocated up front.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::EngineError;

/// Host frames per conversion chunk: 32 frames is under 0.75 ms at 44.1 kHz, small enough to add
/// little latency, large enough that rubato's per-call overhead stays negligible.
pub const CHUNK_FRAMES: usize = 32;

/// Which side of the conversion has a fixed number of frames per chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedSide {
    /// Every call consumes exactly [`CHUNK_FRAMES`] input frames (the send path: host → 48 kHz).
    Input,
    /// Every call produces exactly [`CHUNK_FRAMES`] output frames (the playout path: 48 kHz → host).
    Output,
}

/// A rubato resampler over interleaved buffers.
///
/// # Thread
/// Built in `activate()`; [`RateConverter::process`] runs on the audio thread and never allocates.
pub struct RateConverter {
    resampler: Async<f32>,
    channels: usize,
}

impl RateConverter {
    /// Converts `from_hz` to `to_hz` for `channels` interleaved channels.
    pub fn new(
        from_hz: u32,
        to_hz: u32,
        side: FixedSide,
        channels: usize,
    ) -> Result<Self, EngineError> {
        // A 64-tap sinc keeps the converter's delay near 32 samples (< 1 ms) with aliasing far
        // below Opus's own noise floor at the bitrates we use.
        let params = SincInterpolationParameters {
            sinc_len: 64,
            f_cutoff: None,
            oversampling_factor: 128,
            interpolation: SincInterpolationType::Cubic,
            window: WindowFunction::BlackmanHarris2,
        };
        let fixed = match side {
            FixedSide::Input => FixedAsync::Input,
            FixedSide::Output => FixedAsync::Output,
        };
        let ratio = f64::from(to_hz) / f64::from(from_hz);
        // Headroom of 1.1 leaves room for clock-drift correction without rebuilding.
        let resampler = Async::new_sinc(ratio, 1.1, &params, CHUNK_FRAMES, channels, fixed)
            .map_err(|e| EngineError::Resampler(e.to_string()))?;
        Ok(Self {
            resampler,
            channels,
        })
    }

    /// Input frames the next [`Self::process`] call consumes.
    pub fn input_frames_next(&self) -> usize {
        self.resampler.input_frames_next()
    }

    /// Most output frames one [`Self::process`] call can produce.
    pub fn output_frames_max(&self) -> usize {
        self.resampler.output_frames_max()
    }

    /// Most input frames one [`Self::process`] call can consume.
    pub fn input_frames_max(&self) -> usize {
        self.resampler.input_frames_max()
    }

    /// Converts one chunk. `input` must hold at least [`Self::input_frames_next`] frames and
    /// `output` room for [`Self::output_frames_max`] frames. Returns `(consumed, produced)`
    /// frames; `(0, 0)` if the buffers are too small, which the engine's sizing rules out.
    pub fn process(&mut self, input: &[f32], output: &mut [f32]) -> (usize, usize) {
        let c = self.channels;
        let (Ok(inp), Ok(mut out)) = (
            InterleavedSlice::new(input, c, input.len() / c),
            InterleavedSlice::new_mut(output, c, output.len() / c),
        ) else {
            return (0, 0);
        };
        self.resampler
            .process_into_buffer(&inp, &mut out, None)
            .unwrap_or((0, 0))
    }

    /// Clears the filter history.
    pub fn reset(&mut self) {
        self.resampler.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 kHz tone converted 44.1 k → 48 k keeps its frequency (zero crossings per second).
    #[test]
    fn tone_keeps_its_pitch() {
        let mut conv = RateConverter::new(44_100, 48_000, FixedSide::Input, 1).unwrap();
        let input: Vec<f32> = (0..44_100)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 44_100.0).sin())
            .collect();
        let mut out = Vec::new();
        let mut chunk = vec![0.0; conv.output_frames_max()];
        let mut pos = 0;
        while pos + conv.input_frames_next() <= input.len() {
            let (used, made) = conv.process(&input[pos..], &mut chunk);
            assert!(used > 0);
            pos += used;
            out.extend_from_slice(&chunk[..made]);
        }
        let settled = &out[1000..out.len() - 1000];
        let crossings = settled
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count() as f64;
        let hz = crossings * 48_000.0 / settled.len() as f64;
        assert!((hz - 1000.0).abs() < 2.0, "measured {hz} Hz");
    }
}
