//! The plugin's parameters and persisted settings.
//!
//! Automatable: what a musician rides during a song (send gain and mute, monitor level, remote
//! level) and the loopback switch. Everything that reconfigures the codec or the buffer is a
//! non-automatable setting: changing it mid-phrase is never musical.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use echoel_engine::{CodecSettings, EngineParams, FrameDuration, JitterMode};
use nice_plug::prelude::*;

/// Level faders run from −60 dB (treated as off) to +6 dB.
const LEVEL_MIN_DB: f32 = -60.0;
const LEVEL_MAX_DB: f32 = 6.0;

/// Opus frame size as offered to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum FrameChoice {
    /// 2.5 ms frames.
    #[id = "2.5ms"]
    #[name = "2.5 ms"]
    Ms2_5,
    /// 5 ms frames.
    #[id = "5ms"]
    #[name = "5 ms"]
    Ms5,
    /// 10 ms frames.
    #[id = "10ms"]
    #[name = "10 ms"]
    Ms10,
    /// 20 ms frames.
    #[id = "20ms"]
    #[name = "20 ms"]
    Ms20,
}

impl From<FrameChoice> for FrameDuration {
    fn from(c: FrameChoice) -> Self {
        match c {
            FrameChoice::Ms2_5 => Self::Ms2_5,
            FrameChoice::Ms5 => Self::Ms5,
            FrameChoice::Ms10 => Self::Ms10,
            FrameChoice::Ms20 => Self::Ms20,
        }
    }
}

/// Channels sent to the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SendChannels {
    /// Both channels.
    #[id = "stereo"]
    Stereo,
    /// The sum of both channels: half the bits for a mono source.
    #[id = "mono"]
    Mono,
}

/// How the jitter buffer's depth is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum JitterChoice {
    /// The engine chooses.
    #[id = "auto"]
    Auto,
    /// The depth setting below.
    #[id = "manual"]
    Manual,
}

/// Echoel Jam's parameters.
///
/// # Thread
/// Shared by the host, the editor and the audio thread; every field is atomic or locked only
/// off the audio thread (the persisted strings).
#[derive(Params)]
pub struct EchoelParams {
    /// Level of this track as sent to the room.
    #[id = "send_gain"]
    pub send_gain: FloatParam,
    /// Sends silence while on.
    #[id = "send_mute"]
    pub send_mute: BoolParam,
    /// Level of the dry input in this track's output (zero latency, never coded).
    #[id = "monitor"]
    pub monitor_level: FloatParam,
    /// Level of the other musicians in this track's output.
    #[id = "remote"]
    pub remote_level: FloatParam,
    /// Hear yourself through the codec and the jitter buffer.
    #[id = "loopback"]
    pub loopback: BoolParam,

    /// Opus bitrate.
    #[id = "bitrate"]
    pub bitrate_kbps: IntParam,
    /// Opus frame size.
    #[id = "frame"]
    pub frame: EnumParam<FrameChoice>,
    /// Mono or stereo sending.
    #[id = "send_channels"]
    pub send_channels: EnumParam<SendChannels>,
    /// Opus complexity (CPU versus quality).
    #[id = "complexity"]
    pub complexity: IntParam,
    /// Jitter-buffer mode.
    #[id = "jitter_mode"]
    pub jitter_mode: EnumParam<JitterChoice>,
    /// Jitter-buffer depth in manual mode.
    #[id = "jitter_depth"]
    pub jitter_depth_ms: FloatParam,
    /// Earlier frames each packet also carries (0–2), so others fill losses from the next:
    /// forced, when automatic loss protection is off.
    #[id = "redundancy"]
    pub redundancy: IntParam,
    /// Loss protection by the loss the others report (on by default); off: `redundancy`
    /// frames always.
    #[id = "redundancy_auto"]
    pub redundancy_auto: BoolParam,
    /// Ask the home router to forward a port to us (PCP, NAT-PMP or UPnP), so studios whose
    /// routers defeat hole punching still get a direct path (on by default; read at connect).
    #[id = "port_mapping"]
    pub port_mapping: BoolParam,
    /// Hear the room and send nothing (an instance on an empty track that picks up the band):
    /// the others see it as listening.
    #[id = "receive_only"]
    pub receive_only: BoolParam,

    /// The name others see.
    #[persist = "display-name"]
    pub display_name: Arc<RwLock<String>>,
    /// The instrument others see.
    #[persist = "instrument"]
    pub instrument: Arc<RwLock<String>>,
    /// The name of the stem this instance sends (empty: the host's track name, else the
    /// instrument, else "stem N").
    #[persist = "stem-name"]
    pub stem_name: Arc<RwLock<String>>,
    /// Propose the host's tempo to the room whenever it changes.
    #[persist = "push-host-tempo"]
    pub push_host_tempo: Arc<AtomicBool>,
    /// The room this instance joins (empty: none). It carries the room secret, like a key kept
    /// in the project.
    #[persist = "invite"]
    pub invite: Arc<RwLock<String>>,
    /// The room's session document (automerge bytes), kept with the project so it opens with
    /// the song as it was, and merges with the room's on reconnect.
    #[persist = "session"]
    pub session_doc: Arc<RwLock<CompactBytes>>,
    /// Our mix of each member (gain, mute, solo), by the name they play under: participant
    /// ids change from session to session, a bandmate's name does not.
    #[persist = "mix"]
    pub mix: Arc<RwLock<BTreeMap<String, SavedMix>>>,
    /// Our routing of the others' stems to auxiliary outputs (bus 1–8), by the name they play
    /// under and the stem's name ([`crate::routing::saved_key`]); absent: the main output.
    #[persist = "routing"]
    pub routing: Arc<RwLock<BTreeMap<String, u8>>>,
    /// Stems routed to an auxiliary output leave the main output (otherwise heard on both).
    #[persist = "routed-leave-main"]
    pub routed_leave_main: Arc<AtomicBool>,
    /// Where this instance records its takes (empty: the default, see
    /// [`crate::record::default_folder`]).
    #[persist = "record-folder"]
    pub record_folder: Arc<RwLock<String>>,
}

/// Our mix of one member, as kept in the project.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedMix {
    /// Level in our mix, dB.
    pub gain_db: f32,
    /// Muted in our mix.
    pub muted: bool,
    /// Soloed in our mix.
    pub solo: bool,
}

/// Bytes kept in the project as base64 text: a JSON array of numbers makes a 100 kB document
/// ~400 kB of project file. Projects saved with the array still load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactBytes(pub Vec<u8>);

impl serde::Serialize for CompactBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for CompactBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = CompactBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("base64 text or an array of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CompactBytes, E> {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(CompactBytes)
                    .map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CompactBytes, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(CompactBytes(bytes))
            }
        }
        d.deserialize_any(Visit)
    }
}

fn level_param(name: &str) -> FloatParam {
    FloatParam::new(
        name,
        0.0,
        FloatRange::Linear {
            min: LEVEL_MIN_DB,
            max: LEVEL_MAX_DB,
        },
    )
    .with_step_size(0.1)
    .with_unit(" dB")
    .with_value_to_string(Arc::new(|db| {
        if db <= LEVEL_MIN_DB {
            "-inf".to_owned()
        } else {
            format!("{db:.1}")
        }
    }))
}

/// Fader value in dB to linear gain; the bottom of the fader is silence.
fn level_gain(db: f32) -> f32 {
    if db <= LEVEL_MIN_DB {
        0.0
    } else {
        util::db_to_gain(db)
    }
}

impl Default for EchoelParams {
    fn default() -> Self {
        let codec = CodecSettings::default();
        Self {
            send_gain: level_param("Send Gain"),
            send_mute: BoolParam::new("Send Mute", false),
            monitor_level: level_param("Monitor Level"),
            remote_level: level_param("Remote Level"),
            loopback: BoolParam::new("Loopback", false),
            bitrate_kbps: IntParam::new(
                "Bitrate",
                (codec.bitrate_bps / 1000) as i32,
                IntRange::Linear {
                    min: (echoel_engine::codec::MIN_BITRATE_BPS / 1000) as i32,
                    max: (echoel_engine::codec::MAX_BITRATE_BPS / 1000) as i32,
                },
            )
            .with_unit(" kbit/s")
            .non_automatable(),
            frame: EnumParam::new("Frame Size", FrameChoice::Ms2_5).non_automatable(),
            send_channels: EnumParam::new("Send Channels", SendChannels::Stereo).non_automatable(),
            complexity: IntParam::new(
                "Complexity",
                i32::from(codec.complexity),
                IntRange::Linear { min: 0, max: 10 },
            )
            .non_automatable(),
            jitter_mode: EnumParam::new("Jitter Mode", JitterChoice::Auto).non_automatable(),
            redundancy: IntParam::new("Redundancy", 0, IntRange::Linear { min: 0, max: 2 })
                .with_unit(" frames")
                .non_automatable(),
            redundancy_auto: BoolParam::new("Auto Loss Protection", true).non_automatable(),
            port_mapping: BoolParam::new("Port Mapping", true).non_automatable(),
            receive_only: BoolParam::new("Receive Only", false).non_automatable(),
            jitter_depth_ms: FloatParam::new(
                "Jitter Depth",
                10.0,
                FloatRange::Linear {
                    min: 0.0,
                    max: echoel_engine::jitter::MAX_DEPTH_MS as f32,
                },
            )
            .with_step_size(0.5)
            .with_unit(" ms")
            .non_automatable(),
            display_name: Arc::new(RwLock::new(String::new())),
            instrument: Arc::new(RwLock::new(String::new())),
            stem_name: Arc::new(RwLock::new(String::new())),
            push_host_tempo: Arc::new(AtomicBool::new(false)),
            invite: Arc::new(RwLock::new(String::new())),
            record_folder: Arc::new(RwLock::new(String::new())),
            routing: Arc::new(RwLock::new(BTreeMap::new())),
            routed_leave_main: Arc::new(AtomicBool::new(false)),
            session_doc: Arc::new(RwLock::new(CompactBytes::default())),
            mix: Arc::new(RwLock::new(BTreeMap::new())),
        }
    }
}

impl EchoelParams {
    /// The engine's view of the parameters. Reads atomics only.
    ///
    /// # Thread
    /// Audio thread (also safe anywhere else).
    pub fn engine_params(&self) -> EngineParams {
        EngineParams {
            send_gain: level_gain(self.send_gain.value()),
            send_muted: self.send_mute.value(),
            monitor_gain: level_gain(self.monitor_level.value()),
            remote_gain: level_gain(self.remote_level.value()),
            loopback: self.loopback.value(),
            codec: CodecSettings {
                bitrate_bps: self.bitrate_kbps.value().max(0) as u32 * 1000,
                frame: self.frame.value().into(),
                send_mono: self.send_channels.value() == SendChannels::Mono,
                complexity: self.complexity.value().clamp(0, 10) as u8,
            },
            jitter: match self.jitter_mode.value() {
                JitterChoice::Auto => JitterMode::Auto,
                JitterChoice::Manual => JitterMode::Manual {
                    depth_ms: self.jitter_depth_ms.value(),
                },
            },
            // Set by the instance while a take is recorded.
            hold_depth: false,
            routed_leave_main: self.routed_leave_main.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_unity_and_the_faders_bottom_is_silence() {
        let p = EchoelParams::default().engine_params();
        assert_eq!(p.send_gain, 1.0);
        assert_eq!(p.monitor_gain, 1.0);
        assert_eq!(p.remote_gain, 1.0);
        assert!(!p.loopback);
        assert_eq!(p.codec, CodecSettings::default());
        assert_eq!(level_gain(LEVEL_MIN_DB), 0.0);
        assert!((level_gain(-6.0) - 0.501).abs() < 0.001);
    }

    #[test]
    fn the_session_document_round_trips_through_the_plugin_state() {
        let mut doc = echoel_net::doc::SessionDoc::new().unwrap();
        doc.set_tempo(87.0).unwrap();
        doc.add_track("cello", "ana", "cello").unwrap();
        let saved = EchoelParams::default();
        let bytes = doc.save();
        *saved.session_doc.write().unwrap() = CompactBytes(bytes.clone());
        saved.mix.write().unwrap().insert(
            "Bo".into(),
            SavedMix {
                gain_db: -6.0,
                muted: true,
                solo: false,
            },
        );
        saved
            .routing
            .write()
            .unwrap()
            .insert("Ilse/vocals".into(), 3);
        saved.routed_leave_main.store(true, Ordering::Relaxed);
        let fields = saved.serialize_fields();
        // Compact: base64 is 4/3 of the bytes, never the ~4× of a JSON array of numbers.
        let stored = fields.get("session").unwrap();
        assert!(
            stored.len() < bytes.len() * 4 / 3 + 8,
            "{} for {}",
            stored.len(),
            bytes.len()
        );
        let restored = EchoelParams::default();
        restored.deserialize_fields(&fields);
        let back = restored.session_doc.read().unwrap().0.clone();
        let back = echoel_net::doc::SessionDoc::load(&back).unwrap();
        assert_eq!(back.to_json(), doc.to_json());
        assert_eq!(back.tempo(), 87.0);
        assert_eq!(*restored.mix.read().unwrap(), *saved.mix.read().unwrap());
        assert_eq!(
            restored.routing.read().unwrap().get("Ilse/vocals"),
            Some(&3)
        );
        assert!(restored.engine_params().routed_leave_main);
    }

    #[test]
    fn a_project_saved_with_the_document_as_numbers_still_opens() {
        let doc = echoel_net::doc::SessionDoc::new().unwrap().save();
        let mut fields = std::collections::BTreeMap::new();
        let numbers: Vec<String> = doc.iter().map(u8::to_string).collect();
        fields.insert("session".to_owned(), format!("[{}]", numbers.join(",")));
        let restored = EchoelParams::default();
        restored.deserialize_fields(&fields);
        assert_eq!(restored.session_doc.read().unwrap().0, doc);
    }
}
