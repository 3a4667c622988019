//! Each remote stream's level in our mix follows its slot's `mix_gain` (the editor's per-member
//! gain, mute and solo), and its peak is published for the meters.

use std::sync::atomic::Ordering::Relaxed;

use echoel_engine::signal::TestSignal;
use echoel_engine::{Engine, EngineConfig, EngineParams, PacketSlot, StreamId, StreamStats};
use opus::{Application, Channels, Encoder};

const FRAME: usize = 120;

/// Plays `blocks` 2.5 ms blocks with one packet of a stream arriving before each, and returns
/// the output's RMS over the last half and its peak over all of them.
fn play(
    engine: &mut Engine,
    link: &mut echoel_engine::NetworkLink,
    enc: &mut Encoder,
    sig: &mut TestSignal,
    seq: &mut u32,
    blocks: usize,
) -> (f32, f32) {
    let params = EngineParams {
        monitor_gain: 0.0,
        ..EngineParams::default()
    };
    let (mut sum, mut count, mut peak) = (0.0f64, 0usize, 0.0f32);
    let mut l = vec![0.0f32; FRAME];
    let mut r = vec![0.0f32; FRAME];
    for b in 0..blocks {
        let pcm: Vec<f32> = (0..FRAME)
            .flat_map(|_| {
                let s = sig.next_sample();
                [s, s]
            })
            .collect();
        let mut out = vec![0u8; 1275];
        let n = enc.encode_float(&pcm, &mut out).unwrap();
        let p =
            PacketSlot::new(StreamId(3), *seq, u64::from(*seq) * FRAME as u64, &out[..n]).unwrap();
        *seq += 1;
        link.incoming.push(p).unwrap();
        l.fill(0.0);
        r.fill(0.0);
        engine.process(&mut [&mut l[..], &mut r[..]], &params);
        peak = l.iter().fold(peak, |p, x| p.max(x.abs()));
        if b >= blocks / 2 {
            sum += l.iter().map(|x| f64::from(x * x)).sum::<f64>();
            count += FRAME;
        }
    }
    ((sum / count as f64).sqrt() as f32, peak)
}

#[test]
fn mix_gain_mutes_and_scales_one_stream_and_its_peak_is_published() {
    let (mut engine, mut link) = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 2,
        max_block_frames: FRAME,
    })
    .unwrap();
    let mut enc = Encoder::new(48_000, Channels::Stereo, Application::LowDelay).unwrap();
    let mut sig = TestSignal::new(48_000);
    let mut seq = 0;
    let (full, _) = play(&mut engine, &mut link, &mut enc, &mut sig, &mut seq, 400);
    assert!(full > 0.01, "the stream plays at unity: rms {full}");
    let stats = engine.stats().clone();
    let slot = stats
        .streams
        .iter()
        .find(|s| s.stream.load(Relaxed) == 3)
        .expect("the stream holds a slot");
    assert!(slot.peak.load(Relaxed) > 0.01);

    slot.mix_gain.store(0.5, Relaxed);
    let (half, _) = play(&mut engine, &mut link, &mut enc, &mut sig, &mut seq, 400);
    let ratio = half / full;
    assert!((0.45..0.55).contains(&ratio), "half gain gave {ratio}×");

    slot.mix_gain.store(0.0, Relaxed);
    let (muted, _) = play(&mut engine, &mut link, &mut enc, &mut sig, &mut seq, 400);
    assert!(muted < full * 1e-3, "muted rms {muted}");
    // Still decoded and metered while muted: unmuting is instant and the meter moves.
    assert!(slot.peak.load(Relaxed) > 0.01);
    assert_ne!(slot.stream.load(Relaxed), StreamStats::FREE);
}

#[test]
fn a_muted_member_is_silent_from_their_first_block() {
    let (mut engine, mut link) = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 2,
        max_block_frames: FRAME,
    })
    .unwrap();
    // The network side knows the member is muted before their first packet comes.
    link.stats.set_stream_gain(StreamId(3), 0.0);
    let mut enc = Encoder::new(48_000, Channels::Stereo, Application::LowDelay).unwrap();
    let mut sig = TestSignal::new(48_000);
    let mut seq = 0;
    let (_, peak) = play(&mut engine, &mut link, &mut enc, &mut sig, &mut seq, 100);
    assert_eq!(peak, 0.0, "a muted member was heard");
    let slot = engine
        .stats()
        .streams
        .iter()
        .find(|s| s.stream.load(Relaxed) == 3)
        .expect("the stream holds a slot");
    assert!(
        slot.peak.load(Relaxed) > 0.01,
        "decoded and metered all the same"
    );
    // Unmuted through the slot, as the control thread does: heard.
    slot.mix_gain.store(1.0, Relaxed);
    let (rms, _) = play(&mut engine, &mut link, &mut enc, &mut sig, &mut seq, 100);
    assert!(rms > 0.01, "rms {rms}");
}
