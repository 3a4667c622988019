//! WAV in and out for the command line.

use std::path::Path;

use anyhow::{bail, Context};
use echoel_plugin::engine::resample::{FixedSide, RateConverter, MAX_RATE_HZ, MIN_RATE_HZ};
use echoel_plugin::engine::INTERNAL_RATE_HZ;

/// Writes mono 32-bit float samples.
pub fn write(path: &Path, rate: u32, samples: &[f32]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("cannot write {}", path.display()))?;
    for &s in samples {
        w.write_sample(s)?;
    }
    w.finalize()
        .with_context(|| format!("cannot finish {} — is the disk full?", path.display()))?;
    Ok(())
}

/// Reads a WAV file as mono at 48 kHz (channels averaged, other rates converted).
pub fn read_mono_48k(path: &Path) -> anyhow::Result<Vec<f32>> {
    let mut r = hound::WavReader::open(path)
        .with_context(|| format!("cannot read {} as WAV", path.display()))?;
    let spec = r.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let mono: Vec<f32> = samples
        .chunks(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect();
    if spec.sample_rate == INTERNAL_RATE_HZ {
        return Ok(mono);
    }
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&spec.sample_rate) {
        bail!(
            "{}: {} Hz is not an audio rate Echoel can convert",
            path.display(),
            spec.sample_rate
        );
    }
    let mut conv = RateConverter::new(
        spec.sample_rate,
        INTERNAL_RATE_HZ,
        FixedSide::Input,
        1,
        1024,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = Vec::with_capacity(mono.len() * 2);
    let mut chunk = vec![0.0; conv.output_frames_max()];
    let mut pos = 0;
    while pos + conv.input_frames_next() <= mono.len() {
        let (used, made) = conv.process(&mono[pos..], &mut chunk);
        if used == 0 {
            break;
        }
        pos += used;
        out.extend_from_slice(&chunk[..made]);
    }
    Ok(out)
}
