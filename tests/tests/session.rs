//! The shared session between members over a real relay on loopback: presence, concurrent
//! edits with their conflict notices, and edits made offline merging on reconnect.

use std::time::{Duration, Instant};

use echoel_net::doc::{Note, SessionDoc};
use echoel_net::presence::{Presence, PRESENCE_TIMEOUT};
use echoel_net::session::{SessionHandle, SessionState};
use echoel_tests::{join_room, wait_until, TestRelay};

fn joined(s: &SessionHandle, others: usize) -> bool {
    let st = s.status();
    matches!(st.state, SessionState::Joined { .. }) && st.members.len() == others
}

fn json(s: &SessionHandle) -> String {
    s.read_doc(|d| d.to_json())
}

fn converged(band: &[&SessionHandle]) -> bool {
    let first = json(band[0]);
    band[1..].iter().all(|s| json(s) == first)
}

#[test]
fn presence_is_seen_within_a_second_and_a_vanished_member_is_shown_gone() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("presence");
    let a = join_room(&room, "Ana", None);
    let b = join_room(&room, "Bo", None);
    assert!(wait_until(Duration::from_secs(10), || joined(&a, 1) && joined(&b, 1)));
    let shown = Presence {
        name: "Ana".into(),
        instrument: "sax".into(),
        track: Some("t1".into()),
        cursor: Some((4, 9)),
        typing: true,
        level: 0.25,
        heard_loss: Vec::new(),
        heard_queue: Vec::new(),
        stems: vec![(echoel_net::wire::StemId(1), "sax 2".into())],
    };
    let t0 = Instant::now();
    a.set_presence(shown.clone());
    assert!(
        wait_until(Duration::from_secs(5), || b
            .presence()
            .iter()
            .any(|p| p.presence == shown && !p.gone)),
        "Bo never saw Ana's presence"
    );
    println!("presence seen after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(2));

    // Ana's machine vanishes: first present, then gone after the timeout.
    a.stop();
    let t1 = Instant::now();
    assert!(
        wait_until(PRESENCE_TIMEOUT + Duration::from_secs(3), || b
            .presence()
            .iter()
            .any(|p| p.presence.name == "Ana" && p.gone)),
        "Ana never went"
    );
    assert!(t1.elapsed() >= PRESENCE_TIMEOUT - Duration::from_millis(1100));
    b.stop();
}

#[test]
fn three_members_edit_concurrently_converge_and_conflicts_are_told_to_the_right_ones() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("conflicts");
    // A song everyone already holds: one bass track with one note.
    let mut base = SessionDoc::new().unwrap();
    let bass = base.add_track("bass", "Ana", "bass").unwrap();
    let c2 = Note {
        pitch: 36,
        start: 0.0,
        length: 1.0,
        velocity: 100,
    };
    let note = base.add_note(&bass, c2).unwrap();
    let bytes = base.save();
    let (a, b, c) = (
        join_room(&room, "Ana", Some(bytes.clone())),
        join_room(&room, "Bo", Some(bytes.clone())),
        join_room(&room, "Cy", Some(bytes)),
    );
    // Edits made before anyone has heard from anyone: concurrent by construction.
    a.edit_doc(|d| {
        d.set_tempo(100.0)?;
        d.edit_note(&bass, &note, Note { pitch: 40, ..c2 })?;
        d.add_track("keys", "Ana", "rhodes").map(|_| ())
    })
    .unwrap();
    b.edit_doc(|d| {
        d.set_tempo(90.0)?;
        d.edit_note(&bass, &note, Note { pitch: 43, ..c2 })?;
        d.edit_note(
            &bass,
            &note,
            Note {
                pitch: 43,
                velocity: 90,
                ..c2
            },
        )?;
        d.splice_chart(0, 0, "[Verse] Em | A |\n")
    })
    .unwrap();
    c.edit_doc(|d| {
        d.add_track("drums", "Cy", "drums")?;
        d.chart_append("[Chorus] C | D |")?;
        d.add_marker(32.0, "Chorus")
    })
    .unwrap();
    let band = [&a, &b, &c];
    assert!(
        wait_until(Duration::from_secs(15), || band
            .iter()
            .all(|s| joined(s, 2))
            && converged(&band)),
        "documents differ:\n{}\n{}\n{}",
        json(&a),
        json(&b),
        json(&c)
    );
    let doc = json(&a);
    println!("{doc}");
    for want in [
        "\"keys\"",
        "\"drums\"",
        "[Verse] Em | A |",
        "[Chorus] C | D |",
        "Chorus",
    ] {
        assert!(doc.contains(want), "{want} missing from {doc}");
    }
    // One tempo everywhere; only the member whose tempo lost is told.
    let tempo = a.read_doc(|d| d.tempo());
    assert!(tempo == 100.0 || tempo == 90.0);
    let notices: Vec<_> = band
        .iter()
        .map(|s| s.read_doc(|d| d.tempo_notice()))
        .collect();
    let (loser, winner) = if tempo == 100.0 { (&b, &a) } else { (&a, &b) };
    assert_eq!(notices.iter().flatten().count(), 1, "{notices:?}");
    let n = loser
        .read_doc(|d| d.tempo_notice())
        .expect("the loser is told");
    assert_eq!(n.theirs, tempo);
    assert!(winner.read_doc(|d| d.tempo_notice()).is_none());
    // The same note's pitch, changed twice at once, is listed with both values everywhere;
    // Bo's velocity change (a field nobody else touched) merged silently.
    for s in band {
        let conflicts = s.read_doc(|d| d.note_conflicts());
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        let mut values = conflicts[0].values.clone();
        values.sort_by(f64::total_cmp);
        assert_eq!(
            (conflicts[0].field.as_str(), values),
            ("pitch", vec![40.0, 43.0])
        );
        let notes = s.read_doc(|d| d.notes(&bass));
        assert_eq!(notes[0].1.velocity, 90);
    }

    // The loser keeps theirs; the conflict is gone for everyone, and Cy picks a pitch.
    loser.edit_doc(|d| d.resolve_tempo(true)).unwrap();
    c.edit_doc(|d| d.set_note_field(&bass, &note, "pitch", 43.0))
        .unwrap();
    let mine = n.mine;
    assert!(
        wait_until(Duration::from_secs(10), || converged(&band)
            && band.iter().all(|s| s.read_doc(|d| d.tempo() == mine
                && d.tempo_notice().is_none()
                && d.note_conflicts().is_empty()))),
        "the answers did not settle: {}",
        json(&a)
    );
    assert_eq!(a.read_doc(|d| d.notes(&bass))[0].1.pitch, 43);
    for s in band {
        s.stop();
    }
}

#[test]
fn edits_made_offline_merge_on_reconnect_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("offline");
    let a = join_room(&room, "Ana", None);
    let b = join_room(&room, "Bo", None);
    assert!(wait_until(Duration::from_secs(10), || joined(&a, 1) && joined(&b, 1)));
    a.edit_doc(|d| d.add_track("bass", "Ana", "bass").map(|_| ()))
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || converged(&[&a, &b])));

    // Ana goes offline with what she holds (the plugin keeps it in the project and the
    // room's store) and keeps working.
    let saved = a.read_doc(|d| d.save());
    a.stop();
    let mut offline = SessionDoc::load(&saved).unwrap();
    offline.add_track("strings", "Ana", "cello").unwrap();
    offline.chart_append("[Bridge] F | G |").unwrap();
    offline.set_key("D minor").unwrap();
    // Meanwhile Bo edits too.
    b.edit_doc(|d| {
        d.set_time_signature("6/8")?;
        d.chart_append("[Intro] Dm |")
    })
    .unwrap();

    let a2 = join_room(&room, "Ana", Some(offline.save()));
    assert!(
        wait_until(Duration::from_secs(10), || joined(&a2, 1)
            && converged(&[&a2, &b])),
        "no convergence:\n{}\n{}",
        json(&a2),
        json(&b)
    );
    let doc = json(&b);
    for want in [
        "\"bass\"",
        "\"strings\"",
        "[Bridge] F | G |",
        "[Intro] Dm |",
        "D minor",
        "6/8",
    ] {
        assert!(doc.contains(want), "{want} lost: {doc}");
    }
    a2.stop();
    b.stop();
}

#[test]
fn a_late_joiner_catches_up_on_a_document_larger_than_a_control_frame() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("large");
    // A long lyric sheet, too varied to compress much: its first sync is many control frames.
    let mut doc = SessionDoc::new().unwrap();
    let mut x = 0x2545_f491_u32;
    let text: String = (0..120_000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 60 == 59 {
                '\n'
            } else {
                char::from(b'a' + (x % 26) as u8)
            }
        })
        .collect();
    doc.chart_append(&text).unwrap();
    let bytes = doc.save();
    assert!(bytes.len() > 4 * 16 * 1024, "{} bytes", bytes.len());
    let a = join_room(&room, "Ana", Some(bytes));
    assert!(wait_until(Duration::from_secs(10), || matches!(
        a.status().state,
        SessionState::Joined { .. }
    )));
    let b = join_room(&room, "Bo", None);
    assert!(
        wait_until(Duration::from_secs(20), || b.read_doc(|d| d.chart())
            == text),
        "Bo holds {} of {} chart bytes",
        b.read_doc(|d| d.chart().len()),
        text.len()
    );
    assert!(converged(&[&a, &b]));
    a.stop();
    b.stop();
}

#[test]
fn the_document_travels_on_direct_paths_when_there_are_some() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("direct-doc");
    let a = join_room(&room, "Ana", None);
    let b = join_room(&room, "Bo", None);
    let direct = |s: &SessionHandle| {
        s.status()
            .members
            .iter()
            .any(|m| m.path == echoel_net::session::Path::Direct)
    };
    assert!(
        wait_until(Duration::from_secs(10), || direct(&a) && direct(&b)),
        "no direct path on loopback"
    );
    let before = b
        .counters()
        .doc_direct
        .load(std::sync::atomic::Ordering::Relaxed);
    a.edit_doc(|d| d.chart_append("[Outro] Em | Em |")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || b
        .read_doc(|d| d.chart())
        .contains("[Outro]")));
    let after = b
        .counters()
        .doc_direct
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        after > before,
        "the edit came by the relay ({before} → {after})"
    );
    a.stop();
    b.stop();
}

/// The room's clock on loopback: Bo puts each of Ana's frames on his clock (by the session's
/// `clock_of`) within a millisecond of when she handed it to her session, her media clock a
/// long way from his.
#[test]
fn the_room_clock_puts_a_senders_frames_on_ours_within_a_millisecond() {
    let _one = echoel_tests::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let room = relay.room("clock");
    let a = join_room(&room, "Ana", None);
    let b = join_room(&room, "Bo", None);
    assert!(wait_until(Duration::from_secs(10), || {
        joined(&a, 1) && joined(&b, 1) && a.status().members[0].keyed && b.status().members[0].keyed
    }));
    let ana = b.status().members[0].info.participant;
    // 2.5 ms CELT frames (the session only reads their length), Ana's media clock 20 s on.
    let mut payload = vec![28u8 << 3];
    payload.extend_from_slice(&[0x55; 40]);
    let period = Duration::from_micros(2_500);
    let start = Instant::now();
    let mut sent = Vec::new();
    for k in 0..2_400u32 {
        if let Some(wait) = (start + period * k).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let media = 960_000 + u64::from(k) * 120;
        let at = Instant::now();
        a.send_audio(echoel_net::wire::StemId(0), media, &payload);
        sent.push((media, at));
    }
    std::thread::sleep(Duration::from_millis(200));
    let map = b
        .clock_of(ana, echoel_net::wire::StemId(0))
        .expect("Bo follows Ana's clock");
    let epoch = b.clock_epoch();
    // The last two seconds: how far from when each frame was whole Bo puts it.
    let mut errors: Vec<f64> = sent[sent.len() - 800..]
        .iter()
        .map(|(media, at)| {
            let truth = at.duration_since(epoch).as_secs_f64() * 48_000.0;
            map.ours(media + 120) - truth
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    println!(
        "room clock on loopback: median error {:.1} samples ({:.2} ms), {map:?}",
        median,
        median / 48.0
    );
    assert!(median.abs() <= 48.0, "{median:.1} samples off");
    a.stop();
    b.stop();
}
