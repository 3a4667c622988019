//! One plugin instance's engine and room connection across the host's activations. A host
//! re-activates a plugin whenever its sample rate, block size or processing mode changes;
//! the musician stays in the room through it: same participant, same session, the same stream
//! to everyone (the engine is rebuilt around the rings the session feeds).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use echoel_engine::{Engine, EngineConfig};
pub use nice_plug::prelude::ProcessMode;

use crate::bridge::Bridge;
use crate::control::{ControlThread, Controls};
use crate::params::EchoelParams;

/// The engine (while active) and the room connection (for the instance's life).
#[derive(Default)]
pub struct Instance {
    engine: Option<Engine>,
    /// Leaves the room when dropped, with the instance.
    control: Option<ControlThread>,
    offline: Option<Arc<AtomicBool>>,
    recording: Option<Arc<AtomicBool>>,
}

impl Instance {
    /// Builds the engine for `config` (the first time, also the room connection, joining the
    /// saved room); later calls rebuild the engine only. An offline render neither sends to
    /// nor plays the room; a real-time host has its calls timed on the monotonic clock.
    pub fn activate(
        &mut self,
        config: EngineConfig,
        mode: ProcessMode,
        controls: &Arc<Controls>,
        params: &Arc<EchoelParams>,
    ) -> Result<(), String> {
        match &mut self.engine {
            Some(engine) => engine.reactivate(config).map_err(|e| e.to_string())?,
            None => {
                let (engine, link) = Engine::new(config).map_err(|e| e.to_string())?;
                let stats = engine.stats().clone();
                self.engine = Some(engine);
                // Without networking the engine still plays the track (and loopback).
                match Bridge::new(link).map_err(|e| e.to_string()) {
                    Ok(bridge) => {
                        self.offline = Some(bridge.offline_switch());
                        self.recording = Some(bridge.recording_flag());
                        match ControlThread::start(controls.clone(), params.clone(), bridge, stats)
                        {
                            Ok(control) => self.control = Some(control),
                            Err(e) => tracing::error!("Echoel Jam cannot start networking: {e}"),
                        }
                    }
                    Err(e) => tracing::error!("Echoel Jam cannot start networking: {e}"),
                }
            }
        }
        if let Some(engine) = &mut self.engine {
            engine.use_wall_clock(mode == ProcessMode::Realtime);
        }
        if let Some(off) = &self.offline {
            off.store(mode == ProcessMode::Offline, Relaxed);
        }
        Ok(())
    }

    /// Gives the engine the host layout's `buses` auxiliary outputs (kept through later
    /// activations) and tells the editor, which offers routing only where there are some.
    pub fn set_aux_outputs(&mut self, buses: usize, controls: &Controls) -> Result<(), String> {
        let Some(engine) = &mut self.engine else {
            return Ok(());
        };
        if engine.aux_buses() != buses {
            if let Err(e) = engine.enable_aux(buses) {
                controls.set_aux_buses(0);
                return Err(e.to_string());
            }
        }
        controls.set_aux_buses(engine.aux_buses());
        Ok(())
    }

    /// A take is being recorded: the receive buffers hold their delay. An atomic load.
    pub fn recording(&self) -> bool {
        self.recording.as_ref().is_some_and(|r| r.load(Relaxed))
    }

    /// The engine, while active.
    pub fn engine(&mut self) -> Option<&mut Engine> {
        self.engine.as_mut()
    }
}
