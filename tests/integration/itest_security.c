/*
 * The relay on a secured listener of a real Apache Kafka cluster: SASL_SSL
 * with SCRAM-SHA-512 over TLS, a CA made by scripts/kafka with openssl, the
 * SCRAM user created when the storage is formatted, and KRaft's
 * StandardAuthorizer (scripts/kafka start -n 1 --sasl-ssl --acl).
 *
 *   - The relay streams through the listener with -X properties: every row
 *     arrives in order, the slot is confirmed past it, and the password is
 *     nowhere in its log, /metrics, /status or its command line.
 *   - A wrong password, and a CA that did not sign the broker's
 *     certificate, each give one error that names the property to fix (in
 *     the log and in /status); the relay holds (the slot stays) and the
 *     password appears nowhere.
 *   - A topic the relay's user may not write (a DENY ACL): the event is not
 *     dead-lettered (the relay holds, naming the topic and what to grant);
 *     once the ACL is removed it is delivered, the slot moves on.
 *
 * It runs in the real-Kafka part of scripts/run-tests (KAFKA_DIR set) and
 * starts its own one-node cluster; it skips otherwise.  librdkafka before
 * 2.6.1 (Debian 12 has 2.0.2) cannot log in with SCRAM to Kafka 4.0 and
 * later, so with such a library that cluster is Kafka 3.9.1
 * (OBX_SECURE_KAFKA_VERSION overrides it).
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
#include <librdkafka/rdkafka.h>

#include "tests/harness/harness.h"

static hx_pg pg;
static PGconn *conn;
static char dir[600];    /* the secured cluster this binary started ("" none) */
static char plain[256];  /* its PLAINTEXT bootstrap (super user: setup, read back) */
static char secure[256]; /* its SASL_SSL bootstrap */
static char user[64], password[128], ca[600], other_ca[600];

static const char *root(void)
{
    const char *r = getenv("OBX_ROOT");
    return r && *r ? r : ".";
}

static bool enabled(void)
{
    const char *d = getenv("KAFKA_DIR");
    return d && *d;
}

/* Run cmd and copy its output's lines into out (NUL-separated per line
 * kept as "\n"); 0 when it exited 0. */
static int run_capture(const char *cmd, char *out, size_t len)
{
    FILE *f = popen(cmd, "r");
    size_t n = 0;
    if (!f)
        return -1;
    while (n + 1 < len && fgets(out + n, (int)(len - n), f))
        n += strlen(out + n);
    out[n] = '\0';
    return pclose(f) == 0 ? 0 : -1;
}

/* The value of KEY=VALUE in text. */
static void value_of(const char *text, const char *key, char *out, size_t len)
{
    size_t k = strlen(key);
    out[0] = '\0';
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, key, k) == 0 && p[k] == '=') {
            const char *v = p + k + 1;
            size_t l = strcspn(v, "\n");
            snprintf(out, len, "%.*s", (int)l, v);
            return;
        }
}

static int teardown(void **state);

/* The secured cluster and PostgreSQL (KAFKA_DIR set); 0 or -1. */
static int start_servers(void)
{
    char cmd[1600], out[4096];
    const char *v = getenv("OBX_SECURE_KAFKA_VERSION");
    const char *version = v && *v ? v : rd_kafka_version() < 0x020601ff ? "3.9.1" : "4.1.1";
    const char *tmp = getenv("OBX_TEST_TMP");
    snprintf(dir, sizeof(dir), "%s/kafka-secure", tmp && *tmp ? tmp : hx_tmpdir());
    snprintf(cmd, sizeof(cmd),
             "'%s/scripts/kafka' start -n 1 -v %s --sasl-ssl --acl -d '%s' | tail -n1", root(),
             version, dir);
    if (run_capture(cmd, out, sizeof(out)) != 0) {
        fprintf(stderr, "itest_security: %s failed\n", cmd);
        return -1;
    }
    snprintf(plain, sizeof(plain), "%.*s", (int)strcspn(out, "\n"), out);
    snprintf(cmd, sizeof(cmd), "KAFKA_DIR='%s' '%s/scripts/kafka' sasl", dir, root());
    if (run_capture(cmd, out, sizeof(out)) != 0)
        return -1;
    value_of(out, "SASL_BOOTSTRAP", secure, sizeof(secure));
    value_of(out, "SASL_USER", user, sizeof(user));
    value_of(out, "SASL_PASSWORD", password, sizeof(password));
    value_of(out, "CA", ca, sizeof(ca));
    value_of(out, "OTHER_CA", other_ca, sizeof(other_ca));
    if (!plain[0] || !secure[0] || !user[0] || strlen(password) < 8 || !ca[0] || !other_ca[0])
        return -1;
    fprintf(stderr, "# Apache Kafka %s, SASL_SSL at %s, librdkafka %s\n", version, secure,
            rd_kafka_version_str());
    if (hx_pg_start(&pg, "security", NULL, true) != 0)
        return -1;
    conn = hx_connect(pg.conninfo);
    return conn ? 0 : -1;
}

static int setup(void **state)
{
    if (hx_init() != 0)
        return -1;
    if (!enabled())
        return 0;
    if (start_servers() == 0)
        return 0;
    /* cmocka skips the group teardown when setup fails: stop what started */
    (void)teardown(state);
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[1400];
    PQfinish(conn);
    conn = NULL;
    if (dir[0]) {
        snprintf(cmd, sizeof(cmd), "'%s/scripts/kafka' stop '%s' >&2", root(), dir);
        if (system(cmd) != 0)
            fprintf(stderr, "itest_security: stopping %s failed\n", dir);
        dir[0] = '\0';
    }
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

/* ---- Admin API over the PLAINTEXT listener (a super user) ------------------ */

static rd_kafka_t *admin(void)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", plain, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        fprintf(stderr, "itest_security: %s\n", errstr);
    return rk;
}

static void create_topic(const char *name)
{
    char errstr[512];
    rd_kafka_t *rk = admin();
    assert_non_null(rk);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(name, 2, 1, errstr, sizeof(errstr));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    assert_non_null(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    assert_int_equal(n, 1);
    if (rd_kafka_topic_result_error(res[0]))
        fprintf(stderr, "itest_security: create %s: %s\n", name,
                rd_kafka_topic_result_error_string(res[0]));
    assert_int_equal(rd_kafka_topic_result_error(res[0]), 0);
    rd_kafka_event_destroy(ev);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    hx_sleep_ms(500);
}

/* Add (or, with remove, delete) "DENY User:<user> WRITE" on topic. */
static void deny_write(const char *topic, bool remove)
{
    char errstr[512], principal[100];
    rd_kafka_t *rk = admin();
    assert_non_null(rk);
    snprintf(principal, sizeof(principal), "User:%s", user);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    if (!remove) {
        rd_kafka_AclBinding_t *b = rd_kafka_AclBinding_new(
            RD_KAFKA_RESOURCE_TOPIC, topic, RD_KAFKA_RESOURCE_PATTERN_LITERAL, principal, "*",
            RD_KAFKA_ACL_OPERATION_WRITE, RD_KAFKA_ACL_PERMISSION_TYPE_DENY, errstr,
            sizeof(errstr));
        assert_non_null(b);
        rd_kafka_CreateAcls(rk, &b, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
        assert_non_null(ev);
        size_t n = 0;
        const rd_kafka_acl_result_t **res =
            rd_kafka_CreateAcls_result_acls(rd_kafka_event_CreateAcls_result(ev), &n);
        assert_int_equal(n, 1);
        assert_null(rd_kafka_acl_result_error(res[0]));
        rd_kafka_event_destroy(ev);
        rd_kafka_AclBinding_destroy(b);
    } else {
        rd_kafka_AclBindingFilter_t *f = rd_kafka_AclBindingFilter_new(
            RD_KAFKA_RESOURCE_TOPIC, topic, RD_KAFKA_RESOURCE_PATTERN_LITERAL, principal, "*",
            RD_KAFKA_ACL_OPERATION_WRITE, RD_KAFKA_ACL_PERMISSION_TYPE_DENY, errstr,
            sizeof(errstr));
        assert_non_null(f);
        rd_kafka_DeleteAcls(rk, &f, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
        assert_non_null(ev);
        size_t n = 0;
        const rd_kafka_DeleteAcls_result_response_t **res =
            rd_kafka_DeleteAcls_result_responses(rd_kafka_event_DeleteAcls_result(ev), &n);
        assert_int_equal(n, 1);
        assert_null(rd_kafka_DeleteAcls_result_response_error(res[0]));
        size_t matched = 0;
        (void)rd_kafka_DeleteAcls_result_response_matching_acls(res[0], &matched);
        assert_int_equal(matched, 1);
        rd_kafka_event_destroy(ev);
        rd_kafka_AclBinding_destroy(f);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

/* ---- helpers ------------------------------------------------------------------ */

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

/* GET path: the body (malloc'd), or NULL. */
static char *http_get(int port, const char *path)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char req[256], *buf = NULL;
    size_t len = 0, cap = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return NULL;
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
    if (buf)
        buf[len] = '\0';
    return buf;
}

static uint64_t confirmed(const char *slot)
{
    uint64_t lsn = 0;
    assert_true(hx_slot_confirmed(conn, slot, &lsn) >= 0);
    return lsn;
}

static bool wait_confirmed(const char *slot, uint64_t target, int timeout_ms)
{
    int64_t deadline = hx_now_ms() + timeout_ms;
    while (hx_now_ms() < deadline) {
        if (confirmed(slot) >= target)
            return true;
        hx_sleep_ms(200);
    }
    return false;
}

static void write_rows(const char *agg, int n)
{
    assert_int_equal(hx_exec(conn, "BEGIN"), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(hx_exec(conn,
                                 "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                 " VALUES ('%s', 'k%d', 'Secured', '{\"i\": %d}')",
                                 agg, i % 3, i),
                         0);
    assert_int_equal(hx_exec(conn, "COMMIT"), 0);
}

/* Every i in 0..n-1 at least once; first copies in order per key. */
static void assert_all_in_order(const hx_records *recs, int n)
{
    int *seen = calloc((size_t)n, sizeof(int));
    int last[3] = {-1, -1, -1};
    assert_non_null(seen);
    for (size_t r = 0; r < recs->n; r++) {
        json_error_t jerr;
        json_t *v = json_loadb(recs->v[r].value, recs->v[r].value_len, 0, &jerr);
        assert_non_null(v);
        int i = (int)json_integer_value(json_object_get(json_object_get(v, "payload"), "i"));
        json_decref(v);
        assert_true(i >= 0 && i < n);
        int k = recs->v[r].key[1] - '0';
        assert_true(k >= 0 && k < 3);
        if (seen[i]++ == 0) {
            assert_true(i > last[k]);
            last[k] = i;
        }
    }
    for (int i = 0; i < n; i++)
        assert_true(seen[i] >= 1);
    free(seen);
}

/* The relay on the SASL_SSL listener with password pw and CA file cafile. */
static void start_relay(hx_proc *relay, const char *tag, const char *slot, const char *tmpl,
                        const char *dlq, const char *pw, const char *cafile, int http_port)
{
    char xuser[120], xpw[200], xca[700], http[40];
    snprintf(xuser, sizeof(xuser), "sasl.username=%s", user);
    snprintf(xpw, sizeof(xpw), "sasl.password=%s", pw);
    snprintf(xca, sizeof(xca), "ssl.ca.location=%s", cafile);
    snprintf(http, sizeof(http), "127.0.0.1:%d", http_port);
    const char *args[] = {"run",         "-d",
                          pg.conninfo,   "-b",
                          secure,        "--slot",
                          slot,          "--create-slot",
                          "--topic",     tmpl,
                          "--dlq-topic", dlq,
                          "--http",      http,
                          "-X",          "security.protocol=SASL_SSL",
                          "-X",          "sasl.mechanisms=SCRAM-SHA-512",
                          "-X",          xuser,
                          "-X",          xpw,
                          "-X",          xca,
                          NULL};
    assert_int_equal(hx_relay_start(relay, tag, args), 0);
}

static void stop_relay(hx_proc *relay)
{
    assert_int_equal(hx_proc_signal(relay, SIGTERM), 0);
    int rc = hx_proc_wait(relay, 30000);
    if (rc != 0)
        hx_proc_dump(relay, "the relay did not stop cleanly");
    assert_int_equal(rc, 0);
}

/* The secret appears in none of the relay's log, /metrics, /status and
 * command line. */
static void assert_no_secret(const hx_proc *relay, int port, const char *secret)
{
    char *log = hx_proc_stderr(relay), path[64];
    assert_non_null(log);
    assert_null(strstr(log, secret));
    free(log);
    const char *pages[] = {"/metrics", "/status"};
    for (size_t i = 0; i < 2; i++) {
        char *body = http_get(port, pages[i]);
        assert_non_null(body);
        assert_null(strstr(body, secret));
        free(body);
    }
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)relay->pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char cmdline[8192];
    size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (cmdline[i] == '\0')
            cmdline[i] = ' ';
    cmdline[n] = '\0';
    assert_null(strstr(cmdline, secret));
}

/* Lines of text containing what. */
static int count_lines(const char *text, const char *what)
{
    int c = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        const char *e = strchr(p, '\n');
        const char *hit = strstr(p, what);
        if (hit && (!e || hit < e))
            c++;
    }
    return c;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_streams_through_sasl_ssl(void **state)
{
    (void)state;
    if (!enabled())
        skip();
    char tmpl[200], topic[200], dlq[200];
    const char *slot = "sec_ok";
    const int n = 30, port = free_port();
    hx_proc relay;
    hx_records recs = {0};
    uint64_t end;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.sec.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.sec.order", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.sec.dlq", hx_run_id());
    start_relay(&relay, "sec_ok", slot, tmpl, dlq, password, ca, port);
    hx_sleep_ms(1000);
    write_rows("order", n);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    if (!wait_confirmed(slot, end, 60000))
        hx_proc_dump(&relay, "the slot did not move past the rows on the SASL_SSL listener");
    assert_true(confirmed(slot) >= end);
    const char *t[] = {topic};
    assert_true(hx_consume(plain, t, 1, (size_t)n, 30000, &recs) >= n);
    assert_all_in_order(&recs, n);
    hx_records_free(&recs);
    assert_no_secret(&relay, port, password);
    stop_relay(&relay);
}

/* A relay that cannot connect: it holds, logs one error naming property
 * (and /status says it), and the password shows nowhere. */
static void check_refused(const char *tag, const char *pw, const char *cafile, const char *property)
{
    char tmpl[200], dlq[200], slot[40];
    const int port = free_port();
    hx_proc relay;
    uint64_t end;

    snprintf(slot, sizeof(slot), "sec_%s", tag);
    snprintf(tmpl, sizeof(tmpl), "itest.%s.%s.{aggregate_type}", hx_run_id(), tag);
    snprintf(dlq, sizeof(dlq), "itest.%s.%s.dlq", hx_run_id(), tag);
    start_relay(&relay, tag, slot, tmpl, dlq, pw, cafile, port);
    hx_sleep_ms(1000);
    write_rows("order", 5);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    /* long enough for several reconnection attempts */
    hx_sleep_ms(10000);
    assert_true(hx_proc_running(&relay));
    assert_true(confirmed(slot) < end);

    char *log = hx_proc_stderr(&relay);
    assert_non_null(log);
    int errors = count_lines(log, " error: "), naming = count_lines(log, property);
    if (errors != 1 || naming != 1)
        hx_proc_dump(&relay, "expected exactly one error line, naming the property to fix");
    assert_int_equal(errors, 1);
    assert_int_equal(naming, 1);
    fprintf(stderr, "# %s: %s", tag, strstr(log, " error: "));
    free(log);
    char *status = http_get(port, "/status");
    assert_non_null(status);
    json_error_t jerr;
    json_t *s = json_loads(strstr(status, "{"), 0, &jerr);
    assert_non_null(s);
    const char *last = json_string_value(json_object_get(s, "last_error"));
    assert_non_null(last);
    assert_non_null(strstr(last, property));
    json_decref(s);
    free(status);
    assert_no_secret(&relay, port, pw);
    assert_no_secret(&relay, port, password);
    stop_relay(&relay);
    /* nothing was confirmed: a later relay with the right settings would
     * deliver these rows; drop the slot so they do not linger */
    assert_int_equal(hx_exec(conn, "SELECT pg_drop_replication_slot('%s')", slot), 0);
}

static void test_wrong_password(void **state)
{
    (void)state;
    if (!enabled())
        skip();
    /* not the password, and no substring of it */
    check_refused("badpw", "Wrong-Pass-4711", ca, "sasl.password");
}

static void test_unknown_ca(void **state)
{
    (void)state;
    if (!enabled())
        skip();
    check_refused("badca", password, other_ca, "ssl.ca.location");
}

static void test_topic_not_authorized_holds(void **state)
{
    (void)state;
    if (!enabled())
        skip();
    char tmpl[200], topic[200], dlq[200];
    const char *slot = "sec_acl";
    const int n = 12, port = free_port();
    hx_proc relay;
    hx_records recs = {0};
    uint64_t end;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.acl.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.acl.order", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.acl.dlq", hx_run_id());
    create_topic(topic);
    create_topic(dlq);
    deny_write(topic, false);
    start_relay(&relay, "sec_acl", slot, tmpl, dlq, password, ca, port);
    hx_sleep_ms(1000);
    write_rows("order", n);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);

    /* held: not confirmed, nothing written, nothing dead-lettered, and the
     * log names the topic and what to grant */
    hx_sleep_ms(10000);
    assert_true(hx_proc_running(&relay));
    assert_true(confirmed(slot) < end);
    const char *t[] = {topic}, *d[] = {dlq};
    assert_true(hx_consume(plain, t, 1, 0, 5000, &recs) >= 0);
    assert_int_equal(recs.n, 0);
    hx_records_free(&recs);
    assert_true(hx_consume(plain, d, 1, 0, 5000, &recs) >= 0);
    assert_int_equal(recs.n, 0);
    hx_records_free(&recs);
    char *log = hx_proc_stderr(&relay);
    assert_non_null(log);
    const char *why = strstr(log, "authorization");
    if (!why || !strstr(log, topic) || !strstr(log, "WRITE"))
        hx_proc_dump(&relay, "the log should name the topic and the missing WRITE grant");
    assert_non_null(why);
    assert_non_null(strstr(log, topic));
    assert_non_null(strstr(log, "WRITE"));
    free(log);

    /* the operator grants it: everything arrives once the relay retries */
    deny_write(topic, true);
    if (!wait_confirmed(slot, end, 90000))
        hx_proc_dump(&relay, "the slot did not move after the ACL was removed");
    assert_true(confirmed(slot) >= end);
    assert_true(hx_consume(plain, t, 1, (size_t)n, 30000, &recs) >= n);
    assert_all_in_order(&recs, n);
    hx_records_free(&recs);
    assert_true(hx_consume(plain, d, 1, 0, 5000, &recs) >= 0);
    assert_int_equal(recs.n, 0);
    hx_records_free(&recs);
    assert_no_secret(&relay, port, password);
    stop_relay(&relay);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams_through_sasl_ssl),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_unknown_ca),
        cmocka_unit_test(test_topic_not_authorized_holds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
