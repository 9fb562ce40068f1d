-- Items partitioned by id range (issue 15: the burn-down against millions of finished rows).
--
-- New rows go where the free space map says there is room. In a table of millions of
-- finished items every old page has a little room left (the end of the page, or the hole a
-- pruned or vacuumed row left), so a new batch's items landed one to a page across the whole
-- table: every claim, start, outcome and completion check of the batch touched a cold page
-- (100,000 items on 100,000 pages, burn-down at half speed). Ids are drawn in order, so a
-- partition per range of ids keeps new items together in the newest partition, whatever room
-- the old ones have. Old partitions are only read, and pruned (deleted from, and dropped once
-- empty).
--
-- The rows so far become the first partition as they are (no copy): the table is renamed, a
-- partitioned `items` with the same columns, constraints, indexes and triggers takes its
-- name, and the old table is attached for every id below the first boundary.

-- Index and constraint names belong to the new parent; the old table's take a partition's.
ALTER TABLE items RENAME TO items_0;
ALTER INDEX items_pkey RENAME TO items_0_pkey;
ALTER INDEX items_batch_id_position_key RENAME TO items_0_batch_id_position_key;
ALTER INDEX items_batch_status RENAME TO items_0_batch_status;
ALTER INDEX items_running_by_worker RENAME TO items_0_running_by_worker;
ALTER INDEX items_ready_since RENAME TO items_0_ready_since;
ALTER INDEX items_finished_at RENAME TO items_0_finished_at;
-- A partition cannot have transition-table triggers; the parent gets them below.
DROP TRIGGER items_batch_exists ON items_0;
DROP TRIGGER items_batch_fixed ON items_0;
-- Foreign keys follow the renamed table; they are made again against the parent.
ALTER TABLE item_checkpoints DROP CONSTRAINT item_checkpoints_item_id_fkey;
ALTER TABLE item_search DROP CONSTRAINT item_search_item_id_fkey;

-- A partition cannot have an identity column, and dropping the identity drops its sequence:
-- a plain sequence carries on from the same value, under the name the code draws ids from.
CREATE SEQUENCE items_id_seq_next AS bigint;
SELECT setval('items_id_seq_next', last_value, is_called) FROM items_id_seq;
ALTER TABLE items_0 ALTER COLUMN id DROP IDENTITY;
ALTER SEQUENCE items_id_seq_next RENAME TO items_id_seq;

CREATE TABLE items (
    id            bigint NOT NULL DEFAULT nextval('items_id_seq'),
    batch_id      uuid NOT NULL,
    position      integer NOT NULL,
    url           text NOT NULL,
    video_id      text NOT NULL,
    title         text,
    transcript    text,
    status        text NOT NULL DEFAULT 'queued',
    attempts      integer NOT NULL DEFAULT 0,
    lease_token   bigint,
    worker_id     uuid,
    summary       text,
    result_meta   jsonb,
    error_kind    text,
    error_message text,
    queued_at     timestamptz NOT NULL DEFAULT now(),
    available_at  timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    CONSTRAINT items_status_check
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT items_check
        CHECK ((status = 'running') = (lease_token IS NOT NULL AND worker_id IS NOT NULL)
               OR status IN ('succeeded', 'failed', 'cancelled'))
) PARTITION BY RANGE (id);
ALTER SEQUENCE items_id_seq OWNED BY items.id;

ALTER TABLE items ADD CONSTRAINT items_pkey PRIMARY KEY (id);
CREATE INDEX items_batch_status ON items (batch_id, status);
CREATE INDEX items_running_by_worker ON items (worker_id) WHERE status = 'running';
CREATE INDEX items_ready_since ON items ((coalesce(available_at, queued_at))) WHERE status = 'queued';
CREATE INDEX items_finished_at ON items (finished_at, id) WHERE finished_at IS NOT NULL;
-- (batch_id, position) is unique within each partition (a unique index on the parent would
-- have to include the id); one batch's positions are written by one statement, from 0.

CREATE TRIGGER items_batch_exists AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION items_check_batch();
CREATE TRIGGER items_batch_fixed BEFORE UPDATE OF batch_id ON items
    FOR EACH ROW WHEN (OLD.batch_id IS DISTINCT FROM NEW.batch_id)
    EXECUTE FUNCTION items_keep_batch();

-- How wide a partition is, and how far they reach. An operator may change the width; it
-- applies to partitions made after.
CREATE TABLE items_partitioning (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    width      bigint NOT NULL CHECK (width >= 1000),
    -- Every id below this has a partition (unless the pruner dropped it, empty).
    covered_to bigint NOT NULL
);

-- Each partition of `items` and its ids: from `lo` (NULL: no lower bound) up to `hi`.
CREATE TABLE item_partitions (
    name text PRIMARY KEY,
    lo   bigint,
    hi   bigint NOT NULL
);

-- Makes partitions until they reach half a width past `seen`, the highest id a writer has
-- drawn (or is about to insert); returns the id below which a writer need not call again.
-- Writers call it before inserting ids they drew, and after inserts that took their ids from
-- the default, so the sequence never runs past the partitions. Each partition is made apart
-- and then attached: ATTACH takes a SHARE UPDATE EXCLUSIVE lock on `items` (no reader or
-- writer waits), where CREATE TABLE ... PARTITION OF would take an exclusive one.
CREATE FUNCTION items_cover(seen bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    w bigint;
    top bigint;
    part text;
BEGIN
    SELECT width, covered_to INTO w, top FROM items_partitioning;
    IF seen + w / 2 < top THEN
        RETURN top - w / 2;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('abridge.items_cover'));
    SELECT width, covered_to INTO w, top FROM items_partitioning;
    WHILE top <= seen + w / 2 LOOP
        part := 'items_' || top::text;
        EXECUTE format('CREATE TABLE %I (LIKE items INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (batch_id, position)',
                       part || '_batch_id_position_key', part);
        EXECUTE format('ALTER TABLE items ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       part, top, top + w);
        INSERT INTO item_partitions (name, lo, hi) VALUES (part, top, top + w);
        top := top + w;
    END LOOP;
    UPDATE items_partitioning SET covered_to = top;
    RETURN top - w / 2;
END $$;

-- Partitions that hold no rows and lie wholly a width below the ids being drawn (so no
-- writer still holds ids in them): the pruner drops these.
CREATE FUNCTION items_empty_partitions() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    part text;
    has_rows boolean;
BEGIN
    FOR part IN
        SELECT p.name FROM item_partitions p, items_partitioning w, items_id_seq s
        WHERE p.hi <= s.last_value - w.width
        ORDER BY p.hi
    LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', part) INTO has_rows;
        IF NOT has_rows THEN
            RETURN NEXT part;
        END IF;
    END LOOP;
END $$;

-- Detaches and drops partition `part` if it still holds no rows (checked after the detach,
-- under its lock, so no row can arrive in between). False if it had rows, or if its lock on
-- `items` was not free within 200 ms: while it waits, every reader and writer of `items`
-- queues behind it, so it gives up soon and the next pass tries again.
CREATE FUNCTION items_drop_partition(part text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    has_rows boolean;
BEGIN
    PERFORM set_config('lock_timeout', '200ms', true);
    BEGIN
        EXECUTE format('ALTER TABLE items DETACH PARTITION %I', part);
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', part) INTO has_rows;
        IF has_rows THEN
            RAISE object_in_use USING MESSAGE = format('partition %s has rows', part);
        END IF;
        EXECUTE format('DROP TABLE %I', part);
        DELETE FROM item_partitions WHERE name = part;
    EXCEPTION WHEN lock_not_available OR object_in_use THEN
        RETURN false;
    END;
    RETURN true;
END $$;

-- The old rows: every id below the first boundary past the sequence.
DO $$
DECLARE
    w constant bigint := 1000000;
    first bigint;
BEGIN
    SELECT (last_value / w + 1) * w INTO first FROM items_id_seq;
    EXECUTE format('ALTER TABLE items ATTACH PARTITION items_0 FOR VALUES FROM (MINVALUE) TO (%s)', first);
    INSERT INTO item_partitions (name, lo, hi) VALUES ('items_0', NULL, first);
    INSERT INTO items_partitioning (width, covered_to) VALUES (w, first);
    PERFORM items_cover(first);
END $$;

ALTER TABLE item_checkpoints ADD CONSTRAINT item_checkpoints_item_id_fkey
    FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE;
ALTER TABLE item_search ADD CONSTRAINT item_search_item_id_fkey
    FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE;
