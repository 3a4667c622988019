//! The editor's panels: connection, notices, people, network and the shared session.

use egui::text::{CCursor, CCursorRange};
use egui::text_edit::TextEditState;
use egui::{Color32, RichText, Sense, Ui, Vec2};

use crate::model::{
    chart_edit, Command, LinkStatus, PathKind, Person, Quality, RecordingView, Snapshot, TrackView,
};
use crate::routing;

/// Size the editor opens at; everything is readable there without scrolling.
pub const DEFAULT_SIZE: (u32, u32) = (960, 640);

/// How long after the last keystroke a musician still counts as typing.
const TYPING_HOLD_S: f64 = 2.0;
/// Host and room tempo differ audibly beyond this (a beat drifts in about a minute).
const TEMPO_MISMATCH_BPM: f64 = 0.05;

/// The editor's own state: what is being typed, and what was last sent.
#[derive(Debug, Clone, Default)]
pub struct EditorState {
    /// Invite text field.
    pub invite: String,
    /// Name field.
    pub name: String,
    /// Instrument field.
    pub instrument: String,
    /// Where takes go.
    pub record_folder: String,
    /// Takes in Ogg Opus rather than WAV.
    pub record_opus: bool,
    /// The stem name field.
    pub stem_name: String,
    /// The stem name last sent.
    pub(crate) stem_sent: Option<String>,
    tempo: f64,
    tempo_seen: f64,
    meter: String,
    key: String,
    new_track: String,
    marker_beat: f64,
    marker_label: String,
    /// The chart as shown, with this musician's edits applied.
    chart: String,
    /// The chart as of the last adopted snapshot plus our own sent edits.
    chart_base: String,
    /// Commands sent so far; the snapshot says how many were applied.
    sent: u64,
    last_typed: Option<f64>,
    last_cursor: Option<(Option<(usize, usize)>, bool)>,
}

impl EditorState {
    /// Starts with the saved name and instrument filled in.
    pub fn new(name: &str, instrument: &str, invite: &str) -> Self {
        Self {
            name: name.to_owned(),
            instrument: instrument.to_owned(),
            invite: invite.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn send(&mut self, out: &mut Vec<Command>, c: Command) {
        self.sent += 1;
        out.push(c);
    }
}

/// Draws the whole editor into `ui` and appends what the musician asked for to `out`.
///
/// `applied` is how many of the commands sent so far the control thread has applied: until it
/// catches up, the chart keeps our edits instead of flicking back to the older shared text.
pub fn draw(
    ui: &mut Ui,
    snap: &Snapshot,
    applied: u64,
    st: &mut EditorState,
    out: &mut Vec<Command>,
) {
    egui::Panel::top("echoel-top").show(ui, |ui| {
        ui.add_space(4.0);
        connect_bar(ui, snap, st, out);
        ui.add_space(4.0);
    });
    egui::CentralPanel::default().show(ui, |ui| {
        notices(ui, snap, st, out);
        egui::ScrollArea::vertical().show(ui, |ui| {
            people_panel(ui, snap, st, out);
            ui.add_space(8.0);
            ui.separator();
            ui.columns(2, |cols| {
                session_panel(&mut cols[0], snap, st, out);
                cols[0].add_space(8.0);
                network_panel(&mut cols[0], snap);
                cols[0].add_space(8.0);
                recording_panel(&mut cols[0], &snap.recording, st, out);
                chart_section(&mut cols[1], snap, applied, st, out);
                cols[1].add_space(8.0);
                markers_section(&mut cols[1], snap, st, out);
            });
        });
    });
}

fn status_line(link: &LinkStatus) -> (Color32, String) {
    match link {
        LinkStatus::Offline => (Color32::GRAY, "Offline".into()),
        LinkStatus::Connecting => (Color32::YELLOW, "Connecting…".into()),
        LinkStatus::Joined => (Color32::from_rgb(80, 200, 120), "Connected".into()),
        LinkStatus::Retrying(why) => (Color32::YELLOW, format!("Reconnecting: {why}")),
        LinkStatus::Failed(why) => (Color32::from_rgb(230, 80, 70), format!("Error: {why}")),
    }
}

fn labelled_field(ui: &mut Ui, label: &str, value: &mut String, hint: &str, width: f32) {
    let l = ui.label(label);
    ui.add(
        egui::TextEdit::singleline(value)
            .hint_text(hint)
            .desired_width(width),
    )
    .labelled_by(l.id);
}

fn connect_bar(ui: &mut Ui, snap: &Snapshot, st: &mut EditorState, out: &mut Vec<Command>) {
    ui.horizontal(|ui| {
        ui.heading("Echoel Jam");
        ui.separator();
        let offline = matches!(snap.link, LinkStatus::Offline | LinkStatus::Failed(_));
        if offline {
            labelled_field(ui, "Invite", &mut st.invite, "paste the invite here", 220.0);
            labelled_field(ui, "Name", &mut st.name, "your name", 90.0);
            labelled_field(ui, "Instrument", &mut st.instrument, "bass, vox…", 80.0);
            let ready = !st.invite.trim().is_empty();
            if ui
                .add_enabled(ready, egui::Button::new("Connect"))
                .clicked()
            {
                let c = Command::Connect {
                    invite: st.invite.trim().to_owned(),
                    name: st.name.trim().to_owned(),
                    instrument: st.instrument.trim().to_owned(),
                };
                st.send(out, c);
            }
        } else {
            ui.label(format!(
                "Room {} as {} ({})",
                snap.me.room, snap.me.name, snap.me.instrument
            ));
            if ui.button("Disconnect").clicked() {
                st.send(out, Command::Disconnect);
            }
            let joined = snap.link == LinkStatus::Joined;
            if ui
                .add_enabled(!snap.me.invite.is_empty(), egui::Button::new("Copy invite"))
                .on_hover_text("the room's invite, to send to a bandmate")
                .clicked()
            {
                ui.ctx().copy_text(snap.me.invite.clone());
            }
            if ui
                .add_enabled(joined, egui::Button::new("New invite"))
                .on_hover_text(
                    "everyone here moves to a new invite; invites sent before stop working",
                )
                .clicked()
            {
                st.send(out, Command::RotateInvite);
            }
        }
        ui.separator();
        let (color, text) = status_line(&snap.link);
        let (dot, _) = ui.allocate_exact_size(Vec2::splat(10.0), Sense::hover());
        ui.painter().circle_filled(dot.center(), 5.0, color);
        ui.label(text);
        if snap.rendering_offline {
            ui.label(
                egui::RichText::new("offline render: the room is neither sent nor heard")
                    .color(Color32::YELLOW),
            );
        }
    });
}

fn notice_frame(ui: &mut Ui, color: Color32, add: impl FnOnce(&mut Ui)) {
    egui::Frame::group(ui.style())
        .stroke(egui::Stroke::new(1.5, color))
        .show(ui, |ui| {
            ui.horizontal_wrapped(add);
        });
}

fn notices(ui: &mut Ui, snap: &Snapshot, st: &mut EditorState, out: &mut Vec<Command>) {
    let s = &snap.session;
    let amber = Color32::from_rgb(230, 170, 40);
    if let Some(n) = s.tempo_notice {
        notice_frame(ui, amber, |ui| {
            ui.label(format!(
                "Someone set the tempo at the same time: the room took {:.1} BPM over your {:.1}.",
                n.theirs, n.mine
            ));
            if ui.button("Keep mine").clicked() {
                st.send(out, Command::ResolveTempo { keep_mine: true });
            }
            if ui.button("Take theirs").clicked() {
                st.send(out, Command::ResolveTempo { keep_mine: false });
            }
        });
    }
    for c in &s.note_conflicts {
        notice_frame(ui, amber, |ui| {
            ui.label(format!(
                "Note {} on {} was changed twice at once ({}):",
                c.note, c.track_name, c.field
            ));
            for v in &c.values {
                if ui.button(format!("Use {v}")).clicked() {
                    let cmd = Command::PickNoteValue {
                        track: c.track.clone(),
                        note: c.note.clone(),
                        field: c.field.clone(),
                        value: *v,
                    };
                    st.send(out, cmd);
                }
            }
        });
    }
    if let Some(host) = snap.host_tempo {
        if !snap.push_host_tempo && (host - s.tempo).abs() > TEMPO_MISMATCH_BPM {
            notice_frame(ui, amber, |ui| {
                ui.label(format!(
                    "Host tempo {host:.2} BPM differs from the room's {:.2} BPM.",
                    s.tempo
                ));
                if ui.button("Propose host tempo").clicked() {
                    st.send(out, Command::SetTempo(host));
                }
            });
        }
    }
}

/// A peak meter on a −60…0 dB scale, which is how engineers read levels.
fn level_meter(ui: &mut Ui, level: f32) {
    let (rect, _) = ui.allocate_exact_size(Vec2::new(60.0, 10.0), Sense::hover());
    let db = 20.0 * level.max(1e-6).log10();
    let fill = ((db + 60.0) / 60.0).clamp(0.0, 1.0);
    let p = ui.painter();
    p.rect_filled(rect, 2.0, Color32::from_gray(40));
    let mut bar = rect;
    bar.set_width(rect.width() * fill);
    let color = if db > -3.0 {
        Color32::from_rgb(230, 80, 70)
    } else if db > -12.0 {
        Color32::from_rgb(230, 200, 60)
    } else {
        Color32::from_rgb(80, 200, 120)
    };
    p.rect_filled(bar, 2.0, color);
}

/// A colour per member, the same on every screen.
pub fn person_color(participant: u64) -> Color32 {
    const PALETTE: [Color32; 6] = [
        Color32::from_rgb(90, 170, 255),
        Color32::from_rgb(250, 130, 90),
        Color32::from_rgb(120, 210, 120),
        Color32::from_rgb(220, 120, 220),
        Color32::from_rgb(240, 200, 80),
        Color32::from_rgb(90, 210, 210),
    ];
    PALETTE[(participant % PALETTE.len() as u64) as usize]
}

fn track_name(tracks: &[TrackView], id: &Option<String>) -> String {
    match id {
        Some(id) => tracks
            .iter()
            .find(|t| &t.id == id)
            .map_or_else(|| id.clone(), |t| t.name.clone()),
        None => "—".into(),
    }
}

fn people_panel(ui: &mut Ui, snap: &Snapshot, st: &mut EditorState, out: &mut Vec<Command>) {
    ui.heading("People");
    if snap.me.name.is_empty() {
        ui.label("You are not in a room yet.");
        return;
    }
    ui.horizontal(|ui| {
        ui.label(format!(
            "You: {} ({}) on {}",
            snap.me.name,
            snap.me.instrument,
            track_name(&snap.session.tracks, &snap.me.active_track)
        ));
        level_meter(ui, snap.me.input_level);
    });
    crate::routing::stem_row(ui, snap, st, out);
    if snap.people.is_empty() {
        ui.label(RichText::new("Nobody else is here yet.").italics());
        return;
    }
    egui::Grid::new("people")
        .striped(true)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            for h in [
                "Name", "Track", "Path", "RTT", "Buffer", "Loss", "Level", "Gain", "",
            ] {
                ui.label(RichText::new(h).strong());
            }
            if snap.aux_buses > 0 {
                ui.label(RichText::new("Output").strong());
            }
            ui.end_row();
            // One musician's plugins in several processes sit together, where the first is.
            let first = |m: u64| snap.people.iter().position(|o| o.musician() == m);
            let mut rows: Vec<&Person> = snap.people.iter().collect();
            rows.sort_by_key(|p| first(p.musician()));
            for p in rows {
                let plugins = snap
                    .people
                    .iter()
                    .filter(|o| !o.gone && o.musician() == p.musician())
                    .count();
                person_row(ui, p, plugins, &snap.session.tracks, st, out);
                if snap.aux_buses > 0 {
                    routing::outputs_cell(ui, p, snap.aux_buses, st, out);
                }
                ui.end_row();
            }
        });
    routing::leave_main_toggle(ui, snap, st, out);
}

/// One participant: `plugins` is how many rows its musician has (their plugins in several
/// processes), shown together in one colour.
fn person_row(
    ui: &mut Ui,
    p: &Person,
    plugins: usize,
    tracks: &[TrackView],
    st: &mut EditorState,
    out: &mut Vec<Command>,
) {
    let name = if p.gone {
        let ago = p
            .last_seen_s
            .map_or(String::new(), |s| format!(", seen {s:.0} s ago"));
        RichText::new(format!("{} (gone{ago})", p.name)).weak()
    } else if p.yours {
        RichText::new(format!("{} · {} (your plugin)", p.name, p.instrument)).weak()
    } else if p.stems.is_empty() {
        RichText::new(format!("{} · {}", p.name, p.instrument)).color(person_color(p.musician()))
    } else {
        // One person, several tracks: their stems under their name.
        RichText::new(format!("{} · {}", p.name, p.stems.join(", ")))
            .color(person_color(p.musician()))
    };
    let name = ui.label(name);
    if plugins > 1 && !p.gone {
        name.on_hover_text(format!("one of {}'s {plugins} plugins", p.name));
    }
    if p.listening {
        ui.label(RichText::new("listening").italics());
    } else {
        ui.label(track_name(tracks, &p.track));
    }
    let path = ui.label(match p.path {
        Some(PathKind::Direct) => "direct",
        Some(PathKind::Lan) => "LAN",
        Some(PathKind::Relay) => "relay",
        None => "—",
    });
    if !p.path_note.is_empty() {
        path.on_hover_text(&p.path_note);
    }
    ui.label(p.rtt_ms.map_or("—".into(), |r| format!("{r:.1} ms")));
    ui.label(format!("{:.1} ms", p.jitter_ms));
    ui.label(format!("{:.1} %", p.loss_pct));
    level_meter(ui, p.level);
    let mut gain = p.gain_db;
    ui.spacing_mut().slider_width = 90.0;
    let r = ui
        .add(egui::Slider::new(&mut gain, -60.0..=12.0).suffix(" dB"))
        .on_hover_text(format!("{}'s level in your mix", p.name));
    if r.changed() {
        let c = Command::SetPeerGain {
            participant: p.participant,
            gain_db: gain,
        };
        st.send(out, c);
    }
    ui.horizontal(|ui| {
        let mut muted = p.muted;
        if ui
            .toggle_value(&mut muted, "M")
            .on_hover_text(format!("Mute {}", p.name))
            .changed()
        {
            let c = Command::SetPeerMuted {
                participant: p.participant,
                muted,
            };
            st.send(out, c);
        }
        let mut solo = p.solo;
        if ui
            .toggle_value(&mut solo, "S")
            .on_hover_text(format!("Solo {}", p.name))
            .changed()
        {
            let c = Command::SetPeerSolo {
                participant: p.participant,
                solo,
            };
            st.send(out, c);
        }
    });
}

fn network_panel(ui: &mut Ui, snap: &Snapshot) {
    let n = &snap.network;
    ui.heading("Network");
    let (color, word) = match n.grade() {
        Quality::Good => (Color32::from_rgb(80, 200, 120), "Good"),
        Quality::Fair => (Color32::from_rgb(230, 200, 60), "Fair"),
        Quality::Poor => (Color32::from_rgb(230, 80, 70), "Poor"),
    };
    ui.horizontal(|ui| {
        ui.label("Quality:");
        ui.colored_label(color, RichText::new(word).strong());
    });
    egui::Grid::new("network")
        .spacing([12.0, 2.0])
        .show(ui, |ui| {
            let rows = [
                ("Worst loss", format!("{:.2} %", n.worst_loss_pct)),
                ("Deepest buffer", format!("{:.1} ms", n.max_jitter_ms)),
                ("Longest round trip", format!("{:.1} ms", n.max_rtt_ms)),
                ("Concealed frames", n.concealed.to_string()),
                ("Recovered frames", n.recovered.to_string()),
                ("Sending", format!("{:.0} kbit/s", n.send_kbps)),
                ("Loss protection", n.protection.describe()),
                ("Port mapping", n.port_mapping.clone()),
            ];
            for pair in rows.chunks(2) {
                for (k, v) in pair {
                    ui.label(*k);
                    ui.label(v);
                }
                ui.end_row();
            }
        });
}

fn recording_panel(ui: &mut Ui, r: &RecordingView, st: &mut EditorState, out: &mut Vec<Command>) {
    let red = Color32::from_rgb(230, 80, 70);
    ui.heading("Recording");
    ui.horizontal(|ui| {
        ui.add_enabled_ui(!r.active, |ui| {
            labelled_field(ui, "Folder", &mut st.record_folder, "where takes go", 170.0);
            let l = ui.label("Format");
            egui::ComboBox::from_id_salt("record-format")
                .selected_text(if st.record_opus { "Ogg Opus" } else { "WAV" })
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut st.record_opus, false, "WAV");
                    ui.selectable_value(&mut st.record_opus, true, "Ogg Opus");
                })
                .response
                .labelled_by(l.id);
        });
        if r.active {
            if ui
                .button(RichText::new("Stop recording").color(red))
                .clicked()
            {
                st.send(out, Command::StopRecording);
            }
        } else {
            let folder = st.record_folder.trim().to_owned();
            let record = ui.add_enabled(
                !folder.is_empty(),
                egui::Button::new(RichText::new("Record").color(red)),
            );
            if record.clicked() {
                let opus = st.record_opus;
                st.send(out, Command::StartRecording { folder, opus });
            }
        }
    });
    if r.active || !r.take.is_empty() {
        let t = r.elapsed_s.max(0.0) as u32;
        ui.label(format!(
            "{} {}:{:02} — {}, {} file{}, {:.1} MB",
            if r.active { "Recording" } else { "Last take:" },
            t / 60,
            t % 60,
            r.take,
            r.files,
            if r.files == 1 { "" } else { "s" },
            r.written_mb
        ));
        // The network's losses, put back from what each sender kept.
        if r.filling {
            ui.label(RichText::new("Filling the take's gaps from what was played…").italics());
        } else if r.filled_s > 0.0 {
            ui.label(format!(
                "{:.2} s the network lost, filled with what was played",
                r.filled_s
            ));
        }
    }
    if let Some(free) = r.free_mb.filter(|&f| f < RecordingView::LOW_SPACE_MB) {
        ui.colored_label(
            Color32::from_rgb(230, 170, 40),
            format!("Little disk space left where takes go: {free:.0} MB"),
        );
    }
    if let Some(e) = &r.error {
        ui.colored_label(red, format!("{e} — the audio plays on"));
    }
}

fn session_panel(ui: &mut Ui, snap: &Snapshot, st: &mut EditorState, out: &mut Vec<Command>) {
    let s = &snap.session;
    ui.heading("Session");
    // Follow the room's tempo unless the musician is mid-edit.
    if st.tempo_seen != s.tempo {
        st.tempo_seen = s.tempo;
        st.tempo = s.tempo;
    }
    ui.horizontal(|ui| {
        let l = ui.label("Tempo");
        ui.add(
            egui::DragValue::new(&mut st.tempo)
                .range(20.0..=400.0)
                .speed(0.1)
                .fixed_decimals(1)
                .suffix(" BPM"),
        )
        .labelled_by(l.id);
        if ui
            .add_enabled(st.tempo != s.tempo, egui::Button::new("Set tempo"))
            .clicked()
        {
            let t = st.tempo;
            st.send(out, Command::SetTempo(t));
        }
        if let Some(host) = snap.host_tempo {
            ui.label(format!("host {host:.1}"));
        }
        let mut push = snap.push_host_tempo;
        if ui.checkbox(&mut push, "Push host tempo").changed() {
            st.send(out, Command::SetPushHostTempo(push));
        }
    });
    ui.horizontal(|ui| {
        if st.meter.is_empty() {
            st.meter = s.meter.clone();
        }
        if st.key.is_empty() {
            st.key = s.key.clone();
        }
        labelled_field(ui, "Time signature", &mut st.meter, "4/4", 40.0);
        if ui.small_button("Set meter").clicked() && st.meter.trim() != s.meter {
            let m = st.meter.trim().to_owned();
            st.send(out, Command::SetMeter(m));
        }
        labelled_field(ui, "Key", &mut st.key, "E minor", 70.0);
        if ui.small_button("Set key").clicked() && st.key.trim() != s.key {
            let k = st.key.trim().to_owned();
            st.send(out, Command::SetKey(k));
        }
    });
    ui.add_space(6.0);
    tracks_section(ui, snap, st, out);
}

fn tracks_section(ui: &mut Ui, snap: &Snapshot, st: &mut EditorState, out: &mut Vec<Command>) {
    ui.label(RichText::new("Tracks").strong());
    for t in &snap.session.tracks {
        ui.horizontal(|ui| {
            let mine = snap.me.active_track.as_deref() == Some(t.id.as_str());
            if ui
                .radio(mine, "")
                .on_hover_text(format!("I play {}", t.name))
                .clicked()
                && !mine
            {
                st.send(out, Command::SetActiveTrack(Some(t.id.clone())));
            }
            ui.label(format!("{} · {} ({})", t.name, t.instrument, t.owner));
            if t.notes > 0 {
                ui.weak(format!("{} notes", t.notes));
            }
            let mut muted = t.muted;
            if ui
                .checkbox(&mut muted, "muted")
                .on_hover_text(format!("Mute {} for everyone", t.name))
                .changed()
            {
                let c = Command::SetTrackMuted {
                    track: t.id.clone(),
                    muted,
                };
                st.send(out, c);
            }
        });
    }
    ui.horizontal(|ui| {
        labelled_field(ui, "New track", &mut st.new_track, "name", 120.0);
        if ui
            .add_enabled(
                !st.new_track.trim().is_empty(),
                egui::Button::new("Add track"),
            )
            .clicked()
        {
            let c = Command::AddTrack {
                name: st.new_track.trim().to_owned(),
                instrument: snap.me.instrument.clone(),
            };
            st.new_track.clear();
            st.send(out, c);
        }
    });
}

/// Moves a character index across a remote edit so the musician's caret stays on its text.
fn shift_index(i: usize, edit: &(usize, usize, String)) -> usize {
    let (pos, delete, insert) = edit;
    if i <= *pos {
        i
    } else if i >= pos + delete {
        i - delete + insert.chars().count()
    } else {
        pos + insert.chars().count()
    }
}

fn chart_section(
    ui: &mut Ui,
    snap: &Snapshot,
    applied: u64,
    st: &mut EditorState,
    out: &mut Vec<Command>,
) {
    let shared = &snap.session.chart;
    let id = ui.make_persistent_id("chart");
    // Adopt the room's chart once the control thread has applied all we sent; a remote edit
    // moves our caret with the text.
    if applied >= st.sent && *shared != st.chart_base {
        if st.chart == st.chart_base {
            if let Some(edit) = chart_edit(&st.chart, shared) {
                if let Some(mut state) = TextEditState::load(ui.ctx(), id) {
                    if let Some(r) = state.cursor.char_range() {
                        let p = shift_index(r.primary.index.0, &edit);
                        let s = shift_index(r.secondary.index.0, &edit);
                        state.cursor.set_char_range(Some(CCursorRange::two(
                            CCursor::new(s),
                            CCursor::new(p),
                        )));
                        state.store(ui.ctx(), id);
                    }
                }
            }
            st.chart = shared.clone();
        }
        st.chart_base = shared.clone();
    }
    let title = ui.label(RichText::new("Chord chart").strong());
    let typists: Vec<&Person> = snap.people.iter().filter(|p| p.typing && !p.gone).collect();
    if !typists.is_empty() {
        let names: Vec<&str> = typists.iter().map(|p| p.name.as_str()).collect();
        ui.weak(format!("{} typing…", names.join(", ")));
    }
    let output = egui::TextEdit::multiline(&mut st.chart)
        .id(id)
        .font(egui::TextStyle::Monospace)
        .desired_rows(8)
        .desired_width(f32::INFINITY)
        .hint_text("Chords, sections, lyrics…")
        .show(ui);
    let response = output.response.response.clone().labelled_by(title.id);
    let now = ui.input(|i| i.time);
    if let Some((pos, delete, insert)) = chart_edit(&st.chart_base, &st.chart) {
        st.chart_base = st.chart.clone();
        st.last_typed = Some(now);
        st.send(
            out,
            Command::EditChart {
                pos,
                delete,
                insert,
            },
        );
    }
    // Others' carets, in their colours.
    for p in snap.people.iter().filter(|p| !p.gone) {
        let Some((cursor, _)) = p.cursor else {
            continue;
        };
        let at = cursor.min(st.chart.chars().count());
        let rect = output
            .galley
            .pos_from_cursor(CCursor::new(at))
            .translate(output.galley_pos.to_vec2());
        let color = person_color(p.musician());
        let painter = ui.painter_at(output.text_clip_rect.expand2(Vec2::new(2.0, 12.0)));
        painter.line_segment([rect.left_top(), rect.left_bottom()], (2.0, color));
        painter.text(
            rect.left_top(),
            egui::Align2::LEFT_BOTTOM,
            &p.name,
            egui::FontId::proportional(9.0),
            color,
        );
    }
    let typing = st.last_typed.is_some_and(|t| now - t < TYPING_HOLD_S);
    let cursor = if response.has_focus() {
        output
            .cursor_range
            .map(|r| (r.primary.index.0, r.secondary.index.0))
    } else {
        None
    };
    if typing {
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(250));
    }
    if st.last_cursor != Some((cursor, typing)) {
        st.last_cursor = Some((cursor, typing));
        st.send(out, Command::ChartCursor { cursor, typing });
    }
}

fn markers_section(ui: &mut Ui, snap: &Snapshot, st: &mut EditorState, out: &mut Vec<Command>) {
    ui.label(RichText::new("Markers").strong());
    for (beat, label) in &snap.session.markers {
        ui.label(format!("beat {beat:>6.1}  {label}"));
    }
    ui.horizontal(|ui| {
        let l = ui.label("Beat");
        ui.add(egui::DragValue::new(&mut st.marker_beat).range(0.0..=100_000.0))
            .labelled_by(l.id);
        labelled_field(ui, "Label", &mut st.marker_label, "Chorus", 100.0);
        if ui
            .add_enabled(
                !st.marker_label.trim().is_empty(),
                egui::Button::new("Add marker"),
            )
            .clicked()
        {
            let c = Command::AddMarker {
                beat: st.marker_beat,
                label: st.marker_label.trim().to_owned(),
            };
            st.marker_label.clear();
            st.send(out, c);
        }
    });
}
