-- How each login session signed in: 'password' (a password, or a single-use link, alone)
-- or 'mfa' (a password and a TOTP or recovery code, or a session that just confirmed a
-- TOTP enrolment). An account's "Require MFA" admits only 'mfa' sessions. Sessions that
-- existed before this column did are treated as password-only, the safe default: their
-- people sign in again with their code where an account requires MFA.
ALTER TABLE sessions ADD COLUMN signed_in_with TEXT NOT NULL DEFAULT 'password';
