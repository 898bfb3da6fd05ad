//! The content store: blobs (manifests, configs, compressed layers) addressed by digest under
//! `<root>/content/blobs/sha256/<hex>`.
//!
//! A blob is written to `<root>/content/ingest/` while its digest is computed, fsynced, and renamed into
//! place only if the digest matches; a reader therefore never sees a partial or unverified blob, and a
//! crash leaves only ingest files, which `clear_ingest` removes at start-up. Must not depend on the store
//! (records) or on registries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("digest {0:?} is not a sha256 digest")]
    BadDigest(String),
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest}: size {actual} does not match the descriptor's {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("content store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |source| ContentError::Io { path: path.to_path_buf(), source }
}

/// The hex part of a sha256 digest, validated (the only algorithm we verify).
pub fn sha256_hex(digest: &str) -> Result<&str, ContentError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| ContentError::BadDigest(digest.to_string()))?;
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(hex)
    } else {
        Err(ContentError::BadDigest(digest.to_string()))
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("content/blobs/sha256");
        let ingest = root.join("content/ingest");
        std::fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
        std::fs::create_dir_all(&ingest).map_err(io_at(&ingest))?;
        Ok(ContentStore { blobs, ingest })
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ContentError> {
        Ok(self.blobs.join(sha256_hex(digest)?))
    }

    pub fn ingest_dir(&self) -> &Path {
        &self.ingest
    }

    pub fn contains(&self, digest: &str) -> Result<bool, ContentError> {
        Ok(self.blob_path(digest)?.is_file())
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>, ContentError> {
        let path = self.blob_path(digest)?;
        std::fs::read(&path).map_err(io_at(&path))
    }

    /// Store a small blob held in memory, verifying its digest.
    pub fn write_bytes(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, ContentError> {
        let mut w = self.writer(digest)?;
        w.write(bytes)?;
        w.commit(None)
    }

    /// Start writing a blob; bytes go to an ingest file until `commit` checks the digest.
    pub fn writer(&self, digest: &str) -> Result<BlobWriter, ContentError> {
        let hex = sha256_hex(digest)?.to_string();
        let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
        let temp = self.ingest.join(format!("{hex}-{}-{seq}", std::process::id()));
        let file = std::fs::File::create(&temp).map_err(io_at(&temp))?;
        Ok(BlobWriter {
            expected: digest.to_string(),
            target: self.blobs.join(&hex),
            temp,
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Delete a blob; absent is fine.
    pub fn remove(&self, digest: &str) -> Result<(), ContentError> {
        let path = self.blob_path(digest)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ContentError::Io { path, source: e }),
            _ => Ok(()),
        }
    }

    /// Digests of every stored blob.
    pub fn list(&self) -> Result<Vec<String>, ContentError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.blobs).map_err(io_at(&self.blobs))? {
            let entry = entry.map_err(io_at(&self.blobs))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    /// Remove leftovers of downloads a crash interrupted. Only safe before any pull starts.
    pub fn clear_ingest(&self) -> Result<usize, ContentError> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.ingest).map_err(io_at(&self.ingest))? {
            let path = entry.map_err(io_at(&self.ingest))?.path();
            std::fs::remove_file(&path).map_err(io_at(&path))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// An in-progress blob. Dropping it without `commit` deletes the ingest file.
pub struct BlobWriter {
    expected: String,
    target: PathBuf,
    temp: PathBuf,
    file: Option<std::fs::File>,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ContentError> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(io_at(&self.temp)),
            None => Ok(()),
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verify digest (and size, when the descriptor gave one), fsync, and rename into place.
    pub fn commit(mut self, expected_size: Option<u64>) -> Result<PathBuf, ContentError> {
        let actual = format!("sha256:{}", hex::encode(std::mem::take(&mut self.hasher).finalize()));
        if actual != self.expected {
            return Err(ContentError::DigestMismatch { expected: self.expected.clone(), actual });
        }
        if let Some(expected) = expected_size.filter(|s| *s != self.written) {
            return Err(ContentError::SizeMismatch { digest: self.expected.clone(), expected, actual: self.written });
        }
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(io_at(&self.temp))?;
        }
        std::fs::rename(&self.temp, &self.target).map_err(io_at(&self.target))?;
        Ok(self.target.clone())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful commit the temp path no longer exists; otherwise this discards a partial
        // or unverified blob.
        let _ = std::fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_write_and_mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let good = sha256_digest(b"hello");
        cs.write_bytes(&good, b"hello").unwrap();
        assert!(cs.contains(&good).unwrap());
        assert_eq!(cs.read(&good).unwrap(), b"hello");

        let wrong = sha256_digest(b"other");
        assert!(matches!(cs.write_bytes(&wrong, b"hello"), Err(ContentError::DigestMismatch { .. })));
        assert!(!cs.contains(&wrong).unwrap());
        assert_eq!(std::fs::read_dir(cs.ingest_dir()).unwrap().count(), 0);
        assert!(matches!(cs.blob_path("md5:abc"), Err(ContentError::BadDigest(_))));
        assert!(matches!(cs.blob_path("sha256:../../etc"), Err(ContentError::BadDigest(_))));
    }

    #[test]
    fn size_is_checked_and_ingest_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = sha256_digest(b"abc");
        let mut w = cs.writer(&d).unwrap();
        w.write(b"abc").unwrap();
        assert!(matches!(w.commit(Some(4)), Err(ContentError::SizeMismatch { .. })));
        // Simulate a crash: a leftover ingest file.
        std::fs::write(cs.ingest_dir().join("partial"), b"x").unwrap();
        assert_eq!(cs.clear_ingest().unwrap(), 1);
        assert_eq!(cs.list().unwrap(), Vec::<String>::new());
    }
}
