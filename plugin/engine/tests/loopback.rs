//! The whole engine path in loopback: host block → (resample) → Opus → jitter buffer → decode
//! → (resample) → host block, across host rates and block sizes.

use echoel_engine::analysis::align;
use echoel_engine::signal::TestSignal;
use echoel_engine::{CodecSettings, Engine, EngineConfig, EngineParams, FrameDuration, JitterMode};

/// Runs `seconds` of the test signal through a loopback engine with the dry monitor muted, so
/// the output is only the coded path. Returns (input, output) of the left channel.
fn run(rate: u32, blocks: &[usize], seconds: f32, codec: CodecSettings) -> (Vec<f32>, Vec<f32>) {
    let max_block = *blocks.iter().max().unwrap();
    let (mut engine, _link) = Engine::new(EngineConfig {
        sample_rate_hz: rate,
        host_channels: 2,
        max_block_frames: max_block,
    })
    .unwrap();
    let params = EngineParams {
        monitor_gain: 0.0,
        loopback: true,
        codec,
        ..EngineParams::default()
    };
    let total = (seconds * rate as f32) as usize;
    let input = TestSignal::new(rate).take_mono(total);
    let mut output = Vec::with_capacity(total);
    let (mut l, mut r) = (vec![0.0; max_block], vec![0.0; max_block]);
    let mut pos = 0;
    for &b in blocks.iter().cycle() {
        if pos >= total {
            break;
        }
        let n = b.min(total - pos);
        l[..n].copy_from_slice(&input[pos..pos + n]);
        r[..n].copy_from_slice(&input[pos..pos + n]);
        let mut chans: [&mut [f32]; 2] = [&mut l[..n], &mut r[..n]];
        engine.process(&mut chans, &params);
        output.extend_from_slice(&l[..n]);
        pos += n;
    }
    (input, output)
}

/// Aligns the middle second of the output against the input and checks quality and latency.
fn assert_path(rate: u32, input: &[f32], output: &[f32], max_latency_ms: f32) -> f32 {
    let start = rate as usize / 2;
    let reference = &input[start..start + rate as usize];
    let max_lag = (max_latency_ms * 1.5 * rate as f32 / 1000.0) as usize;
    let a = align(reference, &output[start..], max_lag).expect("signal present");
    let ms = a.lag_ms(rate);
    println!(
        "{rate} Hz: lag {:.2} ms, correlation {:.4}, SNR {:.1} dB",
        ms, a.correlation, a.snr_db
    );
    assert!(a.correlation > 0.95, "correlation {a:?}");
    assert!(a.snr_db > 12.0, "SNR {a:?}");
    assert!(ms < max_latency_ms, "latency {ms} ms");
    ms
}

#[test]
fn loopback_at_48k_with_small_blocks_is_a_few_milliseconds() {
    let (i, o) = run(48_000, &[64], 2.0, CodecSettings::default());
    // Frame 2.5 + lookahead 2.5 + one frame of buffer + block phase: well under 10 ms.
    assert_path(48_000, &i, &o, 10.0);
}

#[test]
fn loopback_at_44k1_with_large_blocks() {
    let (i, o) = run(44_100, &[1024], 2.0, CodecSettings::default());
    // A 1024-frame block (23 ms) dominates; the buffer needs one more block of packets.
    assert_path(44_100, &i, &o, 60.0);
}

#[test]
fn loopback_with_varying_blocks_at_96k_and_20ms_frames() {
    let codec = CodecSettings {
        frame: FrameDuration::Ms20,
        bitrate_bps: 96_000,
        ..CodecSettings::default()
    };
    let (i, o) = run(96_000, &[1, 7, 480, 33, 4096, 128, 999], 2.5, codec);
    assert_path(96_000, &i, &o, 150.0);
}

#[test]
fn loopback_with_single_frame_blocks_at_88k2() {
    let (i, o) = run(88_200, &[1], 1.8, CodecSettings::default());
    assert_path(88_200, &i, &o, 10.0);
}

#[test]
fn unity_settings_pass_input_through_exactly() {
    let (mut engine, _link) = Engine::new(EngineConfig {
        sample_rate_hz: 44_100,
        host_channels: 2,
        max_block_frames: 256,
    })
    .unwrap();
    let input = TestSignal::new(44_100).take_mono(256);
    for _ in 0..20 {
        let (mut l, mut r) = (input.clone(), input.clone());
        engine.process(&mut [&mut l[..], &mut r[..]], &EngineParams::default());
        assert_eq!(l, input);
        assert_eq!(r, input);
    }
}

#[test]
fn non_finite_input_is_silenced_and_counted_and_empty_blocks_are_fine() {
    let (mut engine, _link) = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 1,
        max_block_frames: 128,
    })
    .unwrap();
    let params = EngineParams {
        loopback: true,
        ..EngineParams::default()
    };
    engine.process(&mut [&mut [][..]], &params);
    for _ in 0..50 {
        let mut block = vec![f32::NAN; 128];
        block[3] = f32::INFINITY;
        block[4] = 0.25;
        engine.process(&mut [&mut block[..]], &params);
        assert!(block.iter().all(|s| s.is_finite()), "output stays finite");
    }
    let stats = engine.stats().snapshot();
    assert_eq!(stats.samples_sanitised, 50 * 127);
    assert!(stats.frames_decoded > 0);
}

#[test]
fn unsupported_rate_and_layout_are_refused_with_a_clear_message() {
    let err = Engine::new(EngineConfig {
        sample_rate_hz: 22_050,
        host_channels: 2,
        max_block_frames: 64,
    })
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("22050 Hz is not supported"),
        "{err}"
    );
    let err = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 6,
        max_block_frames: 64,
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("mono or stereo"), "{err}");
}

#[test]
fn manual_depth_adds_the_requested_latency() {
    let shallow = CodecSettings::default();
    let (i, o) = run(48_000, &[64], 2.0, shallow);
    let base = assert_path(48_000, &i, &o, 10.0);
    // Same path with 20 ms of manual depth: latency grows by roughly that.
    let (mut engine, _link) = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 2,
        max_block_frames: 64,
    })
    .unwrap();
    let params = EngineParams {
        monitor_gain: 0.0,
        loopback: true,
        jitter: JitterMode::Manual { depth_ms: 20.0 },
        ..EngineParams::default()
    };
    let input = TestSignal::new(48_000).take_mono(96_000);
    let mut out = Vec::new();
    for chunk in input.chunks(64) {
        let (mut l, mut r) = (chunk.to_vec(), chunk.to_vec());
        engine.process(&mut [&mut l[..], &mut r[..]], &params);
        out.extend_from_slice(&l);
    }
    let deep = assert_path(48_000, &input, &out, 40.0);
    assert!(deep - base > 12.0, "manual 20 ms depth: {base} → {deep} ms");
}
