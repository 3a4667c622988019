//! Offline runs of the whole engine in loopback, for the demo, tests and benchmarks.

use crate::analysis::{align, Alignment};
use crate::signal::TestSignal;
use crate::stats::StatsSnapshot;
use crate::{CodecSettings, Engine, EngineConfig, EngineError, EngineParams, JitterMode};

/// One loopback run's settings.
#[derive(Debug, Clone)]
pub struct LoopbackRun {
    /// Host sample rate.
    pub rate_hz: u32,
    /// Host block sizes, used in turn (hosts vary them).
    pub blocks: Vec<usize>,
    /// Length of the run.
    pub seconds: f32,
    /// Encoder settings.
    pub codec: CodecSettings,
    /// Jitter-buffer depth.
    pub jitter: JitterMode,
}

/// What a loopback run measured.
#[derive(Debug, Clone)]
pub struct LoopbackReport {
    /// Left channel sent.
    pub input: Vec<f32>,
    /// Left channel that came back (dry monitor off, so only the coded path).
    pub output: Vec<f32>,
    /// Alignment of the middle of the run, `None` if nothing came back.
    pub alignment: Option<Alignment>,
    /// Engine counters at the end.
    pub stats: StatsSnapshot,
}

impl LoopbackRun {
    /// A run at `rate_hz` with one fixed block size and default settings.
    pub fn new(rate_hz: u32, block: usize, seconds: f32) -> Self {
        Self {
            rate_hz,
            blocks: vec![block],
            seconds,
            codec: CodecSettings::default(),
            jitter: JitterMode::Auto,
        }
    }

    /// Runs the test signal through the engine and measures what returns. Latencies up to
    /// `max_lag_ms` are searched.
    pub fn run(&self, max_lag_ms: f32) -> Result<LoopbackReport, EngineError> {
        let rate = self.rate_hz;
        let max_block = self.blocks.iter().copied().max().unwrap_or(1).max(1);
        let (mut engine, _link) = Engine::new(EngineConfig {
            sample_rate_hz: rate,
            host_channels: 2,
            max_block_frames: max_block,
        })?;
        let params = EngineParams {
            monitor_gain: 0.0,
            loopback: true,
            codec: self.codec,
            jitter: self.jitter,
            ..EngineParams::default()
        };
        let total = (self.seconds * rate as f32) as usize;
        let input = TestSignal::new(rate).take_mono(total);
        let mut output = Vec::with_capacity(total);
        let (mut l, mut r) = (vec![0.0; max_block], vec![0.0; max_block]);
        let mut pos = 0;
        for &b in self.blocks.iter().cycle() {
            if pos >= total {
                break;
            }
            let n = b.clamp(1, max_block).min(total - pos);
            l[..n].copy_from_slice(&input[pos..pos + n]);
            r[..n].copy_from_slice(&input[pos..pos + n]);
            engine.process(&mut [&mut l[..n], &mut r[..n]], &params);
            output.extend_from_slice(&l[..n]);
            pos += n;
        }
        // Skip the first half second (buffers filling), measure over up to one second, in
        // eight windows each aligned on its own: the buffer may slew its delay (at most 1 ms a
        // second) meanwhile, which one long window would count as noise. The median window by
        // SNR stands for the path.
        const WINDOWS: usize = 8;
        let start = (rate as usize / 2).min(total / 4);
        let len = (rate as usize).min(total.saturating_sub(start) / 2) / WINDOWS;
        let max_lag = (max_lag_ms * rate as f32 / 1000.0) as usize;
        let mut found: Vec<Alignment> = (0..WINDOWS)
            .filter_map(|i| {
                let at = start + i * len;
                align(&input[at..at + len], &output[at..], max_lag)
            })
            .collect();
        found.sort_by(|a, b| a.snr_db.total_cmp(&b.snr_db));
        let alignment = found.get(found.len() / 2).copied();
        Ok(LoopbackReport {
            input,
            output,
            alignment,
            stats: engine.stats().snapshot(),
        })
    }
}
