//! A musician's member key for each room, kept in their data folder: they come back to a room
//! as the same person, and their plugins in several processes (a DAW that runs each plugin in
//! its own) are one person there. One key per room — named by the relay's certificate and the
//! room id, never by the secret, so a rotation keeps it — so that two rooms cannot tell they
//! share a member.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::MemberKey;
use crate::invite::Invite;

/// What a stored key's file starts with.
const HEADER: &str = "echoel member key v1\n";

/// Why no member key could be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The folder or the file could not be read or written.
    #[error("cannot keep this room's member key in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is there but is not a key: replacing it would make its owner someone else.
    #[error(
        "this room's member key {path} is damaged; move it aside to join as a new member of the \
         room"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
    },
}

/// The member keys under one folder (`DATA/echoel/members` by default).
#[derive(Debug, Clone)]
pub struct IdentityStore {
    folder: PathBuf,
}

impl IdentityStore {
    /// Keys kept under `folder`.
    pub fn new(folder: impl Into<PathBuf>) -> Self {
        Self {
            folder: folder.into(),
        }
    }

    /// The user's: `~/.local/share/echoel/members` on Linux, `~/Library/Application
    /// Support/echoel/members` on macOS, `%APPDATA%\echoel\members` on Windows. `None` where
    /// the system names no data folder.
    pub fn user() -> Option<Self> {
        Some(Self::new(dirs::data_dir()?.join("echoel").join("members")))
    }

    /// The folder the keys are kept in.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Where the key for `invite`'s room is kept.
    pub fn path_for(&self, invite: &Invite) -> PathBuf {
        let digest = Sha256::digest(
            [
                b"echoel v1 member key file".as_slice(),
                &invite.fingerprint.0,
                invite.room.as_str().as_bytes(),
            ]
            .concat(),
        );
        let name = crate::hex::encode(&digest[..12]);
        self.folder.join(format!("{name}.key"))
    }

    /// The key for `invite`'s room — the one kept, or a new one kept from now on — at an
    /// instance drawn now: each session is a participant of its own, so neither a project
    /// opened twice nor a duplicated track makes two live participants of one id. Two
    /// processes asking at once get the same key.
    pub fn key_for(&self, invite: &Invite) -> Result<MemberKey, IdentityError> {
        let instance = rand_core::RngCore::next_u32(&mut rand_core::OsRng);
        Ok(self.kept_key(invite)?.at_instance(instance))
    }

    fn kept_key(&self, invite: &Invite) -> Result<MemberKey, IdentityError> {
        let path = self.path_for(invite);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        if let Some(key) = self.read(&path)? {
            return Ok(key);
        }
        create_private_dir(&self.folder).map_err(io)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed[..]);
        let hexed = Zeroizing::new(crate::hex::encode(&seed[..]));
        let text = Zeroizing::new(format!("{HEADER}{}\n", hexed.as_str()));
        if crate::store::create_atomically(&path, text.as_bytes(), true).map_err(io)? {
            return Ok(MemberKey::from_seed(&seed));
        }
        // Another process kept its key first: that one is ours.
        self.read(&path)?
            .ok_or_else(|| IdentityError::Damaged { path: path.clone() })
    }

    fn read(&self, path: &Path) -> Result<Option<MemberKey>, IdentityError> {
        let text = match std::fs::read(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        parse(&text)
            .map(|seed| Some(MemberKey::from_seed(&seed)))
            .ok_or_else(|| IdentityError::Damaged {
                path: path.to_owned(),
            })
    }
}

fn parse(text: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let body = text.strip_prefix(HEADER.as_bytes())?;
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    let mut seed = Zeroizing::new([0u8; 32]);
    crate::hex::decode_into(body, &mut seed[..]).then_some(seed)
}

fn create_private_dir(folder: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(folder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RoomSecret;
    use crate::invite::{CertFingerprint, RoomId};

    fn invite(room: &str, relay: u8, secret: u8) -> Invite {
        Invite {
            host: "relay.example".into(),
            port: 4433,
            room: RoomId::new(room).unwrap(),
            fingerprint: CertFingerprint([relay; 32]),
            secret: RoomSecret::from_bytes([secret; 32]),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("echoel-ids-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_room_keeps_its_key_and_no_two_rooms_share_one() {
        let dir = scratch("keep");
        let store = IdentityStore::new(dir.join("members"));
        let friday = store.key_for(&invite("friday", 1, 1)).unwrap();
        let again = IdentityStore::new(dir.join("members"))
            .key_for(&invite("friday", 1, 2))
            .unwrap();
        assert_eq!(
            friday.public(),
            again.public(),
            "the same room after a rotation"
        );
        let others = [invite("saturday", 1, 1), invite("friday", 2, 1)];
        for other in &others {
            assert_ne!(store.key_for(other).unwrap().public(), friday.public());
        }
        let path = store.path_for(&invite("friday", 1, 1));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER) && text.len() == HEADER.len() + 65);
        assert!(
            !path.to_string_lossy().contains("friday"),
            "the file names no room"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir.join("members")), 0o700);
        }
        let left: Vec<_> = std::fs::read_dir(dir.join("members")).unwrap().collect();
        assert_eq!(left.len(), 3, "no temporary files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn processes_asking_at_once_get_one_key() {
        let dir = scratch("race");
        let inv = invite("friday", 1, 1);
        let keys: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| IdentityStore::new(&dir).key_for(&inv).unwrap().public()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_key_is_an_error_and_is_never_replaced() {
        let dir = scratch("damaged");
        let store = IdentityStore::new(&dir);
        let inv = invite("friday", 1, 1);
        store.key_for(&inv).unwrap();
        let path = store.path_for(&inv);
        for damage in [&b""[..], b"echoel member key v1\nzz", b"not a key at all\n"] {
            std::fs::write(&path, damage).unwrap();
            let err = store.key_for(&inv).unwrap_err();
            assert!(matches!(err, IdentityError::Damaged { .. }), "{err}");
            assert!(err.to_string().contains("move it aside"));
            assert_eq!(std::fs::read(&path).unwrap(), damage, "left as it was");
        }
        // A folder that cannot be made is an error naming the file, never a panic.
        let blocked = IdentityStore::new(path.join("under-a-file"));
        let err = blocked.key_for(&inv).unwrap_err();
        assert!(matches!(err, IdentityError::Io { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
