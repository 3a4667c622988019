//! Where each remote stem plays: the main output or one of the auxiliary outputs the host gave
//! the plugin, so a DAW records or mixes it on a track of its own.

use egui::{RichText, Ui};

use crate::model::{Command, Person, Snapshot};
use crate::view::EditorState;

/// An output's name as the host lists it.
pub(crate) fn bus_name(bus: u8) -> String {
    if bus == 0 {
        "Main".into()
    } else {
        format!("Aux {bus}")
    }
}

/// One output chooser per stream the member sends.
pub(crate) fn outputs_cell(
    ui: &mut Ui,
    p: &Person,
    buses: usize,
    st: &mut EditorState,
    out: &mut Vec<Command>,
) {
    if p.outputs.is_empty() {
        ui.label("—");
        return;
    }
    ui.vertical(|ui| {
        for o in &p.outputs {
            let what = if o.name.is_empty() {
                p.name.clone()
            } else {
                format!("{}'s {}", p.name, o.name)
            };
            let mut bus = o.bus;
            let shown = if p.outputs.len() > 1 && !o.name.is_empty() {
                format!("{}: {}", o.name, bus_name(bus))
            } else {
                bus_name(bus)
            };
            let label = format!("Output of {what}");
            let r = egui::ComboBox::from_id_salt(("route", p.participant, o.stem))
                .selected_text(shown.clone())
                .width(120.0)
                .show_ui(ui, |ui| {
                    for b in 0..=buses.min(u8::MAX as usize) as u8 {
                        ui.selectable_value(&mut bus, b, bus_name(b));
                    }
                })
                .response
                .on_hover_text(format!("{label}: the main output or an auxiliary one"));
            // Named for screen readers and tests: the button shows the choice only.
            r.widget_info(|| {
                let mut info = egui::WidgetInfo::labeled(egui::Role::ComboBox, true, label.clone());
                info.current_text_value = Some(shown.clone());
                info
            });
            if bus != o.bus {
                let c = Command::SetStemRoute {
                    participant: p.participant,
                    stem: o.stem,
                    bus,
                };
                st.send(out, c);
            }
        }
    });
}

/// This instance's stem: its name, editable, and the others this DAW sends beside it.
pub(crate) fn stem_row(ui: &mut Ui, snap: &Snapshot, st: &mut EditorState, out: &mut Vec<Command>) {
    ui.horizontal(|ui| {
        let Some(stem) = &snap.me.stem else {
            ui.label(RichText::new("Receive only: this track sends nothing.").weak());
            return;
        };
        let l = ui.label("Sends as stem");
        let r = ui
            .add(
                egui::TextEdit::singleline(&mut st.stem_name)
                    .hint_text(stem.as_str())
                    .desired_width(110.0),
            )
            .labelled_by(l.id)
            .on_hover_text("the name the others see this track under; empty: the track's own");
        let typed = st.stem_name.trim().to_owned();
        if r.lost_focus() && st.stem_sent.as_ref() != Some(&typed) {
            st.stem_sent = Some(typed.clone());
            st.send(out, Command::SetStemName(typed));
        }
        if snap.me.stems.len() > 1 {
            let all = snap.me.stems.join(", ");
            ui.label(RichText::new(format!("this DAW sends {all}")).weak());
        }
    });
}

/// The choice of whether routed stems also stay in the main output.
pub(crate) fn leave_main_toggle(
    ui: &mut Ui,
    snap: &Snapshot,
    st: &mut EditorState,
    out: &mut Vec<Command>,
) {
    if snap.aux_buses == 0 {
        return;
    }
    let mut leave = snap.routed_leave_main;
    let routed = snap
        .people
        .iter()
        .flat_map(|p| &p.outputs)
        .filter(|o| o.bus != 0)
        .count();
    ui.horizontal(|ui| {
        if ui
            .checkbox(&mut leave, "Routed stems leave the main output")
            .on_hover_text("On: a stem on an auxiliary output is heard there only. Off: on both.")
            .changed()
        {
            st.send(out, Command::SetRoutedLeaveMain(leave));
        }
        if routed > 0 {
            ui.label(RichText::new(format!("{routed} routed")).weak());
        }
    });
}
