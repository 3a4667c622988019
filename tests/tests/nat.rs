//! Direct paths through home routers, on a small internet of network namespaces the test
//! makes itself (see `echoel_tests::netns`): two studios behind port-preserving NATs that drop
//! unsolicited traffic punch through to each other; one behind a symmetric NAT goes by the
//! relay and is told why; two behind one router meet on their LAN. Skipped, saying why, where
//! namespaces cannot be made (not root, no `ip` or `nft`).

use std::time::Duration;

use echoel_net::session::{RelayWhy, Route};
use echoel_plugin::headless::{self, HeadlessOptions, HeadlessReport};
use echoel_tests::netns::{in_ns, Lab, Mapping, INTERNET, RELAY_IP};
use echoel_tests::{network_runtime, one_at_a_time, TestRelay};

/// Makes the lab, or says why not (and the test passes by skipping).
fn lab(test: &str) -> Option<Lab> {
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Lab::new(test).expect("the lab's namespaces"))
}

/// A relay on the lab's internet, started inside its namespace; and a room on it.
fn relay(lab: &Lab, dir: &std::path::Path) -> (TestRelay, echoel_net::Invite) {
    let dir = dir.to_owned();
    let addr = std::net::SocketAddr::from((RELAY_IP, 0));
    let relay = in_ns(&lab.ns(INTERNET), move || {
        TestRelay::start_with(addr, &dir, |_| {})
    })
    .join()
    .expect("relay thread")
    .expect("relay in its namespace");
    let invite = relay.room("nat");
    (relay, invite)
}

/// Two studios, "ana" behind router 1 and "ben" behind router 2 (or both behind router 1),
/// and a room for them on a relay on the internet. Keep the scratch folder while it runs.
struct Setup {
    lab: Lab,
    studios: Vec<(&'static str, String)>,
    invite: echoel_net::Invite,
    _relay: TestRelay,
    _dir: tempfile::TempDir,
}

fn setup(test: &str, first: Mapping, second: Option<Mapping>) -> Option<Setup> {
    let mut lab = lab(test)?;
    lab.router(1, first).expect("router 1");
    let b = match second {
        Some(m) => {
            lab.router(2, m).expect("router 2");
            lab.studio(2, 2).expect("studio b")
        }
        None => lab.studio(1, 3).expect("studio b"),
    };
    let a = lab.studio(1, 2).expect("studio a");
    let dir = tempfile::tempdir().expect("scratch");
    let (relay, invite) = relay(&lab, dir.path());
    Some(Setup {
        lab,
        studios: vec![("ana", a), ("ben", b)],
        invite,
        _relay: relay,
        _dir: dir,
    })
}

/// Plays `seconds` of voice as each named studio, each in its namespace, all at once.
fn jam(
    invite: &echoel_net::Invite,
    studios: &[(&str, String)],
    seconds: f32,
) -> Vec<HeadlessReport> {
    let handles: Vec<_> = studios
        .iter()
        .enumerate()
        .map(|(k, (name, ns))| {
            let mut opts = HeadlessOptions::voice(invite, name, k as u32 + 1, seconds);
            opts.force_relay = false;
            in_ns(ns, move || {
                let rt = network_runtime();
                headless::run(opts, rt.handle()).map_err(|e| e.to_string())
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .expect("studio thread")
                .expect("studio in its namespace")
                .expect("studio ran")
        })
        .collect()
}

/// How `report`'s studio reached `other` while they played.
fn route(report: &HeadlessReport, other: &str) -> Route {
    let rec = report.recordings.values().find(|r| r.name == other);
    rec.unwrap_or_else(|| panic!("{} never heard {other}", report.name))
        .route
        .clone()
}

/// `report`'s studio heard `other` (frames decoded, over a direct path if `direct`).
fn heard(report: &HeadlessReport, other: &str, direct: bool) {
    let rec = report.recordings.values().find(|r| r.name == other);
    let rec = rec.unwrap_or_else(|| panic!("{} heard nothing of {other}", report.name));
    let decoded = rec.stream.map_or(0, |s| s.frames_decoded);
    assert!(
        decoded > 400,
        "{} decoded {decoded} frames of {other}",
        report.name
    );
    assert_eq!(
        rec.direct, direct,
        "{} → {}: direct path",
        other, report.name
    );
}

#[test]
fn studios_behind_port_preserving_nats_punch_through_within_two_seconds() {
    let _one = one_at_a_time();
    let Some(s) = setup("pp", Mapping::PortPreserving, Some(Mapping::PortPreserving)) else {
        return;
    };
    let reports = jam(&s.invite, &s.studios, 5.0);
    for (me, other) in [(0, "ben"), (1, "ana")] {
        let r = &reports[me];
        match route(r, other) {
            Route::Direct { lan, after, addr } => {
                assert!(!lan, "{} → {other}: a LAN path to {addr}?", r.name);
                assert!(
                    after <= Duration::from_secs(2),
                    "{} → {other}: direct after {after:?}",
                    r.name
                );
                eprintln!("{} → {other}: direct to {addr} after {after:?}", r.name);
            }
            other_route => panic!("{} → {other}: {other_route}", r.name),
        }
        heard(r, other, true);
    }
}

#[test]
fn a_studio_behind_a_symmetric_nat_goes_by_the_relay_and_is_told_why() {
    let _one = one_at_a_time();
    let Some(s) = setup("sym", Mapping::PortPreserving, Some(Mapping::Symmetric)) else {
        return;
    };
    // Long enough for both ends to give up on a direct path and say so.
    let reports = jam(&s.invite, &s.studios, 10.0);
    for (me, other) in [(0, "ben"), (1, "ana")] {
        let r = &reports[me];
        let route = route(r, other);
        eprintln!("{} → {other}: {route}", r.name);
        // Ben's router is the symmetric one: the relay's reflector saw it at another port.
        let ours = me == 1;
        assert!(
            matches!(route, Route::Relay(RelayWhy::Blocked { our_ports_differ, .. }) if our_ports_differ == ours),
            "{} → {other}: {route}",
            r.name
        );
        heard(r, other, false);
    }
}

#[test]
fn two_studios_behind_one_router_meet_on_their_lan() {
    let _one = one_at_a_time();
    let Some(s) = setup("lan", Mapping::PortPreserving, None) else {
        return;
    };
    let reports = jam(&s.invite, &s.studios, 5.0);
    for (me, other) in [(0, "ben"), (1, "ana")] {
        let r = &reports[me];
        let route = route(r, other);
        eprintln!("{} → {other}: {route}", r.name);
        assert!(
            matches!(route, Route::Direct { lan: true, .. }),
            "{} → {other}: {route}",
            r.name
        );
        heard(r, other, true);
    }
}

/// Frames `report`'s studio concealed of `other` between two moments of its run.
fn concealed_between(report: &HeadlessReport, other: &str, from_s: f32, to_s: f32) -> u64 {
    let rec = report.recordings.values().find(|r| r.name == other);
    let rec = rec.unwrap_or_else(|| panic!("{} never heard {other}", report.name));
    let at = |t: f32| {
        rec.timeline
            .iter()
            .take_while(|p| p.at_s <= t)
            .last()
            .map_or(0, |p| p.concealed)
    };
    at(to_s) - at(from_s)
}

#[test]
fn a_direct_path_blocked_mid_jam_hands_over_to_the_relay_and_comes_back() {
    let _one = one_at_a_time();
    let Some(s) = setup(
        "blk",
        Mapping::PortPreserving,
        Some(Mapping::PortPreserving),
    ) else {
        return;
    };
    // Router 1 drops everything to and from router 2 from 3 s to 5 s into the run: shorter
    // than QUIC's idle timeout, so the path survives it.
    let (block_at, lift_at) = (3.0f32, 5.0f32);
    let reports = std::thread::scope(|scope| {
        let blocker = scope.spawn(|| {
            std::thread::sleep(Duration::from_secs_f32(block_at));
            s.lab.block(1, [203, 0, 113, 12], true).expect("block");
            std::thread::sleep(Duration::from_secs_f32(lift_at - block_at));
            s.lab.block(1, [203, 0, 113, 12], false).expect("lift");
        });
        let reports = jam(&s.invite, &s.studios, 8.0);
        blocker.join().expect("blocker");
        reports
    });
    for (me, other) in [(0, "ben"), (1, "ana")] {
        let r = &reports[me];
        let before = concealed_between(r, other, 1.5, block_at - 0.2);
        let during = concealed_between(r, other, block_at - 0.2, lift_at + 0.5);
        let after = concealed_between(r, other, lift_at + 0.5, 7.5);
        eprintln!(
            "{} hearing {other}: {before} concealed before, {during} across the block and lift, \
             {after} after; {}",
            r.name,
            route(r, other)
        );
        // The relay's standby copies carried on: at most two frames more than the same
        // stretch before the block concealed (a loaded machine's late wakes).
        let background = before * 27 / 13;
        assert!(
            during <= 2 + background,
            "{} concealed {during} frames of {other} ({before} before)",
            r.name
        );
        assert!(
            matches!(route(r, other), Route::Direct { .. }),
            "{} → {other} after the lift: {}",
            r.name,
            route(r, other)
        );
        heard(r, other, true);
    }
}

#[test]
fn a_studio_whose_address_changes_stays_in_the_room_and_goes_direct_again() {
    let _one = one_at_a_time();
    let Some(s) = setup("mv", Mapping::PortPreserving, Some(Mapping::PortPreserving)) else {
        return;
    };
    let reports = std::thread::scope(|scope| {
        let mover = scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            s.lab.move_studio(1, 2, 9).expect("new address");
        });
        let reports = jam(&s.invite, &s.studios, 9.0);
        mover.join().expect("mover");
        reports
    });
    let (ana, ben) = (&reports[0], &reports[1]);
    eprintln!(
        "ana joined {} times; ana → ben: {}; ben → ana: {}",
        ana.joins,
        route(ana, "ben"),
        route(ben, "ana")
    );
    assert_eq!(ana.joins, 2, "ana joins again from her new address");
    for (r, other) in [(ana, "ben"), (ben, "ana")] {
        assert!(
            matches!(route(r, other), Route::Direct { .. }),
            "{} → {other} after the move: {}",
            r.name,
            route(r, other)
        );
        // Still heard after the move (the last two seconds).
        let rec = r
            .recordings
            .values()
            .find(|x| x.name == other)
            .expect("heard");
        let late = rec
            .timeline
            .iter()
            .filter(|p| p.at_s >= 7.0)
            .map(|p| p.decoded);
        let (first, last) = (late.clone().min().unwrap_or(0), late.max().unwrap_or(0));
        assert!(
            last > first + 400,
            "{} hears {other} after the move: {first} → {last}",
            r.name
        );
    }
}
