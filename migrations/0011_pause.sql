-- Pause and resume (issue 16): a paused queue starts no new item. Postgres holds the pause, so
-- it survives a Redis loss; Redis holds a copy (`PREFIX.."paused"`) that the claim script reads,
-- put back by the reconciler.
CREATE TABLE queue_pauses (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    -- Who paused it: `cli` or `api`, for the operator reading `abridge stats`.
    paused_by text NOT NULL
);
