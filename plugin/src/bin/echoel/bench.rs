//! `echoel bench jitter`: playout algorithms on the same network traces.

use echoel_plugin::engine::jitter::sim::{
    baselines, best_fixed, equal_loss, ours, simulate, Outcome, Trace, Verdict,
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
    let mut ours_at = Vec::new();
    for trace in &traces {
        let trace = trace.clone();
        let (depth, best) = best_fixed(&trace, BLOCK);
        let o = simulate(&trace, &mut ours(BLOCK), BLOCK);
        ours_at.push(o);
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
    at_equal_loss(&traces, &ours_at);
    Ok(())
}

/// Each baseline swept over its own knob: the mean delay it needs to conceal no more than ours
/// does (what a listener hears: losses, late packets and waits), against ours.
fn at_equal_loss(traces: &[Trace], ours_at: &[Outcome]) {
    println!();
    println!("At equal loss: each baseline swept over its knob; the delay it needs to conceal no more than ours");
    println!(
        "{:<14} {:<14} {:>11} {:>9} {:>12}  curve (mean ms / concealed %, by setting)",
        "trace", "baseline", "ours conc %", "ours ms", "needs ms"
    );
    let (mut pass, mut rows) = (0, 0);
    for (trace, o) in traces.iter().zip(ours_at) {
        for r in equal_loss(trace, o, BLOCK) {
            rows += 1;
            pass += usize::from(r.pass);
            let curve: Vec<String> = r
                .curve
                .iter()
                .map(|(d, c)| format!("{d:.1}/{c:.2}"))
                .collect();
            println!(
                "{:<14} {:<14} {:>11.3} {:>9.2} {:>12} {} {}",
                trace.name,
                r.baseline,
                o.concealed_pct,
                o.mean_delay_ms,
                r.needs_ms.map_or("never".into(), |d| format!("{d:.2}")),
                if r.pass { "pass" } else { "FAIL" },
                curve.join(" ")
            );
        }
    }
    println!("{pass} of {rows} curves: ours on or below (no more delay than the baseline needs for our loss)");
}
