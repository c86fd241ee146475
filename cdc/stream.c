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

#include "cdc/log.h"
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

static enum stream_status fail(char *err, size_t errlen, enum stream_status st, const char *fmt,
                               ...) __attribute__((format(printf, 4, 5)));

static enum stream_status fail(char *err, size_t errlen, enum stream_status st, const char *fmt,
                               ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

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

int64_t stream_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

stream *stream_new(const config *cfg)
{
    stream *st = calloc(1, sizeof(*st));
    if (st)
        st->cfg = cfg;
    return st;
}

static void stream_close(stream *st)
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

/* Run one query that must return tuples (or a command status). */
static PGresult *run(stream *st, const char *sql, ExecStatusType want, char *err, size_t errlen)
{
    PGresult *res = PQexec(st->conn, sql);
    if (PQresultStatus(res) != want) {
        snprintf(err, errlen, "%s", res ? result_error(res) : pq_error(st->conn));
        PQclear(res);
        return NULL;
    }
    return res;
}

static char *literal(stream *st, const char *s)
{
    return PQescapeLiteral(st->conn, s, strlen(s));
}

static char *ident(stream *st, const char *s)
{
    return PQescapeIdentifier(st->conn, s, strlen(s));
}

/* Connection failures are runtime problems except when the server says the
 * request itself is wrong (bad database, role, password): those need the
 * operator, but a database may also be created later, so the caller decides
 * how to treat them at start-up. */
static enum stream_status connect_db(stream *st, char *err, size_t errlen)
{
    st->conn = pgconn_open(st->cfg->conninfo, st->cfg->password, true, "outbox-relay");
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

static enum stream_status check_tables(stream *st, char *err, size_t errlen)
{
    const config *cfg = st->cfg;

    for (size_t t = 0; t < cfg->ntables; t++) {
        const config_table *tab = &cfg->tables[t];
        char *ls = literal(st, tab->schema), *ln = literal(st, tab->name);
        char sql[1024], qerr[512];
        PGresult *res;

        if (!ls || !ln) {
            PQfreemem(ls);
            PQfreemem(ln);
            return fail(err, errlen, STREAM_RETRY, "cannot quote table name: %s",
                        pq_error(st->conn));
        }
        snprintf(sql, sizeof(sql),
                 "SELECT c.relkind, a.attname FROM pg_catalog.pg_class c"
                 " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                 " LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid"
                 "  AND a.attnum > 0 AND NOT a.attisdropped"
                 " WHERE n.nspname = %s AND c.relname = %s",
                 ls, ln);
        PQfreemem(ls);
        PQfreemem(ln);
        res = run(st, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
        if (!res)
            return fail(err, errlen, STREAM_RETRY, "cannot read table \"%s\": %s", tab->qualname,
                        qerr);
        if (PQntuples(res) == 0) {
            PQclear(res);
            return fail(err, errlen, STREAM_CONFIG,
                        "outbox table \"%s\" does not exist: create it (see schema/outbox.sql) "
                        "or name yours with --table SCHEMA.TABLE",
                        tab->qualname);
        }
        const char *kind = PQgetvalue(res, 0, 0);
        if (strcmp(kind, "r") != 0 && strcmp(kind, "p") != 0) {
            PQclear(res);
            return fail(err, errlen, STREAM_CONFIG,
                        "\"%s\" is not a table: --table must name the outbox table",
                        tab->qualname);
        }
        for (int r = 0; r < OB_NROLES; r++) {
            bool found = false;
            if (!outbox_role_required((enum outbox_role)r))
                continue;
            for (int i = 0; i < PQntuples(res) && !found; i++)
                found = strcmp(PQgetvalue(res, i, 1), tab->colmap.col[r]) == 0;
            if (!found) {
                fail(err, errlen, STREAM_CONFIG,
                     "outbox table \"%s\" has no column \"%s\" for role %s: add it or map "
                     "another column with --column %s=COLUMN",
                     tab->qualname, tab->colmap.col[r], outbox_role_name((enum outbox_role)r),
                     outbox_role_name((enum outbox_role)r));
                PQclear(res);
                return STREAM_CONFIG;
            }
        }
        PQclear(res);
    }
    return STREAM_OK;
}

/* Sets *exists; checks an existing publication publishes inserts of every
 * outbox table. */
static enum stream_status check_publication(stream *st, bool *exists, char *err, size_t errlen)
{
    const config *cfg = st->cfg;
    char *lp = literal(st, cfg->publication);
    char sql[1024], qerr[512];
    PGresult *res;

    if (!lp)
        return fail(err, errlen, STREAM_RETRY, "cannot quote publication: %s", pq_error(st->conn));
    snprintf(sql, sizeof(sql), "SELECT pubinsert FROM pg_catalog.pg_publication WHERE pubname = %s",
             lp);
    res = run(st, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
    if (!res) {
        PQfreemem(lp);
        return fail(err, errlen, STREAM_RETRY, "cannot read publications: %s", qerr);
    }
    *exists = PQntuples(res) == 1;
    if (*exists && strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        PQclear(res);
        PQfreemem(lp);
        return fail(err, errlen, STREAM_CONFIG,
                    "publication \"%s\" does not publish inserts: ALTER PUBLICATION %s SET "
                    "(publish = 'insert')",
                    cfg->publication, cfg->publication);
    }
    PQclear(res);
    for (size_t t = 0; *exists && t < cfg->ntables; t++) {
        const config_table *tab = &cfg->tables[t];
        char *ls = literal(st, tab->schema), *ln = literal(st, tab->name);
        if (!ls || !ln) {
            PQfreemem(ls);
            PQfreemem(ln);
            PQfreemem(lp);
            return fail(err, errlen, STREAM_RETRY, "cannot quote: %s", pq_error(st->conn));
        }
        snprintf(sql, sizeof(sql),
                 "SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = %s"
                 " AND schemaname = %s AND tablename = %s",
                 lp, ls, ln);
        PQfreemem(ls);
        PQfreemem(ln);
        res = run(st, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
        if (!res) {
            PQfreemem(lp);
            return fail(err, errlen, STREAM_RETRY, "cannot read publication tables: %s", qerr);
        }
        if (PQntuples(res) == 0) {
            PQclear(res);
            PQfreemem(lp);
            return fail(err, errlen, STREAM_CONFIG,
                        "publication \"%s\" does not cover outbox table \"%s\": ALTER "
                        "PUBLICATION %s ADD TABLE %s",
                        cfg->publication, tab->qualname, cfg->publication, tab->qualname);
        }
        PQclear(res);
    }
    PQfreemem(lp);
    return STREAM_OK;
}

/* Reads the slot; *exists false when missing.  Fills info->slot_confirmed. */
static enum stream_status check_slot(stream *st, stream_info *info, bool *exists, char *err,
                                     size_t errlen)
{
    const config *cfg = st->cfg;
    char *ls = literal(st, cfg->slot);
    char sql[1024], qerr[512];
    PGresult *res;

    if (!ls)
        return fail(err, errlen, STREAM_RETRY, "cannot quote slot: %s", pq_error(st->conn));
    snprintf(sql, sizeof(sql),
             "SELECT slot_type, plugin, database, active, active_pid, confirmed_flush_lsn,"
             " wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
             ls);
    PQfreemem(ls);
    res = run(st, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
    if (!res)
        return fail(err, errlen, STREAM_RETRY, "cannot read replication slots: %s", qerr);
    *exists = PQntuples(res) == 1;
    if (!*exists) {
        PQclear(res);
        return STREAM_OK;
    }
    enum stream_status rc = STREAM_OK;
    if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0)
        rc = fail(err, errlen, STREAM_CONFIG,
                  "slot \"%s\" is a physical slot: drop it or name a logical pgoutput slot "
                  "with --slot",
                  cfg->slot);
    else if (strcmp(PQgetvalue(res, 0, 1), "pgoutput") != 0)
        rc = fail(err, errlen, STREAM_CONFIG,
                  "slot \"%s\" uses plugin \"%s\", not pgoutput: name another slot with --slot "
                  "(and --create-slot), or drop this one",
                  cfg->slot, PQgetvalue(res, 0, 1));
    else if (strcmp(PQgetvalue(res, 0, 2), info->dbname) != 0)
        rc = fail(err, errlen, STREAM_CONFIG,
                  "slot \"%s\" belongs to database \"%s\", not \"%s\": connect to that database "
                  "or name another slot",
                  cfg->slot, PQgetvalue(res, 0, 2), info->dbname);
    else if (strcmp(PQgetvalue(res, 0, 6), "lost") == 0)
        rc = fail(err, errlen, STREAM_LOST,
                  "slot \"%s\" is lost (the server removed WAL it needed, see "
                  "max_slot_wal_keep_size): drop it, recreate it with --create-slot and "
                  "backfill",
                  cfg->slot);
    else if (strcmp(PQgetvalue(res, 0, 3), "t") == 0)
        rc = fail(err, errlen, STREAM_BUSY,
                  "slot \"%s\" is in use by process %s (another relay?): waiting for it to be "
                  "free",
                  cfg->slot, PQgetvalue(res, 0, 4));
    else if (PQgetisnull(res, 0, 5) || lsn_parse(PQgetvalue(res, 0, 5), &info->slot_confirmed))
        rc = fail(err, errlen, STREAM_RETRY, "slot \"%s\" has no confirmed position yet",
                  cfg->slot);
    PQclear(res);
    return rc;
}

static enum stream_status create_publication(stream *st, char *err, size_t errlen)
{
    const config *cfg = st->cfg;
    char sql[16384], qerr[512];
    size_t off;
    char *ip = ident(st, cfg->publication);
    PGresult *res;

    if (!ip)
        return fail(err, errlen, STREAM_RETRY, "cannot quote: %s", pq_error(st->conn));
    off = (size_t)snprintf(sql, sizeof(sql), "CREATE PUBLICATION %s FOR TABLE ", ip);
    PQfreemem(ip);
    for (size_t t = 0; t < cfg->ntables; t++) {
        char *is = ident(st, cfg->tables[t].schema), *in = ident(st, cfg->tables[t].name);
        if (!is || !in) {
            PQfreemem(is);
            PQfreemem(in);
            return fail(err, errlen, STREAM_RETRY, "cannot quote: %s", pq_error(st->conn));
        }
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s%s.%s", t ? ", " : "", is, in);
        PQfreemem(is);
        PQfreemem(in);
        if (off >= sizeof(sql))
            return fail(err, errlen, STREAM_CONFIG, "too many outbox tables for one publication");
    }
    snprintf(sql + off, sizeof(sql) - off, " WITH (publish = 'insert')");
    res = PQexec(st->conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool dup = state && strcmp(state, "42710") == 0; /* created concurrently */
        strlcpy(qerr, res ? result_error(res) : pq_error(st->conn), sizeof(qerr));
        PQclear(res);
        if (dup)
            return STREAM_OK;
        return fail(err, errlen, STREAM_CONFIG, "cannot create publication \"%s\": %s",
                    cfg->publication, qerr);
    }
    PQclear(res);
    log_info("created publication \"%s\"", cfg->publication);
    return STREAM_OK;
}

static void drop_publication(stream *st)
{
    char sql[256];
    char *ip = ident(st, st->cfg->publication);
    if (!ip)
        return;
    snprintf(sql, sizeof(sql), "DROP PUBLICATION IF EXISTS %s", ip);
    PQfreemem(ip);
    PQclear(PQexec(st->conn, sql));
}

static enum stream_status create_slot(stream *st, char *err, size_t errlen)
{
    char sql[256], qerr[512];
    PGresult *res;

    /* The keyword syntax works from PostgreSQL 10 on; no snapshot is
     * exported because the relay never reads the table. */
    snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput NOEXPORT_SNAPSHOT",
             st->cfg->slot);
    log_info("creating replication slot \"%s\": waits until transactions running now have "
             "ended",
             st->cfg->slot);
    res = PQexec(st->conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool dup = state && strcmp(state, "42710") == 0;
        strlcpy(qerr, res ? result_error(res) : pq_error(st->conn), sizeof(qerr));
        PQclear(res);
        if (dup)
            return STREAM_OK;
        return fail(err, errlen, STREAM_CONFIG, "cannot create replication slot \"%s\": %s",
                    st->cfg->slot, qerr);
    }
    log_info("created replication slot \"%s\" at %s", st->cfg->slot, PQgetvalue(res, 0, 1));
    PQclear(res);
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

enum stream_status stream_start(stream *st, uint64_t resume_lsn, bool first, stream_info *info,
                                char *err, size_t errlen)
{
    const config *cfg = st->cfg;
    enum stream_status rc;
    bool pub_exists = false, slot_exists = false, created_pub = false;
    char sql[1024], lsnbuf[LSN_BUFSZ], qerr[512];
    PGresult *res;

    stream_close(st);
    memset(info, 0, sizeof(*info));
    if ((rc = connect_db(st, err, errlen)) != STREAM_OK)
        goto out;
    if ((rc = check_server(st, info, err, errlen)) != STREAM_OK)
        goto out;
    /* Every check comes before anything is created, so a bad configuration
     * leaves nothing behind. */
    if ((rc = check_tables(st, err, errlen)) != STREAM_OK)
        goto out;
    if ((rc = check_publication(st, &pub_exists, err, errlen)) != STREAM_OK)
        goto out;
    if ((rc = check_slot(st, info, &slot_exists, err, errlen)) != STREAM_OK)
        goto out;
    if (!pub_exists && !cfg->create_slot) {
        rc = fail(err, errlen, STREAM_CONFIG,
                  "publication \"%s\" does not exist: run with --create-slot, or CREATE "
                  "PUBLICATION %s FOR TABLE ... WITH (publish = 'insert')",
                  cfg->publication, cfg->publication);
        goto out;
    }
    if (!slot_exists && !cfg->create_slot) {
        rc = fail(err, errlen, STREAM_CONFIG,
                  "replication slot \"%s\" does not exist: run with --create-slot, or name "
                  "yours with --slot",
                  cfg->slot);
        goto out;
    }
    /* Publication before slot: pgoutput looks publications up with the
     * catalog snapshot of the decoding position. */
    if (!pub_exists) {
        if ((rc = create_publication(st, err, errlen)) != STREAM_OK)
            goto out;
        created_pub = true;
    }
    if (!slot_exists) {
        if ((rc = create_slot(st, err, errlen)) != STREAM_OK) {
            if (created_pub)
                drop_publication(st);
            goto out;
        }
        if ((rc = check_slot(st, info, &slot_exists, err, errlen)) != STREAM_OK)
            goto out;
        if (!slot_exists) {
            rc = fail(err, errlen, STREAM_RETRY, "slot \"%s\" vanished right after creation",
                      cfg->slot);
            goto out;
        }
    }

    info->start_lsn = info->slot_confirmed;
    if (first && cfg->has_start_lsn) {
        if (cfg->start_lsn < info->slot_confirmed) {
            char a[LSN_BUFSZ], b[LSN_BUFSZ];
            rc = fail(err, errlen, STREAM_CONFIG,
                      "--start-lsn %s is before slot \"%s\"'s confirmed position %s and a slot "
                      "cannot rewind: start at or after %s, or publish that range again with "
                      "\"outbox-relay replay --anchor NAME --from LSN\"",
                      lsn_format(cfg->start_lsn, a), cfg->slot, lsn_format(info->slot_confirmed, b),
                      b);
            goto out;
        }
        info->start_lsn = cfg->start_lsn;
        if (cfg->start_lsn > info->slot_confirmed) {
            char a[LSN_BUFSZ], b[LSN_BUFSZ];
            log_warn("--start-lsn %s skips %llu bytes of WAL after slot \"%s\"'s confirmed "
                     "position %s: transactions committed in between are not published",
                     lsn_format(cfg->start_lsn, a),
                     (unsigned long long)(cfg->start_lsn - info->slot_confirmed), cfg->slot,
                     lsn_format(info->slot_confirmed, b));
        }
    }
    if (resume_lsn > info->start_lsn)
        info->start_lsn = resume_lsn;

    /*
     * Stream on a fresh connection: on PostgreSQL 16 and later, relation
     * data the checks above cached in this backend (read with today's
     * catalog) outlive the switch to the historic catalog of decoding, and
     * decoding a row written before the table was rewritten (ALTER COLUMN
     * ... TYPE) then fails with "could not open toast relation".
     */
    PQfinish(st->conn);
    st->conn = NULL;
    if ((rc = connect_db(st, err, errlen)) != STREAM_OK)
        goto out;
    if ((rc = set_session(st, err, errlen)) != STREAM_OK)
        goto out;

    {
        char *ip = ident(st, cfg->publication);
        if (!ip) {
            rc = fail(err, errlen, STREAM_RETRY, "cannot quote: %s", pq_error(st->conn));
            goto out;
        }
        /* publication_names is a list of identifiers inside a literal: the
         * identifier quoting is ours, and names cannot contain quotes. */
        snprintf(sql, sizeof(sql),
                 "START_REPLICATION SLOT \"%s\" LOGICAL %s (proto_version '%d', "
                 "publication_names '%s'%s)",
                 cfg->slot, lsn_format(info->start_lsn, lsnbuf), info->proto_version, ip,
                 cfg->messages_prefix ? ", messages 'true'" : "");
        PQfreemem(ip);
    }
    res = PQexec(st->conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool busy = state && strcmp(state, "55006") == 0; /* slot active elsewhere */
        strlcpy(qerr, res ? result_error(res) : pq_error(st->conn), sizeof(qerr));
        PQclear(res);
        if (strstr(qerr, "can no longer get changes") || strstr(qerr, "has been invalidated"))
            rc = fail(err, errlen, STREAM_LOST,
                      "slot \"%s\" is lost (%s): drop it, recreate it with --create-slot and "
                      "backfill what was missed",
                      cfg->slot, qerr);
        else
            rc = fail(err, errlen, busy ? STREAM_BUSY : STREAM_RETRY,
                      "START_REPLICATION failed: %s", qerr);
        goto out;
    }
    PQclear(res);
    if (PQsetnonblocking(st->conn, 1) != 0) {
        rc = fail(err, errlen, STREAM_RETRY, "cannot make the connection non-blocking: %s",
                  pq_error(st->conn));
        goto out;
    }
    st->streaming = true;
    rc = STREAM_OK;
out:
    if (rc != STREAM_OK)
        stream_close(st);
    return rc;
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

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
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
        frame->wal_start = get_u64(p + 1);
        frame->wal_end = get_u64(p + 9);
        frame->send_time = (int64_t)get_u64(p + 17);
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
        frame->wal_end = get_u64(p + 1);
        frame->send_time = (int64_t)get_u64(p + 9);
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
    put_u64(msg + 1, received);
    put_u64(msg + 9, flush);
    put_u64(msg + 17, flush);
    put_u64(msg + 25, (uint64_t)pg_now_us());
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
    int64_t left = deadline - stream_now_ms();
    if (left <= 0)
        return -1;
    int r = poll(&pfd, 1, (int)left);
    return r > 0 ? 0 : -1;
}

int stream_finish(stream *st, uint64_t received, uint64_t flush, int timeout_ms, char *err,
                  size_t errlen)
{
    int64_t deadline = stream_now_ms() + timeout_ms;
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
        if (stream_now_ms() > deadline)
            break;
    }
out:
    stream_close(st);
    return rc;
}
