//! The real-time engine: host blocks in, Opus packets out to the network ring; packets in from
//! the network ring, jitter-buffered, decoded and mixed into the host's output.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rtrb::{Consumer, Producer, RingBuffer};

use crate::clock::{ns_to_samples, HostTiming, MediaClock, RecentMax};
use crate::codec::{CodecSettings, FrameDuration, FrameEncoder};
use crate::fifo::SampleFifo;
use crate::jitter::MAX_DEPTH_MS;
use crate::limits::SendLimits;
use crate::mixer::{AuxOutputs, Mixer, NoTap, StemTap};
use crate::packet::{PacketSlot, StreamId};
use crate::resample::{FixedSide, RateConverter, MAX_RATE_HZ, MIN_RATE_HZ};
use crate::stats::EngineStats;
use crate::stream::{RemoteStream, TargetDepth};
use crate::wake::SendWake;
use crate::{EngineError, INTERNAL_RATE_HZ};

/// Host sample rates the engine accepts (any rate in between is converted to and from 48 kHz);
/// anything else is refused at activation.
pub const SUPPORTED_RATES_HZ: std::ops::RangeInclusive<u32> = MIN_RATE_HZ..=MAX_RATE_HZ;
/// Largest host block processed in one piece (fewer below 48 kHz); longer blocks are split,
/// never refused.
pub const MAX_BLOCK_FRAMES: usize = 8192;
/// Remote streams mixed at once: a full relay-forwarded room (DESIGN: up to 20) plus stems.
pub const MAX_REMOTE_STREAMS: usize = 32;
/// Outgoing ring: 256 frames is 640 ms at 2.5 ms frames, far more than the network thread
/// ever lags; when it does, the newest frame is dropped and counted.
const SEND_RING_SLOTS: usize = 256;
/// Incoming ring: room for 32 streams bursting 16 frames each between two audio callbacks.
const RECV_RING_SLOTS: usize = 512;
/// The stream id the engine uses for its own packets played back in loopback mode.
pub const LOOPBACK_STREAM: StreamId = StreamId(u16::MAX);

/// Fixed facts about the host, known at activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Host sample rate; within [`SUPPORTED_RATES_HZ`].
    pub sample_rate_hz: u32,
    /// 1 (mono) or 2 (stereo).
    pub host_channels: usize,
    /// Largest block the host promised; clamped to 1..=[`MAX_BLOCK_FRAMES`].
    pub max_block_frames: usize,
}

/// How deep the jitter buffers run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JitterMode {
    /// Deep enough to cover this host's block and the sender's frame.
    Auto,
    /// A fixed amount of audio ahead, in milliseconds.
    Manual {
        /// Audio held ahead of playout.
        depth_ms: f32,
    },
}

/// Per-block controls, read from the plugin's parameters (or a test) on every call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineParams {
    /// Linear gain applied to what is sent.
    pub send_gain: f32,
    /// Send silence instead of the input.
    pub send_muted: bool,
    /// Linear gain of the dry input in the output (zero latency, never coded).
    pub monitor_gain: f32,
    /// Linear gain of the remote mix in the output.
    pub remote_gain: f32,
    /// Play our own packets back through the receive path.
    pub loopback: bool,
    /// Encoder settings.
    pub codec: CodecSettings,
    /// Jitter-buffer depth.
    pub jitter: JitterMode,
    /// Hold every receive buffer's delay where it is: a take is recorded from the outputs,
    /// and a change of delay would shift what follows on it.
    pub hold_depth: bool,
    /// Streams routed to an auxiliary output leave the main mix (otherwise they play on both).
    pub routed_leave_main: bool,
}

impl Default for EngineParams {
    fn default() -> Self {
        Self {
            send_gain: 1.0,
            send_muted: false,
            monitor_gain: 1.0,
            remote_gain: 1.0,
            loopback: false,
            codec: CodecSettings::default(),
            jitter: JitterMode::Auto,
            hold_depth: false,
            routed_leave_main: false,
        }
    }
}

/// The network side's ends of the engine's rings.
///
/// # Thread
/// Split between two threads off the audio thread: the bridge's pump thread pops `outgoing`,
/// and the session's driver task (on the network runtime) pushes `incoming` as frames arrive;
/// neither blocks.
pub struct NetworkLink {
    /// Our encoded frames, oldest first.
    pub outgoing: Consumer<PacketSlot>,
    /// Remote frames for the engine to play; `stream` says whose.
    pub incoming: Producer<PacketSlot>,
    /// The engine's counters.
    pub stats: Arc<EngineStats>,
    /// Woken by the engine after every block that produced packets: the thread that drains
    /// `outgoing` registers here and parks while the ring is empty.
    pub wake: Arc<SendWake>,
    /// What the network side lets the encoder send while a path is congested.
    pub limits: Arc<SendLimits>,
    /// The engine's clock: stamp each packet's `arrival_ns` with it as it arrives.
    pub clock: MediaClock,
}

/// Linear per-block gain ramp, so parameter moves never click.
#[derive(Debug, Clone, Copy)]
struct GainRamp {
    current: f32,
}

impl GainRamp {
    /// Gain for sample `i` of a block of `frames` is `start + step * (i + 1)`.
    fn ramp(&mut self, target: f32, frames: usize) -> (f32, f32) {
        let start = self.current;
        self.current = target;
        (start, (target - start) / frames.max(1) as f32)
    }
}

fn sane_gain(g: f32) -> f32 {
    // 8.0 = +18 dB, beyond anything the parameters offer; also stops NaN from a bad caller.
    if g.is_finite() {
        g.clamp(0.0, 8.0)
    } else {
        0.0
    }
}

/// The real-time engine.
///
/// # Thread
/// Built in `activate()` (allocates); [`Engine::process`] and [`Engine::reset`] run on the
/// audio thread and neither allocate, lock nor make system calls.
pub struct Engine {
    config: EngineConfig,
    stats: Arc<EngineStats>,
    to_net: Producer<PacketSlot>,
    /// Set when a block pushed packets; the drain thread is then woken once.
    pushed: bool,
    send_wake: Arc<SendWake>,
    limits: Arc<SendLimits>,
    from_net: Consumer<PacketSlot>,
    encoder: FrameEncoder,
    send_seq: u32,
    media_time: u64,
    /// Host input of the current block as interleaved stereo, sanitised.
    host_in: Vec<f32>,
    /// Host-rate send audio waiting for the resampler (unused at 48 kHz).
    send_in: SampleFifo,
    send_conv: Option<RateConverter>,
    /// 48 kHz send audio waiting to fill an Opus frame.
    send_fifo: SampleFifo,
    out_conv: Option<RateConverter>,
    /// Host-rate remote mix waiting to be played (unused at 48 kHz).
    out_fifo: SampleFifo,
    mix48: Vec<f32>,
    /// One stream's render before it joins the mix, for [`StemTap`]s.
    stem48: Vec<f32>,
    conv_scratch: Vec<f32>,
    /// The auxiliary outputs the host offered (none until [`Engine::enable_aux`]).
    aux: AuxOutputs,
    packet: PacketSlot,
    streams: Vec<RemoteStream>,
    loopback: RemoteStream,
    loopback_on: bool,
    send_gain: GainRamp,
    monitor_gain: GainRamp,
    remote_gain: GainRamp,
    /// The largest of the recent blocks at 48 kHz: the least delay the buffers may run at.
    recent_block: RecentMax,
    clock: MediaClock,
    /// Whether [`Engine::process`] reads `clock` (a real-time host) or keeps time by the audio
    /// rendered alone (offline runs, where a pause means nothing).
    wall_clock: bool,
    timing: HostTiming,
    /// This block's start on `clock` (0: no clock), and how long it lasts.
    now_ns: u64,
    block_ns: u64,
    /// When the host last called, on `clock`.
    last_block_at_ns: u64,
}

impl Engine {
    /// Builds an engine for `config`, with every buffer it will ever need.
    pub fn new(config: EngineConfig) -> Result<(Self, NetworkLink), EngineError> {
        if !SUPPORTED_RATES_HZ.contains(&config.sample_rate_hz) {
            return Err(EngineError::UnsupportedSampleRate(config.sample_rate_hz));
        }
        if !(1..=2).contains(&config.host_channels) {
            return Err(EngineError::UnsupportedChannels(config.host_channels));
        }
        // Blocks are processed in pieces of at most 8192 frames at 48 kHz, so a low host rate
        // does not make every buffer many times larger.
        let longest = (MAX_BLOCK_FRAMES as u64 * u64::from(config.sample_rate_hz)
            / u64::from(INTERNAL_RATE_HZ))
        .clamp(64, MAX_BLOCK_FRAMES as u64) as usize;
        let config = EngineConfig {
            max_block_frames: config.max_block_frames.clamp(1, longest),
            ..config
        };
        let max_block = config.max_block_frames;
        let rate = config.sample_rate_hz;
        let (send_conv, out_conv) = if rate == INTERNAL_RATE_HZ {
            (None, None)
        } else {
            (
                Some(RateConverter::new(
                    rate,
                    INTERNAL_RATE_HZ,
                    FixedSide::Input,
                    2,
                    max_block,
                )?),
                Some(RateConverter::new(
                    INTERNAL_RATE_HZ,
                    rate,
                    FixedSide::Output,
                    2,
                    max_block,
                )?),
            )
        };
        // Largest 48 kHz span one host block can turn into; the converters' chunks follow the
        // block, so nothing more waits or is rendered ahead.
        let block_48k = (max_block * INTERNAL_RATE_HZ as usize).div_ceil(rate as usize);
        let (conv_out_max, render_max) = match (&send_conv, &out_conv) {
            (Some(s), Some(o)) => (
                s.output_frames_max().max(o.output_frames_max()),
                o.input_frames_max(),
            ),
            _ => (0, max_block),
        };
        let stats = Arc::new(EngineStats::with_stream_slots(MAX_REMOTE_STREAMS + 1));
        let (to_net, outgoing) = RingBuffer::new(SEND_RING_SLOTS);
        let send_wake = Arc::new(SendWake::default());
        let limits = Arc::new(SendLimits::default());
        let (incoming, from_net) = RingBuffer::new(RECV_RING_SLOTS);
        let streams = (0..MAX_REMOTE_STREAMS)
            .map(|slot| RemoteStream::new(render_max, slot))
            .collect::<Result<Vec<_>, _>>()?;
        let engine = Self {
            config,
            stats: Arc::clone(&stats),
            to_net,
            pushed: false,
            send_wake: Arc::clone(&send_wake),
            limits: Arc::clone(&limits),
            from_net,
            encoder: FrameEncoder::new(CodecSettings::default())?,
            send_seq: 0,
            media_time: 0,
            host_in: vec![0.0; 2 * max_block],
            send_in: SampleFifo::with_capacity(2, 2 * max_block),
            send_conv,
            send_fifo: SampleFifo::with_capacity(
                2,
                block_48k + conv_out_max + FrameDuration::Ms20.samples(),
            ),
            out_conv,
            out_fifo: SampleFifo::with_capacity(2, 2 * max_block),
            mix48: vec![0.0; 2 * render_max],
            stem48: vec![0.0; 2 * render_max],
            conv_scratch: vec![0.0; 2 * conv_out_max],
            aux: AuxOutputs::none(),
            packet: PacketSlot::empty(),
            streams,
            loopback: RemoteStream::new(render_max, MAX_REMOTE_STREAMS)?,
            loopback_on: false,
            send_gain: GainRamp { current: 1.0 },
            monitor_gain: GainRamp { current: 1.0 },
            remote_gain: GainRamp { current: 1.0 },
            recent_block: RecentMax::default(),
            clock: MediaClock::default(),
            wall_clock: false,
            timing: HostTiming::default(),
            now_ns: 0,
            block_ns: 0,
            last_block_at_ns: 0,
        };
        let clock = engine.clock;
        Ok((
            engine,
            NetworkLink {
                outgoing,
                incoming,
                stats,
                wake: send_wake,
                limits,
                clock,
            },
        ))
    }

    /// The configuration in force (with the block size clamped).
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// The engine's counters.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// Gives the engine `buses` auxiliary stereo outputs (at most [`crate::AUX_BUSES`]), for
    /// the streams routed to them ([`EngineStats::set_stream_route`]). Allocates: call it
    /// where the engine is built, off the audio thread.
    pub fn enable_aux(&mut self, buses: usize) -> Result<(), EngineError> {
        let render_max = self.mix48.len() / 2;
        self.aux = AuxOutputs::new(
            buses,
            self.config.sample_rate_hz,
            render_max,
            self.config.max_block_frames,
        )?;
        // A fresh start for the main converter too: the buses' converters follow it exactly.
        if let Some(conv) = &mut self.out_conv {
            conv.reset();
        }
        self.out_fifo.clear();
        Ok(())
    }

    /// Auxiliary outputs in use.
    pub fn aux_buses(&self) -> usize {
        self.aux.count()
    }

    /// Samples of look-ahead Opus adds to the send path.
    pub fn codec_lookahead_samples(&mut self) -> usize {
        self.encoder.lookahead_samples()
    }

    /// Drops the host-side audio in flight, as after a transport jump. The room plays on: the
    /// remote streams keep their buffers, and the encoder, the packet counter and the media
    /// time run on, so the others' decoders hear one continuous stream.
    pub fn reset(&mut self) {
        self.send_in.clear();
        self.send_fifo.clear();
        self.out_fifo.clear();
        for conv in [&mut self.send_conv, &mut self.out_conv]
            .into_iter()
            .flatten()
        {
            conv.reset();
        }
        self.aux.reset();
        self.loopback.reset(&self.stats);
        self.loopback_on = false;
    }

    /// Rebuilds the engine for a new host configuration (a rate, block size or layout change)
    /// off the audio thread, keeping what the room knows of us: the rings to the network side
    /// and the counters (so the session and the control thread stay as they are), and the
    /// encoder with its packet counter and media time, moved on by the time the host spent
    /// between the two, so everyone hears a gap, not a new or a shifted stream.
    pub fn reactivate(&mut self, config: EngineConfig) -> Result<(), EngineError> {
        let (mut fresh, _unused) = Engine::new(config)?;
        fresh.enable_aux(self.aux.count())?;
        std::mem::swap(&mut fresh.stats, &mut self.stats);
        std::mem::swap(&mut fresh.to_net, &mut self.to_net);
        std::mem::swap(&mut fresh.from_net, &mut self.from_net);
        std::mem::swap(&mut fresh.send_wake, &mut self.send_wake);
        std::mem::swap(&mut fresh.limits, &mut self.limits);
        std::mem::swap(&mut fresh.encoder, &mut self.encoder);
        fresh.clock = self.clock;
        fresh.wall_clock = self.wall_clock;
        let away = ns_to_samples(self.clock.now_ns().saturating_sub(self.last_block_at_ns));
        fresh.media_time = self.media_time + if self.last_block_at_ns == 0 { 0 } else { away };
        fresh.send_seq = self.send_seq;
        fresh.last_block_at_ns = self.last_block_at_ns;
        for s in fresh.streams.iter_mut().chain([&mut fresh.loopback]) {
            s.reset(&fresh.stats);
        }
        fresh.stats.streams_active.store(0, Relaxed);
        *self = fresh;
        Ok(())
    }

    /// Times blocks and arrivals by the monotonic clock (one read per block), as a real-time
    /// host needs: a pause in the host's calls then costs the audio of the pause, not delay.
    /// Without it (offline runs) time is the audio rendered.
    pub fn use_wall_clock(&mut self, on: bool) {
        self.wall_clock = on;
        self.timing = HostTiming::default();
    }

    /// Processes one host block in place: `channels` holds the input on entry and the output on
    /// return. Any length works, including 0 and more than the configured maximum.
    pub fn process(&mut self, channels: &mut [&mut [f32]], params: &EngineParams) {
        self.process_tapped(channels, params, &mut NoTap);
    }

    /// [`Engine::process`], also writing each auxiliary output the host passes (`None`: not
    /// connected); a bus the engine does not have is written silent.
    pub fn process_with_aux(
        &mut self,
        channels: &mut [&mut [f32]],
        aux: &mut [Option<&mut [&mut [f32]]>],
        params: &EngineParams,
    ) {
        let now = self.clock.now_ns();
        self.last_block_at_ns = now;
        let now = if self.wall_clock { now } else { 0 };
        self.process_inner(channels, aux, params, &mut NoTap, now);
    }

    /// [`Engine::process`], also handing every stream's own audio to `tap`.
    pub fn process_tapped(
        &mut self,
        channels: &mut [&mut [f32]],
        params: &EngineParams,
        tap: &mut dyn StemTap,
    ) {
        // The one clock read of the block: for timing the host's calls, and for the time
        // spent away should the host re-activate us.
        let now = self.clock.now_ns();
        self.last_block_at_ns = now;
        let now = if self.wall_clock { now } else { 0 };
        self.process_inner(channels, &mut [], params, tap, now);
    }

    /// [`Engine::process`] for a block that starts at `now_ns` on a clock of the caller's (which
    /// also stamps the packets' `arrival_ns`): simulations and tests of a host's timing.
    pub fn process_at(&mut self, channels: &mut [&mut [f32]], params: &EngineParams, now_ns: u64) {
        self.process_inner(channels, &mut [], params, &mut NoTap, now_ns.max(1));
    }

    fn process_inner(
        &mut self,
        channels: &mut [&mut [f32]],
        aux: &mut [Option<&mut [&mut [f32]]>],
        params: &EngineParams,
        tap: &mut dyn StemTap,
        now_ns: u64,
    ) {
        let frames = channels.iter().map(|c| c.len()).min().unwrap_or(0);
        if frames == 0 {
            return;
        }
        self.now_ns = now_ns;
        self.block_ns = (frames as u64 * 1_000_000_000) / u64::from(self.config.sample_rate_hz);
        if now_ns != 0 {
            // A pause is more than the host's callback jitter can explain: 30 ms, or three of
            // its recent blocks.
            let threshold =
                (30 * INTERNAL_RATE_HZ as usize / 1000).max(3 * self.recent_block.get());
            if let Some(gap) = self.timing.gap(now_ns, threshold as u64) {
                self.host_paused(gap, params.codec.frame.samples());
            }
        }
        let params = &EngineParams {
            codec: self.limits.apply(params.codec),
            ..*params
        };
        self.encoder.apply(params.codec);
        if params.loopback != self.loopback_on {
            self.loopback_on = params.loopback;
            self.loopback.reset(&self.stats);
            if params.loopback {
                self.loopback.claim(LOOPBACK_STREAM, &self.stats);
            }
        }
        let mut offset = 0;
        while offset < frames {
            let n = (frames - offset).min(self.config.max_block_frames);
            self.process_chunk(channels, offset, n, params, &mut *tap);
            self.aux.write(aux, offset, n);
            offset += n;
        }
        if std::mem::take(&mut self.pushed) {
            self.send_wake.wake();
        }
        self.timing.rendered(
            frames as f64 * f64::from(INTERNAL_RATE_HZ) / f64::from(self.config.sample_rate_hz),
        );
    }

    /// The host did not call for `samples` (48 kHz) more than its blocks account for: what
    /// would have played meanwhile is skipped, and what we send jumps by as much, so everyone
    /// hears a gap where the pause was, at the delay they had.
    fn host_paused(&mut self, samples: u64, frame: usize) {
        for s in self.streams.iter_mut().filter(|s| s.id().is_some()) {
            s.host_paused(samples);
        }
        if self.loopback_on {
            self.loopback.host_paused(samples);
        }
        self.media_time += samples;
        self.send_seq = self
            .send_seq
            .wrapping_add((samples / frame.max(1) as u64) as u32);
        EngineStats::add(&self.stats.host_pauses, 1);
    }

    /// How long before this block's start a packet should count as seen: an arrival within a
    /// block's time counts as now (the host could not have played it sooner); one from
    /// before that came while the host was not calling, and counts from when it would have been
    /// seen.
    fn arrived_back(now_ns: u64, block_ns: u64, packet: &PacketSlot) -> u64 {
        if now_ns == 0 || packet.arrival_ns == 0 || packet.arrival_ns >= now_ns {
            return 0;
        }
        // Seen at the first block start after it arrived, on the grid the host's blocks would
        // have kept: stamps within a block are whole blocks, as for every other packet.
        let age = now_ns - packet.arrival_ns;
        let period = block_ns.max(1);
        // Ten seconds: older stamps are from another epoch, not from a pause.
        ns_to_samples(age / period * period).min(10 * u64::from(INTERNAL_RATE_HZ))
    }

    fn process_chunk(
        &mut self,
        channels: &mut [&mut [f32]],
        offset: usize,
        n: usize,
        params: &EngineParams,
        tap: &mut dyn StemTap,
    ) {
        let block_48k =
            (n * INTERNAL_RATE_HZ as usize).div_ceil(self.config.sample_rate_hz as usize);
        // A block far longer than the recent ones (a host that renders ahead for once) asks for
        // audio whose packets cannot have been made yet: it plays what is here and conceals the
        // rest without moving the schedule, and the recent blocks stay the floor of the delay.
        let floor = self.recent_block.get();
        let horizon = if self.recent_block.observe(block_48k) {
            floor
        } else {
            usize::MAX
        };
        let floor = self.recent_block.get();
        self.read_input(channels, offset, n);
        self.send(n, params);
        self.receive();
        self.render_remote(n, params, floor, horizon, tap);
        self.write_output(channels, offset, n, params);
    }

    /// Copies the host input into `host_in` as stereo, replacing non-finite samples.
    fn read_input(&mut self, channels: &[&mut [f32]], offset: usize, n: usize) {
        let left = &channels[0][offset..offset + n];
        let right = channels.get(1).map(|c| &c[offset..offset + n]);
        let clean = |s: f32| if s.is_finite() { s } else { 0.0 };
        let bad = |c: &[f32]| c.iter().filter(|s| !s.is_finite()).count() as u64;
        let mut peak = 0.0f32;
        for (i, dst) in self.host_in[..2 * n].chunks_exact_mut(2).enumerate() {
            let l = clean(left[i]);
            let r = right.map_or(l, |c| clean(c[i]));
            dst[0] = l;
            dst[1] = r;
            peak = peak.max(l.abs()).max(r.abs());
        }
        EngineStats::add(
            &self.stats.samples_sanitised,
            bad(left) + right.map_or(0, bad),
        );
        self.stats.input_peak.store(peak, Relaxed);
    }

    /// Send path: gain, resample to 48 kHz, cut into Opus frames, encode, hand to the network.
    fn send(&mut self, n: usize, params: &EngineParams) {
        let target = if params.send_muted {
            0.0
        } else {
            sane_gain(params.send_gain)
        };
        let (g0, step) = self.send_gain.ramp(target, n);
        let fifo = if self.send_conv.is_some() {
            &mut self.send_in
        } else {
            &mut self.send_fifo
        };
        let dst = fifo.push_silence(n);
        for (i, (d, s)) in dst
            .chunks_exact_mut(2)
            .zip(self.host_in.chunks_exact(2))
            .enumerate()
        {
            let g = g0 + step * (i + 1) as f32;
            d[0] = s[0] * g;
            d[1] = s[1] * g;
        }
        if let Some(conv) = &mut self.send_conv {
            // One chunk the length of the block: converted at once, nothing waits.
            conv.set_chunk(self.send_in.frames());
            while self.send_in.frames() >= conv.input_frames_next() {
                let (used, made) = conv.process(self.send_in.as_slice(), &mut self.conv_scratch);
                if used == 0 {
                    break;
                }
                self.send_in.consume(used);
                self.send_fifo.push(&self.conv_scratch[..2 * made]);
            }
        }
        let frame = params.codec.frame.samples();
        while self.send_fifo.frames() >= frame {
            let pcm = &self.send_fifo.as_slice()[..2 * frame];
            match self.encoder.encode(pcm, self.packet.buffer_mut()) {
                Ok(len) => {
                    self.packet.set_len(len);
                    self.packet.stream = StreamId(0);
                    self.packet.seq = self.send_seq;
                    self.packet.media_time = self.media_time;
                    if self.to_net.push(self.packet).is_ok() {
                        self.pushed = true;
                        EngineStats::add(&self.stats.packets_sent, 1);
                    } else {
                        EngineStats::add(&self.stats.send_ring_full, 1);
                    }
                    if self.loopback_on {
                        EngineStats::add(&self.stats.packets_received, 1);
                        self.loopback.insert(&self.packet, 0, &self.stats);
                    }
                }
                Err(_) => EngineStats::add(&self.stats.encode_errors, 1),
            }
            // Sequence and media time advance even when encoding failed, so the receiver sees
            // a gap to conceal rather than a time warp.
            self.send_seq = self.send_seq.wrapping_add(1);
            self.media_time += frame as u64;
            self.send_fifo.consume(frame);
        }
    }

    /// Moves everything the network delivered into the streams' jitter buffers, reading the
    /// ring in place so each packet is copied once, into its jitter buffer.
    fn receive(&mut self) {
        let Ok(chunk) = self.from_net.read_chunk(self.from_net.slots()) else {
            return;
        };
        let (first, second) = chunk.as_slices();
        let received = (first.len() + second.len()) as u64;
        for packet in first.iter().chain(second) {
            let slot = match self
                .streams
                .iter()
                .position(|s| s.id() == Some(packet.stream))
            {
                Some(i) => Some(i),
                None => self
                    .streams
                    .iter()
                    .position(|s| s.id().is_none())
                    .inspect(|&i| {
                        self.streams[i].claim(packet.stream, &self.stats);
                    }),
            };
            match slot {
                Some(i) => {
                    let back = Self::arrived_back(self.now_ns, self.block_ns, packet);
                    self.streams[i].insert(packet, back, &self.stats);
                }
                None => EngineStats::add(&self.stats.stream_table_full, 1),
            }
        }
        chunk.commit_all();
        EngineStats::add(&self.stats.packets_received, received);
    }

    /// Renders `n` host-rate frames of the remote mix into `mix48` (at 48 kHz) or `out_fifo`.
    fn render_remote(
        &mut self,
        n: usize,
        params: &EngineParams,
        floor: usize,
        horizon: usize,
        tap: &mut dyn StemTap,
    ) {
        let target = match params.jitter {
            JitterMode::Auto => TargetDepth::Auto,
            JitterMode::Manual { depth_ms } => TargetDepth::Samples(
                (depth_ms.clamp(0.0, MAX_DEPTH_MS as f32) * INTERNAL_RATE_HZ as f32 / 1000.0)
                    as usize,
            ),
        };
        let mut mixer = Mixer {
            streams: &mut self.streams,
            loopback: self.loopback_on.then_some(&mut self.loopback),
            stats: &self.stats,
            target,
            hold: params.hold_depth,
            // Resampling renders what the block needs, give or take the converter's fraction.
            block_48k: floor + self.out_conv.as_ref().map_or(0, |_| 2),
            horizon,
            stem: &mut self.stem48,
            aux: &mut self.aux,
            routed_leave_main: params.routed_leave_main,
        };
        match &mut self.out_conv {
            None => mixer.render(&mut self.mix48[..2 * n], tap),
            Some(conv) => {
                while self.out_fifo.frames() < n {
                    conv.set_chunk(n - self.out_fifo.frames());
                    let need = conv.input_frames_next();
                    mixer.render(&mut self.mix48[..2 * need], &mut *tap);
                    mixer.horizon = mixer.horizon.saturating_sub(need);
                    let chunk = n - self.out_fifo.frames();
                    let (_, made) = conv.process(&self.mix48[..2 * need], &mut self.conv_scratch);
                    if made == 0 {
                        break;
                    }
                    self.out_fifo.push(&self.conv_scratch[..2 * made]);
                    mixer.aux.convert(chunk, need, &mut self.conv_scratch);
                }
            }
        }
        let active = self.streams.iter().filter(|s| s.id().is_some()).count();
        self.stats.streams_active.store(active as u32, Relaxed);
    }

    /// Output = dry input × monitor + remote mix × remote level, written back to the host.
    fn write_output(
        &mut self,
        channels: &mut [&mut [f32]],
        offset: usize,
        n: usize,
        params: &EngineParams,
    ) {
        let (m0, m_step) = self.monitor_gain.ramp(sane_gain(params.monitor_gain), n);
        let (r0, r_step) = self.remote_gain.ramp(sane_gain(params.remote_gain), n);
        let mix: &[f32] = if self.out_conv.is_some() {
            let got = self.out_fifo.frames().min(n);
            &self.out_fifo.as_slice()[..2 * got]
        } else {
            &self.mix48[..2 * n]
        };
        let mut peak = 0.0f32;
        for i in 0..n {
            let m = m0 + m_step * (i + 1) as f32;
            let r = r0 + r_step * (i + 1) as f32;
            let remote = |c: usize| mix.get(2 * i + c).copied().unwrap_or(0.0);
            let l = self.host_in[2 * i] * m + remote(0) * r;
            let rr = self.host_in[2 * i + 1] * m + remote(1) * r;
            match channels {
                [mono] => mono[offset + i] = 0.5 * (l + rr),
                [left, right, ..] => {
                    left[offset + i] = l;
                    right[offset + i] = rr;
                }
                [] => {}
            }
            peak = peak.max(l.abs()).max(rr.abs());
        }
        if self.out_conv.is_some() {
            self.out_fifo.consume(n);
        }
        self.stats.output_peak.store(peak, Relaxed);
    }
}
