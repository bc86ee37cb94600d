-- Per-client rate limits; NULL means the configured default.
ALTER TABLE api_clients
    ADD COLUMN rate_limit integer CHECK (rate_limit > 0),
    ADD COLUMN burst integer CHECK (burst > 0);
