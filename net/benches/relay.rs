//! Relay cost for a 20-member room at 2.5 ms frames: every member sends 400 datagrams/s, send
//! phases spread evenly (independent studios), and each datagram goes to the other 19 —
//! about 152 k forwarded datagrams/s. Measured beside a bare quinn loop that forwards each
//! datagram as it arrives, with no admission, batching or checks, under the same load and
//! with the same TLS and transport settings. Each server runs alone on one thread, whose CPU
//! clock gives its share of a core. Delivery delay is stamped by the sender and read by
//! every receiver.
//!
//! `cargo bench -p echoel-net --bench relay`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use echoel_net::crypto::MemberKey;
use echoel_net::relay::{channel_binding, create_room, Relay, RelayConfig};
use echoel_net::tls::{endpoint_config, relay_client_config, Identity, SERVER_NAME};
use echoel_net::transport::{read_frame, write_frame};
use echoel_net::wire::{forwarded_items, ClientMessage, RelayMessage};
use echoel_net::Invite;
use tokio::sync::{mpsc, oneshot};

const MEMBERS: usize = 20;
const FRAME: Duration = Duration::from_micros(2500);
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
/// Audio header, 40-byte Opus payload (128 kbit/s at 2.5 ms), tag: a real datagram's size.
const DATAGRAM_LEN: usize = 3 + 40 + 16;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bare,
    Echoel,
}

/// A server on its own thread; answers CPU-time probes from that thread.
struct Server {
    addr: SocketAddr,
    probe: mpsc::UnboundedSender<oneshot::Sender<Duration>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(kind: Kind, state: &std::path::Path) -> (Self, Option<Invite>) {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (probe, mut probes) = mpsc::unbounded_channel::<oneshot::Sender<Duration>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = state.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let serve = async {
                    match kind {
                        Kind::Echoel => {
                            let relay = Relay::bind(&RelayConfig {
                                listen: "127.0.0.1:0".parse().expect("valid"),
                                state_dir: state.clone(),
                                metrics: None,
                            })
                            .await
                            .expect("relay");
                            let addr = relay.local_addr().expect("bound");
                            let invite = create_room(&state, &addr.to_string(), Some("bench"))
                                .expect("room");
                            addr_tx.send((addr, Some(invite))).expect("report");
                            let metrics = relay.metrics();
                            let report = async {
                                loop {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    BATCHES.store(metrics.batches.load(Relaxed), Relaxed);
                                    FORWARDED
                                        .store(metrics.datagrams_forwarded.load(Relaxed), Relaxed);
                                }
                            };
                            tokio::select! {
                                _ = relay.run(std::future::pending()) => {}
                                _ = report => {}
                            }
                        }
                        Kind::Bare => bare_loop(addr_tx).await,
                    }
                };
                let probes = async {
                    while let Some(reply) = probes.recv().await {
                        let _ = reply.send(thread_cpu());
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = probes => {}
                    _ = stopped => {}
                }
            });
        });
        let (addr, invite) = addr_rx.recv().expect("server started");
        (
            Self {
                addr,
                probe,
                stop: Some(stop),
                thread: Some(thread),
            },
            invite,
        )
    }

    fn cpu(&self) -> Duration {
        let (tx, rx) = oneshot::channel();
        self.probe.send(tx).expect("server alive");
        rx.blocking_recv().expect("probe answered")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The baseline: forward each datagram to every other connection as it arrives.
async fn bare_loop(addr_tx: std::sync::mpsc::Sender<(SocketAddr, Option<Invite>)>) {
    let identity = Identity::generate().expect("identity");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let endpoint = quinn::Endpoint::new(
        endpoint_config(),
        Some(identity.server_config(Default::default()).expect("config")),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .expect("endpoint");
    BARE_FP.lock().unwrap().replace(identity.fingerprint());
    addr_tx
        .send((endpoint.local_addr().expect("bound"), None))
        .expect("report");
    let conns: Arc<Mutex<Vec<quinn::Connection>>> = Arc::default();
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        conns.lock().unwrap().push(conn.clone());
        let conns = conns.clone();
        tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                for c in conns.lock().unwrap().iter() {
                    if c.stable_id() != conn.stable_id() {
                        let _ = c.send_datagram(d.clone());
                    }
                }
            }
        });
    }
}

static BARE_FP: Mutex<Option<echoel_net::CertFingerprint>> = Mutex::new(None);
static BATCHES: AtomicU64 = AtomicU64::new(0);
static FORWARDED: AtomicU64 = AtomicU64::new(0);

/// Connects (and for the relay, joins) one member; returns its connection.
async fn connect(
    kind: Kind,
    addr: SocketAddr,
    invite: Option<&Invite>,
    i: usize,
) -> quinn::Connection {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut endpoint = quinn::Endpoint::new(
        endpoint_config(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .expect("endpoint");
    let fp = match invite {
        Some(inv) => inv.fingerprint,
        None => BARE_FP.lock().unwrap().expect("bare server fingerprint"),
    };
    endpoint.set_default_client_config(
        relay_client_config(fp, Default::default()).expect("client config"),
    );
    let conn = endpoint
        .connect(addr, SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    if kind == Kind::Echoel {
        let inv = invite.expect("relay invite");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        let member = MemberKey::generate(&mut rand_core::OsRng);
        let join = ClientMessage::Join {
            room: inv.room.to_string(),
            name: format!("m{i}"),
            member: member.public(),
            instance: 0,
            role: Default::default(),
            local: Vec::new(),
        };
        write_frame(&mut send, &join).await.expect("join");
        let Ok(Some(RelayMessage::Challenge { nonce })) = read_frame(&mut recv).await else {
            panic!("no challenge")
        };
        let binding = channel_binding(&conn, &inv.room).expect("binding");
        let proof = inv.secret.admission_proof(&inv.room, &nonce, &binding);
        let signature = member.sign_admission(&nonce, &binding);
        write_frame(&mut send, &ClientMessage::Proof { proof, signature })
            .await
            .expect("proof");
        let Ok(Some(RelayMessage::Welcome { .. })) = read_frame(&mut recv).await else {
            panic!("not admitted")
        };
        // Keep the control stream open for the member's lifetime.
        tokio::spawn(async move {
            let _keep = send;
            while let Ok(Some(_)) = read_frame::<RelayMessage>(&mut recv).await {}
        });
    }
    conn
}

struct Outcome {
    cpu_share: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn run(kind: Kind) -> Outcome {
    let state = std::env::temp_dir().join(format!("echoel-relay-bench-{}", std::process::id()));
    let (server, invite) = Server::start(kind, &state);
    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let conns: Vec<quinn::Connection> = clients_rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..MEMBERS {
            v.push(connect(kind, server.addr, invite.as_ref(), i).await);
        }
        v
    });
    let epoch = Instant::now();
    let delays: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    let recording = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));

    for conn in &conns {
        let (conn, delays, recording, delivered) = (
            conn.clone(),
            delays.clone(),
            recording.clone(),
            delivered.clone(),
        );
        clients_rt.spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                if !recording.load(Relaxed) {
                    continue;
                }
                let now_us = epoch.elapsed().as_micros() as u64;
                // The relay sends `[sender][datagram]` items, alone or bundled; the bare loop
                // the datagrams as they came.
                let datagrams: Vec<&[u8]> = match kind {
                    Kind::Bare => vec![&d[..]],
                    Kind::Echoel => forwarded_items(&d)
                        .filter_map(Result::ok)
                        .map(|f| f.datagram)
                        .collect(),
                };
                for dg in datagrams {
                    let Some(ts) = dg.get(3..11) else { continue };
                    let sent_us = u64::from_le_bytes(ts.try_into().expect("8 bytes"));
                    delays
                        .lock()
                        .unwrap()
                        .push(now_us.saturating_sub(sent_us) as u32);
                    delivered.fetch_add(1, Relaxed);
                }
            }
        });
    }
    // Paced sender: member k % 20 sends at k × 125 µs, so every member sends every 2.5 ms and
    // the room's send phases are spread evenly.
    let spacing = FRAME / MEMBERS as u32;
    let total = ((WARMUP + MEASURE).as_secs_f64() / spacing.as_secs_f64()) as u64;
    let warm = (WARMUP.as_secs_f64() / spacing.as_secs_f64()) as u64;
    let mut cpu0 = Duration::ZERO;
    let mut t0 = Instant::now();
    let start = Instant::now();
    let mut buf = [0u8; DATAGRAM_LEN];
    buf[0] = 0x10;
    for k in 0..total {
        if k == warm {
            cpu0 = server.cpu();
            t0 = Instant::now();
            recording.store(true, Relaxed);
        }
        let due = start + spacing * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let m = (k % MEMBERS as u64) as usize;
        let seq = (k / MEMBERS as u64) as u16;
        buf[1..3].copy_from_slice(&seq.to_be_bytes());
        buf[3..11].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_le_bytes());
        let _ = conns[m].send_datagram(Bytes::copy_from_slice(&buf));
    }
    recording.store(false, Relaxed);
    let cpu1 = server.cpu();
    let wall = t0.elapsed();
    let mut d = delays.lock().unwrap().clone();
    d.sort_unstable();
    let pct = |p: f64| {
        d.get(((d.len() as f64 * p) as usize).min(d.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let outcome = Outcome {
        cpu_share: (cpu1 - cpu0).as_secs_f64() / wall.as_secs_f64(),
        delivered_per_s: delivered.load(Relaxed) as f64 / wall.as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    };
    for c in &conns {
        c.close(0u32.into(), b"done");
    }
    drop(server);
    clients_rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&state);
    outcome
}

fn main() {
    println!(
        "Relay forwarding: {MEMBERS} members, 2.5 ms frames, {} datagrams/s in, {} expected out, send phases spread",
        MEMBERS * 400,
        MEMBERS * 400 * (MEMBERS - 1)
    );
    println!(
        "{:<22} {:>12} {:>14} {:>10} {:>10}",
        "server", "CPU % core", "delivered/s", "p50 ms", "p99 ms"
    );
    // Interleaved rounds, medians reported: the load generator shares this small machine.
    let (mut bares, mut ours_all) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bares.push(run(Kind::Bare));
        ours_all.push(run(Kind::Echoel));
    }
    let median = |v: &[Outcome], f: fn(&Outcome) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(|a, b| a.total_cmp(b));
        x[x.len() / 2]
    };
    let summary = |v: &[Outcome]| Outcome {
        cpu_share: median(v, |o| o.cpu_share),
        delivered_per_s: median(v, |o| o.delivered_per_s),
        p50_ms: median(v, |o| o.p50_ms),
        p99_ms: median(v, |o| o.p99_ms),
    };
    let (bare, ours) = (summary(&bares), summary(&ours_all));
    for (name, o) in [("bare quinn loop", &bare), ("echoel relay", &ours)] {
        println!(
            "{:<22} {:>11.1}% {:>14.0} {:>10.3} {:>10.3}",
            name,
            o.cpu_share * 100.0,
            o.delivered_per_s,
            o.p50_ms,
            o.p99_ms
        );
    }
    let ratios: Vec<String> = bares
        .iter()
        .zip(&ours_all)
        .map(|(b, o)| format!("{:.2}", o.cpu_share / b.cpu_share))
        .collect();
    println!(
        "\nmedians of {ROUNDS} interleaved rounds; per-round CPU ratios: {}",
        ratios.join(", ")
    );
    println!(
        "relay batching: {:.2} datagrams per batch",
        FORWARDED.load(Relaxed) as f64 / BATCHES.load(Relaxed).max(1) as f64
    );
    println!(
        "relay CPU / bare CPU: {:.2}x (target <= 0.5x); added p99 delay: {:.3} ms (target <= 0.5 ms)",
        ours.cpu_share / bare.cpu_share,
        ours.p99_ms - bare.p99_ms
    );
}
