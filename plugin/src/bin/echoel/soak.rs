//! `echoel soak`: chaos seeds of the room simulator for a while (or one seed, to replay a
//! failure): five members editing and playing through loss, disconnects, partitions and a
//! relay restart. Prints seeds run, seeds per second, convergence, the longest audio gap, how
//! often members had to rejoin and how long that took; a failing seed is printed with the
//! command that replays it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use echoel_net::sim::{self, SimConfig};

/// Soak options.
#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long to run seeds for.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Run only this seed (to replay a failure), and print its report.
    #[arg(long)]
    seed: Option<u64>,
    /// First seed of a timed run.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Instead of the simulator: a mutation soak of every parser of outside bytes.
    #[arg(long)]
    fuzz: bool,
    /// With --fuzz: inputs in all, shared among the parsers by their speed.
    #[arg(long, default_value_t = 10_000_000)]
    inputs: u64,
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    if args.fuzz {
        return fuzz(args.inputs, args.seed.unwrap_or(1));
    }
    let config = SimConfig::default();
    if let Some(seed) = args.seed {
        let r = sim::run(seed, &config);
        println!("{r:#?}");
        anyhow::ensure!(r.ok(), "seed {seed} lost something (report above)");
        println!("seed {seed}: converged, nothing lost");
        return Ok(());
    }
    let start = Instant::now();
    let limit = Duration::from_secs_f64(args.minutes.max(0.0) * 60.0);
    let (mut seeds, mut rejoins) = (0u64, 0usize);
    let mut gaps = Vec::new();
    let mut reconnects = Vec::new();
    let mut failed = Vec::new();
    // One seed per core at a time; each seed runs on one thread, so it replays the same alone.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicU64::new(args.from);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, config) = (&next, &config);
            s.spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed > args.from && start.elapsed() >= limit {
                    return;
                }
                if tx.send(sim::run(seed, config)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for r in rx {
            let seed = r.seed;
            if !r.ok() {
                println!(
                    "seed {seed} FAILED: converged {}, lost edits {}, audio missing {} — replay: echoel soak --seed {seed}",
                    r.converged,
                    r.lost_edits.len(),
                    r.audio.values().map(|a| a.missing).sum::<usize>()
                );
                failed.push(seed);
            }
            gaps.push(r.longest_gap);
            rejoins += r.rejoins;
            reconnects.extend(r.reconnects);
            seeds += 1;
        }
    });
    let seed = args.from + seeds;
    gaps.sort();
    let secs = start.elapsed().as_secs_f64();
    println!("seeds run        {seeds} ({} to {})", args.from, seed - 1);
    println!(
        "seeds per second {:.1} ({workers} at a time)",
        seeds as f64 / secs
    );
    println!(
        "converged        {} of {seeds}",
        seeds - failed.len() as u64
    );
    println!(
        "audio gap        median {:.0} ms, longest {:.0} ms (while connected, during chaos)",
        gaps[gaps.len() / 2].as_secs_f64() * 1e3,
        gaps[gaps.len() - 1].as_secs_f64() * 1e3
    );
    println!(
        "rejoins          {:.1} per seed",
        rejoins as f64 / seeds as f64
    );
    reconnects.sort();
    if let (Some(first), Some(last)) = (reconnects.first(), reconnects.last()) {
        let at = |q: f64| reconnects[((reconnects.len() - 1) as f64 * q) as usize];
        println!(
            "reconnect time   median {:.0} ms, 99th percentile {:.0} ms, {:.0}–{:.0} ms (network back to Welcome)",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3
        );
    }
    anyhow::ensure!(failed.is_empty(), "failing seeds: {failed:?}");
    Ok(())
}

/// The net crate's parser targets and the plugin's saved state, each a share of `inputs`.
fn all_targets() -> Vec<echoel_net::fuzz::Target> {
    use echoel_plugin::params::{CompactBytes, SavedMix};
    let mut targets = echoel_net::fuzz::targets();
    let session = serde_json::to_vec(&CompactBytes(vec![1, 2, 3, 250, 0, 9])).unwrap_or_default();
    let old_session = b"[1,2,3,250,0,9]".to_vec();
    targets.push(echoel_net::fuzz::target(
        "plugin state: session document",
        vec![session, old_session],
        1.0,
        |b| serde_json::from_slice::<CompactBytes>(b).is_ok(),
    ));
    let mix = br#"{"Ana":{"gain_db":-3.0,"muted":false,"solo":true},"Bo":{"gain_db":0.0,"muted":true,"solo":false}}"#;
    targets.push(echoel_net::fuzz::target(
        "plugin state: mix by name",
        vec![mix.to_vec()],
        1.0,
        |b| serde_json::from_slice::<std::collections::BTreeMap<String, SavedMix>>(b).is_ok(),
    ));
    targets
}

/// `echoel soak --fuzz`: every target on its own thread's share of the cores, a table of
/// what each took, and any crasher's bytes (which fail the run).
fn fuzz(inputs: u64, seed: u64) -> anyhow::Result<()> {
    let count = all_targets().len();
    let weights: Vec<f64> = all_targets().iter().map(|t| t.weight).collect();
    let total: f64 = weights.iter().sum();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let reports = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let weights = &weights;
                s.spawn(move || {
                    // Each thread builds its own targets: they hold state that stays on one
                    // thread.
                    let mut mine = Vec::new();
                    for (i, mut t) in all_targets().into_iter().enumerate() {
                        if i % workers == w {
                            let n = (inputs as f64 * weights[i] / total).ceil() as u64;
                            let r = echoel_net::fuzz::soak(&mut t, seed + i as u64, n);
                            mine.push((i, t.name, r));
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|r| r.0);
        all
    });
    println!(
        "{:<40} {:>11} {:>10} {:>9} {:>10}",
        "parser", "inputs", "taken", "crashers", "inputs/s"
    );
    let (mut sum, mut crashers) = (0, 0);
    for (_, name, r) in &reports {
        println!(
            "{name:<40} {:>11} {:>10} {:>9} {:>10.0}",
            r.inputs,
            r.accepted,
            r.crashers.len(),
            r.inputs as f64 / r.seconds.max(1e-9)
        );
        for c in &r.crashers {
            let hex: String = c.iter().map(|b| format!("{b:02x}")).collect();
            println!("  crasher: {hex}");
        }
        sum += r.inputs;
        crashers += r.crashers.len();
    }
    println!(
        "{count} parsers, {sum} inputs in {:.1} s ({workers} threads), {crashers} crashers",
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        crashers == 0,
        "{crashers} inputs crashed a parser (bytes above)"
    );
    Ok(())
}
