//! A host that stops calling for a while (an xrun, a hiccup, a render in between) costs the
//! audio of the pause, never delay: two engines on one simulated clock, one sending to the
//! other over a 1 ms path, one of them paused for 200 ms.

mod common;

use common::{jam, latency_ms, Event};

fn check_recovers(who: usize) {
    let plain = jam(7.0, None);
    let before = latency_ms(&plain, 5.0);
    let run = jam(
        7.0,
        Some(Event::Pause {
            who,
            at: 3.0,
            len: 0.2,
        }),
    );
    let (early, after) = (latency_ms(&run, 2.0), latency_ms(&run, 5.0));
    // Concealment in the last two seconds (from 5 s on: within 2 s of the pause's end).
    let late = run.stats[6].frames_concealed - run.stats[4].frames_concealed;
    println!(
        "host {who} paused 200 ms: latency {early:.2} ms before, {after:.2} ms 2 s after (no pause: {before:.2} ms); \
         {late} frames concealed from 5 s on; {:?}",
        run.stats[6]
    );
    assert!(
        (after - early).abs() < 1.5 && (after - before).abs() < 1.5,
        "a 200 ms pause left the latency at {after:.2} ms (before it {early:.2} ms)"
    );
    assert_eq!(late, 0, "frames concealed long after the pause");
}

#[test]
fn a_receiver_whose_host_pauses_is_back_at_its_delay_at_once() {
    check_recovers(1);
}

#[test]
fn a_sender_whose_host_pauses_leaves_a_gap_not_a_delay() {
    check_recovers(0);
}

#[test]
fn one_long_block_does_not_hold_the_delay_up() {
    // The receiver's host renders one 8192-frame block (170 ms) among 64-frame ones. That
    // block is mostly concealment (its packets are not made yet) and the delay grows by it;
    // four seconds on, the delay and the buffer's depth are back where small blocks put them.
    let plain = jam(7.0, None);
    let before = latency_ms(&plain, 6.0);
    let run = jam(
        7.0,
        Some(Event::LongBlock {
            at: 2.0,
            frames: 8192,
        }),
    );
    let after = latency_ms(&run, 6.0);
    let (depth, plain_depth) = (
        run.stats[6].jitter_depth_samples,
        plain.stats[6].jitter_depth_samples,
    );
    println!(
        "one long block: latency {after:.2} ms 4 s on (no long block: {before:.2} ms), depth {depth} \
         samples (no long block: {plain_depth}); {:?}",
        run.stats[6]
    );
    assert!(
        (after - before).abs() < 1.5,
        "one long block left the latency at {after:.2} ms (small blocks: {before:.2} ms)"
    );
    assert!(
        depth <= plain_depth + 48,
        "the depth stayed at {depth} samples"
    );
}
