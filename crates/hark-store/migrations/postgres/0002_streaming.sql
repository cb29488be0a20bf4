-- Streaming: single-use temporary tokens and live sessions. Kept identical across
-- the SQLite and PostgreSQL migrations.

-- A token opens exactly one session: redemption sets redeemed_at with one conditional
-- UPDATE. Only the SHA-256 digest of the token is stored.
CREATE TABLE stream_tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    api_key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    max_session_secs BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    session_id TEXT
);
CREATE INDEX stream_tokens_key ON stream_tokens (api_key_id);

-- Each serving process renews its row while it runs; a process whose lease lapsed
-- has died, and any node closes and bills its open sessions. One write per node,
-- not per session, so idle sessions cost the database nothing.
CREATE TABLE stream_nodes (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    lease_expires_at BIGINT NOT NULL
);

-- One row per session. Progress (audio received, final turns) is written at each
-- final turn and now and then, so a session closed after its node died is billed for
-- what it used and its webhook still carries its turns.
CREATE TABLE stream_sessions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    api_key_id TEXT NOT NULL,
    token_id TEXT,
    model TEXT NOT NULL,
    node_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    audio_ms BIGINT NOT NULL DEFAULT 0,
    final_turns TEXT NOT NULL DEFAULT '[]',
    webhook_url TEXT,
    webhook_auth_header_name TEXT,
    webhook_auth_header_sealed TEXT,
    ended_at BIGINT,
    end_reason TEXT
);
CREATE INDEX stream_sessions_account_started ON stream_sessions (account_id, started_at);
CREATE INDEX stream_sessions_node ON stream_sessions (node_id, ended_at);
