//! Filling a take's gaps after it ends: the frames a stem's sender kept of what it played go
//! where the network lost them, so the file holds what was played, not the concealment heard
//! then. The file is rebuilt beside the original from its own packets (an Ogg Opus take, or
//! the packets kept beside a WAV take) and replaces it only once whole.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use echoel_engine::packet::opus_packet_samples;
use echoel_net::core::member::MAX_RANGES;
use ogg::reading::PacketReader;

use super::sinks::{self, Sink};
use super::stem_file::Gap;
use super::{lock, FillJob, Format, RecordError, Writer, GRID};

/// How long a take's end waits for its senders' answers, all asked at once.
const FILL_WAIT: Duration = Duration::from_secs(10);

/// Where a WAV take's packets are kept: hidden beside it.
pub(super) fn packets_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{}.packets.opus", name.unwrap_or_default()))
}

impl Writer {
    /// Asks each sender for what the take missed of its stems, and rebuilds each file with
    /// what comes back within [`FILL_WAIT`]; the packets kept beside WAV files go after.
    pub(super) fn fill_gaps(&mut self) {
        let jobs = std::mem::take(&mut self.fills);
        let mut asked = Vec::new();
        for job in jobs {
            // Gaps are whole frames; one that is not was cut by the file's real-time bound,
            // and the file's places after it are not the sender's.
            let fillable = !job.gaps.is_empty() && job.gaps.iter().all(|g| g.samples % GRID == 0);
            let ranges: Vec<(u64, u64)> = if fillable {
                job.gaps
                    .iter()
                    .map(|g| (g.media, g.media + g.samples))
                    .collect()
            } else {
                Vec::new()
            };
            let answers: Vec<_> = ranges
                .chunks(MAX_RANGES)
                .filter_map(|r| self.room.ask_take(&job.key, r.to_vec()))
                .collect();
            asked.push((job, answers));
        }
        let deadline = Instant::now() + FILL_WAIT;
        for (job, answers) in asked {
            let mut frames = BTreeMap::new();
            for rx in answers {
                while let Ok(t) =
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    frames.extend(t.frames);
                    if t.last {
                        break;
                    }
                }
            }
            if !frames.is_empty() {
                match self.refill(&job, &frames) {
                    Ok(filled) => {
                        let mut s = lock(&self.status);
                        if let Some(f) = s.files.iter_mut().find(|f| f.key == job.key) {
                            f.counts.filled_samples += filled;
                            f.counts.gap_samples = f.counts.gap_samples.saturating_sub(filled);
                        }
                    }
                    Err(e) => {
                        let error = RecordError::Write {
                            path: job.path.clone(),
                            why: format!("its gaps could not be filled: {e}; it keeps them"),
                        };
                        tracing::warn!("recording: {error}");
                        lock(&self.status).errors.push(error);
                    }
                }
            }
            if self.format == Format::Wav {
                let _ = std::fs::remove_file(packets_beside(&job.path));
            }
        }
    }

    /// Rebuilds one file beside itself with `frames` in its gaps, then puts it in its place.
    fn refill(&self, job: &FillJob, frames: &BTreeMap<u64, Vec<u8>>) -> io::Result<u64> {
        let source = match self.format {
            Format::Wav => packets_beside(&job.path),
            Format::Opus => job.path.clone(),
        };
        let mut input = OpusPackets::open(&source)?;
        let name = job
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let temp = job
            .path
            .with_file_name(format!(".{}.filling", name.unwrap_or_default()));
        let _ = std::fs::remove_file(&temp);
        let mut out: Box<dyn Sink> = match self.format {
            Format::Wav => Box::new(sinks::Wav::create(&temp, input.pre_skip)?),
            Format::Opus => {
                let title = self.room.name(&job.key).unwrap_or_default();
                Box::new(sinks::OggOpus::create(&temp, input.pre_skip, &title)?)
            }
        };
        let result = rebuild(&mut input, &job.gaps, frames, out.as_mut()).and_then(|filled| {
            out.finish()?;
            std::fs::rename(&temp, &job.path)?;
            Ok(filled)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }
}

/// Reads an Ogg Opus file's audio packets in order, after its two header packets; its
/// pre-skip.
pub(super) struct OpusPackets {
    reader: PacketReader<BufReader<File>>,
    pub(super) pre_skip: u16,
}

impl OpusPackets {
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let mut reader = PacketReader::new(BufReader::new(File::open(path)?));
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
        let head = reader
            .read_packet()
            .map_err(|e| bad(&e.to_string()))?
            .ok_or_else(|| bad("no OpusHead"))?;
        if head.data.len() < 19 || &head.data[..8] != b"OpusHead" {
            return Err(bad("not Ogg Opus"));
        }
        let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]);
        reader
            .read_packet()
            .map_err(|e| bad(&e.to_string()))?
            .ok_or_else(|| bad("no OpusTags"))?;
        Ok(Self { reader, pre_skip })
    }

    /// The next audio packet (the empty one that ends the stream is skipped).
    pub(super) fn next_packet(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.reader.read_packet() {
                Ok(Some(p)) if p.data.is_empty() => continue,
                Ok(Some(p)) => return Ok(Some(p.data)),
                Ok(None) => return Ok(None),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }
}

/// Writes `input`'s packets to `out`, each stretch of `gaps` replaced by the sender's
/// `frames` (media time → payload) that lie within it, and what none came for as a gap again.
/// Returns the samples filled.
pub(super) fn rebuild(
    input: &mut OpusPackets,
    gaps: &[Gap],
    frames: &BTreeMap<u64, Vec<u8>>,
    out: &mut dyn Sink,
) -> io::Result<u64> {
    let mut pos = 0u64;
    let mut filled = 0u64;
    // The gap whose lost-frame packets are being passed over.
    let mut skipping: Option<&Gap> = None;
    let mut gaps = gaps.iter().peekable();
    while let Some(packet) = input.next_packet()? {
        let samples = opus_packet_samples(&packet).unwrap_or(0) as u64;
        if skipping.is_some_and(|g| pos < g.at + g.samples) {
            pos += samples;
            continue;
        }
        skipping = None;
        // A gap that does not start on a packet's edge is not this file's: left as it is.
        while gaps.next_if(|g| g.at < pos).is_some() {}
        if let Some(g) = gaps.next_if(|g| g.at == pos) {
            filled += fill_one(g, frames, out)?;
            skipping = Some(g);
            pos += samples;
            continue;
        }
        out.packet(&packet, samples)?;
        pos += samples;
    }
    Ok(filled)
}

/// One gap: the sender's frames within it in order, a gap where none came.
fn fill_one(g: &Gap, frames: &BTreeMap<u64, Vec<u8>>, out: &mut dyn Sink) -> io::Result<u64> {
    let end = g.media + g.samples;
    let mut cursor = g.media;
    let mut filled = 0;
    for (&m, payload) in frames.range(g.media..end) {
        let Some(s) = opus_packet_samples(payload).map(|s| s as u64) else {
            continue;
        };
        if m < cursor || m + s > end {
            continue;
        }
        if m > cursor {
            out.gap(m - cursor)?;
        }
        out.packet(payload, s)?;
        filled += s;
        cursor = m + s;
    }
    if cursor < end {
        out.gap(end - cursor)?;
    }
    Ok(filled)
}
