//! `echoel peer`: a headless musician.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use echoel_net::session::PortMapStatus;
use echoel_plugin::bridge::network_runtime;
use echoel_plugin::engine::{CodecSettings, FrameDuration, INTERNAL_RATE_HZ};
use echoel_plugin::headless::{
    self, measure_lag, DocEdit, HeadlessOptions, LossProtection, Source,
};
use echoel_plugin::record::{Format, RecordStatus};

/// Options of `echoel peer`.
#[derive(clap::Args)]
pub struct PeerArgs {
    /// The room's invite line (echoel://…).
    #[arg(long)]
    invite: String,
    /// Play this WAV file (any rate, mixed to mono).
    #[arg(long, conflicts_with = "tone")]
    input: Option<PathBuf>,
    /// Play a sine at this frequency in Hz.
    #[arg(long)]
    tone: Option<f32>,
    /// Send back what you hear (a latency partner) instead of a signal.
    #[arg(long, conflicts_with_all = ["input", "tone"])]
    echo: bool,
    /// Hear the room and send nothing; the others see us as listening.
    #[arg(long, conflicts_with_all = ["input", "tone", "echo"])]
    listen: bool,
    /// Send this WAV file as a named stem, NAME=FILE (repeatable): several stems go as one
    /// person, each on a track of its own at the others'.
    #[arg(long, value_name = "NAME=FILE", conflicts_with_all = ["input", "tone", "echo", "listen"])]
    stem: Vec<String>,
    /// Join as the person whose member key for this room is kept in DIR (made there the first
    /// time); without DIR, in the folder the plugin keeps it in, so that this peer and your
    /// plugins are one person in the room. Without the option: a new person each run.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    identity: Option<PathBuf>,
    /// Record a take into a new folder under this one (take-001, …): each other musician's
    /// stem, and what we send, each to a file of its own, placed by media time so that stems
    /// from different studios line up.
    #[arg(long)]
    record: Option<PathBuf>,
    /// The take's file format: wav (32-bit float) or opus (Ogg Opus, the packets as they
    /// came, never encoded twice).
    #[arg(long, default_value = "wav", requires = "record")]
    format: Format,
    /// How long to play.
    #[arg(long, default_value_t = 10.0)]
    seconds: f32,
    /// The name others see.
    #[arg(long, default_value = "headless")]
    name: String,
    /// Send everything through the relay.
    #[arg(long)]
    force_relay: bool,
    /// Never ask the home router to forward a port to us (PCP, NAT-PMP, UPnP).
    #[arg(long)]
    no_port_mapping: bool,
    /// Earlier frames each packet always carries (0–2): the others fill lost packets from the
    /// next one, for up to that much more bitrate. Without it, by the loss the others report:
    /// one from 0.5 %, two from 5 %.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    redundancy: Option<u8>,
    /// Proposes this tempo (BPM) to the room's session once in.
    #[arg(long)]
    set_tempo: Option<f64>,
    /// Adds a track with this name to the session (repeatable).
    #[arg(long)]
    add_track: Vec<String>,
    /// Appends this text to the session's chord chart.
    #[arg(long)]
    chart_append: Option<String>,
    /// Prints the session document as JSON at exit.
    #[arg(long)]
    print_session: bool,
    /// Writes the session document (automerge binary) to FILE at exit.
    #[arg(long, value_name = "FILE")]
    save_session: Option<PathBuf>,
    /// Opus frame size in ms: 2.5, 5, 10 or 20.
    #[arg(long, default_value_t = 2.5)]
    frame_ms: f32,
    /// Opus bitrate in kbit/s (48–256).
    #[arg(long, default_value_t = 128)]
    bitrate: u32,
}

/// Frame size from milliseconds.
pub fn frame_from_ms(ms: f32) -> anyhow::Result<FrameDuration> {
    [
        FrameDuration::Ms2_5,
        FrameDuration::Ms5,
        FrameDuration::Ms10,
        FrameDuration::Ms20,
    ]
    .into_iter()
    .find(|f| (f.millis() - ms).abs() < 0.01)
    .ok_or_else(|| anyhow!("--frame-ms must be 2.5, 5, 10 or 20"))
}

pub fn run(args: PeerArgs) -> anyhow::Result<()> {
    let invite = args.invite.parse().map_err(|e| anyhow!("{e}"))?;
    anyhow::ensure!(
        (0.5..=36_000.0).contains(&args.seconds),
        "--seconds must be between 0.5 and 36000"
    );
    anyhow::ensure!(
        (48..=256).contains(&args.bitrate),
        "--bitrate must be between 48 and 256 kbit/s"
    );
    let source = match (&args.input, args.tone, args.echo) {
        (_, _, true) => Source::Echo,
        (Some(path), _, _) => Source::Samples(crate::wav::read_mono_48k(path)?),
        (None, Some(hz), _) => {
            anyhow::ensure!(
                (20.0..=20_000.0).contains(&hz),
                "--tone must be between 20 and 20000 Hz"
            );
            Source::Tone(hz)
        }
        (None, None, false) => Source::Voice(1),
    };
    if let Some(dir) = &args.record {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let stems = args
        .stem
        .iter()
        .map(|s| {
            let (name, file) = s
                .split_once('=')
                .filter(|(n, f)| !n.trim().is_empty() && !f.is_empty())
                .ok_or_else(|| anyhow!("--stem wants NAME=FILE, not {s:?}"))?;
            let samples = crate::wav::read_mono_48k(std::path::Path::new(file))?;
            Ok((name.trim().to_owned(), Source::Samples(samples)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(stems.len() <= 16, "at most 16 stems, not {}", stems.len());
    let opts = HeadlessOptions {
        invite,
        name: args.name.clone(),
        source,
        seconds: args.seconds,
        force_relay: args.force_relay,
        port_mapping: !args.no_port_mapping,
        protection: args
            .redundancy
            .map_or(LossProtection::Auto, LossProtection::Frames),
        edits: args
            .set_tempo
            .map(DocEdit::SetTempo)
            .into_iter()
            .chain(args.add_track.iter().cloned().map(DocEdit::AddTrack))
            .chain(args.chart_append.clone().map(DocEdit::ChartAppend))
            .collect(),
        codec: CodecSettings {
            frame: frame_from_ms(args.frame_ms)?,
            bitrate_bps: args.bitrate * 1000,
            ..CodecSettings::default()
        },
        codec_change: None,
        start_at: None,
        record: args.record.clone().map(|dir| (dir, args.format)),
        listen: args.listen,
        stems,
        identity: match &args.identity {
            Some(dir) if dir.as_os_str().is_empty() => Some(
                echoel_net::identity_store::IdentityStore::user()
                    .ok_or_else(|| {
                        anyhow!("this system names no data folder; give --identity DIR")
                    })?
                    .folder()
                    .to_owned(),
            ),
            other => other.clone(),
        },
    };
    let report = headless::run(opts, network_runtime().handle())?;
    println!(
        "{}: sent {} frames, {} datagrams",
        report.name, report.engine.packets_sent, report.datagrams_sent
    );
    let (forged, replayed, unkeyed) = report.refused;
    println!(
        "refused datagrams: {forged} forged, {replayed} replayed, {unkeyed} without a key yet; \
         {} second copies dropped (the relay stands by for direct paths)",
        report.duplicates
    );
    if report.recordings.is_empty() {
        println!("heard nobody — is anyone else in the room?");
    }
    for rec in report.recordings.values() {
        let path = if rec.direct { "direct" } else { "relay" };
        let who = rec
            .stem
            .as_ref()
            .map_or_else(|| rec.name.clone(), |s| format!("{}/{s}", rec.name));
        print!("  {who:<16} {path:>6}");
        if let Some(s) = rec.stream {
            print!(
                "  {} frames, {} concealed ({} lost, {} late), {} skipped, buffer {:.2} ms, \
                 clock {:+.1} ppm",
                s.frames_decoded,
                s.frames_concealed,
                s.packets_lost,
                s.packets_late,
                s.packets_dropped,
                f64::from(s.depth_samples) / 48.0,
                s.drift_ppm
            );
        }
        if !args.echo {
            // A partner running --echo returns our own signal: its lag is the round trip.
            if let Some(a) =
                measure_lag(&report.sent, &rec.samples, 400.0).filter(|a| a.correlation > 0.5)
            {
                print!(
                    ", round trip {:.2} ms (correlation {:.3})",
                    a.lag_ms(INTERNAL_RATE_HZ),
                    a.correlation
                );
            }
        }
        println!();
    }
    // One musician's plugins in several processes share a member key: one person.
    let mut people: Vec<(echoel_net::crypto::MemberPublic, &str, usize)> = Vec::new();
    for rec in report.recordings.values() {
        let Some(key) = rec.member else { continue };
        match people.iter_mut().find(|p| p.0 == key) {
            Some(p) => p.2 += 1,
            None => people.push((key, &rec.name, 1)),
        }
    }
    for (_, name, streams) in people.iter().filter(|p| p.2 > 1) {
        println!("  {name} is one person with {streams} streams (plugins or stems)");
    }
    match &report.take {
        Some(Ok(take)) => print_take(take),
        Some(Err(e)) => println!("not recorded: {e}"),
        None => {}
    }
    for rec in report.recordings.values() {
        println!("path to {}: {}", rec.name, rec.route);
    }
    if report.port_mapping != PortMapStatus::Off {
        println!("port mapping: {}", report.port_mapping.describe());
    }
    if args.print_session {
        println!("{}", report.session_json);
    }
    if let Some(file) = &args.save_session {
        std::fs::write(file, &report.session_doc)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// What a take holds, file by file, and what went wrong.
fn print_take(take: &RecordStatus) {
    println!("recorded {}:", take.folder.display());
    for f in &take.files {
        let c = f.counts;
        let name = f.path.file_name().unwrap_or_default().to_string_lossy();
        print!(
            "  {name:<24} {:>7.1} s  {:>6.1} MB  {} frames, {:.2} s of gaps ({:.2} s filled from the sender)",
            c.samples as f64 / 48_000.0,
            f.bytes as f64 / 1e6,
            c.frames,
            c.gap_samples as f64 / 48_000.0,
            c.filled_samples as f64 / 48_000.0,
        );
        println!("{}", if f.failed { "  (stopped short)" } else { "" });
    }
    if take.dropped > 0 {
        println!(
            "  {} frames the recorder could not keep up with",
            take.dropped
        );
    }
    for e in &take.errors {
        println!("  {e}");
    }
}
