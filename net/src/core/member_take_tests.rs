//! Gap-free takes between member cores: a recorder gets back, from their sender, the frames
//! it missed, as they were sent; nobody else can answer for the sender, nor the sender with
//! what was not asked; the relay that carries it all reads none of it.

use super::*;
use crate::wire::TakeMessage;

/// Member `from` sends `n` frames of stem `stem` from media time 0, 120 samples apart, each
/// payload naming its frame.
fn send(b: &mut Band, from: usize, stem: u8, n: u64) {
    for k in 0..n {
        let payload = payload(stem, k);
        b.cores[from].seal_audio(StemId(stem), k * 120, &payload, 0);
    }
}

fn payload(stem: u8, k: u64) -> Vec<u8> {
    let mut p = vec![0xA5, stem];
    p.extend_from_slice(&k.to_be_bytes());
    p.extend_from_slice(&[0x5A; 24]);
    p
}

/// What member `i` got back for its asks: (frames, whether the last answer came).
fn answers(b: &mut Band, i: usize) -> (Vec<(u64, Vec<u8>)>, usize, bool) {
    let mut frames = Vec::new();
    let (mut parts, mut last) = (0, false);
    while let Some(e) = b.cores[i].poll_event() {
        if let RoomEvent::TakeFrames(t) = e {
            parts += 1;
            last |= t.last;
            frames.extend(t.frames);
        }
    }
    (frames, parts, last)
}

fn band() -> (Band, [MemberId; 3]) {
    let mut b = Band::new(3, RotationPolicy::default());
    let ids = [b.join(0), b.join(1), b.join(2)];
    b.settle_keys();
    while b.cores[2].poll_event().is_some() {}
    (b, ids)
}

#[test]
fn a_recorder_gets_back_the_frames_it_missed_as_they_were_sent() {
    let (mut b, _) = band();
    send(&mut b, 0, 1, 100);
    send(&mut b, 0, 0, 100);
    let now = b.now;
    let id = b.cores[2]
        .ask_take(now, pid(0), StemId(1), vec![(2400, 4800), (9600, 9721)])
        .expect("member 0 is in the room");
    b.run();
    let (frames, parts, last) = answers(&mut b, 2);
    assert!(last && parts == 1, "{parts} parts, last {last}");
    let want: Vec<(u64, Vec<u8>)> = (20..40)
        .chain([80, 81])
        .map(|k| (k * 120, payload(1, k)))
        .collect();
    assert_eq!(
        frames, want,
        "the frames of stem 1 asked for, and only those"
    );
    assert!(id > 0);
    // The relay carried the ask and the answer, and can read neither.
    let marker = [0x5Au8; 24];
    for (_, _, body) in &b.overheard {
        assert!(
            !body.windows(marker.len()).any(|w| w == marker),
            "the relay read a frame of the take"
        );
    }
}

#[test]
fn a_long_answer_comes_in_parts_that_add_up() {
    let (mut b, _) = band();
    send(&mut b, 0, 0, 3_000);
    let now = b.now;
    b.cores[2].ask_take(now, pid(0), StemId(0), vec![(0, u64::MAX)]);
    b.run();
    let (frames, parts, last) = answers(&mut b, 2);
    assert!(last);
    assert!(parts > 3, "{parts} parts");
    assert_eq!(frames.len(), 3_000);
    assert!(frames.windows(2).all(|w| w[0].0 < w[1].0), "in media order");
}

#[test]
fn nobody_answers_for_the_sender_and_the_sender_only_with_what_was_asked() {
    let (mut b, ids) = band();
    send(&mut b, 0, 0, 50);
    let now = b.now;
    let id = b.cores[2]
        .ask_take(now, pid(0), StemId(0), vec![(0, 1200)])
        .unwrap();
    // Member 1 answers first, with the ask's number, as if it were member 0 (it holds member
    // 0's sender key, but not what seals a take to member 2 as member 0).
    let forged = TakeMessage::Frames {
        id,
        stem: StemId(0),
        frames: vec![(0, vec![0xEE; 30])],
        last: true,
    };
    let before = b.cores[2].counters.forged.load(Relaxed);
    b.cores[1].seal_take(ids[2], &forged).unwrap();
    // Member 0 answers with a frame it was not asked for beside those it was.
    let extra = TakeMessage::Frames {
        id,
        stem: StemId(0),
        frames: vec![(0, payload(0, 0)), (60_000, vec![0xEE; 30])],
        last: false,
    };
    b.cores[0].seal_take(ids[2], &extra).unwrap();
    b.run();
    let (frames, _, last) = answers(&mut b, 2);
    assert!(last, "member 0's own answer still came");
    assert!(frames.iter().all(|(_, p)| p[0] != 0xEE), "{frames:?}");
    assert_eq!(
        frames.iter().filter(|(m, _)| *m == 0).count(),
        2,
        "ask and answer both hold frame 0"
    );
    assert_eq!(
        b.cores[2].counters.forged.load(Relaxed) - before,
        2,
        "the stranger's answer and the frame not asked for"
    );
}

#[test]
fn an_ask_to_a_sender_who_leaves_ends_empty() {
    let (mut b, _) = band();
    let now = b.now;
    b.cores[2]
        .ask_take(now, pid(0), StemId(0), vec![(0, 1200)])
        .unwrap();
    // The ask is lost on the way, and member 0 leaves.
    assert!(b.cores[2].poll_transmit().is_some());
    b.leave(0);
    b.tick(Duration::from_secs(1));
    let (frames, parts, last) = answers(&mut b, 2);
    assert!(last && parts == 1 && frames.is_empty());
    // Nobody to ask: no ask at all.
    assert!(b.cores[2]
        .ask_take(b.now, pid(0), StemId(0), vec![(0, 1)])
        .is_none());
}

#[test]
fn the_archive_keeps_the_newest_within_its_size_and_the_newer_of_a_time_sent_twice() {
    let mut a = SentArchive::with_cap(1 << 20);
    for k in 0..100_000u64 {
        a.keep(StemId(0), k * 120, &[k as u8; 100]);
    }
    let kept = a.find(StemId(0), &[(0, u64::MAX)], usize::MAX);
    let bytes: usize = kept.iter().map(|(_, p)| p.len() + 16).sum();
    assert!(bytes <= 1 << 20, "{bytes} bytes kept");
    assert!(kept.len() > 5_000, "{} frames kept", kept.len());
    assert_eq!(
        kept.last().map(|(m, _)| *m),
        Some(99_999 * 120),
        "the newest"
    );
    // An engine that started over sends a media time again: the newer is what was played.
    a.keep(StemId(0), 99_999 * 120, &[0xFF; 10]);
    let again = a.find(StemId(0), &[(99_999 * 120, u64::MAX)], usize::MAX);
    assert_eq!(again, vec![(99_999 * 120, vec![0xFF; 10])]);
}
