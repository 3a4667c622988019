//! A simulated one-way path: delay, jitter, random and bursty loss, duplication; and, for the
//! reliable control stream, loss turned into retransmission delay.

use std::time::Duration;

use super::rng::DangerSeededRng;

/// How a path behaves.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// One-way base delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]` per packet (so packets may overtake each other).
    pub jitter: Duration,
    /// Share of datagrams lost.
    pub loss: f64,
    /// Mean length of a loss burst (1: independent losses; Gilbert–Elliott above).
    pub burst: f64,
    /// Share of datagrams delivered twice.
    pub duplicate: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(15),
            jitter: Duration::from_millis(10),
            loss: 0.05,
            burst: 2.0,
            duplicate: 0.01,
        }
    }
}

/// One direction of one path.
#[derive(Debug, Clone)]
pub struct Link {
    config: LinkConfig,
    /// In the Gilbert–Elliott bad state: everything is lost.
    bad: bool,
}

impl Link {
    /// A path behaving as `config` says.
    pub fn new(config: LinkConfig) -> Self {
        Self { config, bad: false }
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

    fn one_way(&self, rng: &mut DangerSeededRng) -> Duration {
        let jitter = self.config.jitter.as_secs_f64() * rng.unit();
        self.config.delay + Duration::from_secs_f64(jitter)
    }

    /// A datagram's fate: the delays of the copies that arrive (none, one, or two).
    pub fn datagram(&mut self, rng: &mut DangerSeededRng) -> Vec<Duration> {
        if self.step_loss(rng) {
            return Vec::new();
        }
        let mut copies = vec![self.one_way(rng)];
        if rng.chance(self.config.duplicate) {
            copies.push(self.one_way(rng));
        }
        copies
    }

    /// How long a message on a reliable stream takes: each loss of it costs a retransmission
    /// timeout (about three one-way delays), bounded so a bad stretch cannot stall it forever.
    pub fn reliable(&mut self, rng: &mut DangerSeededRng) -> Duration {
        let mut d = self.one_way(rng);
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

    #[test]
    fn loss_share_and_burst_length_are_what_was_asked() {
        let mut rng = DangerSeededRng::new(7);
        let mut link = Link::new(LinkConfig {
            loss: 0.1,
            burst: 3.0,
            duplicate: 0.0,
            ..LinkConfig::default()
        });
        let fates: Vec<bool> = (0..100_000)
            .map(|_| link.datagram(&mut rng).is_empty())
            .collect();
        let lost = fates.iter().filter(|l| **l).count() as f64 / fates.len() as f64;
        assert!((lost - 0.1).abs() < 0.01, "lost {lost}");
        let bursts = fates.windows(2).filter(|w| w[1] && !w[0]).count();
        let mean = fates.iter().filter(|l| **l).count() as f64 / bursts as f64;
        assert!((mean - 3.0).abs() < 0.3, "mean burst {mean}");
    }
}
