-- Management API (issue 5): sessions, MFA, invites, outbox, login throttling, key
-- scopes and rotation. PostgreSQL dialect; kept in step with migrations/sqlite.

-- Login sessions. Only the SHA-256 digest of the bearer token and of the CSRF token
-- is stored; `current_account_id` is the account the person switched to (checked
-- against memberships on every request).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    digest TEXT NOT NULL UNIQUE,
    csrf_digest TEXT NOT NULL,
    current_account_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    reauth_at BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- TOTP second factor: the seed sealed under the master key (bound to the user id);
-- `last_step` refuses a replayed code. Unconfirmed until the first code is verified.
CREATE TABLE user_totp (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    seed_sealed TEXT NOT NULL,
    confirmed_at BIGINT,
    last_step BIGINT NOT NULL DEFAULT -1,
    created_at BIGINT NOT NULL
);

-- One-time recovery codes, stored as digests.
CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, digest)
);

-- Invitations: the token is mailed; only its digest is stored.
CREATE TABLE invites (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'reader')),
    digest TEXT NOT NULL UNIQUE,
    invited_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT
);
CREATE INDEX invites_account ON invites (account_id, id);

-- Mail not sent through SMTP waits here for the operator (`hark admin outbox`).
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- A sender holds an entry while it delivers it, so nodes do not send it twice.
    claimed_at BIGINT,
    sent_at BIGINT
);

-- Failed logins, per subject ('email:...' or 'addr:...'), for throttling.
CREATE TABLE login_failures (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX login_failures_subject ON login_failures (subject, created_at);

-- Key scopes (space-separated; empty = every scope) and rotation.
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
