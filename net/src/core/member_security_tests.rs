//! The member core against members and a relay that attack it: forgeries, a member that
//! left, a member with the relay on its side, and moving the room to a new secret.

use super::*;

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
        b.cores[bob].open_datagram(b.now, via, d, &mut |p, f| {
            heard.push((p, f.payload.to_vec()))
        });
        heard
    };

    // The harness: had Bob trusted the sender byte, Mallory's bytes played as Alice (here
    // on the path Alice's own datagrams take).
    let d = forged(&mut b, 5);
    assert_eq!(
        heard_by_bob(&mut b, Via::Direct(ids[alice]), &d),
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
        Some(s) => s.direct.to_vec(),
        None => panic!("Alice seals"),
    };
    assert_eq!(
        heard_by_bob(&mut b, Via::Direct(ids[alice]), &genuine),
        vec![(pid(alice), vec![1; 20])],
        "Alice's own path still carries her audio"
    );
}

/// A member with the relay on its side seals audio as another, with the sender key that
/// member granted it, and the relay delivers it as theirs: behind MACs the forger makes with
/// its own pairwise keys, behind none, or behind the victim's own MACs taken from one of its
/// datagrams. Each is refused and counted: only the sender and each recipient can make that
/// recipient's MAC. The same sealed bytes open as the victim's where no MAC is asked for
/// (shown first, so the test can fail), and the victim's own frames still play.
#[test]
fn a_member_with_the_relay_on_its_side_cannot_send_audio_as_another() {
    let mut b = Band::new(3, RotationPolicy::default());
    let ids: Vec<MemberId> = (0..3).map(|i| b.join(i)).collect();
    b.settle_keys();
    let (alice, bob, mallory) = (0, 1, 2);
    assert_eq!(b.audio(alice, bob, 0, 480).len(), 1, "Alice is heard");
    let sealed_as_alice = |b: &mut Band, ahead| {
        let keys = b.cores[mallory].danger_keys_mut().expect("joined");
        let mut d = Vec::new();
        assert!(keys.danger_seal_as(ids[alice], StemId(0), ahead, 960, &[9; 20], &mut d));
        d
    };
    let relayed_to_bob = |b: &mut Band, d: &[u8]| {
        let mut fwd = Vec::new();
        crate::wire::encode_sender(ids[alice], &mut fwd);
        fwd.extend_from_slice(d);
        let mut heard = Vec::new();
        b.cores[bob].open_datagram(b.now, Via::Relay, &fwd, &mut |p, f| {
            heard.push((p, f.payload.to_vec()))
        });
        heard
    };

    // The harness: without the MAC, Mallory's bytes open as Alice's.
    let mut bare = sealed_as_alice(&mut b, 3);
    let keys = b.cores[bob].danger_keys_mut().expect("joined");
    assert_eq!(
        keys.open_audio(ids[alice], &mut bare)
            .map(|o| o.body.to_vec()),
        Ok(vec![9; 20]),
        "a datagram sealed with Alice's key opens as Alice's"
    );

    // Alice's own MACs, as the relay saw them on her next datagram.
    let genuine = b.cores[alice]
        .seal_audio(StemId(0), 1440, &[1; 20], 0)
        .and_then(|s| s.relay)
        .expect("Alice seals for the relay")
        .to_vec();
    let count = usize::from(*genuine.last().expect("a count"));
    let her_macs = genuine[genuine.len() - 1 - count * crate::crypto::AUDIO_MAC_ENTRY..].to_vec();

    let forged_before = b.cores[bob].counters.forged.load(Relaxed);
    for (ahead, how) in [(5, "its own MACs"), (6, "no MAC"), (7, "Alice's MACs")] {
        let mut d = sealed_as_alice(&mut b, ahead);
        match how {
            "its own MACs" => {
                let seq = u32::from(
                    crate::wire::AudioHeader::decode(&d)
                        .expect("header")
                        .seq_low,
                );
                let keys = b.cores[mallory].danger_keys_mut().expect("joined");
                keys.seal_audio_macs(&mut d, 0, seq);
            }
            "no MAC" => d.push(0),
            _ => d.extend_from_slice(&her_macs),
        }
        assert!(
            relayed_to_bob(&mut b, &d).is_empty(),
            "behind {how}: played"
        );
    }
    assert_eq!(
        b.cores[bob].counters.forged.load(Relaxed),
        forged_before + 3
    );
    assert_eq!(
        relayed_to_bob(&mut b, &genuine),
        vec![(pid(alice), vec![1; 20])],
        "Alice's own frames still play"
    );
}

/// A member with the relay on its side grants its own sender key to Bob as Alice's next
/// epoch, from its own ephemeral, sealed to Bob's: refused and counted, as no grant is taken
/// from an ephemeral its member did not announce (and sign). Had Bob taken it, Mallory would
/// hold "Alice's" key and the MAC key that goes with it. Alice's frames still play.
#[test]
fn a_member_with_the_relay_on_its_side_cannot_grant_a_key_as_another() {
    let mut b = Band::new(3, RotationPolicy::default());
    let ids: Vec<MemberId> = (0..3).map(|i| b.join(i)).collect();
    b.settle_keys();
    let (alice, bob, mallory) = (0, 1, 2);
    assert_eq!(b.audio(alice, bob, 0, 480).len(), 1, "Alice is heard");
    let grant = b.cores[mallory]
        .danger_keys_mut()
        .and_then(|k| k.danger_grant_as(ids[alice], ids[bob]))
        .expect("Mallory knows Bob's ephemeral");
    let unkeyed = b.cores[bob].counters.unkeyed.load(Relaxed);
    let msg = RelayMessage::From {
        from: ids[alice],
        body: encode_peer(&PeerMessage::Grant(grant)),
    };
    let now = b.now;
    b.cores[bob].handle_relay(now, msg, &mut b.docs[bob]);
    assert_eq!(
        b.cores[bob].counters.unkeyed.load(Relaxed),
        unkeyed + 1,
        "the grant was taken"
    );
    b.run();
    assert_eq!(b.audio(alice, bob, 0, 960).len(), 1, "Alice is still heard");
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
    assert!(
        opens_anyway(&mut b, cy, ana, &before_switch),
        "before Bo holds the new key, Ana seals with the old"
    );
    // The new key's grant reaches Bo and his answer reaches Ana: she switches.
    b.run();
    let after = sealed(&mut b, ana, 480);
    assert_eq!(heard_at(&mut b, bo, ana, &after), 1, "Bo opens the new key");
    assert!(
        !opens_anyway(&mut b, cy, ana, &after),
        "Cy opens nothing after the switch"
    );

    // Dee joins: what Ana sealed just before is not Dee's to open, what follows the switch is.
    let earlier = sealed(&mut b, ana, 720);
    b.join(dee);
    assert!(
        !opens_anyway(&mut b, dee, ana, &earlier),
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

/// Whether member `to` opens `relayed` (as the relay carries it) as `from`'s with the keys it
/// holds, MAC or no MAC: what a member that left, or one that came later, reads of it.
fn opens_anyway(b: &mut Band, to: usize, from: usize, relayed: &[u8]) -> bool {
    let count = usize::from(relayed.last().copied().unwrap_or(0));
    let sealed = relayed
        .len()
        .saturating_sub(1 + count * crate::crypto::AUDIO_MAC_ENTRY);
    let mut d = relayed[..sealed].to_vec();
    let from = b.ids[from].expect("joined");
    b.cores[to]
        .danger_keys_mut()
        .is_some_and(|k| k.open_audio(from, &mut d).is_ok())
}
