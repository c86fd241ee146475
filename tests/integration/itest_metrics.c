/*
 * The HTTP endpoint during a real run: /metrics counters match what a
 * consumer read (events by topic, dead-letters by reason, acknowledgements,
 * confirmed LSN), /healthz and /readyz answer 200 while streaming, /status
 * is JSON with the state, unknown paths 404 — and the password given in the
 * conninfo appears in none of them nor in the logs.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/harness/harness.h"

#define SECRET "s3cret-Pa55word"

static hx_pg pg;
static hx_broker broker;
static PGconn *conn;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0 || hx_pg_start(&pg, "metrics", NULL, true) != 0 ||
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

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* GET path; returns the status code and the body in *body (malloc'd). */
static int http_get(int port, const char *path, char **body)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char req[256], *buf = NULL;
    size_t len = 0, cap = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0), status = -1;

    *body = NULL;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return -1;
    }
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (!buf)
        return -1;
    buf[len] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        status = -1;
    char *sep = strstr(buf, "\r\n\r\n");
    *body = strdup(sep ? sep + 4 : "");
    free(buf);
    return status;
}

/* The value of the sample line starting with name (labels included). */
static double sample(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    fail_msg("no sample %s in /metrics", name);
    return -1;
}

static void test_endpoint_during_a_run(void **state)
{
    (void)state;
    char tmpl[200], topic[200], dlq[200], dsn[400], http[64], line[320], *body = NULL;
    const char *slot = "met_slot";
    int port = free_port();
    uint64_t end, c = 0;
    hx_proc relay;
    hx_records recs = {0};

    snprintf(tmpl, sizeof(tmpl), "itest.%s.met.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.met.met", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.met.dead", hx_run_id());
    /* trust authentication ignores the password: it is only there to be
     * looked for where it must not be */
    snprintf(dsn, sizeof(dsn), "%s password=" SECRET, pg.conninfo);
    snprintf(http, sizeof(http), "127.0.0.1:%d", port);
    const char *args[] = {
        "run",     "-d", dsn,           "-b", broker.bootstraps, "--slot", slot, "--create-slot",
        "--topic", tmpl, "--dlq-topic", dlq,  "--http",          http,     "-v", NULL};
    /* an anchor: its retained WAL shows in /metrics */
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('outbox_anchor_met', 'pgoutput')"),
        0);
    assert_int_equal(hx_relay_start(&relay, "metrics", args), 0);
    int status = -1;
    for (int i = 0; i < 100 && status != 200; i++) {
        free(body);
        status = http_get(port, "/healthz", &body);
        if (status != 200)
            hx_sleep_ms(100);
    }
    assert_int_equal(status, 200);
    free(body);
    char active[8] = "";
    for (int i = 0; i < 100 && strcmp(active, "t") != 0; i++) {
        hx_query1(conn, active, sizeof(active),
                  "SELECT active FROM pg_replication_slots WHERE slot_name = '%s'", slot);
        hx_sleep_ms(100);
    }
    assert_string_equal(active, "t");

    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                   " SELECT 'met', 'a' || (n %% 5), 'Counted',"
                                   " jsonb_build_object('n', n) FROM generate_series(1, 40) n"),
                     0);
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type)"
                                   " VALUES ('met', '', 'Poison'), ('met', '', 'Poison')"),
                     0);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    for (int i = 0; i < 300 && c < end; i++) {
        hx_slot_confirmed(conn, slot, &c);
        hx_sleep_ms(100);
    }
    assert_true(c >= end);

    const char *t1[] = {topic}, *t2[] = {dlq};
    assert_int_equal(hx_consume(broker.bootstraps, t1, 1, 40, 30000, &recs), 40);
    hx_records_free(&recs);
    assert_int_equal(hx_consume(broker.bootstraps, t2, 1, 2, 30000, &recs), 2);
    hx_records_free(&recs);

    /* The snapshot is at most half a second old: give it a moment. */
    hx_sleep_ms(1200);
    assert_int_equal(http_get(port, "/metrics", &body), 200);
    snprintf(line, sizeof(line), "outbox_relay_events_published_total{topic=\"%s\"}", topic);
    assert_int_equal((int)sample(body, line), 40);
    assert_int_equal(
        (int)sample(body, "outbox_relay_events_dead_lettered_total{reason=\"invalid_row\"}"), 2);
    assert_int_equal((int)sample(body, "outbox_relay_events_acknowledged_total"), 42);
    assert_true(sample(body, "outbox_relay_commit_to_ack_seconds_count") >= 42);
    assert_true(sample(body, "outbox_relay_confirmed_lsn") >= (double)end);
    assert_int_equal((int)sample(body, "outbox_relay_state{state=\"streaming\"}"), 1);
    assert_int_equal((int)sample(body, "outbox_relay_anchors"), 1);
    assert_true(sample(body, "outbox_relay_anchor_retained_wal_bytes{anchor=\"outbox_anchor_met\","
                             "wal_status=\"reserved\"}") > 0);
    /* the relay's own slot, for the alert on a slot losing WAL */
    assert_int_equal((int)sample(body, "outbox_relay_slot_wal_status{wal_status=\"reserved\"}"), 1);
    assert_int_equal((int)sample(body, "outbox_relay_slot_wal_status{wal_status=\"lost\"}"), 0);
    assert_null(strstr(body, SECRET));
    free(body);
    assert_int_equal(hx_exec(conn, "SELECT pg_drop_replication_slot('outbox_anchor_met')"), 0);

    assert_int_equal(http_get(port, "/readyz", &body), 200);
    free(body);
    assert_int_equal(http_get(port, "/status", &body), 200);
    json_error_t jerr;
    json_t *st = json_loads(body, 0, &jerr);
    assert_non_null(st);
    assert_string_equal(json_string_value(json_object_get(st, "state")), "streaming");
    json_decref(st);
    assert_null(strstr(body, SECRET));
    free(body);
    assert_int_equal(http_get(port, "/no-such-path", &body), 404);
    free(body);

    /* ps and /proc/PID/cmdline show the state, never the password */
    char path[64], cmdline[4096];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)relay.pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (cmdline[i] == '\0')
            cmdline[i] = ' ';
    cmdline[n] = '\0';
    assert_null(strstr(cmdline, SECRET));
    assert_non_null(strstr(cmdline, "streaming, slot met_slot"));

    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
    char *log = hx_proc_stderr(&relay);
    assert_non_null(log);
    assert_non_null(strstr(log, "streaming slot")); /* the log is really there */
    assert_null(strstr(log, SECRET));
    free(log);
}

/* /status last_error for the JSON at port: true when it is set. */
static bool status_has_error(int port)
{
    char *body = NULL;
    json_error_t jerr;
    json_t *st;
    bool set;

    assert_int_equal(http_get(port, "/status", &body), 200);
    st = json_loads(body, 0, &jerr);
    assert_non_null(st);
    free(body);
    set = json_is_string(json_object_get(st, "last_error"));
    json_decref(st);
    return set;
}

/*
 * /status shows the fault the relay is riding out, and no longer once it
 * streams healthily again (the confirmed position moved past where it stood
 * when the fault began).  It used to keep the last error for ever.
 */
static void test_last_error_clears_on_recovery(void **state)
{
    (void)state;
    char tmpl[200], http[64];
    const char *slot = "met_recover";
    int port = free_port();
    uint64_t end, c = 0;
    hx_proc relay;
    bool set = false;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.rec.{aggregate_type}", hx_run_id());
    snprintf(http, sizeof(http), "127.0.0.1:%d", port);
    const char *args[] = {"run",
                          "-d",
                          pg.conninfo,
                          "-b",
                          broker.bootstraps,
                          "--slot",
                          slot,
                          "--create-slot",
                          "--topic",
                          tmpl,
                          "--http",
                          http,
                          NULL};
    assert_int_equal(hx_relay_start(&relay, "recover", args), 0);
    char active[8] = "";
    for (int i = 0; i < 150 && strcmp(active, "t") != 0; i++) {
        hx_query1(conn, active, sizeof(active),
                  "SELECT active FROM pg_replication_slots WHERE slot_name = '%s'", slot);
        hx_sleep_ms(100);
    }
    assert_string_equal(active, "t");
    assert_false(status_has_error(port));

    /* a fault: the server ends the replication connection */
    assert_int_equal(hx_exec(conn, "SELECT pg_terminate_backend(active_pid) FROM "
                                   "pg_replication_slots WHERE slot_name = 'met_recover'"),
                     0);
    for (int i = 0; i < 100 && !set; i++) {
        hx_sleep_ms(100);
        set = status_has_error(port);
    }
    if (!set) {
        hx_proc_dump(&relay, "no last_error after the walsender was terminated");
        fail_msg("/status never showed the fault");
    }

    /* healthy again: an event goes through and the slot moves past it */
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                   " VALUES ('rec', 'a', 'Recovered', '{}')"),
                     0);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    for (int i = 0; i < 300 && c < end; i++) {
        hx_slot_confirmed(conn, slot, &c);
        hx_sleep_ms(100);
    }
    assert_true(c >= end);
    for (int i = 0; i < 50 && set; i++) {
        hx_sleep_ms(200);
        set = status_has_error(port);
    }
    if (set)
        hx_proc_dump(&relay, "last_error kept after recovery");
    assert_false(set);
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
}

/* Password authentication with --password-file: without it the relay
 * cannot log in; with it, it streams. */
static void test_password_file(void **state)
{
    (void)state;
    char hba[600], pwfile[600], dsn[400], buf[8] = "";
    hx_proc relay;

    snprintf(hba, sizeof(hba), "%s/data/pg_hba.conf", pg.dir);
    snprintf(pwfile, sizeof(pwfile), "%s/pw", hx_tmpdir());
    assert_int_equal(hx_exec(conn, "CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'file-Secret-1';"
                                   "GRANT SELECT ON outbox TO pwuser"),
                     0);
    /* first match wins: put scram lines for pwuser before the trust lines */
    FILE *old = fopen(hba, "r");
    assert_non_null(old);
    char *rest = calloc(1, 65536);
    assert_non_null(rest);
    size_t n = fread(rest, 1, 65535, old);
    fclose(old);
    FILE *nf = fopen(hba, "w");
    assert_non_null(nf);
    fprintf(nf, "host all pwuser 127.0.0.1/32 scram-sha-256\n"
                "host replication pwuser 127.0.0.1/32 scram-sha-256\n");
    fwrite(rest, 1, n, nf);
    fclose(nf);
    free(rest);
    assert_int_equal(hx_exec(conn, "SELECT pg_reload_conf()"), 0);
    hx_sleep_ms(300);

    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%d user=pwuser dbname=postgres", pg.port);
    const char *no_pw[] = {"run",           "-d", dsn, "-b", broker.bootstraps, "--slot", "pw_slot",
                           "--create-slot", NULL};
    assert_int_equal(hx_relay_start(&relay, "nopw", no_pw), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 1);
    char *log = hx_proc_stderr(&relay);
    assert_non_null(strstr(log, "password"));
    free(log);

    FILE *pf = fopen(pwfile, "w");
    assert_non_null(pf);
    fputs("file-Secret-1\n", pf);
    fclose(pf);
    const char *with_pw[] = {"run",
                             "-d",
                             dsn,
                             "-b",
                             broker.bootstraps,
                             "--slot",
                             "pw_slot",
                             "--create-slot",
                             "--password-file",
                             pwfile,
                             NULL};
    assert_int_equal(hx_relay_start(&relay, "pw", with_pw), 0);
    for (int i = 0; i < 100 && strcmp(buf, "t") != 0; i++) {
        hx_query1(conn, buf, sizeof(buf),
                  "SELECT active FROM pg_replication_slots WHERE slot_name = 'pw_slot'");
        hx_sleep_ms(100);
    }
    assert_string_equal(buf, "t");
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
    log = hx_proc_stderr(&relay);
    assert_null(strstr(log, "file-Secret-1"));
    free(log);

    /* the sub-commands take --password-file too */
    uint64_t now = 0;
    char from[32] = ""; /* the position after the anchor is made, filled in below */
    const char *status_no[] = {"status", "-d", dsn, "-S", "pw_slot", NULL};
    const char *status_pw[] = {"status",          "-d",   dsn, "-S", "pw_slot",
                               "--password-file", pwfile, NULL};
    const char *anchor_pw[] = {"anchor", "create",          "pwa",  "-d",
                               dsn,      "--password-file", pwfile, NULL};
    const char *replay_no[] = {"replay",   "-d",  dsn,      "-b", broker.bootstraps,
                               "--anchor", "pwa", "--from", from, "--dry-run",
                               NULL};
    const char *replay_pw[] = {"replay",          "-d",   dsn,      "-b", broker.bootstraps,
                               "--anchor",        "pwa",  "--from", from, "--dry-run",
                               "--password-file", pwfile, NULL};
    const char *backfill_pw[] = {
        "backfill",        "-d",   dsn, "-b", broker.bootstraps, "--dry-run",
        "--password-file", pwfile, NULL};
    const struct {
        const char *tag;
        const char *const *args;
        int rc;
    } subs[] = {{"status-nopw", status_no, 1}, {"status-pw", status_pw, 0},
                {"anchor-pw", anchor_pw, 0},   {"replay-nopw", replay_no, 1},
                {"replay-pw", replay_pw, 0},   {"backfill-pw", backfill_pw, 0}};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (!from[0] && subs[i].args == replay_no) {
            assert_int_equal(hx_current_lsn(conn, false, &now), 0);
            hx_lsn_format(now, from, sizeof(from));
            assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, "
                                           "type, payload) VALUES ('pw', '1', 'T', '{}')"),
                             0);
        }
        assert_int_equal(hx_relay_start(&relay, subs[i].tag, subs[i].args), 0);
        int rc = hx_proc_wait(&relay, 60000);
        log = hx_proc_stderr(&relay);
        if (rc != subs[i].rc)
            fail_msg("%s exited %d, expected %d: %s", subs[i].tag, rc, subs[i].rc, log);
        assert_null(strstr(log, "file-Secret-1"));
        free(log);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_during_a_run),
        cmocka_unit_test(test_last_error_clears_on_recovery),
        cmocka_unit_test(test_password_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
