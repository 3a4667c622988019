//! Four plugin instances of one musician in one process (two on tracks that send, two
//! receive-only on empty tracks, one of them from a saved project) and a remote member who
//! sends two named stems: each remote stem arrives on the output it was routed to and nowhere
//! else, the receive-only instances send nothing, and the remote member sees one person — one
//! connection — with two named stems.

use std::sync::Arc;
use std::time::{Duration, Instant};

use echoel_gui::{Command, LinkStatus};
use echoel_plugin::control::Controls;
use echoel_plugin::engine::host_block::HostBlock;
use echoel_plugin::engine::{EngineConfig, EngineParams, AUX_BUSES};
use echoel_plugin::headless::{HeadlessOptions, HeadlessReport, Source};
use echoel_plugin::instance::{Instance, ProcessMode};
use echoel_plugin::params::EchoelParams;
use echoel_tests::{musician, network_runtime, one_at_a_time, play_each, plugin_room};
use nice_plug::prelude::Params;

const RATE: u32 = 48_000;
const BLOCK: usize = 512;
/// Ana's stems and the tones of Mara's two sending tracks, far apart in frequency.
const DRUMS_HZ: f32 = 300.0;
const BASS_HZ: f32 = 2000.0;
const TRACK_A_HZ: f32 = 700.0;
const TRACK_C_HZ: f32 = 1100.0;

/// One of Mara's plugin instances, and what the host got from it.
struct Plugin {
    instance: Instance,
    controls: Arc<Controls>,
    params: Arc<EchoelParams>,
    tone_hz: Option<f32>,
    phase: f64,
    host: HostBlock,
    /// Main output then the aux buses, left channel.
    heard: Vec<Vec<f32>>,
}

impl Plugin {
    fn new(tone_hz: Option<f32>) -> Self {
        Self::with_params(tone_hz, EchoelParams::default())
    }

    fn with_params(tone_hz: Option<f32>, params: EchoelParams) -> Self {
        let controls = Controls::new();
        let params = Arc::new(params);
        if tone_hz.is_none() {
            receive_only(&params);
        }
        let mut instance = Instance::default();
        let config = EngineConfig {
            sample_rate_hz: RATE,
            host_channels: 2,
            max_block_frames: BLOCK,
        };
        instance
            .activate(config, ProcessMode::Realtime, &controls, &params)
            .unwrap();
        instance.set_aux_outputs(AUX_BUSES, &controls).unwrap();
        Self {
            instance,
            controls,
            params,
            tone_hz,
            phase: 0.0,
            host: HostBlock::new(BLOCK, AUX_BUSES),
            heard: vec![Vec::new(); AUX_BUSES + 1],
        }
    }

    fn snapshot(&self) -> echoel_gui::Snapshot {
        self.controls.snapshot().0
    }

    /// One host block: our track's tone in, the main output and every bus out.
    fn block(&mut self, keep: bool) {
        let mut tone = vec![0.0f32; BLOCK];
        if let Some(hz) = self.tone_hz {
            let step = std::f64::consts::TAU * f64::from(hz) / f64::from(RATE);
            for (i, x) in tone.iter_mut().enumerate() {
                *x = (0.3 * (self.phase + step * i as f64).sin()) as f32;
            }
            self.phase += step * BLOCK as f64;
        }
        let params = EngineParams {
            // What we hear of the room only: our own track is not monitored here.
            monitor_gain: 0.0,
            ..self.params.engine_params()
        };
        self.host.input(&tone, &tone);
        self.host
            .process(self.instance.engine().expect("active"), &params);
        if keep {
            self.heard[0].extend_from_slice(self.host.main());
            for (b, out) in self.heard.iter_mut().enumerate().skip(1) {
                out.extend_from_slice(self.host.aux(b));
            }
        }
    }
}

/// Switches Receive Only on, as a host does from its parameter list.
fn receive_only(params: &EchoelParams) {
    let (_, ptr, _) = params
        .param_map()
        .into_iter()
        .find(|(id, _, _)| id == "receive_only")
        .expect("the receive-only parameter");
    // SAFETY: the pointer is into `params`, alive for this call; no audio thread runs yet.
    unsafe { ptr._internal_set_normalized_value(1.0) };
}

/// Power of `hz` in `x` (Goertzel), per sample.
fn power(x: &[f32], hz: f32) -> f64 {
    let w = std::f64::consts::TAU * f64::from(hz) / f64::from(RATE);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64).powi(2)
}

/// Which of the four tones `x` carries: those within 30 dB of the strongest, and audible.
fn tones_in(x: &[f32]) -> Vec<f32> {
    let all = [DRUMS_HZ, BASS_HZ, TRACK_A_HZ, TRACK_C_HZ];
    let p: Vec<f64> = all.iter().map(|&hz| power(x, hz)).collect();
    let top = p.iter().copied().fold(0.0, f64::max);
    all.iter()
        .zip(&p)
        .filter(|(_, &q)| q > 1e-6 && q > top * 1e-3)
        .map(|(&hz, _)| hz)
        .collect()
}

#[test]
fn each_remote_stem_plays_on_the_output_it_was_routed_to_and_nowhere_else() {
    let _one = one_at_a_time();
    let (_dir, _relay, room) = plugin_room("routing");
    // D, receive-only too, opens a project that routed Ana's bass to Aux 3.
    let saved = EchoelParams::default();
    saved.routing.write().unwrap().insert("ana/bass".into(), 3);
    let mut plugins = [
        Plugin::new(Some(TRACK_A_HZ)),
        Plugin::new(None),
        Plugin::new(Some(TRACK_C_HZ)),
        Plugin::with_params(None, saved),
    ];
    for (p, instrument) in plugins
        .iter()
        .zip(["keys", "listening", "guitar", "listening"])
    {
        assert!(p.controls.send(Command::Connect {
            invite: room.to_string(),
            name: "Mara".into(),
            instrument: instrument.into(),
        }));
    }
    // Ana, elsewhere, sends drums and bass as one person.
    let seconds = 16.0;
    let ana = HeadlessOptions {
        stems: vec![
            ("drums".into(), Source::Tone(DRUMS_HZ)),
            ("bass".into(), Source::Tone(BASS_HZ)),
        ],
        ..musician(&room, "ana", 1, seconds)
    };
    let runtime = network_runtime();
    let ana = std::thread::spawn(move || play_each(vec![ana], &runtime));

    // The host's audio thread: every instance's block, in real time.
    let period = Duration::from_secs_f64(BLOCK as f64 / f64::from(RATE));
    let start = Instant::now();
    let mut routed = false;
    let mut keep_from = None;
    let limit = (13.0 * f64::from(RATE) / BLOCK as f64) as u32;
    for b in 0..limit {
        let keep = keep_from.is_some_and(|k| b >= k);
        for p in &mut plugins {
            p.block(keep);
        }
        if !routed && b % 20 == 0 {
            // Once each instance sees Ana's two stems: A puts drums on Aux 1 (and keeps them
            // in its main output); B, on the empty track, takes bass to Aux 2 alone.
            let ready = plugins.iter().all(|p| {
                p.snapshot().link == LinkStatus::Joined
                    && p.snapshot()
                        .people
                        .iter()
                        .any(|x| x.name == "ana" && x.outputs.len() == 2)
            });
            if ready {
                let ana_of = |p: &Plugin| {
                    let s = p.snapshot();
                    let x = s.people.iter().find(|x| x.name == "ana").unwrap().clone();
                    let stem = |n: &str| x.outputs.iter().find(|o| o.name == n).unwrap().stem;
                    (x.participant, stem("drums"), stem("bass"))
                };
                let (who, drums, _) = ana_of(&plugins[0]);
                assert!(plugins[0].controls.send(Command::SetStemRoute {
                    participant: who,
                    stem: drums,
                    bus: 1,
                }));
                let (who, _, bass) = ana_of(&plugins[1]);
                assert!(plugins[1].controls.send(Command::SetStemRoute {
                    participant: who,
                    stem: bass,
                    bus: 2,
                }));
                assert!(plugins[1].controls.send(Command::SetRoutedLeaveMain(true)));
                routed = true;
                // A second for the routes and the buffers to settle, then 3 s heard.
                keep_from = Some(b + (f64::from(RATE) / BLOCK as f64) as u32);
            }
        }
        if keep_from.is_some_and(|k| b > k + (3.0 * f64::from(RATE) / BLOCK as f64) as u32) {
            break;
        }
        if let Some(wait) = (start + period * (b + 1)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    assert!(routed, "the instances never saw Ana's two stems");
    let [a, b, c, d] = &plugins;
    assert!(a.heard[0].len() > 2 * RATE as usize, "too little heard");
    let on = |p: &Plugin, out: usize| tones_in(&p.heard[out]);
    println!(
        "A main {:?} aux1 {:?} | B main {:?} aux1 {:?} aux2 {:?} | C main {:?} aux1 {:?} | D main {:?} aux3 {:?}",
        on(a, 0),
        on(a, 1),
        on(b, 0),
        on(b, 1),
        on(b, 2),
        on(c, 0),
        on(c, 1),
        on(d, 0),
        on(d, 3)
    );
    // A: drums on Aux 1 alone; both stems in its main output; none of Mara's own tracks.
    assert_eq!(on(a, 1), [DRUMS_HZ]);
    assert_eq!(on(a, 0), [DRUMS_HZ, BASS_HZ]);
    // B: bass on Aux 2 and not in its main output, which keeps the drums.
    assert_eq!(on(b, 2), [BASS_HZ]);
    assert_eq!(on(b, 0), [DRUMS_HZ]);
    // C routed nothing: everything of Ana in the main output.
    assert_eq!(on(c, 0), [DRUMS_HZ, BASS_HZ]);
    // D: its project's routing, by Ana's name and the stem's, from the start.
    assert_eq!(on(d, 3), [BASS_HZ]);
    assert_eq!(on(d, 0), [DRUMS_HZ, BASS_HZ]);
    for (name, p) in [("A", a), ("B", b), ("C", c), ("D", d)] {
        for bus in 1..=AUX_BUSES {
            let routed_here = [("A", 1), ("B", 2), ("D", 3)].contains(&(name, bus));
            if !routed_here {
                assert!(
                    p.heard[bus].iter().all(|x| *x == 0.0),
                    "{name}'s Aux {bus} is not silent"
                );
            }
        }
    }

    // What was routed is kept in each project under Ana's name and the stem's.
    assert_eq!(a.params.routing.read().unwrap().get("ana/drums"), Some(&1));
    assert_eq!(b.params.routing.read().unwrap().get("ana/bass"), Some(&2));
    assert!(b.params.engine_params().routed_leave_main);

    let reports: Vec<HeadlessReport> = ana
        .join()
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ana = &reports[0];
    // Ana saw one Mara: one participant, a performer, whose two stems are the two sending
    // tracks (named by their instruments), each carrying its own track's tone; nothing of the
    // receive-only B and D.
    let maras: Vec<_> = ana
        .status
        .members
        .iter()
        .filter(|m| m.info.name == "Mara")
        .collect();
    assert_eq!(maras.len(), 1, "Mara's instances share one connection");
    assert_eq!(maras[0].info.role, echoel_net::wire::Role::Performer);
    let mut heard: Vec<(String, Vec<f32>)> = ana
        .recordings
        .values()
        .filter(|r| r.name == "Mara")
        .map(|r| (r.stem.clone().unwrap_or_default(), tones_in(&r.samples)))
        .collect();
    heard.sort_by(|a, b| a.0.cmp(&b.0));
    println!("Ana heard of Mara: {heard:?}");
    assert_eq!(
        heard,
        [
            ("guitar".to_owned(), vec![TRACK_C_HZ]),
            ("keys".to_owned(), vec![TRACK_A_HZ]),
        ]
    );
    // Each of Mara's editors shows the stems this DAW sends, its own named.
    let stems = |p: &Plugin| {
        let mut all = p.snapshot().me.stems;
        all.sort_unstable();
        (p.snapshot().me.stem, all)
    };
    let both = vec!["guitar".to_owned(), "keys".to_owned()];
    assert_eq!(stems(a), (Some("keys".into()), both.clone()));
    assert_eq!(stems(b), (None, both.clone()));
    assert_eq!(stems(c), (Some("guitar".into()), both));
}
