//! Echoel Jam as a CLAP and VST3 plugin: nice-plug glue around [`echoel_engine`].
//!
//! The plugin owns parameters and state; all audio work is the engine's, built in
//! `activate()` and run in `process()` without allocating.

pub mod bridge;
pub mod headless;
pub mod params;

use std::num::NonZeroU32;
use std::sync::Arc;

use echoel_engine::{Engine, EngineConfig};
use nice_plug::prelude::*;

pub use echoel_engine as engine;
use params::EchoelParams;

/// The plugin instance.
pub struct EchoelJam {
    params: Arc<EchoelParams>,
    engine: Option<Engine>,
}

impl Default for EchoelJam {
    fn default() -> Self {
        Self {
            params: Arc::new(EchoelParams::default()),
            engine: None,
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
    type Editor = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
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
        // The network thread takes the rings' other ends once a room is joined; until then the
        // engine counts its unsent frames and plays only loopback.
        match Engine::new(config) {
            Ok((engine, _network_link)) => {
                self.engine = Some(engine);
                true
            }
            Err(err) => {
                nice_error!("Echoel Jam cannot start: {err}");
                self.engine = None;
                false
            }
        }
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
        _context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        let Some(engine) = &mut self.engine else {
            return ProcessStatus::Normal;
        };
        engine.process(buffer.as_slice(), &self.params.engine_params());
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
