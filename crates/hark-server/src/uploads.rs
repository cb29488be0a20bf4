//! Upkeep of the uploads directory: at start, files no upload row refers to (left by a
//! crash between writing and committing, or after a deletion's commit) and `.partial`
//! files of interrupted uploads are removed; while running, uploads no live transcript
//! uses expire after `upload_ttl_secs`.

use crate::AppState;
use hark_store::Store;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// How often expired uploads are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Removes, under `dir` (`<uploads>/<project>/<file>`), every `.partial` file and every
/// file no upload row names. Run before the listener accepts requests, so no upload is
/// in flight. Returns how many files went.
pub async fn sweep_at_start(store: &dyn Store, dir: &Path) -> usize {
    let known: HashSet<PathBuf> = match store.upload_paths().await {
        Ok(paths) => paths.into_iter().map(PathBuf::from).collect(),
        Err(e) => {
            // Without the rows nothing can be judged an orphan; try again next start.
            tracing::warn!(error = %e, "could not list uploads; orphan files are kept");
            return 0;
        }
    };
    let dir = dir.to_path_buf();
    let swept = tokio::task::spawn_blocking(move || sweep_dir(&dir, &known)).await;
    match swept {
        Ok(n) => {
            if n > 0 {
                tracing::info!(files = n, "removed orphaned and partial upload files");
            }
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "sweeping the uploads directory failed");
            0
        }
    }
}

fn sweep_dir(dir: &Path, known: &HashSet<PathBuf>) -> usize {
    let Ok(projects) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for project in projects.flatten() {
        let Ok(files) = std::fs::read_dir(project.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if !file.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let partial = path.extension().is_some_and(|e| e == "partial");
            if partial || !known.contains(&path) {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "could not remove an upload file")
                    }
                }
            }
        }
    }
    removed
}

/// Expires uploads older than `upload_ttl_secs` that no live transcript uses, every
/// minute; their files go after the rows' deletion commits.
pub async fn expire(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let ttl_ms = (state.config.upload_ttl_secs as i64).saturating_mul(1000);
    if ttl_ms <= 0 {
        return;
    }
    let mut ticker = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        expire_once(&state, ttl_ms).await;
    }
}

/// One expiry pass (also called by tests through the running server's tasks).
pub async fn expire_once(state: &AppState, ttl_ms: i64) -> usize {
    let cutoff = state.clock.now_ms() - ttl_ms;
    match state.store.expire_uploads(cutoff).await {
        Ok(expired) => {
            for upload in &expired {
                remove_file(Path::new(&upload.path)).await;
            }
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

/// Removes an upload's file; a missing file is fine.
pub async fn remove_file(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "could not delete an upload file")
        }
    }
}
