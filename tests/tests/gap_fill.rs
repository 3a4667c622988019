//! Gap-free takes over real sockets: Cleo records Ana through 5 % loss; after the take, the
//! frames the network lost come back from Ana, and Cleo's file holds what Ana played, packet
//! for packet, so its decode nulls against Ana's own decode of what she sent.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use echoel_plugin::engine::opus_packet_samples;
use echoel_plugin::headless::{HeadlessOptions, HeadlessReport};
use echoel_plugin::netem::Impairment;
use echoel_plugin::record::{FileStatus, Format, RecordStatus};
use echoel_tests::{musician, network_runtime, one_at_a_time, play_each, via, Rig};

/// An Ogg Opus file's audio packets, after its two header packets.
fn packets(path: &Path) -> Vec<Vec<u8>> {
    let mut r = ogg::reading::PacketReader::new(BufReader::new(File::open(path).unwrap()));
    let mut out = Vec::new();
    let mut n = 0;
    while let Some(p) = r.read_packet().expect("a readable Ogg file") {
        n += 1;
        if n > 2 && !p.data.is_empty() {
            out.push(p.data);
        }
    }
    out
}

/// A packet that only says "lost" (a table-of-contents byte alone).
fn lost(p: &[u8]) -> bool {
    p.len() == 1
}

/// Decodes packets with a fresh decoder: the left channel.
fn decode(packets: &[Vec<u8>]) -> Vec<f32> {
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut pcm = vec![0.0f32; 2 * 5_760];
    let mut out = Vec::new();
    for p in packets {
        let n = dec.decode_float(p, &mut pcm, false).unwrap();
        out.extend(pcm[..2 * n].iter().step_by(2));
    }
    out
}

fn take(r: &HeadlessReport) -> &RecordStatus {
    match &r.take {
        Some(Ok(t)) => t,
        other => panic!("{}: no take: {other:?}", r.name),
    }
}

fn file<'a>(t: &'a RecordStatus, name: &str) -> &'a FileStatus {
    t.files
        .iter()
        .find(|f| f.path.file_name().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no {name} in {t:#?}"))
}

#[test]
fn a_take_through_loss_holds_after_the_gap_fill_what_the_sender_played() {
    let _one = one_at_a_time();
    let rig = Rig::new(Impairment {
        loss: 0.05,
        ..Impairment::default()
    });
    let room = rig.relay().room("fill");
    let (cleo_dir, ana_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Ana plays on for a while after Cleo's take ends: she is there to be asked.
    let cleo = HeadlessOptions {
        record: Some((cleo_dir.path().to_owned(), Format::Opus)),
        ..musician(&via(&room, rig.proxy.addr), "cleo", 3, 6.0)
    };
    let ana = HeadlessOptions {
        record: Some((ana_dir.path().to_owned(), Format::Opus)),
        ..musician(&room, "ana", 1, 12.0)
    };
    let reports: Vec<HeadlessReport> = play_each(vec![ana, cleo], &network_runtime())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (ana, cleo) = (&reports[0], &reports[1]);
    let heard = file(take(cleo), "ana.opus");
    println!("{heard:#?}");
    let c = heard.counts;
    assert!(
        c.filled_samples >= 20 * 120,
        "too little was lost or filled: {c:?}"
    );
    assert_eq!(c.gap_samples, 0, "a gap stayed: {c:?}");

    // Packet for packet what Ana sent (her own take of it), from where Cleo's file begins.
    let got = packets(&heard.path);
    let sent = packets(&file(take(ana), "ana-sent.opus").path);
    let first = got
        .iter()
        .position(|p| !lost(p))
        .expect("audio in Cleo's file");
    let at = sent
        .iter()
        .position(|p| *p == got[first])
        .expect("Cleo's first packet is one Ana sent");
    let start = at - first.min(at);
    let got = &got[first - (at - start)..];
    let sent = &sent[start..];
    let n = got.len().min(sent.len());
    assert!(n > 1_500, "{n} packets in common");
    let differ = (0..n).filter(|&i| got[i] != sent[i]).count();
    let lost_left = got[..n].iter().filter(|p| lost(p)).count();
    println!("{n} packets, {differ} differ, {lost_left} lost frames left");
    assert_eq!(differ, 0, "Cleo's file is not what Ana sent");

    // And so the decode nulls: sample for sample what Ana's own decoder makes of it.
    let (a, b) = (decode(&got[..n]), decode(&sent[..n]));
    let samples: usize = got[..n]
        .iter()
        .map(|p| opus_packet_samples(p).unwrap_or(0))
        .sum();
    assert_eq!(a.len(), samples);
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    println!("null over {} samples: worst difference {worst}", a.len());
    assert_eq!(worst, 0.0);
}
