-- API usage: requests per client, method, route template and status, per hour.
-- Workers count in memory and add their counts here every few seconds with
-- an upsert, so the request path itself never writes to the database.
-- Keyed by tenant first, like every tenant-owned table (Citus: distributed
-- by tenant_id, co-located with the rest).
CREATE TABLE api_usage (
    tenant_id  uuid NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    hour       timestamptz NOT NULL,
    client_id  uuid NOT NULL,
    method     text NOT NULL,
    route      text NOT NULL,
    status     integer NOT NULL,
    requests   bigint NOT NULL CHECK (requests > 0),
    PRIMARY KEY (tenant_id, id),
    -- One row per counter: flushes add to it (ON CONFLICT ... DO UPDATE).
    UNIQUE (tenant_id, hour, client_id, method, route, status)
);
