//! Engine cost against raw libopus for the same frames: 1 encoder + 8 decoders, stereo,
//! 2.5 ms frames, one second of audio per pass (the last two rows with each remote stream on
//! an auxiliary output of its own). Prints a table; asserts nothing (timings on a
//! shared machine are noisy, so the ratio of two measurements taken in one run is the figure).
//!
//! `cargo bench -p echoel-engine --bench engine`

use std::hint::black_box;
use std::time::{Duration, Instant};

use echoel_engine::signal::TestSignal;
use echoel_engine::{
    CodecSettings, Engine, EngineConfig, EngineParams, NetworkLink, PacketSlot, StreamId,
    AUX_BUSES, INTERNAL_RATE_HZ, MAX_OPUS_PACKET_BYTES,
};
use opus::{Application, Bitrate, Channels, Decoder, Encoder};

const REMOTES: usize = 8;
const FRAME: usize = 120;
const FRAMES_PER_SECOND: usize = INTERNAL_RATE_HZ as usize / FRAME;
const PASSES: usize = 9;

fn encoder() -> Encoder {
    let s = CodecSettings::default();
    let mut e = Encoder::new(INTERNAL_RATE_HZ, Channels::Stereo, Application::LowDelay).unwrap();
    e.set_vbr(false).unwrap();
    e.set_bitrate(Bitrate::Bits(s.bitrate_bps as i32)).unwrap();
    e.set_complexity(i32::from(s.complexity)).unwrap();
    e
}

/// One second of interleaved stereo for `voice`.
fn stereo_second(rate: u32, voice: u32) -> Vec<f32> {
    let mut sig = TestSignal::voice(rate, voice);
    (0..rate)
        .flat_map(|_| {
            let s = sig.next_sample();
            [s, s * 0.8]
        })
        .collect()
}

/// A second of Opus packets per remote musician.
fn remote_packets() -> Vec<Vec<Vec<u8>>> {
    (0..REMOTES)
        .map(|r| {
            let pcm = stereo_second(INTERNAL_RATE_HZ, r as u32 + 1);
            let mut enc = encoder();
            pcm.chunks_exact(2 * FRAME)
                .map(|f| {
                    let mut out = vec![0u8; MAX_OPUS_PACKET_BYTES];
                    let n = enc.encode_float(f, &mut out).unwrap();
                    out.truncate(n);
                    out
                })
                .collect()
        })
        .collect()
}

/// Raw libopus: encode our second and decode every remote's second.
fn raw_pass(input: &[f32], packets: &[Vec<Vec<u8>>]) -> Duration {
    let mut enc = encoder();
    let mut decs: Vec<Decoder> = (0..REMOTES)
        .map(|_| Decoder::new(INTERNAL_RATE_HZ, Channels::Stereo).unwrap())
        .collect();
    let mut out = [0u8; MAX_OPUS_PACKET_BYTES];
    let mut pcm = vec![0.0f32; 2 * FRAME];
    let t = Instant::now();
    for (i, frame) in input.chunks_exact(2 * FRAME).enumerate() {
        black_box(enc.encode_float(frame, &mut out).unwrap());
        for (dec, stream) in decs.iter_mut().zip(packets) {
            black_box(dec.decode_float(&stream[i], &mut pcm, false).unwrap());
        }
    }
    t.elapsed()
}

/// The engine at `rate` with `block`-frame host blocks, each remote stream on an auxiliary
/// output of its own when `aux` (eight); only `process` is timed. Packets are delivered as the
/// network thread would, just before the block that plays them.
fn engine_pass(
    rate: u32,
    block: usize,
    aux: bool,
    input: &[f32],
    packets: &[Vec<Vec<u8>>],
) -> Duration {
    let (
        mut engine,
        NetworkLink {
            mut outgoing,
            mut incoming,
            ..
        },
    ) = Engine::new(EngineConfig {
        sample_rate_hz: rate,
        host_channels: 2,
        max_block_frames: block,
    })
    .unwrap();
    if aux {
        engine.enable_aux(AUX_BUSES).unwrap();
        for s in 0..REMOTES {
            engine
                .stats()
                .set_stream_route(StreamId(s as u16), (s % AUX_BUSES + 1) as u8);
        }
    }
    let params = EngineParams::default();
    let (mut l, mut r) = (vec![0.0f32; block], vec![0.0f32; block]);
    let mut aux_bufs = vec![vec![0.0f32; block]; 2 * AUX_BUSES];
    let mut elapsed = Duration::ZERO;
    let mut delivered = 0;
    let frames = input.len() / 2;
    let mut pos = 0;
    while pos < frames {
        let n = block.min(frames - pos);
        // Deliver every packet whose media time starts before this block ends (plus one
        // ahead, as arrival jitter would), all streams.
        let due = (((pos + n) as u64 * u64::from(INTERNAL_RATE_HZ) / u64::from(rate)) as usize)
            .div_ceil(FRAME)
            .min(FRAMES_PER_SECOND);
        while delivered < due {
            for (s, stream) in packets.iter().enumerate() {
                let p = PacketSlot::new(
                    StreamId(s as u16),
                    delivered as u32,
                    (delivered * FRAME) as u64,
                    &stream[delivered],
                )
                .unwrap();
                incoming.push(p).unwrap();
            }
            delivered += 1;
        }
        for (i, f) in input[2 * pos..2 * (pos + n)].chunks_exact(2).enumerate() {
            l[i] = f[0];
            r[i] = f[1];
        }
        let mut aux_ch: Vec<Vec<&mut [f32]>> = aux_bufs
            .chunks_mut(2)
            .map(|pair| pair.iter_mut().map(|b| &mut b[..n]).collect())
            .collect();
        let mut buses: Vec<Option<&mut [&mut [f32]]>> =
            aux_ch.iter_mut().map(|c| Some(&mut c[..])).collect();
        let t = Instant::now();
        if aux {
            engine.process_with_aux(&mut [&mut l[..n], &mut r[..n]], &mut buses, &params);
        } else {
            engine.process(&mut [&mut l[..n], &mut r[..n]], &params);
        }
        elapsed += t.elapsed();
        black_box(&l);
        while outgoing.pop().is_ok() {}
        pos += n;
    }
    let stats = engine.stats().snapshot();
    assert_eq!(stats.decode_errors, 0);
    assert!(
        stats.frames_decoded as usize >= REMOTES * (FRAMES_PER_SECOND - 8),
        "{stats:?}"
    );
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let packets = remote_packets();
    let input48 = stereo_second(INTERNAL_RATE_HZ, 0);
    println!(
        "Echoel Jam engine vs raw libopus: 1 encoder + {REMOTES} decoders, stereo, 2.5 ms frames,"
    );
    println!("one second of audio per pass, median of {PASSES} interleaved passes\n");
    println!(
        "{:<26} {:>14} {:>14} {:>8} {:>12}",
        "case", "engine ms/s", "libopus ms/s", "ratio", "% real time"
    );
    let cases: [(&str, u32, usize, bool); 6] = [
        ("48 kHz, 128-frame blocks", 48_000, 128, false),
        ("48 kHz, 32-frame blocks", 48_000, 32, false),
        ("48 kHz, 1024-frame blocks", 48_000, 1024, false),
        ("44.1 kHz, 256 (resampled)", 44_100, 256, false),
        ("48 kHz, 128, 8 aux outs", 48_000, 128, true),
        ("44.1 kHz, 256, 8 aux outs", 44_100, 256, true),
    ];
    for (name, rate, block, aux) in cases {
        let input = if rate == INTERNAL_RATE_HZ {
            input48.clone()
        } else {
            stereo_second(rate, 0)
        };
        let (mut eng, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..PASSES {
            eng.push(engine_pass(rate, block, aux, &input, &packets));
            raw.push(raw_pass(&input48, &packets));
        }
        let (e, r) = (median(eng), median(raw));
        println!(
            "{:<26} {:>14.2} {:>14.2} {:>8.3} {:>11.2}%",
            name,
            e.as_secs_f64() * 1e3,
            r.as_secs_f64() * 1e3,
            e.as_secs_f64() / r.as_secs_f64(),
            e.as_secs_f64() * 100.0
        );
    }
    println!("\ntargets (48 kHz rows): ratio <= 1.10, <= 5 % of real time");
}
