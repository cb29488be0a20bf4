//! Uploads in S3-compatible storage (`[storage] kind = "s3"`, against the Garage node
//! scripts/garage.sh starts), through the running server: an upload is stored in the
//! bucket and transcribed; deleting its transcript, its project or its account deletes
//! its objects (checked through the S3 API directly, not through Hark); the sweep at
//! start removes objects no row names and unfinished multipart uploads.

mod common;
use common::mgmt::*;
use common::*;
use hark_core::clock::{Clock, ManualClock, SystemClock};
use hark_core::Plan;
use hark_server::config::{Config, StorageConfig, StorageKind};
use hark_store::blobs::{BlobStore, S3Blobs, S3Settings, MIN_PART_SIZE};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt};
use serde_json::json;
use std::sync::Arc;

fn use_s3(config: &mut Config, s3: &S3Settings) {
    config.storage = StorageConfig {
        kind: StorageKind::S3,
        bucket: s3.bucket.clone(),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        access_key_id: s3.access_key_id.clone(),
        secret_access_key: s3.secret_access_key.clone(),
        part_size_bytes: s3.part_size,
        prefix: s3.prefix.clone(),
    };
}

/// Every object under the test's prefix, as `<project>/<upload>`.
async fn objects(s3: &S3Settings) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = ObjectPath::from(s3.prefix.as_str());
    let mut keys: Vec<String> = hark_store::testing::direct_s3_client(s3)
        .list(Some(&prefix))
        .map_ok(|m| {
            m.location
                .to_string()
                .trim_start_matches(&format!("{}/", s3.prefix))
                .to_string()
        })
        .try_collect()
        .await
        .expect("list bucket");
    keys.sort();
    keys
}

async fn upload(ts: &TestServer, key: &str, words: &[&str]) -> String {
    let r = ts
        .http
        .post(ts.url("/v2/upload"))
        .header("authorization", key)
        .body(script(words))
        .send()
        .await
        .expect("upload");
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    v["upload_url"].as_str().expect("upload_url").to_string()
}

async fn transcribe(ts: &TestServer, key: &str, url: &str) -> serde_json::Value {
    let r = ts
        .http
        .post(ts.url("/v2/transcript"))
        .header("authorization", key)
        .json(&json!({ "audio_url": url }))
        .send()
        .await
        .expect("create");
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    wait_done(ts, key, v["id"].as_str().expect("id")).await
}

fn upload_id(url: &str) -> &str {
    url.rsplit('/').next().expect("id")
}

/// The test in one process: an upload is transcribed from the bucket, and
/// deleted from the bucket when its transcript, project or account is deleted.
async fn uploads_live_in_the_bucket_and_leave_with_their_owner(db: Db) {
    let s3 = hark_store::testing::s3_settings(MIN_PART_SIZE);
    let ts = TestServer::start_with(db, Some(Arc::new(ScriptedEngine)), |c| use_s3(c, &s3)).await;
    let a = org(&ts, Plan::Free).await;
    let (_, key) = ts.key(a.project, None).await;

    // Upload -> stored in the bucket, not on disk -> transcribed from it.
    let url = upload(&ts, &key, &["stored", "in", "garage"]).await;
    let object = format!("{}/{}", a.project, upload_id(&url));
    assert_eq!(objects(&s3).await, vec![object.clone()]);
    assert!(support_files(&hark_server::uploads_dir(&ts.config.data_dir)).is_empty());
    let done = transcribe(&ts, &key, &url).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["text"], "stored in garage");
    assert!(
        support_files(&ts.config.data_dir.join("tmp")).is_empty(),
        "the scratch copy is removed after the job"
    );

    // Deleting the transcript deletes its upload's object.
    let r = ts
        .http
        .delete(ts.url(&format!(
            "/v2/transcript/{}",
            done["id"].as_str().expect("id")
        )))
        .header("authorization", &key)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        objects(&s3).await.is_empty(),
        "transcript deleted, object gone"
    );

    // Deleting a project deletes its objects; another project's stay.
    let made = call(
        &ts,
        "POST",
        &format!("/accounts/{}/projects", a.account),
        Some(&a.owner.token),
        Some(json!({"name": "doomed"})),
    )
    .await;
    let doomed = made.ok()["id"].as_str().expect("project id").to_string();
    let doomed_id = hark_core::ProjectId::parse(&doomed).expect("project id");
    let (_, doomed_key) = ts.key(doomed_id, None).await;
    let gone = upload(&ts, &doomed_key, &["doomed"]).await;
    transcribe(&ts, &doomed_key, &gone).await;
    upload(&ts, &doomed_key, &["unused"]).await;
    let kept = upload(&ts, &key, &["kept"]).await;
    assert_eq!(objects(&s3).await.len(), 3);
    let d = call(
        &ts,
        "DELETE",
        &format!("/accounts/{}/projects/{doomed}", a.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert_eq!(
        objects(&s3).await,
        vec![format!("{}/{}", a.project, upload_id(&kept))]
    );

    // Deleting the account deletes the rest.
    transcribe(&ts, &key, &kept).await;
    call(
        &ts,
        "POST",
        "/auth/reauth",
        Some(&a.owner.token),
        Some(json!({"password": PASSWORD})),
    )
    .await
    .ok();
    let d = call(
        &ts,
        "DELETE",
        &format!("/accounts/{}", a.account),
        Some(&a.owner.token),
        None,
    )
    .await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert!(
        objects(&s3).await.is_empty(),
        "account deleted, objects gone"
    );
    let ready = ts.ready_report().await;
    assert_eq!(ready["storage"], true, "{ready}");
    ts.stop().await;
}

/// At start, objects no upload row names and unfinished multipart uploads (older than
/// their grace periods: the bucket is shared) are removed; stored uploads stay.
async fn the_sweep_at_start_cleans_the_bucket(db: Db) {
    let s3 = hark_store::testing::s3_settings(MIN_PART_SIZE);
    // Two days on: every object and upload made now is past its grace period.
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms() + 2 * 86_400_000));
    let mut ts =
        TestServer::start_with_clock(db, Some(Arc::new(ScriptedEngine)), clock.clone(), |c| {
            use_s3(c, &s3)
        })
        .await;
    let t = ts.funded_tenant().await;
    let url = upload(&ts, &t.key, &["kept"]).await;
    let kept = format!("{}/{}", t.project, upload_id(&url));
    let bucket = hark_store::testing::direct_s3_client(&s3);
    bucket
        .put(
            &ObjectPath::from(format!("{}/{}/orphan", s3.prefix, t.project)),
            b"RIFF orphan".to_vec().into(),
        )
        .await
        .expect("orphan");
    let mut unfinished = bucket
        .put_multipart(&ObjectPath::from(format!(
            "{}/{}/cut",
            s3.prefix, t.project
        )))
        .await
        .expect("multipart");
    unfinished
        .put_part(vec![7u8; MIN_PART_SIZE].into())
        .await
        .expect("part");
    std::mem::forget(unfinished);
    assert_eq!(objects(&s3).await.len(), 2);
    if let Some(server) = ts.server.take() {
        server.shutdown().await;
    }
    let (data_dir, db_url) = (ts.config.data_dir.clone(), ts.config.database_url.clone());
    let again = TestServer::start_with_clock(db, Some(Arc::new(ScriptedEngine)), clock, |c| {
        c.data_dir = data_dir;
        c.database_url = db_url;
        use_s3(c, &s3);
    })
    .await;
    assert_eq!(objects(&s3).await, vec![kept]);
    let ours = S3Blobs::open(s3.clone()).expect("open");
    assert_eq!(
        ours.abort_unfinished(i64::MAX).await.expect("sweep"),
        0,
        "the unfinished upload was aborted at start"
    );
    again.stop().await;
    ts.stop().await;
}

/// A bucket that cannot be reached stops the server at start with a clear message.
async fn an_unreachable_bucket_refuses_to_start(db: Db) {
    let mut s3 = hark_store::testing::s3_settings(MIN_PART_SIZE);
    s3.bucket = format!("missing-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("dir");
    let database = match db {
        Db::Sqlite => hark_store::testing::TestDatabase::sqlite().await,
        Db::Postgres => hark_store::testing::TestDatabase::postgres().await,
    };
    let mut config = Config {
        data_dir: dir.path().join("data"),
        database_url: database.url.clone(),
        bind: "127.0.0.1:0".into(),
        ..Config::default()
    };
    use_s3(&mut config, &s3);
    let refused = hark_server::start(config, None, Arc::new(SystemClock)).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("audio storage") && message.contains(&s3.bucket),
        "{message}"
    );
    database.drop_database().await;
}

fn support_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(support_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

both_databases!(
    uploads_live_in_the_bucket_and_leave_with_their_owner,
    the_sweep_at_start_cleans_the_bucket,
    an_unreachable_bucket_refuses_to_start,
);
