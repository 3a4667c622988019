//! The session's UDP socket: quinn's, with a way to punch holes from it. A router opens a
//! mapping for the address a packet goes out to; the punch must leave from the very socket
//! (and so the very port) the QUIC endpoint uses, or the mapping is for the wrong port.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

/// What a punch carries. The first byte has QUIC's fixed bit clear, so no QUIC stack takes it
/// for a packet (ours never sees it: [`PunchSocket`] takes it out first).
pub const PUNCH: &[u8; 14] = b"\0echoel-punch\0";

/// What a member sends the relay's reflector (the relay's port + 1) to learn the address it
/// is seen at from there: padded, so the answer is never larger than the question.
pub const PROBE: &[u8; 40] = b"\0echoel-where-am-i\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
/// The reflector's answer starts so, then the address: family (4 or 6), 16 address bytes, the
/// port (big-endian).
const HERE: &[u8; 14] = b"\0echoel-here\0\0";
const ANSWER_LEN: usize = HERE.len() + 1 + 16 + 2;

/// The reflector's answer to a probe from `from`.
pub fn reflect(from: SocketAddr) -> [u8; ANSWER_LEN] {
    let mut a = [0u8; ANSWER_LEN];
    a[..HERE.len()].copy_from_slice(HERE);
    let (family, ip) = match from.ip() {
        std::net::IpAddr::V4(v4) => (4, v4.to_ipv6_mapped().octets()),
        std::net::IpAddr::V6(v6) => (6, v6.octets()),
    };
    a[HERE.len()] = family;
    a[HERE.len() + 1..HERE.len() + 17].copy_from_slice(&ip);
    a[HERE.len() + 17..].copy_from_slice(&from.port().to_be_bytes());
    a
}

fn parse_answer(b: &[u8]) -> Option<SocketAddr> {
    if b.len() != ANSWER_LEN || !b.starts_with(HERE) {
        return None;
    }
    let ip: [u8; 16] = b[HERE.len() + 1..HERE.len() + 17].try_into().ok()?;
    let ip = std::net::Ipv6Addr::from(ip);
    let ip = match b[HERE.len()] {
        4 => std::net::IpAddr::V4(ip.to_ipv4_mapped()?),
        6 => std::net::IpAddr::V6(ip),
        _ => return None,
    };
    let port = u16::from_be_bytes([b[ANSWER_LEN - 2], b[ANSWER_LEN - 1]]);
    Some(canonical(SocketAddr::new(ip, port)))
}

/// An address as the session compares it: a v4 peer on our dual-stack socket shows as
/// `::ffff:a.b.c.d`, the same peer as `a.b.c.d`.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Addresses a punch came from that we remember (the newest).
const HEARD_MAX: usize = 64;

/// quinn's socket, which also sends and takes out punches.
pub struct PunchSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Where punches came from, and when last.
    heard: Mutex<BTreeMap<SocketAddr, Instant>>,
    /// The reflector we asked, and the address it saw us at.
    reflected: Mutex<(Option<SocketAddr>, Option<SocketAddr>)>,
    /// Bound to IPv6 (and so dual-stack: see the session's endpoint).
    v6: bool,
}

impl fmt::Debug for PunchSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PunchSocket").finish_non_exhaustive()
    }
}

impl PunchSocket {
    /// Wraps the socket quinn's runtime made of `socket`.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Arc<Self>> {
        let v6 = socket.local_addr()?.is_ipv6();
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        Ok(Arc::new(Self {
            inner,
            heard: Mutex::new(BTreeMap::new()),
            reflected: Mutex::new((None, None)),
            v6,
        }))
    }

    /// Sends one punch to `to`. A full send buffer drops it: the next one goes soon.
    pub fn punch(&self, to: SocketAddr) {
        self.send_raw(to, PUNCH);
    }

    /// Asks the reflector at `to` where it sees us (see [`Self::reflected`]).
    pub fn probe(&self, to: SocketAddr) {
        self.reflected.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(to);
        self.send_raw(to, PROBE);
    }

    /// The address the reflector saw us at, once it answered.
    pub fn reflected(&self) -> Option<SocketAddr> {
        self.reflected.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    fn send_raw(&self, to: SocketAddr, contents: &[u8]) {
        // A dual-stack socket reaches a v4 address by its v4-mapped form (as quinn does).
        let destination = match to {
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => to,
        };
        let t = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        let _ = self.inner.try_send(&t);
    }

    /// Whether a punch from `from` arrived (its router let our way in... and ours let it in).
    pub fn heard_from(&self, from: SocketAddr) -> bool {
        self.heard
            .lock()
            .map(|h| h.contains_key(&from))
            .unwrap_or(false)
    }

    /// Whether a punch from any address with `from`'s IP arrived (a router that gave a new
    /// port to its way here).
    pub fn heard_from_ip(&self, from: SocketAddr) -> bool {
        self.heard
            .lock()
            .map(|h| h.keys().any(|a| a.ip() == from.ip()))
            .unwrap_or(false)
    }

    /// Addresses with `ip` that punches came from: a router that gave a new port to its
    /// way here may let in what goes back to that port.
    pub fn heard_at(&self, ip: std::net::IpAddr) -> Vec<SocketAddr> {
        self.heard
            .lock()
            .map(|h| h.keys().filter(|a| a.ip() == ip).copied().collect())
            .unwrap_or_default()
    }

    fn note(&self, from: SocketAddr) {
        if let Ok(mut h) = self.heard.lock() {
            h.insert(from, Instant::now());
            if h.len() > HEARD_MAX {
                if let Some(oldest) = h.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                    h.remove(&oldest);
                }
            }
        }
    }
}

/// Whether a received buffer holds punches only.
fn only_punches(buf: &[u8], meta: &RecvMeta) -> bool {
    meta.stride == PUNCH.len()
        && meta.len.is_multiple_of(PUNCH.len())
        && buf[..meta.len].chunks(PUNCH.len()).all(|c| c == PUNCH)
}

impl AsyncUdpSocket for PunchSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // Bounded: each round takes at least one datagram off the socket.
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut kept = 0;
            for i in 0..n {
                if only_punches(&bufs[i], &meta[i]) {
                    self.note(canonical(meta[i].addr));
                    continue;
                }
                if let Some(at) = parse_answer(&bufs[i][..meta[i].len]) {
                    // Only the reflector we asked; anything else is dropped all the same.
                    let mut r = self.reflected.lock().unwrap_or_else(|e| e.into_inner());
                    if r.0 == Some(canonical(meta[i].addr)) {
                        r.1 = Some(at);
                    }
                    continue;
                }
                if kept != i {
                    let (to, from) = bufs.split_at_mut(i);
                    let len = meta[i].len;
                    to[kept][..len].copy_from_slice(&from[0][..len]);
                    meta[kept] = meta[i];
                }
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Punches are taken out before quinn sees them; everything else reaches it, in order.
    #[tokio::test]
    async fn punches_are_heard_and_taken_out() {
        let a = PunchSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = a.local_addr().unwrap();
        b.send_to(PUNCH, to).unwrap();
        b.send_to(b"\x40quic-ish", to).unwrap();
        b.send_to(PUNCH, to).unwrap();
        b.send_to(b"\x40second", to).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 2 && Instant::now() < deadline {
            let mut storage = vec![[0u8; 1500]; 4];
            let mut bufs: Vec<IoSliceMut> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let mut meta = vec![RecvMeta::default(); 4];
            let n = std::future::poll_fn(|cx| a.poll_recv(cx, &mut bufs, &mut meta))
                .await
                .unwrap();
            for i in 0..n {
                got.push(bufs[i][..meta[i].len].to_vec());
            }
        }
        assert_eq!(got, vec![b"\x40quic-ish".to_vec(), b"\x40second".to_vec()]);
        assert!(a.heard_from(b.local_addr().unwrap()));
        assert!(!a.heard_from(SocketAddr::from(([127, 0, 0, 1], 9))));
    }

    #[test]
    fn reflector_answers_round_trip_and_are_no_larger_than_the_probe() {
        for at in ["198.51.100.7:4433", "[2001:db8::1]:9"] {
            let at: SocketAddr = at.parse().unwrap();
            let answer = reflect(at);
            assert!(answer.len() <= PROBE.len());
            assert_eq!(parse_answer(&answer), Some(at));
        }
        assert_eq!(parse_answer(&PROBE[..]), None);
        assert_eq!(
            parse_answer(&reflect("10.0.0.1:1".parse().unwrap())[1..]),
            None
        );
    }
}
