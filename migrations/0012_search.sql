-- Search over finished items (issue 16). The outcome path writes nothing here: an indexer (in
-- `abridge api`) copies finished items in, in order of `finished_at`, a few thousand at a time,
-- so that a search index costs the workers nothing (one on `items` cost the burn-down 13-26 %,
-- BENCHMARKS.md). An entry is current while its `finished_at` is the item's; a retried item's
-- old entry is ignored until the indexer replaces it.
CREATE TABLE item_search (
    item_id bigint PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
    batch_id uuid NOT NULL,
    -- The batch's tenant (NULL: the CLI's or an operator's), copied: it never changes.
    tenant text,
    finished_at timestamptz NOT NULL,
    -- The words of the title, the summary and the error kind, and the video id.
    doc tsvector NOT NULL
);
CREATE INDEX item_search_doc ON item_search USING gin (doc);
-- A tenant's own entries: for a word common across tenants, the planner reads these and checks
-- the words, so a search costs in proportion to the caller's own items, not the fleet's.
CREATE INDEX item_search_tenant ON item_search (tenant, item_id);

-- How far the indexer has come: every item finished before (at, item_id) is indexed.
CREATE TABLE search_cursor (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    at timestamptz NOT NULL,
    item_id bigint NOT NULL
);
INSERT INTO search_cursor (at, item_id) VALUES ('-infinity', 0);

-- The indexer walks finished items in (finished_at, id) order: many items finish at one instant
-- (a group of outcomes, a cancel), so the id is part of the index it walks. It replaces the
-- index on finished_at alone (one index either way on the outcome path).
DROP INDEX items_finished_at;
CREATE INDEX items_finished_at ON items (finished_at, id) WHERE finished_at IS NOT NULL;
