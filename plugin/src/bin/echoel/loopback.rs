//! `echoel demo --loopback`: the engine in loopback over a generated signal at the host settings musicians
//! use, with the measured path latency and quality. Every row runs the real path: host block →
//! resampler → Opus low-delay → jitter buffer → decoder → resampler → host block.

use std::path::Path;

use anyhow::{ensure, Context};
use echoel_plugin::engine::measure::LoopbackRun;
use echoel_plugin::engine::{CodecSettings, FrameDuration};

/// Host rate, block size and frame size of each row.
const CONFIGS: [(u32, usize, FrameDuration); 6] = [
    (48_000, 64, FrameDuration::Ms2_5),
    (44_100, 64, FrameDuration::Ms2_5),
    (48_000, 128, FrameDuration::Ms5),
    (44_100, 256, FrameDuration::Ms2_5),
    (96_000, 512, FrameDuration::Ms10),
    (44_100, 1024, FrameDuration::Ms20),
];

pub fn run(seconds: f32, out: &Path) -> anyhow::Result<()> {
    ensure!(
        (1.0..=600.0).contains(&seconds),
        "--seconds must be between 1 and 600"
    );
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    println!("Echoel Jam engine loopback: what a musician hears of themselves through the codec");
    println!(
        "{:>8} {:>6} {:>6} {:>11} {:>12} {:>8} {:>10} {:>8}",
        "rate", "block", "frame", "latency ms", "correlation", "SNR dB", "concealed", "depth ms"
    );
    let mut worst_corr = 1.0f32;
    for (rate, block, frame) in CONFIGS {
        let run = LoopbackRun {
            codec: CodecSettings {
                frame,
                ..CodecSettings::default()
            },
            ..LoopbackRun::new(rate, block, seconds)
        };
        let report = run.run(250.0)?;
        let a = report
            .alignment
            .context("nothing came back through the loopback path")?;
        worst_corr = worst_corr.min(a.correlation);
        println!(
            "{:>8} {:>6} {:>6.1} {:>11.2} {:>12.4} {:>8.1} {:>10} {:>8.2}",
            rate,
            block,
            frame.millis(),
            a.lag_ms(rate),
            a.correlation,
            a.snr_db,
            report.stats.frames_concealed,
            f64::from(report.stats.jitter_depth_samples) / 48.0
        );
        let stem = format!("{rate}hz-{block}-{}ms", frame.millis());
        crate::wav::write(&out.join(format!("{stem}-sent.wav")), rate, &report.input)?;
        crate::wav::write(&out.join(format!("{stem}-heard.wav")), rate, &report.output)?;
    }
    println!("WAV files in {}", out.display());
    ensure!(
        worst_corr > 0.9,
        "the decoded signal does not match what was sent (correlation {worst_corr:.3})"
    );
    Ok(())
}
