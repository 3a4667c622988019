//! Splices heard as nothing: level and continuity through a shorten and a lengthen.

use super::*;
use crate::signal::{phrase, sine};
use proptest::prelude::*;

/// Interleaved stereo from mono.
fn stereo(mono: &[f32]) -> Vec<f32> {
    mono.iter().flat_map(|&s| [s, s]).collect()
}

/// Level (dB) of interleaved `x` over frames `range`.
fn level_db(x: &[f32], range: std::ops::Range<usize>) -> f32 {
    let s = &x[2 * range.start..2 * range.end];
    let ms = s.iter().map(|v| v * v).sum::<f32>() / s.len() as f32;
    10.0 * ms.max(1e-20).log10()
}

/// Largest step between neighbouring samples of the left channel.
fn largest_step(x: &[f32]) -> f32 {
    x.chunks_exact(2)
        .map(|f| f[0])
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max)
}

fn fifo_of(x: &[f32]) -> SampleFifo {
    let mut fifo = SampleFifo::with_capacity(2, x.len() / 2 + MAX_LAG);
    fifo.push(x);
    fifo
}

/// Splices `x` at frame `at` (`grow`: longer), by a lag near `want`; returns the result and
/// the match.
fn splice_at(x: &[f32], at: usize, want: usize, grow: bool) -> (Vec<f32>, Match) {
    let mut fifo = fifo_of(&x[2 * at..]);
    let m = find(fifo.as_slice(), want / 2..=want * 3 / 2).expect("enough audio");
    let done = if grow {
        lengthen(&mut fifo, m)
    } else {
        shorten(&mut fifo, m)
    };
    assert!(done);
    let mut out = x[..2 * at].to_vec();
    out.extend_from_slice(fifo.as_slice());
    (out, m)
}

#[test]
fn a_200_hz_tone_keeps_its_level_and_has_no_step_through_a_shorten_and_a_lengthen() {
    let x = stereo(&sine(48_000, 200.0, 0.5, 9600));
    let smooth = largest_step(&x);
    for grow in [false, true] {
        let (y, m) = splice_at(&x, 4000, 360, grow);
        // The tone repeats every 240 frames: the splice takes a whole number of periods.
        assert_eq!(m.lag % 240, 0, "{m:?}");
        assert!(m.similarity > 0.999, "{m:?}");
        let change = level_db(&y, 3900..4400) - level_db(&x, 3900..4400);
        assert!(change.abs() < 0.1, "grow {grow}: {change:.2} dB");
        assert!(
            largest_step(&y) <= smooth * 1.01,
            "grow {grow}: a step in the waveform"
        );
        let expected = if grow { 9600 + m.lag } else { 9600 - m.lag };
        assert_eq!(y.len() / 2, expected);
    }
}

#[test]
fn a_spoken_phrase_keeps_its_level_and_has_no_step_through_a_shorten_and_a_lengthen() {
    let x = stereo(&phrase(48_000));
    let smooth = largest_step(&x);
    // Splices through the vowel and through the fricative.
    for at in [6000, 24_500] {
        for grow in [false, true] {
            let (y, m) = splice_at(&x, at, 240, grow);
            // Over 20 ms from the splice, as a listener hears level.
            let (before, after) = (level_db(&x, at..at + 960), level_db(&y, at..at + 960));
            assert!(
                (after - before).abs() < 1.0,
                "at {at}, grow {grow}: {before:.2} → {after:.2} dB, {m:?}"
            );
            let step = largest_step(&y[2 * (at - 1)..2 * (at + OVERLAP + 1)]);
            assert!(
                step <= smooth,
                "at {at}, grow {grow}: step {step} in the splice, {smooth} anywhere else"
            );
        }
    }
}

#[test]
fn unrelated_sides_join_at_equal_power() {
    // White noise does not repeat: the crossfade keeps its power, not its amplitude.
    let mut state = 1u32;
    let noise: Vec<f32> = (0..4800)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect();
    let x = stereo(&noise);
    let (y, m) = splice_at(&x, 1000, 240, false);
    assert!(m.similarity < 0.5, "{m:?}");
    let change = level_db(&y, 1000..1000 + OVERLAP) - level_db(&x, 1000..1000 + OVERLAP);
    assert!(change.abs() < 1.0, "{change:.2} dB through the crossfade");
}

#[test]
fn quiet_audio_takes_the_longest_lag_asked_for() {
    let x = vec![0.0f32; 2 * 2000];
    let m = find(&x, 200..=600).unwrap();
    assert_eq!(
        m,
        Match {
            lag: 600,
            similarity: 1.0
        }
    );
}

#[test]
fn too_little_audio_finds_nothing_and_splices_nothing() {
    let x = stereo(&sine(48_000, 200.0, 0.5, MIN_LAG + OVERLAP - 1));
    assert_eq!(find(&x, 0..=MAX_LAG), None);
    let mut fifo = fifo_of(&x);
    let m = Match {
        lag: MIN_LAG,
        similarity: 1.0,
    };
    assert!(!shorten(&mut fifo, m) && !lengthen(&mut fifo, m));
    assert_eq!(fifo.as_slice(), &x[..]);
}

proptest! {
    /// Any audio, any lag asked for: a splice changes the length by exactly its lag, keeps
    /// every sample finite and bounded, and leaves what lies beyond it untouched.
    #[test]
    fn splices_change_the_length_by_their_lag_and_nothing_else(
        frames in 0usize..1500,
        lo in 0usize..1200,
        span in 0usize..800,
        seed in any::<u32>(),
        grow in any::<bool>(),
    ) {
        let mut state = seed | 1;
        let x: Vec<f32> = (0..2 * frames)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as f32 / u32::MAX as f32 - 0.5
            })
            .collect();
        let mut fifo = fifo_of(&x);
        let Some(m) = find(&x, lo..=lo + span) else {
            prop_assert!(frames < MIN_LAG + OVERLAP || lo > MAX_LAG || lo + span < MIN_LAG
                || lo.max(MIN_LAG) > frames - OVERLAP);
            return Ok(());
        };
        prop_assert!((MIN_LAG..=MAX_LAG).contains(&m.lag) && m.lag + OVERLAP <= frames);
        let done = if grow { lengthen(&mut fifo, m) } else { shorten(&mut fifo, m) };
        prop_assert!(done);
        let y = fifo.as_slice();
        let expected = if grow { frames + m.lag } else { frames - m.lag };
        prop_assert_eq!(y.len(), 2 * expected);
        prop_assert!(y.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
        // Beyond the crossfade: the original audio, shifted by the lag.
        let tail = if grow { m.lag + OVERLAP } else { OVERLAP };
        let from = if grow { OVERLAP } else { m.lag + OVERLAP };
        prop_assert_eq!(&y[2 * tail..], &x[2 * from..]);
    }
}
