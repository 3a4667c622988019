//! Joins the engine's rings to a network session. A pump thread moves our encoded frames from
//! the engine's outgoing ring into the session, woken by the engine after each block that
//! produced any; frames the session opens go into the engine's incoming ring. Neither side
//! ever waits for the other. The session document is saved by a keeper thread of its own, so
//! an automerge save and an fsync never stand between a frame and the socket.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use echoel_engine::{EngineStats, MediaClock, NetworkLink, PacketSlot, StreamId};

use crate::backoff::{self, Backoff};
use crate::record::{Format, RecordError, RecordStatus, Recorder, Room, StemKey};
use echoel_net::doc::{DocStore, Heads};
use echoel_net::presence::stem_name;
use echoel_net::session::{self, AudioFrame, SessionConfig, SessionError, SessionHandle};
use echoel_net::wire::{ParticipantId, StemId};

use crate::shared_room::{FrameSink, Seat};

/// The pump sleeps until the engine wakes it; this is only the fallback should a wake be
/// missed (the engine not running yet, a host that stopped calling it).
const PUMP_FALLBACK: Duration = Duration::from_millis(5);

/// Where the session document is kept while playing: the project (saved by the host) and
/// the room's store in the user's data folder.
pub struct DocKeeping {
    /// The plugin's persisted copy.
    pub project: Arc<RwLock<crate::params::CompactBytes>>,
    /// The room's store, if the data folder is known.
    pub store: Option<DocStore>,
}

impl DocKeeping {
    fn keep(&self, bytes: Vec<u8>) {
        if let Some(store) = &self.store {
            // A full disk or a read-only folder costs the local copy, never the session.
            if let Err(e) = store.save(&bytes) {
                tracing::warn!("cannot save the session to {}: {e}", store.path().display());
            }
        }
        *self.project.write().unwrap_or_else(|e| e.into_inner()) =
            crate::params::CompactBytes(bytes);
    }
}

/// How often the pump refreshes the kept copies of the session document.
const DOC_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The process's network runtime: one thread, shared by every plugin instance.
pub fn network_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("echoel-net")
            .enable_all()
            .build()
            .expect("the network thread can start")
    })
}

/// A connection between an engine and a room, which can leave and join rooms while the
/// engine runs: the engine's rings stay with the bridge, sessions come and go.
///
/// # Thread
/// Created and dropped on a non-audio thread (dropping joins the pump thread).
pub struct Bridge {
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    pump: Option<JoinHandle<()>>,
    keeper: Option<JoinHandle<()>>,
}

struct Inner {
    /// Our seat in the room we are in, if any.
    seat: Mutex<Option<Arc<Seat>>>,
    /// Taken by the network thread for each opened frame; nothing else waits on it.
    incoming: Mutex<rtrb::Producer<PacketSlot>>,
    /// Remote frames dropped because the engine's incoming ring was full.
    dropped_incoming: AtomicU64,
    /// Engine stream of each participant's stem: index = stream id. A musician keeps their
    /// stream (and jitter buffer, and recording) across reconnections.
    streams: Mutex<Vec<(ParticipantId, StemId)>>,
    keep_doc: Mutex<Option<DocKeeping>>,
    /// The engine's clock, to stamp each frame's arrival.
    clock: MediaClock,
    /// The engine's counters, whose start gains are set for each new stream.
    stats: Arc<EngineStats>,
    /// An offline render: nothing of ours is sent and nothing heard is handed to the engine.
    offline: Arc<AtomicBool>,
    /// Our mix: each member's gain, and the gain of anyone not listed (0 while someone is
    /// soloed). Set by the control thread.
    mix: Mutex<(std::collections::BTreeMap<ParticipantId, f32>, f32)>,
    /// Our routing: the output each stem plays on (absent: the main output). Set by the
    /// control thread.
    routes: Mutex<StemRoutes>,
    /// The take being recorded, if any: every frame heard and sent goes to it too.
    recorder: RwLock<Option<Recorder>>,
    /// Whether one is: the audio thread holds the receive buffers' delay meanwhile.
    recording: Arc<AtomicBool>,
}

/// The output each stem plays on.
pub type StemRoutes = std::collections::BTreeMap<(ParticipantId, StemId), u8>;

/// Our clock's time in 48 kHz samples: what a take's frames are placed by.
fn clock_samples(clock: &MediaClock, at: Instant) -> u64 {
    (u128::from(clock.ns_at(at)) * 48 / 1_000_000) as u64
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FrameSink for Inner {
    /// A frame the session opened: into the engine's ring on the participant's stream.
    fn deliver(&self, from: ParticipantId, frame: AudioFrame<'_>) {
        if self.offline.load(Relaxed) {
            return;
        }
        let key = (from, frame.stem);
        let stream = {
            let mut t = lock(&self.streams);
            let i = t.iter().position(|k| *k == key).unwrap_or_else(|| {
                t.push(key);
                // Before its first frame reaches the engine: it starts at its member's level.
                let gain = self.gain_of(from);
                let id = StreamId((t.len() - 1) as u16);
                self.stats.set_stream_gain(id, gain);
                let bus = lock(&self.routes).get(&key).copied().unwrap_or(0);
                self.stats.set_stream_route(id, bus);
                t.len() - 1
            });
            StreamId(i as u16)
        };
        self.record(
            StemKey::Remote(from, frame.stem),
            frame.media_time,
            frame.payload,
        );
        // The sender's own media time: its frame size may change mid-stream.
        let pushed = PacketSlot::new(stream, frame.seq, frame.media_time, frame.payload)
            .ok()
            .is_some_and(|mut slot| {
                slot.arrival_ns = self.clock.now_ns();
                slot.path_epoch = frame.path_epoch;
                lock(&self.incoming).push(slot).is_ok()
            });
        if !pushed {
            self.dropped_incoming.fetch_add(1, Relaxed);
        }
    }
}

impl Inner {
    fn session(&self) -> Option<SessionHandle> {
        lock(&self.seat).as_ref().map(|s| s.session())
    }

    /// A frame heard or sent, for the take being recorded, if one is.
    fn record(&self, key: StemKey, media_time: u64, payload: &[u8]) {
        let rec = self.recorder.read().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = rec.as_ref() {
            r.frame(
                key,
                media_time,
                clock_samples(&self.clock, Instant::now()),
                payload,
            );
        }
    }

    fn gain_of(&self, p: ParticipantId) -> f32 {
        let mix = lock(&self.mix);
        mix.0.get(&p).copied().unwrap_or(mix.1)
    }

    /// Copies the session document to where it is kept, if it changed.
    fn keep_doc(&self, session: &SessionHandle, seen: &mut Heads) {
        if let Some(keep) = lock(&self.keep_doc).as_ref() {
            if let Some(bytes) = session.read_doc(|d| d.save_if_changed(seen)) {
                keep.keep(bytes);
            }
        }
    }
}

impl Bridge {
    /// Takes the engine's side of the link and starts the pump thread, in no room yet.
    pub fn new(link: NetworkLink) -> Result<Self, SessionError> {
        let NetworkLink {
            mut outgoing,
            incoming,
            wake,
            limits,
            clock,
            stats,
        } = link;
        let inner = Arc::new(Inner {
            seat: Mutex::new(None),
            incoming: Mutex::new(incoming),
            dropped_incoming: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
            keep_doc: Mutex::new(None),
            clock,
            stats,
            offline: Arc::new(AtomicBool::new(false)),
            mix: Mutex::new((Default::default(), 1.0)),
            routes: Mutex::new(StemRoutes::new()),
            recorder: RwLock::new(None),
            recording: Arc::new(AtomicBool::new(false)),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .map_err(|e| SessionError::Setup(e.to_string()))
        };
        let pump = {
            let (inner, stop) = (inner.clone(), stop.clone());
            spawn(
                "echoel-pump",
                Box::new(move || {
                    wake.register_current();
                    let mut backoff = Backoff::default();
                    let mut next_look = Instant::now() + backoff::PERIOD;
                    while !stop.load(Relaxed) {
                        let seat = lock(&inner.seat).clone();
                        if let (Some(s), true) = (&seat, Instant::now() >= next_look) {
                            next_look = Instant::now() + backoff::PERIOD;
                            let (ceiling, shortest) =
                                backoff.observe(s.session().take_queue_delay());
                            limits.set(ceiling, shortest);
                        }
                        let mut sent = false;
                        while let Ok(p) = outgoing.pop() {
                            // Out of a room, frames are dropped here so the ring never fills.
                            if let (Some(s), false) = (&seat, inner.offline.load(Relaxed)) {
                                s.send_audio(p.media_time, p.payload());
                                inner.record(StemKey::Local, p.media_time, p.payload());
                            }
                            sent = true;
                        }
                        if !sent {
                            std::thread::park_timeout(PUMP_FALLBACK);
                        }
                    }
                }),
            )?
        };
        let keeper = {
            let (inner, stop) = (inner.clone(), stop.clone());
            spawn(
                "echoel-doc-keeper",
                Box::new(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Relaxed) {
                        std::thread::park_timeout(DOC_SAVE_INTERVAL);
                        if let Some(s) = inner.session() {
                            inner.keep_doc(&s, &mut seen);
                        }
                    }
                }),
            )?
        };
        Ok(Self {
            inner,
            stop,
            pump: Some(pump),
            keeper: Some(keeper),
        })
    }

    /// A bridge in the room of `config` from the start.
    pub fn start(
        link: NetworkLink,
        config: SessionConfig,
        runtime: &tokio::runtime::Handle,
        keep_doc: Option<DocKeeping>,
    ) -> Result<Self, SessionError> {
        let bridge = Self::new(link)?;
        bridge.connect(config, runtime, keep_doc)?;
        Ok(bridge)
    }

    /// Joins the room of `config` on `runtime` in a session of its own, leaving any other
    /// first. With `keep_doc`, the session document is copied there whenever it changed (once
    /// a second at most) and when leaving.
    pub fn connect(
        &self,
        config: SessionConfig,
        runtime: &tokio::runtime::Handle,
        keep_doc: Option<DocKeeping>,
    ) -> Result<(), SessionError> {
        self.join(config, runtime, keep_doc, false)
    }

    /// As [`Self::connect`], sharing one session with the process's other instances of the
    /// same person in that room (see [`crate::shared_room`]): one participant to the room,
    /// this instance's track one of its named stems.
    pub fn connect_shared(
        &self,
        config: SessionConfig,
        runtime: &tokio::runtime::Handle,
        keep_doc: Option<DocKeeping>,
    ) -> Result<(), SessionError> {
        self.join(config, runtime, keep_doc, true)
    }

    fn join(
        &self,
        config: SessionConfig,
        runtime: &tokio::runtime::Handle,
        keep_doc: Option<DocKeeping>,
        share: bool,
    ) -> Result<(), SessionError> {
        self.disconnect();
        let sink: Weak<dyn FrameSink> = Arc::downgrade(&self.inner) as Weak<Inner>;
        let seat = Seat::take(config, runtime, sink, share)?;
        *lock(&self.inner.keep_doc) = keep_doc;
        *lock(&self.inner.seat) = Some(Arc::new(seat));
        Ok(())
    }

    /// Leaves the room (the session ends with the last instance in it), keeping the document
    /// one last time. The engine plays on.
    pub fn disconnect(&self) {
        let old = lock(&self.inner.seat).take();
        if let Some(s) = old {
            self.inner.keep_doc(&s.session(), &mut Vec::new());
        }
        *lock(&self.inner.keep_doc) = None;
    }

    /// Our seat in the room, if in one: what the room sees of this instance.
    pub fn seat(&self) -> Option<Arc<Seat>> {
        lock(&self.inner.seat).clone()
    }

    /// Whose stem an engine stream plays.
    pub fn stem_of(&self, stream: StreamId) -> Option<(ParticipantId, StemId)> {
        lock(&self.inner.streams)
            .get(usize::from(stream.0))
            .copied()
    }

    /// Who plays on an engine stream.
    pub fn participant_of(&self, stream: StreamId) -> Option<ParticipantId> {
        self.stem_of(stream).map(|(p, _)| p)
    }

    /// Sets our mix: `gains` per member, `others` for anyone not listed. Every stream of a
    /// member, heard already or not yet, plays at its member's gain from its first block.
    pub fn set_mix(&self, gains: std::collections::BTreeMap<ParticipantId, f32>, others: f32) {
        *lock(&self.inner.mix) = (gains, others);
        let streams = lock(&self.inner.streams).clone();
        for (i, (p, _)) in streams.iter().enumerate() {
            self.inner
                .stats
                .set_stream_gain(StreamId(i as u16), self.inner.gain_of(*p));
        }
    }

    /// Sets our routing: the output each stem plays on (absent: the main output), for the
    /// streams heard already and those to come.
    pub fn set_routes(&self, routes: StemRoutes) {
        // In the order `deliver` takes them, so a stream heard meanwhile gets the new route.
        let streams = lock(&self.inner.streams);
        let mut held = lock(&self.inner.routes);
        *held = routes;
        for (i, key) in streams.iter().enumerate() {
            let bus = held.get(key).copied().unwrap_or(0);
            self.inner.stats.set_stream_route(StreamId(i as u16), bus);
        }
    }

    /// While `on` (an offline render), the engine's frames are not sent and the room's are not
    /// played: the session stays, so the room is there again when the render ends.
    pub fn set_offline(&self, on: bool) {
        self.inner.offline.store(on, Relaxed);
    }

    /// Whether an offline render holds the room's audio back.
    pub fn is_offline(&self) -> bool {
        self.inner.offline.load(Relaxed)
    }

    /// The switch of [`Bridge::set_offline`], for whoever activates the engine.
    pub fn offline_switch(&self) -> Arc<AtomicBool> {
        self.inner.offline.clone()
    }

    /// The current session, if in a room.
    pub fn session(&self) -> Option<SessionHandle> {
        self.inner.session()
    }

    /// Remote frames dropped because the engine's incoming ring was full.
    pub fn dropped_incoming(&self) -> u64 {
        self.inner.dropped_incoming.load(Relaxed)
    }

    /// Starts recording a take into a new folder under `folder`: every stem heard, and what
    /// we send (named `<name>-sent`), each placed from this moment on. A take already running
    /// is ended first.
    pub fn start_recording(
        &self,
        folder: &std::path::Path,
        format: Format,
        name: &str,
    ) -> Result<(), RecordError> {
        self.start_recording_at(folder, format, name, Instant::now())
    }

    /// As [`Self::start_recording`], the take's first sample at `at` (a moment of the
    /// caller's own timeline, not when this thread got to run).
    pub fn start_recording_at(
        &self,
        folder: &std::path::Path,
        format: Format,
        name: &str,
        at: Instant,
    ) -> Result<(), RecordError> {
        self.stop_recording();
        let room = SessionRoom {
            inner: Arc::downgrade(&self.inner),
            name: name.to_owned(),
        };
        let start = clock_samples(&self.inner.clock, at);
        let rec = Recorder::start(folder, format, start, Box::new(room))?;
        *self
            .inner
            .recorder
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(rec);
        self.inner.recording.store(true, Relaxed);
        Ok(())
    }

    /// Set while a take is recorded, for the audio thread (see [`EngineParams::hold_depth`]).
    ///
    /// [`EngineParams::hold_depth`]: echoel_engine::EngineParams::hold_depth
    pub fn recording_flag(&self) -> Arc<AtomicBool> {
        self.inner.recording.clone()
    }

    /// Ends the take, closing every file; how it went, if one was running.
    pub fn stop_recording(&self) -> Option<RecordStatus> {
        self.take_recorder().map(Recorder::stop)
    }

    fn take_recorder(&self) -> Option<Recorder> {
        let rec = self
            .inner
            .recorder
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.inner.recording.store(false, Relaxed);
        rec
    }

    /// Ends the take; its gaps are filled on the recorder's thread meanwhile (see
    /// [`Recorder::stop_in_background`]): what it returns follows how that goes.
    pub fn stop_recording_in_background(
        &self,
    ) -> Option<std::sync::Arc<std::sync::Mutex<RecordStatus>>> {
        self.take_recorder().map(Recorder::stop_in_background)
    }

    /// Where the take stands, if one is running.
    pub fn recording(&self) -> Option<RecordStatus> {
        self.inner
            .recorder
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Recorder::status)
    }
}

/// Names and round trips for a take's files, from the session of the moment.
struct SessionRoom {
    inner: Weak<Inner>,
    name: String,
}

impl SessionRoom {
    fn session(&self) -> Option<SessionHandle> {
        self.inner.upgrade()?.session()
    }

    fn member<T>(&self, key: &StemKey, f: impl Fn(&session::MemberStatus) -> T) -> Option<T> {
        let StemKey::Remote(p, _) = key else {
            return None;
        };
        let status = self.session()?.status();
        status
            .members
            .iter()
            .find(|m| m.info.participant == *p)
            .map(f)
    }
}

impl Room for SessionRoom {
    fn name(&self, key: &StemKey) -> Option<String> {
        match key {
            StemKey::Local => Some(self.name.clone()),
            StemKey::Remote(..) => self.member(key, |m| m.info.name.clone()),
        }
    }

    fn rtt(&self, key: &StemKey) -> Option<Duration> {
        self.member(key, |m| m.rtt).flatten()
    }

    fn stem_name(&self, key: &StemKey) -> Option<String> {
        let StemKey::Remote(p, stem) = key else {
            return None;
        };
        stem_name(&self.session()?.presence(), *p, *stem)
    }

    fn on_our_clock(&self, key: &StemKey, media: u64) -> Option<f64> {
        let StemKey::Remote(p, stem) = key else {
            return None;
        };
        let session = self.session()?;
        let map = session.clock_of(*p, *stem)?;
        // The session's clock starts at its own epoch; the recorder's is the engine's.
        let inner = self.inner.upgrade()?;
        let epoch = inner.clock.ns_at(session.clock_epoch()) as f64 * 48_000.0 / 1e9;
        Some(map.ours(media) + epoch)
    }

    fn ask_take(
        &self,
        key: &StemKey,
        ranges: Vec<(u64, u64)>,
    ) -> Option<std::sync::mpsc::Receiver<echoel_net::session::TakeFrames>> {
        let StemKey::Remote(p, stem) = key else {
            return None;
        };
        Some(self.session()?.ask_take(*p, *stem, ranges))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in [self.pump.take(), self.keeper.take()].into_iter().flatten() {
            t.thread().unpark();
            let _ = t.join();
        }
        // Closes the take's files whole, and keeps the document one last time. Leaving ends
        // the gap fill's asks at once: the files keep what they hold.
        self.stop_recording_in_background();
        self.disconnect();
    }
}
