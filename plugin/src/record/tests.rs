//! Takes recorded from scripted frames: placement by media time, gaps, the folder's errors.

use super::*;
use echoel_engine::codec::FrameEncoder;
use echoel_engine::CodecSettings;

/// A room of fixed names and round trips.
struct Names;

impl Room for Names {
    fn name(&self, key: &StemKey) -> Option<String> {
        match key {
            StemKey::Local => Some("me".into()),
            StemKey::Remote(p, _) if p.0 == 1 => Some("ana".into()),
            StemKey::Remote(..) => None,
        }
    }
    fn rtt(&self, key: &StemKey) -> Option<Duration> {
        (*key != StemKey::Local).then_some(Duration::from_millis(2))
    }
}

const ANA: StemKey = StemKey::Remote(ParticipantId(1), StemId(0));

/// A 440 Hz tone's frames as our encoder makes them: (media time, packet), 2.5 ms each.
fn tone(seconds: f64) -> Vec<(u64, Vec<u8>)> {
    let mut enc = FrameEncoder::new(CodecSettings::default()).unwrap();
    let n = 120;
    let frames = (seconds * 400.0) as u64;
    (0..frames)
        .map(|f| {
            let pcm: Vec<f32> = (0..n)
                .flat_map(|i| {
                    let t = (f * n as u64 + i as u64) as f32 / 48_000.0;
                    let x = 0.3 * (std::f32::consts::TAU * 440.0 * t).sin();
                    [x, x]
                })
                .collect();
            let mut out = [0u8; 1275];
            let len = enc.encode(&pcm, &mut out).unwrap();
            (f * n as u64, out[..len].to_vec())
        })
        .collect()
}

/// The decode of `frames` from frame `from` on in their order (each `lost` one concealed), the
/// encoder's lookahead skipped: sample 0 is what the sender played at that frame's start.
fn decoded_from(frames: &[(u64, Vec<u8>)], from: usize, lost: impl Fn(usize) -> bool) -> Vec<f32> {
    let mut d = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut pcm = vec![0.0f32; 2 * 960];
    let mut out: Vec<f32> = Vec::new();
    for (i, (_, p)) in frames.iter().enumerate().skip(from) {
        let p: &[u8] = if lost(i) { &[] } else { p };
        let n = d.decode_float(p, &mut pcm[..240], false).unwrap();
        out.extend(pcm[..2 * n].iter().step_by(2));
    }
    out.split_off(usize::from(PRE_SKIP))
}

fn read_wav(path: &Path) -> Vec<f32> {
    hound::WavReader::open(path)
        .unwrap()
        .into_samples::<f32>()
        .map_while(Result::ok)
        .step_by(2)
        .collect()
}

#[test]
fn the_encoders_lookahead_is_the_files_pre_skip() {
    let mut enc = FrameEncoder::new(CodecSettings::default()).unwrap();
    assert_eq!(enc.lookahead_samples(), usize::from(PRE_SKIP));
}

/// Frames that arrive 30 ms after they were sent (on a clock 5 s ahead of the sender's), a
/// few lost and some out of order: the file starts at the take's start on the sender's
/// clock, every sample where the sender played it.
#[test]
fn a_take_is_placed_by_media_time_whatever_the_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let frames = tone(3.0);
    // The take starts at our 5.5 s: the sender's 0.5 s, less the 1 ms half round trip.
    let ahead = 5 * 48_000;
    let start = ahead + 24_000;
    let rec = Recorder::start(dir.path(), Format::Wav, start, Box::new(Names)).unwrap();
    let mut order: Vec<usize> = (0..frames.len()).filter(|i| i % 37 != 5).collect();
    for w in order.chunks_mut(4) {
        w.reverse();
    }
    for i in order {
        let (media, payload) = &frames[i];
        // Sent once whole (its media time plus its 2.5 ms), 1 ms on the way (the one-way half
        // of a 2 ms round trip) with a little jitter, on our clock.
        let at = media + 120 + ahead + 48 + (i as u64 * 7 % 5) * 24;
        rec.frame(ANA, *media, at, payload);
    }
    let status = rec.stop();
    assert!(status.errors.is_empty(), "{:?}", status.errors);
    let file = &status.files[0];
    assert_eq!(file.path.file_name().unwrap(), "ana.wav");
    // Lost from the take's start (frame 200) on; those before it were never the take's.
    let lost = (200..frames.len()).filter(|i| i % 37 == 5).count() as u64;
    assert_eq!(file.counts.gap_samples, lost * 120, "{:?}", file.counts);
    let got = read_wav(&file.path);
    // From the sender's 0.5 s to its last frame's end.
    assert_eq!(got.len(), 3 * 48_000 - 24_000 - 120, "pre-skip and origin");
    // Sample-exact: the decode of the frames from the take's start in their order, each lost
    // one concealed where it was, the encoder's lookahead skipped (sample 0 is then what the
    // sender played at its 0.5 s: see the test above).
    let want = &decoded_from(&frames, 200, |i| i % 37 == 5);
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    assert_eq!(
        differ, 0,
        "{differ} samples differ from the in-order decode"
    );
}

#[test]
fn two_senders_files_start_at_the_same_moment() {
    let dir = tempfile::tempdir().unwrap();
    let frames = tone(2.0);
    let start = 48_000;
    let rec = Recorder::start(dir.path(), Format::Opus, start, Box::new(Names)).unwrap();
    let ben = StemKey::Remote(ParticipantId(2), StemId(0));
    // Ben's clock is 0.3 s behind ana's; both 1 ms away.
    for (media, payload) in &frames {
        rec.frame(ANA, *media, media + 120 + 48, payload);
        let bens = media.saturating_sub(14_400);
        if *media >= 14_400 {
            rec.frame(ben, bens, media + 120 + 48, payload);
        }
    }
    rec.frame(StemKey::Local, 0, 0, &frames[0].1);
    let status = rec.stop();
    assert!(status.errors.is_empty(), "{:?}", status.errors);
    let names: Vec<String> = status
        .files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"ana.opus".to_owned()), "{names:?}");
    assert!(
        names.contains(&"member-00000002.opus".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"me-sent.opus".to_owned()), "{names:?}");
    let counts = |name: &str| {
        status
            .files
            .iter()
            .find(|f| f.path.ends_with(name))
            .unwrap()
            .counts
    };
    // Both begin at our 1 s: ana's media 1 s, ben's 0.7 s; each holds the same frames then.
    assert_eq!(
        counts("ana.opus").frames,
        counts("member-00000002.opus").frames
    );
    assert_eq!(counts("ana.opus").gap_samples, 0);
}

#[test]
fn a_missing_folder_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let e = Recorder::start(&missing, Format::Wav, 0, Box::new(Names)).err();
    assert_eq!(e, Some(RecordError::Missing(missing.clone())));
    assert!(e.unwrap().to_string().contains("does not exist"));
    // A file where the folder should be.
    std::fs::write(&missing, b"").unwrap();
    assert!(matches!(
        Recorder::start(&missing, Format::Wav, 0, Box::new(Names)),
        Err(RecordError::Missing(_))
    ));
}

#[test]
fn takes_are_numbered_and_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let a = Recorder::start(dir.path(), Format::Wav, 0, Box::new(Names)).unwrap();
    let b = Recorder::start(dir.path(), Format::Wav, 0, Box::new(Names)).unwrap();
    assert!(a.status().folder.ends_with("take-001"));
    assert!(b.status().folder.ends_with("take-002"));
}

#[test]
fn hostile_media_times_and_payloads_cost_nothing_but_their_frames() {
    let dir = tempfile::tempdir().unwrap();
    let frames = tone(0.1);
    let rec = Recorder::start(dir.path(), Format::Wav, 0, Box::new(Names)).unwrap();
    // Two clocks at once, one at the top of the range, and bytes that are not Opus: our
    // clock (the arrival) is the only honest time here.
    for (i, (_, p)) in frames.iter().enumerate() {
        let at = 120 * (i as u64 + 1);
        rec.frame(ANA, u64::MAX - i as u64, at, p);
        rec.frame(ANA, i as u64 * 120, at, p);
        rec.frame(ANA, 0, at, &[0xff; 3]);
    }
    let status = rec.stop();
    assert!(status.errors.is_empty(), "{:?}", status.errors);
    assert_eq!(status.files.len(), 1, "one file for the one stem");
    // 0.1 s of frames came: the file holds no more than that and the 2 s a clock may be off.
    let held = status.files[0].counts.samples;
    assert!(
        held <= 4_800 + 96_000,
        "{held} samples from 0.1 s of frames"
    );
}

/// A room whose sender kept what it played, and answers asks for it.
struct Keeper(Vec<(u64, Vec<u8>)>);

impl Room for Keeper {
    fn name(&self, key: &StemKey) -> Option<String> {
        Names.name(key)
    }
    fn rtt(&self, key: &StemKey) -> Option<Duration> {
        Names.rtt(key)
    }
    fn ask_take(
        &self,
        key: &StemKey,
        ranges: Vec<(u64, u64)>,
    ) -> Option<std::sync::mpsc::Receiver<echoel_net::session::TakeFrames>> {
        let StemKey::Remote(from, stem) = *key else {
            return None;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let frames = self
            .0
            .iter()
            .filter(|(m, _)| ranges.iter().any(|(a, b)| (*a..*b).contains(m)))
            .cloned()
            .collect();
        let _ = tx.send(echoel_net::session::TakeFrames {
            id: 1,
            from,
            stem,
            frames,
            last: true,
        });
        Some(rx)
    }
}

/// A WAV take with frames lost: after the fill from what the sender kept, sample for sample
/// the decode of every frame it played (a null against the sender's own decode), and the
/// packets kept beside it for the fill are gone.
#[test]
fn a_wav_take_after_the_gap_fill_nulls_against_the_senders_decode() {
    let dir = tempfile::tempdir().unwrap();
    let frames = tone(3.0);
    let ahead = 5 * 48_000;
    let start = ahead + 24_000;
    let rec = Recorder::start(
        dir.path(),
        Format::Wav,
        start,
        Box::new(Keeper(frames.clone())),
    )
    .unwrap();
    for (i, (media, payload)) in frames.iter().enumerate() {
        if i % 23 == 7 || (500..530).contains(&i) {
            continue;
        }
        rec.frame(ANA, *media, media + 120 + ahead + 48, payload);
    }
    let status = rec.stop();
    assert!(status.errors.is_empty(), "{:?}", status.errors);
    let file = &status.files[0];
    let lost = (200..frames.len())
        .filter(|i| i % 23 == 7 || (500..530).contains(i))
        .count() as u64;
    assert_eq!(file.counts.filled_samples, lost * 120, "{:?}", file.counts);
    assert_eq!(file.counts.gap_samples, 0);
    let got = read_wav(&file.path);
    let want = &decoded_from(&frames, 200, |_| false);
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert_eq!(worst, 0.0, "the filled take does not null");
    let left: Vec<_> = std::fs::read_dir(&status.folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("ana.wav")], "{left:?}");
}

/// A room whose clock knows where the sender is: 5 s ahead of it.
struct Clocked;

impl Room for Clocked {
    fn name(&self, key: &StemKey) -> Option<String> {
        Names.name(key)
    }
    fn rtt(&self, key: &StemKey) -> Option<Duration> {
        Names.rtt(key)
    }
    fn on_our_clock(&self, _key: &StemKey, media: u64) -> Option<f64> {
        Some(media as f64 + 5.0 * 48_000.0)
    }
}

/// Where the room's clock knows the sender, a take is placed by it, not by how late the first
/// frames came: here every frame is 30 ms later than the round trip says, and the file still
/// starts at the sender's 0.5 s, sample for sample.
#[test]
fn a_take_is_placed_by_the_rooms_clock_where_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let frames = tone(2.0);
    let ahead = 5 * 48_000;
    let rec = Recorder::start(dir.path(), Format::Wav, ahead + 24_000, Box::new(Clocked)).unwrap();
    for (media, payload) in &frames {
        rec.frame(ANA, *media, media + 120 + ahead + 48 + 1_440, payload);
    }
    let status = rec.stop();
    let got = read_wav(&status.files[0].path);
    let want = &decoded_from(&frames, 200, |_| false);
    assert_eq!(
        got.len(),
        want.len(),
        "placed {} samples off",
        got.len() as i64 - want.len() as i64
    );
    assert!(got.iter().zip(want).all(|(a, b)| a == b));
}
