/*
 * A slot the server invalidated (max_slot_wal_keep_size) is told apart from
 * other START_REPLICATION failures by the server's SQLSTATE and the slot's
 * wal_status, never by the text of the message: the server here speaks
 * German (lc_messages = de_DE.UTF-8, a locale built with localedef into a
 * private LOCPATH), and the replication connection (cdc/stream.h) must
 * still say STREAM_LOST with the recovery steps.  Matching the English
 * "can no longer get changes" took this for a transient failure to retry.
 * When no German locale can be built the server speaks English and the
 * test still checks the SQLSTATE path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cdc/config.h"
#include "cdc/stream.h"
#include "tests/harness/harness.h"

static hx_pg pg;
static PGconn *conn;
static bool german;

/* de_DE.UTF-8 into a private locale directory the server will read. */
static bool build_german_locale(void)
{
    char dir[600], cmd[1400];

    snprintf(dir, sizeof(dir), "%s/locale", hx_tmpdir());
    snprintf(cmd, sizeof(cmd),
             "mkdir -p '%s' && localedef -i de_DE -f UTF-8 '%s/de_DE.UTF-8' >/dev/null 2>&1", dir,
             dir);
    if (system(cmd) != 0)
        return false;
    return setenv("LOCPATH", dir, 1) == 0;
}

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0)
        return -1;
    german = build_german_locale();
    if (hx_pg_start(&pg, "slotlost",
                    german ? "max_slot_wal_keep_size = 1MB\nlc_messages = 'de_DE.UTF-8'"
                           : "max_slot_wal_keep_size = 1MB",
                    true) != 0)
        return -1;
    conn = hx_connect(pg.conninfo);
    return conn ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(conn);
    conn = NULL;
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

static void test_lost_slot_in_any_language(void **state)
{
    (void)state;
    config cfg = {.conninfo = pg.conninfo, .publication = "lost_pub", .slot = "lost_slot"};
    stream_info info;
    char status[32] = "", err[1024];
    stream *st;

    assert_int_equal(hx_exec(conn, "CREATE PUBLICATION lost_pub FOR TABLE outbox"), 0);
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('lost_slot', 'pgoutput')"), 0);
    /* WAL the slot would need, then a checkpoint that removes it */
    assert_int_equal(hx_exec(conn, "CREATE TABLE filler (x text)"), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(hx_exec(conn, "INSERT INTO filler SELECT repeat('x', 1000) FROM "
                                       "generate_series(1, 20000); SELECT pg_switch_wal()"),
                         0);
    assert_int_equal(hx_exec(conn, "CHECKPOINT"), 0);
    assert_int_equal(hx_query1(conn, status, sizeof(status),
                               "SELECT wal_status FROM pg_replication_slots WHERE slot_name = "
                               "'lost_slot'"),
                     1);
    assert_string_equal(status, "lost");

    st = stream_new(&cfg);
    assert_non_null(st);
    assert_int_equal(stream_connect(st, "itest-slotlost", &info, err, sizeof(err)), STREAM_OK);
    assert_int_equal(stream_replicate(st, "lost_slot", 0, &info, err, sizeof(err)), STREAM_LOST);
    fprintf(stderr, "server said: %s\n", err);
    assert_non_null(strstr(err, "--create-slot"));
    if (german) /* the server's own words were not English: the test means something */
        assert_null(strstr(err, "can no longer get changes"));
    stream_free(st);

    /* any other refusal stays a transient one: a slot that does not exist */
    st = stream_new(&cfg);
    assert_non_null(st);
    assert_int_equal(stream_connect(st, "itest-slotlost", &info, err, sizeof(err)), STREAM_OK);
    assert_int_not_equal(stream_replicate(st, "no_such_slot", 0, &info, err, sizeof(err)),
                         STREAM_LOST);
    stream_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lost_slot_in_any_language),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
