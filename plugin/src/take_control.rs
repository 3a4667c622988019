//! The editor's record button on the control thread: takes started and stopped through the
//! bridge, and what the editor shows of them (time, files, free space, what went wrong).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echoel_gui::model::RecordingView;

use crate::bridge::Bridge;
use crate::record::{self, Format, RecordStatus};

/// Free space is looked up this often (a `statvfs`, not every tick).
const FREE_SPACE_EVERY: Duration = Duration::from_secs(2);

/// Takes started from the editor.
#[derive(Default)]
pub struct TakeControl {
    started: Option<Instant>,
    /// How the last take ended (its gaps filled meanwhile), shown until the next one starts.
    last: Option<(Arc<Mutex<RecordStatus>>, f32)>,
    /// Why a take could not start.
    error: Option<String>,
    folder: PathBuf,
    free: Option<(Instant, Option<u64>)>,
}

impl TakeControl {
    /// Starts a take under `folder` (the default folder is made on first use; a folder the
    /// musician chose must be there).
    pub fn start(&mut self, bridge: &Bridge, folder: &str, opus: bool, name: &str) {
        let folder = PathBuf::from(folder.trim());
        if record::default_folder().as_ref() == Some(&folder) {
            let _ = std::fs::create_dir_all(&folder);
        }
        let format = if opus { Format::Opus } else { Format::Wav };
        self.error = None;
        self.last = None;
        self.free = None;
        match bridge.start_recording(&folder, format, name) {
            Ok(()) => self.started = Some(Instant::now()),
            Err(e) => self.error = Some(e.to_string()),
        }
        self.folder = folder;
    }

    /// Ends the take; every file is closed whole, and its gaps are filled meanwhile.
    pub fn stop(&mut self, bridge: &Bridge) {
        let elapsed = self.elapsed();
        self.started = None;
        self.last = bridge.stop_recording_in_background().map(|s| (s, elapsed));
    }

    fn elapsed(&self) -> f32 {
        self.started.map_or(0.0, |t| t.elapsed().as_secs_f32())
    }

    /// What the editor shows.
    pub fn view(&mut self, bridge: &Bridge) -> RecordingView {
        let (status, elapsed, active) = match bridge.recording() {
            Some(s) => (Some(s), self.elapsed(), true),
            None => match &self.last {
                Some((s, t)) => (
                    Some(s.lock().unwrap_or_else(|e| e.into_inner()).clone()),
                    *t,
                    false,
                ),
                None => (None, 0.0, false),
            },
        };
        if active
            && self
                .free
                .is_none_or(|(at, _)| at.elapsed() >= FREE_SPACE_EVERY)
        {
            self.free = Some((Instant::now(), record::free_bytes(&self.folder)));
        }
        let mut v = RecordingView {
            active,
            elapsed_s: elapsed,
            free_mb: self
                .free
                .and_then(|(_, b)| b)
                .map(|b| b as f64 / 1e6)
                .filter(|_| active),
            error: self.error.clone(),
            ..RecordingView::default()
        };
        if let Some(s) = status {
            v.take = s
                .folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            v.files = s.files.len();
            v.filling = s.filling;
            v.filled_s =
                s.files.iter().map(|f| f.counts.filled_samples).sum::<u64>() as f32 / 48_000.0;
            v.written_mb = s.files.iter().map(|f| f.bytes).sum::<u64>() as f64 / 1e6;
            if let Some(e) = s.errors.last() {
                v.error = Some(e.to_string());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echoel_engine::{Engine, EngineConfig};

    fn bridge() -> (Engine, Bridge) {
        let (engine, link) = Engine::new(EngineConfig {
            sample_rate_hz: 48_000,
            host_channels: 2,
            max_block_frames: 64,
        })
        .unwrap();
        (engine, Bridge::new(link).unwrap())
    }

    #[test]
    fn the_editor_sees_a_take_start_run_and_end_and_a_missing_folder_said_plainly() {
        let (_engine, bridge) = bridge();
        let dir = tempfile::tempdir().unwrap();
        let mut takes = TakeControl::default();
        let missing = dir.path().join("usb-stick");
        takes.start(&bridge, &missing.display().to_string(), false, "mara");
        let v = takes.view(&bridge);
        assert!(!v.active);
        assert!(
            v.error
                .as_deref()
                .is_some_and(|e| e.contains("does not exist")),
            "{v:?}"
        );
        takes.start(&bridge, &dir.path().display().to_string(), true, "mara");
        let v = takes.view(&bridge);
        assert!(v.active && v.error.is_none(), "{v:?}");
        assert_eq!(v.take, "take-001");
        assert!(v.free_mb.is_some_and(|f| f > 0.0), "{v:?}");
        assert!(bridge
            .recording_flag()
            .load(std::sync::atomic::Ordering::Relaxed));
        takes.stop(&bridge);
        let v = takes.view(&bridge);
        assert!(
            !v.active && v.take == "take-001",
            "the last take stays shown: {v:?}"
        );
        assert!(!bridge
            .recording_flag()
            .load(std::sync::atomic::Ordering::Relaxed));
    }
}
