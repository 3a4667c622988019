//! A member's control backlog at the relay: added only once its Welcome is written, dropped
//! when it stops reading, and a member that floods one that reads is the one dropped.

use super::*;

#[test]
fn the_member_is_added_only_after_its_welcome_is_written() {
    let mut r = Room::new(RoomLimits::default());
    let (a, _) = r.join("Ana", 1);
    let b = r.connect("Bo", 2);
    r.deaf.insert(b);
    r.prove(b);
    r.welcome(b);
    assert!(!r.control(a).any(|m| matches!(m, RelayMessage::Joined(_))));
    r.send(a, 0, 1);
    r.settle();
    assert!(r.heard(b).is_empty(), "no audio before the welcome is out");
    // The welcome never made it: the connection fails, and nobody ever hears of Bo.
    r.core.handle_closed(r.now, b);
    r.pump();
    assert!(!r
        .control(a)
        .any(|m| matches!(m, RelayMessage::Joined(_) | RelayMessage::Left(_))));
    assert_eq!(r.metrics.members.load(Relaxed), 1);
    // Once written, Bo is in.
    let c = r.connect("Cy", 3);
    r.deaf.insert(c);
    r.prove(c);
    r.deaf.remove(&c);
    r.core.handle_written(r.now, c); // the challenge
    assert!(!r.control(a).any(|m| matches!(m, RelayMessage::Joined(_))));
    r.core.handle_written(r.now, c); // the welcome
    r.pump();
    assert!(r.control(a).any(|m| matches!(m, RelayMessage::Joined(_))));
}

#[test]
fn a_member_that_stops_reading_is_dropped_instead_of_buffered() {
    let limits = RoomLimits {
        max_unwritten: 8,
        ..RoomLimits::default()
    };
    let mut r = Room::new(limits);
    let (a, _) = r.join("Ana", 1);
    let (stuck, id_stuck) = r.join("Bo", 2);
    let (c, _) = r.join("Cy", 3);
    r.clear();
    r.deaf.insert(stuck);
    for i in 0..20 {
        r.core.handle_message(
            r.now,
            a,
            ClientMessage::Send {
                to: None,
                body: vec![i],
            },
        );
        r.pump();
    }
    assert_eq!(r.closed(stuck), Some(CloseReason::TooSlow));
    let queued = r.control(stuck).count();
    assert_eq!(queued, 8, "held its backlog and no more");
    assert!(r.control(c).any(|m| *m == RelayMessage::Left(id_stuck)));
    assert_eq!(r.control(c).count(), 20 + 1, "the others lose nothing");
    assert_eq!(r.metrics.evicted_slow.load(Relaxed), 1);
    assert_eq!(r.core.members().count(), 2);
}

/// A member floods the room with control messages faster than Bo reads them (Bo reads, one in
/// a while): the flooder is dropped, not the reader. Bo's backlog held at most one input past
/// its bound, and Bo goes on hearing the relay (the flooder's leave) and Cy.
#[test]
fn a_member_flooding_a_reader_is_dropped_instead_of_the_reader() {
    let limits = RoomLimits {
        max_unwritten: 8,
        ..RoomLimits::default()
    };
    let mut r = Room::new(limits);
    let (flooder, id_flooder) = r.join("Mal", 1);
    let (bo, _) = r.join("Bo", 2);
    let (cy, _) = r.join("Cy", 3);
    r.clear();
    r.deaf.insert(bo);
    let send = |r: &mut Room, from, body| {
        let msg = ClientMessage::Send { to: None, body };
        r.core.handle_message(r.now, from, msg);
        r.pump();
    };
    for i in 0..40u8 {
        send(&mut r, flooder, vec![i]);
        if i % 4 == 0 {
            // Bo reads one now and then: slower than the flood, but reading.
            r.core.handle_written(r.now, bo);
        }
        if r.closed(flooder).is_some() {
            break;
        }
    }
    assert_eq!(r.closed(flooder), Some(CloseReason::Flooding));
    assert_eq!(r.closed(bo), None, "the reader stays");
    assert_eq!(r.metrics.evicted_flooding.load(Relaxed), 1);
    assert_eq!(r.metrics.evicted_slow.load(Relaxed), 0);
    assert!(r.control(bo).any(|m| *m == RelayMessage::Left(id_flooder)));
    let queued = r.control(bo).count();
    assert!(queued <= 8 + 4, "Bo's backlog: {queued}");
    // Cy speaks; Bo, reading again, hears it.
    r.deaf.remove(&bo);
    send(&mut r, cy, vec![99]);
    assert!(r
        .control(bo)
        .any(|m| matches!(m, RelayMessage::From { body, .. } if body == &[99])));
    assert_eq!(r.core.members().count(), 2);
}
