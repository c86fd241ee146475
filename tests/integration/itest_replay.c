/*
 * Anchors, status and replay against PostgreSQL 15 and the broker.
 *
 * The sub-commands run in-process in a forked child (admin_main and
 * replay_main from the library), so the test does not depend on how main.c
 * dispatches them; the original stream comes from the relay binary.
 *
 * - anchor create/list/advance/drop: exit codes and what
 *   pg_replication_slots shows; every refusal exits 2 with its message
 * - status: the relay's slot and the anchors, text and JSON
 * - replay refusals: anchor missing, from > to, from and to before the
 *   anchor (the message names the earliest LSN), from past the server
 * - replay between two saved LSNs publishes exactly the records the relay
 *   published for that range (same partition, key, value, order); neither
 *   the anchor nor the relay's slot moves, no slot is left behind; a dry
 *   run counts them and publishes nothing
 * - a record the broker refuses for good is dead-lettered by replay as by
 *   the relay (the dead letter's acknowledgement counts as the record's):
 *   exit 0, the other events of the range published; a dead letter refused
 *   too makes replay exit 1
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
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cdc/admin.h"
#include "cdc/replay.h"
#include "tests/harness/harness.h"

#define CMD_TIMEOUT_S 120

static hx_pg pg;
static hx_broker broker;
static PGconn *conn;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0)
        return -1;
    if (hx_pg_start(&pg, "replay", NULL, true) != 0)
        return -1;
    if (hx_broker_start(&broker, 1) != 0)
        return -1;
    conn = hx_connect(pg.conninfo);
    return conn ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(conn);
    hx_broker_stop(&broker);
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

typedef struct cmd_result {
    int rc;
    char *out;
    char *err;
} cmd_result;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)
        buf[0] = '\0';
    fclose(f);
    return buf;
}

/* Run fn(argc, argv) in a child with stdout and stderr captured. */
static cmd_result run_cmd(int (*fn)(int, char **), const char *tag, const char *const *args)
{
    static int seq;
    char outp[700], errp[700];
    char *argv[64];
    int argc = 0, status = 0;
    cmd_result r = {.rc = -1};
    pid_t pid;

    snprintf(outp, sizeof(outp), "%s/%s-%d.out", hx_tmpdir(), tag, seq);
    snprintf(errp, sizeof(errp), "%s/%s-%d.err", hx_tmpdir(), tag, seq++);
    for (; *args && argc < 63; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0)
            _exit(99);
        dup2(o, 1);
        dup2(e, 2);
        alarm(CMD_TIMEOUT_S);
        int rc = fn(argc, argv);
        fflush(NULL);
        _exit(rc);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp(outp);
    r.err = slurp(errp);
    return r;
}

static void cmd_free(cmd_result *r)
{
    free(r->out);
    free(r->err);
}

#define ADMIN(tag, ...) run_cmd(admin_main, tag, (const char *const[]){__VA_ARGS__, NULL})
#define REPLAY(tag, ...)                                                                           \
    run_cmd(replay_main, tag, (const char *const[]){"replay", __VA_ARGS__, NULL})

/* Expect exit code want and words in stderr (or stdout when rc 0). */
static void expect(cmd_result *r, int want, const char *words)
{
    const char *hay = want == 0 ? r->out : r->err;
    if (r->rc != want || (words && !strstr(hay, words))) {
        fprintf(stderr, "expected exit %d mentioning \"%s\", got %d\nstdout: %s\nstderr: %s\n",
                want, words ? words : "", r->rc, r->out, r->err);
        fail();
    }
    cmd_free(r);
}

static uint64_t lsn_of(const char *sql)
{
    char buf[64];
    uint64_t l = 0;
    assert_int_equal(hx_query1(conn, buf, sizeof(buf), "%s", sql), 1);
    assert_int_equal(hx_lsn_parse(buf, &l), 0);
    return l;
}

static uint64_t confirmed(const char *slot)
{
    uint64_t l = 0;
    assert_int_equal(hx_slot_confirmed(conn, slot, &l), 1);
    return l;
}

static bool slot_exists(const char *slot)
{
    char buf[16];
    return hx_query1(conn, buf, sizeof(buf),
                     "SELECT 1 FROM pg_replication_slots WHERE slot_name = '%s'", slot) == 1;
}

static void insert_rows(const char *aggtype, int n, int per_txn, const char *tag)
{
    for (int i = 0; i < n; i += per_txn)
        assert_int_equal(hx_exec(conn,
                                 "INSERT INTO outbox (id, aggregatetype, aggregateid, type, "
                                 "payload) SELECT gen_random_uuid(), '%s', (g %% 7)::text, "
                                 "'Evt', jsonb_build_object('n', g, 'tag', '%s') FROM "
                                 "generate_series(%d, %d) g",
                                 aggtype, tag, i, (i + per_txn < n ? i + per_txn : n) - 1),
                         0);
}

static void test_anchor_lifecycle(void **state)
{
    (void)state;
    char lsn[32], lsn2[32];
    const char *ci = pg.conninfo;
    cmd_result r;

    assert_int_equal(hx_exec(conn, "SELECT pg_create_logical_replication_slot('lc_main', "
                                   "'pgoutput')"),
                     0);
    expect((r = ADMIN("anchor", "anchor", "create", "lc1", "-d", ci), &r), 0, "created anchor");
    assert_true(slot_exists("outbox_anchor_lc1"));
    char buf[128];
    assert_int_equal(hx_query1(conn, buf, sizeof(buf),
                               "SELECT slot_type || ':' || plugin || ':' || temporary FROM "
                               "pg_replication_slots WHERE slot_name = 'outbox_anchor_lc1'"),
                     1);
    assert_string_equal(buf, "logical:pgoutput:false");
    expect((r = ADMIN("anchor", "anchor", "create", "lc1", "-d", ci), &r), 2, "already exists");

    /* a copy of another slot starts where that slot stands */
    expect((r = ADMIN("anchor", "anchor", "create", "lc2", "--from-slot", "lc_main", "-d", ci), &r),
           0, "a copy of \"lc_main\"");
    assert_int_equal(confirmed("outbox_anchor_lc2"), confirmed("lc_main"));
    expect((r = ADMIN("anchor", "anchor", "create", "lc3", "--from-slot", "nope", "-d", ci), &r), 2,
           "does not exist");
    assert_false(slot_exists("outbox_anchor_lc3"));

    /* list shows anchors only, warns about retention */
    insert_rows("lifecycle", 2000, 500, "lc");
    r = ADMIN("anchor", "anchor", "list", "--warn-bytes", "1k", "-d", ci);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "lc1"));
    assert_non_null(strstr(r.out, "lc2"));
    assert_null(strstr(r.out, "lc_main"));
    assert_non_null(strstr(r.out, "warning: anchor \"lc1\" retains"));
    cmd_free(&r);
    r = ADMIN("anchor", "anchor", "list", "--json", "-d", ci);
    assert_int_equal(r.rc, 0);
    json_error_t je;
    json_t *arr = json_loads(r.out, 0, &je);
    assert_non_null(arr);
    assert_true(json_is_array(arr));
    size_t found = 0, i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        const char *name = json_string_value(json_object_get(o, "name"));
        assert_non_null(name);
        if (strcmp(name, "lc1") == 0 || strcmp(name, "lc2") == 0)
            found++;
        assert_true(json_is_string(json_object_get(o, "restart_lsn")));
        assert_true(json_is_string(json_object_get(o, "confirmed_flush_lsn")));
        assert_true(json_integer_value(json_object_get(o, "retained_wal_bytes")) > 0);
        assert_string_equal(json_string_value(json_object_get(o, "wal_status")), "reserved");
        assert_true(json_is_null(json_object_get(o, "warning"))); /* below the 1G default */
    }
    assert_int_equal(found, 2);
    json_decref(arr);
    cmd_free(&r);

    /* advance: forward only, not past the server */
    uint64_t before = confirmed("outbox_anchor_lc1");
    hx_lsn_format(before - 8, lsn, sizeof(lsn));
    expect((r = ADMIN("anchor", "anchor", "advance", "lc1", lsn, "-d", ci), &r), 2,
           "cannot move back");
    assert_int_equal(confirmed("outbox_anchor_lc1"), before);
    expect((r = ADMIN("anchor", "anchor", "advance", "lc1", "0/0", "-d", ci), &r), 2,
           "cannot move back");
    /* the test cluster runs with synchronous_commit = off: flush first */
    assert_int_equal(hx_exec(conn, "CHECKPOINT"), 0);
    uint64_t target = lsn_of("SELECT pg_current_wal_flush_lsn()");
    assert_true(target > before);
    hx_lsn_format(target, lsn, sizeof(lsn));
    expect((r = ADMIN("anchor", "anchor", "advance", "lc1", lsn, "-d", ci), &r), 0, "advanced");
    assert_int_equal(confirmed("outbox_anchor_lc1"), target);
    expect((r = ADMIN("anchor", "anchor", "advance", "lc1", lsn, "-d", ci), &r), 0, "already at");
    hx_lsn_format(target + (UINT64_C(1) << 32), lsn2, sizeof(lsn2));
    expect((r = ADMIN("anchor", "anchor", "advance", "lc1", lsn2, "-d", ci), &r), 2,
           "past the server");
    assert_int_equal(confirmed("outbox_anchor_lc1"), target);
    expect((r = ADMIN("anchor", "anchor", "advance", "nope", lsn, "-d", ci), &r), 2,
           "does not exist");

    /* drop */
    expect((r = ADMIN("anchor", "anchor", "drop", "lc1", "-d", ci), &r), 0, "dropped");
    assert_false(slot_exists("outbox_anchor_lc1"));
    expect((r = ADMIN("anchor", "anchor", "drop", "lc1", "-d", ci), &r), 2, "does not exist");
    expect((r = ADMIN("anchor", "anchor", "drop", "lc2", "-d", ci), &r), 0, "dropped");
    assert_true(slot_exists("lc_main")); /* list/drop never touch other slots */
    expect((r = ADMIN("anchor", "anchor", "drop", "Bad", "-d", ci), &r), 2, "lower-case");
    expect((r = ADMIN("anchor", "anchor", "drop", "x", "-d", "host=127.0.0.1 port=1"), &r), 1,
           "cannot connect");
    assert_int_equal(hx_exec(conn, "SELECT pg_drop_replication_slot('lc_main')"), 0);
}

static void test_status(void **state)
{
    (void)state;
    const char *ci = pg.conninfo;
    cmd_result r;
    char lsn[32];

    assert_int_equal(hx_exec(conn, "SELECT pg_create_logical_replication_slot('st_main', "
                                   "'pgoutput')"),
                     0);
    expect((r = ADMIN("anchor", "anchor", "create", "st1", "-d", ci), &r), 0, NULL);
    insert_rows("status", 100, 100, "st");

    r = ADMIN("status", "status", "--slot", "st_main", "-d", ci);
    assert_int_equal(r.rc, 0);
    hx_lsn_format(confirmed("st_main"), lsn, sizeof(lsn));
    assert_non_null(strstr(r.out, "st_main (inactive)"));
    assert_non_null(strstr(r.out, lsn));
    assert_non_null(strstr(r.out, "wal_status  reserved"));
    assert_non_null(strstr(r.out, "st1"));
    cmd_free(&r);

    r = ADMIN("status", "status", "--json", "--slot", "st_main", "-d", ci);
    assert_int_equal(r.rc, 0);
    json_error_t je;
    json_t *o = json_loads(r.out, 0, &je);
    assert_non_null(o);
    json_t *slot = json_object_get(o, "slot");
    assert_string_equal(json_string_value(json_object_get(slot, "slot")), "st_main");
    assert_string_equal(json_string_value(json_object_get(slot, "confirmed_flush_lsn")), lsn);
    assert_true(json_integer_value(json_object_get(slot, "lag_bytes")) > 0);
    /* no walsender: the server measures no time lag */
    assert_non_null(json_object_get(slot, "lag_seconds"));
    assert_true(json_is_null(json_object_get(slot, "lag_seconds")));
    assert_true(json_is_false(json_object_get(slot, "active")));
    assert_true(json_is_null(json_object_get(slot, "active_pid")));
    assert_string_equal(json_string_value(json_object_get(slot, "wal_status")), "reserved");
    assert_true(json_is_string(json_object_get(o, "server_lsn")));
    json_t *anchors = json_object_get(o, "anchors");
    bool seen = false;
    size_t i;
    json_t *a;
    json_array_foreach(anchors, i, a) seen |=
        strcmp(json_string_value(json_object_get(a, "name")), "st1") == 0;
    assert_true(seen);
    json_decref(o);
    cmd_free(&r);

    expect((r = ADMIN("status", "status", "--slot", "nope", "-d", ci), &r), 2, "does not exist");
    expect((r = ADMIN("anchor", "anchor", "drop", "st1", "-d", ci), &r), 0, NULL);
    assert_int_equal(hx_exec(conn, "SELECT pg_drop_replication_slot('st_main')"), 0);
}

static void test_replay_refusals(void **state)
{
    (void)state;
    const char *ci = pg.conninfo;
    cmd_result r;
    char from[32], to[32], earliest[32], future[32];

    expect((r = ADMIN("anchor", "anchor", "create", "rf", "-d", ci), &r), 0, NULL);
    insert_rows("refusal", 10, 10, "rf");
    uint64_t anc = confirmed("outbox_anchor_rf");
    hx_lsn_format(anc, earliest, sizeof(earliest));

    expect((r = REPLAY("replay", "--anchor", "missing", "--from", earliest, "--dry-run", "-d", ci),
            &r),
           2, "anchor \"missing\" does not exist");
    hx_lsn_format(anc + 0x100, from, sizeof(from));
    hx_lsn_format(anc + 0x80, to, sizeof(to));
    expect(
        (r = REPLAY("replay", "--anchor", "rf", "--from", from, "--to", to, "--dry-run", "-d", ci),
         &r),
        2, "swap");
    hx_lsn_format(anc - 8, from, sizeof(from));
    expect((r = REPLAY("replay", "--anchor", "rf", "--from", from, "--dry-run", "-d", ci), &r), 2,
           earliest);
    expect((r = REPLAY("replay", "--anchor", "rf", "--from", "0/0", "--dry-run", "-d", ci), &r), 2,
           earliest);
    expect((r = REPLAY("replay", "--anchor", "rf", "--from", "0/0", "--to", from, "--dry-run", "-d",
                       ci),
            &r),
           2, "earliest possible --from is");
    hx_lsn_format(lsn_of("SELECT pg_current_wal_insert_lsn()") + (UINT64_C(1) << 32), future,
                  sizeof(future));
    expect((r = REPLAY("replay", "--anchor", "rf", "--from", future, "--dry-run", "-d", ci), &r), 2,
           "past the server");
    expect((r = REPLAY("replay", "--anchor", "rf", "--from", earliest, "--to", future, "--dry-run",
                       "-d", ci),
            &r),
           2, "leave --to out");
    expect(
        (r = REPLAY("replay", "--anchor", "rf", "--from", earliest, "--end-lsn", future, "-d", ci),
         &r),
        2, "--end-lsn does not apply");
    expect((r = REPLAY("replay", "--from", earliest, "--dry-run", "-d", ci), &r), 2,
           "needs --anchor");
    /* nothing refused moved or left anything */
    assert_int_equal(confirmed("outbox_anchor_rf"), anc);
    char n[16];
    assert_int_equal(hx_query1(conn, n, sizeof(n),
                               "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE "
                               "'outbox_replay_%%'"),
                     1);
    assert_string_equal(n, "0");
    expect((r = ADMIN("anchor", "anchor", "drop", "rf", "-d", ci), &r), 0, NULL);
}

static int rec_cmp(const void *a, const void *b)
{
    const hx_record *x = a, *y = b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static uint64_t rec_commit_lsn(const hx_record *rec)
{
    json_error_t je;
    json_t *v = json_loadb(rec->value, rec->value_len, 0, &je);
    uint64_t l = 0;
    assert_non_null(v);
    const char *s = json_string_value(json_object_get(json_object_get(v, "source"), "commit_lsn"));
    assert_non_null(s);
    assert_int_equal(hx_lsn_parse(s, &l), 0);
    json_decref(v);
    return l;
}

static void test_replay_matches_original(void **state)
{
    (void)state;
    const char *ci = pg.conninfo;
    char orig_tmpl[160], replay_tmpl[160], dry_tmpl[160], orig_topic[160], replay_topic[160],
        dry_topic[160], l1s[32], l2s[32], ends[32];
    cmd_result r;
    hx_proc p;

    snprintf(orig_tmpl, sizeof(orig_tmpl), "itest.%s.orig.{aggregate_type}", hx_run_id());
    snprintf(replay_tmpl, sizeof(replay_tmpl), "itest.%s.replay.{aggregate_type}", hx_run_id());
    snprintf(dry_tmpl, sizeof(dry_tmpl), "itest.%s.dry.{aggregate_type}", hx_run_id());
    snprintf(orig_topic, sizeof(orig_topic), "itest.%s.orig.order", hx_run_id());
    snprintf(replay_topic, sizeof(replay_topic), "itest.%s.replay.order", hx_run_id());
    snprintf(dry_topic, sizeof(dry_topic), "itest.%s.dry.order", hx_run_id());

    /* the relay's slot, then an anchor as its copy */
    assert_int_equal(hx_exec(conn, "SELECT pg_create_logical_replication_slot('outbox_relay', "
                                   "'pgoutput')"),
                     0);
    expect((r = ADMIN("anchor", "anchor", "create", "e2e", "--from-slot", "outbox_relay", "-d", ci),
            &r),
           0, NULL);

    insert_rows("order", 30, 7, "before");
    uint64_t l1 = lsn_of("SELECT pg_current_wal_insert_lsn()");
    insert_rows("order", 40, 1, "in1");
    insert_rows("order", 60, 20, "in2");
    uint64_t l2 = lsn_of("SELECT pg_current_wal_insert_lsn()");
    insert_rows("order", 25, 5, "after");
    uint64_t end = lsn_of("SELECT pg_current_wal_insert_lsn()");
    hx_lsn_format(l1, l1s, sizeof(l1s));
    hx_lsn_format(l2, l2s, sizeof(l2s));
    hx_lsn_format(end, ends, sizeof(ends));

    /* the original run */
    const char *args[] = {"run",     "-d",      ci,          "-b", broker.bootstraps,
                          "--topic", orig_tmpl, "--end-lsn", ends, NULL};
    assert_int_equal(hx_relay_start(&p, "orig", args), 0);
    int rc = hx_proc_wait(&p, 60000);
    if (rc != 0)
        hx_proc_dump(&p, "relay did not stop at --end-lsn");
    assert_int_equal(rc, 0);

    hx_records orig = {0}, rep = {0}, dry = {0};
    const char *ot[] = {orig_topic};
    assert_true(hx_consume(broker.bootstraps, ot, 1, 155, 60000, &orig) >= 155);
    assert_int_equal(orig.n, 155);

    uint64_t anchor_before = confirmed("outbox_anchor_e2e");
    uint64_t main_before = confirmed("outbox_relay");

    expect((r = REPLAY("replay", "--anchor", "e2e", "--from", l1s, "--to", l2s, "--topic",
                       replay_tmpl, "-b", broker.bootstraps, "-d", ci),
            &r),
           0, NULL);
    const char *rt[] = {replay_topic};
    assert_true(hx_consume(broker.bootstraps, rt, 1, 100, 60000, &rep) >= 100);

    /* the original's records of that range, in the same per-partition order */
    qsort(orig.v, orig.n, sizeof(*orig.v), rec_cmp);
    qsort(rep.v, rep.n, sizeof(*rep.v), rec_cmp);
    size_t k = 0;
    for (size_t i = 0; i < orig.n; i++) {
        uint64_t c = rec_commit_lsn(&orig.v[i]);
        if (c < l1 || c > l2)
            continue;
        assert_true(k < rep.n);
        assert_int_equal(rep.v[k].partition, orig.v[i].partition);
        assert_string_equal(rep.v[k].key, orig.v[i].key);
        assert_int_equal(rep.v[k].value_len, orig.v[i].value_len);
        assert_memory_equal(rep.v[k].value, orig.v[i].value, orig.v[i].value_len);
        const hx_header *hi = hx_record_header(&orig.v[i], "id");
        const hx_header *hr = hx_record_header(&rep.v[k], "id");
        assert_non_null(hi);
        assert_non_null(hr);
        assert_string_equal(hi->value, hr->value);
        k++;
    }
    assert_int_equal(k, 100);
    assert_int_equal(rep.n, 100);

    /* nothing moved, nothing left behind */
    assert_int_equal(confirmed("outbox_anchor_e2e"), anchor_before);
    assert_int_equal(confirmed("outbox_relay"), main_before);
    char n[16];
    assert_int_equal(hx_query1(conn, n, sizeof(n),
                               "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE "
                               "'outbox_replay_%%'"),
                     1);
    assert_string_equal(n, "0");

    /* without --to: everything from l1 up to now; a dry run publishes nothing */
    r = REPLAY("replay", "--anchor", "e2e", "--from", l1s, "--topic", dry_tmpl, "--dry-run", "-b",
               broker.bootstraps, "-d", ci);
    assert_int_equal(r.rc, 0);
    char line[256];
    snprintf(line, sizeof(line), "%s\t125\n", dry_topic);
    if (!strstr(r.out, line))
        fprintf(stderr, "dry run printed: %s\n%s\n", r.out, r.err);
    assert_non_null(strstr(r.out, line));
    cmd_free(&r);
    const char *dt[] = {dry_topic};
    /* -1 (the topic was never created) or 0 records */
    assert_true(hx_consume(broker.bootstraps, dt, 1, 1, 3000, &dry) <= 0);
    assert_int_equal(dry.n, 0);
    assert_int_equal(confirmed("outbox_anchor_e2e"), anchor_before);

    hx_records_free(&orig);
    hx_records_free(&rep);
    hx_records_free(&dry);
    expect((r = ADMIN("anchor", "anchor", "drop", "e2e", "-d", ci), &r), 0, NULL);
    assert_int_equal(hx_exec(conn, "SELECT pg_drop_replication_slot('outbox_relay')"), 0);
}

/*
 * SIGHUP (and SIGPIPE), several times, while a replay publishes (through
 * the binary): it logs and carries on to a clean end (exit 0), every event
 * of the range exactly once, and the anchor stays where it was.
 */
static void test_replay_sighup_carries_on(void **state)
{
    (void)state;
    enum { N = 3000 };
    const char *ci = pg.conninfo;
    char tmpl[160], topic[160], froms[32], tos[32];
    hx_records rep = {0};
    cmd_result r;
    hx_proc p;
    int sent = 0, rc;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.hup.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.hup.hup", hx_run_id());
    expect((r = ADMIN("anchor", "anchor", "create", "hup", "-d", ci), &r), 0, "created anchor");
    uint64_t from = lsn_of("SELECT pg_current_wal_insert_lsn()");
    insert_rows("hup", N, 30, "hup");
    uint64_t to = lsn_of("SELECT pg_current_wal_insert_lsn()");
    uint64_t anchor_before = confirmed("outbox_anchor_hup");
    hx_lsn_format(from, froms, sizeof(froms));
    hx_lsn_format(to, tos, sizeof(tos));

    /* slow acknowledgements: the run lasts a few seconds */
    if (!broker.external)
        assert_int_equal(hx_broker_cmd(&broker, "rtt all 5"), 0);
    const char *args[] = {"replay",
                          "--anchor",
                          "hup",
                          "--from",
                          froms,
                          "--to",
                          tos,
                          "--topic",
                          tmpl,
                          "-b",
                          broker.bootstraps,
                          "-d",
                          ci,
                          "-X",
                          "batch.num.messages=10",
                          "-X",
                          "max.in.flight.requests.per.connection=1",
                          NULL};
    assert_int_equal(hx_relay_start(&p, "replay-hup", args), 0);
    for (int i = 0; i < 40 && hx_proc_running(&p); i++) {
        hx_sleep_ms(100);
        if (hx_proc_running(&p) && hx_proc_signal(&p, i % 4 == 3 ? SIGPIPE : SIGHUP) == 0)
            sent++;
    }
    rc = hx_proc_wait(&p, 180000);
    if (!broker.external)
        assert_int_equal(hx_broker_cmd(&broker, "rtt all 0"), 0);
    if (rc != 0)
        hx_proc_dump(&p, "replay with SIGHUP");
    assert_int_equal(rc, 0);
    if (sent < 3)
        fail_msg("only %d signals landed while the replay ran", sent);

    const char *rt[] = {topic};
    assert_true(hx_consume(broker.bootstraps, rt, 1, N, 60000, &rep) >= N);
    assert_int_equal(rep.n, N);
    /* every inserted row once: the ids are the table's */
    PGresult *res = PQexec(conn, "SELECT id::text FROM outbox WHERE aggregatetype = 'hup'");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), N);
    bool *seen = calloc(N, sizeof(bool));
    assert_non_null(seen);
    for (size_t i = 0; i < rep.n; i++) {
        const hx_header *h = hx_record_header(&rep.v[i], "id");
        int k;
        assert_non_null(h);
        for (k = 0; k < N && strcmp(PQgetvalue(res, k, 0), h->value) != 0; k++)
            ;
        if (k == N || seen[k])
            fail_msg("record %zu (id %s) is %s", i, h->value, k == N ? "unknown" : "a duplicate");
        seen[k] = true;
    }
    free(seen);
    PQclear(res);
    hx_records_free(&rep);
    assert_int_equal(confirmed("outbox_anchor_hup"), anchor_before);
    expect((r = ADMIN("anchor", "anchor", "drop", "hup", "-d", ci), &r), 0, NULL);
}

/* Rows of one transaction each in a range of anchor name; *from and *to
 * receive the range.  Returns the ids in insert order (PQclear it). */
static PGresult *rows_in_range(const char *anchor, const char *aggtype, int n, char *from, char *to,
                               size_t len)
{
    cmd_result r;
    char sql[256];
    PGresult *res;

    expect((r = ADMIN("anchor", "anchor", "create", anchor, "-d", pg.conninfo), &r), 0, NULL);
    hx_lsn_format(lsn_of("SELECT pg_current_wal_insert_lsn()"), from, len);
    for (int i = 0; i < n; i++)
        assert_int_equal(hx_exec(conn,
                                 "INSERT INTO outbox (id, aggregatetype, aggregateid, type, "
                                 "payload) VALUES (gen_random_uuid(), '%s', 'k%d', 'Evt', "
                                 "jsonb_build_object('n', %d))",
                                 aggtype, i, i),
                         0);
    hx_lsn_format(lsn_of("SELECT pg_current_wal_insert_lsn()"), to, len);
    snprintf(sql, sizeof(sql),
             "SELECT id::text, aggregateid FROM outbox WHERE aggregatetype = '%s' ORDER BY "
             "aggregateid",
             aggtype);
    res = PQexec(conn, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), n);
    return res;
}

/* Whether id is one of rows' ids; marks it seen (once only). */
static bool take_id(PGresult *rows, bool *seen, const char *id)
{
    for (int i = 0; i < PQntuples(rows); i++)
        if (strcmp(PQgetvalue(rows, i, 0), id) == 0 && !seen[i])
            return seen[i] = true;
    return false;
}

/*
 * The broker refuses the first Produce request for good (MESSAGE_TOO_LARGE,
 * as a record over the topic's max.message.bytes would be).  One record per
 * request on a one-partition topic: exactly one record is refused.  Replay
 * dead-letters it as the relay does and exits 0; the other events are
 * published; every row of the range is in one of the two topics, once.
 */
static void test_replay_dead_letters_refused_record(void **state)
{
    (void)state;
    char tmpl[160], topic[160], dlq[160], from[32], to[32];
    const int n = 6;
    hx_records recs = {0}, dl = {0};
    bool seen[6] = {false};
    cmd_result r;

    if (hx_broker_is_external())
        skip();
    snprintf(tmpl, sizeof(tmpl), "itest.%s.rdl.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.rdl.refusedreplay", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.rdl.dead", hx_run_id());
    PGresult *rows = rows_in_range("rdl", "refusedreplay", n, from, to, sizeof(from));
    assert_int_equal(hx_broker_cmd(&broker, "topic %s 1", topic), 0);
    assert_int_equal(hx_broker_cmd(&broker, "err 0 10 1"), 0);
    r = REPLAY("replay", "--anchor", "rdl", "--from", from, "--to", to, "--topic", tmpl,
               "--dlq-topic", dlq, "-X", "batch.num.messages=1", "-b", broker.bootstraps, "-d",
               pg.conninfo);
    if (r.rc != 0 || !strstr(r.err, "refused by the broker"))
        fprintf(stderr, "replay: exit %d\nstdout: %s\nstderr: %s\n", r.rc, r.out, r.err);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.err, "refused by the broker"));
    cmd_free(&r);

    const char *dt[] = {dlq}, *tt[] = {topic};
    assert_int_equal(hx_consume(broker.bootstraps, dt, 1, 1, 30000, &dl), 1);
    const hx_record *d = &dl.v[0];
    assert_non_null(strstr(hx_record_header(d, "error")->value, "refused"));
    assert_string_equal(hx_record_header(d, "original-topic")->value, topic);
    assert_string_equal(hx_record_header(d, "table")->value, "delivery");
    assert_non_null(hx_record_header(d, "lsn"));
    json_error_t je;
    json_t *v = json_loadb(d->value, d->value_len, 0, &je);
    assert_non_null(v);
    const char *inner = json_string_value(json_object_get(v, "value"));
    assert_non_null(inner);
    /* the refused record whole: the event of a row of the range */
    json_t *ev = json_loads(inner, 0, &je);
    assert_non_null(ev);
    assert_true(take_id(rows, seen, json_string_value(json_object_get(ev, "id"))));
    json_decref(ev);
    json_decref(v);

    assert_int_equal(hx_consume(broker.bootstraps, tt, 1, (size_t)n - 1, 30000, &recs), n - 1);
    for (size_t i = 0; i < recs.n; i++) {
        const hx_header *id = hx_record_header(&recs.v[i], "id");
        assert_non_null(id);
        assert_true(take_id(rows, seen, id->value));
    }
    for (int i = 0; i < n; i++)
        assert_true(seen[i]);
    hx_records_free(&recs);
    hx_records_free(&dl);
    PQclear(rows);
    expect((r = ADMIN("anchor", "anchor", "drop", "rdl", "-d", pg.conninfo), &r), 0, NULL);
}

/*
 * Every record and every dead letter refused (2 rows: 2 records and 2 dead
 * letters, one per Produce request): replay exits 1 saying deliveries
 * failed.  Run again without the fault, it publishes the range.
 */
static void test_replay_fails_when_dead_letter_refused(void **state)
{
    (void)state;
    char tmpl[160], topic[160], dlq[160], from[32], to[32];
    hx_records recs = {0};
    cmd_result r;

    if (hx_broker_is_external())
        skip();
    snprintf(tmpl, sizeof(tmpl), "itest.%s.rdf.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.rdf.alldead", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.rdf.dead", hx_run_id());
    PGresult *rows = rows_in_range("rdf", "alldead", 2, from, to, sizeof(from));
    assert_int_equal(hx_broker_cmd(&broker, "topic %s 1", topic), 0);
    assert_int_equal(hx_broker_cmd(&broker, "topic %s 1", dlq), 0);
    assert_int_equal(hx_broker_cmd(&broker, "err 0 10 4"), 0);
    r = REPLAY("replay", "--anchor", "rdf", "--from", from, "--to", to, "--topic", tmpl,
               "--dlq-topic", dlq, "-X", "batch.num.messages=1", "-b", broker.bootstraps, "-d",
               pg.conninfo);
    expect(&r, 1, "deliveries failed");

    r = REPLAY("replay", "--anchor", "rdf", "--from", from, "--to", to, "--topic", tmpl,
               "--dlq-topic", dlq, "-b", broker.bootstraps, "-d", pg.conninfo);
    expect(&r, 0, NULL);
    const char *tt[] = {topic};
    assert_int_equal(hx_consume(broker.bootstraps, tt, 1, 2, 30000, &recs), 2);
    hx_records_free(&recs);
    PQclear(rows);
    expect((r = ADMIN("anchor", "anchor", "drop", "rdf", "-d", pg.conninfo), &r), 0, NULL);
}

/*
 * The producer itself refuses a record (larger than message.max.bytes):
 * replay dead-letters it without its values, as the stream does, publishes
 * the other events of the range and exits 0.
 */
static void test_replay_dead_letters_oversize_record(void **state)
{
    (void)state;
    char tmpl[160], topic[160], dlq[160], from[32], to[32];
    hx_records recs = {0}, dl = {0};
    cmd_result r;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.rbig.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.rbig.bigreplay", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.rbig.dead", hx_run_id());
    expect((r = ADMIN("anchor", "anchor", "create", "rbig", "-d", pg.conninfo), &r), 0, NULL);
    hx_lsn_format(lsn_of("SELECT pg_current_wal_insert_lsn()"), from, sizeof(from));
    assert_int_equal(
        hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES"
                      " ('bigreplay', 'b1', 'Evt', '{\"n\": 1}'),"
                      " ('bigreplay', 'b2', 'Evt', jsonb_build_object('big', repeat('x', 30000))),"
                      " ('bigreplay', 'b3', 'Evt', '{\"n\": 3}')"),
        0);
    hx_lsn_format(lsn_of("SELECT pg_current_wal_insert_lsn()"), to, sizeof(to));
    r = REPLAY("replay", "--anchor", "rbig", "--from", from, "--to", to, "--topic", tmpl,
               "--dlq-topic", dlq, "-X", "message.max.bytes=20000", "-b", broker.bootstraps, "-d",
               pg.conninfo);
    if (r.rc != 0)
        fprintf(stderr, "replay: exit %d\nstdout: %s\nstderr: %s\n", r.rc, r.out, r.err);
    assert_int_equal(r.rc, 0);
    cmd_free(&r);

    const char *dt[] = {dlq}, *tt[] = {topic};
    assert_int_equal(hx_consume(broker.bootstraps, dt, 1, 1, 30000, &dl), 1);
    const hx_header *err = hx_record_header(&dl.v[0], "error");
    assert_non_null(err);
    assert_non_null(strstr(err->value, "omitted"));
    assert_string_equal(hx_record_header(&dl.v[0], "table")->value, "public.outbox");
    assert_int_equal(hx_consume(broker.bootstraps, tt, 1, 2, 30000, &recs), 2);
    for (size_t i = 0; i < recs.n; i++)
        assert_true(strcmp(recs.v[i].key, "b1") == 0 || strcmp(recs.v[i].key, "b3") == 0);
    hx_records_free(&recs);
    hx_records_free(&dl);
    expect((r = ADMIN("anchor", "anchor", "drop", "rbig", "-d", pg.conninfo), &r), 0, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anchor_lifecycle),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_replay_refusals),
        cmocka_unit_test(test_replay_matches_original),
        cmocka_unit_test(test_replay_sighup_carries_on),
        cmocka_unit_test(test_replay_dead_letters_refused_record),
        cmocka_unit_test(test_replay_fails_when_dead_letter_refused),
        cmocka_unit_test(test_replay_dead_letters_oversize_record),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
