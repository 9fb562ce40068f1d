-- What model requests cost (issue 17): one row per batch, UTC day and model, added to with
-- each answer (and, for a provider batch, with its estimate at submission, corrected when the
-- answer comes). A batch's cost, its `max_cost_usd` check and a tenant's cost per day read it.
-- Rows outlive their batch (the pruner leaves them): they are the operator's billing record.
CREATE TABLE llm_spend (
    batch_id      uuid NOT NULL,
    day           date NOT NULL,
    provider      text NOT NULL,
    model         text NOT NULL,
    -- The batch's tenant; NULL for the operator's (CLI) batches.
    tenant        text,
    requests      bigint NOT NULL DEFAULT 0,
    input_tokens  bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    -- US dollars of the requests whose model has a price in the fleet's table.
    cost_usd      numeric NOT NULL DEFAULT 0,
    -- Requests to a model without a price (their cost is not in `cost_usd`).
    unpriced_requests bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, day, provider, model)
);
CREATE INDEX llm_spend_tenant_day ON llm_spend (tenant, day);
