//! Fixed-capacity packet slots: the only thing that crosses between the audio thread and the
//! network thread, so it must never own heap memory.

use thiserror::Error;

/// Largest Opus packet for one frame: RFC 6716 §3.2.1 caps a frame at 1275 bytes.
pub const MAX_OPUS_PACKET_BYTES: usize = 1275;

/// Which remote stream a packet belongs to. The network side assigns these; the engine only
/// uses them to keep one jitter buffer and one decoder per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(pub u16);

/// One encoded Opus frame with its stream position, stored inline.
///
/// # Thread
/// Built on the audio thread (outgoing) or the network thread (incoming) and moved through an
/// `rtrb` ring; `Copy`, so moving it never allocates.
#[derive(Clone, Copy)]
pub struct PacketSlot {
    /// Stream the packet belongs to.
    pub stream: StreamId,
    /// Sender's packet counter; wraps.
    pub seq: u32,
    /// Position of the packet's first sample in the sender's stream, in 48 kHz samples.
    pub media_time: u64,
    /// When it arrived, on the receiving engine's [`crate::MediaClock`]; 0 if unknown (then
    /// it counts as arriving when the engine takes it).
    pub arrival_ns: u64,
    /// Counts the times a shorter way from the sender opened (a direct path came up, or
    /// carries again after going quiet); wraps. A change tells the jitter buffer that what it
    /// learned of the path describes the old one.
    pub path_epoch: u8,
    len: u16,
    bytes: [u8; MAX_OPUS_PACKET_BYTES],
}

/// A payload longer than [`MAX_OPUS_PACKET_BYTES`].
#[derive(Debug, Error, PartialEq, Eq)]
#[error("packet payload is {0} bytes; an Opus frame is at most {MAX_OPUS_PACKET_BYTES}")]
pub struct PayloadTooLarge(pub usize);

impl PacketSlot {
    /// A slot holding a copy of `payload`.
    pub fn new(
        stream: StreamId,
        seq: u32,
        media_time: u64,
        payload: &[u8],
    ) -> Result<Self, PayloadTooLarge> {
        let mut slot = Self::empty();
        slot.stream = stream;
        slot.seq = seq;
        slot.media_time = media_time;
        slot.set_payload(payload)?;
        Ok(slot)
    }

    /// A slot with no payload.
    pub const fn empty() -> Self {
        Self {
            stream: StreamId(0),
            seq: 0,
            media_time: 0,
            arrival_ns: 0,
            path_epoch: 0,
            len: 0,
            bytes: [0; MAX_OPUS_PACKET_BYTES],
        }
    }

    /// Replaces the payload.
    pub fn set_payload(&mut self, payload: &[u8]) -> Result<(), PayloadTooLarge> {
        let dst = self
            .bytes
            .get_mut(..payload.len())
            .ok_or(PayloadTooLarge(payload.len()))?;
        dst.copy_from_slice(payload);
        // Fits: the slice above proved len <= MAX_OPUS_PACKET_BYTES < u16::MAX.
        self.len = payload.len() as u16;
        Ok(())
    }

    /// Makes `self` a copy of `other`, touching only the payload bytes in use: a slot is 1.3 kB
    /// but a low-delay frame is typically under 100 bytes.
    pub fn copy_from(&mut self, other: &PacketSlot) {
        self.stream = other.stream;
        self.seq = other.seq;
        self.media_time = other.media_time;
        self.arrival_ns = other.arrival_ns;
        self.path_epoch = other.path_epoch;
        self.len = other.len;
        let n = usize::from(other.len);
        self.bytes[..n].copy_from_slice(&other.bytes[..n]);
    }

    /// The encoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whole buffer for an encoder to write into; follow with [`Self::set_len`].
    pub(crate) fn buffer_mut(&mut self) -> &mut [u8; MAX_OPUS_PACKET_BYTES] {
        &mut self.bytes
    }

    /// Sets how many bytes of the buffer are payload (clamped to the capacity).
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len.min(MAX_OPUS_PACKET_BYTES) as u16;
    }
}

impl Default for PacketSlot {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for PacketSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSlot")
            .field("stream", &self.stream)
            .field("seq", &self.seq)
            .field("media_time", &self.media_time)
            .field("len", &self.len)
            .finish()
    }
}

/// Samples per channel at 48 kHz that an Opus packet holds, read from its table-of-contents
/// byte; `None` if it is not a valid Opus packet.
pub fn opus_packet_samples(payload: &[u8]) -> Option<usize> {
    opus::packet::get_nb_samples(payload, crate::INTERNAL_RATE_HZ).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_oversize_is_refused() {
        let slot = PacketSlot::new(StreamId(3), 7, 960, &[1, 2, 3]).unwrap();
        assert_eq!(slot.payload(), &[1, 2, 3]);
        assert_eq!(slot.stream, StreamId(3));
        let big = vec![0u8; MAX_OPUS_PACKET_BYTES + 1];
        assert_eq!(
            PacketSlot::new(StreamId(0), 0, 0, &big).unwrap_err(),
            PayloadTooLarge(MAX_OPUS_PACKET_BYTES + 1)
        );
        let full = vec![9u8; MAX_OPUS_PACKET_BYTES];
        assert_eq!(
            PacketSlot::new(StreamId(0), 0, 0, &full)
                .unwrap()
                .payload()
                .len(),
            MAX_OPUS_PACKET_BYTES
        );
    }
}
