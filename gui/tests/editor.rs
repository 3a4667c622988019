//! The editor driven headless: typing and clicking must produce the right commands, and the
//! rendered panels are kept as PNG snapshots under `docs/gui/` (shown in the README).

use echoel_gui::model::{
    NetworkQuality, NoteConflictView, PathKind, Person, ProtectionView, RecordingView, SessionView,
    TempoNoticeView, TrackView,
};
use echoel_gui::{draw, egui, Command, EditorState, LinkStatus, Snapshot};
use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotOptions};

struct App {
    snap: Snapshot,
    applied: u64,
    state: EditorState,
    out: Vec<Command>,
}

impl App {
    fn new(snap: Snapshot) -> Self {
        Self {
            snap,
            applied: 0,
            state: EditorState::new("Mara", "bass", ""),
            out: Vec::new(),
        }
    }

    /// Commands other than cursor/typing presence, which the chart sends on its own.
    fn commands(&mut self) -> Vec<Command> {
        self.applied = self.state_sent();
        std::mem::take(&mut self.out)
            .into_iter()
            .filter(|c| !matches!(c, Command::ChartCursor { .. }))
            .collect()
    }

    fn state_sent(&self) -> u64 {
        // Every command counts as applied once the test has looked at it.
        self.applied + self.out.len() as u64
    }
}

fn harness(snap: Snapshot) -> Harness<'static, App> {
    let (w, h) = echoel_gui::DEFAULT_SIZE;
    harness_sized(snap, w as f32, h as f32)
}

/// A window of another size: a taller one shows the panels below the fold.
fn harness_sized(snap: Snapshot, w: f32, h: f32) -> Harness<'static, App> {
    Harness::builder()
        .with_size(egui::Vec2::new(w, h))
        .build_ui_state(
            |ui, app: &mut App| {
                let App {
                    snap,
                    applied,
                    state,
                    out,
                } = app;
                draw(ui, snap, *applied, state, out);
            },
            App::new(snap),
        )
}

fn jam() -> Snapshot {
    let tracks = vec![
        TrackView {
            id: "t1".into(),
            name: "Bass".into(),
            owner: "Mara".into(),
            instrument: "bass".into(),
            muted: false,
            notes: 12,
        },
        TrackView {
            id: "t2".into(),
            name: "Keys".into(),
            owner: "Ilse".into(),
            instrument: "rhodes".into(),
            muted: false,
            notes: 0,
        },
        TrackView {
            id: "t3".into(),
            name: "Drums".into(),
            owner: "Tomás".into(),
            instrument: "drums".into(),
            muted: true,
            notes: 0,
        },
    ];
    let people = vec![
        Person {
            participant: 7,
            name: "Ilse".into(),
            instrument: "keys".into(),
            track: Some("t2".into()),
            path: Some(PathKind::Direct),
            rtt_ms: Some(11.8),
            jitter_ms: 2.5,
            loss_pct: 0.0,
            level: 0.4,
            gain_db: 0.0,
            typing: true,
            cursor: Some((14, 14)),
            ..Person::default()
        },
        Person {
            participant: 8,
            name: "Tomás".into(),
            instrument: "drums".into(),
            track: Some("t3".into()),
            path: Some(PathKind::Relay),
            path_note: "relay — their router gives each destination a new port".into(),
            rtt_ms: Some(38.2),
            jitter_ms: 7.5,
            loss_pct: 0.4,
            level: 0.8,
            gain_db: -3.0,
            solo: true,
            ..Person::default()
        },
        Person {
            participant: 12,
            name: "Jo".into(),
            instrument: "producer".into(),
            path: Some(PathKind::Relay),
            rtt_ms: Some(41.0),
            listening: true,
            ..Person::default()
        },
        Person {
            participant: 9,
            name: "Ren".into(),
            instrument: "guitar".into(),
            gone: true,
            last_seen_s: Some(12.0),
            ..Person::default()
        },
    ];
    Snapshot {
        link: LinkStatus::Joined,
        me: echoel_gui::model::Me {
            name: "Mara".into(),
            instrument: "bass".into(),
            room: "friday-band".into(),
            invite: "echoel://relay.example:4433/friday-band?fp=00&secret=00".into(),
            active_track: Some("t1".into()),
            input_level: 0.3,
            stem: Some("bass".into()),
            stems: vec!["bass".into(), "synth".into()],
        },
        people,
        session: SessionView {
            tempo: 96.0,
            meter: "4/4".into(),
            key: "E minor".into(),
            tracks,
            chart: "[Verse] Em7 | A7 | Em7 | A7\n[Chorus] Cmaj7 | D | Em | Em".into(),
            markers: vec![(0.0, "Intro".into()), (32.0, "Chorus".into())],
            tempo_notice: Some(TempoNoticeView {
                mine: 100.0,
                theirs: 96.0,
            }),
            note_conflicts: vec![NoteConflictView {
                track: "t1".into(),
                track_name: "Bass".into(),
                note: "n3".into(),
                field: "pitch".into(),
                values: vec![40.0, 43.0],
            }],
        },
        host_tempo: Some(96.0),
        push_host_tempo: false,
        network: NetworkQuality {
            worst_loss_pct: 0.4,
            max_jitter_ms: 7.5,
            max_rtt_ms: 38.2,
            recovered: 12,
            concealed: 3,
            send_kbps: 132.0,
            protection: ProtectionView {
                frames: 1,
                auto: true,
                reported_loss_pct: Some(1.2),
            },
            port_mapping: "203.0.113.11:41641 (UPnP)".into(),
        },
        rendering_offline: false,
        recording: RecordingView::default(),
        aux_buses: 0,
        routed_leave_main: false,
    }
}

fn snapshot_options() -> SnapshotOptions {
    // Snapshots live with the documentation they illustrate.
    SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/gui"))
}

#[test]
fn connecting_sends_the_invite_name_and_instrument() {
    let mut h = harness(Snapshot::default());
    h.run();
    assert!(
        h.query_by_label("Disconnect").is_none(),
        "offline shows no disconnect"
    );
    h.get_by_label("Invite").click();
    h.run();
    h.get_by_label("Invite")
        .type_text("echoel://relay.example:4433/friday-band#s3cret");
    h.run();
    h.get_by_label("Connect").click();
    h.run();
    let cmds = h.state_mut().commands();
    assert_eq!(
        cmds,
        vec![Command::Connect {
            invite: "echoel://relay.example:4433/friday-band#s3cret".into(),
            name: "Mara".into(),
            instrument: "bass".into(),
        }]
    );
    h.snapshot_options("connect", &snapshot_options());
}

#[test]
fn a_failed_join_says_why_and_offers_to_connect_again() {
    let snap = Snapshot {
        link: LinkStatus::Failed("wrong room secret — ask for a fresh invite".into()),
        ..Snapshot::default()
    };
    let mut h = harness(snap);
    h.run();
    assert!(h.query_by_label_contains("wrong room secret").is_some());
    assert!(h.query_by_label("Connect").is_some());
}

#[test]
fn an_offline_render_says_the_room_is_paused() {
    let mut h = harness(Snapshot {
        rendering_offline: true,
        ..jam()
    });
    h.run();
    assert!(h.query_by_label_contains("offline render").is_some());
    let mut h = harness(jam());
    h.run();
    assert!(h.query_by_label_contains("offline render").is_none());
}

#[test]
fn a_new_invite_is_asked_for_from_inside_the_room_and_not_while_connecting() {
    let mut h = harness(jam());
    h.run();
    h.get_by_label("New invite").click();
    h.run();
    assert_eq!(h.state_mut().commands(), vec![Command::RotateInvite]);
    let mut connecting = jam();
    connecting.link = LinkStatus::Connecting;
    let mut h = harness(connecting);
    h.run();
    h.get_by_label("New invite").click();
    h.run();
    assert_eq!(h.state_mut().commands(), vec![], "disabled until joined");
}

#[test]
fn the_tempo_conflict_offers_keep_mine_and_take_theirs() {
    let mut h = harness(jam());
    h.run();
    h.get_by_label("Keep mine").click();
    h.run();
    assert_eq!(
        h.state_mut().commands(),
        vec![Command::ResolveTempo { keep_mine: true }]
    );
    h.get_by_label("Take theirs").click();
    h.run();
    assert_eq!(
        h.state_mut().commands(),
        vec![Command::ResolveTempo { keep_mine: false }]
    );
    h.get_by_label("Use 43").click();
    h.run();
    assert_eq!(
        h.state_mut().commands(),
        vec![Command::PickNoteValue {
            track: "t1".into(),
            note: "n3".into(),
            field: "pitch".into(),
            value: 43.0
        }]
    );
    h.snapshot_options("session", &snapshot_options());
}

#[test]
fn tracks_markers_and_people_controls_send_commands() {
    let mut h = harness(jam());
    h.run();
    h.get_by_label("New track").click();
    h.run();
    h.get_by_label("New track").type_text("Horns");
    h.run();
    h.get_by_label("Add track").click();
    h.run();
    h.get_by_label("Label").click();
    h.run();
    h.get_by_label("Label").type_text("Bridge");
    h.run();
    h.get_by_label("Add marker").click();
    h.run();
    h.get_all_by_label("M").next().unwrap().click();
    h.run();
    h.get_all_by_label("S").nth(1).unwrap().click();
    h.run();
    h.get_by_label("Push host tempo").click();
    h.run();
    assert_eq!(
        h.state_mut().commands(),
        vec![
            Command::AddTrack {
                name: "Horns".into(),
                instrument: "bass".into()
            },
            Command::AddMarker {
                beat: 0.0,
                label: "Bridge".into()
            },
            Command::SetPeerMuted {
                participant: 7,
                muted: true
            },
            Command::SetPeerSolo {
                participant: 8,
                solo: false
            },
            Command::SetPushHostTempo(true),
        ]
    );
}

#[test]
fn chart_typing_becomes_splices_and_remote_edits_keep_ours() {
    let mut h = harness(jam());
    h.run();
    let before = h.state().snap.session.chart.clone();
    h.get_by_label("Chord chart").click();
    h.run();
    h.key_press(egui::Key::End);
    h.run();
    h.get_by_label("Chord chart").type_text(" | B7");
    h.run();
    let edits: Vec<Command> = h.state_mut().commands();
    let mut chart: Vec<char> = before.chars().collect();
    for e in &edits {
        let Command::EditChart {
            pos,
            delete,
            insert,
        } = e
        else {
            panic!("unexpected {e:?}");
        };
        chart.splice(*pos..pos + delete, insert.chars());
    }
    let ours: String = chart.into_iter().collect();
    assert!(ours.ends_with(" | B7"), "{ours:?}");
    assert!(!edits.is_empty());

    // A bandmate's edit at the top arrives together with ours: the text shows both.
    let merged = format!("[Intro] Em\n{ours}");
    h.state_mut().snap.session.chart = merged.clone();
    h.run();
    assert_eq!(
        h.get_by_label("Chord chart").value().as_deref(),
        Some(merged.as_str())
    );
}

#[test]
fn host_tempo_mismatch_is_shown_and_can_be_proposed() {
    let mut snap = jam();
    snap.session.tempo_notice = None;
    snap.session.note_conflicts.clear();
    snap.host_tempo = Some(104.0);
    let mut h = harness(snap);
    h.run();
    assert!(h
        .query_by_label_contains("Host tempo 104.00 BPM differs")
        .is_some());
    h.get_by_label("Propose host tempo").click();
    h.run();
    assert_eq!(h.state_mut().commands(), vec![Command::SetTempo(104.0)]);
}

#[test]
fn the_network_panel_says_how_our_audio_is_protected_and_why() {
    let mut h = harness(jam());
    h.run();
    assert!(h
        .query_by_label_contains("1 earlier frame (auto: listeners lose 1.2 %)")
        .is_some());
    h.state_mut().snap.network.protection = ProtectionView {
        frames: 0,
        auto: false,
        reported_loss_pct: Some(3.0),
    };
    h.run();
    assert!(h.query_by_label_contains("off (set by hand)").is_some());
}

#[test]
fn the_record_button_starts_and_stops_a_take_in_the_chosen_format() {
    // Tall enough to show the recording panel, below the fold at the default size.
    let mut h = harness_sized(jam(), 960.0, 1000.0);
    h.run();
    h.get_by_label("Record").click();
    h.run();
    assert_eq!(
        h.state_mut().commands(),
        vec![],
        "no folder: nothing to record to"
    );
    h.state_mut().state.record_folder = "/home/mara/Music/Echoel Jam".into();
    h.run();
    h.get_by_role_and_label(egui::accesskit::Role::ComboBox, "Format")
        .click();
    h.run();
    h.get_by_label("Ogg Opus").click();
    h.run();
    h.get_by_label("Record").click();
    h.run();
    assert_eq!(
        h.state_mut().commands(),
        vec![Command::StartRecording {
            folder: "/home/mara/Music/Echoel Jam".into(),
            opus: true,
        }]
    );
    h.state_mut().snap.recording = RecordingView {
        active: true,
        take: "take-003".into(),
        elapsed_s: 83.4,
        files: 3,
        written_mb: 96.2,
        free_mb: Some(850.0),
        error: None,
        ..RecordingView::default()
    };
    h.run();
    assert!(h
        .query_by_label_contains("1:23 — take-003, 3 files, 96.2 MB")
        .is_some());
    assert!(h
        .query_by_label_contains("Little disk space left where takes go: 850 MB")
        .is_some());
    h.snapshot_options("recording", &snapshot_options());
    h.get_by_label("Stop recording").click();
    h.run();
    assert_eq!(h.state_mut().commands(), vec![Command::StopRecording]);
}

#[test]
fn a_recording_folder_that_fails_says_so_and_the_audio_plays_on() {
    let mut snap = jam();
    snap.recording = RecordingView {
        active: true,
        take: "take-001".into(),
        elapsed_s: 12.0,
        files: 2,
        written_mb: 9.2,
        free_mb: Some(0.0),
        error: Some(
            "the recording folder is full: /mnt/usb/take-001/ana.wav stopped at 12.0 s \
             (what it holds plays)"
                .into(),
        ),
        ..RecordingView::default()
    };
    let mut h = harness(snap);
    h.run();
    assert!(h
        .query_by_label_contains("(what it holds plays) — the audio plays on")
        .is_some());
    let mut missing = jam();
    missing.recording.error = Some("the recording folder /nowhere does not exist".into());
    let mut h = harness(missing);
    h.run();
    assert!(h
        .query_by_label_contains("/nowhere does not exist")
        .is_some());
    assert!(
        h.query_by_label("Record").is_some(),
        "another folder can be tried"
    );
}

#[test]
fn a_receive_only_member_is_shown_listening_not_on_a_track() {
    let mut h = harness(jam());
    h.run();
    assert!(h.query_by_label("listening").is_some());
}

#[test]
fn a_member_who_sends_several_stems_is_one_row_with_their_stems() {
    let mut snap = jam();
    snap.people[0].stems = vec!["keys".into(), "vocals".into()];
    let mut h = harness(snap);
    h.run();
    assert!(h.query_by_label("Ilse · keys, vocals").is_some());
}

#[test]
fn one_musicians_plugins_in_two_processes_show_together_as_one_person() {
    let mut snap = jam();
    // Ilse's second plugin (another process, another participant, her member key) came
    // after Tomás; her first already sits at the top.
    snap.people[0].person = 70;
    snap.people.insert(
        2,
        Person {
            participant: 71,
            person: 70,
            name: "Ilse".into(),
            instrument: "vocals".into(),
            ..snap.people[0].clone()
        },
    );
    let mut h = harness(snap);
    h.run();
    let y = |h: &Harness<'static, App>, row: &str| h.get_by_label(row).rect().center().y;
    let (keys, vocals, drums) = (
        y(&h, "Ilse · keys"),
        y(&h, "Ilse · vocals"),
        y(&h, "Tomás · drums"),
    );
    assert!(keys < vocals && vocals < drums, "{keys} {vocals} {drums}");
    for row in ["Ilse · keys", "Ilse · vocals"] {
        h.get_by_label(row).hover();
        h.run();
        assert!(
            h.query_by_label("one of Ilse's 2 plugins").is_some(),
            "{row} does not say it is one of Ilse's plugins"
        );
    }
    h.get_by_label("Tomás · drums").hover();
    h.run();
    assert!(h.query_by_label_contains("plugins").is_none());
}

#[test]
fn our_own_plugin_in_another_process_is_marked_as_ours() {
    let mut snap = jam();
    snap.people.push(Person {
        participant: 72,
        person: 5,
        yours: true,
        name: "Mara".into(),
        instrument: "synth".into(),
        ..Person::default()
    });
    let mut h = harness(snap);
    h.run();
    assert!(h.query_by_label("Mara · synth (your plugin)").is_some());
}

#[test]
fn each_stem_is_routed_to_an_output_of_its_own_and_can_leave_the_main_one() {
    use echoel_gui::model::StemOut;
    let mut snap = jam();
    // Without auxiliary outputs from the host, nothing to route.
    let mut h = harness(snap.clone());
    h.run();
    assert!(h.query_by_label("Output of Ilse").is_none());
    assert!(h
        .query_by_label("Routed stems leave the main output")
        .is_none());

    snap.aux_buses = 8;
    snap.people[0].stems = vec!["keys".into(), "vocals".into()];
    snap.people[0].outputs = vec![
        StemOut {
            stem: 0,
            name: "keys".into(),
            bus: 1,
        },
        StemOut {
            stem: 1,
            name: "vocals".into(),
            bus: 0,
        },
    ];
    snap.people[1].outputs = vec![StemOut::default()];
    let mut h = harness_sized(snap, 1100.0, 700.0);
    h.run();
    let keys = h.get_by_role_and_label(egui::accesskit::Role::ComboBox, "Output of Ilse's keys");
    assert_eq!(keys.value().as_deref(), Some("keys: Aux 1"));
    h.get_by_role_and_label(egui::accesskit::Role::ComboBox, "Output of Ilse's vocals")
        .click();
    h.run();
    h.get_by_label("Aux 2").click();
    h.run();
    h.get_by_label("Routed stems leave the main output").click();
    h.run();
    let participant = h.state().snap.people[0].participant;
    assert_eq!(
        h.state_mut().commands(),
        vec![
            Command::SetStemRoute {
                participant,
                stem: 1,
                bus: 2,
            },
            Command::SetRoutedLeaveMain(true),
        ]
    );
    h.snapshot_options("routing", &snapshot_options());
}

#[test]
fn our_stem_is_renamed_in_the_editor_and_the_daws_other_stems_are_shown() {
    let mut h = harness(jam());
    h.run();
    // Mara's two plugins in this DAW send on one connection: the editor says so.
    assert!(h.query_by_label("this DAW sends bass, synth").is_some());
    h.get_by_label("Sends as stem").click();
    h.run();
    h.get_by_label("Sends as stem").type_text("bass DI");
    h.run();
    h.key_press(egui::Key::Enter);
    h.run();
    assert_eq!(
        h.state_mut().commands(),
        vec![Command::SetStemName("bass DI".into())]
    );

    // A receive-only instance has no stem to name.
    let mut snap = jam();
    snap.me.stem = None;
    let mut h = harness(snap);
    h.run();
    assert!(h.query_by_label("Sends as stem").is_none());
    assert!(h
        .query_by_label("Receive only: this track sends nothing.")
        .is_some());
}

#[test]
fn a_takes_gaps_filled_from_what_was_played_are_said() {
    let mut snap = jam();
    snap.recording = RecordingView {
        take: "take-002".into(),
        elapsed_s: 30.0,
        files: 3,
        filling: true,
        ..RecordingView::default()
    };
    let mut h = harness_sized(snap, 960.0, 1000.0);
    h.run();
    assert!(h
        .query_by_label_contains("Filling the take's gaps")
        .is_some());
    h.state_mut().snap.recording.filling = false;
    h.state_mut().snap.recording.filled_s = 1.25;
    h.run();
    assert!(h
        .query_by_label_contains("1.25 s the network lost, filled with what was played")
        .is_some());
}
