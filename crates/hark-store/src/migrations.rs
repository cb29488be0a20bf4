//! The schema migrations embedded in the binary (listed by `build.rs`), handed to sqlx's
//! migrator as a migration source of our own instead of through `sqlx::migrate!`.

use crate::sql::Backend;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// One backend's migrations: (version, description, SQL), sorted by version.
#[derive(Debug, Clone, Copy)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    // As sqlx reads a migration file: same checksum (of the exact text),
                    // same description, and the same transaction opt-out.
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        sql.starts_with("-- no-transaction"),
                    )
                })
                .collect())
        })
    }
}

/// The migrator for `backend`.
pub(crate) async fn migrator(backend: Backend) -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(match backend {
        Backend::Sqlite => embedded::SQLITE,
        Backend::Postgres => embedded::POSTGRES,
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sqlx itself resolves from the directory (the migrations' source of truth and
    /// what databases migrated by earlier builds recorded) equals what is embedded.
    #[tokio::test]
    async fn embedded_migrations_match_the_files() {
        for (backend, dir) in [(Backend::Sqlite, "sqlite"), (Backend::Postgres, "postgres")] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let from_files = Migrator::new(path).await.expect("reading the directory");
            let embedded = migrator(backend).await.expect("embedded migrations");
            let summary = |m: &Migrator| {
                m.iter()
                    .map(|m| (m.version, m.description.to_string(), m.checksum.to_vec()))
                    .collect::<Vec<_>>()
            };
            assert!(!summary(&embedded).is_empty());
            assert_eq!(summary(&embedded), summary(&from_files), "{dir}");
        }
    }
}
