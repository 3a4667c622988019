//! Time-scale splices on decoded audio: a stretch made shorter or longer by about a pitch
//! period, with its pitch kept (WSOLA-class). The splice joins the audio to itself `lag`
//! frames away, where the waveform best repeats, over a short crossfade whose gain follows how
//! alike the two sides are: a tone joins in phase and keeps its level; unrelated sounds join at
//! equal power. This is how a stream's delay moves by milliseconds without a concealed frame
//! or a frame crossfade (which can cancel a tone exactly out of phase).
//!
//! Pure and allocation-free: everything works in place on a [`SampleFifo`] of interleaved
//! stereo at 48 kHz.

use std::ops::RangeInclusive;

use crate::fifo::SampleFifo;

/// Frames the two sides of a splice are crossfaded over (2.5 ms).
pub const OVERLAP: usize = 120;

/// The shortest splice (2.5 ms): at least the crossfade, so a splice never reads what it has
/// just written.
pub const MIN_LAG: usize = OVERLAP;

/// The longest splice (20 ms): covers a 50 Hz period, and a 20 ms gain in one step.
pub const MAX_LAG: usize = 960;

/// Below this mean square (about −60 dBFS) audio counts as quiet: any lag joins inaudibly.
const QUIET_POWER: f32 = 1e-6;

/// Where the audio repeats itself: `lag` frames on, with `similarity` the normalised
/// correlation of the two sides over [`OVERLAP`] frames (1 for quiet audio).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    pub lag: usize,
    pub similarity: f32,
}

/// The lag in `lags` (clamped to [`MIN_LAG`]..=[`MAX_LAG`] and to what `x` holds) at which the
/// interleaved stereo `x` best repeats: `x[i] ≈ x[lag + i]` for the first [`OVERLAP`] frames.
/// `None` when `x` is too short for the smallest lag.
pub fn find(x: &[f32], lags: RangeInclusive<usize>) -> Option<Match> {
    let frames = x.len() / 2;
    let lo = (*lags.start()).max(MIN_LAG);
    let hi = (*lags.end()).min(MAX_LAG).min(frames.checked_sub(OVERLAP)?);
    if lo > hi {
        return None;
    }
    let mono = |i: usize| x[2 * i] + x[2 * i + 1];
    let power = |from: usize, step: usize| {
        (0..OVERLAP)
            .step_by(step)
            .map(|i| mono(from + i) * mono(from + i))
            .sum::<f32>()
    };
    let head = power(0, 1);
    let window_power = head + power(hi, 1);
    if window_power / (2 * 2 * OVERLAP) as f32 <= QUIET_POWER {
        return Some(Match {
            lag: hi,
            similarity: 1.0,
        });
    }
    // Normalised correlation at `lag`, over every `step`-th frame (head power `aa`).
    let score = |lag: usize, step: usize, aa: f32| {
        let (mut ab, mut bb) = (0.0f32, 0.0f32);
        for i in (0..OVERLAP).step_by(step) {
            let (a, b) = (mono(i), mono(lag + i));
            ab += a * b;
            bb += b * b;
        }
        ab / (aa * bb).sqrt().max(1e-12)
    };
    // Coarse over every other lag and frame, then the neighbours of the best in full.
    let coarse_head = power(0, 2);
    let best = (lo..=hi)
        .step_by(2)
        .map(|lag| (lag, score(lag, 2, coarse_head)))
        .fold((lo, f32::MIN), |b, c| if c.1 > b.1 { c } else { b });
    let around = best.0.saturating_sub(2).max(lo)..=(best.0 + 2).min(hi);
    let (lag, similarity) = around
        .map(|lag| (lag, score(lag, 1, head)))
        .fold((best.0, f32::MIN), |b, c| if c.1 > b.1 { c } else { b });
    Some(Match {
        lag,
        similarity: similarity.clamp(-1.0, 1.0),
    })
}

/// Makes the audio at the start of `fifo` `m.lag` frames shorter: its first [`OVERLAP`] frames
/// crossfade into those `m.lag` frames later. False (nothing changed) if `fifo` holds too
/// little.
pub fn shorten(fifo: &mut SampleFifo, m: Match) -> bool {
    let lag = m.lag;
    if lag < MIN_LAG || fifo.frames() < lag + OVERLAP {
        return false;
    }
    let x = fifo.as_mut_slice();
    for i in 0..OVERLAP {
        let (fade_out, fade_in) = weights(i, m.similarity);
        for c in 0..2 {
            x[2 * (lag + i) + c] = x[2 * i + c] * fade_out + x[2 * (lag + i) + c] * fade_in;
        }
    }
    fifo.consume(lag);
    true
}

/// Makes the audio at the start of `fifo` `m.lag` frames longer: after its first `m.lag`
/// frames it crossfades back to its start and plays on from [`OVERLAP`]. False (nothing
/// changed) if `fifo` holds too little or has no room.
pub fn lengthen(fifo: &mut SampleFifo, m: Match) -> bool {
    let lag = m.lag;
    let frames = fifo.frames();
    if lag < MIN_LAG || frames < lag + OVERLAP || fifo.free_frames() < lag {
        return false;
    }
    fifo.commit(lag);
    let x = fifo.as_mut_slice();
    // What follows the crossfade moves on by `lag`; the two sides of the crossfade, at
    // [0, OVERLAP) and [lag, lag + OVERLAP), stay where they are.
    x.copy_within(2 * OVERLAP..2 * frames, 2 * (lag + OVERLAP));
    for i in 0..OVERLAP {
        let (fade_out, fade_in) = weights(i, m.similarity);
        for c in 0..2 {
            x[2 * (lag + i) + c] = x[2 * (lag + i) + c] * fade_out + x[2 * i + c] * fade_in;
        }
    }
    true
}

/// Crossfade gains at step `i`: a raised cosine, normalised so that two sides correlated by
/// `similarity` keep their power (in phase: the plain crossfade; unrelated: equal power).
fn weights(i: usize, similarity: f32) -> (f32, f32) {
    let w = 0.5 - 0.5 * (std::f32::consts::PI * (i as f32 + 0.5) / OVERLAP as f32).cos();
    let (a, b) = (1.0 - w, w);
    let rho = similarity.clamp(0.0, 1.0);
    let norm = (a * a + b * b + 2.0 * a * b * rho).sqrt().max(1e-6);
    (a / norm, b / norm)
}

#[cfg(test)]
#[path = "tsm_tests.rs"]
mod tests;
