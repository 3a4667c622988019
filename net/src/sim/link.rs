//! A simulated one-way path: delay, jitter, a slowly wandering queueing delay, random and bursty
//! loss, reordering, duplication and a rate cap with a bounded queue; and, for the reliable
//! control stream, loss turned into retransmission delay.

use std::time::{Duration, Instant};

use super::rng::DangerSeededRng;

/// How a path behaves.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// One-way base delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]` per packet (so packets may overtake each other).
    pub jitter: Duration,
    /// A queueing delay that wanders slowly within `[0, wander]`.
    pub wander: Duration,
    /// Share of datagrams lost.
    pub loss: f64,
    /// Mean length of a loss burst (1: independent losses; Gilbert–Elliott above).
    pub burst: f64,
    /// Share of datagrams delivered twice.
    pub duplicate: f64,
    /// Share of datagrams held back by `reorder_by`, so those behind overtake them.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_by: Duration,
    /// Bytes per second the path carries (0: no cap). Datagrams that would wait longer than
    /// `queue` behind earlier traffic are dropped; reliable messages wait their turn.
    pub rate: u64,
    /// The longest a datagram queues at the rate cap.
    pub queue: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(15),
            jitter: Duration::from_millis(5),
            wander: Duration::from_millis(10),
            loss: 0.05,
            burst: 2.0,
            duplicate: 0.01,
            reorder: 0.02,
            reorder_by: Duration::from_millis(15),
            rate: 256_000,
            queue: Duration::from_millis(50),
        }
    }
}

impl LinkConfig {
    /// The longest a datagram that arrives can take.
    pub fn worst_datagram(&self) -> Duration {
        let queue = if self.rate == 0 {
            Duration::ZERO
        } else {
            // The queue, plus the largest datagram's own time on the wire.
            self.queue + Duration::from_secs_f64(1500.0 / self.rate as f64)
        };
        self.delay + self.jitter + self.wander + self.reorder_by + queue
    }
}

/// One direction of one path.
#[derive(Debug, Clone)]
pub struct Link {
    config: LinkConfig,
    /// In the Gilbert–Elliott bad state: everything is lost.
    bad: bool,
    /// The wandering delay, now.
    wander: Duration,
    /// The rate cap is busy sending earlier traffic until then.
    busy_until: Option<Instant>,
}

impl Link {
    /// A path behaving as `config` says.
    pub fn new(config: LinkConfig) -> Self {
        Self {
            config,
            bad: false,
            wander: Duration::ZERO,
            busy_until: None,
        }
    }

    fn step_loss(&mut self, rng: &mut DangerSeededRng) -> bool {
        let c = &self.config;
        let loss = c.loss.clamp(0.0, 0.99);
        if loss == 0.0 {
            return false;
        }
        let leave_bad = 1.0 / c.burst.max(1.0);
        let enter_bad = (loss * leave_bad / (1.0 - loss)).min(1.0);
        self.bad = if self.bad {
            !rng.chance(leave_bad)
        } else {
            rng.chance(enter_bad)
        };
        self.bad
    }

    /// Base delay, jitter and the wandering part (a bounded random walk, a fiftieth of its
    /// range per packet).
    fn one_way(&mut self, rng: &mut DangerSeededRng) -> Duration {
        let c = self.config;
        let step = c.wander.as_secs_f64() / 50.0 * (2.0 * rng.unit() - 1.0);
        let wander = (self.wander.as_secs_f64() + step).clamp(0.0, c.wander.as_secs_f64());
        self.wander = Duration::from_secs_f64(wander);
        let jitter = c.jitter.as_secs_f64() * rng.unit();
        c.delay + self.wander + Duration::from_secs_f64(jitter)
    }

    /// Time spent at the rate cap by `bytes` sent at `now`, or `None` if a datagram would wait
    /// too long (dropped); reliable messages always get a slot.
    fn queue(&mut self, now: Instant, bytes: usize, reliable: bool) -> Option<Duration> {
        if self.config.rate == 0 {
            return Some(Duration::ZERO);
        }
        let start = self.busy_until.map_or(now, |b| b.max(now));
        if !reliable && start - now > self.config.queue {
            return None;
        }
        let done = start + Duration::from_secs_f64(bytes as f64 / self.config.rate as f64);
        self.busy_until = Some(done);
        Some(done - now)
    }

    /// A datagram's fate: the delays of the copies that arrive (none, one, or two).
    pub fn datagram(
        &mut self,
        now: Instant,
        bytes: usize,
        rng: &mut DangerSeededRng,
    ) -> Vec<Duration> {
        if self.step_loss(rng) {
            return Vec::new();
        }
        let Some(queued) = self.queue(now, bytes, false) else {
            return Vec::new();
        };
        let held = if rng.chance(self.config.reorder) {
            self.config.reorder_by
        } else {
            Duration::ZERO
        };
        let mut copies = vec![queued + held + self.one_way(rng)];
        if rng.chance(self.config.duplicate) {
            copies.push(queued + self.one_way(rng));
        }
        copies
    }

    /// How long a message on a reliable stream takes: its turn at the rate cap, and each loss
    /// of it a retransmission timeout (about three one-way delays), bounded so a bad stretch
    /// cannot stall it forever.
    pub fn reliable(&mut self, now: Instant, bytes: usize, rng: &mut DangerSeededRng) -> Duration {
        let mut d = self.queue(now, bytes, true).unwrap_or_default() + self.one_way(rng);
        for _ in 0..8 {
            if !self.step_loss(rng) {
                break;
            }
            d += self.config.delay * 3;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> LinkConfig {
        LinkConfig {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            ..LinkConfig::default()
        }
    }

    #[test]
    fn loss_share_and_burst_length_are_what_was_asked() {
        let mut rng = DangerSeededRng::new(7);
        let mut link = Link::new(LinkConfig {
            loss: 0.1,
            burst: 3.0,
            duplicate: 0.0,
            rate: 0,
            ..LinkConfig::default()
        });
        let now = Instant::now();
        let fates: Vec<bool> = (0..100_000)
            .map(|_| link.datagram(now, 100, &mut rng).is_empty())
            .collect();
        let lost = fates.iter().filter(|l| **l).count() as f64 / fates.len() as f64;
        assert!((lost - 0.1).abs() < 0.01, "lost {lost}");
        let bursts = fates.windows(2).filter(|w| w[1] && !w[0]).count();
        let mean = fates.iter().filter(|l| **l).count() as f64 / bursts as f64;
        assert!((mean - 3.0).abs() < 0.3, "mean burst {mean}");
    }

    #[test]
    fn delay_wanders_within_its_range_and_never_past_the_worst_case() {
        let mut rng = DangerSeededRng::new(3);
        let config = quiet();
        let mut link = Link::new(config);
        let start = Instant::now();
        let delays: Vec<Duration> = (0..20_000u32)
            .map(|i| {
                let now = start + Duration::from_millis(u64::from(i) * 20);
                link.datagram(now, 100, &mut rng)[0]
            })
            .collect();
        let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*lo >= config.delay && *hi <= config.worst_datagram());
        let spread = *hi - *lo;
        assert!(
            spread > config.jitter + config.wander / 2,
            "the wander moved: {spread:?}"
        );
    }

    #[test]
    fn a_rate_cap_queues_then_drops_datagrams_but_never_reliable_messages() {
        let mut rng = DangerSeededRng::new(5);
        let config = LinkConfig {
            rate: 10_000,
            queue: Duration::from_millis(100),
            ..quiet()
        };
        let mut link = Link::new(config);
        let now = Instant::now();
        // 1000 bytes take 100 ms at 10 kB/s: the second waits 100 ms, the third is dropped.
        let fates: Vec<usize> = (0..3)
            .map(|_| link.datagram(now, 1000, &mut rng).len())
            .collect();
        assert_eq!(fates, [1, 1, 0]);
        let d = link.reliable(now, 1000, &mut rng);
        assert!(d >= Duration::from_millis(300), "waits its turn: {d:?}");
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake() {
        let mut rng = DangerSeededRng::new(9);
        let mut link = Link::new(LinkConfig {
            reorder: 0.2,
            jitter: Duration::ZERO,
            wander: Duration::ZERO,
            rate: 0,
            ..quiet()
        });
        let start = Instant::now();
        let arrivals: Vec<Instant> = (0..1000u32)
            .map(|i| {
                let now = start + Duration::from_millis(u64::from(i) * 5);
                now + link.datagram(now, 100, &mut rng)[0]
            })
            .collect();
        let overtaken = arrivals.windows(2).filter(|w| w[1] < w[0]).count();
        assert!((100..300).contains(&overtaken), "{overtaken} overtaken");
    }
}
