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

/// A spoken-like phrase at `rate_hz`: syllables of a voiced sound (a glottal pulse train with a
/// gliding pitch of 95–165 Hz, shaped by two formants that move from vowel to vowel) with
/// breathy consonants and short pauses between them. Deterministic; for tests of what playout
/// does to speech, where a tone is too easy.
pub fn phrase(rate_hz: u32, frames: usize) -> Vec<f32> {
    const VOWELS: [(f64, f64); 4] = [
        (730.0, 1090.0),
        (270.0, 2290.0),
        (530.0, 1840.0),
        (300.0, 870.0),
    ];
    let rate = f64::from(rate_hz);
    let (mut phase, mut noise) = (0.0f64, 0x2545_f491_4f6c_dd1du64);
    (0..frames)
        .map(|i| {
            let t = i as f64 / rate;
            let syllable = (t / 0.28) as usize;
            let within = t % 0.28;
            let f0 = 130.0 + 35.0 * (TAU * 0.6 * t).sin();
            phase += TAU * f0 / rate;
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let white = (noise >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            let sample = if within < 0.18 {
                let (f1, f2) = VOWELS[syllable % VOWELS.len()];
                let voiced: f64 = (1..=30)
                    .map(|k| {
                        let f = k as f64 * f0;
                        let formant = |fc: f64, bw: f64| 1.0 / (1.0 + ((f - fc) / bw).powi(2));
                        (formant(f1, 90.0) + 0.6 * formant(f2, 120.0) + 0.02) / k as f64
                            * (k as f64 * phase).sin()
                    })
                    .sum();
                // Syllable envelope: a quick rise, a slow fall.
                let env = (within / 0.02).min(1.0) * (1.0 - within / 0.2).max(0.1);
                0.5 * env * voiced
            } else if within < 0.22 {
                0.06 * white
            } else {
                0.0
            };
            sample as f32
        })
        .collect()
}
