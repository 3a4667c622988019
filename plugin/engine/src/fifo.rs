//! A preallocated FIFO of interleaved samples that always hands out one contiguous slice, which
//! is what Opus and rubato want. Consuming shifts the remainder down; the FIFOs here hold at most
//! a few thousand samples, so the copy is cheaper than the bookkeeping of a split ring.

/// Interleaved sample FIFO with a fixed capacity.
///
/// # Thread
/// Owned by the audio thread; nothing here allocates after [`SampleFifo::with_capacity`].
#[derive(Debug, Clone)]
pub struct SampleFifo {
    buf: Vec<f32>,
    len: usize,
    channels: usize,
}

impl SampleFifo {
    /// Room for `frames` frames of `channels` channels.
    pub fn with_capacity(channels: usize, frames: usize) -> Self {
        Self {
            buf: vec![0.0; channels * frames],
            len: 0,
            channels,
        }
    }

    /// Frames currently held.
    pub fn frames(&self) -> usize {
        self.len / self.channels
    }

    /// Frames that can still be pushed.
    pub fn free_frames(&self) -> usize {
        (self.buf.len() - self.len) / self.channels
    }

    /// All held samples, oldest first.
    pub fn as_slice(&self) -> &[f32] {
        &self.buf[..self.len]
    }

    /// All held samples, oldest first, to be changed in place.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }

    /// Channels per frame.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Makes room for `frames` frames at frame `at`, moving what follows along (the new frames
    /// hold stale samples for the caller to write). False, and nothing moved, without room.
    pub fn open_gap(&mut self, at: usize, frames: usize) -> bool {
        let (at, n) = (at * self.channels, frames * self.channels);
        if at > self.len || self.len + n > self.buf.len() {
            return false;
        }
        self.buf.copy_within(at..self.len, at + n);
        self.len += n;
        true
    }

    /// Appends as many whole frames of `samples` as fit; returns the frames appended.
    pub fn push(&mut self, samples: &[f32]) -> usize {
        let frames = (samples.len() / self.channels).min(self.free_frames());
        let n = frames * self.channels;
        self.buf[self.len..self.len + n].copy_from_slice(&samples[..n]);
        self.len += n;
        frames
    }

    /// Appends `frames` frames of silence (or as many as fit) and returns the writable slice
    /// so a producer can fill it in place.
    pub fn push_silence(&mut self, frames: usize) -> &mut [f32] {
        let n = frames.min(self.free_frames()) * self.channels;
        let start = self.len;
        self.buf[start..start + n].fill(0.0);
        self.len += n;
        &mut self.buf[start..start + n]
    }

    /// Free space for up to `frames` frames, for a producer to write in place; follow with
    /// [`Self::commit`].
    pub fn spare_mut(&mut self, frames: usize) -> &mut [f32] {
        let n = frames.min(self.free_frames()) * self.channels;
        &mut self.buf[self.len..self.len + n]
    }

    /// Marks `frames` frames written through [`Self::spare_mut`] as held.
    pub fn commit(&mut self, frames: usize) {
        self.len = (self.len + frames * self.channels).min(self.buf.len());
    }

    /// Drops the oldest `frames` frames (or all).
    pub fn consume(&mut self, frames: usize) {
        let n = (frames * self.channels).min(self.len);
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Moves the oldest `dst.len() / channels` frames into `dst`; returns the frames moved.
    pub fn pop_into(&mut self, dst: &mut [f32]) -> usize {
        let frames = (dst.len() / self.channels).min(self.frames());
        let n = frames * self.channels;
        dst[..n].copy_from_slice(&self.buf[..n]);
        self.consume(frames);
        frames
    }

    /// Empties the FIFO.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the push/pop pattern, samples come out in order and none are invented.
        #[test]
        fn keeps_order_and_capacity(ops in proptest::collection::vec((0usize..40, 0usize..40), 1..60)) {
            let mut fifo = SampleFifo::with_capacity(2, 50);
            let mut next_in = 0.0f32;
            let mut next_out = 0.0f32;
            for (push, pop) in ops {
                let src: Vec<f32> = (0..push * 2).map(|i| next_in + i as f32).collect();
                let pushed = fifo.push(&src);
                next_in += (pushed * 2) as f32;
                prop_assert!(fifo.frames() <= 50);
                let mut dst = vec![-1.0; pop * 2];
                let popped = fifo.pop_into(&mut dst);
                for &s in &dst[..popped * 2] {
                    prop_assert_eq!(s, next_out);
                    next_out += 1.0;
                }
            }
        }
    }
}
