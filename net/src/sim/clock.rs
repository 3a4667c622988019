//! The room's clock checked in the simulator: each receiver follows each sender's clock as a
//! session does, and the run notes how far from the truth that puts the frames.

use std::time::Instant;

use super::world::World;

impl World {
    /// Puts the sender's frame on the receiver's clock (virtual time since the start, in 48
    /// kHz samples) as a session does, the one-way delay from its route's round trips, and in
    /// the settled tail notes how far that is from when the frame was sent.
    pub(super) fn clock_check(&mut self, sender: usize, i: usize, media: u64, sent_at: Instant) {
        let samples = |t: Instant| t.duration_since(self.start).as_secs_f64() * 48_000.0;
        let frame = (self.config.frame.as_secs_f64() * 48_000.0) as u64;
        let arrival = samples(self.now) as u64;
        // Half a direct path's round trip; by the relay, half of each end's round trip to it.
        // By the pair's way, as a session takes its route's: a doubled stream's faster copies
        // come by the direct path.
        let link = |l: &super::link::LinkConfig| l.delay.as_secs_f64() * 48_000.0;
        let direct = self.paths.contains_key(&(i, sender)) || self.paths.contains_key(&(sender, i));
        let one_way = if direct {
            link(
                self.config
                    .direct_link
                    .as_ref()
                    .unwrap_or(&self.config.link),
            )
        } else {
            2.0 * link(&self.config.link)
        };
        let tail = self.in_tail(sent_at);
        let sent = samples(sent_at);
        let track = self.clocks.entry((i, sender)).or_default();
        track.observe(media + frame, arrival);
        if let (true, Some(map)) = (tail, track.map(one_way)) {
            let err = map.ours(media + frame) - sent;
            self.clock_error = self.clock_error.max(err.abs());
        }
    }
}
