-- Search over a tenant's finished items (issue 16): the words of an item's title, summary and
-- error kind, and its video id, in the `simple` configuration (no stemming: summaries come in
-- every language). Only finished items are indexed, so enqueues (COPY) and starts pay nothing;
-- an outcome write adds its item to the index's pending list.
CREATE INDEX items_search ON items USING gin (
    to_tsvector('simple',
        coalesce(title, '') || ' ' || coalesce(summary, '') || ' ' || coalesce(error_kind, '')
        || ' ' || video_id)
) WHERE status IN ('succeeded', 'failed', 'cancelled');
