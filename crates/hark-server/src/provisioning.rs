//! Creating projects and API keys: secret generation, digest and sealing in one place,
//! shared by the operator CLI, the management API and tests.

use hark_core::clock::{Clock, Millis};
use hark_core::keys::{self, Secret, SecretDigest, SecretKind};
use hark_core::scope::Scope;
use hark_core::seal::MasterKey;
use hark_core::{ApiKeyId, ProjectId};
use hark_store::{Actor, ApiKeyRecord, KeyStore, NewApiKey, NewProject, StoreResult};

/// A new project with a fresh webhook signing secret, sealed to the project id.
pub fn new_project(master_key: &MasterKey, name: &str) -> NewProject {
    let id = ProjectId::new();
    NewProject {
        id,
        name: name.to_string(),
        webhook_secret_sealed: master_key
            .seal(&hark_core::webhook_sign::generate_secret(), &id.to_string()),
    }
}

/// Issues an API key in `project`; the secret is returned once and stored only as a
/// digest plus a copy sealed to the key id.
pub async fn issue_api_key(
    store: &dyn KeyStore,
    master_key: &MasterKey,
    clock: &dyn Clock,
    project: ProjectId,
    name: &str,
    expires_in_ms: Option<Millis>,
    actor: &Actor,
) -> StoreResult<(ApiKeyRecord, Secret)> {
    issue_scoped_api_key(
        store,
        master_key,
        clock,
        project,
        name,
        expires_in_ms,
        &[],
        actor,
    )
    .await
}

/// As [`issue_api_key`], limited to `scopes` (empty: every scope).
#[allow(clippy::too_many_arguments)]
pub async fn issue_scoped_api_key(
    store: &dyn KeyStore,
    master_key: &MasterKey,
    clock: &dyn Clock,
    project: ProjectId,
    name: &str,
    expires_in_ms: Option<Millis>,
    scopes: &[Scope],
    actor: &Actor,
) -> StoreResult<(ApiKeyRecord, Secret)> {
    let (new, secret) = new_api_key(
        master_key,
        clock,
        project,
        name,
        expires_in_ms,
        scopes,
        actor,
    );
    let record = store.create_api_key(new, actor).await?;
    Ok((record, secret))
}

/// A fresh key's stored form and its secret (shown once).
pub fn new_api_key(
    master_key: &MasterKey,
    clock: &dyn Clock,
    project: ProjectId,
    name: &str,
    expires_in_ms: Option<Millis>,
    scopes: &[Scope],
    actor: &Actor,
) -> (NewApiKey, Secret) {
    let secret = keys::generate(SecretKind::ApiKey);
    let id = ApiKeyId::new();
    let new = NewApiKey {
        id,
        project_id: project,
        name: name.to_string(),
        digest_hex: SecretDigest::of(secret.expose()).to_hex(),
        sealed: master_key.seal(secret.expose(), &id.to_string()),
        masked: keys::mask(secret.expose()),
        created_by: actor.label(),
        expires_at: expires_in_ms.map(|ms| clock.now_ms() + ms),
        scopes: scopes.to_vec(),
    };
    (new, secret)
}
