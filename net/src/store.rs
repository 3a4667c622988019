//! Small files written so that a crash or a full disk never leaves half a file behind.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and a rename; `private` restricts it to
/// the owner (keys). Writers of one file in one process (two plugin instances in one room) take
/// turns, and each writes its own temporary file, so two writers never mix their bytes or
/// rename each other's half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    static WRITERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let _turn = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_os_string());
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = write_then_rename(&tmp, path, bytes, private);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
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
        let mut f = opts.open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_of_one_file_never_mix_or_lose_a_write() {
        let dir = std::env::temp_dir().join(format!("echoel-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("room.automerge");
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..100u8 {
                        let bytes = vec![w.wrapping_mul(31).wrapping_add(i); 4096 + usize::from(w)];
                        write_atomically(&path, &bytes, true).expect("every write lands");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let got = std::fs::read(&path).unwrap();
        let w = got.len() - 4096;
        assert!(w < 4 && got.iter().all(|b| *b == got[0]), "a torn file");
        let left = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(left, 1, "temporary files left behind");
    }
}
