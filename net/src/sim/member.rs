//! One simulated member: its core, its document, and what the run remembers of it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::link::Link;
use super::rng::DangerSeededRng;
use super::world::SimConfig;
use crate::core::member::{RoomCore, RoomSetup};
use crate::core::relay::ConnId;
use crate::core::sync::DocReplica;
use crate::crypto::MemberKey;
use crate::crypto::RotationPolicy;
use crate::doc::{Note, SessionDoc};
use crate::invite::RoomId;
use crate::presence::Presence;
use crate::session::SessionCounters;
use crate::wire::ParticipantId;
use crate::RoomSecret;

/// One member: its core, its document and what the run remembers of it.
pub(super) struct Member {
    pub(super) core: RoomCore,
    pub(super) doc: DocReplica,
    pub(super) participant: ParticipantId,
    /// Its member key, from the seed: the participant id is this key's.
    pub(super) key: Arc<MemberKey>,
    pub(super) conn: Option<ConnId>,
    pub(super) binding: [u8; 32],
    pub(super) joined: bool,
    /// Times it was welcomed into the room, and when last.
    pub(super) welcomes: usize,
    pub(super) joined_at: Instant,
    /// Cut off until then: no connection is made before.
    pub(super) offline_until: Instant,
    /// When to try connecting next, if not connected.
    pub(super) reconnect_at: Option<Instant>,
    /// When it last lost its connection.
    pub(super) lost_at: Instant,
    /// Its core's counters (what it refused).
    pub(super) counters: Arc<SessionCounters>,
    /// What it was sent lately, if it is the insider (to replay as its own).
    pub(super) heard: Vec<Vec<u8>>,
    pub(super) heard_control: Option<Vec<u8>>,
    /// Markers, chart words, tracks it added (all must survive), and its notes per track.
    pub(super) own: Vec<String>,
    pub(super) tracks: Vec<(String, usize)>,
    pub(super) edits_at: VecDeque<Instant>,
    pub(super) next_frame: Instant,
    pub(super) media: u64,
    /// (low sequence number, media time) of what it sent lately, for reading forwarded
    /// headers.
    pub(super) sent: VecDeque<(u16, u64, Instant)>,
    /// Last time a frame arrived from each sender (for gaps).
    pub(super) last_heard: BTreeMap<ParticipantId, Instant>,
    pub(super) rng: DangerSeededRng,
    /// Control messages to it arrive in order: not before this.
    pub(super) down_ready: Instant,
    pub(super) up_ready: Instant,
    pub(super) up: Link,
    pub(super) down: Link,
}

/// When a member edits: in bursts of one to eight changes a few tens of milliseconds apart
/// (typing a chord, dragging the tempo), the bursts anywhere in the chaos.
pub(super) fn edit_times(
    rng: &mut DangerSeededRng,
    start: Instant,
    chaos: Duration,
    n: usize,
) -> Vec<Instant> {
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let mut at = start + chaos.mul_f64(rng.unit());
        for _ in 0..(1 + rng.below(8)).min((n - times.len()) as u64) {
            times.push(at);
            at += Duration::from_millis(5 + rng.below(30));
        }
    }
    times
}

impl Member {
    /// Member `i`, not yet connected.
    pub(super) fn new(
        i: usize,
        config: &SimConfig,
        secret: &RoomSecret,
        room: &RoomId,
        start: Instant,
        mut rng: DangerSeededRng,
    ) -> Self {
        let key = Arc::new(MemberKey::generate(&mut rng));
        let participant = key.participant();
        let counters = Arc::new(SessionCounters::default());
        let mut doc = SessionDoc::new().expect("genesis document");
        // Distinct in its first bytes: ids of tracks and notes take the actor's prefix.
        doc.danger_replay_actor(&[i as u8 + 1; 16]);
        let mut edits = edit_times(&mut rng, start, config.chaos, config.edits_per_member);
        edits.sort();
        Self {
            core: RoomCore::new(
                RoomSetup {
                    identity: key.clone(),
                    presence: Presence {
                        name: format!("m{i}"),
                        ..Presence::default()
                    },
                    auth: secret.member_auth(room),
                    room: room.clone(),
                    rotation: RotationPolicy {
                        max_age: Duration::from_secs(4),
                        ..RotationPolicy::default()
                    },
                    force_relay: !config.direct,
                    rng: Box::new(rng.fork()),
                },
                counters.clone(),
            ),
            doc: DocReplica::new(doc, participant),
            participant,
            key,
            conn: None,
            binding: [0; 32],
            joined: false,
            welcomes: 0,
            joined_at: start,
            offline_until: start,
            lost_at: start,
            counters,
            heard: Vec::new(),
            heard_control: None,
            reconnect_at: Some(start + Duration::from_millis(rng.below(500))),
            own: Vec::new(),
            tracks: Vec::new(),
            edits_at: edits.into(),
            next_frame: start + config.frame.mul_f64(rng.unit()),
            media: 0,
            sent: VecDeque::new(),
            last_heard: BTreeMap::new(),
            down_ready: start,
            up_ready: start,
            up: Link::new(config.link),
            down: Link::new(config.link),
            rng,
        }
    }

    /// One random change to its document (it is member `i`); the set-like ones are remembered
    /// to check that they survive. Whether the core has something to send.
    pub(super) fn edit(&mut self, i: usize, now: Instant) -> bool {
        let m = self;
        let k = m.own.len() + m.tracks.len();
        let doc = m.doc.doc();
        let kind = m.rng.below(7);
        let label = format!("m{i}e{k}");
        let done = match kind {
            0 => doc.set_tempo(60.0 + m.rng.below(120) as f64),
            1 => doc.set_time_signature(["4/4", "3/4", "7/8", "6/8"][m.rng.below(4) as usize]),
            2 => {
                doc.set_key(["C major", "A minor", "F# minor", "Bb major"][m.rng.below(4) as usize])
            }
            3 => doc.add_track(&label, &format!("m{i}"), "keys").map(|id| {
                m.tracks.push((id, 0));
            }),
            4 if !m.tracks.is_empty() => {
                let t = m.rng.below(m.tracks.len() as u64) as usize;
                let note = Note {
                    pitch: 40 + m.rng.below(40) as i64,
                    start: m.rng.below(64) as f64,
                    length: 1.0,
                    velocity: 100,
                };
                doc.add_note(&m.tracks[t].0, note)
                    .map(|_| m.tracks[t].1 += 1)
            }
            5 => doc
                .chart_append(&format!(" {label}"))
                .map(|_| m.own.push(label)),
            _ => doc
                .add_marker(m.rng.below(256) as f64, &label)
                .map(|_| m.own.push(label)),
        };
        if done.is_ok() && m.joined {
            m.core.edited(now, &mut m.doc);
            return true;
        }
        false
    }
}
