//! The session's driver: one tokio task that owns the member's [`RoomCore`] and its
//! connections for the life of the session, across reconnections. Readers of the relay's and
//! the direct paths' streams hand it what arrives through bounded channels; it sends what the
//! core gives, dials and accepts the direct paths the core asks for, seals the frames the pump
//! queues, and publishes what the handles read.

use super::route::Reaching;
use super::*;
use quinn::AsyncUdpSocket;

/// Control messages waiting for the driver; a reader waits when it is full (QUIC's flow
/// control then slows the sender).
const INPUTS: usize = 1024;
/// Received datagrams waiting for the driver; more are dropped and counted.
const DATAGRAMS: usize = 1024;
/// Control messages waiting to be written on one stream. A stream that falls this far behind
/// is given up on: its connection closes (the relay's: we reconnect).
const CONTROL_QUEUE: usize = 4096;
/// Datagrams the driver opens per wake before it looks at anything else.
const DATAGRAMS_PER_WAKE: usize = 64;
/// How often presence and path round-trip times are published at least.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// An incoming direct path may arrive before we have processed the relay's news of its
/// dialler; it waits this long to be recognised.
const RECOGNISE_TIMEOUT: Duration = Duration::from_millis(500);
/// A member whose direct path just went down is tried again after this long (the old
/// connection drains; a flapping path does not spin).
const REDIAL_AFTER: Duration = Duration::from_secs(1);
/// A member no direct path reached is tried again this long after (doubling, up to 8 times
/// this).
const REACH_AGAIN: Duration = Duration::from_secs(15);
/// How often we look whether our network addresses changed (Wi-Fi to Ethernet, a new lease).
const ADDRESS_CHECK: Duration = Duration::from_secs(2);
/// Probes sent to the relay's reflector, 200 ms apart, until it answers.
const REFLECTOR_PROBES: u32 = 10;
/// The longest our first punches wait for the router's answer on a port mapping (its own
/// timeouts end it sooner).
const MAPPING_WAIT: Duration = Duration::from_secs(5);
/// A direct path that carried nothing for this long is quiet (see `Driver::check_paths`);
/// looked at this often.
const PATH_QUIET: Duration = Duration::from_millis(60);
const PATH_CHECK: Duration = Duration::from_millis(10);

/// What the readers and dialers tell the driver.
pub(super) enum Input {
    /// A message on the relay's control stream.
    Relay(RelayMessage),
    /// The relay's control stream ended.
    RelayGone,
    /// A message on a direct path's control stream (path named by its connection's id).
    Direct(MemberId, usize, PeerMessage),
    /// A direct path we dialled is up (not yet proven).
    Dialled(MemberId, Connection),
    /// Someone dialled us (not yet proven).
    Incoming(Connection),
    /// A direct path's far end said who it is.
    Claimed(Box<direct::ClaimedPath>),
    /// A direct path ended.
    PathDown(MemberId, usize),
    /// A try at a direct path to this member is over, with no path from it.
    NoPath(MemberId),
    /// Our port mapping changed.
    PortMap(super::PortMapStatus),
    /// The relay's reflector saw us.
    Reflected,
}

/// The driver and everything it owns.
pub(super) struct Driver {
    pub(super) shared: Arc<Shared>,
    pub(super) core: RoomCore,
    pub(super) audio_in: rtrb::Consumer<OutFrame>,
    pub(super) on_audio: AudioCallback,
    pub(super) config: SessionConfig,
    pub(super) identity: Identity,
    /// Who we are in the room: the relay admits us as this key's participant.
    pub(super) member: std::sync::Arc<MemberKey>,
    /// Loss protection by the listeners' reports.
    pub(super) protection: super::protection::AutoProtection,
    /// Where the answers to each of our asks for a take's frames go.
    pub(super) take_answers: BTreeMap<u32, std::sync::mpsc::Sender<TakeFrames>>,
}

/// The connections of one stay in the room.
struct Links {
    endpoint: quinn::Endpoint,
    socket: Arc<PunchSocket>,
    /// Our socket's addresses on our own networks, and each network's prefix length.
    networks: Vec<(SocketAddr, u8)>,
    /// Where we stand with each member's direct path.
    reach: BTreeMap<MemberId, Reaching>,
    /// Our address as the relay sees it.
    observed: SocketAddr,
    /// The address our router forwards to our socket, if it mapped one.
    mapped: Option<SocketAddr>,
    /// Members to reach once the router has answered on a port mapping (until then), if our
    /// router may give each destination its own port. A punch sent before the mapping would
    /// leave the router a translation of its own for that peer, and the router would refuse
    /// the peer's packets to the mapped port as clashing with it for as long as it lasts.
    held: Option<(Instant, Vec<(MemberInfo, bool)>)>,
    relay: Connection,
    control: mpsc::Sender<ClientMessage>,
    paths: BTreeMap<MemberId, DirectLink>,
    /// Direct paths whose participant is not in the room as we know it yet (its news may
    /// still be on its way from the relay), with when to give up on them.
    unrecognised: Vec<(direct::ClaimedPath, Instant)>,
    inputs: mpsc::Sender<Input>,
    datagrams: mpsc::Sender<(Via, Bytes)>,
}

struct DirectLink {
    conn: Connection,
    /// How long it took from hearing of the member.
    after: Duration,
    /// When something last came over it (or it came up).
    heard: Instant,
    control: mpsc::Sender<PeerMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DirectLink {
    fn drop(&mut self) {
        self.task.abort();
        self.conn.close(0u32.into(), b"path closed");
    }
}

#[path = "driver_paths.rs"]
mod paths;
use paths::addresses_moved;

impl Driver {
    fn set_state(&self, state: SessionState) {
        self.shared.publish(|p| p.state = state);
    }

    /// Connects, serves until disconnected, and retries with backoff until stopped or refused.
    pub(super) async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        while !self.shared.stopped.load(Relaxed) {
            self.set_state(SessionState::Connecting);
            let (endpoint, socket) =
                match make_endpoint(&self.identity, &self.config, &self.shared.congestion) {
                    Ok(e) => e,
                    Err(msg) => {
                        self.set_state(SessionState::Retrying(msg));
                        tokio::time::sleep(BACKOFF_MAX).await;
                        continue;
                    }
                };
            let (inputs, inputs_rx) = mpsc::channel(INPUTS);
            let acceptor = tokio::spawn(direct::accept(endpoint.clone(), inputs.clone()));
            let networks = match socket.local_addr() {
                Ok(a) if !self.config.force_relay => direct::local_networks(a.port(), a.is_ipv6()),
                _ => Vec::new(),
            };
            let local: Vec<SocketAddr> = networks.iter().map(|n| n.0).collect();
            match join(&endpoint, &self.config, &self.member, &self.shared, local).await {
                Ok(joined) => {
                    backoff = BACKOFF_MIN;
                    let links = (endpoint.clone(), socket, networks);
                    self.serve(links, joined, inputs, inputs_rx).await;
                    tracing::info!("disconnected from the relay; reconnecting");
                }
                Err(JoinError::Refused(r)) => {
                    tracing::error!("the relay refused to admit us: {}", r.explain());
                    self.set_state(SessionState::Refused(r));
                    acceptor.abort();
                    endpoint.close(0u32.into(), b"refused");
                    return;
                }
                Err(JoinError::WrongRelay) => {
                    tracing::error!("{}", SessionState::WRONG_RELAY);
                    self.set_state(SessionState::WrongRelay);
                    acceptor.abort();
                    endpoint.close(0u32.into(), b"wrong relay");
                    return;
                }
                Err(JoinError::Other(msg)) => {
                    tracing::warn!("{msg}");
                    self.set_state(SessionState::Retrying(msg));
                }
            }
            acceptor.abort();
            endpoint.close(0u32.into(), b"reconnecting");
            if self.shared.stopped.load(Relaxed) {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// In the room until the relay connection ends or the session stops.
    async fn serve(
        &mut self,
        (endpoint, socket, networks): (quinn::Endpoint, Arc<PunchSocket>, Vec<(SocketAddr, u8)>),
        joined: Joined,
        inputs: mpsc::Sender<Input>,
        mut inputs_rx: mpsc::Receiver<Input>,
    ) {
        let Joined {
            conn,
            mut send,
            mut recv,
            me,
            observed,
            others,
        } = joined;
        let (control, mut control_rx) = mpsc::channel::<ClientMessage>(CONTROL_QUEUE);
        let (datagrams, mut datagrams_rx) = mpsc::channel::<(Via, Bytes)>(DATAGRAMS);
        let writer = tokio::spawn(async move {
            while let Some(msg) = control_rx.recv().await {
                if write_frame(&mut send, &msg).await.is_err() {
                    break;
                }
            }
        });
        let reader = {
            let inputs = inputs.clone();
            tokio::spawn(async move {
                while let Ok(Some(msg)) = read_frame::<RelayMessage>(&mut recv).await {
                    if inputs.send(Input::Relay(msg)).await.is_err() {
                        return;
                    }
                }
                let _ = inputs.send(Input::RelayGone).await;
            })
        };
        let relay_datagrams = tokio::spawn(direct::forward_datagrams(
            conn.clone(),
            Via::Relay,
            datagrams.clone(),
            self.shared.counters.clone(),
        ));
        let mut links = Links {
            endpoint,
            socket,
            networks,
            reach: BTreeMap::new(),
            observed,
            mapped: None,
            held: None,
            relay: conn.clone(),
            control,
            paths: BTreeMap::new(),
            unrecognised: Vec::new(),
            inputs,
            datagrams,
        };
        // Asked once we know where the relay is: one on this machine needs no router.
        let relay_here = conn.remote_address().ip().to_canonical().is_loopback();
        let _mapper = match links.socket.local_addr() {
            Ok(at) if self.config.port_mapping && !self.config.force_relay && !relay_here => {
                links.held = Some((Instant::now() + MAPPING_WAIT, Vec::new()));
                let held = self.shared.port_mapped.clone();
                Some(portmap::start(at.port(), links.inputs.clone(), held))
            }
            _ => None,
        };
        // Where the relay's reflector sees us: another port than `observed` means our router
        // gives each destination its own (a symmetric NAT).
        if !self.config.force_relay {
            let (socket, relay) = (links.socket.clone(), canonical(conn.remote_address()));
            let driver = links.inputs.clone();
            tokio::spawn(async move {
                let reflector = SocketAddr::new(relay.ip(), relay.port().wrapping_add(1));
                // Looked for often: punches may wait on the answer.
                for k in 0..REFLECTOR_PROBES * 10 {
                    if socket.reflected().is_some() {
                        let _ = driver.send(Input::Reflected).await;
                        return;
                    }
                    if k % 10 == 0 {
                        socket.probe(reflector);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        // Frames queued while we were away would play late.
        while self.audio_in.pop().is_ok() {}
        let count = others.len();
        self.core
            .handle_welcome(Instant::now(), me, others, &mut self.shared.doc());
        tracing::info!(
            "joined room {} as {me:?} with {count} others",
            self.config.invite.room
        );
        self.publish(&links, Some(SessionState::Joined { you: me }));
        let mut next_publish = Instant::now() + PUBLISH_EVERY;
        let mut next_path_check = Instant::now() + PATH_CHECK;
        let mut next_address_check = Instant::now() + ADDRESS_CHECK;
        while self.flush(&mut links) && !self.shared.stopped.load(Relaxed) {
            let due = [
                self.core.poll_timeout(),
                Some(next_publish),
                (!links.paths.is_empty()).then_some(next_path_check),
                links.unrecognised.iter().map(|u| u.1).min(),
                links.reach.values().filter_map(|r| r.again).min(),
                links.held.as_ref().map(|h| h.0),
                (!self.config.force_relay).then_some(next_address_check),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_publish);
            let mut changed = true;
            tokio::select! {
                biased;
                _ = self.shared.wake.notified() => {
                    self.take_asks(&links);
                    self.send_frames(&links);
                    changed = false;
                }
                Some((via, d)) = datagrams_rx.recv() => {
                    self.receive(via, &d, &mut links);
                    for _ in 1..DATAGRAMS_PER_WAKE {
                        let Ok((via, d)) = datagrams_rx.try_recv() else { break };
                        self.receive(via, &d, &mut links);
                    }
                    changed = false;
                }
                input = inputs_rx.recv() => match input {
                    None | Some(Input::RelayGone) => break,
                    Some(input) => self.input(input, &mut links),
                },
                _ = tokio::time::sleep_until(due.into()) => {
                    let now = Instant::now();
                    self.core.handle_timeout(now, &mut self.shared.doc());
                    self.reach_again(now, &mut links);
                    if links.held.as_ref().is_some_and(|h| h.0 <= now) {
                        self.reach_held(&mut links);
                    }
                    if now >= next_path_check {
                        next_path_check = now + PATH_CHECK;
                        self.check_paths(now, &links);
                    }
                    if now >= next_address_check && !self.config.force_relay {
                        next_address_check = now + ADDRESS_CHECK;
                        if addresses_moved(&links) {
                            // What the others were told of us (the address the relay sees,
                            // our local ones) is stale: a fresh join tells them anew.
                            tracing::info!("our network addresses changed; joining again");
                            break;
                        }
                    }
                    links.unrecognised.retain(|(c, until)| {
                        let keep = *until > now;
                        if !keep {
                            c.conn.close(2u32.into(), b"unknown member");
                        }
                        keep
                    });
                    changed = now >= next_publish;
                    if changed {
                        next_publish = now + PUBLISH_EVERY;
                    }
                }
                _ = conn.closed() => break,
            }
            if changed {
                self.publish(&links, None);
            }
        }
        writer.abort();
        reader.abort();
        relay_datagrams.abort();
        // Reports from a room we are out of no longer hold us back.
        self.shared.congestion.set_reported(Duration::ZERO);
        for (c, _) in links.unrecognised.drain(..) {
            c.conn.close(0u32.into(), b"rejoining");
        }
        links.paths.clear();
        conn.close(0u32.into(), b"rejoining");
        self.core.handle_disconnected(Instant::now());
        self.shared.publish(|p| {
            p.members.clear();
            p.relay = None;
            p.direct.clear();
            p.routes.clear();
            p.port_mapping = PortMapStatus::Off;
        });
    }

    /// Publishes the members, paths and presence (and a new state, if given).
    fn publish(&mut self, links: &Links, state: Option<SessionState>) {
        let members = self
            .core
            .members()
            .map(|m| (m.clone(), self.core.keyed(m.id)))
            .collect();
        let now = Instant::now();
        let presence = self.core.presence(now);
        let reported = self.core.loss_reported(now);
        self.protection
            .update(&self.shared.protection, reported, now);
        self.shared
            .congestion
            .set_reported(self.core.queue_reported(now).unwrap_or_default());
        let direct = links
            .paths
            .iter()
            .map(|(id, p)| (*id, p.conn.clone()))
            .collect();
        let routes = self.routes(links);
        self.shared.publish(|p| {
            p.routes = routes;
            p.members = members;
            p.presence = presence;
            p.relay = Some(links.relay.clone());
            p.direct = direct;
            if let Some(s) = state {
                p.state = s;
            }
        });
    }

    fn receive(&mut self, via: Via, datagram: &[u8], links: &mut Links) {
        if let Via::Direct(m) = via {
            if let Some(p) = links.paths.get_mut(&m) {
                p.heard = Instant::now();
            }
        }
        let on_audio = &mut self.on_audio;
        let shared = &self.shared;
        let now = Instant::now();
        let arrival = (now.saturating_duration_since(shared.epoch).as_secs_f64() * 48_000.0) as u64;
        // Once per datagram (a relay bundle holds several frames), not per frame.
        let mut clocks = shared.clocks.lock().unwrap_or_else(|e| e.into_inner());
        self.core
            .open_datagram(now, via, datagram, &mut |from, frame| {
                // Frames that came late by design (recovered from a later one) tell nothing of
                // the sender's clock.
                if let (false, Some(n)) = (
                    frame.recovered,
                    crate::room_clock::opus_samples(frame.payload),
                ) {
                    if clocks.len() < MAX_CLOCKS || clocks.contains_key(&(from, frame.stem)) {
                        clocks
                            .entry((from, frame.stem))
                            .or_default()
                            .observe(frame.media_time + n, arrival);
                    }
                }
                on_audio(from, frame)
            });
    }

    /// Takes what the handles asked for.
    fn take_asks(&mut self, links: &Links) {
        let asks = std::mem::take(&mut *self.shared.asks());
        let now = Instant::now();
        if asks.rotate {
            let room = &self.config.invite.room;
            let next = crate::RoomSecret::generate();
            match channel_binding(&links.relay, room) {
                Some(binding) => {
                    let proof = self.config.invite.secret.rotation_proof(
                        room,
                        &next.verifier(room),
                        &binding,
                    );
                    self.core.rotate_secret(now, next, proof);
                }
                None => tracing::warn!("cannot rotate the room's secret: no TLS exporter"),
            }
        }
        if asks.doc_edited {
            self.core.edited(now, &mut self.shared.doc());
        }
        if let Some(p) = asks.presence {
            self.core.set_presence(p);
        }
        for (from, stem, ranges, answers) in asks.takes {
            match self.core.ask_take(now, from, stem, ranges) {
                Some(id) => {
                    self.take_answers.insert(id, answers);
                }
                None => {
                    let _ = answers.send(TakeFrames {
                        id: 0,
                        from,
                        stem,
                        frames: Vec::new(),
                        last: true,
                    });
                }
            }
        }
        #[cfg(feature = "danger-test-hooks")]
        if let Some((media_time, payload, reply)) = asks.seal {
            let mut out = Vec::new();
            let sealed = self.core.danger_keys().map(|k| {
                let seq = k.seal_audio(StemId(0), media_time, &payload, false, &mut out);
                k.seal_audio_macs(&mut out, 0, seq);
                out
            });
            let _ = reply.try_send(sealed);
        }
    }

    /// Seals the frames the pump queued and sends each on every path that needs it.
    fn send_frames(&mut self, links: &Links) {
        let redundancy = self.shared.protection.frames();
        let counters = &self.shared.counters;
        // Judged once per wake (see `send_fresh`); paths keep their order while we hold them.
        let relay_queued = queued_bytes(&links.relay);
        let path_queued: Vec<usize> = links
            .paths
            .values()
            .map(|p| queued_bytes(&p.conn))
            .collect();
        while let Ok(f) = self.audio_in.pop() {
            let Some(sealed) =
                self.core
                    .seal_audio(f.stem, f.media_time, &f.bytes[..f.len], redundancy)
            else {
                continue;
            };
            if !links.paths.is_empty() {
                let with_id = Bytes::copy_from_slice(sealed.direct);
                for (p, &queued) in links.paths.values().zip(&path_queued) {
                    if send_fresh(&p.conn, queued, with_id.clone(), counters) {
                        counters.sent.fetch_add(1, Relaxed);
                    }
                }
            }
            if let Some(relayed) = sealed.relay {
                let relayed = Bytes::copy_from_slice(relayed);
                if send_fresh(&links.relay, relay_queued, relayed, counters) {
                    counters.sent.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn input(&mut self, input: Input, links: &mut Links) {
        let now = Instant::now();
        match input {
            Input::Relay(msg) => {
                let joined = matches!(msg, RelayMessage::Joined(_));
                self.core.handle_relay(now, msg, &mut self.shared.doc());
                if joined {
                    for (claimed, _) in std::mem::take(&mut links.unrecognised) {
                        self.claimed(claimed, now, links);
                    }
                }
            }
            Input::RelayGone => {}
            Input::Direct(member, id, msg) => {
                if links
                    .paths
                    .get(&member)
                    .is_some_and(|p| p.conn.stable_id() == id)
                {
                    self.core
                        .handle_direct(now, member, &msg, &mut self.shared.doc());
                }
            }
            Input::Dialled(member, conn) => self.prove(conn, Some(member), links),
            Input::Incoming(conn) => self.prove(conn, None, links),
            Input::Claimed(claimed) => self.claimed(*claimed, now, links),
            Input::NoPath(member) => self.no_path(now, member, links),
            Input::PortMap(status) => {
                let mapped = match status {
                    PortMapStatus::Mapped { addr, .. } => Some(addr),
                    _ => None,
                };
                if mapped != links.mapped {
                    links.mapped = mapped;
                    // First, so that the cap on addresses passed on keeps it.
                    let local = mapped
                        .into_iter()
                        .chain(links.networks.iter().map(|n| n.0))
                        .collect();
                    // A full queue means the relay's stream is stuck: the rejoin says it anew.
                    let _ = links.control.try_send(ClientMessage::Addresses { local });
                }
                if status != PortMapStatus::Asking {
                    self.reach_held(links);
                }
                self.shared.publish(|p| p.port_mapping = status);
            }
            // The same port for the relay and its reflector: punching needs no mapping.
            Input::Reflected if links.socket.reflected() == Some(links.observed) => {
                self.reach_held(links);
            }
            Input::Reflected => {}
            Input::PathDown(member, id) => {
                if links
                    .paths
                    .get(&member)
                    .is_some_and(|p| p.conn.stable_id() == id)
                {
                    links.paths.remove(&member);
                    if let Some(r) = links.reach.get_mut(&member) {
                        r.down_at = Some(now);
                    }
                    self.core
                        .handle_path_down(now, member, &mut self.shared.doc());
                }
            }
        }
    }

    /// Sends what the core has to send and acts on what it asks. False when the relay's
    /// control stream has fallen too far behind to go on.
    fn flush(&mut self, links: &mut Links) -> bool {
        while let Some(t) = self.core.poll_transmit() {
            let (to, msg) = match t {
                Transmit::Relay(msg) => {
                    if links.control.try_send(msg).is_err() {
                        tracing::warn!("the relay's control stream fell behind; reconnecting");
                        return false;
                    }
                    continue;
                }
                Transmit::Direct(to, msg) => (to, msg),
            };
            match links.paths.get(&to) {
                Some(p) => {
                    if p.control.try_send(msg).is_err() {
                        // Its connection closes; the path goes down and the relay takes over.
                        p.conn.close(0u32.into(), b"fell behind");
                    }
                }
                None => {
                    let msg = ClientMessage::Send {
                        to: Some(to),
                        body: encode_peer(&msg),
                    };
                    if links.control.try_send(msg).is_err() {
                        return false;
                    }
                }
            }
        }
        while let Some(e) = self.core.poll_event() {
            match e {
                RoomEvent::Dial(other) => self.reach(links, other, true),
                RoomEvent::Punch(other) => self.reach(links, other, false),
                RoomEvent::ClosePath(id) => {
                    links.paths.remove(&id);
                    links.reach.remove(&id);
                }
                RoomEvent::Notice(n) => tracing::warn!("{n}"),
                RoomEvent::SecretRotated(secret) => {
                    tracing::info!(
                        "room {} has a new secret: invites made before no longer work",
                        self.config.invite.room
                    );
                    // Reconnections prove the new secret; the handles keep the new invite.
                    self.config.invite.secret = secret;
                    let invite = self.config.invite.clone();
                    self.shared.publish(|p| p.invite = invite);
                }
                RoomEvent::TakeFrames(t) => {
                    let (id, last) = (t.id, t.last);
                    if let Some(answers) = self.take_answers.get(&id) {
                        let _ = answers.send(t);
                    }
                    if last {
                        self.take_answers.remove(&id);
                    }
                }
                RoomEvent::RotationRefused => {
                    tracing::warn!("the relay did not rotate the room's secret; nothing changed")
                }
                // Published with everything else after this input.
                RoomEvent::MemberJoined(_)
                | RoomEvent::MemberLeft(_)
                | RoomEvent::DocChanged
                | RoomEvent::Presence(_) => {}
            }
        }
        true
    }
}

#[path = "driver_join.rs"]
mod join;
use join::{join, make_endpoint, JoinError, Joined};
