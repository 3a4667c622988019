//! `echoel netem`: the impairment proxy on the command line. Settings given as flags hold
//! from the start; lines on standard input change them while it runs.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::Context;
use echoel_plugin::engine::jitter::sim::Trace;
use echoel_plugin::netem::{self, Impairment, JitterKind};

#[derive(clap::Args)]
#[command(
    after_help = "While it runs, type settings to change them, e.g. `loss 10% jitter \
                        20ms`, `clear` to remove every impairment, `show` for the counters."
)]
pub struct NetemArgs {
    /// Where clients send (e.g. 127.0.0.1:5433).
    #[arg(long)]
    listen: SocketAddr,
    /// Where their datagrams go (e.g. the relay, 127.0.0.1:4433).
    #[arg(long)]
    forward: SocketAddr,
    /// One-way delay, each way (20ms, 1.5s).
    #[arg(long)]
    delay: Option<String>,
    /// Range of extra delay above --delay.
    #[arg(long)]
    jitter: Option<String>,
    /// How the extra delay varies: a wandering delay that keeps packet order (what real paths
    /// do), or independent per packet (deep reordering).
    #[arg(long, value_enum, default_value_t = JitterKind::Wander)]
    jitter_mode: JitterKind,
    /// Share of datagrams lost, each way (5%).
    #[arg(long)]
    loss: Option<String>,
    /// Mean length of a loss burst in datagrams (1: independent losses).
    #[arg(long)]
    burst: Option<String>,
    /// Share of datagrams held back so later ones overtake them (1%).
    #[arg(long)]
    reorder: Option<String>,
    /// Share of datagrams delivered twice.
    #[arg(long)]
    duplicate: Option<String>,
    /// Bottleneck rate, each way (2mbit, 500kbit).
    #[arg(long)]
    rate: Option<String>,
    /// Replay a recorded trace's delays and losses (the tests/traces/ format), packet by packet.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Seed of the random choices; the same seed gives the same choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: NetemArgs) -> anyhow::Result<()> {
    let mut imp = Impairment {
        jitter: args.jitter_mode,
        ..Impairment::default()
    };
    for (name, value) in [
        ("delay", &args.delay),
        ("jitter", &args.jitter),
        ("loss", &args.loss),
        ("burst", &args.burst),
        ("reorder", &args.reorder),
        ("duplicate", &args.duplicate),
        ("rate", &args.rate),
    ] {
        if let Some(v) = value {
            imp.set(name, v).with_context(|| format!("--{name}"))?;
        }
    }
    if let Some(path) = &args.trace {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the trace {}", path.display()))?;
        let name = path
            .file_stem()
            .map_or("trace".into(), |s| s.to_string_lossy());
        let trace = Trace::parse(&name, &text)
            .map_err(|e| anyhow::anyhow!("the trace {} is unusable: {e}", path.display()))?;
        imp.trace = Some(Arc::new(trace));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the proxy's runtime")?;
    let handle = rt
        .block_on(netem::start(args.listen, args.forward, imp, args.seed))
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "netem: {} → {}: {}",
        handle.addr,
        args.forward,
        handle.settings()
    );
    // Standard input closed (or not a terminal): keep forwarding until killed.
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "show" {
            let c = handle.counters();
            eprintln!(
                "netem: {} received, {} delivered, {} dropped; {}",
                c.received.load(Relaxed),
                c.delivered.load(Relaxed),
                c.dropped.load(Relaxed),
                handle.settings()
            );
            continue;
        }
        let mut next = handle.settings();
        match next.apply_line(line) {
            Ok(()) => {
                eprintln!("netem: {next}");
                handle.update(|imp| *imp = next);
            }
            Err(e) => eprintln!("netem: {e}"),
        }
    }
    rt.block_on(std::future::pending::<()>());
    Ok(())
}
