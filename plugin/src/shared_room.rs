//! One room connection per person per process. Every plugin instance of a DAW process that
//! joins a room with the room's kept member key takes a *seat* in one shared session: the room
//! sees one participant, each sending instance a named stem of it (its own stem id), and no
//! instance hears the others of its process, since the relay never returns a participant's own
//! audio. What the room sees of the person is composed from the seats: the first sending
//! instance's name, every sending instance's stem, the loudest input.
//!
//! The session's role follows the seats: it listens only while every seat is receive-only, and
//! is joined again (same participant, the document as it stands) when that changes.

use std::sync::{Arc, Mutex, RwLock, Weak};

use echoel_net::crypto::MemberPublic;
use echoel_net::presence::Presence;
use echoel_net::session::{self, AudioFrame, LossProtection, SessionConfig, SessionError};
use echoel_net::session::{SessionHandle, SessionState};
use echoel_net::wire::{ParticipantId, Role, StemId};

/// Stems one person can send (the others keep at most 16 names of a member).
pub const MAX_SEATED_STEMS: u8 = 16;

/// Where a seat's share of the room's audio goes: its instance's engine.
pub trait FrameSink: Send + Sync {
    /// A frame the session opened, from `from`.
    fn deliver(&self, from: ParticipantId, frame: AudioFrame<'_>);
}

type Sinks = Arc<RwLock<Vec<(u64, Weak<dyn FrameSink>)>>>;

/// What makes two joins one connection: the same room of the same relay, the same person.
#[derive(PartialEq, Eq)]
struct RoomKey {
    host: String,
    port: u16,
    room: String,
    fingerprint: [u8; 32],
    member: MemberPublic,
}

impl RoomKey {
    fn of(config: &SessionConfig) -> Option<Self> {
        let i = &config.invite;
        Some(Self {
            host: i.host.clone(),
            port: i.port,
            room: i.room.as_str().to_owned(),
            fingerprint: i.fingerprint.0,
            member: config.identity.as_ref()?.public(),
        })
    }
}

/// One instance's part in the shared session.
struct SeatState {
    id: u64,
    /// `None`: receive-only.
    stem: Option<StemId>,
    stem_name: String,
    presence: Presence,
    protection: Option<LossProtection>,
}

/// The instances in a room and what they make of the person.
#[derive(Default)]
struct Roster {
    list: Vec<SeatState>,
    /// Stem ids given out in this session: a new instance gets one never used before while
    /// there is one, so nobody's jitter buffer mistakes it for the stream it replaces.
    used: u32,
    /// The next seat's number.
    next_id: u64,
}

impl Roster {
    fn role(&self) -> Role {
        if self.list.iter().any(|s| s.stem.is_some()) {
            Role::Performer
        } else {
            Role::Listener
        }
    }

    fn free_stem(&mut self) -> Option<StemId> {
        let taken = |id: u8| self.list.iter().any(|s| s.stem == Some(StemId(id)));
        let fresh = (0..MAX_SEATED_STEMS).find(|&i| self.used & (1 << i) == 0 && !taken(i));
        let id = fresh.or_else(|| (0..MAX_SEATED_STEMS).find(|&i| !taken(i)))?;
        self.used |= 1 << id;
        Some(StemId(id))
    }

    /// The seat that speaks for the person: the first that sends, else the first.
    fn lead(&self) -> Option<&SeatState> {
        self.list
            .iter()
            .find(|s| s.stem.is_some())
            .or(self.list.first())
    }

    fn presence(&self) -> Presence {
        let Some(lead) = self.lead() else {
            return Presence::default();
        };
        let mut p = Presence {
            level: 0.0,
            ..lead.presence.clone()
        };
        for s in &self.list {
            p.level = p.level.max(s.presence.level);
            if s.presence.typing || (p.cursor.is_none() && s.presence.cursor.is_some()) {
                p.cursor = s.presence.cursor;
                p.typing = s.presence.typing;
            }
        }
        p.stems = self.stems();
        p
    }

    /// Every sending seat's stem and its name, in stem order.
    fn stems(&self) -> Vec<(StemId, String)> {
        let mut stems: Vec<(StemId, String)> = self
            .list
            .iter()
            .filter_map(|s| Some((s.stem?, s.stem_name.clone())))
            .collect();
        stems.sort_unstable_by_key(|s| s.0);
        stems
    }
}

struct Seats {
    roster: Roster,
    /// What the session was joined with (the role as the roster last called for).
    config: SessionConfig,
    runtime: tokio::runtime::Handle,
}

/// A session several instances may sit in.
struct SharedRoom {
    key: Option<RoomKey>,
    session: RwLock<SessionHandle>,
    sinks: Sinks,
    seats: Mutex<Seats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared rooms of this process; a room goes when its last seat does.
static ROOMS: Mutex<Vec<Weak<SharedRoom>>> = Mutex::new(Vec::new());

fn start_session(config: SessionConfig, sinks: &Sinks) -> Result<SessionHandle, SessionError> {
    let sinks = sinks.clone();
    session::start(config, move |from, frame| {
        for (_, sink) in sinks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Some(sink) = sink.upgrade() {
                sink.deliver(from, frame);
            }
        }
    })
}

impl SharedRoom {
    fn session(&self) -> SessionHandle {
        self.session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Another instance can sit here: the session still runs, on the same secret.
    fn takes(&self, config: &SessionConfig) -> bool {
        let s = self.session();
        let stopped = matches!(
            s.status().state,
            SessionState::Refused(_) | SessionState::WrongRelay
        );
        !stopped && s.invite().secret == config.invite.secret
    }

    /// After the seats changed: the role they call for (joining again if it changed), and what
    /// the room sees of the person.
    fn seats_changed(&self, seats: &mut Seats) -> Result<(), SessionError> {
        let role = seats.roster.role();
        if !seats.roster.list.is_empty() && role != seats.config.role {
            let old = self.session();
            let mut config = seats.config.clone();
            config.role = role;
            config.initial_doc = Some(old.read_doc(|d| d.save()));
            let fresh = {
                let _entered = seats.runtime.enter();
                start_session(config.clone(), &self.sinks)?
            };
            old.stop();
            seats.config = config;
            *self.session.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        self.publish(seats);
        Ok(())
    }

    /// Tells the session what the seats make of the person (it sends only what changed).
    fn publish(&self, seats: &Seats) {
        let session = self.session();
        session.set_presence(seats.roster.presence());
        if let Some(p) = seats.roster.lead().and_then(|s| s.protection) {
            session.set_loss_protection(p);
        }
    }
}

impl Drop for SharedRoom {
    fn drop(&mut self) {
        self.session().stop();
    }
}

/// One instance's seat in a room; leaving it (dropping) gives its stem back, and leaves the
/// room with the last seat.
pub struct Seat {
    room: Arc<SharedRoom>,
    id: u64,
    stem: Option<StemId>,
}

impl Seat {
    /// Takes a seat in the room of `config` on `runtime`: beside this process's other
    /// instances of the same person in that room when `share` (and `config` names the person's
    /// kept key), else in a session of its own. A receive-only instance (`config.role` is
    /// [`Role::Listener`]) sends nothing; frames heard go to `sink`.
    pub fn take(
        config: SessionConfig,
        runtime: &tokio::runtime::Handle,
        sink: Weak<dyn FrameSink>,
        share: bool,
    ) -> Result<Self, SessionError> {
        let key = share.then(|| RoomKey::of(&config)).flatten();
        let listening = config.role == Role::Listener;
        let mut rooms = lock(&ROOMS);
        rooms.retain(|r| r.strong_count() > 0);
        let found = key.as_ref().and_then(|key| {
            rooms
                .iter()
                .filter_map(Weak::upgrade)
                .find(|r| r.key.as_ref() == Some(key) && r.takes(&config))
        });
        let room = match found {
            Some(room) => room,
            None => {
                let sinks = Sinks::default();
                let session = {
                    let _entered = runtime.enter();
                    start_session(config.clone(), &sinks)?
                };
                let room = Arc::new(SharedRoom {
                    key,
                    session: RwLock::new(session),
                    sinks,
                    seats: Mutex::new(Seats {
                        roster: Roster::default(),
                        config: config.clone(),
                        runtime: runtime.clone(),
                    }),
                });
                if room.key.is_some() {
                    rooms.push(Arc::downgrade(&room));
                }
                room
            }
        };
        drop(rooms);
        let mut seats = lock(&room.seats);
        let id = seats.roster.next_id;
        seats.roster.next_id += 1;
        let stem = if listening {
            None
        } else {
            Some(seats.roster.free_stem().ok_or_else(|| {
                SessionError::Setup(format!(
                    "this DAW already sends {MAX_SEATED_STEMS} stems to the room"
                ))
            })?)
        };
        seats.roster.list.push(SeatState {
            id,
            stem,
            stem_name: String::new(),
            presence: Presence {
                name: config.name.clone(),
                ..Presence::default()
            },
            protection: None,
        });
        room.sinks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, sink));
        let changed = room.seats_changed(&mut seats);
        drop(seats);
        let seat = Self { room, id, stem };
        changed.map(|()| seat)
    }

    /// The session as it stands (a change of role joins again: ask each time).
    pub fn session(&self) -> SessionHandle {
        self.room.session()
    }

    /// The stem this instance sends as; `None` when it only listens.
    pub fn stem(&self) -> Option<StemId> {
        self.stem
    }

    /// Sends one of this instance's frames as its stem (nothing when it only listens).
    pub fn send_audio(&self, media_time: u64, payload: &[u8]) {
        if let Some(stem) = self.stem {
            self.session().send_audio(stem, media_time, payload);
        }
    }

    /// This instance's part of what the room sees: its presence and its stem's name.
    pub fn set_presence(&self, presence: Presence, stem_name: &str) {
        self.update(|s| {
            s.presence = presence;
            s.stem_name = stem_name.to_owned();
        });
    }

    /// This instance's loss protection setting; the room follows the lead instance's.
    pub fn set_loss_protection(&self, p: LossProtection) {
        self.update(|s| s.protection = Some(p));
    }

    /// The names of the stems this person sends from this process, in stem order.
    pub fn stems(&self) -> Vec<String> {
        let seats = lock(&self.room.seats);
        seats.roster.stems().into_iter().map(|(_, n)| n).collect()
    }

    fn update(&self, change: impl FnOnce(&mut SeatState)) {
        let mut seats = lock(&self.room.seats);
        if let Some(s) = seats.roster.list.iter_mut().find(|s| s.id == self.id) {
            change(s);
        }
        self.room.publish(&seats);
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.room
            .sinks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.id);
        let mut seats = lock(&self.room.seats);
        seats.roster.list.retain(|s| s.id != self.id);
        if let Err(e) = self.room.seats_changed(&mut seats) {
            tracing::warn!("the room cannot be joined again after an instance left it: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(id: u64, stem: Option<StemId>, name: &str, level: f32) -> SeatState {
        SeatState {
            id,
            stem,
            stem_name: name.into(),
            presence: Presence {
                name: format!("instance {id}"),
                level,
                ..Presence::default()
            },
            protection: None,
        }
    }

    #[test]
    fn a_new_sender_gets_a_stem_never_used_in_the_session_while_there_is_one() {
        let mut r = Roster::default();
        let a = r.free_stem().unwrap();
        r.list.push(seat(0, Some(a), "a", 0.0));
        let b = r.free_stem().unwrap();
        assert_eq!((a, b), (StemId(0), StemId(1)));
        // `a` leaves: the next sender does not take its stream over.
        r.list.retain(|s| s.id != 0);
        assert_eq!(r.free_stem(), Some(StemId(2)));
        // Once every id was used, a free one comes back; with all taken, none.
        r.used = u32::MAX;
        assert_eq!(r.free_stem(), Some(StemId(0)));
        r.list = (0..MAX_SEATED_STEMS)
            .map(|i| seat(u64::from(i), Some(StemId(i)), "x", 0.0))
            .collect();
        assert_eq!(r.free_stem(), None);
    }

    #[test]
    fn the_person_is_the_first_sender_with_every_senders_stem_and_the_loudest_input() {
        let mut r = Roster::default();
        r.list.push(seat(0, None, "", 0.9));
        assert_eq!(r.role(), Role::Listener);
        assert!(r.presence().stems.is_empty());
        r.list.push(seat(1, Some(StemId(1)), "bass", 0.2));
        r.list.push(seat(2, Some(StemId(0)), "drums", 0.1));
        let p = r.presence();
        assert_eq!(r.role(), Role::Performer);
        assert_eq!(p.name, "instance 1", "the first sending instance speaks");
        assert_eq!(
            p.stems,
            [
                (StemId(0), "drums".to_owned()),
                (StemId(1), "bass".to_owned())
            ]
        );
        assert_eq!(p.level, 0.9);
    }
}
