//! A directory as a blob store. Keys are relative paths; a create-only
//! write goes to a temporary file, is synced, and is then hard-linked into
//! place, which fails atomically if the key exists.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::core::{BlobStore, PutOutcome, StoreError};

/// Blobs as files under a root directory.
pub struct DirStore {
    root: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    // ENOSPC or EDQUOT: retrying cannot make space.
    let full = e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded;
    StoreError::Permanent {
        code: if full {
            super::queue::DISK_FULL.into()
        } else {
            format!("{:?}", e.kind())
        },
        message: format!("{what} {}: {e}", path.display()),
    }
}

impl DirStore {
    /// A store rooted at `root` (created if absent).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| io_err("cannot create", &root, e))?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let valid = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != ".." && !part.starts_with(".tmp-"));
        if !valid {
            return Err(StoreError::Permanent {
                code: "InvalidKey".into(),
                message: format!("{key:?} is not a valid blob key"),
            });
        }
        Ok(self.root.join(key))
    }

    fn put_sync(&self, key: &str, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
        let path = self.path(key)?;
        // No check that `path` exists first: the link below fails if it
        // does, whoever wrote it and when, so it is the one check.
        let dir = path.parent().expect("a key has a parent");
        std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
        // Unique per process and call, so concurrent writers never share one.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        write().map_err(|e| io_err("cannot write", &tmp, e))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(PutOutcome::Created)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(io_err("cannot link", &path, e)),
        }
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Walk only the directory the prefix names, not the whole store.
        let start = match prefix.rfind('/') {
            Some(pos) => self.root.join(&prefix[..pos]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err("cannot list", &dir, e))?;
                let path = entry.path();
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(".tmp-") {
                    continue;
                }
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(&self.root)
                    .expect("under root")
                    .to_string_lossy()
                    .replace('\\', "/");
                if rel.starts_with(prefix) {
                    out.push(rel);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl BlobStore for DirStore {
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        self.put_sync(key, &bytes)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.list_sync(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    #[tokio::test]
    async fn create_only_writes_never_overwrite() {
        let dir = Scratch::new("store");
        let store = DirStore::open(dir.path("store")).unwrap();
        assert_eq!(
            store.put_if_absent("a/b.json", b"one".to_vec()).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put_if_absent("a/b.json", b"two".to_vec()).await.unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(store.get("a/b.json").await.unwrap().unwrap(), b"one");
        assert_eq!(store.get("a/c.json").await.unwrap(), None);
        store.put_if_absent("a/a.json", vec![]).await.unwrap();
        store.put_if_absent("b.json", vec![]).await.unwrap();
        assert_eq!(store.list("a/").await.unwrap(), vec!["a/a.json", "a/b.json"]);
        assert_eq!(store.list("").await.unwrap().len(), 3);
        assert!(store.get("../etc/passwd").await.is_err());
    }

    /// A key is a relative path of plain names: nothing that could leave
    /// the root, name a directory or clash with a write in progress.
    #[tokio::test]
    async fn keys_that_could_leave_the_root_or_clash_with_a_write_are_refused() {
        let dir = Scratch::new("store-keys");
        let store = DirStore::open(dir.path("store")).unwrap();
        for bad in ["", "/abs", "a//b", "a/", "./a", "a/./b", "a/../b", "..", "a/.tmp-1-2"] {
            let refused = store.put_if_absent(bad, b"x".to_vec()).await;
            assert!(
                matches!(&refused, Err(StoreError::Permanent { code, .. }) if code == "InvalidKey"),
                "{bad:?}: {refused:?}"
            );
            assert!(store.get(bad).await.is_err(), "{bad:?}");
        }
        for good in ["a", ".a", "a.tmp-1", "x/.tmp/y", "sweeps/s-1/manifest.json"] {
            assert_eq!(
                store.put_if_absent(good, b"x".to_vec()).await.unwrap(),
                PutOutcome::Created,
                "{good:?}"
            );
            assert_eq!(store.get(good).await.unwrap().as_deref(), Some(&b"x"[..]), "{good:?}");
        }
    }

    /// A write in progress is not listed, and a prefix naming a directory
    /// that does not exist lists nothing.
    #[tokio::test]
    async fn listing_skips_writes_in_progress_and_missing_directories() {
        let dir = Scratch::new("store-list");
        let store = DirStore::open(dir.path("store")).unwrap();
        store.put_if_absent("a/b.json", vec![]).await.unwrap();
        std::fs::write(dir.path("store/a/.tmp-1-0"), b"half").unwrap();
        assert_eq!(store.list("a/").await.unwrap(), ["a/b.json"]);
        assert_eq!(store.list("a/b").await.unwrap(), ["a/b.json"]);
        assert_eq!(store.list("a/c").await.unwrap(), Vec::<String>::new());
        assert_eq!(store.list("z/y/").await.unwrap(), Vec::<String>::new());
    }

    /// A key the file system cannot hold (a name over 255 bytes) is an
    /// error in every call, never taken for an absent key or an existing
    /// one.
    #[tokio::test]
    async fn a_key_the_file_system_cannot_hold_is_an_error_not_absent() {
        let dir = Scratch::new("store-long");
        let store = DirStore::open(dir.path("store")).unwrap();
        let long = format!("a/{}", "x".repeat(300));
        assert!(store.put_if_absent(&long, b"x".to_vec()).await.is_err());
        assert!(store.get(&long).await.is_err());
        assert!(store.list(&format!("{long}/")).await.is_err());
        let left = std::fs::read_dir(dir.path("store/a")).unwrap().count();
        assert_eq!(left, 0, "the write in progress is removed");
    }

    /// A full disk or quota is named as one (the CLI says so in one
    /// sentence); other errors by their kind.
    #[test]
    fn a_full_disk_is_told_apart_from_other_errors() {
        let code = |kind: std::io::ErrorKind| match io_err("cannot write", Path::new("x"), kind.into()) {
            StoreError::Permanent { code, .. } => code,
            other => panic!("{other:?}"),
        };
        let disk_full = super::super::queue::DISK_FULL;
        assert_eq!(code(std::io::ErrorKind::StorageFull), disk_full);
        assert_eq!(code(std::io::ErrorKind::QuotaExceeded), disk_full);
        assert_eq!(code(std::io::ErrorKind::PermissionDenied), "PermissionDenied");
    }
}
