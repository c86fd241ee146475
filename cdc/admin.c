#include "cdc/admin.h"

#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bsd/string.h>

#include "decode/errfmt.h"
#include "cdc/config.h"
#include "cdc/pgconn.h"

enum { OPT_FROM_SLOT = 1000, OPT_JSON, OPT_WARN_BYTES, OPT_PASSWORD_FILE, OPT_HELP };

static const struct option admin_options[] = {
    {"dbname", required_argument, NULL, 'd'},
    {"slot", required_argument, NULL, 'S'},
    {"from-slot", required_argument, NULL, OPT_FROM_SLOT},
    {"json", no_argument, NULL, OPT_JSON},
    {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
    {"warn-bytes", required_argument, NULL, OPT_WARN_BYTES},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const char admin_usage[] =
    "usage: outbox-relay anchor create NAME [--from-slot SLOT] [-d CONNINFO]\n"
    "       outbox-relay anchor list [--json] [--warn-bytes SIZE] [-d CONNINFO]\n"
    "       outbox-relay anchor advance NAME LSN [-d CONNINFO]\n"
    "       outbox-relay anchor drop NAME [-d CONNINFO]\n"
    "       outbox-relay status [--json] [--slot NAME] [--warn-bytes SIZE] [-d CONNINFO]\n"
    "\n"
    "An anchor is a logical pgoutput slot (named " ADMIN_ANCHOR_PREFIX "NAME) that retains\n"
    "WAL on purpose, so `outbox-relay replay --anchor NAME` can publish a past range\n"
    "again.  `anchor create` makes it at the current position, or with --from-slot as\n"
    "a copy of another slot (e.g. the relay's, outbox_relay).  Anchors retain WAL until\n"
    "advanced or dropped: `anchor list` warns above --warn-bytes (default 1G).\n"
    "\n"
    "  -d, --dbname CONNINFO  the outbox database (libpq conninfo or URI; PG* apply)\n"
    "      --password-file F  the password, from the first line of F\n"
    "  -S, --slot NAME        the relay's slot for status     (default outbox_relay)\n"
    "\n"
    "exit codes: 0 done, 1 runtime failure, 2 bad usage or a refused request\n";

#define usage_fail(err, errlen, ...) errfmt(err, errlen, 2, __VA_ARGS__)

static bool slot_chars_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

int admin_anchor_slot(const char *name, char out[ADMIN_SLOT_MAX], char *err, size_t errlen)
{
    const size_t plen = sizeof(ADMIN_ANCHOR_PREFIX) - 1;
    const char *bare = name;

    if (strncmp(name, ADMIN_ANCHOR_PREFIX, plen) == 0)
        bare = name + plen;
    if (!slot_chars_ok(bare)) {
        snprintf(err, errlen,
                 "invalid anchor name \"%s\": use lower-case letters, digits or _ (e.g. nightly)",
                 name);
        return -1;
    }
    if (plen + strlen(bare) > ADMIN_SLOT_MAX - 1) {
        snprintf(err, errlen, "anchor name \"%s\" is too long: use at most %zu characters", name,
                 (size_t)ADMIN_SLOT_MAX - 1 - plen);
        return -1;
    }
    snprintf(out, ADMIN_SLOT_MAX, "%s%s", ADMIN_ANCHOR_PREFIX, bare);
    return 0;
}

int admin_parse(int argc, char **argv, admin_args *a, char *err, size_t errlen)
{
    const char *pos[4];
    int npos = 0, c;
    const char *what;

    memset(a, 0, sizeof(*a));
    a->conninfo = "";
    a->slot = "outbox_relay";
    a->warn_bytes = ADMIN_WARN_BYTES_DEFAULT;
    if (argc < 1)
        return usage_fail(err, errlen, "no sub-command: use anchor or status (see --help)");
    what = argv[0];

    optind = 0; /* GNU: full re-initialisation */
    opterr = 0;
    /* "-" first: positional arguments come back as 1, in order, so options
     * may follow them ("anchor drop x -d ..."). */
    while ((c = getopt_long(argc, argv, "-:d:S:", admin_options, NULL)) != -1) {
        switch (c) {
        case 1:
            if (npos == 4)
                return usage_fail(err, errlen, "unexpected argument \"%s\" (see --help)", optarg);
            pos[npos++] = optarg;
            break;
        case 'd':
            a->conninfo = optarg;
            break;
        case 'S':
            if (!slot_chars_ok(optarg) || strlen(optarg) > ADMIN_SLOT_MAX - 1)
                return usage_fail(err, errlen,
                                  "invalid --slot \"%s\": use 1-63 lower-case letters, digits or _",
                                  optarg);
            a->slot = optarg;
            break;
        case OPT_FROM_SLOT:
            if (!slot_chars_ok(optarg) || strlen(optarg) > ADMIN_SLOT_MAX - 1)
                return usage_fail(err, errlen,
                                  "invalid --from-slot \"%s\": give an existing slot's name",
                                  optarg);
            a->from_slot = optarg;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_PASSWORD_FILE:
            if (config_read_password_file(optarg, &a->password, err, errlen) != 0)
                return 2;
            break;
        case OPT_WARN_BYTES:
            if (config_parse_size(optarg, &a->warn_bytes) != 0)
                return usage_fail(err, errlen, "invalid --warn-bytes \"%s\": give a size like 1G",
                                  optarg);
            break;
        case OPT_HELP:
            fputs(admin_usage, stdout);
            return 1;
        case ':':
            return usage_fail(err, errlen, "option \"%s\" needs a value (see --help)",
                              argv[optind - 1]);
        default:
            return usage_fail(err, errlen, "unknown option \"%s\" (see --help)", argv[optind - 1]);
        }
    }

    if (strcmp(what, "status") == 0) {
        if (npos > 0)
            return usage_fail(err, errlen, "unexpected argument \"%s\" (see --help)", pos[0]);
        a->cmd = ADMIN_STATUS;
        return 0;
    }
    if (strcmp(what, "anchor") != 0)
        return usage_fail(err, errlen, "unknown sub-command \"%s\": use anchor or status", what);
    if (npos == 0)
        return usage_fail(err, errlen,
                          "anchor needs an action: create, list, advance or drop (see --help)");

    struct {
        const char *word;
        enum admin_cmd cmd;
        int nargs;
        const char *shape;
    } acts[] = {
        {"create", ADMIN_ANCHOR_CREATE, 1, "anchor create NAME [--from-slot SLOT]"},
        {"list", ADMIN_ANCHOR_LIST, 0, "anchor list [--json]"},
        {"advance", ADMIN_ANCHOR_ADVANCE, 2, "anchor advance NAME LSN"},
        {"drop", ADMIN_ANCHOR_DROP, 1, "anchor drop NAME"},
    };
    size_t i;
    for (i = 0; i < sizeof(acts) / sizeof(acts[0]); i++)
        if (strcmp(pos[0], acts[i].word) == 0)
            break;
    if (i == sizeof(acts) / sizeof(acts[0]))
        return usage_fail(
            err, errlen, "unknown anchor action \"%s\": use create, list, advance or drop", pos[0]);
    if (npos - 1 != acts[i].nargs)
        return usage_fail(err, errlen, "wrong number of arguments: use %s", acts[i].shape);
    a->cmd = acts[i].cmd;
    if (a->from_slot && a->cmd != ADMIN_ANCHOR_CREATE)
        return usage_fail(err, errlen, "--from-slot belongs to anchor create");
    if (acts[i].nargs >= 1) {
        a->name = pos[1];
        if (admin_anchor_slot(a->name, a->anchor, err, errlen) != 0)
            return 2;
    }
    if (a->cmd == ADMIN_ANCHOR_ADVANCE && lsn_parse(pos[2], &a->lsn) != 0)
        return usage_fail(err, errlen, "malformed LSN \"%s\": give one like 0/16B3748", pos[2]);
    if (a->from_slot && strcmp(a->from_slot, a->anchor) == 0)
        return usage_fail(err, errlen, "--from-slot names the anchor itself: name another slot");
    return 0;
}

enum admin_advance_verdict admin_advance_check(const char *anchor, uint64_t confirmed,
                                               uint64_t server, uint64_t target, char *err,
                                               size_t errlen)
{
    char a[LSN_BUFSZ], b[LSN_BUFSZ];

    if (target < confirmed) {
        snprintf(err, errlen,
                 "anchor \"%s\" is at %s and a slot cannot move back: give an LSN at or after %s "
                 "(or create a new anchor)",
                 anchor, lsn_format(confirmed, a), a);
        return ADMIN_ADVANCE_REFUSE;
    }
    if (target == confirmed)
        return ADMIN_ADVANCE_NOOP;
    if (target > server) {
        snprintf(err, errlen,
                 "%s is past the server's flushed position %s: give an LSN at or before it",
                 lsn_format(target, a), lsn_format(server, b));
        return ADMIN_ADVANCE_REFUSE;
    }
    return ADMIN_ADVANCE_GO;
}

/* ---- database side -------------------------------------------------------- */

/* The server's WAL position: on a standby, the last replayed one. */
#define SERVER_LSN_SQL                                                                             \
    "(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()"           \
    " ELSE pg_catalog.pg_current_wal_lsn() END)"

static PGconn *admin_connect(const char *conninfo, const char *password)
{
    PGconn *conn = pgconn_open(conninfo, password, false, "outbox-relay");
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        char msg[512];
        strlcpy(msg, conn ? PQerrorMessage(conn) : "out of memory", sizeof(msg));
        pgconn_one_line(msg);
        fprintf(stderr, "outbox-relay: cannot connect to PostgreSQL: %s\n", msg);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* Run a query with text parameters; NULL (cause printed) unless it returned
 * want. */
static PGresult *query(PGconn *conn, ExecStatusType want, const char *sql, int n,
                       const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != want) {
        char msg[512];
        strlcpy(msg, res ? PQresultErrorMessage(res) : PQerrorMessage(conn), sizeof(msg));
        pgconn_one_line(msg);
        fprintf(stderr, "outbox-relay: %s\n", msg);
        PQclear(res);
        return NULL;
    }
    return res;
}

static int server_lsn(PGconn *conn, uint64_t *lsn)
{
    PGresult *res = query(conn, PGRES_TUPLES_OK, "SELECT " SERVER_LSN_SQL, 0, NULL);
    int rc = -1;
    if (res && PQntuples(res) == 1 && lsn_parse(PQgetvalue(res, 0, 0), lsn) == 0)
        rc = 0;
    PQclear(res);
    return rc;
}

/* A slot as the sub-commands show it. */
typedef struct slot_row {
    bool exists;
    char name[ADMIN_SLOT_MAX];
    char type[16], plugin[64], database[64], wal_status[16];
    bool active, temporary;
    int active_pid;
    uint64_t restart, confirmed; /* 0 when NULL */
    bool has_retained, has_lag, has_safe;
    int64_t retained, lag, safe_wal_size;
    /* pg_stat_replication.flush_lag of the slot's walsender: how long the
     * WAL last confirmed waited for the confirmation (NULL when the slot is
     * inactive or nothing has been confirmed lately) */
    bool has_lag_seconds;
    double lag_seconds;
} slot_row;

#define SLOT_COLUMNS                                                                               \
    "slot_name, slot_type, coalesce(plugin, ''), coalesce(database::text, ''), active,"            \
    " coalesce(active_pid, 0), coalesce(restart_lsn::text, ''),"                                   \
    " coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, ''),"                          \
    " pg_catalog.pg_wal_lsn_diff(" SERVER_LSN_SQL ", restart_lsn)::bigint,"                        \
    " pg_catalog.pg_wal_lsn_diff(" SERVER_LSN_SQL ", confirmed_flush_lsn)::bigint,"                \
    " safe_wal_size, temporary,"                                                                   \
    " (SELECT extract(epoch FROM r.flush_lag)::float8 FROM pg_catalog.pg_stat_replication r"       \
    "  WHERE r.pid = active_pid)"

static void slot_from(const PGresult *res, int r, slot_row *s)
{
    memset(s, 0, sizeof(*s));
    s->exists = true;
    strlcpy(s->name, PQgetvalue(res, r, 0), sizeof(s->name));
    strlcpy(s->type, PQgetvalue(res, r, 1), sizeof(s->type));
    strlcpy(s->plugin, PQgetvalue(res, r, 2), sizeof(s->plugin));
    strlcpy(s->database, PQgetvalue(res, r, 3), sizeof(s->database));
    s->active = strcmp(PQgetvalue(res, r, 4), "t") == 0;
    s->active_pid = atoi(PQgetvalue(res, r, 5));
    if (lsn_parse(PQgetvalue(res, r, 6), &s->restart) != 0)
        s->restart = 0;
    if (lsn_parse(PQgetvalue(res, r, 7), &s->confirmed) != 0)
        s->confirmed = 0;
    strlcpy(s->wal_status, PQgetvalue(res, r, 8), sizeof(s->wal_status));
    if ((s->has_retained = !PQgetisnull(res, r, 9)))
        s->retained = strtoll(PQgetvalue(res, r, 9), NULL, 10);
    if ((s->has_lag = !PQgetisnull(res, r, 10)))
        s->lag = strtoll(PQgetvalue(res, r, 10), NULL, 10);
    if ((s->has_safe = !PQgetisnull(res, r, 11)))
        s->safe_wal_size = strtoll(PQgetvalue(res, r, 11), NULL, 10);
    s->temporary = strcmp(PQgetvalue(res, r, 12), "t") == 0;
    if ((s->has_lag_seconds = !PQgetisnull(res, r, 13)))
        s->lag_seconds = strtod(PQgetvalue(res, r, 13), NULL);
}

/* Returns 0 with s filled (s->exists false when there is no such slot), or -1. */
static int slot_get(PGconn *conn, const char *name, slot_row *s)
{
    const char *params[1] = {name};
    PGresult *res =
        query(conn, PGRES_TUPLES_OK,
              "SELECT " SLOT_COLUMNS " FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
              1, params);
    if (!res)
        return -1;
    memset(s, 0, sizeof(*s));
    if (PQntuples(res) == 1)
        slot_from(res, 0, s);
    PQclear(res);
    return 0;
}

static int anchors_get(PGconn *conn, slot_row **out, int *n)
{
    PGresult *res = query(conn, PGRES_TUPLES_OK,
                          "SELECT " SLOT_COLUMNS " FROM pg_catalog.pg_replication_slots"
                          " WHERE slot_name LIKE 'outbox\\_anchor\\_%' ORDER BY slot_name",
                          0, NULL);
    if (!res)
        return -1;
    *n = PQntuples(res);
    *out = calloc((size_t)(*n > 0 ? *n : 1), sizeof(**out));
    if (!*out) {
        PQclear(res);
        fprintf(stderr, "outbox-relay: out of memory\n");
        return -1;
    }
    for (int i = 0; i < *n; i++)
        slot_from(res, i, &(*out)[i]);
    PQclear(res);
    return 0;
}

static const char *bare_name(const char *slot)
{
    size_t plen = sizeof(ADMIN_ANCHOR_PREFIX) - 1;
    return strncmp(slot, ADMIN_ANCHOR_PREFIX, plen) == 0 ? slot + plen : slot;
}

/* "1.5 GiB" and the like, for people. */
static const char *human_bytes(int64_t v, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double d = (double)v;
    int u = 0;
    while ((d >= 1024.0 || d <= -1024.0) && u < 4) {
        d /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRId64 " B", v);
    else
        snprintf(buf, len, "%.1f %s", d, units[u]);
    return buf;
}

static bool retains_too_much(const slot_row *s, uint64_t warn_bytes)
{
    return s->has_retained && s->retained > 0 && (uint64_t)s->retained > warn_bytes;
}

static void retention_warning(const slot_row *s, uint64_t warn_bytes, char *buf, size_t len)
{
    char a[32], b[32];
    snprintf(buf, len,
             "anchor \"%s\" retains %s of WAL (over %s): advance it with \"outbox-relay anchor "
             "advance %s LSN\" or drop it",
             bare_name(s->name), human_bytes(s->retained, a, sizeof(a)),
             human_bytes((int64_t)warn_bytes, b, sizeof(b)), bare_name(s->name));
}

static json_t *lsn_json(uint64_t lsn)
{
    char b[LSN_BUFSZ];
    return lsn ? json_string(lsn_format(lsn, b)) : json_null();
}

static json_t *slot_json(const slot_row *s, bool anchor, uint64_t warn_bytes)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (anchor)
        json_object_set_new(o, "name", json_string(bare_name(s->name)));
    json_object_set_new(o, "slot", json_string(s->name));
    json_object_set_new(o, "database", json_string(s->database));
    json_object_set_new(o, "plugin", json_string(s->plugin));
    json_object_set_new(o, "active", json_boolean(s->active));
    json_object_set_new(o, "active_pid", s->active_pid ? json_integer(s->active_pid) : json_null());
    json_object_set_new(o, "restart_lsn", lsn_json(s->restart));
    json_object_set_new(o, "confirmed_flush_lsn", lsn_json(s->confirmed));
    json_object_set_new(o, "retained_wal_bytes",
                        s->has_retained ? json_integer(s->retained) : json_null());
    if (!anchor) {
        json_object_set_new(o, "lag_bytes", s->has_lag ? json_integer(s->lag) : json_null());
        json_object_set_new(o, "lag_seconds",
                            s->has_lag_seconds ? json_real(s->lag_seconds) : json_null());
    }
    json_object_set_new(o, "wal_status",
                        s->wal_status[0] ? json_string(s->wal_status) : json_null());
    json_object_set_new(o, "safe_wal_size",
                        s->has_safe ? json_integer(s->safe_wal_size) : json_null());
    if (anchor) {
        char w[512];
        /* PostgreSQL 15 keeps no creation time for a slot. */
        json_object_set_new(o, "age_seconds", json_null());
        if (retains_too_much(s, warn_bytes)) {
            retention_warning(s, warn_bytes, w, sizeof(w));
            json_object_set_new(o, "warning", json_string(w));
        } else {
            json_object_set_new(o, "warning", json_null());
        }
    }
    return o;
}

static int print_json(json_t *o)
{
    char *text;
    if (!o) {
        fprintf(stderr, "outbox-relay: out of memory\n");
        return 1;
    }
    text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text) {
        fprintf(stderr, "outbox-relay: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

static void print_anchor_lines(const slot_row *v, int n, uint64_t warn_bytes)
{
    char r[LSN_BUFSZ], c[LSN_BUFSZ], b[32], w[512];

    printf("%-24s %-14s %-14s %-12s %-10s %s\n", "ANCHOR", "RESTART_LSN", "CONFIRMED_LSN",
           "RETAINED", "WAL_STATUS", "ACTIVE");
    for (int i = 0; i < n; i++) {
        char act[32] = "no";
        if (v[i].active)
            snprintf(act, sizeof(act), "pid %d", v[i].active_pid);
        printf("%-24s %-14s %-14s %-12s %-10s %s\n", bare_name(v[i].name),
               v[i].restart ? lsn_format(v[i].restart, r) : "-",
               v[i].confirmed ? lsn_format(v[i].confirmed, c) : "-",
               v[i].has_retained ? human_bytes(v[i].retained, b, sizeof(b)) : "-",
               v[i].wal_status[0] ? v[i].wal_status : "-", act);
    }
    for (int i = 0; i < n; i++)
        if (retains_too_much(&v[i], warn_bytes)) {
            retention_warning(&v[i], warn_bytes, w, sizeof(w));
            printf("warning: %s\n", w);
        }
    for (int i = 0; i < n; i++)
        if (strcmp(v[i].wal_status, "lost") == 0)
            printf("warning: anchor \"%s\" is lost (the server removed WAL it needed): drop it\n",
                   bare_name(v[i].name));
}

static int cmd_list(PGconn *conn, const admin_args *a)
{
    slot_row *v = NULL;
    int n = 0;

    if (anchors_get(conn, &v, &n) != 0)
        return 1;
    if (a->json) {
        json_t *arr = json_array();
        for (int i = 0; arr && i < n; i++)
            json_array_append_new(arr, slot_json(&v[i], true, a->warn_bytes));
        free(v);
        return print_json(arr);
    }
    if (n == 0)
        printf("no anchors (create one with \"outbox-relay anchor create NAME\")\n");
    else
        print_anchor_lines(v, n, a->warn_bytes);
    free(v);
    return 0;
}

static int cmd_create(PGconn *conn, const admin_args *a)
{
    slot_row s, src;
    PGresult *res;
    char c[LSN_BUFSZ];

    if (slot_get(conn, a->anchor, &s) != 0)
        return 1;
    if (s.exists) {
        fprintf(stderr,
                "outbox-relay: anchor \"%s\" already exists (slot \"%s\"): drop it first or "
                "choose another name\n",
                a->name, a->anchor);
        return 2;
    }
    if (a->from_slot) {
        const char *params[2] = {a->from_slot, a->anchor};
        if (slot_get(conn, a->from_slot, &src) != 0)
            return 1;
        if (!src.exists) {
            fprintf(stderr,
                    "outbox-relay: slot \"%s\" does not exist: name an existing slot with "
                    "--from-slot, or leave it out to anchor at the current position\n",
                    a->from_slot);
            return 2;
        }
        if (strcmp(src.type, "logical") != 0 || strcmp(src.plugin, "pgoutput") != 0) {
            fprintf(stderr,
                    "outbox-relay: slot \"%s\" is not a logical pgoutput slot: copy the "
                    "relay's slot\n",
                    a->from_slot);
            return 2;
        }
        if (strcmp(src.wal_status, "lost") == 0) {
            fprintf(stderr,
                    "outbox-relay: slot \"%s\" is lost (its WAL is gone) and cannot be copied: "
                    "anchor at the current position instead\n",
                    a->from_slot);
            return 2;
        }
        res = query(conn, PGRES_TUPLES_OK,
                    "SELECT lsn FROM pg_catalog.pg_copy_logical_replication_slot($1, $2, false)", 2,
                    params);
    } else {
        const char *params[1] = {a->anchor};
        res = query(conn, PGRES_TUPLES_OK,
                    "SELECT lsn FROM pg_catalog.pg_create_logical_replication_slot($1, "
                    "'pgoutput')",
                    1, params);
    }
    if (!res)
        return 1;
    PQclear(res);
    if (slot_get(conn, a->anchor, &s) != 0 || !s.exists)
        return 1;
    printf("created anchor \"%s\" (slot \"%s\"%s%s%s) at %s\n", bare_name(a->anchor), a->anchor,
           a->from_slot ? ", a copy of \"" : "", a->from_slot ? a->from_slot : "",
           a->from_slot ? "\"" : "", lsn_format(s.confirmed, c));
    return 0;
}

/* The anchor, or exit code 2 with the fix when it is missing. */
static int need_anchor(PGconn *conn, const admin_args *a, slot_row *s)
{
    if (slot_get(conn, a->anchor, s) != 0)
        return 1;
    if (!s->exists) {
        fprintf(stderr,
                "outbox-relay: anchor \"%s\" does not exist (no slot \"%s\"): \"outbox-relay "
                "anchor list\" shows the anchors\n",
                a->name, a->anchor);
        return 2;
    }
    if (s->active) {
        fprintf(stderr,
                "outbox-relay: anchor \"%s\" is in use by process %d: wait for it to finish\n",
                a->name, s->active_pid);
        return 2;
    }
    return 0;
}

static int cmd_advance(PGconn *conn, const admin_args *a)
{
    slot_row s;
    uint64_t server;
    char err[512], l[LSN_BUFSZ], t[LSN_BUFSZ];
    int rc = need_anchor(conn, a, &s);

    if (rc != 0)
        return rc;
    /* pg_replication_slot_advance() stops at the flushed position (PG 15
     * reads no WAL that is not flushed yet), so that is the bound. */
    PGresult *fres = query(conn, PGRES_TUPLES_OK,
                           "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN "
                           "pg_catalog.pg_last_wal_replay_lsn() ELSE "
                           "pg_catalog.pg_current_wal_flush_lsn() END)::text",
                           0, NULL);
    if (!fres)
        return 1;
    rc = lsn_parse(PQgetvalue(fres, 0, 0), &server);
    PQclear(fres);
    if (rc != 0)
        return 1;
    switch (admin_advance_check(a->name, s.confirmed, server, a->lsn, err, sizeof(err))) {
    case ADMIN_ADVANCE_REFUSE:
        fprintf(stderr, "outbox-relay: %s\n", err);
        return 2;
    case ADMIN_ADVANCE_NOOP:
        printf("anchor \"%s\" is already at %s\n", a->name, lsn_format(s.confirmed, l));
        return 0;
    case ADMIN_ADVANCE_GO:
        break;
    }
    uint64_t before = s.confirmed;
    const char *params[2] = {a->anchor, lsn_format(a->lsn, t)};
    PGresult *res = query(conn, PGRES_TUPLES_OK,
                          "SELECT end_lsn FROM pg_catalog.pg_replication_slot_advance($1, "
                          "$2::pg_lsn)",
                          2, params);
    if (!res)
        return 1;
    PQclear(res);
    if (slot_get(conn, a->anchor, &s) != 0 || !s.exists)
        return 1;
    if (s.confirmed != a->lsn) {
        fprintf(stderr, "outbox-relay: anchor \"%s\" stopped at %s instead of %s: run it again\n",
                a->name, lsn_format(s.confirmed, l), lsn_format(a->lsn, t));
        return 1;
    }
    printf("advanced anchor \"%s\" from %s to %s\n", a->name, lsn_format(before, l),
           lsn_format(s.confirmed, t));
    return 0;
}

static int cmd_drop(PGconn *conn, const admin_args *a)
{
    slot_row s;
    int rc = need_anchor(conn, a, &s);
    const char *params[1] = {a->anchor};
    PGresult *res;

    if (rc != 0)
        return rc;
    res = query(conn, PGRES_TUPLES_OK, "SELECT pg_catalog.pg_drop_replication_slot($1)", 1, params);
    if (!res)
        return 1;
    PQclear(res);
    printf("dropped anchor \"%s\" (slot \"%s\")\n", a->name, a->anchor);
    return 0;
}

static int cmd_status(PGconn *conn, const admin_args *a)
{
    slot_row s, *v = NULL;
    int n = 0, rc = 0;
    uint64_t server;
    char b1[LSN_BUFSZ], b2[LSN_BUFSZ], h[32];

    if (server_lsn(conn, &server) != 0 || slot_get(conn, a->slot, &s) != 0 ||
        anchors_get(conn, &v, &n) != 0) {
        free(v);
        return 1;
    }
    if (!s.exists) {
        fprintf(stderr,
                "outbox-relay: replication slot \"%s\" does not exist: start the relay with "
                "--create-slot, or name yours with --slot\n",
                a->slot);
        rc = 2;
    }
    if (a->json) {
        json_t *o = json_object(), *arr = json_array();
        if (o && arr) {
            json_object_set_new(o, "server_lsn", lsn_json(server));
            json_object_set_new(o, "server_version", json_integer(PQserverVersion(conn)));
            json_object_set_new(o, "slot",
                                s.exists ? slot_json(&s, false, a->warn_bytes) : json_null());
            for (int i = 0; i < n; i++)
                json_array_append_new(arr, slot_json(&v[i], true, a->warn_bytes));
            json_object_set_new(o, "anchors", arr);
            arr = NULL;
        }
        json_decref(arr);
        free(v);
        int prc = print_json(o);
        return rc ? rc : prc;
    }
    printf("server        %s (PostgreSQL %d.%d)\n", lsn_format(server, b1),
           PQserverVersion(conn) / 10000, PQserverVersion(conn) % 10000);
    if (s.exists) {
        printf("slot          %s (%s)", s.name, s.active ? "active" : "inactive");
        if (s.active)
            printf(", pid %d", s.active_pid);
        printf("\n  confirmed   %s, lag %s", s.confirmed ? lsn_format(s.confirmed, b1) : "-",
               s.has_lag ? human_bytes(s.lag, h, sizeof(h)) : "-");
        if (s.has_lag_seconds)
            printf(", %.3f s (flush_lag)", s.lag_seconds);
        printf("\n");
        printf("  restart     %s, retains %s\n", s.restart ? lsn_format(s.restart, b2) : "-",
               s.has_retained ? human_bytes(s.retained, h, sizeof(h)) : "-");
        printf("  wal_status  %s, safe_wal_size %s\n", s.wal_status[0] ? s.wal_status : "-",
               s.has_safe ? human_bytes(s.safe_wal_size, h, sizeof(h)) : "unlimited");
    } else {
        printf("slot          %s (missing)\n", a->slot);
    }
    printf("anchors       %d\n", n);
    if (n > 0)
        print_anchor_lines(v, n, a->warn_bytes);
    free(v);
    return rc;
}

int admin_main(int argc, char **argv)
{
    admin_args a;
    char err[512];
    PGconn *conn;
    int rc;

    switch (admin_parse(argc, argv, &a, err, sizeof(err))) {
    case 0:
        break;
    case 1:
        free(a.password);
        return 0;
    default:
        fprintf(stderr, "outbox-relay: %s\n", err);
        free(a.password);
        return 2;
    }
    conn = admin_connect(a.conninfo, a.password);
    if (a.password) {
        explicit_bzero(a.password, strlen(a.password));
        free(a.password);
    }
    if (!conn)
        return 1;
    switch (a.cmd) {
    case ADMIN_ANCHOR_CREATE:
        rc = cmd_create(conn, &a);
        break;
    case ADMIN_ANCHOR_LIST:
        rc = cmd_list(conn, &a);
        break;
    case ADMIN_ANCHOR_ADVANCE:
        rc = cmd_advance(conn, &a);
        break;
    case ADMIN_ANCHOR_DROP:
        rc = cmd_drop(conn, &a);
        break;
    case ADMIN_STATUS:
        rc = cmd_status(conn, &a);
        break;
    default:
        rc = 2;
        break;
    }
    PQfinish(conn);
    return rc;
}
