-- Data keys for encryption at rest, each sealed with the master key.
-- Service-wide (not per tenant), like schema_migrations.
CREATE TABLE keys (
    id          text PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('data')),
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Account holders are personal data: from now on stored only sealed.
-- Rows written before this migration keep their plaintext in holder_plain
-- until the service seals them at start-up (then the column is cleared).
ALTER TABLE accounts RENAME COLUMN holder TO holder_plain;
ALTER TABLE accounts ADD COLUMN holder bytea;
