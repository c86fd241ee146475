/*
 * `outbox-relay check` against deliberately broken set-ups: each check must
 * say ✗ (or ⚠ where a warning is its verdict) on its broken set-up and ✓ on
 * a good one, and the exit code must follow (1 when something is to fix, 0
 * otherwise, 2 on bad usage).  Read from `check --json`, which is what a
 * provisioning script would read.
 *
 * Two clusters: a good one (wal_level logical, max_slot_wal_keep_size
 * bounded) and a bad one (wal_level replica, no WAL sender, every slot
 * taken).  Each case gets its own database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/harness/harness.h"

static hx_pg pg, bad;
static hx_broker broker;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0)
        return -1;
    if (hx_pg_start(&pg, "check", "max_slot_wal_keep_size = 48MB\n", true) != 0)
        return -1;
    if (hx_pg_start(&bad, "check_bad",
                    "wal_level = replica\nmax_wal_senders = 0\nmax_replication_slots = 1\n",
                    false) != 0)
        return -1;
    if (hx_broker_start(&broker, 1) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hx_broker_stop(&broker);
    hx_pg_stop(&bad);
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

typedef struct result {
    int rc;
    json_t *doc;
    char *out;
} result;

static void result_free(result *r)
{
    json_decref(r->doc);
    free(r->out);
    memset(r, 0, sizeof(*r));
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return buf;
}

/* Run `outbox-relay check [--json] -d conninfo -b brokers args...`. */
static void run_check(result *r, bool json, const char *conninfo, const char *brokers,
                      const char *const *args)
{
    const char *argv[40];
    size_t n = 0;
    hx_proc p;

    memset(r, 0, sizeof(*r));
    argv[n++] = "check";
    if (json)
        argv[n++] = "--json";
    if (conninfo) {
        argv[n++] = "-d";
        argv[n++] = conninfo;
    }
    if (brokers) {
        argv[n++] = "-b";
        argv[n++] = brokers;
    }
    for (; args && *args && n < 39; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    assert_int_equal(hx_relay_start(&p, "check", argv), 0);
    r->rc = hx_proc_wait(&p, 60000);
    r->out = read_all(p.outpath);
    if (json && r->rc != 2) {
        json_error_t jerr;
        r->doc = json_loads(r->out, 0, &jerr);
        if (!r->doc) {
            hx_proc_dump(&p, "check --json");
            fail_msg("check --json printed no JSON (%s): %s", jerr.text, r->out);
        }
    }
}

/* The status of the first check called name ("" when absent). */
static const char *status_of(const result *r, const char *name)
{
    json_t *arr = json_object_get(r->doc, "checks"), *it;
    size_t i;

    json_array_foreach(arr, i, it)
    {
        if (strcmp(json_string_value(json_object_get(it, "check")), name) == 0)
            return json_string_value(json_object_get(it, "status"));
    }
    return "";
}

static void expect(const result *r, const char *name, const char *want)
{
    const char *got = status_of(r, name);
    if (strcmp(got, want) != 0)
        fail_msg("check \"%s\": status \"%s\", want \"%s\"\n%s", name, got, want, r->out);
}

/* A fix is given with every failure. */
static void expect_fix(const result *r, const char *name)
{
    json_t *arr = json_object_get(r->doc, "checks"), *it;
    size_t i;

    json_array_foreach(arr, i, it)
    {
        if (strcmp(json_string_value(json_object_get(it, "check")), name) == 0) {
            const char *fix = json_string_value(json_object_get(it, "fix"));
            if (!fix || !*fix)
                fail_msg("check \"%s\" has no fix", name);
            return;
        }
    }
    fail_msg("no check \"%s\"", name);
}

static PGconn *case_db(const char *name, bool with_schema, char *conninfo, size_t len)
{
    PGconn *conn;

    assert_int_equal(hx_pg_create_db(&pg, name, with_schema), 0);
    hx_pg_conninfo(&pg, name, conninfo, len);
    conn = hx_connect(conninfo);
    assert_non_null(conn);
    return conn;
}

static void create_slot(PGconn *conn, const char *slot, const char *plugin)
{
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('%s', '%s')", slot, plugin), 0);
}

static void drop_slot(PGconn *conn, const char *slot)
{
    assert_int_equal(hx_exec(conn,
                             "SELECT pg_drop_replication_slot(slot_name) FROM "
                             "pg_replication_slots WHERE slot_name = '%s'",
                             slot),
                     0);
}

static void insert_row(PGconn *conn, const char *agg, size_t payload_bytes)
{
    assert_int_equal(hx_exec(conn,
                             "INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload)"
                             " VALUES ('%s', '1', 'Placed', jsonb_build_object('pad', repeat('x', "
                             "%zu)))",
                             agg, payload_bytes),
                     0);
}

/* Everything in order: exit 0, each check ✓ (topics may be ⚠ when the
 * brokers do not say whether they create topics). */
static void test_good_setup(void **state)
{
    char ci[256], topic[128], agg[64], tmpl[128];
    PGconn *conn = case_db("ck_good", true, ci, sizeof(ci));
    result r;

    (void)state;
    snprintf(agg, sizeof(agg), "good%s", hx_run_id());
    snprintf(tmpl, sizeof(tmpl), "itest.ck.{aggregate_type}");
    snprintf(topic, sizeof(topic), "itest.ck.%s", agg);
    insert_row(conn, agg, 100);
    create_slot(conn, "ck_good_slot", "pgoutput");
    if (!broker.external) {
        assert_int_equal(hx_broker_cmd(&broker, "topic %s 1", topic), 0);
        assert_int_equal(hx_broker_cmd(&broker, "topic outbox.dlq 1"), 0);
    }
    const char *args[] = {"--slot", "ck_good_slot", "--topic", tmpl, NULL};
    run_check(&r, true, ci, broker.bootstraps, args);
    static const char *const ok[] = {"database",
                                     "server",
                                     "wal_level",
                                     "replication_slots",
                                     "wal_senders",
                                     "max_slot_wal_keep_size",
                                     "role",
                                     "table public.outbox",
                                     "select public.outbox",
                                     "publication",
                                     "slot",
                                     "anchors",
                                     "brokers",
                                     "idempotence",
                                     "message_size"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        expect(&r, ok[i], "ok");
    char name[200];
    snprintf(name, sizeof(name), "topic %s", topic);
    if (!broker.external)
        expect(&r, name, "ok");
    else if (strcmp(status_of(&r, name), "fail") == 0)
        fail_msg("topic %s: fail on the external cluster\n%s", topic, r.out);
    assert_int_equal(r.rc, 0);
    assert_true(json_is_true(json_object_get(r.doc, "ok")));
    result_free(&r);

    /* the same as lines: ✓ marks, a summary, exit 0 */
    run_check(&r, false, ci, broker.bootstraps, args);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "\xE2\x9C\x93 wal_level: logical\n"));
    assert_null(strstr(r.out, "\xE2\x9C\x97"));
    assert_non_null(strstr(r.out, " 0 to fix"));
    result_free(&r);
    drop_slot(conn, "ck_good_slot");
    PQfinish(conn);
}

/* wal_level, free slots, free WAL senders, max_slot_wal_keep_size: the bad
 * cluster has them all wrong. */
static void test_server_settings(void **state)
{
    char ci[256];
    PGconn *conn;
    result r;

    (void)state;
    assert_int_equal(hx_pg_create_db(&bad, "ck_bad", true), 0);
    hx_pg_conninfo(&bad, "ck_bad", ci, sizeof(ci));
    conn = hx_connect(ci);
    assert_non_null(conn);
    /* the one slot taken (a physical slot needs no logical wal_level) */
    assert_int_equal(hx_exec(conn, "SELECT pg_create_physical_replication_slot('ck_filler')"), 0);
    run_check(&r, true, ci, broker.bootstraps, NULL);
    expect(&r, "wal_level", "fail");
    expect_fix(&r, "wal_level");
    expect(&r, "replication_slots", "fail");
    expect_fix(&r, "replication_slots");
    expect(&r, "wal_senders", "fail");
    expect_fix(&r, "wal_senders");
    expect(&r, "max_slot_wal_keep_size", "warn");
    expect(&r, "database", "ok");
    assert_int_equal(r.rc, 1);
    assert_true(json_is_false(json_object_get(r.doc, "ok")));
    result_free(&r);
    PQfinish(conn);
}

/* The role: without REPLICATION, then with it but without SELECT. */
static void test_role_and_select(void **state)
{
    char ci[256], ci_role[320];
    PGconn *conn = case_db("ck_role", true, ci, sizeof(ci));
    result r;

    (void)state;
    create_slot(conn, "ck_role_slot", "pgoutput");
    assert_int_equal(hx_exec(conn, "CREATE ROLE ck_norepl LOGIN;"
                                   "GRANT SELECT ON public.outbox TO ck_norepl"),
                     0);
    snprintf(ci_role, sizeof(ci_role), "%s user=ck_norepl", ci);
    const char *args[] = {"--slot", "ck_role_slot", NULL};
    run_check(&r, true, ci_role, broker.bootstraps, args);
    expect(&r, "role", "fail");
    expect_fix(&r, "role");
    expect(&r, "select public.outbox", "ok");
    assert_int_equal(r.rc, 1);
    result_free(&r);

    assert_int_equal(hx_exec(conn, "ALTER ROLE ck_norepl REPLICATION;"
                                   "REVOKE SELECT ON public.outbox FROM ck_norepl"),
                     0);
    run_check(&r, true, ci_role, broker.bootstraps, args);
    expect(&r, "role", "ok");
    expect(&r, "select public.outbox", "fail");
    expect_fix(&r, "select public.outbox");
    assert_int_equal(r.rc, 1);
    result_free(&r);
    drop_slot(conn, "ck_role_slot");
    assert_int_equal(hx_exec(conn, "DROP OWNED BY ck_norepl; DROP ROLE ck_norepl"), 0);
    PQfinish(conn);
}

/* The table: missing; a required column missing; a column of a type the
 * relay refuses (the timestamp without a time zone). */
static void test_tables(void **state)
{
    char ci[256];
    PGconn *conn = case_db("ck_tables", true, ci, sizeof(ci));
    result r;

    (void)state;
    const char *missing[] = {"--create-slot", "--table", "public.nope", NULL};
    run_check(&r, true, ci, broker.bootstraps, missing);
    expect(&r, "table public.nope", "fail");
    expect_fix(&r, "table public.nope");
    assert_int_equal(r.rc, 1);
    result_free(&r);

    assert_int_equal(hx_exec(conn, "CREATE TABLE public.ob_ts (id uuid, aggregatetype text,"
                                   " aggregateid text, type text, payload jsonb,"
                                   " \"timestamp\" timestamp without time zone);"
                                   "CREATE TABLE public.ob_nocol (id uuid, aggregatetype text,"
                                   " type text, payload jsonb);"
                                   "CREATE TABLE public.ob_int (id uuid, aggregatetype int,"
                                   " aggregateid text, type text, payload jsonb)"),
                     0);
    const char *types[] = {"--create-slot",   "--table", "public.ob_ts",  "--table",
                           "public.ob_nocol", "--table", "public.ob_int", "--table",
                           "public.outbox",   NULL};
    run_check(&r, true, ci, broker.bootstraps, types);
    expect(&r, "table public.ob_ts", "fail");
    expect_fix(&r, "table public.ob_ts");
    expect(&r, "table public.ob_nocol", "fail");
    expect(&r, "table public.ob_int", "fail");
    expect(&r, "table public.outbox", "ok");
    assert_non_null(strstr(r.out, "timestamp without time zone"));
    assert_int_equal(r.rc, 1);
    result_free(&r);
    /* debezium's router takes a timestamp without time zone (as UTC) */
    const char *dbz[] = {"--create-slot", "--table", "public.ob_ts", "--format", "debezium", NULL};
    run_check(&r, true, ci, broker.bootstraps, dbz);
    expect(&r, "table public.ob_ts", "ok");
    result_free(&r);
    PQfinish(conn);
}

/* The publication: missing (and fine with --create-slot), not covering the
 * table, not publishing inserts. */
static void test_publication(void **state)
{
    char ci[256];
    PGconn *conn = case_db("ck_pub", true, ci, sizeof(ci));
    result r;

    (void)state;
    create_slot(conn, "ck_pub_slot", "pgoutput");
    const char *args[] = {"--slot", "ck_pub_slot", NULL};
    const char *create[] = {"--slot", "ck_pub_slot", "--create-slot", NULL};
    assert_int_equal(hx_exec(conn, "DROP PUBLICATION outbox_pub"), 0);
    run_check(&r, true, ci, broker.bootstraps, args);
    expect(&r, "publication", "fail");
    expect_fix(&r, "publication");
    assert_int_equal(r.rc, 1);
    result_free(&r);
    run_check(&r, true, ci, broker.bootstraps, create);
    expect(&r, "publication", "ok");
    result_free(&r);

    assert_int_equal(hx_exec(conn, "CREATE TABLE public.other (x int);"
                                   "CREATE PUBLICATION outbox_pub FOR TABLE public.other"),
                     0);
    run_check(&r, true, ci, broker.bootstraps, args);
    expect(&r, "publication", "fail");
    assert_non_null(strstr(r.out, "does not cover public.outbox"));
    result_free(&r);

    assert_int_equal(hx_exec(conn, "DROP PUBLICATION outbox_pub;"
                                   "CREATE PUBLICATION outbox_pub FOR TABLE public.outbox"
                                   " WITH (publish = 'update')"),
                     0);
    run_check(&r, true, ci, broker.bootstraps, args);
    expect(&r, "publication", "fail");
    assert_non_null(strstr(r.out, "does not publish inserts"));
    result_free(&r);

    assert_int_equal(hx_exec(conn, "ALTER PUBLICATION outbox_pub SET (publish = 'insert')"), 0);
    run_check(&r, true, ci, broker.bootstraps, args);
    expect(&r, "publication", "ok");
    result_free(&r);
    drop_slot(conn, "ck_pub_slot");
    PQfinish(conn);
}

/* The slot: missing; another plugin; lagging past --warn-bytes (⚠); and an
 * anchor retaining more than --warn-bytes. */
static void test_slot_and_anchors(void **state)
{
    char ci[256];
    PGconn *conn = case_db("ck_slot", true, ci, sizeof(ci));
    result r;

    (void)state;
    const char *missing[] = {"--slot", "ck_nope", NULL};
    run_check(&r, true, ci, broker.bootstraps, missing);
    expect(&r, "slot", "fail");
    expect_fix(&r, "slot");
    assert_int_equal(r.rc, 1);
    result_free(&r);

    create_slot(conn, "ck_td_slot", "test_decoding");
    const char *td[] = {"--slot", "ck_td_slot", NULL};
    run_check(&r, true, ci, broker.bootstraps, td);
    expect(&r, "slot", "fail");
    assert_non_null(strstr(r.out, "test_decoding"));
    result_free(&r);
    drop_slot(conn, "ck_td_slot");

    create_slot(conn, "ck_lag_slot", "pgoutput");
    create_slot(conn, "outbox_anchor_ck", "pgoutput");
    for (int i = 0; i < 20; i++)
        insert_row(conn, "lag", 1000);
    const char *lag[] = {"--slot", "ck_lag_slot", "--warn-bytes", "4k", NULL};
    run_check(&r, true, ci, broker.bootstraps, lag);
    expect(&r, "slot", "warn");
    expect(&r, "anchors", "fail");
    expect_fix(&r, "anchors");
    assert_non_null(strstr(r.out, "anchor drop ck"));
    result_free(&r);
    const char *nolag[] = {"--slot", "ck_lag_slot", NULL};
    run_check(&r, true, ci, broker.bootstraps, nolag);
    expect(&r, "slot", "ok");
    expect(&r, "anchors", "ok");
    result_free(&r);
    drop_slot(conn, "ck_lag_slot");
    drop_slot(conn, "outbox_anchor_ck");
    PQfinish(conn);
}

/* A slot whose WAL is gone (past max_slot_wal_keep_size): wal_status lost. */
static void test_slot_lost(void **state)
{
    char ci[256], st[32];
    PGconn *conn = case_db("ck_lost", true, ci, sizeof(ci));
    result r;

    (void)state;
    create_slot(conn, "ck_lost_slot", "pgoutput");
    /* 48MB allowed: move the server 8 segments (128 MB) on, then checkpoint */
    for (int i = 0; i < 8; i++) {
        insert_row(conn, "lost", 10);
        assert_int_equal(hx_exec(conn, "SELECT pg_switch_wal()"), 0);
    }
    assert_int_equal(hx_exec(conn, "CHECKPOINT"), 0);
    assert_int_equal(hx_query1(conn, st, sizeof(st),
                               "SELECT wal_status FROM pg_replication_slots"
                               " WHERE slot_name = 'ck_lost_slot'"),
                     1);
    if (strcmp(st, "lost") != 0 && strcmp(st, "unreserved") != 0)
        fail_msg("the set-up did not lose the slot's WAL: wal_status %s", st);
    const char *args[] = {"--slot", "ck_lost_slot", NULL};
    run_check(&r, true, ci, broker.bootstraps, args);
    expect(&r, "slot", "fail");
    expect_fix(&r, "slot");
    assert_int_equal(r.rc, 1);
    result_free(&r);
    drop_slot(conn, "ck_lost_slot");
    PQfinish(conn);
}

/* The brokers: unreachable; idempotence off; a topic that will not exist;
 * a row too large for message.max.bytes. */
static void test_brokers(void **state)
{
    char ci[256], tmpl[128], name[200];
    PGconn *conn = case_db("ck_brokers", true, ci, sizeof(ci));
    result r;

    (void)state;
    create_slot(conn, "ck_br_slot", "pgoutput");
    insert_row(conn, "big", 20000);
    const char *base[] = {"--slot", "ck_br_slot", NULL};
    run_check(&r, true, ci, "127.0.0.1:1", base);
    expect(&r, "brokers", "fail");
    expect_fix(&r, "brokers");
    assert_int_equal(r.rc, 1);
    result_free(&r);

    const char *idem[] = {"--slot", "ck_br_slot", "-X", "enable.idempotence=false", NULL};
    run_check(&r, true, ci, broker.bootstraps, idem);
    expect(&r, "idempotence", "fail");
    expect_fix(&r, "idempotence");
    result_free(&r);

    snprintf(tmpl, sizeof(tmpl), "itest.ck.absent.%s.{aggregate_type}", hx_run_id());
    snprintf(name, sizeof(name), "topic itest.ck.absent.%s.big", hx_run_id());
    const char *topic[] = {
        "--slot", "ck_br_slot", "--topic", tmpl, "-X", "allow.auto.create.topics=false", NULL};
    run_check(&r, true, ci, broker.bootstraps, topic);
    expect(&r, name, "fail");
    expect_fix(&r, name);
    expect(&r, "idempotence", "ok");
    assert_int_equal(r.rc, 1);
    result_free(&r);

    const char *size[] = {"--slot", "ck_br_slot", "-X", "message.max.bytes=10000", NULL};
    run_check(&r, true, ci, broker.bootstraps, size);
    expect(&r, "message_size", "fail");
    expect_fix(&r, "message_size");
    result_free(&r);
    run_check(&r, true, ci, broker.bootstraps, base);
    expect(&r, "message_size", "ok");
    result_free(&r);
    drop_slot(conn, "ck_br_slot");
    PQfinish(conn);
}

/* No database: ✗ with the fix, the rest skipped, exit 1; bad usage: 2. */
static void test_no_database_and_usage(void **state)
{
    result r;

    (void)state;
    run_check(&r, true, "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2",
              broker.bootstraps, NULL);
    expect(&r, "database", "fail");
    expect_fix(&r, "database");
    expect(&r, "database checks", "skip");
    expect(&r, "brokers", "ok");
    assert_int_equal(r.rc, 1);
    result_free(&r);
    const char *bad_opt[] = {"--no-such-option", NULL};
    run_check(&r, true, NULL, broker.bootstraps, bad_opt);
    assert_int_equal(r.rc, 2);
    result_free(&r);
    run_check(&r, true, "host=127.0.0.1 port=1 connect_timeout=2", NULL, NULL);
    expect(&r, "brokers", "fail");
    result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_setup),
        cmocka_unit_test(test_server_settings),
        cmocka_unit_test(test_role_and_select),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_publication),
        cmocka_unit_test(test_slot_and_anchors),
        cmocka_unit_test(test_brokers),
        cmocka_unit_test(test_no_database_and_usage),
        /* last: it moves the good cluster's WAL far on */
        cmocka_unit_test(test_slot_lost),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
