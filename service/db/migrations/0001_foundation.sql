-- Foundation: tenants, API clients, accounts.
-- Every tenant-owned table is keyed by (tenant_id, id) and every query filters
-- by tenant_id, so the schema can be distributed by tenant (Citus) unchanged.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Looked up by client id alone at token time, so the id is unique on its own
-- too; under Citus this small table is a reference table.
CREATE TABLE api_clients (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL DEFAULT '',
    secret_hash bytea NOT NULL,
    scopes      text[] NOT NULL,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (id)
);

CREATE TABLE accounts (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z][A-Z0-9_]{2,11}$'),
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'frozen', 'closed')),
    -- NULL means no floor; otherwise available may not go below -overdraft_limit.
    overdraft_limit  bigint CHECK (overdraft_limit >= 0),
    posted           bigint NOT NULL DEFAULT 0,
    pending_debits   bigint NOT NULL DEFAULT 0 CHECK (pending_debits >= 0),
    pending_credits  bigint NOT NULL DEFAULT 0 CHECK (pending_credits >= 0),
    holder           jsonb,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- The balance floor, in numeric so the check itself can never overflow.
    CONSTRAINT accounts_balance_floor CHECK (
        overdraft_limit IS NULL
        OR posted::numeric - pending_debits >= -overdraft_limit::numeric
    )
);

CREATE INDEX accounts_by_currency ON accounts (tenant_id, currency, id DESC);
