#include "cdc/stream.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bsd/string.h>
#include <sys/time.h>
#include <time.h>

#include "decode/bytes.h"
#include "publish/clock.h"
#include "cdc/log.h"
#include "decode/errfmt.h"
#include "cdc/pgconn.h"
#include "cdc/policy.h"
#include "decode/lsn.h"
#include "decode/pgoutput.h"

struct stream {
    const config *cfg;
    PGconn *conn;
    char *copybuf; /* last buffer from PQgetCopyData, freed on the next read */
    bool streaming;
};

#define fail(err, errlen, st, ...) ((enum stream_status)errfmt(err, errlen, st, __VA_ARGS__))

/* libpq messages end with a newline and may span lines: one line for logs,
 * in buf (each caller below keeps its own static buffer). */
static const char *one_line(char *buf, size_t len, const char *m)
{
    strlcpy(buf, m ? m : "", len);
    pgconn_one_line(buf);
    return buf;
}

static const char *pq_error(const PGconn *conn)
{
    static char buf[512];
    return one_line(buf, sizeof(buf), conn ? PQerrorMessage(conn) : "out of memory");
}

static const char *result_error(const PGresult *res)
{
    static char buf[512];
    return one_line(buf, sizeof(buf), PQresultErrorMessage(res));
}

stream *stream_new(const config *cfg)
{
    stream *st = calloc(1, sizeof(*st));
    if (st)
        st->cfg = cfg;
    return st;
}

void stream_close(stream *st)
{
    if (st->copybuf) {
        PQfreemem(st->copybuf);
        st->copybuf = NULL;
    }
    if (st->conn) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
    st->streaming = false;
}

void stream_free(stream *st)
{
    if (!st)
        return;
    stream_close(st);
    free(st);
}

int stream_socket(const stream *st)
{
    return st->conn ? PQsocket(st->conn) : -1;
}

static PGresult *run(stream *st, const char *sql, ExecStatusType want, char *err, size_t errlen)
{
    return pgconn_exec(st->conn, sql, 0, NULL, want, err, errlen, NULL);
}

PGconn *stream_conn(stream *st)
{
    return st->conn;
}

/* Connection failures are runtime problems except when the server says the
 * request itself is wrong (bad database, role, password): those need the
 * operator, but a database may also be created later, so the caller decides
 * how to treat them at start-up. */
static enum stream_status connect_db(stream *st, const char *appname, char *err, size_t errlen)
{
    st->conn = pgconn_open(st->cfg->conninfo, st->cfg->password, true, appname);
    if (!st->conn || PQstatus(st->conn) != CONNECTION_OK)
        return fail(err, errlen, STREAM_RETRY, "cannot connect to PostgreSQL: %s",
                    pq_error(st->conn));
    if (PQserverVersion(st->conn) < 100000)
        return fail(err, errlen, STREAM_CONFIG,
                    "PostgreSQL %d is too old: logical replication with pgoutput needs 10 or later",
                    PQserverVersion(st->conn));
    return STREAM_OK;
}

static enum stream_status check_server(stream *st, stream_info *info, char *err, size_t errlen)
{
    PGresult *res;
    char qerr[512];

    res = run(st, "SHOW wal_level", PGRES_TUPLES_OK, qerr, sizeof(qerr));
    if (!res)
        return fail(err, errlen, STREAM_RETRY, "cannot read wal_level: %s", qerr);
    if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0) {
        fail(err, errlen, STREAM_CONFIG,
             "wal_level is \"%s\" on the server: set wal_level = logical in postgresql.conf "
             "and restart PostgreSQL",
             PQgetvalue(res, 0, 0));
        PQclear(res);
        return STREAM_CONFIG;
    }
    PQclear(res);

    res = run(st, "IDENTIFY_SYSTEM", PGRES_TUPLES_OK, qerr, sizeof(qerr));
    if (!res)
        return fail(err, errlen, STREAM_RETRY, "IDENTIFY_SYSTEM failed: %s", qerr);
    if (PQntuples(res) != 1 || PQnfields(res) < 4 || PQgetisnull(res, 0, 3)) {
        PQclear(res);
        return fail(err, errlen, STREAM_CONFIG,
                    "the replication connection is not bound to a database: name one in --dbname");
    }
    strlcpy(info->systemid, PQgetvalue(res, 0, 0), sizeof(info->systemid));
    info->timeline = atoi(PQgetvalue(res, 0, 1));
    strlcpy(info->dbname, PQgetvalue(res, 0, 3), sizeof(info->dbname));
    PQclear(res);
    info->server_version = PQserverVersion(st->conn);
    info->proto_version = policy_proto_version(info->server_version, PGO_MAX_PROTO_VERSION);
    if (st->cfg->messages_prefix && info->server_version < 140000)
        return fail(err, errlen, STREAM_CONFIG,
                    "--messages needs PostgreSQL 14 or later (the server is %d): remove it",
                    info->server_version);
    return STREAM_OK;
}

static enum stream_status set_session(stream *st, char *err, size_t errlen)
{
    /* Timestamps in text columns come from the walsender's own session:
     * fix their shape so the envelope can parse them. */
    static const char *const sets[] = {"SET DateStyle = 'ISO, YMD'", "SET TimeZone = 'UTC'",
                                       "SET IntervalStyle = 'iso_8601'",
                                       "SET extra_float_digits = 3"};
    char qerr[512];
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        PGresult *res = run(st, sets[i], PGRES_COMMAND_OK, qerr, sizeof(qerr));
        if (!res)
            return fail(err, errlen, STREAM_RETRY, "%s failed: %s", sets[i], qerr);
        PQclear(res);
    }
    return STREAM_OK;
}

enum stream_status stream_connect(stream *st, const char *appname, stream_info *info, char *err,
                                  size_t errlen)
{
    enum stream_status rc;

    stream_close(st);
    memset(info, 0, sizeof(*info));
    if ((rc = connect_db(st, appname, err, errlen)) == STREAM_OK &&
        (rc = check_server(st, info, err, errlen)) == STREAM_OK)
        rc = set_session(st, err, errlen);
    if (rc != STREAM_OK)
        stream_close(st);
    return rc;
}

/*
 * Whether START_REPLICATION failed because the slot was invalidated: the
 * server's SQLSTATE (55000, object not in prerequisite state, also used for
 * other refusals), then the slot's own wal_status (and, from PostgreSQL 16,
 * its conflicting flag) -- never the text of the message, which follows
 * the server's lc_messages.
 */
static bool slot_lost(stream *st, const char *slot, const char *sqlstate)
{
    char sql[512], qerr[256];
    char *ls;
    PGresult *res;
    bool lost = false;

    if (strcmp(sqlstate, "55000") != 0 || !(ls = PQescapeLiteral(st->conn, slot, strlen(slot))))
        return false;
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(wal_status = 'lost', false)%s FROM pg_catalog.pg_replication_slots"
             " WHERE slot_name = %s",
             PQserverVersion(st->conn) >= 160000 ? " OR coalesce(conflicting, false)" : "", ls);
    PQfreemem(ls);
    res = run(st, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
    if (res && PQntuples(res) == 1)
        lost = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return lost;
}

enum stream_status stream_replicate(stream *st, const char *slot, uint64_t start_lsn,
                                    const stream_info *info, char *err, size_t errlen)
{
    const config *cfg = st->cfg;
    char sql[1024], lsnbuf[LSN_BUFSZ], qerr[512], state[6];
    char *ip = PQescapeIdentifier(st->conn, cfg->publication, strlen(cfg->publication));
    PGresult *res;

    if (!ip)
        return fail(err, errlen, STREAM_RETRY, "cannot quote: %s", pq_error(st->conn));
    /* publication_names is a list of identifiers inside a literal: the
     * identifier quoting is ours, and names cannot contain quotes. */
    snprintf(sql, sizeof(sql),
             "START_REPLICATION SLOT \"%s\" LOGICAL %s (proto_version '%d', "
             "publication_names '%s'%s)",
             slot, lsn_format(start_lsn, lsnbuf), info->proto_version, ip,
             cfg->messages_prefix ? ", messages 'true'" : "");
    PQfreemem(ip);
    res = pgconn_exec(st->conn, sql, 0, NULL, PGRES_COPY_BOTH, qerr, sizeof(qerr), state);
    if (!res) {
        if (slot_lost(st, slot, state))
            return fail(err, errlen, STREAM_LOST,
                        "slot \"%s\" is lost (%s): drop it, recreate it with --create-slot and "
                        "backfill what was missed",
                        slot, qerr);
        /* 55006: the slot is active for another process */
        return fail(err, errlen, strcmp(state, "55006") == 0 ? STREAM_BUSY : STREAM_RETRY,
                    "START_REPLICATION failed: %s", qerr);
    }
    PQclear(res);
    if (PQsetnonblocking(st->conn, 1) != 0)
        return fail(err, errlen, STREAM_RETRY, "cannot make the connection non-blocking: %s",
                    pq_error(st->conn));
    st->streaming = true;
    return STREAM_OK;
}

bool stream_wants_write(const stream *st)
{
    return st->conn && PQisnonblocking(st->conn) && PQflush(st->conn) == 1;
}

int stream_consume(stream *st, char *err, size_t errlen)
{
    if (!st->conn || !PQconsumeInput(st->conn)) {
        snprintf(err, errlen, "replication connection lost: %s", pq_error(st->conn));
        return -1;
    }
    return 0;
}

int stream_flush(stream *st, char *err, size_t errlen)
{
    if (!st->conn || PQflush(st->conn) < 0) {
        snprintf(err, errlen, "cannot send to PostgreSQL: %s", pq_error(st->conn));
        return -1;
    }
    return 0;
}

int stream_next(stream *st, stream_frame *frame, char *err, size_t errlen)
{
    int n;
    const uint8_t *p;

    if (st->copybuf) {
        PQfreemem(st->copybuf);
        st->copybuf = NULL;
    }
    if (!st->conn || !st->streaming) {
        snprintf(err, errlen, "not streaming");
        return -1;
    }
    n = PQgetCopyData(st->conn, &st->copybuf, 1);
    if (n == 0)
        return 0;
    if (n == -1) {
        PGresult *res = PQgetResult(st->conn);
        if (res && PQresultStatus(res) != PGRES_COMMAND_OK)
            snprintf(err, errlen, "replication stream ended: %s", result_error(res));
        else
            snprintf(err, errlen, "replication stream ended by the server");
        PQclear(res);
        st->streaming = false;
        return -1;
    }
    if (n < 0) {
        snprintf(err, errlen, "replication stream failed: %s", pq_error(st->conn));
        st->streaming = false;
        return -1;
    }
    p = (const uint8_t *)st->copybuf;
    memset(frame, 0, sizeof(*frame));
    if (p[0] == 'w') {
        if (n < 25) {
            snprintf(err, errlen, "XLogData frame of %d bytes is shorter than its header", n);
            return -1;
        }
        frame->kind = STREAM_FRAME_XLOGDATA;
        frame->wal_start = obx_be64(p + 1);
        frame->wal_end = obx_be64(p + 9);
        frame->send_time = (int64_t)obx_be64(p + 17);
        frame->payload = p + 25;
        frame->len = (size_t)n - 25;
        return 1;
    }
    if (p[0] == 'k') {
        if (n < 18) {
            snprintf(err, errlen, "keepalive frame of %d bytes is too short", n);
            return -1;
        }
        frame->kind = STREAM_FRAME_KEEPALIVE;
        frame->wal_end = obx_be64(p + 1);
        frame->send_time = (int64_t)obx_be64(p + 9);
        frame->reply_requested = p[17] != 0;
        return 1;
    }
    snprintf(err, errlen, "unknown replication frame type 0x%02x", p[0]);
    return -1;
}

static int64_t pg_now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec - PGTIME_UNIX_OFFSET_US;
}

int stream_send_status(stream *st, uint64_t received, uint64_t flush, bool reply, char *err,
                       size_t errlen)
{
    uint8_t msg[34];

    if (!st->conn || !st->streaming) {
        snprintf(err, errlen, "not streaming");
        return -1;
    }
    if (received < flush)
        received = flush;
    msg[0] = 'r';
    obx_put_be64(msg + 1, received);
    obx_put_be64(msg + 9, flush);
    obx_put_be64(msg + 17, flush);
    obx_put_be64(msg + 25, (uint64_t)pg_now_us());
    msg[33] = reply ? 1 : 0;
    if (PQputCopyData(st->conn, (const char *)msg, sizeof(msg)) != 1 || PQflush(st->conn) < 0) {
        snprintf(err, errlen, "cannot send status update: %s", pq_error(st->conn));
        return -1;
    }
    return 0;
}

/* Wait for the socket until deadline; 0 ready, -1 timed out or failed. */
static int wait_socket(stream *st, short events, int64_t deadline)
{
    struct pollfd pfd = {.fd = PQsocket(st->conn), .events = events};
    int64_t left = deadline - obx_now_ms();
    if (left <= 0)
        return -1;
    int r;
    /* A signal (SIGHUP) is not the end of the wait. */
    while ((r = poll(&pfd, 1, (int)left)) < 0 && errno == EINTR) {
        left = deadline - obx_now_ms();
        if (left <= 0)
            return -1;
    }
    return r > 0 ? 0 : -1;
}

int stream_finish(stream *st, uint64_t received, uint64_t flush, int timeout_ms, char *err,
                  size_t errlen)
{
    int64_t deadline = obx_now_ms() + timeout_ms;
    int rc = -1;

    if (!st->conn || !st->streaming) {
        stream_close(st);
        snprintf(err, errlen, "not streaming");
        return -1;
    }
    if (stream_send_status(st, received, flush, false, err, errlen) != 0)
        goto out;
    if (PQputCopyEnd(st->conn, NULL) != 1) {
        snprintf(err, errlen, "cannot end the copy stream: %s", pq_error(st->conn));
        goto out;
    }
    for (;;) {
        int f = PQflush(st->conn);
        if (f == 0)
            break;
        if (f < 0 || wait_socket(st, POLLOUT, deadline) != 0) {
            snprintf(err, errlen, "cannot send the final status update: %s", pq_error(st->conn));
            goto out;
        }
    }
    /* Drain what the server still sends until it ends the copy, so a last
     * error is not lost. */
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(st->conn, &buf, 1);
        if (buf)
            PQfreemem(buf);
        if (n > 0)
            continue;
        if (n == 0) {
            if (wait_socket(st, POLLIN, deadline) != 0 || !PQconsumeInput(st->conn)) {
                snprintf(err, errlen, "server did not end the stream in time");
                goto out;
            }
            continue;
        }
        break;
    }
    rc = 0;
    for (PGresult *res; (res = PQgetResult(st->conn)) != NULL;) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_COPY_OUT &&
            PQresultStatus(res) != PGRES_COPY_BOTH) {
            snprintf(err, errlen, "stream ended with an error: %s", result_error(res));
            rc = -1;
        }
        PQclear(res);
        if (obx_now_ms() > deadline)
            break;
    }
out:
    stream_close(st);
    return rc;
}
