/*
 * Recovery: the relay rides out faults without exiting and without skipping.
 *  - the replication connection is cut (pg_terminate_backend) and the
 *    server restarts mid-stream: the relay reconnects with backoff and every
 *    committed row arrives;
 *  - every broker is down long enough for message.timeout.ms to pass: the
 *    deliveries fail for good, the watermark never passes them, the relay
 *    rewinds (new producer, stream from the confirmed position) and, once
 *    the brokers are back, every row arrives.
 * Assertions are on what a consumer reads and on confirmed_flush_lsn.
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
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/harness/harness.h"

static hx_pg pg;
static hx_broker broker;
static PGconn *conn;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0 || hx_pg_start(&pg, "recovery", NULL, true) != 0 ||
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

/* hx_insert_rows, which must succeed. */
static void insert_rows_ok(const char *agg_type, int from, int to, int tx_size)
{
    assert_int_equal(hx_insert_rows(conn, agg_type, from, to, tx_size), 0);
}

static void topic_for(const char *agg_type, char *buf, size_t len)
{
    snprintf(buf, len, "itest.%s.recovery.%s", hx_run_id(), agg_type);
}

/* Every n in [0, count) read at least once from topic; returns duplicates
 * and, in *min_commit, the lowest source.commit_lsn read. */
static size_t expect_all(const char *topic, int count, uint64_t *min_commit)
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
        uint64_t commit = 0;
        assert_int_equal(hx_lsn_parse(json_string_value(json_object_get(
                                          json_object_get(v, "source"), "commit_lsn")),
                                      &commit),
                         0);
        if (i == 0 || commit < *min_commit)
            *min_commit = commit;
        if (seen[n])
            dups++;
        seen[n] = 1;
        json_decref(v);
    }
    for (int n = 0; n < count; n++)
        if (!seen[n]) {
            if (missing++ < 5)
                print_error("row %d of %s never arrived\n", n, topic);
        }
    assert_int_equal(missing, 0);
    free(seen);
    hx_records_free(&recs);
    return dups;
}

static void start_relay(hx_proc *p, const char *tag, const char *slot, const char *const *extra)
{
    char tmpl[200];
    const char *args[40];
    size_t n = 0;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.recovery.{aggregate_type}", hx_run_id());
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
    args[n++] = "--status-interval";
    args[n++] = "0.2";
    for (; extra && *extra; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    assert_int_equal(hx_relay_start(p, tag, args), 0);
}

/* Active and streamed by p: a slot is active while --create-slot makes it
 * too, and cutting that connection tests a failed start, not a reconnect. */
static void wait_slot_active(const char *slot, hx_proc *p)
{
    char buf[16] = "";
    int64_t deadline = hx_now_ms() + 30000;
    while (hx_now_ms() < deadline) {
        if (hx_query1(conn, buf, sizeof(buf),
                      "SELECT active FROM pg_replication_slots WHERE slot_name = '%s'",
                      slot) == 1 &&
            strcmp(buf, "t") == 0) {
            char *log = hx_proc_stderr(p);
            bool streaming = log && strstr(log, "streaming slot");
            free(log);
            if (streaming)
                return;
        }
        if (!hx_proc_running(p)) {
            hx_proc_dump(p, "relay exited early");
            fail_msg("relay exited before streaming");
        }
        hx_sleep_ms(50);
    }
    hx_proc_dump(p, "slot never active");
    fail_msg("slot %s never became active", slot);
}

static void restart_server(void)
{
    assert_int_equal(hx_pg_ctl(&pg, "-m fast restart"), 0);
}

static void test_connection_loss_and_server_restart(void **state)
{
    (void)state;
    const char *slot = "rec_conn", *agg = "conn";
    char topic[200], buf[32];
    hx_proc relay;
    uint64_t end;
    int total = 0;

    topic_for(agg, topic, sizeof(topic));
    conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    start_relay(&relay, "conn", slot, NULL);
    wait_slot_active(slot, &relay);

    /* Cut the replication connection three times while rows keep coming. */
    for (int round = 0; round < 3; round++) {
        insert_rows_ok(agg, total, total + 100, 10);
        total += 100;
        wait_slot_active(slot, &relay);
        assert_int_equal(hx_query1(conn, buf, sizeof(buf),
                                   "SELECT count(pg_terminate_backend(active_pid)) FROM "
                                   "pg_replication_slots WHERE slot_name = '%s' AND active",
                                   slot),
                         1);
        assert_string_equal(buf, "1"); /* the walsender was really cut */
        insert_rows_ok(agg, total, total + 100, 25);
        total += 100;
        assert_true(hx_proc_running(&relay));
    }
    /* And a full server restart while streaming. */
    wait_slot_active(slot, &relay);
    PQfinish(conn);
    restart_server();
    conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    insert_rows_ok(agg, total, total + 200, 50);
    total += 200;
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);

    if (!hx_wait_confirmed(conn, slot, end, 90000)) {
        hx_proc_dump(&relay, "not confirmed after reconnects");
        fail();
    }
    assert_true(hx_proc_running(&relay));
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
    uint64_t min_commit;
    size_t dups = expect_all(topic, total, &min_commit);
    print_message("connection loss: %d rows, %zu duplicates\n", total, dups);
    PQfinish(conn);
    conn = NULL;
}

static void test_failed_delivery_rewinds_never_skips(void **state)
{
    (void)state;
    const char *slot = "rec_timeout", *agg = "timeout";
    const char *extra[] = {"-X", "message.timeout.ms=1500", "-X", "reconnect.backoff.max.ms=200",
                           NULL};
    char topic[200];
    hx_proc relay;
    uint64_t before, end, c, max_confirmed_down = 0, min_commit = 0;
    int total = 60;

    if (hx_broker_is_external())
        skip();
    topic_for(agg, topic, sizeof(topic));
    conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    start_relay(&relay, "timeout", slot, extra);
    wait_slot_active(slot, &relay);
    assert_int_equal(hx_current_lsn(conn, true, &before), 0);
    assert_true(hx_wait_confirmed(conn, slot, before, 30000));

    assert_int_equal(hx_broker_cmd(&broker, "down all"), 0);
    insert_rows_ok(agg, 0, total, 6);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    /* Several message timeouts (and rewinds) pass while the highest
     * confirmed position is sampled; it is checked against the rows' real
     * commit positions once they have been read. */
    for (int64_t until = hx_now_ms() + 6000; hx_now_ms() < until; hx_sleep_ms(200)) {
        assert_int_equal(hx_slot_confirmed(conn, slot, &c), 1);
        if (c > max_confirmed_down)
            max_confirmed_down = c;
        assert_true(hx_proc_running(&relay));
    }
    assert_int_equal(hx_broker_cmd(&broker, "up all"), 0);
    if (!hx_wait_confirmed(conn, slot, end, 60000)) {
        hx_proc_dump(&relay, "not confirmed after brokers returned");
        fail();
    }
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
    size_t dups = expect_all(topic, total, &min_commit);
    /* PostgreSQL skips a transaction whose commit record starts before the
     * confirmed position: confirming past it would have lost it. */
    if (max_confirmed_down > min_commit) {
        char b1[32], b2[32];
        fail_msg("confirmed %s while brokers were down, past the commit at %s",
                 hx_lsn_format(max_confirmed_down, b1, sizeof(b1)),
                 hx_lsn_format(min_commit, b2, sizeof(b2)));
    }
    print_message("failed deliveries: %d rows, %zu duplicates\n", total, dups);
    PQfinish(conn);
    conn = NULL;
}

/*
 * An idle outbox on a busy database must not pin WAL: after the last
 * outbox row, writes to a table outside the publication go on; the slot's
 * confirmed position must follow the server's WAL, not stay at the last
 * outbox commit.
 */
static void test_idle_outbox_does_not_pin_wal(void **state)
{
    (void)state;
    const char *slot = "rec_idle", *agg = "idle";
    char topic[200];
    hx_proc relay;
    uint64_t end, min_commit;

    topic_for(agg, topic, sizeof(topic));
    conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    assert_int_equal(hx_exec(conn, "CREATE TABLE IF NOT EXISTS busy (n int, note text)"), 0);
    start_relay(&relay, "idle", slot, NULL);
    wait_slot_active(slot, &relay);
    insert_rows_ok(agg, 0, 19, 5);
    for (int i = 0; i < 200; i++)
        assert_int_equal(hx_exec(conn, "INSERT INTO busy VALUES (%d, repeat('x', 200))", i), 0);
    /* Last, an outbox row with a busy-table write right behind it, with the
     * brokers down for a moment so the event is still in flight when the
     * server's keepalive for the write arrives.  The position must still be
     * confirmed after the acknowledgement.  Caveat: this did not fail with
     * a relay that dropped such keepalives (the server sent another one
     * later in those runs); test_watermark's test_keepalive pins the rule
     * itself. */
    bool paused = !hx_broker_is_external() && hx_broker_cmd(&broker, "down all") == 0;
    assert_int_equal(hx_exec(conn,
                             "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                             " VALUES ('%s', 'agg-0', 'Tested', '{\"n\": 19}');"
                             " INSERT INTO busy VALUES (-1, 'after')",
                             agg),
                     0);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    if (paused) {
        hx_sleep_ms(1500);
        assert_int_equal(hx_broker_cmd(&broker, "up all"), 0);
    }
    /* Normally within a second; well under the 15 s after which the
     * server's background writer logs a snapshot, whose keepalive would
     * hide a relay that drops positions. */
    if (!hx_wait_confirmed(conn, slot, end, 8000)) {
        hx_proc_dump(&relay, "slot pinned behind the server's WAL");
        fail();
    }
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
    assert_int_equal(expect_all(topic, 20, &min_commit), 0);
    PQfinish(conn);
    conn = NULL;
}

/*
 * A second relay on the same slot stands by (keeps running, does not take
 * the slot) and takes over when the first dies, with nothing lost.
 */
static void test_hot_standby_takes_over(void **state)
{
    (void)state;
    const char *slot = "rec_standby", *agg = "standby";
    char topic[200], pid_a[32] = "", pid_now[32] = "";
    hx_proc a, b;
    uint64_t end, min_commit;

    topic_for(agg, topic, sizeof(topic));
    conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    start_relay(&a, "standby-a", slot, NULL);
    wait_slot_active(slot, &a);
    assert_int_equal(hx_query1(conn, pid_a, sizeof(pid_a),
                               "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'",
                               slot),
                     1);
    start_relay(&b, "standby-b", slot, NULL);
    insert_rows_ok(agg, 0, 50, 5);
    hx_sleep_ms(1500);
    /* b waits: still running, and the slot still belongs to a's walsender */
    assert_true(hx_proc_running(&b));
    assert_int_equal(hx_query1(conn, pid_now, sizeof(pid_now),
                               "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'",
                               slot),
                     1);
    assert_string_equal(pid_now, pid_a);

    assert_int_equal(hx_proc_signal(&a, SIGKILL), 0);
    hx_proc_wait(&a, 10000);
    insert_rows_ok(agg, 50, 100, 5);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    if (!hx_wait_confirmed(conn, slot, end, 60000)) {
        hx_proc_dump(&b, "standby did not take over");
        fail();
    }
    assert_int_equal(hx_proc_signal(&b, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&b, 30000), 0);
    size_t dups = expect_all(topic, 100, &min_commit);
    print_message("standby: 100 rows, %zu duplicates\n", dups);
    PQfinish(conn);
    conn = NULL;
}

/*
 * --start-lsn skips ahead, and keeps doing so across rewinds: rows
 * committed before it never appear, even after the relay restarted its
 * stream from the slot (whose confirmed position is still before it).
 */
static void test_start_lsn_survives_rewinds(void **state)
{
    (void)state;
    const char *slot = "rec_skip", *agg = "skip";
    char topic[200], lsnbuf[32];
    hx_proc relay;
    uint64_t start, end, min_commit;
    hx_records recs = {0};

    if (hx_broker_is_external())
        skip();
    topic_for(agg, topic, sizeof(topic));
    conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot), 0);
    insert_rows_ok(agg, 1000, 1010, 5); /* before --start-lsn: never published */
    assert_int_equal(hx_current_lsn(conn, true, &start), 0);
    hx_lsn_format(start, lsnbuf, sizeof(lsnbuf));
    insert_rows_ok(agg, 0, 10, 5);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);

    assert_int_equal(hx_broker_cmd(&broker, "down all"), 0);
    const char *extra[] = {"--start-lsn", lsnbuf,
                           "-X",          "message.timeout.ms=1000",
                           "-X",          "reconnect.backoff.max.ms=200",
                           NULL};
    start_relay(&relay, "skip", slot, extra);
    hx_sleep_ms(4000); /* a few message timeouts, each a rewind */
    assert_true(hx_proc_running(&relay));
    assert_int_equal(hx_broker_cmd(&broker, "up all"), 0);
    if (!hx_wait_confirmed(conn, slot, end, 60000)) {
        hx_proc_dump(&relay, "not confirmed after rewinds with --start-lsn");
        fail();
    }
    /* The slot is now past --start-lsn: another rewind must restart from
     * the slot, not refuse the (first-start-only) --start-lsn. */
    assert_int_equal(hx_broker_cmd(&broker, "down all"), 0);
    insert_rows_ok(agg, 10, 11, 1);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    hx_sleep_ms(3000);
    assert_true(hx_proc_running(&relay));
    assert_int_equal(hx_broker_cmd(&broker, "up all"), 0);
    if (!hx_wait_confirmed(conn, slot, end, 60000)) {
        hx_proc_dump(&relay, "not confirmed after a rewind past --start-lsn");
        fail();
    }
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
    (void)expect_all(topic, 11, &min_commit); /* 0..10 arrived; n >= 11 would fail it */
    assert_true(min_commit >= start);
    const char *topics[] = {topic};
    assert_true(hx_consume(broker.bootstraps, topics, 1, 11, 3000, &recs) >= 11);
    for (size_t i = 0; i < recs.n; i++)
        assert_null(strstr(recs.v[i].value, "\"n\": 100"));
    hx_records_free(&recs);
    PQfinish(conn);
    conn = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_loss_and_server_restart),
        cmocka_unit_test(test_failed_delivery_rewinds_never_skips),
        cmocka_unit_test(test_idle_outbox_does_not_pin_wal),
        cmocka_unit_test(test_hot_standby_takes_over),
        cmocka_unit_test(test_start_lsn_survives_rewinds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
