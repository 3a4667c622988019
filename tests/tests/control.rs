//! The plugin's control thread driven by editor commands against a real relay, with a second
//! member watching: what the musician clicks reaches the room, and what the room holds comes
//! back in the editor's snapshot.

use std::sync::Arc;
use std::time::Duration;

use echoel_gui::{Command, LinkStatus, Snapshot};
use echoel_plugin::bridge::Bridge;
use echoel_plugin::control::{ControlThread, Controls};
use echoel_plugin::engine::{Engine, EngineConfig};
use echoel_plugin::params::EchoelParams;
use echoel_tests::{join_room, plugin_room, wait_until};

struct Plugin {
    controls: Arc<Controls>,
    params: Arc<EchoelParams>,
    _control: ControlThread,
}

fn plugin() -> Plugin {
    let (engine, link) = Engine::new(EngineConfig {
        sample_rate_hz: 48_000,
        host_channels: 2,
        max_block_frames: 256,
    })
    .unwrap();
    let controls = Controls::new();
    let params = Arc::new(EchoelParams::default());
    let control = ControlThread::start(
        controls.clone(),
        params.clone(),
        Bridge::new(link).unwrap(),
        engine.stats().clone(),
    )
    .unwrap();
    Plugin {
        controls,
        params,
        _control: control,
    }
}

fn snap(p: &Plugin) -> Snapshot {
    p.controls.snapshot().0
}

#[test]
fn editor_commands_reach_the_room_and_the_room_comes_back_in_the_snapshot() {
    let _one = echoel_tests::one_at_a_time();
    // The room's local store goes to a scratch data folder, not the user's.
    let (_dir, _relay, room) = plugin_room("control");
    let p = plugin();

    // A pasted invite with a typo is refused with a reason, not a crash.
    assert!(p.controls.send(Command::Connect {
        invite: "echoel://not an invite".into(),
        name: "Ana".into(),
        instrument: "sax".into(),
    }));
    assert!(wait_until(Duration::from_secs(5), || matches!(
        snap(&p).link,
        LinkStatus::Failed(ref why) if why.contains("invite")
    )));

    // A stale invite: the editor says so in words a musician can act on.
    let mut stale = room.clone();
    stale.secret = echoel_net::RoomSecret::generate();
    assert!(p.controls.send(Command::Connect {
        invite: stale.to_string(),
        name: "Ana".into(),
        instrument: "sax".into(),
    }));
    assert!(
        wait_until(Duration::from_secs(10), || matches!(
            snap(&p).link,
            LinkStatus::Failed(ref why) if why.contains("wrong room secret")
        )),
        "{:?}",
        snap(&p).link
    );
    // A relay that is not running: the editor keeps trying and says why.
    let mut nowhere = room.clone();
    nowhere.port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(p.controls.send(Command::Connect {
        invite: nowhere.to_string(),
        name: "Ana".into(),
        instrument: "sax".into(),
    }));
    assert!(
        wait_until(Duration::from_secs(10), || matches!(
            snap(&p).link,
            LinkStatus::Retrying(ref why) if why.contains("unreachable")
        )),
        "{:?}",
        snap(&p).link
    );

    let bo = join_room(&room, "Bo", None);
    assert!(p.controls.send(Command::Connect {
        invite: room.to_string(),
        name: "Ana".into(),
        instrument: "sax".into(),
    }));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = snap(&p);
            s.link == LinkStatus::Joined && s.people.iter().any(|m| m.name == "Bo")
        }),
        "{:?}",
        snap(&p)
    );
    assert_eq!(p.params.display_name.read().unwrap().as_str(), "Ana");
    assert_eq!(p.params.instrument.read().unwrap().as_str(), "sax");

    for c in [
        Command::SetTempo(101.0),
        Command::SetKey("G major".into()),
        Command::AddTrack {
            name: "Horns".into(),
            instrument: "sax".into(),
        },
        Command::EditChart {
            pos: 0,
            delete: 0,
            insert: "[A] G | C | D |".into(),
        },
        Command::ChartCursor {
            cursor: Some((3, 3)),
            typing: true,
        },
    ] {
        assert!(p.controls.send(c));
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            bo.read_doc(|d| {
                d.tempo() == 101.0
                    && d.meter_and_key().1 == "G major"
                    && d.tracks()
                        .iter()
                        .any(|t| t.name == "Horns" && t.owner == "Ana")
                    && d.chart() == "[A] G | C | D |"
            })
        }),
        "{}",
        bo.read_doc(|d| d.to_json())
    );
    // Bo sees Ana's presence: name, instrument, her track and her caret while typing.
    assert!(wait_until(Duration::from_secs(5), || !snap(&p)
        .session
        .tracks
        .is_empty()));
    let track = snap(&p).session.tracks[0].id.clone();
    assert!(p
        .controls
        .send(Command::SetActiveTrack(Some(track.clone()))));
    assert!(
        wait_until(Duration::from_secs(5), || bo.presence().iter().any(|x| {
            let pr = &x.presence;
            pr.name == "Ana"
                && pr.instrument == "sax"
                && pr.track.as_deref() == Some(track.as_str())
                && pr.cursor == Some((3, 3))
                && pr.typing
        })),
        "{:?}",
        bo.presence()
    );

    // Bo's edit shows in Ana's editor.
    bo.edit_doc(|d| d.chart_append("\n[B] Em | C |")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || snap(&p)
        .session
        .chart
        .ends_with("[B] Em | C |")));

    // "Push host tempo": the host's tempo goes to the room when it changes.
    p.controls.set_host_tempo(Some(87.5));
    assert!(p.controls.send(Command::SetPushHostTempo(true)));
    assert!(wait_until(Duration::from_secs(5), || bo
        .read_doc(|d| d.tempo())
        == 87.5));
    p.controls.set_host_tempo(Some(90.0));
    assert!(wait_until(Duration::from_secs(5), || bo
        .read_doc(|d| d.tempo())
        == 90.0));
    // The snapshot is stored at the end of the tick that pushed: Bo may hear it first.
    assert!(wait_until(Duration::from_secs(5), || {
        let s = snap(&p);
        s.push_host_tempo && s.host_tempo == Some(90.0)
    }));

    // Leaving: offline in the editor, out of the room for Bo, the document kept in the
    // project state.
    assert!(p.controls.send(Command::Disconnect));
    assert!(wait_until(Duration::from_secs(5), || snap(&p).link
        == LinkStatus::Offline));
    assert!(wait_until(Duration::from_secs(5), || bo
        .status()
        .members
        .is_empty()));
    let saved = p.params.session_doc.read().unwrap().0.clone();
    let kept = echoel_net::doc::SessionDoc::load(&saved).unwrap();
    assert!(kept.chart().contains("[B] Em | C |"));
    assert!(p.params.invite.read().unwrap().is_empty());
    bo.stop();
}

#[test]
fn a_project_restored_while_running_joins_its_room_with_its_mix_by_name() {
    let _one = echoel_tests::one_at_a_time();
    let (_dir, _relay, room) = plugin_room("restore");
    let bo = join_room(&room, "Bo", None);

    // The plugin runs, in no room; then the host loads a project: its room and our mix of Bo.
    let p = plugin();
    p.params.mix.write().unwrap().insert(
        "Bo".into(),
        echoel_plugin::params::SavedMix {
            gain_db: -6.0,
            muted: true,
            solo: false,
        },
    );
    *p.params.display_name.write().unwrap() = "Ana".into();
    *p.params.invite.write().unwrap() = room.to_string();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = snap(&p);
            s.link == LinkStatus::Joined
                && s.people
                    .iter()
                    .any(|m| m.name == "Bo" && m.muted && m.gain_db == -6.0)
        }),
        "{:?}",
        snap(&p)
    );

    // A change of Bo's level is kept in the project under his name.
    let who = snap(&p)
        .people
        .iter()
        .find(|m| m.name == "Bo")
        .unwrap()
        .participant;
    assert!(p.controls.send(Command::SetPeerGain {
        participant: who,
        gain_db: 3.0,
    }));
    assert!(wait_until(Duration::from_secs(5), || p
        .params
        .mix
        .read()
        .unwrap()
        .get("Bo")
        .is_some_and(|m| m.gain_db == 3.0 && m.muted)));
    bo.stop();
}
