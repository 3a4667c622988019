//! The whole engine path in loopback: host block → (resample) → Opus → jitter buffer → decode
//! → (resample) → host block, across host rates and block sizes.

use echoel_engine::measure::LoopbackRun;
use echoel_engine::signal::TestSignal;
use echoel_engine::{CodecSettings, Engine, EngineConfig, EngineParams, FrameDuration, JitterMode};

/// Runs the engine in loopback and checks quality and latency; returns the latency in ms.
fn assert_path(run: LoopbackRun, max_latency_ms: f32) -> f32 {
    let report = run.run(max_latency_ms * 1.5).unwrap();
    let a = report.alignment.expect("signal came back");
    let ms = a.lag_ms(run.rate_hz);
    println!(
        "{} Hz: lag {:.2} ms, correlation {:.4}, SNR {:.1} dB, {:?}",
        run.rate_hz, ms, a.correlation, a.snr_db, report.stats
    );
    assert!(a.correlation > 0.95, "correlation {a:?}");
    assert!(a.snr_db > 12.0, "SNR {a:?}");
    assert!(ms < max_latency_ms, "latency {ms} ms");
    assert_eq!(
        report.stats.frames_concealed, 0,
        "a clean loopback conceals nothing"
    );
    ms
}

#[test]
fn loopback_at_48k_with_small_blocks_is_a_few_milliseconds() {
    // Frame 2.5 + lookahead 2.5 + one frame of buffer + block phase: well under 10 ms.
    assert_path(LoopbackRun::new(48_000, 64, 2.0), 10.0);
}

#[test]
fn loopback_at_44k1_with_large_blocks() {
    // A 1024-frame block (23 ms) dominates; the buffer needs one more block of packets.
    assert_path(LoopbackRun::new(44_100, 1024, 2.0), 60.0);
}

#[test]
fn loopback_with_varying_blocks_at_96k_and_20ms_frames() {
    let run = LoopbackRun {
        blocks: vec![1, 7, 480, 33, 4096, 128, 999],
        codec: CodecSettings {
            frame: FrameDuration::Ms20,
            bitrate_bps: 96_000,
            ..CodecSettings::default()
        },
        ..LoopbackRun::new(96_000, 1, 2.5)
    };
    assert_path(run, 150.0);
}

#[test]
fn loopback_with_single_frame_blocks_at_88k2() {
    assert_path(LoopbackRun::new(88_200, 1, 1.8), 10.0);
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
        sample_rate_hz: 800,
        host_channels: 2,
        max_block_frames: 64,
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("800 Hz is not supported"), "{err}");
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
    let base = assert_path(LoopbackRun::new(48_000, 64, 2.0), 10.0);
    let deep = assert_path(
        LoopbackRun {
            jitter: JitterMode::Manual { depth_ms: 20.0 },
            ..LoopbackRun::new(48_000, 64, 2.0)
        },
        40.0,
    );
    assert!(deep - base > 12.0, "manual 20 ms depth: {base} → {deep} ms");
}

#[test]
fn the_deepest_manual_depth_plays() {
    // 200 ms of packets held at 2.5 ms frames is 80 packets: all must fit in the buffer, or
    // the newest restarts playout and nothing is ever heard.
    let ms = assert_path(
        LoopbackRun {
            jitter: JitterMode::Manual {
                depth_ms: echoel_engine::jitter::MAX_DEPTH_MS as f32,
            },
            ..LoopbackRun::new(48_000, 64, 3.0)
        },
        230.0,
    );
    assert!(ms > 195.0, "a 200 ms depth played {ms} ms late");
}

#[test]
fn reactivation_keeps_the_rings_the_counters_and_the_stream() {
    let (mut engine, mut link) = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 2,
        max_block_frames: 128,
    })
    .unwrap();
    let params = EngineParams::default();
    let mut sig = TestSignal::new(48_000);
    for _ in 0..40 {
        let input = sig.take_mono(128);
        let (mut l, mut r) = (input.clone(), input);
        engine.process(&mut [&mut l[..], &mut r[..]], &params);
    }
    let mut before = Vec::new();
    while let Ok(p) = link.outgoing.pop() {
        before.push((p.seq, p.media_time));
    }
    // The host changes its rate and block size: the same link carries on.
    std::thread::sleep(std::time::Duration::from_millis(20));
    engine
        .reactivate(EngineConfig {
            sample_rate_hz: 44_100,
            host_channels: 1,
            max_block_frames: 512,
        })
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(engine.stats(), &link.stats));
    engine.reset();
    for _ in 0..20 {
        let input = TestSignal::new(44_100).take_mono(512);
        let mut mono = input;
        engine.process(&mut [&mut mono[..]], &params);
    }
    let mut after = Vec::new();
    while let Ok(p) = link.outgoing.pop() {
        after.push((p.seq, p.media_time));
    }
    let (last, first) = (
        before.last().unwrap(),
        after.first().expect("still sending"),
    );
    assert_eq!(first.0, last.0 + 1, "the packet counter started over");
    // Media time moved on by the frame and the 20 ms the host spent away, never back.
    assert!(
        first.1 >= last.1 + 120 + 48 * 20 && first.1 < last.1 + 120 + 48 * 200,
        "media time {} after {}",
        first.1,
        last.1
    );
    assert!(after.windows(2).all(|w| w[1].0 == w[0].0 + 1));
}
