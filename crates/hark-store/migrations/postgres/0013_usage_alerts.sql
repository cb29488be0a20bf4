-- Usage alerts (issue 11), evaluated in the transaction that writes usage or credit.
CREATE TABLE usage_alerts (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    -- 'balance_below', 'month_spend_above' or 'daily_audio_above'.
    kind TEXT NOT NULL,
    -- Micro-units for money alerts, milliseconds of audio for daily audio.
    threshold BIGINT NOT NULL,
    -- Daily audio alerts watch one project or one key.
    project_id TEXT,
    api_key_id TEXT,
    webhook_url TEXT,
    -- Webhooks are signed with this project's secret.
    signing_project_id TEXT NOT NULL,
    -- The period it last fired in (month or day start; 0 for a balance alert, which
    -- re-arms when the balance is back at or above the threshold); NULL when armed.
    fired_period BIGINT,
    last_fired_at BIGINT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX usage_alerts_account ON usage_alerts (account_id);
