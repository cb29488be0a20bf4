//! The S3-compatible backend (AWS S3, Garage, MinIO...), through the `object_store`
//! crate: objects are written as multipart uploads of `part_size` bytes (at most
//! [`PARTS_IN_FLIGHT`] parts buffered at once), read as streams; unfinished multipart
//! uploads are found with `ListMultipartUploads` and aborted.

use super::{
    check_key, BlobError, BlobInfo, BlobResult, BlobStore, BlobStream, BlobWriter, LocalFile,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hark_core::clock::Millis;
use hark_core::keys::Secret;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig,
    WriteMultipart,
};
use serde::Deserialize;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How many parts of one object may be uploading at once; with `part_size` this bounds
/// the memory one upload holds.
pub const PARTS_IN_FLIGHT: usize = 2;

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// `http(s)://host:port` of the S3 API (path-style requests).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Bytes per multipart part (at least [`MIN_PART_SIZE`]).
    pub part_size: usize,
    /// A folder of the bucket every key goes under (empty: the bucket's root), so
    /// several clusters, or tests, can share one bucket.
    pub prefix: String,
}

pub struct S3Blobs {
    store: Arc<AmazonS3>,
    settings: S3Settings,
    http: HttpClient,
}

impl S3Blobs {
    pub fn open(settings: S3Settings) -> BlobResult<Self> {
        if settings.bucket.is_empty() {
            return Err(BlobError::Config("storage.bucket is not set".into()));
        }
        if !(settings.endpoint.starts_with("http://") || settings.endpoint.starts_with("https://"))
        {
            return Err(BlobError::Config(format!(
                "storage.endpoint must be an http:// or https:// URL, not {:?}",
                settings.endpoint
            )));
        }
        if settings.part_size < MIN_PART_SIZE {
            return Err(BlobError::Config(format!(
                "storage.part_size_bytes must be at least {MIN_PART_SIZE}"
            )));
        }
        let options = ClientOptions::new()
            .with_allow_http(settings.endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(5));
        // Few retries: a start-up check against a wrong endpoint must answer in seconds.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        };
        let store = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_endpoint(settings.endpoint.trim_end_matches('/'))
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(settings.secret_access_key.expose())
            .with_virtual_hosted_style_request(false)
            .with_client_options(options.clone())
            .with_retry(retry)
            .build()?;
        let http = ReqwestConnector::default().connect(&options)?;
        Ok(Self {
            store: Arc::new(store),
            settings,
            http,
        })
    }

    fn prefix(&self) -> &str {
        self.settings.prefix.trim_matches('/')
    }

    /// The object path of `key`, under the prefix.
    fn path(&self, key: &str) -> BlobResult<ObjectPath> {
        check_key(key)?;
        let full = match self.prefix() {
            "" => key.to_string(),
            prefix => format!("{prefix}/{key}"),
        };
        ObjectPath::parse(&full).map_err(|_| BlobError::InvalidKey(key.to_string()))
    }

    /// The folder the store's keys live in, if any.
    fn root(&self) -> Option<ObjectPath> {
        match self.prefix() {
            "" => None,
            prefix => Some(ObjectPath::from(prefix)),
        }
    }

    /// A listed object path back to its key.
    fn key_of_path(&self, path: &ObjectPath) -> String {
        let full = path.to_string();
        match self.prefix() {
            "" => full,
            prefix => full
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_string)
                .unwrap_or(full),
        }
    }

    /// One page of `ListMultipartUploads` (object_store has no call for it).
    async fn list_unfinished(&self, marker: Option<(&str, &str)>) -> BlobResult<UploadsPage> {
        let mut url = url::Url::parse(&format!(
            "{}/{}",
            self.settings.endpoint.trim_end_matches('/'),
            self.settings.bucket
        ))
        .map_err(|e| BlobError::Config(format!("storage.endpoint: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("uploads", "");
            if !self.prefix().is_empty() {
                query.append_pair("prefix", &format!("{}/", self.prefix()));
            }
            if let Some((key, upload)) = marker {
                query.append_pair("key-marker", key);
                query.append_pair("upload-id-marker", upload);
            }
        }
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| BlobError::Config(e.to_string()))?;
        let credential = AwsCredential {
            key_id: self.settings.access_key_id.clone(),
            secret_key: self.settings.secret_access_key.expose().to_string(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", &self.settings.region).authorize(&mut request, None);
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        let text = String::from_utf8_lossy(&body);
        if status != 200 {
            return Err(BlobError::Protocol {
                what: "ListMultipartUploads",
                status,
                body: text.chars().take(300).collect(),
            });
        }
        quick_xml::de::from_str(&text).map_err(|e| BlobError::Protocol {
            what: "ListMultipartUploads",
            status,
            body: e.to_string(),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadsPage {
    #[serde(default)]
    upload: Vec<Unfinished>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Unfinished {
    key: String,
    upload_id: String,
    initiated: String,
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

#[async_trait]
impl BlobStore for S3Blobs {
    fn describe(&self) -> String {
        format!(
            "S3 bucket {} at {} (region {})",
            self.settings.bucket, self.settings.endpoint, self.settings.region
        )
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn check(&self) -> BlobResult<()> {
        // One ListObjects request: fails on a missing bucket or refused credentials.
        match self.store.list(self.root().as_ref()).next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.into()),
        }
    }

    async fn create(&self, key: &str) -> BlobResult<Box<dyn BlobWriter>> {
        let upload = self.store.put_multipart(&self.path(key)?).await?;
        Ok(Box::new(S3Writer {
            upload: Some(WriteMultipart::new_with_chunk_size(
                upload,
                self.settings.part_size,
            )),
            size: 0,
        }))
    }

    async fn read(&self, key: &str, range: Option<Range<u64>>) -> BlobResult<BlobStream> {
        let path = self.path(key)?;
        if range.as_ref().is_some_and(|r| r.is_empty()) {
            return Ok(futures::stream::empty().boxed());
        }
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match self.store.get_opts(&path, options).await {
            Ok(result) => Ok(result.into_stream().map_err(BlobError::from).boxed()),
            Err(e) if not_found(&e) => Err(BlobError::NotFound(key.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> BlobResult<()> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_folder(&self, prefix: &str) -> BlobResult<usize> {
        let prefix = self.path(prefix)?;
        let locations: Vec<ObjectPath> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        let count = locations.len();
        let mut deleted = self
            .store
            .delete_stream(futures::stream::iter(locations.into_iter().map(Ok)).boxed());
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(count)
    }

    async fn list(&self) -> BlobResult<Vec<BlobInfo>> {
        Ok(self
            .store
            .list(self.root().as_ref())
            .map_ok(|meta| BlobInfo {
                key: self.key_of_path(&meta.location),
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            })
            .try_collect()
            .await?)
    }

    async fn abort_unfinished(&self, started_before: Millis) -> BlobResult<usize> {
        let mut aborted = 0;
        let mut marker: Option<(String, String)> = None;
        loop {
            let page = self
                .list_unfinished(marker.as_ref().map(|(k, u)| (k.as_str(), u.as_str())))
                .await?;
            for upload in &page.upload {
                let started = time::OffsetDateTime::parse(
                    &upload.initiated,
                    &time::format_description::well_known::Rfc3339,
                )
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as Millis)
                // An unreadable date is treated as old: an upload no one finishes.
                .unwrap_or(Millis::MIN);
                if started >= started_before {
                    continue;
                }
                let path = ObjectPath::from(upload.key.as_str());
                match self.store.abort_multipart(&path, &upload.upload_id).await {
                    Ok(()) => aborted += 1,
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(upload)) => marker = Some((key, upload)),
                _ => break,
            }
        }
        Ok(aborted)
    }

    async fn local_file(&self, key: &str, scratch_dir: &Path) -> BlobResult<LocalFile> {
        let mut stream = self.read(key, None).await?;
        super::private_dir(scratch_dir)?;
        // Removed when dropped, whatever happens below.
        let local = LocalFile {
            path: scratch_dir.join(format!("{}.audio", uuid::Uuid::new_v4())),
            scratch: true,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&local.path)
            .await?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?).await?;
        }
        file.flush().await?;
        Ok(local)
    }
}

struct S3Writer {
    /// `None` once finished or aborted.
    upload: Option<WriteMultipart>,
    size: u64,
}

fn closed() -> BlobError {
    BlobError::Io(std::io::Error::other("writer already closed"))
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()> {
        let upload = self.upload.as_mut().ok_or_else(closed)?;
        // Waits while PARTS_IN_FLIGHT parts are still uploading: memory stays bounded
        // however fast the client sends.
        upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        self.size += chunk.len() as u64;
        upload.put(chunk);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> BlobResult<u64> {
        let upload = self.upload.take().ok_or_else(closed)?;
        upload.finish().await?;
        Ok(self.size)
    }

    async fn abort(mut self: Box<Self>) -> BlobResult<()> {
        let upload = self.upload.take().ok_or_else(closed)?;
        Ok(upload.abort().await?)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped unfinished (the request went away): abort its multipart upload, or
        // the store keeps its parts until the next sweep.
        if let Some(upload) = self.upload.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(error = %e, "could not abort an unfinished upload");
                    }
                });
            }
        }
    }
}
