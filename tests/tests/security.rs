//! Admission and end-to-end protection against a wrong secret, tampering, replay, forgery and
//! a curious relay.

use std::time::{Duration, Instant};

use echoel_net::session::{self, SessionConfig, SessionHandle, SessionState};
use echoel_net::wire::ParticipantId;
use echoel_net::wire::Refusal;
use echoel_net::RoomSecret;
use echoel_plugin::headless::{HeadlessError, Source};
use echoel_tests::{network_runtime, play, Musician, TestRelay};

#[test]
fn a_wrong_secret_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let mut invite = relay.room("private");
    invite.secret = RoomSecret::generate();
    let rt = network_runtime();
    let result = play(
        &invite,
        vec![Musician {
            name: "intruder",
            source: Source::Voice(1),
        }],
        1.5,
        true,
        &rt,
    );
    match &result[0] {
        Err(HeadlessError::Refused(msg)) => assert!(msg.contains("wrong room secret"), "{msg}"),
        other => panic!(
            "expected a refusal, got {:?}",
            other.as_ref().map(|r| &r.name)
        ),
    }
    assert_eq!(relay.metric("echoel_relay_refused_wrong_secret_total"), 1);
    assert_eq!(relay.metric("echoel_relay_datagrams_forwarded_total"), 0);
}

/// A member through the relay.
fn config(invite: &echoel_net::Invite, name: &str) -> SessionConfig {
    SessionConfig {
        force_relay: true,
        ..SessionConfig::new(invite.clone(), name)
    }
}

fn join(
    rt: &tokio::runtime::Runtime,
    invite: &echoel_net::Invite,
    name: &str,
    inbox: std::sync::mpsc::Sender<(ParticipantId, u64, Vec<u8>)>,
) -> SessionHandle {
    let _guard = rt.enter();
    session::start(config(invite, name), move |from, frame| {
        let _ = inbox.send((from, frame.media_time, frame.payload.to_vec()));
    })
    .unwrap()
}

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tampered_replayed_and_forged_datagrams_are_dropped_and_counted_and_the_relay_cannot_read_audio()
{
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let mut capture = None;
    let relay = TestRelay::start_with("127.0.0.1:0".parse().unwrap(), dir.path(), |r| {
        capture = Some(r.danger_tap_datagrams());
    });
    let mut capture = capture.unwrap();
    let invite = relay.room("guarded");
    let rt = network_runtime();
    let (tx_a, rx_a) = std::sync::mpsc::channel();
    let (tx_b, _rx_b) = std::sync::mpsc::channel();
    let alice = join(&rt, &invite, "alice", tx_a);
    let bob = join(&rt, &invite, "bob", tx_b);
    wait_for("keys both ways", || {
        let keyed = |h: &SessionHandle| h.status().members.iter().any(|m| m.keyed);
        keyed(&alice) && keyed(&bob)
    });

    let secret_audio = b"PLAINTEXT-OPUS-FRAME-0123456789";
    let sealed = bob.danger_seal(120, secret_audio).expect("bob is keyed");
    assert!(bob.danger_send_raw(&sealed));
    let (_, media_time, payload) = rx_a
        .recv_timeout(Duration::from_secs(3))
        .expect("alice hears bob");
    assert_eq!((media_time, payload.as_slice()), (120, &secret_audio[..]));

    // Replay: the same bytes again.
    assert!(bob.danger_send_raw(&sealed));
    // Tampering: one bit of the ciphertext flipped.
    let mut flipped = bob.danger_seal(240, secret_audio).unwrap();
    flipped[7] ^= 0x08;
    assert!(bob.danger_send_raw(&flipped));
    // Forgery, as the relay can make one: it holds no key, so it takes a genuine header
    // (Bob's epoch and stream), numbers it past what Alice has seen and keeps the count of
    // the recipients' MACs at the end, so only the seals can refuse it, and makes up the rest.
    let mut forged = sealed.clone();
    forged[3] = forged[3].wrapping_add(5);
    let count = forged.len() - 1;
    for (i, b) in forged[4..count].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(97) ^ 0x5a;
    }
    assert!(bob.danger_send_raw(&forged));

    let c = alice.counters();
    wait_for("alice to count the bad datagrams", || {
        c.replayed.load(Relaxed) >= 1 && c.forged.load(Relaxed) >= 2
    });
    assert!(
        rx_a.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing bad was delivered"
    );
    println!(
        "alice: delivered {}, replayed {}, forged {}",
        c.delivered.load(Relaxed),
        c.replayed.load(Relaxed),
        c.forged.load(Relaxed)
    );

    // What the relay saw: no plaintext. (It holds no key that could open it: its verifier is
    // a public key, see `the_relays_stored_verifier_admits_no_one`.)
    let mut seen = Vec::new();
    while let Ok(d) = capture.try_recv() {
        seen.push(d);
    }
    assert!(!seen.is_empty(), "the relay saw bob's datagrams");
    for d in &seen {
        assert!(
            !d.windows(secret_audio.len()).any(|w| w == secret_audio),
            "plaintext at the relay"
        );
    }
    alice.stop();
    bob.stop();
}

#[test]
fn an_unknown_room_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let mut invite = relay.room("real");
    invite.room = echoel_net::RoomId::new("imaginary").unwrap();
    let rt = network_runtime();
    let (tx, _rx) = std::sync::mpsc::channel();
    let h = join(&rt, &invite, "lost", tx);
    wait_for("a refusal", || {
        h.status().state == SessionState::Refused(Refusal::UnknownRoom)
    });
}

#[test]
fn a_relay_with_another_certificate_stops_the_session_with_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let mut invite = relay.room("pinned");
    // The invite of a relay whose identity was made anew, or of another relay at this address.
    invite.fingerprint.0[0] ^= 1;
    let rt = network_runtime();
    let (tx, _rx) = std::sync::mpsc::channel();
    let h = join(&rt, &invite, "pinned-out", tx);
    wait_for("the wrong-relay state", || {
        h.status().state == SessionState::WrongRelay
    });
    assert!(SessionState::WrongRelay
        .stopped_because()
        .is_some_and(|why| why.contains("does not match the invite")));
    // Final, not retried: nothing more reaches the relay.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(h.status().state, SessionState::WrongRelay);
    assert_eq!(relay.metric("echoel_relay_joins_total"), 0);
    h.stop();
}

fn joined_with(h: &SessionHandle, others: usize) -> bool {
    let st = h.status();
    matches!(st.state, SessionState::Joined { .. }) && st.members.len() == others
}

#[test]
fn a_rotated_secret_turns_old_invites_away_on_a_running_relay_and_keeps_those_inside() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let old = relay.room("friday");
    let rt = network_runtime();
    let (tx, _rx) = std::sync::mpsc::channel();
    let inside = join(&rt, &old, "inside", tx.clone());
    wait_for("the first member", || joined_with(&inside, 0));

    // Asking for the room again never replaces its secret.
    let again =
        echoel_net::relay::create_room(&relay.state_dir, &relay.addr.to_string(), Some("friday"));
    let err = again.expect_err("refused").to_string();
    assert!(err.contains("--rotate friday"), "{err}");
    let still = join(&rt, &old, "still-welcome", tx.clone());
    wait_for("a member with the old invite", || joined_with(&still, 1));
    still.stop();

    let new = echoel_net::relay::rotate_room(&relay.state_dir, &relay.addr.to_string(), "friday")
        .expect("rotated");
    let late = join(&rt, &old, "old-invite", tx.clone());
    wait_for("the old invite's refusal", || {
        late.status().state == SessionState::Refused(Refusal::WrongSecret)
    });
    let fresh = join(&rt, &new, "new-invite", tx);
    wait_for("a member with the new invite", || {
        matches!(fresh.status().state, SessionState::Joined { .. })
    });
    assert!(
        matches!(inside.status().state, SessionState::Joined { .. }),
        "the member inside stayed"
    );
    inside.stop();
    fresh.stop();
}

/// A member gives the room a new secret from inside it: the relay (which cannot make the
/// request itself) admits by the new one alone, both members inside move to it without
/// leaving, and a newcomer with the new invite keys and hears both ways with them.
#[test]
fn a_member_rotates_the_secret_the_members_inside_stay_and_a_newcomer_with_the_new_invite_plays() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let old = relay.room("saturday");
    let rt = network_runtime();
    let (tx_a, rx_a) = std::sync::mpsc::channel();
    let (tx_b, _rx_b) = std::sync::mpsc::channel();
    let (tx_c, rx_c) = std::sync::mpsc::channel();
    let alice = join(&rt, &old, "alice", tx_a);
    let bob = join(&rt, &old, "bob", tx_b.clone());
    wait_for("alice and bob", || {
        joined_with(&alice, 1) && joined_with(&bob, 1)
    });

    alice.rotate_secret();
    wait_for("the new invite at both", || {
        alice.invite() != old && alice.invite() == bob.invite()
    });
    let new = alice.invite();
    assert_eq!(
        (new.room.clone(), new.fingerprint, new.host.clone()),
        (old.room.clone(), old.fingerprint, old.host.clone()),
        "only the secret changes"
    );
    assert_eq!(
        relay.metric("echoel_relay_joins_total"),
        2,
        "no one rejoined"
    );

    let late = join(&rt, &old, "old-invite", tx_b);
    wait_for("the old invite's refusal", || {
        late.status().state == SessionState::Refused(Refusal::WrongSecret)
    });
    let carol = join(&rt, &new, "carol", tx_c);
    wait_for("carol keyed with both, both with her", || {
        let keyed = |h: &SessionHandle| {
            let st = h.status();
            st.members.len() == 2 && st.members.iter().all(|m| m.keyed)
        };
        keyed(&alice) && keyed(&bob) && keyed(&carol)
    });
    for (from, to, inbox) in [(&carol, "alice", &rx_a), (&alice, "carol", &rx_c)] {
        let frame = b"after-the-rotation";
        let sealed = from.danger_seal(480, frame).expect("keyed");
        assert!(from.danger_send_raw(&sealed));
        let heard = std::iter::from_fn(|| inbox.recv_timeout(Duration::from_secs(3)).ok())
            .find(|(_, _, payload)| payload == frame);
        assert!(heard.is_some(), "{to} hears it");
    }
    assert_eq!(relay.metric("echoel_relay_joins_total"), 3);
    for h in [alice, bob, carol, late] {
        h.stop();
    }
}

#[test]
fn a_damaged_line_in_the_rooms_file_leaves_the_other_rooms_open() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let invite = relay.room("intact");
    let rooms = relay.state_dir.join("rooms");
    let mut bytes = std::fs::read(&rooms).unwrap();
    bytes.extend_from_slice(b"caf\xe9 not-a-verifier\n");
    std::fs::write(&rooms, bytes).unwrap();
    let rt = network_runtime();
    let (tx, _rx) = std::sync::mpsc::channel();
    let h = join(&rt, &invite, "regular", tx);
    wait_for("a member of the intact room", || joined_with(&h, 0));
    h.stop();
}

/// Handshakes from one host that never send a Join: the relay holds a bounded number of them
/// and refuses the rest at once — past the address's burst, before any handshake — and a
/// musician from another address joins meanwhile (a flood from one host costs that host, not
/// the band).
#[test]
fn a_flood_of_handshakes_that_never_join_is_capped_and_a_musician_still_joins() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let invite = relay.room("flooded");
    let rt = network_runtime();
    let flood = 200;
    let started = std::time::Instant::now();
    let (held, refused) = rt.block_on(async {
        // Another loopback address: the flood comes from a host of its own, each handshake
        // from a port of its own (Echoel endpoints tell connections apart by address).
        let attempts: Vec<_> = (0..flood)
            .map(|_| {
                let socket = std::net::UdpSocket::bind("127.0.0.3:0").expect("loopback alias");
                let mut endpoint = quinn::Endpoint::new(
                    echoel_net::tls::endpoint_config(),
                    None,
                    socket,
                    std::sync::Arc::new(quinn::TokioRuntime),
                )
                .unwrap();
                endpoint.set_default_client_config(
                    echoel_net::tls::relay_client_config(invite.fingerprint, Default::default())
                        .unwrap(),
                );
                let connecting = endpoint
                    .connect(relay.addr, echoel_net::tls::SERVER_NAME)
                    .unwrap();
                (
                    endpoint,
                    tokio::time::timeout(Duration::from_secs(5), connecting),
                )
            })
            .collect();
        let mut held = Vec::new();
        let mut refused = 0;
        for (_endpoint, a) in attempts {
            match a.await {
                Ok(Ok(conn)) => held.push(conn),
                _ => refused += 1,
            }
        }
        (held, refused)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (busy, rate) = (
        relay.metric("echoel_relay_refused_busy_total"),
        relay.metric("echoel_relay_refused_rate_total"),
    );
    println!(
        "{flood} handshakes from one address in {elapsed:.2} s: {} held, {refused} refused \
         ({rate} over the address's rate, {busy} over its pending share)",
        held.len()
    );
    assert!(held.len() <= 32, "{} handshakes held", held.len());
    assert!(busy + rate >= (flood - 32) as u64);
    // The address's rate: its burst, and what the bucket refilled while the flood lasted.
    let allowed = echoel_net::relay::HANDSHAKE_BURST
        + (echoel_net::relay::HANDSHAKES_PER_SECOND * elapsed).ceil();
    assert!(
        rate as f64 >= flood as f64 - allowed,
        "{rate} refused for their rate, at most {allowed} allowed"
    );
    // While the flood's connections are still held, a musician elsewhere gets in.
    let (tx, _rx) = std::sync::mpsc::channel();
    let h = join(&rt, &invite, "musician", tx);
    wait_for("the musician", || joined_with(&h, 0));
    h.stop();
    drop(held);
}

/// A scripted client on its own QUIC connection speaking the room protocol: it joins `invite`'s
/// room naming `member` and answers the challenge with `answer(nonce, binding)` (the proof and
/// the member signature), and returns the relay's reply.
fn raw_join(
    rt: &tokio::runtime::Runtime,
    relay: &TestRelay,
    invite: &echoel_net::Invite,
    member: echoel_net::crypto::MemberPublic,
    answer: impl FnOnce(&[u8; 32], &[u8; 32]) -> (Vec<u8>, Vec<u8>),
) -> echoel_net::wire::RelayMessage {
    raw_join_then(rt, relay, invite, member, answer, true).expect("an answer")
}

/// As [`raw_join`]; without `read_answer` it goes away the moment its proof is written,
/// reading nothing (a client that stalls its Welcome and vanishes).
fn raw_join_then(
    rt: &tokio::runtime::Runtime,
    relay: &TestRelay,
    invite: &echoel_net::Invite,
    member: echoel_net::crypto::MemberPublic,
    answer: impl FnOnce(&[u8; 32], &[u8; 32]) -> (Vec<u8>, Vec<u8>),
    read_answer: bool,
) -> Option<echoel_net::wire::RelayMessage> {
    use echoel_net::relay::scripted::ScriptedMember;
    rt.block_on(async {
        let bind = "127.0.0.1:0".parse().unwrap();
        let mut m = ScriptedMember::join(bind, relay.addr, invite, member, answer)
            .await
            .unwrap();
        if read_answer {
            return m.next().await;
        }
        // Long enough for the relay to welcome it; its Welcome is never read.
        tokio::time::sleep(Duration::from_millis(30)).await;
        m.vanish().await;
        None
    })
}

/// Sixty-four clients holding the invite join, never read their Welcome and vanish: none
/// stays a member (ghosts once filled a room until the relay restarted), and a musician who
/// comes next finds the room open and empty.
#[test]
fn stalled_joins_that_vanish_leave_no_ghost_and_the_room_open() {
    use echoel_net::crypto::MemberKey;
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let invite = relay.room("ghosts");
    let rt = network_runtime();
    for _ in 0..64 {
        let key = MemberKey::generate(&mut rand_core::OsRng);
        raw_join_then(
            &rt,
            &relay,
            &invite,
            key.public(),
            |nonce, binding| {
                (
                    invite.secret.admission_proof(&invite.room, nonce, binding),
                    key.sign_admission(nonce, binding),
                )
            },
            false,
        );
    }
    wait_for("the ghosts to be gone", || {
        relay.metric("echoel_relay_members") == 0
    });
    let welcomed = relay.metric("echoel_relay_joins_total");
    println!("64 stalled joins: {welcomed} welcomed, 0 left in the room");
    assert!(welcomed >= 32, "the ghosts were not let in: {welcomed}");
    let (tx, _rx) = std::sync::mpsc::channel();
    let h = join(&rt, &invite, "real", tx);
    wait_for("the musician, alone", || joined_with(&h, 0));
    assert_eq!(relay.metric("echoel_relay_members"), 1);
    h.stop();
}

/// A hostile member on its own QUIC connection, speaking the room protocol: it holds the room
/// secret and Alice's public key, not her private key. Naming her key to take her place is
/// refused; Alice stays in the room, the only one admitted.
#[test]
fn a_member_naming_anothers_key_is_refused_and_the_other_stays() {
    use echoel_net::crypto::MemberKey;
    use echoel_net::wire::RelayMessage;
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let invite = relay.room("identity");
    let rt = network_runtime();
    let (tx, _rx) = std::sync::mpsc::channel();
    let alice = join(&rt, &invite, "alice", tx);
    wait_for("Alice", || joined_with(&alice, 0));
    let mallory = MemberKey::generate(&mut rand_core::OsRng);
    let answer = raw_join(&rt, &relay, &invite, alice.member(), |nonce, binding| {
        (
            invite.secret.admission_proof(&invite.room, nonce, binding),
            mallory.sign_admission(nonce, binding),
        )
    });
    assert_eq!(answer, RelayMessage::Refused(Refusal::Impostor));
    assert_eq!(relay.metric("echoel_relay_refused_impostor_total"), 1);
    assert_eq!(relay.metric("echoel_relay_joins_total"), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(joined_with(&alice, 0), "Alice is still in, alone");
    alice.stop();
}

/// Someone with a copy of the relay's state folder (the relay operator, a stolen backup)
/// answers the challenge with what the `rooms` file gives them: the verifier used as a MAC
/// key (what an older relay's verifier allowed) and as a signing seed. Neither admits.
#[test]
fn the_relays_stored_verifier_admits_no_one() {
    use echoel_net::crypto::MemberKey;
    use echoel_net::wire::RelayMessage;
    use hmac::Mac;
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let invite = relay.room("stolen");
    let rooms = std::fs::read_to_string(relay.state_dir.join("rooms")).unwrap();
    let hex = rooms
        .lines()
        .find_map(|l| l.strip_prefix("stolen "))
        .and_then(|v| v.rsplit(':').next())
        .expect("the room's line");
    let verifier: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let rt = network_runtime();
    let me = MemberKey::generate(&mut rand_core::OsRng);
    let as_mac_key = |nonce: &[u8; 32], binding: &[u8; 32]| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&verifier).unwrap();
        for part in [b"echoel v1 admit".as_slice(), nonce, binding] {
            m.update(part);
        }
        m.finalize().into_bytes().to_vec()
    };
    let as_seed = |nonce: &[u8; 32], binding: &[u8; 32]| {
        let mut msg = b"echoel v2 room admission".to_vec();
        msg.extend_from_slice(nonce);
        msg.extend_from_slice(binding);
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&verifier)
            .unwrap()
            .sign(&msg)
            .as_ref()
            .to_vec()
    };
    for (what, proof) in [
        (
            "a MAC under the verifier",
            &as_mac_key as &dyn Fn(&_, &_) -> Vec<u8>,
        ),
        ("a signature seeded by the verifier", &as_seed),
    ] {
        let answer = raw_join(&rt, &relay, &invite, me.public(), |nonce, binding| {
            (proof(nonce, binding), me.sign_admission(nonce, binding))
        });
        assert_eq!(
            answer,
            RelayMessage::Refused(Refusal::WrongSecret),
            "{what} was not refused"
        );
    }
    assert_eq!(relay.metric("echoel_relay_joins_total"), 0);
}

/// A stranger — or a member with a key of its own — dials Ben directly from the address of
/// another member. Here all are on 127.0.0.1, as studios behind one router all are at its
/// public address (and a member may name another's address as one of its own): a path was
/// once matched to the member the relay saw at its address, so Ben took the stranger's path
/// for Ana's and would have played what came over it as hers. Now a path is nobody's until
/// its far end signs for the member it names, bound to that TLS session: a silent dialler and
/// one that signs Ana's id with its own key are both closed, counted, and Ana stays on the
/// relay.
#[test]
fn a_direct_path_from_a_members_address_is_no_ones_until_it_proves_who_it_is() {
    use echoel_net::crypto::MemberKey;
    use echoel_net::relay::scripted::ScriptedMember;
    use echoel_net::session::Path;
    use echoel_net::tls::{direct_client_config, path_binding, SERVER_NAME};
    use echoel_net::transport::write_frame;
    use echoel_net::wire::{PathProof, RelayMessage};
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(dir.path());
    let invite = relay.room("paths");
    let rt = network_runtime();
    let ben = {
        let _guard = rt.enter();
        session::start(
            SessionConfig {
                force_relay: false,
                ..config(&invite, "ben")
            },
            |_, _| {},
        )
        .unwrap()
    };
    wait_for("Ben", || joined_with(&ben, 0));
    // Ana: a member admitted with her own key, on a socket that takes no direct path.
    let ana_key = MemberKey::generate(&mut rand_core::OsRng);
    let mut ana = rt.block_on(async {
        ScriptedMember::join(
            "127.0.0.1:0".parse().unwrap(),
            relay.addr,
            &invite,
            ana_key.public(),
            |nonce, binding| {
                (
                    invite.secret.admission_proof(&invite.room, nonce, binding),
                    ana_key.sign_admission(nonce, binding),
                )
            },
        )
        .await
        .expect("Ana joins")
    });
    let ben_at = match rt.block_on(ana.next()) {
        Some(RelayMessage::Welcome { members, .. }) => members[0].observed,
        other => panic!("Ana was not welcomed: {other:?}"),
    };
    wait_for("Ana at Ben", || joined_with(&ben, 1));
    let anas_path = || {
        ben.status()
            .members
            .iter()
            .find(|m| m.info.participant == ana_key.participant())
            .map(|m| m.path)
    };
    let mallory = MemberKey::generate(&mut rand_core::OsRng);
    for claim in [false, true] {
        let closed = rt.block_on(async {
            let signal = Default::default();
            let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            endpoint.set_default_client_config(direct_client_config(signal).unwrap());
            let conn = endpoint
                .connect(ben_at, SERVER_NAME)
                .unwrap()
                .await
                .expect("Ben's socket takes direct paths");
            if claim {
                let binding = path_binding(&conn).unwrap();
                let proof = PathProof {
                    participant: ana_key.participant(),
                    signature: mallory.sign_path(&binding),
                };
                let mut send = conn.open_uni().await.unwrap();
                write_frame(&mut send, &proof).await.unwrap();
            }
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            endpoint.close(0u32.into(), b"done");
            closed
        });
        let path = anas_path();
        println!("claiming Ana's id: {claim}; Ben closed it: {closed:?}; Ana's path: {path:?}");
        match closed {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
                assert_eq!(c.error_code, quinn::VarInt::from_u32(4), "{c:?}")
            }
            other => panic!("Ben kept a path that proved nothing: {other:?}"),
        }
        assert_eq!(path, Some(Path::Relay), "Ben took the dialler for Ana");
    }
    assert_eq!(ben.counters().unproven_paths.load(Relaxed), 1);
    ben.stop();
}
