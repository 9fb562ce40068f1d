-- Webhook deliveries that give up, and fairness between tenants (issue 14): a delivery is
-- tried until a 2xx or for ABRIDGE_WEBHOOK_GIVE_UP_MS after its first attempt, then recorded as
-- given up; dispatchers attempt at most one delivery of a tenant at a time.
ALTER TABLE webhook_deliveries
    ADD COLUMN first_attempt_at timestamptz,
    ADD COLUMN gave_up_at timestamptz;

DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
