-- The outbox of outbox-relay: table, indexes, publication, the relay's
-- role, and the producer API outbox_emit().
--
-- Column names follow Debezium's outbox event router, so producers written
-- for Debezium need no change.  Services INSERT one row per event (directly
-- or through outbox_emit) in the same transaction as their business change;
-- the relay streams the INSERTs through logical replication (no polling) and
-- never reads the table.  Rows may be deleted right after the insert (or by
-- a periodic job): the event was already captured from the WAL.
--
-- Idempotent: apply it on every deploy, as many times as you like:
--     psql -v ON_ERROR_STOP=1 -d app -f schema/outbox.sql
-- Apply it as a superuser (or the database owner: then the relay role is
-- not created, a NOTICE says what to run instead).  Plain SQL only, no psql
-- meta-commands, so drivers that run a script in one call can load it too.

CREATE TABLE IF NOT EXISTS public.outbox (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype      text        NOT NULL,
    aggregateid        text        NOT NULL,
    type               text        NOT NULL,
    payload            jsonb,
    timestamp          timestamptz NOT NULL DEFAULT now(),
    tracingspancontext text
);

-- Cleanup jobs delete by age ("DELETE FROM public.outbox WHERE timestamp <
-- now() - interval '1 day'"); backfill reads rows in that order too.
CREATE INDEX IF NOT EXISTS outbox_timestamp_idx ON public.outbox (timestamp);

-- Only INSERTs are events: publish nothing else, so UPDATEs and DELETEs of
-- the outbox (cleanup) cost the relay nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outbox_pub') THEN
        CREATE PUBLICATION outbox_pub FOR TABLE public.outbox WITH (publish = 'insert');
    END IF;
END
$$;

-- The relay's role, least privilege: it may log in, open a replication
-- connection (REPLICATION: create and stream its slot) and read the outbox
-- table, nothing more.  It is not the table's owner, so run it without
-- --create-slot's publication step needing rights: the publication above
-- already exists, and --create-slot then only creates the slot.
-- No password lives in this file; set one out of band:
--     ALTER ROLE outbox_relay PASSWORD '...';
-- (or use certificate / peer authentication in pg_hba.conf, with a
-- "replication" entry for the role).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            CREATE ROLE outbox_relay WITH LOGIN REPLICATION NOINHERIT;
        ELSE
            RAISE NOTICE 'role "outbox_relay" not created: only a superuser can grant REPLICATION'
                USING HINT = 'as a superuser: CREATE ROLE outbox_relay WITH LOGIN REPLICATION; '
                             'then apply this file again';
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        GRANT USAGE ON SCHEMA public TO outbox_relay;
        GRANT SELECT ON public.outbox TO outbox_relay;
    END IF;
END
$$;

-- outbox_emit: the producer API.  Validates the event, inserts it and
-- returns its id, inside the caller's transaction (it commits or rolls back
-- with the business change).  Errors use SQLSTATE 22023
-- (invalid_parameter_value) or 22004 (null_value_not_allowed), name the
-- argument and carry a HINT.
--
--     SELECT outbox_emit('order', '42', 'OrderPlaced', '{"total": 42.5}');
--     SELECT outbox_emit('order', '42', 'OrderPlaced', '{"total": 42.5}',
--                        id => '6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a',
--                        traceparent => '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
--
-- traceparent must be a W3C traceparent (lower-case hex, version not ff,
-- trace-id and parent-id not all zeros); pass NULL when there is none.
CREATE OR REPLACE FUNCTION public.outbox_emit(
    aggregate_type text,
    aggregate_id   text,
    type           text,
    payload        jsonb,
    id             uuid DEFAULT gen_random_uuid(),
    traceparent    text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    arg  text;
    val  text;
BEGIN
    FOREACH arg IN ARRAY ARRAY['aggregate_type', 'aggregate_id', 'type'] LOOP
        val := CASE arg
                   WHEN 'aggregate_type' THEN outbox_emit.aggregate_type
                   WHEN 'aggregate_id' THEN outbox_emit.aggregate_id
                   ELSE outbox_emit.type
               END;
        IF val IS NULL THEN
            RAISE EXCEPTION 'outbox_emit: % must not be null', arg
                USING ERRCODE = 'null_value_not_allowed',
                      HINT = format('pass a non-empty text as %s', arg);
        END IF;
        IF btrim(val) = '' THEN
            RAISE EXCEPTION 'outbox_emit: % must not be empty', arg
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('pass a non-empty text as %s', arg);
        END IF;
    END LOOP;
    IF outbox_emit.id IS NULL THEN
        RAISE EXCEPTION 'outbox_emit: id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'leave id out to get gen_random_uuid(), or pass a uuid';
    END IF;
    IF outbox_emit.payload IS NOT NULL AND jsonb_typeof(outbox_emit.payload) <> 'object' THEN
        RAISE EXCEPTION 'outbox_emit: payload must be a JSON object or null, not %',
                jsonb_typeof(outbox_emit.payload)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'wrap the value in an object, e.g. {"value": ...}';
    END IF;
    IF outbox_emit.traceparent IS NOT NULL AND NOT (
           outbox_emit.traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$'
           AND left(outbox_emit.traceparent, 2) <> 'ff'
           AND substr(outbox_emit.traceparent, 4, 32) <> repeat('0', 32)
           AND substr(outbox_emit.traceparent, 37, 16) <> repeat('0', 16)
           AND (left(outbox_emit.traceparent, 2) <> '00' OR length(outbox_emit.traceparent) = 55)
       ) THEN
        RAISE EXCEPTION 'outbox_emit: traceparent "%" is not a W3C traceparent',
                outbox_emit.traceparent
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'expected version-traceid-parentid-flags in lower-case hex, e.g. '
                         '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01, or NULL';
    END IF;
    INSERT INTO public.outbox (id, aggregatetype, aggregateid, type, payload, tracingspancontext)
    VALUES (outbox_emit.id, outbox_emit.aggregate_type, outbox_emit.aggregate_id,
            outbox_emit.type, outbox_emit.payload, outbox_emit.traceparent);
    RETURN outbox_emit.id;
END
$fn$;

COMMENT ON FUNCTION public.outbox_emit(text, text, text, jsonb, uuid, text) IS
    'Validate and insert one outbox event in the current transaction; returns its id';
