-- Webhook signing-secret rotation with an overlap: after a rotation the former secret
-- (still sealed under the project id) keeps signing deliveries beside the new one
-- until `webhook_secret_previous_until` (Unix ms); then it is ignored.
ALTER TABLE projects ADD COLUMN webhook_secret_previous_sealed TEXT;
ALTER TABLE projects ADD COLUMN webhook_secret_previous_until BIGINT;
ALTER TABLE projects ADD COLUMN webhook_secret_rotated_at BIGINT;
