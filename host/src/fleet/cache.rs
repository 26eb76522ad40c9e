//! Compiled components kept on this pod's disk (`COMPONENT_CACHE_DIR`), so
//! that a restart or a rollback loads a version in milliseconds instead of
//! compiling it again.
//!
//! A cached file is native code, so nothing in it is trusted for being
//! there: each file is the MAC of its artifact under the artifact key
//! (`artifact.rs`), then the artifact, and one whose MAC does not verify
//! (planted, damaged, or made under another key) is refused, logged,
//! removed and compiled again. Without a configured key the cache uses a
//! key of this process's own, so it serves this process only. The folder
//! is created private (0700); one that is not this user's, or that others
//! may enter, is not used at all.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::artifact::{ArtifactKey, MAC_LEN};

pub struct Cache {
    /// `None` when the folder could not be made safe: nothing is cached.
    dir: Option<PathBuf>,
    key: ArtifactKey,
}

/// What reading the cache found.
pub enum Cached {
    Hit(Vec<u8>),
    Miss,
    /// A file was there, but this key does not vouch for it.
    Refused,
}

impl Cache {
    /// The cache in `dir` (created if missing), with `key`.
    pub fn open(dir: &Path, key: ArtifactKey) -> Cache {
        match private_dir(dir) {
            Ok(()) => Cache { dir: Some(dir.to_path_buf()), key },
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "not caching compiled components: the folder is not private to this user");
                Cache { dir: None, key }
            }
        }
    }

    fn path(&self, name: &str, digest: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(format!("{name}.{digest}.cwasm")))
    }

    /// The artifact of `name`'s version `digest`, if cached and vouched for.
    pub fn get(&self, name: &str, digest: &str) -> Cached {
        let Some(path) = self.path(name, digest) else { return Cached::Miss };
        let Ok(file) = fs::read(&path) else { return Cached::Miss };
        match file.split_at_checked(MAC_LEN) {
            Some((mac, artifact)) if self.key.verify(name, digest, artifact, mac) => Cached::Hit(artifact.to_vec()),
            _ => {
                tracing::warn!(file = %path.display(), "a cached artifact is not vouched for by this fleet's key; removed, compiling instead");
                let _ = fs::remove_file(&path);
                Cached::Refused
            }
        }
    }

    /// Keep `artifact` for `name`'s version `digest` (written to a temporary
    /// name, then renamed, so no reader sees half of one). A failure only
    /// costs a compile later.
    pub fn put(&self, name: &str, digest: &str, artifact: &[u8]) {
        let Some(path) = self.path(name, digest) else { return };
        let mac = self.key.sign(name, digest, artifact);
        let partial = path.with_extension(format!("{}.partial", std::process::id()));
        let written =
            fs::write(&partial, [mac.as_slice(), artifact].concat()).and_then(|()| fs::rename(&partial, &path));
        if let Err(err) = written {
            let _ = fs::remove_file(&partial);
            tracing::warn!(file = %path.display(), error = %err, "cannot cache a compiled component");
        }
    }
}

/// Make `dir` (mode 0700) if missing, then check that it is a folder of
/// this user's that nobody else may enter.
fn private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let meta = fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(io::Error::other("it is not a folder"));
    }
    if meta.uid() != me {
        return Err(io::Error::other(format!("it belongs to user {}, not {me}", meta.uid())));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "its mode is {:o}; others may enter it",
            meta.permissions().mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ArtifactKey {
        ArtifactKey::new(&[3; 32])
    }

    #[test]
    fn a_cached_artifact_is_read_back_only_under_the_key_that_wrote_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cache");
        let cache = Cache::open(&path, key());
        assert!(matches!(cache.get("pets", "abc"), Cached::Miss));
        cache.put("pets", "abc", b"native code");
        assert!(matches!(cache.get("pets", "abc"), Cached::Hit(a) if a == b"native code"));
        assert_eq!(fs::metadata(&path).expect("made").permissions().mode() & 0o777, 0o700);

        let other = Cache::open(&path, ArtifactKey::new(&[4; 32]));
        assert!(matches!(other.get("pets", "abc"), Cached::Refused), "another key's file");
        assert!(matches!(cache.get("pets", "abc"), Cached::Miss), "the refused file was removed");

        fs::write(path.join("pets.def.cwasm"), b"planted native code, with no MAC worth the name").expect("plant");
        assert!(matches!(cache.get("pets", "def"), Cached::Refused), "a planted file");
    }

    #[test]
    fn a_folder_others_may_enter_is_not_used() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("dir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        let cache = Cache::open(&open, key());
        cache.put("pets", "abc", b"native code");
        assert!(fs::read_dir(&open).expect("list").next().is_none(), "nothing written there");
        assert!(matches!(cache.get("pets", "abc"), Cached::Miss));
    }
}
