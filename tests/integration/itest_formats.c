/*
 * The event contract from the database side: schema/outbox.sql applies
 * twice; outbox_emit() accepts good events inside a business transaction
 * that commits (they reach Kafka, with the ids it returned) and nothing of
 * one that rolls back, and refuses each bad input with its SQLSTATE,
 * message and hint; the relay, running as the least-privilege outbox_relay
 * role the file creates, publishes 10,000 envelopes that all validate
 * against schema/envelope.schema.json.
 *
 * The other formats are tested at the unit level (tests/unit/test_formats.c)
 * until the relay takes --format for them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/harness/harness.h"

#define TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#define NBULK 10000

static hx_pg pg;
static hx_broker broker;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0)
        return -1;
    if (hx_pg_start(&pg, "formats", NULL, true) != 0)
        return -1;
    if (hx_broker_start(&broker, 1) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hx_broker_stop(&broker);
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

static const char *root(void)
{
    const char *r = getenv("OBX_ROOT");

    return r != NULL && r[0] != '\0' ? r : ".";
}

/* The relay as the role schema/outbox.sql creates: proves it is enough. */
static void relay_conninfo(char *buf, size_t len)
{
    snprintf(buf, len, "host=127.0.0.1 port=%d user=outbox_relay dbname=postgres", pg.port);
}

/* Run the relay on slot until end_lsn with topic template tmpl; expect exit 0. */
static void relay_run(const char *tag, const char *slot, const char *tmpl, uint64_t end_lsn)
{
    char ci[256], lsn[32];
    hx_proc p;
    int rc;

    relay_conninfo(ci, sizeof ci);
    const char *args[] = {"run",
                          "-d",
                          ci,
                          "-b",
                          broker.bootstraps,
                          "--create-slot",
                          "--slot",
                          slot,
                          "--topic",
                          tmpl,
                          "--end-lsn",
                          hx_lsn_format(end_lsn, lsn, sizeof lsn),
                          "--status-interval",
                          "1",
                          NULL};

    assert_int_equal(hx_relay_start(&p, tag, args), 0);
    rc = hx_proc_wait(&p, 300000);
    if (rc != 0)
        hx_proc_dump(&p, "expected exit 0");
    assert_int_equal(rc, 0);
}

static void test_schema_applies_twice(void **state)
{
    PGconn *conn = hx_connect(pg.conninfo);
    char buf[128];

    (void)state;
    assert_non_null(conn);
    /* once by the harness already; twice more */
    assert_int_equal(hx_load_schema(conn), 0);
    assert_int_equal(hx_load_schema(conn), 0);
    assert_int_equal(hx_query1(conn, buf, sizeof buf,
                               "SELECT count(*) FROM pg_proc WHERE proname = 'outbox_emit'"),
                     1);
    assert_string_equal(buf, "1");
    assert_int_equal(hx_query1(conn, buf, sizeof buf,
                               "SELECT indexdef FROM pg_indexes WHERE tablename = 'outbox' AND "
                               "indexname = 'outbox_timestamp_idx'"),
                     1);
    assert_non_null(strstr(buf, "(\"timestamp\")"));
    assert_int_equal(
        hx_query1(conn, buf, sizeof buf,
                  "SELECT rolcanlogin::text || rolreplication::text || rolsuper::text || "
                  "rolcreatedb::text || rolcreaterole::text || (rolpassword IS NULL)::text "
                  "FROM pg_authid WHERE rolname = 'outbox_relay'"),
        1);
    assert_string_equal(buf, "truetruefalsefalsefalsetrue"); /* no password from the file */
    assert_int_equal(
        hx_query1(conn, buf, sizeof buf,
                  "SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM "
                  "information_schema.role_table_grants WHERE grantee = 'outbox_relay'"),
        1);
    assert_string_equal(buf, "SELECT");
    assert_int_equal(hx_query1(conn, buf, sizeof buf,
                               "SELECT count(*) FROM pg_publication WHERE pubname = 'outbox_pub'"),
                     1);
    assert_string_equal(buf, "1");
    PQfinish(conn);
}

/* A refused call: its SQLSTATE, a message naming the problem and a hint. */
static void expect_refused(PGconn *conn, const char *call, const char *sqlstate, const char *needle,
                           bool want_hint)
{
    PGresult *res = PQexec(conn, call);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);

    if (PQresultStatus(res) != PGRES_FATAL_ERROR)
        fail_msg("accepted: %s", call);
    if (state == NULL || strcmp(state, sqlstate) != 0)
        fail_msg("%s: SQLSTATE %s, expected %s (%s)", call, state ? state : "(none)", sqlstate,
                 msg ? msg : "");
    if (msg == NULL || strstr(msg, needle) == NULL)
        fail_msg("%s: message \"%s\" does not mention \"%s\"", call, msg ? msg : "", needle);
    if (want_hint && (hint == NULL || hint[0] == '\0'))
        fail_msg("%s: no hint", call);
    PQclear(res);
}

static void expect_error(PGconn *conn, const char *call, const char *sqlstate, const char *needle)
{
    expect_refused(conn, call, sqlstate, needle, true);
}

static void test_emit_rejects_bad_input(void **state)
{
    PGconn *conn = hx_connect(pg.conninfo);
    char before[32], after[32];

    (void)state;
    assert_non_null(conn);
    assert_int_equal(hx_query1(conn, before, sizeof before, "SELECT count(*) FROM public.outbox"),
                     1);
    expect_error(conn, "SELECT outbox_emit(NULL, '1', 'T', '{}')", "22004",
                 "aggregate_type must not be null");
    expect_error(conn, "SELECT outbox_emit('', '1', 'T', '{}')", "22023",
                 "aggregate_type must not be empty");
    expect_error(conn, "SELECT outbox_emit('order', NULL, 'T', '{}')", "22004",
                 "aggregate_id must not be null");
    expect_error(conn, "SELECT outbox_emit('order', '  ', 'T', '{}')", "22023",
                 "aggregate_id must not be empty");
    expect_error(conn, "SELECT outbox_emit('order', '1', NULL, '{}')", "22004",
                 "type must not be null");
    expect_error(conn, "SELECT outbox_emit('order', '1', '', '{}')", "22023",
                 "type must not be empty");
    expect_error(conn, "SELECT outbox_emit('order', '1', 'T', '[1, 2]')", "22023",
                 "payload must be a JSON object or null, not array");
    expect_error(conn, "SELECT outbox_emit('order', '1', 'T', '\"s\"')", "22023", "not string");
    expect_error(conn, "SELECT outbox_emit('order', '1', 'T', '42')", "22023", "not number");
    expect_error(conn, "SELECT outbox_emit('order', '1', 'T', 'null'::jsonb)", "22023", "not null");
    expect_error(conn, "SELECT outbox_emit('order', '1', 'T', '{}', id => NULL)", "22004",
                 "id must not be null");
    expect_error(conn,
                 "SELECT outbox_emit('order', '1', 'T', '{}', traceparent => "
                 "'00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01')",
                 "22023", "not a W3C traceparent");
    expect_error(conn,
                 "SELECT outbox_emit('order', '1', 'T', '{}', traceparent => "
                 "'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')",
                 "22023", "not a W3C traceparent");
    expect_error(conn,
                 "SELECT outbox_emit('order', '1', 'T', '{}', traceparent => "
                 "'00-00000000000000000000000000000000-b7ad6b7169203331-01')",
                 "22023", "not a W3C traceparent");
    expect_error(conn,
                 "SELECT outbox_emit('order', '1', 'T', '{}', traceparent => "
                 "'00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01')",
                 "22023", "not a W3C traceparent");
    expect_error(conn, "SELECT outbox_emit('order', '1', 'T', '{}', traceparent => '" TP "-extra')",
                 "22023", "not a W3C traceparent");
    expect_error(conn, "SELECT outbox_emit('order', '1', 'T', '{}', traceparent => '')", "22023",
                 "not a W3C traceparent");
    /* a duplicate id is the primary key's business */
    assert_int_equal(hx_exec(conn, "SELECT outbox_emit('emitdup', '1', 'T', '{}', id => "
                                   "'11111111-1111-4111-8111-111111111111')"),
                     0);
    expect_refused(conn,
                   "SELECT outbox_emit('emitdup', '1', 'T', '{}', id => "
                   "'11111111-1111-4111-8111-111111111111')",
                   "23505", "duplicate key", false);
    assert_int_equal(hx_query1(conn, after, sizeof after, "SELECT count(*) FROM public.outbox"), 1);
    assert_int_equal(atol(after), atol(before) + 1); /* only the good one */
    PQfinish(conn);
}

static void test_emit_commit_and_rollback(void **state)
{
    PGconn *conn = hx_connect(pg.conninfo);
    char tmpl[160], topic[160], ids[3][64], rb[2][64], buf[64];
    const char *topics[1] = {topic};
    uint64_t end_lsn;
    hx_records recs = {0};
    bool seen[3] = {false, false, false};
    long got;

    (void)state;
    assert_non_null(conn);
    snprintf(tmpl, sizeof tmpl, "itest.%s.formats.emit.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof topic, "itest.%s.formats.emit.emitorder", hx_run_id());
    assert_int_equal(
        hx_exec(conn, "CREATE TABLE public.orders_fmt (id int PRIMARY KEY, total numeric)"), 0);
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('formats_emit', 'pgoutput')"), 0);

    /* a business transaction that commits, with three events */
    assert_int_equal(hx_exec(conn, "BEGIN; INSERT INTO public.orders_fmt VALUES (1, 42.5)"), 0);
    assert_int_equal(hx_query1(conn, ids[0], sizeof ids[0],
                               "SELECT outbox_emit('emitorder', '1', 'OrderPlaced', "
                               "'{\"total\": 42.5, \"lines\": [1, 2]}')"),
                     1);
    assert_int_equal(hx_query1(conn, ids[1], sizeof ids[1],
                               "SELECT outbox_emit('emitorder', '1', 'OrderNoted', NULL, "
                               "traceparent => '" TP "')"),
                     1);
    assert_int_equal(hx_query1(conn, ids[2], sizeof ids[2],
                               "SELECT outbox_emit('emitorder', '2', 'OrderPlaced', '{}', id => "
                               "'22222222-2222-4222-8222-222222222222')"),
                     1);
    assert_string_equal(ids[2], "22222222-2222-4222-8222-222222222222");
    assert_int_equal(hx_exec(conn, "COMMIT"), 0);

    /* one that rolls back */
    assert_int_equal(hx_exec(conn, "BEGIN; INSERT INTO public.orders_fmt VALUES (2, 1)"), 0);
    assert_int_equal(hx_query1(conn, rb[0], sizeof rb[0],
                               "SELECT outbox_emit('emitorder', '9', 'RolledBack', '{}')"),
                     1);
    assert_int_equal(hx_query1(conn, rb[1], sizeof rb[1],
                               "SELECT outbox_emit('emitorder', '9', 'RolledBack', '{}')"),
                     1);
    assert_int_equal(hx_exec(conn, "ROLLBACK"), 0);
    assert_int_equal(hx_query1(conn, buf, sizeof buf, "SELECT count(*) FROM public.orders_fmt"), 1);
    assert_string_equal(buf, "1");

    assert_int_equal(hx_current_lsn(conn, true, &end_lsn), 0);
    relay_run("formats-emit", "formats_emit", tmpl, end_lsn);

    /* want one more than committed: a rolled-back event would show up */
    got = hx_consume(broker.bootstraps, topics, 1, 4, 20000, &recs);
    assert_int_equal(got, 3);
    for (size_t i = 0; i < recs.n; i++) {
        const hx_record *r = &recs.v[i];
        const hx_header *id = hx_record_header(r, "id");
        json_error_t jerr;
        json_t *j = json_loadb(r->value, r->value_len, 0, &jerr);
        int k;

        assert_non_null(id);
        assert_non_null(j);
        for (k = 0; k < 3 && strcmp(id->value, ids[k]) != 0; k++)
            ;
        if (k == 3)
            fail_msg("record with id %s was not emitted in the committed transaction", id->value);
        assert_false(seen[k]);
        seen[k] = true;
        assert_string_equal(json_string_value(json_object_get(j, "id")), ids[k]);
        assert_string_not_equal(id->value, rb[0]);
        assert_string_not_equal(id->value, rb[1]);
        if (k == 0) {
            assert_string_equal(r->key, "1");
            assert_int_equal(json_integer_value(json_array_get(
                                 json_object_get(json_object_get(j, "payload"), "lines"), 1)),
                             2);
        } else if (k == 1) {
            assert_true(json_is_null(json_object_get(j, "payload")));
            assert_string_equal(hx_record_header(r, "traceparent")->value, TP);
            assert_string_equal(
                json_string_value(json_object_get(json_object_get(j, "trace"), "traceparent")), TP);
        } else {
            assert_string_equal(r->key, "2");
        }
        json_decref(j);
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    hx_records_free(&recs);
    PQfinish(conn);
}

static void test_bulk_envelopes_validate(void **state)
{
    PGconn *conn = hx_connect(pg.conninfo);
    char tmpl[160], topic[160], path[700], cmd[2048];
    const char *topics[1] = {topic};
    uint64_t end_lsn;
    hx_records recs = {0};
    FILE *f, *p;
    long got;
    int invalid = -1;
    size_t with_trace = 0, null_payload = 0;

    (void)state;
    assert_non_null(conn);
    if (system("python3 -c 'import jsonschema' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP: python3-jsonschema is not installed (apt-get install "
                        "python3-jsonschema)\n");
        PQfinish(conn);
        skip();
    }
    snprintf(tmpl, sizeof tmpl, "itest.%s.formats.bulk.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof topic, "itest.%s.formats.bulk.bulkorder", hx_run_id());
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('formats_bulk', 'pgoutput')"), 0);
    /* ten transactions of 1,000: objects with nesting, unicode, big numbers,
     * NULL payloads, traceparents, text that needs escaping in ids */
    for (int t = 0; t < 10; t++)
        assert_int_equal(
            hx_exec(conn,
                    "SELECT outbox_emit('bulkorder', 'a' || (g %% 500) || E'\\t\"q\"', "
                    "'Type' || (g %% 3), "
                    "CASE WHEN g %% 7 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'text', "
                    "'caf\u00e9 \"q\" \\ \U0001F600', 'n', g * 1.5, 'big', "
                    "123456789012345678901234567890.000000001, 'arr', jsonb_build_array(g, "
                    "NULL, true)) END, "
                    "traceparent => CASE WHEN g %% 10 = 0 THEN '" TP "' END) "
                    "FROM generate_series(%d, %d) g",
                    t * 1000 + 1, (t + 1) * 1000),
            0);
    assert_int_equal(hx_current_lsn(conn, true, &end_lsn), 0);
    relay_run("formats-bulk", "formats_bulk", tmpl, end_lsn);

    got = hx_consume(broker.bootstraps, topics, 1, NBULK, 120000, &recs);
    assert_int_equal(got, NBULK);
    snprintf(path, sizeof path, "%s/bulk-envelopes.jsonl", hx_tmpdir());
    f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < recs.n; i++) {
        /* one document per line: the relay's compact JSON has no raw newline,
         * jsonb text neither */
        assert_null(memchr(recs.v[i].value, '\n', recs.v[i].value_len));
        fwrite(recs.v[i].value, 1, recs.v[i].value_len, f);
        fputc('\n', f);
        if (hx_record_header(&recs.v[i], "traceparent") != NULL)
            with_trace++;
        if (strstr(recs.v[i].value, "\"payload\":null,") != NULL)
            null_payload++;
    }
    assert_int_equal(fclose(f), 0);
    assert_int_equal(with_trace, NBULK / 10);
    assert_int_equal(null_payload, NBULK / 7);

    snprintf(cmd, sizeof cmd,
             "python3 '%s/tests/fixtures/formats/validate_envelopes.py' "
             "'%s/schema/envelope.schema.json' '%s'",
             root(), root(), path);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "invalid %d", &invalid), 1);
    assert_int_equal(pclose(p), 0);
    assert_int_equal(invalid, 0);

    /* and the check can fail: one envelope with a broken lsn is caught */
    f = fopen(path, "a");
    assert_non_null(f);
    fputs("{\"id\":\"x\",\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"1\","
          "\"occurred_at\":\"2026-11-23T18:14:13Z\",\"payload\":null,\"source\":{\"lsn\":"
          "\"0/0x1\",\"commit_lsn\":\"0/2\",\"seq\":0,\"xid\":1,\"commit_time\":"
          "\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\",\"slot\":\"s\"}}\n",
          f);
    assert_int_equal(fclose(f), 0);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "invalid %d", &invalid), 1);
    pclose(p);
    assert_int_equal(invalid, 1);
    unlink(path);
    hx_records_free(&recs);
    PQfinish(conn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_applies_twice),
        cmocka_unit_test(test_emit_rejects_bad_input),
        cmocka_unit_test(test_emit_commit_and_rollback),
        cmocka_unit_test(test_bulk_envelopes_validate),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
