-- What model requests cost (issue 17): one row per batch, UTC day and model, added to with
-- each answer. A batch's cost, its `max_cost_usd` check and a tenant's cost per day read it.
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
    -- NULL while the model has no price in the fleet's table (`ABRIDGE_LLM_PRICES`).
    cost_usd      numeric,
    PRIMARY KEY (batch_id, day, provider, model)
);
CREATE INDEX llm_spend_tenant_day ON llm_spend (tenant, day);
