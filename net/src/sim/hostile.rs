//! Hostile actors, each holding what it really holds: a relay that sees every sealed byte and
//! the room's verifier; a member that holds the room secret, its own keys and whatever it is
//! sent. They send whatever bytes they like, replay, reorder and withhold.

use std::time::{Duration, Instant};

use super::world::{Delivery, Down, Up, World};
use crate::core::member::Transmit;
use crate::core::relay::ConnId;
use crate::core::sync::DocReplica;
use crate::doc::SessionDoc;
use crate::presence::{Presence, PresenceUpdate};
use crate::wire::{ClientMessage, MemberId, PeerMessage, RelayMessage};

/// What the colluding insider's forgeries say, so a member taken in shows it.
pub(super) const FORGED: &str = "FORGED";

/// Who attacks the room, and how.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hostile {
    /// The last member is an insider: it sends random bytes as control messages and as
    /// audio, replays what it is sent as its own, speaks as other members over its direct
    /// paths (sealing with the keys they granted it), and never answers a document sync.
    pub member: bool,
    /// The relay is on the insider's side: it delivers, as coming from another member, key
    /// announcements, key grants (the insider's own key), presence ("FORGED"), document
    /// messages (a chart saying "FORGED") and audio the insider makes in that member's name
    /// with everything it holds.
    pub collude: bool,
    /// The relay sends this share of the datagrams and members' control messages it forwards
    /// again, later, to the same member or another.
    pub relay_replay: f64,
    /// The relay adds this share of datagrams and control messages of random bytes, said to
    /// come from some member.
    pub relay_inject: f64,
    /// The relay holds back everything for one member this long, once, then lets the control
    /// messages go (the datagrams it drops).
    pub relay_withhold: Duration,
}

/// A random length of random bytes.
fn garbage(w: &mut World) -> Vec<u8> {
    let len = 1 + w.rng.below(200) as usize;
    (0..len).map(|_| w.rng.below(256) as u8).collect()
}

impl World {
    fn tricks(&self) -> Hostile {
        self.config.hostile
    }

    /// The insider, if there is one.
    pub(super) fn insider(&self) -> Option<usize> {
        self.tricks().member.then(|| self.members.len() - 1)
    }

    /// The member the relay withholds from, and until when (from the chaos' middle).
    pub(super) fn withheld(&self, i: usize) -> Option<Instant> {
        let h = self.tricks();
        let from = self.start + self.config.chaos / 2;
        let until = from + h.relay_withhold;
        (h.relay_withhold > Duration::ZERO && i == 0 && (from..until).contains(&self.now))
            .then_some(until)
    }

    /// What the relay does beside forwarding `item` to member `i`.
    pub(super) fn relay_datagram_tricks(&mut self, i: usize, item: &[u8]) {
        let h = self.tricks();
        if self.rng.chance(h.relay_replay) {
            let to = if self.rng.chance(0.5) {
                i
            } else {
                self.rng.below(self.members.len() as u64) as usize
            };
            if let Some(conn) = self.members[to].conn {
                let at = self.now + Duration::from_millis(50 + self.rng.below(2000));
                let what = Delivery::ToMember(to, conn, Down::Datagram(item.to_vec()));
                self.schedule(at, what);
            }
        }
        if self.rng.chance(h.relay_inject) {
            if let Some(conn) = self.members[i].conn {
                let bytes = garbage(self);
                self.schedule(self.now, Delivery::ToMember(i, conn, Down::Datagram(bytes)));
            }
        }
    }

    /// What the relay adds to the control stream to member `i`, beside `msg`: a copy of a
    /// member's message sent again later, to `i` or another member, and random bytes.
    pub(super) fn relay_control_tricks(
        &mut self,
        i: usize,
        conn: ConnId,
        at: Instant,
        msg: &RelayMessage,
    ) {
        let h = self.tricks();
        if matches!(msg, RelayMessage::From { .. }) && self.rng.chance(h.relay_replay) {
            let to = if self.rng.chance(0.5) {
                i
            } else {
                self.rng.below(self.members.len() as u64) as usize
            };
            if let Some(to_conn) = self.members[to].conn {
                let later = at + Duration::from_millis(50 + self.rng.below(2000));
                let what = Delivery::ToMember(to, to_conn, Down::Msg(msg.clone()));
                self.schedule(later, what);
            }
        }
        if !self.rng.chance(h.relay_inject) {
            return;
        }
        let from = MemberId(self.rng.below(self.members.len() as u64 + 2) as u16);
        let body = garbage(self);
        let what = Delivery::ToMember(i, conn, Down::Msg(RelayMessage::From { from, body }));
        self.schedule(at, what);
    }

    /// The insider's doings once per frame: random bytes as audio and as a control message,
    /// and what it was sent lately replayed as its own.
    pub(super) fn insider_frame(&mut self, i: usize) {
        let Some(conn) = self.members[i].conn.filter(|_| self.members[i].joined) else {
            return;
        };
        let junk = garbage(self);
        self.schedule(self.now, Delivery::ToRelay(conn, Up::Datagram(junk)));
        self.forge_direct_audio(i);
        if self.tricks().collude && self.rng.chance(0.01) {
            self.forge_through_relay(i);
        }
        let heard = std::mem::take(&mut self.members[i].heard);
        for d in heard {
            // Without the sender prefix the relay added: it forwards it as the insider's own.
            let body = crate::wire::decode_sender(&d).map_or(d.clone(), |(_, rest)| rest.to_vec());
            self.schedule(self.now, Delivery::ToRelay(conn, Up::Datagram(body)));
        }
        let to = self
            .rng
            .chance(0.5)
            .then(|| MemberId(self.rng.below(self.members.len() as u64) as u16));
        let body = if self.rng.chance(0.5) {
            garbage(self)
        } else {
            std::mem::take(&mut self.members[i].heard_control).unwrap_or_default()
        };
        self.up_control(i, conn, Up::Msg(ClientMessage::Send { to, body }));
    }

    /// The insider makes a message in a victim's name, and the relay hands it to another
    /// member as the victim's.
    fn forge_through_relay(&mut self, i: usize) {
        let n = self.members.len() as u64;
        let (v, t) = (self.rng.below(n) as usize, self.rng.below(n) as usize);
        if v == i || t == i || v == t {
            return;
        }
        let (Some(vid), Some(tid)) = (self.members[v].core.me(), self.members[t].core.me()) else {
            return;
        };
        let Some(conn) = self.members[t].conn else {
            return;
        };
        let to = self.members[t].participant;
        let kind = self.rng.below(5);
        if kind == 3 {
            self.forge_audio_through_relay(i, (vid, t, conn));
            return;
        }
        let mut rng = self.rng.fork();
        let Some(keys) = self.members[i].core.danger_keys_mut() else {
            return;
        };
        let msgs = match kind {
            0 => vec![PeerMessage::Announce(keys.danger_announce_as(vid))],
            4 => match keys.danger_grant_as(vid, tid) {
                Some(g) => vec![PeerMessage::Grant(g)],
                None => return,
            },
            1 => {
                let lie = PresenceUpdate {
                    seq: u64::MAX / 2,
                    presence: Presence {
                        name: FORGED.into(),
                        ..Presence::default()
                    },
                };
                let plain = postcard::to_stdvec(&lie).unwrap_or_default();
                match keys.danger_presence_as(vid, &plain, &mut rng) {
                    Some((epoch, nonce, sealed)) => vec![PeerMessage::Presence {
                        epoch,
                        nonce,
                        sealed,
                    }],
                    None => return,
                }
            }
            _ => {
                let Some(key) = keys.danger_doc_sealer_as(vid, tid) else {
                    return;
                };
                let Ok(doc) = SessionDoc::new() else { return };
                let mut fork = DocReplica::new(doc, to);
                if fork.doc().chart_append(FORGED).is_err() {
                    return;
                }
                fork.outgoing(vid, to, (&key.0, key.1), &mut rng)
                    .unwrap_or_default()
            }
        };
        for m in msgs {
            let body = crate::wire::encode_peer(&m);
            let msg = RelayMessage::From { from: vid, body };
            self.schedule(self.now, Delivery::ToMember(t, conn, Down::Msg(msg)));
        }
    }

    /// The insider seals a frame as `vid` with the sender key `vid` granted it, behind MACs it
    /// makes with its own pairwise keys (a receiver that took any MAC would take it), and the
    /// relay delivers it to member `t` as `vid`'s. Its payload is no member's, so the report
    /// fails the run if anyone plays it.
    fn forge_audio_through_relay(&mut self, i: usize, (vid, t, conn): (MemberId, usize, ConnId)) {
        let Some(keys) = self.members[i].core.danger_keys_mut() else {
            return;
        };
        let mut d = Vec::new();
        crate::wire::encode_sender(vid, &mut d);
        let start = d.len();
        if !keys.danger_seal_as(vid, crate::wire::StemId(0), 3, 0, &[0xEE; 40], &mut d) {
            return;
        }
        let header = crate::wire::AudioHeader::decode(&d[start..]).ok();
        let Some(seq) = header.map(|h| u32::from(h.seq_low)) else {
            return;
        };
        keys.seal_audio_macs(&mut d, start, seq);
        self.schedule(self.now, Delivery::ToMember(t, conn, Down::Datagram(d)));
    }

    /// Whether the insider keeps `t` to itself (it answers no document sync).
    pub(super) fn insider_withholds(&self, i: usize, t: &Transmit) -> bool {
        self.insider() == Some(i)
            && matches!(t, Transmit::Relay(ClientMessage::Send { to: Some(_), .. }))
    }
}
