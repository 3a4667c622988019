//! The engine's process path allocates nothing: thousands of blocks of varying size at a
//! resampled rate, with packets arriving, missing, malformed, duplicated, from more streams
//! than the engine holds, settings changing underneath, the outgoing ring full, and the drain
//! thread woken after each block that produced packets.

use assert_no_alloc::{assert_no_alloc, reset_violation_count, violation_count, AllocDisabler};
use echoel_engine::signal::TestSignal;
use echoel_engine::{
    CodecSettings, Engine, EngineConfig, EngineParams, FrameDuration, JitterMode, PacketSlot,
    StreamId, AUX_BUSES, MAX_REMOTE_STREAMS,
};
use opus::{Application, Channels, Encoder};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

/// Deterministic pseudo-random numbers (no allocation, no dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % bound.max(1)
    }
}

/// Real Opus packets of each frame size, made before the measured region.
fn encoded_frames(frame: FrameDuration, count: usize) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(48_000, Channels::Stereo, Application::LowDelay).unwrap();
    let mut sig = TestSignal::new(48_000);
    (0..count)
        .map(|_| {
            let pcm: Vec<f32> = (0..frame.samples())
                .flat_map(|_| {
                    let s = sig.next_sample();
                    [s, s]
                })
                .collect();
            let mut out = vec![0u8; 1275];
            let n = enc.encode_float(&pcm, &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

#[test]
fn the_harness_detects_an_allocation() {
    reset_violation_count();
    assert_no_alloc(|| {
        let v = std::hint::black_box(vec![1u8; 64]);
        drop(v);
    });
    assert!(
        violation_count() > 0,
        "assert_no_alloc must see a Vec allocation"
    );
    reset_violation_count();
}

fn run_engine(rate: u32, host_channels: usize, seed: u64, wall_clock: bool, blocks: usize) {
    let max_block = 8192;
    let (mut engine, mut link) = Engine::new(EngineConfig {
        sample_rate_hz: rate,
        host_channels,
        max_block_frames: max_block,
    })
    .unwrap();
    engine.enable_aux(AUX_BUSES).unwrap();
    let mut aux_bufs: Vec<Vec<f32>> = (0..2 * AUX_BUSES).map(|_| vec![0.0; max_block]).collect();
    let packets = [
        encoded_frames(FrameDuration::Ms2_5, 64),
        encoded_frames(FrameDuration::Ms10, 16),
    ];
    let mut rng = Lcg(seed);
    // Its own draws, so the routes leave the rest of the scenario as it was.
    let mut routes = Lcg(seed ^ 0x5eed);
    let mut chans: Vec<Vec<f32>> = (0..host_channels).map(|_| vec![0.0; max_block]).collect();
    let mut sig = TestSignal::new(rate);
    let mut seqs = [0u32; MAX_REMOTE_STREAMS + 4];
    let mut params = EngineParams::default();
    engine.use_wall_clock(wall_clock);
    let mut now = 1u64;
    // The thread the engine wakes after blocks that produced packets: it parks, so each wake
    // inside the measured region is a real futex wake.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let woken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let drain = {
        let (wake, stop, woken) = (link.wake.clone(), stop.clone(), woken.clone());
        std::thread::spawn(move || {
            assert!(wake.register_current());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::park();
                woken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };

    for block in 0..blocks {
        // Half the time the network side drains what we send; half the time the ring fills.
        if block % 200 < 100 {
            while link.outgoing.pop().is_ok() {}
        }
        // The network side's work happens outside the measured region: it is another thread.
        for _ in 0..rng.next(24) {
            let stream = rng.next(seqs.len());
            let kind = rng.next(20);
            seqs[stream] = seqs[stream].wrapping_add(if kind == 0 { 3 } else { 1 });
            let seq = if kind == 1 {
                seqs[stream].wrapping_sub(40)
            } else {
                seqs[stream]
            };
            let set = &packets[stream % 2];
            let payload: &[u8] = if kind == 2 {
                &[0xff, 0x00, 0x13]
            } else {
                &set[seq as usize % set.len()]
            };
            let mut p =
                PacketSlot::new(StreamId(stream as u16), seq, u64::from(seq) * 120, payload)
                    .unwrap();
            // Stamped as the network side stamps them, some long ago (a pause), some not at all.
            p.arrival_ns = match rng.next(8) {
                0 => 0,
                1 => now.saturating_sub(400_000_000),
                _ => now.saturating_sub(rng.next(3_000_000) as u64),
            };
            let _ = link.incoming.push(p);
            if kind == 3 {
                let _ = link.incoming.push(p);
            }
        }
        // Blocks of 1 to 8192 frames, mostly small as hosts use them, now and then huge.
        let n = match rng.next(10) {
            0 => 1 + rng.next(max_block),
            1 => 1,
            _ => 1 + rng.next(512),
        };
        for c in chans.iter_mut() {
            for s in &mut c[..n] {
                *s = sig.next_sample();
            }
        }
        if block % 97 == 0 {
            chans[0][0] = f32::NAN;
        }
        if block % 50 == 0 {
            params = EngineParams {
                send_gain: rng.next(200) as f32 / 100.0,
                send_muted: rng.next(5) == 0,
                monitor_gain: rng.next(100) as f32 / 100.0,
                remote_gain: 1.0,
                loopback: rng.next(2) == 0,
                codec: CodecSettings {
                    bitrate_bps: 48_000 + 16_000 * rng.next(13) as u32,
                    frame: [
                        FrameDuration::Ms2_5,
                        FrameDuration::Ms5,
                        FrameDuration::Ms10,
                        FrameDuration::Ms20,
                    ][rng.next(4)],
                    send_mono: rng.next(2) == 0,
                    complexity: rng.next(11) as u8,
                },
                jitter: if rng.next(2) == 0 {
                    JitterMode::Auto
                } else {
                    JitterMode::Manual {
                        depth_ms: rng.next(60) as f32,
                    }
                },
                // A take recorded now and then: the buffers hold their delay.
                hold_depth: (block / 50) % 3 == 1,
                routed_leave_main: routes.next(2) == 0,
            };
            // Some streams onto auxiliary buses (one past the last: refused, plays in main).
            for _ in 0..4 {
                let id = StreamId(routes.next(seqs.len()) as u16);
                link.stats
                    .set_stream_route(id, routes.next(AUX_BUSES + 2) as u8);
            }
        }
        if block == blocks / 2 {
            // The host re-activates (off the audio thread); the rebuilt engine is as clean.
            engine
                .reactivate(EngineConfig {
                    sample_rate_hz: rate,
                    host_channels,
                    max_block_frames: max_block,
                })
                .unwrap();
            engine.use_wall_clock(wall_clock);
        }
        let mut slices: Vec<&mut [f32]> = chans.iter_mut().map(|c| &mut c[..n]).collect();
        // The host connects a few of the buses, one of them mono.
        let mut aux_ch: Vec<Vec<&mut [f32]>> = aux_bufs
            .chunks_mut(2)
            .enumerate()
            .map(|(b, pair)| {
                let take = if b == 2 { 1 } else { 2 };
                pair.iter_mut().take(take).map(|c| &mut c[..n]).collect()
            })
            .collect();
        let mut aux: Vec<Option<&mut [&mut [f32]]>> = aux_ch
            .iter_mut()
            .enumerate()
            .map(|(b, c)| (b % 3 != 1).then_some(&mut c[..]))
            .collect();
        // The host keeps time, now and then pauses for up to half a second (an xrun, a render
        // in between), and on the wall-clock run reads the real clock.
        now += n as u64 * 1_000_000_000 / u64::from(rate);
        if rng.next(100) == 0 {
            now += rng.next(500_000_000) as u64;
        }
        assert_no_alloc(|| {
            if wall_clock && block % 2 == 0 {
                engine.process_with_aux(&mut slices, &mut aux, &params);
            } else if wall_clock {
                engine.process(&mut slices, &params);
            } else if block % 3 == 0 {
                engine.process_with_aux(&mut slices, &mut aux, &params);
            } else {
                engine.process_at(&mut slices, &params, now);
            }
            if block % 500 == 0 {
                engine.reset();
            }
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    link.wake.wake();
    drain.join().unwrap();
    let stats = engine.stats().snapshot();
    // The scenario really exercised every path it claims to.
    assert!(
        woken.load(std::sync::atomic::Ordering::Relaxed) > blocks as u64 / 30,
        "the drain thread was not woken"
    );
    if rate <= 96_000 {
        // At 384 kHz the same blocks are an eighth of the audio: too little to fill the ring.
        assert!(stats.send_ring_full > 0, "{stats:?}");
    }
    assert!(stats.frames_concealed > 0, "{stats:?}");
    assert!(stats.decode_errors > 0, "{stats:?}");
    assert!(stats.packets_late > 0, "{stats:?}");
    assert!(stats.packets_duplicate > 0, "{stats:?}");
    assert!(stats.frames_decoded > 1000, "{stats:?}");
    assert!(stats.delay_splices > 0, "no time-scaling ran: {stats:?}");
    assert!(stats.samples_sanitised > 0, "{stats:?}");
    assert!(stats.stream_table_full > 0, "{stats:?}");
    if !wall_clock {
        assert!(stats.host_pauses > 0, "{stats:?}");
    }
    println!("{rate} Hz, {host_channels} ch: {stats:?}");
}

#[test]
fn process_path_never_allocates() {
    reset_violation_count();
    run_engine(44_100, 2, 1, false, 3000);
    run_engine(48_000, 1, 2, true, 3000);
    run_engine(96_000, 2, 3, false, 3000);
    // The ends of the rates a host may offer, shorter: the same paths, far more audio.
    run_engine(8_000, 2, 4, false, 400);
    run_engine(384_000, 1, 5, true, 1000);
    assert_eq!(
        violation_count(),
        0,
        "the engine allocated on the audio path"
    );
}
