//! Limits the network side puts on the encoder while a path is congested: it asks for less
//! (a lower bitrate, then longer frames, which carry fewer header bytes per second) instead of
//! letting frames queue.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};

use crate::codec::{CodecSettings, FrameDuration};

const FRAMES: [FrameDuration; 4] = [
    FrameDuration::Ms2_5,
    FrameDuration::Ms5,
    FrameDuration::Ms10,
    FrameDuration::Ms20,
];

/// A bitrate ceiling and a shortest frame, on top of the musician's own settings.
///
/// # Thread
/// Written by the network side; read with two atomic loads per block on the audio thread.
#[derive(Debug)]
pub struct SendLimits {
    bitrate_ceiling_bps: AtomicU32,
    /// Index into the frame durations, shortest first.
    shortest_frame: AtomicU8,
}

impl Default for SendLimits {
    fn default() -> Self {
        Self {
            bitrate_ceiling_bps: AtomicU32::new(u32::MAX),
            shortest_frame: AtomicU8::new(0),
        }
    }
}

impl SendLimits {
    /// Caps the bitrate at `ceiling_bps` and makes frames at least `shortest` long.
    pub fn set(&self, ceiling_bps: u32, shortest: FrameDuration) {
        let i = FRAMES.iter().position(|f| *f == shortest).unwrap_or(0);
        self.bitrate_ceiling_bps.store(ceiling_bps, Relaxed);
        self.shortest_frame.store(i as u8, Relaxed);
    }

    /// No limits: the musician's settings as they are.
    pub fn clear(&self) {
        self.set(u32::MAX, FrameDuration::Ms2_5);
    }

    /// `codec` within the limits.
    pub fn apply(&self, codec: CodecSettings) -> CodecSettings {
        let shortest = FRAMES[usize::from(self.shortest_frame.load(Relaxed)).min(FRAMES.len() - 1)];
        CodecSettings {
            bitrate_bps: codec
                .bitrate_bps
                .min(self.bitrate_ceiling_bps.load(Relaxed)),
            frame: if codec.frame.samples() < shortest.samples() {
                shortest
            } else {
                codec.frame
            },
            ..codec
        }
    }

    /// The limits in force: (bitrate ceiling, shortest frame).
    pub fn current(&self) -> (u32, FrameDuration) {
        let i = usize::from(self.shortest_frame.load(Relaxed)).min(FRAMES.len() - 1);
        (self.bitrate_ceiling_bps.load(Relaxed), FRAMES[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_only_ever_ask_for_less() {
        let l = SendLimits::default();
        let mine = CodecSettings {
            bitrate_bps: 128_000,
            frame: FrameDuration::Ms5,
            ..CodecSettings::default()
        };
        assert_eq!(l.apply(mine), mine);
        l.set(64_000, FrameDuration::Ms2_5);
        assert_eq!(l.apply(mine).bitrate_bps, 64_000);
        assert_eq!(l.apply(mine).frame, FrameDuration::Ms5);
        l.set(256_000, FrameDuration::Ms10);
        assert_eq!(l.apply(mine).bitrate_bps, 128_000);
        assert_eq!(l.apply(mine).frame, FrameDuration::Ms10);
        l.clear();
        assert_eq!(l.apply(mine), mine);
    }
}
