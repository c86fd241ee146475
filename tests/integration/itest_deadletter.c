/*
 * Poison rows: a row that cannot become an event goes to the dead-letter
 * topic (value = the row, headers error, lsn, table), its delivery counts as
 * its acknowledgement, and nothing stalls: rows after it are published and
 * the slot moves past it.  Covered: an empty aggregate id, an aggregate
 * type that makes an invalid topic name, a row larger than the producer's
 * message.max.bytes (dead-lettered without its values), and a table whose
 * required column disappears mid-stream.  A record the broker refuses for
 * good is dead-lettered by the relay and by backfill.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/harness/harness.h"

static hx_pg pg;
static hx_broker broker;
static PGconn *conn;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0 || hx_pg_start(&pg, "dlq", NULL, true) != 0 ||
        hx_broker_start(&broker, 3) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(conn);
    conn = NULL;
    hx_broker_stop(&broker);
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

static const char *header(const hx_record *rec, const char *name)
{
    const hx_header *h = hx_record_header(rec, name);
    return h && h->value ? h->value : NULL;
}

/* Run the relay on slot until everything written so far is confirmed. */
static void run_relay_to_end(const char *tag, const char *slot, const char *tmpl, const char *dlq,
                             const char *const *extra)
{
    const char *args[40] = {"--topic", tmpl, "--dlq-topic", dlq};
    size_t n = 4;

    for (; extra && *extra; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    assert_int_equal(hx_relay_run_to_end(conn, pg.conninfo, broker.bootstraps, tag, slot, args), 0);
}

static void create_slot(const char *slot)
{
    /* Publication from schema/outbox.sql; the slot is made before the rows. */
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot), 0);
}

static void test_poison_rows_go_to_dead_letter_topic(void **state)
{
    (void)state;
    char tmpl[200], good_topic[200], dlq[200];
    const char *slot = "dlq_rows";
    const char *extra[] = {"-X", "message.max.bytes=20000", NULL};
    hx_records recs = {0};

    snprintf(tmpl, sizeof(tmpl), "itest.%s.dlq.{aggregate_type}", hx_run_id());
    snprintf(good_topic, sizeof(good_topic), "itest.%s.dlq.good", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.dlq.dead", hx_run_id());
    conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    create_slot(slot);
    /* One transaction: poison rows between good ones. */
    assert_int_equal(
        hx_exec(conn, "BEGIN;"
                      "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                      " VALUES ('good', 'a1', 'Tested', '{\"n\": 1}');"
                      "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                      " VALUES ('good', '', 'Tested', '{\"why\": \"empty aggregate id\"}');"
                      "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                      " VALUES ('bad type', 'a2', 'Tested', '{\"why\": \"space in topic\"}');"
                      "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                      " VALUES ('good', 'a3', 'Tested',"
                      "  jsonb_build_object('big', repeat('x', 30000)));"
                      "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                      " VALUES ('good', 'a1', 'Tested', '{\"n\": 2}');"
                      "COMMIT"),
        0);
    run_relay_to_end("dlq", slot, tmpl, dlq, extra);

    const char *t1[] = {good_topic};
    assert_true(hx_consume(broker.bootstraps, t1, 1, 2, 30000, &recs) >= 2);
    assert_int_equal(recs.n, 2);
    for (size_t i = 0; i < recs.n; i++)
        assert_string_equal(recs.v[i].key, "a1");
    hx_records_free(&recs);

    const char *t2[] = {dlq};
    assert_true(hx_consume(broker.bootstraps, t2, 1, 3, 30000, &recs) >= 3);
    assert_int_equal(recs.n, 3);
    int empty_id = 0, bad_topic = 0, too_big = 0;
    for (size_t i = 0; i < recs.n; i++) {
        const hx_record *rec = &recs.v[i];
        const char *err = header(rec, "error");
        assert_non_null(err);
        assert_non_null(header(rec, "lsn"));
        assert_string_equal(header(rec, "table"), "public.outbox");
        json_error_t jerr;
        json_t *v = json_loadb(rec->value, rec->value_len, 0, &jerr);
        assert_non_null(v);
        const char *agg = json_string_value(json_object_get(v, "aggregateid"));
        if (agg && strcmp(agg, "") == 0) {
            empty_id++;
        } else if (agg && strcmp(agg, "a2") == 0) {
            bad_topic++;
            assert_string_equal(json_string_value(json_object_get(v, "aggregatetype")), "bad type");
        } else {
            /* the oversize row: its values are omitted, the reason says so */
            too_big++;
            assert_non_null(strstr(err, "omitted"));
        }
        json_decref(v);
    }
    assert_int_equal(empty_id, 1);
    assert_int_equal(bad_topic, 1);
    assert_int_equal(too_big, 1);
    hx_records_free(&recs);
}

static void test_required_column_dropped_mid_stream(void **state)
{
    (void)state;
    char tmpl[200], topic[200], dlq[200];
    const char *slot = "dlq_alter";
    hx_records recs = {0};

    snprintf(tmpl, sizeof(tmpl), "itest.%s.alter.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.alter.altered", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.alter.dead", hx_run_id());
    if (!conn)
        conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    assert_int_equal(hx_exec(conn, "CREATE TABLE alt_outbox (LIKE outbox INCLUDING ALL);"
                                   "ALTER PUBLICATION outbox_pub ADD TABLE alt_outbox"),
                     0);
    create_slot(slot);
    assert_int_equal(hx_exec(conn, "INSERT INTO alt_outbox (aggregatetype, aggregateid, type)"
                                   " VALUES ('altered', 'b1', 'Before')"),
                     0);
    /* The required "type" column disappears: the next rows are poison rows,
     * not a crash and not a stall; a column added back heals it. */
    assert_int_equal(hx_exec(conn, "ALTER TABLE alt_outbox DROP COLUMN type"), 0);
    assert_int_equal(hx_exec(conn, "INSERT INTO alt_outbox (aggregatetype, aggregateid)"
                                   " VALUES ('altered', 'b2')"),
                     0);
    assert_int_equal(hx_exec(conn, "ALTER TABLE alt_outbox ADD COLUMN type text"), 0);
    assert_int_equal(hx_exec(conn, "INSERT INTO alt_outbox (aggregatetype, aggregateid, type)"
                                   " VALUES ('altered', 'b3', 'After')"),
                     0);
    const char *extra[] = {"--table", "public.alt_outbox", NULL};
    run_relay_to_end("alter", slot, tmpl, dlq, extra);

    const char *t1[] = {topic};
    assert_true(hx_consume(broker.bootstraps, t1, 1, 2, 30000, &recs) >= 2);
    assert_int_equal(recs.n, 2);
    int before = 0, after = 0;
    for (size_t i = 0; i < recs.n; i++) {
        before += strcmp(recs.v[i].key, "b1") == 0;
        after += strcmp(recs.v[i].key, "b3") == 0;
    }
    assert_int_equal(before, 1);
    assert_int_equal(after, 1);
    hx_records_free(&recs);

    const char *t2[] = {dlq};
    assert_true(hx_consume(broker.bootstraps, t2, 1, 1, 30000, &recs) >= 1);
    assert_int_equal(recs.n, 1);
    assert_non_null(strstr(header(&recs.v[0], "error"), "type"));
    assert_string_equal(header(&recs.v[0], "table"), "public.alt_outbox");
    hx_records_free(&recs);
}

/* The broker refuses a record for good (MESSAGE_TOO_LARGE injected on the
 * next Produce request): the record goes to the dead-letter topic, its
 * delivery acknowledges the event, the slot moves on, later rows flow. */
static void test_broker_refusal_is_dead_lettered(void **state)
{
    (void)state;
    char tmpl[200], topic[200], dlq[200];
    const char *slot = "dlq_refused";
    hx_records recs = {0};

    if (hx_broker_is_external())
        skip();
    snprintf(tmpl, sizeof(tmpl), "itest.%s.ref.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.ref.refused", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.ref.dead", hx_run_id());
    if (!conn)
        conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    create_slot(slot);
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                   " VALUES ('refused', 'r1', 'Tested', '{\"n\": 1}')"),
                     0);
    /* Produce (API key 0) answers MESSAGE_TOO_LARGE (10) once; retries
     * cannot help, the record is refused for good. */
    assert_int_equal(hx_broker_cmd(&broker, "err 0 10 1"), 0);
    run_relay_to_end("refused", slot, tmpl, dlq, NULL);

    const char *t2[] = {dlq};
    assert_int_equal(hx_consume(broker.bootstraps, t2, 1, 1, 30000, &recs), 1);
    assert_non_null(strstr(header(&recs.v[0], "error"), "refused"));
    assert_string_equal(header(&recs.v[0], "original-topic"), topic);
    json_error_t jerr;
    json_t *v = json_loadb(recs.v[0].value, recs.v[0].value_len, 0, &jerr);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "key")), "r1");
    assert_non_null(strstr(json_string_value(json_object_get(v, "value")), "\"n\": 1"));
    json_decref(v);
    hx_records_free(&recs);

    /* Later rows flow normally. */
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                   " VALUES ('refused', 'r2', 'Tested', '{\"n\": 2}')"),
                     0);
    run_relay_to_end("refused2", slot, tmpl, dlq, NULL);
    const char *t1[] = {topic};
    assert_true(hx_consume(broker.bootstraps, t1, 1, 1, 30000, &recs) >= 1);
    assert_string_equal(recs.v[recs.n - 1].key, "r2");
    hx_records_free(&recs);
}

/* Backfill dead-letters a record the broker refuses for good as the relay
 * does (header backfill, no lsn) and exits 0; the other rows are published. */
static void test_backfill_broker_refusal_is_dead_lettered(void **state)
{
    (void)state;
    char tmpl[200], topic[200], dlq[200];
    hx_records recs = {0}, dl = {0};
    hx_proc p;

    if (hx_broker_is_external())
        skip();
    snprintf(tmpl, sizeof(tmpl), "itest.%s.bfr.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.bfr.bfrefused", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.bfr.dead", hx_run_id());
    if (!conn)
        conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                   " SELECT 'bfrefused', 'b' || g, 'Tested',"
                                   " jsonb_build_object('n', g) FROM generate_series(1, 4) g"),
                     0);
    /* one record per Produce request on a one-partition topic: the first
     * request's record alone is refused */
    assert_int_equal(hx_broker_cmd(&broker, "topic %s 1", topic), 0);
    assert_int_equal(hx_broker_cmd(&broker, "err 0 10 1"), 0);
    const char *args[] = {"backfill",
                          "-d",
                          pg.conninfo,
                          "-b",
                          broker.bootstraps,
                          "--topic",
                          tmpl,
                          "--dlq-topic",
                          dlq,
                          "--where",
                          "aggregatetype = 'bfrefused'",
                          "-X",
                          "batch.num.messages=1",
                          NULL};
    assert_int_equal(hx_relay_start(&p, "bfrefused", args), 0);
    int rc = hx_proc_wait(&p, 60000);
    if (rc != 0)
        hx_proc_dump(&p, "backfill did not exit 0");
    assert_int_equal(rc, 0);

    const char *t2[] = {dlq}, *t1[] = {topic};
    assert_int_equal(hx_consume(broker.bootstraps, t2, 1, 1, 30000, &dl), 1);
    assert_non_null(strstr(header(&dl.v[0], "error"), "refused"));
    assert_string_equal(header(&dl.v[0], "original-topic"), topic);
    assert_string_equal(header(&dl.v[0], "backfill"), "true");
    assert_null(hx_record_header(&dl.v[0], "lsn"));
    json_error_t jerr;
    json_t *v = json_loadb(dl.v[0].value, dl.v[0].value_len, 0, &jerr);
    assert_non_null(v);
    const char *key = json_string_value(json_object_get(v, "key"));
    assert_non_null(key);
    assert_int_equal(hx_consume(broker.bootstraps, t1, 1, 3, 30000, &recs), 3);
    for (size_t i = 0; i < recs.n; i++)
        assert_string_not_equal(recs.v[i].key, key); /* each row in one topic only */
    json_decref(v);
    hx_records_free(&recs);
    hx_records_free(&dl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poison_rows_go_to_dead_letter_topic),
        cmocka_unit_test(test_required_column_dropped_mid_stream),
        cmocka_unit_test(test_broker_refusal_is_dead_lettered),
        cmocka_unit_test(test_backfill_broker_refusal_is_dead_lettered),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
