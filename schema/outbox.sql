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

-- The checks outbox_emit and outbox_emit_message share; fn names the caller
-- in the messages.
CREATE OR REPLACE FUNCTION public.outbox_check_event(
    fn               text,
    p_aggregate_type text,
    p_aggregate_id   text,
    p_type           text,
    p_payload        jsonb,
    p_id             uuid,
    p_traceparent    text
) RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    arg  text;
    val  text;
BEGIN
    FOREACH arg IN ARRAY ARRAY['aggregate_type', 'aggregate_id', 'type'] LOOP
        val := CASE arg
                   WHEN 'aggregate_type' THEN p_aggregate_type
                   WHEN 'aggregate_id' THEN p_aggregate_id
                   ELSE p_type
               END;
        IF val IS NULL THEN
            RAISE EXCEPTION '%: % must not be null', fn, arg
                USING ERRCODE = 'null_value_not_allowed',
                      HINT = format('pass a non-empty text as %s', arg);
        END IF;
        IF btrim(val) = '' THEN
            RAISE EXCEPTION '%: % must not be empty', fn, arg
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('pass a non-empty text as %s', arg);
        END IF;
    END LOOP;
    IF p_id IS NULL THEN
        RAISE EXCEPTION '%: id must not be null', fn
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'leave id out to get gen_random_uuid(), or pass a uuid';
    END IF;
    IF p_payload IS NOT NULL AND jsonb_typeof(p_payload) <> 'object' THEN
        RAISE EXCEPTION '%: payload must be a JSON object or null, not %', fn,
                jsonb_typeof(p_payload)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'wrap the value in an object, e.g. {"value": ...}';
    END IF;
    IF p_traceparent IS NOT NULL AND NOT (
           p_traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$'
           AND left(p_traceparent, 2) <> 'ff'
           AND substr(p_traceparent, 4, 32) <> repeat('0', 32)
           AND substr(p_traceparent, 37, 16) <> repeat('0', 16)
           AND (left(p_traceparent, 2) <> '00' OR length(p_traceparent) = 55)
       ) THEN
        RAISE EXCEPTION '%: traceparent "%" is not a W3C traceparent', fn,
                p_traceparent
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'expected version-traceid-parentid-flags in lower-case hex, e.g. '
                         '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01, or NULL';
    END IF;
END
$fn$;

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
BEGIN
    PERFORM public.outbox_check_event('outbox_emit', outbox_emit.aggregate_type,
                                      outbox_emit.aggregate_id, outbox_emit.type,
                                      outbox_emit.payload, outbox_emit.id,
                                      outbox_emit.traceparent);
    INSERT INTO public.outbox (id, aggregatetype, aggregateid, type, payload, tracingspancontext)
    VALUES (outbox_emit.id, outbox_emit.aggregate_type, outbox_emit.aggregate_id,
            outbox_emit.type, outbox_emit.payload, outbox_emit.traceparent);
    RETURN outbox_emit.id;
END
$fn$;

COMMENT ON FUNCTION public.outbox_emit(text, text, text, jsonb, uuid, text) IS
    'Validate and insert one outbox event in the current transaction; returns its id';

-- outbox_emit_message: the same event without a table row (no bloat, no
-- cleanup): a transactional logical decoding message that the relay turns
-- into an event when started with --messages PREFIX (default prefix
-- 'outbox'; PostgreSQL 14+).  It commits or rolls back with the caller's
-- transaction like a row would.  Its parameters and header are those of
-- outbox_emit on purpose (one more, prefix), so a caller can switch between
-- the two; the checks both run live in outbox_check_event.
--
--     SELECT outbox_emit_message('order', '42', 'OrderPlaced', '{"total": 42.5}');
CREATE OR REPLACE FUNCTION public.outbox_emit_message(
    aggregate_type text,
    aggregate_id   text,
    type           text,
    payload        jsonb,
    id             uuid DEFAULT gen_random_uuid(),
    traceparent    text DEFAULT NULL,
    prefix         text DEFAULT 'outbox'
) RETURNS uuid
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM public.outbox_check_event('outbox_emit_message', outbox_emit_message.aggregate_type,
                                      outbox_emit_message.aggregate_id, outbox_emit_message.type,
                                      outbox_emit_message.payload, outbox_emit_message.id,
                                      outbox_emit_message.traceparent);
    PERFORM pg_logical_emit_message(true, outbox_emit_message.prefix,
        jsonb_build_object('id', outbox_emit_message.id,
                           'aggregate_type', outbox_emit_message.aggregate_type,
                           'aggregate_id', outbox_emit_message.aggregate_id,
                           'type', outbox_emit_message.type,
                           'payload', outbox_emit_message.payload,
                           'traceparent', outbox_emit_message.traceparent,
                           'timestamp', now())::text);
    RETURN outbox_emit_message.id;
END
$fn$;

COMMENT ON FUNCTION public.outbox_emit_message(text, text, text, jsonb, uuid, text, text) IS
    'Validate one outbox event and emit it as a transactional logical decoding message (relay --messages); returns its id';
