-- Events feed and webhooks.

-- GET /api/events?type=...: a tenant's events of one type in sequence order.
-- (The feed without a type filter uses the UNIQUE (tenant_id, sequence) index.)
CREATE INDEX events_by_type ON events (tenant_id, type, sequence);

CREATE TABLE webhook_endpoints (
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    id                    uuid NOT NULL,
    url                   text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description           text,
    -- Event types to deliver; '*' means all of them.
    event_types           text[] NOT NULL CHECK (cardinality(event_types) > 0),
    status                text NOT NULL DEFAULT 'enabled'
                          CHECK (status IN ('enabled', 'paused', 'failing')),
    -- The signing secret, sealed under the data key ring (bound to tenant + id).
    secret                bytea NOT NULL,
    -- Sequence of the last tenant event already fanned out into deliveries.
    fanned_out_seq        bigint NOT NULL,
    -- Circuit breaker: consecutive failed attempts, and while open, until when.
    consecutive_failures  integer NOT NULL DEFAULT 0,
    circuit_open_until    timestamptz,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id)
);

-- One row per (endpoint, event) to deliver, created by the dispatcher.
CREATE TABLE webhook_deliveries (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL,
    endpoint_id      uuid NOT NULL,
    event_id         uuid NOT NULL,
    sequence         bigint NOT NULL,
    event_type       text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempt_count    integer NOT NULL DEFAULT 0,
    -- [{"attempt", "at", "status_code", "latency_ms", "error"}], oldest first.
    attempts         jsonb NOT NULL DEFAULT '[]'::jsonb,
    next_attempt_at  timestamptz,
    -- A worker's claim: only the holder of `lease` may record the outcome, and
    -- once `locked_until` passes (the worker died) another worker retries.
    lease            uuid,
    locked_until     timestamptz,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, endpoint_id, sequence),
    FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);

-- The dispatcher's head-of-line lookup: an endpoint's oldest pending delivery.
CREATE INDEX webhook_deliveries_pending
    ON webhook_deliveries (tenant_id, endpoint_id, sequence) WHERE status = 'pending';
