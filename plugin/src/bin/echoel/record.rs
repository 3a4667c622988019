//! `echoel bench record-trace`: records a network trace from a real jam path on loopback.
//!
//! A relay and two sessions run in this process; the sender's traffic to the relay crosses a
//! userspace UDP proxy that delays and drops datagrams by a profile (no kernel netem needed).
//! The sender seals and sends a frame every 2.5 ms, the receiver notes when each opened frame
//! arrived, and each frame's one-way delay (arrival minus its send moment) goes to the trace
//! file that `echoel bench jitter` replays.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::local_relay::LocalRelay;
use anyhow::Context;
use echoel_net::session::{self, SessionConfig};
use echoel_net::wire::StemId;
use echoel_plugin::bridge::network_runtime;
use echoel_plugin::engine::jitter::sim::Rng;
use tokio::net::UdpSocket;

/// Frame period of the recorded sender (2.5 ms).
const FRAME: Duration = Duration::from_micros(2500);

/// How the proxy treats the sender's datagrams.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Profile {
    /// A Wi-Fi hop: 1–3 ms of jitter, a 20–40 ms stall about every 1.5 s, 0.3 % loss.
    Wifi,
    /// A congested uplink: a queue that slowly fills and drains (0–12 ms), bursts of loss.
    Congested,
}

/// Extra delay for a datagram sent `t` seconds in, or `None` to drop it.
struct Impairment {
    profile: Profile,
    rng: Rng,
    stall_until: f64,
    next_stall: f64,
    lossy: bool,
}

impl Impairment {
    fn new(profile: Profile) -> Self {
        Self {
            profile,
            rng: Rng(0x5eed_1234_abcd_0001),
            stall_until: 0.0,
            next_stall: 1.0,
            lossy: false,
        }
    }

    fn delay_ms(&mut self, t: f64) -> Option<f64> {
        match self.profile {
            Profile::Wifi => {
                if self.rng.next_f64() < 0.003 {
                    return None;
                }
                if t >= self.next_stall {
                    self.stall_until = t + 0.020 + 0.020 * self.rng.next_f64();
                    self.next_stall = t + 1.0 + self.rng.next_f64();
                }
                // Held until the stall ends, then released in a burst.
                let stall = (self.stall_until - t).max(0.0) * 1000.0;
                Some(1.0 + 2.0 * self.rng.next_f64() + stall)
            }
            Profile::Congested => {
                // Gilbert–Elliott loss: bursts of drops while the queue overflows.
                self.lossy = if self.lossy {
                    self.rng.next_f64() > 0.2
                } else {
                    self.rng.next_f64() < 0.005
                };
                if self.lossy && self.rng.next_f64() < 0.6 {
                    return None;
                }
                let queue = 6.0 * (1.0 - (t * std::f64::consts::TAU / 7.0).cos());
                Some(2.0 + queue + 1.5 * self.rng.next_f64())
            }
        }
    }
}

/// Forwards between one client and the relay; the client's datagrams are impaired.
async fn proxy(socket: UdpSocket, relay: SocketAddr, profile: Profile, start: Instant) {
    let socket = Arc::new(socket);
    let mut client: Option<SocketAddr> = None;
    let mut impairment = Impairment::new(profile);
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        if from == relay {
            if let Some(c) = client {
                let _ = socket.send_to(&buf[..n], c).await;
            }
            continue;
        }
        client = Some(from);
        let Some(delay) = impairment.delay_ms(start.elapsed().as_secs_f64()) else {
            continue;
        };
        let datagram = buf[..n].to_vec();
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(delay / 1000.0)).await;
            let _ = socket.send_to(&datagram, relay).await;
        });
    }
}

pub fn record(profile: Profile, seconds: f64, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        (2.0..=600.0).contains(&seconds),
        "--seconds must be between 2 and 600"
    );
    let rt = network_runtime();
    let relay = LocalRelay::start(rt, "trace")?;
    let (relay_addr, invite) = (relay.addr, relay.invite.clone());
    let start = Instant::now();
    let proxy_socket = rt.block_on(UdpSocket::bind("127.0.0.1:0"))?;
    let proxy_addr = proxy_socket.local_addr()?;
    rt.spawn(proxy(proxy_socket, relay_addr, profile, start));

    let arrivals: Arc<Mutex<BTreeMap<u32, Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let config = |invite, name: &str| SessionConfig {
        force_relay: true,
        ..SessionConfig::new(invite, name)
    };
    let receiver = {
        let _guard = rt.enter();
        session::start(config(invite.clone(), "listener"), move |_, frame| {
            let mut a = seen.lock().unwrap_or_else(|e| e.into_inner());
            a.entry(frame.seq).or_insert_with(Instant::now);
        })?
    };
    let mut impaired = invite.clone();
    impaired.host = proxy_addr.ip().to_string();
    impaired.port = proxy_addr.port();
    let sender = {
        let _guard = rt.enter();
        session::start(config(impaired, "sender"), |_, _| {})?
    };
    // Both keyed: every frame from here can be opened.
    let keyed = |s: &session::SessionHandle| {
        let st = s.status();
        !st.members.is_empty() && st.members.iter().all(|m| m.keyed)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(keyed(&sender) && keyed(&receiver)) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the two sessions did not meet through the proxy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let frames = (seconds / FRAME.as_secs_f64()) as u32;
    let payload = [0x5au8; 40];
    let t0 = Instant::now() + Duration::from_millis(50);
    for seq in 0..frames {
        let at = t0 + FRAME * seq;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sender.send_audio(StemId(0), u64::from(seq) * 120, &payload);
    }
    std::thread::sleep(Duration::from_millis(500));
    let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    sender.stop();
    receiver.stop();
    relay.stop(rt);

    let mut text = format!(
        "# echoel trace: {profile:?} profile through the userspace proxy, relay path on \
         loopback, {seconds} s\n# one line per 2.5 ms frame: one-way delay in 48 kHz \
         samples, - if lost\nframe 120\n"
    );
    let mut lost = 0;
    for seq in 0..frames {
        match arrivals.get(&seq) {
            Some(a) => {
                let sent = t0 + FRAME * seq;
                let d = a.saturating_duration_since(sent).as_secs_f64() * 48_000.0;
                text.push_str(&format!("{}\n", d.round() as u64));
            }
            None => {
                lost += 1;
                text.push_str("-\n");
            }
        }
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{frames} frames, {lost} lost; trace written to {}",
        out.display()
    );
    Ok(())
}
