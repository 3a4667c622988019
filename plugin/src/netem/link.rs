//! One direction of an impaired link, as a pure function of time: what happens to each
//! datagram (dropped, or released at a later moment). No clock and no socket, so the same
//! settings and seed give the same fate to the same packets.

use std::sync::Arc;

use echoel_engine::jitter::sim::{Rng, Trace};

/// How the extra delay varies from packet to packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JitterKind {
    /// A delay that wanders smoothly within the jitter range and keeps packet order, as a
    /// queue on a real path does.
    Wander,
    /// Each packet's delay drawn on its own: deep reordering, rarely seen on real paths.
    Iid,
}

/// What a link does to the datagrams that cross it.
#[derive(Debug, Clone)]
pub struct Impairment {
    /// Fixed one-way delay, ms.
    pub delay_ms: f64,
    /// Range of extra delay above `delay_ms`, ms.
    pub jitter_ms: f64,
    /// How the extra delay varies.
    pub jitter: JitterKind,
    /// Long-run share of datagrams lost, 0–1.
    pub loss: f64,
    /// Mean length of a loss burst in datagrams (1: independent losses; Gilbert–Elliott above).
    pub burst: f64,
    /// Share of datagrams held back so that later ones overtake them, 0–1.
    pub reorder: f64,
    /// Share of datagrams delivered twice, 0–1.
    pub duplicate: f64,
    /// Bottleneck rate in bit/s; `None` for no limit.
    pub rate_bps: Option<f64>,
    /// Replays a recorded trace's delays and losses, packet by packet (cyclically), on top of
    /// the settings above.
    pub trace: Option<Arc<Trace>>,
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            delay_ms: 0.0,
            jitter_ms: 0.0,
            jitter: JitterKind::Wander,
            loss: 0.0,
            burst: 1.0,
            reorder: 0.0,
            duplicate: 0.0,
            rate_bps: None,
            trace: None,
        }
    }
}

/// A bottleneck queue holds at most this much delay; beyond it the router drops (tail drop),
/// as a home router's buffer does.
const MAX_QUEUE_S: f64 = 0.2;
/// A held-back (reordered) datagram waits at least this much longer than its neighbours.
const REORDER_HOLD_MS: f64 = 3.0;
/// A duplicate follows its original this much later.
const DUPLICATE_GAP_MS: f64 = 0.2;

/// The fate of one datagram: up to two release moments (seconds on the link's clock).
pub type Fate = [Option<f64>; 2];

/// One direction's state.
pub struct Link {
    rng: Rng,
    /// Gilbert–Elliott: in the lossy state.
    bad: bool,
    /// The wandering extra delay: where it is, where it heads, how fast (ms per second).
    wander_ms: f64,
    wander_to_ms: f64,
    wander_slope: f64,
    last_at: f64,
    /// Latest release so far of an in-order datagram (order is kept in wander mode).
    last_release: f64,
    /// When the bottleneck is free again.
    link_free: f64,
    /// Next line of the trace.
    trace_pos: usize,
}

impl Link {
    /// A link whose random choices follow `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            bad: false,
            wander_ms: 0.0,
            wander_to_ms: 0.0,
            wander_slope: 0.0,
            last_at: 0.0,
            last_release: 0.0,
            link_free: 0.0,
            trace_pos: 0,
        }
    }

    /// What happens to a `len`-byte datagram that enters at `now` (seconds, never earlier
    /// than the previous call's).
    pub fn admit(&mut self, imp: &Impairment, now: f64, len: usize) -> Fate {
        let dt = (now - self.last_at).max(0.0);
        self.last_at = now;
        self.step_wander(imp, dt);
        if self.lost(imp) {
            return [None, None];
        }
        let mut delay_ms = imp.delay_ms.max(0.0);
        if let Some(trace) = &imp.trace {
            let i = self.trace_pos % trace.delays.len();
            self.trace_pos += 1;
            match trace.delays[i] {
                Some(samples) => delay_ms += f64::from(samples) / 48.0,
                None => return [None, None],
            }
        }
        let jitter = imp.jitter_ms.max(0.0);
        delay_ms += match imp.jitter {
            JitterKind::Wander => self.wander_ms.min(jitter),
            JitterKind::Iid => jitter * self.rng.next_f64(),
        };
        // The bottleneck serialises: a datagram waits for those before it.
        let mut start = now;
        if let Some(rate) = imp.rate_bps.filter(|r| *r > 0.0) {
            start = now.max(self.link_free);
            if start - now > MAX_QUEUE_S {
                return [None, None];
            }
            self.link_free = start + len as f64 * 8.0 / rate;
            start = self.link_free;
        }
        let mut release = start + delay_ms / 1000.0;
        if self.rng.next_f64() < imp.reorder {
            release += REORDER_HOLD_MS.max(jitter) / 1000.0;
        } else {
            // A trace's delays are replayed as recorded, overtaking included.
            if imp.jitter == JitterKind::Wander && imp.trace.is_none() {
                release = release.max(self.last_release);
            }
            self.last_release = release;
        }
        let twice =
            (self.rng.next_f64() < imp.duplicate).then_some(release + DUPLICATE_GAP_MS / 1e3);
        [Some(release), twice]
    }

    /// Independent losses for a burst of 1; above, Gilbert–Elliott with the requested mean
    /// loss and burst length: everything in the bad state is lost, and its mean stay is
    /// `burst` datagrams.
    fn lost(&mut self, imp: &Impairment) -> bool {
        let p = imp.loss.clamp(0.0, 1.0);
        if p <= 0.0 {
            self.bad = false;
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        let r = self.rng.next_f64();
        if imp.burst <= 1.0 {
            self.bad = r < p;
            return self.bad;
        }
        let leave_bad = 1.0 / imp.burst;
        let enter_bad = (p / (1.0 - p) * leave_bad).min(1.0);
        self.bad = if self.bad {
            r >= leave_bad
        } else {
            r < enter_bad
        };
        self.bad
    }

    /// Moves the wandering delay towards its goal; a new goal and pace once there. The pace
    /// stays well under 1 ms per ms, so in-order packets stay in order by themselves.
    fn step_wander(&mut self, imp: &Impairment, dt: f64) {
        let range = imp.jitter_ms.max(0.0);
        if range == 0.0 {
            self.wander_ms = 0.0;
            self.wander_to_ms = 0.0;
            return;
        }
        let step = self.wander_slope * dt;
        let gap = self.wander_to_ms - self.wander_ms;
        if gap.abs() <= step {
            self.wander_ms = self.wander_to_ms;
            self.wander_to_ms = range * self.rng.next_f64();
            // From a tenth of the range to the whole range per second: slow swells and
            // quicker dips, both far from reordering.
            self.wander_slope = range * (0.1 + 0.9 * self.rng.next_f64());
        } else {
            self.wander_ms += step * gap.signum();
        }
        self.wander_ms = self.wander_ms.clamp(0.0, range);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fates of `n` datagrams sent every 2.5 ms.
    fn run(imp: &Impairment, n: usize, seed: u64) -> Vec<Fate> {
        let mut link = Link::new(seed);
        (0..n)
            .map(|i| link.admit(imp, i as f64 * 0.0025, 100))
            .collect()
    }

    fn loss_share(f: &[Fate]) -> f64 {
        f.iter().filter(|x| x[0].is_none()).count() as f64 / f.len() as f64
    }

    fn mean_burst(f: &[Fate]) -> f64 {
        let (mut bursts, mut lost, mut prev) = (0, 0, false);
        for x in f {
            let l = x[0].is_none();
            lost += usize::from(l);
            bursts += usize::from(l && !prev);
            prev = l;
        }
        lost as f64 / bursts.max(1) as f64
    }

    #[test]
    fn loss_and_burst_length_are_what_was_asked() {
        for (loss, burst) in [(0.02, 1.0), (0.10, 1.0), (0.10, 3.0), (0.30, 2.0)] {
            let imp = Impairment {
                loss,
                burst,
                ..Impairment::default()
            };
            let f = run(&imp, 200_000, 7);
            let got = loss_share(&f);
            assert!((got - loss).abs() < 0.1 * loss, "loss {loss}: got {got}");
            let b = mean_burst(&f);
            // Independent losses still touch now and then: their runs average 1 / (1 - loss).
            let expected = if burst == 1.0 {
                1.0 / (1.0 - loss)
            } else {
                burst
            };
            assert!(
                (b - expected).abs() < 0.1 * expected,
                "burst {burst}: got {b}"
            );
        }
        assert_eq!(loss_share(&run(&Impairment::default(), 1000, 1)), 0.0);
        let all = Impairment {
            loss: 1.0,
            ..Impairment::default()
        };
        assert_eq!(loss_share(&run(&all, 1000, 1)), 1.0);
    }

    #[test]
    fn wandering_jitter_keeps_order_and_fills_its_range() {
        let imp = Impairment {
            delay_ms: 20.0,
            jitter_ms: 50.0,
            ..Impairment::default()
        };
        let f = run(&imp, 40_000, 3);
        let releases: Vec<f64> = f.iter().map(|x| x[0].unwrap()).collect();
        assert!(releases.windows(2).all(|w| w[1] >= w[0]), "order kept");
        let delays: Vec<f64> = releases
            .iter()
            .enumerate()
            .map(|(i, r)| (r - i as f64 * 0.0025) * 1000.0)
            .collect();
        let (lo, hi) = delays
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &d| (a.min(d), b.max(d)));
        assert!((20.0 - 1e-9..25.0).contains(&lo), "lowest {lo}");
        assert!(hi > 60.0 && hi <= 70.0 + 1e-9, "highest {hi}");
        // Smooth: neighbours differ by far less than the range.
        let step = delays
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f64::max);
        assert!(step < 5.0, "largest step {step} ms");
    }

    #[test]
    fn iid_jitter_and_reordering_let_later_packets_overtake() {
        for imp in [
            Impairment {
                jitter_ms: 10.0,
                jitter: JitterKind::Iid,
                ..Impairment::default()
            },
            Impairment {
                reorder: 0.05,
                ..Impairment::default()
            },
        ] {
            let f = run(&imp, 10_000, 5);
            let overtaken = f
                .windows(2)
                .filter(|w| w[1][0].unwrap() < w[0][0].unwrap())
                .count();
            assert!(overtaken > 100, "{imp:?}: {overtaken} overtaken");
        }
    }

    #[test]
    fn a_rate_cap_queues_then_drops() {
        // 100-byte datagrams every 2.5 ms are 320 kbit/s; a 160 kbit/s bottleneck queues
        // them until its buffer is full, then drops about half.
        let imp = Impairment {
            rate_bps: Some(160_000.0),
            ..Impairment::default()
        };
        let f = run(&imp, 8000, 1);
        let got = loss_share(&f);
        assert!((got - 0.5).abs() < 0.05, "loss {got}");
        let last = f.iter().rev().find_map(|x| x[0]).unwrap();
        assert!(last - 7999.0 * 0.0025 <= MAX_QUEUE_S + 0.01);
    }

    #[test]
    fn a_trace_is_replayed_packet_by_packet() {
        let trace = Trace::parse("t", "frame 120\n480\n-\n960\n").unwrap();
        let imp = Impairment {
            delay_ms: 1.0,
            trace: Some(Arc::new(trace)),
            ..Impairment::default()
        };
        let f = run(&imp, 6, 1);
        let ms = |i: usize| f[i][0].map(|r| ((r - i as f64 * 0.0025) * 1000.0).round());
        assert_eq!(
            (0..6).map(ms).collect::<Vec<_>>(),
            [Some(11.0), None, Some(21.0), Some(11.0), None, Some(21.0)]
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let imp = Impairment {
            jitter_ms: 8.0,
            loss: 0.05,
            burst: 2.0,
            reorder: 0.01,
            duplicate: 0.01,
            ..Impairment::default()
        };
        assert_eq!(run(&imp, 5000, 11), run(&imp, 5000, 11));
        assert_ne!(run(&imp, 5000, 11), run(&imp, 5000, 12));
    }
}
