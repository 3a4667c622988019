//! Where a stem's frames end up: an Ogg Opus file that keeps the packets as they came (no
//! second encoding), or a WAV file of their decode. Both keep what is already written
//! readable at all times: Ogg pages are closed every half second, the WAV header is patched
//! every second, so a full disk or a crash costs only the last moments.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use echoel_engine::INTERNAL_RATE_HZ;
use ogg::writing::{PacketWriteEndInfo, PacketWriter};

/// Stereo, as the engine sends.
const CHANNELS: u16 = 2;

/// The longest Opus frame (120 ms), per channel: room for any packet's decode.
const MAX_FRAME: usize = 5_760;

/// A gap is concealed for this long (100 ms); past it the concealment has faded to silence,
/// which is written as such.
const CONCEAL_AT_MOST: u64 = 4_800;

/// Audio between checkpoints (Ogg page ends, WAV header patches): half a second.
const CHECKPOINT_EVERY: u64 = 24_000;

/// A WAV file's sizes are 32-bit: past this (4 000 MB, 2 h 53 min of stereo float) a take
/// goes on in `NAME-2.wav`, `NAME-3.wav` …, sample-continuous, rather than wrap.
const WAV_MAX_BYTES: u64 = 4_000_000_000;

/// What hound writes before the samples of a 32-bit float WAV (RIFF, a fmt chunk of 18 bytes
/// and a fact chunk, then the data chunk's header): its size counts in a file's.
const WAV_HEADER: u64 = 68;

/// One stem's file.
pub trait Sink: Send {
    /// An Opus packet of `samples` (per channel, 48 kHz).
    fn packet(&mut self, payload: &[u8], samples: u64) -> io::Result<()>;
    /// `samples` of nothing received: concealment, then silence.
    fn gap(&mut self, samples: u64) -> io::Result<()>;
    /// Closes the file; what it holds is then complete.
    fn finish(self: Box<Self>) -> io::Result<()>;
    /// After a write failed (a full disk): closes the file at its last checkpoint, so what it
    /// holds is readable to there.
    fn abandon(self: Box<Self>) -> io::Result<()>;
    /// Bytes written so far.
    fn bytes(&self) -> u64;
}

/// A writer that counts what it passes on.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Ogg Opus (RFC 7845), the received packets as they are.
pub struct OggOpus {
    path: PathBuf,
    out: PacketWriter<'static, Counted<BufWriter<File>>>,
    /// The file's length at the last page that reached it whole.
    good: u64,
    serial: u32,
    /// Samples decoded through the last packet written, pre-skip included: the granule
    /// position.
    granule: u64,
    since_checkpoint: u64,
}

impl OggOpus {
    /// Creates the file and writes its two header pages. `pre_skip`: samples of the decoder's
    /// output that precede the sender's first sample (its encoder's lookahead), so a player
    /// places sample 0 where the sender's was; `title` names the stem.
    pub fn create(path: &Path, pre_skip: u16, title: &str) -> io::Result<Self> {
        let file = BufWriter::new(File::create_new(path)?);
        let mut out = PacketWriter::new(Counted {
            inner: file,
            bytes: 0,
        });
        // Any serial will do for a file of one stream; a fixed one keeps takes reproducible.
        let serial = 0x4563_686f;
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(CHANNELS as u8);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&INTERNAL_RATE_HZ.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        out.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = b"Echoel Jam";
        let comment = format!("TITLE={title}");
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&1u32.to_le_bytes());
        tags.extend_from_slice(&(comment.len() as u32).to_le_bytes());
        tags.extend_from_slice(comment.as_bytes());
        out.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)?;
        out.inner_mut().flush()?;
        Ok(Self {
            path: path.to_owned(),
            good: out.inner().bytes,
            out,
            serial,
            granule: u64::from(pre_skip),
            since_checkpoint: 0,
        })
    }

    fn write(&mut self, packet: Vec<u8>, samples: u64) -> io::Result<()> {
        self.granule += samples;
        self.since_checkpoint += samples;
        let end = if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.since_checkpoint = 0;
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        self.out
            .write_packet(packet, self.serial, end, self.granule)?;
        if end == PacketWriteEndInfo::EndPage {
            self.out.inner_mut().flush()?;
            self.good = self.out.inner().bytes;
        }
        Ok(())
    }
}

/// A packet that tells a decoder a frame of `samples` was lost: its table-of-contents byte
/// alone (CELT, fullband, stereo, one frame), which libopus and every conforming decoder
/// conceal. `samples` must be 120, 240, 480 or 960.
fn lost_frame(samples: u64) -> Vec<u8> {
    // RFC 6716 §3.1: configurations 28–31 are CELT-only fullband at 2.5, 5, 10 and 20 ms.
    let config: u8 = match samples {
        120 => 28,
        240 => 29,
        480 => 30,
        _ => 31,
    };
    vec![config << 3 | 1 << 2]
}

/// Splits `samples` into Opus frame lengths, longest first (a remainder under 2.5 ms is
/// rounded up to one: a sender's frames are whole multiples of it).
fn frames_of(mut samples: u64) -> impl Iterator<Item = u64> {
    std::iter::from_fn(move || {
        if samples == 0 {
            return None;
        }
        let f = [960, 480, 240, 120]
            .into_iter()
            .find(|&f| f <= samples)
            .unwrap_or(120);
        samples = samples.saturating_sub(f);
        Some(f)
    })
}

impl Sink for OggOpus {
    fn packet(&mut self, payload: &[u8], samples: u64) -> io::Result<()> {
        self.write(payload.to_vec(), samples)
    }

    fn gap(&mut self, samples: u64) -> io::Result<()> {
        for f in frames_of(samples) {
            self.write(lost_frame(f), f)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        // An empty last packet ends the stream on a page of its own, as the format allows.
        self.out.write_packet(
            Vec::new(),
            self.serial,
            PacketWriteEndInfo::EndStream,
            self.granule,
        )?;
        self.out.inner_mut().flush()
    }

    fn abandon(self: Box<Self>) -> io::Result<()> {
        let (path, good) = (self.path.clone(), self.good);
        // Whatever it still holds may not reach the disk; the file ends at its last page.
        drop(self);
        OpenOptions::new().write(true).open(path)?.set_len(good)
    }

    fn bytes(&self) -> u64 {
        self.out.inner().bytes
    }
}

/// 32-bit float WAV of the received packets' decode.
pub struct Wav {
    /// The part being written.
    path: PathBuf,
    /// The first part's path, and which part this is (1 first).
    first: PathBuf,
    part: u32,
    /// Bytes a part holds at most, and what the finished parts hold.
    limit: u64,
    finished: u64,
    out: hound::WavWriter<BufWriter<File>>,
    /// Samples (per channel and channel) whose header patch reached the disk.
    good: u32,
    decoder: opus::Decoder,
    pcm: Vec<f32>,
    /// Decoded samples still to drop (the sender's encoder lookahead).
    skip: u64,
    since_checkpoint: u64,
}

impl Wav {
    /// Creates the file. `pre_skip` as for [`OggOpus::create`].
    pub fn create(path: &Path, pre_skip: u16) -> io::Result<Self> {
        Self::create_parts(path, pre_skip, WAV_MAX_BYTES)
    }

    /// [`Wav::create`], a part holding at most `limit` bytes.
    pub(super) fn create_parts(path: &Path, pre_skip: u16, limit: u64) -> io::Result<Self> {
        let out = Self::open(path)?;
        let decoder = opus::Decoder::new(INTERNAL_RATE_HZ, opus::Channels::Stereo)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            first: path.to_owned(),
            part: 1,
            limit,
            finished: 0,
            out,
            good: 0,
            decoder,
            pcm: vec![0.0; MAX_FRAME * CHANNELS as usize],
            skip: u64::from(pre_skip),
            since_checkpoint: 0,
        })
    }

    fn open(path: &Path) -> io::Result<hound::WavWriter<BufWriter<File>>> {
        let file = BufWriter::new(File::create_new(path)?);
        let spec = hound::WavSpec {
            channels: CHANNELS,
            sample_rate: INTERNAL_RATE_HZ,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        hound::WavWriter::new(file, spec).map_err(hound_io)
    }

    /// Closes this part whole and goes on in the next.
    fn next_part(&mut self) -> io::Result<()> {
        let stem = self.first.file_stem().unwrap_or_default().to_string_lossy();
        let path = self
            .first
            .with_file_name(format!("{stem}-{}.wav", self.part + 1));
        let old = std::mem::replace(&mut self.out, Self::open(&path)?);
        self.finished += u64::from(old.len()) * 4 + WAV_HEADER;
        old.finalize().map_err(hound_io)?;
        self.path = path;
        self.part += 1;
        self.good = 0;
        self.since_checkpoint = 0;
        Ok(())
    }

    fn write(&mut self, frames: usize) -> io::Result<()> {
        let part_bytes = u64::from(self.out.len()) * 4 + WAV_HEADER;
        if part_bytes + frames as u64 * 4 * u64::from(CHANNELS) > self.limit {
            self.next_part()?;
        }
        let skip = (self.skip as usize).min(frames);
        self.skip -= skip as u64;
        let ch = CHANNELS as usize;
        for &x in &self.pcm[skip * ch..frames * ch] {
            self.out.write_sample(x).map_err(hound_io)?;
        }
        self.since_checkpoint += frames as u64;
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.since_checkpoint = 0;
            self.out.flush().map_err(hound_io)?;
            self.good = self.out.len();
        }
        Ok(())
    }
}

fn hound_io(e: hound::Error) -> io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl Sink for Wav {
    fn packet(&mut self, payload: &[u8], samples: u64) -> io::Result<()> {
        // A packet libopus refuses is written as what it would have concealed.
        let n = match self.decoder.decode_float(payload, &mut self.pcm, false) {
            Ok(n) => n,
            Err(_) => {
                return self.gap(samples);
            }
        };
        self.write(n)
    }

    fn gap(&mut self, samples: u64) -> io::Result<()> {
        let mut concealed = 0;
        for f in frames_of(samples) {
            let n = f as usize;
            if concealed < CONCEAL_AT_MOST {
                let got = self
                    .decoder
                    .decode_float(&[], &mut self.pcm[..n * CHANNELS as usize], false)
                    .unwrap_or(0);
                self.pcm[got * CHANNELS as usize..n * CHANNELS as usize].fill(0.0);
            } else {
                self.pcm[..n * CHANNELS as usize].fill(0.0);
            }
            concealed += f;
            self.write(n)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.out.finalize().map_err(hound_io)
    }

    fn abandon(self: Box<Self>) -> io::Result<()> {
        let (path, good) = (self.path.clone(), u64::from(self.good));
        // Dropping the writer patches its header with samples that may not have reached
        // the disk: cut the file back to the last checkpoint and say so in the header.
        drop(self);
        let mut f = OpenOptions::new().read(true).write(true).open(path)?;
        let mut head = [0u8; 128];
        let n = f.read(&mut head)?;
        let at = head[..n]
            .windows(4)
            .position(|w| w == b"data")
            .ok_or_else(|| io::Error::other("no data chunk"))?;
        let data = good * 4;
        let end = at as u64 + 8 + data;
        f.set_len(end)?;
        f.seek(SeekFrom::Start(4))?;
        f.write_all(&((end - 8) as u32).to_le_bytes())?;
        f.seek(SeekFrom::Start(at as u64 + 4))?;
        f.write_all(&(data as u32).to_le_bytes())?;
        f.sync_all()
    }

    fn bytes(&self) -> u64 {
        // The parts before, and this one's header and samples.
        self.finished + u64::from(self.out.len()) * 4 + WAV_HEADER
    }
}

/// A WAV take of a remote stem with its packets kept beside it in a hidden Ogg Opus file:
/// what a gap fill rebuilds the WAV from once the take is done (then the packets go).
pub struct WavWithPackets {
    wav: Wav,
    packets: OggOpus,
}

impl WavWithPackets {
    /// The WAV at `path`, its packets at `packets`.
    pub fn create(path: &Path, packets: &Path, pre_skip: u16) -> io::Result<Self> {
        let wav = Wav::create(path, pre_skip)?;
        let packets = OggOpus::create(packets, pre_skip, "")?;
        Ok(Self { wav, packets })
    }
}

impl Sink for WavWithPackets {
    fn packet(&mut self, payload: &[u8], samples: u64) -> io::Result<()> {
        self.wav.packet(payload, samples)?;
        self.packets.packet(payload, samples)
    }

    fn gap(&mut self, samples: u64) -> io::Result<()> {
        self.wav.gap(samples)?;
        self.packets.gap(samples)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        let Self { wav, packets } = *self;
        Box::new(packets).finish()?;
        Box::new(wav).finish()
    }

    fn abandon(self: Box<Self>) -> io::Result<()> {
        let Self { wav, packets } = *self;
        let _ = Box::new(packets).abandon();
        Box::new(wav).abandon()
    }

    fn bytes(&self) -> u64 {
        self.wav.bytes() + self.packets.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_split_into_opus_frame_lengths() {
        assert_eq!(frames_of(1200).collect::<Vec<_>>(), [960, 240]);
        assert_eq!(frames_of(120).collect::<Vec<_>>(), [120]);
        assert_eq!(frames_of(50).collect::<Vec<_>>(), [120]);
        assert_eq!(frames_of(0).count(), 0);
    }

    #[test]
    fn a_lost_frame_is_a_table_of_contents_byte_libopus_conceals() {
        let mut d = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
        let mut pcm = vec![0.0; 2 * MAX_FRAME];
        for f in [120, 240, 480, 960] {
            let p = lost_frame(f);
            assert_eq!(p.len(), 1);
            assert_eq!(
                opus::packet::get_nb_samples(&p, 48_000).unwrap() as u64,
                f,
                "its length is the frame's"
            );
            assert_eq!(d.decode_float(&p, &mut pcm, false).unwrap() as u64, f);
        }
    }

    /// A long take goes on in numbered parts: read one after another they are the take,
    /// sample for sample.
    #[test]
    fn a_wav_past_its_size_goes_on_in_a_second_part_without_a_seam() {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::LowDelay)
                .unwrap();
        let packets: Vec<Vec<u8>> = (0..200)
            .map(|f| {
                let pcm: Vec<f32> = (0..240)
                    .map(|i| (0.01 * (f * 240 + i) as f32).sin() * 0.3)
                    .collect();
                let mut out = [0u8; 1275];
                let n = enc.encode_float(&pcm, &mut out).unwrap();
                out[..n].to_vec()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &Path, limit: u64| {
            let mut w: Box<dyn Sink> = Box::new(Wav::create_parts(path, 120, limit).unwrap());
            for p in &packets {
                w.packet(p, 120).unwrap();
            }
            w.gap(480).unwrap();
            let bytes = w.bytes();
            w.finish().unwrap();
            bytes
        };
        let read = |path: &Path| -> Vec<f32> {
            hound::WavReader::open(path)
                .unwrap()
                .into_samples::<f32>()
                .map(Result::unwrap)
                .collect()
        };
        let whole = dir.path().join("whole.wav");
        write(&whole, WAV_MAX_BYTES);
        let parted = dir.path().join("ana.wav");
        let bytes = write(&parted, 44 + 8 * 9_000);
        let mut joined = read(&parted);
        for n in 2..=3 {
            joined.extend(read(&dir.path().join(format!("ana-{n}.wav"))));
        }
        assert!(!dir.path().join("ana-4.wav").exists());
        assert_eq!(joined, read(&whole), "the parts are the take");
        let on_disk: u64 = ["ana.wav", "ana-2.wav", "ana-3.wav"]
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len())
            .sum();
        assert_eq!(bytes, on_disk, "its size counts every part");
    }
}
