//! On-wire cost of one audio packet, measured on real sockets: a member sends paced audio
//! frames of each Opus frame size through a relay on loopback, and quinn's own UDP counters
//! give the bytes per packet. Adds 20 bytes of IPv4 and 8 of UDP header per datagram.
//!
//! `cargo bench -p echoel-net --bench wire`

use std::time::{Duration, Instant};

mod common;

use echoel_net::session::{self, SessionConfig, SessionState};
use echoel_net::wire::StemId;

const IPV4_UDP_HEADER: u64 = 20 + 8;
const BITRATE_BPS: u64 = 128_000;
const SECONDS: f64 = 1.5;

fn main() {
    let rt = common::network_runtime();
    let (invite, _state) = common::relay_with_room(&rt, "wire");
    let join = |name: &str| {
        let _g = rt.enter();
        session::start(
            SessionConfig {
                force_relay: true,
                ..SessionConfig::new(invite.clone(), name)
            },
            |_, _| {},
        )
        .expect("session")
    };
    // A listener, so the sender has someone to send to.
    let (handle, listener) = (join("sender"), join("listener"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(matches!(handle.status().state, SessionState::Joined { .. })
        && handle.status().members.iter().any(|m| m.keyed))
    {
        assert!(Instant::now() < deadline, "could not join the relay");
        std::thread::sleep(Duration::from_millis(10));
    }

    println!(
        "On-wire bytes per audio packet, member → relay, IPv4, Opus CBR {} kbit/s",
        BITRATE_BPS / 1000
    );
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>12} {:>13} {:>7}",
        "frame", "payload", "on wire", "overhead", "payload kb/s", "on-wire kb/s", "ratio"
    );
    let mut media_time = 0u64;
    for frame_ms in [2.5f64, 5.0, 10.0, 20.0] {
        let payload_len = (BITRATE_BPS as f64 * frame_ms / 1000.0 / 8.0).round() as usize;
        let payload = vec![0x5au8; payload_len];
        let period = Duration::from_secs_f64(frame_ms / 1000.0);
        let packets = (SECONDS * 1000.0 / frame_ms) as u64;
        // Let the previous row's acknowledgements settle before counting.
        std::thread::sleep(Duration::from_millis(200));
        let (b0, d0) = handle.wire_tx();
        let start = Instant::now();
        for i in 0..packets {
            if let Some(wait) = (start + period * i as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            handle.send_audio(StemId(0), media_time, &payload);
            media_time += (frame_ms * 48.0) as u64;
        }
        std::thread::sleep(Duration::from_millis(50));
        let (b1, d1) = handle.wire_tx();
        let datagrams = (d1 - d0).max(1);
        let per_packet = (b1 - b0 + datagrams * IPV4_UDP_HEADER) as f64 / packets as f64;
        let ratio = per_packet / payload_len as f64;
        println!(
            "{:>6.1}ms {:>8}B {:>9.1}B {:>9.1}B {:>12.0} {:>13.0} {:>6.2}x",
            frame_ms,
            payload_len,
            per_packet,
            per_packet - payload_len as f64,
            payload_len as f64 * 8.0 / frame_ms,
            per_packet * 8.0 / frame_ms,
            ratio
        );
    }
    println!("\ntargets: <= 2.8x at 2.5 ms, <= 1.9x at 5 ms (udp datagrams include keep-alives)");
    handle.stop();
    listener.stop();
}
