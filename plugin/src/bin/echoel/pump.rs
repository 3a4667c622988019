//! `echoel bench pump`: how the thread that drains the engine's outgoing ring should wake —
//! polling every 125 µs (the old way), woken by the audio thread once per block that produced
//! a frame (`Thread::unpark`, a futex wake that never waits), or on a timer at the frame rate.
//! A simulated audio thread runs 32-frame blocks at 48 kHz and pushes a 2.5 ms frame whenever
//! one is due; for each way: the delay from push to pop, the drain thread's CPU time, and what
//! the wake costs the audio thread.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use echoel_plugin::engine::{PacketSlot, SendWake, StreamId};

const BLOCK: Duration = Duration::from_nanos(666_667);
const BLOCKS_PER_FRAME: f64 = 3.75;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Poll,
    Wake,
    FrameTimer,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Poll => "poll every 125 us",
            Way::Wake => "woken per block",
            Way::FrameTimer => "timer every 2.5 ms",
        }
    }
}

/// CPU time the calling thread has used, where the system says (Linux): nanoseconds from the
/// scheduler's statistics where the kernel keeps them, else clock ticks (10 ms) of user and
/// system time.
fn thread_cpu() -> Option<Duration> {
    let sched = std::fs::read_to_string("/proc/thread-self/schedstat").ok();
    if let Some(ns) = sched.and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok()) {
        if ns > 0 {
            return Some(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

struct Outcome {
    delay_us: Vec<f64>,
    cpu: Option<Duration>,
    wake_ns: Vec<f64>,
}

fn measure(way: Way, seconds: f64) -> Outcome {
    let (mut to_net, mut from_engine) = rtrb::RingBuffer::<PacketSlot>::new(64);
    let wake = Arc::new(SendWake::default());
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let drain = {
        let (wake, stop) = (wake.clone(), stop.clone());
        std::thread::spawn(move || {
            wake.register_current();
            let cpu0 = thread_cpu();
            let mut delays = Vec::new();
            let mut next_tick = Instant::now();
            while !stop.load(Relaxed) {
                let mut got = false;
                while let Ok(p) = from_engine.pop() {
                    let now = epoch.elapsed().as_nanos() as u64;
                    delays.push(now.saturating_sub(p.media_time) as f64 / 1000.0);
                    got = true;
                }
                match way {
                    Way::Poll if !got => std::thread::sleep(Duration::from_micros(125)),
                    Way::Wake if !got => std::thread::park_timeout(Duration::from_millis(5)),
                    Way::FrameTimer => {
                        next_tick += Duration::from_micros(2500);
                        if let Some(w) = next_tick.checked_duration_since(Instant::now()) {
                            std::thread::sleep(w);
                        }
                    }
                    _ => {}
                }
            }
            let cpu = cpu0.zip(thread_cpu()).map(|(a, b)| b.saturating_sub(a));
            (delays, cpu)
        })
    };
    let blocks = (seconds / BLOCK.as_secs_f64()) as u64;
    let mut wake_ns = Vec::with_capacity(blocks as usize);
    let start = Instant::now();
    let mut frames_due = 0.0;
    for b in 0..blocks {
        if let Some(w) = (start + BLOCK * b as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        frames_due += 1.0 / BLOCKS_PER_FRAME;
        let mut pushed = false;
        while frames_due >= 1.0 {
            frames_due -= 1.0;
            let at = epoch.elapsed().as_nanos() as u64;
            let slot = PacketSlot::new(StreamId(0), b as u32, at, &[0u8; 40]).expect("fits");
            pushed |= to_net.push(slot).is_ok();
        }
        if pushed && way == Way::Wake {
            let t = Instant::now();
            wake.wake();
            wake_ns.push(t.elapsed().as_nanos() as f64);
        }
    }
    stop.store(true, Relaxed);
    wake.wake();
    let (delay_us, cpu) = drain.join().expect("drain thread");
    Outcome {
        delay_us,
        cpu,
        wake_ns,
    }
}

pub fn run(seconds: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1.0..=120.0).contains(&seconds),
        "--seconds must be between 1 and 120"
    );
    println!(
        "Draining the outgoing ring: 32-frame blocks at 48 kHz, a 2.5 ms frame every 3.75 \
         blocks, {seconds} s per way"
    );
    println!(
        "{:<20} {:>14} {:>14} {:>12} {:>16} {:>16}",
        "way", "median delay", "p99 delay", "drain CPU", "wake median", "wake p99"
    );
    for way in [Way::Poll, Way::Wake, Way::FrameTimer] {
        let mut o = measure(way, seconds);
        let cpu = o.cpu.map_or("n/a".into(), |c| {
            format!("{:.2} %", 100.0 * c.as_secs_f64() / seconds)
        });
        let (wm, wp) = if o.wake_ns.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.0} ns", percentile(&mut o.wake_ns, 0.5)),
                format!("{:.0} ns", percentile(&mut o.wake_ns, 0.99)),
            )
        };
        println!(
            "{:<20} {:>11.1} us {:>11.1} us {:>12} {:>16} {:>16}",
            way.name(),
            percentile(&mut o.delay_us, 0.5),
            percentile(&mut o.delay_us, 0.99),
            cpu,
            wm,
            wp
        );
    }
    println!(
        "delay: push on the audio thread to pop on the drain thread; drain CPU: share of one \
         core; wake: what the audio thread spends on the wake"
    );
    Ok(())
}
