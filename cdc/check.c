#include "cdc/check.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/admin.h"
#include "cdc/config.h"
#include "cdc/pgconn.h"
#include "cdc/policy.h"
#include "cdc/slotstate.h"
#include "publish/probe.h"
#include "schema/envelope.h"
#include "schema/topic.h"

#define CHECK_MAX_TOPICS 100
/* What an envelope adds to the row's text: names, source, headers. */
#define CHECK_ENVELOPE_OVERHEAD 1024
#define CHECK_KAFKA_TIMEOUT_MS 5000

static const char check_usage[] =
    "usage: outbox-relay check [--json] [--warn-bytes SIZE] [run options]\n"
    "\n"
    "Before the first start: checks the database (server version and features,\n"
    "wal_level, free replication slots and WAL senders, the role's REPLICATION\n"
    "and SELECT, the outbox tables and their column types, the publication, the\n"
    "slot, max_slot_wal_keep_size, anchors) and the brokers (reachable, idempotent\n"
    "production, the topics the template will use, the message size limit against\n"
    "the largest row), with the configuration `run` would use (--config, the\n"
    "OUTBOX_RELAY_* environment and the run options).  Creates nothing.\n"
    "\n"
    "      --json              one JSON document instead of lines\n"
    "      --warn-bytes SIZE   a slot lag or an anchor retaining more WAL is flagged\n"
    "                          (default 1G; k, M, G suffixes)\n"
    "\n"
    "exit codes: 0 nothing to fix (warnings allowed), 1 something to fix, 2 bad usage\n";

/* ---- the report ---------------------------------------------------------- */

void check_add(check_report *r, const char *name, enum check_status st, const char *fix,
               const char *fmt, ...)
{
    va_list ap;
    check_item *it;

    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 32;
        check_item *v = realloc(r->v, cap * sizeof(*v));
        if (!v)
            return;
        r->v = v;
        r->cap = cap;
    }
    it = &r->v[r->n++];
    snprintf(it->name, sizeof(it->name), "%s", name);
    it->status = st;
    va_start(ap, fmt);
    vsnprintf(it->msg, sizeof(it->msg), fmt, ap);
    va_end(ap);
    snprintf(it->fix, sizeof(it->fix), "%s", fix ? fix : "");
}

void check_report_free(check_report *r)
{
    if (!r)
        return;
    free(r->v);
    r->v = NULL;
    r->n = r->cap = 0;
}

int check_exit_code(const check_report *r)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].status == CHECK_FAIL)
            return 1;
    return 0;
}

static const char *const status_names[] = {"ok", "warn", "fail", "skip"};
static const char *const status_marks[] = {"\xE2\x9C\x93", "\xE2\x9A\xA0", "\xE2\x9C\x97", "-"};

void check_print(const check_report *r, bool json, FILE *out)
{
    size_t counts[4] = {0};

    for (size_t i = 0; i < r->n; i++)
        counts[r->v[i].status]++;
    if (json) {
        json_t *doc = json_object(), *arr = json_array();
        for (size_t i = 0; i < r->n; i++) {
            const check_item *it = &r->v[i];
            json_t *o = json_object();
            json_object_set_new(o, "check", json_string(it->name));
            json_object_set_new(o, "status", json_string(status_names[it->status]));
            json_object_set_new(o, "message", json_string(it->msg));
            if (it->fix[0])
                json_object_set_new(o, "fix", json_string(it->fix));
            json_array_append_new(arr, o);
        }
        json_object_set_new(doc, "ok", json_boolean(check_exit_code(r) == 0));
        json_object_set_new(doc, "failed", json_integer((json_int_t)counts[CHECK_FAIL]));
        json_object_set_new(doc, "warnings", json_integer((json_int_t)counts[CHECK_WARN]));
        json_object_set_new(doc, "checks", arr);
        json_dumpf(doc, out, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        fputc('\n', out);
        json_decref(doc);
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        const check_item *it = &r->v[i];
        fprintf(out, "%s %s: %s\n", status_marks[it->status], it->name, it->msg);
        if (it->fix[0])
            fprintf(out, "    fix: %s\n", it->fix);
    }
    fprintf(out, "%zu ok, %zu warnings, %zu to fix, %zu skipped\n", counts[CHECK_OK],
            counts[CHECK_WARN], counts[CHECK_FAIL], counts[CHECK_SKIP]);
}

/* ---- pure verdicts ------------------------------------------------------- */

static const char *const types_text[] = {"text", "varchar", "bpchar", NULL};
static const char *const types_id[] = {"uuid", "text", "varchar", "bpchar",
                                       "int2", "int4", "int8",    NULL};
static const char *const types_payload[] = {"jsonb", "json", "text", "varchar", "bytea", NULL};
static const char *const types_ts[] = {"timestamptz", NULL};
/* debezium: Debezium's event router also takes a timestamp without time
 * zone (as UTC) and an integer of epoch milliseconds */
static const char *const types_ts_dbz[] = {"timestamptz", "timestamp", "int2",
                                           "int4",        "int8",      NULL};

static const char *const *types_for(enum outbox_role role, bool debezium)
{
    if (role == OB_TIMESTAMP && debezium)
        return types_ts_dbz;
    switch (role) {
    case OB_ID:
    case OB_AGGREGATE_ID:
        return types_id;
    case OB_PAYLOAD:
        return types_payload;
    case OB_TIMESTAMP:
        return types_ts;
    default:
        return types_text;
    }
}

bool check_type_accepted(enum outbox_role role, const char *typname, bool debezium)
{
    for (const char *const *t = types_for(role, debezium); *t; t++)
        if (strcmp(*t, typname) == 0)
            return true;
    return false;
}

const char *check_types_of(enum outbox_role role, bool debezium)
{
    if (role == OB_TIMESTAMP && debezium)
        return "timestamptz, timestamp (as UTC), or an integer of epoch milliseconds";
    switch (role) {
    case OB_ID:
    case OB_AGGREGATE_ID:
        return "uuid, text, varchar, char, smallint, integer, bigint";
    case OB_PAYLOAD:
        return "jsonb, json, text, varchar, bytea";
    case OB_TIMESTAMP:
        return "timestamptz";
    default:
        return "text, varchar, char";
    }
}

enum check_status check_wal_status(const char *wal_status)
{
    if (!wal_status || !*wal_status || strcmp(wal_status, "reserved") == 0)
        return CHECK_OK;
    if (strcmp(wal_status, "extended") == 0)
        return CHECK_WARN;
    return CHECK_FAIL; /* unreserved: about to lose WAL; lost: lost it */
}

/* ---- the database -------------------------------------------------------- */

typedef struct checker {
    const config *cfg;
    check_report *rep;
    PGconn *conn;
    int version;
    uint64_t warn_bytes;
    bool table_ok[CONFIG_MAX_TABLES]; /* exists with every required column */
    uint64_t largest_row;             /* octet_length(row::text) of the largest row */
    char largest_table[130];
    char *topics[CHECK_MAX_TOPICS]; /* owned */
    size_t ntopics;
    bool topics_truncated;
    bool topics_partial; /* a table could not be read: topics unknown */
} checker;

/* Run sql with text parameters; NULL with errbuf on failure. */
static PGresult *query(checker *c, char *errbuf, size_t errlen, const char *sql, int n, ...)
{
    const char *params[8];
    va_list ap;
    PGresult *res;

    va_start(ap, n);
    for (int i = 0; i < n && i < 8; i++)
        params[i] = va_arg(ap, const char *);
    va_end(ap);
    res = PQexecParams(c->conn, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(errbuf, errlen, "%s", PQresultErrorMessage(res));
        pgconn_one_line(errbuf);
        PQclear(res);
        return NULL;
    }
    return res;
}

static void fmt_bytes(uint64_t b, char *buf, size_t len)
{
    if (b >= (UINT64_C(1) << 30))
        snprintf(buf, len, "%.1f GiB", (double)b / (double)(UINT64_C(1) << 30));
    else if (b >= (UINT64_C(1) << 20))
        snprintf(buf, len, "%.1f MiB", (double)b / (double)(UINT64_C(1) << 20));
    else if (b >= 1024)
        snprintf(buf, len, "%.1f KiB", (double)b / 1024.0);
    else
        snprintf(buf, len, "%llu bytes", (unsigned long long)b);
}

static void check_server(checker *c)
{
    int v = c->version;
    char fix[256] = "";
    bool msgs = v >= 140000, failover = v >= 170000;

    if (v < 100000) {
        check_add(c->rep, "server", CHECK_FAIL, "upgrade PostgreSQL (14 or later recommended)",
                  "PostgreSQL %d.%d is too old: logical replication with pgoutput needs 10",
                  v / 10000, v % 10000);
        return;
    }
    if (c->cfg->messages_prefix && !msgs) {
        snprintf(fix, sizeof(fix), "drop --messages, or upgrade PostgreSQL to 14 or later");
        check_add(c->rep, "server", CHECK_FAIL, fix,
                  "PostgreSQL %d.%d: --messages needs logical decoding messages (14+)",
                  v >= 100000 ? v / 10000 : v / 100, v % 100);
        return;
    }
    check_add(c->rep, "server", CHECK_OK, NULL,
              "PostgreSQL %d.%d; logical messages (14+): %s; failover slots (17+): %s", v / 10000,
              v % 100, msgs ? "yes" : "no", failover ? "yes" : "no");
}

static void check_settings(checker *c)
{
    char e[512], fix[512];
    PGresult *res;

    res = query(c, e, sizeof(e), "SELECT current_setting('wal_level')", 0);
    if (!res) {
        check_add(c->rep, "wal_level", CHECK_FAIL, NULL, "cannot read: %s", e);
    } else {
        const char *wl = PQgetvalue(res, 0, 0);
        if (strcmp(wl, "logical") == 0)
            check_add(c->rep, "wal_level", CHECK_OK, NULL, "logical");
        else
            check_add(c->rep, "wal_level", CHECK_FAIL,
                      "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
                      "is \"%s\": logical decoding needs \"logical\"", wl);
        PQclear(res);
    }

    res = query(c, e, sizeof(e),
                "SELECT current_setting('max_replication_slots')::int,"
                " (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,"
                " EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
                1, c->cfg->slot);
    if (!res) {
        check_add(c->rep, "replication_slots", CHECK_FAIL, NULL, "cannot read: %s", e);
    } else {
        int max = atoi(PQgetvalue(res, 0, 0)), used = atoi(PQgetvalue(res, 0, 1));
        bool mine = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
        if (mine)
            check_add(c->rep, "replication_slots", CHECK_OK, NULL,
                      "%d of max_replication_slots %d in use, \"%s\" among them", used, max,
                      c->cfg->slot);
        else if (used < max)
            check_add(c->rep, "replication_slots", CHECK_OK, NULL,
                      "%d of max_replication_slots %d free for slot \"%s\"", max - used, max,
                      c->cfg->slot);
        else {
            snprintf(fix, sizeof(fix),
                     "ALTER SYSTEM SET max_replication_slots = %d and restart PostgreSQL, or drop "
                     "an unused slot (SELECT slot_name, active FROM pg_replication_slots)",
                     max + 2);
            check_add(c->rep, "replication_slots", CHECK_FAIL, fix,
                      "all %d replication slots are in use: none left for \"%s\"", max,
                      c->cfg->slot);
        }
        PQclear(res);
    }

    res = query(c, e, sizeof(e),
                "SELECT current_setting('max_wal_senders')::int,"
                " (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int",
                0);
    if (!res) {
        check_add(c->rep, "wal_senders", CHECK_FAIL, NULL, "cannot read: %s", e);
    } else {
        int max = atoi(PQgetvalue(res, 0, 0)), used = atoi(PQgetvalue(res, 0, 1));
        if (used < max) {
            check_add(c->rep, "wal_senders", CHECK_OK, NULL, "%d of max_wal_senders %d free",
                      max - used, max);
        } else {
            snprintf(fix, sizeof(fix),
                     "ALTER SYSTEM SET max_wal_senders = %d; then restart PostgreSQL", max + 2);
            check_add(c->rep, "wal_senders", CHECK_FAIL, fix,
                      "all %d WAL senders are busy (max_wal_senders %d): the relay could not "
                      "stream",
                      used, max);
        }
        PQclear(res);
    }

    if (c->version >= 130000) {
        res = query(c, e, sizeof(e), "SELECT current_setting('max_slot_wal_keep_size')", 0);
        if (!res) {
            check_add(c->rep, "max_slot_wal_keep_size", CHECK_FAIL, NULL, "cannot read: %s", e);
        } else {
            const char *v = PQgetvalue(res, 0, 0);
            if (strcmp(v, "-1") == 0)
                check_add(c->rep, "max_slot_wal_keep_size", CHECK_WARN,
                          "ALTER SYSTEM SET max_slot_wal_keep_size = '100GB' (what the disk can "
                          "spare); SELECT pg_reload_conf()",
                          "unlimited (-1): a relay that stops confirming makes its slot retain "
                          "WAL until the disk is full");
            else
                check_add(c->rep, "max_slot_wal_keep_size", CHECK_OK, NULL,
                          "%s: a slot past it loses its WAL (wal_status \"lost\") instead of "
                          "filling the disk",
                          v);
            PQclear(res);
        }
    }
}

static void check_role(checker *c)
{
    char e[512];
    PGresult *res = query(c, e, sizeof(e),
                          "SELECT current_user, rolreplication, rolsuper FROM pg_catalog.pg_roles"
                          " WHERE rolname = current_user",
                          0);

    if (!res || PQntuples(res) != 1) {
        check_add(c->rep, "role", CHECK_FAIL, NULL, "cannot read the role: %s",
                  res ? "not in pg_roles" : e);
        PQclear(res);
        return;
    }
    const char *user = PQgetvalue(res, 0, 0);
    if (strcmp(PQgetvalue(res, 0, 1), "t") == 0 || strcmp(PQgetvalue(res, 0, 2), "t") == 0) {
        check_add(c->rep, "role", CHECK_OK, NULL, "\"%s\" has REPLICATION%s", user,
                  strcmp(PQgetvalue(res, 0, 2), "t") == 0 ? " (superuser)" : "");
    } else {
        char fix[256];
        snprintf(fix, sizeof(fix), "ALTER ROLE \"%s\" REPLICATION", user);
        check_add(c->rep, "role", CHECK_FAIL, fix,
                  "\"%s\" lacks REPLICATION: it cannot open a replication connection", user);
    }
    PQclear(res);
}

static void add_topic(checker *c, const char *t)
{
    for (size_t i = 0; i < c->ntopics; i++)
        if (strcmp(c->topics[i], t) == 0)
            return;
    if (c->ntopics == CHECK_MAX_TOPICS) {
        c->topics_truncated = true;
        return;
    }
    char *d = strdup(t);
    if (d)
        c->topics[c->ntopics++] = d;
}

/* The topics the template gives for the rows now in the table, and the
 * size of its largest row. */
static void scan_rows(checker *c, size_t ti)
{
    const config_table *tab = &c->cfg->tables[ti];
    char sql[2048], e[512], name[200], terr[256], topic[256];
    char *qt = NULL, *cols[3] = {NULL, NULL, NULL};
    const enum outbox_role roles[3] = {OB_AGGREGATE_TYPE, OB_AGGREGATE_ID, OB_TYPE};
    PGresult *res;

    qt = malloc(300);
    char *s = PQescapeIdentifier(c->conn, tab->schema, strlen(tab->schema));
    char *n = PQescapeIdentifier(c->conn, tab->name, strlen(tab->name));
    for (int i = 0; i < 3; i++)
        cols[i] = PQescapeIdentifier(c->conn, tab->colmap.col[roles[i]],
                                     strlen(tab->colmap.col[roles[i]]));
    if (!qt || !s || !n || !cols[0] || !cols[1] || !cols[2]) {
        c->topics_partial = true;
        goto done;
    }
    snprintf(qt, 300, "%s.%s", s, n);
    snprintf(name, sizeof(name), "rows %s", tab->qualname);
    /* aggregate ids only when the template uses them: one topic per id is
     * rare, and DISTINCT over them costly */
    bool by_id = strstr(c->cfg->topic, "{aggregate_id}") != NULL;
    snprintf(sql, sizeof(sql), "SELECT DISTINCT %s::text, %s, %s::text FROM %s LIMIT %d", cols[0],
             by_id ? cols[1] : "NULL::text", cols[2], qt, CHECK_MAX_TOPICS + 1);
    res = query(c, e, sizeof(e), sql, 0);
    if (!res) {
        c->topics_partial = true;
        check_add(c->rep, name, CHECK_FAIL, NULL, "cannot read the rows: %s", e);
        goto done;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        const char *v[3];
        for (int k = 0; k < 3; k++)
            v[k] = PQgetisnull(res, r, k) ? NULL : PQgetvalue(res, r, k);
        outbox_row row;
        memset(&row, 0, sizeof(row));
        for (int k = 0; k < 3; k++) {
            row.f[roles[k]].present = v[k] != NULL;
            row.f[roles[k]].data = v[k];
            row.f[roles[k]].len = v[k] ? strlen(v[k]) : 0;
        }
        if (topic_expand(c->cfg->topic, &row, tab->qualname, topic, terr, sizeof(terr)) != 0) {
            char fix[512];
            snprintf(fix, sizeof(fix),
                     "change --topic, or the rows' values: such rows go to the dead-letter "
                     "topic \"%s\"",
                     c->cfg->dlq_topic);
            check_add(c->rep, name, CHECK_FAIL, fix, "a row gives no valid topic: %s", terr);
            continue;
        }
        add_topic(c, topic);
    }
    if (PQntuples(res) > CHECK_MAX_TOPICS)
        c->topics_truncated = true;
    PQclear(res);

    snprintf(sql, sizeof(sql), "SELECT coalesce(max(octet_length(t::text)), 0) FROM %s t", qt);
    res = query(c, e, sizeof(e), sql, 0);
    if (res) {
        uint64_t big = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        if (big > c->largest_row) {
            c->largest_row = big;
            snprintf(c->largest_table, sizeof(c->largest_table), "%s", tab->qualname);
        }
        PQclear(res);
    }
done:
    free(qt);
    PQfreemem(s);
    PQfreemem(n);
    for (int i = 0; i < 3; i++)
        PQfreemem(cols[i]);
}

static void check_tables(checker *c)
{
    char e[512], name[200], fix[768], oid[16];
    bool dbz = c->cfg->format == ENVELOPE_FORMAT_DEBEZIUM;

    for (size_t ti = 0; ti < c->cfg->ntables; ti++) {
        const config_table *tab = &c->cfg->tables[ti];
        PGresult *res;
        bool ok = true;

        snprintf(name, sizeof(name), "table %s", tab->qualname);
        res = query(c, e, sizeof(e),
                    "SELECT c.oid, c.relkind, has_table_privilege(c.oid, 'SELECT')"
                    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
                    " ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                    2, tab->schema, tab->name);
        if (!res) {
            check_add(c->rep, name, CHECK_FAIL, NULL, "cannot read: %s", e);
            continue;
        }
        if (PQntuples(res) == 0) {
            snprintf(fix, sizeof(fix),
                     "create it (psql -f /usr/share/outbox-relay/outbox.sql, or "
                     "schema/outbox.sql), or name yours with --table SCHEMA.TABLE");
            check_add(c->rep, name, CHECK_FAIL, fix, "does not exist");
            PQclear(res);
            continue;
        }
        snprintf(oid, sizeof(oid), "%s", PQgetvalue(res, 0, 0));
        if (strcmp(PQgetvalue(res, 0, 1), "r") != 0 && strcmp(PQgetvalue(res, 0, 1), "p") != 0) {
            check_add(c->rep, name, CHECK_FAIL, "--table must name the outbox table",
                      "is not a table (relkind %s)", PQgetvalue(res, 0, 1));
            PQclear(res);
            continue;
        }
        bool can_select = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
        PQclear(res);

        res = query(c, e, sizeof(e),
                    "SELECT a.attname, CASE WHEN t.typtype = 'd' THEN b.typname ELSE t.typname "
                    "END, format_type(a.atttypid, a.atttypmod)"
                    " FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = "
                    "a.atttypid LEFT JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype"
                    " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                    1, oid);
        if (!res) {
            check_add(c->rep, name, CHECK_FAIL, NULL, "cannot read its columns: %s", e);
            continue;
        }
        for (int r = 0; r < OB_NROLES; r++) {
            const char *col = tab->colmap.col[r], *role = outbox_role_name((enum outbox_role)r);
            int row = -1;
            for (int i = 0; i < PQntuples(res) && row < 0; i++)
                if (strcmp(PQgetvalue(res, i, 0), col) == 0)
                    row = i;
            if (row < 0) {
                if (outbox_colmap_requires(&tab->colmap, (enum outbox_role)r)) {
                    snprintf(fix, sizeof(fix),
                             "add column \"%s\" (%s), or map another with --column %s:%s=COLUMN",
                             col, check_types_of((enum outbox_role)r, dbz), tab->qualname, role);
                    check_add(c->rep, name, CHECK_FAIL, fix, "no column \"%s\" for role %s", col,
                              role);
                    ok = false;
                }
                continue;
            }
            if (!check_type_accepted((enum outbox_role)r, PQgetvalue(res, row, 1), dbz)) {
                snprintf(fix, sizeof(fix),
                         "ALTER TABLE %s ALTER COLUMN \"%s\" TYPE %s USING ..., or map another "
                         "column with --column %s:%s=COLUMN",
                         tab->qualname, col, types_for((enum outbox_role)r, dbz)[0], tab->qualname,
                         role);
                check_add(c->rep, name, CHECK_FAIL, fix,
                          "column \"%s\" (role %s) is %s; the relay accepts %s", col, role,
                          PQgetvalue(res, row, 2), check_types_of((enum outbox_role)r, dbz));
                ok = false;
            }
        }
        PQclear(res);
        if (ok)
            check_add(c->rep, name, CHECK_OK, NULL,
                      "exists; every role's column has a type the "
                      "relay accepts");
        c->table_ok[ti] = ok;

        snprintf(name, sizeof(name), "select %s", tab->qualname);
        if (can_select) {
            check_add(c->rep, name, CHECK_OK, NULL, "the role may SELECT (backfill reads it)");
        } else {
            snprintf(fix, sizeof(fix), "GRANT SELECT ON %s TO CURRENT_USER (as its owner)",
                     tab->qualname);
            check_add(c->rep, name, CHECK_FAIL, fix,
                      "the role may not SELECT from it: the publication's initial checks and "
                      "backfill need it");
        }
        if (ok && can_select)
            scan_rows(c, ti);
        else
            c->topics_partial = true;
    }
}

static void check_publication(checker *c)
{
    const config *cfg = c->cfg;
    char e[512], fix[1024], tables[900] = "";
    PGresult *res;
    size_t o = 0;

    for (size_t t = 0; t < cfg->ntables && o < sizeof(tables) - 1; t++)
        o += (size_t)snprintf(tables + o, sizeof(tables) - o, "%s%s", t ? ", " : "",
                              cfg->tables[t].qualname);
    res = query(c, e, sizeof(e),
                "SELECT pubinsert, pubupdate, pubdelete FROM pg_catalog.pg_publication "
                "WHERE pubname = $1",
                1, cfg->publication);
    if (!res) {
        check_add(c->rep, "publication", CHECK_FAIL, NULL, "cannot read: %s", e);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        if (cfg->create_slot) {
            check_add(c->rep, "publication", CHECK_OK, NULL,
                      "\"%s\" does not exist yet: --create-slot creates it", cfg->publication);
            return;
        }
        snprintf(fix, sizeof(fix),
                 "CREATE PUBLICATION \"%s\" FOR TABLE %s WITH (publish = 'insert'), or run with "
                 "--create-slot",
                 cfg->publication, tables);
        check_add(c->rep, "publication", CHECK_FAIL, fix, "\"%s\" does not exist",
                  cfg->publication);
        return;
    }
    bool ins = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    bool more = strcmp(PQgetvalue(res, 0, 1), "t") == 0 || strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    PQclear(res);
    if (!ins) {
        snprintf(fix, sizeof(fix), "ALTER PUBLICATION \"%s\" SET (publish = 'insert')",
                 cfg->publication);
        check_add(c->rep, "publication", CHECK_FAIL, fix, "\"%s\" does not publish inserts",
                  cfg->publication);
        return;
    }
    for (size_t t = 0; t < cfg->ntables; t++) {
        res = query(c, e, sizeof(e),
                    "SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = $1"
                    " AND schemaname = $2 AND tablename = $3",
                    3, cfg->publication, cfg->tables[t].schema, cfg->tables[t].name);
        if (!res) {
            check_add(c->rep, "publication", CHECK_FAIL, NULL, "cannot read its tables: %s", e);
            return;
        }
        bool covered = PQntuples(res) == 1;
        PQclear(res);
        if (!covered) {
            snprintf(fix, sizeof(fix), "ALTER PUBLICATION \"%s\" ADD TABLE %s", cfg->publication,
                     cfg->tables[t].qualname);
            check_add(c->rep, "publication", CHECK_FAIL, fix, "\"%s\" does not cover %s",
                      cfg->publication, cfg->tables[t].qualname);
            return;
        }
    }
    if (more) {
        snprintf(fix, sizeof(fix), "ALTER PUBLICATION \"%s\" SET (publish = 'insert')",
                 cfg->publication);
        check_add(c->rep, "publication", CHECK_WARN, fix,
                  "\"%s\" covers %s but also publishes updates or deletes, which the relay "
                  "decodes and ignores",
                  cfg->publication, tables);
        return;
    }
    check_add(c->rep, "publication", CHECK_OK, NULL, "\"%s\" publishes inserts of %s",
              cfg->publication, tables);
}

static void check_slot(checker *c)
{
    const config *cfg = c->cfg;
    char e[512], fix[768], lag[32];
    PGresult *res;

    res = query(c, e, sizeof(e),
                c->version >= 130000
                    ? "SELECT slot_type, coalesce(plugin, ''), coalesce(database::text, ''),"
                      " current_database(), wal_status,"
                      " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)"
                      "::bigint, active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"
                    : "SELECT slot_type, coalesce(plugin, ''), coalesce(database::text, ''),"
                      " current_database(), '',"
                      " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)"
                      "::bigint, active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                1, cfg->slot);
    if (!res) {
        check_add(c->rep, "slot", CHECK_FAIL, NULL, "cannot read: %s", e);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        if (cfg->create_slot) {
            /* as `run` decides (policy_slot_verdict): not where the slot
             * was streamed before, nor on a promoted server */
            slot_history h = {0};
            int tli = 1;
            if (cfg->state_file &&
                slotstate_load(cfg->state_file, cfg->slot, &h, e, sizeof(e)) != 0) {
                check_add(c->rep, "slot", CHECK_FAIL, "fix or remove the state file", "%s", e);
                return;
            }
            res = query(c, e, sizeof(e),
                        "SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()", 0);
            if (res) { /* not readable by every role: then the timeline is not known */
                if (PQntuples(res) == 1)
                    tli = atoi(PQgetvalue(res, 0, 0));
                PQclear(res);
            }
            if (policy_slot_verdict(false, true, cfg->allow_new_slot, &h, tli) ==
                POLICY_SLOT_REFUSE) {
                check_add(c->rep, "slot", CHECK_FAIL,
                          "a new slot would skip what was committed since the old one's "
                          "confirmed position: start once with --create-slot "
                          "--allow-new-slot, then backfill or replay the gap",
                          "\"%s\" is missing but %s", cfg->slot,
                          h.known ? "the state file says it was streamed before"
                                  : "the server was promoted (timeline > 1)");
                return;
            }
            check_add(c->rep, "slot", CHECK_OK, NULL,
                      "\"%s\" does not exist yet: --create-slot creates it (events start from "
                      "then on)",
                      cfg->slot);
            return;
        }
        snprintf(fix, sizeof(fix),
                 "run with --create-slot, or SELECT pg_create_logical_replication_slot('%s', "
                 "'pgoutput')",
                 cfg->slot);
        check_add(c->rep, "slot", CHECK_FAIL, fix, "\"%s\" does not exist", cfg->slot);
        return;
    }
    const char *type = PQgetvalue(res, 0, 0), *plugin = PQgetvalue(res, 0, 1);
    const char *db = PQgetvalue(res, 0, 2), *curdb = PQgetvalue(res, 0, 3);
    const char *ws = PQgetvalue(res, 0, 4);
    uint64_t lagb = strtoull(PQgetvalue(res, 0, 5), NULL, 10);
    bool active = strcmp(PQgetvalue(res, 0, 6), "t") == 0;
    fmt_bytes(lagb, lag, sizeof(lag));
    if (strcmp(type, "logical") != 0 || strcmp(plugin, "pgoutput") != 0) {
        snprintf(fix, sizeof(fix),
                 "choose another --slot, or drop it (SELECT pg_drop_replication_slot('%s')) if "
                 "nothing uses it",
                 cfg->slot);
        check_add(c->rep, "slot", CHECK_FAIL, fix,
                  "\"%s\" is a %s slot with plugin \"%s\": the relay needs a logical pgoutput "
                  "slot",
                  cfg->slot, type, plugin);
    } else if (strcmp(db, curdb) != 0) {
        check_add(c->rep, "slot", CHECK_FAIL,
                  "point --dbname at the slot's database, or use "
                  "another --slot",
                  "\"%s\" belongs to database \"%s\", not \"%s\"", cfg->slot, db, curdb);
    } else if (check_wal_status(ws) == CHECK_FAIL) {
        snprintf(fix, sizeof(fix),
                 strcmp(ws, "lost") == 0
                     ? "the WAL after its confirmed position is gone: drop the slot, create it "
                       "again (--create-slot) and recover the gap with outbox-relay backfill"
                     : "start the relay now so it confirms, or raise max_slot_wal_keep_size");
        check_add(c->rep, "slot", CHECK_FAIL, fix, "\"%s\" has wal_status \"%s\" (%s behind): %s",
                  cfg->slot, ws, lag,
                  strcmp(ws, "lost") == 0 ? "it can no longer stream"
                                          : "its WAL is about to be removed");
    } else if (lagb > c->warn_bytes || check_wal_status(ws) == CHECK_WARN) {
        check_add(c->rep, "slot", CHECK_WARN,
                  "start the relay: it catches up from the confirmed position",
                  "\"%s\" (pgoutput, wal_status %s) is %s behind the server%s", cfg->slot,
                  *ws ? ws : "n/a", lag, active ? ", in use by another process" : "");
    } else {
        check_add(c->rep, "slot", CHECK_OK, NULL, "\"%s\": pgoutput, wal_status %s, %s behind%s",
                  cfg->slot, *ws ? ws : "n/a", lag,
                  active ? "; in use now (this relay would wait as a standby)" : "");
    }
    PQclear(res);
}

static void check_anchors(checker *c)
{
    char e[512], fix[768], b[32], bound[32];
    PGresult *res = query(c, e, sizeof(e),
                          "SELECT slot_name, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                          "restart_lsn), 0)::bigint FROM pg_catalog.pg_replication_slots"
                          " WHERE left(slot_name, length($1)) = $1 ORDER BY 2 DESC",
                          1, ADMIN_ANCHOR_PREFIX);
    if (!res) {
        check_add(c->rep, "anchors", CHECK_FAIL, NULL, "cannot read: %s", e);
        return;
    }
    fmt_bytes(c->warn_bytes, bound, sizeof(bound));
    int n = PQntuples(res), over = 0;
    for (int i = 0; i < n; i++)
        if (strtoull(PQgetvalue(res, i, 1), NULL, 10) > c->warn_bytes)
            over++;
    if (n == 0) {
        check_add(c->rep, "anchors", CHECK_OK, NULL, "none retain WAL");
    } else if (over == 0) {
        fmt_bytes(strtoull(PQgetvalue(res, 0, 1), NULL, 10), b, sizeof(b));
        check_add(c->rep, "anchors", CHECK_OK, NULL,
                  "%d anchor(s), the largest retains %s (bound %s)", n, b, bound);
    } else {
        const char *slot = PQgetvalue(res, 0, 0);
        const char *bare = slot + strlen(ADMIN_ANCHOR_PREFIX);
        fmt_bytes(strtoull(PQgetvalue(res, 0, 1), NULL, 10), b, sizeof(b));
        snprintf(fix, sizeof(fix),
                 "outbox-relay anchor advance %s --to LSN once replays before LSN are no longer "
                 "needed, or outbox-relay anchor drop %s",
                 bare, bare);
        check_add(c->rep, "anchors", CHECK_FAIL, fix,
                  "%d anchor(s) retain more than %s of WAL; \"%s\" retains %s", over, bound, bare,
                  b);
    }
    PQclear(res);
}

static void check_database(checker *c)
{
    char e[512];

    c->conn = pgconn_open(c->cfg->conninfo, c->cfg->password, false, "outbox-relay check");
    if (!c->conn || PQstatus(c->conn) != CONNECTION_OK) {
        check_add(c->rep, "database", CHECK_FAIL,
                  "fix --dbname (a libpq conninfo; PG* variables apply), the password "
                  "(--password-file, PGPASSWORD, .pgpass) or pg_hba.conf",
                  "cannot connect: %s", pgconn_error(c->conn, e, sizeof(e)));
        check_add(c->rep, "database checks", CHECK_SKIP, NULL, "skipped: no connection");
        c->topics_partial = true;
        return;
    }
    c->version = PQserverVersion(c->conn);
    check_add(c->rep, "database", CHECK_OK, NULL, "connected to \"%s\" as \"%s\"", PQdb(c->conn),
              PQuser(c->conn));
    check_server(c);
    check_settings(c);
    check_role(c);
    check_tables(c);
    check_publication(c);
    check_slot(c);
    check_anchors(c);
}

/* ---- the brokers --------------------------------------------------------- */

static void check_brokers(checker *c)
{
    const config *cfg = c->cfg;
    probe_topic topics[CHECK_MAX_TOPICS + 1];
    probe_result pr;
    char e[512], fix[768], name[300];
    size_t nt = 0;
    bool have_bootstrap = cfg->brokers != NULL;

    for (size_t i = 0; i < cfg->nprops; i++)
        if (strcmp(cfg->props[i].name, "bootstrap.servers") == 0 ||
            strcmp(cfg->props[i].name, "metadata.broker.list") == 0)
            have_bootstrap = true;
    if (!have_bootstrap) {
        check_add(c->rep, "brokers", CHECK_FAIL, "give --brokers HOST:PORT[,HOST:PORT...]",
                  "no Kafka brokers configured");
        return;
    }
    for (size_t i = 0; i < c->ntopics; i++)
        topics[nt++] = (probe_topic){.name = c->topics[i]};
    topics[nt++] = (probe_topic){.name = cfg->dlq_topic};
    if (probe_brokers(cfg->brokers, cfg->props, cfg->nprops, topics, nt, CHECK_KAFKA_TIMEOUT_MS,
                      &pr, e, sizeof(e)) != 0) {
        check_add(c->rep, "brokers", CHECK_FAIL, "fix the -X properties", "%s", e);
        return;
    }
    if (!pr.reachable) {
        check_add(c->rep, "brokers", CHECK_FAIL,
                  "check --brokers, the network path and the security settings "
                  "(-X security.protocol, sasl.*, ssl.*)",
                  "no answer from %s within %d s: %s",
                  cfg->brokers ? cfg->brokers : "bootstrap.servers", CHECK_KAFKA_TIMEOUT_MS / 1000,
                  pr.reach_err);
        check_add(c->rep, "broker checks", CHECK_SKIP, NULL, "skipped: brokers unreachable");
        return;
    }
    check_add(c->rep, "brokers", CHECK_OK, NULL, "%d broker(s) answered", pr.nbrokers);

    if (!pr.idempotence)
        check_add(c->rep, "idempotence", CHECK_FAIL,
                  "drop -X enable.idempotence=false (the relay's default is true)",
                  "enable.idempotence is off: a retried batch can be written twice or reorder an "
                  "aggregate's events");
    else if (pr.fatal[0])
        check_add(c->rep, "idempotence", CHECK_FAIL,
                  "allow IdempotentWrite for the relay's principal (Kafka < 3.0 ACLs), or use "
                  "brokers of Kafka 0.11 or later",
                  "the brokers refuse an idempotent producer: %s", pr.fatal);
    else if (strcmp(pr.idemp_state, "Assigned") == 0)
        check_add(c->rep, "idempotence", CHECK_OK, NULL,
                  "enable.idempotence is on and the brokers gave the producer an id");
    else
        check_add(c->rep, "idempotence", CHECK_WARN,
                  "check the brokers' logs and the principal's IdempotentWrite permission",
                  "enable.idempotence is on but no producer id came within %d s (state \"%s\")",
                  CHECK_KAFKA_TIMEOUT_MS / 1000, pr.idemp_state[0] ? pr.idemp_state : "unknown");

    for (size_t i = 0; i < nt; i++) {
        bool dlq = i == nt - 1;
        snprintf(name, sizeof(name), "topic %s", topics[i].name);
        if (topics[i].exists) {
            check_add(c->rep, name, CHECK_OK, NULL, "exists%s", dlq ? " (dead letters)" : "");
            continue;
        }
        snprintf(fix, sizeof(fix),
                 "create it (kafka-topics.sh --create --topic %s --partitions N "
                 "--replication-factor 3)%s",
                 topics[i].name,
                 pr.client_auto_create ? ", or set auto.create.topics.enable=true on the brokers"
                                       : ", or drop -X allow.auto.create.topics=false");
        if (!pr.client_auto_create)
            check_add(c->rep, name, CHECK_FAIL, fix,
                      "does not exist, and the producer may not create topics "
                      "(allow.auto.create.topics=false)");
        else if (pr.broker_auto_create == 0)
            check_add(c->rep, name, CHECK_FAIL, fix,
                      "does not exist, and the brokers do not create topics "
                      "(auto.create.topics.enable=false)");
        else if (pr.broker_auto_create == 1)
            check_add(c->rep, name, CHECK_OK, NULL,
                      "does not exist yet: the brokers create it on first use "
                      "(auto.create.topics.enable=true)");
        else
            check_add(c->rep, name, CHECK_WARN, fix,
                      "does not exist; whether the brokers create it is unknown (%s)",
                      pr.describe_err[0] ? pr.describe_err : "no answer");
    }
    if (c->topics_truncated)
        check_add(c->rep, "topics", CHECK_WARN, NULL,
                  "the rows give more than %d topics: only the first %d were checked",
                  CHECK_MAX_TOPICS, CHECK_MAX_TOPICS);
    else if (c->topics_partial)
        check_add(c->rep, "topics", CHECK_SKIP, NULL,
                  "the topics of the rows could not be listed (see the table checks)");
    else if (c->ntopics == 0)
        check_add(c->rep, "topics", CHECK_OK, NULL,
                  "no rows in the outbox tables yet: the topics depend on future rows");

    /* message size: the producer's limit, the broker's and the topics' */
    int64_t limit = pr.client_max_bytes;
    const char *who = "the producer's message.max.bytes";
    if (pr.broker_max_bytes > 0 && (limit < 0 || pr.broker_max_bytes < limit)) {
        limit = pr.broker_max_bytes;
        who = "the brokers' message.max.bytes";
    }
    for (size_t i = 0; i < nt; i++)
        if (topics[i].max_message_bytes > 0 && topics[i].max_message_bytes < limit) {
            limit = topics[i].max_message_bytes;
            snprintf(name, sizeof(name), "max.message.bytes of topic %s", topics[i].name);
            who = name;
        }
    uint64_t need = c->largest_row ? c->largest_row + CHECK_ENVELOPE_OVERHEAD : 0;
    char nb[32], lb[32];
    fmt_bytes(need, nb, sizeof(nb));
    fmt_bytes((uint64_t)(limit > 0 ? limit : 0), lb, sizeof(lb));
    if (c->largest_row == 0) {
        check_add(c->rep, "message_size", CHECK_OK, NULL,
                  "no rows to measure; the limit is %s (%s)", lb, who);
    } else if (limit > 0 && need > (uint64_t)limit) {
        snprintf(fix, sizeof(fix),
                 "raise %s (and the topic's max.message.bytes) above %llu, or keep payloads "
                 "smaller: larger events go to the dead-letter topic",
                 who, (unsigned long long)need);
        check_add(c->rep, "message_size", CHECK_FAIL, fix,
                  "the largest row of %s makes an event of about %s, over %s (%s)",
                  c->largest_table, nb, lb, who);
    } else {
        check_add(c->rep, "message_size", CHECK_OK, NULL,
                  "the largest row (%s) makes an event of about %s, under %s (%s)",
                  c->largest_table, nb, lb, who);
    }
}

/* ---- the command --------------------------------------------------------- */

int check_main(int argc, char **argv)
{
    char **args = calloc((size_t)argc + 2, sizeof(*args));
    char err[1024];
    config cfg;
    check_report rep = {0};
    checker c;
    bool json = false;
    int n = 0, rc;

    memset(&c, 0, sizeof(c));
    c.warn_bytes = ADMIN_WARN_BYTES_DEFAULT;
    if (!args) {
        fprintf(stderr, "outbox-relay: out of memory\n");
        return 1;
    }
    args[n++] = "outbox-relay";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            fputs(check_usage, stdout);
            free(args);
            return 0;
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
            continue;
        }
        if (strcmp(argv[i], "--warn-bytes") == 0 || strncmp(argv[i], "--warn-bytes=", 13) == 0) {
            const char *v = argv[i][12] == '=' ? argv[i] + 13 : i + 1 < argc ? argv[++i] : NULL;
            if (!v || config_parse_size(v, &c.warn_bytes) != 0) {
                fprintf(stderr, "outbox-relay: invalid --warn-bytes: give a size like 1G\n");
                free(args);
                return 2;
            }
            continue;
        }
        args[n++] = argv[i];
    }
    args[n] = NULL;
    switch (config_parse_flags(n, args, &cfg, CONFIG_NO_BROKERS_OK, err, sizeof(err))) {
    case CONFIG_OK:
        break;
    case CONFIG_EXIT:
        config_free(&cfg);
        free(args);
        return 0;
    default:
        fprintf(stderr, "outbox-relay: %s\n", err);
        config_free(&cfg);
        free(args);
        return 2;
    }
    c.cfg = &cfg;
    c.rep = &rep;
    check_database(&c);
    check_brokers(&c);
    check_print(&rep, json, stdout);
    rc = check_exit_code(&rep);
    PQfinish(c.conn);
    for (size_t i = 0; i < c.ntopics; i++)
        free(c.topics[i]);
    check_report_free(&rep);
    config_free(&cfg);
    free(args);
    return rc;
}
