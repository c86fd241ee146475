#include "cdc/backfill.h"

#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bsd/string.h>
#include <time.h>
#include <unistd.h>

#include "publish/clock.h"
#include "cdc/deadletter.h"
#include "cdc/log.h"
#include "cdc/oneshot.h"
#include "decode/errfmt.h"
#include "cdc/pgconn.h"
#include "cdc/progress.h"
#include "decode/lsn.h"
#include "decode/outbox.h"
#include "publish/sink.h"
#include "schema/envelope.h"

#define CURSOR_NAME "outbox_relay_backfill"

static const char backfill_usage[] =
    "usage: outbox-relay backfill [--where SQL] [--since TIMESTAMP] [--topic TEMPLATE]\n"
    "                             [--dry-run] [--batch-size N] [run options]\n"
    "\n"
    "Publishes the rows the outbox tables still hold, read from one consistent\n"
    "REPEATABLE READ snapshot in primary-key order, with the relay's envelopes\n"
    "(source.backfill = true, no WAL position; header backfill: true).\n"
    "\n"
    "      --where SQL        only rows matching this condition, ANDed in as written\n"
    "                         (SQL on your own database: it is not checked or quoted)\n"
    "      --since TIMESTAMP  only rows whose timestamp column (--column timestamp=...)\n"
    "                         is at or after TIMESTAMP, given with its zone, e.g.\n"
    "                         2026-11-23T18:14:13Z or '2026-11-23 18:14:13+01'\n"
    "      --dry-run          count events per topic, publish nothing (no broker needed)\n"
    "      --batch-size N     rows per fetch from the table's cursor (default 1000)\n"
    "\n"
    "Every `run` option that shapes events applies: -d, --password-file, -b, -X, -t,\n"
    "--column, --topic, --format, --field, --message-timestamp, --dlq-topic,\n"
    "--max-inflight, --max-inflight-bytes, ... (see outbox-relay --help).\n"
    "\n"
    "exit codes: 0 every event acknowledged, 1 runtime failure (run it again:\n"
    "consumers deduplicate on id), 2 bad usage, a missing table, a table without a\n"
    "primary key, --since without a timestamp column, --where that is not valid SQL\n";

static int backfill_option(void *arg, int argc, char **argv, int *i, char *err, size_t errlen)
{
    backfill_args *a = arg;
    const char *v;
    int m;

    if ((m = oneshot_option(argc, argv, i, "--where", &v, err, errlen)) == 1) {
        if (!v[strspn(v, " \t\r\n")])
            return oneshot_usage_fail(err, errlen,
                                      "--where is empty: give an SQL condition, e.g. --where "
                                      "\"aggregatetype = 'order'\"");
        a->where = v;
    }
    if (m == 0 && (m = oneshot_option(argc, argv, i, "--since", &v, err, errlen)) == 1) {
        if (pgtime_parse_text(v, strlen(v), &a->since_us) != 0)
            return oneshot_usage_fail(err, errlen,
                                      "malformed --since \"%s\": give a timestamp with its time "
                                      "zone, like 2026-11-23T18:14:13Z or '2026-11-23 "
                                      "18:14:13+01'",
                                      v);
        a->has_since = true;
    }
    if (m == 0 && (m = oneshot_option(argc, argv, i, "--batch-size", &v, err, errlen)) == 1) {
        char *end;
        errno = 0;
        long b = strtol(v, &end, 10);
        if (errno || end == v || *end || b < 1 || b > BACKFILL_BATCH_MAX)
            return oneshot_usage_fail(err, errlen,
                                      "invalid --batch-size \"%s\": give a row count from 1 to %d",
                                      v, BACKFILL_BATCH_MAX);
        a->batch_size = (int)b;
    }
    return m;
}

int backfill_parse(int argc, char **argv, backfill_args *a, char *err, size_t errlen)
{
    static const char *const refused[] = {"--start-lsn", "--end-lsn", "--create-slot", "--http",
                                          "--messages"};
    const oneshot_cmdline cl = {.name = "backfill",
                                .usage = backfill_usage,
                                .refused = refused,
                                .nrefused = sizeof(refused) / sizeof(refused[0]),
                                .refused_why = "it reads the outbox tables from a snapshot (to "
                                               "publish a past LSN range use \"outbox-relay "
                                               "replay\")",
                                .option = backfill_option,
                                .arg = a};
    int rc;

    memset(a, 0, sizeof(*a));
    a->batch_size = BACKFILL_BATCH_DEFAULT;
    rc = oneshot_parse(argc, argv, &cl, &a->dry_run, &a->argv_copy, &a->cfg, err, errlen);
    if (rc != 0)
        return rc;
    for (size_t f = 0; f < a->cfg.nfields; f++)
        if (a->cfg.fields[f].placement == ENVELOPE_PLACE_HEADER &&
            strcmp(a->cfg.fields[f].name, "backfill") == 0)
            return oneshot_usage_fail(
                err, errlen,
                "--field \"%s\" would write the header \"backfill\", which backfill "
                "writes itself: give it another name (COLUMN:header:NAME)",
                a->cfg.fields[f].column);
    return 0;
}

void backfill_args_free(backfill_args *a)
{
    if (!a)
        return;
    config_free(&a->cfg);
    free(a->argv_copy);
    a->argv_copy = NULL;
}

/* ---- the run ------------------------------------------------------------- */

static volatile sig_atomic_t backfill_stop;

static void on_signal(int sig)
{
    (void)sig;
    backfill_stop = 1;
}

/* One outbox table as the snapshot shows it. */
typedef struct bf_table {
    const config_table *ct;
    relcache_entry rel; /* the columns (names and types) in attnum order, owned */
    outbox_binding binding;
    char **pk; /* primary key column names in key order, owned */
    int npk;
    pgo_value *vals; /* one row's values, rel.natts of them */
    uint64_t total;  /* rows matching the filters, counted in the snapshot */
} bf_table;

typedef struct backfiller {
    const backfill_args *a;
    const config *cfg;
    PGconn *conn;
    oneshot o; /* the producer, delivery counts, refused records, topic counts */
    char dbname[64];
    int64_t snapshot_ts; /* PostgreSQL epoch microseconds */
    bf_table *tables;
    size_t ntables;

    uint64_t total, rows; /* expected (count) and read */

    progress prog;
} backfiller;

/* ---- progress ------------------------------------------------------------ */

/* Rate and ETA are in rows read. */
static void show_progress(backfiller *b, bool force)
{
    int64_t now = obx_now_ms();
    char head[160], line[256];

    if (!progress_due(&b->prog, now, force))
        return;
    snprintf(head, sizeof(head), "%llu/%llu rows read, %llu events %s", (unsigned long long)b->rows,
             (unsigned long long)b->total,
             (unsigned long long)(b->a->dry_run ? b->o.records : b->o.acked),
             b->a->dry_run ? "counted" : "acknowledged");
    progress_format(line, sizeof(line), head, b->rows, b->total, b->rows, "rows",
                    (double)(now - b->prog.started_ms) / 1000.0);
    progress_show(&b->prog, now, line);
}

/* ---- hooks of the shared publisher (cdc/oneshot.h) ------------------------ */

static void on_idle(void *arg)
{
    show_progress(arg, false);
}

static void on_before_log(void *arg)
{
    backfiller *b = arg;
    progress_clear(&b->prog);
}

/* One row through the relay's path (cdc/pipeline.h): extract, fields,
 * envelope, produce, or its dead letter. */
static void publish_row(backfiller *b, bf_table *t, PGresult *res, int r)
{
    pgo_tuple tuple = {.ncols = t->rel.natts, .cols = t->vals};
    envelope_source src = {.backfill = true,
                           .commit_ts = b->snapshot_ts,
                           .db = b->dbname,
                           .table = t->ct->qualname,
                           .slot = b->cfg->slot};

    for (int c = 0; c < t->rel.natts; c++) {
        if (PQgetisnull(res, r, c))
            t->vals[c] = (pgo_value){.kind = 'n'};
        else
            t->vals[c] = (pgo_value){.kind = 't',
                                     .len = (uint32_t)PQgetlength(res, r, c),
                                     .data = PQgetvalue(res, r, c)};
    }
    pipeline_tuple(&b->o.p, &t->binding, &t->rel, &tuple, &src);
}

/* ---- the database side ---------------------------------------------------- */

static int connect_db(backfiller *b, char *err, size_t errlen)
{
    static const char *const sets[] = {
        /* the text forms pgoutput sends, so values read the same as streamed */
        "SET DateStyle = 'ISO, YMD'", "SET TimeZone = 'UTC'", "SET IntervalStyle = 'iso_8601'",
        "SET extra_float_digits = 3", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"};
    const config *cfg = b->cfg;
    char qerr[512];
    PGresult *res;

    b->conn = pgconn_open(cfg->conninfo, cfg->password, false, "outbox-relay-backfill");
    if (!b->conn || PQstatus(b->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s",
                 pgconn_error(b->conn, qerr, sizeof(qerr)));
        return -1;
    }
    if (PQserverVersion(b->conn) < 120000) {
        snprintf(err, errlen, "backfill needs PostgreSQL 12 or later (the server is %d)",
                 PQserverVersion(b->conn));
        return -1;
    }
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        if (!(res = pgconn_exec(b->conn, sets[i], 0, NULL, PGRES_COMMAND_OK, qerr, sizeof(qerr),
                                NULL))) {
            snprintf(err, errlen, "%s failed: %s", sets[i], qerr);
            return -1;
        }
        PQclear(res);
    }
    /* The first query of the transaction takes its snapshot: now() is the
     * transaction's start, the source.snapshot_time of every event. */
    res = pgconn_exec(b->conn,
                      "SELECT pg_catalog.current_database(),"
                      " (extract(epoch FROM pg_catalog.now()) * 1000000)::bigint",
                      0, NULL, PGRES_TUPLES_OK, qerr, sizeof(qerr), NULL);
    if (!res) {
        snprintf(err, errlen, "cannot start the snapshot: %s", qerr);
        return -1;
    }
    strlcpy(b->dbname, PQgetvalue(res, 0, 0), sizeof(b->dbname));
    b->snapshot_ts = strtoll(PQgetvalue(res, 0, 1), NULL, 10) - PGTIME_UNIX_OFFSET_US;
    PQclear(res);
    return 0;
}

static void table_clear(bf_table *t)
{
    for (int i = 0; i < t->rel.natts; i++)
        free(t->rel.atts[i].name);
    free(t->rel.atts);
    for (int i = 0; i < t->npk; i++)
        free(t->pk[i]);
    free(t->pk);
    free(t->vals);
    memset(t, 0, sizeof(*t));
}

static char *quote_ident(backfiller *b, const char *s)
{
    return PQescapeIdentifier(b->conn, s, strlen(s));
}

/*
 * The filter both the count and the cursor use: "" or " WHERE ...".  The
 * user's --where is put in parentheses on lines of its own, so a trailing
 * "--" comment cannot swallow the rest.  Returns malloc'd text or NULL.
 */
static char *filter_sql(backfiller *b, const bf_table *t)
{
    const backfill_args *a = b->a;
    char *since_col = NULL, *since_lit = NULL, *out = NULL;
    char ts[PGTIME_BUFSZ];
    int n;

    if (a->has_since) {
        unixtime_format(a->since_us, ts);
        since_col = quote_ident(b, t->rel.atts[t->binding.idx[OB_TIMESTAMP]].name);
        since_lit = PQescapeLiteral(b->conn, ts, strlen(ts));
        if (!since_col || !since_lit)
            goto done;
    }
    n = asprintf(&out, "%s%s%s%s%s%s%s%s", a->where || a->has_since ? " WHERE " : "",
                 a->where ? "(\n" : "", a->where ? a->where : "", a->where ? "\n)" : "",
                 a->where && a->has_since ? " AND " : "", a->has_since ? since_col : "",
                 a->has_since ? " >= " : "", a->has_since ? since_lit : "");
    if (n < 0)
        out = NULL;
    if (out && a->has_since) {
        char *more = NULL;
        if (asprintf(&more, "%s::timestamptz", out) < 0)
            more = NULL;
        free(out);
        out = more;
    }
done:
    PQfreemem(since_col);
    PQfreemem(since_lit);
    return out;
}

/* "schema"."table" */
static char *table_sql(backfiller *b, const bf_table *t)
{
    char *s = quote_ident(b, t->ct->schema), *n = quote_ident(b, t->ct->name), *out = NULL;
    if (s && n && asprintf(&out, "%s.%s", s, n) < 0)
        out = NULL;
    PQfreemem(s);
    PQfreemem(n);
    return out;
}

/* Failures below: err set, *code 2 (the table or an option is wrong) or 1. */
#define table_fail(code_, ...) (*code = (code_), errfmt(err, errlen, -1, __VA_ARGS__))

/* A catalog query about t: NULL with err "cannot WHAT \"TABLE\": cause". */
static PGresult *catalog(backfiller *b, const bf_table *t, const char *what, const char *sql,
                         int nparams, const char *const *params, char *err, size_t errlen)
{
    char qerr[512];
    PGresult *res =
        pgconn_exec(b->conn, sql, nparams, params, PGRES_TUPLES_OK, qerr, sizeof(qerr), NULL);

    if (!res)
        errfmt(err, errlen, -1, "cannot %s \"%s\": %s", what, t->ct->qualname, qerr);
    return res;
}

/* The table's oid (text, in oid[16]); it must exist and be a table. */
static int find_table(backfiller *b, const bf_table *t, char oid[16], char *err, size_t errlen,
                      int *code)
{
    const char *params[2] = {t->ct->schema, t->ct->name};
    const char *qn = t->ct->qualname;
    PGresult *res =
        catalog(b, t, "look up table",
                "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                2, params, err, errlen);
    int rc = 0;

    if (!res)
        return -1;
    if (PQntuples(res) != 1)
        rc = table_fail(2,
                        "outbox table \"%s\" does not exist: give the right --table "
                        "SCHEMA.TABLE (case matters: names are taken as written)",
                        qn);
    else if (strcmp(PQgetvalue(res, 0, 1), "r") != 0 && strcmp(PQgetvalue(res, 0, 1), "p") != 0)
        rc = table_fail(2, "\"%s\" is not a table: backfill reads outbox tables (--table)", qn);
    else
        strlcpy(oid, PQgetvalue(res, 0, 0), 16);
    PQclear(res);
    return rc;
}

/* Its columns as pgoutput sends them (not dropped, not generated), in
 * attnum order, into t->rel, and room for one row's values. */
static int read_columns(backfiller *b, bf_table *t, const char *oid, char *err, size_t errlen)
{
    const char *params[1] = {oid};
    PGresult *res =
        catalog(b, t, "read the columns of",
                "SELECT attname, atttypid FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND "
                "attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                1, params, err, errlen);
    int natts, rc = 0;

    if (!res)
        return -1;
    natts = PQntuples(res);
    t->rel.qualname = (char *)t->ct->qualname;
    t->rel.nspname = (char *)t->ct->schema;
    t->rel.relname = (char *)t->ct->name;
    t->rel.oid = (uint32_t)strtoul(oid, NULL, 10);
    t->rel.atts = calloc((size_t)natts + 1, sizeof(*t->rel.atts));
    t->vals = calloc((size_t)natts + 1, sizeof(*t->vals));
    if (!t->rel.atts || !t->vals)
        rc = errfmt(err, errlen, -1, "out of memory");
    for (int i = 0; rc == 0 && i < natts; i++) {
        t->rel.atts[i].name = strdup(PQgetvalue(res, i, 0));
        t->rel.atts[i].type_oid = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        if (!t->rel.atts[i].name)
            rc = errfmt(err, errlen, -1, "out of memory");
        else
            t->rel.natts = (uint16_t)(i + 1);
    }
    PQclear(res);
    return rc;
}

/* Its primary key's column names, in key order: backfill reads in that
 * order, so a table without one is refused. */
static int read_primary_key(backfiller *b, bf_table *t, const char *oid, char *err, size_t errlen,
                            int *code)
{
    const char *params[1] = {oid};
    const char *qn = t->ct->qualname;
    PGresult *res =
        catalog(b, t, "read the primary key of",
                "SELECT a.attname FROM pg_catalog.pg_index i"
                " CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)"
                " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
                " WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
                1, params, err, errlen);
    int rc = 0;

    if (!res)
        return -1;
    if (PQntuples(res) == 0)
        rc = table_fail(2,
                        "outbox table \"%s\" has no primary key: backfill reads it in "
                        "primary-key order; add one (ALTER TABLE %s ADD PRIMARY KEY (id))",
                        qn, qn);
    else if (!(t->pk = calloc((size_t)PQntuples(res), sizeof(*t->pk))))
        rc = table_fail(1, "out of memory");
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        if (!(t->pk[i] = strdup(PQgetvalue(res, i, 0))))
            rc = table_fail(1, "out of memory");
        else
            t->npk = i + 1;
    }
    PQclear(res);
    return rc;
}

/* The count of matching rows for the progress estimate, which also checks
 * --where and --since against the table before anything is published. */
static int count_rows(backfiller *b, bf_table *t, char *err, size_t errlen, int *code)
{
    const char *qn = t->ct->qualname;
    char qerr[512], state[6];
    char *tsql = table_sql(b, t), *filter = filter_sql(b, t), *sql = NULL;
    PGresult *res = NULL;
    int rc = -1;

    if (!tsql || !filter || asprintf(&sql, "SELECT count(*) FROM %s%s", tsql, filter) < 0) {
        sql = NULL;
        table_fail(1, "out of memory");
    } else if (!(res = pgconn_exec(b->conn, sql, 0, NULL, PGRES_TUPLES_OK, qerr, sizeof(qerr),
                                   state))) {
        /* class 42: syntax error, unknown column, no such operator, ... --
         * the filter is at fault; 22: a value in it that does not convert */
        if (strcmp(state, "42501") == 0)
            table_fail(2, "cannot read \"%s\": %s: GRANT SELECT ON %s TO the role", qn, qerr, qn);
        else if ((b->a->where || b->a->has_since) &&
                 (strncmp(state, "42", 2) == 0 || strncmp(state, "22", 2) == 0))
            table_fail(2, "%s not valid for table \"%s\": %s",
                       !b->a->where      ? "--since is"
                       : b->a->has_since ? "--where or --since is"
                                         : "--where is",
                       qn, qerr);
        else
            table_fail(1, "cannot count the rows of \"%s\": %s", qn, qerr);
    } else {
        t->total = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        rc = 0;
    }
    PQclear(res);
    free(sql);
    free(filter);
    free(tsql);
    return rc;
}

/*
 * Look the table up in the snapshot's catalog: its columns, its primary
 * key, the binding of the column map, the --since column, and the count of
 * matching rows.  Returns 0, or -1 with *code 2 (the table or an option is
 * wrong) or 1.
 */
static int resolve_table(backfiller *b, bf_table *t, char *err, size_t errlen, int *code)
{
    const char *qn = t->ct->qualname;
    char oid[16], qerr[512];

    *code = 1;
    if (find_table(b, t, oid, err, errlen, code) != 0 ||
        read_columns(b, t, oid, err, errlen) != 0 ||
        read_primary_key(b, t, oid, err, errlen, code) != 0)
        return -1;
    if (outbox_bind(&t->ct->colmap, &t->rel, &t->binding, qerr, sizeof(qerr)) != 0)
        return table_fail(2, "%s", qerr);
    if (b->a->has_since && t->binding.idx[OB_TIMESTAMP] < 0)
        return table_fail(2,
                          "--since filters on the event timestamp column, and \"%s\" has no "
                          "column \"%s\": map it with --column %s:timestamp=COLUMN",
                          qn, t->ct->colmap.col[OB_TIMESTAMP], qn);
    return count_rows(b, t, err, errlen, code);
}

/* Read one table through a cursor in primary-key order and publish it. */
static int backfill_table(backfiller *b, bf_table *t, char *err, size_t errlen)
{
    char *tsql = table_sql(b, t), *filter = filter_sql(b, t), *sql = NULL, *cols = NULL;
    char *order = NULL, fetch[64], qerr[512];
    size_t clen = 0, olen = 0;
    FILE *cf = NULL, *of = NULL;
    PGresult *res;
    int rc = -1;

    if (!tsql || !filter || !(cf = open_memstream(&cols, &clen)) ||
        !(of = open_memstream(&order, &olen))) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; i < t->rel.natts; i++) {
        char *c = quote_ident(b, t->rel.atts[i].name);
        if (!c) {
            snprintf(err, errlen, "cannot quote column \"%s\"", t->rel.atts[i].name);
            goto done;
        }
        fprintf(cf, "%s%s", i ? ", " : "", c);
        PQfreemem(c);
    }
    for (int i = 0; i < t->npk; i++) {
        char *c = quote_ident(b, t->pk[i]);
        if (!c) {
            snprintf(err, errlen, "cannot quote column \"%s\"", t->pk[i]);
            goto done;
        }
        fprintf(of, "%s%s", i ? ", " : "", c);
        PQfreemem(c);
    }
    if (fclose(cf) != 0 || fclose(of) != 0) {
        cf = of = NULL;
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    cf = of = NULL;
    if (asprintf(&sql,
                 "DECLARE " CURSOR_NAME " NO SCROLL CURSOR FOR SELECT %s FROM %s%s ORDER BY %s",
                 cols, tsql, filter, order) < 0) {
        sql = NULL;
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (!(res = pgconn_exec(b->conn, sql, 0, NULL, PGRES_COMMAND_OK, qerr, sizeof(qerr), NULL))) {
        snprintf(err, errlen, "cannot read \"%s\": %s", t->ct->qualname, qerr);
        goto done;
    }
    PQclear(res);
    log_debug("reading \"%s\" in primary-key order (%s), %d rows per fetch", t->ct->qualname, order,
              b->a->batch_size);
    snprintf(fetch, sizeof(fetch), "FETCH FORWARD %d FROM " CURSOR_NAME, b->a->batch_size);
    for (;;) {
        if (backfill_stop)
            oneshot_fatal(&b->o, "interrupted");
        if (b->o.fatal[0])
            break;
        if (!(res = pgconn_exec(b->conn, fetch, 0, NULL, PGRES_TUPLES_OK, qerr, sizeof(qerr),
                                NULL))) {
            oneshot_fatal(&b->o, "reading \"%s\" failed: %s", t->ct->qualname, qerr);
            break;
        }
        int n = PQntuples(res);
        if (PQnfields(res) != t->rel.natts) {
            oneshot_fatal(&b->o, "\"%s\" returned %d columns, expected %d", t->ct->qualname,
                          PQnfields(res), (int)t->rel.natts);
            PQclear(res);
            break;
        }
        for (int r = 0; r < n && !b->o.fatal[0]; r++) {
            publish_row(b, t, res, r);
            b->rows++;
            if ((b->rows & 63) == 0) {
                oneshot_serve(&b->o);
                show_progress(b, false);
            }
        }
        PQclear(res);
        if (n < b->a->batch_size)
            break;
    }
    if (!b->o.fatal[0]) {
        if (!(res = pgconn_exec(b->conn, "CLOSE " CURSOR_NAME, 0, NULL, PGRES_COMMAND_OK, qerr,
                                sizeof(qerr), NULL)))
            oneshot_fatal(&b->o, "cannot close the cursor on \"%s\": %s", t->ct->qualname, qerr);
        PQclear(res);
    }
    rc = b->o.fatal[0] ? -1 : 0;
done:
    if (cf)
        fclose(cf);
    if (of)
        fclose(of);
    free(cols);
    free(order);
    free(sql);
    free(filter);
    free(tsql);
    return rc;
}

static void summary(backfiller *b)
{
    char dl[160];
    double secs = (double)(obx_now_ms() - b->prog.started_ms) / 1000.0;

    pipeline_dlq_summary(&b->o.p, dl, sizeof(dl));
    log_info("backfill %s: %llu rows of %zu table(s) read in %.1f s, %llu events %s, %llu "
             "dead-lettered%s%s%s",
             b->a->dry_run ? "dry run done" : "done", (unsigned long long)b->rows, b->ntables, secs,
             (unsigned long long)b->o.p.published,
             b->a->dry_run ? "would be published (nothing published)"
                           : "published and acknowledged",
             (unsigned long long)b->o.p.dead_lettered, dl[0] ? " (" : "", dl, dl[0] ? ")" : "");
}

int backfill_main(int argc, char **argv)
{
    backfill_args a;
    backfiller b = {0};
    char err[1024];
    int code = 1, prc;

    prc = backfill_parse(argc, argv, &a, err, sizeof(err));
    if ((code = oneshot_start(prc, err, &a.cfg, on_signal)) >= 0) {
        backfill_args_free(&a);
        return code;
    }
    code = 1;

    b.a = &a;
    b.cfg = &a.cfg;
    b.o.cfg = &a.cfg;
    b.o.stop = &backfill_stop;
    b.o.idle = on_idle;
    b.o.hooks = (pipeline_hooks){.before_log = on_before_log, .arg = &b};
    progress_init(&b.prog, "backfill", isatty(STDERR_FILENO) && !a.cfg.log_json, obx_now_ms());
    b.ntables = a.cfg.ntables;
    b.tables = calloc(b.ntables, sizeof(*b.tables));
    if (!b.tables) {
        log_error("out of memory");
        goto out;
    }
    if (connect_db(&b, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    b.o.dl_base = (envelope_source){.backfill = true, .commit_ts = b.snapshot_ts, .db = b.dbname};
    /* Every table is checked before anything is published. */
    for (size_t i = 0; i < b.ntables; i++) {
        b.tables[i].ct = &a.cfg.tables[i];
        if (resolve_table(&b, &b.tables[i], err, sizeof(err), &code) != 0) {
            log_error("%s", err);
            goto out;
        }
        b.total += b.tables[i].total;
    }
    code = 1;
    if (!a.dry_run) {
        b.o.sk = sink_open(a.cfg.brokers, a.cfg.props, a.cfg.nprops, err, sizeof(err));
        if (!b.o.sk) {
            log_error("%s", err);
            code = 2;
            goto out;
        }
    }
    oneshot_init(&b.o, b.dbname, a.dry_run);
    {
        char ts[PGTIME_BUFSZ];
        log_info("backfilling %llu rows of %zu table(s) from the snapshot of %s%s",
                 (unsigned long long)b.total, b.ntables, pgtime_format(b.snapshot_ts, ts),
                 a.dry_run ? " (dry run: nothing is published)" : "");
    }
    progress_init(&b.prog, "backfill", b.prog.tty, obx_now_ms());
    for (size_t i = 0; i < b.ntables; i++)
        if (backfill_table(&b, &b.tables[i], err, sizeof(err)) != 0) {
            progress_clear(&b.prog);
            if (!b.o.fatal[0])
                oneshot_fatal(&b.o, "%s", err);
            break;
        }
    /* Read only: ending the transaction releases the snapshot early. */
    if (b.conn) {
        PQclear(PQexec(b.conn, b.o.fatal[0] ? "ROLLBACK" : "COMMIT"));
        PQfinish(b.conn);
        b.conn = NULL;
    }
    if (b.o.sk) {
        (void)oneshot_flush(&b.o, NULL);
        if (backfill_stop)
            oneshot_fatal(&b.o, "interrupted");
    }
    if (b.prog.tty)
        show_progress(&b, true);
    progress_clear(&b.prog);
    if (!oneshot_complete(&b.o)) {
        if (b.o.fatal[0])
            log_error("backfill incomplete: %s", b.o.fatal);
        if (b.o.failed)
            log_error("%llu deliveries failed; first: %s", (unsigned long long)b.o.failed,
                      b.o.first_failure);
        log_error("backfill incomplete: %llu of %llu records not acknowledged by the broker "
                  "(%llu of %llu rows read); running it again is safe: consumers deduplicate on id",
                  (unsigned long long)oneshot_missing(&b.o), (unsigned long long)b.o.records,
                  (unsigned long long)b.rows, (unsigned long long)b.total);
        goto out;
    }
    oneshot_print_topics(&b.o, stdout);
    summary(&b);
    code = 0;
out:
    oneshot_clear(&b.o);
    PQfinish(b.conn);
    for (size_t i = 0; i < b.ntables && b.tables; i++)
        table_clear(&b.tables[i]);
    free(b.tables);
    backfill_args_free(&a);
    return code;
}
