//! Fetching remote `audio_url`s for the worker, through the outbound policy and limits.

use crate::AppState;
use hark_outbound::{assemblyai_download_error, download_to_blob, DownloadLimits, OutboundError};
use hark_store::blobs::BlobWriter;
use std::time::Duration;

/// Downloads `url` into the audio storage through `writer` (the caller finishes or
/// aborts it); `Err` is the client-facing transcript error.
pub async fn download(
    state: &AppState,
    url: &str,
    writer: &mut dyn BlobWriter,
) -> Result<(), String> {
    let limits = DownloadLimits {
        max_bytes: state.config.outbound.max_download_bytes,
        timeout: Duration::from_secs(state.config.outbound.download_timeout_secs),
        ..DownloadLimits::default()
    };
    match download_to_blob(&state.outbound, url, writer, limits).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::info!(host = %hark_outbound::client::log_host(url), error = %e, "audio download failed");
            let base = assemblyai_download_error(url);
            Err(match e {
                OutboundError::Forbidden(_) => {
                    format!("{base} This server's outbound policy does not allow that address.")
                }
                OutboundError::TooLarge { limit } => {
                    format!("{base} The file is larger than the {limit} bytes allowed.")
                }
                _ => base,
            })
        }
    }
}
