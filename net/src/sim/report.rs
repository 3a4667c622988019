//! What a run found: documents compared, edits looked for, audio accounted frame by frame.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::member::Member;

/// Audio at one member from another, over the settled tail of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioCheck {
    /// Frames the links let through to this receiver.
    pub through: usize,
    /// Frames it opened and handed on in time for a fixed-depth playout (each once): played
    /// in order of media time, they are the stream.
    pub delivered: usize,
    /// Frames handed on too late for that playout.
    pub late: usize,
    /// Frames handed on a second time: a frame recovered from the next datagram's redundant
    /// copy is handed on again if its own datagram turns up late (the window is not marked
    /// for it, so a late original is not counted as a replay); the playout keeps one.
    pub twice: usize,
    /// Frames let through but never handed on in time.
    pub missing: usize,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed that replays it.
    pub seed: u64,
    /// Every honest member holds the same document: the same heads, and byte-identical
    /// changes.
    pub converged: bool,
    /// Edits some member made that some document lacks (`member: what`).
    pub lost_edits: Vec<String>,
    /// Per (sender, receiver), audio over the settled tail.
    pub audio: BTreeMap<(usize, usize), AudioCheck>,
    /// Longest stretch any member went without a frame from a connected sender, during the
    /// chaos (with both of them in the room).
    pub longest_gap: Duration,
    /// Times members joined the room after the first.
    pub rejoins: usize,
    /// How long each rejoin took once the network let it (from the cut's end or the loss of
    /// the connection to the Welcome).
    pub reconnects: Vec<Duration>,
    /// Direct paths made between members.
    pub direct_paths: usize,
    /// The longest a direct path took from the later of its two members joining to both
    /// having it.
    pub slowest_direct: Duration,
    /// The pairs of members (by index, lower first) that ever had a direct path.
    pub direct_pairs: std::collections::BTreeSet<(usize, usize)>,
    /// By (sender, receiver): a direct path carries the sender's audio at the end, but its
    /// first copies come by the relay (the receiver's core found the relay faster).
    pub relay_faster: BTreeSet<(usize, usize)>,
    /// By (sender, receiver): how often the frames played told of a new, shorter way
    /// (`AudioFrame::path_epoch`).
    pub epoch_changes: BTreeMap<(usize, usize), u32>,
    /// Control messages the honest cores refused (notices): none on honest links.
    pub notices: usize,
    /// Packets and messages the honest cores refused as forged, replayed, unkeyed or
    /// malformed; and of them, replays.
    pub refused: u64,
    pub replayed: u64,
    /// Honest members that show something a colluding insider made in another's name.
    pub taken_in: usize,
    /// The worst error, over the settled tail, of putting a sender's frame on a receiver's
    /// clock by the room clock ([`crate::room_clock`]), in 48 kHz samples.
    pub clock_error_samples: f64,
}

impl SimReport {
    /// Whether nothing was lost: documents equal and complete, and every frame the links let
    /// through in the settled tail delivered once, in time.
    pub fn ok(&self) -> bool {
        self.converged
            && self.lost_edits.is_empty()
            && self.audio.values().all(|a| a.missing == 0 && a.through > 0)
    }
}

/// The settled tail's audio, by (sender, receiver): what the links let through, and what the
/// receiver handed on and how long after it was sent.
#[derive(Default)]
pub(super) struct AudioLedger {
    through: BTreeMap<(usize, usize), BTreeSet<u64>>,
    delivered: BTreeMap<(usize, usize), Vec<(u64, Duration)>>,
}

impl AudioLedger {
    pub(super) fn let_through(&mut self, from: usize, to: usize, media: u64) {
        self.through.entry((from, to)).or_default().insert(media);
    }

    pub(super) fn handed_on(&mut self, from: usize, to: usize, media: u64, took: Duration) {
        self.delivered
            .entry((from, to))
            .or_default()
            .push((media, took));
    }

    /// Frames from `from` at `to` against a playout `depth` behind the sender.
    fn check(&mut self, from: usize, to: usize, depth: Duration) -> AudioCheck {
        let through = self.through.remove(&(from, to)).unwrap_or_default();
        let got = self.delivered.remove(&(from, to)).unwrap_or_default();
        let late = got.iter().filter(|(_, took)| *took > depth).count();
        let played: BTreeSet<u64> = got
            .iter()
            .filter(|(_, took)| *took <= depth)
            .map(|(m, _)| *m)
            .collect();
        let twice = got.len() - got.iter().map(|(m, _)| m).collect::<BTreeSet<_>>().len();
        AudioCheck {
            through: through.len(),
            delivered: played.len(),
            late,
            twice,
            missing: through.difference(&played).count(),
        }
    }
}

/// A member's edits that must survive: its index, its labels, its tracks and their notes.
type OwnEdits = (usize, Vec<String>, Vec<(String, usize)>);

/// What the honest members hold at the end.
pub(super) struct Honest {
    pub(super) converged: bool,
    pub(super) lost_edits: Vec<String>,
    pub(super) audio: BTreeMap<(usize, usize), AudioCheck>,
    pub(super) refused: u64,
    pub(super) replayed: u64,
}

/// Compares the honest members (the first `honest`) and accounts their audio.
pub(super) fn report(
    members: &mut [Member],
    honest: usize,
    ledger: &mut AudioLedger,
    depth: Duration,
) -> Honest {
    let members = &mut members[..honest];
    let mut lost = Vec::new();
    let mut saved = Vec::new();
    let mut heads = Vec::new();
    let owners: Vec<OwnEdits> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (i, m.own.clone(), m.tracks.clone()))
        .collect();
    for m in members.iter_mut() {
        let doc = m.doc.doc();
        let chart = doc.chart();
        let markers: BTreeSet<String> = doc.markers().into_iter().map(|(_, l)| l).collect();
        for (i, own, tracks) in &owners {
            for label in own {
                if !markers.contains(label) && !chart.split_whitespace().any(|w| w == label) {
                    lost.push(format!("m{i}: {label}"));
                }
            }
            for (track, notes) in tracks {
                let held = doc.notes(track).len();
                if held != *notes {
                    lost.push(format!("m{i}: track {track} holds {held} of {notes} notes"));
                }
            }
        }
        heads.push(doc.heads());
        saved.push(doc.canonical_bytes());
    }
    lost.sort();
    lost.dedup();
    let same_heads = heads.windows(2).all(|w| w[0] == w[1]);
    let same_bytes = saved.windows(2).all(|w| w[0] == w[1]);
    let mut audio = BTreeMap::new();
    for from in 0..honest {
        for to in (0..honest).filter(|&to| to != from) {
            audio.insert((from, to), ledger.check(from, to, depth));
        }
    }
    let mut refused = [0; 2];
    for m in members.iter() {
        let c = &m.counters;
        let replayed = c.replayed.load(Relaxed);
        refused[0] +=
            c.forged.load(Relaxed) + replayed + c.unkeyed.load(Relaxed) + c.malformed.load(Relaxed);
        refused[1] += replayed;
    }
    Honest {
        converged: same_heads && same_bytes,
        lost_edits: lost,
        audio,
        refused: refused[0],
        replayed: refused[1],
    }
}
