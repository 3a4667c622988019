//! Echoel Jam as a CLAP and VST3 plugin: nice-plug glue around [`echoel_engine`].
//!
//! The plugin owns parameters and state; all audio work is the engine's, built in
//! `activate()` and run in `process()` without allocating.

pub mod bridge;
pub mod headless;
pub mod params;

use std::num::NonZeroU32;
use std::sync::Arc;

use echoel_engine::{Engine, EngineConfig, NetworkLink};
use echoel_net::session::SessionConfig;
use echoel_net::{Invite, RotationPolicy};
use nice_plug::prelude::*;

use bridge::{network_runtime, Bridge, DocKeeping};
use echoel_net::doc::{DocStore, SessionDoc};

pub use echoel_engine as engine;
use params::EchoelParams;

/// The plugin instance.
pub struct EchoelJam {
    params: Arc<EchoelParams>,
    engine: Option<Engine>,
    /// The room connection, when the persisted invite names one.
    bridge: Option<Bridge>,
}

impl Default for EchoelJam {
    fn default() -> Self {
        Self {
            params: Arc::new(EchoelParams::default()),
            engine: None,
            bridge: None,
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
        // Dropping the old bridge (if re-activated) stops its session before the new one.
        self.bridge = None;
        match Engine::new(config) {
            Ok((engine, link)) => {
                self.engine = Some(engine);
                self.bridge = self.join_room(link);
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
        self.bridge = None;
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
        if let Some(bridge) = &self.bridge {
            // An atomic store: safe on the audio thread.
            let frames = self.params.redundancy.value().clamp(0, 2) as u8;
            bridge.session().set_redundancy(frames);
        }
        // Remote musicians keep playing while this track is silent.
        ProcessStatus::KeepAlive
    }
}

impl EchoelJam {
    /// Joins the room of the persisted invite, if any, on the process's network thread. Until
    /// then the engine counts its unsent frames and plays only loopback.
    fn join_room(&self, link: NetworkLink) -> Option<Bridge> {
        let text = self.params.invite.read().ok()?.trim().to_owned();
        if text.is_empty() {
            return None;
        }
        let invite: Invite = match text.parse() {
            Ok(i) => i,
            Err(err) => {
                nice_error!("Echoel Jam: the saved invite is unusable: {err}");
                return None;
            }
        };
        let name = self
            .params
            .display_name
            .read()
            .map(|n| n.trim().to_owned())
            .unwrap_or_default();
        let config = SessionConfig {
            invite,
            name: if name.is_empty() {
                "Echoel Jam".into()
            } else {
                name
            },
            force_relay: false,
            rotation: RotationPolicy::default(),
            initial_doc: None,
        };
        let store =
            DocStore::default_dir().map(|dir| DocStore::new(&dir, config.invite.room.as_str()));
        let config = SessionConfig {
            initial_doc: self.saved_session(store.as_ref()),
            ..config
        };
        let keep = Some(DocKeeping {
            project: self.params.session_doc.clone(),
            store,
        });
        match Bridge::start(link, config, network_runtime().handle(), keep) {
            Ok(b) => Some(b),
            Err(err) => {
                nice_error!("Echoel Jam cannot join the room: {err}");
                None
            }
        }
    }

    /// The session document to start from: the project's copy merged with the room's store
    /// (edits made without this project). An unreadable project copy is logged and skipped (its
    /// bytes stay in the project until the session replaces them); a corrupt store file is
    /// moved aside by the store.
    fn saved_session(&self, store: Option<&DocStore>) -> Option<Vec<u8>> {
        let project = self.params.session_doc.read().ok()?.clone();
        let mut doc = if project.is_empty() {
            None
        } else {
            match SessionDoc::load(&project) {
                Ok(d) => Some(d),
                Err(err) => {
                    nice_warn!("Echoel Jam: the session saved in this project is unreadable ({err}); using the room's");
                    None
                }
            }
        };
        if let Some(mut stored) = store.and_then(DocStore::load) {
            match &mut doc {
                Some(d) => {
                    if let Err(err) = d.merge(&mut stored) {
                        nice_warn!("Echoel Jam: cannot merge the local session store: {err}");
                    }
                }
                None => doc = Some(stored),
            }
        }
        doc.map(|mut d| d.save())
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
