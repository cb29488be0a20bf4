-- One-time links of the dashboard (issue 10): the first-run setup link, the
-- set-password link `hark admin init` prints, and mailed password resets. Only the
-- SHA-256 digest of the token is stored; a link works once (`used_at`) and, when
-- `expires_at` is set, until then.
CREATE TABLE auth_links (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL CHECK (purpose IN ('setup', 'set_password', 'password_reset')),
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    digest TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    used_at BIGINT
);
CREATE INDEX auth_links_user ON auth_links (user_id);

-- The name a person gives when they join (setup, sign-up, invite acceptance).
ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT '';
