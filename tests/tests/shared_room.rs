//! One musician's plugin instances in one process share one room connection: the room sees one
//! participant whose role follows the instances (listening only while every one of them is
//! receive-only), whose stems are the sending instances', and whose document survives the
//! change of role; every instance hears the others of the room; the last one to leave ends it.

use std::sync::Arc;
use std::time::Duration;

use echoel_net::identity_store::IdentityStore;
use echoel_net::presence::PeerPresence;
use echoel_net::session::{SessionConfig, SessionHandle};
use echoel_net::wire::{ParticipantId, Role, StemId};
use echoel_net::Invite;
use echoel_plugin::bridge::{network_runtime, Bridge};
use echoel_plugin::engine::{Engine, EngineConfig, StreamId};
use echoel_tests::{join_room, one_at_a_time, plugin_room, wait_until};

/// A plugin instance's engine and bridge, joined to the room as Mara (the key kept in `keys`).
fn instance(room: &Invite, keys: &IdentityStore, role: Role) -> (Engine, Bridge) {
    let (engine, link) = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 2,
        max_block_frames: 256,
    })
    .unwrap();
    let bridge = Bridge::new(link).unwrap();
    let config = SessionConfig {
        identity: Some(Arc::new(keys.key_for(room).unwrap())),
        role,
        ..SessionConfig::new(room.clone(), "Mara")
    };
    bridge
        .connect_shared(config, network_runtime().handle(), None)
        .unwrap();
    (engine, bridge)
}

/// Mara as the watcher sees her: her one entry in the room, her role and her stems.
fn mara(watcher: &SessionHandle) -> Vec<(ParticipantId, Role, Vec<String>)> {
    let presence: Vec<PeerPresence> = watcher.presence();
    watcher
        .status()
        .members
        .iter()
        .filter(|m| m.info.name == "Mara")
        .map(|m| {
            let stems = presence
                .iter()
                .find(|p| p.participant == m.info.participant)
                .map(|p| p.presence.stems.iter().map(|s| s.1.clone()).collect())
                .unwrap_or_default();
            (m.info.participant, m.info.role, stems)
        })
        .collect()
}

#[test]
fn a_musicians_instances_in_one_process_are_one_participant_whose_role_follows_them() {
    let _one = one_at_a_time();
    let (dir, _relay, room) = plugin_room("shared");
    let keys = IdentityStore::new(dir.path().join("keys"));
    let watcher = join_room(&room, "Ben", None);
    let limit = Duration::from_secs(15);

    // A receive-only instance first: Mara is in the room, listening.
    let (_e1, listener) = instance(&room, &keys, Role::Listener);
    assert!(wait_until(limit, || matches!(
        mara(&watcher)[..],
        [(_, Role::Listener, ref s)] if s.is_empty()
    )));
    let first = mara(&watcher)[0].0;
    listener
        .session()
        .unwrap()
        .edit_doc(|d| d.set_tempo(101.0))
        .unwrap();

    // A sending instance joins her: still one participant (the same), now performing, its
    // track her one stem; the document edited before the change of role is still hers.
    let (_e2, performer) = instance(&room, &keys, Role::Performer);
    let seat = performer.seat().unwrap();
    assert_eq!(seat.stem(), Some(StemId(0)));
    seat.set_presence(Default::default(), "bass");
    assert!(
        wait_until(limit, || matches!(
            mara(&watcher)[..],
            [(p, Role::Performer, ref s)] if p == first && s == &["bass"]
        )),
        "{:?}",
        mara(&watcher)
    );
    assert_eq!(
        performer.session().unwrap().read_doc(|d| d.tempo()),
        101.0,
        "the document came through the change of role"
    );
    assert!(wait_until(limit, || watcher.read_doc(|d| d.tempo()) == 101.0));

    // Ben's audio reaches both of Mara's instances.
    let silence = [0xf8, 0xff, 0xfe];
    let heard_by_both = wait_until(limit, || {
        for i in 0..4u64 {
            watcher.send_audio(StemId(0), i * 960, &silence);
        }
        [&listener, &performer]
            .iter()
            .all(|b| b.participant_of(StreamId(0)).is_some())
    });
    assert!(heard_by_both, "an instance of Mara's did not hear Ben");
    let ben = listener.participant_of(StreamId(0));
    assert_eq!(performer.participant_of(StreamId(0)), ben);

    // The sending instance leaves: Mara listens again, with no stems.
    drop(seat);
    drop(performer);
    assert!(
        wait_until(limit, || matches!(
            mara(&watcher)[..],
            [(p, Role::Listener, ref s)] if p == first && s.is_empty()
        )),
        "{:?}",
        mara(&watcher)
    );

    // The last instance leaves: so does Mara.
    drop(listener);
    assert!(wait_until(limit, || mara(&watcher).is_empty()));
}
