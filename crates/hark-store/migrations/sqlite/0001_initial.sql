-- Hark schema, SQLite dialect. Instants are Unix milliseconds; flags are 0/1 integers;
-- ids are UUID text. Kept in step with migrations/postgres.

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    limit_overrides TEXT NOT NULL DEFAULT '{}',
    -- The limits in force (plan plus overrides), materialised so SQL can enforce them.
    max_projects BIGINT NOT NULL,
    max_api_keys BIGINT NOT NULL,
    max_members BIGINT NOT NULL,
    max_concurrent_jobs BIGINT NOT NULL,
    max_stream_sessions_per_minute BIGINT NOT NULL,
    require_mfa BIGINT NOT NULL DEFAULT 0,
    -- Bumped at the start of every limit-checked write: serialises them per account.
    lock_version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'reader')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
CREATE UNIQUE INDEX memberships_one_owner ON memberships (account_id) WHERE role = 'owner';

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    webhook_secret_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX projects_account ON projects (account_id, id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    sealed TEXT NOT NULL,
    masked TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_project ON api_keys (project_id, id);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    api_key_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX uploads_project ON uploads (project_id);

CREATE TABLE transcripts (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    api_key_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'completed', 'error')),
    audio_url TEXT NOT NULL,
    upload_id TEXT,
    params TEXT NOT NULL,
    result TEXT,
    error TEXT,
    speech_model_used TEXT,
    audio_duration DOUBLE PRECISION,
    webhook_status_code BIGINT,
    created_at BIGINT NOT NULL,
    completed_at BIGINT,
    deleted_at BIGINT
);
CREATE INDEX transcripts_project_created ON transcripts (project_id, created_at, id);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    transcript_id TEXT NOT NULL UNIQUE REFERENCES transcripts(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_account_state ON jobs (account_id, state);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    transcript_id TEXT,
    url TEXT NOT NULL,
    auth_header_name TEXT,
    auth_header_sealed TEXT,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_expires_at BIGINT,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);

CREATE TABLE usage_events (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    product TEXT NOT NULL,
    model TEXT NOT NULL,
    audio_seconds DOUBLE PRECISION NOT NULL,
    session_seconds DOUBLE PRECISION,
    created_at BIGINT NOT NULL
);
CREATE INDEX usage_events_account ON usage_events (account_id, created_at);

-- Append-only; hash-chained per account ('' = installation-wide entries). No foreign
-- key: the record of an account outlives the account.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (account_id, seq)
);

-- One row per installation: bumped whenever a credential changes, so every node can
-- tell its cache of verified keys is stale.
CREATE TABLE auth_epoch (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO auth_epoch (id, epoch) VALUES (1, 0);
