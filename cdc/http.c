#include "cdc/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "publish/clock.h"
#include "cdc/log.h"

/* Connections past the limit wait here (the kernel caps it at somaxconn). */
#define LISTEN_BACKLOG 1024
/* How often the reaper looks for request heads past their deadline. */
#define REAP_INTERVAL_MS 250

/*
 * A connection waiting for a request head, in the reaper's list (oldest
 * first).  Allocated when libmicrohttpd opens the connection, freed when
 * it closes it; in the list between a connection opening or a response
 * finishing and the next request head arriving.
 */
struct waiting {
    struct waiting *prev, *next;
    MHD_socket fd;
    int64_t since_ms; /* CLOCK_MONOTONIC */
    bool listed;
};

struct http_server {
    struct MHD_Daemon *daemon;
    uint16_t port;
    int stale_ms;

    /* the snapshot: written by the loop, read by the server thread */
    pthread_mutex_t mu;
    char *metrics_text;
    size_t metrics_len;
    char *status_json;
    size_t status_len;
    bool ready;
    bool have_snapshot;
    int64_t published_ms; /* CLOCK_MONOTONIC */

    /* the reaper: connections waiting for a request head, under wmu */
    pthread_mutex_t wmu;
    pthread_cond_t wcond;
    struct waiting *whead, *wtail;
    bool stopping;
    bool reaper_started;
    pthread_t reaper;
    unsigned conn_limit;

    /* the loop thread's own bookkeeping for http_server_update() */
    bool updated;
    int64_t last_update_ms;
};

/* Decimal port, nothing else. */
static int parse_port(const char *s, uint16_t *port)
{
    unsigned long v = 0;
    if (!*s || strlen(s) > 5)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int http_parse_addr(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
                    size_t errlen)
{
    char host[64];
    const char *port_text;
    uint16_t port;

    memset(ss, 0, sizeof(*ss));
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host))
            goto bad;
        memcpy(host, spec + 1, (size_t)(close - spec - 1));
        host[close - spec - 1] = '\0';
        port_text = close + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon) {
            host[0] = '\0';
            port_text = spec;
        } else {
            if (memchr(spec, ':', (size_t)(colon - spec)))
                goto bad; /* an IPv6 address without brackets */
            if ((size_t)(colon - spec) >= sizeof(host))
                goto bad;
            memcpy(host, spec, (size_t)(colon - spec));
            host[colon - spec] = '\0';
            port_text = colon + 1;
        }
        if (host[0] == '\0' || strcmp(host, "localhost") == 0)
            snprintf(host, sizeof(host), "127.0.0.1");
    }
    if (parse_port(port_text, &port) != 0)
        goto bad;
    if (spec[0] == '[') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
            goto bad;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *sslen = sizeof(*a6);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
            goto bad;
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *sslen = sizeof(*a4);
    }
    return 0;
bad:
    snprintf(err, errlen,
             "malformed --http address \"%s\": give ADDR:PORT with a numeric address, e.g. "
             "127.0.0.1:9187 or [::1]:9187 (port 0-65535)",
             spec);
    return -1;
}

/* libmicrohttpd's own complaints (bad requests, limits reached) are about
 * clients, not about the relay: debug level. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;
    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    log_debug("http: %s", line);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             const char *body, size_t len)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        (status == MHD_HTTP_METHOD_NOT_ALLOWED &&
         MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* /metrics or /status from the snapshot; the copy into the response is
 * made under the mutex so the loop may replace the snapshot at any time. */
static enum MHD_Result reply_snapshot(http_server *h, struct MHD_Connection *c, bool want_metrics)
{
    enum MHD_Result ret;

    pthread_mutex_lock(&h->mu);
    if (!h->have_snapshot)
        ret = reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "starting\n");
    else if (want_metrics)
        ret = reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", h->metrics_text,
                    h->metrics_len);
    else
        ret = reply(c, MHD_HTTP_OK, "application/json", h->status_json, h->status_len);
    pthread_mutex_unlock(&h->mu);
    return ret;
}

static bool has_body(struct MHD_Connection *c)
{
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return te != NULL || (cl != NULL && strcmp(cl, "0") != 0);
}

/* ---- request-head deadline ---------------------------------------------- */

/* libmicrohttpd's idle timeout restarts with every byte, so a client that
 * sends one byte a second would hold its slot for ever: the reaper thread
 * shuts down the socket of a connection whose request head is late, and
 * libmicrohttpd, seeing it end, closes the connection itself. */

static void waiting_unlist(http_server *h, struct waiting *w)
{
    if (!w->listed)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        h->whead = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        h->wtail = w->prev;
    w->prev = w->next = NULL;
    w->listed = false;
}

/* (Re)start w's deadline: at the tail, so the list stays oldest first. */
static void waiting_list(http_server *h, struct waiting *w)
{
    waiting_unlist(h, w);
    w->since_ms = obx_now_ms();
    w->prev = h->wtail;
    w->next = NULL;
    if (h->wtail)
        h->wtail->next = w;
    else
        h->whead = w;
    h->wtail = w;
    w->listed = true;
}

static struct waiting *waiting_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

/*
 * Server thread: a connection opens (its deadline starts) or closes.
 * libmicrohttpd reports the close before it closes the socket, so once the
 * entry is gone (under wmu) the reaper can no longer reach its descriptor,
 * which may then be reused.
 */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *h = cls;
    struct waiting *w = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        w = calloc(1, sizeof(*w));
        if (!w || !ci) {
            free(w); /* no deadline for this one; the idle timeout still holds */
            *socket_context = NULL;
            return;
        }
        w->fd = ci->connect_fd;
        pthread_mutex_lock(&h->wmu);
        waiting_list(h, w);
        pthread_mutex_unlock(&h->wmu);
        *socket_context = w;
        return;
    }
    if (!w)
        return;
    pthread_mutex_lock(&h->wmu);
    waiting_unlist(h, w);
    pthread_mutex_unlock(&h->wmu);
    free(w);
    *socket_context = NULL;
}

/* Server thread: a response went out; on a kept-alive connection the next
 * request head has the same deadline. */
static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *h = cls;
    struct waiting *w = waiting_of(c);
    (void)req_cls;

    if (!w || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        return;
    pthread_mutex_lock(&h->wmu);
    waiting_list(h, w);
    pthread_mutex_unlock(&h->wmu);
}

static void *reaper_main(void *arg)
{
    http_server *h = arg;

    pthread_mutex_lock(&h->wmu);
    while (!h->stopping) {
        struct timespec until;
        int64_t now = obx_now_ms();

        while (h->whead && now - h->whead->since_ms >= HTTP_HEAD_DEADLINE_MS) {
            struct waiting *w = h->whead;

            /* Not close(): the descriptor stays libmicrohttpd's to close. */
            shutdown(w->fd, SHUT_RDWR);
            waiting_unlist(h, w);
        }
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += REAP_INTERVAL_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->wcond, &h->wmu, &until);
    }
    pthread_mutex_unlock(&h->wmu);
    return NULL;
}

static void stop_reaper(http_server *h)
{
    if (!h->reaper_started)
        return;
    pthread_mutex_lock(&h->wmu);
    h->stopping = true;
    pthread_cond_signal(&h->wcond);
    pthread_mutex_unlock(&h->wmu);
    pthread_join(h->reaper, NULL);
    h->reaper_started = false;
}

/* ---- limits --------------------------------------------------------------- */

unsigned http_connection_limit(uint64_t nofile)
{
    if (nofile >= (uint64_t)HTTP_MAX_CONNECTIONS + HTTP_FD_RESERVE)
        return HTTP_MAX_CONNECTIONS;
    if (nofile < (uint64_t)HTTP_FD_RESERVE + 16)
        return 16;
    return (unsigned)(nofile - HTTP_FD_RESERVE);
}

/* Raise the soft RLIMIT_NOFILE towards what the limit needs; the limit
 * that fits the result. */
static unsigned size_connection_limit(void)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)HTTP_MAX_CONNECTIONS + HTTP_FD_RESERVE;
    unsigned limit;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return http_connection_limit(0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        struct rlimit raised = rl;

        raised.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
        else
            log_warn("http: cannot raise the open-file limit from %llu to %llu: %s",
                     (unsigned long long)rl.rlim_cur, (unsigned long long)raised.rlim_cur,
                     strerror(errno));
    }
    limit =
        http_connection_limit(rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur);
    if (limit < HTTP_MAX_CONNECTIONS)
        log_warn("http: serving at most %u connections (open-file limit %llu, %d kept for the "
                 "rest; raise LimitNOFILE / ulimit -n to %llu for %d)",
                 limit, (unsigned long long)rl.rlim_cur, HTTP_FD_RESERVE, (unsigned long long)want,
                 HTTP_MAX_CONNECTIONS);
    return limit;
}

/*
 * Every request is answered on the first call, once its head is read: no
 * route takes a body, so a body is never read (libmicrohttpd closes the
 * connection after the reply instead).
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    http_server *h = cls;
    bool healthy, ready, have;
    (void)version;
    (void)upload_data;
    (void)req_cls;

    if (*upload_data_size != 0) {
        /* Not expected (a reply is queued on the first call); drop it. */
        *upload_data_size = 0;
        return MHD_NO;
    }
    /* The head is in: the deadline is met. */
    {
        struct waiting *w = waiting_of(c);

        if (w) {
            pthread_mutex_lock(&h->wmu);
            waiting_unlist(h, w);
            pthread_mutex_unlock(&h->wmu);
        }
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (has_body(c))
        return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request bodies are not accepted\n");
    if (strcmp(url, "/metrics") == 0)
        return reply_snapshot(h, c, true);
    if (strcmp(url, "/status") == 0)
        return reply_snapshot(h, c, false);

    pthread_mutex_lock(&h->mu);
    have = h->have_snapshot;
    healthy = have && obx_now_ms() - h->published_ms <= h->stale_ms;
    ready = have && h->ready;
    pthread_mutex_unlock(&h->mu);
    if (strcmp(url, "/healthz") == 0)
        return healthy ? reply_text(c, MHD_HTTP_OK, "ok\n")
                       : reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                                    have ? "event loop stalled\n" : "starting\n");
    if (strcmp(url, "/readyz") == 0)
        return ready ? reply_text(c, MHD_HTTP_OK, "ready\n")
                     : reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n");
    return reply_text(c, MHD_HTTP_NOT_FOUND,
                      "not found: try /metrics, /status, /healthz, "
                      "/readyz\n");
}

/* A bound, listening, non-blocking socket for ss; -1 with err. */
static int listen_on(const struct sockaddr_storage *ss, socklen_t sslen, const char *spec,
                     uint16_t *port, char *err, size_t errlen)
{
    int fd, one = 1;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);

    fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket for --http %s: %s", spec, strerror(errno));
        return -1;
    }
    /* SO_REUSEADDR: a restarted relay can bind while old connections sit
     * in TIME_WAIT.  V6ONLY: "[::]:p" means IPv6 only, as written. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (ss->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
        snprintf(err, errlen, "cannot set socket options for --http %s: %s", spec, strerror(errno));
        goto fail;
    }
    if (bind(fd, (const struct sockaddr *)ss, sslen) != 0) {
        snprintf(err, errlen, "cannot bind --http %s: %s", spec, strerror(errno));
        goto fail;
    }
    if (listen(fd, LISTEN_BACKLOG) != 0 || getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        snprintf(err, errlen, "cannot listen on --http %s: %s", spec, strerror(errno));
        goto fail;
    }
    *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    return fd;
fail:
    close(fd);
    return -1;
}

http_server *http_server_start(const char *spec, int stale_ms, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    sigset_t all, old;
    http_server *h;
    int fd, rc;
    unsigned per_ip;
    /* MHD_USE_AUTO: epoll on Linux, so a thousand idle sockets cost the
     * server thread nothing per wake-up. */
    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

    if (http_parse_addr(spec, &ss, &sslen, err, errlen) != 0)
        return NULL;
    h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "out of memory starting --http %s", spec);
        return NULL;
    }
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        snprintf(err, errlen, "cannot create a mutex for --http %s", spec);
        free(h);
        return NULL;
    }
    if (pthread_mutex_init(&h->wmu, NULL) != 0) {
        snprintf(err, errlen, "cannot create a mutex for --http %s", spec);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    if (pthread_cond_init(&h->wcond, NULL) != 0) {
        snprintf(err, errlen, "cannot create a condition variable for --http %s", spec);
        pthread_mutex_destroy(&h->wmu);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    h->stale_ms = stale_ms;
    h->conn_limit = size_connection_limit();
    per_ip = h->conn_limit >= HTTP_MAX_CONNECTIONS ? HTTP_PER_IP_CONNECTIONS
                                                   : (h->conn_limit * 3 + 3) / 4;
    fd = listen_on(&ss, sslen, spec, &h->port, err, errlen);
    if (fd < 0)
        goto fail;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The server and reaper threads inherit this thread's signal mask:
     * block everything while they are created, so SIGINT/SIGTERM/SIGHUP
     * interrupt the loop's poll() rather than land in them. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&h->reaper, NULL, reaper_main, h);
    h->reaper_started = rc == 0;
    if (rc == 0)
        h->daemon = MHD_start_daemon(
            flags, 0, NULL, NULL, on_request, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
            MHD_OPTION_CONNECTION_LIMIT, h->conn_limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTP_TIMEOUT_S,
            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_NOTIFY_COMPLETED,
            on_completed, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot start the HTTP server on --http %s", spec);
        close(fd);
        goto fail;
    }
    return h;
fail:
    stop_reaper(h);
    pthread_cond_destroy(&h->wcond);
    pthread_mutex_destroy(&h->wmu);
    pthread_mutex_destroy(&h->mu);
    free(h);
    return NULL;
}

void http_server_free(http_server *h)
{
    if (!h)
        return;
    stop_reaper(h);
    /* Joins the server thread and closes the listening socket and every
     * connection (each one's waiting entry is freed on its way out). */
    MHD_stop_daemon(h->daemon);
    pthread_cond_destroy(&h->wcond);
    pthread_mutex_destroy(&h->wmu);
    pthread_mutex_destroy(&h->mu);
    free(h->metrics_text);
    free(h->status_json);
    free(h);
}

unsigned http_server_connection_limit(const http_server *h)
{
    return h->conn_limit;
}

uint16_t http_server_port(const http_server *h)
{
    return h->port;
}

void http_server_publish(http_server *h, char *metrics_text, size_t metrics_len, char *status_json,
                         size_t status_len, bool ready)
{
    char *old_metrics, *old_status;

    pthread_mutex_lock(&h->mu);
    old_metrics = h->metrics_text;
    old_status = h->status_json;
    h->metrics_text = metrics_text;
    h->metrics_len = metrics_len;
    h->status_json = status_json;
    h->status_len = status_len;
    h->ready = ready;
    h->have_snapshot = metrics_text != NULL && status_json != NULL;
    h->published_ms = obx_now_ms();
    pthread_mutex_unlock(&h->mu);
    free(old_metrics);
    free(old_status);
}

int http_server_update(http_server *h, const metrics *m, int64_t now_ms, int64_t now_us)
{
    char *text = NULL, *json = NULL;
    size_t tlen = 0, jlen = 0;

    if (h->updated && now_ms - h->last_update_ms < HTTP_UPDATE_INTERVAL_MS)
        return 0;
    if (metrics_render_prometheus(m, now_us, &text, &tlen) != 0 ||
        metrics_render_status(m, now_us, &json, &jlen) != 0) {
        free(text);
        return -1;
    }
    http_server_publish(h, text, tlen, json, jlen, metrics_ready(m));
    h->updated = true;
    h->last_update_ms = now_ms;
    return 0;
}
