-- Monthly statements (issue 11): a closed month's statement is frozen the first time
-- it is generated, so it never changes. No foreign key: kept after the account is
-- deleted; it names no person (the billing email is looked up when shown).
CREATE TABLE statements (
    account_id TEXT NOT NULL,
    month_start BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, month_start)
);
