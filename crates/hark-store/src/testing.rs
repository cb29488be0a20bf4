//! Support for tests that need a real database of either kind: a fresh SQLite file or
//! a fresh PostgreSQL database per test, so tests never share state.

use crate::{SqlStore, StoreResult};
use hark_core::clock::Clock;
use sqlx::Executor;
use std::sync::Arc;

/// The server every PostgreSQL test uses; CI and every development machine run one.
pub fn postgres_admin_url() -> String {
    std::env::var("HARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let url = format!("sqlite://{}/hark.db", dir.path().display());
        Self {
            url,
            name: None,
            _dir: Some(dir),
        }
    }

    /// Creates a new, empty PostgreSQL database. Panics (failing the test) when the
    /// server is unreachable: PostgreSQL tests are never skipped.
    pub async fn postgres() -> Self {
        let admin = postgres_admin_url();
        let name = format!("hark_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect_admin(&admin).await;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("creating test database: {e}"));
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Self {
            url: format!("{base}/{name}"),
            name: Some(name),
            _dir: None,
        }
    }

    pub async fn open(&self, clock: Arc<dyn Clock>) -> StoreResult<SqlStore> {
        SqlStore::open(&self.url, clock).await
    }

    /// Drops a PostgreSQL test database (call at the end of a test).
    pub async fn drop_database(self) {
        if let Some(name) = &self.name {
            let mut conn = connect_admin(&postgres_admin_url()).await;
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}

async fn connect_admin(url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is unreachable ({e}); start it (see README) — PostgreSQL tests are never skipped")
    })
}

/// The S3-compatible store the object-storage tests use (the Garage node that
/// `scripts/garage.sh` starts and `scripts/test.sh` runs), with its keys under a new
/// random `prefix` so tests sharing the bucket never see each other's objects. Panics
/// (failing the test) when `HARK_TEST_S3_*` is unset: object-storage tests are never
/// skipped.
#[cfg(feature = "s3")]
pub fn s3_settings(part_size: usize) -> crate::blobs::S3Settings {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: start Garage with `eval \"$(bash scripts/garage.sh)\"` \
                 (scripts/test.sh does) — object-storage tests are never skipped"
            )
        })
    };
    crate::blobs::S3Settings {
        bucket: var("HARK_TEST_S3_BUCKET"),
        endpoint: var("HARK_TEST_S3_ENDPOINT"),
        region: var("HARK_TEST_S3_REGION"),
        access_key_id: var("HARK_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: hark_core::keys::Secret::new(var("HARK_TEST_S3_SECRET_ACCESS_KEY")),
        part_size,
        prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// A client of the test bucket that is not Hark's own storage code, so tests check
/// what is really in the bucket.
#[cfg(feature = "s3")]
pub fn direct_s3_client(s3: &crate::blobs::S3Settings) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_endpoint(&s3.endpoint)
        .with_region(&s3.region)
        .with_access_key_id(&s3.access_key_id)
        .with_secret_access_key(s3.secret_access_key.expose())
        .with_allow_http(true)
        .build()
        .expect("S3 client")
}
