-- The dashboard (issue 5): queue depth over the last hour. Throughput comes from the items'
-- `finished_at` (0004); depth is not recorded anywhere else, so `abridge api` samples the
-- Redis queue into this table. Rows are keyed by time bucket, so API replicas that sample the
-- same bucket write one row (`ON CONFLICT DO NOTHING`). Rows older than a day are deleted by
-- the sampler itself.
CREATE TABLE queue_samples (
    queue   text        NOT NULL,
    at      timestamptz NOT NULL,
    ready   bigint      NOT NULL, -- ready items, all priorities
    delayed bigint      NOT NULL, -- items waiting for a retry
    leased  bigint      NOT NULL, -- items claimed by workers
    PRIMARY KEY (queue, at)
);
