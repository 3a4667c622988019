//! The session document's schema, merges and conflicts.

use super::*;

/// Syncs every pair until nobody has anything to send (bounded).
fn sync_all(docs: &mut [SessionDoc]) {
    let n = docs.len();
    let mut states: Vec<Vec<DocSync>> = (0..n)
        .map(|_| (0..n).map(|_| DocSync::default()).collect())
        .collect();
    for _round in 0..20 {
        let mut quiet = true;
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                if let Some(msg) = states[a][b].generate(&mut docs[a]) {
                    quiet = false;
                    states[b][a].receive(&mut docs[b], &msg).unwrap();
                }
            }
        }
        if quiet {
            return;
        }
    }
    panic!("sync did not settle in 20 rounds");
}

/// Three members who each started the room's document on their own.
fn band() -> Vec<SessionDoc> {
    (0..3).map(|_| SessionDoc::new().unwrap()).collect()
}

#[test]
fn concurrent_edits_converge_and_tempo_has_one_winner_with_a_notice_for_the_loser() {
    let mut docs = band();
    docs[0].set_tempo(96.0).unwrap();
    docs[1].set_tempo(132.0).unwrap();
    let bass = docs[0].add_track("bass", "ana", "bass").unwrap();
    let keys = docs[1].add_track("keys", "ben", "piano").unwrap();
    docs[2].chart_append("| Am | F | C | G |").unwrap();
    docs[0].chart_append("intro: ").unwrap();
    docs[2].add_marker(16.0, "verse").unwrap();
    sync_all(&mut docs);

    let json = docs[0].to_json();
    for d in &docs[1..] {
        assert_eq!(d.to_json(), json);
    }
    assert_eq!(docs[0].tracks().len(), 2);
    assert!(docs[0].chart().contains("| Am | F | C | G |"));
    assert!(docs[0].chart().contains("intro: "));
    let tempo = docs[0].tempo();
    assert!(tempo == 96.0 || tempo == 132.0);
    let notices: Vec<_> = docs.iter().map(SessionDoc::tempo_notice).collect();
    assert_eq!(
        notices.iter().filter(|n| n.is_some()).count(),
        1,
        "exactly the writer who lost is told: {notices:?}"
    );
    // The loser keeps theirs; everyone converges on it with no conflict left.
    let loser = notices.iter().position(Option::is_some).unwrap();
    let mine = notices[loser].unwrap().mine;
    docs[loser].resolve_tempo(true).unwrap();
    sync_all(&mut docs);
    assert!(docs
        .iter()
        .all(|d| d.tempo() == mine && d.tempo_notice().is_none()));
    // Different tracks merged silently.
    assert!(docs[2].tracks().iter().any(|t| t.id == bass));
    assert!(docs[2].tracks().iter().any(|t| t.id == keys));
    assert!(docs[0].note_conflicts().is_empty());
}

#[test]
fn the_same_note_edited_at_once_is_listed_until_someone_picks() {
    let mut docs = band();
    let t = docs[0].add_track("lead", "ana", "guitar").unwrap();
    let c4 = Note {
        pitch: 60,
        start: 0.0,
        length: 1.0,
        velocity: 100,
    };
    let n = docs[0].add_note(&t, c4).unwrap();
    sync_all(&mut docs);
    docs[0].edit_note(&t, &n, Note { pitch: 62, ..c4 }).unwrap();
    docs[1].edit_note(&t, &n, Note { pitch: 64, ..c4 }).unwrap();
    sync_all(&mut docs);
    let conflicts = docs[2].note_conflicts();
    let pitch = conflicts
        .iter()
        .find(|c| c.field == "pitch")
        .expect("listed");
    let mut values = pitch.values.clone();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![62.0, 64.0]);
    docs[2].edit_note(&t, &n, Note { pitch: 64, ..c4 }).unwrap();
    sync_all(&mut docs);
    assert!(docs.iter().all(|d| d.note_conflicts().is_empty()));
    assert_eq!(docs[0].notes(&t)[0].1.pitch, 64);
}

#[test]
fn offline_edits_merge_on_return_and_a_save_round_trips() {
    let mut docs = band();
    let mut offline = SessionDoc::load(&docs[0].save()).unwrap();
    offline.add_track("drums", "cleo", "drums").unwrap();
    offline.set_key("D minor").unwrap();
    docs[0].set_time_signature("7/8").unwrap();
    docs[0].merge(&mut offline).unwrap();
    assert_eq!(docs[0].meter_and_key(), ("7/8".into(), "D minor".into()));
    assert!(docs[0].tracks().iter().any(|t| t.name == "drums"));
    let saved = docs[0].save();
    assert_eq!(
        SessionDoc::load(&saved).unwrap().to_json(),
        docs[0].to_json()
    );
}

#[test]
fn the_room_store_keeps_documents_and_moves_a_corrupt_file_aside() {
    let dir = std::env::temp_dir().join(format!("echoel-doc-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = DocStore::new(&dir, "friday/../jam");
    assert!(store.path().starts_with(&dir));
    assert!(store.load().is_none());
    let mut doc = SessionDoc::new().unwrap();
    doc.set_key("E minor").unwrap();
    store.save(&doc.save()).unwrap();
    assert_eq!(store.load().unwrap().to_json(), doc.to_json());
    std::fs::write(store.path(), b"half a file").unwrap();
    assert!(store.load().is_none());
    assert!(
        !store.path().exists(),
        "the corrupt file was moved, not kept in the way"
    );
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert_eq!(aside, 1, "and not deleted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_bytes_and_foreign_documents_are_refused() {
    assert!(matches!(
        SessionDoc::load(b"not automerge"),
        Err(DocError::Corrupt(_))
    ));
    let mut other = AutoCommit::new();
    other.put(ROOT, "hello", "world").unwrap();
    assert!(matches!(
        SessionDoc::load(&other.save()),
        Err(DocError::Missing("tracks"))
    ));
    let mut sync = DocSync::default();
    let mut doc = SessionDoc::new().unwrap();
    assert!(sync.receive(&mut doc, b"\x00garbage").is_err());
}
