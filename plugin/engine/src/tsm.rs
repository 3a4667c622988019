//! Playout time-scaling: a stretch of waveform taken out, or put in, where the signal repeats
//! itself, so the playout delay moves by up to 15 ms at a time and nobody hears it.
//!
//! The WSOLA class, as WebRTC's NetEQ does it ("accelerate" and "preemptive expand"): find the
//! lag `T` (2.5–15 ms) at which the next `T` frames best resemble the `T` after them, then
//! overlap-add the two over `T` frames. Shrinking fades from the first stretch into the second
//! (`T` frames fewer); growing plays the first, then fades from the second back into the first
//! (`T` frames more). Both ends of each fade meet the waveform they continue, so there is no
//! step; where the stretches are alike (a tone, a held vowel) the fade joins equal waveforms
//! and nothing cancels, as a whole-frame crossfade of a tone can. The fade's gain follows the
//! measured similarity, so unlike stretches (noise, a dense mix) keep their level too.
//!
//! Why not a crate: `wsola` and `timestretch` stretch continuously at a tempo, allocate as they
//! go and add a window of latency; playout needs "one period out (or in), here, now", in place
//! and without allocation. Pure; nothing here allocates.

use crate::fifo::SampleFifo;

/// The shortest lag tried (2.5 ms at 48 kHz).
pub const MIN_LAG: usize = 120;
/// The longest lag tried (15 ms: a 67 Hz period).
pub const MAX_LAG: usize = 720;
/// Frames a splice of the longest lag reads: two stretches of it.
pub const LOOKAHEAD: usize = 2 * MAX_LAG;
/// Similarity above which a splice is as good as inaudible.
pub const GOOD: f32 = 0.85;
/// Points compared per lag: the two stretches are compared at evenly spaced frames, which
/// measures likeness as well as all of them do at a fraction of the cost.
const POINTS: usize = 96;
/// Mean square below which (−60 dBFS) a stretch counts as silence: any lag will do.
const QUIET: f32 = 1e-6;
/// The least [`Splice::balance`] (1 dB between the stretches) for a splice to be made where
/// the level moves: a fade across an onset or a decay would smear it.
const BALANCED: f32 = 0.79;
/// Lags within this much similarity of the best count as equally good.
const NEAR_BEST: f32 = 0.03;

/// Where to splice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Splice {
    /// Frames taken out or put in.
    pub lag: usize,
    /// Normalised correlation of the two stretches (−1 to 1).
    pub similarity: f32,
    /// Both stretches are near silence.
    pub quiet: bool,
    /// The quieter stretch's energy over the louder's (1: equally loud): a splice across an
    /// onset or a decay (a low balance) would smear it.
    pub balance: f32,
}

impl Splice {
    /// Inaudible enough to make now: silence, or two stretches alike in shape (at least
    /// `min_similarity`) and in level (within 1 dB).
    pub fn acceptable(&self, min_similarity: f32) -> bool {
        self.quiet || (self.similarity >= min_similarity && self.balance >= BALANCED)
    }
}

/// The mono sum of frame `i`.
fn mono(x: &[f32], channels: usize, i: usize) -> f32 {
    x[i * channels..(i + 1) * channels].iter().sum()
}

/// The best splice among lags `min..=max` whose two stretches `x` (interleaved, `channels`)
/// holds; among lags nearly as alike as the best, the one closest to `want`. `None` when `x`
/// is too short for any of them.
pub fn find(x: &[f32], channels: usize, min: usize, max: usize, want: usize) -> Option<Splice> {
    let channels = channels.max(1);
    let frames = x.len() / channels;
    let min = min.max(MIN_LAG);
    let max = max.min(MAX_LAG).min(frames / 2);
    if min > max {
        return None;
    }
    let mut similarity = [0f32; MAX_LAG + 1];
    let mut balance = [0f32; MAX_LAG + 1];
    let mut best = f32::MIN;
    let mut loudest = 0f32;
    for lag in min..=max {
        let step = lag.div_ceil(POINTS);
        let (mut ab, mut aa, mut bb, mut n) = (0f32, 0f32, 0f32, 0usize);
        for i in (0..lag).step_by(step) {
            let (a, b) = (mono(x, channels, i), mono(x, channels, i + lag));
            ab += a * b;
            aa += a * a;
            bb += b * b;
            n += 1;
        }
        let energy = (aa + bb) / (2 * n.max(1)) as f32;
        loudest = loudest.max(energy);
        let c = if aa > 0.0 && bb > 0.0 {
            ab / (aa * bb).sqrt()
        } else {
            0.0
        };
        similarity[lag] = c;
        balance[lag] = if aa.max(bb) > 0.0 {
            aa.min(bb) / aa.max(bb)
        } else {
            1.0
        };
        if balance[lag] >= BALANCED {
            best = best.max(c);
        }
    }
    let quiet = loudest < QUIET * (channels * channels) as f32;
    let want = want.clamp(min, max);
    if quiet {
        return Some(Splice {
            lag: want,
            similarity: 1.0,
            quiet: true,
            balance: 1.0,
        });
    }
    // No stretch pair alike in level (an onset throughout): the likest shape, for what it is.
    let balanced = best > f32::MIN;
    if !balanced {
        best = (min..=max).map(|l| similarity[l]).fold(f32::MIN, f32::max);
    }
    let lag = (min..=max)
        .filter(|&l| similarity[l] >= best - NEAR_BEST && (!balanced || balance[l] >= BALANCED))
        .min_by_key(|&l| l.abs_diff(want))
        .unwrap_or(want);
    Some(Splice {
        lag,
        similarity: similarity[lag],
        quiet: false,
        balance: balance[lag],
    })
}

/// Fade weights at step `i` of `n` from stretch `a` into stretch `b`, scaled so the sum keeps
/// the level whether the stretches are alike (`c` = 1: a plain linear fade) or unrelated (`c` =
/// 0: equal power).
fn weights(i: usize, n: usize, c: f32) -> (f32, f32) {
    let t = (i as f32 + 0.5) / n as f32;
    let (wa, wb) = (1.0 - t, t);
    let c = c.clamp(0.0, 1.0);
    let g = 1.0 / (wa * wa + wb * wb + 2.0 * c * wa * wb).sqrt();
    (wa * g, wb * g)
}

/// Takes `s.lag` frames out of the front of `fifo`: its first two stretches become one that
/// fades from the first into the second. False (nothing done) if it holds too little.
pub fn shrink(fifo: &mut SampleFifo, s: Splice) -> bool {
    let ch = fifo.channels();
    let lag = s.lag;
    if lag == 0 || fifo.frames() < 2 * lag {
        return false;
    }
    let x = fifo.as_mut_slice();
    for i in 0..lag {
        let (wa, wb) = weights(i, lag, s.similarity);
        for c in 0..ch {
            let (a, b) = (x[i * ch + c], x[(lag + i) * ch + c]);
            x[(lag + i) * ch + c] = wa * a + wb * b;
        }
    }
    fifo.consume(lag);
    true
}

/// Puts `s.lag` frames into the front of `fifo`: after its first stretch comes a fade from the
/// second back into the first, then the second again. False (nothing done) if it holds too
/// little or has no room.
pub fn grow(fifo: &mut SampleFifo, s: Splice) -> bool {
    let ch = fifo.channels();
    let lag = s.lag;
    if lag == 0 || fifo.frames() < 2 * lag || !fifo.open_gap(lag, lag) {
        return false;
    }
    // Now: first stretch at 0, the gap at `lag`, the second stretch at `2·lag`.
    let x = fifo.as_mut_slice();
    for i in 0..lag {
        let (wa, wb) = weights(i, lag, s.similarity);
        for c in 0..ch {
            let (second, first) = (x[(2 * lag + i) * ch + c], x[i * ch + c]);
            x[(lag + i) * ch + c] = wa * second + wb * first;
        }
    }
    true
}

#[cfg(test)]
#[path = "tsm_tests.rs"]
mod tests;
