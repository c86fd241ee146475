/*
 * Unit tests for cdc/http: address parsing, and the server on an ephemeral
 * loopback port driven with plain sockets — routes, methods, HEAD, bodies,
 * malformed and oversize requests, the connection limit, /healthz going
 * stale when snapshots stop, and http_server_update()'s rendering.
 *
 * No assertion depends on timing: waits for a state change poll until it
 * happens (bounded only so that a broken server fails instead of hanging).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cdc/http.h"
#include "cdc/metrics.h"

/* Only so a broken server fails the test instead of hanging it. */
#define IO_LIMIT_MS 30000

typedef struct resp {
    int status; /* 0: the connection closed without a status line */
    char head[4096];
    char *body;
    size_t body_len;
    char raw[65536];
    size_t raw_len;
} resp;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int connect_to(int family, uint16_t port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a);
    }
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send req (len bytes; a failed send is not an error: the server may close
 * early) and read until the server closes.  Fills r; returns 0, or -1 when
 * the connection could not be made or the server never closed. */
static int exchange_fd(int fd, const char *req, size_t len, resp *r)
{
    size_t off = 0;
    memset(r, 0, sizeof(*r));
    while (off < len) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, IO_LIMIT_MS);
        if (pr == 0) {
            close(fd);
            return -1;
        }
        if (pr < 0 && errno == EINTR)
            continue;
        ssize_t n = recv(fd, r->raw + r->raw_len, sizeof(r->raw) - 1 - r->raw_len, 0);
        if (n <= 0) /* EOF, or ECONNRESET from a server that refused the rest */
            break;
        r->raw_len += (size_t)n;
        if (r->raw_len == sizeof(r->raw) - 1)
            break;
    }
    close(fd);
    r->raw[r->raw_len] = '\0';
    if (sscanf(r->raw, "HTTP/1.%*d %d", &r->status) != 1)
        r->status = 0;
    char *sep = strstr(r->raw, "\r\n\r\n");
    if (sep) {
        size_t hl = (size_t)(sep - r->raw);
        if (hl >= sizeof(r->head))
            hl = sizeof(r->head) - 1;
        memcpy(r->head, r->raw, hl);
        r->body = sep + 4;
        r->body_len = r->raw_len - (size_t)(r->body - r->raw);
    }
    return 0;
}

static int exchange(uint16_t port, const char *req, size_t len, resp *r)
{
    int fd = connect_to(AF_INET, port);
    if (fd < 0)
        return -1;
    return exchange_fd(fd, req, len, r);
}

static int request(uint16_t port, const char *method, const char *path, resp *r)
{
    char req[1024];
    int n =
        snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                 method, path);
    return exchange(port, req, (size_t)n, r);
}

static int get_status(uint16_t port, const char *path)
{
    static resp r;
    if (request(port, "GET", path, &r) != 0)
        return -1;
    return r.status;
}

/* Case-insensitive lookup of a header's value in r->head. */
static const char *header(const resp *r, const char *name, char *buf, size_t len)
{
    const char *p = r->head;
    size_t nl = strlen(name);
    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            size_t vl = e ? (size_t)(e - v) : strlen(v);
            if (vl >= len)
                vl = len - 1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return buf;
        }
    }
    return NULL;
}

static http_server *start(int stale_ms)
{
    char err[256];
    http_server *h = http_server_start("127.0.0.1:0", stale_ms, err, sizeof(err));
    if (!h)
        fail_msg("cannot start: %s", err);
    assert_true(http_server_port(h) != 0);
    return h;
}

static void publish(http_server *h, const char *text, const char *json, bool ready)
{
    char *t = strdup(text), *j = strdup(json);
    assert_non_null(t);
    assert_non_null(j);
    http_server_publish(h, t, strlen(t), j, strlen(j), ready);
}

#define METRICS_DOC "# TYPE outbox_relay_x gauge\noutbox_relay_x 1\n"
#define STATUS_DOC "{\"state\":\"streaming\"}"

/* ---- address parsing ------------------------------------------------------ */

static void test_parse_addr(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        int family;
        const char *addr;
        int port;
    } good[] = {
        {"127.0.0.1:9187", AF_INET, "127.0.0.1", 9187},
        {"[::1]:9187", AF_INET6, "::1", 9187},
        {"[::]:0", AF_INET6, "::", 0},
        {"0.0.0.0:80", AF_INET, "0.0.0.0", 80},
        {":9187", AF_INET, "127.0.0.1", 9187},
        {"9187", AF_INET, "127.0.0.1", 9187},
        {"localhost:65535", AF_INET, "127.0.0.1", 65535},
    };
    static const char *const bad[] = {
        "",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:80x",
        "127.0.0.1: 80",
        "[::1:80",
        "[::1]80",
        "::1:80",
        "db.example:80",
        "[127.0.0.1]:80",
        "1.2.3:80",
        "[::1]:",
        "127.0.0.1:000080",
    };
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256], txt[64];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (http_parse_addr(good[i].spec, &ss, &len, err, sizeof(err)) != 0)
            fail_msg("\"%s\" refused: %s", good[i].spec, err);
        assert_int_equal(ss.ss_family, good[i].family);
        if (good[i].family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            assert_int_equal(len, sizeof(*a));
            assert_int_equal(ntohs(a->sin_port), good[i].port);
            inet_ntop(AF_INET, &a->sin_addr, txt, sizeof(txt));
        } else {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            assert_int_equal(len, sizeof(*a));
            assert_int_equal(ntohs(a->sin6_port), good[i].port);
            inet_ntop(AF_INET6, &a->sin6_addr, txt, sizeof(txt));
        }
        assert_string_equal(txt, good[i].addr);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (http_parse_addr(bad[i], &ss, &len, err, sizeof(err)) == 0)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_non_null(strstr(err, "--http"));
    }
}

/* ---- routes ------------------------------------------------------------------ */

static void test_before_first_snapshot(void **state)
{
    (void)state;
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    assert_int_equal(get_status(port, "/healthz"), 503);
    assert_int_equal(get_status(port, "/readyz"), 503);
    assert_int_equal(get_status(port, "/metrics"), 503);
    assert_int_equal(get_status(port, "/status"), 503);
    assert_int_equal(get_status(port, "/nope"), 404);
    http_server_free(h);
}

static void test_routes(void **state)
{
    (void)state;
    static resp r;
    char v[128];
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);

    publish(h, METRICS_DOC, STATUS_DOC, true);

    assert_int_equal(request(port, "GET", "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(header(&r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "text/plain; version=0.0.4; charset=utf-8");
    assert_int_equal(r.body_len, strlen(METRICS_DOC));
    assert_memory_equal(r.body, METRICS_DOC, r.body_len);

    assert_int_equal(request(port, "GET", "/status", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(header(&r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    assert_int_equal(r.body_len, strlen(STATUS_DOC));
    assert_memory_equal(r.body, STATUS_DOC, r.body_len);

    assert_int_equal(get_status(port, "/healthz"), 200);
    assert_int_equal(get_status(port, "/readyz"), 200);
    assert_int_equal(get_status(port, "/metrics?name[]=x"), 200); /* query ignored */
    assert_int_equal(get_status(port, "/metrics/"), 404);
    assert_int_equal(get_status(port, "/"), 404);
    assert_int_equal(get_status(port, "/healthz/../metrics"), 404);

    /* a new snapshot replaces the old one */
    publish(h, "# TYPE outbox_relay_y gauge\noutbox_relay_y 2\n", STATUS_DOC, false);
    assert_int_equal(request(port, "GET", "/metrics", &r), 0);
    assert_non_null(strstr(r.body, "outbox_relay_y 2"));
    assert_null(strstr(r.body, "outbox_relay_x"));
    assert_int_equal(get_status(port, "/readyz"), 503);
    assert_int_equal(get_status(port, "/healthz"), 200);
    http_server_free(h);
}

static void test_methods(void **state)
{
    (void)state;
    static resp r;
    char v[128];
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    static const char *const methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"};

    publish(h, METRICS_DOC, STATUS_DOC, true);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        assert_int_equal(request(port, methods[i], "/metrics", &r), 0);
        if (r.status != 405)
            fail_msg("%s answered %d", methods[i], r.status);
        assert_non_null(header(&r, "Allow", v, sizeof(v)));
        assert_string_equal(v, "GET, HEAD");
    }
    assert_int_equal(request(port, "POST", "/nope", &r), 0);
    assert_int_equal(r.status, 405);

    /* HEAD: the headers of GET, no body */
    assert_int_equal(request(port, "HEAD", "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_non_null(header(&r, "Content-Length", v, sizeof(v)));
    assert_int_equal(atoi(v), strlen(METRICS_DOC));
    assert_int_equal(request(port, "HEAD", "/nope", &r), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(r.body_len, 0);
    http_server_free(h);
}

static void test_request_body_refused(void **state)
{
    (void)state;
    static resp r;
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    static const char with_length[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                      "Connection: close\r\n\r\nhello";
    static const char chunked[] =
        "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    publish(h, METRICS_DOC, STATUS_DOC, true);
    assert_int_equal(exchange(port, with_length, sizeof(with_length) - 1, &r), 0);
    assert_int_equal(r.status, 413);
    assert_int_equal(exchange(port, chunked, sizeof(chunked) - 1, &r), 0);
    assert_int_equal(r.status, 413);
    assert_int_equal(get_status(port, "/metrics"), 200);
    http_server_free(h);
}

/* A refused request gets a 4xx/5xx or a closed connection, never a 2xx;
 * and the server goes on serving. */
static void expect_refused(uint16_t port, const char *what, const char *req, size_t len)
{
    static resp r;
    if (exchange(port, req, len, &r) != 0)
        fail_msg("%s: no answer and no close", what);
    if (r.status != 0 && r.status < 400)
        fail_msg("%s: answered %d", what, r.status);
    assert_int_equal(get_status(port, "/healthz"), 200);
}

static void test_malformed_requests(void **state)
{
    (void)state;
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    static const char junk[] = "\x01\x02\xff\xfe\r\n\r\n";
    static const char *const reqs[] = {
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET /metrics HTTP/1.1\r\n", /* cut short: the client half-closes */
    };

    publish(h, METRICS_DOC, STATUS_DOC, true);
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        int fd = connect_to(AF_INET, port);
        static resp r;
        assert_true(fd >= 0);
        if (i == sizeof(reqs) / sizeof(reqs[0]) - 1) {
            assert_int_equal(send(fd, reqs[i], strlen(reqs[i]), MSG_NOSIGNAL),
                             (ssize_t)strlen(reqs[i]));
            shutdown(fd, SHUT_WR);
            assert_int_equal(exchange_fd(fd, "", 0, &r), 0);
        } else {
            assert_int_equal(exchange_fd(fd, reqs[i], strlen(reqs[i]), &r), 0);
        }
        if (r.status != 0 && r.status < 400)
            fail_msg("request %zu answered %d", i, r.status);
        assert_int_equal(get_status(port, "/healthz"), 200);
    }
    expect_refused(port, "binary junk", junk, sizeof(junk) - 1);
    http_server_free(h);
}

static void test_oversize_requests(void **state)
{
    (void)state;
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    size_t big = 64 * 1024;
    char *req = malloc(big + 256);
    int n;

    assert_non_null(req);
    publish(h, METRICS_DOC, STATUS_DOC, true);

    /* one huge header */
    n = sprintf(req, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', big);
    n += (int)big;
    n += sprintf(req + n, "\r\n\r\n");
    expect_refused(port, "oversize header", req, (size_t)n);

    /* many small headers past the memory limit */
    n = sprintf(req, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
    while ((size_t)n < big)
        n += sprintf(req + n, "X-H%d: v\r\n", n);
    n += sprintf(req + n, "\r\n");
    expect_refused(port, "too many headers", req, (size_t)n);

    /* a huge request target */
    n = sprintf(req, "GET /");
    memset(req + n, 'b', big);
    n += (int)big;
    n += sprintf(req + n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_refused(port, "oversize URL", req, (size_t)n);

    /* a request head just under the limit is still served */
    n = sprintf(req, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ");
    memset(req + n, 'c', HTTP_CONNECTION_MEMORY / 4);
    n += HTTP_CONNECTION_MEMORY / 4;
    n += sprintf(req + n, "\r\n\r\n");
    static resp r;
    assert_int_equal(exchange(port, req, (size_t)n, &r), 0);
    assert_int_equal(r.status, 200);
    free(req);
    http_server_free(h);
}

static void test_connection_limit(void **state)
{
    (void)state;
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    int fds[HTTP_MAX_CONNECTIONS + 8];
    int n = (int)(sizeof(fds) / sizeof(fds[0])), status = -1;

    publish(h, METRICS_DOC, STATUS_DOC, true);
    /* idle connections up to one below the limit: a request is still served
     * beside them (libmicrohttpd multiplexes; one slow client blocks no one) */
    for (int i = 0; i < HTTP_MAX_CONNECTIONS - 1; i++) {
        fds[i] = connect_to(AF_INET, port);
        assert_true(fds[i] >= 0);
    }
    assert_int_equal(get_status(port, "/healthz"), 200);
    /* past the limit: the extra connections wait in the listen backlog
     * (libmicrohttpd stops accepting) — nothing falls over */
    for (int i = HTTP_MAX_CONNECTIONS - 1; i < n; i++) {
        fds[i] = connect_to(AF_INET, port);
        assert_true(fds[i] >= 0);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    /* once they are gone the server serves again (it notices the closes
     * asynchronously, so poll until it does) */
    for (int tries = 0; tries < 3000 && status != 200; tries++) {
        status = get_status(port, "/healthz");
        if (status != 200)
            sleep_ms(10);
    }
    assert_int_equal(status, 200);
    http_server_free(h);
}

static void test_healthz_goes_stale(void **state)
{
    (void)state;
    http_server *h = start(50);
    uint16_t port = http_server_port(h);
    int status = 0;

    assert_int_equal(get_status(port, "/healthz"), 503); /* nothing published yet */
    publish(h, METRICS_DOC, STATUS_DOC, true);
    /* no more snapshots: within the bound /healthz must turn 503 and stay so */
    for (int tries = 0; tries < 3000 && status != 503; tries++) {
        status = get_status(port, "/healthz");
        if (status != 503)
            sleep_ms(10);
    }
    assert_int_equal(status, 503);
    assert_int_equal(get_status(port, "/healthz"), 503);
    /* the last snapshot is still served: a stuck loop can be looked at */
    assert_int_equal(get_status(port, "/metrics"), 200);
    assert_int_equal(get_status(port, "/readyz"), 200);
    http_server_free(h);
}

static void test_update_renders_metrics(void **state)
{
    (void)state;
    static resp r;
    json_error_t jerr;
    json_t *o;
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    metrics *m = metrics_new("slot_a", metrics_now_us());
    assert_non_null(m);

    metrics_set_state(m, METRICS_STREAMING);
    m->broker_reachable = true;
    m->confirmed_lsn = 0x16B3748;
    metrics_published(m, "outbox.event.order");
    assert_int_equal(http_server_update(h, m, 1000, metrics_now_us()), 0);
    assert_int_equal(get_status(port, "/readyz"), 200);
    assert_int_equal(request(port, "GET", "/metrics", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "outbox_relay_state{state=\"streaming\"} 1\n"));
    assert_non_null(
        strstr(r.body, "outbox_relay_events_published_total{topic=\"outbox.event.order\"} 1\n"));
    assert_int_equal(request(port, "GET", "/status", &r), 0);
    o = json_loads(r.body, 0, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "confirmed_lsn")), "0/16B3748");
    assert_string_equal(json_string_value(json_object_get(o, "slot")), "slot_a");
    json_decref(o);

    /* within the update interval nothing is rendered again */
    metrics_set_state(m, METRICS_RECONNECTING);
    assert_int_equal(http_server_update(h, m, 1000 + HTTP_UPDATE_INTERVAL_MS - 1, 0), 0);
    assert_int_equal(get_status(port, "/readyz"), 200);
    assert_int_equal(http_server_update(h, m, 1000 + HTTP_UPDATE_INTERVAL_MS, 0), 0);
    assert_int_equal(get_status(port, "/readyz"), 503);
    assert_int_equal(request(port, "GET", "/status", &r), 0);
    assert_non_null(strstr(r.body, "\"state\":\"reconnecting\""));
    metrics_free(m);
    http_server_free(h);
}

static void test_bind_errors_and_shutdown(void **state)
{
    (void)state;
    char err[256], spec[64];
    http_server *h = start(60000), *h2;
    uint16_t port = http_server_port(h);

    snprintf(spec, sizeof(spec), "127.0.0.1:%u", port);
    h2 = http_server_start(spec, 1000, err, sizeof(err));
    assert_null(h2);
    assert_non_null(strstr(err, "in use"));
    assert_null(http_server_start("nonsense", 1000, err, sizeof(err)));
    assert_non_null(strstr(err, "malformed --http"));

    http_server_free(h);
    /* the socket is closed with the server */
    assert_int_equal(connect_to(AF_INET, port), -1);
    http_server_free(NULL);
}

static void test_ipv6_loopback(void **state)
{
    (void)state;
    char err[256];
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    if (probe < 0)
        skip();
    close(probe);
    http_server *h = http_server_start("[::1]:0", 60000, err, sizeof(err));
    if (!h && strstr(err, "Cannot assign")) /* no ::1 on this machine */
        skip();
    if (!h)
        fail_msg("cannot start on [::1]: %s", err);
    publish(h, METRICS_DOC, STATUS_DOC, true);
    int fd = connect_to(AF_INET6, http_server_port(h));
    assert_true(fd >= 0);
    static resp r;
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(exchange_fd(fd, req, sizeof(req) - 1, &r), 0);
    assert_int_equal(r.status, 200);
    /* bound to ::1 only, not to IPv4 */
    assert_int_equal(connect_to(AF_INET, http_server_port(h)), -1);
    http_server_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_before_first_snapshot),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_request_body_refused),
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_oversize_requests),
        cmocka_unit_test(test_connection_limit),
        cmocka_unit_test(test_healthz_goes_stale),
        cmocka_unit_test(test_update_renders_metrics),
        cmocka_unit_test(test_bind_errors_and_shutdown),
        cmocka_unit_test(test_ipv6_loopback),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
