-- Tenants cannot reach each other or the operator (issue 14): operator tokens, the operator's
-- per-tenant policy, and a summary cache that keeps producer-supplied input to its producer.

-- An operator token belongs to no tenant: it sees every tenant's batches and the fleet.
ALTER TABLE api_tokens
    ALTER COLUMN tenant DROP NOT NULL,
    ADD COLUMN operator boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT api_tokens_operator_or_tenant CHECK ((tenant IS NULL) = operator);

-- What the operator lets a tenant do (`abridge tenant set`). NULL means the default: the fleet's
-- configured backend only, no model but the configured one, and no limit on the rest.
ALTER TABLE tenants
    ADD COLUMN backends      text[],
    ADD COLUMN models        text[],
    -- LLM tokens (in + out) the tenant's items may spend per UTC day.
    ADD COLUMN daily_tokens  bigint CHECK (daily_tokens >= 0),
    -- The tenant's share of the fleet against other tenants' (1 = an equal share).
    ADD COLUMN weight        integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    ADD COLUMN max_in_flight integer CHECK (max_in_flight >= 1),
    ADD COLUMN max_queued    bigint CHECK (max_queued >= 1),
    ADD COLUMN max_batches_per_minute integer CHECK (max_batches_per_minute >= 1);

-- The summary cache held rendered markdown that opened with the first writer's title, under a
-- key that named neither the title nor the tenant: one producer's title could reach another's
-- summary. Entries now hold only what comes from the video; whatever a producer supplied (a
-- transcript, a title sent to a model) scopes the entry to that producer. Old entries may carry
-- a producer's text, so they go.
DELETE FROM summaries;
ALTER TABLE summaries
    -- '' when the summary was made from the video alone (shared by everyone); otherwise the
    -- owner whose supplied input reached it (`tenant:NAME`, or `operator` for CLI batches).
    ADD COLUMN scope text NOT NULL DEFAULT '',
    -- SHA-256 of a producer-supplied title that reached the model's prompt, else ''.
    ADD COLUMN prompt_title text NOT NULL DEFAULT '',
    DROP CONSTRAINT summaries_pkey,
    ADD PRIMARY KEY (video_id, backend, model, length, language, prompt_version, source, scope, prompt_title);
