//! Session transit: the time from `SessionHandle::send_audio` on a pump thread to the frame's
//! `on_audio` callback at another member, through the relay and over a direct path, both
//! members' sessions on one shared single-thread network runtime (as in the plugin) and the
//! relay on its own. Frames every 2.5 ms carry their send time.
//!
//! `cargo bench -p echoel-net --bench session`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use echoel_net::session::{self, SessionConfig};
use echoel_net::wire::StemId;

const FRAME: Duration = Duration::from_micros(2500);
const SETTLE: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(6);

fn main() {
    // The relay on a runtime of its own, the members on another.
    let relay_rt = common::network_runtime();
    let (invite, _state) = common::relay_with_room(&relay_rt, "bench");
    println!(
        "Session transit, send_audio → on_audio, 2.5 ms frames, {} s measured",
        MEASURE.as_secs()
    );
    println!(
        "{:<8} {:>8} {:>10} {:>10} {:>10}",
        "path", "frames", "p50 µs", "p90 µs", "p99 µs"
    );
    for force_relay in [true, false] {
        let net = common::network_runtime();
        let epoch = Instant::now();
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let config = |name: &str| SessionConfig {
            force_relay,
            ..SessionConfig::new(invite.clone(), name)
        };
        let _g = net.enter();
        let s2 = seen.clone();
        let rx = session::start(config("rx"), move |_, f| {
            let sent = u64::from_be_bytes(f.payload[..8].try_into().unwrap_or([0; 8]));
            let now = epoch.elapsed().as_nanos() as u64;
            s2.lock().unwrap().push(now.saturating_sub(sent));
        })
        .expect("session");
        let tx = session::start(config("tx"), |_, _| {}).expect("session");
        drop(_g);
        let start = Instant::now();
        let mut next = start;
        let mut media = 0u64;
        let mut payload = [0u8; 60];
        while start.elapsed() < SETTLE + MEASURE {
            if start.elapsed() >= SETTLE && media == u64::MAX {
                break;
            }
            if start.elapsed() < SETTLE {
                seen.lock().unwrap().clear();
            }
            payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            tx.send_audio(StemId(0), media, &payload);
            media += 120;
            next += FRAME;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut v = seen.lock().unwrap().clone();
        v.sort_unstable();
        let q = |p: f64| {
            v.get(((v.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0)
                / 1000
        };
        println!(
            "{:<8} {:>8} {:>10} {:>10} {:>10}",
            if force_relay { "relay" } else { "direct" },
            v.len(),
            q(0.5),
            q(0.9),
            q(0.99)
        );
        tx.stop();
        rx.stop();
        std::thread::sleep(Duration::from_millis(200));
        net.shutdown_timeout(Duration::from_secs(1));
    }
}
