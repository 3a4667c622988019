//! The relay core on a virtual clock: no sockets, no sleeps.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::core::batch::BATCH_WINDOW;
use crate::crypto::MemberKey;
use crate::invite::RoomId;
use crate::sim::DangerSeededRng;
use crate::wire::{forwarded_items, StemId, StreamRef, Subscription};
use crate::RoomSecret;

/// A room core and what each connection received; control messages are written (and
/// reported) at once unless the connection is deaf.
struct Room {
    core: RelayCore,
    secret: RoomSecret,
    room: RoomId,
    now: Instant,
    metrics: Arc<RelayMetrics>,
    inbox: BTreeMap<ConnId, Vec<Outgoing>>,
    deaf: BTreeSet<ConnId>,
    next: u64,
    /// The member key each connection joined with.
    keys: BTreeMap<ConnId, MemberKey>,
}

/// The member key of test participant `n`: the same for every join of `n`.
fn key(n: u64) -> MemberKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    MemberKey::from_seed(&seed)
}

impl Room {
    fn new(limits: RoomLimits) -> Self {
        let room = RoomId::new("band").unwrap();
        let secret = RoomSecret::from_bytes([7; 32]);
        let metrics = Arc::new(RelayMetrics::default());
        let core = RelayCore::new(
            secret.verifier(&room),
            limits,
            Box::new(DangerSeededRng::new(1)),
            metrics.clone(),
        );
        Self {
            core,
            secret,
            room,
            now: Instant::now(),
            metrics,
            inbox: BTreeMap::new(),
            deaf: BTreeSet::new(),
            next: 0,
            keys: BTreeMap::new(),
        }
    }

    fn pump(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            let written = matches!(t.what, Outgoing::Control(_)) && !self.deaf.contains(&t.to);
            self.inbox.entry(t.to).or_default().push(t.what);
            if written {
                self.core.handle_written(self.now, t.to);
            }
        }
    }

    fn connect(&mut self, name: &str, participant: u64) -> ConnId {
        self.connect_as(name, key(participant))
    }

    fn connect_as(&mut self, name: &str, member: MemberKey) -> ConnId {
        let conn = ConnId(self.next);
        self.next += 1;
        let join = JoinRequest {
            name: name.into(),
            member: member.public(),
            instance: member.instance(),
            role: Role::Performer,
            observed: SocketAddr::from(([192, 0, 2, 1], 4000 + conn.0 as u16)),
            local: Vec::new(),
            binding: [conn.0 as u8; 32],
        };
        self.core.handle_join(self.now, conn, join);
        self.keys.insert(conn, member);
        self.pump();
        conn
    }

    fn challenge(&self, conn: ConnId) -> [u8; 32] {
        self.inbox[&conn]
            .iter()
            .find_map(|o| match o {
                Outgoing::Control(RelayMessage::Challenge { nonce }) => Some(*nonce),
                _ => None,
            })
            .expect("challenged")
    }

    fn prove(&mut self, conn: ConnId) {
        let nonce = self.challenge(conn);
        let binding = [conn.0 as u8; 32];
        let proof = self.secret.admission_proof(&self.room, &nonce, &binding);
        let signature = self.keys[&conn].sign_admission(&nonce, &binding);
        self.core
            .handle_message(self.now, conn, ClientMessage::Proof { proof, signature });
        self.pump();
    }

    fn join(&mut self, name: &str, participant: u64) -> (ConnId, MemberId) {
        let conn = self.connect(name, participant);
        self.prove(conn);
        (conn, self.welcome(conn).0)
    }

    fn welcome(&self, conn: ConnId) -> (MemberId, Vec<MemberInfo>) {
        self.control(conn)
            .find_map(|m| match m {
                RelayMessage::Welcome { you, members, .. } => Some((*you, members.clone())),
                _ => None,
            })
            .expect("welcomed")
    }

    fn control(&self, conn: ConnId) -> impl Iterator<Item = &RelayMessage> + '_ {
        self.inbox
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|o| match o {
                Outgoing::Control(m) => Some(m),
                _ => None,
            })
    }

    fn closed(&self, conn: ConnId) -> Option<CloseReason> {
        self.inbox.get(&conn)?.iter().find_map(|o| match o {
            Outgoing::Close(r) => Some(*r),
            _ => None,
        })
    }

    /// Every forwarded datagram a connection received: (sender, the member's datagram).
    fn heard(&self, conn: ConnId) -> Vec<(MemberId, Vec<u8>)> {
        let mut out = Vec::new();
        for o in self.inbox.get(&conn).into_iter().flatten() {
            if let Outgoing::Datagrams(ds) = o {
                for d in ds {
                    for f in forwarded_items(d) {
                        let f = f.unwrap();
                        out.push((f.sender, f.datagram.to_vec()));
                    }
                }
            }
        }
        out
    }

    fn send(&mut self, conn: ConnId, stem: u8, tag: u8) -> Vec<u8> {
        let d = datagram(stem, tag);
        self.core.handle_datagram(self.now, conn, &d);
        self.pump();
        d
    }

    /// Lets held batches go.
    fn settle(&mut self) {
        self.now += BATCH_WINDOW * 2;
        self.core.handle_timeout(self.now);
        self.pump();
    }

    fn clear(&mut self) {
        self.inbox.clear();
    }
}

fn datagram(stem: u8, tag: u8) -> Vec<u8> {
    let mut d = AudioHeader {
        epoch: 0,
        stem: StemId(stem),
        seq_low: u16::from(tag),
        redundant: false,
    }
    .encode()
    .to_vec();
    d.extend_from_slice(&[tag; 40]);
    // No recipients' MACs: a copy goes to each as it came.
    d.push(0);
    d
}

#[test]
fn a_member_is_challenged_welcomed_and_then_told_to_the_others() {
    let mut r = Room::new(RoomLimits::default());
    let (a, ida) = r.join("Ana", 1);
    assert_eq!(r.welcome(a).1, vec![], "first in the room");
    assert_eq!(r.core.members().count(), 1);
    let b = r.connect("Bo", 2);
    assert!(
        !r.control(a).any(|m| matches!(m, RelayMessage::Joined(_))),
        "not told before the proof"
    );
    r.prove(b);
    let (idb, others) = r.welcome(b);
    assert_ne!(ida, idb);
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].name, "Ana");
    let joined: Vec<_> = r
        .control(a)
        .filter_map(|m| match m {
            RelayMessage::Joined(i) => Some(i.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].id, idb);
    assert_eq!(joined[0].participant, key(2).participant());
    assert_eq!(r.metrics.joins.load(Relaxed), 2);
    assert_eq!(r.metrics.members.load(Relaxed), 2);
    assert!(matches!(r.core.poll_event(), Some(RelayEvent::Joined(_))));
}

#[test]
fn a_wrong_proof_a_silent_joiner_and_a_full_room_are_refused_and_leave_nothing_behind() {
    let mut r = Room::new(RoomLimits {
        max_members: 2,
        ..RoomLimits::default()
    });
    let bad = r.connect("Eve", 9);
    let proof = ClientMessage::Proof {
        proof: vec![0; 64],
        signature: Vec::new(),
    };
    r.core.handle_message(r.now, bad, proof);
    r.pump();
    assert!(r
        .control(bad)
        .any(|m| *m == RelayMessage::Refused(Refusal::WrongSecret)));
    assert_eq!(
        r.closed(bad),
        Some(CloseReason::Refused(Refusal::WrongSecret))
    );
    assert!(r.core.is_empty());
    assert_eq!(r.metrics.refused_wrong_secret.load(Relaxed), 1);

    // A proof bound to another connection's TLS session does not count either.
    let c1 = r.connect("Mallory", 8);
    let c2 = r.connect("Victim", 7);
    let nonce = r.challenge(c1);
    let replayed = r.secret.admission_proof(&r.room, &nonce, &[c2.0 as u8; 32]);
    let signature = key(8).sign_admission(&nonce, &[c1.0 as u8; 32]);
    let proof = ClientMessage::Proof {
        proof: replayed,
        signature,
    };
    r.core.handle_message(r.now, c1, proof);
    r.pump();
    assert_eq!(
        r.closed(c1),
        Some(CloseReason::Refused(Refusal::WrongSecret))
    );
    r.core.handle_closed(r.now, c2);

    let silent = r.connect("Quiet", 5);
    assert_eq!(r.core.poll_timeout(), Some(r.now + JOIN_TIMEOUT));
    r.now += JOIN_TIMEOUT;
    r.core.handle_timeout(r.now);
    r.pump();
    assert_eq!(
        r.closed(silent),
        Some(CloseReason::Refused(Refusal::Protocol))
    );
    assert_eq!(r.core.poll_timeout(), None);

    let early = r.connect("Hasty", 6);
    r.core.handle_message(
        r.now,
        early,
        ClientMessage::Send {
            to: None,
            body: vec![1],
        },
    );
    r.pump();
    assert_eq!(
        r.closed(early),
        Some(CloseReason::Refused(Refusal::Protocol))
    );

    r.join("Ana", 1);
    r.join("Bo", 2);
    let third = r.connect("Cy", 3);
    r.prove(third);
    assert_eq!(
        r.closed(third),
        Some(CloseReason::Refused(Refusal::RoomFull))
    );
    assert_eq!(r.core.members().count(), 2);
    assert_eq!(r.metrics.refused_other.load(Relaxed), 3);
}

#[test]
fn audio_reaches_everyone_else_prefixed_with_the_sender_and_nothing_else_gets_through() {
    let mut r = Room::new(RoomLimits::default());
    let (a, ida) = r.join("Ana", 1);
    let (b, idb) = r.join("Bo", 2);
    let (c, idc) = r.join("Cy", 3);
    let sent = r.send(a, 0, 1);
    r.settle();
    assert_eq!(r.heard(b), vec![(ida, sent.clone())]);
    assert_eq!(r.heard(c), vec![(ida, sent.clone())]);
    assert!(r.heard(a).is_empty(), "no echo to the sender");

    // Behind the sealed datagram, each recipient's MAC: each gets its own only.
    r.clear();
    let sealed = &sent[..sent.len() - 1];
    let entry = |id: MemberId| {
        let mut e = id.to_be_bytes().to_vec();
        e.extend_from_slice(&[id.0 as u8; crate::crypto::AUDIO_MAC_LEN]);
        e
    };
    let with_macs = [sealed, &entry(idb), &entry(idc), &[2]].concat();
    r.core.handle_datagram(r.now, a, &with_macs);
    r.settle();
    for (to, id) in [(b, idb), (c, idc)] {
        let own = [sealed, &entry(id), &[1]].concat();
        assert_eq!(r.heard(to), vec![(ida, own)]);
    }

    r.clear();
    r.core.handle_datagram(r.now, a, &[0x10, 0, 0]);
    r.core.handle_datagram(r.now, a, &[0x70; 40]);
    // A MAC block longer than the datagram.
    r.core.handle_datagram(r.now, a, &[sealed, &[30]].concat());
    let stranger = r.connect("Eve", 9);
    r.core.handle_datagram(r.now, stranger, &datagram(0, 2));
    r.core.handle_datagram(r.now, ConnId(999), &datagram(0, 2));
    r.settle();
    assert!(r.heard(b).is_empty());
    assert_eq!(r.metrics.dropped_malformed.load(Relaxed), 3);
    assert_eq!(r.metrics.dropped_not_member.load(Relaxed), 2);
}

#[test]
fn direct_paths_listeners_and_subscriptions_decide_who_hears_whom() {
    let mut r = Room::new(RoomLimits::default());
    let (a, ida) = r.join("Ana", 1);
    let (b, idb) = r.join("Bo", 2);
    let (c, _) = r.join("Cy", 3);
    let l = r.connect("Fan", 4);
    r.core.handle_join(
        r.now,
        ConnId(100),
        JoinRequest {
            name: "Fan".into(),
            member: key(40).public(),
            instance: 0,
            role: Role::Listener,
            observed: SocketAddr::from(([192, 0, 2, 9], 9)),
            local: Vec::new(),
            binding: [100; 32],
        },
    );
    r.pump();
    let nonce = r.challenge(ConnId(100));
    let proof = r.secret.admission_proof(&r.room, &nonce, &[100; 32]);
    let signature = key(40).sign_admission(&nonce, &[100; 32]);
    r.core.handle_message(
        r.now,
        ConnId(100),
        ClientMessage::Proof { proof, signature },
    );
    r.pump();
    r.core.handle_closed(r.now, l);
    let listener = ConnId(100);

    r.core
        .handle_message(r.now, a, ClientMessage::Route { direct: vec![idb] });
    r.core.handle_message(
        r.now,
        c,
        ClientMessage::Subscribe(Subscription::Only(vec![StreamRef {
            member: idb,
            stem: Some(StemId(1)),
        }])),
    );
    r.pump();
    r.clear();
    r.send(a, 0, 1);
    r.settle();
    r.send(b, 0, 2);
    r.settle();
    let b1 = r.send(b, 1, 3);
    r.settle();
    r.send(listener, 0, 4);
    r.settle();
    let senders = |r: &Room, conn| r.heard(conn).iter().map(|h| h.0).collect::<Vec<_>>();
    assert_eq!(
        senders(&r, b),
        vec![],
        "Ana reaches Bo directly; the listener is not heard"
    );
    assert_eq!(
        r.heard(c),
        vec![(idb, b1)],
        "Cy asked for Bo's second stream only"
    );
    assert_eq!(senders(&r, a), vec![idb, idb]);
    assert_eq!(senders(&r, listener), vec![ida, idb, idb]);
}

#[test]
fn a_member_that_leaves_is_told_to_the_rest_and_its_id_is_reused() {
    let mut r = Room::new(RoomLimits::default());
    let (a, _) = r.join("Ana", 1);
    let (b, idb) = r.join("Bo", 2);
    r.core.handle_closed(r.now, b);
    r.pump();
    assert!(r.control(a).any(|m| *m == RelayMessage::Left(idb)));
    assert!(matches!(r.core.poll_event(), Some(RelayEvent::Joined(_))));
    assert!(matches!(r.core.poll_event(), Some(RelayEvent::Joined(_))));
    assert!(matches!(r.core.poll_event(), Some(RelayEvent::Left(i)) if i.id == idb));
    assert_eq!(r.metrics.members.load(Relaxed), 1);
    let (_, again) = r.join("Cy", 3);
    assert_eq!(again, idb, "lowest free id first");
}

/// One musician's plugins in several processes (a DAW that sandboxes each plugin) share the
/// room's member key, each as its own instance: each is a participant with its own streams,
/// and the others see one key behind both.
#[test]
fn two_instances_of_one_member_key_are_two_participants_of_one_person() {
    let mut r = Room::new(RoomLimits::default());
    let (a, _) = r.join("Ana", 1);
    let mut ids = Vec::new();
    for instance in [7, 8] {
        let conn = r.connect_as("Bo", key(2).at_instance(instance));
        r.prove(conn);
        ids.push((conn, r.welcome(conn).0));
    }
    assert!(r.closed(ids[0].0).is_none(), "the first instance stays");
    assert_ne!(ids[0].1, ids[1].1);
    let joined: Vec<&MemberInfo> = r
        .control(a)
        .filter_map(|m| match m {
            RelayMessage::Joined(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(joined.len(), 2);
    assert_eq!(joined[0].member, joined[1].member, "one person");
    assert_ne!(joined[0].participant, joined[1].participant);
    assert_eq!(joined[1].participant, key(2).public().participant(8));
    // Each has its own stream to the others.
    r.clear();
    for (conn, id) in &ids {
        r.core.handle_datagram(r.now, *conn, &datagram(0, 1));
        r.settle();
        let heard = r.heard(a);
        assert_eq!(heard.len(), 1, "{id:?}'s audio reaches Ana");
        assert_eq!(heard[0].0, *id);
        r.clear();
    }
    // Naming an instance does not make a stranger's key anyone's: a key that does not sign
    // is refused whatever instance it names.
    let conn = r.connect_as("Bo", key(2).at_instance(9));
    r.keys.insert(conn, key(3));
    r.prove(conn);
    assert_eq!(
        r.closed(conn),
        Some(CloseReason::Refused(Refusal::Impostor))
    );
    assert_eq!(r.core.members().count(), 3);
}

#[test]
fn the_same_musician_joining_again_replaces_its_old_connection() {
    let mut r = Room::new(RoomLimits::default());
    let (a, _) = r.join("Ana", 1);
    let (old, id_old) = r.join("Bo", 2);
    r.clear();
    let (new, _) = r.join("Bo", 2);
    assert_eq!(r.closed(old), Some(CloseReason::Replaced));
    let seen: Vec<&RelayMessage> = r.control(a).collect();
    assert!(matches!(seen[0], RelayMessage::Left(id) if *id == id_old));
    assert!(matches!(seen[1], RelayMessage::Joined(i) if i.participant == key(2).participant()));
    assert_eq!(r.welcome(new).1.len(), 1, "the new one sees only Ana");
    assert_eq!(r.core.members().count(), 2);
    // The old connection's late datagrams go nowhere.
    r.core.handle_datagram(r.now, old, &datagram(0, 1));
    r.settle();
    assert!(r.heard(a).is_empty());
}

#[test]
fn end_to_end_messages_reach_one_member_or_all_others() {
    let mut r = Room::new(RoomLimits::default());
    let (a, ida) = r.join("Ana", 1);
    let (b, idb) = r.join("Bo", 2);
    let (c, _) = r.join("Cy", 3);
    r.clear();
    r.core.handle_message(
        r.now,
        a,
        ClientMessage::Send {
            to: Some(idb),
            body: vec![1],
        },
    );
    r.core.handle_message(
        r.now,
        a,
        ClientMessage::Send {
            to: None,
            body: vec![2],
        },
    );
    r.core.handle_message(
        r.now,
        a,
        ClientMessage::Send {
            to: Some(MemberId(77)),
            body: vec![3],
        },
    );
    // To itself: nothing (it would only fill its own queue here).
    r.core.handle_message(
        r.now,
        a,
        ClientMessage::Send {
            to: Some(ida),
            body: vec![4],
        },
    );
    r.pump();
    let from = |body: u8| RelayMessage::From {
        from: ida,
        body: vec![body],
    };
    assert_eq!(
        r.control(b).cloned().collect::<Vec<_>>(),
        vec![from(1), from(2)]
    );
    assert_eq!(r.control(c).cloned().collect::<Vec<_>>(), vec![from(2)]);
    assert_eq!(r.control(a).count(), 0);
}

#[test]
fn new_addresses_are_passed_on_once_and_bounded_and_newcomers_see_them() {
    let mut r = Room::new(RoomLimits::default());
    let (a, ida) = r.join("Ana", 1);
    let (b, _) = r.join("Bo", 2);
    r.clear();
    let mapped = SocketAddr::from(([198, 51, 100, 7], 41000));
    let mut local = vec![mapped, SocketAddr::from(([0, 0, 0, 0], 1))];
    local.extend((0..20).map(|k| SocketAddr::from(([10, 0, 0, k], 5000))));
    let addresses = ClientMessage::Addresses { local };
    r.core.handle_message(r.now, a, addresses.clone());
    // The same list again is news to no one.
    r.core.handle_message(r.now, a, addresses);
    r.pump();
    let moved: Vec<&RelayMessage> = r.control(b).collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    let RelayMessage::Moved { id, local } = moved[0] else {
        panic!("{moved:?}")
    };
    assert_eq!(*id, ida);
    assert_eq!(local[0], mapped);
    assert_eq!(
        local.len(),
        MAX_LOCAL_ADDRESSES,
        "unusable ones dropped, the rest capped"
    );
    assert_eq!(r.control(a).count(), 0, "not back to its sender");
    let (c, _) = r.join("Cy", 3);
    let (_, others) = r.welcome(c);
    let ana = others.iter().find(|m| m.id == ida).expect("Ana");
    assert_eq!(ana.local[0], mapped);
}

#[test]
fn a_busy_recipient_gets_batches_within_the_window() {
    let mut r = Room::new(RoomLimits::default());
    let (a, _) = r.join("Ana", 1);
    let (b, _) = r.join("Bo", 2);
    let (c, _) = r.join("Cy", 3);
    r.clear();
    r.send(a, 0, 1);
    assert_eq!(r.heard(c).len(), 1, "an idle recipient: at once");
    r.now += BATCH_WINDOW / 4;
    r.send(b, 0, 2);
    assert_eq!(r.heard(c).len(), 1, "busy: held");
    let due = r.core.poll_timeout().expect("a batch is held");
    assert_eq!(due, r.now + BATCH_WINDOW);
    r.now = due;
    r.core.handle_timeout(r.now);
    r.pump();
    assert_eq!(r.heard(c).len(), 2);
    assert_eq!(r.core.poll_timeout(), None);
}

#[test]
fn a_room_takes_hundreds_of_members_with_two_byte_prefixes() {
    let mut r = Room::new(RoomLimits {
        max_members: 300,
        ..RoomLimits::default()
    });
    let joined: Vec<(ConnId, MemberId)> = (0..300).map(|i| r.join("m", i)).collect();
    let ids: BTreeSet<MemberId> = joined.iter().map(|j| j.1).collect();
    assert_eq!(ids.len(), 300);
    assert_eq!(r.core.members().count(), 300);
    let (far, far_id) = joined[250];
    assert!(far_id.0 >= 128);
    r.clear();
    let sent = r.send(far, 0, 9);
    r.settle();
    assert_eq!(r.heard(joined[0].0), vec![(far_id, sent)]);
    let extra = r.connect("late", 1000);
    r.prove(extra);
    assert_eq!(
        r.closed(extra),
        Some(CloseReason::Refused(Refusal::RoomFull))
    );
}

#[test]
fn a_departed_members_id_given_to_a_newcomer_carries_no_routing_with_it() {
    let mut r = Room::new(RoomLimits::default());
    let (a, ida) = r.join("Ana", 1);
    let (b, idb) = r.join("Bo", 2);
    let (c, _) = r.join("Cy", 3);
    r.core
        .handle_message(r.now, a, ClientMessage::Route { direct: vec![idb] });
    r.core.handle_message(
        r.now,
        c,
        ClientMessage::Subscribe(Subscription::Only(vec![StreamRef {
            member: idb,
            stem: None,
        }])),
    );
    r.core.handle_closed(r.now, b);
    r.pump();
    let (d, idd) = r.join("Dee", 4);
    assert_eq!(idd, idb, "the id is given again");
    r.clear();
    let sent = r.send(a, 0, 1);
    r.settle();
    assert!(
        r.heard(d).contains(&(ida, sent)),
        "Ana's direct path was to Bo, not to Dee"
    );
    r.send(d, 0, 2);
    r.settle();
    assert!(r.heard(c).is_empty(), "Cy asked for Bo, not for Dee");
}

/// Mallory holds the room secret (she is a member) and Bo's public key (anyone in the room
/// may see it), not his private key: naming his key to take his place, and with it his audio
/// track and presence, is refused, and Bo stays.
#[test]
fn a_member_cannot_join_as_another_by_naming_their_key() {
    let mut r = Room::new(RoomLimits::default());
    let (bo, bo_id) = r.join("Bo", 2);
    // Her own key's signature, then bytes of her choosing.
    for (n, own_key) in [true, false].into_iter().enumerate() {
        let conn = ConnId(50 + n as u64);
        let binding = [50 + n as u8; 32];
        let join = JoinRequest {
            name: "Bo".into(),
            member: key(2).public(),
            instance: 0,
            role: Role::Performer,
            observed: SocketAddr::from(([192, 0, 2, 66], 66)),
            local: Vec::new(),
            binding,
        };
        r.core.handle_join(r.now, conn, join);
        r.pump();
        let nonce = r.challenge(conn);
        let proof = r.secret.admission_proof(&r.room, &nonce, &binding);
        let signature = if own_key {
            key(66).sign_admission(&nonce, &binding)
        } else {
            vec![0xAB; 64]
        };
        r.core
            .handle_message(r.now, conn, ClientMessage::Proof { proof, signature });
        r.pump();
        assert_eq!(
            r.closed(conn),
            Some(CloseReason::Refused(Refusal::Impostor))
        );
    }
    assert_eq!(r.metrics.refused_impostor.load(Relaxed), 2);
    assert_eq!(r.closed(bo), None, "Bo keeps his place");
    assert!(r
        .core
        .members()
        .any(|m| m.id == bo_id && m.participant == key(2).participant()));
}

/// A member asks the relay to admit by a new secret. The relay holds only the verifier: a
/// request it (or anyone without the secret) could make — signed with the verifier taken for
/// a signing seed, or a member's proof replayed on another connection — is refused; a real
/// one is stored first, then every member is told, and from then on only the new secret
/// admits.
#[test]
fn only_a_member_rotates_the_secret_and_then_only_the_new_one_admits() {
    let mut r = Room::new(RoomLimits::default());
    let (ana, _) = r.join("ana", 1);
    let (bo, _) = r.join("bo", 2);
    r.core
        .handle_message(r.now, bo, ClientMessage::Route { direct: vec![] });
    r.pump();
    let next = RoomSecret::from_bytes([8; 32]);
    let verifier = next.verifier(&r.room);
    let rotate = |r: &mut Room, conn: ConnId, proof: Vec<u8>| {
        let msg = ClientMessage::Rotate {
            verifier: verifier.to_bytes(),
            proof,
        };
        r.core.handle_message(r.now, conn, msg);
        r.pump();
        std::iter::from_fn(|| r.core.poll_event())
            .filter(|e| matches!(e, RelayEvent::Rotate { .. }))
            .count()
    };

    // The relay's own forgery: its verifier as a signing seed.
    let stolen = RoomSecret::from_bytes(r.secret.verifier(&r.room).to_bytes());
    let forged = stolen.rotation_proof(&r.room, &verifier, &[ana.0 as u8; 32]);
    assert_eq!(rotate(&mut r, ana, forged), 0);
    // Bo's real proof, replayed on Ana's connection.
    let bos = r
        .secret
        .rotation_proof(&r.room, &verifier, &[bo.0 as u8; 32]);
    assert_eq!(rotate(&mut r, ana, bos), 0);
    assert_eq!(r.metrics.refused_rotation.load(Relaxed), 2);
    assert!(r
        .control(ana)
        .any(|m| matches!(m, RelayMessage::RotationRefused)));

    // Ana's own: asked to be stored; until it is, the old secret still admits.
    let real = r
        .secret
        .rotation_proof(&r.room, &verifier, &[ana.0 as u8; 32]);
    assert_eq!(rotate(&mut r, ana, real), 1);
    let (cy, _) = r.join("cy", 3);
    assert!(r
        .control(cy)
        .any(|m| matches!(m, RelayMessage::Welcome { .. })));
    r.core.handle_rotated(r.now, ana, verifier.clone(), true);
    r.pump();
    for conn in [ana, bo, cy] {
        assert!(
            r.control(conn)
                .any(|m| matches!(m, RelayMessage::Rotated { verifier: v, .. } if *v == verifier.to_bytes())),
            "{conn:?} told"
        );
    }
    // The old secret no longer admits; the new one does.
    let old = r.connect("old invite", 4);
    r.prove(old);
    assert!(r
        .control(old)
        .any(|m| *m == RelayMessage::Refused(Refusal::WrongSecret)));
    r.secret = next;
    let (dee, _) = r.join("new invite", 5);
    assert!(r
        .control(dee)
        .any(|m| matches!(m, RelayMessage::Welcome { .. })));
}

#[path = "relay_backlog_tests.rs"]
mod backlog;
