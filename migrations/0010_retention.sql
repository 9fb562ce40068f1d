-- Storage that stays bounded (issue 15): the pruner deletes finished batches (and everything of
-- theirs), unused cache entries, old idempotency keys, stopped worker sessions and old
-- fenced-write records. See ARCHITECTURE.md, "Retention".

-- A tenant's own retention for its finished batches, set by the operator; NULL: the fleet's
-- (ABRIDGE_RETENTION_DAYS).
ALTER TABLE tenants
    ADD COLUMN retention_days integer CHECK (retention_days >= 1);

-- The pruner's candidates, oldest first: only finished batches are indexed.
CREATE INDEX batches_finished ON batches (finished_at) WHERE status IN ('completed', 'cancelled');

-- Cache entries expire after N days without use: a read touches the row at most once a day,
-- so a hot entry costs one write a day. Existing entries count as used now.
ALTER TABLE transcripts ADD COLUMN last_used_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE summaries ADD COLUMN last_used_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX transcripts_last_used ON transcripts (last_used_at);
CREATE INDEX summaries_last_used ON summaries (last_used_at);

-- Idempotency keys expire after a day; a pruned batch takes its key along (the foreign key
-- cascades, and needs this index not to scan the table per batch).
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX idempotency_keys_batch ON idempotency_keys (batch_id);

-- Stopped sessions and fenced-write records expire by age.
CREATE INDEX worker_sessions_stopped ON worker_sessions (stopped_at) WHERE stopped_at IS NOT NULL;
CREATE INDEX fenced_writes_at ON fenced_writes (at);

-- One pruner at a time, fleet-wide: a lease row on Postgres's clock. `holder` runs a pass until
-- `expires_at` (renewed while it runs, cleared when it ends); `last_run_at` is when the last
-- pass ended, so a fleet of workers starts one pass per interval, not one each.
CREATE TABLE maintenance_leases (
    task        text PRIMARY KEY,
    holder      uuid,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    last_run_at timestamptz
);

-- The pruner deletes a batch's items first, in chunks, then the emptied batch row. The cascade
-- from batches to items (0006) planned its delete from `items` statistics that still counted
-- those items, and scanned the whole table for each batch delete (seconds on millions of
-- rows). It now asks the (batch_id, status) index whether any item is left first.
CREATE OR REPLACE FUNCTION batches_delete_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM items WHERE batch_id = ANY (ARRAY(SELECT id FROM old_batches))) THEN
        DELETE FROM items WHERE batch_id IN (SELECT id FROM old_batches);
    END IF;
    RETURN NULL;
END $$;
