//! The plugin's control thread: applies the editor's commands, keeps the editor's snapshot
//! current, proposes the host's tempo, publishes presence and sets each member's level in the
//! mix. The editor and the audio thread never wait for it: the editor sends commands into a
//! bounded channel and reads the last snapshot; the audio thread only stores atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use echoel_engine::{EngineStats, StreamId, StreamStats, AUX_BUSES};
use echoel_gui::model::{Me, NetworkQuality, PathKind, Person, ProtectionView};
use echoel_gui::{Command, LinkStatus, Snapshot};
use echoel_net::doc::{DocError, DocStore, SessionDoc};
use echoel_net::presence::Presence;
use echoel_net::session::{LossProtection, Route, SessionConfig, SessionHandle, SessionState};
use echoel_net::wire::{ParticipantId, StemId};
use echoel_net::{Invite, RotationPolicy};

use crate::bridge::{network_runtime, Bridge, DocKeeping};
use crate::params::{EchoelParams, SavedMix};
use crate::routing::Routes;
use crate::session_doc::{saved_session, session_view};
use crate::take_control::TakeControl;
use echoel_net::wire::Role;

/// How often commands are applied and the snapshot refreshed.
const TICK: Duration = Duration::from_millis(50);
/// Commands waiting beyond this are refused (the editor is far ahead of a stuck thread).
const COMMAND_CAPACITY: usize = 1024;
/// A host tempo change smaller than this is not worth proposing.
const TEMPO_EPSILON: f64 = 0.005;

/// What the editor, the audio thread and the control thread share.
pub struct Controls {
    snapshot: Mutex<(Snapshot, u64)>,
    tx: Sender<Command>,
    rx: Receiver<Command>,
    /// The host's tempo as f64 bits; 0 when the host reports none.
    host_tempo: AtomicU64,
    /// Auxiliary outputs the host gave the plugin.
    aux_buses: AtomicUsize,
    /// The name of the host's track the plugin is on, when the host says.
    host_track: Mutex<String>,
}

impl Controls {
    /// Empty: offline, nothing applied.
    pub fn new() -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_CAPACITY);
        Arc::new(Self {
            snapshot: Mutex::new((Snapshot::default(), 0)),
            tx,
            rx,
            host_tempo: AtomicU64::new(0),
            aux_buses: AtomicUsize::new(0),
            host_track: Mutex::new(String::new()),
        })
    }

    /// From the editor; `false` if the control thread is too far behind to take it.
    pub fn send(&self, c: Command) -> bool {
        self.tx.try_send(c).is_ok()
    }

    /// The last snapshot and how many commands had been applied when it was taken.
    pub fn snapshot(&self) -> (Snapshot, u64) {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// From the audio thread: an atomic store.
    pub fn set_host_tempo(&self, bpm: Option<f64>) {
        let bits = bpm
            .filter(|b| b.is_finite() && *b > 0.0)
            .map_or(0, f64::to_bits);
        self.host_tempo.store(bits, Relaxed);
    }

    /// At activation: how many auxiliary outputs the engine has, for the editor's routing.
    pub fn set_aux_buses(&self, buses: usize) {
        self.aux_buses.store(buses, Relaxed);
    }

    /// The host's name for the plugin's track (CLAP track info): the stem's name by default.
    pub fn set_host_track(&self, name: &str) {
        *self.host_track.lock().unwrap_or_else(|e| e.into_inner()) = name.trim().to_owned();
    }

    fn host_track(&self) -> String {
        self.host_track
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn host_tempo(&self) -> Option<f64> {
        let bits = self.host_tempo.load(Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }
}

/// Our mix of one member.
#[derive(Debug, Clone, Copy)]
struct PeerMix {
    gain_db: f32,
    muted: bool,
    solo: bool,
}

impl Default for PeerMix {
    fn default() -> Self {
        Self {
            gain_db: 0.0,
            muted: false,
            solo: false,
        }
    }
}

/// The running control thread.
pub struct ControlThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ControlThread {
    /// Starts it over `bridge`; joins the persisted room, if any.
    pub fn start(
        controls: Arc<Controls>,
        params: Arc<EchoelParams>,
        bridge: Bridge,
        stats: Arc<EngineStats>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut control = Control {
            controls,
            params,
            bridge,
            stats,
            mix: BTreeMap::new(),
            track: None,
            cursor: None,
            typing: false,
            pushed_tempo: None,
            error: None,
            room: String::new(),
            applied: 0,
            sent: (0, Instant::now(), 0.0),
            invite_in_use: String::new(),
            names: BTreeMap::new(),
            takes: TakeControl::default(),
            listening: false,
            routes: Routes::default(),
        };
        let handle = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("echoel-control".into())
                .spawn(move || {
                    control.join_saved_room();
                    while !stop.load(Relaxed) {
                        control.tick();
                        std::thread::sleep(TICK);
                    }
                })?
        };
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Control {
    controls: Arc<Controls>,
    params: Arc<EchoelParams>,
    bridge: Bridge,
    stats: Arc<EngineStats>,
    mix: BTreeMap<u64, PeerMix>,
    track: Option<String>,
    cursor: Option<(usize, usize)>,
    typing: bool,
    /// The host tempo last proposed to the room.
    pushed_tempo: Option<f64>,
    /// Why the last connect failed before reaching the network (a bad invite).
    error: Option<String>,
    /// The room of the session, for display.
    room: String,
    applied: u64,
    /// Bytes on the wire, when counted, and the rate derived from them (kbit/s).
    sent: (u64, Instant, f32),
    /// The invite last acted on: one the host restores into the project while we run is
    /// joined at the next tick.
    invite_in_use: String,
    /// Each member's name as last seen, to keep our mix of them in the project by name.
    names: BTreeMap<u64, String>,
    /// Takes started from the editor.
    takes: TakeControl,
    /// Whether the session in use was joined to listen only.
    listening: bool,
    /// Where each of the others' stems plays here.
    routes: Routes,
}

fn read_string(s: &std::sync::RwLock<String>) -> String {
    s.read().map(|v| v.trim().to_owned()).unwrap_or_default()
}

fn write_string(s: &std::sync::RwLock<String>, v: &str) {
    *s.write().unwrap_or_else(|e| e.into_inner()) = v.to_owned();
}

/// The number the editor knows a member key by: one per musician, whatever process each of
/// their plugins runs in.
fn person_of(key: &echoel_net::crypto::MemberPublic) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key.0[..8]);
    u64::from_be_bytes(b).max(1)
}

/// The room's member key kept in the user's data folder, so that this musician is the same
/// person in the room across sessions and across plugins in several processes. Where it cannot
/// be had, the session joins as a new person (and says why in the log) rather than not at all.
fn member_key(invite: &Invite) -> Option<Arc<echoel_net::crypto::MemberKey>> {
    let store = echoel_net::identity_store::IdentityStore::user()?;
    match store.key_for(invite) {
        Ok(key) => Some(Arc::new(key)),
        Err(err) => {
            tracing::warn!("joining as a new member of the room: {err}");
            None
        }
    }
}

impl Control {
    fn join_saved_room(&mut self) {
        let invite = read_string(&self.params.invite);
        if !invite.is_empty() {
            self.connect(&invite);
        }
    }

    fn connect(&mut self, text: &str) {
        self.invite_in_use = text.trim().to_owned();
        self.error = None;
        let invite: Invite = match text.parse() {
            Ok(i) => i,
            Err(err) => {
                self.error = Some(format!("the invite is unusable: {err}"));
                return;
            }
        };
        self.room = invite.room.as_str().to_owned();
        self.listening = self.params.receive_only.value();
        let name = match read_string(&self.params.display_name) {
            n if n.is_empty() => "Echoel Jam".to_owned(),
            n => n,
        };
        let store = DocStore::default_dir().map(|dir| DocStore::new(&dir, invite.room.as_str()));
        let config = SessionConfig {
            identity: member_key(&invite),
            initial_doc: saved_session(&self.params, store.as_ref()),
            role: if self.params.receive_only.value() {
                Role::Listener
            } else {
                Role::Performer
            },
            invite,
            name,
            force_relay: false,
            port_mapping: self.params.port_mapping.value(),
            rotation: RotationPolicy::default(),
        };
        let keep = DocKeeping {
            project: self.params.session_doc.clone(),
            store,
        };
        if let Err(err) = self
            .bridge
            .connect_shared(config, network_runtime().handle(), Some(keep))
        {
            self.error = Some(err.to_string());
        }
    }

    fn tick(&mut self) {
        while let Ok(c) = self.controls.rx.try_recv() {
            self.apply(c);
            self.applied += 1;
        }
        // A project (or preset) loaded while we run: its room, not the one we were in. Receive
        // Only switched: the room again, in the other role.
        let invite = read_string(&self.params.invite);
        let listen = self.params.receive_only.value();
        if invite != self.invite_in_use || (listen != self.listening && !invite.is_empty()) {
            if invite.is_empty() {
                self.bridge.disconnect();
                self.invite_in_use.clear();
            } else {
                self.connect(&invite);
            }
        }
        let session = self.bridge.session();
        if let Some(s) = &session {
            self.restore_saved_mix(s);
            self.keep_rotated_invite(s);
            self.push_host_tempo(s);
        }
        if let Some(seat) = self.bridge.seat() {
            // Parameters are atomics: read here, not relayed by the audio thread.
            seat.set_loss_protection(if self.params.redundancy_auto.value() {
                LossProtection::Auto
            } else {
                LossProtection::Frames(self.params.redundancy.value().clamp(0, 2) as u8)
            });
            let presence = Presence {
                name: read_string(&self.params.display_name),
                instrument: read_string(&self.params.instrument),
                track: self.track.clone(),
                cursor: self.cursor.map(|(a, b)| (a as u32, b as u32)),
                typing: self.typing,
                level: self.stats.input_peak.load(Relaxed),
                ..Presence::default()
            };
            seat.set_presence(presence, &self.stem_name(seat.stem()));
        }
        self.set_mix_gains();
        let snap = self.snapshot(session.as_ref());
        *self
            .controls
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (snap, self.applied);
    }

    /// What this instance's stem is called: as the musician named it, else the host's track,
    /// else the instrument, else by its number.
    fn stem_name(&self, stem: Option<StemId>) -> String {
        [
            read_string(&self.params.stem_name),
            self.controls.host_track(),
            read_string(&self.params.instrument),
        ]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| format!("stem {}", stem.map_or(1, |s| u16::from(s.0) + 1)))
    }

    /// The room moved to a new secret (a member rotated it): the project keeps the new invite,
    /// so reopening it joins again. Only a new secret for the room we are in is taken.
    fn keep_rotated_invite(&mut self, s: &SessionHandle) {
        let Ok(in_use) = self.invite_in_use.parse::<Invite>() else {
            return;
        };
        let now = s.invite();
        let same_room = (&now.room, now.fingerprint, &now.host, now.port)
            == (&in_use.room, in_use.fingerprint, &in_use.host, in_use.port);
        if same_room && now.secret != in_use.secret {
            let text = now.to_string();
            write_string(&self.params.invite, &text);
            self.invite_in_use = text;
        }
    }

    fn edit(&self, edit: impl FnOnce(&mut SessionDoc) -> Result<(), DocError>) {
        if let Some(s) = self.bridge.session() {
            if let Err(e) = s.edit_doc(edit) {
                tracing::warn!("session edit refused: {e}");
            }
        }
    }

    fn apply(&mut self, c: Command) {
        match c {
            Command::Connect {
                invite,
                name,
                instrument,
            } => {
                write_string(&self.params.invite, &invite);
                write_string(&self.params.display_name, &name);
                write_string(&self.params.instrument, &instrument);
                self.connect(&invite);
            }
            Command::RotateInvite => {
                if let Some(s) = self.bridge.session() {
                    s.rotate_secret();
                }
            }
            Command::Disconnect => {
                self.bridge.disconnect();
                // A project reopened later stays out of the room too.
                write_string(&self.params.invite, "");
                self.invite_in_use.clear();
            }
            Command::SetTempo(bpm) => self.edit(|d| d.set_tempo(bpm)),
            Command::SetMeter(m) => self.edit(|d| d.set_time_signature(&m)),
            Command::SetKey(k) => self.edit(|d| d.set_key(&k)),
            Command::ResolveTempo { keep_mine } => self.edit(|d| d.resolve_tempo(keep_mine)),
            Command::SetPushHostTempo(on) => {
                self.params.push_host_tempo.store(on, Relaxed);
                self.pushed_tempo = None;
            }
            Command::AddTrack { name, instrument } => {
                let owner = read_string(&self.params.display_name);
                self.edit(|d| d.add_track(&name, &owner, &instrument).map(|_| ()));
            }
            Command::SetTrackMuted { track, muted } => self.edit(|d| d.set_muted(&track, muted)),
            Command::SetActiveTrack(t) => self.track = t,
            Command::EditChart {
                pos,
                delete,
                insert,
            } => self.edit(|d| d.splice_chart(pos, delete, &insert)),
            Command::ChartCursor { cursor, typing } => {
                self.cursor = cursor;
                self.typing = typing;
            }
            Command::AddMarker { beat, label } => self.edit(|d| d.add_marker(beat, &label)),
            Command::PickNoteValue {
                track,
                note,
                field,
                value,
            } => self.edit(|d| d.set_note_field(&track, &note, &field, value)),
            Command::SetPeerGain {
                participant,
                gain_db,
            } => self.set_peer_mix(participant, |m| m.gain_db = gain_db),
            Command::SetPeerMuted { participant, muted } => {
                self.set_peer_mix(participant, |m| m.muted = muted);
            }
            Command::StartRecording { folder, opus } => {
                write_string(&self.params.record_folder, &folder);
                let name = read_string(&self.params.display_name);
                self.takes.start(&self.bridge, &folder, opus, &name);
            }
            Command::StopRecording => self.takes.stop(&self.bridge),
            Command::SetPeerSolo { participant, solo } => {
                self.set_peer_mix(participant, |m| m.solo = solo);
            }
            Command::SetStemRoute {
                participant,
                stem,
                bus,
            } => self.set_route(participant, stem, bus),
            Command::SetRoutedLeaveMain(on) => self.params.routed_leave_main.store(on, Relaxed),
            Command::SetStemName(name) => write_string(&self.params.stem_name, name.trim()),
        }
    }

    /// Changes our mix of one member, and keeps it in the project under their name.
    fn set_peer_mix(&mut self, participant: u64, change: impl FnOnce(&mut PeerMix)) {
        let m = self.mix.entry(participant).or_default();
        change(m);
        let m = *m;
        if let Some(name) = self.names.get(&participant) {
            self.params
                .mix
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    name.clone(),
                    SavedMix {
                        gain_db: m.gain_db,
                        muted: m.muted,
                        solo: m.solo,
                    },
                );
        }
    }

    /// Plays one of a member's stems on an output, and keeps that in the project.
    fn set_route(&mut self, participant: u64, stem: u16, bus: u8) {
        let (Ok(stem), true) = (u8::try_from(stem), usize::from(bus) <= AUX_BUSES) else {
            return;
        };
        let p = ParticipantId(participant);
        let key = self.names.get(&participant).map(|name| {
            let presence = self
                .bridge
                .session()
                .map(|s| s.presence())
                .unwrap_or_default();
            let theirs = presence.iter().find(|x| x.participant == p);
            Routes::key_of(name, theirs, StemId(stem))
        });
        self.routes.set(
            &self.params.routing,
            (p, StemId(stem)),
            key,
            bus,
            &self.bridge,
        );
    }

    /// A member we have no mix for yet, whose name the project knows: their saved mix, from
    /// their first frame on.
    fn restore_saved_mix(&mut self, s: &SessionHandle) {
        let presence = s.presence();
        for m in s.status().members {
            let p = m.info.participant;
            let name = presence
                .iter()
                .find(|x| x.participant == p && !x.presence.name.is_empty())
                .map_or(m.info.name, |x| x.presence.name.clone());
            self.names.insert(p.0, name.clone());
            let theirs = presence.iter().find(|x| x.participant == p);
            self.routes
                .restore(&self.params.routing, p, &name, theirs, &self.bridge);
            if self.mix.contains_key(&p.0) {
                continue;
            }
            let saved = self
                .params
                .mix
                .read()
                .ok()
                .and_then(|mix| mix.get(&name).copied());
            if let Some(saved) = saved {
                self.mix.insert(
                    p.0,
                    PeerMix {
                        gain_db: saved.gain_db,
                        muted: saved.muted,
                        solo: saved.solo,
                    },
                );
            }
        }
    }

    /// Proposes the host's tempo when it changes, if the musician asked for that.
    fn push_host_tempo(&mut self, s: &SessionHandle) {
        if !self.params.push_host_tempo.load(Relaxed) {
            return;
        }
        let Some(host) = self.controls.host_tempo() else {
            return;
        };
        if self
            .pushed_tempo
            .is_some_and(|p| (p - host).abs() < TEMPO_EPSILON)
        {
            return;
        }
        self.pushed_tempo = Some(host);
        if s.read_doc(|d| (d.tempo() - host).abs() >= TEMPO_EPSILON) {
            if let Err(e) = s.edit_doc(|d| d.set_tempo(host)) {
                tracing::warn!("cannot propose the host tempo: {e}");
            }
        }
    }

    /// Each engine stream's level in our mix from the musician's gain, mute and solo.
    fn set_mix_gains(&self) {
        let any_solo = self.mix.values().any(|m| m.solo);
        let gain_of = |m: &PeerMix| {
            if m.muted || (any_solo && !m.solo) {
                0.0
            } else {
                10f32.powf(m.gain_db.clamp(-60.0, 12.0) / 20.0)
            }
        };
        self.bridge.set_mix(
            self.mix
                .iter()
                .map(|(p, m)| (ParticipantId(*p), gain_of(m)))
                .collect(),
            gain_of(&PeerMix {
                solo: false,
                ..PeerMix::default()
            }),
        );
        for slot in &self.stats.streams {
            let id = slot.stream.load(Relaxed);
            if id == StreamStats::FREE {
                continue;
            }
            let who = self.bridge.participant_of(StreamId(id as u16));
            let m = who
                .and_then(|p| self.mix.get(&p.0))
                .copied()
                .unwrap_or_default();
            slot.mix_gain.store(gain_of(&m), Relaxed);
        }
    }

    fn stream_of(&self, p: ParticipantId) -> Option<&StreamStats> {
        self.stats.streams.iter().find(|slot| {
            let id = slot.stream.load(Relaxed);
            id != StreamStats::FREE && self.bridge.participant_of(StreamId(id as u16)) == Some(p)
        })
    }

    fn snapshot(&mut self, session: Option<&SessionHandle>) -> Snapshot {
        let mut snap = Snapshot {
            host_tempo: self.controls.host_tempo(),
            push_host_tempo: self.params.push_host_tempo.load(Relaxed),
            rendering_offline: self.bridge.is_offline(),
            recording: self.takes.view(&self.bridge),
            aux_buses: self.controls.aux_buses.load(Relaxed),
            routed_leave_main: self.params.routed_leave_main.load(Relaxed),
            me: Me {
                name: read_string(&self.params.display_name),
                instrument: read_string(&self.params.instrument),
                room: String::new(),
                invite: String::new(),
                active_track: self.track.clone(),
                input_level: self.stats.input_peak.load(Relaxed),
                stem: None,
                stems: Vec::new(),
            },
            ..Snapshot::default()
        };
        let Some(s) = session else {
            snap.link = match &self.error {
                Some(e) => LinkStatus::Failed(e.clone()),
                None => LinkStatus::Offline,
            };
            snap.me.name.clear();
            return snap;
        };
        let (bytes, _) = s.wire_tx();
        let elapsed = self.sent.1.elapsed().as_secs_f32();
        if elapsed >= 1.0 {
            let kbps = bytes.saturating_sub(self.sent.0) as f32 * 8.0 / 1000.0 / elapsed;
            self.sent = (bytes, Instant::now(), kbps);
        }
        let status = s.status();
        snap.link = match status.state {
            SessionState::Connecting => LinkStatus::Connecting,
            SessionState::Joined { .. } => LinkStatus::Joined,
            SessionState::Refused(_) | SessionState::WrongRelay => {
                LinkStatus::Failed(status.state.stopped_because().unwrap_or_default().into())
            }
            SessionState::Retrying(why) => LinkStatus::Retrying(why),
        };
        if let Some(seat) = self.bridge.seat() {
            snap.me.stem = seat.stem().map(|stem| self.stem_name(Some(stem)));
            snap.me.stems = seat.stems();
        }
        snap.me.room = self.room.clone();
        snap.me.invite = s.invite().to_string();
        snap.session = s.read_doc(session_view);
        let presence = s.presence();
        let mut people: Vec<Person> = Vec::new();
        for m in &status.members {
            let p = presence
                .iter()
                .find(|p| p.participant == m.info.participant);
            let mix = self
                .mix
                .get(&m.info.participant.0)
                .copied()
                .unwrap_or_default();
            let stream = self.stream_of(m.info.participant);
            let (jitter_ms, loss_pct, level) = stream.map_or((0.0, 0.0, 0.0), |st| {
                let decoded = st.frames_decoded.load(Relaxed) as f32;
                let concealed = st.frames_concealed.load(Relaxed) as f32;
                (
                    st.depth_samples.load(Relaxed) as f32 / 48.0,
                    100.0 * concealed / (decoded + concealed).max(1.0),
                    st.peak.load(Relaxed),
                )
            });
            people.push(Person {
                participant: m.info.participant.0,
                name: p.map_or_else(|| m.info.name.clone(), |p| p.presence.name.clone()),
                instrument: p.map(|p| p.presence.instrument.clone()).unwrap_or_default(),
                track: p.and_then(|p| p.presence.track.clone()),
                path: Some(match &m.route {
                    Route::Direct { lan: true, .. } => PathKind::Lan,
                    Route::Direct { .. } => PathKind::Direct,
                    Route::Relay(_) => PathKind::Relay,
                }),
                path_note: m.route.to_string(),
                rtt_ms: m.rtt.map(|r| r.as_secs_f32() * 1000.0),
                jitter_ms,
                loss_pct,
                level,
                gain_db: mix.gain_db,
                muted: mix.muted,
                solo: mix.solo,
                gone: p.is_some_and(|p| p.gone),
                last_seen_s: p.map(|p| p.age.as_secs_f32()),
                typing: p.is_some_and(|p| p.presence.typing && !p.gone),
                cursor: p
                    .and_then(|p| p.presence.cursor)
                    .map(|(a, b)| (a as usize, b as usize)),
                listening: m.info.role == Role::Listener,
                stems: p
                    .map(|p| p.presence.stems.iter().map(|s| s.1.clone()).collect())
                    .unwrap_or_default(),
                person: person_of(&m.info.member),
                yours: m.info.member == s.member(),
                outputs: self.routes.outputs_of(m, p),
            });
        }
        // Heard from lately but no longer in the room: shown as gone until forgotten.
        for p in presence.iter().filter(|p| {
            !status
                .members
                .iter()
                .any(|m| m.info.participant == p.participant)
        }) {
            people.push(Person {
                participant: p.participant.0,
                name: p.presence.name.clone(),
                instrument: p.presence.instrument.clone(),
                gone: true,
                last_seen_s: Some(p.age.as_secs_f32()),
                ..Person::default()
            });
        }
        let c = s.counters();
        snap.network = NetworkQuality {
            worst_loss_pct: people.iter().map(|p| p.loss_pct).fold(0.0, f32::max),
            max_jitter_ms: people.iter().map(|p| p.jitter_ms).fold(0.0, f32::max),
            max_rtt_ms: people.iter().filter_map(|p| p.rtt_ms).fold(0.0, f32::max),
            recovered: c.recovered.load(Relaxed),
            concealed: self.stats.frames_concealed.load(Relaxed),
            send_kbps: self.sent.2,
            protection: {
                let p = s.loss_protection();
                ProtectionView {
                    frames: p.frames,
                    auto: p.auto,
                    reported_loss_pct: p.reported_permille.map(|l| f32::from(l) / 10.0),
                }
            },
            port_mapping: s.status().port_mapping.describe(),
        };
        snap.people = people;
        snap
    }
}
