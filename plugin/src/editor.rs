//! The plugin window: the editor views of `echoel-gui` in a resizable egui window. Each frame
//! draws the control thread's last snapshot and hands what the musician did back as commands.

use std::sync::Arc;
use std::time::Duration;

use echoel_gui::{Command, EditorState};
use nice_plug::editor::ResizeHint;
use nice_plug_egui::{create_egui_editor, EguiEditor, EguiEditorState, EguiNiceSettings};
use nice_plug_egui::{Frame, NiceEguiApp, RepaintNotifier};

use crate::control::Controls;
use crate::params::EchoelParams;

/// Snapshots change about this often; the window redraws as often to show them.
const REFRESH: Duration = Duration::from_millis(100);

/// The editor's state while open.
pub struct EditorApp {
    controls: Arc<Controls>,
    state: EditorState,
    out: Vec<Command>,
}

impl NiceEguiApp for EditorApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut Frame) {
        let (snap, applied) = self.controls.snapshot();
        echoel_gui::draw(ui, &snap, applied, &mut self.state, &mut self.out);
        for c in self.out.drain(..) {
            if !self.controls.send(c) {
                tracing::warn!("the control thread is behind; an edit was dropped");
            }
        }
        ui.ctx().request_repaint_after(REFRESH);
    }

    fn track_info_changed(&mut self, info: nice_plug::prelude::TrackInfo) {
        self.controls.set_host_track(info.name());
    }
}

/// The editor, starting with the saved name, instrument and invite filled in.
pub fn create(
    size: Arc<EguiEditorState>,
    controls: Arc<Controls>,
    params: &EchoelParams,
) -> Option<EguiEditor<EditorApp>> {
    let read = |s: &std::sync::RwLock<String>| s.read().map(|v| v.clone()).unwrap_or_default();
    let mut state = EditorState::new(
        &read(&params.display_name),
        &read(&params.instrument),
        &read(&params.invite),
    );
    state.stem_name = read(&params.stem_name);
    state.record_folder = match read(&params.record_folder) {
        f if f.is_empty() => crate::record::default_folder()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        f => f,
    };
    let app = EditorApp {
        controls,
        state,
        out: Vec::new(),
    };
    let settings = EguiNiceSettings::new()
        .with_tile("Echoel Jam")
        .with_resize_hint(ResizeHint::RESIZABLE);
    create_egui_editor(size, RepaintNotifier::new(), settings, app)
}
