/*
 * http — the metrics and health endpoint (--http ADDR:PORT), served by
 * libmicrohttpd in its own thread.
 *
 * That thread never touches the event loop's state: the loop hands over a
 * snapshot (the rendered /metrics text, the /status JSON and readiness) with
 * http_server_update(), and requests are answered from the latest one under
 * a mutex.  Routes: GET or HEAD /metrics, /status, /healthz (200 while
 * snapshots keep coming, 503 once the last is older than the staleness
 * bound: the loop stopped turning), /readyz (200 when the last snapshot said
 * streaming and the broker reachable, else 503).  Anything else: 404 for an
 * unknown path, 405 for another method, 413 for a request with a body;
 * malformed and oversize requests are answered (or dropped) by
 * libmicrohttpd within its per-connection memory limit.
 */
#ifndef CDC_HTTP_H
#define CDC_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cdc/metrics.h"

#include "decode/compiler.h"

/*
 * Limits against idle and slow clients (every connection counts, probes
 * included):
 *
 * HTTP_MAX_CONNECTIONS connections are served at once (fewer when the file
 * descriptor limit is low: see http_connection_limit()); past it new ones
 * wait in the listen backlog until a slot frees.  One client address holds
 * at most HTTP_PER_IP_CONNECTIONS of them (more are closed at once), so one
 * neighbour alone cannot take every slot from the probes.  A request head
 * (request line and headers) must arrive within HTTP_HEAD_DEADLINE_MS of
 * the connection opening or of the previous response, however slowly it
 * trickles in; an idle connection is closed after HTTP_TIMEOUT_S.  So a slot
 * held by a client that sends nothing useful frees within the deadline, and
 * a probe waiting in the backlog gets one.
 */
#define HTTP_MAX_CONNECTIONS 2048
#define HTTP_PER_IP_CONNECTIONS 1536
#define HTTP_HEAD_DEADLINE_MS 3000
#define HTTP_TIMEOUT_S 5
/* File descriptors left for everything else (PostgreSQL, the brokers,
 * logs) when the connection limit is sized from RLIMIT_NOFILE. */
#define HTTP_FD_RESERVE 256
/* Per-connection memory for the request line and headers: a request whose
 * head does not fit is refused. */
#define HTTP_CONNECTION_MEMORY 8192
/* Default staleness bound for /healthz. */
#define HTTP_STALE_MS 5000
/* Snapshots are rendered at most this often by http_server_update(). */
#define HTTP_UPDATE_INTERVAL_MS 500

typedef struct http_server http_server;

/*
 * The connection limit for a process whose open-file soft limit is nofile:
 * HTTP_MAX_CONNECTIONS when nofile leaves HTTP_FD_RESERVE beside it, else
 * what is left after the reserve, at least 16.  Pure.
 */
unsigned http_connection_limit(uint64_t nofile);

/*
 * Parse "ADDR:PORT" into a socket address: a numeric IPv4 address,
 * "[IPv6]" in brackets, "localhost" (127.0.0.1), or nothing before the
 * colon (":9187", also a bare "9187") for 127.0.0.1 — the endpoint binds
 * to loopback unless told otherwise.  PORT is 0-65535, 0 meaning any free
 * port.  Returns 0, or -1 with err saying what to write instead.  Pure: no
 * name resolution, usable from configuration parsing.
 */
int http_parse_addr(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
                    size_t errlen) OBX_WUR;

/*
 * Bind spec (see http_parse_addr) and start serving in a new thread, with
 * no snapshot yet (every route but 404/405 answers 503 until the first
 * http_server_publish()).  stale_ms bounds the age of the last snapshot
 * for /healthz (HTTP_STALE_MS in the relay).  Signals are blocked in the
 * server thread, so SIGINT/SIGTERM keep reaching the loop.  Raises the
 * process's RLIMIT_NOFILE soft limit towards HTTP_MAX_CONNECTIONS +
 * HTTP_FD_RESERVE (never past the hard limit) and sizes the connection
 * limit from the result, logging when it is below HTTP_MAX_CONNECTIONS.
 * Returns NULL with err (address in use, bad address, ...) on failure.
 */
http_server *http_server_start(const char *spec, int stale_ms, char *err, size_t errlen) OBX_WUR;

/* Stop the thread, close the socket and free everything.  NULL ok. */
void http_server_free(http_server *h);

/* The bound port (the real one when spec asked for port 0). */
uint16_t http_server_port(const http_server *h);

/* The connection limit in force (see http_connection_limit()). */
unsigned http_server_connection_limit(const http_server *h);

/*
 * Replace the snapshot: takes ownership of metrics_text and status_json
 * (malloc'd, NUL-terminated; freed here even on failure), ready is what
 * /readyz answers.  Stamps the time for /healthz.  Cheap under the mutex:
 * pointers are swapped, the old buffers freed outside it.
 */
void http_server_publish(http_server *h, char *metrics_text, size_t metrics_len, char *status_json,
                         size_t status_len, bool ready);

/*
 * What the loop calls once per pass: when HTTP_UPDATE_INTERVAL_MS passed
 * since the last snapshot (now_ms from a monotonic clock), render m (its
 * lag dated now_us, Unix µs) and publish it.  Returns 0, or -1 when out of
 * memory (the previous snapshot stays; /healthz goes stale if that lasts).
 */
int http_server_update(http_server *h, const metrics *m, int64_t now_ms, int64_t now_us) OBX_WUR;

#endif
