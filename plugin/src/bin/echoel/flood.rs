//! `echoel bench flood`: what a hostile member costs the relay. The relay runs in a process of
//! its own (so its memory is its own); in the room are an honest musician, a member that never
//! reads (its queue at the relay must stay bounded) and, after a quiet stretch, a member that
//! sends the largest control messages and datagrams it can, as fast as it can, and never reads.
//! Prints the relay's resident memory in each stretch and what it dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use echoel_net::crypto::MemberKey;
use echoel_net::relay::scripted::ScriptedMember;
use echoel_net::session::{self, SessionConfig, SessionState};
use echoel_net::transport::write_frame;
use echoel_net::wire::ClientMessage;
use echoel_net::Invite;

/// The relay as a child process, ended when dropped.
struct RelayProcess(std::process::Child);

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl RelayProcess {
    /// Resident memory, MiB (Linux; 0 where it cannot be read).
    fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// A member holding the invite, joined honestly by a script that then does as it is told.
async fn scripted(relay: SocketAddr, invite: &Invite) -> anyhow::Result<ScriptedMember> {
    let key = MemberKey::generate(&mut rand_core::OsRng);
    Ok(ScriptedMember::join(
        "127.0.0.1:0".parse()?,
        relay,
        invite,
        key.public(),
        |nonce, binding| {
            (
                invite.secret.admission_proof(&invite.room, nonce, binding),
                key.sign_admission(nonce, binding),
            )
        },
    )
    .await?)
}

/// The relay's memory over `for_`, sampled every 100 ms: (median, highest) MiB.
fn sample(relay: &RelayProcess, for_: Duration) -> (f64, f64) {
    let start = Instant::now();
    let mut rss = Vec::new();
    while start.elapsed() < for_ {
        rss.push(relay.rss_mib());
        std::thread::sleep(Duration::from_millis(100));
    }
    rss.sort_by(f64::total_cmp);
    (rss[rss.len() / 2], rss[rss.len() - 1])
}

pub fn run(seconds: f64) -> anyhow::Result<()> {
    let state = std::env::temp_dir().join(format!("echoel-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (port, metrics_port) = (free_port()?, free_port()?);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse()?;
    let invite = echoel_net::relay::create_room(&state, &addr.to_string(), Some("flood"))?;
    let relay = RelayProcess(
        std::process::Command::new(std::env::current_exe()?)
            .args(["relay", "--listen", &addr.to_string(), "--state-dir"])
            .arg(&state)
            .args(["--metrics", &metrics.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start the relay")?,
    );
    let up = Instant::now();
    while TcpStream::connect_timeout(&metrics, Duration::from_millis(100)).is_err() {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(10),
            "the relay did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let honest = {
        let _guard = rt.enter();
        session::start(
            SessionConfig {
                force_relay: true,
                ..SessionConfig::new(invite.clone(), "honest")
            },
            |_, _| {},
        )?
    };
    let _deaf = rt.block_on(scripted(addr, &invite))?;
    let (quiet_median, quiet_max) = sample(&relay, Duration::from_secs(2));

    let mut flooder = rt.block_on(scripted(addr, &invite))?;
    let (sent_control, sent_datagrams) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let conn = flooder.conn.clone();
    let datagrams = {
        let (stop, sent) = (stop.clone(), sent_datagrams.clone());
        rt.spawn(async move {
            // Shaped as audio (a header, no recipients' MACs) so the relay forwards it to
            // everyone: the honest member's and the deaf one's queues take the flood.
            let mut junk = vec![0xEE; 1100];
            junk[0] = 0x10;
            junk[1099] = 0;
            let junk = Bytes::from(junk);
            while !stop.load(Relaxed) {
                if conn.send_datagram(junk.clone()).is_ok() {
                    sent.fetch_add(1, Relaxed);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let control = {
        let (stop, sent) = (stop.clone(), sent_control.clone());
        rt.spawn(async move {
            // The largest message a control frame carries, to everyone.
            let msg = ClientMessage::Send {
                to: None,
                body: vec![0xAB; echoel_net::wire::MAX_CONTROL_FRAME - 64],
            };
            while !stop.load(Relaxed) {
                if write_frame(&mut flooder.send, &msg).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Relaxed);
            }
        })
    };
    let (flood_median, flood_max) = sample(&relay, Duration::from_secs_f64(seconds));
    stop.store(true, Relaxed);
    rt.block_on(async {
        let _ = datagrams.await;
        control.abort();
    });
    let (after_median, after_max) = sample(&relay, Duration::from_secs(2));

    println!("relay memory (resident, MiB)   median   highest");
    println!("  honest + deaf member, quiet  {quiet_median:>6.1}   {quiet_max:>7.1}");
    println!("  a member flooding, {seconds:>3.0} s     {flood_median:>6.1}   {flood_max:>7.1}");
    println!("  after the flood              {after_median:>6.1}   {after_max:>7.1}");
    println!(
        "flooder sent {} control messages of {} kB and {} datagrams of 1.1 kB",
        sent_control.load(Relaxed),
        echoel_net::wire::MAX_CONTROL_FRAME / 1024,
        sent_datagrams.load(Relaxed)
    );
    for (what, name) in [
        (
            "members dropped for not reading",
            "echoel_relay_evicted_slow_total",
        ),
        (
            "members dropped for flooding",
            "echoel_relay_evicted_flooding_total",
        ),
        (
            "datagram copies forwarded",
            "echoel_relay_datagrams_forwarded_total",
        ),
        (
            "datagrams dropped, room overloaded",
            "echoel_relay_dropped_overload_total",
        ),
        (
            "datagram copies quinn refused",
            "echoel_relay_dropped_send_total",
        ),
        (
            "control messages forwarded",
            "echoel_relay_control_forwarded_total",
        ),
    ] {
        println!("  {what:<38} {}", metric(metrics, name));
    }
    let state_now = honest.status().state;
    println!(
        "honest member: {} ({} joins)",
        if matches!(state_now, SessionState::Joined { .. }) {
            "still in the room"
        } else {
            "out of the room"
        },
        honest.counters().joins.load(Relaxed)
    );
    honest.stop();
    drop(relay);
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
