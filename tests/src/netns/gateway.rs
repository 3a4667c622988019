//! A lab router's port-forwarding service, as home routers run it: NAT-PMP (RFC 6886) or
//! UPnP-IGD ([`upnp`]). A studio asks for a UDP port and the router forwards it with nftables
//! (a DNAT for what comes in, and an SNAT so that what the studio sends from its socket leaves
//! from the mapped port too, ahead of the router's own translation). The NAT-PMP service
//! answers PCP requests as an older router does ("unsupported version: NAT-PMP"), so clients
//! that try PCP first fall back to it. Real servers (miniupnpd) refuse to map while their
//! internet address is in a documentation range, which is the only range the lab may use.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{in_ns, nft, Lab};

const PORT: u16 = 5351;
/// Ports given out when the one asked for is taken.
const FIRST_FREE: u16 = 40_000;

mod upnp;

/// What the gateway holds and has done.
#[derive(Debug, Default)]
struct State {
    /// External port → the studio's socket it forwards to.
    mappings: BTreeMap<u16, SocketAddrV4>,
    granted: u32,
    deleted: u32,
}

/// Router `k`'s port-forwarding service, answering on its LAN address until dropped.
pub struct Gateway {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Gateway {
    /// Starts answering NAT-PMP on 198.18.k.1:5351 in router `k`'s namespace.
    pub fn nat_pmp(lab: &Lab, k: u8) -> Result<Self, String> {
        Self::port_control(lab, k, false)
    }

    /// Starts answering PCP, and NAT-PMP, on 198.18.k.1:5351 in router `k`'s namespace.
    pub fn pcp(lab: &Lab, k: u8) -> Result<Self, String> {
        Self::port_control(lab, k, true)
    }

    fn port_control(lab: &Lab, k: u8, pcp: bool) -> Result<Self, String> {
        let ns = lab.ns(&format!("r{k}"));
        let wan = wan_of(k);
        let socket = in_ns(&ns, move || {
            let s = UdpSocket::bind((Ipv4Addr::new(198, 18, k, 1), PORT))?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok::<_, std::io::Error>(s)
        })
        .join()
        .map_err(|_| "gateway thread".to_string())??
        .map_err(|e| format!("gateway socket: {e}"))?;
        let (state, stop) = (
            Arc::<Mutex<State>>::default(),
            Arc::new(AtomicBool::new(false)),
        );
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || serve(&socket, &ns, wan, pcp, &state, &stop))
        };
        Ok(Self {
            state,
            stop,
            threads: vec![thread],
        })
    }

    /// Starts answering UPnP-IGD in router `k`'s namespace: SSDP searches on its LAN, and
    /// the device's description and control on 198.18.k.1:5000.
    pub fn upnp(lab: &Lab, k: u8) -> Result<Self, String> {
        let ns = lab.ns(&format!("r{k}"));
        let (state, stop) = (
            Arc::<Mutex<State>>::default(),
            Arc::new(AtomicBool::new(false)),
        );
        let threads = upnp::start(&ns, k, &state, &stop)?;
        Ok(Self {
            state,
            stop,
            threads,
        })
    }

    /// The studios' sockets it forwards to now, by external port.
    pub fn mappings(&self) -> BTreeMap<u16, SocketAddrV4> {
        self.lock().mappings.clone()
    }

    /// Mappings granted and deleted so far (a renewal grants again).
    pub fn counts(&self) -> (u32, u32) {
        let s = self.lock();
        (s.granted, s.deleted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            if let Ok(Err(e)) = t.join() {
                eprintln!("the lab's gateway failed: {e}");
            }
        }
    }
}

fn serve(
    socket: &UdpSocket,
    ns: &str,
    wan: Ipv4Addr,
    pcp: bool,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1100];
    while !stop.load(Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let std::net::SocketAddr::V4(from) = from else {
            continue;
        };
        let epoch = (started.elapsed().as_secs() as u32).to_be_bytes();
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let reply = answer(&buf[..n], *from.ip(), wan, epoch, pcp, &mut state);
        if let Some((reply, changed)) = reply {
            if changed {
                install(ns, wan, &state.mappings)?;
            }
            let _ = socket.send_to(&reply, from);
        }
    }
    Ok(())
}

/// The reply to one request from `client`, and whether the mappings changed. `pcp`: the
/// router speaks PCP (RFC 6887) as well; else it answers PCP as NAT-PMP only routers do.
fn answer(
    req: &[u8],
    client: Ipv4Addr,
    wan: Ipv4Addr,
    epoch: [u8; 4],
    pcp: bool,
    state: &mut State,
) -> Option<(Vec<u8>, bool)> {
    let header = |op: u8, result: u16| {
        let mut r = vec![0, 128 + op];
        r.extend(result.to_be_bytes());
        r.extend(epoch);
        r
    };
    match req {
        [2, 1, ..] if pcp && req.len() == 60 => Some(pcp_map(req, client, wan, epoch, state)),
        // "Unsupported version", the NAT-PMP way.
        [2, op, ..] => Some((header(op & 0x7f, 1), false)),
        [0, 0] => {
            let mut r = header(0, 0);
            r.extend(wan.octets());
            Some((r, false))
        }
        [0, op @ (1 | 2), _, _, rest @ ..] if rest.len() == 8 => {
            let internal = u16::from_be_bytes([rest[0], rest[1]]);
            let asked = u16::from_be_bytes([rest[2], rest[3]]);
            let lifetime = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
            if *op == 2 {
                // Only UDP here: "unsupported opcode".
                return Some((header(*op, 5), false));
            }
            let mut r = header(*op, 0);
            r.extend(internal.to_be_bytes());
            if lifetime == 0 {
                let gone = state.delete(client, internal);
                r.extend([0; 6]);
                return Some((r, gone));
            }
            let (external, changed) = state.grant(client, internal, asked)?;
            r.extend(external.to_be_bytes());
            r.extend(lifetime.to_be_bytes());
            Some((r, changed))
        }
        _ => None,
    }
}

/// A PCP MAP request (24-byte header, 36-byte MAP body) and its answer.
fn pcp_map(
    req: &[u8],
    client: Ipv4Addr,
    wan: Ipv4Addr,
    epoch: [u8; 4],
    state: &mut State,
) -> (Vec<u8>, bool) {
    let lifetime = u32::from_be_bytes([req[4], req[5], req[6], req[7]]);
    let (nonce, protocol) = (&req[24..36], req[36]);
    let internal = u16::from_be_bytes([req[40], req[41]]);
    let asked = u16::from_be_bytes([req[42], req[43]]);
    // The client's own address in the request must be the one it sends from.
    let claimed = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&req[8..24]).expect("16"));
    let (result, external, changed) = if claimed.to_ipv4_mapped() != Some(client) {
        (12, 0, false) // ADDRESS_MISMATCH
    } else if protocol != 17 {
        (9, 0, false) // UNSUPP_PROTOCOL
    } else if lifetime == 0 {
        (0, 0, state.delete(client, internal))
    } else {
        match state.grant(client, internal, asked) {
            Some((p, changed)) => (0, p, changed),
            None => (8, 0, false), // NO_RESOURCES
        }
    };
    let mut r = vec![2, 128 + 1, 0, result];
    r.extend(if result == 0 { lifetime } else { 0 }.to_be_bytes());
    r.extend(epoch);
    r.extend([0; 12]);
    r.extend(nonce);
    r.extend([protocol, 0, 0, 0]);
    r.extend(internal.to_be_bytes());
    r.extend(external.to_be_bytes());
    r.extend(wan.to_ipv6_mapped().octets());
    (r, changed)
}

impl State {
    /// Forwards a port to `client`'s `internal` port: the one it holds, else the one it
    /// `asked` for if free, else another; and whether that is new.
    fn grant(&mut self, client: Ipv4Addr, internal: u16, asked: u16) -> Option<(u16, bool)> {
        let sock = SocketAddrV4::new(client, internal);
        let held = self
            .mappings
            .iter()
            .find(|(_, s)| **s == sock)
            .map(|(p, _)| *p);
        let free = |p: u16| p != 0 && !self.mappings.contains_key(&p);
        let external = held
            .or(free(asked).then_some(asked))
            .or_else(|| (FIRST_FREE..u16::MAX).find(|p| free(*p)))?;
        self.mappings.insert(external, sock);
        self.granted += 1;
        Some((external, held.is_none()))
    }

    /// Deletes `client`'s mappings of `internal` (all of them for 0); whether there were any.
    fn delete(&mut self, client: Ipv4Addr, internal: u16) -> bool {
        let before = self.mappings.len();
        self.mappings
            .retain(|_, s| !(*s.ip() == client && (internal == 0 || s.port() == internal)));
        let gone = before - self.mappings.len();
        self.deleted += gone as u32;
        gone > 0
    }
}

/// The external address of router `k`.
fn wan_of(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 10 + k)
}

/// Replaces the router's forwarding rules with `mappings`, in one nftables transaction.
fn install(ns: &str, wan: Ipv4Addr, mappings: &BTreeMap<u16, SocketAddrV4>) -> Result<(), String> {
    let (mut pre, mut post) = (String::new(), String::new());
    for (ext, sock) in mappings {
        let (ip, port) = (sock.ip(), sock.port());
        pre += &format!("  ip daddr {wan} udp dport {ext} dnat to {ip}:{port}\n");
        post += &format!("  ip saddr {ip} udp sport {port} oifname \"wan\" snat to {wan}:{ext}\n");
    }
    // Ahead of the router's masquerade (srcnat, 100): the first translation wins.
    nft(
        ns,
        &format!(
            "table ip pmp {{}}\nflush table ip pmp\n\
             table ip pmp {{\n chain pre {{\n  type nat hook prerouting priority dstnat;\n{pre} }}\n \
             chain post {{\n  type nat hook postrouting priority 90;\n{post} }}\n}}\n"
        ),
    )
}
