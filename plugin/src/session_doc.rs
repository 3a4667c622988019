//! The session document as the plugin keeps it (in the project and the room's store) and as
//! the editor shows it.

use echoel_gui::model::{NoteConflictView, SessionView, TempoNoticeView, TrackView};
use echoel_net::doc::{DocStore, SessionDoc};

use crate::params::EchoelParams;

/// The document as the editor shows it.
pub fn session_view(d: &mut SessionDoc) -> SessionView {
    let tracks = d.tracks();
    let (meter, key) = d.meter_and_key();
    SessionView {
        tempo: d.tempo(),
        meter,
        key,
        tracks: tracks
            .iter()
            .map(|t| TrackView {
                id: t.id.clone(),
                name: t.name.clone(),
                owner: t.owner.clone(),
                instrument: t.instrument.clone(),
                muted: t.muted,
                notes: d.notes(&t.id).len(),
            })
            .collect(),
        chart: d.chart(),
        markers: d.markers(),
        tempo_notice: d.tempo_notice().map(|n| TempoNoticeView {
            mine: n.mine,
            theirs: n.theirs,
        }),
        note_conflicts: d
            .note_conflicts()
            .into_iter()
            .map(|c| NoteConflictView {
                track_name: tracks
                    .iter()
                    .find(|t| t.id == c.track)
                    .map_or_else(|| c.track.clone(), |t| t.name.clone()),
                track: c.track,
                note: c.note,
                field: c.field,
                values: c.values,
            })
            .collect(),
    }
}

/// The session document to start from: the project's copy merged with the room's store
/// (edits made without this project). An unreadable project copy is logged and skipped (its
/// bytes stay in the project until the session replaces them); a corrupt store file is moved
/// aside by the store.
pub fn saved_session(params: &EchoelParams, store: Option<&DocStore>) -> Option<Vec<u8>> {
    let project = params.session_doc.read().ok()?.0.clone();
    let mut doc = if project.is_empty() {
        None
    } else {
        match SessionDoc::load(&project) {
            Ok(d) => Some(d),
            Err(err) => {
                tracing::warn!(
                    "the session saved in this project is unreadable ({err}); using the room's"
                );
                None
            }
        }
    };
    if let Some(mut stored) = store.and_then(DocStore::load) {
        match &mut doc {
            Some(d) => {
                if let Err(err) = d.merge(&mut stored) {
                    tracing::warn!("cannot merge the local session store: {err}");
                }
            }
            None => doc = Some(stored),
        }
    }
    doc.map(|mut d| d.save())
}
