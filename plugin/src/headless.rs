//! A headless musician: the engine on a real-time paced thread instead of a DAW, joined to a
//! room through the same bridge the plugin uses. Sends a signal (or echoes what it hears),
//! records each remote musician separately, and reports what happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use echoel_engine::{
    CodecSettings, Engine, EngineConfig, EngineError, EngineParams, StatsSnapshot, StemTap,
    StreamId, StreamSnapshot, INTERNAL_RATE_HZ,
};
use echoel_net::identity_store::{IdentityError, IdentityStore};
use echoel_net::presence::{stem_name, Presence};
pub use echoel_net::session::{LossProtection, ProtectionStatus};
use echoel_net::session::{
    PortMapStatus, RelayWhy, Route, SessionConfig, SessionError, SessionState, SessionStatus,
};
use echoel_net::wire::{Role, StemId};
use echoel_net::{Invite, RotationPolicy};
use thiserror::Error;

use crate::bridge::Bridge;
use crate::headless_stems::{ExtraStems, Signal};
use crate::record::{Format, RecordError, RecordStatus};

/// Host block of the headless peer: 32 frames (0.67 ms), what a low-latency studio runs.
pub const BLOCK_FRAMES: usize = 32;

/// What the peer plays into the room.
#[derive(Debug, Clone)]
pub enum Source {
    /// The test signal's voice `n` (distinct per musician, see [`echoel_engine::signal::TestSignal::voice`]).
    Voice(u32),
    /// A sine at this frequency.
    Tone(f32),
    /// These mono 48 kHz samples, then silence.
    Samples(Vec<f32>),
    /// Whatever it hears: a latency partner.
    Echo,
}

/// How to run a headless peer.
#[derive(Debug, Clone)]
pub struct HeadlessOptions {
    /// The room.
    pub invite: Invite,
    /// Name shown to others.
    pub name: String,
    /// What to play.
    pub source: Source,
    /// How long to play.
    pub seconds: f32,
    /// Never try direct paths.
    pub force_relay: bool,
    /// Ask the home router to forward a port to us.
    pub port_mapping: bool,
    /// Loss protection: earlier frames each datagram also carries, by the loss the others
    /// report (automatic, as the plugin does) or forced.
    pub protection: LossProtection,
    /// Edits made to the session document once in the room.
    pub edits: Vec<DocEdit>,
    /// Encoder settings.
    pub codec: CodecSettings,
    /// Other encoder settings from this many seconds in (a musician changing Frame Size or
    /// Bitrate mid-song).
    pub codec_change: Option<(f32, CodecSettings)>,
    /// When audio starts; several peers given the same instant share one timeline, so their
    /// recordings' lags are comparable.
    pub start_at: Option<Instant>,
    /// Record a take into a new folder under this one, from the start instant on.
    pub record: Option<(std::path::PathBuf, Format)>,
    /// Hear the room and send nothing.
    pub listen: bool,
    /// Named stems, sent as one person: the first in place of `source` (through the engine),
    /// the others beside it (stems 1, 2, …). Empty: `source` alone, unnamed.
    pub stems: Vec<(String, Source)>,
    /// Keep this room's member key in this folder: peers given one folder are one person in
    /// the room, each a participant of its own. `None`: a new person each run.
    pub identity: Option<std::path::PathBuf>,
}

impl HeadlessOptions {
    /// A musician playing [`Source::Voice`] `voice` for `seconds` through the relay, with the
    /// default encoder settings.
    pub fn voice(invite: &Invite, name: &str, voice: u32, seconds: f32) -> Self {
        Self {
            invite: invite.clone(),
            name: name.to_owned(),
            source: Source::Voice(voice),
            seconds,
            force_relay: true,
            port_mapping: true,
            protection: LossProtection::Frames(0),
            edits: Vec::new(),
            codec: CodecSettings::default(),
            codec_change: None,
            start_at: None,
            record: None,
            listen: false,
            stems: Vec::new(),
            identity: None,
        }
    }
}

/// Runs musicians together, each on a thread of its own, from one start instant `start_in`
/// from now (the timeline of every recording starts there), and returns their reports in
/// order.
pub fn play_together(
    band: Vec<HeadlessOptions>,
    start_in: Duration,
    runtime: &tokio::runtime::Handle,
) -> Vec<Result<HeadlessReport, HeadlessError>> {
    let start_at = Instant::now() + start_in;
    let threads: Vec<_> = band
        .into_iter()
        .map(|opts| {
            let opts = HeadlessOptions {
                start_at: Some(start_at),
                ..opts
            };
            let handle = runtime.clone();
            std::thread::spawn(move || run(opts, &handle))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap_or(Err(HeadlessError::Crashed)))
        .collect()
}

/// An edit of the room's session document, made from the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum DocEdit {
    /// Propose a tempo (BPM).
    SetTempo(f64),
    /// Add a track with this name, owned by us.
    AddTrack(String),
    /// Append text to the chord chart.
    ChartAppend(String),
}

/// One remote musician as recorded by a peer.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Their name.
    pub name: String,
    /// Their member key: recordings with one key are one person's (their plugins in several
    /// processes).
    pub member: Option<echoel_net::crypto::MemberPublic>,
    /// The stem's name, when they named their stems.
    pub stem: Option<String>,
    /// Left channel at 48 kHz from our start instant (silence until their first packet).
    pub samples: Vec<f32>,
    /// How their audio reached us.
    pub direct: bool,
    /// The way to them, and why, as last seen while playing.
    pub route: Route,
    /// Their stream's counters in our engine.
    pub stream: Option<StreamSnapshot>,
    /// Their stream's counters through the run, every [`TIMELINE_BLOCKS`] blocks.
    pub timeline: Vec<TimelinePoint>,
}

/// Blocks between two [`TimelinePoint`]s (43 ms).
pub const TIMELINE_BLOCKS: usize = 64;

/// A remote stream's counters at one moment of a headless run.
#[derive(Debug, Clone, Copy)]
pub struct TimelinePoint {
    /// Seconds since the run's start instant.
    pub at_s: f32,
    /// Frames decoded so far.
    pub decoded: u64,
    /// Frames concealed so far.
    pub concealed: u64,
    /// Packets that never came (nor were recovered) in time to play, so far: what the line
    /// took, where `concealed` also counts waits for packets that came late.
    pub lost: u64,
    /// Jitter-buffer depth, ms.
    pub depth_ms: f32,
    /// A direct path to its sender carried lately (its route was direct, not quiet).
    pub direct: bool,
}

impl Recording {
    /// Median jitter-buffer depth (ms) over the timeline points from `from_s` on.
    pub fn median_depth_ms(&self, from_s: f32) -> Option<f32> {
        let mut d: Vec<f32> = self
            .timeline
            .iter()
            .filter(|p| p.at_s >= from_s)
            .map(|p| p.depth_ms)
            .collect();
        d.sort_by(f32::total_cmp);
        d.get(d.len() / 2).copied()
    }

    /// Frames (decoded, concealed) between two moments of the timeline.
    pub fn frames_between(&self, from_s: f32, to_s: f32) -> (u64, u64) {
        let at = |t: f32| {
            self.timeline
                .iter()
                .rev()
                .find(|p| p.at_s <= t)
                .map_or((0, 0), |p| (p.decoded, p.concealed))
        };
        let (d0, c0) = at(from_s);
        let (d1, c1) = at(to_s);
        (d1.saturating_sub(d0), c1.saturating_sub(c0))
    }
}

/// How long a finished run waits for its router to let go of the port it forwarded to us.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// What a headless run produced.
#[derive(Debug)]
pub struct HeadlessReport {
    /// Our name.
    pub name: String,
    /// What we sent (left channel, 48 kHz).
    pub sent: Vec<f32>,
    /// Each remote musician, by engine stream (stable across reconnections).
    pub recordings: BTreeMap<u16, Recording>,
    /// Engine counters.
    pub engine: StatsSnapshot,
    /// Session state at the end.
    pub status: SessionStatus,
    /// Bytes our UDP socket sent, all paths, for the on-wire bitrate.
    pub wire_tx_bytes: u64,
    /// Audio datagrams sent (one per path).
    pub datagrams_sent: u64,
    /// Datagrams refused as forged, replayed or unkeyed.
    pub refused: (u64, u64, u64),
    /// Lost frames recovered from the redundancy of later datagrams.
    pub recovered: u64,
    /// Second copies dropped: frames both a direct path and the relay's standby brought.
    pub duplicates: u64,
    /// Our loss protection through the run (seconds since the start instant), every
    /// [`TIMELINE_BLOCKS`] blocks.
    pub protection: Vec<(f32, ProtectionStatus)>,
    /// Times the session joined the room (1 when it never had to reconnect).
    pub joins: u64,
    /// What came of asking our router to forward a port to us.
    pub port_mapping: PortMapStatus,
    /// The session document at the end, as JSON.
    pub session_json: String,
    /// The session document at the end (automerge binary).
    pub session_doc: Vec<u8>,
    /// The take recorded, or why none could start.
    pub take: Option<Result<RecordStatus, RecordError>>,
}

/// A headless run failed.
#[derive(Debug, Error)]
pub enum HeadlessError {
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The network could not start.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The relay refused us.
    #[error("{0}")]
    Refused(String),
    /// This room's member key could not be had.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The musician's thread panicked.
    #[error("a headless musician stopped unexpectedly")]
    Crashed,
}

/// Collects each stream's stem, padded to our timeline.
struct Recorder {
    position: usize,
    tracks: BTreeMap<StreamId, Vec<f32>>,
    capacity: usize,
}

impl StemTap for Recorder {
    fn stem(&mut self, stream: StreamId, samples: &[f32]) {
        let capacity = self.capacity;
        let track = self
            .tracks
            .entry(stream)
            .or_insert_with(|| Vec::with_capacity(capacity));
        // This thread paces itself; it is not a host's audio thread, so growing is allowed.
        track.resize(self.position, 0.0);
        track.extend(samples.iter().step_by(2));
    }
}

/// Runs a headless peer to completion on the calling thread, with its network session on
/// `runtime`.
pub fn run(
    opts: HeadlessOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<HeadlessReport, HeadlessError> {
    let (mut engine, link) = Engine::new(EngineConfig {
        sample_rate_hz: INTERNAL_RATE_HZ,
        host_channels: 2,
        max_block_frames: BLOCK_FRAMES,
    })?;
    let identity = match &opts.identity {
        Some(folder) => Some(Arc::new(IdentityStore::new(folder).key_for(&opts.invite)?)),
        None => None,
    };
    let bridge = Bridge::start(
        link,
        SessionConfig {
            invite: opts.invite.clone(),
            name: opts.name.clone(),
            force_relay: opts.force_relay,
            port_mapping: opts.port_mapping,
            rotation: RotationPolicy::default(),
            initial_doc: None,
            role: if opts.listen {
                Role::Listener
            } else {
                Role::Performer
            },
            identity,
        },
        runtime,
        None,
    )?;
    let session = bridge
        .session()
        .ok_or_else(|| SessionError::Setup("the session did not start".into()))?;
    session.set_loss_protection(opts.protection);
    let mut params = EngineParams {
        monitor_gain: 0.0,
        codec: opts.codec,
        ..EngineParams::default()
    };
    let change_at_block = opts
        .codec_change
        .map(|(s, codec)| ((s * INTERNAL_RATE_HZ as f32) as usize / BLOCK_FRAMES, codec));
    let total_blocks = (opts.seconds * INTERNAL_RATE_HZ as f32) as usize / BLOCK_FRAMES;
    let total_frames = total_blocks * BLOCK_FRAMES;
    let mut recorder = Recorder {
        position: 0,
        tracks: BTreeMap::new(),
        capacity: total_frames,
    };
    let main_source = opts.stems.first().map_or(&opts.source, |s| &s.1).clone();
    let mut main_signal = Signal::new(&main_source);
    let extra_sources: Vec<Source> = opts.stems.iter().skip(1).map(|s| s.1.clone()).collect();
    let mut extra = ExtraStems::new(&extra_sources, opts.codec)?;
    let mut sent = Vec::with_capacity(total_frames);
    let (mut l, mut r) = (vec![0.0f32; BLOCK_FRAMES], vec![0.0f32; BLOCK_FRAMES]);
    // Participant → (name, direct path?, route, member key), refreshed as the room changes.
    type Who = (
        String,
        bool,
        Route,
        Option<echoel_net::crypto::MemberPublic>,
    );
    let mut names: BTreeMap<u64, Who> = BTreeMap::new();
    let period = Duration::from_secs_f64(BLOCK_FRAMES as f64 / f64::from(INTERNAL_RATE_HZ));
    let start = opts.start_at.unwrap_or_else(Instant::now);
    let mut edits_made = false;
    let mut timelines: BTreeMap<StreamId, Vec<TimelinePoint>> = BTreeMap::new();
    let mut protection = Vec::new();
    let mut port_mapping = PortMapStatus::Off;
    let mut take = None;
    let recording = bridge.recording_flag();
    for block in 0..total_blocks {
        let deadline = start + period * block as u32;
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let (0, Some((folder, format))) = (block, &opts.record) {
            // At block 0's deadline: a late wake-up must not move the take's timeline.
            take = Some(bridge.start_recording_at(folder, *format, &opts.name, deadline));
        }
        // As the plugin does: a recorded take's buffers hold their delay.
        params.hold_depth = recording.load(std::sync::atomic::Ordering::Relaxed);
        let pos = block * BLOCK_FRAMES;
        // An echo plays the previous block's output (what we heard) as this block's input.
        if !matches!(main_source, Source::Echo) {
            main_signal.fill(pos, &mut l);
            r.copy_from_slice(&l);
        }
        if let Some((at, codec)) = change_at_block {
            if block == at {
                params.codec = codec;
            }
        }
        sent.extend_from_slice(&l);
        recorder.position = pos;
        engine.process_tapped(&mut [&mut l[..], &mut r[..]], &params, &mut recorder);
        extra.block(pos, BLOCK_FRAMES, &session);
        if !matches!(main_source, Source::Echo) {
            l.fill(0.0);
            r.fill(0.0);
        }
        if block % TIMELINE_BLOCKS == 0 {
            let at_s = (pos as f64 / f64::from(INTERNAL_RATE_HZ)) as f32;
            for st in engine.stats().stream_snapshots() {
                let direct = bridge
                    .participant_of(st.stream)
                    .and_then(|p| names.get(&p.0))
                    .is_some_and(|(_, _, route, _)| matches!(route, Route::Direct { .. }));
                timelines.entry(st.stream).or_default().push(TimelinePoint {
                    at_s,
                    decoded: st.frames_decoded,
                    concealed: st.frames_concealed,
                    lost: st.packets_lost,
                    depth_ms: st.depth_samples as f32 / 48.0,
                    direct,
                });
            }
            protection.push((at_s, session.loss_protection()));
            let status = session.status();
            let state = status.state;
            // The last word on it while in the room: leaving turns it off.
            if status.port_mapping != PortMapStatus::Off {
                port_mapping = status.port_mapping;
            }
            if let Some(why) = state.stopped_because() {
                return Err(HeadlessError::Refused(why.to_owned()));
            }
            if !edits_made && matches!(state, SessionState::Joined { .. }) {
                edits_made = true;
                apply_edits(&session, &opts.name, &opts.edits);
                if !opts.stems.is_empty() {
                    session.set_presence(Presence {
                        name: opts.name.clone(),
                        stems: (0..)
                            .map(StemId)
                            .zip(opts.stems.iter().map(|s| s.0.clone()))
                            .collect(),
                        ..Presence::default()
                    });
                }
            }
            // The way each member came until the last half second: one that finishes first
            // closes its paths while we still play.
            let ending = pos + INTERNAL_RATE_HZ as usize / 2 >= total_frames;
            for m in status.members {
                let direct = m.path == echoel_net::session::Path::Direct;
                let seen = names.contains_key(&m.info.participant.0);
                if !(ending && seen) {
                    let who = (m.info.name, direct, m.route, Some(m.info.member));
                    names.insert(m.info.participant.0, who);
                }
            }
        }
    }
    let status = session.status();
    // Only members not seen while playing: at the end, peers that finished first are already
    // closing their direct paths, which is not the path their audio took.
    for m in &status.members {
        let direct = m.path == echoel_net::session::Path::Direct;
        names.entry(m.info.participant.0).or_insert_with(|| {
            (
                m.info.name.clone(),
                direct,
                m.route.clone(),
                Some(m.info.member),
            )
        });
    }
    let streams = engine.stats().stream_snapshots();
    let presence = session.presence();
    let recordings = recorder
        .tracks
        .into_iter()
        .filter(|(id, _)| *id != echoel_engine::LOOPBACK_STREAM)
        .map(|(id, mut samples)| {
            samples.resize(total_frames, 0.0);
            let (name, direct, route, member) = bridge
                .participant_of(id)
                .and_then(|p| names.get(&p.0).cloned())
                .unwrap_or_else(|| {
                    (
                        format!("stream-{}", id.0),
                        false,
                        Route::Relay(RelayWhy::Trying),
                        None,
                    )
                });
            let stream = streams.iter().copied().find(|s| s.stream == id);
            let stem = bridge
                .stem_of(id)
                .and_then(|(p, stem)| stem_name(&presence, p, stem));
            (
                id.0,
                Recording {
                    name,
                    member,
                    stem,
                    samples,
                    direct,
                    route,
                    stream,
                    timeline: timelines.remove(&id).unwrap_or_default(),
                },
            )
        })
        .collect();
    let c = session.counters();
    use std::sync::atomic::Ordering::Relaxed;
    // The files close whole before the report says what they hold.
    let take = take.map(|t| t.map(|()| bridge.stop_recording().unwrap_or_default()));
    let report = HeadlessReport {
        name: opts.name,
        sent,
        recordings,
        engine: engine.stats().snapshot(),
        status,
        wire_tx_bytes: session.wire_tx().0,
        datagrams_sent: c.sent.load(Relaxed),
        refused: (
            c.forged.load(Relaxed),
            c.replayed.load(Relaxed),
            c.unkeyed.load(Relaxed),
        ),
        recovered: c.recovered.load(Relaxed),
        duplicates: c.duplicates.load(Relaxed),
        protection,
        joins: c.joins.load(Relaxed),
        port_mapping,
        session_json: session.read_doc(|d| d.to_json()),
        session_doc: session.read_doc(|d| d.save()),
        take,
    };
    // Our caller may end the process or its runtime next: the router is told first.
    drop(bridge);
    session.wait_port_mapping_released(RELEASE_WAIT);
    Ok(report)
}

/// Makes the command line's document edits, logging any the document refuses.
fn apply_edits(session: &echoel_net::session::SessionHandle, me: &str, edits: &[DocEdit]) {
    for edit in edits {
        let done = session.edit_doc(|doc| match edit {
            DocEdit::SetTempo(bpm) => doc.set_tempo(*bpm),
            DocEdit::AddTrack(name) => doc.add_track(name, me, "").map(|_| ()),
            DocEdit::ChartAppend(text) => doc.chart_append(text),
        });
        if let Err(e) = done {
            tracing::warn!("session edit {edit:?} refused: {e}");
        }
    }
}

/// Latency of `heard` behind `sent` (same timeline, 48 kHz) in steady state, once keys and the
/// jitter buffer have settled: the last second that `sent` and `max_lag_ms` leave room for is
/// cut into sixteen windows, each aligned on its own. Windows whose lags agree within a quarter
/// millisecond vote together; the largest group wins (on a tie, the later delay: the one the
/// buffer settled on) and its best-correlated window is returned. An adaptive buffer may add
/// delay at any moment (a late packet); a window that straddles that step finds an in-between
/// lag with a poor match, and is outvoted instead of spoiling the whole measurement. Windows
/// are short (62.5 ms) because the buffer also slews its delay by up to 1 ms a second: within
/// a window that moves the lag by at most 3 samples.
pub fn measure_lag(
    sent: &[f32],
    heard: &[f32],
    max_lag_ms: f32,
) -> Option<echoel_engine::analysis::Alignment> {
    const WINDOWS: usize = 16;
    let rate = INTERNAL_RATE_HZ as usize;
    let max_lag = (max_lag_ms / 1000.0 * rate as f32) as usize;
    let same_lag = rate / 4000;
    // Leave the lag and a quarter second of tail (the last packets in flight) at the end.
    let end = sent
        .len()
        .min(heard.len())
        .saturating_sub(max_lag + rate / 4);
    let start = end.saturating_sub(rate).max(rate / 2);
    let window = end.saturating_sub(start) / WINDOWS;
    if window < rate / 80 {
        return None;
    }
    let found: Vec<_> = (0..WINDOWS)
        .filter_map(|i| {
            let a = start + i * window;
            echoel_engine::analysis::align(&sent[a..a + window], &heard[a..], max_lag)
        })
        .collect();
    let votes = |lag: usize| {
        found
            .iter()
            .filter(|b| b.lag_samples.abs_diff(lag) <= same_lag)
            .count()
    };
    let winner = found
        .iter()
        .max_by_key(|a| (votes(a.lag_samples), a.lag_samples))?
        .lag_samples;
    found
        .into_iter()
        .filter(|a| a.lag_samples.abs_diff(winner) <= same_lag)
        .max_by(|a, b| a.correlation.total_cmp(&b.correlation))
}

/// A file-system-safe version of a musician's name.
pub fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if s.is_empty() {
        "musician".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echoel_engine::signal::TestSignal;

    /// `sent` delayed by `first` samples, then by `second` from `step_at` on: an adaptive buffer
    /// that grew once.
    fn heard_with_step(sent: &[f32], first: usize, second: usize, step_at: usize) -> Vec<f32> {
        (0..sent.len())
            .map(|i| {
                let lag = if i < step_at { first } else { second };
                i.checked_sub(lag).map_or(0.0, |j| sent[j])
            })
            .collect()
    }

    #[test]
    fn a_delay_step_anywhere_in_the_measured_second_does_not_spoil_the_match() {
        let rate = INTERNAL_RATE_HZ as usize;
        let sent = TestSignal::voice(INTERNAL_RATE_HZ, 2).take_mono(rate * 2);
        // The measured second is [0.5 s, 1.5 s) of a 2 s take with a 250 ms max lag.
        for step_ms in [550, 800, 1000, 1180, 1400] {
            let heard = heard_with_step(&sent, 312, 365, step_ms * rate / 1000);
            let a = measure_lag(&sent, &heard, 250.0).expect("aligned");
            assert!(a.correlation > 0.99, "step at {step_ms} ms: {a:?}");
            assert!(
                [312, 365].contains(&a.lag_samples),
                "step at {step_ms} ms: {a:?}"
            );
        }
        // Two quick steps (312 → 365 → 420 samples): the delay held longest is reported, and
        // the window that straddles a step does not speak for it.
        let twice: Vec<f32> = heard_with_step(&sent, 312, 365, rate * 105 / 100)
            .iter()
            .zip(heard_with_step(&sent, 365, 420, rate * 125 / 100))
            .enumerate()
            .map(|(i, (&a, b))| if i < rate * 125 / 100 { a } else { b })
            .collect();
        let a = measure_lag(&sent, &twice, 250.0).expect("aligned");
        assert!(a.correlation > 0.99 && a.lag_samples == 312, "{a:?}");
        // Mostly the later delay: the settled one is reported.
        let heard = heard_with_step(&sent, 312, 365, rate * 3 / 4);
        assert_eq!(measure_lag(&sent, &heard, 250.0).unwrap().lag_samples, 365);
    }

    #[test]
    fn another_voice_is_no_match() {
        let rate = INTERNAL_RATE_HZ as usize;
        let sent = TestSignal::voice(INTERNAL_RATE_HZ, 1).take_mono(rate * 2);
        let other = TestSignal::voice(INTERNAL_RATE_HZ, 2).take_mono(rate * 2);
        let a = measure_lag(&sent, &other, 250.0).expect("both have signal");
        assert!(a.correlation < 0.5, "{a:?}");
    }
}
