//! The room's shared session document: one automerge document per room, edited offline-first by
//! every member and merged with automerge's sync protocol.
//!
//! Shape (keys of the root map):
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `tempo` | f64 | beats per minute |
//! | `time_signature` | str | e.g. `"4/4"` |
//! | `key` | str | e.g. `"A minor"` |
//! | `tracks` | map: track id → track | see below |
//! | `chart` | text | the chord chart, typed together |
//! | `markers` | list of `{beat: f64, label: str}` | song structure |
//!
//! A track is `{name: str, owner: str, instrument: str, muted: bool, notes: map}`; its notes map
//! a note id to `{pitch: i64, start: f64 (beats), length: f64 (beats), velocity: i64}`.
//!
//! Conflicts follow what a band expects: concurrent tempo changes resolve to one deterministic
//! winner everywhere and the writer who lost can tell ([`SessionDoc::tempo_notice`]); edits on
//! different tracks or fields merge silently; concurrent edits of one note field stay listed
//! ([`SessionDoc::note_conflicts`]) until someone writes it again; chart typing converges.

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, AutomergeError, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT,
};
use thiserror::Error;

/// A document operation failed.
#[derive(Debug, Error)]
pub enum DocError {
    /// The bytes are not a session document (corrupt store, wrong file).
    #[error("not a session document: {0}")]
    Corrupt(String),
    /// The document lacks a part its shape requires (written by something else).
    #[error("the session document has no {0}")]
    Missing(&'static str),
    /// No such track or note.
    #[error("no {0} with id {1}")]
    NotFound(&'static str, String),
    /// Automerge refused the operation.
    #[error("document error: {0}")]
    Automerge(#[from] AutomergeError),
}

/// The document's heads as of a save, to tell whether anything changed since.
pub type Heads = Vec<automerge::ChangeHash>;

/// One note of a track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Note {
    /// MIDI pitch.
    pub pitch: i64,
    /// Start, in beats from the song's start.
    pub start: f64,
    /// Length in beats.
    pub length: f64,
    /// MIDI velocity.
    pub velocity: i64,
}

/// A track as read from the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Its id (key in `tracks`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Who added it.
    pub owner: String,
    /// Instrument.
    pub instrument: String,
    /// Muted for everyone.
    pub muted: bool,
}

/// Our tempo lost to a concurrent one: the GUI offers "keep mine" or "take theirs".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TempoNotice {
    /// What we wrote.
    pub mine: f64,
    /// What the room now has.
    pub theirs: f64,
}

/// A note field two members changed at once; every value stays listed until one is picked.
#[derive(Debug, Clone, PartialEq)]
pub struct NoteConflict {
    /// The track.
    pub track: String,
    /// The note.
    pub note: String,
    /// The field (`pitch`, `start`, `length` or `velocity`).
    pub field: String,
    /// The concurrent values, the one shown first.
    pub values: Vec<f64>,
}

/// The shared session document of one room, as one member holds it.
pub struct SessionDoc {
    doc: AutoCommit,
    /// The tempo we last wrote, to tell whether a concurrent one won.
    my_tempo: Option<f64>,
    /// Tracks and notes created here, for ids unique to this member.
    created: u64,
    /// Commits carry time 0 (a simulation that must replay byte for byte).
    replay: bool,
}

const NOTE_FIELDS: [&str; 4] = ["pitch", "start", "length", "velocity"];

/// The actor of the shared genesis change.
const GENESIS_ACTOR: &[u8] = b"echoel-session-genesis";

impl SessionDoc {
    /// A room's document before anyone edits it: 120 BPM, 4/4, C major, no tracks, an empty
    /// chart. The same bytes on every member (a fixed actor and time), so members that start
    /// apart share one set of parts instead of each making their own; edits then carry this
    /// member's own random actor.
    pub fn new() -> Result<Self, DocError> {
        let mut doc = AutoCommit::new().with_actor(ActorId::from(GENESIS_ACTOR));
        doc.put(ROOT, "tempo", 120.0)?;
        doc.put(ROOT, "time_signature", "4/4")?;
        doc.put(ROOT, "key", "C major")?;
        doc.put_object(ROOT, "tracks", ObjType::Map)?;
        doc.put_object(ROOT, "chart", ObjType::Text)?;
        doc.put_object(ROOT, "markers", ObjType::List)?;
        doc.commit_with(CommitOptions::default().with_time(0));
        doc.set_actor(ActorId::random());
        Ok(Self {
            doc,
            my_tempo: None,
            created: 0,
            replay: false,
        })
    }

    /// Loads a saved document (from the plugin state or the room's store).
    pub fn load(bytes: &[u8]) -> Result<Self, DocError> {
        let doc = AutoCommit::load(bytes).map_err(|e| DocError::Corrupt(e.to_string()))?;
        let mut me = Self {
            doc,
            my_tempo: None,
            created: 0,
            replay: false,
        };
        // Our edits under a fresh actor: a loaded copy is a new replica, not its saver.
        me.doc.set_actor(ActorId::random());
        me.part("tracks")?;
        Ok(me)
    }

    /// Makes this replica's edits replayable: a fixed actor, and commits at time 0. For the
    /// simulator only: two members given one actor would corrupt the room's document.
    pub fn danger_replay_actor(&mut self, actor: &[u8]) {
        self.doc.set_actor(ActorId::from(actor));
        self.replay = true;
    }

    fn commit(&mut self) {
        if self.replay {
            self.doc.commit_with(CommitOptions::default().with_time(0));
        } else {
            self.doc.commit();
        }
    }

    /// The document's heads: equal on two replicas exactly when they hold the same changes.
    pub fn heads(&mut self) -> Heads {
        self.doc.get_heads()
    }

    /// The document's changes, sorted by hash, as bytes: identical on two replicas exactly
    /// when they hold the same document. (`save` is not: its bytes depend on the order the
    /// changes arrived in.)
    pub fn canonical_bytes(&mut self) -> Vec<u8> {
        let mut changes = self.doc.get_changes(&[]);
        changes.sort_by_key(|c| c.hash());
        changes
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect()
    }

    /// The whole document, compacted: what the plugin state and the store keep.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The document's bytes if it changed since `seen` (which is updated), for keeping a
    /// saved copy current without saving when nothing happened.
    pub fn save_if_changed(&mut self, seen: &mut Heads) -> Option<Vec<u8>> {
        let heads = self.doc.get_heads();
        if heads == *seen {
            return None;
        }
        *seen = heads;
        Some(self.doc.save())
    }

    /// Folds in another replica's edits (offline edits coming back, or a saved copy).
    pub fn merge(&mut self, other: &mut SessionDoc) -> Result<(), DocError> {
        self.doc.merge(&mut other.doc)?;
        Ok(())
    }

    fn part(&self, key: &'static str) -> Result<ObjId, DocError> {
        match self.doc.get(ROOT, key)? {
            Some((Value::Object(_), id)) => Ok(id),
            _ => Err(DocError::Missing(key)),
        }
    }

    fn scalar(&self, obj: &ObjId, key: &str) -> Option<ScalarValue> {
        match self.doc.get(obj, key).ok()?? {
            (Value::Scalar(v), _) => Some(v.into_owned()),
            _ => None,
        }
    }

    fn string(&self, obj: &ObjId, key: &str) -> String {
        match self.scalar(obj, key) {
            Some(ScalarValue::Str(s)) => s.to_string(),
            _ => String::new(),
        }
    }

    fn number(v: &ScalarValue) -> Option<f64> {
        match v {
            ScalarValue::F64(x) => Some(*x),
            ScalarValue::Int(x) => Some(*x as f64),
            ScalarValue::Uint(x) => Some(*x as f64),
            _ => None,
        }
    }

    /// The room's tempo (the deterministic winner if members wrote it at once).
    pub fn tempo(&self) -> f64 {
        self.scalar(&ROOT, "tempo")
            .as_ref()
            .and_then(Self::number)
            .unwrap_or(120.0)
    }

    /// Proposes a tempo (clamped to 20–400 BPM).
    pub fn set_tempo(&mut self, bpm: f64) -> Result<(), DocError> {
        let bpm = if bpm.is_finite() {
            bpm.clamp(20.0, 400.0)
        } else {
            120.0
        };
        self.doc.put(ROOT, "tempo", bpm)?;
        self.commit();
        self.my_tempo = Some(bpm);
        Ok(())
    }

    /// Set when our last tempo lost to a concurrent one.
    pub fn tempo_notice(&self) -> Option<TempoNotice> {
        let mine = self.my_tempo?;
        let values = self.doc.get_all(ROOT, "tempo").ok()?;
        let concurrent: Vec<f64> = values
            .iter()
            .filter_map(|(v, _)| v.as_scalar().and_then(Self::number))
            .collect();
        let theirs = self.tempo();
        (concurrent.len() > 1 && concurrent.contains(&mine) && theirs != mine)
            .then_some(TempoNotice { mine, theirs })
    }

    /// Answers a [`TempoNotice`]: `keep_mine` writes ours again over both, otherwise theirs is
    /// confirmed; either way the conflict is gone for everyone.
    pub fn resolve_tempo(&mut self, keep_mine: bool) -> Result<(), DocError> {
        let value = match (keep_mine, self.my_tempo) {
            (true, Some(mine)) => mine,
            _ => self.tempo(),
        };
        self.set_tempo(value)
    }

    /// Time signature and key.
    pub fn meter_and_key(&self) -> (String, String) {
        (
            self.string(&ROOT, "time_signature"),
            self.string(&ROOT, "key"),
        )
    }

    /// Sets the time signature (e.g. `"7/8"`).
    pub fn set_time_signature(&mut self, sig: &str) -> Result<(), DocError> {
        self.doc.put(ROOT, "time_signature", sig)?;
        self.commit();
        Ok(())
    }

    /// Sets the key (e.g. `"F# minor"`).
    pub fn set_key(&mut self, key: &str) -> Result<(), DocError> {
        self.doc.put(ROOT, "key", key)?;
        self.commit();
        Ok(())
    }

    fn fresh_id(&mut self, prefix: &str) -> String {
        self.created += 1;
        let actor = self.doc.get_actor().to_hex_string();
        format!("{prefix}-{}-{}", &actor[..actor.len().min(8)], self.created)
    }

    /// Adds a track; returns its id.
    pub fn add_track(
        &mut self,
        name: &str,
        owner: &str,
        instrument: &str,
    ) -> Result<String, DocError> {
        let tracks = self.part("tracks")?;
        let id = self.fresh_id("t");
        let t = self.doc.put_object(&tracks, id.as_str(), ObjType::Map)?;
        self.doc.put(&t, "name", name)?;
        self.doc.put(&t, "owner", owner)?;
        self.doc.put(&t, "instrument", instrument)?;
        self.doc.put(&t, "muted", false)?;
        self.doc.put_object(&t, "notes", ObjType::Map)?;
        self.commit();
        Ok(id)
    }

    fn track_obj(&self, id: &str) -> Result<ObjId, DocError> {
        let tracks = self.part("tracks")?;
        match self.doc.get(&tracks, id)? {
            Some((Value::Object(_), obj)) => Ok(obj),
            _ => Err(DocError::NotFound("track", id.to_owned())),
        }
    }

    /// Mutes or unmutes a track for everyone.
    pub fn set_muted(&mut self, track: &str, muted: bool) -> Result<(), DocError> {
        let t = self.track_obj(track)?;
        self.doc.put(&t, "muted", muted)?;
        self.commit();
        Ok(())
    }

    /// Every track, by id.
    pub fn tracks(&self) -> Vec<Track> {
        let Ok(tracks) = self.part("tracks") else {
            return Vec::new();
        };
        self.doc
            .keys(&tracks)
            .filter_map(|id| {
                let t = self.track_obj(&id).ok()?;
                Some(Track {
                    name: self.string(&t, "name"),
                    owner: self.string(&t, "owner"),
                    instrument: self.string(&t, "instrument"),
                    muted: matches!(self.scalar(&t, "muted"), Some(ScalarValue::Boolean(true))),
                    id,
                })
            })
            .collect()
    }

    fn notes_obj(&self, track: &str) -> Result<ObjId, DocError> {
        let t = self.track_obj(track)?;
        match self.doc.get(&t, "notes")? {
            Some((Value::Object(_), obj)) => Ok(obj),
            _ => Err(DocError::Missing("notes")),
        }
    }

    /// Adds a note to a track; returns its id.
    pub fn add_note(&mut self, track: &str, note: Note) -> Result<String, DocError> {
        let notes = self.notes_obj(track)?;
        let id = self.fresh_id("n");
        let n = self.doc.put_object(&notes, id.as_str(), ObjType::Map)?;
        self.doc.put(&n, "pitch", note.pitch)?;
        self.doc.put(&n, "start", note.start)?;
        self.doc.put(&n, "length", note.length)?;
        self.doc.put(&n, "velocity", note.velocity)?;
        self.commit();
        Ok(id)
    }

    fn note_obj(&self, track: &str, note: &str) -> Result<ObjId, DocError> {
        let notes = self.notes_obj(track)?;
        match self.doc.get(&notes, note)? {
            Some((Value::Object(_), obj)) => Ok(obj),
            _ => Err(DocError::NotFound("note", note.to_owned())),
        }
    }

    /// Changes a note. Only the fields that differ (or are in conflict) are written, so two
    /// members changing different fields of one note at once both keep their change, and
    /// writing a conflicted field settles it.
    pub fn edit_note(&mut self, track: &str, note: &str, value: Note) -> Result<(), DocError> {
        let n = self.note_obj(track, note)?;
        let old = self
            .notes(track)
            .into_iter()
            .find(|(id, _)| id == note)
            .map(|(_, v)| v);
        let fields: [(&str, bool, ScalarValue); 4] = [
            (
                "pitch",
                old.is_some_and(|o| o.pitch == value.pitch),
                value.pitch.into(),
            ),
            (
                "start",
                old.is_some_and(|o| o.start == value.start),
                value.start.into(),
            ),
            (
                "length",
                old.is_some_and(|o| o.length == value.length),
                value.length.into(),
            ),
            (
                "velocity",
                old.is_some_and(|o| o.velocity == value.velocity),
                value.velocity.into(),
            ),
        ];
        for (field, same, v) in fields {
            let settled = self.doc.get_all(&n, field).map_or(0, |all| all.len()) <= 1;
            if !(same && settled) {
                self.doc.put(&n, field, v)?;
            }
        }
        self.commit();
        Ok(())
    }

    /// Settles one field of a note on `value` (the answer to a [`NoteConflict`]).
    pub fn set_note_field(
        &mut self,
        track: &str,
        note: &str,
        field: &str,
        value: f64,
    ) -> Result<(), DocError> {
        let n = self.note_obj(track, note)?;
        match field {
            "pitch" | "velocity" => self.doc.put(&n, field, value.round() as i64)?,
            "start" | "length" => self.doc.put(&n, field, value)?,
            _ => return Err(DocError::NotFound("note field", field.to_owned())),
        }
        self.commit();
        Ok(())
    }

    /// A track's notes, by id.
    pub fn notes(&self, track: &str) -> Vec<(String, Note)> {
        let Ok(notes) = self.notes_obj(track) else {
            return Vec::new();
        };
        self.doc
            .keys(&notes)
            .filter_map(|id| {
                let n = self.note_obj(track, &id).ok()?;
                let num = |k| self.scalar(&n, k).as_ref().and_then(Self::number);
                Some((
                    id,
                    Note {
                        pitch: num("pitch")? as i64,
                        start: num("start")?,
                        length: num("length")?,
                        velocity: num("velocity")? as i64,
                    },
                ))
            })
            .collect()
    }

    /// Note fields changed concurrently and not settled since.
    pub fn note_conflicts(&self) -> Vec<NoteConflict> {
        let mut out = Vec::new();
        for track in self.tracks() {
            for (id, _) in self.notes(&track.id) {
                let Ok(n) = self.note_obj(&track.id, &id) else {
                    continue;
                };
                for field in NOTE_FIELDS {
                    let values: Vec<f64> = self
                        .doc
                        .get_all(&n, field)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|(v, _)| v.as_scalar().and_then(Self::number))
                        .fold(Vec::new(), |mut seen, v| {
                            // The same value written twice is no conflict.
                            if !seen.contains(&v) {
                                seen.push(v);
                            }
                            seen
                        });
                    if values.len() > 1 {
                        out.push(NoteConflict {
                            track: track.id.clone(),
                            note: id.clone(),
                            field: field.to_owned(),
                            values,
                        });
                    }
                }
            }
        }
        out
    }

    /// The chord chart.
    pub fn chart(&self) -> String {
        self.part("chart")
            .ok()
            .and_then(|c| self.doc.text(&c).ok())
            .unwrap_or_default()
    }

    /// Types into the chart: deletes `delete` characters at `pos` and inserts `text` there.
    pub fn splice_chart(&mut self, pos: usize, delete: usize, text: &str) -> Result<(), DocError> {
        let chart = self.part("chart")?;
        let len = self.doc.length(&chart);
        let pos = pos.min(len);
        let delete = delete.min(len - pos);
        self.doc.splice_text(&chart, pos, delete as isize, text)?;
        self.commit();
        Ok(())
    }

    /// Appends to the chart.
    pub fn chart_append(&mut self, text: &str) -> Result<(), DocError> {
        let len = self.chart().chars().count();
        self.splice_chart(len, 0, text)
    }

    /// Adds a marker at `beat`.
    pub fn add_marker(&mut self, beat: f64, label: &str) -> Result<(), DocError> {
        let markers = self.part("markers")?;
        let at = self.doc.length(&markers);
        let m = self.doc.insert_object(&markers, at, ObjType::Map)?;
        self.doc.put(&m, "beat", beat)?;
        self.doc.put(&m, "label", label)?;
        self.commit();
        Ok(())
    }

    /// Markers in document order.
    pub fn markers(&self) -> Vec<(f64, String)> {
        let Ok(markers) = self.part("markers") else {
            return Vec::new();
        };
        (0..self.doc.length(&markers))
            .filter_map(|i| match self.doc.get(&markers, i).ok()?? {
                (Value::Object(_), m) => Some((
                    self.scalar(&m, "beat")
                        .as_ref()
                        .and_then(Self::number)
                        .unwrap_or(0.0),
                    self.string(&m, "label"),
                )),
                _ => None,
            })
            .collect()
    }

    /// The document as JSON (for `echoel peer --print-session`).
    pub fn to_json(&self) -> String {
        let tracks: Vec<String> = self
            .tracks()
            .iter()
            .map(|t| {
                let notes: Vec<String> = self
                    .notes(&t.id)
                    .iter()
                    .map(|(id, n)| {
                        format!(
                            "{{\"id\":{},\"pitch\":{},\"start\":{},\"length\":{},\"velocity\":{}}}",
                            json_str(id),
                            n.pitch,
                            n.start,
                            n.length,
                            n.velocity
                        )
                    })
                    .collect();
                format!(
                    "{{\"id\":{},\"name\":{},\"owner\":{},\"instrument\":{},\"muted\":{},\"notes\":[{}]}}",
                    json_str(&t.id),
                    json_str(&t.name),
                    json_str(&t.owner),
                    json_str(&t.instrument),
                    t.muted,
                    notes.join(",")
                )
            })
            .collect();
        let markers: Vec<String> = self
            .markers()
            .iter()
            .map(|(beat, label)| format!("{{\"beat\":{beat},\"label\":{}}}", json_str(label)))
            .collect();
        let (sig, key) = self.meter_and_key();
        format!(
            "{{\"tempo\":{},\"time_signature\":{},\"key\":{},\"tracks\":[{}],\"chart\":{},\"markers\":[{}]}}",
            self.tempo(),
            json_str(&sig),
            json_str(&key),
            tracks.join(","),
            json_str(&self.chart()),
            markers.join(",")
        )
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The copy of each room's document kept in the user's data folder, so edits made offline
/// survive without a DAW project and merge when the room is back.
pub struct DocStore {
    path: std::path::PathBuf,
}

impl DocStore {
    /// The store of room `room` under `dir` (see [`DocStore::default_dir`]).
    pub fn new(dir: &std::path::Path, room: &str) -> Self {
        let safe: String = room
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            path: dir.join(format!("{safe}.automerge")),
        }
    }

    /// The user's data folder for room documents: `$XDG_DATA_HOME/echoel/rooms`,
    /// `~/.local/share/echoel/rooms`, or `%APPDATA%\echoel\rooms`.
    pub fn default_dir() -> Option<std::path::PathBuf> {
        let env = |k| std::env::var_os(k).filter(|v| !v.is_empty());
        let base = env("XDG_DATA_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| env("APPDATA").map(std::path::PathBuf::from))
            .or_else(|| env("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share")))?;
        Some(base.join("echoel").join("rooms"))
    }

    /// Where the document lives.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The stored document, `None` if there is none yet. A file that is not a session document
    /// is moved aside (`*.corrupt-SECONDS`) with a warning, never overwritten or fatal.
    pub fn load(&self) -> Option<SessionDoc> {
        let bytes = std::fs::read(&self.path).ok()?;
        match SessionDoc::load(&bytes) {
            Ok(doc) => Some(doc),
            Err(e) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = self.path.with_extension(format!("corrupt-{secs}"));
                tracing::warn!(
                    "session store {} is unreadable ({e}); moved to {}",
                    self.path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&self.path, &aside);
                None
            }
        }
    }

    /// Writes the document atomically (a crash or a full disk leaves the old copy intact).
    pub fn save(&self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::store::write_atomically(&self.path, bytes, true)
    }
}

/// Automerge's sync protocol with one peer: one per peer, kept across reconnects.
#[derive(Default)]
pub struct DocSync {
    state: sync::State,
}

impl DocSync {
    /// The next message for this peer, if it lacks anything we have.
    pub fn generate(&mut self, doc: &mut SessionDoc) -> Option<Vec<u8>> {
        doc.doc
            .sync()
            .generate_sync_message(&mut self.state)
            .map(|m| m.encode())
    }

    /// Applies a message from this peer.
    pub fn receive(&mut self, doc: &mut SessionDoc, message: &[u8]) -> Result<(), DocError> {
        let m = sync::Message::decode(message).map_err(|e| DocError::Corrupt(e.to_string()))?;
        doc.doc.sync().receive_sync_message(&mut self.state, m)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "doc_tests.rs"]
mod tests;
