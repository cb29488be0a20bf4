//! Audio blob storage: the one trait every stored audio file goes through (uploads,
//! written by `POST /v2/upload`, read by the transcription workers, deleted with their
//! transcript, project or account), with two backends: a local directory (one node)
//! and an S3-compatible object store (many nodes). Both stream in both directions.

mod local;
#[cfg(feature = "s3")]
mod s3;

pub use local::LocalBlobs;
#[cfg(feature = "s3")]
pub use s3::{S3Blobs, S3Settings, MIN_PART_SIZE, PARTS_IN_FLIGHT};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use hark_core::clock::Millis;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[cfg(feature = "s3")]
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("object {0} does not exist")]
    NotFound(String),
    #[error("not a storage key: {0:?}")]
    InvalidKey(String),
    #[error("object store answered {status} to {what}: {body}")]
    Protocol {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("object storage configuration: {0}")]
    Config(String),
}

pub type BlobResult<T> = Result<T, BlobError>;

/// A stream of an object's bytes.
pub type BlobStream = BoxStream<'static, BlobResult<Bytes>>;

/// A stored object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The storage key (`<project>/<upload>`).
    pub key: String,
    pub size: u64,
    /// When it was last written (Unix ms, the storage's own clock).
    pub modified_ms: Millis,
}

/// The storage key of an upload: one folder per project, so a project's objects can be
/// deleted together.
pub fn upload_key(project: &str, upload: &str) -> String {
    format!("{project}/{upload}")
}

/// Where audio is stored. Keys are relative, `/`-separated and free of `.`/`..`
/// segments ([`check_key`]).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// For logs and start-up messages (never holds a secret).
    fn describe(&self) -> String;
    /// Whether other nodes use the same storage: an object or unfinished upload that no
    /// row names may then be another node's work in flight, so sweeps leave young ones.
    fn is_shared(&self) -> bool;
    /// Whether the storage answers (bucket reachable with these credentials).
    async fn check(&self) -> BlobResult<()>;
    /// Starts writing `key`; the object appears only when the writer finishes. A writer
    /// dropped unfinished leaves nothing behind (its upload is aborted).
    async fn create(&self, key: &str) -> BlobResult<Box<dyn BlobWriter>>;
    /// Streams `key`, or the byte `range` of it.
    async fn read(&self, key: &str, range: Option<Range<u64>>) -> BlobResult<BlobStream>;
    /// Deletes `key`; a missing object is fine.
    async fn delete(&self, key: &str) -> BlobResult<()>;
    /// Deletes every object under the folder `prefix` (`<prefix>/...`); returns how many.
    async fn delete_folder(&self, prefix: &str) -> BlobResult<usize>;
    /// Every complete object (unfinished uploads are not objects yet).
    async fn list(&self) -> BlobResult<Vec<BlobInfo>>;
    /// Aborts unfinished uploads started before `started_before` (left by a crash or a
    /// lost connection); returns how many.
    async fn abort_unfinished(&self, started_before: Millis) -> BlobResult<usize>;
    /// A file the decoder can open: the object itself when it is a local file, else a
    /// copy streamed into `scratch_dir`, removed when the returned value is dropped.
    async fn local_file(&self, key: &str, scratch_dir: &Path) -> BlobResult<LocalFile>;
    /// The key a stored upload row names: rows written before object storage hold the
    /// file's absolute path, which the local backend maps back to its key.
    fn key_of(&self, stored: &str) -> String {
        stored.to_string()
    }
}

/// An object being written, part by part.
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()>;
    /// Completes the object; returns its size.
    async fn finish(self: Box<Self>) -> BlobResult<u64>;
    /// Gives up: nothing of it stays.
    async fn abort(self: Box<Self>) -> BlobResult<()>;
}

/// A file on this node holding an object's bytes.
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
    /// A scratch copy, removed on drop (the local backend's own files are not).
    scratch: bool,
}

impl LocalFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.scratch {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, path = %self.path.display(), "could not remove a scratch audio file");
                }
            }
        }
    }
}

/// Refuses keys that could leave the storage's root or name nothing.
pub fn check_key(key: &str) -> BlobResult<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.ends_with(".partial"));
    if bad {
        Err(BlobError::InvalidKey(key.to_string()))
    } else {
        Ok(())
    }
}

/// Makes `dir` (and missing parents) readable by this user only: it holds customers'
/// audio.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_root() {
        assert!(check_key("p/u").is_ok());
        for bad in ["", "/p/u", "p/../u", "p//u", "p/u/", "./u", "p/u.partial"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
