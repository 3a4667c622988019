//! Congestion control for a constant, low-rate media flow.
//!
//! quinn's default controller (NewReno, as Cubic and BBR) reads every lost packet as
//! congestion. On Wi-Fi, loss is mostly random: the window then shrinks below the audio's own
//! rate, datagrams wait in quinn's queue and leave late or not at all, and the longer the
//! round trip the worse it gets. [`MediaController`] instead:
//!
//! - never holds the media flow: the window is always at least what the steady send rate needs
//!   in flight (rate × a few round trips, plus the time lost packets stay counted before loss
//!   detection gives up on them), whatever is lost;
//! - limits everything above that (reliable bulk data: a large document sync) by queueing
//!   delay, as LEDBAT does: it grows while the round trip stays near its recent minimum and
//!   backs off when a queue builds — random loss does not move it;
//! - reports queueing delay through a [`CongestionSignal`], so the sender can ask its encoder
//!   for less (a lower bitrate, then longer frames) instead of queueing audio.

use std::any::Any;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::congestion::{Controller, ControllerFactory};
use quinn_proto::RttEstimator;
use std::time::Instant;

/// Queueing delay the bulk window aims below: under it the path is treated as uncongested
/// (LEDBAT's target, RFC 6817, is 100 ms; live audio cannot afford that much).
pub const TARGET_QUEUE_DELAY: Duration = Duration::from_millis(25);
/// The smallest window: a few datagrams in flight on any path.
const MIN_WINDOW: u64 = 16 * 1024;
/// The bulk window starts here (quinn's initial window is about 14 kB).
const INITIAL_BULK_WINDOW: u64 = 32 * 1024;
const MAX_BULK_WINDOW: u64 = 8 * 1024 * 1024;
/// The send rate is measured in buckets this long; the floor follows the smallest of the last
/// few, so a burst of bulk data does not raise the floor meant for the steady flow.
const RATE_BUCKET: Duration = Duration::from_millis(250);
const RATE_BUCKETS: usize = 4;
/// The base (minimum) round trip is the smallest sample of the last few windows this long,
/// so a route change to a longer path is learnt within a minute.
const BASE_RTT_WINDOW: Duration = Duration::from_secs(10);
const BASE_RTT_WINDOWS: usize = 6;
/// The floor covers the send rate over this many round trips (the trip itself, loss
/// detection's wait, margin) plus [`FLOOR_SLACK`] for delay that wanders, doubled.
const FLOOR_RTTS: u32 = 3;
const FLOOR_SLACK: Duration = Duration::from_millis(200);

/// What a connection's controller has learnt about its path, for the sender to act on.
///
/// # Thread
/// Written by the network thread (inside quinn), read by any.
#[derive(Debug, Default)]
pub struct CongestionSignal {
    /// The largest queueing delay (smoothed round trip minus the base round trip) any path
    /// reported since it was last taken, µs.
    queue_delay_us: AtomicU32,
    /// The largest the listeners report our audio meets on its way to them (a queue on their
    /// side that our controllers cannot see), µs: as it stands, not a peak.
    reported_us: AtomicU32,
}

impl CongestionSignal {
    /// The largest queueing delay on any path since the last [`Self::take_peak`] (how far a
    /// round trip was above its recent minimum), or the listeners report, if more.
    pub fn queue_delay(&self) -> Duration {
        let own = self.queue_delay_us.load(Relaxed);
        Duration::from_micros(u64::from(own.max(self.reported_us.load(Relaxed))))
    }

    /// [`Self::queue_delay`], starting the next period of our own paths' from zero.
    pub fn take_peak(&self) -> Duration {
        let own = self.queue_delay_us.swap(0, Relaxed);
        Duration::from_micros(u64::from(own.max(self.reported_us.load(Relaxed))))
    }

    /// What the listeners now report our audio queues on its way to them, at worst.
    pub fn set_reported(&self, queue: Duration) {
        let us = queue.as_micros().min(u128::from(u32::MAX)) as u32;
        self.reported_us.store(us, Relaxed);
    }
}

/// Builds a [`MediaController`] per connection, each reporting to the same signal (the
/// connections of one session: relay and direct paths).
#[derive(Debug, Default, Clone)]
pub struct MediaControllerFactory {
    signal: Arc<CongestionSignal>,
}

impl MediaControllerFactory {
    /// A factory whose controllers report to `signal`.
    pub fn new(signal: Arc<CongestionSignal>) -> Self {
        Self { signal }
    }
}

impl ControllerFactory for MediaControllerFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(MediaController::new(self.signal.clone(), now, current_mtu))
    }
}

/// The smallest value seen in each of the last few windows of time.
#[derive(Debug, Clone)]
struct WindowedMin {
    window: Duration,
    /// (window start, smallest in it), newest last.
    slots: Vec<(Instant, Duration)>,
}

impl WindowedMin {
    fn new(window: Duration) -> Self {
        Self {
            window,
            slots: Vec::with_capacity(BASE_RTT_WINDOWS),
        }
    }

    fn push(&mut self, now: Instant, sample: Duration) {
        match self.slots.last_mut() {
            Some((start, min)) if now.saturating_duration_since(*start) < self.window => {
                *min = (*min).min(sample);
            }
            _ => {
                if self.slots.len() == BASE_RTT_WINDOWS {
                    self.slots.remove(0);
                }
                self.slots.push((now, sample));
            }
        }
    }

    fn get(&self) -> Option<Duration> {
        self.slots.iter().map(|(_, m)| *m).min()
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct MediaController {
    signal: Arc<CongestionSignal>,
    mtu: u64,
    /// Bytes sent in each recent rate bucket, newest last, and when the current one began.
    buckets: [u64; RATE_BUCKETS],
    bucket_start: Instant,
    /// Round-trip samples (ack time − send time).
    base_rtt: WindowedMin,
    smoothed_rtt: Option<Duration>,
    /// Largest smoothed round trip quinn reports, for the floor.
    conservative_rtt: Duration,
    bulk_window: u64,
    /// Bulk bytes acknowledged since the bulk window last grew.
    acked_bytes: u64,
    last_backoff: Option<Instant>,
}

impl MediaController {
    /// A controller for a new connection.
    pub fn new(signal: Arc<CongestionSignal>, now: Instant, mtu: u16) -> Self {
        Self {
            signal,
            mtu: u64::from(mtu),
            buckets: [0; RATE_BUCKETS],
            bucket_start: now,
            base_rtt: WindowedMin::new(BASE_RTT_WINDOW),
            smoothed_rtt: None,
            conservative_rtt: Duration::from_millis(100),
            bulk_window: INITIAL_BULK_WINDOW,
            acked_bytes: 0,
            last_backoff: None,
        }
    }

    /// Steady send rate, bytes per second: the quietest recent bucket.
    fn steady_rate(&self) -> f64 {
        let min = self.buckets[..RATE_BUCKETS - 1]
            .iter()
            .copied()
            .min()
            .unwrap_or(0);
        min as f64 / RATE_BUCKET.as_secs_f64()
    }

    /// What the steady flow needs in flight, never held back by loss.
    fn media_floor(&self) -> u64 {
        let span = self.conservative_rtt * FLOOR_RTTS + FLOOR_SLACK;
        let need = 2.0 * self.steady_rate() * span.as_secs_f64();
        (need as u64 + 4 * self.mtu).max(MIN_WINDOW)
    }

    fn queue_delay(&self) -> Option<Duration> {
        Some(self.smoothed_rtt?.saturating_sub(self.base_rtt.get()?))
    }

    /// An acknowledgement of `bytes` sent at `sent`; `conservative_rtt` is quinn's estimate.
    fn acked(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        conservative_rtt: Duration,
    ) {
        let sample = now.saturating_duration_since(sent);
        self.base_rtt.push(now, sample);
        self.smoothed_rtt = Some(match self.smoothed_rtt {
            // An eighth per sample, as RFC 6298's SRTT.
            Some(s) => (s * 7 + sample) / 8,
            None => sample,
        });
        self.conservative_rtt = conservative_rtt;
        if app_limited {
            return;
        }
        if self.queue_delay().is_some_and(|q| q < TARGET_QUEUE_DELAY) {
            // About one datagram more per window's worth acknowledged: one per round trip.
            self.acked_bytes += bytes;
            if self.acked_bytes >= self.bulk_window {
                self.acked_bytes -= self.bulk_window;
                self.bulk_window = (self.bulk_window + self.mtu).min(MAX_BULK_WINDOW);
            }
        }
    }

    fn roll_buckets(&mut self, now: Instant) {
        let mut elapsed = now.saturating_duration_since(self.bucket_start);
        let mut n = 0;
        while elapsed >= RATE_BUCKET && n < RATE_BUCKETS {
            self.buckets.rotate_left(1);
            self.buckets[RATE_BUCKETS - 1] = 0;
            elapsed -= RATE_BUCKET;
            n += 1;
        }
        if n == RATE_BUCKETS {
            self.bucket_start = now;
        } else {
            self.bucket_start += RATE_BUCKET * n as u32;
        }
    }
}

impl Controller for MediaController {
    fn on_sent(&mut self, now: Instant, bytes: u64, _last_packet_number: u64) {
        self.roll_buckets(now);
        self.buckets[RATE_BUCKETS - 1] += bytes;
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.acked(now, sent, bytes, app_limited, rtt.conservative());
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        _in_flight: u64,
        _app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        let Some(queue) = self.queue_delay() else {
            return;
        };
        self.signal
            .queue_delay_us
            .fetch_max(queue.as_micros().min(u128::from(u32::MAX)) as u32, Relaxed);
        let srtt = self.smoothed_rtt.unwrap_or_default();
        let due = self
            .last_backoff
            .is_none_or(|t| now.saturating_duration_since(t) >= srtt);
        if queue > TARGET_QUEUE_DELAY && due {
            self.bulk_window = (self.bulk_window * 7 / 10).max(MIN_WINDOW);
            self.last_backoff = Some(now);
        }
    }

    fn on_congestion_event(
        &mut self,
        _now: Instant,
        _sent: Instant,
        is_persistent_congestion: bool,
        _lost_bytes: u64,
    ) {
        // Random loss is no sign of a queue; only a path that lost everything for several
        // probe timeouts starts the bulk window over.
        if is_persistent_congestion {
            self.bulk_window = MIN_WINDOW;
            self.acked_bytes = 0;
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
    }

    fn window(&self) -> u64 {
        self.media_floor().max(self.bulk_window)
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        INITIAL_BULK_WINDOW
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A 2.5 ms stream of 100-byte datagrams for `seconds`, every one acknowledged one round
    /// trip later (or lost, every `lose_every`-th): the window at the end.
    fn stream(c: &mut MediaController, t0: Instant, seconds: u64, rtt: Duration, lose_every: u64) {
        for i in 0..seconds * 400 {
            let now = t0 + Duration::from_micros(2500 * i);
            c.on_sent(now, 100, i);
            if lose_every > 0 && i % lose_every == 0 {
                c.on_congestion_event(now + rtt, now, false, 100);
            } else {
                c.acked(now + rtt, now, 100, true, rtt);
                c.on_end_acks(now + rtt, 0, true, Some(i));
            }
        }
    }

    #[test]
    fn random_loss_never_shrinks_the_window_below_what_the_stream_needs() {
        let t0 = Instant::now();
        let signal = Arc::new(CongestionSignal::default());
        let mut clean = MediaController::new(signal.clone(), t0, 1200);
        stream(&mut clean, t0, 5, ms(60), 0);
        let mut lossy = MediaController::new(signal.clone(), t0, 1200);
        stream(&mut lossy, t0, 5, ms(60), 3);
        // 40 kB/s over three 60 ms round trips and the slack, doubled: ~30 kB.
        let need = 40_000.0 * 0.38;
        for c in [&clean, &lossy] {
            assert!(c.window() as f64 >= 2.0 * need, "window {}", c.window());
        }
        assert_eq!(clean.window(), lossy.window());
        assert!(signal.queue_delay() < ms(1));
    }

    #[test]
    fn a_growing_queue_backs_the_bulk_window_off_and_is_reported() {
        let t0 = Instant::now();
        let signal = Arc::new(CongestionSignal::default());
        let mut c = MediaController::new(signal.clone(), t0, 1200);
        let mut now = t0;
        // Bulk transfer on an idle path: the window grows.
        for i in 0..2000 {
            now = t0 + ms(i);
            c.on_sent(now, 1200, i);
            c.acked(now + ms(30), now, 1200, false, ms(30));
            c.on_end_acks(now + ms(30), 0, false, Some(i));
        }
        let grown = c.bulk_window;
        assert!(grown > INITIAL_BULK_WINDOW, "{grown}");
        // Then the round trip climbs by 80 ms: a queue.
        for i in 2000..3000 {
            now = t0 + ms(i);
            c.on_sent(now, 1200, i);
            c.acked(now + ms(110), now, 1200, false, ms(110));
            c.on_end_acks(now + ms(110), 0, false, Some(i));
        }
        assert!(c.bulk_window < grown / 4, "{} of {grown}", c.bulk_window);
        assert!(signal.queue_delay() > ms(60), "{:?}", signal.queue_delay());
        // Losses alone leave it where it is.
        let before = c.bulk_window;
        c.on_congestion_event(now, now, false, 12_000);
        assert_eq!(c.bulk_window, before);
        c.on_congestion_event(now, now, true, 12_000);
        assert_eq!(c.bulk_window, MIN_WINDOW);
    }

    #[test]
    fn the_base_round_trip_forgets_an_old_path() {
        let t0 = Instant::now();
        let mut m = WindowedMin::new(ms(100));
        m.push(t0, ms(10));
        for i in 1..6 {
            m.push(t0 + ms(50 * i), ms(40));
        }
        assert_eq!(m.get(), Some(ms(10)));
        for i in 6..40 {
            m.push(t0 + ms(50 * i), ms(40));
        }
        assert_eq!(m.get(), Some(ms(40)));
    }
}
