-- Secret rotation: the secret a rotation replaced keeps signing deliveries,
-- beside the new one, until previous_secret_expires_at, so that receivers can
-- switch without refusing a delivery. Sealed like `secret`.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret bytea,
    ADD COLUMN previous_secret_expires_at timestamptz;
