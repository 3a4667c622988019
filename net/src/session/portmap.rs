//! Asks the home router to forward a port to our socket: PCP or NAT-PMP (`crab_nat`), else
//! UPnP-IGD (`igd-next`). A member behind a router whose own mappings defeat punching (a
//! symmetric NAT) is then reached directly at the mapped address, which the room is told of
//! once we have it. The mapping is renewed while we are in the room and deleted when we leave.
//! IPv4 only: an IPv6 path needs no translation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::driver::Input;

/// What we ask for: short, so a mapping left behind by a crash soon goes.
const LEASE_SECONDS: u32 = 600;
/// Renewed this far before it runs out.
const RENEW_BEFORE: Duration = Duration::from_secs(LEASE_SECONDS as u64 / 2);
/// How long a gateway may take to answer PCP or NAT-PMP: 250 ms, then twice 500 ms.
const PMP_TIMEOUTS: crab_nat::TimeoutConfig = crab_nat::TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 2,
    max_retry_timeout: Some(Duration::from_millis(500)),
};
/// How long to listen for a UPnP gateway (routers answer within a few hundred ms, though
/// the search lets them wait longer).
const UPNP_SEARCH: Duration = Duration::from_secs(2);
const UPNP_DESCRIPTION: &str = "Echoel Jam";

/// Where our port mapping stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PortMapStatus {
    /// Turned off, or no use here (the relay is on this machine, or direct paths are off).
    #[default]
    Off,
    /// Asking the router.
    Asking,
    /// The router forwards this address to our socket.
    Mapped {
        /// The router's address and port.
        addr: SocketAddr,
        /// How it was asked: "PCP", "NAT-PMP" or "UPnP".
        by: &'static str,
    },
    /// The router mapped no port, and why in words.
    Unavailable(String),
}

impl PortMapStatus {
    /// One line for a musician.
    pub fn describe(&self) -> String {
        match self {
            Self::Off => "off".into(),
            Self::Asking => "asking the router…".into(),
            Self::Mapped { addr, by } => format!("{addr} (the router forwards it, {by})"),
            Self::Unavailable(why) => format!("none — {why}"),
        }
    }
}

/// A mapping being asked for or held; dropping it deletes the mapping from the router.
pub(super) struct PortMapper {
    _stop: oneshot::Sender<()>,
}

/// Asks for a mapping of our socket's `port` and holds it; each change of status goes to
/// the driver. `held` is set while the router holds a mapping we have not asked it to drop.
pub(super) fn start(port: u16, driver: mpsc::Sender<Input>, held: Arc<AtomicBool>) -> PortMapper {
    let (stop_tx, stop) = oneshot::channel();
    tokio::spawn(hold(port, driver, stop, held));
    PortMapper { _stop: stop_tx }
}

async fn hold(
    port: u16,
    driver: mpsc::Sender<Input>,
    mut stop: oneshot::Receiver<()>,
    held: Arc<AtomicBool>,
) {
    let report = |s: PortMapStatus| {
        let driver = driver.clone();
        async move { driver.send(Input::PortMap(s)).await.is_ok() }
    };
    if !report(PortMapStatus::Asking).await {
        return;
    }
    let mut lease = tokio::select! {
        l = obtain(port) => match l {
            Ok(l) => l,
            Err((short, detail)) => {
                tracing::info!("no port mapping: {detail}");
                report(PortMapStatus::Unavailable(short.into())).await;
                return;
            }
        },
        _ = &mut stop => return,
    };
    held.store(true, Relaxed);
    tracing::info!("the router forwards {} to us ({})", lease.addr, lease.by());
    let mut told = lease.status();
    report(told.clone()).await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_BEFORE) => {
                if let Err(why) = lease.renew().await {
                    tracing::info!("port mapping lost: {why}");
                    held.store(false, Relaxed);
                    report(PortMapStatus::Unavailable("the router stopped forwarding it".into())).await;
                    return;
                }
                if lease.status() != told {
                    told = lease.status();
                    report(told.clone()).await;
                }
            }
            _ = &mut stop => break,
        }
    }
    if let Err(why) = lease.release().await {
        tracing::info!("the router kept our port mapping until it expires: {why}");
    }
    held.store(false, Relaxed);
}

/// A mapping the router granted.
struct Lease {
    addr: SocketAddr,
    kind: LeaseKind,
}

enum LeaseKind {
    Pmp(crab_nat::PortMapping),
    Upnp {
        gateway: Box<igd_next::Gateway>,
        local: SocketAddr,
    },
}

impl Lease {
    fn by(&self) -> &'static str {
        match &self.kind {
            LeaseKind::Pmp(m) => match m.mapping_type() {
                crab_nat::PortMappingType::NatPmp => "NAT-PMP",
                crab_nat::PortMappingType::Pcp { .. } => "PCP",
            },
            LeaseKind::Upnp { .. } => "UPnP",
        }
    }

    fn status(&self) -> PortMapStatus {
        PortMapStatus::Mapped {
            addr: self.addr,
            by: self.by(),
        }
    }

    async fn renew(&mut self) -> Result<(), String> {
        match &mut self.kind {
            LeaseKind::Pmp(m) => {
                m.renew().await.map_err(|e| e.to_string())?;
                self.addr.set_port(m.external_port().get());
                Ok(())
            }
            LeaseKind::Upnp { gateway, local } => {
                let (gateway, local, port) = (gateway.clone(), *local, self.addr.port());
                blocking(move || upnp_add(&gateway, port, local)).await
            }
        }
    }

    async fn release(self) -> Result<(), String> {
        match self.kind {
            LeaseKind::Pmp(m) => m.try_drop().await.map_err(|(e, _)| e.to_string()),
            LeaseKind::Upnp { gateway, .. } => {
                let port = self.addr.port();
                blocking(move || {
                    gateway
                        .remove_port(igd_next::PortMappingProtocol::UDP, port)
                        .map_err(|e| e.to_string())
                })
                .await
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

/// Asks each gateway by PCP / NAT-PMP, then any UPnP gateway on our networks. One at a time:
/// a second grant would be a mapping left behind. Fails with a few words for the musician
/// and the whole story for the log.
async fn obtain(port: u16) -> Result<Lease, (&'static str, String)> {
    let ours = super::direct::local_networks(port, false);
    let internal = NonZeroU16::new(port);
    let (false, Some(internal)) = (ours.is_empty(), internal) else {
        const NONE: &str = "no IPv4 network to ask a router on";
        return Err((NONE, NONE.into()));
    };
    let mut why = Vec::new();
    for gateway in gateways(&ours) {
        match pmp(gateway, &ours, internal).await {
            Ok(lease) => return Ok(lease),
            Err(e) => why.push(format!("{gateway} (PCP/NAT-PMP): {e}")),
        }
    }
    match blocking(move || upnp(port, &ours)).await {
        Ok(lease) => Ok(lease),
        Err(e) => {
            why.push(format!("UPnP: {e}"));
            Err((
                "the router offers none (asked by PCP, NAT-PMP and UPnP)",
                why.join("; "),
            ))
        }
    }
}

async fn pmp(
    gateway: Ipv4Addr,
    ours: &[(SocketAddr, u8)],
    internal: NonZeroU16,
) -> Result<Lease, String> {
    let client = facing(ours, gateway);
    let options = crab_nat::PortMappingOptions {
        external_port: Some(internal),
        lifetime_seconds: Some(LEASE_SECONDS),
        timeout_config: Some(PMP_TIMEOUTS),
    };
    let m = crab_nat::PortMapping::new(
        gateway.into(),
        client.into(),
        crab_nat::InternetProtocol::Udp,
        internal,
        options,
    )
    .await
    .map_err(|e| e.to_string())?;
    let ip = match m.mapping_type() {
        crab_nat::PortMappingType::Pcp { external_ip, .. } => external_ip,
        crab_nat::PortMappingType::NatPmp => {
            match crab_nat::natpmp::external_address(gateway.into(), Some(PMP_TIMEOUTS)).await {
                Ok(ip) => ip.into(),
                Err(e) => {
                    let _ = m.try_drop().await;
                    return Err(format!("no external address: {e}"));
                }
            }
        }
    };
    Ok(Lease {
        addr: SocketAddr::new(ip, m.external_port().get()),
        kind: LeaseKind::Pmp(m),
    })
}

fn upnp(port: u16, ours: &[(SocketAddr, u8)]) -> Result<Lease, String> {
    let mut options = igd_next::SearchOptions::default();
    options.timeout = Some(UPNP_SEARCH);
    options.single_search_timeout = Some(UPNP_SEARCH);
    let gateway = igd_next::search_gateway(options).map_err(|e| e.to_string())?;
    let IpAddr::V4(at) = gateway.addr.ip() else {
        return Err("the gateway speaks IPv6 only".into());
    };
    let local = SocketAddr::V4(SocketAddrV4::new(facing(ours, at), port));
    let external = match upnp_add(&gateway, port, local) {
        Ok(()) => port,
        // Our port is taken on the router: any other will do.
        Err(_) => gateway
            .add_any_port(
                igd_next::PortMappingProtocol::UDP,
                local,
                LEASE_SECONDS,
                UPNP_DESCRIPTION,
            )
            .map_err(|e| e.to_string())?,
    };
    let ip = match gateway.get_external_ip() {
        Ok(ip) => ip,
        Err(e) => {
            let _ = gateway.remove_port(igd_next::PortMappingProtocol::UDP, external);
            return Err(format!("no external address: {e}"));
        }
    };
    Ok(Lease {
        addr: SocketAddr::new(ip, external),
        kind: LeaseKind::Upnp {
            gateway: Box::new(gateway),
            local,
        },
    })
}

/// Maps `port` on the router to `local`; a router that grants only permanent mappings gets
/// one (deleted when we leave).
fn upnp_add(gateway: &igd_next::Gateway, port: u16, local: SocketAddr) -> Result<(), String> {
    let add = |lease| {
        gateway.add_port(
            igd_next::PortMappingProtocol::UDP,
            port,
            local,
            lease,
            UPNP_DESCRIPTION,
        )
    };
    match add(LEASE_SECONDS) {
        Err(igd_next::AddPortError::OnlyPermanentLeasesSupported) => add(0),
        other => other,
    }
    .map_err(|e| e.to_string())
}

/// Our address on the network `gateway` is on (the first one if none is).
fn facing(ours: &[(SocketAddr, u8)], gateway: Ipv4Addr) -> Ipv4Addr {
    let on = |n: &(SocketAddr, u8)| {
        super::direct::on_our_networks(std::slice::from_ref(n), (gateway, 0).into())
    };
    let pick = ours.iter().find(|n| on(n)).or(ours.first());
    match pick.map(|n| n.0.ip()) {
        Some(IpAddr::V4(a)) => a,
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

/// The routers to ask: this thread's default routes (Linux), else the first address of each
/// of our private networks, where home routers sit.
fn gateways(ours: &[(SocketAddr, u8)]) -> Vec<Ipv4Addr> {
    // The thread's own view: a thread in another network namespace has other routes.
    let table = std::fs::read_to_string("/proc/thread-self/net/route")
        .or_else(|_| std::fs::read_to_string("/proc/net/route"))
        .unwrap_or_default();
    let mut found = default_gateways(&table);
    if found.is_empty() {
        found = ours
            .iter()
            .filter_map(|(a, _)| match a.ip() {
                IpAddr::V4(a) if a.is_private() => {
                    let [x, y, z, _] = a.octets();
                    Some(Ipv4Addr::new(x, y, z, 1))
                }
                _ => None,
            })
            .collect();
    }
    found.dedup();
    found
}

/// The gateways of the default routes in a `/proc/net/route` table.
fn default_gateways(table: &str) -> Vec<Ipv4Addr> {
    const RTF_GATEWAY: u32 = 0x2;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (dest, gw, flags) = (hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(3)?)?);
            // The kernel prints each address as it lies in memory.
            (dest == 0 && flags & RTF_GATEWAY != 0).then(|| Ipv4Addr::from(gw.to_ne_bytes()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_give_their_gateways_and_nothing_else_does() {
        let gw = u32::from_ne_bytes([198, 18, 1, 1]);
        let net = u32::from_ne_bytes([198, 18, 1, 0]);
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
             eth0\t00000000\t{gw:08X}\t0003\t0\t0\t0\t00000000\n\
             eth0\t{net:08X}\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
             junk\n"
        );
        assert_eq!(default_gateways(&table), vec![Ipv4Addr::new(198, 18, 1, 1)]);
        assert!(default_gateways("").is_empty());
    }
}
