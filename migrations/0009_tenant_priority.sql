-- The highest priority a tenant's batches may ask for (issue 14): priorities are strict across
-- tenants, so a tenant free to send everything `high` would hold every other tenant's
-- `normal` work back. NULL: any.
ALTER TABLE tenants
    ADD COLUMN max_priority text CHECK (max_priority IN ('high', 'normal', 'low'));
