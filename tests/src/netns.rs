//! A small internet in network namespaces, for tests of what routers do: a relay on the
//! "internet" (203.0.113.0/24, a documentation range), home routers that translate and drop
//! what nobody behind them asked for (nftables), and studios on their LANs (198.18.k.0/24, the
//! benchmark range). With [`Lab::ipv6`], routers and studios also get IPv6 addresses from
//! the documentation prefix (2001:db8:k::/64 behind router k), routed without NAT but behind
//! the same firewall. Everything lives inside the namespaces this process makes, and goes when
//! the lab is dropped, even after a failed assertion.

use std::process::Command;

pub mod gateway;

/// How a router maps its LAN's sockets to its internet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Keeps each socket's port for every destination (most home routers).
    PortPreserving,
    /// A new random port for each destination (a symmetric NAT).
    Symmetric,
}

/// The namespaces of one test.
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    v6: bool,
}

/// The internet's side of the lab, where the relay lives.
pub const INTERNET: &str = "inet";
/// The relay's address on the internet.
pub const RELAY_IP: [u8; 4] = [203, 0, 113, 1];

impl Lab {
    /// Why this machine cannot host the lab (not root, no `ip` or `nft`), if it cannot.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("network namespaces need root".into());
        }
        for tool in ["ip", "nft"] {
            let found = Command::new(tool)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Some(format!("`{tool}` is not installed"));
            }
        }
        None
    }

    /// An empty internet with the relay's namespace on it.
    pub fn new(test: &str) -> Result<Self, String> {
        let mut lab = Self {
            tag: format!("ej{}{test}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            v6: false,
        };
        let i = lab.add(INTERNET)?;
        lab.sh(&[
            &format!("ip -n {i} link add br0 type bridge"),
            &format!("ip -n {i} addr add 203.0.113.1/24 dev br0"),
            &format!("ip -n {i} link set br0 up"),
        ])?;
        Ok(lab)
    }

    /// IPv6 as well, for the routers and studios made from now on: the internet routes
    /// 2001:db8:k::/64 to router k, which forwards it to its LAN without translating.
    pub fn ipv6(&mut self) -> Result<(), String> {
        let i = self.ns(INTERNET);
        self.v6 = true;
        self.sh(&[
            &format!("ip -n {i} -6 addr add 2001:db8:ff::1/64 dev br0 nodad"),
            &format!("ip netns exec {i} sysctl -qw net.ipv6.conf.all.forwarding=1"),
        ])
    }

    /// The namespace's full name.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    fn add(&mut self, name: &str) -> Result<String, String> {
        let ns = self.ns(name);
        run(&format!("ip netns add {ns}"))?;
        self.namespaces.push(ns.clone());
        run(&format!("ip -n {ns} link set lo up"))?;
        // No duplicate-address detection on the links made here: it would hold each link's
        // IPv6 addresses (the link-local ones that neighbour discovery speaks from, too) back
        // for a second or two. Best effort: a kernel without IPv6 has no such setting.
        let _ = run(&format!(
            "ip netns exec {ns} sysctl -qw net.ipv6.conf.default.accept_dad=0"
        ));
        Ok(ns)
    }

    fn sh(&self, cmds: &[&str]) -> Result<(), String> {
        cmds.iter().try_for_each(|c| run(c))
    }

    /// Router `k` (1–9): 203.0.113.1k on the internet, 198.18.k.1 on its LAN; it translates
    /// by `mapping` and lets in only replies to what went out, and what it was asked to
    /// forward ([`gateway`]), to its LAN or to itself. (A router that answered an early punch
    /// itself would keep a mapping for it, and move its own studio's next packet to that
    /// address to another port.)
    pub fn router(&mut self, k: u8, mapping: Mapping) -> Result<(), String> {
        let (r, i) = (self.add(&format!("r{k}"))?, self.ns(INTERNET));
        let random = match mapping {
            Mapping::PortPreserving => "",
            Mapping::Symmetric => " random",
        };
        self.sh(&[
            &format!("ip link add wan netns {r} type veth peer name r{k} netns {i}"),
            &format!("ip -n {i} link set r{k} master br0"),
            &format!("ip -n {i} link set r{k} up"),
            &format!("ip -n {r} addr add 203.0.113.1{k}/24 dev wan"),
            &format!("ip -n {r} link set wan up"),
            &format!("ip -n {r} link add lan type bridge"),
            &format!("ip -n {r} addr add 198.18.{k}.1/24 dev lan"),
            &format!("ip -n {r} link set lan up"),
            &format!("ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"),
        ])?;
        if self.v6 {
            self.sh(&[
                &format!("ip -n {r} -6 addr add 2001:db8:ff::1{k}/64 dev wan nodad"),
                &format!("ip -n {r} -6 addr add 2001:db8:{k}::1/64 dev lan nodad"),
                &format!("ip netns exec {r} sysctl -qw net.ipv6.conf.all.forwarding=1"),
                &format!("ip -n {r} -6 route add default via 2001:db8:ff::1"),
                &format!("ip -n {i} -6 route add 2001:db8:{k}::/64 via 2001:db8:ff::1{k}"),
            ])?;
        }
        let rules = format!(
            "table ip nat {{\n chain post {{\n  type nat hook postrouting priority srcnat;\n  \
             oifname \"wan\" masquerade{random}\n }}\n}}\n\
             table inet filter {{\n chain forward {{\n  \
             type filter hook forward priority filter; policy drop;\n  \
             ct state established,related accept\n  ct status dnat accept\n  \
             ip saddr 198.18.{k}.0/24 accept\n  \
             ip6 saddr 2001:db8:{k}::/64 accept\n }}\n \
             chain input {{\n  type filter hook input priority filter;\n  \
             meta l4proto ipv6-icmp accept\n  iifname \"wan\" ct state new drop\n }}\n}}\n"
        );
        nft(&r, &rules)
    }

    /// Studio `j` (2–250) on router `k`'s LAN, at 198.18.k.j; its namespace's name.
    pub fn studio(&mut self, k: u8, j: u8) -> Result<String, String> {
        let (h, r) = (self.add(&format!("h{k}x{j}"))?, self.ns(&format!("r{k}")));
        self.sh(&[
            &format!("ip link add eth0 netns {h} type veth peer name h{j} netns {r}"),
            &format!("ip -n {r} link set h{j} master lan"),
            &format!("ip -n {r} link set h{j} up"),
            &format!("ip -n {h} addr add 198.18.{k}.{j}/24 dev eth0"),
            &format!("ip -n {h} link set eth0 up"),
            &format!("ip -n {h} route add default via 198.18.{k}.1"),
        ])?;
        if self.v6 {
            self.sh(&[
                &format!("ip -n {h} -6 addr add 2001:db8:{k}::{j}/64 dev eth0 nodad"),
                &format!("ip -n {h} -6 route add default via 2001:db8:{k}::1"),
            ])?;
        }
        Ok(h)
    }

    /// Moves studio `j` on router `k`'s LAN to 198.18.k.`to` (a new DHCP lease): its old
    /// address goes, so everything it had open from there stops working.
    pub fn move_studio(&self, k: u8, j: u8, to: u8) -> Result<(), String> {
        let h = self.ns(&format!("h{k}x{j}"));
        self.sh(&[
            &format!("ip -n {h} addr del 198.18.{k}.{j}/24 dev eth0"),
            &format!("ip -n {h} addr add 198.18.{k}.{to}/24 dev eth0"),
            &format!("ip -n {h} route add default via 198.18.{k}.1"),
        ])
    }

    /// Drops everything router `k` forwards between its LAN and `peer` (an internet address),
    /// or lets it through again.
    pub fn block(&self, k: u8, peer: [u8; 4], on: bool) -> Result<(), String> {
        let r = self.ns(&format!("r{k}"));
        let [a, b, c, d] = peer;
        if on {
            nft(
                &r,
                &format!(
                    "table inet block {{\n chain forward {{\n  \
                     type filter hook forward priority -10;\n  \
                     ip saddr {a}.{b}.{c}.{d} drop\n  ip daddr {a}.{b}.{c}.{d} drop\n }}\n}}\n"
                ),
            )
        } else {
            run(&format!("ip netns exec {r} nft delete table inet block"))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let _ = run(&format!("ip netns del {ns}"));
        }
    }
}

pub(crate) fn run(cmd: &str) -> Result<(), String> {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `f` on a new thread inside namespace `ns`: every socket it (or a thread it starts)
/// makes lives there.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T, String>> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: a valid namespace descriptor; it changes this thread's namespace only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
}
