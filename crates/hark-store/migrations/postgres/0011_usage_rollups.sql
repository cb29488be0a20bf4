-- Usage and spend (issue 11): integer milliseconds, each event's price and cost in
-- micro-units of the configured currency, and hourly rollups kept in the same
-- transaction as the event, so reports never scan the raw ledger.

ALTER TABLE usage_events ADD COLUMN audio_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN session_ms BIGINT;
-- The price in force when the event was written (micro-units per hour) and its cost.
ALTER TABLE usage_events ADD COLUMN price_per_hour BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN cost BIGINT NOT NULL DEFAULT 0;
UPDATE usage_events SET audio_ms = CAST(ROUND(audio_seconds * 1000) AS BIGINT),
    session_ms = CAST(ROUND(session_seconds * 1000) AS BIGINT);
UPDATE usage_events SET product = 'speech_to_text' WHERE product = 'speech-to-text';
ALTER TABLE usage_events DROP COLUMN audio_seconds;
ALTER TABLE usage_events DROP COLUMN session_seconds;

-- The primary keys carry the sums (INCLUDE), so a report's range is an index-only
-- scan on pages autovacuum has marked all-visible, with no heap fetch per row.

-- One row per account, hour, project, key, product and model. The hour is that of
-- the event's `created_at` (a transcript's completion, a session's close).
CREATE TABLE usage_hourly (
    account_id TEXT NOT NULL,
    hour_start BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    product TEXT NOT NULL,
    model TEXT NOT NULL,
    audio_ms BIGINT NOT NULL,
    session_ms BIGINT NOT NULL,
    transcripts BIGINT NOT NULL,
    sessions BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    PRIMARY KEY (account_id, hour_start, project_id, api_key_id, product, model)
        INCLUDE (audio_ms, session_ms, transcripts, sessions, cost)
);

INSERT INTO usage_hourly (account_id, hour_start, project_id, api_key_id, product, model,
    audio_ms, session_ms, transcripts, sessions, cost)
SELECT account_id, created_at - (created_at % 3600000), project_id, api_key_id, product, model,
    CAST(SUM(audio_ms) AS BIGINT), CAST(SUM(COALESCE(session_ms, 0)) AS BIGINT),
    CAST(SUM(CASE WHEN product = 'streaming' THEN 0 ELSE 1 END) AS BIGINT),
    CAST(SUM(CASE WHEN product = 'streaming' THEN 1 ELSE 0 END) AS BIGINT),
    CAST(SUM(cost) AS BIGINT)
FROM usage_events
GROUP BY account_id, created_at - (created_at % 3600000), project_id, api_key_id, product, model;

-- The same sums per UTC day and per UTC calendar month, kept in the same transaction
-- as the hourly row: a report reads whole months and days from these and only its
-- partial days from the hourly rollup.
CREATE TABLE usage_daily (
    account_id TEXT NOT NULL,
    day_start BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    product TEXT NOT NULL,
    model TEXT NOT NULL,
    audio_ms BIGINT NOT NULL,
    session_ms BIGINT NOT NULL,
    transcripts BIGINT NOT NULL,
    sessions BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    PRIMARY KEY (account_id, day_start, project_id, api_key_id, product, model)
        INCLUDE (audio_ms, session_ms, transcripts, sessions, cost)
);

CREATE TABLE usage_monthly (
    account_id TEXT NOT NULL,
    month_start BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    product TEXT NOT NULL,
    model TEXT NOT NULL,
    audio_ms BIGINT NOT NULL,
    session_ms BIGINT NOT NULL,
    transcripts BIGINT NOT NULL,
    sessions BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    PRIMARY KEY (account_id, month_start, project_id, api_key_id, product, model)
        INCLUDE (audio_ms, session_ms, transcripts, sessions, cost)
);

INSERT INTO usage_daily (account_id, day_start, project_id, api_key_id, product, model,
    audio_ms, session_ms, transcripts, sessions, cost)
SELECT account_id, hour_start - (hour_start % 86400000), project_id, api_key_id, product, model,
    CAST(SUM(audio_ms) AS BIGINT), CAST(SUM(session_ms) AS BIGINT), CAST(SUM(transcripts) AS BIGINT),
    CAST(SUM(sessions) AS BIGINT), CAST(SUM(cost) AS BIGINT)
FROM usage_hourly
GROUP BY account_id, hour_start - (hour_start % 86400000), project_id, api_key_id, product, model;

INSERT INTO usage_monthly (account_id, month_start, project_id, api_key_id, product, model,
    audio_ms, session_ms, transcripts, sessions, cost)
SELECT account_id, CAST(EXTRACT(EPOCH FROM date_trunc('month', to_timestamp(created_at / 1000.0) AT TIME ZONE 'UTC')) AS BIGINT) * 1000, project_id, api_key_id, product, model,
    CAST(SUM(audio_ms) AS BIGINT), CAST(SUM(COALESCE(session_ms, 0)) AS BIGINT),
    CAST(SUM(CASE WHEN product = 'streaming' THEN 0 ELSE 1 END) AS BIGINT),
    CAST(SUM(CASE WHEN product = 'streaming' THEN 1 ELSE 0 END) AS BIGINT),
    CAST(SUM(cost) AS BIGINT)
FROM usage_events
GROUP BY account_id, CAST(EXTRACT(EPOCH FROM date_trunc('month', to_timestamp(created_at / 1000.0) AT TIME ZONE 'UTC')) AS BIGINT) * 1000, project_id, api_key_id, product, model;
