//! Summing the remote streams: into the main mix, or onto the auxiliary output bus a stream is
//! routed to, where a DAW records or mixes it on a track of its own.

use std::sync::atomic::Ordering::Relaxed;

use crate::fifo::SampleFifo;
use crate::packet::StreamId;
use crate::resample::{FixedSide, RateConverter};
use crate::stats::EngineStats;
use crate::stream::{RemoteStream, TargetDepth};
use crate::{EngineError, INTERNAL_RATE_HZ, LOOPBACK_STREAM};

/// Auxiliary stereo outputs a host can be offered (bus 1 to 8; 0 is the main output).
pub const AUX_BUSES: usize = 8;

/// Receives each remote stream's own audio as it is mixed, for per-musician recording or
/// aux outputs.
///
/// # Thread
/// Called on the audio thread, inside [`crate::Engine::process_tapped`]: implementations must
/// not allocate, lock or block.
pub trait StemTap {
    /// `samples` is interleaved stereo at 48 kHz, in the order the mixer renders it.
    fn stem(&mut self, stream: StreamId, samples: &[f32]);

    /// Whether this tap wants stems at all (rendering them separately costs a copy).
    fn wants_stems(&self) -> bool {
        true
    }
}

/// The tap of plain [`crate::Engine::process`]: takes nothing.
pub(crate) struct NoTap;

impl StemTap for NoTap {
    fn stem(&mut self, _: StreamId, _: &[f32]) {}
    fn wants_stems(&self) -> bool {
        false
    }
}

/// The auxiliary buses' audio: rendered at 48 kHz beside the main mix and, at other host
/// rates, converted by converters of their own fed exactly as the main one is, so a stem
/// lies on its bus sample for sample where it would have lain in the main mix.
pub(crate) struct AuxOutputs {
    /// Each bus's 48 kHz stereo render, `stride` samples apart.
    mix48: Vec<f32>,
    stride: usize,
    convs: Vec<RateConverter>,
    fifos: Vec<SampleFifo>,
}

impl AuxOutputs {
    pub(crate) fn none() -> Self {
        Self {
            mix48: Vec::new(),
            stride: 0,
            convs: Vec::new(),
            fifos: Vec::new(),
        }
    }

    /// `buses` buses (at most [`AUX_BUSES`]) for a host at `rate` rendering up to
    /// `render_max` frames at 48 kHz per chunk, `max_block` host frames per block.
    pub(crate) fn new(
        buses: usize,
        rate: u32,
        render_max: usize,
        max_block: usize,
    ) -> Result<Self, EngineError> {
        let buses = buses.min(AUX_BUSES);
        let convs = if rate == INTERNAL_RATE_HZ {
            Vec::new()
        } else {
            (0..buses)
                .map(|_| {
                    RateConverter::new(INTERNAL_RATE_HZ, rate, FixedSide::Output, 2, max_block)
                })
                .collect::<Result<_, _>>()?
        };
        let fifos = (0..convs.len())
            .map(|_| SampleFifo::with_capacity(2, 2 * max_block))
            .collect();
        Ok(Self {
            mix48: vec![0.0; buses * 2 * render_max],
            stride: 2 * render_max,
            convs,
            fifos,
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.mix48.len().checked_div(self.stride).unwrap_or(0)
    }

    /// Bus `b`'s first `len` 48 kHz samples (interleaved).
    fn bus(&self, b: usize, len: usize) -> &[f32] {
        &self.mix48[b * self.stride..b * self.stride + len]
    }

    fn bus_mut(&mut self, b: usize, len: usize) -> &mut [f32] {
        &mut self.mix48[b * self.stride..b * self.stride + len]
    }

    fn clear(&mut self, len: usize) {
        for b in 0..self.count() {
            self.bus_mut(b, len).fill(0.0);
        }
    }

    /// Converts the chunk just rendered (`frames` at 48 kHz) as the main converter did, its
    /// chunk set to `chunk`.
    pub(crate) fn convert(&mut self, chunk: usize, frames: usize, scratch: &mut [f32]) {
        for b in 0..self.convs.len() {
            let start = b * self.stride;
            let conv = &mut self.convs[b];
            conv.set_chunk(chunk);
            let (_, made) = conv.process(&self.mix48[start..start + 2 * frames], scratch);
            self.fifos[b].push(&scratch[..2 * made]);
        }
    }

    /// Writes `n` host frames of every bus into the host's `outputs` at `offset` (silence on
    /// buses we do not have), and lets go of them.
    pub(crate) fn write(
        &mut self,
        outputs: &mut [Option<&mut [&mut [f32]]>],
        offset: usize,
        n: usize,
    ) {
        for (b, out) in outputs.iter_mut().enumerate() {
            let Some(channels) = out.as_deref_mut() else {
                continue;
            };
            let src: &[f32] = match (self.fifos.get(b), b < self.count()) {
                (Some(f), _) => &f.as_slice()[..2 * f.frames().min(n)],
                (None, true) if self.convs.is_empty() => self.bus(b, 2 * n),
                _ => &[],
            };
            let at = |i: usize, c: usize| src.get(2 * i + c).copied().unwrap_or(0.0);
            for i in 0..n {
                match channels {
                    [mono] => {
                        if let Some(x) = mono.get_mut(offset + i) {
                            *x = 0.5 * (at(i, 0) + at(i, 1));
                        }
                    }
                    [left, right, ..] => {
                        if let (Some(l), Some(r)) =
                            (left.get_mut(offset + i), right.get_mut(offset + i))
                        {
                            *l = at(i, 0);
                            *r = at(i, 1);
                        }
                    }
                    [] => {}
                }
            }
        }
        for f in &mut self.fifos {
            f.consume(n.min(f.frames()));
        }
    }

    pub(crate) fn reset(&mut self) {
        self.convs.iter_mut().for_each(RateConverter::reset);
        self.fifos.iter_mut().for_each(SampleFifo::clear);
    }
}

/// Sums every active stream into a 48 kHz stereo buffer, and the routed ones onto their
/// auxiliary buses.
pub(crate) struct Mixer<'a> {
    pub(crate) streams: &'a mut [RemoteStream],
    pub(crate) loopback: Option<&'a mut RemoteStream>,
    pub(crate) stats: &'a EngineStats,
    pub(crate) target: TargetDepth,
    pub(crate) hold: bool,
    pub(crate) block_48k: usize,
    /// 48 kHz samples from this render's start beyond which packets cannot have arrived yet.
    pub(crate) horizon: usize,
    pub(crate) stem: &'a mut [f32],
    pub(crate) aux: &'a mut AuxOutputs,
    /// Streams routed to a bus are not in the main mix too.
    pub(crate) routed_leave_main: bool,
}

impl Mixer<'_> {
    pub(crate) fn render(&mut self, mix: &mut [f32], tap: &mut dyn StemTap) {
        mix.fill(0.0);
        let len = mix.len();
        self.aux.clear(len);
        let stats = self.stats;
        let target = self.target;
        let buses = self.aux.count();
        let loopback = self.loopback.as_deref_mut();
        let active = self.streams.iter_mut().filter(|s| s.id().is_some());
        for s in loopback.into_iter().chain(active) {
            s.set_target(target);
            s.set_hold(self.hold);
            s.set_block(self.block_48k);
            let bus = match s.id() {
                Some(id) if id != LOOPBACK_STREAM => usize::from(stats.stream_route(id)),
                _ => 0,
            };
            let routed = (1..=buses).contains(&bus);
            let alive = if tap.wants_stems() || routed {
                // Render alone first so the tap and the bus get this stream only.
                let stem = &mut self.stem[..len];
                stem.fill(0.0);
                let alive = s.render_into(stem, 1.0, self.horizon, stats);
                if let Some(id) = s.id() {
                    tap.stem(id, stem);
                }
                if routed {
                    let out = self.aux.bus_mut(bus - 1, len);
                    out.iter_mut().zip(stem.iter()).for_each(|(m, x)| *m += x);
                }
                if !(routed && self.routed_leave_main) {
                    mix.iter_mut().zip(stem.iter()).for_each(|(m, x)| *m += x);
                }
                alive
            } else {
                s.render_into(mix, 1.0, self.horizon, stats)
            };
            stats
                .jitter_depth_samples
                .store(s.depth_samples().min(u64::from(u32::MAX)) as u32, Relaxed);
            if !alive && s.id() != Some(LOOPBACK_STREAM) {
                s.reset(stats);
            }
        }
    }
}
