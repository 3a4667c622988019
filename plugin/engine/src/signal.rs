//! Deterministic test signals for the demo, the headless peer and the tests.

use std::f64::consts::TAU;

/// A music-like test signal: a logarithmic sweep with two harmonics over a quiet tone. The
/// sweep never repeats within 1.7 s, so cross-correlation finds one unambiguous lag, and its
/// spectrum is what a perceptual codec is built for (unlike white noise).
///
/// Deterministic: the same rate and voice always give the same samples.
#[derive(Debug, Clone)]
pub struct TestSignal {
    rate: f64,
    n: u64,
    voice: u32,
}

/// Length of one sweep.
const SWEEP_SECONDS: f64 = 1.7;

impl TestSignal {
    /// The default voice at `rate_hz`.
    pub fn new(rate_hz: u32) -> Self {
        Self::voice(rate_hz, 0)
    }

    /// A distinct voice per musician or channel: each sweeps its own range, so their signals
    /// do not correlate with each other.
    pub fn voice(rate_hz: u32, voice: u32) -> Self {
        Self {
            rate: f64::from(rate_hz),
            n: 0,
            voice,
        }
    }

    /// Next sample.
    pub fn next_sample(&mut self) -> f32 {
        let t = self.n as f64 / self.rate;
        self.n += 1;
        let f0 = 110.0 * (1.0 + 0.37 * f64::from(self.voice % 7));
        let f1 = f0 * 24.0;
        let k = (f1 / f0).ln() / SWEEP_SECONDS;
        let tt = t % SWEEP_SECONDS;
        // Phase of an exponential sweep: 2π f0 (e^{kt} − 1) / k.
        let phase = TAU * f0 * ((k * tt).exp() - 1.0) / k;
        let sweep = phase.sin() + 0.4 * (2.0 * phase).sin() + 0.2 * (3.0 * phase).sin();
        let bed = (TAU * (220.0 + 30.0 * f64::from(self.voice)) * t).sin();
        (0.28 * sweep + 0.05 * bed) as f32
    }

    /// The next `frames` samples.
    pub fn take_mono(&mut self, frames: usize) -> Vec<f32> {
        (0..frames).map(|_| self.next_sample()).collect()
    }
}

/// A pure sine at `hz`, `amplitude` peak.
pub fn sine(rate_hz: u32, hz: f32, amplitude: f32, frames: usize) -> Vec<f32> {
    (0..frames)
        .map(|i| amplitude * (TAU * f64::from(hz) * i as f64 / f64::from(rate_hz)).sin() as f32)
        .collect()
}
