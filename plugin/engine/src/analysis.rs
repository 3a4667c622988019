//! Offline measurements of a path: latency by normalised cross-correlation and SNR after
//! alignment. Used by the demo, the tests and the benchmarks; never on the audio thread.

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// How a received signal lines up with the one that was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    /// The received signal lags the reference by this many samples.
    pub lag_samples: usize,
    /// Normalised correlation at that lag, -1..=1.
    pub correlation: f32,
    /// Signal-to-noise ratio after removing the best gain at that lag, in dB.
    pub snr_db: f32,
}

impl Alignment {
    /// The lag in milliseconds at `rate_hz`.
    pub fn lag_ms(&self, rate_hz: u32) -> f32 {
        self.lag_samples as f32 * 1000.0 / rate_hz as f32
    }
}

/// Finds the lag in `0..=max_lag` at which `received` best matches `reference`. `None` if
/// either signal is silent or too short to test that many lags.
pub fn align(reference: &[f32], received: &[f32], max_lag: usize) -> Option<Alignment> {
    let n = reference.len();
    if n == 0 || received.len() < n {
        return None;
    }
    let max_lag = max_lag.min(received.len() - n);
    let span = n + max_lag;
    let len = (2 * span).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(len);
    let inv = planner.plan_fft_inverse(len);

    let mut a = vec![0.0f64; len];
    let mut b = vec![0.0f64; len];
    a[..n]
        .iter_mut()
        .zip(reference)
        .for_each(|(d, &s)| *d = f64::from(s));
    b[..span]
        .iter_mut()
        .zip(received)
        .for_each(|(d, &s)| *d = f64::from(s));
    let mut fa = fwd.make_output_vec();
    let mut fb = fwd.make_output_vec();
    fwd.process(&mut a, &mut fa).ok()?;
    fwd.process(&mut b, &mut fb).ok()?;
    // xcorr[lag] = sum_i ref[i] * rec[i + lag]  <=>  IFFT(FFT(rec) * conj(FFT(ref)))
    let mut prod: Vec<Complex<f64>> = fb.iter().zip(&fa).map(|(x, y)| x * y.conj()).collect();
    let last = prod.len() - 1;
    prod[0].im = 0.0;
    prod[last].im = 0.0;
    let mut xcorr = inv.make_output_vec();
    inv.process(&mut prod, &mut xcorr).ok()?;

    let ref_energy: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
    // Prefix sums of received energy give each window's energy in O(1).
    let mut prefix = vec![0.0f64; span + 1];
    for (i, &s) in received[..span].iter().enumerate() {
        prefix[i + 1] = prefix[i] + f64::from(s).powi(2);
    }
    let mut best: Option<(usize, f64)> = None;
    for lag in 0..=max_lag {
        let win_energy = prefix[lag + n] - prefix[lag];
        let denom = (ref_energy * win_energy).sqrt();
        if denom <= f64::EPSILON {
            continue;
        }
        let c = xcorr[lag] / len as f64 / denom;
        if best.is_none_or(|(_, bc)| c > bc) {
            best = Some((lag, c));
        }
    }
    let (lag, correlation) = best?;
    Some(Alignment {
        lag_samples: lag,
        correlation: correlation as f32,
        snr_db: snr_db(reference, &received[lag..lag + n]),
    })
}

/// SNR of `received` against `reference` (same length, already aligned), after scaling the
/// reference by the least-squares gain so a level change is not counted as noise.
pub fn snr_db(reference: &[f32], received: &[f32]) -> f32 {
    let (mut rr, mut rx) = (0.0f64, 0.0f64);
    for (&r, &x) in reference.iter().zip(received) {
        rr += f64::from(r).powi(2);
        rx += f64::from(r) * f64::from(x);
    }
    if rr <= f64::EPSILON {
        return f32::NEG_INFINITY;
    }
    let g = rx / rr;
    let noise: f64 = reference
        .iter()
        .zip(received)
        .map(|(&r, &x)| (f64::from(x) - g * f64::from(r)).powi(2))
        .sum();
    let signal = g * g * rr;
    (10.0 * (signal / noise.max(1e-20)).log10()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::TestSignal;

    #[test]
    fn finds_a_known_delay_and_rejects_noise() {
        let sig = TestSignal::new(48_000).take_mono(24_000);
        let mut delayed = vec![0.0; 137];
        delayed.extend_from_slice(&sig);
        delayed.extend(std::iter::repeat_n(0.0, 2000));
        let a = align(&sig[..12_000], &delayed, 1000).unwrap();
        assert_eq!(a.lag_samples, 137);
        assert!(a.correlation > 0.999, "{a:?}");
        assert!(a.snr_db > 60.0, "{a:?}");

        let unrelated: Vec<f32> = (0..26_000)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b = align(&sig[..12_000], &unrelated, 1000).unwrap();
        assert!(b.correlation < 0.2, "{b:?}");
    }
}
