//! Member cores in a room whose relay is simulated in-process, on a virtual clock.

use std::net::SocketAddr;

use super::*;
use crate::crypto::DocEnds;
use crate::doc::SessionDoc;
use crate::invite::RoomId;
use crate::sim::DangerSeededRng;
use crate::RoomSecret;
use rand_core::RngCore;

/// Members and a stand-in relay: it forwards `Send` as `From` and tells joins and leaves.
struct Band {
    cores: Vec<RoomCore>,
    docs: Vec<DocReplica>,
    /// Each member's id while joined.
    ids: Vec<Option<MemberId>>,
    now: Instant,
    next_id: u16,
    /// Loses a control message (from, to) when it returns true (a relay connection dropping
    /// mid-flight).
    lose: Box<dyn FnMut(usize, usize) -> bool>,
    /// Every control message sent by the relay, as the relay holds it: sender, recipient
    /// (none: all) and body.
    overheard: Vec<(usize, Option<MemberId>, Vec<u8>)>,
}

fn secret() -> RoomSecret {
    RoomSecret::from_bytes([9; 32])
}

fn room() -> RoomId {
    RoomId::new("band").unwrap()
}

fn core(participant: u64, rotation: RotationPolicy) -> RoomCore {
    core_with(participant, rotation, &secret())
}

/// Member `participant`'s core, holding the room secret `s`.
fn core_with(participant: u64, rotation: RotationPolicy, s: &RoomSecret) -> RoomCore {
    RoomCore::new(
        RoomSetup {
            identity: key(participant as usize),
            presence: Presence {
                name: format!("m{participant}"),
                ..Presence::default()
            },
            auth: s.member_auth(&room()),
            room: room(),
            rotation,
            force_relay: false,
            rng: Box::new(DangerSeededRng::new(participant)),
        },
        Arc::default(),
    )
}

/// Member `i`'s key.
fn key(i: usize) -> Arc<crate::crypto::MemberKey> {
    Arc::new(crate::crypto::MemberKey::from_seed(&[i as u8 + 1; 32]))
}

/// Member `i`'s participant id: its key's.
fn pid(i: usize) -> ParticipantId {
    key(i).participant()
}

fn doc(i: usize) -> DocReplica {
    DocReplica::new(SessionDoc::new().unwrap(), pid(i))
}

fn info(i: usize, id: MemberId) -> MemberInfo {
    MemberInfo {
        id,
        participant: pid(i),
        member: key(i).public(),
        name: format!("m{i}"),
        observed: SocketAddr::from(([192, 0, 2, 1], 5000 + i as u16)),
    }
}

impl Band {
    fn new(n: usize, rotation: RotationPolicy) -> Self {
        Self {
            cores: (0..n).map(|i| core(i as u64, rotation)).collect(),
            docs: (0..n).map(doc).collect(),
            ids: vec![None; n],
            now: Instant::now(),
            next_id: 0,
            lose: Box::new(|_, _| false),
            overheard: Vec::new(),
        }
    }

    fn index_of(&self, id: MemberId) -> Option<usize> {
        self.ids.iter().position(|m| *m == Some(id))
    }

    /// Member `i` joins with the next free id (as after a relay restart: ids are new).
    fn join(&mut self, i: usize) -> MemberId {
        let id = MemberId(self.next_id);
        self.next_id += 1;
        let others: Vec<MemberInfo> = self
            .ids
            .iter()
            .enumerate()
            .filter_map(|(k, m)| m.map(|m| info(k, m)))
            .collect();
        let now = self.now;
        self.cores[i].handle_welcome(now, id, others, &mut self.docs[i]);
        for k in 0..self.cores.len() {
            if self.ids[k].is_some() {
                let msg = RelayMessage::Joined(info(i, id));
                self.cores[k].handle_relay(now, msg, &mut self.docs[k]);
            }
        }
        self.ids[i] = Some(id);
        self.run();
        id
    }

    fn leave(&mut self, i: usize) {
        let Some(id) = self.ids[i].take() else { return };
        let now = self.now;
        self.cores[i].handle_disconnected(now);
        for k in 0..self.cores.len() {
            if self.ids[k].is_some() {
                self.cores[k].handle_relay(now, RelayMessage::Left(id), &mut self.docs[k]);
            }
        }
        self.run();
    }

    /// Delivers until nobody has anything to send (bounded).
    fn run(&mut self) {
        for _ in 0..200 {
            let mut quiet = true;
            for i in 0..self.cores.len() {
                while let Some(t) = self.cores[i].poll_transmit() {
                    quiet = false;
                    let Some(from) = self.ids[i] else {
                        continue;
                    };
                    let now = self.now;
                    match t {
                        Transmit::Relay(ClientMessage::Send { to, body }) => {
                            self.overheard.push((i, to, body.clone()));
                            let targets: Vec<usize> = match to {
                                Some(to) => self.index_of(to).into_iter().collect(),
                                None => (0..self.cores.len())
                                    .filter(|&k| k != i && self.ids[k].is_some())
                                    .collect(),
                            };
                            for k in targets {
                                if (self.lose)(i, k) {
                                    continue;
                                }
                                let msg = RelayMessage::From {
                                    from,
                                    body: body.clone(),
                                };
                                self.cores[k].handle_relay(now, msg, &mut self.docs[k]);
                            }
                        }
                        // The relay core checks the proof (its own tests); this stand-in
                        // stores and tells everyone.
                        Transmit::Relay(ClientMessage::Rotate { verifier, .. }) => {
                            for k in 0..self.cores.len() {
                                if self.ids[k].is_some() {
                                    let msg = RelayMessage::Rotated { by: from, verifier };
                                    self.cores[k].handle_relay(now, msg, &mut self.docs[k]);
                                }
                            }
                        }
                        Transmit::Relay(_) => {}
                        Transmit::Direct(to, msg) => {
                            if let Some(k) = self.index_of(to).filter(|&k| !(self.lose)(i, k)) {
                                self.cores[k].handle_direct(now, from, &msg, &mut self.docs[k]);
                            }
                        }
                    }
                }
            }
            if quiet {
                return;
            }
        }
        panic!("the band never went quiet");
    }

    /// Lets the keys granted at the last joins take over sealing: a newcomer hears the others
    /// from then on (it never opens what was sealed before it came).
    fn settle_keys(&mut self) {
        self.tick(RotationPolicy::default().switch_delay);
    }

    fn tick(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..100_000 {
            let next = self
                .cores
                .iter()
                .filter_map(RoomCore::poll_timeout)
                .min()
                .filter(|t| *t <= end);
            let Some(t) = next else { break };
            self.now = t.max(self.now);
            let now = self.now;
            for (c, doc) in self.cores.iter_mut().zip(&mut self.docs) {
                if c.poll_timeout().is_some_and(|d| d <= now) {
                    c.handle_timeout(now, doc);
                }
            }
            self.run();
        }
        self.now = end;
    }

    /// Member `from` seals a frame; member `to` opens it. What `to` heard.
    fn audio(
        &mut self,
        from: usize,
        to: usize,
        stem: u8,
        media: u64,
    ) -> Vec<(ParticipantId, StemId, u32, u64, Vec<u8>)> {
        let payload = vec![stem; 20];
        let Some((datagram, prefix, _)) =
            self.cores[from].seal_audio(StemId(stem), media, &payload, 0)
        else {
            return Vec::new();
        };
        // As the relay forwards it: its own prefix of the sender's id.
        let mut fwd = Vec::new();
        crate::wire::encode_sender(self.ids[from].unwrap(), &mut fwd);
        fwd.extend_from_slice(&datagram[prefix..]);
        let mut heard = Vec::new();
        self.cores[to].open_datagram(Via::Relay, &fwd, &mut |p, f| {
            heard.push((p, f.stem, f.seq, f.media_time, f.payload.to_vec()))
        });
        heard
    }

    fn json(&mut self, i: usize) -> String {
        self.docs[i].doc().to_json()
    }
}

#[test]
fn members_welcomed_into_a_room_key_each_other_and_hear_each_other() {
    let mut b = Band::new(3, RotationPolicy::default());
    let ids: Vec<MemberId> = (0..3).map(|i| b.join(i)).collect();
    b.settle_keys();
    let joined: Vec<MemberId> = std::iter::from_fn(|| b.cores[1].poll_event())
        .filter_map(|e| match e {
            RoomEvent::MemberJoined(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(
        joined,
        vec![ids[0], ids[2]],
        "from the Welcome, then the relay's news"
    );
    for i in 0..3 {
        assert_eq!(b.cores[i].members().count(), 2);
        for &other in ids.iter().filter(|&&o| o != ids[i]) {
            assert!(b.cores[i].keyed(other), "{i} holds {other:?}'s key");
        }
    }
    let heard = b.audio(0, 2, 0, 480);
    assert_eq!(heard, vec![(pid(0), StemId(0), 0, 480, vec![0; 20])]);
    assert_eq!(b.cores[2].counters.delivered.load(Relaxed), 1);
}

#[test]
fn the_lower_id_dials_each_pair_once() {
    let mut b = Band::new(3, RotationPolicy::default());
    for i in 0..3 {
        b.join(i);
    }
    let dials = |c: &mut RoomCore| {
        std::iter::from_fn(|| c.poll_event())
            .filter_map(|e| match e {
                RoomEvent::Dial(m) => Some(m.id),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(dials(&mut b.cores[0]), vec![MemberId(1), MemberId(2)]);
    assert_eq!(dials(&mut b.cores[1]), vec![MemberId(2)]);
    assert_eq!(dials(&mut b.cores[2]), vec![]);
}

#[test]
fn a_member_with_two_streams_is_heard_on_both_each_numbered_on_its_own() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    b.join(1);
    b.settle_keys();
    let mut heard = Vec::new();
    for k in 0..4u64 {
        heard.extend(b.audio(0, 1, 0, k * 240));
        heard.extend(b.audio(0, 1, 1, k * 240));
    }
    let seqs = |stem| {
        heard
            .iter()
            .filter(|h| h.1 == StemId(stem))
            .map(|h| h.2)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(0), vec![0, 1, 2, 3]);
    assert_eq!(seqs(1), vec![0, 1, 2, 3]);
    assert!(heard.iter().all(|h| h.0 == pid(0)));
}

#[test]
fn a_member_that_leaves_is_forgotten_and_its_path_closed() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    let id1 = b.join(1);
    b.cores[0].handle_path_up(b.now, id1, &mut b.docs[0]);
    while b.cores[0].poll_event().is_some() {}
    b.leave(1);
    assert_eq!(b.cores[0].members().count(), 0);
    assert!(!b.cores[0].keyed(id1));
    assert!(!b.cores[0].is_direct(id1));
    let events: Vec<RoomEvent> = std::iter::from_fn(|| b.cores[0].poll_event()).collect();
    assert_eq!(
        events,
        vec![
            RoomEvent::MemberLeft(info(1, id1)),
            RoomEvent::ClosePath(id1)
        ]
    );
}

#[test]
fn keys_rotate_on_the_clock_and_audio_keeps_opening() {
    let policy = RotationPolicy {
        max_age: Duration::from_secs(2),
        ..RotationPolicy::default()
    };
    let mut b = Band::new(2, policy);
    b.join(0);
    b.join(1);
    b.settle_keys();
    assert_eq!(b.audio(0, 1, 0, 0).len(), 1);
    b.tick(Duration::from_secs(3));
    assert_eq!(b.audio(0, 1, 0, 240).len(), 1, "opened under the new key");
    b.tick(Duration::from_secs(10));
    assert_eq!(b.audio(1, 0, 0, 0).len(), 1);
    assert_eq!(b.cores[1].counters.forged.load(Relaxed), 0);
}

#[test]
fn a_direct_path_carries_the_document_and_takes_audio_off_the_relay_until_it_is_lost() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    let id1 = b.join(1);
    let id0 = b.ids[0].unwrap();
    let now = b.now;
    b.cores[0].handle_path_up(now, id1, &mut b.docs[0]);
    b.cores[1].handle_path_up(now, id0, &mut b.docs[1]);
    let route: Vec<Transmit> = std::iter::from_fn(|| b.cores[0].poll_transmit()).collect();
    assert!(route.contains(&Transmit::Relay(ClientMessage::Route { direct: vec![id1] })));
    let (_, _, relay) = b.cores[0].seal_audio(StemId(0), 0, b"x", 0).unwrap();
    assert!(!relay, "everyone is reached directly");
    b.docs[0].doc().set_tempo(133.0).unwrap();
    b.cores[0].edited(now, &mut b.docs[0]);
    let sync: Vec<Transmit> = std::iter::from_fn(|| b.cores[0].poll_transmit()).collect();
    assert!(!sync.is_empty());
    assert!(sync
        .iter()
        .all(|t| matches!(t, Transmit::Direct(to, PeerMessage::Doc { .. }) if *to == id1)));
    for t in sync {
        if let Transmit::Direct(_, msg) = t {
            b.cores[1].handle_direct(now, id0, &msg, &mut b.docs[1]);
        }
    }
    b.run();
    assert_eq!(b.docs[1].doc().tempo(), 133.0);
    assert!(b.cores[1].counters.doc_direct.load(Relaxed) > 0);

    b.cores[0].handle_path_down(now, id1, &mut b.docs[0]);
    let after: Vec<Transmit> = std::iter::from_fn(|| b.cores[0].poll_transmit()).collect();
    assert!(after.contains(&Transmit::Relay(ClientMessage::Route { direct: vec![] })));
    let (_, _, relay) = b.cores[0].seal_audio(StemId(0), 240, b"x", 0).unwrap();
    assert!(relay);
    b.docs[0].doc().set_tempo(90.0).unwrap();
    b.cores[0].edited(now, &mut b.docs[0]);
    b.tick(DOC_HOLD);
    assert_eq!(b.docs[1].doc().tempo(), 90.0, "by the relay now");
}

#[test]
fn edits_in_quick_succession_go_out_together_after_the_first() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    b.join(1);
    // Counts member 0's document messages, and hands them on (a sync that loses messages
    // goes out of step).
    let docs_sent = |b: &mut Band| {
        let from = b.ids[0].unwrap();
        let sent: Vec<Vec<u8>> = std::iter::from_fn(|| b.cores[0].poll_transmit())
            .filter_map(|t| match t {
                Transmit::Relay(ClientMessage::Send { to: Some(_), body }) => Some(body),
                _ => None,
            })
            .collect();
        for body in &sent {
            let msg = RelayMessage::From {
                from,
                body: body.clone(),
            };
            let now = b.now;
            b.cores[1].handle_relay(now, msg, &mut b.docs[1]);
        }
        sent.len()
    };
    let start = b.now;
    b.docs[0].doc().set_tempo(100.0).unwrap();
    b.cores[0].edited(start, &mut b.docs[0]);
    assert_eq!(docs_sent(&mut b), 1, "the first edit goes at once");
    for (ms, tempo) in [(10, 101.0), (20, 102.0), (30, 103.0)] {
        b.docs[0].doc().set_tempo(tempo).unwrap();
        b.cores[0].edited(start + Duration::from_millis(ms), &mut b.docs[0]);
    }
    assert_eq!(docs_sent(&mut b), 0, "the rest wait for the hold");
    assert!(b.cores[0].poll_timeout() <= Some(start + DOC_HOLD));
    b.cores[0].handle_timeout(start + Duration::from_millis(35), &mut b.docs[0]);
    assert_eq!(docs_sent(&mut b), 0, "not before its end");
    b.cores[0].handle_timeout(start + DOC_HOLD, &mut b.docs[0]);
    assert_eq!(docs_sent(&mut b), 1, "and go out as one");
    b.docs[0].doc().set_tempo(104.0).unwrap();
    b.cores[0].edited(start + DOC_HOLD * 3, &mut b.docs[0]);
    b.run();
    assert_eq!(b.docs[1].doc().tempo(), 104.0);
}

#[test]
fn a_relay_restart_gives_new_ids_and_the_band_plays_and_edits_on() {
    let mut b = Band::new(3, RotationPolicy::default());
    for i in 0..3 {
        b.join(i);
    }
    b.docs[1].doc().chart_append("| G |").unwrap();
    let now = b.now;
    b.cores[1].edited(now, &mut b.docs[1]);
    b.run();
    // The relay goes away: everyone is out, and edits made meanwhile stay local.
    for i in 0..3 {
        b.cores[i].handle_disconnected(b.now);
        b.ids[i] = None;
    }
    b.docs[2].doc().set_tempo(101.0).unwrap();
    b.cores[2].edited(b.now, &mut b.docs[2]);
    b.run();
    assert!(b.cores[0].members().next().is_none());
    // Back, in another order, with other ids.
    for i in [2, 0, 1] {
        b.join(i);
    }
    b.settle_keys();
    assert_ne!(b.ids[0], Some(MemberId(0)));
    assert_eq!(b.audio(2, 0, 0, 0)[0].0, pid(2), "same musician, new id");
    let j0 = b.json(0);
    assert_eq!(j0, b.json(1));
    assert_eq!(j0, b.json(2));
    assert_eq!(b.docs[0].doc().tempo(), 101.0);
    assert!(b.docs[0].doc().chart().contains("| G |"));
}

#[test]
fn the_document_converges_when_connections_drop_mid_sync() {
    for seed in 0..8u64 {
        let mut rng = DangerSeededRng::new(seed);
        let mut b = Band::new(3, RotationPolicy::default());
        for i in 0..3 {
            b.join(i);
        }
        for round in 0..12 {
            // Past the last sync's hold, so this edit goes out now and the cut falls inside it.
            b.now += DOC_HOLD;
            let i = (rng.next_u32() % 3) as usize;
            let now = b.now;
            match rng.next_u32() % 3 {
                0 => b.docs[i].doc().set_tempo(60.0 + round as f64).unwrap(),
                1 => b.docs[i].doc().chart_append(&format!("|{round}")).unwrap(),
                _ => b.docs[i].doc().add_marker(round as f64, "x").unwrap(),
            }
            b.cores[i].edited(now, &mut b.docs[i]);
            // A member's relay connection drops mid-sync: what it sends or is sent after the
            // cut is lost (a reliable stream loses a tail, never a message in the middle), then
            // it rejoins.
            let gone = (rng.next_u32() % 3) as usize;
            let cut = rng.next_u32() % 8;
            let mut seen = 0;
            b.lose = Box::new(move |from, to| {
                seen += u32::from(from == gone || to == gone);
                (from == gone || to == gone) && seen > cut
            });
            b.run();
            b.lose = Box::new(|_, _| false);
            b.leave(gone);
            b.join(gone);
        }
        let j = b.json(0);
        assert_eq!(j, b.json(1), "seed {seed}");
        assert_eq!(j, b.json(2), "seed {seed}");
    }
}

#[test]
fn an_edit_that_reached_one_member_before_its_author_left_for_good_reaches_everyone() {
    let mut b = Band::new(3, RotationPolicy::default());
    for i in 0..3 {
        b.join(i);
    }
    b.docs[0].doc().add_marker(4.0, "last words").unwrap();
    let now = b.now;
    b.cores[0].edited(now, &mut b.docs[0]);
    // Member 0's connection drops after its first message.
    let mut sent = 0;
    b.lose = Box::new(move |from, _| {
        sent += u32::from(from == 0);
        from == 0 && sent > 1
    });
    b.run();
    b.lose = Box::new(|_, _| false);
    let holds = |b: &mut Band, i: usize| {
        b.docs[i]
            .doc()
            .markers()
            .iter()
            .any(|(_, l)| l == "last words")
    };
    assert!(
        holds(&mut b, 1) != holds(&mut b, 2),
        "the cut reached one member"
    );
    b.leave(0);
    assert!(holds(&mut b, 1) && holds(&mut b, 2));
    assert_eq!(b.json(1), b.json(2));
}

#[test]
fn presence_goes_out_on_the_clock_and_reaches_the_others() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    b.join(1);
    b.cores[0].set_presence(Presence {
        name: "Ana".into(),
        ..Presence::default()
    });
    b.tick(Duration::from_millis(300));
    let now = b.now;
    let seen = b.cores[1].presence(now);
    assert!(seen.iter().any(|p| p.presence.name == "Ana"), "{seen:?}");
    let told =
        std::iter::from_fn(|| b.cores[1].poll_event()).any(|e| e == RoomEvent::Presence(pid(0)));
    assert!(told);
}

#[test]
fn forged_key_messages_and_garbage_are_counted_not_trusted() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    let id1 = b.join(1);
    let now = b.now;
    // An announcement in member 0's name under another room's key.
    let mut fake = MemberKeys::new(
        MemberId(0),
        RoomSecret::from_bytes([1; 32]).member_auth(&room()),
        key(0),
        RotationPolicy::default(),
        now,
        &mut rand_core::OsRng,
    );
    let body = encode_peer(&PeerMessage::Announce(fake.announce()));
    let forged = RelayMessage::From {
        from: MemberId(0),
        body,
    };
    b.cores[1].handle_relay(now, forged, &mut b.docs[1]);
    let garbage = RelayMessage::From {
        from: MemberId(0),
        body: vec![0xff; 9],
    };
    b.cores[1].handle_relay(now, garbage, &mut b.docs[1]);
    assert_eq!(b.cores[1].counters.forged.load(Relaxed), 1);
    assert_eq!(b.cores[1].counters.malformed.load(Relaxed), 1);
    let notices = std::iter::from_fn(|| b.cores[1].poll_event())
        .filter(|e| matches!(e, RoomEvent::Notice(n) if n.contains("refused")))
        .count();
    assert_eq!(notices, 1, "the forged announcement is told");
    let _ = fake.rotate(now, &mut rand_core::OsRng);
    assert!(b.cores[0].keyed(id1));
}

/// A member re-seals audio as another with the sender key that member granted it, and sends
/// it over its own direct path: refused and counted, because on a direct path the sender is
/// the path's member. The same bytes would have played as the victim had the byte in the
/// packet been trusted (shown first, so the test can fail).
#[test]
fn a_member_cannot_speak_as_another_over_its_direct_path() {
    let mut b = Band::new(3, RotationPolicy::default());
    let ids: Vec<MemberId> = (0..3).map(|i| b.join(i)).collect();
    b.settle_keys();
    let (alice, bob, mallory) = (0, 1, 2);
    assert_eq!(b.audio(alice, bob, 0, 480).len(), 1, "Alice is heard");
    let forged = |b: &mut Band, ahead| {
        let mut d = Vec::new();
        crate::wire::encode_sender(ids[alice], &mut d);
        let keys = b.cores[mallory].danger_keys_mut().expect("joined");
        assert!(keys.danger_seal_as(ids[alice], StemId(0), ahead, 960, &[9; 20], &mut d));
        d
    };
    let heard_by_bob = |b: &mut Band, via, d: &[u8]| {
        let mut heard = Vec::new();
        b.cores[bob].open_datagram(via, d, &mut |p, f| heard.push((p, f.payload.to_vec())));
        heard
    };

    // The harness: had Bob trusted the sender byte, Mallory's bytes played as Alice.
    let d = forged(&mut b, 5);
    assert_eq!(
        heard_by_bob(&mut b, Via::Relay, &d),
        vec![(pid(alice), vec![9; 20])],
        "a datagram sealed with Alice's key opens as Alice's"
    );

    // Over Mallory's own direct path: refused, counted, and Alice's own frames still play.
    let forged_before = b.cores[bob].counters.forged.load(Relaxed);
    let d = forged(&mut b, 10);
    assert!(heard_by_bob(&mut b, Via::Direct(ids[mallory]), &d).is_empty());
    assert_eq!(
        b.cores[bob].counters.forged.load(Relaxed),
        forged_before + 1
    );
    let genuine = match b.cores[alice].seal_audio(StemId(0), 1440, &[1; 20], 0) {
        Some((d, _, _)) => d.to_vec(),
        None => panic!("Alice seals"),
    };
    assert_eq!(
        heard_by_bob(&mut b, Via::Direct(ids[alice]), &genuine),
        vec![(pid(alice), vec![1; 20])],
        "Alice's own path still carries her audio"
    );
}

/// Opens `datagram` (as the relay forwards it, from member `from`) at member `to`.
fn heard_at(b: &mut Band, to: usize, from: usize, datagram: &[u8]) -> usize {
    let mut fwd = Vec::new();
    crate::wire::encode_sender(b.ids[from].unwrap(), &mut fwd);
    fwd.extend_from_slice(datagram);
    let mut heard = 0;
    b.cores[to].open_datagram(Via::Relay, &fwd, &mut |_, _| heard += 1);
    heard
}

/// A frame member `from` seals now, without its sender prefix (as the relay receives it).
fn sealed(b: &mut Band, from: usize, media: u64) -> Vec<u8> {
    let (d, prefix, _) = b.cores[from]
        .seal_audio(StemId(0), media, &[from as u8; 20], 0)
        .expect("joined");
    d[prefix..].to_vec()
}

/// A departed member that kept its keys and goes on receiving (the relay forwarding to it,
/// or a recording) opens what was sealed before the others held the new key, and nothing
/// after; a newcomer opens nothing sealed before it came in.
#[test]
fn a_departed_member_opens_nothing_sealed_after_the_switch_and_a_newcomer_nothing_before() {
    let delay = RotationPolicy::default().switch_delay;
    let mut b = Band::new(4, RotationPolicy::default());
    let (ana, bo, cy, dee) = (0, 1, 2, 3);
    let cy_id = [b.join(ana), b.join(bo), b.join(cy)][2];
    b.tick(delay);
    let first = sealed(&mut b, ana, 0);
    assert_eq!(heard_at(&mut b, cy, ana, &first), 1);

    // Cy leaves as the others see it; Cy itself keeps everything it held.
    let now = b.now;
    for k in [ana, bo] {
        b.cores[k].handle_relay(now, RelayMessage::Left(cy_id), &mut b.docs[k]);
    }
    let before_switch = sealed(&mut b, ana, 240);
    assert_eq!(
        heard_at(&mut b, cy, ana, &before_switch),
        1,
        "before Bo holds the new key, Ana seals with the old"
    );
    // The new key's grant reaches Bo and his answer reaches Ana: she switches.
    b.run();
    let after = sealed(&mut b, ana, 480);
    assert_eq!(heard_at(&mut b, bo, ana, &after), 1, "Bo opens the new key");
    assert_eq!(
        heard_at(&mut b, cy, ana, &after),
        0,
        "Cy opens nothing after the switch"
    );

    // Dee joins: what Ana sealed just before is not Dee's to open, what follows the switch is.
    let earlier = sealed(&mut b, ana, 720);
    b.join(dee);
    assert_eq!(
        heard_at(&mut b, dee, ana, &earlier),
        0,
        "nothing from before Dee came"
    );
    b.tick(delay);
    let later = sealed(&mut b, ana, 960);
    assert_eq!(heard_at(&mut b, dee, ana, &later), 1);
}

/// Every join and leave rekeys every member; a member that stays hears every frame through
/// twenty of them.
#[test]
fn joins_and_leaves_rekey_without_losing_a_frame() {
    let mut b = Band::new(4, RotationPolicy::default());
    b.join(0);
    b.join(1);
    b.tick(RotationPolicy::default().switch_delay);
    let (mut sent, mut heard) = (0, 0);
    let mut media = 0;
    for round in 0..20 {
        if round % 2 == 0 {
            b.join(2 + (round / 2) % 2);
        } else {
            b.leave(2 + (round / 2) % 2);
        }
        // 0.5 s of 2.5 ms frames each way between the two who stay, on the virtual clock.
        for _ in 0..200 {
            b.tick(Duration::from_micros(2500));
            media += 120;
            for (from, to) in [(0, 1), (1, 0)] {
                let d = sealed(&mut b, from, media);
                sent += 1;
                heard += heard_at(&mut b, to, from, &d);
            }
        }
    }
    assert_eq!(heard, sent, "frames lost to rekeying");
    assert!(b.cores[0].counters.unkeyed.load(Relaxed) == 0);
}

/// What a member that left holds against what is sent after: it kept every key and its
/// member-auth key, and the relay (or a recording of its traffic) hands it every control
/// message. It reads no presence sealed after the others switched to the key it was not
/// given, and no document message between two others at all, before or after: document
/// messages are sealed under a key only their sender and recipient derive, presence under
/// the sender's epoch (both were keys of the room secret, which it still holds).
#[test]
fn a_departed_member_reads_no_document_or_presence_sent_after_it_left() {
    let mut b = Band::new(3, RotationPolicy::default());
    let (ana, bo, cy) = (0, 1, 2);
    let [ana_id, _, cy_id] = [b.join(ana), b.join(bo), b.join(cy)];
    b.settle_keys();
    // While Cy is in, it reads Ana's presence (the attack below is a real one).
    let name = |n: &str| Presence {
        name: n.into(),
        ..Presence::default()
    };
    b.cores[ana].set_presence(name("Ana"));
    b.tick(Duration::from_millis(300));
    let now = b.now;
    assert!(b.cores[cy]
        .presence(now)
        .iter()
        .any(|p| p.presence.name == "Ana"));

    // Cy leaves as the others see it and keeps all it held.
    for k in [ana, bo] {
        let now = b.now;
        b.cores[k].handle_relay(now, RelayMessage::Left(cy_id), &mut b.docs[k]);
    }
    b.run();
    b.overheard.clear();
    b.cores[ana].set_presence(name("Ana (after)"));
    b.docs[ana].doc().set_tempo(131.0).unwrap();
    let now = b.now;
    b.cores[ana].edited(now, &mut b.docs[ana]);
    b.tick(Duration::from_millis(1500));
    assert_eq!(b.docs[bo].doc().tempo(), 131.0, "Bo has the edit");
    let now = b.now;
    assert!(b.cores[bo]
        .presence(now)
        .iter()
        .any(|p| p.presence.name == "Ana (after)"));

    let from_ana: Vec<PeerMessage> = b
        .overheard
        .iter()
        .filter(|(from, _, _)| *from == ana)
        .filter_map(|(_, _, body)| decode_body::<PeerMessage>(body).ok())
        .collect();
    let (mut presence, mut docs) = (0, 0);
    let cy_keys = b.cores[cy].danger_keys_mut().expect("Cy keeps its keys");
    for m in &from_ana {
        match m {
            PeerMessage::Presence {
                epoch,
                nonce,
                sealed,
            } => {
                presence += 1;
                assert!(cy_keys
                    .open_presence(ana_id, &key(ana).public(), *epoch, nonce, sealed)
                    .is_err());
            }
            PeerMessage::Doc {
                ends,
                nonce,
                sealed,
                message,
                part,
                parts,
            } => {
                docs += 1;
                // Under the key it names, which Cy cannot derive...
                assert!(cy_keys
                    .doc_opener(ana_id, &key(ana).public(), ends)
                    .is_err());
                // ...nor as if it were sealed to Cy's own ephemeral.
                let own = cy_keys.announce();
                let mine = DocEnds {
                    to_epoch: own.epoch,
                    to_public: own.public,
                    ..ends.clone()
                };
                let key = cy_keys
                    .doc_opener(ana_id, &key(ana).public(), &mine)
                    .expect("Cy's own end");
                let place = crate::wire::DocPlace {
                    message: *message,
                    part: *part,
                    parts: *parts,
                };
                for to in [pid(bo), pid(cy)] {
                    assert!(key.open(ana_id, &place.context(to), nonce, sealed).is_err());
                }
            }
            _ => {}
        }
    }
    assert!(
        presence > 0 && docs > 0,
        "{presence} presence, {docs} document"
    );

    // Delivered to Cy's core as the relay would: nothing changes there.
    for m in from_ana {
        let msg = RelayMessage::From {
            from: ana_id,
            body: encode_peer(&m),
        };
        let now = b.now;
        b.cores[cy].handle_relay(now, msg, &mut b.docs[cy]);
    }
    let now = b.now;
    assert_ne!(b.docs[cy].doc().tempo(), 131.0);
    assert!(!b.cores[cy]
        .presence(now)
        .iter()
        .any(|p| p.presence.name == "Ana (after)"));
}

/// Mallory is a member (the room secret, the keys granted to her, her own member key) and
/// the relay is on her side: it delivers what she makes as coming from Ana. Each forgery
/// below is made so that it would be taken but for Ana's signature (shown first: it opens
/// under the key it names, signed by Mallory); each is refused and counted, and Bo's view of
/// Ana is untouched.
#[test]
fn a_member_with_the_relay_on_its_side_cannot_announce_tell_presence_or_sync_as_another() {
    let mut b = Band::new(3, RotationPolicy::default());
    let (ana, bo, mallory) = (0, 1, 2);
    let [ana_id, bo_id, _] = [b.join(ana), b.join(bo), b.join(mallory)];
    b.settle_keys();
    b.cores[ana].set_presence(Presence {
        name: "Ana".into(),
        ..Presence::default()
    });
    b.tick(Duration::from_millis(300));
    let mallory_public = key(mallory).public();
    let as_ana = |b: &mut Band, msg: PeerMessage| {
        let now = b.now;
        let forged = RelayMessage::From {
            from: ana_id,
            body: encode_peer(&msg),
        };
        b.cores[bo].handle_relay(now, forged, &mut b.docs[bo]);
        b.run();
    };
    let forged = |b: &Band| b.cores[bo].counters.forged.load(Relaxed);

    // Her ephemeral announced as Ana's: were it taken, Bo would seal Ana's grants and
    // documents to it.
    let m = b.cores[mallory].danger_keys_mut().unwrap();
    let fake = m.danger_announce_as(ana_id);
    let before = forged(&b);
    as_ana(&mut b, PeerMessage::Announce(fake.clone()));
    assert_eq!(forged(&b), before + 1, "the announcement is refused");
    let bo_keys = b.cores[bo].danger_keys_mut().unwrap();
    let (_, ends) = bo_keys.doc_sealer(ana_id).unwrap();
    assert_ne!(
        ends.to_public, fake.public,
        "Bo still seals to Ana's own key"
    );

    // Presence under Ana's key, saying Ana has gone to "the bar".
    let lie = postcard::to_stdvec(&crate::presence::PresenceUpdate {
        seq: u64::MAX / 2,
        presence: Presence {
            name: "the bar".into(),
            ..Presence::default()
        },
    })
    .unwrap();
    let m = b.cores[mallory].danger_keys_mut().unwrap();
    let (epoch, nonce, sealed) = m
        .danger_presence_as(ana_id, &lie, &mut rand_core::OsRng)
        .expect("Ana granted Mallory her key");
    let bo_keys = b.cores[bo].danger_keys_mut().unwrap();
    assert!(
        bo_keys
            .open_presence(ana_id, &mallory_public, epoch, &nonce, &sealed)
            .is_ok(),
        "sealed right: only the signer gives it away"
    );
    let before = forged(&b);
    let msg = PeerMessage::Presence {
        epoch,
        nonce,
        sealed,
    };
    as_ana(&mut b, msg);
    assert_eq!(forged(&b), before + 1, "the presence is refused");
    let now = b.now;
    let seen = b.cores[bo].presence(now);
    assert!(seen.iter().any(|p| p.presence.name == "Ana"), "{seen:?}");
    assert!(!seen.iter().any(|p| p.presence.name == "the bar"));

    // A session document sync message as Ana (from a document of Mallory's making).
    let mut fork = DocReplica::new(SessionDoc::new().unwrap(), pid(mallory));
    fork.doc().set_tempo(66.0).unwrap();
    let m = b.cores[mallory].danger_keys_mut().unwrap();
    let (key, ends) = m.danger_doc_sealer_as(ana_id, bo_id).unwrap();
    let msgs = fork
        .outgoing(ana_id, pid(bo), (&key, ends.clone()), &mut rand_core::OsRng)
        .unwrap();
    assert!(!msgs.is_empty());
    let bo_keys = b.cores[bo].danger_keys_mut().unwrap();
    assert!(
        bo_keys.doc_opener(ana_id, &mallory_public, &ends).is_ok(),
        "the key it names is one Bo derives: only the signer gives it away"
    );
    let before = forged(&b);
    for m in msgs {
        as_ana(&mut b, m);
    }
    assert!(forged(&b) > before, "the document message is refused");
    assert_ne!(b.docs[bo].doc().tempo(), 66.0);
}

/// Ana gives the room a new secret mid-jam: Ana and Bo move to it without leaving (the same
/// ids, no frame lost), and Cy, who holds only the new secret, joins and keys both ways with
/// them, hears them, and gets the document. Who was given the secret is told it when the
/// relay confirms, all at once.
#[test]
fn a_rotated_secret_moves_the_members_inside_and_admits_a_newcomer_holding_only_it() {
    let mut b = Band::new(3, RotationPolicy::default());
    let (ana, bo, cy) = (0, 1, 2);
    let ids = [b.join(ana), b.join(bo)];
    b.settle_keys();
    b.docs[ana].doc().set_tempo(88.0).unwrap();
    let now = b.now;
    b.cores[ana].edited(now, &mut b.docs[ana]);
    b.run();

    let next = RoomSecret::from_bytes([10; 32]);
    let now = b.now;
    b.cores[ana].rotate_secret(now, next.clone(), Vec::new());
    b.run();
    for k in [ana, bo] {
        let rotated: Vec<RoomEvent> = std::iter::from_fn(|| b.cores[k].poll_event())
            .filter(|e| matches!(e, RoomEvent::SecretRotated(_)))
            .collect();
        assert_eq!(
            rotated,
            vec![RoomEvent::SecretRotated(next.clone())],
            "member {k}"
        );
    }
    assert_eq!([b.ids[ana], b.ids[bo]], [Some(ids[0]), Some(ids[1])]);
    let d = sealed(&mut b, ana, 480);
    assert_eq!(
        heard_at(&mut b, bo, ana, &d),
        1,
        "no frame lost to the rotation"
    );

    // Cy knows only the new secret.
    b.cores[cy] = core_with(cy as u64, RotationPolicy::default(), &next);
    b.join(cy);
    b.settle_keys();
    for (from, to) in [(ana, cy), (cy, ana), (bo, cy), (cy, bo)] {
        let d = sealed(&mut b, from, 960);
        assert_eq!(heard_at(&mut b, to, from, &d), 1, "{from} → {to}");
    }
    assert_eq!(b.docs[cy].doc().tempo(), 88.0, "the document reached Cy");
    assert_eq!(b.cores[cy].counters.forged.load(Relaxed), 0);
    assert_eq!(b.cores[ana].counters.forged.load(Relaxed), 0);
}
