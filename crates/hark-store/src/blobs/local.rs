//! The local-directory backend: `<root>/<project>/<upload>`, written through a
//! `.partial` file that is renamed when complete (one node only).

use super::{
    check_key, private_dir, BlobError, BlobInfo, BlobResult, BlobStore, BlobStream, BlobWriter,
    LocalFile,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use hark_core::clock::Millis;
use std::ops::Range;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

const PARTIAL: &str = "partial";

#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    /// Uses `root` (created, mode 0700).
    pub fn open(root: impl Into<PathBuf>) -> BlobResult<Self> {
        let root = root.into();
        private_dir(&root)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> BlobResult<PathBuf> {
        // Rows written before object storage name the absolute file.
        if let Ok(rest) = Path::new(key).strip_prefix(&self.root) {
            let key = rest.to_string_lossy();
            check_key(&key)?;
            return Ok(self.root.join(rest));
        }
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Every file two levels down (`<project>/<file>`), complete or partial.
    fn walk(&self) -> Vec<(PathBuf, std::fs::Metadata)> {
        let mut found = Vec::new();
        let Ok(folders) = std::fs::read_dir(&self.root) else {
            return found;
        };
        for folder in folders.flatten() {
            let Ok(files) = std::fs::read_dir(folder.path()) else {
                continue;
            };
            for file in files.flatten() {
                if let Ok(meta) = file.metadata() {
                    if meta.is_file() {
                        found.push((file.path(), meta));
                    }
                }
            }
        }
        found
    }

    fn key_of_path(&self, path: &Path) -> Option<String> {
        let rest = path.strip_prefix(&self.root).ok()?;
        Some(rest.to_string_lossy().into_owned())
    }
}

fn modified_ms(meta: &std::fs::Metadata) -> Millis {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[async_trait]
impl BlobStore for LocalBlobs {
    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn check(&self) -> BlobResult<()> {
        let meta = tokio::fs::metadata(&self.root).await?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(BlobError::Config(format!(
                "{} is not a directory",
                self.root.display()
            )))
        }
    }

    async fn create(&self, key: &str) -> BlobResult<Box<dyn BlobWriter>> {
        let path = self.path_of(key)?;
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let partial = path.with_extension(PARTIAL);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .await?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            partial,
            path,
            size: 0,
        }))
    }

    async fn read(&self, key: &str, range: Option<Range<u64>>) -> BlobResult<BlobStream> {
        let path = self.path_of(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(key.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let stream = match range {
            None => tokio_util::io::ReaderStream::new(file).boxed(),
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start)).await?;
                use tokio::io::AsyncReadExt;
                let limited = file.take(r.end.saturating_sub(r.start));
                tokio_util::io::ReaderStream::new(limited).boxed()
            }
        };
        Ok(stream.map(|chunk| chunk.map_err(BlobError::from)).boxed())
    }

    async fn delete(&self, key: &str) -> BlobResult<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_folder(&self, prefix: &str) -> BlobResult<usize> {
        check_key(prefix)?;
        let dir = self.root.join(prefix);
        let count = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| {
                    e.path().extension().is_none_or(|x| x != PARTIAL)
                        && e.file_type().is_ok_and(|t| t.is_file())
                })
                .count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(count),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> BlobResult<Vec<BlobInfo>> {
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            this.walk()
                .into_iter()
                .filter(|(p, _)| p.extension().is_none_or(|x| x != PARTIAL))
                .filter_map(|(p, meta)| {
                    Some(BlobInfo {
                        key: this.key_of_path(&p)?,
                        size: meta.len(),
                        modified_ms: modified_ms(&meta),
                    })
                })
                .collect()
        })
        .await
        .map_err(std::io::Error::other)?;
        Ok(found)
    }

    async fn abort_unfinished(&self, started_before: Millis) -> BlobResult<usize> {
        let this = self.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for (path, meta) in this.walk() {
                if path.extension().is_some_and(|x| x == PARTIAL)
                    && modified_ms(&meta) < started_before
                {
                    match std::fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            tracing::warn!(error = %e, path = %path.display(), "could not remove a partial upload")
                        }
                    }
                }
            }
            removed
        })
        .await
        .map_err(std::io::Error::other)?;
        Ok(removed)
    }

    async fn local_file(&self, key: &str, _scratch_dir: &Path) -> BlobResult<LocalFile> {
        let path = self.path_of(key)?;
        if !tokio::fs::try_exists(&path).await? {
            return Err(BlobError::NotFound(key.to_string()));
        }
        Ok(LocalFile {
            path,
            scratch: false,
        })
    }

    fn key_of(&self, stored: &str) -> String {
        self.key_of_path(Path::new(stored))
            .unwrap_or_else(|| stored.to_string())
    }
}

struct LocalWriter {
    /// `None` once finished or aborted.
    file: Option<tokio::fs::File>,
    partial: PathBuf,
    path: PathBuf,
    size: u64,
}

#[async_trait]
impl BlobWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(BlobError::Io(std::io::Error::other(
                "writer already closed",
            )));
        };
        file.write_all(&chunk).await?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> BlobResult<u64> {
        let Some(mut file) = self.file.take() else {
            return Err(BlobError::Io(std::io::Error::other(
                "writer already closed",
            )));
        };
        let done = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&self.partial, &self.path).await
        }
        .await;
        if let Err(e) = done {
            let _ = tokio::fs::remove_file(&self.partial).await;
            return Err(e.into());
        }
        Ok(self.size)
    }

    async fn abort(mut self: Box<Self>) -> BlobResult<()> {
        self.file.take();
        match tokio::fs::remove_file(&self.partial).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Dropped unfinished (the request went away): its partial file goes too.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
