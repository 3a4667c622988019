//! Small files written so that a crash or a full disk never leaves half a file behind.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and a rename; `private` restricts it to
/// the owner (keys).
pub fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// The relay's rooms: one line per room, `ROOM-ID VERIFIER-HEX`, in `DIR/rooms`. Only
/// verifiers are stored: nothing here opens audio or a document.
pub struct RoomStore {
    path: std::path::PathBuf,
}

impl RoomStore {
    /// The store in the relay's state folder.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("rooms"),
        }
    }

    /// Every valid room; malformed lines are skipped with a warning, never fatal.
    pub fn load(
        &self,
    ) -> std::io::Result<std::collections::HashMap<crate::RoomId, crate::crypto::AdmissionVerifier>>
    {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut rooms = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line.split_once(' ').and_then(|(room, hex)| {
                let room = crate::RoomId::new(room).ok()?;
                let fp: crate::CertFingerprint = hex.trim().parse().ok()?;
                Some((room, crate::crypto::AdmissionVerifier::from_bytes(fp.0)))
            });
            match parsed {
                Some((room, v)) => {
                    rooms.insert(room, v);
                }
                None => tracing::warn!(
                    "{}: line {} is not `ROOM VERIFIER`, skipped",
                    self.path.display(),
                    n + 1
                ),
            }
        }
        Ok(rooms)
    }

    /// Adds (or replaces) a room's verifier.
    pub fn put(
        &self,
        room: &crate::RoomId,
        verifier: &crate::crypto::AdmissionVerifier,
    ) -> std::io::Result<()> {
        let mut rooms = self.load()?;
        rooms.insert(room.clone(), verifier.clone());
        let mut lines: Vec<String> = rooms
            .iter()
            .map(|(r, v)| format!("{r} {}", crate::CertFingerprint(v.to_bytes())))
            .collect();
        lines.sort();
        let mut text = lines.join("\n");
        text.push('\n');
        write_atomically(&self.path, text.as_bytes(), true)
    }
}
