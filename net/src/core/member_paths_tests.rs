//! The member core and its paths: which copy of a frame plays, which way is faster, and what
//! fits a path.

use super::*;

/// Both copies of a frame reach a member with a direct path to its sender: the first plays,
/// the second is a duplicate. The same second copy from a sender without a direct path is a
/// replay.
#[test]
fn the_relays_copy_of_a_frame_a_direct_path_brought_is_a_duplicate_not_a_replay() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    b.join(1);
    b.settle_keys();
    let id0 = b.ids[0].unwrap();
    for (direct, media) in [(false, 0), (true, 120)] {
        if direct {
            b.cores[1].handle_path_up(b.now, id0, &mut b.docs[1]);
        }
        let (datagram, relayed) = b.cores[0]
            .seal_audio(StemId(0), media, &[7; 20], 0)
            .map(|s| (s.direct.to_vec(), s.relay.map(<[u8]>::to_vec)))
            .unwrap();
        let relayed = relayed.expect("the relay stands by");
        let mut fwd = Vec::new();
        crate::wire::encode_sender(id0, &mut fwd);
        fwd.extend_from_slice(&relayed);
        let (via, first) = if direct {
            (Via::Direct(id0), &datagram)
        } else {
            (Via::Relay, &fwd)
        };
        let mut heard = 0;
        b.cores[1].open_datagram(b.now, via, first, &mut |_, _| heard += 1);
        b.cores[1].open_datagram(b.now, Via::Relay, &fwd, &mut |_, _| heard += 1);
        assert_eq!(heard, 1, "one copy plays");
        let c = &b.cores[1].counters;
        let (dup, replay) = (c.duplicates.load(Relaxed), c.replayed.load(Relaxed));
        assert_eq!((dup, replay), if direct { (1, 1) } else { (0, 1) });
    }
}

/// A direct path that carries yet brings each frame after the relay's copy is the slower way:
/// the relay's copies are what plays, and the route says so. Once the direct copies come
/// first again, it is the direct path's.
#[test]
fn a_direct_path_slower_than_the_relay_is_not_the_way_we_hear() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    b.join(1);
    b.settle_keys();
    let id0 = b.ids[0].unwrap();
    b.cores[1].handle_path_up(b.now, id0, &mut b.docs[1]);
    let mut media = 0;
    let mut faster_after = |b: &mut Band, relay_first: bool, frames: usize| {
        (0..frames).position(|_| {
            media += 120;
            let (datagram, relayed) = b.cores[0]
                .seal_audio(StemId(0), media, &[7; 20], 0)
                .map(|s| (s.direct.to_vec(), s.relay.unwrap_or_default().to_vec()))
                .unwrap();
            let mut fwd = Vec::new();
            crate::wire::encode_sender(id0, &mut fwd);
            fwd.extend_from_slice(&relayed);
            let mut copies = [(Via::Relay, fwd), (Via::Direct(id0), datagram)];
            if !relay_first {
                copies.reverse();
            }
            for (via, d) in &copies {
                b.cores[1].open_datagram(b.now, *via, d, &mut |_, _| {});
            }
            b.cores[1].relay_faster(id0) == relay_first
        })
    };
    assert!(
        !b.cores[1].relay_faster(id0),
        "the direct path starts as ours"
    );
    let took = faster_after(&mut b, true, 2000).expect("the relay is never found faster");
    // A second's frames at 2.5 ms: not at once (a lost direct frame now and then is not a
    // slower path), and not after many seconds.
    assert!(
        (200..=600).contains(&took),
        "relay found faster after {took} frames"
    );
    let took = faster_after(&mut b, false, 2000).expect("the direct path is never ours again");
    assert!(took <= 600, "direct found faster again after {took} frames");
}

/// Redundancy carries the earlier frames only as far as the datagram fits a path, the relay's
/// copy with its MACs: 20 ms frames at 256 kbit/s (640 bytes) go alone rather than as a
/// datagram of 1,900 bytes that no path carries; 2.5 ms frames carry both earlier ones; 369
/// bytes would carry both but for the MACs.
#[test]
fn redundancy_never_makes_a_datagram_too_large_for_a_path() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    b.join(1);
    b.settle_keys();
    let macs = 1 + crate::crypto::AUDIO_MAC_ENTRY;
    for (frame, carried) in [(40usize, 2usize), (640, 0), (320, 2), (369, 1)] {
        let mut longest = 0;
        let mut media = 0;
        for _ in 0..4 {
            media += 960;
            let relayed = b.cores[0]
                .seal_audio(StemId(0), media, &vec![7; frame], 2)
                .and_then(|s| s.relay)
                .expect("joined, with Bo in the room");
            longest = longest.max(relayed.len());
        }
        assert!(
            longest <= crate::core::audio::MAX_DATAGRAM,
            "{frame}: {longest} bytes"
        );
        assert_eq!(
            longest,
            4 + 2 + 16 + 1 + frame + carried * (3 + frame) + macs,
            "{frame}-byte frames carry {carried} earlier"
        );
    }
}

/// Ana's stream overflows Bo's downlink: only the relay's side of that link sees the queue,
/// so Bo's presence tells Ana, who asks her encoder for less (`queue_reported`).
#[test]
fn a_listener_tells_the_sender_its_audio_queues_on_the_way() {
    let mut b = Band::new(2, RotationPolicy::default());
    b.join(0);
    b.join(1);
    b.settle_keys();
    let frame = Duration::from_micros(2500);
    let mut media = 0u64;
    let worst = |b: &mut Band, seconds: u64, per_frame: u64, media: &mut u64| {
        let mut worst = Duration::ZERO;
        for _ in 0..seconds * 400 {
            let d = sealed(b, 0, *media);
            assert_eq!(heard_at(b, 1, 0, &d), 1);
            *media += per_frame;
            b.tick(frame);
            let now = b.now;
            worst = worst.max(b.cores[0].queue_reported(now).unwrap_or_default());
        }
        worst
    };
    // Steady: nothing to tell.
    assert_eq!(worst(&mut b, 4, 120, &mut media), Duration::ZERO);
    // Frames arrive 4 % slower than they are played: a queue that grows 40 ms a second.
    let grew = worst(&mut b, 3, 115, &mut media);
    assert!(grew >= Duration::from_millis(80), "{grew:?}");
}
