/*
 * A database shutdown never waits on the relay.  A server that is asked to
 * stop waits until its walsenders' clients have confirmed everything they
 * were sent; with the brokers down the relay cannot confirm, and before the
 * fix `pg_ctl stop -m fast` hung until the relay was stopped (while the two
 * exchanged thousands of keepalives a second).
 *
 *  - brokers down, events in flight: a fast and then a smart restart of the
 *    server each complete within a few seconds; when the brokers return
 *    every row is read back and the slot is confirmed past them;
 *  - the same while the relay has stopped reading (backpressure).
 *
 * Runs on every server version of the matrix (OBX_PGVERSION).
 */
#include <inttypes.h>
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

/* "Within a few seconds": the relay notices a waiting server within about
 * half a second, a paused one after 3 s without acknowledgements. */
#define STOP_LIMIT_MS 5000
#define PAUSED_STOP_LIMIT_MS 8000

static hx_pg pg;
static hx_broker broker;
static PGconn *conn;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0 || hx_pg_start(&pg, "shutdown", NULL, true) != 0 ||
        hx_broker_start(&broker, 1) != 0)
        return -1;
    print_message("server %d\n", hx_pg_version(&pg));
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

static void reconnect_sql(void)
{
    PQfinish(conn);
    conn = NULL;
    for (int64_t until = hx_now_ms() + 30000; !conn && hx_now_ms() < until; hx_sleep_ms(100)) {
        conn = PQconnectdb(pg.conninfo);
        if (PQstatus(conn) != CONNECTION_OK) {
            PQfinish(conn);
            conn = NULL;
        }
    }
    assert_non_null(conn);
}

/* hx_insert_rows, which must succeed. */
static void insert_rows_ok(const char *agg_type, int from, int to, int tx_size)
{
    assert_int_equal(hx_insert_rows(conn, agg_type, from, to, tx_size), 0);
}

static void topic_for(const char *agg_type, char *buf, size_t len)
{
    snprintf(buf, len, "itest.%s.shutdown.%s", hx_run_id(), agg_type);
}

/* Wait until the relay has reported receiving up to lsn (its write
 * position), so the events are really in flight when the server stops. */
static void wait_received(const char *slot, uint64_t lsn, hx_proc *relay)
{
    char buf[64];
    uint64_t w = 0;
    for (int64_t until = hx_now_ms() + 30000; hx_now_ms() < until; hx_sleep_ms(50)) {
        if (hx_query1(conn, buf, sizeof(buf),
                      "SELECT r.write_lsn FROM pg_stat_replication r JOIN pg_replication_slots s"
                      " ON s.active_pid = r.pid WHERE s.slot_name = '%s'",
                      slot) == 1 &&
            buf[0] && hx_lsn_parse(buf, &w) == 0 && w >= lsn)
            return;
        assert_true(hx_proc_running(relay));
    }
    hx_proc_dump(relay, "rows never received");
    fail_msg("the relay never reported receiving the rows");
}

static void wait_slot_active(const char *slot, hx_proc *p)
{
    char buf[16] = "";
    for (int64_t until = hx_now_ms() + 30000; hx_now_ms() < until; hx_sleep_ms(50)) {
        if (hx_query1(conn, buf, sizeof(buf),
                      "SELECT active FROM pg_replication_slots WHERE slot_name = '%s'",
                      slot) == 1 &&
            strcmp(buf, "t") == 0)
            return;
        if (!hx_proc_running(p)) {
            hx_proc_dump(p, "relay exited early");
            fail_msg("relay exited before streaming");
        }
    }
    hx_proc_dump(p, "slot never active");
    fail_msg("slot %s never became active", slot);
}

static void start_relay(hx_proc *p, const char *tag, const char *slot, const char *const *extra)
{
    char tmpl[200];
    const char *args[40];
    size_t n = 0;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.shutdown.{aggregate_type}", hx_run_id());
    args[n++] = "run";
    args[n++] = "-d";
    args[n++] = pg.conninfo;
    args[n++] = "-b";
    args[n++] = broker.bootstraps;
    args[n++] = "--slot";
    args[n++] = slot;
    args[n++] = "--create-slot";
    args[n++] = "--topic";
    args[n++] = tmpl;
    /* the brokers stay down longer than librdkafka's default timeout */
    args[n++] = "-X";
    args[n++] = "message.timeout.ms=0";
    args[n++] = "-X";
    args[n++] = "reconnect.backoff.max.ms=200";
    for (; extra && *extra; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    assert_int_equal(hx_relay_start(p, tag, args), 0);
}

/* Every n in [0, count) read at least once; returns the duplicates. */
static size_t expect_all(const char *topic, int count)
{
    hx_records recs = {0};
    const char *topics[] = {topic};
    char *seen = calloc((size_t)count, 1);
    size_t dups = 0;
    int missing = 0;

    assert_non_null(seen);
    assert_true(hx_consume(broker.bootstraps, topics, 1, (size_t)count, 60000, &recs) >= count);
    for (size_t i = 0; i < recs.n; i++) {
        json_error_t jerr;
        json_t *v = json_loadb(recs.v[i].value, recs.v[i].value_len, 0, &jerr);
        assert_non_null(v);
        json_int_t n = json_integer_value(json_object_get(json_object_get(v, "payload"), "n"));
        assert_true(n >= 0 && n < count);
        if (seen[n])
            dups++;
        seen[n] = 1;
        json_decref(v);
    }
    for (int n = 0; n < count; n++)
        if (!seen[n] && missing++ < 5)
            print_error("row %d of %s never arrived\n", n, topic);
    assert_int_equal(missing, 0);
    free(seen);
    hx_records_free(&recs);
    return dups;
}

/* Stop the server with mode (and start it again), timing the stop. */
static int64_t timed_restart(const char *mode)
{
    char action[64];
    int64_t t0, took;

    PQfinish(conn); /* a smart shutdown waits for ordinary sessions */
    conn = NULL;
    snprintf(action, sizeof(action), "-m %s stop", mode);
    t0 = hx_now_ms();
    assert_int_equal(hx_pg_ctl(&pg, action), 0);
    took = hx_now_ms() - t0;
    assert_int_equal(hx_pg_ctl(&pg, "start"), 0);
    reconnect_sql();
    return took;
}

static void test_restarts_with_brokers_down(void **state)
{
    (void)state;
    const char *slot = "shut_down", *agg = "down";
    char topic[200];
    hx_proc relay;
    uint64_t end;
    int total = 0;

    if (hx_broker_is_external())
        skip();
    topic_for(agg, topic, sizeof(topic));
    reconnect_sql();
    start_relay(&relay, "down", slot, NULL);
    wait_slot_active(slot, &relay);
    insert_rows_ok(agg, total, total + 10, 5);
    total += 10;
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    assert_true(hx_wait_confirmed(conn, slot, end, 30000));

    assert_int_equal(hx_broker_cmd(&broker, "down all"), 0);
    static const char *const modes[] = {"fast", "smart"};
    for (size_t m = 0; m < 2; m++) {
        insert_rows_ok(agg, total, total + 30, 10);
        total += 30;
        assert_int_equal(hx_current_lsn(conn, true, &end), 0);
        wait_slot_active(slot, &relay);
        wait_received(slot, end, &relay);
        int64_t took = timed_restart(modes[m]);
        print_message("%s stop with brokers down and events in flight: %" PRId64 " ms\n", modes[m],
                      took);
        if (took > STOP_LIMIT_MS) {
            hx_proc_dump(&relay, "shutdown waited on the relay");
            fail_msg("%s stop took %" PRId64 " ms", modes[m], took);
        }
        assert_true(hx_proc_running(&relay));
    }
    /* Nothing lost: once the brokers are back, every row arrives and the
     * slot is confirmed past the last one. */
    assert_int_equal(hx_broker_cmd(&broker, "up all"), 0);
    if (!hx_wait_confirmed(conn, slot, end, 60000)) {
        hx_proc_dump(&relay, "not confirmed after the brokers returned");
        fail();
    }
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
    size_t dups = expect_all(topic, total);
    print_message("restarts with brokers down: %d rows, %zu duplicates\n", total, dups);
}

static void test_restart_while_reading_paused(void **state)
{
    (void)state;
    const char *slot = "shut_paused", *agg = "paused";
    const char *extra[] = {"--max-inflight", "5", NULL};
    char topic[200];
    hx_proc relay;
    uint64_t end;
    int total = 60;

    if (hx_broker_is_external())
        skip();
    topic_for(agg, topic, sizeof(topic));
    reconnect_sql();
    start_relay(&relay, "paused", slot, extra);
    wait_slot_active(slot, &relay);
    assert_int_equal(hx_broker_cmd(&broker, "down all"), 0);
    /* single-row transactions: the relay stops reading after 5 */
    insert_rows_ok(agg, 0, total, 1);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    hx_sleep_ms(500);
    int64_t took = timed_restart("fast");
    print_message("fast stop while the relay's reading is paused: %" PRId64 " ms\n", took);
    if (took > PAUSED_STOP_LIMIT_MS) {
        hx_proc_dump(&relay, "shutdown waited on the paused relay");
        fail_msg("fast stop took %" PRId64 " ms", took);
    }
    assert_true(hx_proc_running(&relay));
    assert_int_equal(hx_broker_cmd(&broker, "up all"), 0);
    if (!hx_wait_confirmed(conn, slot, end, 60000)) {
        hx_proc_dump(&relay, "not confirmed after the brokers returned");
        fail();
    }
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
    size_t dups = expect_all(topic, total);
    print_message("restart while paused: %d rows, %zu duplicates\n", total, dups);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restarts_with_brokers_down),
        cmocka_unit_test(test_restart_while_reading_paused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
