//! Joins the engine's rings to a network session. A pump thread moves our encoded frames from
//! the engine's outgoing ring into the session; frames the session opens go into the engine's
//! incoming ring. Neither side ever waits for the other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use echoel_engine::{NetworkLink, PacketSlot, StreamId};
use echoel_net::doc::{DocStore, Heads};
use echoel_net::session::{self, AudioFrame, SessionConfig, SessionError, SessionHandle};
use echoel_net::wire::{ParticipantId, StemId};

/// How long an encoded frame can wait between the audio thread and the socket: a twentieth
/// of a 2.5 ms frame, for a wake-up cost of under ten thousand cheap sleeps a second.
const PUMP_INTERVAL: Duration = Duration::from_micros(125);

/// Where the session document is kept while playing: the project (saved by the host) and
/// the room's store in the user's data folder.
pub struct DocKeeping {
    /// The plugin's persisted copy.
    pub project: Arc<RwLock<Vec<u8>>>,
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
        *self.project.write().unwrap_or_else(|e| e.into_inner()) = bytes;
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
}

struct Inner {
    session: Mutex<Option<SessionHandle>>,
    /// Taken by the network thread for each opened frame; nothing else waits on it.
    incoming: Mutex<rtrb::Producer<PacketSlot>>,
    /// Remote frames dropped because the engine's incoming ring was full.
    dropped_incoming: AtomicU64,
    /// Engine stream of each participant's stem: index = stream id. A musician keeps their
    /// stream (and jitter buffer, and recording) across reconnections.
    streams: Mutex<Vec<(ParticipantId, StemId)>>,
    keep_doc: Mutex<Option<DocKeeping>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// A frame the session opened: into the engine's ring on the participant's stream.
    fn deliver(&self, from: ParticipantId, frame: AudioFrame<'_>) {
        let key = (from, frame.stem);
        let stream = {
            let mut t = lock(&self.streams);
            let i = t.iter().position(|k| *k == key).unwrap_or_else(|| {
                t.push(key);
                t.len() - 1
            });
            StreamId(i as u16)
        };
        // The sender's own media time: its frame size may change mid-stream.
        let pushed = PacketSlot::new(stream, frame.seq, frame.media_time, frame.payload)
            .ok()
            .is_some_and(|slot| lock(&self.incoming).push(slot).is_ok());
        if !pushed {
            self.dropped_incoming.fetch_add(1, Relaxed);
        }
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
            ..
        } = link;
        let inner = Arc::new(Inner {
            session: Mutex::new(None),
            incoming: Mutex::new(incoming),
            dropped_incoming: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
            keep_doc: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let pump = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("echoel-pump".into())
                .spawn(move || {
                    let mut seen = Vec::new();
                    let mut last_save = Instant::now();
                    while !stop.load(Relaxed) {
                        let session = lock(&inner.session).clone();
                        let mut sent = false;
                        while let Ok(p) = outgoing.pop() {
                            // Out of a room, frames are dropped here so the ring never fills.
                            if let Some(s) = &session {
                                s.send_audio(StemId(0), p.media_time, p.payload());
                            }
                            sent = true;
                        }
                        if let Some(s) = &session {
                            if last_save.elapsed() >= DOC_SAVE_INTERVAL {
                                last_save = Instant::now();
                                inner.keep_doc(s, &mut seen);
                            }
                        }
                        if !sent {
                            std::thread::sleep(PUMP_INTERVAL);
                        }
                    }
                    if let Some(s) = lock(&inner.session).as_ref() {
                        inner.keep_doc(s, &mut seen);
                    }
                })
                .map_err(|e| SessionError::Setup(e.to_string()))?
        };
        Ok(Self {
            inner,
            stop,
            pump: Some(pump),
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

    /// Joins the room of `config` on `runtime`, leaving any other first. With `keep_doc`, the
    /// session document is copied there whenever it changed (once a second at most) and when
    /// leaving.
    pub fn connect(
        &self,
        config: SessionConfig,
        runtime: &tokio::runtime::Handle,
        keep_doc: Option<DocKeeping>,
    ) -> Result<(), SessionError> {
        self.disconnect();
        let inner = self.inner.clone();
        let session = {
            let _entered = runtime.enter();
            session::start(config, move |from, frame| inner.deliver(from, frame))?
        };
        *lock(&self.inner.keep_doc) = keep_doc;
        *lock(&self.inner.session) = Some(session);
        Ok(())
    }

    /// Leaves the room, keeping the document one last time. The engine plays on.
    pub fn disconnect(&self) {
        let old = lock(&self.inner.session).take();
        if let Some(s) = old {
            self.inner.keep_doc(&s, &mut Vec::new());
            s.stop();
        }
        *lock(&self.inner.keep_doc) = None;
    }

    /// Who plays on an engine stream.
    pub fn participant_of(&self, stream: StreamId) -> Option<ParticipantId> {
        lock(&self.inner.streams)
            .get(usize::from(stream.0))
            .map(|(p, _)| *p)
    }

    /// The current session, if in a room.
    pub fn session(&self) -> Option<SessionHandle> {
        lock(&self.inner.session).clone()
    }

    /// Remote frames dropped because the engine's incoming ring was full.
    pub fn dropped_incoming(&self) -> u64 {
        self.inner.dropped_incoming.load(Relaxed)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
        self.disconnect();
    }
}
