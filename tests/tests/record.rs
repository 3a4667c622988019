//! Takes recorded by a headless member over real sockets: the stems of two senders and our
//! own send line up on one timeline and decode with an independent decoder (`opusdec`, from
//! opus-tools), through 5 % loss too; a recording folder that fills up stops the file, never
//! the audio, and what it holds plays.

use std::path::{Path, PathBuf};
use std::process::Command;

use echoel_plugin::engine::analysis::align;
use echoel_plugin::headless::{HeadlessOptions, HeadlessReport};
use echoel_plugin::netem::Impairment;
use echoel_plugin::record::{Format, RecordError, RecordStatus};
use echoel_tests::{musician, network_runtime, one_at_a_time, play_each, via, Rig};

/// Decodes an Ogg Opus file with opusdec (48 kHz, float): its left channel.
fn opusdec(file: &Path) -> Vec<f32> {
    let out = file.with_extension("decoded.wav");
    let status = Command::new("opusdec")
        .args(["--quiet", "--rate", "48000", "--float"])
        .arg(file)
        .arg(&out)
        .status()
        .expect("opusdec runs (apt-get install opus-tools)");
    assert!(status.success(), "opusdec refused {}", file.display());
    read_wav(&out)
}

/// A WAV file's left channel, as far as it reads.
fn read_wav(file: &Path) -> Vec<f32> {
    let r = hound::WavReader::open(file).expect("a WAV file");
    match r.spec().sample_format {
        hound::SampleFormat::Float => r
            .into_samples::<f32>()
            .map_while(Result::ok)
            .step_by(2)
            .collect(),
        hound::SampleFormat::Int => r
            .into_samples::<i32>()
            .map_while(Result::ok)
            .step_by(2)
            .map(|x| x as f32 / 32768.0)
            .collect(),
    }
}

/// How far (samples, signed) the file's audio lies behind what the sender played at the
/// same moment of the take's timeline: the median over half-second windows from 2 s on.
fn placement(sent: &[f32], file: &[f32]) -> Option<i64> {
    const PAD: usize = 960;
    let mut padded = vec![0.0; PAD];
    padded.extend_from_slice(file);
    let window = 12_000;
    let mut lags: Vec<i64> = (4..14)
        .filter_map(|w| {
            let a = w * window;
            let found = align(sent.get(a..a + window)?, padded.get(a..)?, 2 * PAD)?;
            (found.correlation > 0.8).then_some(found.lag_samples as i64 - PAD as i64)
        })
        .collect();
    lags.sort_unstable();
    (lags.len() >= 5).then(|| lags[lags.len() / 2])
}

fn file<'a>(take: &'a RecordStatus, name: &str) -> &'a PathBuf {
    &take
        .files
        .iter()
        .find(|f| f.path.file_name().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no {name} in {take:?}"))
        .path
}

fn report<'a>(reports: &'a [HeadlessReport], name: &str) -> &'a HeadlessReport {
    reports.iter().find(|r| r.name == name).expect("a report")
}

/// Cleo, behind 5 % loss, records ana and ben (straight to the relay) and herself in Ogg
/// Opus: every file decodes with opusdec, and each lies where its sender played it, within a
/// frame (2.5 ms), so the three line up in a DAW.
#[test]
fn stems_of_two_senders_line_up_in_a_take_through_loss() {
    let _one = one_at_a_time();
    let rig = Rig::new(Impairment {
        loss: 0.05,
        ..Impairment::default()
    });
    let room = rig.relay().room("take");
    let folder = tempfile::tempdir().unwrap();
    let seconds = 8.0;
    let cleo = HeadlessOptions {
        record: Some((folder.path().to_owned(), Format::Opus)),
        ..musician(&via(&room, rig.proxy.addr), "cleo", 3, seconds)
    };
    let reports: Vec<HeadlessReport> = play_each(
        vec![
            musician(&room, "ana", 1, seconds),
            musician(&room, "ben", 2, seconds),
            cleo,
        ],
        &network_runtime(),
    )
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let take = match &report(&reports, "cleo").take {
        Some(Ok(take)) => take,
        other => panic!("no take: {other:?}"),
    };
    println!("{take:#?}");
    assert!(take.errors.is_empty(), "{:?}", take.errors);
    assert!(take.folder.ends_with("take-001"));
    let mut lags = Vec::new();
    for (who, name) in [
        ("ana", "ana.opus"),
        ("ben", "ben.opus"),
        ("cleo", "cleo-sent.opus"),
    ] {
        let decoded = opusdec(file(take, name));
        let sent = &report(&reports, who).sent;
        // From the take's start to about its end (the last frames in flight when it stopped).
        assert!(
            decoded.len() as f32 > (seconds - 1.0) * 48_000.0,
            "{name}: {} samples",
            decoded.len()
        );
        let lag =
            placement(sent, &decoded).unwrap_or_else(|| panic!("{name} is not {who}'s audio"));
        println!(
            "{name}: {} samples, lies {lag} samples behind {who}'s playing",
            decoded.len()
        );
        lags.push(lag);
    }
    for lag in &lags {
        assert!(
            lag.abs() <= 120,
            "a stem lies {lag} samples off its sender's time: {lags:?}"
        );
    }
}

/// Mounts a small tmpfs at `at` (root only); `None` where that is not allowed.
fn small_disk(at: &Path, kib: u32, read_only: bool) -> Option<Mounted> {
    let mut opts = format!("size={kib}k");
    if read_only {
        opts.push_str(",ro");
    }
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "echoel-test"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mounted(at.to_owned()))
}

/// Unmounts on drop, also when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A take into a folder that fills up after a second or so: the recording says so plainly,
/// the audio plays on as if nothing happened, and what the file holds plays to where it
/// stopped. A read-only folder is refused at the start, and the jam goes on.
#[test]
fn a_recording_folder_that_fills_up_stops_the_file_not_the_audio() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (full, ro) = (dir.path().join("full"), dir.path().join("ro"));
    std::fs::create_dir_all(&full).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    // 32-bit stereo WAV is 384 kB a second a stem: 2 MB fills in the first two seconds.
    let Some(_full) = small_disk(&full, 2048, false) else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let _ro = small_disk(&ro, 64, true).expect("a read-only tmpfs mounts where a tmpfs does");
    let rig = Rig::new(Impairment::default());
    let room = rig.relay().room("full");
    let seconds = 5.0;
    let recording = |name: &str, voice, folder: &Path| HeadlessOptions {
        record: Some((folder.to_owned(), Format::Wav)),
        ..musician(&room, name, voice, seconds)
    };
    let reports: Vec<HeadlessReport> = play_each(
        vec![
            musician(&room, "ana", 1, seconds),
            recording("ben", 2, &full),
            recording("cleo", 3, &ro),
        ],
        &network_runtime(),
    )
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let ben = report(&reports, "ben");
    let take = match &ben.take {
        Some(Ok(take)) => take,
        other => panic!("no take: {other:?}"),
    };
    println!("{take:#?}");
    let full_error = take
        .errors
        .iter()
        .find(|e| matches!(e, RecordError::DiskFull { .. }))
        .unwrap_or_else(|| panic!("the full disk went unsaid: {:?}", take.errors));
    assert!(full_error
        .to_string()
        .contains("the recording folder is full"));
    // The packets kept beside the WAV files for filling their gaps do not outlive them.
    let hidden: Vec<_> = std::fs::read_dir(&take.folder)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(hidden.is_empty(), "left behind: {hidden:?}");
    // What each stopped file holds reads to its end and is ana's audio (or ben's own).
    let ana_file = take
        .files
        .iter()
        .find(|f| f.path.file_name().is_some_and(|n| n == "ana.wav"))
        .expect("ana's file");
    let held = read_wav(&ana_file.path);
    println!("ana.wav holds {} samples", held.len());
    assert!(
        held.len() >= 24_000,
        "the file lost what it held before the disk filled"
    );
    let spec = hound::WavReader::open(&ana_file.path).unwrap();
    assert_eq!(
        spec.len() as usize,
        2 * held.len(),
        "the header says what the file holds"
    );
    // Audio unaffected: ben heard ana and cleo throughout. A writer that blocked the audio
    // or the network would cost hundreds of frames; a loaded machine costs a few (up to 3 %).
    for rec in ben.recordings.values() {
        let (decoded, concealed) = rec.frames_between(1.0, seconds - 0.5);
        println!(
            "ben heard {}: {decoded} decoded, {concealed} concealed",
            rec.name
        );
        assert!(
            decoded > 1_300 && concealed * 100 <= 3 * decoded,
            "{}: {decoded}/{concealed}",
            rec.name
        );
    }
    // The read-only folder: refused plainly at the start; cleo played on.
    let cleo = report(&reports, "cleo");
    match &cleo.take {
        Some(Err(e @ RecordError::NotWritable { .. })) => {
            assert!(
                e.to_string()
                    .contains("cannot write to the recording folder"),
                "{e}"
            )
        }
        other => panic!("the read-only folder went unsaid: {other:?}"),
    }
    assert_eq!(
        cleo.recordings.len(),
        2,
        "cleo heard {:?}",
        cleo.recordings.keys()
    );
}
