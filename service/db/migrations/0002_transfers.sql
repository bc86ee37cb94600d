-- Money movement: transfers, their ledger entries, idempotency keys, the outbox.

-- Per-tenant event counter: locked by every write that emits events, so a
-- tenant's event sequence increases in commit order.
ALTER TABLE tenants ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;

-- Lets transfers reference (account, currency), so the database itself
-- guarantees both sides of a transfer are in the transfer's currency.
ALTER TABLE accounts ADD CONSTRAINT accounts_currency_key UNIQUE (tenant_id, id, currency);
-- Balance updates touch no indexed column: leave room on each page so they
-- stay HOT (no index writes).
ALTER TABLE accounts SET (fillfactor = 70);

CREATE TABLE transfers (
    tenant_id             uuid NOT NULL,
    id                    uuid NOT NULL,
    debit_account_id      uuid NOT NULL,
    credit_account_id     uuid NOT NULL,
    amount                bigint NOT NULL CHECK (amount > 0),
    currency              text NOT NULL,
    status                text NOT NULL CHECK (status IN ('posted', 'pending', 'voided', 'expired')),
    posted_amount         bigint CHECK (posted_amount BETWEEN 0 AND amount),
    expires_at            timestamptz,
    description           text,
    metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Both accounts' posted balances right after the transfer was created.
    debit_balance_after   bigint NOT NULL,
    credit_balance_after  bigint NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, debit_account_id, currency)
        REFERENCES accounts (tenant_id, id, currency),
    FOREIGN KEY (tenant_id, credit_account_id, currency)
        REFERENCES accounts (tenant_id, id, currency),
    CHECK (debit_account_id <> credit_account_id),
    CHECK ((status = 'posted') = (posted_amount IS NOT NULL))
);

CREATE INDEX transfers_by_debit ON transfers (tenant_id, debit_account_id, id DESC);
CREATE INDEX transfers_by_credit ON transfers (tenant_id, credit_account_id, id DESC);
CREATE INDEX transfers_due ON transfers (expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;

-- One row per account per balance change, with the balances right after it:
-- statements and point-in-time balances read these. Ids increase in the
-- order changes were applied to each account (rows are locked meanwhile).
CREATE TABLE entries (
    tenant_id              uuid NOT NULL,
    id                     bigint GENERATED ALWAYS AS IDENTITY,
    account_id             uuid NOT NULL,
    transfer_id            uuid NOT NULL,
    kind                   text NOT NULL CHECK (kind IN ('posted', 'pending', 'post', 'void', 'expire')),
    amount                 bigint NOT NULL,  -- signed change of the posted balance
    pending_amount         bigint NOT NULL,  -- signed change of pending (credits - debits)
    posted_after           bigint NOT NULL,
    pending_debits_after   bigint NOT NULL,
    pending_credits_after  bigint NOT NULL,
    created_at             timestamptz NOT NULL,
    -- No foreign keys here: entries are written only by the batch that writes
    -- their transfer, and a per-row FK check doubled the cost of each batch.
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX entries_by_account ON entries (tenant_id, account_id, id DESC);

CREATE TABLE idempotency_keys (
    tenant_id        uuid NOT NULL,
    client_id        uuid NOT NULL,
    key              text NOT NULL,
    request_hash     bytea NOT NULL,
    state            text NOT NULL CHECK (state IN ('in_flight', 'done')),
    locked_until     timestamptz NOT NULL,
    response_status  integer,
    response_body    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, client_id, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

CREATE TABLE events (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    sequence    bigint NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, sequence)
);
