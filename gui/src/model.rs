//! What the editor shows and what it asks for. The editor never reaches into the session or
//! the engine: it draws a [`Snapshot`] published by the plugin's control thread and pushes
//! [`Command`]s back, so a slow frame or a closed window can never hold up audio.

/// Everything the editor shows, as of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The room connection.
    pub link: LinkStatus,
    /// This musician.
    pub me: Me,
    /// The other members, present or recently gone.
    pub people: Vec<Person>,
    /// The shared session document.
    pub session: SessionView,
    /// The host's tempo, when it reports one.
    pub host_tempo: Option<f64>,
    /// Whether host tempo changes are proposed to the room.
    pub push_host_tempo: bool,
    /// The room's network quality, from this member's side.
    pub network: NetworkQuality,
    /// The host renders offline (a bounce): nothing is sent to the room or played from it.
    pub rendering_offline: bool,
    /// The take being recorded, or how the last one ended.
    pub recording: RecordingView,
    /// Auxiliary outputs the host gave this plugin (0: none; routing is not offered).
    pub aux_buses: usize,
    /// Stems routed to an auxiliary output leave the main output.
    pub routed_leave_main: bool,
}

/// A take: each stem heard and what we send, each to a file of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordingView {
    /// Recording now.
    pub active: bool,
    /// The take's folder, once one started.
    pub take: String,
    /// Seconds recorded.
    pub elapsed_s: f32,
    /// Files in the take.
    pub files: usize,
    /// Megabytes written.
    pub written_mb: f64,
    /// Free space where the takes go, megabytes, when known.
    pub free_mb: Option<f64>,
    /// What went wrong (a full, missing or read-only folder); the audio plays on.
    pub error: Option<String>,
    /// The take has ended and its gaps are being filled from their senders.
    pub filling: bool,
    /// Seconds of the take's gaps filled with what was played.
    pub filled_s: f32,
}

impl RecordingView {
    /// Below this much free space (2 GB: about 45 minutes of four WAV stems) the editor
    /// warns before the disk fills mid-take.
    pub const LOW_SPACE_MB: f64 = 2048.0;
}

/// Where the connection stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LinkStatus {
    /// Not connected: no invite yet, or disconnected.
    #[default]
    Offline,
    /// Reaching the relay.
    Connecting,
    /// In the room.
    Joined,
    /// Lost the relay; trying again. The text says why.
    Retrying(String),
    /// Gave up; the text says why ("wrong room secret — ask for a fresh invite").
    Failed(String),
}

/// This musician.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Me {
    /// Display name.
    pub name: String,
    /// Instrument.
    pub instrument: String,
    /// Room id, when connected.
    pub room: String,
    /// The room's invite as it stands (a rotation changes it), when connected.
    pub invite: String,
    /// The track this musician plays.
    pub active_track: Option<String>,
    /// Peak input level, 0–1 (linear).
    pub input_level: f32,
    /// The name this instance's track goes to the room under; `None` while it only listens.
    pub stem: Option<String>,
    /// Every stem this musician sends from this DAW (its plugins share one connection).
    pub stems: Vec<String>,
}

/// How another member's audio reaches us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Peer to peer, across the internet.
    Direct,
    /// Peer to peer, on one local network.
    Lan,
    /// Through the relay.
    Relay,
}

/// Another member of the room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Person {
    /// Stable id across reconnections.
    pub participant: u64,
    /// Display name.
    pub name: String,
    /// Instrument.
    pub instrument: String,
    /// Track id they play, if they chose one.
    pub track: Option<String>,
    /// Audio path.
    pub path: Option<PathKind>,
    /// The path in words, and for the relay why (shown on hover).
    pub path_note: String,
    /// Round-trip time.
    pub rtt_ms: Option<f32>,
    /// Our jitter buffer's depth for them.
    pub jitter_ms: f32,
    /// Their frames lost or concealed, percent.
    pub loss_pct: f32,
    /// Their peak level as we hear it, 0–1.
    pub level: f32,
    /// Our gain for them, dB.
    pub gain_db: f32,
    /// We muted them.
    pub muted: bool,
    /// We solo them.
    pub solo: bool,
    /// Not heard from within the presence timeout.
    pub gone: bool,
    /// Seconds since we last heard from them, when known.
    pub last_seen_s: Option<f32>,
    /// Typing in the chart now.
    pub typing: bool,
    /// Their chart cursor and selection end (character indices).
    pub cursor: Option<(usize, usize)>,
    /// They only listen: they send nothing.
    pub listening: bool,
    /// The stems they send, by name, when they send several.
    pub stems: Vec<String>,
    /// Who they are: the rows of one musician's plugins in several processes (one member key)
    /// share it; 0 where not known.
    pub person: u64,
    /// One of our own plugins in another process: its track is in this DAW, not heard from
    /// the room.
    pub yours: bool,
    /// Where each stream they send plays here.
    pub outputs: Vec<StemOut>,
}

/// One stream a member sends, and the output it plays on here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StemOut {
    /// The stem's number within its sender.
    pub stem: u16,
    /// Its name (empty for a plugin's one stream).
    pub name: String,
    /// 0: the main output; `k`: auxiliary output `k`.
    pub bus: u8,
}

impl Person {
    /// The musician this row is one plugin of: the same on every row of theirs.
    pub fn musician(&self) -> u64 {
        if self.person != 0 {
            self.person
        } else {
            self.participant
        }
    }
}

/// The shared session document, read for display.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    /// BPM.
    pub tempo: f64,
    /// Time signature, such as "4/4".
    pub meter: String,
    /// Key, such as "E minor".
    pub key: String,
    /// Tracks.
    pub tracks: Vec<TrackView>,
    /// The chord chart.
    pub chart: String,
    /// Markers: beat and label.
    pub markers: Vec<(f64, String)>,
    /// Our tempo lost to a concurrent one.
    pub tempo_notice: Option<TempoNoticeView>,
    /// Note fields changed at once by two members.
    pub note_conflicts: Vec<NoteConflictView>,
}

impl Default for SessionView {
    fn default() -> Self {
        Self {
            tempo: 120.0,
            meter: "4/4".into(),
            key: String::new(),
            tracks: Vec::new(),
            chart: String::new(),
            markers: Vec::new(),
            tempo_notice: None,
            note_conflicts: Vec::new(),
        }
    }
}

/// A track of the document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Who added it.
    pub owner: String,
    /// Instrument.
    pub instrument: String,
    /// Muted for everyone.
    pub muted: bool,
    /// How many notes it holds.
    pub notes: usize,
}

/// "Your tempo lost": what we wrote and what the room has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TempoNoticeView {
    /// Ours.
    pub mine: f64,
    /// The room's.
    pub theirs: f64,
}

/// A note field with concurrent values.
#[derive(Debug, Clone, PartialEq)]
pub struct NoteConflictView {
    /// Track id.
    pub track: String,
    /// Track name, for display.
    pub track_name: String,
    /// Note id.
    pub note: String,
    /// Field name.
    pub field: String,
    /// The values, the one in effect first.
    pub values: Vec<f64>,
}

/// Network summary over every stream we receive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkQuality {
    /// Worst loss of any member, percent.
    pub worst_loss_pct: f32,
    /// Deepest jitter buffer, ms.
    pub max_jitter_ms: f32,
    /// Largest round trip, ms.
    pub max_rtt_ms: f32,
    /// Frames rebuilt from redundancy.
    pub recovered: u64,
    /// Frames concealed (lost or late).
    pub concealed: u64,
    /// Our outgoing audio, kbit/s.
    pub send_kbps: f32,
    /// How our audio is protected against loss.
    pub protection: ProtectionView,
    /// Whether our router forwards a port to us, in words.
    pub port_mapping: String,
}

/// Loss protection of our audio: earlier frames each datagram carries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProtectionView {
    /// Earlier frames carried now.
    pub frames: u8,
    /// Chosen by what the listeners report, not forced by the setting.
    pub auto: bool,
    /// The worst loss (percent, before protection) a listener reports of our audio.
    pub reported_loss_pct: Option<f32>,
}

impl ProtectionView {
    /// In words, for the Network panel.
    pub fn describe(&self) -> String {
        let carried = match self.frames {
            0 => "off".to_string(),
            1 => "1 earlier frame".to_string(),
            n => format!("{n} earlier frames"),
        };
        match (self.auto, self.reported_loss_pct) {
            (false, _) => format!("{carried} (set by hand)"),
            (true, None) => format!("{carried} (auto, no report yet)"),
            (true, Some(l)) => format!("{carried} (auto: listeners lose {l:.1} %)"),
        }
    }
}

/// How the network feels, for one glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// Nothing to worry about.
    Good,
    /// Audible now and then.
    Fair,
    /// Expect dropouts or a long delay.
    Poor,
}

impl NetworkQuality {
    /// Loss above 1 % or a buffer over 40 ms is heard as dropouts or lag; above 0.1 % or 20 ms
    /// it is noticed by a careful ear.
    pub fn grade(&self) -> Quality {
        if self.worst_loss_pct > 1.0 || self.max_jitter_ms > 40.0 || self.max_rtt_ms > 120.0 {
            Quality::Poor
        } else if self.worst_loss_pct > 0.1 || self.max_jitter_ms > 20.0 || self.max_rtt_ms > 60.0 {
            Quality::Fair
        } else {
            Quality::Good
        }
    }
}

/// What the musician asked for. Applied by the control thread, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Join the room of an invite.
    Connect {
        /// The invite as pasted.
        invite: String,
        /// Display name.
        name: String,
        /// Instrument.
        instrument: String,
    },
    /// Leave the room.
    Disconnect,
    /// Give the room a new secret: everyone in it moves to the new invite, every invite sent
    /// before stops working.
    RotateInvite,
    /// Propose a tempo.
    SetTempo(f64),
    /// Propose a time signature.
    SetMeter(String),
    /// Propose a key.
    SetKey(String),
    /// Answer a tempo conflict.
    ResolveTempo {
        /// Write ours again (`true`) or take the room's.
        keep_mine: bool,
    },
    /// Follow the host's tempo.
    SetPushHostTempo(bool),
    /// Play one of a member's stems on an output (0: main, `k`: auxiliary output `k`).
    SetStemRoute {
        /// Who.
        participant: u64,
        /// Which of their stems.
        stem: u16,
        /// Where.
        bus: u8,
    },
    /// Stems routed to an auxiliary output leave the main output (otherwise they play on both).
    SetRoutedLeaveMain(bool),
    /// Name this instance's stem (empty: the host's track name, else the instrument).
    SetStemName(String),
    /// Add a track.
    AddTrack {
        /// Name.
        name: String,
        /// Instrument.
        instrument: String,
    },
    /// Mute a track for everyone.
    SetTrackMuted {
        /// Track id.
        track: String,
        /// Muted.
        muted: bool,
    },
    /// Choose the track this musician plays.
    SetActiveTrack(Option<String>),
    /// Replace `delete` characters at `pos` of the chart with `insert`.
    EditChart {
        /// Character index.
        pos: usize,
        /// Characters removed.
        delete: usize,
        /// Text inserted.
        insert: String,
    },
    /// Where this musician's chart cursor is (shown to others).
    ChartCursor {
        /// Cursor and selection end, if the chart has focus.
        cursor: Option<(usize, usize)>,
        /// Typing now.
        typing: bool,
    },
    /// Add a marker.
    AddMarker {
        /// Beat.
        beat: f64,
        /// Label.
        label: String,
    },
    /// Settle a note conflict on one value.
    PickNoteValue {
        /// Track id.
        track: String,
        /// Note id.
        note: String,
        /// Field.
        field: String,
        /// Chosen value.
        value: f64,
    },
    /// Our gain for a member.
    SetPeerGain {
        /// Who.
        participant: u64,
        /// dB.
        gain_db: f32,
    },
    /// Mute a member for us.
    SetPeerMuted {
        /// Who.
        participant: u64,
        /// Muted.
        muted: bool,
    },
    /// Solo a member for us.
    SetPeerSolo {
        /// Who.
        participant: u64,
        /// Solo.
        solo: bool,
    },
    /// Record a take into a new folder under `folder`.
    StartRecording {
        /// Where takes go.
        folder: String,
        /// Ogg Opus (the packets as they came) rather than WAV.
        opus: bool,
    },
    /// End the take.
    StopRecording,
}

/// The single edit that turns `old` into `new`, in characters: common prefix and suffix kept.
/// `None` when they are equal.
pub fn chart_edit(old: &str, new: &str) -> Option<(usize, usize, String)> {
    if old == new {
        return None;
    }
    let a: Vec<char> = old.chars().collect();
    let b: Vec<char> = new.chars().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let delete = a.len() - prefix - suffix;
    let insert: String = b[prefix..b.len() - suffix].iter().collect();
    Some((prefix, delete, insert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_edits_are_minimal_and_apply() {
        for (old, new) in [
            ("", "Am"),
            ("Am F C G", "Am F C G\nDm"),
            ("Am F C G", "Am C G"),
            ("aaa", "aaaa"),
            ("Em7 — A7", "Em9 — A7"),
            ("abc", ""),
        ] {
            let (pos, delete, insert) = chart_edit(old, new).unwrap();
            let mut chars: Vec<char> = old.chars().collect();
            chars.splice(pos..pos + delete, insert.chars());
            assert_eq!(
                chars.into_iter().collect::<String>(),
                new,
                "{old:?} → {new:?}"
            );
            assert!(delete + insert.chars().count() <= old.len().max(new.len()));
        }
        assert_eq!(chart_edit("same", "same"), None);
        assert_eq!(chart_edit("Am F", "Am C F"), Some((3, 0, "C ".into())));
    }

    #[test]
    fn quality_grades_by_the_worst_member() {
        let mut q = NetworkQuality::default();
        assert_eq!(q.grade(), Quality::Good);
        q.worst_loss_pct = 0.5;
        assert_eq!(q.grade(), Quality::Fair);
        q.max_jitter_ms = 45.0;
        assert_eq!(q.grade(), Quality::Poor);
    }
}
