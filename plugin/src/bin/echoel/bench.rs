//! `echoel bench jitter`: playout algorithms on the same network traces.

use echoel_plugin::engine::jitter::sim::{
    baselines, best_fixed, ours, simulate, Outcome, Trace, Verdict,
};

/// Receiver host block for the comparison: 64 frames at 48 kHz.
const BLOCK: u64 = 64;

fn row(trace: &str, algo: &str, o: &Outcome, verdict: &str) {
    println!(
        "{:<14} {:<20} {:>8.2} {:>8.2} {:>7.3} {:>11.3} {:>5} {}",
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
        "Playout on {seconds} s synthetic traces (seed {seed}) and recorded loopback traces; \
         2.5 ms frames, {BLOCK}-frame receiver blocks"
    );
    println!(
        "{:<14} {:<20} {:>8} {:>8} {:>7} {:>11} {:>5} verdict for ours",
        "trace", "algorithm", "mean ms", "p99 ms", "late %", "concealed %", "disc"
    );
    let (mut pass, mut rows) = (0, 0);
    let mut traces = Trace::synthetic(seconds, seed);
    traces.extend(Trace::recorded());
    for trace in traces {
        let (depth, best) = best_fixed(&trace, BLOCK);
        let o = simulate(&trace, &mut ours(BLOCK), BLOCK);
        row(&trace.name, "echoel adaptive", &o, "");
        let v = Verdict::against_best_fixed(&o, &best);
        row(
            &trace.name,
            &format!("best fixed {:.2} ms", depth as f64 / 48.0),
            &best,
            &v.text,
        );
        rows += 1;
        pass += usize::from(v.pass);
        for mut algo in baselines(trace.frame) {
            let b = simulate(&trace, algo.as_mut(), BLOCK);
            let v = Verdict::against_adaptive(&o, &b);
            row(&trace.name, &algo.name(), &b, &v.text);
            rows += 1;
            pass += usize::from(v.pass);
        }
    }
    println!(
        "{pass} of {rows} rows pass (ours: mean delay <= 1.15x the hindsight-optimal fixed \
         depth; against each adaptive baseline no more late loss and no more mean delay)"
    );
    Ok(())
}
