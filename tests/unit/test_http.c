/*
 * Unit tests for cdc/http: address parsing, and the server on an ephemeral
 * loopback port driven with plain sockets — routes, methods, HEAD, bodies,
 * malformed and oversize requests, /healthz going stale when snapshots
 * stop, http_server_update()'s rendering, and idle and slow clients: probes
 * beside 1,000 of them, the request-head deadline and the connection limits.
 *
 * Only the idle and slow client tests assert on time (a probe answered
 * within a second, slots freed by the head deadline); elsewhere waits for a
 * state change poll until it happens (bounded only so that a broken server
 * fails instead of hanging).
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
#include <sys/resource.h>
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

/* ---- idle and slow clients ------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A non-blocking connection to 127.0.0.1:port from source address src
 * (any 127.x.y.z: the whole block is loopback), not waited for; -1 when
 * the socket cannot be made. */
static int open_from(const char *src, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return -1;
    inet_pton(AF_INET, src, &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * GET path from src, the whole exchange bounded by limit_ms.  Returns the
 * status (0: closed without one, -1: no answer within limit_ms) and the
 * time it took in *ms.
 */
static int timed_get(const char *src, uint16_t port, const char *path, int limit_ms, int64_t *ms)
{
    char req[256], buf[8192];
    int64_t t0 = now_ms(), left;
    size_t off = 0, got = 0;
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    int fd = open_from(src, port), status = -1;

    if (fd < 0)
        fail_msg("cannot open a probe connection: %s", strerror(errno));
    while ((left = limit_ms - (now_ms() - t0)) > 0) {
        struct pollfd p = {.fd = fd, .events = off < (size_t)n ? POLLOUT : POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        if (off < (size_t)n) {
            ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINPROGRESS) {
                status = 0;
                break;
            }
            if (w > 0)
                off += (size_t)w;
            continue;
        }
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r < 0 && errno == EAGAIN)
            continue;
        if (r <= 0 || got + (size_t)r == sizeof(buf) - 1) {
            buf[got] = '\0';
            if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
                status = 0;
            break;
        }
        got += (size_t)r;
    }
    *ms = now_ms() - t0;
    close(fd);
    return status;
}

/* Whether the server closed fd (EOF or reset); drains what it sent. */
static bool closed_by_server(int fd)
{
    char buf[512];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (r > 0)
            continue;
        return r == 0 || (errno != EAGAIN && errno != EINTR);
    }
}

enum { IDLE, HALF_LINE, TRICKLE };

/* Open n connections from src: a third send nothing, a third half a
 * request line, a third a request line and then a header one byte at a
 * time (trickle()). */
static void open_slow(int *fds, int n, const char *src, uint16_t port)
{
    for (int i = 0; i < n; i++) {
        fds[i] = open_from(src, port);
        assert_true(fds[i] >= 0);
    }
    /* let the connects complete before writing into them */
    sleep_ms(50);
    for (int i = 0; i < n; i++) {
        if (i % 3 == HALF_LINE)
            (void)send(fds[i], "GET /hea", 8, MSG_NOSIGNAL);
        else if (i % 3 == TRICKLE)
            (void)send(fds[i], "GET /healthz HTTP/1.1\r\nX-Slow: ", 31, MSG_NOSIGNAL);
    }
}

static void trickle(const int *fds, int n)
{
    for (int i = TRICKLE; i < n; i += 3)
        (void)send(fds[i], "a", 1, MSG_NOSIGNAL);
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

#define SLOW_CONNECTIONS 1000
#define PROBE_LIMIT_MS 1000

/* Both ends of n connections live in this process (main() raises the
 * limit): skip, saying so, where the hard limit does not allow it. */
static void need_fds(int n)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)(2 * n + 64)) {
        print_message("skipped: needs %d open files, RLIMIT_NOFILE is %llu\n", 2 * n + 64,
                      (unsigned long long)rl.rlim_cur);
        skip();
    }
}

/*
 * 1,000 idle and slow connections (idle, half a request line, a header
 * trickling in a byte at a time) are open: every probe of /healthz,
 * /readyz and /metrics is answered within a second.  Then the request-head
 * deadline: every one of them is closed by the server by
 * HTTP_HEAD_DEADLINE_MS (plus the reaper's pass), the trickling ones too,
 * although they never went idle — before the idle timeout could have.
 */
static void test_many_slow_connections(void **state)
{
    (void)state;
    static const char *const paths[] = {"/healthz", "/readyz", "/metrics"};
    static int fds[SLOW_CONNECTIONS];
    need_fds(SLOW_CONNECTIONS);
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    int64_t t_open, worst = 0, ms;
    int probes = 0, open_count;

    publish(h, METRICS_DOC, STATUS_DOC, true);
    assert_true(http_server_connection_limit(h) > SLOW_CONNECTIONS);
    t_open = now_ms();
    open_slow(fds, SLOW_CONNECTIONS, "127.0.0.1", port);
    /* probe while they are all held: until shortly before the deadline */
    while (now_ms() - t_open < HTTP_HEAD_DEADLINE_MS - 800) {
        int st = timed_get("127.0.0.1", port, paths[probes % 3], 5000, &ms);
        if (st != 200 || ms > PROBE_LIMIT_MS)
            fail_msg("probe %d of %s beside %d slow connections: status %d after %lld ms", probes,
                     paths[probes % 3], SLOW_CONNECTIONS, st, (long long)ms);
        if (ms > worst)
            worst = ms;
        probes++;
        trickle(fds, SLOW_CONNECTIONS);
        sleep_ms(100);
    }
    assert_true(probes >= 6);
    /* the server still holds them all (none closed early) */
    open_count = 0;
    for (int i = 0; i < SLOW_CONNECTIONS; i++)
        open_count += !closed_by_server(fds[i]);
    assert_int_equal(open_count, SLOW_CONNECTIONS);
    print_message("%d probes beside %d slow connections, slowest %lld ms\n", probes,
                  SLOW_CONNECTIONS, (long long)worst);

    /* keep trickling past the deadline: all closed before the idle timeout */
    while (now_ms() - t_open < HTTP_HEAD_DEADLINE_MS + 1000) {
        trickle(fds, SLOW_CONNECTIONS);
        sleep_ms(200);
    }
    assert_true(now_ms() - t_open < HTTP_TIMEOUT_S * 1000);
    open_count = 0;
    for (int i = 0; i < SLOW_CONNECTIONS; i++)
        open_count += !closed_by_server(fds[i]);
    assert_int_equal(open_count, 0);
    close_all(fds, SLOW_CONNECTIONS);
    http_server_free(h);
}

/*
 * At the limits.  One client address holds at most HTTP_PER_IP_CONNECTIONS
 * (more are closed at once) and a probe from another address is answered
 * beside them; with every slot taken (two addresses) a probe waits in the
 * backlog and is answered once the head deadline frees slots — not never.
 */
static void test_connection_limits(void **state)
{
    (void)state;
    static int a[HTTP_PER_IP_CONNECTIONS + 16], b[HTTP_MAX_CONNECTIONS];
    int na = HTTP_PER_IP_CONNECTIONS + 16, nb = HTTP_MAX_CONNECTIONS - HTTP_PER_IP_CONNECTIONS;
    need_fds(HTTP_MAX_CONNECTIONS + 16);
    http_server *h = start(60000);
    uint16_t port = http_server_port(h);
    int64_t ms, t_full;
    int refused = 0, st;

    publish(h, METRICS_DOC, STATUS_DOC, true);
    assert_int_equal(http_server_connection_limit(h), HTTP_MAX_CONNECTIONS);
    open_slow(a, na, "127.0.0.1", port);
    sleep_ms(300);
    for (int i = 0; i < na; i++)
        refused += closed_by_server(a[i]);
    /* the connections past the per-address limit were closed at once */
    assert_int_equal(refused, na - HTTP_PER_IP_CONNECTIONS);
    st = timed_get("127.0.0.2", port, "/healthz", 5000, &ms);
    assert_int_equal(st, 200);
    assert_true(ms <= PROBE_LIMIT_MS);

    /* every slot taken: the probe queues, and is served within the deadline */
    open_slow(b, nb, "127.0.0.2", port);
    sleep_ms(300);
    t_full = now_ms();
    st = timed_get("127.0.0.3", port, "/healthz", HTTP_HEAD_DEADLINE_MS + 5000, &ms);
    print_message("probe with every slot taken: status %d after %lld ms\n", st, (long long)ms);
    assert_int_equal(st, 200);
    assert_true(now_ms() - t_full <= HTTP_HEAD_DEADLINE_MS + 1500);
    close_all(a, na);
    close_all(b, nb);
    http_server_free(h);
}

static void test_connection_limit_sizing(void **state)
{
    (void)state;
    assert_int_equal(http_connection_limit(1048576), HTTP_MAX_CONNECTIONS);
    assert_int_equal(http_connection_limit(HTTP_MAX_CONNECTIONS + HTTP_FD_RESERVE),
                     HTTP_MAX_CONNECTIONS);
    assert_int_equal(http_connection_limit(HTTP_MAX_CONNECTIONS + HTTP_FD_RESERVE - 1),
                     HTTP_MAX_CONNECTIONS - 1);
    assert_int_equal(http_connection_limit(1024), 1024 - HTTP_FD_RESERVE);
    assert_int_equal(http_connection_limit(HTTP_FD_RESERVE + 16), 16);
    assert_int_equal(http_connection_limit(100), 16);
    assert_int_equal(http_connection_limit(0), 16);
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
        cmocka_unit_test(test_connection_limit_sizing),
        cmocka_unit_test(test_many_slow_connections),
        cmocka_unit_test(test_connection_limits),
        cmocka_unit_test(test_healthz_goes_stale),
        cmocka_unit_test(test_update_renders_metrics),
        cmocka_unit_test(test_bind_errors_and_shutdown),
        cmocka_unit_test(test_ipv6_loopback),
    };
    struct rlimit rl;

    signal(SIGPIPE, SIG_IGN);
    /* both ends of a few thousand connections live in this process */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 8192 &&
        (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= 8192)) {
        rl.rlim_cur = 8192;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
