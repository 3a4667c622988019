//! `echoel bench jitter`: playout algorithms on the same network traces.

use echoel_plugin::engine::jitter::sim::{best_fixed, ours, simulate, Outcome, Trace};

/// Receiver host block for the comparison: 64 frames at 48 kHz.
const BLOCK: u64 = 64;

fn row(trace: &str, algo: &str, o: &Outcome, verdict: &str) {
    println!(
        "{:<14} {:<20} {:>9.2} {:>9.2} {:>8.3} {:>10.3} {:>6} {}",
        trace,
        algo,
        o.mean_delay_ms,
        o.p99_delay_ms,
        o.late_loss_pct,
        o.concealed_pct,
        o.discontinuities,
        verdict
    );
}

pub fn jitter(seconds: f64, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (5.0..=3600.0).contains(&seconds),
        "--seconds must be between 5 and 3600"
    );
    println!(
        "Playout on {seconds} s traces (2.5 ms frames, {BLOCK}-frame receiver blocks, seed {seed})"
    );
    println!(
        "{:<14} {:<20} {:>9} {:>9} {:>8} {:>10} {:>6}",
        "trace", "algorithm", "mean ms", "p99 ms", "late %", "concealed %", "disc"
    );
    let (mut pass, mut rows) = (0, 0);
    for trace in Trace::synthetic(seconds, seed) {
        let (depth, best) = best_fixed(&trace, BLOCK);
        row(
            trace.name,
            &format!("best fixed {:.2} ms", depth as f64 / 48.0),
            &best,
            "",
        );
        let o = simulate(&trace, &mut ours(), BLOCK);
        let ok = o.mean_delay_ms <= 1.15 * best.mean_delay_ms;
        rows += 1;
        pass += usize::from(ok);
        let verdict = format!(
            "{} (mean {:.2}x best fixed)",
            if ok { "pass" } else { "FAIL" },
            o.mean_delay_ms / best.mean_delay_ms
        );
        row(trace.name, "echoel adaptive", &o, &verdict);
    }
    println!("{pass} of {rows} rows pass (mean delay <= 1.15x the hindsight-optimal fixed depth)");
    Ok(())
}
