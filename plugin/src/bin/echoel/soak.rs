//! `echoel soak`: chaos seeds of the room simulator for a while (or one seed, to replay a
//! failure): five members editing and playing through loss, disconnects, partitions and a
//! relay restart. Prints seeds run, seeds per second, convergence, the longest audio gap and
//! how often members had to rejoin; a failing seed is printed with the command that replays it.

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
    let mut failed = Vec::new();
    let mut seed = args.from;
    while start.elapsed() < limit || seeds == 0 {
        let r = sim::run(seed, &config);
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
        seeds += 1;
        seed += 1;
    }
    gaps.sort();
    let secs = start.elapsed().as_secs_f64();
    println!("seeds run        {seeds} ({} to {})", args.from, seed - 1);
    println!("seeds per second {:.1}", seeds as f64 / secs);
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
    anyhow::ensure!(failed.is_empty(), "failing seeds: {failed:?}");
    Ok(())
}
