/*
 * Everything PostgreSQL sends that is or is not an event, end to end:
 *  - logical-message events (--messages) interleaved with rows in one
 *    transaction keep transaction order; non-transactional messages and
 *    messages of a rolled-back transaction are never events;
 *  - PREPARE TRANSACTION + COMMIT PREPARED yields the events once, ROLLBACK
 *    PREPARED none;
 *  - UPDATE, DELETE and TRUNCATE of the outbox are not events, but a row
 *    deleted right after its insert in the same transaction still is;
 *  - two outbox tables, the second with its own column names (--column
 *    TABLE:ROLE=COLUMN);
 *  - multibyte UTF-8 and control characters survive in every text field.
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
    if (hx_init() != 0 || hx_pg_start(&pg, "decoding", NULL, true) != 0 ||
        hx_broker_start(&broker, 3) != 0)
        return -1;
    conn = hx_connect(pg.conninfo);
    return conn ? 0 : -1;
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

static void run_relay_to_end(const char *tag, const char *slot, const char *const *extra)
{
    assert_int_equal(hx_relay_run_to_end(conn, pg.conninfo, broker.bootstraps, tag, slot, extra),
                     0);
}

/* The "n" of each record's payload, in the order read from topic (one
 * partition per key: tests use a single aggregate id). */
static size_t read_ns(const char *topic, size_t want, long *ns, size_t cap, hx_records *keep)
{
    const char *topics[] = {topic};
    hx_records recs = {0};
    size_t n = 0;
    /* read a little longer than needed so extra records would show */
    assert_true(hx_consume(broker.bootstraps, topics, 1, want + 1, 4000, &recs) >= (long)want);
    for (size_t i = 0; i < recs.n && n < cap; i++) {
        json_error_t jerr;
        json_t *v = json_loadb(recs.v[i].value, recs.v[i].value_len, 0, &jerr);
        assert_non_null(v);
        ns[n++] = (long)json_integer_value(json_object_get(json_object_get(v, "payload"), "n"));
        json_decref(v);
    }
    if (keep)
        *keep = recs;
    else
        hx_records_free(&recs);
    return n;
}

static void test_messages_rows_and_prepared(void **state)
{
    (void)state;
    if (hx_pg_version(&pg) < 140000)
        skip(); /* logical decoding messages: PostgreSQL 14+ (13 refuses --messages) */
    char tmpl[200], topic[200];
    long ns[64];
    const char *slot = "dec_main";

    snprintf(tmpl, sizeof(tmpl), "itest.%s.dec.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.dec.mixed", hx_run_id());
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot), 0);
#define ROW(n)                                                                                     \
    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "                       \
    "('mixed', 'k', 'Row', '{\"n\": " #n "}');"
#define MSG(n, tx)                                                                                 \
    "SELECT pg_logical_emit_message(" #tx ", 'obx', '{\"id\": \"m" #n "\", "                       \
    "\"aggregate_type\": \"mixed\", \"aggregate_id\": \"k\", \"type\": \"Msg\", "                  \
    "\"payload\": {\"n\": " #n "}}');"
    /* rows and messages interleaved: order 1..4 */
    assert_int_equal(hx_exec(conn, "BEGIN;" ROW(1) MSG(2, true) ROW(3) MSG(4, true) "COMMIT"), 0);
    /* rolled back: neither its row nor its message */
    assert_int_equal(hx_exec(conn, "BEGIN;" ROW(90) MSG(91, true) "ROLLBACK"), 0);
    /* non-transactional: arrives even though the transaction aborts: skipped */
    assert_int_equal(hx_exec(conn, "BEGIN;" MSG(92, false) "ROLLBACK"), 0);
    /* update, delete, truncate are not events; delete-after-insert still is */
    assert_int_equal(hx_exec(conn, "UPDATE outbox SET type = 'Changed' WHERE aggregatetype = "
                                   "'mixed'"),
                     0);
    assert_int_equal(hx_exec(conn, "BEGIN;" ROW(5) "DELETE FROM outbox WHERE payload->>'n' = '5';"
                                                   "COMMIT"),
                     0);
    assert_int_equal(hx_exec(conn, "DELETE FROM outbox WHERE payload->>'n' = '1'"), 0);
    /* prepared: committed once, rolled back never */
    assert_int_equal(hx_exec(conn, "BEGIN;" ROW(6) MSG(7, true) "PREPARE TRANSACTION 'p1'"), 0);
    assert_int_equal(hx_exec(conn, "BEGIN;" ROW(93) "PREPARE TRANSACTION 'p2'"), 0);
    assert_int_equal(hx_exec(conn, "COMMIT PREPARED 'p1'"), 0);
    assert_int_equal(hx_exec(conn, "ROLLBACK PREPARED 'p2'"), 0);
    assert_int_equal(hx_exec(conn, "TRUNCATE outbox"), 0);
    assert_int_equal(hx_exec(conn, "BEGIN;" ROW(8) "COMMIT"), 0);

    const char *extra[] = {"--topic", tmpl, "--messages", "obx", NULL};
    run_relay_to_end("mixed", slot, extra);
    size_t n = read_ns(topic, 8, ns, 64, NULL);
    assert_int_equal(n, 8);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ns[i], (long)i + 1);
}

static void test_two_tables_and_text(void **state)
{
    (void)state;
    char tmpl[200], t_orders[200], t_bill[200];
    const char *slot = "dec_tables";
    long ns[8];
    hx_records recs = {0};

    snprintf(tmpl, sizeof(tmpl), "itest.%s.tab.{aggregate_type}", hx_run_id());
    snprintf(t_orders, sizeof(t_orders), "itest.%s.tab.order", hx_run_id());
    snprintf(t_bill, sizeof(t_bill), "itest.%s.tab.invoice", hx_run_id());
    assert_int_equal(
        hx_exec(conn,
                "CREATE SCHEMA billing;"
                "CREATE TABLE billing.outbox (event_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
                " kind text NOT NULL, invoice text NOT NULL, event_type text NOT NULL,"
                " body jsonb);"
                "CREATE PUBLICATION dec_pub FOR TABLE public.outbox, billing.outbox"
                " WITH (publish = 'insert')"),
        0);
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot), 0);
    /* multibyte UTF-8 and control characters in every text field */
    assert_int_equal(hx_exec(conn,
                             "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES"
                             " ('order', E'\\u00e9t\\u00e9-\\u65e5\\u672c-\\U0001F600\\t\\x01', "
                             " E'Placed\\n\\\"q\\\"', jsonb_build_object('n', 1, 's',"
                             " E'\\u00fcber \\\\ \\u0007 \\U0001F680'));"
                             "INSERT INTO billing.outbox (kind, invoice, event_type, body) VALUES"
                             " ('invoice', 'inv-1', 'Issued', '{\"n\": 2}')"),
                     0);
    const char *extra[] = {"--topic",
                           tmpl,
                           "--publication",
                           "dec_pub",
                           "--table",
                           "public.outbox",
                           "--table",
                           "billing.outbox",
                           "--column",
                           "billing.outbox:id=event_id",
                           "--column",
                           "billing.outbox:aggregate_type=kind",
                           "--column",
                           "billing.outbox:aggregate_id=invoice",
                           "--column",
                           "billing.outbox:type=event_type",
                           "--column",
                           "billing.outbox:payload=body",
                           NULL};
    run_relay_to_end("tables", slot, extra);

    assert_int_equal(read_ns(t_bill, 1, ns, 8, &recs), 1);
    assert_int_equal(ns[0], 2);
    assert_string_equal(recs.v[0].key, "inv-1");
    hx_records_free(&recs);

    assert_int_equal(read_ns(t_orders, 1, ns, 8, &recs), 1);
    assert_string_equal(recs.v[0].key,
                        "\xc3\xa9t\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac-\xf0\x9f\x98\x80\t\x01");
    json_error_t jerr;
    json_t *v = json_loadb(recs.v[0].value, recs.v[0].value_len, 0, &jerr);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "aggregate_id")), recs.v[0].key);
    assert_string_equal(json_string_value(json_object_get(v, "type")), "Placed\n\"q\"");
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "payload"), "s")),
                        "\xc3\xbc"
                        "ber \\ \x07 \xf0\x9f\x9a\x80");
    json_decref(v);
    hx_records_free(&recs);
}

/* The other formats through the relay: debezium (value = the payload, header
 * id, an extra column as a header, a tombstone for a NULL payload) and
 * CloudEvents in binary mode (ce_ headers, value = the payload). */
static void test_other_formats(void **state)
{
    (void)state;
    char tmpl[200], topic[200];
    hx_records recs = {0};

    assert_int_equal(hx_exec(conn, "SELECT pg_create_logical_replication_slot('dec_fmt1', "
                                   "'pgoutput'), pg_create_logical_replication_slot('dec_fmt2', "
                                   "'pgoutput')"),
                     0);
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (id, aggregatetype, aggregateid, type, "
                                   "payload) VALUES ('6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a', "
                                   "'fmt', 'o-1', 'Placed', '{\"total\": 42.50}'), "
                                   "(gen_random_uuid(), 'fmt', 'o-2', 'Gone', NULL)"),
                     0);

    snprintf(tmpl, sizeof(tmpl), "itest.%s.dbz.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.dbz.fmt", hx_run_id());
    const char *dbz[] = {"--topic",
                         tmpl,
                         "--format",
                         "debezium",
                         "--field",
                         "type:header:eventType",
                         "--tombstone-on-empty-payload",
                         NULL};
    run_relay_to_end("debezium", "dec_fmt1", dbz);
    const char *t1[] = {topic};
    assert_int_equal(hx_consume(broker.bootstraps, t1, 1, 2, 30000, &recs), 2);
    for (size_t i = 0; i < recs.n; i++) {
        const hx_record *rec = &recs.v[i];
        if (strcmp(rec->key, "o-1") == 0) {
            assert_string_equal(rec->value, "{\"total\": 42.50}");
            assert_string_equal(hx_record_header(rec, "id")->value,
                                "6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a");
            assert_string_equal(hx_record_header(rec, "eventType")->value, "Placed");
        } else {
            assert_string_equal(rec->key, "o-2");
            assert_null(rec->value); /* tombstone */
        }
    }
    hx_records_free(&recs);

    snprintf(tmpl, sizeof(tmpl), "itest.%s.ce.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.ce.fmt", hx_run_id());
    const char *ce[] = {"--topic", tmpl, "--format", "cloudevents-binary", NULL};
    run_relay_to_end("cloudevents", "dec_fmt2", ce);
    const char *t2[] = {topic};
    assert_int_equal(hx_consume(broker.bootstraps, t2, 1, 2, 30000, &recs), 2);
    for (size_t i = 0; i < recs.n; i++) {
        const hx_record *rec = &recs.v[i];
        assert_string_equal(hx_record_header(rec, "ce_specversion")->value, "1.0");
        assert_string_equal(hx_record_header(rec, "ce_subject")->value, rec->key);
        if (strcmp(rec->key, "o-1") == 0) {
            assert_string_equal(hx_record_header(rec, "ce_type")->value, "Placed");
            assert_string_equal(rec->value, "{\"total\": 42.50}");
        }
    }
    hx_records_free(&recs);
}

/* Big things and schema changes: a 900 KB payload; 1,000 events in one
 * transaction with 50,000 changes to another table; a column RENAME (rows
 * become dead letters, then flow again once renamed back) and a payload type
 * change from jsonb to text, picked up from the next Relation message. */
static void test_big_and_schema_changes(void **state)
{
    (void)state;
    char tmpl[200], topic[200], dlq[200];
    const char *slot = "dec_big";
    hx_records recs = {0};

    snprintf(tmpl, sizeof(tmpl), "itest.%s.big.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.big.big", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.big.dead", hx_run_id());
    assert_int_equal(hx_exec(conn, "CREATE TABLE big_outbox (LIKE outbox INCLUDING ALL);"
                                   "CREATE TABLE other_changes (n int, note text);"
                                   "CREATE PUBLICATION big_pub FOR TABLE big_outbox"
                                   " WITH (publish = 'insert')"),
                     0);
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot), 0);
#define BIG(n, extra)                                                                              \
    "INSERT INTO big_outbox (aggregatetype, aggregateid, type, payload)"                           \
    " VALUES ('big', 'k', 'Big', jsonb_build_object('n', " #n extra "))"
    /* 1: a 900 KB payload */
    assert_int_equal(hx_exec(conn, BIG(1, ", 'blob', repeat('x', 900000)")), 0);
    /* 2..1001: one transaction, 1,000 events among 50,000 other changes */
    assert_int_equal(hx_exec(conn,
                             "BEGIN;"
                             "INSERT INTO other_changes SELECT g, 'noise'"
                             " FROM generate_series(1, 25000) g;"
                             "INSERT INTO big_outbox (aggregatetype, aggregateid, type, payload)"
                             " SELECT 'big', 'k', 'Many', jsonb_build_object('n', g)"
                             " FROM generate_series(2, 1001) g;"
                             "UPDATE other_changes SET note = 'changed';"
                             "COMMIT"),
                     0);
    /* a rename: the required column is gone, the row is a dead letter */
    assert_int_equal(hx_exec(conn, "ALTER TABLE big_outbox RENAME COLUMN aggregateid TO agg"), 0);
    assert_int_equal(hx_exec(conn, "INSERT INTO big_outbox (aggregatetype, agg, type, payload)"
                                   " VALUES ('big', 'k', 'Renamed', '{\"n\": -1}')"),
                     0);
    assert_int_equal(hx_exec(conn, "ALTER TABLE big_outbox RENAME COLUMN agg TO aggregateid"), 0);
    /* 1002: a type change: payload becomes text holding JSON */
    assert_int_equal(hx_exec(conn, "ALTER TABLE big_outbox ALTER COLUMN payload TYPE text"), 0);
    assert_int_equal(hx_exec(conn,
                             "INSERT INTO big_outbox (aggregatetype, aggregateid, type, payload)"
                             " VALUES ('big', 'k', 'Text', '{\"n\": 1002}')"),
                     0);
    const char *extra[] = {"--topic", tmpl,      "--dlq-topic",       dlq, "--publication",
                           "big_pub", "--table", "public.big_outbox", NULL};
    run_relay_to_end("big", slot, extra);

    const char *topics[] = {topic};
    assert_int_equal(hx_consume(broker.bootstraps, topics, 1, 1002, 60000, &recs), 1002);
    for (size_t i = 0; i < recs.n; i++) {
        json_error_t jerr;
        json_t *v = json_loadb(recs.v[i].value, recs.v[i].value_len, 0, &jerr);
        assert_non_null(v);
        json_t *payload = json_object_get(v, "payload");
        assert_true(json_is_object(payload)); /* also the text one: embedded as JSON */
        assert_int_equal(json_integer_value(json_object_get(payload, "n")), (json_int_t)i + 1);
        if (i == 0) {
            assert_int_equal(strlen(json_string_value(json_object_get(payload, "blob"))), 900000);
            assert_true(recs.v[i].value_len > 900000);
        }
        json_decref(v);
    }
    hx_records_free(&recs);
    const char *dead[] = {dlq};
    assert_int_equal(hx_consume(broker.bootstraps, dead, 1, 1, 30000, &recs), 1);
    assert_non_null(strstr(hx_record_header(&recs.v[0], "error")->value, "aggregateid"));
    hx_records_free(&recs);
}

/* outbox_emit_message(): events without a table row, validated like
 * outbox_emit(), committed with the transaction, never when rolled back. */
static void test_emit_message_function(void **state)
{
    (void)state;
    if (hx_pg_version(&pg) < 140000)
        skip(); /* logical decoding messages: PostgreSQL 14+ (13 refuses --messages) */
    char tmpl[200], topic[200];
    long ns[8];
    const char *slot = "dec_emit";

    snprintf(tmpl, sizeof(tmpl), "itest.%s.emit.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.emit.emitted", hx_run_id());
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot), 0);
    PGresult *res = PQexec(conn, "SELECT outbox_emit_message('', 'k', 'T', '{}')");
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_non_null(
        strstr(PQresultErrorMessage(res), "outbox_emit_message: aggregate_type must not be empty"));
    PQclear(res);
    assert_int_equal(hx_exec(conn,
                             "BEGIN;"
                             "SELECT outbox_emit_message('emitted', 'k', 'Msg', '{\"n\": 1}');"
                             "SELECT outbox_emit_message('emitted', 'k', 'Msg', '{\"n\": 2}');"
                             "COMMIT"),
                     0);
    assert_int_equal(hx_exec(conn,
                             "BEGIN;"
                             "SELECT outbox_emit_message('emitted', 'k', 'Msg', '{\"n\": 9}');"
                             "ROLLBACK"),
                     0);
    const char *extra[] = {"--topic", tmpl, "--messages", "outbox", NULL};
    run_relay_to_end("emit", slot, extra);
    assert_int_equal(read_ns(topic, 2, ns, 8, NULL), 2);
    assert_int_equal(ns[0], 1);
    assert_int_equal(ns[1], 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_rows_and_prepared),
        cmocka_unit_test(test_two_tables_and_text),
        cmocka_unit_test(test_other_formats),
        cmocka_unit_test(test_big_and_schema_changes),
        cmocka_unit_test(test_emit_message_function),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
