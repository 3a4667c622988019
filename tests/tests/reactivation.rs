//! A host re-activates the plugin (a new sample rate or buffer size) mid-session: the musician
//! stays in the room as the same person, on one stream the others hear continue.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echoel_gui::{Command, LinkStatus};
use echoel_net::wire::ParticipantId;
use echoel_plugin::control::Controls;
use echoel_plugin::engine::signal::TestSignal;
use echoel_plugin::engine::{EngineConfig, EngineParams};
use echoel_plugin::instance::Instance;
use echoel_plugin::instance::ProcessMode;
use echoel_plugin::params::EchoelParams;
use echoel_tests::{plugin_room, wait_until};

/// Plays `seconds` of blocks in real time through the instance's engine.
fn play(instance: &mut Instance, rate: u32, block: usize, seconds: f32) {
    let mut sig = TestSignal::new(rate);
    let period = Duration::from_secs_f64(block as f64 / f64::from(rate));
    let start = Instant::now();
    let blocks = (seconds * rate as f32 / block as f32) as u32;
    for b in 0..blocks {
        let input = sig.take_mono(block);
        let (mut l, mut r) = (input.clone(), input);
        instance
            .engine()
            .expect("active")
            .process(&mut [&mut l[..], &mut r[..]], &EngineParams::default());
        if let Some(wait) = (start + period * (b + 1)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Bo, a member who records every frame he hears: (sender, number, media time).
type Heard = Arc<Mutex<Vec<(ParticipantId, u32, u64)>>>;

fn listener(room: &echoel_net::Invite) -> (echoel_net::session::SessionHandle, Heard) {
    let heard: Heard = Arc::default();
    let log = heard.clone();
    let _rt = echoel_plugin::bridge::network_runtime().enter();
    let bo = echoel_net::session::start(
        echoel_net::session::SessionConfig::new(room.clone(), "Bo"),
        // Frames in their own datagrams: a frame recovered from a later one's redundancy (loss
        // protection switches itself on at the gap) fills in after it, out of order by design.
        move |from, f| {
            if !f.recovered {
                log.lock().unwrap().push((from, f.seq, f.media_time));
            }
        },
    )
    .unwrap();
    (bo, heard)
}

#[test]
fn re_activation_keeps_the_participant_the_room_and_the_stream() {
    let _one = echoel_tests::one_at_a_time();
    let (_dir, _relay, room) = plugin_room("reactivate");

    // Bo listens, noting who sent each frame and its media time.
    let (bo, heard) = listener(&room);
    let frames = || heard.lock().unwrap().len();
    let controls = Controls::new();
    let params = Arc::new(EchoelParams::default());
    let mut ana = Instance::default();
    let config = |rate, block| EngineConfig {
        sample_rate_hz: rate,
        host_channels: 2,
        max_block_frames: block,
    };
    ana.activate(
        config(48_000, 256),
        ProcessMode::Realtime,
        &controls,
        &params,
    )
    .unwrap();
    assert!(controls.send(Command::Connect {
        invite: room.to_string(),
        name: "Ana".into(),
        instrument: "bass".into(),
    }));
    assert!(wait_until(Duration::from_secs(10), || controls
        .snapshot()
        .0
        .link
        == LinkStatus::Joined));
    play(&mut ana, 48_000, 256, 1.0);
    assert!(wait_until(Duration::from_secs(5), || frames() > 50));
    let members = bo.status().members;
    assert_eq!(members.len(), 1, "{members:?}");
    let who = members[0].info.participant;
    // Ana has turned Bo down in her mix.
    assert!(wait_until(Duration::from_secs(5), || controls
        .snapshot()
        .0
        .people
        .iter()
        .any(|p| p.name == "Bo")));
    let bo_id = controls.snapshot().0.people[0].participant;
    assert!(controls.send(Command::SetPeerGain {
        participant: bo_id,
        gain_db: -9.0,
    }));
    assert!(wait_until(Duration::from_secs(5), || controls
        .snapshot()
        .0
        .people
        .iter()
        .any(|p| p.gain_db == -9.0)));

    // The host switches to 44.1 kHz and larger blocks; Ana plays on.
    let before = frames();
    ana.activate(
        config(44_100, 1024),
        ProcessMode::Realtime,
        &controls,
        &params,
    )
    .unwrap();
    play(&mut ana, 44_100, 1024, 1.0);
    assert!(wait_until(Duration::from_secs(5), || heard
        .lock()
        .unwrap()
        .len()
        > before + 50));

    let heard = heard.lock().unwrap().clone();
    let members = bo.status().members;
    assert_eq!(
        members.len(),
        1,
        "Ana left or came back as another: {members:?}"
    );
    assert_eq!(
        members[0].info.participant, who,
        "Ana rejoined as someone else"
    );
    let people = controls.snapshot().0.people;
    assert!(
        people
            .iter()
            .any(|p| p.participant == bo_id && p.gain_db == -9.0),
        "Ana's mix of Bo was lost: {people:?}"
    );
    assert!(
        heard.iter().all(|(p, _, _)| *p == who),
        "frames from someone else"
    );
    // One stream: numbers consecutive, media time never back, across the re-activation.
    for w in heard.windows(2) {
        assert!(
            w[1].1 > w[0].1 && w[1].2 > w[0].2,
            "{:?} after {:?}",
            w[1],
            w[0]
        );
    }
    bo.stop();
}

#[test]
fn an_offline_render_passes_the_dry_signal_and_sends_nothing() {
    let _one = echoel_tests::one_at_a_time();
    let (_dir, _relay, room) = plugin_room("bounce");
    let (bo, heard) = listener(&room);
    let frames = || heard.lock().unwrap().len();
    let controls = Controls::new();
    let params = Arc::new(EchoelParams::default());
    let mut ana = Instance::default();
    let config = EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 2,
        max_block_frames: 512,
    };
    ana.activate(config, ProcessMode::Realtime, &controls, &params)
        .unwrap();
    assert!(controls.send(Command::Connect {
        invite: room.to_string(),
        name: "Ana".into(),
        instrument: "keys".into(),
    }));
    assert!(wait_until(Duration::from_secs(10), || controls
        .snapshot()
        .0
        .link
        == LinkStatus::Joined
        && !bo.status().members.is_empty()));

    // The host bounces: blocks as fast as it can render them.
    ana.activate(config, ProcessMode::Offline, &controls, &params)
        .unwrap();
    let mut sig = TestSignal::new(48_000);
    let mut worst = 0.0f32;
    for _ in 0..400 {
        let input = sig.take_mono(512);
        let (mut l, mut r) = (input.clone(), input.clone());
        ana.engine()
            .unwrap()
            .process(&mut [&mut l[..], &mut r[..]], &EngineParams::default());
        for (o, i) in l.iter().zip(&input) {
            worst = worst.max((o - i).abs());
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(frames(), 0, "a bounce was sent to the room");
    assert!(worst < 1e-6, "the dry signal changed by {worst}");
    assert!(wait_until(Duration::from_secs(2), || controls
        .snapshot()
        .0
        .rendering_offline));
    // Back in real time: the room hears us again, as the same member.
    ana.activate(config, ProcessMode::Realtime, &controls, &params)
        .unwrap();
    play(&mut ana, 48_000, 512, 1.0);
    assert!(wait_until(Duration::from_secs(5), || frames() > 50));
    assert_eq!(bo.status().members.len(), 1);
    bo.stop();
}
