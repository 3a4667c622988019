//! `echoel demo`: a relay and three headless musicians on this machine, each playing its own
//! voice for a few seconds; prints who heard whom, how late and how cleanly, and writes what
//! each heard as WAV.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::local_relay::LocalRelay;
use anyhow::Context;
use echoel_plugin::bridge::network_runtime;
use echoel_plugin::engine::{CodecSettings, INTERNAL_RATE_HZ};
use echoel_plugin::headless::{
    self, file_stem, measure_lag, HeadlessOptions, HeadlessReport, LossProtection, Source,
};

const MUSICIANS: [&str; 3] = ["ana", "ben", "cleo"];

pub fn run(seconds: f32, out: &Path, force_relay: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        (2.0..=600.0).contains(&seconds),
        "--seconds must be between 2 and 600"
    );
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let rt = network_runtime();
    let relay = LocalRelay::start(rt, "demo")?;
    let (relay_addr, invite) = (relay.addr, relay.invite.clone());
    println!(
        "relay on {relay_addr}, room `demo`; {} musicians playing for {seconds} s{}",
        MUSICIANS.len(),
        if force_relay {
            ", all through the relay"
        } else {
            ""
        }
    );

    // One shared start instant: everyone's recordings share a timeline.
    let start_at = Instant::now() + Duration::from_millis(1500);
    let handles: Vec<_> = MUSICIANS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let opts = HeadlessOptions {
                invite: invite.clone(),
                name: (*name).to_owned(),
                source: Source::Voice(i as u32 + 1),
                seconds,
                force_relay,
                // The relay is on this machine: no router to ask.
                port_mapping: false,
                protection: LossProtection::Auto,
                edits: Vec::new(),
                codec: CodecSettings::default(),
                codec_change: None,
                start_at: Some(start_at),
                record: None,
                listen: false,
                stems: Vec::new(),
                identity: None,
            };
            std::thread::Builder::new()
                .name(format!("musician-{name}"))
                .spawn(move || headless::run(opts, network_runtime().handle()))
        })
        .collect::<Result<_, _>>()?;
    let reports: Vec<HeadlessReport> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a musician thread panicked"))?
                .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<_>>()?;
    relay.stop(rt);

    println!(
        "\n{:<14} {:>6} {:>11} {:>12} {:>8} {:>10} {:>8} {:>13}",
        "heard",
        "path",
        "latency ms",
        "correlation",
        "loss %",
        "concealed",
        "depth ms",
        "sender kbit/s"
    );
    let mut worst = 1.0f32;
    for listener in &reports {
        let dir = out.join(file_stem(&listener.name));
        std::fs::create_dir_all(&dir)?;
        crate::wav::write(
            &out.join(format!("{}-sent.wav", file_stem(&listener.name))),
            INTERNAL_RATE_HZ,
            &listener.sent,
        )?;
        for rec in listener.recordings.values() {
            let Some(sender) = reports.iter().find(|r| r.name == rec.name) else {
                continue;
            };
            let a = measure_lag(&sender.sent, &rec.samples, 250.0);
            let (decoded, concealed, depth) = rec.stream.map_or((0, 0, 0.0), |s| {
                let depth_ms = f64::from(s.depth_samples) / 48.0;
                (s.frames_decoded, s.frames_concealed, depth_ms)
            });
            let loss = 100.0 * concealed as f64 / (decoded + concealed).max(1) as f64;
            // All paths of the sender, over the playing time (the wait before it is near idle).
            let kbps = sender.wire_tx_bytes as f64 * 8.0 / 1000.0 / f64::from(seconds);
            let (lat, corr) = a.map_or(("-".into(), 0.0), |a| {
                (format!("{:.2}", a.lag_ms(INTERNAL_RATE_HZ)), a.correlation)
            });
            worst = worst.min(corr);
            println!(
                "{:<14} {:>6} {:>11} {:>12.4} {:>8.2} {:>10} {:>8.2} {:>13.1}",
                format!("{} → {}", rec.name, listener.name),
                if rec.direct { "direct" } else { "relay" },
                lat,
                corr,
                loss,
                concealed,
                depth,
                kbps
            );
            crate::wav::write(
                &dir.join(format!("{}.wav", file_stem(&rec.name))),
                INTERNAL_RATE_HZ,
                &rec.samples,
            )?;
        }
    }
    println!(
        "\nWAV files in {} (NAME-sent.wav and, per listener, what they heard from each)",
        out.display()
    );
    let pairs: usize = reports.iter().map(|r| r.recordings.len()).sum();
    anyhow::ensure!(
        pairs == MUSICIANS.len() * (MUSICIANS.len() - 1),
        "only {pairs} of 6 musician pairs heard each other"
    );
    anyhow::ensure!(
        worst > 0.9,
        "someone heard a damaged signal (correlation {worst:.3})"
    );
    Ok(())
}
