//! A local control socket in the data directory, through which the operator CLI tells
//! a running server on the same machine that credentials changed, so revocation takes
//! effect before the CLI returns.

use crate::AppState;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

pub async fn serve_control(state: AppState, path: PathBuf) {
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "control socket unavailable; CLI changes apply within the epoch interval");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            if reader.read_line(&mut line).await.is_ok() && line.trim() == "invalidate" {
                state.auth.clear();
                // Live sessions of revoked keys end too.
                state
                    .store
                    .credential_bus()
                    .publish(hark_store::CredentialChange::All);
                let _ = write.write_all(b"ok\n").await;
            }
        });
    }
}

/// Tells a server running on `data_dir` to drop its cached credentials. Returns
/// whether a server acknowledged (false when none is running).
pub async fn notify_credentials_changed(data_dir: &Path) -> bool {
    let path = socket_path(data_dir);
    let attempt = async {
        let mut stream = tokio::net::UnixStream::connect(&path).await.ok()?;
        stream.write_all(b"invalidate\n").await.ok()?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await.ok()?;
        (reply.trim() == "ok").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Some(()))
    )
}
