//! A headless member's signals, and its further stems: each its own signal, encoder and
//! media clock, sent beside the engine's own (stem 0) as one person's named tracks.

use echoel_engine::codec::FrameEncoder;
use echoel_engine::signal::TestSignal;
use echoel_engine::{CodecSettings, EngineError, INTERNAL_RATE_HZ, MAX_OPUS_PACKET_BYTES};
use echoel_net::session::SessionHandle;
use echoel_net::wire::StemId;

use crate::headless::Source;

/// Most stems one headless member sends (the others keep at most 16 names of a member).
pub const MAX_STEMS: usize = 16;

/// Plays a [`Source`] block by block (not [`Source::Echo`], which is what was heard).
pub struct Signal {
    source: Source,
    voice: Option<TestSignal>,
}

impl Signal {
    pub fn new(source: &Source) -> Self {
        let voice = match source {
            Source::Voice(v) => Some(TestSignal::voice(INTERNAL_RATE_HZ, *v)),
            _ => None,
        };
        Self {
            source: source.clone(),
            voice,
        }
    }

    /// Fills `out` with the signal from sample `pos` on; leaves it alone for an echo.
    pub fn fill(&mut self, pos: usize, out: &mut [f32]) {
        match (&self.source, &mut self.voice) {
            (Source::Voice(_), Some(v)) => out.iter_mut().for_each(|s| *s = v.next_sample()),
            (Source::Tone(hz), _) => {
                for (i, s) in out.iter_mut().enumerate() {
                    let t = (pos + i) as f32 / INTERNAL_RATE_HZ as f32;
                    *s = 0.3 * (std::f32::consts::TAU * hz * t).sin();
                }
            }
            (Source::Samples(samples), _) => {
                for (i, s) in out.iter_mut().enumerate() {
                    *s = samples.get(pos + i).copied().unwrap_or(0.0);
                }
            }
            _ => {}
        }
    }
}

/// One further stem.
struct Stem {
    id: StemId,
    signal: Signal,
    encoder: FrameEncoder,
    /// Interleaved stereo not yet encoded.
    pending: Vec<f32>,
    /// Media time of the next frame's first sample: block 0 is 0, as the engine's.
    media: u64,
}

/// The stems after the first, sent from the headless thread (not a host's audio thread).
pub struct ExtraStems {
    stems: Vec<Stem>,
    frame: usize,
    mono: Vec<f32>,
}

impl ExtraStems {
    /// Stems 1, 2, … with these sources, encoded as `codec` says.
    pub fn new(sources: &[Source], codec: CodecSettings) -> Result<Self, EngineError> {
        let stems = sources
            .iter()
            .take(MAX_STEMS - 1)
            .enumerate()
            .map(|(i, source)| {
                Ok(Stem {
                    id: StemId(i as u8 + 1),
                    signal: Signal::new(source),
                    encoder: FrameEncoder::new(codec)?,
                    pending: Vec::new(),
                    media: 0,
                })
            })
            .collect::<Result<_, EngineError>>()?;
        Ok(Self {
            stems,
            frame: codec.frame.samples(),
            mono: Vec::new(),
        })
    }

    /// The block of `frames` samples at `pos`: each stem's signal, sent a frame at a time.
    pub fn block(&mut self, pos: usize, frames: usize, session: &SessionHandle) {
        self.mono.resize(frames, 0.0);
        let mut packet = [0u8; MAX_OPUS_PACKET_BYTES];
        for s in &mut self.stems {
            s.signal.fill(pos, &mut self.mono);
            s.pending.extend(self.mono.iter().flat_map(|&x| [x, x]));
            while s.pending.len() >= 2 * self.frame {
                if let Ok(n) = s.encoder.encode(&s.pending[..2 * self.frame], &mut packet) {
                    session.send_audio(s.id, s.media, &packet[..n]);
                }
                s.pending.drain(..2 * self.frame);
                s.media += self.frame as u64;
            }
        }
    }
}
