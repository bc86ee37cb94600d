-- Settled deliveries (delivered, or given up) are deleted once older than
-- TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS; the worker finds them oldest first.
CREATE INDEX webhook_deliveries_settled
    ON webhook_deliveries (created_at) WHERE status <> 'pending';
