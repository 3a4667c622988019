//! Stems between studios over real sockets: a receive-only member (an instance on an empty
//! track that picks up the band) hears everyone, sends nothing, and is seen listening; one
//! person's named stems are heard, and recorded, apart.

use echoel_net::identity_store::IdentityStore;
use echoel_net::wire::Role;
use echoel_plugin::engine::signal::TestSignal;
use echoel_plugin::engine::INTERNAL_RATE_HZ;
use echoel_plugin::headless::{measure_lag, HeadlessOptions, HeadlessReport, Source};
use echoel_plugin::record::Format;
use echoel_tests::{musician, network_runtime, one_at_a_time, play_each, TestRelay};

#[test]
fn a_receive_only_member_hears_everyone_sends_nothing_and_is_seen_listening() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("listen");
    let seconds = 5.0;
    let jo = HeadlessOptions {
        listen: true,
        ..musician(&room, "jo", 3, seconds)
    };
    let reports: Vec<HeadlessReport> = play_each(
        vec![
            musician(&room, "ana", 1, seconds),
            musician(&room, "ben", 2, seconds),
            jo,
        ],
        &network_runtime(),
    )
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let by = |name: &str| reports.iter().find(|r| r.name == name).expect("a report");
    let jo = by("jo");
    assert_eq!(jo.datagrams_sent, 0, "the listener sent audio");
    let mut heard: Vec<&str> = jo.recordings.values().map(|r| r.name.as_str()).collect();
    heard.sort_unstable();
    assert_eq!(heard, ["ana", "ben"]);
    for rec in jo.recordings.values() {
        let a = measure_lag(&by(&rec.name).sent, &rec.samples, 200.0).expect("a signal");
        println!(
            "{} → jo: {:.2} ms, correlation {:.4}",
            rec.name,
            a.lag_ms(INTERNAL_RATE_HZ),
            a.correlation
        );
        assert!(a.correlation > 0.9, "{} → jo: {a:?}", rec.name);
    }
    for name in ["ana", "ben"] {
        let r = by(name);
        let heard: Vec<&str> = r.recordings.values().map(|r| r.name.as_str()).collect();
        assert_eq!(heard.len(), 1, "{name} heard {heard:?}");
        assert!(!heard.contains(&"jo"), "{name} heard the listener");
        let jo_seen = r
            .status
            .members
            .iter()
            .find(|m| m.info.name == "jo")
            .expect("jo in the room");
        assert_eq!(
            jo_seen.info.role,
            Role::Listener,
            "{name} sees jo as a performer"
        );
        let other = r
            .status
            .members
            .iter()
            .find(|m| m.info.name != "jo")
            .unwrap();
        assert_eq!(other.info.role, Role::Performer);
    }
}

/// Ana sends two named stems as one person; Ben hears each on a stream of its own, named,
/// each the right signal, sees one Ana in the room, and a take he records holds a file per
/// stem, named after it.
#[test]
fn one_person_sends_two_named_stems_heard_and_recorded_apart() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("stems");
    let folder = tempfile::tempdir().unwrap();
    let seconds = 5.0;
    let ana = HeadlessOptions {
        stems: vec![
            ("vocals".into(), Source::Voice(1)),
            ("keys".into(), Source::Voice(4)),
        ],
        ..musician(&room, "ana", 1, seconds)
    };
    let ben = HeadlessOptions {
        record: Some((folder.path().to_owned(), Format::Opus)),
        ..musician(&room, "ben", 2, seconds)
    };
    let reports: Vec<HeadlessReport> = play_each(vec![ana, ben], &network_runtime())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (ana, ben) = (&reports[0], &reports[1]);
    let keys = TestSignal::voice(INTERNAL_RATE_HZ, 4).take_mono(ana.sent.len());
    let mut heard = Vec::new();
    for rec in ben.recordings.values() {
        assert_eq!(rec.name, "ana");
        let stem = rec.stem.clone().expect("a named stem");
        let sent = if stem == "keys" { &keys } else { &ana.sent };
        let a = measure_lag(sent, &rec.samples, 200.0).expect("a signal");
        println!("ana/{stem} → ben: correlation {:.4}", a.correlation);
        assert!(
            a.correlation > 0.9,
            "ana/{stem} is not its own signal: {a:?}"
        );
        heard.push(stem);
    }
    heard.sort_unstable();
    assert_eq!(heard, ["keys", "vocals"]);
    let members: Vec<&str> = ben
        .status
        .members
        .iter()
        .map(|m| m.info.name.as_str())
        .collect();
    assert_eq!(members, ["ana"], "one person, not one per stem");
    let Some(Ok(take)) = &ben.take else {
        panic!("no take: {:?}", ben.take)
    };
    let mut files: Vec<String> = take
        .files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort_unstable();
    assert_eq!(files, ["ana-keys.opus", "ana-vocals.opus", "ben-sent.opus"]);
}

/// One musician's plugins in two processes (a DAW that runs each plugin in its own) keep the
/// room's member key in one data folder: both join as that person, each a participant with
/// its own stream; neither replaces the other; Ben hears each signal on its own track and sees
/// one key behind both; neither of Ana's hears the other. The key stays in the folder for the
/// next session.
#[test]
fn one_musicians_plugins_in_two_processes_are_one_person_with_two_streams() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("one-person");
    let data = tempfile::tempdir().unwrap();
    let seconds = 5.0;
    let ana = |voice| HeadlessOptions {
        identity: Some(data.path().to_owned()),
        ..musician(&room, "ana", voice, seconds)
    };
    let reports: Vec<HeadlessReport> = play_each(
        vec![ana(1), ana(4), musician(&room, "ben", 2, seconds)],
        &network_runtime(),
    )
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let kept = IdentityStore::new(data.path())
        .key_for(&room)
        .expect("the key kept")
        .public();
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.joins, 1, "{} ({i}) had to join again", r.name);
    }
    let ben = &reports[2];
    let anas: Vec<_> = ben
        .status
        .members
        .iter()
        .filter(|m| m.info.name == "ana")
        .collect();
    assert_eq!(anas.len(), 2, "both of Ana's plugins are in the room");
    assert!(anas.iter().all(|m| m.info.member == kept), "one person");
    assert_ne!(anas[0].info.participant, anas[1].info.participant);
    let mut matched = Vec::new();
    for rec in ben.recordings.values() {
        assert_eq!(rec.name, "ana");
        assert_eq!(rec.member, Some(kept));
        let best = [0, 1]
            .into_iter()
            .map(|i| {
                let a = measure_lag(&reports[i].sent, &rec.samples, 200.0);
                (i, a.map_or(0.0, |a| a.correlation))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        println!("ana's plugin {} → ben: correlation {:.4}", best.0, best.1);
        assert!(
            best.1 > 0.9,
            "a stream of Ana's is neither signal: {best:?}"
        );
        matched.push(best.0);
    }
    matched.sort_unstable();
    assert_eq!(matched, [0, 1], "each plugin on a track of its own");
    // Each of Ana's plugins hears Ben, not her other plugin: that track is in her DAW already.
    for ana in &reports[..2] {
        let heard: Vec<&str> = ana.recordings.values().map(|r| r.name.as_str()).collect();
        assert_eq!(heard, ["ben"], "one of Ana's plugins heard {heard:?}");
    }
}
