//! Streams routed to auxiliary outputs: each plays on its bus and, if the musician says so, no
//! longer in the main mix; at the same moment as it would have in the main mix, at 48 kHz and
//! at a host rate the buses convert to; an unrouted bus stays silent.

use echoel_engine::analysis::align;
use echoel_engine::host_block::HostBlock;
use echoel_engine::signal::TestSignal;
use echoel_engine::{Engine, EngineConfig, EngineParams, PacketSlot, StreamId, AUX_BUSES};
use opus::{Application, Channels, Encoder};

const FRAME: usize = 120;
const SECONDS: f32 = 3.0;

/// A remote stream: its own voice, encoded a frame at a time.
struct Sender {
    id: StreamId,
    enc: Encoder,
    sig: TestSignal,
    seq: u32,
}

impl Sender {
    fn new(id: u16, voice: u32) -> Self {
        Self {
            id: StreamId(id),
            enc: Encoder::new(48_000, Channels::Stereo, Application::LowDelay).unwrap(),
            sig: TestSignal::voice(48_000, voice),
            seq: 0,
        }
    }

    fn packet(&mut self) -> PacketSlot {
        let pcm: Vec<f32> = (0..FRAME)
            .flat_map(|_| {
                let s = self.sig.next_sample();
                [s, s]
            })
            .collect();
        let mut out = vec![0u8; 1275];
        let n = self.enc.encode_float(&pcm, &mut out).unwrap();
        let media = u64::from(self.seq) * FRAME as u64;
        self.seq += 1;
        PacketSlot::new(self.id, self.seq - 1, media, &out[..n]).unwrap()
    }
}

/// What the host got: the main output and each aux bus, left channel.
struct Outputs {
    main: Vec<f32>,
    aux: Vec<Vec<f32>>,
}

/// Plays two streams (voices 1 and 2, ids 3 and 4) into an engine at `rate` with `routes`
/// (stream id, bus) set before they start.
fn play(rate: u32, block: usize, routes: &[(u16, u8)], leave_main: bool) -> Outputs {
    let (mut engine, mut link) = Engine::new(EngineConfig {
        sample_rate_hz: rate,
        host_channels: 2,
        max_block_frames: block,
    })
    .unwrap();
    engine.enable_aux(AUX_BUSES).unwrap();
    for &(id, bus) in routes {
        link.stats.set_stream_route(StreamId(id), bus);
    }
    let mut senders = [Sender::new(3, 1), Sender::new(4, 2)];
    let params = EngineParams {
        monitor_gain: 0.0,
        routed_leave_main: leave_main,
        ..EngineParams::default()
    };
    let blocks = (SECONDS * rate as f32) as usize / block;
    let mut got = Outputs {
        main: Vec::new(),
        aux: vec![Vec::new(); AUX_BUSES],
    };
    let (mut sent48, mut played) = (0usize, 0usize);
    let mut host = HostBlock::new(block, AUX_BUSES);
    let input = vec![0.3f32; block];
    for _ in 0..blocks {
        // Packets a frame ahead of what the block plays, as a steady network would bring them.
        played += block;
        while sent48 < played * 48_000 / rate as usize + FRAME {
            for s in &mut senders {
                link.incoming.push(s.packet()).unwrap();
            }
            sent48 += FRAME;
        }
        host.input(&input, &input);
        host.process(&mut engine, &params);
        got.main.extend_from_slice(host.main());
        for (b, out) in got.aux.iter_mut().enumerate() {
            out.extend_from_slice(host.aux(b + 1));
        }
    }
    got
}

/// Where voice `voice` lies in `heard` (samples at `rate`) and how well it matches, over a
/// second from 1.5 s on.
fn find(rate: u32, voice: u32, heard: &[f32]) -> (usize, f32) {
    let r = rate as usize;
    let sent = TestSignal::voice(rate, voice).take_mono(3 * r);
    let (a, len) = (r + r / 2 - r / 5, r);
    // Search from 200 ms before the window: the buffers' delay lies within that.
    align(&sent[a..a + len], &heard[a..], r / 5)
        .map_or((0, 0.0), |f| (f.lag_samples, f.correlation))
}

fn silent(x: &[f32]) -> bool {
    x.iter().all(|s| *s == 0.0)
}

fn check(rate: u32, block: usize) {
    let alone = play(rate, block, &[], false);
    let routed = play(rate, block, &[(3, 1), (4, 7)], true);
    let both = play(rate, block, &[(3, 1)], false);
    let (lag_main, c) = find(rate, 1, &alone.main);
    assert!(c > 0.5, "{rate} Hz: voice 1 unheard in the main mix ({c})");

    // Routed away: each on its own bus, at the moment it had in the main mix, and nowhere else.
    let (lag1, c1) = find(rate, 1, &routed.aux[0]);
    let (lag2, c2) = find(rate, 2, &routed.aux[6]);
    assert!(c1 > 0.9 && c2 > 0.9, "{rate} Hz: aux 1 {c1}, aux 7 {c2}");
    assert!(
        lag1.abs_diff(lag_main) <= 1,
        "{rate} Hz: on its bus at {lag1}, in the main mix at {lag_main}"
    );
    assert_eq!(lag1, lag2, "{rate} Hz: the two buses disagree");
    assert!(
        silent(&routed.main[block..]),
        "{rate} Hz: the main mix still plays what was routed away"
    );
    // Sample for sample what voice 1 alone on aux 1 gives: nothing of voice 2 on it.
    assert!(
        routed.aux[0] == both.aux[0],
        "{rate} Hz: aux 1 holds more than voice 1"
    );
    for b in [1, 2, 3, 4, 5, 7] {
        assert!(
            silent(&routed.aux[b]),
            "{rate} Hz: aux {} is not silent",
            b + 1
        );
    }

    // Routed and kept in the main mix: on both.
    let (_, c_aux) = find(rate, 1, &both.aux[0]);
    let (_, c_main1) = find(rate, 1, &both.main);
    let (_, c_main2) = find(rate, 2, &both.main);
    assert!(c_aux > 0.9, "{rate} Hz: aux 1 {c_aux}");
    assert!(
        c_main1 > 0.5 && c_main2 > 0.5,
        "{rate} Hz: main {c_main1} / {c_main2}"
    );
}

#[test]
fn a_routed_stream_plays_on_its_bus_in_time_and_leaves_the_main_mix() {
    check(48_000, 128);
}

#[test]
fn routing_holds_at_a_host_rate_the_buses_convert_to() {
    check(44_100, 256);
}

#[test]
fn an_engine_without_buses_writes_the_hosts_aux_outputs_silent() {
    let (mut engine, _link) = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 2,
        max_block_frames: 64,
    })
    .unwrap();
    let (mut l, mut r) = (vec![0.1f32; 64], vec![0.1f32; 64]);
    let (mut al, mut ar) = (vec![0.5f32; 64], vec![0.5f32; 64]);
    let mut aux_ch = [&mut al[..], &mut ar[..]];
    engine.process_with_aux(
        &mut [&mut l[..], &mut r[..]],
        &mut [Some(&mut aux_ch[..]), None],
        &EngineParams::default(),
    );
    assert!(silent(&al) && silent(&ar));
}
