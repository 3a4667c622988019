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
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
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
