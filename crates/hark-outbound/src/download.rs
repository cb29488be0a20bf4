//! Downloads of a transcript's `audio_url`: streamed to a file or into the audio storage
//! (`hark_store::blobs`) under a size and a time limit, through the SSRF-safe client; a
//! failed download leaves nothing behind.

use crate::client::{log_host, OutboundClient};
use crate::error::OutboundError;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Limits of one download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// The largest body accepted, in bytes (default 5 GB).
    pub max_bytes: u64,
    /// The time the whole download may take, headers and body (default 10 minutes).
    pub timeout: Duration,
    /// The time allowed until the response headers arrive: resolving, connecting, TLS
    /// and the server's first answer (default 30 s). The client's own connect timeout
    /// ([`OutboundClient::with_connect_timeout`]) applies as well.
    pub connect_timeout: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        Self {
            max_bytes: 5_000_000_000,
            timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// AssemblyAI's error text for a transcript whose `audio_url` could not be fetched.
pub fn assemblyai_download_error(url: &str) -> String {
    format!(
        "Download error, unable to download {url}. Please make sure the file exists and is accessible from the internet."
    )
}

/// Downloads `url` into `dest` (created or truncated) and returns the number of bytes
/// written. On any error the partial file is removed.
pub async fn download_to_file(
    client: &OutboundClient,
    url: &str,
    dest: &Path,
    limits: DownloadLimits,
) -> Result<u64, OutboundError> {
    let mut created = false;
    let result = timed(url, limits, fetch(client, url, dest, limits, &mut created)).await;
    if result.is_err() && created {
        if let Err(rm) = tokio::fs::remove_file(dest).await {
            if rm.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %rm, "cannot remove a partial download");
            }
        }
    }
    result
}

/// One download under the whole-download time limit, its outcome logged by host only.
async fn timed(
    url: &str,
    limits: DownloadLimits,
    download: impl std::future::Future<Output = Result<u64, OutboundError>>,
) -> Result<u64, OutboundError> {
    let result = tokio::time::timeout(limits.timeout, download)
        .await
        .unwrap_or(Err(OutboundError::Timeout));
    let host = log_host(url);
    match &result {
        Ok(bytes) => tracing::debug!(host = %host, bytes, "download finished"),
        Err(e) => tracing::info!(host = %host, error = %e, "download failed"),
    }
    result
}

/// Where a download's body goes, chunk by chunk.
trait Sink {
    async fn put(&mut self, chunk: bytes::Bytes) -> Result<(), OutboundError>;
}

async fn fetch(
    client: &OutboundClient,
    url: &str,
    dest: &Path,
    limits: DownloadLimits,
    created: &mut bool,
) -> Result<u64, OutboundError> {
    let response = respond(client, url, limits).await?;
    // Flag first, so even a failure inside `create` is cleaned up.
    *created = true;
    let file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| OutboundError::Io(e.to_string()))?;
    let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let written = pump(response, &mut writer, limits).await?;
    writer
        .flush()
        .await
        .map_err(|e| OutboundError::Io(e.to_string()))?;
    let file = writer.into_inner();
    file.sync_all()
        .await
        .map_err(|e| OutboundError::Io(e.to_string()))?;
    Ok(written)
}

impl Sink for tokio::io::BufWriter<tokio::fs::File> {
    async fn put(&mut self, chunk: bytes::Bytes) -> Result<(), OutboundError> {
        self.write_all(&chunk)
            .await
            .map_err(|e| OutboundError::Io(e.to_string()))
    }
}

/// Downloads `url` into a new object of the audio storage through `writer` and
/// returns the number of bytes written. The caller finishes the writer on success and
/// aborts it on error, so a failed download leaves no object.
pub async fn download_to_blob(
    client: &OutboundClient,
    url: &str,
    writer: &mut dyn hark_store::blobs::BlobWriter,
    limits: DownloadLimits,
) -> Result<u64, OutboundError> {
    let fetched = async {
        let response = respond(client, url, limits).await?;
        pump(response, &mut BlobSink(writer), limits).await
    };
    timed(url, limits, fetched).await
}

struct BlobSink<'a>(&'a mut dyn hark_store::blobs::BlobWriter);

impl Sink for BlobSink<'_> {
    async fn put(&mut self, chunk: bytes::Bytes) -> Result<(), OutboundError> {
        self.0
            .write(chunk)
            .await
            .map_err(|e| OutboundError::Io(e.to_string()))
    }
}

/// Sends the request and checks the answer's status and announced length.
async fn respond(
    client: &OutboundClient,
    url: &str,
    limits: DownloadLimits,
) -> Result<reqwest::Response, OutboundError> {
    let parsed = client.check_url(url)?;
    let send = client.following().get(parsed).send();
    let response = tokio::time::timeout(limits.connect_timeout, send)
        .await
        .map_err(|_| OutboundError::Timeout)?
        .map_err(OutboundError::from_reqwest)?;
    let status = response.status();
    if !status.is_success() {
        return Err(OutboundError::Status(status.as_u16()));
    }
    if let Some(length) = response.content_length() {
        if length > limits.max_bytes {
            return Err(OutboundError::TooLarge {
                limit: limits.max_bytes,
            });
        }
    }
    Ok(response)
}

/// Moves the body into `sink` under the size limit; returns the bytes moved.
async fn pump(
    mut response: reqwest::Response,
    sink: &mut impl Sink,
    limits: DownloadLimits,
) -> Result<u64, OutboundError> {
    let mut written: u64 = 0;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(OutboundError::from_reqwest)?
    {
        written = written.saturating_add(chunk.len() as u64);
        if written > limits.max_bytes {
            return Err(OutboundError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        sink.put(chunk).await?;
    }
    Ok(written)
}
