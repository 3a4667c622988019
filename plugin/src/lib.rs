//! Echoel Jam as a CLAP and VST3 plugin: nice-plug glue around [`echoel_engine`].
//!
//! The plugin owns parameters and state; all audio work is the engine's, built in
//! `activate()` and run in `process()` without allocating.

pub mod backoff;
pub mod bridge;
pub mod control;
pub mod editor;
pub mod headless;
mod headless_stems;
pub mod instance;
pub mod netem;
pub mod params;
pub mod record;
pub mod routing;
pub mod session_doc;
pub mod shared_room;
pub mod take_control;

use std::num::NonZeroU32;
use std::sync::Arc;

use echoel_engine::{EngineConfig, EngineParams, AUX_BUSES};
use nice_plug::prelude::*;
use nice_plug_egui::EguiEditorState;

use control::Controls;
use instance::Instance;

pub use echoel_engine as engine;
use params::EchoelParams;

const AUX_PORTS: [NonZeroU32; AUX_BUSES] = [new_nonzero_u32(2); AUX_BUSES];
const AUX_NAMES: PortNames = PortNames {
    aux_outputs: &[
        "Aux 1", "Aux 2", "Aux 3", "Aux 4", "Aux 5", "Aux 6", "Aux 7", "Aux 8",
    ],
    ..PortNames::const_default()
};

/// The plugin instance.
pub struct EchoelJam {
    params: Arc<EchoelParams>,
    /// The engine, and the room connection that outlives re-activations.
    instance: Instance,
    /// Shared with the editor and the control thread.
    controls: Arc<Controls>,
    editor_state: Arc<EguiEditorState>,
}

impl Default for EchoelJam {
    fn default() -> Self {
        let (w, h) = echoel_gui::DEFAULT_SIZE;
        Self {
            params: Arc::new(EchoelParams::default()),
            instance: Instance::default(),
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

    // A plain insert first (what VST3 hosts get: a VST3 plugin's bus count is fixed), then
    // the same with eight stereo auxiliary outputs, which a CLAP host offers as a port
    // configuration to choose (the others' stems on tracks of their own).
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
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(2),
            main_output_channels: NonZeroU32::new(2),
            aux_output_ports: &AUX_PORTS,
            names: PortNames {
                layout: Some("Stereo, 8 aux outputs"),
                ..AUX_NAMES
            },
            ..AudioIOLayout::const_default()
        },
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(1),
            main_output_channels: NonZeroU32::new(1),
            aux_output_ports: &AUX_PORTS,
            names: PortNames {
                layout: Some("Mono, 8 aux outputs"),
                ..AUX_NAMES
            },
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
        if buffer_config.process_mode == ProcessMode::Offline {
            nice_log!("Echoel Jam: offline render — the room is not sent to or heard meanwhile");
        }
        match self.instance.activate(
            config,
            buffer_config.process_mode,
            &self.controls,
            &self.params,
        ) {
            Ok(()) => {
                let buses = layout.aux_output_ports.len();
                if let Err(err) = self.instance.set_aux_outputs(buses, &self.controls) {
                    // The main output plays on; the others' stems stay in it.
                    nice_error!("Echoel Jam cannot start its auxiliary outputs: {err}");
                }
                true
            }
            Err(err) => {
                nice_error!("Echoel Jam cannot start: {err}");
                false
            }
        }
    }

    fn reset(&mut self) {
        if let Some(engine) = self.instance.engine() {
            engine.reset();
        }
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        let params = EngineParams {
            hold_depth: self.instance.recording(),
            ..self.params.engine_params()
        };
        let Some(engine) = self.instance.engine() else {
            return ProcessStatus::Normal;
        };
        let mut outs = aux.outputs.iter_mut();
        let mut buses: [Option<&mut [&mut [f32]]>; AUX_BUSES] =
            std::array::from_fn(|_| outs.next().map(|b| b.as_slice()));
        engine.process_with_aux(buffer.as_slice(), &mut buses, &params);
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
