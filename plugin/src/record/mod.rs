//! Recording a take: every remote stem, and what we send, each to a file of its own in a
//! numbered take folder, placed by media time rather than by arrival, so that stems from
//! different studios line up when the files are laid side by side in a DAW.
//!
//! The network thread (remote frames) and the pump (ours) hand each frame over a bounded
//! channel, never waiting; a recorder thread of its own writes the files. Each sender's
//! clock is put on ours by the fastest its frames ever came, less half the path's round
//! trip: sample 0 of every file of a take is then the same moment.

mod fill;
mod sinks;
mod stem_file;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::headless::file_stem;
use echoel_engine::packet::opus_packet_samples;
use echoel_net::wire::{ParticipantId, StemId};
use thiserror::Error;

pub use stem_file::{StemCounts, StemFile};

/// Frames waiting for the recorder thread at most (about 5 s of a 4-member room at 2.5 ms).
const QUEUE: usize = 8_192;

/// A stem's frames are gathered this long (half a second of its media time) before its file
/// begins: the fastest of them puts its clock on ours.
const GATHER: u64 = 24_000;

/// Frames gathered at most before a file begins anyway (a sender whose media time jumps
/// about must not make the recorder hold more).
const GATHER_MAX_FRAMES: usize = 512;

/// Files in one take at most: a member cannot make a take open files without end.
const MAX_FILES: usize = 64;

/// Take folders tried before giving up (`take-001` …).
const MAX_TAKES: u32 = 9_999;

/// The file format of a take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// 32-bit float WAV of the decoded audio.
    #[default]
    Wav,
    /// Ogg Opus holding the packets as they came, never encoded twice.
    Opus,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Opus => "opus",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "wav" => Ok(Format::Wav),
            "opus" | "ogg" => Ok(Format::Opus),
            other => Err(format!("unknown recording format {other:?}: wav or opus")),
        }
    }
}

/// Why a recording could not start, or stopped short.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum RecordError {
    /// The folder is not there.
    #[error("the recording folder {0} does not exist")]
    Missing(PathBuf),
    /// It is there but cannot be written (read-only, no permission).
    #[error("cannot write to the recording folder {path}: {why}")]
    NotWritable { path: PathBuf, why: String },
    /// The disk filled up: the file stops, what it holds plays.
    #[error(
        "the recording folder is full: {path} stopped at {seconds:.1} s (what it holds plays)"
    )]
    DiskFull { path: PathBuf, seconds: f64 },
    /// Another write error: the file stops, what it holds plays.
    #[error("cannot write {path}: {why} (what it holds plays)")]
    Write { path: PathBuf, why: String },
}

/// Whose frames a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StemKey {
    /// What we send.
    Local,
    /// A remote member's stem.
    Remote(ParticipantId, StemId),
}

/// One file of a take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    pub key: StemKey,
    pub path: PathBuf,
    pub bytes: u64,
    pub counts: StemCounts,
    /// The file stopped on an error (what it holds plays).
    pub failed: bool,
}

/// Where a take stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordStatus {
    /// The take's folder.
    pub folder: PathBuf,
    pub files: Vec<FileStatus>,
    /// Errors met, first first.
    pub errors: Vec<RecordError>,
    /// Frames the recorder thread could not keep up with.
    pub dropped: u64,
    /// The take has ended and its gaps are being filled from their senders.
    pub filling: bool,
}

/// Names a stem's file and tells the path's round trip, from the session.
pub trait Room: Send + 'static {
    /// The member's display name.
    fn name(&self, key: &StemKey) -> Option<String>;
    /// The round trip to the member (none for our own).
    fn rtt(&self, key: &StemKey) -> Option<Duration>;
    /// The stem's name, when its sender named its stems.
    fn stem_name(&self, _key: &StemKey) -> Option<String> {
        None
    }
    /// Where the room's clock puts the stem's media time `media` on our clock (48 kHz samples
    /// of the recorder's clock); `None` before the session has followed its sender a while.
    fn on_our_clock(&self, _key: &StemKey, _media: u64) -> Option<f64> {
        None
    }
    /// Asks the stem's sender for the frames it played within `ranges` (its media time,
    /// `[from, to)`); `None` where there is no one to ask.
    fn ask_take(
        &self,
        _key: &StemKey,
        _ranges: Vec<(u64, u64)>,
    ) -> Option<std::sync::mpsc::Receiver<echoel_net::session::TakeFrames>> {
        None
    }
}

enum Msg {
    Frame {
        key: StemKey,
        media_time: u64,
        /// When it arrived (remote) or left the engine (ours), in 48 kHz samples of our clock.
        at: u64,
        payload: Vec<u8>,
    },
    Stop,
}

/// A take being recorded.
///
/// # Thread
/// [`Recorder::frame`] never blocks (network thread, pump); the rest on any non-audio thread.
pub struct Recorder {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<RecordStatus>>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts a take in a new numbered folder under `parent`, whose files begin at `start`
    /// (48 kHz samples of our clock).
    pub fn start(
        parent: &Path,
        format: Format,
        start: u64,
        room: Box<dyn Room>,
    ) -> Result<Self, RecordError> {
        let folder = new_take_folder(parent)?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let status = Arc::new(Mutex::new(RecordStatus {
            folder: folder.clone(),
            ..Default::default()
        }));
        let writer = Writer {
            folder: folder.clone(),
            format,
            start,
            room,
            files: HashMap::new(),
            status: status.clone(),
            fills: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("echoel-recorder".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| RecordError::NotWritable {
                path: folder,
                why: e.to_string(),
            })?;
        Ok(Self {
            tx,
            thread: Some(thread),
            status,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A frame for the take; dropped (and counted) if the recorder thread is that far behind.
    pub fn frame(&self, key: StemKey, media_time: u64, at: u64, payload: &[u8]) {
        let msg = Msg::Frame {
            key,
            media_time,
            at,
            payload: payload.to_vec(),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg) {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Where the take stands.
    pub fn status(&self) -> RecordStatus {
        let mut s = lock(&self.status).clone();
        s.dropped = self.dropped.load(Relaxed);
        s
    }

    /// Ends the take: every file is closed, complete, and its gaps filled with what their
    /// senders kept (waiting up to 10 s for them). Returns how it went.
    pub fn stop(mut self) -> RecordStatus {
        self.finish();
        self.status()
    }

    /// Ends the take without waiting for its gaps to be filled: they are filled on the
    /// recorder's own thread, and the status returned shows how that goes
    /// ([`RecordStatus::filling`] until it is done).
    pub fn stop_in_background(mut self) -> Arc<Mutex<RecordStatus>> {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Msg::Stop);
            drop(t);
        }
        lock(&self.status).dropped = self.dropped.load(Relaxed);
        self.status.clone()
    }

    fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            // A full queue still takes the stop once the thread has drained it.
            let _ = self.tx.send(Msg::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where takes go unless the musician chose elsewhere: `~/Music/Echoel Jam` (the platform's
/// music folder's name is the same on Linux, macOS and Windows).
pub fn default_folder() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"))?;
    Some(PathBuf::from(home).join("Music").join("Echoel Jam"))
}

/// Free space where `folder` is, in bytes; `None` where it cannot be told.
pub fn free_bytes(folder: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs is plain old data, for which all zeros is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid NUL-terminated path and an out-parameter of the right type.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = folder;
        None
    }
}

/// `parent/take-NNN`, the first number free.
fn new_take_folder(parent: &Path) -> Result<PathBuf, RecordError> {
    if !parent.is_dir() {
        return Err(RecordError::Missing(parent.to_owned()));
    }
    for n in 1..=MAX_TAKES {
        let folder = parent.join(format!("take-{n:03}"));
        match std::fs::create_dir(&folder) {
            Ok(()) => return Ok(folder),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(RecordError::NotWritable {
                    path: parent.to_owned(),
                    why: e.to_string(),
                })
            }
        }
    }
    Err(RecordError::NotWritable {
        path: parent.to_owned(),
        why: format!("it holds {MAX_TAKES} takes already"),
    })
}

/// A stem's file: gathering its first frames, writing, or stopped.
enum Slot {
    Gathering {
        /// Media time, arrival, payload.
        frames: Vec<(u64, u64, Vec<u8>)>,
        /// The least `arrival − media time` seen: its clock against ours, plus the fastest
        /// one-way delay.
        lead: i64,
        first_media: u64,
    },
    Writing(StemFile, PathBuf),
    Stopped,
}

/// The recorder thread's state.
struct Writer {
    folder: PathBuf,
    format: Format,
    start: u64,
    room: Box<dyn Room>,
    files: HashMap<StemKey, Slot>,
    status: Arc<Mutex<RecordStatus>>,
    /// Files closed with gaps, to fill once the take is done.
    fills: Vec<FillJob>,
}

/// A remote stem's file closed with gaps.
struct FillJob {
    key: StemKey,
    path: PathBuf,
    gaps: Vec<stem_file::Gap>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Frame {
                    key,
                    media_time,
                    at,
                    payload,
                } => self.frame(key, media_time, at, payload),
                Msg::Stop => break,
            }
        }
        let keys: Vec<StemKey> = self.files.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
        if !self.fills.is_empty() {
            lock(&self.status).filling = true;
            self.fill_gaps();
            lock(&self.status).filling = false;
        }
    }

    fn frame(&mut self, key: StemKey, media: u64, at: u64, payload: Vec<u8>) {
        // From the frame's end: it could not leave before it was whole, whatever its length.
        let samples = opus_packet_samples(&payload).unwrap_or(0) as u64;
        // A hostile media time near the top of the range must not overflow.
        let lead_now =
            (at as i64).saturating_sub(media.saturating_add(samples).min(i64::MAX as u64) as i64);
        if !self.files.contains_key(&key) && self.files.len() >= MAX_FILES {
            return;
        }
        let slot = self.files.entry(key).or_insert(Slot::Gathering {
            frames: Vec::new(),
            lead: lead_now,
            first_media: media,
        });
        match slot {
            Slot::Gathering {
                frames,
                lead,
                first_media,
            } => {
                *lead = (*lead).min(lead_now);
                let gathered = media.saturating_sub(*first_media) >= GATHER;
                frames.push((media, at, payload));
                if gathered || frames.len() >= GATHER_MAX_FRAMES {
                    let (frames, lead, first) = (std::mem::take(frames), *lead, *first_media);
                    self.begin(key, frames, lead, first);
                }
            }
            Slot::Writing(file, path) => {
                let result = file.push(media, at, &payload);
                let path = path.clone();
                self.after_write(key, result, &path);
            }
            Slot::Stopped => {}
        }
    }

    /// Opens the stem's file, its first sample the take's start on the sender's clock.
    /// `first`: a frame's media time, on the grid all of the sender's frames start on.
    fn begin(&mut self, key: StemKey, frames: Vec<(u64, u64, Vec<u8>)>, lead: i64, first: u64) {
        let one_way = self
            .room
            .rtt(&key)
            .map_or(0, |rtt| rtt.as_nanos() as i128 * 48_000 / 2_000_000_000);
        // Wide: a hostile sender's media times may sit anywhere in the range. The room's clock
        // where the session has followed the sender long enough (its least round trips, its
        // drift); else what these first frames and the round trip tell.
        let origin = match self.room.on_our_clock(&key, first) {
            Some(ours) if ours.is_finite() => {
                i128::from(first) + (i128::from(self.start) - ours.round() as i128)
            }
            _ => i128::from(self.start) - (i128::from(lead) - one_way),
        };
        // Files hold whole frames: the one the take starts in is written from its start, and
        // the decoder skips what of it came before.
        let into_frame = (origin - i128::from(first)).rem_euclid(i128::from(GRID));
        let origin = (origin - into_frame).clamp(0, i128::from(u64::MAX)) as u64;
        let skip = PRE_SKIP + into_frame as u16;
        let path = self.file_path(&key);
        let sink: io::Result<Box<dyn sinks::Sink>> = match (self.format, key) {
            // A remote stem's packets are kept beside its WAV, for filling its gaps.
            (Format::Wav, StemKey::Remote(..)) => {
                sinks::WavWithPackets::create(&path, &fill::packets_beside(&path), skip)
                    .map(|s| Box::new(s) as _)
            }
            (Format::Wav, StemKey::Local) => {
                sinks::Wav::create(&path, skip).map(|s| Box::new(s) as _)
            }
            (Format::Opus, _) => {
                let title = self.room.name(&key).unwrap_or_default();
                sinks::OggOpus::create(&path, skip, &title).map(|s| Box::new(s) as _)
            }
        };
        let mut file = match sink {
            Ok(sink) => StemFile::new(sink, Some(origin), lead, self.start),
            Err(e) => {
                self.files.insert(key, Slot::Stopped);
                self.failed(key, &path, e, None);
                return;
            }
        };
        let mut result = Ok(());
        for (media, at, payload) in frames {
            result = file.push(media, at, &payload);
            if result.is_err() {
                break;
            }
        }
        self.files.insert(key, Slot::Writing(file, path.clone()));
        self.after_write(key, result, &path);
    }

    fn after_write(&mut self, key: StemKey, result: io::Result<()>, path: &Path) {
        match result {
            Ok(()) => {
                if let Some(Slot::Writing(file, _)) = self.files.get(&key) {
                    let (bytes, counts) = (file.bytes(), file.counts());
                    self.update(key, path, bytes, counts, false);
                }
            }
            Err(e) => {
                if let Some(Slot::Writing(file, _)) = self.files.insert(key, Slot::Stopped) {
                    let (bytes, counts) = (file.bytes(), file.counts());
                    // What it held is cut back to its last checkpoint; failing that too, the
                    // file is as the disk left it.
                    let _ = file.abandon();
                    // The packets kept for filling its gaps go too: they only take space now.
                    if self.format == Format::Wav {
                        let _ = std::fs::remove_file(fill::packets_beside(path));
                    }
                    self.update(key, path, bytes, counts, true);
                    self.failed(key, path, e, Some(counts));
                }
            }
        }
    }

    fn close(&mut self, key: StemKey) {
        match self.files.insert(key, Slot::Stopped) {
            Some(Slot::Gathering {
                frames,
                lead,
                first_media,
            }) if !frames.is_empty() => {
                self.begin(key, frames, lead, first_media);
                self.close(key);
            }
            Some(Slot::Writing(file, path)) => {
                let bytes = file.bytes();
                match file.finish() {
                    Ok((counts, gaps)) => {
                        self.update(key, &path, bytes, counts, false);
                        if matches!(key, StemKey::Remote(..)) {
                            self.fills.push(FillJob { key, path, gaps });
                        }
                    }
                    Err(e) => self.failed(key, &path, e, None),
                }
            }
            _ => {}
        }
    }

    fn update(&self, key: StemKey, path: &Path, bytes: u64, counts: StemCounts, failed: bool) {
        let mut s = lock(&self.status);
        let entry = FileStatus {
            key,
            path: path.to_owned(),
            bytes,
            counts,
            failed,
        };
        match s.files.iter_mut().find(|f| f.key == key) {
            Some(f) => {
                let failed = f.failed || failed;
                *f = FileStatus { failed, ..entry };
            }
            None => s.files.push(entry),
        }
    }

    fn failed(&self, key: StemKey, path: &Path, e: io::Error, counts: Option<StemCounts>) {
        let seconds = counts.map_or(0.0, |c| c.samples as f64 / 48_000.0);
        let error = if e.raw_os_error() == Some(ENOSPC) || e.kind() == io::ErrorKind::StorageFull {
            RecordError::DiskFull {
                path: path.to_owned(),
                seconds,
            }
        } else {
            RecordError::Write {
                path: path.to_owned(),
                why: e.to_string(),
            }
        };
        tracing::warn!("recording: {error}");
        let mut s = lock(&self.status);
        if !s.files.iter().any(|f| f.key == key) {
            s.files.push(FileStatus {
                key,
                path: path.to_owned(),
                bytes: 0,
                counts: counts.unwrap_or_default(),
                failed: true,
            });
        }
        s.errors.push(error);
    }

    /// `<name>.ext`, `<name>-<stem>.ext` for a second stem, `<name>-sent.ext` for ours; a
    /// name taken already gets a number.
    fn file_path(&self, key: &StemKey) -> PathBuf {
        // Empty names are told apart before `file_stem`, which would name them "musician".
        let safe = |n: String| (!n.trim().is_empty()).then(|| file_stem(&n));
        let name = self.room.name(key).and_then(safe);
        let base = match (key, name) {
            (StemKey::Local, Some(n)) if !n.is_empty() => format!("{n}-sent"),
            (StemKey::Local, _) => "sent".to_owned(),
            (StemKey::Remote(p, stem), n) => {
                let n = n
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("member-{:08x}", p.0 as u32));
                match self.room.stem_name(key).and_then(safe) {
                    Some(s) if !s.is_empty() => format!("{n}-{s}"),
                    _ if stem.0 == 0 => n,
                    _ => format!("{n}-{}", stem.0),
                }
            }
        };
        let ext = self.format.extension();
        let mut path = self.folder.join(format!("{base}.{ext}"));
        let mut n = 2;
        while path.exists() && n < 1000 {
            path = self.folder.join(format!("{base}-{n}.{ext}"));
            n += 1;
        }
        path
    }
}

/// The decoder output before a sender's first sample: the encoder's lookahead (2.5 ms in
/// the low-delay mode every Echoel Jam encoder runs).
const PRE_SKIP: u16 = 120;

/// Every Opus frame is a whole number of 2.5 ms, so a sender's frames all start on this grid
/// (48 kHz samples) from its first.
const GRID: u64 = 120;

/// `ENOSPC` on every platform Echoel Jam builds for.
const ENOSPC: i32 = 28;

#[cfg(test)]
mod tests;
