//! The relay's Prometheus-style metrics endpoint.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Directory;

/// Prometheus text exposition of the relay's state.
fn render(directory: &Directory) -> String {
    let m = &directory.metrics;
    let rooms = directory
        .rooms
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "echoel_relay_rooms",
        "Rooms with state loaded.",
        rooms as u64,
    );
    gauge(
        "echoel_relay_members",
        "Members in rooms.",
        m.members.load(Relaxed),
    );
    let counters: [(&str, &str, &AtomicU64); 19] = [
        (
            "echoel_relay_batches_total",
            "Datagram batches handed to quinn.",
            &m.batches,
        ),
        ("echoel_relay_joins_total", "Members admitted.", &m.joins),
        (
            "echoel_relay_refused_wrong_secret_total",
            "Joins refused: wrong secret.",
            &m.refused_wrong_secret,
        ),
        (
            "echoel_relay_refused_unknown_room_total",
            "Joins refused: unknown room.",
            &m.refused_unknown_room,
        ),
        (
            "echoel_relay_refused_other_total",
            "Joins refused: full, timeout or protocol.",
            &m.refused_other,
        ),
        (
            "echoel_relay_refused_rotation_total",
            "Secret rotations refused: not proved by the room secret.",
            &m.refused_rotation,
        ),
        (
            "echoel_relay_refused_impostor_total",
            "Joins refused: a member key that did not sign.",
            &m.refused_impostor,
        ),
        (
            "echoel_relay_refused_busy_total",
            "Connections refused: too many waiting to join.",
            &m.refused_busy,
        ),
        (
            "echoel_relay_refused_rate_total",
            "Connections refused: their address started handshakes too fast.",
            &m.refused_rate,
        ),
        (
            "echoel_relay_retried_total",
            "Connections asked to prove their address first.",
            &m.retried,
        ),
        (
            "echoel_relay_datagrams_in_total",
            "Datagrams received.",
            &m.datagrams_in,
        ),
        (
            "echoel_relay_datagrams_forwarded_total",
            "Datagram copies forwarded.",
            &m.datagrams_forwarded,
        ),
        (
            "echoel_relay_dropped_malformed_total",
            "Datagrams dropped: malformed.",
            &m.dropped_malformed,
        ),
        (
            "echoel_relay_dropped_not_member_total",
            "Datagrams dropped: sender not admitted.",
            &m.dropped_not_member,
        ),
        (
            "echoel_relay_dropped_send_total",
            "Datagram copies not queued.",
            &m.dropped_send,
        ),
        (
            "echoel_relay_evicted_slow_total",
            "Members dropped for not reading their control stream.",
            &m.evicted_slow,
        ),
        (
            "echoel_relay_evicted_flooding_total",
            "Members dropped for filling the control backlog of a member that reads.",
            &m.evicted_flooding,
        ),
        (
            "echoel_relay_dropped_overload_total",
            "Datagrams dropped: the room's queue was full.",
            &m.dropped_overload,
        ),
        (
            "echoel_relay_control_forwarded_total",
            "Control messages forwarded.",
            &m.control_forwarded,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Relaxed)
        );
    }
    s
}

/// Answers every request on `listener` with the metrics.
pub(super) async fn serve(listener: tokio::net::TcpListener, directory: Arc<Directory>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let directory = directory.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut req)).await;
            let body = render(&directory);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
