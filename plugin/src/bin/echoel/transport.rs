//! `echoel bench transport`: two musicians through the relay while one of them sits behind
//! the impairment proxy (`echoel netem`), over a grid of loss and jitter: frames received,
//! concealed, jitter-buffer depth and reconnects for each cell.

use std::time::Duration;

use crate::local_relay::LocalRelay;
use echoel_plugin::bridge::network_runtime;
use echoel_plugin::headless::{self, HeadlessOptions, HeadlessReport};
use echoel_plugin::netem::{self, Impairment};

/// Losses and jitters of the grid.
const LOSSES: [f64; 4] = [0.0, 0.02, 0.10, 0.30];
const JITTERS_MS: [f64; 3] = [0.0, 8.0, 50.0];
/// Measurements skip the first seconds: keys, direct-path tries, the buffer's warm-up.
const SETTLE_S: f32 = 2.0;

pub fn run(seconds: f32, delay_ms: f64, controller: Option<String>) -> anyhow::Result<()> {
    anyhow::ensure!(
        (4.0..=120.0).contains(&seconds),
        "--seconds must be between 4 and 120"
    );
    if let Some(c) = &controller {
        anyhow::ensure!(
            ["media", "newreno", "cubic", "bbr"].contains(&c.as_str()),
            "--controller is media, newreno, cubic or bbr"
        );
        // Read when each connection's transport is built; nothing is connected yet.
        std::env::set_var(echoel_net::tls::CONTROLLER_ENV, c);
    }
    println!(
        "congestion controller: {}",
        controller.as_deref().unwrap_or("media")
    );
    println!(
        "Two musicians through the relay for {seconds} s a cell; one is {delay_ms} ms (one way) \
         from the relay behind the proxy, with the loss and jitter below on both directions of \
         its path. Counted from {SETTLE_S} s on; frames are 2.5 ms ({:.0} a second each way).",
        1000.0 / 2.5
    );
    println!(
        "{:>6} {:>9} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "loss", "jitter", "expected", "received", "concealed %", "depth ms", "reconnects"
    );
    let rt = network_runtime();
    for loss in LOSSES {
        for jitter_ms in JITTERS_MS {
            let relay = LocalRelay::start(rt, "transport")?;
            let proxy = rt.block_on(netem::start(
                "127.0.0.1:0".parse()?,
                relay.addr,
                Impairment {
                    delay_ms,
                    jitter_ms,
                    loss,
                    ..Impairment::default()
                },
                1,
            ))?;
            let mut behind = relay.invite.clone();
            behind.host = proxy.addr.ip().to_string();
            behind.port = proxy.addr.port();
            let reports = play_pair(&behind, &relay.invite, seconds)?;
            proxy.stop();
            relay.stop(rt);
            let (mut received, mut concealed, mut depth, mut reconnects) = (0, 0, 0.0f32, 0);
            for r in &reports {
                reconnects += r.joins.saturating_sub(1);
                for rec in r.recordings.values() {
                    let (d, c) = rec.frames_between(SETTLE_S, seconds);
                    received += d;
                    concealed += c;
                    depth = depth.max(rec.median_depth_ms(SETTLE_S).unwrap_or(0.0));
                }
            }
            let expected = (2.0 * (seconds - SETTLE_S) * 400.0) as u64;
            println!(
                "{:>5.0}% {:>7.0}ms {:>10} {:>10} {:>12.2} {:>12.1} {:>10}",
                loss * 100.0,
                jitter_ms,
                expected,
                received,
                100.0 * concealed as f64 / (received + concealed).max(1) as f64,
                depth,
                reconnects
            );
        }
    }
    println!(
        "received: frames decoded from real packets, both directions; concealed: share of \
         played frames that were concealment; depth: the deeper side's median buffer depth"
    );
    Ok(())
}

fn play_pair(
    behind: &echoel_net::Invite,
    direct: &echoel_net::Invite,
    seconds: f32,
) -> anyhow::Result<Vec<HeadlessReport>> {
    let band = vec![
        HeadlessOptions::voice(behind, "far", 1, seconds),
        HeadlessOptions::voice(direct, "near", 2, seconds),
    ];
    headless::play_together(
        band,
        Duration::from_millis(1500),
        network_runtime().handle(),
    )
    .into_iter()
    .map(|r| r.map_err(anyhow::Error::from))
    .collect()
}
