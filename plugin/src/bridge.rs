//! Joins the engine's rings to a network session. A pump thread moves our encoded frames from
//! the engine's outgoing ring into the session; frames the session opens go into the engine's
//! incoming ring. Neither side ever waits for the other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use echoel_engine::{opus_packet_samples, NetworkLink, PacketSlot, StreamId};
use echoel_net::doc::DocStore;
use echoel_net::session::{self, SessionConfig, SessionError, SessionHandle};
use echoel_net::wire::ParticipantId;

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

/// A running connection between an engine and a room.
///
/// # Thread
/// Created and dropped on a non-audio thread (dropping joins the pump thread).
pub struct Bridge {
    session: SessionHandle,
    stop: Arc<AtomicBool>,
    pump: Option<JoinHandle<()>>,
    /// Remote frames dropped because the engine's incoming ring was full.
    pub dropped_incoming: Arc<AtomicU64>,
    /// Engine stream of each participant: index = stream id. A musician keeps their stream
    /// (and jitter buffer, and recording) across reconnections.
    streams: Arc<Mutex<Vec<ParticipantId>>>,
}

impl Bridge {
    /// Starts the session on `runtime` and the pump thread. With `keep_doc`, the pump copies
    /// the session document there whenever it changed (once a second at most).
    pub fn start(
        link: NetworkLink,
        config: SessionConfig,
        runtime: &tokio::runtime::Handle,
        keep_doc: Option<DocKeeping>,
    ) -> Result<Self, SessionError> {
        let NetworkLink {
            mut outgoing,
            mut incoming,
            ..
        } = link;
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped_in = dropped.clone();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let table = streams.clone();
        let session = {
            let _entered = runtime.enter();
            session::start(config, move |from, seq, payload| {
                let stream = {
                    let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
                    let i = t.iter().position(|p| *p == from).unwrap_or_else(|| {
                        t.push(from);
                        t.len() - 1
                    });
                    StreamId(i as u16)
                };
                // Media time from the packet's own duration; senders keep one frame size.
                let frame = opus_packet_samples(payload).unwrap_or(120) as u64;
                let pushed = PacketSlot::new(stream, seq, u64::from(seq) * frame, payload)
                    .ok()
                    .is_some_and(|slot| incoming.push(slot).is_ok());
                if !pushed {
                    dropped_in.fetch_add(1, Relaxed);
                }
            })?
        };
        let stop = Arc::new(AtomicBool::new(false));
        let pump = {
            let (session, stop) = (session.clone(), stop.clone());
            std::thread::Builder::new()
                .name("echoel-pump".into())
                .spawn(move || {
                    let mut seen = Vec::new();
                    let mut last_save = Instant::now();
                    while !stop.load(Relaxed) {
                        if let Some(keep) = &keep_doc {
                            if last_save.elapsed() >= DOC_SAVE_INTERVAL {
                                last_save = Instant::now();
                                if let Some(bytes) =
                                    session.read_doc(|d| d.save_if_changed(&mut seen))
                                {
                                    keep.keep(bytes);
                                }
                            }
                        }
                        let mut sent = false;
                        while let Ok(p) = outgoing.pop() {
                            session.send_audio(p.seq, p.payload());
                            sent = true;
                        }
                        if !sent {
                            std::thread::sleep(PUMP_INTERVAL);
                        }
                    }
                })
                .map_err(|e| SessionError::Setup(e.to_string()))?
        };
        Ok(Self {
            session,
            stop,
            pump: Some(pump),
            dropped_incoming: dropped,
            streams,
        })
    }

    /// Who plays on an engine stream.
    pub fn participant_of(&self, stream: StreamId) -> Option<ParticipantId> {
        let t = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        t.get(usize::from(stream.0)).copied()
    }

    /// The session, for status and counters.
    pub fn session(&self) -> &SessionHandle {
        &self.session
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        self.session.stop();
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}
