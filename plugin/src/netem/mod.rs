//! `echoel netem`: a userspace UDP impairment proxy, for trying Echoel Jam on a bad network
//! (kernel netem needs privileges few studios give a plugin) and for the fault tests.
//!
//! Each client that sends to the listening address gets its own socket towards the forward
//! address, so the far end (a relay) sees one address per client, and its own pair of
//! [`Link`]s, one per direction, both impaired by the same settings. Settings can change
//! while it runs ([`NetemHandle::update`], or lines on `echoel netem`'s standard input).

mod link;

use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

pub use link::{Fate, Impairment, JitterKind, Link};

/// Clients served at once; a new one beyond this waits for an idle one to be forgotten.
const MAX_CLIENTS: usize = 256;
/// A client silent this long is forgotten (its socket closed).
const CLIENT_IDLE: Duration = Duration::from_secs(120);
/// Datagrams waiting in one direction's delay line; beyond it the newest are dropped, so a
/// flood cannot make the proxy hold unbounded memory.
const MAX_HELD: usize = 16_384;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// A setting that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SettingError(String);

fn bad(what: &str, value: &str, example: &str) -> SettingError {
    SettingError(format!(
        "{what} `{value}` is not understood; write it like `{example}`"
    ))
}

/// Milliseconds from `20ms`, `1.5s`, `500us` or a bare number of milliseconds.
pub fn parse_ms(v: &str) -> Result<f64, SettingError> {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        (v, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x * scale <= 60_000.0 => Ok(x * scale),
        _ => Err(bad("the duration", v, "20ms")),
    }
}

/// A share from `5%` or `0.05`.
pub fn parse_share(v: &str) -> Result<f64, SettingError> {
    let v = v.trim();
    let x = match v.strip_suffix('%') {
        Some(n) => n.trim().parse::<f64>().map(|x| x / 100.0),
        None => v.parse::<f64>(),
    };
    match x {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(bad("the share", v, "5%")),
    }
}

/// Bits per second from `2mbit`, `500kbit`, `64000bit` or `0` (no limit).
pub fn parse_rate(v: &str) -> Result<Option<f64>, SettingError> {
    let t = v.trim().to_ascii_lowercase();
    let (num, scale) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(suffix, scale)| t.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((&t, 1.0));
    match num.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(x) if x.is_finite() && x * scale >= 8_000.0 => Ok(Some(x * scale)),
        _ => Err(bad("the rate", v, "2mbit")),
    }
}

impl Impairment {
    /// Sets one knob by name (`delay`, `jitter`, `jitter-mode`, `loss`, `burst`, `reorder`,
    /// `duplicate`, `rate`), as `echoel netem` takes them on its command line and stdin.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingError> {
        match name.trim_start_matches("--") {
            "delay" => self.delay_ms = parse_ms(value)?,
            "jitter" => self.jitter_ms = parse_ms(value)?,
            "jitter-mode" => {
                self.jitter = match value {
                    "wander" => JitterKind::Wander,
                    "iid" => JitterKind::Iid,
                    _ => return Err(bad("the jitter mode", value, "wander")),
                }
            }
            "loss" => self.loss = parse_share(value)?,
            "burst" => match value.trim().parse::<f64>() {
                Ok(b) if (1.0..=1000.0).contains(&b) => self.burst = b,
                _ => return Err(bad("the mean burst length", value, "3")),
            },
            "reorder" => self.reorder = parse_share(value)?,
            "duplicate" => self.duplicate = parse_share(value)?,
            "rate" => self.rate_bps = parse_rate(value)?,
            other => {
                return Err(SettingError(format!(
                    "no setting `{other}`; there are delay, jitter, jitter-mode, loss, burst, \
                     reorder, duplicate and rate"
                )))
            }
        }
        Ok(())
    }

    /// Applies a line of `name value` pairs (`loss 10% delay 30ms`); `clear` first resets
    /// everything (the trace too). All or nothing: a bad pair changes nothing.
    pub fn apply_line(&mut self, line: &str) -> Result<(), SettingError> {
        let mut next = self.clone();
        let mut words = line.split_whitespace().peekable();
        if words.peek() == Some(&"clear") {
            words.next();
            next = Impairment::default();
        }
        while let Some(name) = words.next() {
            let value = words
                .next()
                .ok_or_else(|| SettingError(format!("`{name}` needs a value")))?;
            next.set(name, value)?;
        }
        *self = next;
        Ok(())
    }
}

impl std::fmt::Display for Impairment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delay {:.1}ms jitter {:.1}ms ({:?}) loss {:.1}% burst {} reorder {:.1}% \
             duplicate {:.1}% rate {}{}",
            self.delay_ms,
            self.jitter_ms,
            self.jitter,
            self.loss * 100.0,
            self.burst,
            self.reorder * 100.0,
            self.duplicate * 100.0,
            self.rate_bps
                .map_or("unlimited".into(), |r| format!("{:.0}kbit", r / 1e3)),
            self.trace
                .as_ref()
                .map_or(String::new(), |t| format!(" trace {}", t.name)),
        )
    }
}

/// What the proxy did, both directions together.
#[derive(Debug, Default)]
pub struct NetemCounters {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Datagrams delivered (a duplicate counts twice).
    pub delivered: AtomicU64,
    /// Datagrams dropped by the impairment (or a full delay line).
    pub dropped: AtomicU64,
}

/// A running proxy.
///
/// # Thread
/// Any thread; the proxy runs on the tokio runtime it was started on.
pub struct NetemHandle {
    /// Where clients send.
    pub addr: SocketAddr,
    settings: Arc<Mutex<Impairment>>,
    counters: Arc<NetemCounters>,
    task: tokio::task::JoinHandle<()>,
}

impl NetemHandle {
    /// Changes the settings; datagrams from now on see the new ones.
    pub fn update(&self, change: impl FnOnce(&mut Impairment)) {
        change(&mut self.settings.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The settings in force.
    pub fn settings(&self) -> Impairment {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The proxy's counters.
    pub fn counters(&self) -> &NetemCounters {
        &self.counters
    }

    /// Stops forwarding and closes every socket.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for NetemHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a proxy on `listen` towards `forward` on the current tokio runtime; `seed` makes
/// the impairment's random choices repeatable.
pub async fn start(
    listen: SocketAddr,
    forward: SocketAddr,
    settings: Impairment,
    seed: u64,
) -> std::io::Result<NetemHandle> {
    let socket = Arc::new(UdpSocket::bind(listen).await?);
    let addr = socket.local_addr()?;
    let settings = Arc::new(Mutex::new(settings));
    let counters = Arc::new(NetemCounters::default());
    let task = tokio::spawn(serve(
        socket,
        forward,
        settings.clone(),
        counters.clone(),
        seed,
    ));
    Ok(NetemHandle {
        addr,
        settings,
        counters,
        task,
    })
}

/// One client: its socket towards the far end and its upstream delay line.
struct Client {
    up: mpsc::Sender<Held>,
    up_link: Link,
    last_seen: Instant,
    tasks: [tokio::task::JoinHandle<()>; 3],
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A datagram waiting for its release moment.
struct Held {
    at: Instant,
    order: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Earliest first out of a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// Where a delay line delivers.
#[derive(Clone)]
enum Out {
    /// The far end, on the client's connected socket.
    Forward(Arc<UdpSocket>),
    /// Back to the client, from the listening socket.
    Back(Arc<UdpSocket>, SocketAddr),
}

impl Out {
    async fn send(&self, bytes: &[u8]) {
        let _ = match self {
            Out::Forward(s) => s.send(bytes).await,
            Out::Back(s, to) => s.send_to(bytes, to).await,
        };
    }
}

/// Releases held datagrams at their moments.
async fn delay_line(mut rx: mpsc::Receiver<Held>, out: Out, counters: Arc<NetemCounters>) {
    let mut heap = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|h: &Held| h.at);
        tokio::select! {
            held = rx.recv() => match held {
                Some(h) => heap.push(h),
                None => return,
            },
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|h| h.at <= now) {
            let h = heap.pop().expect("peeked");
            out.send(&h.bytes).await;
            counters.delivered.fetch_add(1, Relaxed);
        }
    }
}

/// Hands a datagram to its delay line with the fate its link gives it.
fn impair(
    link: &mut Link,
    settings: &Mutex<Impairment>,
    epoch: Instant,
    order: &mut u64,
    bytes: &[u8],
    line: &mpsc::Sender<Held>,
    counters: &NetemCounters,
) {
    counters.received.fetch_add(1, Relaxed);
    let now = Instant::now();
    let fate = {
        let imp = settings.lock().unwrap_or_else(|e| e.into_inner());
        link.admit(&imp, now.duration_since(epoch).as_secs_f64(), bytes.len())
    };
    if fate[0].is_none() {
        counters.dropped.fetch_add(1, Relaxed);
    }
    for at in fate.into_iter().flatten() {
        *order += 1;
        let held = Held {
            at: epoch + Duration::from_secs_f64(at),
            order: *order,
            bytes: bytes.to_vec(),
        };
        if line.try_send(held).is_err() {
            counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

async fn serve(
    socket: Arc<UdpSocket>,
    forward: SocketAddr,
    settings: Arc<Mutex<Impairment>>,
    counters: Arc<NetemCounters>,
    seed: u64,
) {
    let epoch = Instant::now();
    let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut order = 0u64;
    let mut joined = 0u64;
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let now = Instant::now();
        if !clients.contains_key(&from) {
            clients.retain(|_, c| now.duration_since(c.last_seen) < CLIENT_IDLE);
            if clients.len() >= MAX_CLIENTS {
                counters.dropped.fetch_add(1, Relaxed);
                continue;
            }
            joined += 1;
            let client_seed = seed.wrapping_add(joined.wrapping_mul(0x1000_0001));
            match open_client(
                &socket,
                from,
                forward,
                &settings,
                &counters,
                client_seed,
                epoch,
            )
            .await
            {
                Ok(c) => {
                    clients.insert(from, c);
                }
                Err(e) => {
                    tracing::warn!("netem: cannot open a socket towards {forward}: {e}");
                    continue;
                }
            }
        }
        let client = clients.get_mut(&from).expect("inserted above");
        client.last_seen = now;
        impair(
            &mut client.up_link,
            &settings,
            epoch,
            &mut order,
            &buf[..n],
            &client.up,
            &counters,
        );
    }
}

/// A client's socket towards the far end, its two delay lines and its downstream reader.
async fn open_client(
    listen: &Arc<UdpSocket>,
    client: SocketAddr,
    forward: SocketAddr,
    settings: &Arc<Mutex<Impairment>>,
    counters: &Arc<NetemCounters>,
    seed: u64,
    epoch: Instant,
) -> std::io::Result<Client> {
    let bind: SocketAddr = if forward.is_ipv6() {
        "[::]:0".parse().expect("valid")
    } else {
        "0.0.0.0:0".parse().expect("valid")
    };
    let towards = Arc::new(UdpSocket::bind(bind).await?);
    towards.connect(forward).await?;
    let (up, up_rx) = mpsc::channel(MAX_HELD);
    let (down, down_rx) = mpsc::channel(MAX_HELD);
    let up_task = tokio::spawn(delay_line(
        up_rx,
        Out::Forward(towards.clone()),
        counters.clone(),
    ));
    let down_task = tokio::spawn(delay_line(
        down_rx,
        Out::Back(listen.clone(), client),
        counters.clone(),
    ));
    let reader = {
        let (settings, counters) = (settings.clone(), counters.clone());
        tokio::spawn(async move {
            let mut link = Link::new(seed ^ 0xd0d0_d0d0);
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let mut order = 0u64;
            loop {
                // A refused send (nobody listening there yet) reports here; keep reading.
                let Ok(n) = towards.recv(&mut buf).await else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                impair(
                    &mut link,
                    &settings,
                    epoch,
                    &mut order,
                    &buf[..n],
                    &down,
                    &counters,
                );
            }
        })
    };
    Ok(Client {
        up,
        up_link: Link::new(seed),
        last_seen: Instant::now(),
        tasks: [up_task, down_task, reader],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_people_write_them() {
        let mut imp = Impairment::default();
        imp.apply_line("delay 20ms --jitter 1.5s loss 5% burst 3 reorder 0.01 rate 2mbit")
            .unwrap();
        assert_eq!(imp.delay_ms, 20.0);
        assert_eq!(imp.jitter_ms, 1500.0);
        assert!((imp.loss - 0.05).abs() < 1e-12);
        assert_eq!(imp.burst, 3.0);
        assert_eq!(imp.reorder, 0.01);
        assert_eq!(imp.rate_bps, Some(2e6));
        // All or nothing.
        let before = imp.to_string();
        assert!(imp.apply_line("loss 5% delay soon").is_err());
        assert!(imp.apply_line("loss 150%").is_err());
        assert!(imp.apply_line("loss").is_err());
        assert!(imp.apply_line("colour blue").is_err());
        assert_eq!(imp.to_string(), before);
        imp.apply_line("clear jitter 8ms").unwrap();
        assert_eq!((imp.delay_ms, imp.jitter_ms, imp.loss), (0.0, 8.0, 0.0));
        assert_eq!(parse_rate("0").unwrap(), None);
        assert!(parse_rate("12bit").is_err());
        assert_eq!(parse_ms("500us").unwrap(), 0.5);
    }

    #[test]
    fn the_proxy_forwards_both_ways_and_drops_what_it_is_told_to() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let echo_addr = echo.local_addr().unwrap();
            tokio::spawn(async move {
                let mut b = [0u8; 1500];
                while let Ok((n, from)) = echo.recv_from(&mut b).await {
                    let _ = echo.send_to(&b[..n], from).await;
                }
            });
            let netem = start(
                "127.0.0.1:0".parse().unwrap(),
                echo_addr,
                Impairment {
                    delay_ms: 5.0,
                    ..Impairment::default()
                },
                1,
            )
            .await
            .unwrap();
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.connect(netem.addr).await.unwrap();
            let sent = Instant::now();
            client.send(b"hello").await.unwrap();
            let mut b = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut b))
                .await
                .expect("echoed in time")
                .unwrap();
            assert_eq!(&b[..n], b"hello");
            // 5 ms each way.
            assert!(sent.elapsed() >= Duration::from_millis(10));
            netem.update(|i| i.loss = 1.0);
            client.send(b"gone").await.unwrap();
            let lost = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut b)).await;
            assert!(lost.is_err(), "a fully lossy link delivers nothing");
            assert_eq!(netem.counters().dropped.load(Relaxed), 1);
        });
    }
}
