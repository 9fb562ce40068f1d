-- The one rule for giving up on an item, for every statement that counts an attempt (an
-- outcome, a reclaim, an expired claim that never started): an attempt that did not succeed
-- is the item's last once the item has used `max_attempts`, and it then fails with this
-- message. Plain SQL and immutable, so the planner inlines both into the statement.
CREATE FUNCTION item_gives_up(attempts integer, max_attempts integer) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT attempts >= max_attempts $$;

CREATE FUNCTION item_gave_up_message(attempts integer, message text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 'gave up after ' || attempts::text || ' attempts: ' || message $$;
