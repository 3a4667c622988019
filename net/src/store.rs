//! Small files written so that a crash or a full disk never leaves half a file behind.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and a rename; `private` restricts it to
/// the owner (keys). Writers of one file in one process (two plugin instances in one room) take
/// turns, and each writes its own temporary file, so two writers never mix their bytes or
/// rename each other's half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    through_temporary(path, bytes, private, |tmp| std::fs::rename(tmp, path))
}

/// Writes `bytes` to `path` whole, unless a file is there already (written by another process
/// meanwhile, say): then it is left as it is and this says `false`.
pub fn create_atomically(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<bool> {
    let mut created = false;
    through_temporary(path, bytes, private, |tmp| {
        // A hard link never replaces what is there; the temporary name goes after it.
        match std::fs::hard_link(tmp, path) {
            Ok(()) => created = true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // A file system without hard links: a rename, with a smaller window for a race.
            Err(_) if !path.exists() => {
                std::fs::rename(tmp, path)?;
                created = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        std::fs::remove_file(tmp)
    })?;
    Ok(created)
}

/// Writes `bytes` to a temporary file beside `path`, then hands it to `finish`.
fn through_temporary(
    path: &Path,
    bytes: &[u8],
    private: bool,
    finish: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
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
    let result = write_temporary(&tmp, bytes, private).and_then(|()| finish(&tmp));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_temporary(tmp: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
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
    f.sync_all()
}

/// The relay's rooms: one line per room, `ROOM-ID ed25519:VERIFIER-HEX`, in `DIR/rooms`. Only
/// verifiers are stored: nothing here opens audio or a document, or admits anyone.
pub struct RoomStore {
    path: std::path::PathBuf,
}

/// The rooms file as read: every valid room, and the lines that are not one.
#[derive(Default)]
pub struct RoomsFile {
    /// Each room's verifier.
    pub rooms: std::collections::HashMap<crate::RoomId, crate::crypto::AdmissionVerifier>,
    /// Lines that are not `ROOM VERIFIER` (1-based line number, the bytes as found): skipped,
    /// so one damaged line never costs the other rooms.
    pub damaged: Vec<(usize, Vec<u8>)>,
    /// Rooms made by an older relay, whose verifier was a secret key, and their lines as
    /// found: they admit no one until `echoel invite --rotate` gives them a new secret.
    pub legacy: Vec<(crate::RoomId, String)>,
}

/// Marks a verifier that is a public key (older relays stored a secret one, unmarked).
const VERIFIER_KIND: &str = "ed25519:";

/// When the rooms file last changed, as far as the file system tells (modification time,
/// length and, where there is one, the inode a rename put there), so a relay re-reads it only
/// when `echoel invite` has written it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStamp(Option<(std::time::SystemTime, u64, u64)>);

impl RoomStore {
    /// The store in the relay's state folder.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("rooms"),
        }
    }

    /// Where damaged lines are moved when the store is next written.
    fn damaged_path(&self) -> std::path::PathBuf {
        self.path.with_file_name("rooms.damaged")
    }

    /// The file's current stamp (a missing file has its own).
    pub fn stamp(&self) -> StoreStamp {
        #[cfg(unix)]
        let inode = |m: &std::fs::Metadata| std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let inode = |_: &std::fs::Metadata| 0;
        StoreStamp(
            std::fs::metadata(&self.path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), inode(&m)))),
        )
    }

    /// Every valid room, and the damaged lines (also logged as warnings). A missing file holds
    /// no rooms; only a file that cannot be read at all is an error.
    pub fn load(&self) -> std::io::Result<RoomsFile> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let file = self.parse(&bytes);
        for (room, _) in &file.legacy {
            tracing::warn!(
                "{}: room {room} was made by an older relay and admits no one; run \
                 `echoel invite --rotate {room}` and send the band its new invite",
                self.path.display()
            );
        }
        for (n, _) in &file.damaged {
            tracing::warn!(
                "{}: line {n} is not `ROOM VERIFIER`; it is skipped and the other rooms are \
                 served (the next `echoel invite` moves it to {})",
                self.path.display(),
                self.damaged_path().display()
            );
        }
        Ok(file)
    }

    /// The rooms in `bytes`, as the file at this store's path would hold them: never fails,
    /// whatever the bytes (what is wrong is listed, and [`Self::load`] logs it).
    pub fn parse(&self, bytes: &[u8]) -> RoomsFile {
        let mut file = RoomsFile::default();
        for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let parsed = std::str::from_utf8(raw).ok().map(str::trim).map(|line| {
                if line.is_empty() || line.starts_with('#') {
                    return Some(None);
                }
                let (room, verifier) = line.split_once(' ')?;
                let room = crate::RoomId::new(room).ok()?;
                let (current, hex) = match verifier.trim().strip_prefix(VERIFIER_KIND) {
                    Some(hex) => (true, hex),
                    None => (false, verifier.trim()),
                };
                let fp: crate::CertFingerprint = hex.parse().ok()?;
                let v = current.then(|| crate::crypto::AdmissionVerifier::from_bytes(fp.0));
                Some(Some((room, v, line.to_owned())))
            });
            match parsed {
                Some(Some(Some((room, Some(v), _)))) => {
                    file.rooms.insert(room, v);
                }
                Some(Some(Some((room, None, line)))) => file.legacy.push((room, line)),
                Some(Some(None)) => {}
                _ => file.damaged.push((n + 1, raw.to_vec())),
            }
        }
        file
    }

    /// Adds a room that does not exist yet.
    pub fn create(
        &self,
        room: &crate::RoomId,
        verifier: &crate::crypto::AdmissionVerifier,
    ) -> Result<(), StoreError> {
        self.write_with(room, verifier, false)
    }

    /// Replaces the verifier of a room that exists: invites made before stop working.
    pub fn rotate(
        &self,
        room: &crate::RoomId,
        verifier: &crate::crypto::AdmissionVerifier,
    ) -> Result<(), StoreError> {
        self.write_with(room, verifier, true)
    }

    fn write_with(
        &self,
        room: &crate::RoomId,
        verifier: &crate::crypto::AdmissionVerifier,
        existing: bool,
    ) -> Result<(), StoreError> {
        let RoomsFile {
            mut rooms,
            damaged,
            legacy,
        } = self.load()?;
        let exists = rooms.contains_key(room) || legacy.iter().any(|(r, _)| r == room);
        match (exists, existing) {
            (true, false) => return Err(StoreError::Exists(room.clone())),
            (false, true) => return Err(StoreError::Missing(room.clone())),
            _ => {}
        }
        if !damaged.is_empty() {
            self.move_aside(&damaged)?;
        }
        rooms.insert(room.clone(), verifier.clone());
        let mut lines: Vec<String> = rooms
            .iter()
            .map(|(r, v)| {
                let hex = crate::CertFingerprint(v.to_bytes());
                format!("{r} {VERIFIER_KIND}{hex}")
            })
            .collect();
        // Older rooms not yet rotated stay as they were.
        lines.extend(
            legacy
                .into_iter()
                .filter(|(r, _)| !rooms.contains_key(r))
                .map(|(_, line)| line),
        );
        lines.sort();
        let mut text = lines.join("\n");
        text.push('\n');
        write_atomically(&self.path, text.as_bytes(), true)?;
        Ok(())
    }

    /// Appends damaged lines to `rooms.damaged`, so whoever looks after the relay can mend
    /// them; nothing is thrown away.
    fn move_aside(&self, damaged: &[(usize, Vec<u8>)]) -> std::io::Result<()> {
        let path = self.damaged_path();
        let mut out = std::fs::read(&path).unwrap_or_default();
        for (_, raw) in damaged {
            out.extend_from_slice(raw);
            out.push(b'\n');
        }
        write_atomically(&path, &out, true)?;
        tracing::warn!(
            "{} damaged line(s) of {} moved to {}",
            damaged.len(),
            self.path.display(),
            path.display()
        );
        Ok(())
    }
}

/// The room store could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Making a room that exists would silently replace its secret.
    #[error(
        "room `{0}` exists already and its invite cannot be shown again (the relay keeps no \
         secret); to give it a new secret and a new invite, run `echoel invite --rotate {0}` \
         (every invite sent before stops working)"
    )]
    Exists(crate::RoomId),
    /// Rotating a room that does not exist.
    #[error("there is no room `{0}` to rotate; `echoel invite --room {0}` makes it")]
    Missing(crate::RoomId),
    /// Reading or writing the file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
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

    fn verifier(
        secret: &crate::RoomSecret,
        room: &crate::RoomId,
    ) -> crate::crypto::AdmissionVerifier {
        secret.verifier(room)
    }

    #[test]
    fn a_damaged_line_costs_only_itself_and_is_moved_aside_not_lost() {
        let dir = tempfile_dir("damaged");
        let store = RoomStore::new(&dir);
        let (a, b) = (
            crate::RoomId::new("a").unwrap(),
            crate::RoomId::new("b").unwrap(),
        );
        let sa = crate::RoomSecret::generate();
        store.create(&a, &verifier(&sa, &a)).unwrap();
        // One invalid UTF-8 byte in a line of its own, and a line cut short.
        let mut bytes = std::fs::read(dir.join("rooms")).unwrap();
        bytes.extend_from_slice(b"caf\xe9 00\nb 12ab\n");
        std::fs::write(dir.join("rooms"), &bytes).unwrap();
        let file = store.load().unwrap();
        assert_eq!(file.rooms.len(), 1, "room a is still served");
        assert_eq!(file.damaged.iter().map(|d| d.0).collect::<Vec<_>>(), [2, 3]);
        // The next write keeps room a, adds room b and moves both damaged lines aside.
        let sb = crate::RoomSecret::generate();
        store.create(&b, &verifier(&sb, &b)).unwrap();
        let file = store.load().unwrap();
        assert_eq!(file.rooms.len(), 2);
        assert!(file.damaged.is_empty());
        let aside = std::fs::read(dir.join("rooms.damaged")).unwrap();
        assert_eq!(aside, b"caf\xe9 00\nb 12ab\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn making_a_room_again_is_refused_and_only_rotation_replaces_its_secret() {
        let dir = tempfile_dir("rotate");
        let store = RoomStore::new(&dir);
        let room = crate::RoomId::new("friday").unwrap();
        let (old, new) = (crate::RoomSecret::generate(), crate::RoomSecret::generate());
        assert!(matches!(
            store.rotate(&room, &verifier(&new, &room)),
            Err(StoreError::Missing(_))
        ));
        store.create(&room, &verifier(&old, &room)).unwrap();
        let stamp = store.stamp();
        let err = store.create(&room, &verifier(&new, &room)).unwrap_err();
        assert!(err.to_string().contains("--rotate friday"), "{err}");
        assert!(store.load().unwrap().rooms[&room] == verifier(&old, &room));
        assert_eq!(store.stamp(), stamp, "a refused create writes nothing");
        store.rotate(&room, &verifier(&new, &room)).unwrap();
        assert!(store.load().unwrap().rooms[&room] == verifier(&new, &room));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_room_of_an_older_relay_admits_no_one_until_it_is_rotated() {
        let dir = tempfile_dir("legacy");
        let store = RoomStore::new(&dir);
        let (old, other) = (
            crate::RoomId::new("friday").unwrap(),
            crate::RoomId::new("sunday").unwrap(),
        );
        // An older relay's line: the secret-key verifier, unmarked.
        std::fs::write(dir.join("rooms"), format!("friday {}\n", "ab".repeat(32))).unwrap();
        let file = store.load().unwrap();
        assert!(file.rooms.is_empty(), "it admits no one");
        assert_eq!(file.legacy.len(), 1);
        // Another room's write keeps it listed; only rotation brings it back.
        let s = crate::RoomSecret::generate();
        store.create(&other, &verifier(&s, &other)).unwrap();
        assert!(matches!(
            store.create(&old, &verifier(&s, &old)),
            Err(StoreError::Exists(_))
        ));
        store.rotate(&old, &verifier(&s, &old)).unwrap();
        let file = store.load().unwrap();
        assert_eq!(file.rooms.len(), 2);
        assert!(file.legacy.is_empty() && file.damaged.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("echoel-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
