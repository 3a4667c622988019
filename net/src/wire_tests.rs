//! The wire formats: round trips, and what is refused.

use super::*;
use proptest::prelude::*;

#[test]
fn redundant_frames_round_trip_and_bad_containers_are_refused() {
    let mut out = Vec::new();
    let before = OlderFrame {
        units_back: 1,
        frame: b"before",
    };
    let earlier = OlderFrame {
        units_back: 8,
        frame: b"earlier",
    };
    pack_frames(b"now", &[before, earlier], &mut out);
    let (primary, older) = unpack_frames(&out).unwrap();
    assert_eq!(primary, b"now");
    assert_eq!(older, [Some(before), Some(earlier)]);
    assert_eq!(unpack_frames(&[3]), Err(WireError::Malformed));
    assert_eq!(unpack_frames(&[1, 0, 9, 1, 1]), Err(WireError::Truncated));
    assert_eq!(unpack_frames(&[1, 0, 1, 0, 7]), Err(WireError::Malformed));
    assert_eq!(unpack_frames(&[]), Err(WireError::Truncated));
    let h = AudioHeader {
        epoch: 3,
        stem: StemId(1),
        seq_low: 7,
        redundant: true,
    };
    assert_eq!(AudioHeader::decode(&h.encode()), Ok(h));
}

#[test]
fn audio_header_is_four_bytes_and_round_trips() {
    let h = AudioHeader {
        epoch: 9,
        stem: StemId(2),
        seq_low: 0xbeef,
        redundant: false,
    };
    let b = h.encode();
    assert_eq!(b, [0x19, 2, 0xbe, 0xef]);
    assert_eq!(AudioHeader::decode(&b).unwrap(), h);
    assert_eq!(
        AudioHeader::decode(&[0x39, 0, 0, 0]).unwrap_err(),
        WireError::UnknownKind
    );
    assert_eq!(
        AudioHeader::decode(&[0x19, 0, 0]).unwrap_err(),
        WireError::Truncated
    );
}

#[test]
fn control_frames_round_trip() {
    let msgs = vec![
        ClientMessage::Join {
            room: "band".into(),
            name: "Ana".into(),
            member: MemberPublic([7; 32]),
            instance: 3,
            role: Role::Performer,
            local: vec![SocketAddr::from(([198, 18, 0, 2], 4433))],
        },
        ClientMessage::Proof {
            proof: vec![5; 64],
            signature: vec![6; 64],
        },
        ClientMessage::Send {
            to: Some(MemberId(3)),
            body: vec![1, 2, 3],
        },
    ];
    for m in msgs {
        let f = encode_frame(&m).unwrap();
        let len = u16::from_be_bytes([f[0], f[1]]) as usize;
        assert_eq!(len, f.len() - 2);
        assert_eq!(decode_body::<ClientMessage>(&f[2..]).unwrap(), m);
    }
}

proptest! {
    #[test]
    fn header_round_trips(epoch in 0u8..16, stem in any::<u8>(), seq in any::<u16>(), redundant in any::<bool>()) {
        let h = AudioHeader { epoch, stem: StemId(stem), seq_low: seq, redundant };
        prop_assert_eq!(AudioHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn frame_containers_round_trip(
        primary in proptest::collection::vec(any::<u8>(), 0..300),
        older in proptest::collection::vec((1u8.., proptest::collection::vec(any::<u8>(), 0..300)), 0..3),
    ) {
        let refs: Vec<OlderFrame<'_>> = older
            .iter()
            .map(|(units_back, f)| OlderFrame { units_back: *units_back, frame: f })
            .collect();
        let mut out = Vec::new();
        pack_frames(&primary, &refs, &mut out);
        let (p, o) = unpack_frames(&out).unwrap();
        prop_assert_eq!(p, &primary[..]);
        for (i, frame) in refs.iter().enumerate() {
            prop_assert_eq!(o[i], Some(*frame));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = AudioHeader::decode(&bytes);
        let _ = unpack_frames(&bytes);
        let _ = Forwarded::parse(&bytes);
        let _ = decode_body::<ClientMessage>(&bytes);
        let _ = decode_body::<RelayMessage>(&bytes);
        let _ = decode_body::<PeerMessage>(&bytes);
    }

    #[test]
    fn bundles_round_trip(lens in proptest::collection::vec(20usize..300, 1..8)) {
        let items: Vec<(MemberId, usize, Vec<u8>)> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                // Senders on both sides of the one-byte prefix.
                let sender = MemberId(i as u16 * 100);
                let mut v = Vec::new();
                encode_sender(sender, &mut v);
                let start = v.len();
                v.extend_from_slice(&[0x10, 0, i as u8]);
                v.resize(start + n, 0xaa);
                (sender, start, v)
            })
            .collect();
        let mut out = Vec::new();
        bundle(items.iter().map(|(_, _, v)| v.as_slice()), &mut out);
        let parsed: Vec<_> = forwarded_items(&out).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(parsed.len(), items.len());
        for (p, (sender, start, item)) in parsed.iter().zip(&items) {
            prop_assert_eq!(p.sender, *sender);
            prop_assert_eq!(p.datagram, &item[*start..]);
        }
    }

    #[test]
    fn random_bundles_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut b = bytes.clone();
        b.insert(0, BUNDLE_MARKER);
        prop_assert!(forwarded_items(&b).take(1000).count() <= 600);
    }

    #[test]
    fn sender_prefixes_round_trip(id in 0u16..=MemberId::MAX.0, tail in proptest::collection::vec(any::<u8>(), 0..4)) {
        let mut b = Vec::new();
        encode_sender(MemberId(id), &mut b);
        prop_assert_eq!(b.len(), if id < 0x80 { 1 } else { 2 });
        prop_assert_ne!(b[0], BUNDLE_MARKER);
        b.extend_from_slice(&tail);
        prop_assert_eq!(decode_sender(&b), Ok((MemberId(id), &tail[..])));
    }

    #[test]
    fn relay_messages_round_trip(name in "[a-zA-Z ]{0,20}", id in any::<u16>(), port in 1u16..) {
        let key = crate::crypto::MemberPublic([port as u8; 32]);
        let m = RelayMessage::Joined(MemberInfo {
            id: MemberId(id),
            participant: key.participant(u32::from(id)),
            member: key,
            instance: u32::from(id),
            name,
            observed: SocketAddr::from(([127, 0, 0, 1], port)),
            local: vec![SocketAddr::from(([198, 18, 0, 2], port))],
            role: if port % 2 == 0 { Role::Listener } else { Role::Performer },
        });
        let f = encode_frame(&m).unwrap();
        prop_assert_eq!(decode_body::<RelayMessage>(&f[2..]).unwrap(), m);
    }
}
