-- The producer API (issue 4): tenants and their bearer tokens, batch ownership, idempotent
-- creation, and webhook deliveries. Batches created by the CLI have no tenant.

CREATE TABLE tenants (
    name           text PRIMARY KEY,
    -- Signs this tenant's webhooks (HMAC-SHA256). Kept in clear: signing needs it.
    webhook_secret text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id         uuid PRIMARY KEY,
    tenant     text NOT NULL REFERENCES tenants (name),
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

ALTER TABLE batches
    ADD COLUMN tenant text REFERENCES tenants (name),
    ADD COLUMN webhook_url text;

-- A tenant's batches, newest first (ids are UUID v7, so they sort by creation time).
CREATE INDEX batches_by_tenant ON batches (tenant, id DESC) WHERE tenant IS NOT NULL;

-- An `Idempotency-Key` seen on a batch creation: a retry with the same key gets this batch.
CREATE TABLE idempotency_keys (
    tenant       text NOT NULL REFERENCES tenants (name),
    key          text NOT NULL,
    -- SHA-256 of the canonical request body: the same key with another body is refused.
    request_hash bytea NOT NULL,
    batch_id     uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    -- The first response's counts (accepted, duplicates, rejected), replayed on a retry.
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key)
);

-- The webhook of a batch with a `webhook_url`: created with the batch, due once the batch is
-- finished, delivered at least once. A retry of the batch's failed items re-arms it.
CREATE TABLE webhook_deliveries (
    batch_id        uuid PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    url             text NOT NULL,
    -- Receivers de-duplicate on this; a new one is drawn when the delivery is re-armed.
    event_id        uuid NOT NULL,
    -- Attempts of the current event.
    attempts        integer NOT NULL DEFAULT 0,
    -- Not before this time (backoff, or a dispatcher's claim on an attempt in flight).
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The dispatcher attempt that holds the delivery now; its result write must present it.
    claim           uuid,
    last_status     integer,
    last_error      text,
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE delivered_at IS NULL;
