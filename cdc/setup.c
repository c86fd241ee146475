#include "cdc/setup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bsd/string.h>

#include "cdc/log.h"
#include "decode/errfmt.h"
#include "cdc/pgconn.h"
#include "cdc/policy.h"
#include "decode/lsn.h"

#define fail(err, errlen, st, ...) ((enum stream_status)errfmt(err, errlen, st, __VA_ARGS__))

static const char *pq_error(const PGconn *conn)
{
    static char buf[512];
    return pgconn_error(conn, buf, sizeof(buf));
}

static PGresult *run(PGconn *conn, const char *sql, ExecStatusType want, char *err, size_t errlen)
{
    return pgconn_exec(conn, sql, 0, NULL, want, err, errlen, NULL);
}

static char *literal(PGconn *conn, const char *s)
{
    return PQescapeLiteral(conn, s, strlen(s));
}

static char *ident(PGconn *conn, const char *s)
{
    return PQescapeIdentifier(conn, s, strlen(s));
}

static enum stream_status check_tables(PGconn *conn, const config *cfg, char *err, size_t errlen)
{

    for (size_t t = 0; t < cfg->ntables; t++) {
        const config_table *tab = &cfg->tables[t];
        char *ls = literal(conn, tab->schema), *ln = literal(conn, tab->name);
        char sql[1024], qerr[512];
        PGresult *res;

        if (!ls || !ln) {
            PQfreemem(ls);
            PQfreemem(ln);
            return fail(err, errlen, STREAM_RETRY, "cannot quote table name: %s", pq_error(conn));
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
        res = run(conn, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
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
                        "\"%s\" is not a table: --table must name the outbox table", tab->qualname);
        }
        for (int r = 0; r < OB_NROLES; r++) {
            bool found = false;
            if (!outbox_colmap_requires(&tab->colmap, (enum outbox_role)r))
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
        /* Debezium's EventRouter refuses to run when an additional field's
         * column is missing (table.fields.additional.error.on.missing): so
         * does its format; the others leave the field out of the record. */
        for (size_t f = 0; cfg->format == ENVELOPE_FORMAT_DEBEZIUM && f < cfg->nfields; f++) {
            bool found = false;
            for (int i = 0; i < PQntuples(res) && !found; i++)
                found = strcmp(PQgetvalue(res, i, 1), cfg->fields[f].column) == 0;
            if (!found) {
                fail(err, errlen, STREAM_CONFIG,
                     "outbox table \"%s\" has no column \"%s\" for --field %s (the debezium "
                     "format, as Debezium, requires every additional column)",
                     tab->qualname, cfg->fields[f].column, cfg->fields[f].column);
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
static enum stream_status check_publication(PGconn *conn, const config *cfg, bool *exists,
                                            char *err, size_t errlen)
{
    char *lp = literal(conn, cfg->publication);
    char sql[1024], qerr[512];
    PGresult *res;

    if (!lp)
        return fail(err, errlen, STREAM_RETRY, "cannot quote publication: %s", pq_error(conn));
    snprintf(sql, sizeof(sql), "SELECT pubinsert FROM pg_catalog.pg_publication WHERE pubname = %s",
             lp);
    res = run(conn, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
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
    /*
     * Which tables a publication covers is asked on a plain connection of
     * its own: on PostgreSQL 16 and later pg_publication_tables opens the
     * tables, and relation data cached that way in the walsender outlives
     * the switch to the historic catalog of decoding -- decoding a row
     * written before its table was rewritten (ALTER COLUMN ... TYPE) then
     * fails with "could not open toast relation".
     */
    PGconn *side = NULL;
    if (*exists && cfg->ntables > 0) {
        side = pgconn_open(cfg->conninfo, cfg->password, false, "outbox-relay");
        if (!side || PQstatus(side) != CONNECTION_OK) {
            enum stream_status f =
                fail(err, errlen, STREAM_RETRY, "cannot connect to read publication tables: %s",
                     pq_error(side));
            PQfinish(side);
            PQfreemem(lp);
            return f;
        }
    }
    for (size_t t = 0; *exists && t < cfg->ntables; t++) {
        const config_table *tab = &cfg->tables[t];
        char *ls = literal(conn, tab->schema), *ln = literal(conn, tab->name);
        if (!ls || !ln) {
            PQfreemem(ls);
            PQfreemem(ln);
            PQfreemem(lp);
            PQfinish(side);
            return fail(err, errlen, STREAM_RETRY, "cannot quote: %s", pq_error(conn));
        }
        snprintf(sql, sizeof(sql),
                 "SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = %s"
                 " AND schemaname = %s AND tablename = %s",
                 lp, ls, ln);
        PQfreemem(ls);
        PQfreemem(ln);
        res = run(side, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
        if (!res) {
            PQfreemem(lp);
            PQfinish(side);
            return fail(err, errlen, STREAM_RETRY, "cannot read publication tables: %s", qerr);
        }
        if (PQntuples(res) == 0) {
            PQclear(res);
            PQfreemem(lp);
            PQfinish(side);
            return fail(err, errlen, STREAM_CONFIG,
                        "publication \"%s\" does not cover outbox table \"%s\": ALTER "
                        "PUBLICATION %s ADD TABLE %s",
                        cfg->publication, tab->qualname, cfg->publication, tab->qualname);
        }
        PQclear(res);
    }
    PQfinish(side);
    PQfreemem(lp);
    return STREAM_OK;
}

/* PostgreSQL 17+, a slot with failover off: a promotion loses it.  With
 * --create-slot the relay turns it on (the slot is not in use here);
 * otherwise it says so, once. */
static void failover_off(PGconn *conn, const config *cfg)
{
    static bool warned;
    char sql[256], qerr[512], state[6];
    PGresult *res;

    if (cfg->create_slot) {
        snprintf(sql, sizeof(sql), "ALTER_REPLICATION_SLOT \"%s\" (FAILOVER true)", cfg->slot);
        res = pgconn_exec(conn, sql, 0, NULL, PGRES_COMMAND_OK, qerr, sizeof(qerr), state);
        if (res) {
            PQclear(res);
            log_info("turned failover on for replication slot \"%s\" (standbys with "
                     "sync_replication_slots = on keep it across a promotion)",
                     cfg->slot);
            return;
        }
        if (!warned)
            log_warn("cannot turn failover on for replication slot \"%s\": %s", cfg->slot, qerr);
        warned = true;
        return;
    }
    if (!warned)
        log_warn("replication slot \"%s\" has failover off: a promoted standby will not have "
                 "it (run once with --create-slot to turn it on, see High availability)",
                 cfg->slot);
    warned = true;
}

/* Reads the slot; *exists false when missing.  Fills info->slot_confirmed. */
static enum stream_status check_slot(PGconn *conn, const config *cfg, stream_info *info,
                                     bool *exists, char *err, size_t errlen)
{
    char *ls = literal(conn, cfg->slot);
    char sql[1024], qerr[512];
    PGresult *res;

    if (!ls)
        return fail(err, errlen, STREAM_RETRY, "cannot quote slot: %s", pq_error(conn));
    snprintf(sql, sizeof(sql),
             "SELECT slot_type, plugin, database, active, active_pid, confirmed_flush_lsn,"
             " wal_status, %s FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
             info->server_version >= 170000 ? "failover" : "NULL", ls);
    PQfreemem(ls);
    res = run(conn, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
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
        rc =
            fail(err, errlen, STREAM_RETRY, "slot \"%s\" has no confirmed position yet", cfg->slot);
    else if (strcmp(PQgetvalue(res, 0, 7), "f") == 0)
        failover_off(conn, cfg);
    PQclear(res);
    return rc;
}

/* Run sql, the CREATE of what; one created meanwhile by another process
 * (SQLSTATE 42710) counts as there, with *res NULL. */
static enum stream_status create_object(PGconn *conn, const char *sql, ExecStatusType want,
                                        const char *what, PGresult **res, char *err, size_t errlen)
{
    char qerr[512], state[6];

    *res = pgconn_exec(conn, sql, 0, NULL, want, qerr, sizeof(qerr), state);
    if (*res || strcmp(state, "42710") == 0)
        return STREAM_OK;
    return fail(err, errlen, STREAM_CONFIG, "cannot create %s: %s", what, qerr);
}

static enum stream_status create_publication(PGconn *conn, const config *cfg, char *err,
                                             size_t errlen)
{
    char sql[16384], what[200];
    enum stream_status rc;
    size_t off;
    char *ip = ident(conn, cfg->publication);
    PGresult *res;

    if (!ip)
        return fail(err, errlen, STREAM_RETRY, "cannot quote: %s", pq_error(conn));
    off = (size_t)snprintf(sql, sizeof(sql), "CREATE PUBLICATION %s FOR TABLE ", ip);
    PQfreemem(ip);
    for (size_t t = 0; t < cfg->ntables; t++) {
        char *is = ident(conn, cfg->tables[t].schema), *in = ident(conn, cfg->tables[t].name);
        if (!is || !in) {
            PQfreemem(is);
            PQfreemem(in);
            return fail(err, errlen, STREAM_RETRY, "cannot quote: %s", pq_error(conn));
        }
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s%s.%s", t ? ", " : "", is, in);
        PQfreemem(is);
        PQfreemem(in);
        if (off >= sizeof(sql))
            return fail(err, errlen, STREAM_CONFIG, "too many outbox tables for one publication");
    }
    snprintf(sql + off, sizeof(sql) - off, " WITH (publish = 'insert')");
    snprintf(what, sizeof(what), "publication \"%s\"", cfg->publication);
    if ((rc = create_object(conn, sql, PGRES_COMMAND_OK, what, &res, err, errlen)) != STREAM_OK ||
        !res)
        return rc;
    PQclear(res);
    log_info("created publication \"%s\"", cfg->publication);
    return STREAM_OK;
}

static void drop_publication(PGconn *conn, const config *cfg)
{
    char sql[256];
    char *ip = ident(conn, cfg->publication);
    if (!ip)
        return;
    snprintf(sql, sizeof(sql), "DROP PUBLICATION IF EXISTS %s", ip);
    PQfreemem(ip);
    PQclear(PQexec(conn, sql));
}

static enum stream_status create_slot(PGconn *conn, const config *cfg, int server_version,
                                      char *err, size_t errlen)
{
    char sql[256], what[200];
    enum stream_status rc;
    PGresult *res;
    bool failover = server_version >= 170000;

    /* No snapshot: the relay never reads the table.  From PostgreSQL 17
     * the slot is a failover slot: standbys with sync_replication_slots
     * keep a copy that a promotion makes usable.  The keyword syntax
     * works from 10 on. */
    if (failover)
        snprintf(sql, sizeof(sql),
                 "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput (SNAPSHOT 'nothing', "
                 "FAILOVER true)",
                 cfg->slot);
    else
        snprintf(sql, sizeof(sql),
                 "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput NOEXPORT_SNAPSHOT", cfg->slot);
    log_info("creating replication slot \"%s\": waits until transactions running now have "
             "ended",
             cfg->slot);
    snprintf(what, sizeof(what), "replication slot \"%s\"", cfg->slot);
    if ((rc = create_object(conn, sql, PGRES_TUPLES_OK, what, &res, err, errlen)) != STREAM_OK ||
        !res)
        return rc;
    log_info("created replication slot \"%s\" at %s%s", cfg->slot, PQgetvalue(res, 0, 1),
             failover ? " with failover on (standbys with sync_replication_slots = on keep it "
                        "across a promotion)"
                      : "");
    PQclear(res);
    return STREAM_OK;
}

/*
 * Where streaming starts (info->start_lsn): the slot's confirmed position;
 * on the first start --start-lsn, never before it; later, resume_lsn when
 * it is past that.
 */
static enum stream_status start_position(const config *cfg, bool first, uint64_t resume_lsn,
                                         stream_info *info, char *err, size_t errlen)
{
    info->start_lsn = info->slot_confirmed;
    if (first && cfg->has_start_lsn) {
        if (cfg->start_lsn < info->slot_confirmed) {
            char a[LSN_BUFSZ], b[LSN_BUFSZ];
            return fail(err, errlen, STREAM_CONFIG,
                        "--start-lsn %s is before slot \"%s\"'s confirmed position %s and a slot "
                        "cannot rewind: start at or after %s, or publish that range again with "
                        "\"outbox-relay replay --anchor NAME --from LSN\"",
                        lsn_format(cfg->start_lsn, a), cfg->slot,
                        lsn_format(info->slot_confirmed, b), b);
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
    return STREAM_OK;
}

enum stream_status setup_start(stream *st, const config *cfg, uint64_t resume_lsn, bool first,
                               const slot_history *hist, stream_info *info, char *err,
                               size_t errlen)
{
    PGconn *conn;
    enum stream_status rc;
    bool pub_exists = false, slot_exists = false, created_pub = false;

    if ((rc = stream_connect(st, "outbox-relay", info, err, errlen)) != STREAM_OK)
        return rc;
    conn = stream_conn(st);
    /* Every check comes before anything is created, so a bad configuration
     * leaves nothing behind. */
    if ((rc = check_tables(conn, cfg, err, errlen)) != STREAM_OK)
        goto out;
    if ((rc = check_publication(conn, cfg, &pub_exists, err, errlen)) != STREAM_OK)
        goto out;
    if ((rc = check_slot(conn, cfg, info, &slot_exists, err, errlen)) != STREAM_OK)
        goto out;
    if (!pub_exists && !cfg->create_slot) {
        rc = fail(err, errlen, STREAM_CONFIG,
                  "publication \"%s\" does not exist: run with --create-slot, or CREATE "
                  "PUBLICATION %s FOR TABLE ... WITH (publish = 'insert')",
                  cfg->publication, cfg->publication);
        goto out;
    }
    switch (policy_slot_verdict(slot_exists, cfg->create_slot, cfg->allow_new_slot, hist,
                                info->timeline)) {
    case POLICY_SLOT_USE:
    case POLICY_SLOT_CREATE:
        break;
    case POLICY_SLOT_NOT_CONFIGURED:
        rc = fail(err, errlen, STREAM_CONFIG,
                  "replication slot \"%s\" does not exist: run with --create-slot, or name "
                  "yours with --slot",
                  cfg->slot);
        goto out;
    case POLICY_SLOT_REFUSE: {
        char where[160];
        if (hist && hist->known)
            snprintf(where, sizeof(where), "it was streamed on system %s timeline %d",
                     hist->systemid, hist->timeline);
        else
            snprintf(where, sizeof(where), "the server was promoted at some point (timeline %d)",
                     info->timeline);
        rc = fail(err, errlen, STREAM_LOST,
                  "replication slot \"%s\" is missing on this server (system %s timeline %d) "
                  "but %s: lost in a failover without a synchronized slot? A new slot would "
                  "start at the current position and silently skip every transaction committed "
                  "since the old slot's confirmed position, so the relay stops. To recover: "
                  "start once with --create-slot --allow-new-slot, then publish the gap again "
                  "with \"outbox-relay backfill --since TIME\" (rows still in the outbox table) "
                  "or \"outbox-relay replay --anchor NAME --from LSN\" (an anchor on this "
                  "server)",
                  cfg->slot, info->systemid, info->timeline, where);
        goto out;
    }
    }
    /* Publication before slot: pgoutput looks publications up with the
     * catalog snapshot of the decoding position. */
    if (!pub_exists) {
        if ((rc = create_publication(conn, cfg, err, errlen)) != STREAM_OK)
            goto out;
        created_pub = true;
    }
    if (!slot_exists) {
        if (cfg->allow_new_slot && ((hist && hist->known) || info->timeline > 1))
            log_warn("--allow-new-slot: creating replication slot \"%s\" afresh at the "
                     "current position; transactions committed since the old slot's "
                     "confirmed position are not published (backfill or replay them)",
                     cfg->slot);
        if ((rc = create_slot(conn, cfg, info->server_version, err, errlen)) != STREAM_OK) {
            if (created_pub)
                drop_publication(conn, cfg);
            goto out;
        }
        if ((rc = check_slot(conn, cfg, info, &slot_exists, err, errlen)) != STREAM_OK)
            goto out;
        if (!slot_exists) {
            rc = fail(err, errlen, STREAM_RETRY, "slot \"%s\" vanished right after creation",
                      cfg->slot);
            goto out;
        }
    }

    if ((rc = start_position(cfg, first, resume_lsn, info, err, errlen)) != STREAM_OK)
        goto out;
    rc = stream_replicate(st, cfg->slot, info->start_lsn, info, err, errlen);
out:
    if (rc != STREAM_OK)
        stream_close(st);
    return rc;
}
