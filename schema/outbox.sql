-- The default outbox table and publication of outbox-relay.
--
-- Column names follow Debezium's outbox event router, so producers written
-- for Debezium need no change.  Services INSERT one row per event in the
-- same transaction as their business change; the relay streams the INSERTs
-- through logical replication (no polling) and never reads the table.
-- Rows may be deleted right after the insert (or by a periodic job): the
-- event was already captured from the WAL.

CREATE TABLE IF NOT EXISTS public.outbox (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype      text        NOT NULL,
    aggregateid        text        NOT NULL,
    type               text        NOT NULL,
    payload            jsonb,
    timestamp          timestamptz NOT NULL DEFAULT now(),
    tracingspancontext text
);

-- Only INSERTs are events: publish nothing else, so UPDATEs and DELETEs of
-- the outbox cost the relay nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outbox_pub') THEN
        CREATE PUBLICATION outbox_pub FOR TABLE public.outbox WITH (publish = 'insert');
    END IF;
END
$$;
