//! Stems between studios over real sockets: a receive-only member (an instance on an empty
//! track that picks up the band) hears everyone, sends nothing, and is seen listening.

use echoel_net::wire::Role;
use echoel_plugin::engine::INTERNAL_RATE_HZ;
use echoel_plugin::headless::{measure_lag, HeadlessOptions, HeadlessReport};
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
