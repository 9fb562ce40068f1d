-- Operating the fleet (issue 5): the trace context carried from enqueue to the workers, and the
-- indexes behind the fleet gauges, `abridge top` and the dashboard's throughput chart.

-- The W3C `traceparent` of the span that enqueued the batch; NULL when traces were off. All
-- items of a batch are enqueued by one request, so the context is stored once, with the batch:
-- every item's trace continues it (the worker reads it when it starts the item).
ALTER TABLE batches ADD COLUMN traceparent text;

-- `abridge_oldest_item_age_seconds`: a queued item has been ready since its retry time, or
-- since it was queued. Partial: only queued items are indexed.
CREATE INDEX items_ready_since ON items ((coalesce(available_at, queued_at))) WHERE status = 'queued';

-- Throughput: items that finished recently (per minute over the last hour).
CREATE INDEX items_finished_at ON items (finished_at) WHERE finished_at IS NOT NULL;
