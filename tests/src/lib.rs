//! Helpers for the end-to-end tests: a relay on its own runtime, rooms, and bands of headless
//! musicians sharing one start instant.

pub mod netns;
pub mod pauses;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use echoel_net::relay::{Relay, RelayConfig};
use echoel_net::Invite;
use echoel_plugin::engine::analysis::align;
use echoel_plugin::engine::{CodecSettings, INTERNAL_RATE_HZ};
use echoel_plugin::headless::{
    self, measure_lag, DocEdit, HeadlessError, HeadlessOptions, HeadlessReport, LossProtection,
    Source,
};
use echoel_plugin::netem::{self, Impairment, NetemHandle};

/// Holds the lock that keeps socket-heavy, timing-sensitive tests of one binary from running
/// at the same time: on a loaded two-core machine, six three-musician jams at once measure the
/// machine, not the network.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A relay with room `room` in a scratch folder that is also the user's data folder (where a
/// plugin keeps each room's document), for tests of the plugin's own threads. Keep the folder
/// for as long as the relay runs.
pub fn plugin_room(room: &str) -> (tempfile::TempDir, TestRelay, Invite) {
    let dir = tempfile::tempdir().expect("a scratch folder");
    std::env::set_var("XDG_DATA_HOME", dir.path().join("data"));
    let relay = TestRelay::start(dir.path());
    let invite = relay.room(room);
    (dir, relay, invite)
}

/// A relay serving on loopback on its own runtime.
pub struct TestRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state folder.
    pub state_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The relay's counters, while it runs.
    pub metrics_addr: Option<SocketAddr>,
}

impl TestRelay {
    /// Starts a relay on `addr` (port 0: any free port) with state in `state_dir`; `prepare`
    /// may set up test hooks before it serves.
    pub fn start_with(addr: SocketAddr, state_dir: &Path, prepare: impl FnOnce(&Relay)) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("relay runtime");
        let relay = runtime
            .block_on(Relay::bind(&RelayConfig {
                listen: addr,
                state_dir: state_dir.to_owned(),
                metrics: Some("127.0.0.1:0".parse().expect("valid")),
            }))
            .expect("relay binds");
        prepare(&relay);
        let addr = relay.local_addr().expect("bound");
        let metrics_addr = relay.metrics_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = runtime.spawn(relay.run(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            state_dir: state_dir.to_owned(),
            stop: Some(tx),
            serving: Some(serving),
            runtime: Some(runtime),
            metrics_addr,
        }
    }

    /// Schedules the relay's thread real-time (see [`realtime_runtime`]).
    pub fn realtime(&self) -> bool {
        self.runtime.as_ref().is_some_and(realtime_runtime)
    }

    /// Starts a relay on any free loopback port.
    pub fn start(state_dir: &Path) -> Self {
        Self::start_with("127.0.0.1:0".parse().expect("valid"), state_dir, |_| {})
    }

    /// A new room on this relay.
    pub fn room(&self, name: &str) -> Invite {
        echoel_net::relay::create_room(&self.state_dir, &self.addr.to_string(), Some(name))
            .expect("room")
    }

    /// The metrics text, fetched over HTTP like Prometheus would.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Some(addr) = self.metrics_addr else {
            return String::new();
        };
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .expect("metrics reachable");
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
            .expect("request");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    }

    /// A counter's value from [`Self::metrics`].
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Shuts the relay down cleanly, as `echoel relay` does on SIGTERM: members are told.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Ends the relay at once, as a crash or SIGKILL would: its tasks are dropped where they
    /// stand. Put it behind a fully lossy proxy first if members must hear nothing at all.
    pub fn kill(mut self) {
        self.stop.take();
        self.serving.take();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let (Some(rt), Some(serving)) = (self.runtime.as_ref(), self.serving.take()) {
            let _ =
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), serving).await });
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One musician of a test band.
pub struct Musician {
    /// Name.
    pub name: &'static str,
    /// What it plays.
    pub source: Source,
}

/// Runs musicians together from one start instant and returns their reports in order.
pub fn play(
    invite: &Invite,
    band: Vec<Musician>,
    seconds: f32,
    force_relay: bool,
    runtime: &tokio::runtime::Runtime,
) -> Vec<Result<HeadlessReport, HeadlessError>> {
    play_with(invite, band, seconds, force_relay, 0, runtime)
}

/// [`play`], every musician sending `redundancy` earlier frames in each datagram.
pub fn play_with(
    invite: &Invite,
    band: Vec<Musician>,
    seconds: f32,
    force_relay: bool,
    redundancy: u8,
    runtime: &tokio::runtime::Runtime,
) -> Vec<Result<HeadlessReport, HeadlessError>> {
    let band = band.into_iter().map(|m| (m, Vec::new())).collect();
    run_band(invite, band, seconds, force_relay, redundancy, runtime)
}

/// [`play`], each musician also making its session-document edits once in the room.
pub fn play_editing(
    invite: &Invite,
    band: Vec<(Musician, Vec<DocEdit>)>,
    seconds: f32,
    runtime: &tokio::runtime::Runtime,
) -> Vec<Result<HeadlessReport, HeadlessError>> {
    run_band(invite, band, seconds, false, 0, runtime)
}

/// A musician's options for a test: `seconds` of voice `voice`, through the relay.
pub fn musician(invite: &Invite, name: &str, voice: u32, seconds: f32) -> HeadlessOptions {
    HeadlessOptions::voice(invite, name, voice, seconds)
}

/// Runs musicians with these options together from one start instant, 1.2 s from now (the
/// timeline of every recording starts there), and returns their reports in order.
pub fn play_each(
    band: Vec<HeadlessOptions>,
    runtime: &tokio::runtime::Runtime,
) -> Vec<Result<HeadlessReport, HeadlessError>> {
    headless::play_together(band, Duration::from_millis(1200), runtime.handle())
}

/// Asks for the calling thread to be scheduled as a DAW schedules its audio threads
/// (`SCHED_FIFO`); whether it was granted (root, or an rtprio limit that allows it).
pub fn realtime_thread() -> bool {
    let param = libc::sched_param { sched_priority: 20 };
    // SAFETY: plain FFI on the calling thread's own handle, with a valid parameter block.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) == 0 }
}

/// Schedules a one-worker runtime's thread real-time: in a test of timing on a shared machine,
/// so that the machine's other work does not pass for the network's.
pub fn realtime_runtime(runtime: &tokio::runtime::Runtime) -> bool {
    runtime
        .block_on(runtime.spawn(async { realtime_thread() }))
        .unwrap_or(false)
}

/// [`play`], each musician's audio thread scheduled real-time as a DAW's is, all starting at
/// `start_at` (every recording's timeline starts there); `None` where the system does not
/// allow it (a test of timing then measures the machine's load, not ours).
pub fn play_realtime(
    invite: &Invite,
    band: Vec<Musician>,
    seconds: f32,
    force_relay: bool,
    runtime: &tokio::runtime::Runtime,
    start_at: Instant,
) -> Option<Vec<Result<HeadlessReport, HeadlessError>>> {
    if !std::thread::spawn(realtime_thread).join().unwrap_or(false) {
        return None;
    }
    let threads: Vec<_> = band
        .into_iter()
        .map(|m| {
            let opts = HeadlessOptions {
                start_at: Some(start_at),
                force_relay,
                source: m.source,
                ..HeadlessOptions::voice(invite, m.name, 0, seconds)
            };
            let handle = runtime.handle().clone();
            std::thread::spawn(move || {
                realtime_thread();
                headless::run(opts, &handle)
            })
        })
        .collect();
    Some(
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or(Err(HeadlessError::Crashed)))
            .collect(),
    )
}

/// The invite with its relay address replaced by `addr` (an impairment proxy in front of it).
pub fn via(invite: &Invite, addr: SocketAddr) -> Invite {
    let mut i = invite.clone();
    i.host = addr.ip().to_string();
    i.port = addr.port();
    i
}

fn run_band(
    invite: &Invite,
    band: Vec<(Musician, Vec<DocEdit>)>,
    seconds: f32,
    force_relay: bool,
    redundancy: u8,
    runtime: &tokio::runtime::Runtime,
) -> Vec<Result<HeadlessReport, HeadlessError>> {
    let band = band
        .into_iter()
        .map(|(m, edits)| HeadlessOptions {
            invite: invite.clone(),
            name: m.name.to_owned(),
            source: m.source,
            seconds,
            force_relay,
            port_mapping: false,
            protection: LossProtection::Frames(redundancy),
            edits,
            codec: CodecSettings::default(),
            codec_change: None,
            start_at: None,
            record: None,
            listen: false,
            stems: Vec::new(),
            identity: None,
        })
        .collect();
    play_each(band, runtime)
}

/// A runtime for musicians' network sessions (one thread, as in the plugin). Logs go to the
/// test's output when `RUST_LOG` is set.
pub fn network_runtime() -> tokio::runtime::Runtime {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("network runtime")
}

/// Polls `done` every 20 ms for at most `limit`; whether it came true.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// A member session without audio, on the shared network runtime, for document and presence
/// tests.
pub fn join_room(
    invite: &Invite,
    name: &str,
    doc: Option<Vec<u8>>,
) -> echoel_net::session::SessionHandle {
    let _rt = echoel_plugin::bridge::network_runtime().enter();
    echoel_net::session::start(
        echoel_net::session::SessionConfig {
            initial_doc: doc,
            ..echoel_net::session::SessionConfig::new(invite.clone(), name)
        },
        |_, _| {},
    )
    .expect("session starts")
}

/// The lag of `heard` behind `sent` (samples) each second: the median of four 62.5 ms
/// measurements within `reach` samples of the run's overall lag; `None` where the audio is too
/// quiet to tell.
pub fn lag_per_second(sent: &[f32], heard: &[f32], reach: usize) -> Vec<Option<usize>> {
    let rate = INTERNAL_RATE_HZ as usize;
    let coarse = measure_lag(sent, heard, 200.0).expect("heard").lag_samples;
    let window = rate / 16;
    let lag_at = |a: usize| {
        let from = (a + coarse).saturating_sub(reach);
        let found = align(&sent[a..a + window], heard.get(from..)?, 2 * reach)?;
        (found.correlation > 0.9).then_some((from + found.lag_samples).checked_sub(a)?)
    };
    let usable = sent
        .len()
        .min(heard.len())
        .saturating_sub(coarse + window + reach);
    (0..usable / rate)
        .map(|s| {
            let mut lags: Vec<usize> = (0..4)
                .filter_map(|q| lag_at(s * rate + q * rate / 4))
                .collect();
            lags.sort_unstable();
            (lags.len() >= 2).then(|| lags[lags.len() / 2])
        })
        .collect()
}

/// A relay on loopback with the impairment proxy in front of it, on a runtime of its own
/// (fields drop in order: relay, proxy, its runtime, the state folder).
pub struct Rig {
    pub relay: Option<TestRelay>,
    pub proxy: NetemHandle,
    _proxy_rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn new(imp: Impairment) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start(dir.path());
        let proxy_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let proxy = proxy_rt
            .block_on(netem::start(
                "127.0.0.1:0".parse().unwrap(),
                relay.addr,
                imp,
                1,
            ))
            .unwrap();
        Self {
            relay: Some(relay),
            proxy,
            _proxy_rt: proxy_rt,
            dir,
        }
    }

    pub fn relay(&self) -> &TestRelay {
        self.relay.as_ref().expect("relay running")
    }
}
