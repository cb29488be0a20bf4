-- Credit balance (issue 11): the credit ledger, each account's running balance, and
-- the flag that refuses a prepaid account's API use while its balance is negative.

-- Append-only. No foreign key: an account's credits outlive it (billing records).
CREATE TABLE credits (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    -- Micro-units; positive grants, negative corrections.
    amount BIGINT NOT NULL,
    -- 'evaluation' (given to new Free accounts) or 'operator'.
    kind TEXT NOT NULL,
    note TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX credits_account ON credits (account_id, created_at);

-- Credits minus the cost of usage, kept in the transaction of each credit and each
-- usage event; `month_start`/`month_spend` is the cost in the current UTC month.
-- No foreign key: kept after the account is deleted.
CREATE TABLE balances (
    account_id TEXT PRIMARY KEY,
    balance BIGINT NOT NULL,
    month_start BIGINT NOT NULL,
    month_spend BIGINT NOT NULL
);

-- Free accounts that exist already get the default evaluation credit (50.00), as new
-- ones do; other plans start at zero (the operator grants credit to prepaid ones).
INSERT INTO credits (id, account_id, amount, kind, note, actor, created_at)
SELECT 'evaluation-' || id, id, 50000000, 'evaluation', 'evaluation credit', 'system', created_at
FROM accounts WHERE plan = 'free';

INSERT INTO balances (account_id, balance, month_start, month_spend)
SELECT id,
    (SELECT COALESCE(CAST(SUM(c.amount) AS BIGINT), 0) FROM credits c WHERE c.account_id = accounts.id)
    - (SELECT COALESCE(CAST(SUM(u.cost) AS BIGINT), 0) FROM usage_events u WHERE u.account_id = accounts.id),
    0, 0
FROM accounts;

-- 1 while a prepaid (Free, PAYG) account's balance is negative: its keys are refused
-- and its transcription concurrency is 1. Changed only when the balance crosses zero
-- or the plan changes, so the hot path reads it with the key.
ALTER TABLE accounts ADD COLUMN balance_blocked BIGINT NOT NULL DEFAULT 0;
