//! Presence: who is in the room and what they are doing right now. Ephemeral — never in the
//! session document, never saved. Each member broadcasts its own state, sealed under its
//! current epoch's key (only members it granted that key read it), at most [`MAX_RATE_HZ`] times a second and at least once a second; a
//! member not heard from for [`PRESENCE_TIMEOUT`] is shown as gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::wire::{ParticipantId, StemId};

/// Updates per second, at most, from one member.
pub const MAX_RATE_HZ: u32 = 10;
/// Sent even when nothing changed, so silence means gone.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silent this long: shown as gone.
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(3);
/// Silent this long: forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(120);
/// Senders a loss report names at most.
const MAX_LOSS_REPORTS: usize = 64;
/// Longest name, instrument or track id kept from a peer.
const MAX_TEXT: usize = 64;
/// Named stems kept from a peer.
const MAX_STEMS: usize = 16;

/// What a member shows the others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Display name.
    pub name: String,
    /// Instrument.
    pub instrument: String,
    /// The track (document id) this member plays.
    pub track: Option<String>,
    /// Chart cursor and selection end, in characters, while the chart has focus.
    pub cursor: Option<(u32, u32)>,
    /// Typing in the chart.
    pub typing: bool,
    /// Peak input level, 0–1.
    pub level: f32,
    /// What each sender's audio lost on its way to us lately, ‰, before redundancy: how each
    /// sender learns what its listeners lose.
    pub heard_loss: Vec<(ParticipantId, u16)>,
    /// How far each sender's audio queued on its way to us lately, ms: how a sender learns
    /// that it sends more than a listener's downlink carries.
    pub heard_queue: Vec<(ParticipantId, u16)>,
    /// The stems this member sends, by name ("drums", "bass"): one person, several tracks.
    pub stems: Vec<(StemId, String)>,
}

impl Presence {
    /// Bounds what a peer may make us store or draw.
    fn sanitised(mut self) -> Self {
        fn cut(s: &mut String) {
            if let Some((i, _)) = s.char_indices().nth(MAX_TEXT) {
                s.truncate(i);
            }
        }
        cut(&mut self.name);
        cut(&mut self.instrument);
        if let Some(t) = &mut self.track {
            cut(t);
        }
        self.heard_loss.truncate(MAX_LOSS_REPORTS);
        self.heard_queue.truncate(MAX_LOSS_REPORTS);
        self.stems.truncate(MAX_STEMS);
        for (_, name) in &mut self.stems {
            cut(name);
        }
        for (_, permille) in &mut self.heard_loss {
            *permille = (*permille).min(1000);
        }
        self.level = if self.level.is_finite() {
            self.level.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }
}

/// The plaintext of a presence message: a counter against replays, then the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceUpdate {
    /// Increases with every update a member sends.
    pub seq: u64,
    /// The state.
    pub presence: Presence,
}

/// The name `p` gave its stem `stem`, in a presence list, if it named it.
pub fn stem_name(shown: &[PeerPresence], p: ParticipantId, stem: StemId) -> Option<String> {
    let member = shown.iter().find(|x| x.participant == p)?;
    let named = member.presence.stems.iter().find(|(s, _)| *s == stem)?;
    Some(named.1.clone())
}

/// Another member's presence as we last heard it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerPresence {
    /// Who.
    pub participant: ParticipantId,
    /// What they showed.
    pub presence: Presence,
    /// Since we last heard from them.
    pub age: Duration,
    /// Silent past [`PRESENCE_TIMEOUT`].
    pub gone: bool,
}

/// Everyone's presence as received.
#[derive(Debug, Default)]
pub struct PresenceBook {
    peers: BTreeMap<ParticipantId, (u64, Presence, Instant)>,
}

impl PresenceBook {
    /// Takes an update; stale or replayed ones (not newer than what we hold) are ignored.
    /// Returns whether it was taken.
    pub fn receive(&mut self, from: ParticipantId, update: PresenceUpdate, now: Instant) -> bool {
        if let Some((seq, _, _)) = self.peers.get(&from) {
            if update.seq <= *seq {
                return false;
            }
        }
        self.peers
            .insert(from, (update.seq, update.presence.sanitised(), now));
        true
    }

    /// Everyone heard from lately, the gone ones marked; long-silent ones are forgotten.
    pub fn list(&mut self, now: Instant) -> Vec<PeerPresence> {
        self.peers
            .retain(|_, (_, _, seen)| now.saturating_duration_since(*seen) < FORGET_AFTER);
        self.peers
            .iter()
            .map(|(p, (_, presence, seen))| {
                let age = now.saturating_duration_since(*seen);
                PeerPresence {
                    participant: *p,
                    presence: presence.clone(),
                    age,
                    gone: age > PRESENCE_TIMEOUT,
                }
            })
            .collect()
    }
}

/// Our own presence and when to send it.
#[derive(Debug, Default)]
pub struct PresenceOutbox {
    current: Presence,
    seq: u64,
    dirty: bool,
    last_sent: Option<Instant>,
}

impl PresenceOutbox {
    /// Starts with `p`, sent at the first opportunity.
    pub fn new(p: Presence) -> Self {
        Self {
            current: p,
            ..Self::default()
        }
    }

    /// Replaces our state (all but the loss and queue reports, which are ours to keep); sent
    /// at the next opportunity the rate allows.
    pub fn set(&mut self, mut p: Presence) {
        p.heard_loss.clone_from(&self.current.heard_loss);
        p.heard_queue.clone_from(&self.current.heard_queue);
        if p != self.current {
            self.current = p;
            self.dirty = true;
        }
    }

    /// The update to send now, if one is due: a change no sooner than 1/[`MAX_RATE_HZ`] after
    /// the last, or a heartbeat.
    pub fn due(&mut self, now: Instant) -> Option<PresenceUpdate> {
        let since = self.last_sent.map(|t| now.saturating_duration_since(t));
        let min_gap = Duration::from_secs(1) / MAX_RATE_HZ;
        let send = match since {
            None => true,
            Some(s) => (self.dirty && s >= min_gap) || s >= HEARTBEAT,
        };
        if !send {
            return None;
        }
        self.seq += 1;
        self.dirty = false;
        self.last_sent = Some(now);
        Some(PresenceUpdate {
            seq: self.seq,
            presence: self.current.clone(),
        })
    }

    /// Replaces our loss report; it goes with the next update.
    pub fn set_loss(&mut self, report: Vec<(ParticipantId, u16)>) {
        if report != self.current.heard_loss {
            self.current.heard_loss = report;
            self.dirty = true;
        }
    }

    /// Replaces our queue report; it goes with the next update.
    pub fn set_queue(&mut self, report: Vec<(ParticipantId, u16)>) {
        if report != self.current.heard_queue {
            self.current.heard_queue = report;
            self.dirty = true;
        }
    }

    /// Sends a fresh update at the next tick (a new member needs to see us now).
    pub fn touch(&mut self) {
        self.last_sent = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Presence {
        Presence {
            name: name.into(),
            ..Presence::default()
        }
    }

    #[test]
    fn the_outbox_holds_to_ten_updates_a_second_and_a_heartbeat() {
        let t0 = Instant::now();
        let mut out = PresenceOutbox::default();
        let mut sent = 0;
        // Change every 10 ms for two seconds.
        for i in 0..200u32 {
            out.set(Presence {
                level: i as f32 / 200.0,
                ..named("a")
            });
            if out
                .due(t0 + Duration::from_millis(10 * u64::from(i)))
                .is_some()
            {
                sent += 1;
            }
        }
        assert!((19..=21).contains(&sent), "{sent} updates in 2 s");
        // Nothing changes: one heartbeat a second.
        let quiet = (200..400u32)
            .filter(|i| {
                out.due(t0 + Duration::from_millis(10 * u64::from(*i)))
                    .is_some()
            })
            .count();
        assert_eq!(quiet, 2);
    }

    #[test]
    fn the_book_ignores_replays_marks_the_silent_gone_and_bounds_text() {
        let t0 = Instant::now();
        let mut book = PresenceBook::default();
        let a = ParticipantId(1);
        let long = "x".repeat(1000);
        let up = |seq, name: &str| PresenceUpdate {
            seq,
            presence: Presence {
                level: f32::NAN,
                stems: (0..100).map(|i| (StemId(i), name.to_owned())).collect(),
                ..named(name)
            },
        };
        assert!(book.receive(a, up(2, &long), t0));
        assert!(!book.receive(a, up(2, "replayed"), t0));
        assert!(!book.receive(a, up(1, "older"), t0));
        let l = book.list(t0 + Duration::from_secs(1));
        assert_eq!(l[0].presence.name.chars().count(), MAX_TEXT);
        assert_eq!(l[0].presence.stems.len(), MAX_STEMS);
        assert_eq!(l[0].presence.stems[3].1.chars().count(), MAX_TEXT);
        assert_eq!(l[0].presence.level, 0.0);
        assert!(!l[0].gone);
        assert!(book.list(t0 + Duration::from_secs(4))[0].gone);
        assert!(book.list(t0 + Duration::from_secs(600)).is_empty());
    }
}
