//! Uploaded audio in its storage (`[storage]`: the local data directory or an
//! S3-compatible bucket, both behind `hark_store::blobs::BlobStore`): opening and
//! checking the storage at start, deleting objects after the rows that named them are
//! gone, and upkeep: at start, objects no upload row names (left by a crash between
//! writing and committing, or after a deletion's commit) and unfinished uploads are
//! removed; while running, uploads no live transcript uses expire after
//! `upload_ttl_secs`, and unfinished uploads left by other nodes are aborted.

use crate::config::{Config, StorageKind};
use crate::{AppState, StartError};
use hark_core::clock::Millis;
use hark_store::blobs::{BlobStore, LocalBlobs};
use hark_store::Store;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often expired uploads are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// On storage other nodes share, an object no row names is left alone this long: it
/// may be another node's upload between its last part and its row's commit.
pub const SHARED_ORPHAN_GRACE_MS: Millis = 10 * 60 * 1000;

/// On shared storage, an unfinished multipart upload is aborted once it is this old: no
/// upload (2.2 GB at most, each chunk within `upload_idle_timeout_secs`) runs for a day.
pub const SHARED_UNFINISHED_GRACE_MS: Millis = 24 * 60 * 60 * 1000;

/// The storage `[storage]` names: `<data_dir>/uploads` or the S3 bucket.
pub fn open_storage(config: &Config) -> Result<Arc<dyn BlobStore>, StartError> {
    let storage = &config.storage;
    let blobs: Arc<dyn BlobStore> = match storage.kind {
        StorageKind::Local => {
            let root = crate::uploads_dir(&config.data_dir);
            Arc::new(LocalBlobs::open(&root).map_err(|e| StartError::Io {
                path: root,
                source: std::io::Error::other(e),
            })?)
        }
        StorageKind::S3 => open_s3(storage)?,
    };
    Ok(blobs)
}

#[cfg(feature = "s3")]
fn open_s3(storage: &crate::config::StorageConfig) -> Result<Arc<dyn BlobStore>, StartError> {
    use hark_store::blobs::{S3Blobs, S3Settings};
    Ok(Arc::new(
        S3Blobs::open(S3Settings {
            bucket: storage.bucket.clone(),
            endpoint: storage.endpoint.clone(),
            region: storage.region.clone(),
            access_key_id: storage.access_key_id.clone(),
            secret_access_key: storage.secret_access_key.clone(),
            part_size: storage.part_size_bytes,
            prefix: storage.prefix.clone(),
        })
        .map_err(|e| StartError::Config(e.to_string()))?,
    ))
}

#[cfg(not(feature = "s3"))]
fn open_s3(_: &crate::config::StorageConfig) -> Result<Arc<dyn BlobStore>, StartError> {
    Err(StartError::Config(format!(
        "[storage] kind = \"s3\": {}",
        hark_core::not_in_this_build("S3 storage", "s3")
    )))
}

/// Refuses to start on storage that does not answer, saying which and why.
pub async fn check_storage(blobs: &dyn BlobStore) -> Result<(), StartError> {
    blobs.check().await.map_err(|e| {
        StartError::Config(format!(
            "audio storage ({}) is not reachable: {e}; check [storage] (bucket, endpoint, region, \
             credentials) and that the bucket exists",
            blobs.describe()
        ))
    })
}

/// Removes every unfinished upload and every object no upload row names (on shared
/// storage only those older than the grace periods, by `now`). Run before the listener
/// accepts requests. Returns how many went.
pub async fn sweep_at_start(store: &dyn Store, blobs: &dyn BlobStore, now: Millis) -> usize {
    let (orphans_before, unfinished_before) = if blobs.is_shared() {
        (
            now - SHARED_ORPHAN_GRACE_MS,
            now - SHARED_UNFINISHED_GRACE_MS,
        )
    } else {
        // One node: nothing is in flight before the listener opens.
        (Millis::MAX, Millis::MAX)
    };
    let mut removed = match blobs.abort_unfinished(unfinished_before).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not abort unfinished uploads");
            0
        }
    };
    let known: HashSet<String> = match store.upload_paths().await {
        Ok(paths) => paths.iter().map(|p| blobs.key_of(p)).collect(),
        Err(e) => {
            // Without the rows nothing can be judged an orphan; try again next start.
            tracing::warn!(error = %e, "could not list uploads; orphan objects are kept");
            return removed;
        }
    };
    let objects = match blobs.list().await {
        Ok(objects) => objects,
        Err(e) => {
            tracing::warn!(error = %e, "could not list stored audio; orphan objects are kept");
            return removed;
        }
    };
    for object in objects {
        if known.contains(&object.key) || object.modified_ms >= orphans_before {
            continue;
        }
        match blobs.delete(&object.key).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(error = %e, key = %object.key, "could not remove an orphaned upload")
            }
        }
    }
    if removed > 0 {
        tracing::info!(objects = removed, "removed orphaned and unfinished uploads");
    }
    removed
}

/// Expires uploads older than `upload_ttl_secs` that no live transcript uses, every
/// minute; their objects go after the rows' deletion commits. On shared storage it
/// also aborts unfinished uploads older than a day (a node that died mid-upload).
pub async fn expire(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let ttl_ms = (state.config.upload_ttl_secs as i64).saturating_mul(1000);
    let mut ticker = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if ttl_ms > 0 {
            expire_once(&state, ttl_ms).await;
        }
        if state.blobs.is_shared() {
            let before = state.clock.now_ms() - SHARED_UNFINISHED_GRACE_MS;
            if let Err(e) = state.blobs.abort_unfinished(before).await {
                tracing::warn!(error = %e, "could not abort unfinished uploads");
            }
        }
    }
}

/// One expiry pass (also called by tests through the running server's tasks).
pub async fn expire_once(state: &AppState, ttl_ms: i64) -> usize {
    let cutoff = state.clock.now_ms() - ttl_ms;
    match state.store.expire_uploads(cutoff).await {
        Ok(expired) => {
            let keys: Vec<String> = expired.iter().map(|u| u.path.clone()).collect();
            remove_objects(state, &keys, &[]).await;
            if !expired.is_empty() {
                tracing::info!(uploads = expired.len(), "expired unused uploads");
            }
            expired.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not expire uploads");
            0
        }
    }
}

/// Deletes uploads' objects (missing ones are fine) and every object under the given
/// project folders, after the rows that named them are gone. A failure is logged; the
/// next start's sweep removes what is left.
pub async fn remove_objects(state: &AppState, stored: &[String], project_folders: &[String]) {
    for p in stored {
        let key = state.blobs.key_of(p);
        if let Err(e) = state.blobs.delete(&key).await {
            tracing::error!(error = %e, key = %key, "could not delete an uploaded object");
        }
    }
    for folder in project_folders {
        if let Err(e) = state.blobs.delete_folder(folder).await {
            tracing::error!(error = %e, folder = %folder, "could not delete a project's uploads");
        }
    }
}
