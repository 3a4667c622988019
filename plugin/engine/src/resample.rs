//! Streaming sample-rate conversion between the host's rate and the engine's 48 kHz, over
//! rubato's asynchronous sinc resampler with all buffers allocated up front.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, Resizable, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::EngineError;

/// Host rates the engine converts from and to: every rate a host offers (8 to 384 kHz in
/// practice) and more, as clap-validator tries 1 to 768 kHz.
pub const MIN_RATE_HZ: u32 = 1_000;
/// See [`MIN_RATE_HZ`].
pub const MAX_RATE_HZ: u32 = 768_000;

/// The filter's half-length in time: a sinc of this many milliseconds on each side delays the
/// signal by that much in each direction, whatever the rate.
const FILTER_HALF_MS: f64 = 0.67;

/// Which side of the conversion has a fixed number of frames per chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedSide {
    /// Every call consumes exactly one chunk of input frames (the send path: host → 48 kHz).
    Input,
    /// Every call produces exactly one chunk of output frames (the playout path: 48 kHz → host).
    Output,
}

/// A rubato resampler over interleaved buffers, whose chunk follows the host's block so a
/// block is converted as it comes: nothing waits for a chunk to fill, nothing is rendered
/// ahead of the block.
///
/// # Thread
/// Built in `activate()`; [`RateConverter::process`] and [`RateConverter::set_chunk`] run on the
/// audio thread and never allocate.
pub struct RateConverter {
    resampler: Async<f32>,
    channels: usize,
    max_chunk: usize,
    chunk: usize,
}

impl RateConverter {
    /// Converts `from_hz` to `to_hz` for `channels` interleaved channels, in chunks of up to
    /// `max_chunk` frames on the fixed side.
    pub fn new(
        from_hz: u32,
        to_hz: u32,
        side: FixedSide,
        channels: usize,
        max_chunk: usize,
    ) -> Result<Self, EngineError> {
        // The sinc's length in input samples follows the input rate so its delay stays near
        // 0.67 ms at 8 kHz and at 384 kHz alike; its aliasing stays far below Opus's own noise
        // floor at the bitrates we use.
        let taps = (f64::from(from_hz) * 2.0 * FILTER_HALF_MS / 1000.0 / 8.0).ceil() as usize * 8;
        let params = SincInterpolationParameters {
            sinc_len: taps.clamp(16, 512),
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
        let max_chunk = max_chunk.max(1);
        // The ratio never changes: a relative range of 1 keeps rubato's buffers tight.
        let resampler = Async::new_sinc(ratio, 1.0, &params, max_chunk, channels, fixed)
            .map_err(|e| EngineError::Resampler(e.to_string()))?;
        Ok(Self {
            resampler,
            channels,
            max_chunk,
            chunk: max_chunk,
        })
    }

    /// Sets the next chunks' length on the fixed side, up to the maximum given to
    /// [`Self::new`].
    pub fn set_chunk(&mut self, frames: usize) {
        let frames = frames.clamp(1, self.max_chunk);
        if frames != self.chunk && self.resampler.set_chunk_size(frames).is_ok() {
            self.chunk = frames;
        }
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
        self.chunk = self.max_chunk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 kHz tone converted 44.1 k → 48 k keeps its frequency (zero crossings per second).
    #[test]
    fn tone_keeps_its_pitch() {
        let mut conv = RateConverter::new(44_100, 48_000, FixedSide::Input, 1, 32).unwrap();
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

/// Stretches interleaved stereo by a ratio within a few hundred ppm of 1 (clock-drift
/// correction), reading its input in place.
///
/// A 4-point cubic Hermite interpolator: it needs two frames of look-ahead where a chunked
/// resampler needs a chunk, on a path where every millisecond counts; at ratio 1 it passes the
/// input through exactly, and at ppm-scale ratios its error is far below Opus's.
///
/// # Thread
/// Audio thread; no allocation.
#[derive(Debug, Clone)]
pub struct DriftStretcher {
    /// Input frames per output frame.
    step: f64,
    /// Read position between input frame 0 and 1 of what is left.
    frac: f64,
    /// The input frame before the first one left (the interpolator's left neighbour).
    prev: [f32; 2],
}

impl Default for DriftStretcher {
    fn default() -> Self {
        Self {
            step: 1.0,
            frac: 0.0,
            prev: [0.0; 2],
        }
    }
}

impl DriftStretcher {
    /// Output frames per input frame, e.g. `1 + 100e-6` to play 100 ppm slower. Within
    /// 1 ppm of 1 it is exactly 1 (a copy): below that the buffer's own slack absorbs it.
    pub fn set_ratio(&mut self, ratio: f64) {
        if ratio.is_finite() && (0.99..=1.01).contains(&ratio) {
            self.step = if (ratio - 1.0).abs() < 1e-6 {
                1.0
            } else {
                1.0 / ratio
            };
        }
    }

    /// Back to ratio 1 with no history.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Input frames needed to produce `frames` output frames.
    pub fn input_needed(&self, frames: usize) -> usize {
        (self.frac + frames as f64 * self.step).floor() as usize + 3
    }

    /// Writes `out.len() / 2` frames from interleaved stereo `input` (which must hold
    /// [`Self::input_needed`] frames); returns the input frames consumed.
    pub fn process(&mut self, input: &[f32], out: &mut [f32]) -> usize {
        let frames_in = input.len() / 2;
        if self.step == 1.0 && self.frac == 0.0 {
            // No drift (the usual case, and until it is measured): a plain copy.
            let n = (out.len() / 2).min(frames_in);
            out[..2 * n].copy_from_slice(&input[..2 * n]);
            out[2 * n..].fill(0.0);
            if n > 0 {
                self.prev = [input[2 * (n - 1)], input[2 * (n - 1) + 1]];
            }
            return n;
        }
        let at = |i: isize, c: usize| -> f32 {
            if i < 0 {
                self.prev[c]
            } else {
                input.get(2 * i as usize + c).copied().unwrap_or(0.0)
            }
        };
        let mut pos = self.frac;
        for o in out.chunks_exact_mut(2) {
            let i = pos.floor() as isize;
            let t = (pos - i as f64) as f32;
            let inside = i >= 1 && (i as usize) + 2 < frames_in;
            for (c, y) in o.iter_mut().enumerate() {
                let (x0, x1, x2, x3) = if inside {
                    let k = 2 * (i as usize - 1) + c;
                    (input[k], input[k + 2], input[k + 4], input[k + 6])
                } else {
                    (at(i - 1, c), at(i, c), at(i + 1, c), at(i + 2, c))
                };
                // Catmull-Rom: passes through x1 at t = 0 and x2 at t = 1.
                let a = -0.5 * x0 + 1.5 * x1 - 1.5 * x2 + 0.5 * x3;
                let b = x0 - 2.5 * x1 + 2.0 * x2 - 0.5 * x3;
                let cc = -0.5 * x0 + 0.5 * x2;
                *y = ((a * t + b) * t + cc) * t + x1;
            }
            pos += self.step;
        }
        let used = (pos.floor() as usize).min(frames_in);
        if used > 0 {
            self.prev = [input[2 * (used - 1)], input[2 * (used - 1) + 1]];
        }
        self.frac = pos - used as f64;
        used
    }
}

#[cfg(test)]
mod drift_tests {
    use super::*;

    #[test]
    fn ratio_one_passes_audio_through_exactly() {
        let input: Vec<f32> = (0..200).map(|i| (i as f32 * 0.1).sin()).collect();
        let stereo: Vec<f32> = input.iter().flat_map(|&x| [x, -x]).collect();
        let mut d = DriftStretcher::default();
        let mut out = vec![0.0; 2 * 64];
        assert!(d.input_needed(64) <= 100);
        let used = d.process(&stereo, &mut out);
        assert_eq!(used, 64);
        for i in 0..64 {
            assert_eq!(out[2 * i], input[i]);
            assert_eq!(out[2 * i + 1], -input[i]);
        }
    }

    #[test]
    fn a_faster_ratio_makes_more_frames_of_the_same_tone() {
        let mut d = DriftStretcher::default();
        d.set_ratio(1.001);
        let tone: Vec<f32> = (0..48_000)
            .flat_map(|i| {
                let x = (i as f32 * std::f32::consts::TAU * 440.0 / 48_000.0).sin();
                [x, x]
            })
            .collect();
        let (mut consumed, mut made) = (0, 0);
        let mut out = vec![0.0; 2 * 32];
        while tone.len() / 2 - consumed > d.input_needed(32) {
            consumed += d.process(&tone[2 * consumed..], &mut out);
            made += 32;
        }
        let ratio = made as f64 / consumed as f64;
        assert!((ratio - 1.001).abs() < 1e-4, "{ratio}");
    }
}
