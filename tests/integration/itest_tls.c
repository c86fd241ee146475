/*
 * TLS to PostgreSQL: with sslmode=verify-full the relay streams over TLS
 * when the server's certificate chains to the given CA and names the host,
 * and refuses to start (exit 1, a message naming the certificate problem)
 * with another CA.  Certificates are made by the test with openssl.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/harness/harness.h"

static hx_pg pg;
static hx_broker broker;
static PGconn *conn;
static char certs[600];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "itest_tls: command failed (%d): %s\n", rc, cmd);
    return rc;
}

static int make_certs(void)
{
    snprintf(certs, sizeof(certs), "%s/certs", hx_tmpdir());
    if (mkdir(certs, 0755) != 0)
        return -1;
    /* a CA, a server certificate for 127.0.0.1/localhost signed by it, and
     * an unrelated CA */
    if (sh("cd %s && "
           "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 "
           "-subj /CN=obx-test-ca >/dev/null 2>&1 && "
           "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 "
           "-subj /CN=obx-other-ca >/dev/null 2>&1 && "
           "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
           "-subj /CN=localhost >/dev/null 2>&1 && "
           "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
           "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
           "-out server.crt -days 2 -extfile san.ext >/dev/null 2>&1 && chmod 600 server.key",
           certs) != 0)
        return -1;
    if (getuid() == 0 && sh("chown postgres %s/server.key %s/server.crt", certs, certs) != 0)
        return -1;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    char conf[2048];
    if (hx_init() != 0 || make_certs() != 0)
        return -1;
    snprintf(conf, sizeof(conf),
             "ssl = on\nssl_cert_file = '%s/server.crt'\nssl_key_file = '%s/server.key'\n", certs,
             certs);
    if (hx_pg_start(&pg, "tls", conf, true) != 0 || hx_broker_start(&broker, 1) != 0)
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

static void dsn_with_ca(char *buf, size_t len, const char *ca)
{
    snprintf(buf, len,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=verify-full "
             "sslrootcert=%s/%s",
             pg.port, certs, ca);
}

static void test_verify_full_streams(void **state)
{
    (void)state;
    char dsn[1024], buf[16] = "";
    hx_proc relay;

    dsn_with_ca(dsn, sizeof(dsn), "ca.crt");
    const char *args[] = {"run",           "-d", dsn, "-b", broker.bootstraps, "--slot", "tls_slot",
                          "--create-slot", NULL};
    assert_int_equal(hx_relay_start(&relay, "tls-ok", args), 0);
    for (int i = 0; i < 100 && strcmp(buf, "t") != 0; i++) {
        hx_query1(conn, buf, sizeof(buf),
                  "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_replication_slots r"
                  " ON r.active_pid = s.pid WHERE r.slot_name = 'tls_slot'");
        hx_sleep_ms(100);
    }
    if (strcmp(buf, "t") != 0)
        hx_proc_dump(&relay, "no TLS replication connection");
    assert_string_equal(buf, "t"); /* streaming, and over TLS */
    assert_int_equal(hx_proc_signal(&relay, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 0);
}

static void test_wrong_ca_refused(void **state)
{
    (void)state;
    char dsn[1024];
    hx_proc relay;

    dsn_with_ca(dsn, sizeof(dsn), "other.crt");
    const char *args[] = {
        "run", "-d", dsn, "-b", broker.bootstraps, "--slot", "tls_slot2", "--create-slot", NULL};
    assert_int_equal(hx_relay_start(&relay, "tls-bad", args), 0);
    assert_int_equal(hx_proc_wait(&relay, 30000), 1);
    char *log = hx_proc_stderr(&relay);
    assert_non_null(strstr(log, "certificate verify failed"));
    free(log);
    char n[16] = "";
    assert_int_equal(hx_query1(conn, n, sizeof(n),
                               "SELECT count(*) FROM pg_replication_slots WHERE slot_name = "
                               "'tls_slot2'"),
                     1);
    assert_string_equal(n, "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verify_full_streams),
        cmocka_unit_test(test_wrong_ca_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
