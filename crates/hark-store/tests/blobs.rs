//! The audio storage conformance suite, run against both backends: the local
//! directory and a real S3-compatible server (Garage, from scripts/garage.sh).

use bytes::Bytes;
use futures::StreamExt;
use hark_store::blobs::{BlobError, BlobStore, LocalBlobs, S3Blobs, MIN_PART_SIZE};
use std::sync::Arc;

/// Deterministic bytes that differ at every offset, so a misplaced part shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn read_all(
    blobs: &dyn BlobStore,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut stream = blobs.read(key, range).await.expect("read");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

/// Writes `data` in 64 KiB chunks, as the upload handler passes a request body on.
async fn write(blobs: &dyn BlobStore, key: &str, data: &[u8]) -> u64 {
    let mut writer = blobs.create(key).await.expect("create");
    for chunk in data.chunks(64 << 10) {
        writer
            .write(Bytes::copy_from_slice(chunk))
            .await
            .expect("write");
    }
    writer.finish().await.expect("finish")
}

async fn keys(blobs: &dyn BlobStore) -> Vec<String> {
    let mut keys: Vec<String> = blobs
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.key)
        .collect();
    keys.sort();
    keys
}

const FAR_FUTURE: i64 = i64::MAX;

async fn conformance(blobs: Arc<dyn BlobStore>) {
    let blobs = blobs.as_ref();
    blobs.check().await.expect("storage answers");
    assert!(keys(blobs).await.is_empty());

    // A streamed object of several parts (5 MiB parts: 3 of them), whole and ranged.
    let data = pattern(2 * MIN_PART_SIZE + 123_457);
    assert_eq!(write(blobs, "p1/big", &data).await, data.len() as u64);
    let listed = blobs.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].key.as_str(), listed[0].size),
        ("p1/big", data.len() as u64)
    );
    assert!(
        read_all(blobs, "p1/big", None).await == data,
        "whole object"
    );
    let edge = MIN_PART_SIZE as u64;
    assert!(
        read_all(blobs, "p1/big", Some(edge - 10..edge + 10)).await
            == data[edge as usize - 10..edge as usize + 10],
        "a range across the first part boundary"
    );
    let end = data.len() as u64;
    assert!(read_all(blobs, "p1/big", Some(end - 7..end)).await == data[data.len() - 7..]);
    assert!(read_all(blobs, "p1/big", Some(3..3)).await.is_empty());

    // The decoder's file: the same bytes; a scratch copy goes when dropped.
    let scratch = tempfile::tempdir().expect("scratch");
    let file = blobs
        .local_file("p1/big", scratch.path())
        .await
        .expect("local file");
    assert!(std::fs::read(file.path()).expect("read file") == data);
    let path = file.path().to_path_buf();
    drop(file);
    if blobs.is_shared() {
        assert!(!path.exists(), "scratch copy removed");
        assert_eq!(std::fs::read_dir(scratch.path()).expect("dir").count(), 0);
    } else {
        assert!(path.exists(), "the local backend's own file stays");
    }

    // Missing objects.
    assert!(matches!(
        blobs.read("p1/missing", None).await.err(),
        Some(BlobError::NotFound(_))
    ));
    assert!(matches!(
        blobs.local_file("p1/missing", scratch.path()).await.err(),
        Some(BlobError::NotFound(_))
    ));
    blobs
        .delete("p1/missing")
        .await
        .expect("deleting nothing is fine");
    for bad in ["../x", "/abs", "p1/../../x", ""] {
        assert!(matches!(
            blobs.create(bad).await.err(),
            Some(BlobError::InvalidKey(_))
        ));
    }

    // An aborted upload leaves nothing, and neither does one dropped unfinished.
    let mut aborted = blobs.create("p1/aborted").await.expect("create");
    aborted
        .write(Bytes::from(pattern(MIN_PART_SIZE + 1)))
        .await
        .expect("write");
    aborted.abort().await.expect("abort");
    let mut dropped = blobs.create("p1/dropped").await.expect("create");
    dropped
        .write(Bytes::from(pattern(MIN_PART_SIZE + 1)))
        .await
        .expect("write");
    drop(dropped);
    assert_eq!(keys(blobs).await, vec!["p1/big".to_string()]);
    // The dropped writer's abort runs in the background.
    let mut unfinished = 1;
    for _ in 0..50 {
        unfinished = blobs.abort_unfinished(FAR_FUTURE).await.expect("sweep");
        if unfinished == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        unfinished, 0,
        "aborted and dropped uploads left nothing unfinished"
    );

    // An interrupted upload (the process died mid-body: no abort ran) stays unfinished
    // until a sweep; a young one survives a sweep with an earlier cutoff.
    let mut interrupted = blobs.create("p2/interrupted").await.expect("create");
    interrupted
        .write(Bytes::from(pattern(MIN_PART_SIZE + 1)))
        .await
        .expect("write");
    interrupted
        .write(Bytes::from(pattern(MIN_PART_SIZE)))
        .await
        .expect("write");
    std::mem::forget(interrupted);
    assert_eq!(
        keys(blobs).await,
        vec!["p1/big".to_string()],
        "not an object yet"
    );
    let hour_ago = hark_core::clock::SystemClock.now_ms() - 3_600_000;
    assert_eq!(blobs.abort_unfinished(hour_ago).await.expect("sweep"), 0);
    assert_eq!(blobs.abort_unfinished(FAR_FUTURE).await.expect("sweep"), 1);
    assert_eq!(blobs.abort_unfinished(FAR_FUTURE).await.expect("sweep"), 0);

    // A project's folder goes at once; others stay.
    write(blobs, "p1/small", b"RIFF....").await;
    write(blobs, "p2/other", b"RIFF....").await;
    assert_eq!(keys(blobs).await, vec!["p1/big", "p1/small", "p2/other"]);
    assert_eq!(blobs.delete_folder("p1").await.expect("delete folder"), 2);
    assert_eq!(keys(blobs).await, vec!["p2/other"]);
    blobs.delete("p2/other").await.expect("delete");
    assert!(keys(blobs).await.is_empty());
    assert!(matches!(
        blobs.read("p2/other", None).await.err(),
        Some(BlobError::NotFound(_))
    ));
}

use hark_core::clock::Clock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_conforms() {
    let dir = tempfile::tempdir().expect("dir");
    let local = LocalBlobs::open(dir.path().join("uploads")).expect("open");
    conformance(Arc::new(local)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bucket_conforms() {
    let s3 = S3Blobs::open(hark_store::testing::s3_settings(MIN_PART_SIZE)).expect("open");
    conformance(Arc::new(s3)).await;
}

/// A multipart object really is stored in parts: its ETag says how many (`-3`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_are_written_in_parts() {
    use object_store::{path::Path, ObjectStoreExt};
    let settings = hark_store::testing::s3_settings(MIN_PART_SIZE);
    let s3 = S3Blobs::open(settings.clone()).expect("open");
    write(&s3, "p/parts", &pattern(2 * MIN_PART_SIZE + 1)).await;
    let direct = hark_store::testing::direct_s3_client(&settings);
    let meta = direct
        .head(&Path::from(format!("{}/p/parts", settings.prefix)))
        .await
        .expect("head");
    let etag = meta.e_tag.unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "{etag}");
    s3.delete("p/parts").await.expect("delete");
}

/// A bucket that does not exist is reported by the start-up check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_check_reports_a_missing_bucket() {
    let mut settings = hark_store::testing::s3_settings(MIN_PART_SIZE);
    settings.bucket = format!("missing-{}", uuid::Uuid::new_v4().simple());
    let s3 = S3Blobs::open(settings).expect("open");
    assert!(s3.check().await.is_err());
}
