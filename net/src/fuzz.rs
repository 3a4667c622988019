//! A mutation soak of every parser that takes bytes from outside: audio datagrams, control
//! frames, peer messages through a member's receive path, hostile document sync messages
//! (what an insider can seal to us), invites, stored documents and the
//! relay's rooms file. Each target starts from valid inputs and feeds mutations of them
//! (bit flips, random bytes, cuts, insertions, splices); every call must return, accept or
//! refuse — a panic is a crasher, kept with its bytes so it can become a fixture test.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::core::member::{RoomCore, RoomSetup};
use crate::core::sync::DocReplica;
use crate::crypto::{MemberKeys, RotationPolicy};
use crate::doc::{DocSync, SessionDoc};
use crate::invite::{Invite, RoomId};
use crate::presence::Presence;
use crate::sim::DangerSeededRng;
use crate::wire::{
    decode_body, encode_frame, encode_peer, encode_sender, ClientMessage, MemberId, MemberInfo,
    PeerMessage, RelayMessage, StemId,
};
use crate::RoomSecret;

/// A parser: true when it took the input as valid.
type Parse = Box<dyn FnMut(&[u8]) -> bool>;

/// One parser under the soak.
pub struct Target {
    /// What it parses.
    pub name: &'static str,
    /// Valid inputs the mutations start from.
    corpus: Vec<Vec<u8>>,
    /// Parses one input; true when it was taken.
    parse: Parse,
    /// Inputs per unit of the soak's budget (slow parsers get fewer).
    pub weight: f64,
}

/// What a target's soak found.
#[derive(Debug, Default)]
pub struct TargetReport {
    /// Inputs fed.
    pub inputs: u64,
    /// Inputs the parser took as valid.
    pub accepted: u64,
    /// Inputs that made it panic.
    pub crashers: Vec<Vec<u8>>,
    /// Seconds spent.
    pub seconds: f64,
}

/// Feeds `inputs` mutations (from `seed`) to `target`.
pub fn soak(target: &mut Target, seed: u64, inputs: u64) -> TargetReport {
    let mut rng = DangerSeededRng::new(seed);
    let mut report = TargetReport::default();
    let started = Instant::now();
    let mut input = Vec::new();
    for _ in 0..inputs {
        mutate(&mut rng, &target.corpus, &mut input);
        report.inputs += 1;
        match catch_unwind(AssertUnwindSafe(|| (target.parse)(&input))) {
            Ok(true) => report.accepted += 1,
            Ok(false) => {}
            Err(_) => {
                if report.crashers.len() < 16 {
                    report.crashers.push(input.clone());
                }
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// A mutation of a random corpus item into `out`: one to four edits.
fn mutate(rng: &mut DangerSeededRng, corpus: &[Vec<u8>], out: &mut Vec<u8>) {
    let pick = |rng: &mut DangerSeededRng| &corpus[rng.below(corpus.len() as u64) as usize];
    out.clear();
    out.extend_from_slice(pick(rng));
    for _ in 0..=rng.below(4) {
        let len = out.len() as u64;
        let at = |rng: &mut DangerSeededRng| rng.below(len.max(1)) as usize;
        match rng.below(8) {
            0 if len > 0 => {
                let i = at(rng);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = at(rng);
                out[i] = rng.below(256) as u8;
            }
            2 if len > 0 => {
                // Interesting values where lengths and counts live.
                let i = at(rng);
                out[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5) as usize];
            }
            3 => {
                let i = rng.below(len + 1) as usize;
                out.insert(i, rng.below(256) as u8);
            }
            4 if len > 0 => {
                let i = at(rng);
                let n = (1 + rng.below(16) as usize).min(out.len() - i);
                out.drain(i..i + n);
            }
            5 => out.truncate(rng.below(len + 1) as usize),
            6 => {
                // Splice: the tail of another valid input.
                let other = pick(rng);
                let from = rng.below(other.len() as u64 + 1) as usize;
                let i = rng.below(len + 1) as usize;
                out.truncate(i);
                out.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                // A run of one byte repeated: lengths that claim far more than is there.
                let i = at(rng);
                let n = 1 + rng.below(64) as usize;
                let b = rng.below(256) as u8;
                out.splice(i..i, std::iter::repeat_n(b, n));
            }
            _ => out.push(rng.below(256) as u8),
        }
    }
}

fn room() -> RoomId {
    RoomId::new("fuzz").expect("valid")
}

fn secret() -> RoomSecret {
    RoomSecret::from_bytes([42; 32])
}

/// Two members' keys introduced to each other: what a member holds to open audio.
fn keyed_pair() -> (MemberKeys, MemberKeys) {
    let now = Instant::now();
    let mut rng = DangerSeededRng::new(1);
    let auth = secret().member_auth(&room());
    let identity = |seed| std::sync::Arc::new(crate::crypto::MemberKey::from_seed(&[seed; 32]));
    let mut a = MemberKeys::new(
        MemberId(1),
        auth.clone(),
        identity(1),
        RotationPolicy::default(),
        now,
        &mut rng,
    );
    let mut b = MemberKeys::new(
        MemberId(2),
        auth,
        identity(2),
        RotationPolicy::default(),
        now,
        &mut rng,
    );
    let to_a = b
        .accept_announce(&a.announce(), &a.public())
        .expect("announce");
    let to_b = a
        .accept_announce(&b.announce(), &b.public())
        .expect("announce");
    a.accept_grant(&to_a, now).expect("grant");
    b.accept_grant(&to_b, now).expect("grant");
    (a, b)
}

/// A member core in a room with one other member (id 1), and its document.
fn joined_core() -> (RoomCore, DocReplica) {
    let identity = std::sync::Arc::new(crate::crypto::MemberKey::from_seed(&[2; 32]));
    let me = identity.participant();
    let mut core = RoomCore::new(
        RoomSetup {
            identity,
            presence: Presence::default(),
            auth: secret().member_auth(&room()),
            room: room(),
            rotation: RotationPolicy::default(),
            force_relay: true,
            rng: Box::new(DangerSeededRng::new(3)),
        },
        Default::default(),
    );
    let doc = SessionDoc::new().expect("genesis");
    let mut doc = DocReplica::new(doc, me);
    let key = keyed_pair().0.public();
    let other = MemberInfo {
        id: MemberId(1),
        participant: key.participant(0),
        member: key,
        instance: 0,
        name: "other".into(),
        observed: std::net::SocketAddr::from(([192, 0, 2, 1], 4000)),
        local: Vec::new(),
        role: crate::wire::Role::Performer,
    };
    core.handle_welcome(Instant::now(), MemberId(2), vec![other], &mut doc);
    (core, doc)
}

/// Real sync messages between two replicas with a few edits.
fn sync_messages() -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut a = SessionDoc::new().expect("genesis");
    let mut b = SessionDoc::new().expect("genesis");
    let _ = a.set_tempo(97.0);
    let _ = a.chart_append("| Am | F | C | G |");
    let _ = a.set_key("F#m");
    let (mut sa, mut sb) = (DocSync::default(), DocSync::default());
    let mut msgs = Vec::new();
    for _ in 0..6 {
        if let Some(m) = sa.generate(&mut a) {
            let _ = sb.receive(&mut b, &m);
            msgs.push(m);
        }
        if let Some(m) = sb.generate(&mut b) {
            let _ = sa.receive(&mut a, &m);
            msgs.push(m);
        }
    }
    (msgs, a.save())
}

/// Every target, with its corpus.
pub fn targets() -> Vec<Target> {
    let (mut sender, receiver) = keyed_pair();
    let mut datagrams = Vec::new();
    for (i, redundant) in [(0u64, false), (1, true), (2, false)] {
        let mut d = Vec::new();
        encode_sender(MemberId(1), &mut d);
        let start = d.len();
        let seq = sender.seal_audio(StemId(i as u8), i * 120, &[i as u8; 40], redundant, &mut d);
        sender.seal_audio_macs(&mut d, start, seq);
        datagrams.push(d);
    }
    let mut receiver = receiver;
    let mut sessions_core = joined_core();
    let (sync, saved) = sync_messages();
    let peer_corpus: Vec<Vec<u8>> = [
        PeerMessage::Announce(sender.announce()),
        PeerMessage::Keyed { epoch: 3 },
        PeerMessage::Doc {
            ends: crate::crypto::DocEnds {
                from: sender.announce(),
                to_epoch: 0,
                to_public: [6; 32],
            },
            nonce: [7; 12],
            sealed: vec![1; 40],
            message: 2,
            part: 0,
            parts: 2,
        },
        PeerMessage::Presence {
            epoch: 0,
            nonce: [9; 12],
            sealed: vec![3; 30],
        },
        PeerMessage::Secret {
            ends: crate::crypto::DocEnds {
                from: sender.announce(),
                to_epoch: 0,
                to_public: [6; 32],
            },
            nonce: [8; 12],
            sealed: vec![2; 48],
        },
        PeerMessage::Take {
            ends: crate::crypto::DocEnds {
                from: sender.announce(),
                to_epoch: 0,
                to_public: [6; 32],
            },
            nonce: [5; 12],
            sealed: vec![4; 64],
        },
    ]
    .iter()
    .map(encode_peer)
    .collect();
    let frames = |msgs: &[&dyn Fn() -> Option<Vec<u8>>]| -> Vec<Vec<u8>> {
        msgs.iter()
            .filter_map(|m| m())
            .map(|f| f[2..].to_vec())
            .collect()
    };
    let client_corpus = frames(&[
        &|| {
            encode_frame(&ClientMessage::Join {
                room: "fuzz".into(),
                name: "m".into(),
                member: crate::crypto::MemberPublic([5; 32]),
                instance: 0,
                role: Default::default(),
                local: Vec::new(),
            })
            .ok()
        },
        &|| {
            encode_frame(&ClientMessage::Proof {
                proof: vec![1; 64],
                signature: vec![2; 64],
            })
            .ok()
        },
        &|| {
            encode_frame(&ClientMessage::Send {
                to: Some(MemberId(3)),
                body: vec![1, 2, 3],
            })
            .ok()
        },
        &|| {
            encode_frame(&ClientMessage::Route {
                direct: vec![MemberId(1)],
            })
            .ok()
        },
        &|| {
            encode_frame(&ClientMessage::Rotate {
                verifier: [3; 32],
                proof: vec![4; 64],
            })
            .ok()
        },
    ]);
    let relay_corpus = frames(&[
        &|| encode_frame(&RelayMessage::Challenge { nonce: [4; 32] }).ok(),
        &|| {
            encode_frame(&RelayMessage::From {
                from: MemberId(1),
                body: vec![9; 20],
            })
            .ok()
        },
        &|| encode_frame(&RelayMessage::Left(MemberId(4))).ok(),
        &|| {
            encode_frame(&RelayMessage::Rotated {
                by: MemberId(1),
                verifier: [5; 32],
            })
            .ok()
        },
        &|| encode_frame(&RelayMessage::RotationRefused).ok(),
    ]);
    let invite = format!(
        "echoel://relay.example.org:4433/fuzz?fp={}&secret={}",
        "ab".repeat(32),
        secret().to_base64()
    );
    let rooms = format!(
        "fuzz ed25519:{}\nother ed25519:{}\n# note\nold {}\n",
        "cd".repeat(32),
        "ef".repeat(32),
        "01".repeat(32)
    );
    let mut doc_target = SessionDoc::new().expect("genesis");
    let mut taken_since_reset = 0u32;
    let store = crate::store::RoomStore::new(std::path::Path::new("fuzz"));
    vec![
        Target {
            name: "audio datagram (forwarded, opened)",
            corpus: datagrams,
            parse: Box::new(move |bytes| {
                let mut any = false;
                for item in crate::wire::forwarded_items(bytes).flatten() {
                    let mut d = item.datagram.to_vec();
                    any |= receiver.open_relayed_audio(item.sender, &mut d).is_ok();
                    let mut d = item.datagram.to_vec();
                    any |= receiver.open_audio(item.sender, &mut d).is_ok();
                }
                any
            }),
            weight: 1.0,
        },
        Target {
            name: "control frame, member to relay",
            corpus: client_corpus,
            parse: Box::new(|bytes| decode_body::<ClientMessage>(bytes).is_ok()),
            weight: 1.0,
        },
        Target {
            name: "control frame, relay to member",
            corpus: relay_corpus,
            parse: Box::new(|bytes| decode_body::<RelayMessage>(bytes).is_ok()),
            weight: 1.0,
        },
        Target {
            name: "direct path proof, checked",
            corpus: frames(&[&|| {
                let key = crate::crypto::MemberKey::from_seed(&[6; 32]);
                encode_frame(&crate::wire::PathProof {
                    participant: key.participant(),
                    signature: key.sign_path(&[7; 32]),
                })
                .ok()
            }]),
            parse: Box::new(|bytes| {
                let key = crate::crypto::MemberKey::from_seed(&[6; 32]).public();
                decode_body::<crate::wire::PathProof>(bytes)
                    .is_ok_and(|p| key.verify_path(p.participant, &[7; 32], &p.signature))
            }),
            // Each input that decodes costs a signature check.
            weight: 0.05,
        },
        Target {
            name: "peer message through a member's core",
            corpus: peer_corpus,
            parse: Box::new(move |bytes| {
                let (core, doc) = &mut sessions_core;
                let msg = RelayMessage::From {
                    from: MemberId(1),
                    body: bytes.to_vec(),
                };
                core.handle_relay(Instant::now(), msg, doc);
                while core.poll_transmit().is_some() {}
                while core.poll_event().is_some() {}
                decode_body::<PeerMessage>(bytes).is_ok()
            }),
            weight: 0.5,
        },
        Target {
            name: "document sync message (an insider's)",
            corpus: sync,
            parse: Box::new(move |bytes| {
                // The document grows with what is taken; start afresh now and then.
                taken_since_reset += 1;
                if taken_since_reset > 2000 {
                    taken_since_reset = 0;
                    if let Ok(d) = SessionDoc::new() {
                        doc_target = d;
                    }
                }
                DocSync::default().receive(&mut doc_target, bytes).is_ok()
            }),
            weight: 0.05,
        },
        Target {
            name: "stored document",
            corpus: vec![saved],
            parse: Box::new(|bytes| SessionDoc::load(bytes).is_ok()),
            weight: 0.02,
        },
        Target {
            name: "invite",
            corpus: vec![invite.into_bytes()],
            parse: Box::new(|bytes| String::from_utf8_lossy(bytes).parse::<Invite>().is_ok()),
            weight: 1.0,
        },
        Target {
            name: "relay rooms file",
            corpus: vec![rooms.into_bytes()],
            parse: Box::new(move |bytes| !store.parse(bytes).rooms.is_empty()),
            weight: 0.5,
        },
    ]
}

/// A target made outside this crate (the plugin's saved state, say).
pub fn target(
    name: &'static str,
    corpus: Vec<Vec<u8>>,
    weight: f64,
    parse: impl FnMut(&[u8]) -> bool + 'static,
) -> Target {
    Target {
        name,
        corpus,
        parse: Box::new(parse),
        weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short soak of every target in each `cargo test`: none panics, and each both takes
    /// some inputs and refuses others (the mutations reach past the first check).
    #[test]
    fn every_parser_survives_a_short_mutation_soak() {
        for mut t in targets() {
            let n = (20_000.0 * t.weight) as u64;
            let r = soak(&mut t, 7, n);
            assert!(
                r.crashers.is_empty(),
                "{}: crashers {:?}",
                t.name,
                r.crashers
            );
            assert!(r.accepted < r.inputs, "{}: every input taken", t.name);
            println!("{}: {} inputs, {} taken", t.name, r.inputs, r.accepted);
        }
    }

    /// The soak catches a parser that panics (so a clean soak means something).
    #[test]
    fn a_panicking_parser_is_caught_with_its_input() {
        let mut t = target("panics on a zero byte", vec![vec![1, 2, 3]], 1.0, |b| {
            assert!(!b.contains(&0), "zero byte");
            true
        });
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = soak(&mut t, 1, 2000);
        std::panic::set_hook(hook);
        assert!(!r.crashers.is_empty());
        assert!(r.crashers.iter().all(|c| c.contains(&0)));
    }
}
