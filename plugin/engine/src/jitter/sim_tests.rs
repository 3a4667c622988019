//! The jitter-buffer simulator's own tests.

use super::*;

#[test]
fn ours_stays_close_to_the_hindsight_optimum_on_gaussian_jitter() {
    let traces = Trace::synthetic(60.0, 1);
    let gaussian = &traces[0];
    let (_, best) = best_fixed(gaussian, 64);
    let o = simulate(gaussian, &mut ours(64), 64);
    println!("best fixed {best:?}\nours {o:?}");
    assert!(o.late_loss_pct <= 1.0, "{o:?}");
    assert!(
        o.mean_delay_ms <= 1.15 * best.mean_delay_ms,
        "ours {o:?} vs best fixed {best:?}"
    );
}

/// 100 ppm of drift for ten simulated minutes: the drift is measured and played out, so
/// playout stays within a frame of its schedule with no stall/skip cycle.
#[test]
fn drift_is_absorbed_without_underrun_or_overrun_cycles() {
    for ppm in [100.0, -100.0] {
        let trace = Trace {
            name: "drift".into(),
            frame: 120,
            drift_ppm: ppm,
            delays: (0..600 * 400)
                .map(|i| Some(480 + (i * 7919 % 97) as u32))
                .collect(),
        };
        let mut algo = Watch::from(60 * 48_000);
        simulate(&trace, &mut algo, 64);
        let jb = &algo.ours.0;
        let s = jb.stats();
        println!(
            "{ppm} ppm: estimated {:.1}, {s:?}, worst schedule error {} samples, depth {}",
            jb.drift_ppm(),
            algo.worst_error,
            jb.target_samples()
        );
        assert!((jb.drift_ppm() - ppm).abs() < 10.0, "{}", jb.drift_ppm());
        assert!(
            algo.worst_error <= 120,
            "playout drifted {} samples off its schedule",
            algo.worst_error
        );
        assert_eq!(
            algo.stalls + algo.skips,
            0,
            "stalls/skips after the first minute: {s:?}"
        );
    }
}

/// A late packet (a one-off spike) makes playout wait a frame; the slew then works that
/// frame off smoothly — back on schedule within ten seconds, with no skip and never more
/// than 0.1 % off the sender's rate.
#[test]
fn a_stall_is_worked_off_by_slewing_not_by_skipping() {
    let trace = Trace {
        name: "one spike".into(),
        frame: 120,
        drift_ppm: 0.0,
        delays: (0..40 * 400)
            .map(|i| {
                // A 5 ms hold-up at 20 s: packets 8000–8001 arrive with 8002.
                let held = match i {
                    8000 => 240,
                    8001 => 120,
                    _ => 0,
                };
                Some(480 + (i * 7919 % 31) as u32 + held)
            })
            .collect(),
    };
    let mut algo = Watch::from(20 * 48_000);
    simulate(&trace, &mut algo, 64);
    let s = algo.ours.0.stats();
    println!(
        "{s:?}, worst error {} samples, in the last 10 s {}, stretch {:.6}..{:.6}",
        algo.worst_error, algo.late_error, algo.stretch.0, algo.stretch.1
    );
    assert!(algo.stalls >= 1, "the spike made no stall: {s:?}");
    assert!(algo.worst_error >= 60, "the stall added no delay");
    assert_eq!(algo.skips, 0, "{s:?}");
    // Back within the half millisecond of slack the slew leaves alone.
    assert!(
        algo.late_error <= 30,
        "still {} samples off",
        algo.late_error
    );
    assert!(
        algo.stretch.0 >= 1.0 - 0.001_001 && algo.stretch.1 <= 1.0 + 0.001_001,
        "{:?}",
        algo.stretch
    );
}

/// Ours, recording from `from` on the worst schedule error, the stalls, skips and
/// stretch range, and the worst error from 30 s on.
struct Watch {
    ours: Ours,
    from: u64,
    worst_error: i64,
    late_error: i64,
    stalls: u64,
    skips: u64,
    stretch: (f64, f64),
}

impl Watch {
    fn from(from: u64) -> Self {
        Self {
            ours: ours(64),
            from,
            worst_error: 0,
            late_error: 0,
            stalls: 0,
            skips: 0,
            stretch: (1.0, 1.0),
        }
    }
}

impl Algorithm for Watch {
    fn name(&self) -> String {
        self.ours.name()
    }
    fn arrive(&mut self, arrival: u64, seq: u32, media: u64) {
        self.ours.arrive(arrival, seq, media)
    }
    fn stretch(&self) -> f64 {
        self.ours.stretch()
    }
    fn idle_samples(&self, now: u64, frame: u64) -> f64 {
        self.ours.idle_samples(now, frame)
    }
    fn next(&mut self, now: u64) -> Step {
        let before = self.ours.0.stats();
        let step = self.ours.next(now);
        if now > self.from {
            let after = self.ours.0.stats();
            self.stalls += after.stalled - before.stalled;
            self.skips += after.dropped - before.dropped;
            let r = self.ours.stretch();
            self.stretch = (self.stretch.0.min(r), self.stretch.1.max(r));
            if matches!(step, Step::Play(_)) {
                let e = self.ours.0.schedule_error().abs();
                self.worst_error = self.worst_error.max(e);
                if now > 30 * 48_000 {
                    self.late_error = self.late_error.max(e);
                }
            }
        }
        step
    }
}

#[test]
fn recorded_traces_load_and_malformed_ones_are_refused() {
    let recorded = Trace::recorded();
    assert_eq!(recorded.len(), 2);
    for t in &recorded {
        assert!(t.delays.len() >= 4000, "{}: {}", t.name, t.delays.len());
        assert!(t.delays.iter().flatten().count() > t.delays.len() * 9 / 10);
    }
    assert!(Trace::parse("x", "frame 120\n12\nabc\n").is_err());
    assert!(Trace::parse("x", "12\n").is_err());
}

#[test]
fn traces_are_deterministic() {
    let a = Trace::synthetic(2.0, 3);
    let b = Trace::synthetic(2.0, 3);
    assert_eq!(a[1].delays, b[1].delays);
    assert_eq!(a.len(), 6);
}
