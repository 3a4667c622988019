//! `echoel`: Echoel Jam's command line — relay, invites, headless musicians and the demo.

mod bench;
mod demo;
mod flood;
mod local_relay;
mod loopback;
mod netem;
mod peer;
mod pump;
mod record;
mod rotate;
mod soak;
mod transport;
mod wav;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "echoel",
    version,
    about = "Echoel Jam: play together over the internet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A relay and three musicians on this machine: who hears whom, how late, how clean.
    Demo {
        /// Seconds each musician plays.
        #[arg(long, default_value_t = 4.0)]
        seconds: f32,
        /// Folder for what each musician heard, as WAV.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Send everything through the relay instead of direct paths.
        #[arg(long)]
        force_relay: bool,
        /// Instead: only the engine in loopback at several host settings (no network).
        #[arg(long)]
        loopback: bool,
    },
    /// Runs a relay.
    Relay {
        /// UDP address to serve on.
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
        /// Folder for the relay's certificate, key and rooms (kept across restarts).
        #[arg(long)]
        state_dir: PathBuf,
        /// TCP address serving Prometheus-style metrics.
        #[arg(long)]
        metrics: Option<SocketAddr>,
    },
    /// Makes a room on a relay (run beside it) and prints its invite.
    Invite {
        /// The relay's state folder.
        #[arg(long)]
        state_dir: PathBuf,
        /// The address musicians reach the relay at, HOST:PORT.
        #[arg(long)]
        relay_addr: String,
        /// Room name (letters, digits, - _ .); a random one if omitted. A room that exists is
        /// refused: its secret is never replaced unasked.
        #[arg(long, conflicts_with = "rotate")]
        room: Option<String>,
        /// Gives this existing room a new secret and prints its new invite: every invite sent
        /// before stops working (members in the room stay).
        #[arg(long, value_name = "ROOM")]
        rotate: Option<String>,
    },
    /// Gives a room a new secret from inside it and prints the new invite: everyone in the
    /// room moves to it without dropping out; invites sent before stop working.
    Rotate {
        /// The room's current invite.
        #[arg(long)]
        invite: String,
        /// The name the others see while it is in the room.
        #[arg(long, default_value = "invite rotation")]
        name: String,
    },
    /// A headless musician: joins a room, plays, records what it hears.
    Peer(peer::PeerArgs),
    /// A UDP proxy that delays, drops, reorders and rate-limits what crosses it, both ways.
    Netem(netem::NetemArgs),
    /// Chaos seeds of the room simulator: documents converge and nothing is lost.
    Soak(soak::SoakArgs),
    /// Benchmarks that print a table.
    Bench {
        #[command(subcommand)]
        what: BenchKind,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// Playout algorithms on seeded network traces.
    Jitter {
        /// Length of each trace.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Trace seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Two musicians through the relay, one behind the impairment proxy, over a grid of loss
    /// and jitter: frames received, concealed, buffer depth, reconnects.
    Transport {
        /// Seconds each cell plays.
        #[arg(long, default_value_t = 8.0)]
        seconds: f32,
        /// One-way delay between the far musician and the relay, ms.
        #[arg(long, default_value_t = 30.0)]
        delay_ms: f64,
        /// Congestion controller to measure: media (ours), newreno, cubic or bbr.
        #[arg(long)]
        controller: Option<String>,
    },
    /// How the thread that drains the engine's outgoing ring should wake: delay and CPU of
    /// polling, a wake per block, a frame-rate timer.
    Pump {
        /// Seconds per way.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// What a member flooding the room (and one that never reads) costs the relay: its
    /// memory before, during and after, and what it dropped.
    Flood {
        /// How long the flood lasts.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Records a trace from a real jam path on loopback through a userspace impairment proxy.
    RecordTrace {
        /// How the proxy impairs the sender's traffic.
        #[arg(long, value_enum)]
        profile: record::Profile,
        /// Length of the recording.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Trace file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or a pipe gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Demo {
            seconds,
            out,
            force_relay,
            loopback,
        } => {
            if loopback {
                loopback::run(seconds, &out)
            } else {
                demo::run(seconds, &out, force_relay)
            }
        }
        Command::Relay {
            listen,
            state_dir,
            metrics,
        } => relay(listen, state_dir, metrics),
        Command::Invite {
            state_dir,
            relay_addr,
            room,
            rotate,
        } => {
            let invite = match rotate {
                Some(r) => echoel_net::relay::rotate_room(&state_dir, &relay_addr, &r)?,
                None => echoel_net::relay::create_room(&state_dir, &relay_addr, room.as_deref())?,
            };
            println!("{invite}");
            Ok(())
        }
        Command::Rotate { invite, name } => rotate::run(&invite, &name),
        Command::Peer(args) => peer::run(args),
        Command::Netem(args) => netem::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Bench {
            what: BenchKind::Jitter { seconds, seed },
        } => bench::jitter(seconds, seed),
        Command::Bench {
            what: BenchKind::Pump { seconds },
        } => pump::run(seconds),
        Command::Bench {
            what:
                BenchKind::Transport {
                    seconds,
                    delay_ms,
                    controller,
                },
        } => transport::run(seconds, delay_ms, controller),
        Command::Bench {
            what: BenchKind::Flood { seconds },
        } => flood::run(seconds),
        Command::Bench {
            what:
                BenchKind::RecordTrace {
                    profile,
                    seconds,
                    out,
                },
        } => record::record(profile, seconds, &out),
    }
}

fn relay(
    listen: SocketAddr,
    state_dir: PathBuf,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the relay's runtime")?;
    rt.block_on(async {
        let config = echoel_net::relay::RelayConfig {
            listen,
            state_dir,
            metrics,
        };
        let relay = echoel_net::relay::Relay::bind(&config).await?;
        eprintln!(
            "relay on {} (certificate {}){}",
            relay.local_addr()?,
            relay.fingerprint(),
            relay
                .metrics_addr()
                .map(|a| format!(", metrics on http://{a}/metrics"))
                .unwrap_or_default()
        );
        relay.run(shutdown_signal()).await;
        eprintln!("relay stopped");
        anyhow::Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
