//! Chaos on the room cores: five members editing through loss, disconnects, partitions and a
//! relay restart lose nothing, and a seed replays exactly.

use super::*;
use crate::core::sync::fault;
use std::time::Duration;

/// Seeds the chaos test runs on every `cargo test`.
const SEEDS: u64 = 50;

/// Runs `seeds` on every core (each seed stays on one thread, so it replays the same).
fn run_all(seeds: std::ops::Range<u64>, config: &SimConfig) -> Vec<SimReport> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let mut reports: Vec<SimReport> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if seed >= seeds.end {
                            return mine;
                        }
                        let r = std::panic::catch_unwind(|| run(seed, config));
                        let Ok(r) = r else {
                            panic!("seed {seed} panicked; {}", replay(seed));
                        };
                        mine.push(r);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a simulation panicked"))
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    reports
}

fn replay(seed: u64) -> String {
    format!("replay: cargo run --release -- soak --seed {seed}")
}

/// The chaos of every `cargo test`: each member's hundred changes packed into 30 s.
fn chaos() -> SimConfig {
    SimConfig {
        chaos: Duration::from_secs(30),
        settle: Duration::from_secs(12),
        frame: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

#[test]
fn five_members_under_chaos_converge_and_lose_neither_edits_nor_audio() {
    let config = chaos();
    let started = std::time::Instant::now();
    let mut gaps = Vec::new();
    for r in run_all(0..SEEDS, &config) {
        let seed = r.seed;
        assert!(
            r.converged,
            "seed {seed}: documents differ; {}",
            replay(seed)
        );
        assert!(
            r.lost_edits.is_empty(),
            "seed {seed}: lost {:?}; {}",
            r.lost_edits,
            replay(seed)
        );
        for ((from, to), a) in &r.audio {
            assert!(
                a.through > 0 && a.missing == 0,
                "seed {seed}: audio {from} → {to}: {a:?}; {}",
                replay(seed)
            );
        }
        assert_eq!(r.notices, 0, "seed {seed}: refusals on honest links");
        assert!(r.rejoins > 0, "seed {seed}: the chaos cut nobody off");
        assert!(r.direct_paths > 0, "seed {seed}: no direct path was made");
        gaps.push(r.longest_gap);
    }
    gaps.sort();
    println!(
        "{SEEDS} seeds in {:?}; longest audio gap median {:?}, max {:?}",
        started.elapsed(),
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig {
        edits_per_member: 30,
        chaos: Duration::from_secs(20),
        ..SimConfig::default()
    };
    let a = run(7, &config);
    let b = run(7, &config);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    let c = run(8, &config);
    assert_ne!(
        format!("{a:?}"),
        format!("{c:?}"),
        "another seed, another run"
    );
}

#[test]
fn a_broken_sync_is_caught_within_a_few_seeds() {
    let config = SimConfig {
        edits_per_member: 40,
        chaos: Duration::from_secs(30),
        ..SimConfig::default()
    };
    fault::drop_every(2);
    let caught = (0..5).find(|&seed| !run(seed, &config).ok());
    fault::drop_every(0);
    assert!(
        caught.is_some(),
        "a sync that throws messages away went unnoticed"
    );
    println!("a broken sync is caught by seed {caught:?}");
}

/// Whether a run under attack kept what the honest members are owed: their documents equal
/// and complete, their audio whole, every attack refused and counted.
fn withstood(r: &SimReport, what: &str) {
    let seed = r.seed;
    assert!(
        r.converged,
        "{what}, seed {seed}: documents differ or forged audio was played"
    );
    assert!(
        r.lost_edits.is_empty(),
        "{what}, seed {seed}: lost {:?}",
        r.lost_edits
    );
    for ((from, to), a) in &r.audio {
        assert!(
            a.through > 0 && a.missing == 0,
            "{what}, seed {seed}: audio {from} → {to}: {a:?}"
        );
    }
    assert!(
        r.refused > 0,
        "{what}, seed {seed}: the attack never reached anyone"
    );
}

#[test]
fn an_insider_sending_garbage_replaying_and_withholding_harms_no_one_else() {
    let config = SimConfig {
        hostile: Hostile {
            member: true,
            ..Hostile::default()
        },
        ..chaos()
    };
    for r in run_all(0..8, &config) {
        withstood(&r, "an insider");
    }
}

/// The insider with the relay on its side: what it makes in other members' names (key
/// announcements, presence, document messages) is handed on as theirs, and no honest member
/// takes any of it in.
#[test]
fn an_insider_with_the_relay_on_its_side_speaks_for_no_one_else() {
    let config = SimConfig {
        hostile: Hostile {
            member: true,
            collude: true,
            ..Hostile::default()
        },
        ..chaos()
    };
    for r in run_all(0..8, &config) {
        withstood(&r, "an insider with the relay");
        assert_eq!(r.taken_in, 0, "seed {}: {}", r.seed, replay(r.seed));
    }
}

#[test]
fn a_relay_replaying_injecting_and_withholding_harms_no_one() {
    let config = SimConfig {
        hostile: Hostile {
            relay_replay: 0.05,
            relay_inject: 0.05,
            relay_withhold: Duration::from_secs(3),
            ..Hostile::default()
        },
        ..chaos()
    };
    for r in run_all(0..8, &config) {
        withstood(&r, "a hostile relay");
        assert!(r.replayed > 0, "seed {}: no replay was refused", r.seed);
    }
}

/// Calm links, no outages: how soon a direct path comes is the protocol's doing.
fn calm() -> SimConfig {
    SimConfig {
        members: 4,
        edits_per_member: 10,
        chaos: Duration::from_secs(5),
        settle: Duration::from_secs(10),
        disconnects: 0,
        partitions: 0,
        relay_restart: false,
        splits: 0,
        ..SimConfig::default()
    }
}

/// Behind routers that drop what nobody behind them asked for, both ends punch at once (the
/// relay tells them of each other together): every pair goes direct, within 2 s of the later
/// joining on calm links, and through the chaos too.
#[test]
fn behind_routers_that_drop_unsolicited_traffic_both_ends_punch_through() {
    for nat in [Nat::Firewall, Nat::PortPreserving] {
        for r in run_all(0..4, &SimConfig { nat, ..calm() }) {
            let seed = r.seed;
            assert_eq!(
                r.direct_pairs.len(),
                6,
                "seed {seed} {nat:?}: {:?}",
                r.direct_pairs
            );
            assert!(
                r.slowest_direct <= Duration::from_secs(2),
                "seed {seed} {nat:?}: a direct path took {:?}; {}",
                r.slowest_direct,
                replay(seed)
            );
            assert!(r.ok(), "seed {seed}: {r:?}");
        }
        for r in run_all(0..4, &SimConfig { nat, ..chaos() }) {
            assert!(
                r.direct_paths > 0,
                "seed {} {nat:?}: no direct path",
                r.seed
            );
            assert!(r.ok(), "seed {}: {r:?}", r.seed);
        }
    }
}

/// A member behind a router that gives each destination its own port reaches nobody
/// directly (the others' holes are for the port the relay saw) — its audio and document
/// go by the relay, complete — while the rest still go direct between themselves.
#[test]
fn a_member_behind_a_symmetric_nat_goes_by_the_relay_and_the_rest_go_direct() {
    let config = SimConfig {
        nat: Nat::PortPreserving,
        nat_each: vec![Nat::Symmetric],
        ..calm()
    };
    for r in run_all(0..4, &config) {
        let seed = r.seed;
        let expected: std::collections::BTreeSet<_> = [(1, 2), (1, 3), (2, 3)].into();
        assert_eq!(r.direct_pairs, expected, "seed {seed}; {}", replay(seed));
        assert!(r.ok(), "seed {seed}: {r:?}");
    }
    // Only an open router lets its dial in.
    let open = SimConfig {
        nat_each: vec![Nat::Symmetric, Nat::Open],
        ..config
    };
    for r in run_all(0..2, &open) {
        assert!(r.direct_pairs.contains(&(0, 1)), "seed {}", r.seed);
        assert!(!r.direct_pairs.contains(&(0, 2)), "seed {}", r.seed);
    }
}

/// Two members behind one router meet on its LAN, even a router that gives each destination
/// its own port (no one outside reaches them directly); the others go direct between
/// themselves.
#[test]
fn members_behind_one_router_meet_on_its_lan() {
    let config = SimConfig {
        nat: Nat::PortPreserving,
        nat_each: vec![Nat::Symmetric, Nat::Symmetric],
        router_each: vec![7, 7],
        ..calm()
    };
    for r in run_all(0..8, &config) {
        let seed = r.seed;
        let expected: std::collections::BTreeSet<_> = [(0, 1), (2, 3)].into();
        assert_eq!(r.direct_pairs, expected, "seed {seed}; {}", replay(seed));
        assert!(r.ok(), "seed {seed}: {r:?}");
    }
}

/// A member behind a symmetric NAT whose router forwards it a port on request tells the room
/// the mapped address, and goes direct with everyone: those behind port-preserving routers
/// reach it there, and one behind another symmetric NAT punches toward it and is dialled back
/// where the punch came from. That other one still reaches no port-preserving router.
#[test]
fn a_member_whose_router_forwards_it_a_port_goes_direct_behind_a_symmetric_nat() {
    let config = SimConfig {
        nat: Nat::PortPreserving,
        nat_each: vec![Nat::Mapped, Nat::Symmetric],
        ..calm()
    };
    for r in run_all(0..8, &config) {
        let seed = r.seed;
        let expected: std::collections::BTreeSet<_> = [(0, 1), (0, 2), (0, 3), (2, 3)].into();
        assert_eq!(r.direct_pairs, expected, "seed {seed}; {}", replay(seed));
        assert!(r.ok(), "seed {seed}: {r:?}");
    }
    // And through the chaos: rejoins (each tells the room anew), splits, a relay restart.
    let chaos = SimConfig {
        nat: Nat::PortPreserving,
        nat_each: vec![Nat::Mapped, Nat::Mapped],
        ..chaos()
    };
    for r in run_all(0..4, &chaos) {
        let seed = r.seed;
        assert!(
            r.direct_pairs.contains(&(0, 1)),
            "seed {seed}; {}",
            replay(seed)
        );
        assert!(r.ok(), "seed {seed}: {r:?}");
    }
}

/// Which way is faster is measured, not assumed: with direct paths 60 ms long and the relay's
/// detour 30 ms, every receiver finds the relay faster for every sender it has a direct path
/// to, and plays the relay's copies; with 5 ms direct paths none does, and each sender's
/// frames told each receiver of the shorter way (a new path epoch) when its path came up.
#[test]
fn a_direct_path_slower_than_the_relay_is_found_and_a_faster_one_is_told_of() {
    let still = LinkConfig {
        delay: Duration::from_millis(15),
        jitter: Duration::ZERO,
        wander: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        ..LinkConfig::default()
    };
    let with = |direct: u64| SimConfig {
        link: still,
        direct_link: Some(LinkConfig {
            delay: Duration::from_millis(direct),
            ..still
        }),
        ..calm()
    };
    let every_pair = |r: &SimReport| -> std::collections::BTreeSet<(usize, usize)> {
        r.direct_pairs
            .iter()
            .flat_map(|&(a, b)| [(a, b), (b, a)])
            .collect()
    };
    for r in run_all(0..4, &with(60)) {
        let seed = r.seed;
        assert_eq!(r.direct_pairs.len(), 6, "seed {seed}: {:?}", r.direct_pairs);
        assert_eq!(
            r.relay_faster,
            every_pair(&r),
            "seed {seed}; {}",
            replay(seed)
        );
        assert!(r.ok(), "seed {seed}: {r:?}");
    }
    for r in run_all(0..4, &with(5)) {
        let seed = r.seed;
        assert_eq!(r.direct_pairs.len(), 6, "seed {seed}: {:?}", r.direct_pairs);
        assert!(
            r.relay_faster.is_empty(),
            "seed {seed}: {:?}",
            r.relay_faster
        );
        for pair in every_pair(&r) {
            let changes = r.epoch_changes.get(&pair).copied().unwrap_or(0);
            assert!(changes >= 1, "seed {seed}: {pair:?} never told of its path");
        }
        assert!(r.ok(), "seed {seed}: {r:?}");
    }
}

/// Ten comings and goings of a guest (twenty membership changes, each making every member
/// rekey) in the settled tail: the members who stay lose no frame to it.
#[test]
fn twenty_joins_and_leaves_cost_the_members_who_stay_no_frame() {
    let config = SimConfig {
        chaos: Duration::from_secs(4),
        settle: Duration::from_secs(30),
        disconnects: 0,
        partitions: 0,
        relay_restart: false,
        splits: 0,
        churn: 10,
        ..chaos()
    };
    for r in run_all(0..6, &config) {
        let seed = r.seed;
        assert!(r.rejoins >= 10, "seed {seed}: {} rejoins", r.rejoins);
        for ((from, to), a) in &r.audio {
            assert!(
                a.through > 0 && a.missing == 0,
                "seed {seed}: audio {from} → {to} through the churn: {a:?}; {}",
                replay(seed)
            );
        }
        assert_eq!(r.notices, 0, "seed {seed}: refusals on honest links");
    }
}

/// Direct paths that fall silent mid-jam (the members split in two: the relay still reaches
/// everyone) cost at most the relay's detour: its standby copies carry on, so no member waits
/// longer than three frames between two of another's (43–53 ms at 20 ms frames over 8 seeds;
/// without the standby the silence lasted until the path was given up, 2.06 s).
#[test]
fn a_direct_path_that_falls_silent_costs_no_audio() {
    let config = SimConfig {
        chaos: Duration::from_secs(20),
        splits: 4,
        // Links that lose nothing: any gap is the path's.
        link: LinkConfig {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            ..LinkConfig::default()
        },
        ..calm()
    };
    let frame = config.frame;
    let mut gaps = Vec::new();
    for r in run_all(0..8, &config) {
        assert!(r.direct_paths > 0, "seed {}: no direct path", r.seed);
        assert!(r.ok(), "seed {}: {r:?}", r.seed);
        gaps.push((r.longest_gap, r.seed));
    }
    println!("longest gap between two frames, by seed: {gaps:?} ({frame:?} frames)");
    for (gap, seed) in gaps {
        assert!(
            gap <= frame * 3,
            "seed {seed}: {gap:?} without a frame; {}",
            replay(seed)
        );
    }
}

/// The room clock in the simulator: five members, on direct paths where their routers let them
/// and through the relay otherwise, over links with 10 ms of delay, up to 5 ms of jitter, loss,
/// reordering and duplicates; each receiver puts every sender's frames on its own clock within
/// 1 ms of when they were sent (the one-way delay taken from the links' delays, as a session
/// takes it from the round trips it measures).
#[test]
fn the_room_clock_puts_every_senders_frames_on_each_receivers_clock_within_a_millisecond() {
    let link = LinkConfig {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(5),
        // A queue that never empties cannot be told from a later clock: none here.
        wander: Duration::ZERO,
        ..LinkConfig::default()
    };
    for seed in 0..3 {
        let config = SimConfig {
            members: 5,
            edits_per_member: 5,
            chaos: Duration::from_secs(4),
            settle: Duration::from_secs(24),
            disconnects: 0,
            partitions: 0,
            relay_restart: false,
            link,
            ..SimConfig::default()
        };
        let r = run(seed, &config);
        println!(
            "seed {seed}: worst clock error {:.1} samples",
            r.clock_error_samples
        );
        assert!(
            r.clock_error_samples > 0.0 && r.clock_error_samples <= 48.0,
            "seed {seed}: {:.1} samples off ({})",
            r.clock_error_samples,
            replay(seed)
        );
    }
}
