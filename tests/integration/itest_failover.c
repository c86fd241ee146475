/*
 * A primary failover that keeps the slot (PostgreSQL 17+, failover slots),
 * and one that loses it.
 *
 *  - test_failover_keeps_slot: a primary and a streaming standby with slot
 *    synchronization; the relay (--create-slot: a failover slot) on a
 *    multi-host conninfo with target_session_attrs=read-write; a writer
 *    commits outbox rows and a ledger row in the same transaction; the
 *    primary is killed (-9, the whole server), the standby promoted, the
 *    writer goes on against it.  The relay continues from the synchronized
 *    slot: every ledger row of the new primary is read back (0 lost), no
 *    event outside it (0 phantom), per aggregate in commit order.
 *  - test_lost_slot_refused (any version): a slot missing where the relay
 *    streamed it before (--state-file) or on a promoted server is never
 *    recreated silently: exit 1; --allow-new-slot starts afresh.
 *
 * The failover test runs with OBX_PGVERSION 17 or later (skipped before).
 */
#include <inttypes.h>
#include <pthread.h>
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

#define AGGREGATES 5

static hx_pg primary, standby;
static hx_broker broker;
static PGconn *conn;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0 || hx_broker_start(&broker, 1) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(conn);
    conn = NULL;
    hx_broker_stop(&broker);
    hx_pg_stop(&standby);
    hx_pg_stop(&primary);
    hx_cleanup();
    return 0;
}

static bool wait_confirmed(PGconn *c, const char *slot, uint64_t lsn, int timeout_ms)
{
    uint64_t got = 0;
    for (int64_t until = hx_now_ms() + timeout_ms; hx_now_ms() < until; hx_sleep_ms(100))
        if (hx_slot_confirmed(c, slot, &got) == 1 && got >= lsn)
            return true;
    return false;
}

/* ---- the writer: outbox row and ledger row in one transaction ---------- */

typedef struct writer {
    char conninfo[512];
    volatile int stop;
    long next;      /* the next n to write */
    long errors;    /* failed attempts (the failover) */
    long committed; /* COMMIT returned OK */
    pthread_t thread;
} writer;

static void *write_loop(void *arg)
{
    writer *w = arg;
    PGconn *c = NULL;
    while (!w->stop) {
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = PQconnectdb(w->conninfo);
            if (PQstatus(c) != CONNECTION_OK) {
                w->errors++;
                hx_sleep_ms(100);
                continue;
            }
        }
        char sql[512];
        long n = w->next++;
        snprintf(sql, sizeof(sql),
                 "BEGIN; INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                 " VALUES ('fo', 'agg-%ld', 'Written', jsonb_build_object('n', %ld));"
                 " INSERT INTO ledger VALUES (%ld); COMMIT",
                 n % AGGREGATES, n, n);
        PGresult *res = PQexec(c, sql);
        if (PQresultStatus(res) == PGRES_COMMAND_OK)
            w->committed++;
        else
            w->errors++;
        PQclear(res);
        hx_sleep_ms(5);
    }
    PQfinish(c);
    return NULL;
}

static void start_relay(hx_proc *p, const char *tag, const char *conninfo, const char *slot,
                        const char *const *extra)
{
    char tmpl[200];
    const char *args[40];
    size_t n = 0;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.failover.{aggregate_type}", hx_run_id());
    args[n++] = "run";
    args[n++] = "-d";
    args[n++] = conninfo;
    args[n++] = "-b";
    args[n++] = broker.bootstraps;
    args[n++] = "--slot";
    args[n++] = slot;
    args[n++] = "--topic";
    args[n++] = tmpl;
    args[n++] = "--status-interval";
    args[n++] = "0.2";
    for (; extra && *extra; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    assert_int_equal(hx_relay_start(p, tag, args), 0);
}

static bool slot_active(PGconn *c, const char *slot)
{
    char buf[16] = "";
    return hx_query1(c, buf, sizeof(buf),
                     "SELECT active FROM pg_replication_slots WHERE slot_name = '%s'", slot) == 1 &&
           strcmp(buf, "t") == 0;
}

static void test_failover_keeps_slot(void **state)
{
    (void)state;
    const char *pgv = getenv("OBX_PGVERSION");
    const char *slot = "fo_slot";
    char multi[512], statefile[600], topic[200], buf[64];
    hx_proc relay;
    writer w = {0};
    hx_records recs = {0};

    if (!pgv || atoi(pgv) < 17)
        skip(); /* failover slots: PostgreSQL 17+ */
    assert_int_equal(hx_pg_start(&primary, "primary", NULL, true), 0);
    conn = hx_connect(primary.conninfo);
    assert_non_null(conn);
    assert_int_equal(hx_exec(conn, "CREATE TABLE ledger (n bigint PRIMARY KEY)"), 0);
    assert_int_equal(hx_pg_standby(&standby, &primary, "standby"), 0);
    PQfinish(conn);
    conn = hx_connect(primary.conninfo);
    assert_non_null(conn);

    snprintf(multi, sizeof(multi),
             "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres "
             "target_session_attrs=read-write connect_timeout=2",
             primary.port, standby.port);
    snprintf(statefile, sizeof(statefile), "%s/failover.state", hx_tmpdir());
    snprintf(topic, sizeof(topic), "itest.%s.failover.fo", hx_run_id());
    const char *extra[] = {"--create-slot", "--state-file", statefile, NULL};
    start_relay(&relay, "failover", multi, slot, extra);
    for (int64_t until = hx_now_ms() + 30000; !slot_active(conn, slot); hx_sleep_ms(50)) {
        assert_true(hx_now_ms() < until);
        assert_true(hx_proc_running(&relay));
    }
    assert_int_equal(hx_query1(conn, buf, sizeof(buf),
                               "SELECT failover FROM pg_replication_slots WHERE slot_name = '%s'",
                               slot),
                     1);
    assert_string_equal(buf, "t"); /* --create-slot made a failover slot */

    snprintf(w.conninfo, sizeof(w.conninfo), "%s", multi);
    assert_int_equal(pthread_create(&w.thread, NULL, write_loop, &w), 0);
    hx_sleep_ms(2000);
    /* the standby holds the synchronized slot, confirmed recently */
    PGconn *sc = hx_connect(standby.conninfo);
    assert_non_null(sc);
    uint64_t pc = 0, sconf = 0;
    for (int64_t until = hx_now_ms() + 60000;; hx_sleep_ms(200)) {
        assert_int_equal(hx_slot_confirmed(conn, slot, &pc), 1);
        if (hx_query1(sc, buf, sizeof(buf),
                      "SELECT synced FROM pg_replication_slots WHERE slot_name = '%s'",
                      slot) == 1 &&
            strcmp(buf, "t") == 0 && hx_slot_confirmed(sc, slot, &sconf) == 1 && sconf > 0)
            break;
        assert_true(hx_now_ms() < until);
    }
    PQfinish(sc);
    long before_kill = w.committed;

    /* the primary dies; the standby is promoted */
    PQfinish(conn);
    conn = NULL;
    int64_t t_kill = hx_now_ms();
    assert_int_equal(hx_pg_kill9(&primary), 0);
    hx_sleep_ms(500);
    int64_t t_promote = hx_now_ms();
    assert_int_equal(hx_pg_ctl(&standby, "promote"), 0);
    int64_t t_promoted = hx_now_ms();
    conn = hx_connect(standby.conninfo);
    assert_non_null(conn);
    /* takeover: from the promotion to the relay streaming the slot there */
    int64_t t_active = 0;
    for (int64_t until = t_promoted + 60000; hx_now_ms() < until; hx_sleep_ms(20))
        if (slot_active(conn, slot)) {
            t_active = hx_now_ms();
            break;
        }
    if (!t_active) {
        hx_proc_dump(&relay, "never streamed from the promoted standby");
        fail();
    }
    long at_promotion = w.committed;
    for (int64_t until = hx_now_ms() + 30000; w.committed < at_promotion + 200; hx_sleep_ms(50))
        assert_true(hx_now_ms() < until);
    w.stop = 1;
    pthread_join(w.thread, NULL);

    uint64_t end;
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    int64_t t_end0 = hx_now_ms();
    if (!wait_confirmed(conn, slot, end, 60000)) {
        hx_proc_dump(&relay, "not confirmed on the new primary");
        fail();
    }
    print_message("PostgreSQL %s: killed at +0, promote %" PRId64 " ms, promoted %" PRId64
                  " ms, relay streaming on the new primary %" PRId64
                  " ms after promotion; confirmed the last commit %" PRId64 " ms after it\n",
                  pgv, t_promote - t_kill, t_promoted - t_kill, t_active - t_promoted,
                  hx_now_ms() - t_end0);
    assert_true(hx_proc_running(&relay));
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);

    /* the ledger of the new primary against what a consumer reads */
    PGresult *res = PQexec(conn, "SELECT n FROM ledger ORDER BY n");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    long maxn = w.next;
    char *in_ledger = calloc((size_t)maxn + 1, 1), *seen = calloc((size_t)maxn + 1, 1);
    assert_non_null(in_ledger);
    assert_non_null(seen);
    long ledger = PQntuples(res);
    for (long i = 0; i < ledger; i++)
        in_ledger[atol(PQgetvalue(res, (int)i, 0))] = 1;
    PQclear(res);
    const char *topics[] = {topic};
    assert_true(hx_consume(broker.bootstraps, topics, 1, (size_t)ledger, 60000, &recs) >= ledger);
    long lost = 0, phantom = 0, dups = 0, disorder = 0, last[AGGREGATES];
    for (int a = 0; a < AGGREGATES; a++)
        last[a] = -1;
    for (size_t i = 0; i < recs.n; i++) {
        json_error_t jerr;
        json_t *v = json_loadb(recs.v[i].value, recs.v[i].value_len, 0, &jerr);
        assert_non_null(v);
        long n = (long)json_integer_value(json_object_get(json_object_get(v, "payload"), "n"));
        json_decref(v);
        assert_true(n >= 0 && n < maxn);
        if (!in_ledger[n]) {
            if (phantom++ < 5)
                print_error("event %ld is not in the new primary's ledger\n", n);
            continue;
        }
        if (seen[n]) {
            dups++;
            continue;
        }
        seen[n] = 1;
        int a = (int)(n % AGGREGATES);
        if (n < last[a] && disorder++ < 5)
            print_error("aggregate %d: %ld after %ld\n", a, n, last[a]);
        last[a] = n;
    }
    for (long n = 0; n < maxn; n++)
        if (in_ledger[n] && !seen[n] && lost++ < 5)
            print_error("ledger row %ld never arrived\n", n);
    print_message("failover: %ld committed before the kill, %ld in the new primary's ledger, "
                  "%ld writer errors; lost %ld, phantom %ld, duplicates %ld, order %ld\n",
                  before_kill, ledger, w.errors, lost, phantom, dups, disorder);
    assert_int_equal(lost, 0);
    assert_int_equal(phantom, 0);
    assert_int_equal(disorder, 0);
    free(in_ledger);
    free(seen);
    hx_records_free(&recs);

    /* the state file now names the new timeline */
    char sbuf[256] = "";
    FILE *f = fopen(statefile, "r");
    assert_non_null(f);
    assert_non_null(fgets(sbuf, sizeof(sbuf), f));
    fclose(f);
    assert_non_null(strstr(sbuf, "timeline=2"));

    /* On this promoted server (timeline 2) a slot that is missing is not
     * created without --allow-new-slot, even with no state file. */
    hx_proc again;
    const char *fresh[] = {"--create-slot", NULL};
    start_relay(&again, "fresh-on-promoted", standby.conninfo, "fo_other", fresh);
    assert_int_equal(hx_proc_wait(&again, 30000), 1);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf),
                               "SELECT count(*) FROM pg_replication_slots WHERE slot_name = "
                               "'fo_other'"),
                     1);
    assert_string_equal(buf, "0");
    PQfinish(conn);
    conn = NULL;
    hx_pg_stop(&standby);
    hx_pg_stop(&primary);
}

static void test_lost_slot_refused(void **state)
{
    (void)state;
    const char *slot = "lost_slot";
    char statefile[600], buf[64];
    hx_proc a, b, c, d;
    uint64_t end;

    assert_int_equal(hx_pg_start(&primary, "single", NULL, true), 0);
    conn = hx_connect(primary.conninfo);
    assert_non_null(conn);
    snprintf(statefile, sizeof(statefile), "%s/lost.state", hx_tmpdir());
    const char *extra[] = {"--create-slot", "--state-file", statefile, NULL};

    /* streams, and remembers the slot */
    start_relay(&a, "lost-a", primary.conninfo, slot, extra);
    for (int64_t until = hx_now_ms() + 30000; !slot_active(conn, slot); hx_sleep_ms(50))
        assert_true(hx_now_ms() < until && hx_proc_running(&a));
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type)"
                                   " VALUES ('lost', '1', 'T')"),
                     0);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    assert_true(wait_confirmed(conn, slot, end, 30000));

    /* dropped under the running relay: it stops (1), nothing recreated */
    assert_int_equal(hx_exec(conn,
                             "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                             " WHERE slot_name = '%s';",
                             slot),
                     0);
    for (int64_t until = hx_now_ms() + 10000;; hx_sleep_ms(20)) {
        PGresult *res = PQexec(conn, "SELECT pg_drop_replication_slot('lost_slot')");
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
        PQclear(res);
        if (ok)
            break;
        assert_true(hx_now_ms() < until);
    }
    assert_int_equal(hx_proc_wait(&a, 30000), 1);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf),
                               "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'",
                               slot),
                     1);
    assert_string_equal(buf, "0");

    /* a new process: the state file remembers; still refused */
    start_relay(&b, "lost-b", primary.conninfo, slot, extra);
    assert_int_equal(hx_proc_wait(&b, 30000), 1);
    char *log = hx_proc_stderr(&b);
    assert_non_null(strstr(log, "--allow-new-slot"));
    free(log);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf),
                               "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'",
                               slot),
                     1);
    assert_string_equal(buf, "0");

    /* without --create-slot: also exit 1 with the recovery steps */
    const char *nocreate[] = {"--state-file", statefile, NULL};
    start_relay(&c, "lost-c", primary.conninfo, slot, nocreate);
    assert_int_equal(hx_proc_wait(&c, 30000), 1);

    /* the operator's explicit fresh start */
    const char *allow[] = {"--create-slot", "--allow-new-slot", "--state-file", statefile, NULL};
    start_relay(&d, "lost-d", primary.conninfo, slot, allow);
    for (int64_t until = hx_now_ms() + 30000; !slot_active(conn, slot); hx_sleep_ms(50))
        assert_true(hx_now_ms() < until && hx_proc_running(&d));
    assert_int_equal(hx_proc_signal(&d, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&d, 30000), 0);
    PQfinish(conn);
    conn = NULL;
    hx_pg_stop(&primary);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failover_keeps_slot),
        cmocka_unit_test(test_lost_slot_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
