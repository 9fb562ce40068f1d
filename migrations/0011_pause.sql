-- Pause and resume (issue 16): a paused queue starts no new item. Postgres holds the pause, so
-- it survives a Redis loss; Redis holds a copy (`PREFIX.."paused"`) that the claim script reads,
-- put back by the reconciler. Every pause and resume moves `generation` on, and Redis keeps the
-- generation of the copy it holds: a writer that read an older state (a reconcile pass that
-- read before an operator's pause) cannot undo a newer one.
CREATE TABLE queue_pauses (
    queue text PRIMARY KEY,
    -- Since when the queue is paused; NULL while it runs.
    paused_at timestamptz,
    -- Who paused it: `cli` or `api`, for the operator reading `abridge stats`.
    paused_by text,
    generation bigint NOT NULL DEFAULT 1
);
