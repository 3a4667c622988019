//! Echoel Jam as a CLAP and VST3 plugin: nice-plug glue around [`echoel_engine`].
//!
//! The plugin owns parameters and state; all audio work is the engine's, built in
//! `activate()` and run in `process()` without allocating.

pub mod backoff;
pub mod bridge;
pub mod control;
pub mod editor;
pub mod headless;
pub mod netem;
pub mod params;

use std::num::NonZeroU32;
use std::sync::Arc;

use echoel_engine::{Engine, EngineConfig};
use nice_plug::prelude::*;
use nice_plug_egui::EguiEditorState;

use bridge::Bridge;
use control::{ControlThread, Controls};

pub use echoel_engine as engine;
use params::EchoelParams;

/// The plugin instance.
pub struct EchoelJam {
    params: Arc<EchoelParams>,
    engine: Option<Engine>,
    /// Applies the editor's commands and runs the room connection, while active.
    control: Option<ControlThread>,
    /// Shared with the editor and the control thread.
    controls: Arc<Controls>,
    editor_state: Arc<EguiEditorState>,
}

impl Default for EchoelJam {
    fn default() -> Self {
        let (w, h) = echoel_gui::DEFAULT_SIZE;
        Self {
            params: Arc::new(EchoelParams::default()),
            engine: None,
            control: None,
            controls: Controls::new(),
            editor_state: EguiEditorState::from_size(
                nice_plug::editor::dpi::LogicalSize::new(w as f64, h as f64),
                1.0,
            ),
        }
    }
}

impl Plugin for EchoelJam {
    const NAME: &'static str = "Echoel Jam";
    const VENDOR: &'static str = "Echoel";
    const URL: &'static str = "https://echoel.org";
    const EMAIL: &'static str = "hello@echoel.org";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(2),
            main_output_channels: NonZeroU32::new(2),
            ..AudioIOLayout::const_default()
        },
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(1),
            main_output_channels: NonZeroU32::new(1),
            ..AudioIOLayout::const_default()
        },
    ];

    type SysExMessage = ();
    type BackgroundTask = ();
    type Editor = nice_plug_egui::EguiEditor<editor::EditorApp>;

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        editor::create(
            self.editor_state.clone(),
            self.controls.clone(),
            &self.params,
        )
    }

    fn activate(
        &mut self,
        layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        let config = EngineConfig {
            sample_rate_hz: buffer_config.sample_rate.round() as u32,
            host_channels: layout.main_output_channels.map_or(0, |c| c.get() as usize),
            max_block_frames: buffer_config.max_buffer_size as usize,
        };
        // Dropping the old control thread (if re-activated) leaves the room before rejoining.
        self.control = None;
        // An offline render (a bounce) neither sends to nor plays the room: the track's own
        // signal (and loopback, if on) is all that is rendered.
        let offline = buffer_config.process_mode == ProcessMode::Offline;
        if offline {
            nice_log!("Echoel Jam: offline render — the room is not sent to or heard meanwhile");
        }
        match Engine::new(config) {
            Ok((mut engine, link)) => {
                // A host calling in real time: a pause in its calls is timed, not taken for a
                // faster network. One that renders ahead at its own pace keeps the audio's time.
                engine.use_wall_clock(buffer_config.process_mode == ProcessMode::Realtime);
                let stats = engine.stats().clone();
                self.engine = Some(engine);
                self.control = Bridge::new(link)
                    .map_err(|e| e.to_string())
                    .and_then(|bridge| {
                        bridge.set_offline(offline);
                        ControlThread::start(
                            self.controls.clone(),
                            self.params.clone(),
                            bridge,
                            stats,
                        )
                        .map_err(|e| e.to_string())
                    })
                    .inspect_err(|err| nice_error!("Echoel Jam cannot start networking: {err}"))
                    .ok();
                true
            }
            Err(err) => {
                nice_error!("Echoel Jam cannot start: {err}");
                self.engine = None;
                false
            }
        }
    }

    fn deactivate(&mut self) {
        self.control = None;
    }

    fn reset(&mut self) {
        if let Some(engine) = &mut self.engine {
            engine.reset();
        }
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        let Some(engine) = &mut self.engine else {
            return ProcessStatus::Normal;
        };
        engine.process(buffer.as_slice(), &self.params.engine_params());
        // An atomic store: safe on the audio thread.
        self.controls.set_host_tempo(context.transport().tempo);
        // Remote musicians keep playing while this track is silent.
        ProcessStatus::KeepAlive
    }
}

impl ClapPlugin for EchoelJam {
    const CLAP_ID: &'static str = "org.echoel.jam";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Play together over the internet from inside your DAW");
    const CLAP_MANUAL_URL: Option<&'static str> = Some(Self::URL);
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::AudioEffect,
        ClapFeature::Stereo,
        ClapFeature::Mono,
        ClapFeature::Utility,
    ];
}

impl Vst3Plugin for EchoelJam {
    const VST3_CLASS_ID: [u8; 16] = *b"EchoelJamPlugin1";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Fx, Vst3SubCategory::Tools];
}

nice_export_clap!(EchoelJam);
nice_export_vst3!(EchoelJam);
