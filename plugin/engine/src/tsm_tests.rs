//! What a splice does to a tone and to speech: level kept within 1 dB, no step in the waveform.

use super::*;
use crate::signal::{phrase, sine};

const FRAME: usize = 120;

/// One splice, as heard: the input stretch it replaced and the output stretch that replaced it.
struct Heard {
    lag: usize,
    similarity: f32,
    level_db: f32,
    /// Largest sample step in the output stretch over the largest in the input's.
    step_ratio: f32,
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

fn largest_step(x: &[f32]) -> f32 {
    x.windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max)
}

/// Plays `mono` (as stereo, right at 0.8 × left) through a FIFO a frame at a time, asking for a
/// splice every `every` frames, growing and shrinking in turn, each aiming at `want` frames and
/// made at the first frame where it is acceptable, as playout does. Returns each splice as heard
/// (left channel), and those in silence apart.
fn play(mono: &[f32], every: usize, want: usize) -> (Vec<Heard>, usize) {
    let mut fifo = SampleFifo::with_capacity(2, mono.len() + 4 * MAX_LAG);
    let stereo: Vec<f32> = mono.iter().flat_map(|&s| [s, 0.8 * s]).collect();
    fifo.push(&stereo);
    let (mut out, mut at_input, mut heard) = (Vec::new(), 0usize, Vec::new());
    let (mut frame, mut asked, mut quiet) = ([0f32; 2 * FRAME], false, 0);
    // Frames still to play of the last splice's output: the next waits for them, so each is
    // measured against the input it replaced.
    let mut spliced = 0usize;
    for n in 0.. {
        asked |= n % every == every - 1;
        let s = (asked && spliced == 0 && fifo.frames() >= LOOKAHEAD)
            .then(|| find(fifo.as_slice(), 2, MIN_LAG, MAX_LAG, want).expect("long enough"))
            .filter(|s| s.acceptable(GOOD));
        if let Some(s) = s.filter(|s| s.quiet) {
            quiet += 1;
            asked = false;
            assert!(shrink(&mut fifo, s));
            at_input += s.lag;
        } else if let Some(s) = s {
            asked = false;
            let growing = heard.len() % 2 == 0;
            assert_eq!(fifo.as_slice()[0], mono[at_input]);
            let span_in = &mono[at_input..at_input + 2 * s.lag];
            let out_from = out.len();
            let done = if growing {
                grow(&mut fifo, s)
            } else {
                shrink(&mut fifo, s)
            };
            assert!(done);
            let span_out = if growing { 3 * s.lag } else { s.lag };
            let left: Vec<f32> = fifo.as_slice()[..2 * span_out]
                .iter()
                .step_by(2)
                .copied()
                .collect();
            // The step into the spliced stretch counts too.
            let mut edge = out[out_from.saturating_sub(1)..].to_vec();
            edge.extend_from_slice(&left);
            heard.push(Heard {
                lag: s.lag,
                similarity: s.similarity,
                level_db: 20.0 * (rms(&left) / rms(span_in).max(1e-9)).max(1e-9).log10(),
                step_ratio: largest_step(&edge) / largest_step(span_in).max(1e-6),
            });
            at_input = if growing {
                at_input - s.lag
            } else {
                at_input + s.lag
            };
            spliced = span_out;
        }
        let got = fifo.pop_into(&mut frame);
        if got == 0 {
            break;
        }
        out.extend(frame[..2 * got].iter().step_by(2));
        at_input += got;
        spliced = spliced.saturating_sub(got);
    }
    (heard, quiet)
}

#[test]
fn a_tone_through_grows_and_shrinks_keeps_its_level_and_has_no_step() {
    let tone = sine(48_000, 200.0, 0.5, 48_000);
    let (heard, _) = play(&tone, 20, 240);
    assert!(heard.len() >= 10);
    for h in &heard {
        assert_eq!(
            h.lag % 240,
            0,
            "a 200 Hz tone repeats every 240 samples, spliced at {}",
            h.lag
        );
        assert!(h.similarity > 0.99, "similarity {}", h.similarity);
        assert!(h.level_db.abs() < 0.1, "level changed by {} dB", h.level_db);
        assert!(
            h.step_ratio < 1.05,
            "a step {}× the tone's own",
            h.step_ratio
        );
    }
}

#[test]
fn a_spoken_phrase_through_grows_and_shrinks_keeps_its_level_and_has_no_step() {
    let speech = phrase(48_000, 3 * 48_000);
    // Splices at many points of the phrase: vowels, consonants, pauses, onsets.
    for (every, want) in [(7, 120), (11, 300), (13, 720)] {
        let (heard, quiet) = play(&speech, every, want);
        assert!(
            heard.len() > 20 && quiet > 5,
            "{} splices, {quiet} in silence",
            heard.len()
        );
        let worst_db = heard.iter().map(|h| h.level_db.abs()).fold(0.0, f32::max);
        let worst_step = heard.iter().map(|h| h.step_ratio).fold(0.0, f32::max);
        println!(
            "every {every} frames, want {want}: {} splices ({quiet} more in silence), worst level {worst_db:.2} dB, worst step ratio {worst_step:.2}, lags {:?}",
            heard.len(),
            heard.iter().map(|h| h.lag).collect::<Vec<_>>()
        );
        assert!(worst_db < 1.0, "level changed by {worst_db} dB");
        assert!(worst_step < 1.25, "a step {worst_step}× the phrase's own");
    }
}

#[test]
fn silence_splices_where_it_is_asked_and_short_input_is_refused() {
    let quiet = vec![0f32; 2 * LOOKAHEAD];
    let s = find(&quiet, 2, MIN_LAG, MAX_LAG, 333).unwrap();
    assert!(s.quiet);
    assert_eq!(s.lag, 333);
    assert_eq!(
        find(&quiet[..2 * (2 * MIN_LAG - 1)], 2, MIN_LAG, MAX_LAG, 200),
        None
    );
    let mut fifo = SampleFifo::with_capacity(2, 3 * MIN_LAG);
    fifo.push(&quiet[..2 * 2 * MIN_LAG]);
    assert!(
        !grow(
            &mut fifo,
            Splice {
                lag: 2 * MIN_LAG,
                ..s
            }
        ),
        "no room: must refuse"
    );
    assert_eq!(fifo.frames(), 2 * MIN_LAG);
}
