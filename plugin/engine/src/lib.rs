//! Echoel Jam's real-time audio engine.
//!
//! The engine turns host blocks into Opus packets for the network and remote packets back into
//! audio, at any host rate and block size. It knows nothing of plugin APIs, so the plugin, the
//! headless peer, the tests and the benchmarks all run the same code.
//!
//! Real-time contract: [`Engine::process`] never allocates, locks, blocks, logs or makes a
//! system call. Everything is allocated in [`Engine::new`]; the network side is reached only
//! through the preallocated rings in [`NetworkLink`], and state leaves as atomics
//! ([`EngineStats`]).

pub mod analysis;
pub mod clock;
pub mod codec;
mod engine;
pub mod fifo;
pub mod host_block;
pub mod jitter;
pub mod limits;
pub mod measure;
mod mixer;
pub mod packet;
pub mod resample;
pub mod signal;
pub mod stats;
pub mod stream;
pub mod tsm;
pub mod wake;

use thiserror::Error;

pub use clock::MediaClock;
pub use codec::{CodecSettings, FrameDuration};
pub use engine::{
    Engine, EngineConfig, EngineParams, JitterMode, NetworkLink, LOOPBACK_STREAM, MAX_BLOCK_FRAMES,
    MAX_REMOTE_STREAMS, SUPPORTED_RATES_HZ,
};
pub use limits::SendLimits;
pub use mixer::{StemTap, AUX_BUSES};
pub use packet::{opus_packet_samples, PacketSlot, StreamId, MAX_OPUS_PACKET_BYTES};
pub use stats::{EngineStats, StatsSnapshot, StreamSnapshot, StreamStats};
pub use wake::SendWake;

/// The engine's internal sample rate: Opus's native rate.
pub const INTERNAL_RATE_HZ: u32 = 48_000;

/// Why an engine could not be built.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The host runs at a rate the engine does not convert from.
    #[error("host sample rate {0} Hz is not supported; Echoel Jam runs at 1 to 768 kHz")]
    UnsupportedSampleRate(u32),
    /// The host offered a channel layout other than mono or stereo.
    #[error("{0} channels are not supported; insert Echoel Jam on a mono or stereo track")]
    UnsupportedChannels(usize),
    /// libopus refused to create or configure a codec.
    #[error("the Opus codec could not be set up: {0}")]
    Codec(String),
    /// rubato refused to create a resampler.
    #[error("the sample-rate converter could not be set up: {0}")]
    Resampler(String),
}
