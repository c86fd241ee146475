#include "cdc/config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "decode/errfmt.h"
#include "cdc/scrub.h"
#include "cdc/cfgfile.h"
#include "cdc/dbzconfig.h"
#include "cdc/http.h"
#include "decode/lsn.h"

#ifndef OUTBOX_RELAY_VERSION
#define OUTBOX_RELAY_VERSION "0.1.0"
#endif

enum {
    OPT_CREATE_SLOT = 1000,
    OPT_ALLOW_NEW_SLOT,
    OPT_STATE_FILE,
    OPT_TOPIC,
    OPT_FORMAT,
    OPT_COLUMN,
    OPT_DLQ_TOPIC,
    OPT_START_LSN,
    OPT_END_LSN,
    OPT_HTTP,
    OPT_LOG_FORMAT,
    OPT_VERSION,
    OPT_HELP,
    OPT_STATUS_INTERVAL,
    OPT_MAX_INFLIGHT,
    OPT_MAX_INFLIGHT_BYTES,
    OPT_SHUTDOWN_TIMEOUT,
    OPT_GIVE_UP_AFTER,
    OPT_MESSAGES,
    OPT_FIELD,
    OPT_TOMBSTONE,
    OPT_DBZ_CONVERTER,
    OPT_DBZ_EXPAND,
    OPT_DBZ_CONTEXT,
    OPT_DBZ_CONFIG,
    OPT_MSG_TIMESTAMP,
    OPT_PASSWORD_FILE,
    OPT_CONFIG,
    OPT_PRINT_CONFIG,
    OPT_LOG_LEVEL,
};

static const struct option long_options[] = {
    {"dbname", required_argument, NULL, 'd'},
    {"slot", required_argument, NULL, 'S'},
    {"publication", required_argument, NULL, 'P'},
    {"table", required_argument, NULL, 't'},
    {"create-slot", no_argument, NULL, OPT_CREATE_SLOT},
    {"allow-new-slot", no_argument, NULL, OPT_ALLOW_NEW_SLOT},
    {"state-file", required_argument, NULL, OPT_STATE_FILE},
    {"brokers", required_argument, NULL, 'b'},
    {"kafka", required_argument, NULL, 'X'},
    {"topic", required_argument, NULL, OPT_TOPIC},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"column", required_argument, NULL, OPT_COLUMN},
    {"dlq-topic", required_argument, NULL, OPT_DLQ_TOPIC},
    {"start-lsn", required_argument, NULL, OPT_START_LSN},
    {"end-lsn", required_argument, NULL, OPT_END_LSN},
    {"http", required_argument, NULL, OPT_HTTP},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"status-interval", required_argument, NULL, OPT_STATUS_INTERVAL},
    {"max-inflight", required_argument, NULL, OPT_MAX_INFLIGHT},
    {"max-inflight-bytes", required_argument, NULL, OPT_MAX_INFLIGHT_BYTES},
    {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
    {"give-up-after", required_argument, NULL, OPT_GIVE_UP_AFTER},
    {"messages", required_argument, NULL, OPT_MESSAGES},
    {"field", required_argument, NULL, OPT_FIELD},
    {"tombstone-on-empty-payload", no_argument, NULL, OPT_TOMBSTONE},
    {"debezium-converter", required_argument, NULL, OPT_DBZ_CONVERTER},
    {"expand-json-payload", no_argument, NULL, OPT_DBZ_EXPAND},
    {"debezium-context", required_argument, NULL, OPT_DBZ_CONTEXT},
    {"debezium-config", required_argument, NULL, OPT_DBZ_CONFIG},
    {"message-timestamp", required_argument, NULL, OPT_MSG_TIMESTAMP},
    {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const char usage_text[] =
    "outbox-relay streams committed outbox rows from PostgreSQL logical replication\n"
    "to Kafka and confirms the slot only after the broker acknowledged them.\n"
    "\n"
    "usage: outbox-relay [run] [options]\n"
    "       outbox-relay replay --anchor NAME --from LSN [--to LSN] [--dry-run] [options]\n"
    "       outbox-relay backfill [--where SQL] [--since TIMESTAMP] [--dry-run] [options]\n"
    "       outbox-relay check [--json] [--warn-bytes SIZE] [options]\n"
    "       outbox-relay anchor create|list|advance|drop ...\n"
    "       outbox-relay status [--json] [-d CONNINFO] [--slot NAME]\n"
    "\n"
    "      --config FILE         read options from FILE (key = value lines, the long\n"
    "                            option names as keys, kafka.PROP for -X); OUTBOX_RELAY_*\n"
    "                            variables too; command line > environment > file\n"
    "      --print-config        print the effective configuration and each value's source\n"
    "  -d, --dbname CONNINFO     libpq conninfo string or URI; PG* variables apply\n"
    "      --password-file FILE  read the database password from FILE (first line)\n"
    "  -S, --slot NAME           replication slot               (default outbox_relay)\n"
    "  -P, --publication NAME    publication                    (default outbox_pub)\n"
    "  -t, --table SCHEMA.TABLE  outbox table, repeatable       (default public.outbox)\n"
    "      --create-slot         create publication and slot if missing (idempotent)\n"
    "      --allow-new-slot      with --create-slot: create a missing slot even where it\n"
    "                            existed before or the server was promoted (skips the gap)\n"
    "      --state-file FILE     remember where the slot was last seen (survives failovers)\n"
    "  -b, --brokers LIST        Kafka bootstrap servers\n"
    "  -X, --kafka PROP=VALUE    any librdkafka property, repeatable (-X list shows them)\n"
    "      --topic TEMPLATE      topic per event (default outbox.event.{aggregate_type});\n"
    "                            placeholders {aggregate_type} {aggregate_id} {type} {table}\n"
    "      --format NAME         envelope, debezium, cloudevents, cloudevents-binary\n"
    "                            (default envelope)\n"
    "      --field COLUMN:header[:NAME] | COLUMN:envelope[:NAME]\n"
    "                            an additional column as a header or in the value, repeatable\n"
    "      --tombstone-on-empty-payload  debezium: a NULL payload gives a NULL value\n"
    "      --debezium-converter string|json  debezium: the value as Kafka Connect's\n"
    "                            StringConverter (default) or JsonConverter without\n"
    "                            schemas writes it\n"
    "      --expand-json-payload debezium: table.expand.json.payload=true (needs\n"
    "                            --debezium-converter json)\n"
    "      --debezium-config FILE  read a Debezium PostgreSQL connector's properties\n"
    "                            (EventRouter, tables, slot, publication, database.*)\n"
    "      --debezium-context NAME  debezium: the __debezium.context.* headers, NAME\n"
    "                            as connectorLogicalName (Debezium's topic.prefix)\n"
    "      --message-timestamp none|commit|event  Kafka message timestamp (default none:\n"
    "                            the producer's clock; event = the timestamp column)\n"
    "      --column [TABLE:]ROLE=COLUMN  map a role to another column, repeatable; with\n"
    "                            TABLE (SCHEMA.TABLE) for that outbox table only; roles: id,\n"
    "                            aggregate_type, aggregate_id, type, payload, timestamp,\n"
    "                            traceparent\n"
    "      --messages PREFIX     transactional pg_logical_emit_message(true, PREFIX, json)\n"
    "                            messages are events too (PostgreSQL 14+)\n"
    "      --dlq-topic NAME      dead-letter topic              (default outbox.dlq)\n"
    "      --start-lsn LSN       start here instead of the slot's confirmed position\n"
    "      --end-lsn LSN         stop cleanly once everything up to LSN is confirmed\n"
    "      --status-interval S   seconds between status updates (default 1)\n"
    "      --max-inflight N      unacknowledged events, or transactions not yet confirmed,\n"
    "                            before reading pauses (default 10000)\n"
    "      --max-inflight-bytes SIZE  unacknowledged bytes before reading pauses\n"
    "                            (default 24M; k, M, G suffixes)\n"
    "      --shutdown-timeout S  seconds to wait for the broker on stop (default 10)\n"
    "      --give-up-after S     exit 1 after S seconds without progress (default 0: never)\n"
    "      --http ADDR:PORT      /metrics, /status, /healthz, /readyz (e.g. 127.0.0.1:9187)\n"
    "      --log-format text|json\n"
    "      --log-level LEVEL     error, warn, info or debug (default info; -v, -q shift it)\n"
    "  -v, --verbose  -q, --quiet  --version  --help\n"
    "\n"
    "exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration or usage\n";

#define fail(err, errlen, ...) errfmt(err, errlen, CONFIG_USAGE, __VA_ARGS__)

/* Slot names: what PostgreSQL accepts (lower-case letters, digits, _). */
static bool valid_slot_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

/* Identifiers we quote ourselves: no quotes, no control characters. */
static bool valid_identifier(const char *s, size_t n)
{
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || s[i] == '\'' || (unsigned char)s[i] < 0x20)
            return false;
    return true;
}

static bool valid_topic_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

static int add_table(config *cfg, const char *arg, char *err, size_t errlen)
{
    const char *dot = strchr(arg, '.');
    const char *schema = "public", *name = arg;
    size_t slen = 6, nlen = strlen(arg);
    config_table *t;

    if (cfg->ntables == CONFIG_MAX_TABLES)
        return fail(err, errlen, "too many --table options (at most %d)", CONFIG_MAX_TABLES);
    if (dot) {
        schema = arg;
        slen = (size_t)(dot - arg);
        name = dot + 1;
        nlen = strlen(name);
    }
    if (!valid_identifier(schema, slen) || !valid_identifier(name, nlen) || strchr(name, '.'))
        return fail(err, errlen, "invalid --table \"%s\": give SCHEMA.TABLE, e.g. public.outbox",
                    arg);
    t = &cfg->tables[cfg->ntables];
    memcpy(t->schema, schema, slen);
    t->schema[slen] = '\0';
    memcpy(t->name, name, nlen);
    t->name[nlen] = '\0';
    memcpy(t->qualname, schema, slen);
    t->qualname[slen] = '.';
    memcpy(t->qualname + slen + 1, name, nlen + 1);
    for (size_t i = 0; i < cfg->ntables; i++)
        if (strcmp(cfg->tables[i].qualname, t->qualname) == 0)
            return fail(err, errlen, "--table \"%s\" given twice", t->qualname);
    cfg->ntables++;
    return CONFIG_OK;
}

static int add_prop(config *cfg, const char *arg, char *err, size_t errlen)
{
    const char *eq = strchr(arg, '=');
    char *name;

    if (!eq || eq == arg)
        return fail(err, errlen, "invalid -X \"%s\": give PROPERTY=VALUE (-X list shows them)",
                    arg);
    if (cfg->nprops == CONFIG_MAX_PROPS)
        return fail(err, errlen, "too many -X options (at most %d)", CONFIG_MAX_PROPS);
    /* a copy: main() scrubs passwords out of argv (sasl.password=...) */
    name = strdup(arg);
    if (!name)
        return fail(err, errlen, "out of memory");
    name[eq - arg] = '\0';
    cfg->prop_storage[cfg->nprops] = name;
    cfg->props[cfg->nprops].name = name;
    cfg->props[cfg->nprops].value = name + (eq - arg) + 1;
    cfg->nprops++;
    return CONFIG_OK;
}

static int parse_seconds(const char *s, double min, double max, int *ms)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        return -1;
    *ms = (int)(v * 1000.0 + 0.5);
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'K':
            mult = UINT64_C(1) << 10;
            break;
        case 'M':
            mult = UINT64_C(1) << 20;
            break;
        case 'G':
            mult = UINT64_C(1) << 30;
            break;
        default:
            return -1;
        }
        end++;
        if (toupper((unsigned char)*end) == 'B')
            end++;
        if (*end)
            return -1;
    }
    if (v == 0 || v > UINT64_MAX / mult)
        return -1;
    *out = (uint64_t)v * mult;
    return 0;
}

int config_read_password_file(const char *path, char **password, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    if (!f) {
        fail(err, errlen, "cannot read --password-file \"%s\": %s", path, strerror(errno));
        return -1;
    }
    n = getline(&line, &cap, f);
    fclose(f);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (n <= 0) {
        free(line);
        fail(err, errlen, "--password-file \"%s\" is empty: put the password on its first line",
             path);
        return -1;
    }
    if (*password) {
        explicit_bzero(*password, strlen(*password));
        free(*password);
    }
    *password = line;
    return 0;
}

/* ---- layers: the file and the environment under the command line ---------- */

#define NOPTS (sizeof(long_options) / sizeof(long_options[0]) - 1)

/* Options whose repetitions make a list: a higher source replaces it. */
static const char *const list_options[] = {"table", "column", "field"};

/* Options a file or the environment cannot set. */
static const char *const cli_only_options[] = {"help",         "version", "config",
                                               "print-config", "kafka",   "debezium-config"};

enum { SRC_FILE, SRC_ENV, SRC_CLI };

typedef struct config_record {
    int idx;           /* into long_options */
    const char *value; /* the option's argument ("NAME=VALUE" for -X); NULL: a flag */
    const char *where; /* NULL: the command line */
} config_record;

typedef struct synth {
    char *arg;         /* "--name=value" (owned) */
    const char *where; /* borrowed from the entries */
} synth;

struct config_layers {
    cfgfile_entries file, env;
    char **argv; /* the merged vector: argv[0], file, environment, command line */
    int argc;
    synth *synth;
    size_t nsynth;
    config_record *rec;
    size_t nrec, caprec;
    const char *cur_where; /* the source of the option being parsed */
    bool in_loop;
    bool print;
    int orig_argc; /* what config_parse_flags() was given, for config_reload() */
    char **orig_argv;
    unsigned flags;
};

static bool in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return true;
    return false;
}

#define IN_LIST(name, list) in_list((name), (list), sizeof(list) / sizeof((list)[0]))

static int option_index(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strcmp(long_options[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int option_index_of_val(int val)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (long_options[i].val == val)
            return (int)i;
    return -1;
}

bool config_secret_prop(const char *name)
{
    return strstr(name, "password") || strstr(name, "secret") || strcmp(name, "ssl.key.pem") == 0 ||
           strcmp(name, "sasl.oauthbearer.config") == 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* The first line of path, without its line end, into *out (owned). */
static int read_first_line(const char *path, char **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    if (!f)
        return fail(err, errlen, "cannot read \"%s\": %s", path, strerror(errno));
    n = getline(&line, &cap, f);
    fclose(f);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (n <= 0) {
        free(line);
        return fail(err, errlen, "\"%s\" is empty: put the value on its first line", path);
    }
    *out = line;
    return 0;
}

static int add_record(struct config_layers *l, int idx, const char *value, const char *where)
{
    if (l->nrec == l->caprec) {
        size_t cap = l->caprec ? l->caprec * 2 : 32;
        config_record *r = realloc(l->rec, cap * sizeof(*r));
        if (!r)
            return -1;
        l->rec = r;
        l->caprec = cap;
    }
    l->rec[l->nrec++] = (config_record){.idx = idx, .value = value, .where = where};
    return 0;
}

static int add_synth(struct config_layers *l, const char *name, const char *value,
                     const char *where)
{
    char *arg;

    if (asprintf(&arg, "--%s=%s", name, value) < 0)
        return -1;
    l->synth[l->nsynth++] = (synth){.arg = arg, .where = where};
    l->argv[l->argc++] = arg;
    return 0;
}

/*
 * Check an entry of the file or the environment; returns its option index,
 * -2 for a kafka.PROP entry, or -1 with err.  A kafka.PROP.file entry
 * becomes kafka.PROP with the file's first line as its value.
 */
/* fail() for check_entry(): -1. */
#define entry_fail(err, errlen, ...) errfmt(err, errlen, -1, __VA_ARGS__)

static int check_entry(cfgfile_entry *e, bool from_file, char *err, size_t errlen)
{
    char where[300], envname[300];
    int idx;

    if (from_file)
        snprintf(where, sizeof(where), "%s", e->where);
    else
        snprintf(where, sizeof(where), "environment variable %s", e->where + 4);
    if (strncmp(e->key, "kafka.", 6) == 0) {
        const char *name = e->key + 6;
        size_t n = strlen(name);
        if (n == 0 || name[0] == '.')
            return entry_fail(err, errlen, "%s: give a librdkafka property after \"kafka.\"",
                              where);
        if (n > 5 && strcmp(name + n - 5, ".file") == 0) {
            char *v = NULL, ferr[512];
            if (read_first_line(e->value, &v, ferr, sizeof(ferr)) != 0)
                return entry_fail(err, errlen, "%s: %s", where, ferr);
            free(e->value);
            e->value = v;
            e->key[6 + n - 5] = '\0';
        } else if (from_file && config_secret_prop(name)) {
            cfgfile_env_name(e->key, envname, sizeof(envname));
            return entry_fail(err, errlen,
                              "%s: %s is a secret and does not belong in the file: write "
                              "\"%s.file = PATH\" (a file only the relay can read) or set %s",
                              where, e->key, e->key, envname);
        }
        return -2;
    }
    idx = option_index(e->key);
    if (idx < 0 || IN_LIST(e->key, cli_only_options))
        return entry_fail(err, errlen,
                          idx < 0
                              ? "%s: unknown option \"%s\" (keys are the long options of --help, "
                                "and kafka.PROPERTY for -X)"
                              : "%s: \"%s\" can only be given on the command line",
                          where, e->key);
    if (long_options[idx].has_arg == no_argument) {
        bool b;
        if (parse_bool(e->value, &b) != 0)
            return entry_fail(err, errlen, "%s: %s takes true or false, not \"%s\"", where, e->key,
                              e->value);
    }
    if (from_file && strcmp(e->key, "dbname") == 0) {
        char *copy = strdup(e->value);
        int n = copy ? scrub_passwords(copy) : 0;
        free(copy);
        if (n > 0)
            return entry_fail(
                err, errlen,
                "%s: the conninfo carries a password, which does not belong in the file: "
                "write \"password-file = PATH\" (or use PGPASSFILE / "
                "OUTBOX_RELAY_DBNAME) and drop it from dbname",
                where);
    }
    return idx;
}

/* The highest source (SRC_*) that gives option idx, or -1. */
static int highest_source(const bool *in_file, const bool *in_env, const bool *in_cli, int idx)
{
    return in_cli[idx] ? SRC_CLI : in_env[idx] ? SRC_ENV : in_file[idx] ? SRC_FILE : -1;
}

/*
 * Build l->argv: argv[0], then what the file and the environment give (as
 * "--name=value"), then the command line argv[1..argc).  Fills *config_file.
 */
static int layers_build(struct config_layers *l, int argc, char **argv, const char **config_file,
                        char *err, size_t errlen)
{
    bool in_file[NOPTS], in_env[NOPTS], in_cli[NOPTS];
    char **scan = NULL;
    size_t max;
    int c, rc = CONFIG_USAGE;
    const char *dbz_file = NULL;
    extern char **environ;

    memset(in_file, 0, sizeof(in_file));
    memset(in_env, 0, sizeof(in_env));
    memset(in_cli, 0, sizeof(in_cli));

    /* Which options the command line gives, and --config (errors are the
     * real pass's to report). */
    scan = malloc(((size_t)argc + 1) * sizeof(*scan));
    if (!scan)
        return fail(err, errlen, "out of memory");
    memcpy(scan, argv, (size_t)argc * sizeof(*scan));
    scan[argc] = NULL;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, scan, ":d:S:P:t:b:X:vq", long_options, NULL)) != -1) {
        int idx = option_index_of_val(c);
        if (idx < 0)
            continue;
        in_cli[idx] = true;
        if (c == OPT_CONFIG)
            *config_file = optarg;
        if (c == OPT_DBZ_CONFIG)
            dbz_file = optarg;
        if (c == OPT_PRINT_CONFIG)
            l->print = true;
    }
    free(scan);

    if (cfgfile_from_env(environ, &l->env, err, errlen) != 0)
        return CONFIG_USAGE;
    if (!*config_file) {
        const char *p = getenv(CFGFILE_ENV_PREFIX "CONFIG");
        if (p && *p)
            *config_file = p;
    }
    if (*config_file && cfgfile_read(*config_file, &l->file, err, errlen) != 0)
        return CONFIG_USAGE;
    /* A Debezium connector's properties, as the file's entries (after the
     * file's own: a key both give is the connector's) */
    if (dbz_file && dbzconfig_read(dbz_file, &l->file, err, errlen) != 0)
        return CONFIG_USAGE;

    max = (size_t)argc + l->file.n + 1;
    for (size_t i = 0; i < l->env.n; i++) {
        max++;
        for (const char *p = l->env.v[i].value; *p; p++)
            max += *p == ',';
    }
    l->argv = calloc(max, sizeof(*l->argv));
    l->synth = calloc(max, sizeof(*l->synth));
    if (!l->argv || !l->synth)
        return fail(err, errlen, "out of memory");

    /* First pass: check every entry, note which options each source gives,
     * refuse a single-valued option twice in the file. */
    for (int s = SRC_FILE; s <= SRC_ENV; s++) {
        cfgfile_entries *es = s == SRC_FILE ? &l->file : &l->env;
        bool *in = s == SRC_FILE ? in_file : in_env;
        for (size_t i = 0; i < es->n; i++) {
            int idx = check_entry(&es->v[i], s == SRC_FILE, err, errlen);
            if (idx == -1)
                return CONFIG_USAGE;
            if (idx == -2)
                continue;
            if (s == SRC_FILE && in[idx] && !IN_LIST(long_options[idx].name, list_options)) {
                for (size_t j = 0; j < i; j++)
                    if (strcmp(es->v[j].key, es->v[i].key) == 0)
                        return fail(err, errlen, "%s: %s is already set on line %d", es->v[i].where,
                                    es->v[i].key, es->v[j].line);
            }
            in[idx] = true;
        }
    }

    /* Second pass: the merged vector. */
    l->argv[l->argc++] = argv[0];
    for (int s = SRC_FILE; s <= SRC_ENV; s++) {
        cfgfile_entries *es = s == SRC_FILE ? &l->file : &l->env;
        for (size_t i = 0; i < es->n; i++) {
            const cfgfile_entry *e = &es->v[i];
            const char *name = e->key, *value = e->value;
            int idx;
            if (strncmp(e->key, "kafka.", 6) == 0) {
                char *kv;
                if (asprintf(&kv, "%s=%s", e->key + 6, e->value) < 0)
                    return fail(err, errlen, "out of memory");
                rc = add_synth(l, "kafka", kv, e->where);
                explicit_bzero(kv, strlen(kv));
                free(kv);
                if (rc != 0)
                    return fail(err, errlen, "out of memory");
                continue;
            }
            idx = option_index(name);
            if (highest_source(in_file, in_env, in_cli, idx) != s &&
                (IN_LIST(name, list_options) || long_options[idx].has_arg == no_argument))
                continue;
            if (long_options[idx].has_arg == no_argument) {
                bool b = false;
                (void)parse_bool(value, &b);
                if (!b) {
                    if (add_record(l, idx, "false", e->where) != 0)
                        return fail(err, errlen, "out of memory");
                    continue;
                }
                if (asprintf(&l->synth[l->nsynth].arg, "--%s", name) < 0)
                    return fail(err, errlen, "out of memory");
                l->synth[l->nsynth].where = e->where;
                l->argv[l->argc++] = l->synth[l->nsynth++].arg;
                continue;
            }
            if (s == SRC_ENV && IN_LIST(name, list_options)) {
                /* a list in one variable: comma-separated */
                char *copy = strdup(value), *save = NULL;
                if (!copy)
                    return fail(err, errlen, "out of memory");
                for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                    while (*t == ' ')
                        t++;
                    if (*t && add_synth(l, name, t, e->where) != 0) {
                        free(copy);
                        return fail(err, errlen, "out of memory");
                    }
                }
                free(copy);
                continue;
            }
            if (add_synth(l, name, value, e->where) != 0)
                return fail(err, errlen, "out of memory");
        }
    }
    for (int i = 1; i < argc; i++)
        l->argv[l->argc++] = argv[i];
    l->argv[l->argc] = NULL;
    return CONFIG_OK;
}

static void layers_free(struct config_layers *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nsynth; i++) {
        explicit_bzero(l->synth[i].arg, strlen(l->synth[i].arg));
        free(l->synth[i].arg);
    }
    free(l->synth);
    free(l->argv);
    free(l->rec);
    cfgfile_entries_free(&l->file);
    cfgfile_entries_free(&l->env);
    free(l);
}

/* Called for each option the parse loop takes: its source, for messages
 * and --print-config. */
static void layers_note(struct config_layers *l, int c, int longindex, char **argv, const char *arg)
{
    int idx = option_index_of_val(c);

    l->cur_where = NULL;
    if (longindex >= 0 && optind >= 1)
        for (size_t i = 0; i < l->nsynth; i++)
            if (argv[optind - 1] == l->synth[i].arg)
                l->cur_where = l->synth[i].where;
    if (idx >= 0)
        (void)add_record(l, idx, arg, l->cur_where);
}

/* A UUIDv7 (RFC 9562: Unix milliseconds, then random bits) for
 * __debezium.context.runId, as Debezium makes one per connector start. */
static void make_run_id(char out[37])
{
    unsigned char b[16] = {0};
    struct timespec ts;
    uint64_t ms;

    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (getrandom(b + 6, 10, 0) != 10) {
        for (int i = 6; i < 16; i++)
            b[i] = (unsigned char)(ts.tv_nsec >> (i % 4 * 8));
    }
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (b[6] & 0x0F));
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3F));
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* What an option is when nothing sets it, for --print-config; NULL: unset. */
static const char *default_of(const char *name)
{
    static const char *const defaults[][2] = {
        {"slot", "outbox_relay"},
        {"publication", "outbox_pub"},
        {"table", "public.outbox"},
        {"create-slot", "false"},
        {"allow-new-slot", "false"},
        {"topic", "outbox.event.{aggregate_type}"},
        {"format", "envelope"},
        {"tombstone-on-empty-payload", "false"},
        {"debezium-converter", "string"},
        {"expand-json-payload", "false"},
        {"message-timestamp", "none"},
        {"dlq-topic", "outbox.dlq"},
        {"status-interval", "1"},
        {"max-inflight", "10000"},
        {"max-inflight-bytes", "24M"},
        {"shutdown-timeout", "10"},
        {"give-up-after", "0"},
        {"log-format", "text"},
        {"log-level", "info"},
        {"verbose", "false"},
        {"quiet", "false"},
    };
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        if (strcmp(defaults[i][0], name) == 0)
            return defaults[i][1];
    return NULL;
}

/* "key = value  # source", the value quoted when the file syntax needs it. */
static void print_line(FILE *out, const char *key, const char *value, const char *where)
{
    size_t n = strlen(value);
    bool quote = n == 0 || value[0] == ' ' || value[0] == '\t' || value[0] == '"' ||
                 value[n - 1] == ' ' || value[n - 1] == '\t' || strstr(value, " #") ||
                 strstr(value, "\t#");

    fprintf(out, "%s = ", key);
    if (quote) {
        fputc('"', out);
        for (const char *p = value; *p; p++) {
            if (*p == '"' || *p == '\\')
                fputc('\\', out);
            fputc(*p, out);
        }
        fputc('"', out);
    } else {
        fputs(value, out);
    }
    fprintf(out, "  # %s\n", where);
}

static const char *source_name(const char *where)
{
    return where ? where : "command line";
}

static void print_config(const config *cfg, FILE *out)
{
    const struct config_layers *l = cfg->layers;

    fprintf(out,
            "# outbox-relay %s: effective configuration (command line > environment > "
            "file > default)\n",
            OUTBOX_RELAY_VERSION);
    fprintf(out, "# config file: %s\n", cfg->config_file ? cfg->config_file : "none");
    for (size_t i = 0; i < NOPTS; i++) {
        const char *name = long_options[i].name;
        bool any = false, list = IN_LIST(name, list_options);
        if (IN_LIST(name, cli_only_options))
            continue;
        for (size_t r = 0; r < l->nrec; r++) {
            const config_record *rec = &l->rec[r];
            char *shown = NULL;
            bool later = false;
            if (rec->idx != (int)i)
                continue;
            for (size_t q = r + 1; q < l->nrec && !list; q++)
                later = later || l->rec[q].idx == (int)i;
            if (later)
                continue;
            any = true;
            if (strcmp(name, "dbname") == 0 && rec->value) {
                shown = strdup(rec->value);
                if (shown)
                    (void)scrub_passwords(shown);
            }
            print_line(out, name,
                       shown        ? shown
                       : rec->value ? rec->value
                                    : "true",
                       source_name(rec->where));
            free(shown);
        }
        if (!any) {
            const char *d = default_of(name);
            if (!d && long_options[i].has_arg == no_argument)
                d = "false"; /* a flag not given */
            if (d)
                print_line(out, name, d, "default");
            else
                fprintf(out, "# %s is not set\n", name);
        }
    }
    /* -X: the last value of each property */
    int kidx = option_index("kafka");
    for (size_t r = 0; r < l->nrec; r++) {
        const config_record *rec = &l->rec[r];
        const char *eq;
        bool later = false;
        if (rec->idx != kidx || !rec->value || !(eq = strchr(rec->value, '=')))
            continue;
        for (size_t q = r + 1; q < l->nrec; q++) {
            const char *v = l->rec[q].value;
            later = later || (l->rec[q].idx == kidx && v &&
                              strncmp(v, rec->value, (size_t)(eq - rec->value + 1)) == 0);
        }
        if (later)
            continue;
        char key[300];
        snprintf(key, sizeof(key), "kafka.%.*s", (int)(eq - rec->value), rec->value);
        print_line(out, key, config_secret_prop(key + 6) ? "********" : eq + 1,
                   source_name(rec->where));
    }
}

static void config_defaults(config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->conninfo = "";
    cfg->slot = "outbox_relay";
    cfg->publication = "outbox_pub";
    cfg->topic = "outbox.event.{aggregate_type}";
    cfg->format = ENVELOPE_FORMAT_ENVELOPE;
    cfg->dlq_topic = "outbox.dlq";
    cfg->status_interval_ms = 1000;
    cfg->max_inflight_events = 10000;
    cfg->max_inflight_bytes = UINT64_C(24) << 20; /* keeps peak RSS under 64 MB (make bench) */
    cfg->shutdown_timeout_ms = 10000;
    cfg->log_level = LOG_LEVEL_INFO;
}

static int parse_log_level(const char *s, int *level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *level = i;
            return 0;
        }
    return -1;
}

static enum config_result parse_layered(int argc, char **argv, config *cfg, unsigned flags,
                                        char *err, size_t errlen)
{
    int c, rc, verbosity = 0, longindex, level = LOG_LEVEL_INFO;
    char cerr[512];

    optind = 0; /* GNU: full re-initialisation, so tests can parse twice */
    opterr = 0;
    cfg->layers->in_loop = true;
    while ((longindex = -1,
            c = getopt_long(argc, argv, ":d:S:P:t:b:X:vq", long_options, &longindex)) != -1) {
        rc = CONFIG_OK;
        layers_note(cfg->layers, c, longindex, argv, optarg);
        switch (c) {
        case 'd':
            cfg->conninfo = optarg;
            break;
        case 'S':
            if (!valid_slot_name(optarg))
                return fail(err, errlen,
                            "invalid --slot \"%s\": use 1-63 lower-case letters, digits or _",
                            optarg);
            cfg->slot = optarg;
            break;
        case 'P':
            if (!valid_identifier(optarg, strlen(optarg)))
                return fail(err, errlen,
                            "invalid --publication \"%s\": use 1-63 characters without quotes",
                            optarg);
            cfg->publication = optarg;
            break;
        case 't':
            rc = add_table(cfg, optarg, err, errlen);
            break;
        case OPT_CREATE_SLOT:
            cfg->create_slot = true;
            break;
        case OPT_ALLOW_NEW_SLOT:
            cfg->allow_new_slot = true;
            break;
        case OPT_STATE_FILE:
            cfg->state_file = optarg;
            break;
        case 'b':
            cfg->brokers = optarg;
            break;
        case 'X':
            if (strcmp(optarg, "list") == 0) {
                sink_list_properties(stdout);
                return CONFIG_EXIT;
            }
            rc = add_prop(cfg, optarg, err, errlen);
            /* from the file or the environment: checked here, so the error
             * names its line or variable */
            if (rc == CONFIG_OK && cfg->layers->cur_where &&
                sink_config_check(NULL, &cfg->props[cfg->nprops - 1], 1, cerr, sizeof(cerr)) != 0)
                return fail(err, errlen, "%s", cerr);
            break;
        case OPT_TOPIC:
            if (envelope_topic_check(optarg, cerr, sizeof(cerr)) != 0)
                return fail(err, errlen, "invalid --topic \"%s\": %s", optarg, cerr);
            cfg->topic = optarg;
            break;
        case OPT_FORMAT:
            if (envelope_format_parse(optarg, &cfg->format) != 0)
                return fail(err, errlen, "unknown --format \"%s\": use " ENVELOPE_FORMAT_NAMES,
                            optarg);
            break;
        case OPT_FIELD:
            if (cfg->nfields == ENVELOPE_MAX_FIELDS)
                return fail(err, errlen, "too many --field options (at most %d)",
                            ENVELOPE_MAX_FIELDS);
            if (envelope_field_parse(optarg, &cfg->fields[cfg->nfields], cerr, sizeof(cerr)) != 0)
                return fail(err, errlen, "invalid --field \"%s\": %s", optarg, cerr);
            cfg->nfields++;
            break;
        case OPT_TOMBSTONE:
            cfg->tombstone_on_empty = true;
            break;
        case OPT_DBZ_CONVERTER:
            if (strcmp(optarg, "json") == 0)
                cfg->dbz_json_converter = true;
            else if (strcmp(optarg, "string") == 0)
                cfg->dbz_json_converter = false;
            else
                return fail(err, errlen, "invalid --debezium-converter \"%s\" (use string or json)",
                            optarg);
            break;
        case OPT_DBZ_EXPAND:
            cfg->dbz_expand = true;
            break;
        case OPT_DBZ_CONFIG:
            break; /* read with --config's entries */
        case OPT_DBZ_CONTEXT:
            if (optarg[0] == '\0' || strlen(optarg) >= sizeof(cfg->dbz_context))
                return fail(err, errlen, "invalid --debezium-context \"%s\" (1 to %zu bytes)",
                            optarg, sizeof(cfg->dbz_context) - 1);
            snprintf(cfg->dbz_context, sizeof(cfg->dbz_context), "%s", optarg);
            break;
        case OPT_CONFIG:
        case OPT_PRINT_CONFIG:
            break; /* taken by layers_build() */
        case OPT_LOG_LEVEL:
            if (parse_log_level(optarg, &level) != 0)
                return fail(err, errlen,
                            "unknown --log-level \"%s\": use error, warn, info or debug", optarg);
            break;
        case OPT_PASSWORD_FILE:
            if (config_read_password_file(optarg, &cfg->password, err, errlen) != 0)
                return CONFIG_USAGE;
            break;
        case OPT_MSG_TIMESTAMP:
            if (envelope_timestamp_parse(optarg, &cfg->msg_timestamp) != 0)
                return fail(err, errlen,
                            "unknown --message-timestamp \"%s\": use none, commit or event",
                            optarg);
            break;
        case OPT_COLUMN: {
            char table[OUTBOX_QUALNAME_MAX];
            const char *spec;
            outbox_colmap scratch;
            outbox_colmap_init(&scratch);
            if (outbox_column_split(optarg, table, &spec, cerr, sizeof(cerr)) != 0 ||
                outbox_colmap_set(&scratch, spec, cerr, sizeof(cerr)) != 0)
                return fail(err, errlen, "invalid --column \"%s\": %s", optarg, cerr);
            if (cfg->ncolumn_args == CONFIG_MAX_COLUMNS)
                return fail(err, errlen, "too many --column options (at most %d)",
                            CONFIG_MAX_COLUMNS);
            cfg->column_args[cfg->ncolumn_args++] = optarg;
            break;
        }
        case OPT_MESSAGES:
            if (!*optarg)
                return fail(err, errlen, "--messages needs a non-empty prefix");
            cfg->messages_prefix = optarg;
            break;
        case OPT_DLQ_TOPIC:
            if (!valid_topic_name(optarg))
                return fail(err, errlen,
                            "invalid --dlq-topic \"%s\": use 1-249 of a-z A-Z 0-9 . _ -", optarg);
            cfg->dlq_topic = optarg;
            break;
        case OPT_START_LSN:
            if (lsn_parse(optarg, &cfg->start_lsn) != 0)
                return fail(err, errlen, "malformed --start-lsn \"%s\": give an LSN like 0/16B3748",
                            optarg);
            cfg->has_start_lsn = true;
            break;
        case OPT_END_LSN:
            if (lsn_parse(optarg, &cfg->end_lsn) != 0)
                return fail(err, errlen, "malformed --end-lsn \"%s\": give an LSN like 0/16B3748",
                            optarg);
            cfg->has_end_lsn = true;
            break;
        case OPT_HTTP: {
            struct sockaddr_storage ss;
            socklen_t sl;
            if (http_parse_addr(optarg, &ss, &sl, cerr, sizeof(cerr)) != 0)
                return fail(err, errlen, "invalid --http \"%s\": %s", optarg, cerr);
            cfg->http_addr = optarg;
            break;
        }
        case OPT_LOG_FORMAT:
            if (strcmp(optarg, "text") == 0)
                cfg->log_json = false;
            else if (strcmp(optarg, "json") == 0)
                cfg->log_json = true;
            else
                return fail(err, errlen, "unknown --log-format \"%s\": use text or json", optarg);
            break;
        case OPT_STATUS_INTERVAL:
            if (parse_seconds(optarg, 0.01, 3600, &cfg->status_interval_ms) != 0)
                return fail(err, errlen,
                            "invalid --status-interval \"%s\": give seconds between 0.01 and 3600",
                            optarg);
            break;
        case OPT_SHUTDOWN_TIMEOUT:
            if (parse_seconds(optarg, 0, 3600, &cfg->shutdown_timeout_ms) != 0)
                return fail(err, errlen,
                            "invalid --shutdown-timeout \"%s\": give seconds between 0 and 3600",
                            optarg);
            break;
        case OPT_GIVE_UP_AFTER:
            if (parse_seconds(optarg, 0, 30 * 24 * 3600, &cfg->give_up_after_ms) != 0)
                return fail(err, errlen,
                            "invalid --give-up-after \"%s\": give seconds, 0 (never) up to "
                            "2592000",
                            optarg);
            break;
        case OPT_MAX_INFLIGHT:
            if (config_parse_size(optarg, &cfg->max_inflight_events) != 0 ||
                strpbrk(optarg, "kKmMgGbB"))
                return fail(err, errlen, "invalid --max-inflight \"%s\": give a positive count",
                            optarg);
            break;
        case OPT_MAX_INFLIGHT_BYTES:
            if (config_parse_size(optarg, &cfg->max_inflight_bytes) != 0)
                return fail(err, errlen,
                            "invalid --max-inflight-bytes \"%s\": give a size like 64M", optarg);
            break;
        case 'v':
            verbosity++;
            break;
        case 'q':
            verbosity--;
            break;
        case OPT_VERSION:
            printf("outbox-relay %s\n", OUTBOX_RELAY_VERSION);
            return CONFIG_EXIT;
        case OPT_HELP:
            fputs(usage_text, stdout);
            return CONFIG_EXIT;
        case ':':
            return fail(err, errlen, "option \"%s\" needs a value (see --help)", argv[optind - 1]);
        default:
            return fail(err, errlen, "unknown option \"%s\" (see --help)", argv[optind - 1]);
        }
        if (rc != CONFIG_OK)
            return rc;
    }
    cfg->layers->in_loop = false;
    if (optind < argc)
        return fail(err, errlen, "unexpected argument \"%s\" (see --help)", argv[optind]);

    if (cfg->ntables == 0 && add_table(cfg, "public.outbox", err, errlen) != CONFIG_OK)
        return CONFIG_USAGE;
    for (size_t i = 0; i < cfg->ncolumn_args; i++) {
        char table[OUTBOX_QUALNAME_MAX];
        const char *spec;
        bool known = false;
        if (outbox_column_split(cfg->column_args[i], table, &spec, cerr, sizeof(cerr)) != 0)
            return fail(err, errlen, "invalid --column \"%s\": %s", cfg->column_args[i], cerr);
        for (size_t t = 0; t < cfg->ntables && !known; t++)
            known = !table[0] || strcmp(table, cfg->tables[t].qualname) == 0;
        if (!known)
            return fail(err, errlen,
                        "--column \"%s\" names table \"%s\", which is not an outbox table: add "
                        "--table %s or fix the prefix",
                        cfg->column_args[i], table, table);
    }
    for (size_t t = 0; t < cfg->ntables; t++)
        if (outbox_colmap_build(&cfg->tables[t].colmap, cfg->tables[t].qualname, cfg->column_args,
                                cfg->ncolumn_args, cerr, sizeof(cerr)) != 0)
            return fail(err, errlen, "invalid --column: %s", cerr);
    /* Debezium's EventRouter needs no type column and keys a NULL or empty
     * aggregate id as a NULL key: so does its format. */
    if (cfg->format == ENVELOPE_FORMAT_DEBEZIUM)
        for (size_t t = 0; t < cfg->ntables; t++)
            cfg->tables[t].colmap.optional = 1u << OB_TYPE | 1u << OB_AGGREGATE_ID;
    if (cfg->has_start_lsn && cfg->has_end_lsn && cfg->end_lsn < cfg->start_lsn)
        return fail(err, errlen, "--end-lsn is below --start-lsn: swap them");

    if (cfg->dbz_context[0])
        make_run_id(cfg->dbz_run_id);
    cfg->envelope = (envelope_opts){.format = cfg->format,
                                    .topic_tmpl = cfg->topic,
                                    .fields = cfg->fields,
                                    .nfields = cfg->nfields,
                                    .tombstone_on_empty = cfg->tombstone_on_empty,
                                    .dbz_json_converter = cfg->dbz_json_converter,
                                    .dbz_expand = cfg->dbz_expand,
                                    .dbz_context = cfg->dbz_context[0] ? cfg->dbz_context : NULL,
                                    .dbz_run_id = cfg->dbz_run_id,
                                    .timestamp = cfg->msg_timestamp};
    if (envelope_opts_check(&cfg->envelope, cerr, sizeof(cerr)) != 0)
        return fail(err, errlen, "%s", cerr);

    level += verbosity;
    cfg->log_level = level > LOG_LEVEL_DEBUG   ? LOG_LEVEL_DEBUG
                     : level < LOG_LEVEL_ERROR ? LOG_LEVEL_ERROR
                                               : (enum log_level)level;

    bool have_bootstrap = cfg->brokers != NULL;
    for (size_t i = 0; i < cfg->nprops; i++)
        if (strcmp(cfg->props[i].name, "bootstrap.servers") == 0 ||
            strcmp(cfg->props[i].name, "metadata.broker.list") == 0)
            have_bootstrap = true;
    if (!have_bootstrap && (flags & CONFIG_NO_BROKERS_OK))
        goto checked;
    if (!have_bootstrap)
        return fail(err, errlen, "no Kafka brokers: give --brokers HOST:PORT[,HOST:PORT...]");
    if (sink_config_check(cfg->brokers, cfg->props, cfg->nprops, cerr, sizeof(cerr)) != 0)
        return fail(err, errlen, "%s", cerr);
checked:
    if (cfg->layers->print) {
        print_config(cfg, stdout);
        return CONFIG_EXIT;
    }
    return CONFIG_OK;
}

enum config_result config_parse(int argc, char **argv, config *cfg, char *err, size_t errlen)
{
    return config_parse_flags(argc, argv, cfg, 0, err, errlen);
}

enum config_result config_parse_flags(int argc, char **argv, config *cfg, unsigned flags, char *err,
                                      size_t errlen)
{
    enum config_result rc;

    config_defaults(cfg);
    if (argc > 1 && argv[1][0] != '-') {
        if (strcmp(argv[1], "run") != 0)
            return fail(err, errlen, "unknown sub-command \"%s\": use run (see --help)", argv[1]);
        argv++;
        argc--;
    }
    cfg->layers = calloc(1, sizeof(*cfg->layers));
    if (!cfg->layers)
        return fail(err, errlen, "out of memory");
    cfg->layers->orig_argc = argc;
    cfg->layers->orig_argv = argv;
    cfg->layers->flags = flags;
    rc = layers_build(cfg->layers, argc, argv, &cfg->config_file, err, errlen);
    if (rc != CONFIG_OK)
        return rc;
    rc = parse_layered(cfg->layers->argc, cfg->layers->argv, cfg, flags, err, errlen);
    if (rc == CONFIG_USAGE && cfg->layers->in_loop && cfg->layers->cur_where &&
        strncmp(err, cfg->layers->cur_where, strlen(cfg->layers->cur_where)) != 0) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", err);
        snprintf(err, errlen, "%s%s: %s",
                 strncmp(cfg->layers->cur_where, "env ", 4) == 0 ? "environment variable " : "",
                 strncmp(cfg->layers->cur_where, "env ", 4) == 0 ? cfg->layers->cur_where + 4
                                                                 : cfg->layers->cur_where,
                 msg);
    }
    return rc;
}

enum config_result config_reload(const config *cur, config *next, char *err, size_t errlen)
{
    enum config_result rc;

    if (!cur->layers)
        return fail(err, errlen, "no configuration to read again");
    rc = config_parse_flags(cur->layers->orig_argc, cur->layers->orig_argv, next,
                            cur->layers->flags, err, errlen);
    if (rc == CONFIG_EXIT) /* --help and the like cannot be running */
        rc = fail(err, errlen, "the command line does not describe a run");
    return rc;
}

void config_print(const config *cfg, FILE *out)
{
    if (cfg->layers)
        print_config(cfg, out);
}

/* The lines of config_print() without their "  # source" comments. */
static char *printed(const config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (!f)
        return NULL;
    config_print(cfg, f);
    fclose(f);
    return buf;
}

/* The key of one printed line ("key = value  # src" or "# key is not set"). */
static size_t line_key(const char *line, size_t n, const char **key)
{
    if (n > 2 && line[0] == '#' && line[1] == ' ' && memmem(line, n, " is not set", 11)) {
        *key = line + 2;
        return strcspn(line + 2, " ");
    }
    if (line[0] == '#')
        return 0;
    *key = line;
    return strcspn(line, " ");
}

/* Whether the line for key (with its value, without its source) is in text. */
static bool has_line(const char *text, const char *line, size_t n)
{
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t m = nl ? (size_t)(nl - p) : strlen(p);
        const char *src = memmem(p, m, "  # ", 4);
        size_t vm = src ? (size_t)(src - p) : m;
        if (vm == n && memcmp(p, line, n) == 0)
            return true;
        p = nl ? nl + 1 : NULL;
    }
    return false;
}

int config_changed_keys(const config *a, const config *b, char keys[][64], int max)
{
    char *ta = printed(a), *tb = printed(b);
    int n = 0;

    for (int pass = 0; pass < 2 && ta && tb; pass++) {
        const char *from = pass ? tb : ta, *in = pass ? ta : tb;
        for (const char *p = from; *p;) {
            const char *nl = strchr(p, '\n'), *key = NULL;
            size_t m = nl ? (size_t)(nl - p) : strlen(p);
            const char *src = memmem(p, m, "  # ", 4);
            size_t vm = src ? (size_t)(src - p) : m;
            size_t kl = line_key(p, m, &key);
            if (kl > 0 && kl < 64 && !has_line(in, p, vm)) {
                bool dup = false;
                for (int i = 0; i < n && !dup; i++)
                    dup = strlen(keys[i]) == kl && memcmp(keys[i], key, kl) == 0;
                if (!dup && n < max) {
                    memcpy(keys[n], key, kl);
                    keys[n][kl] = '\0';
                    n++;
                }
            }
            if (!nl)
                break;
            p = nl + 1;
        }
    }
    free(ta);
    free(tb);
    return n;
}

void config_free(config *cfg)
{
    if (!cfg)
        return;
    if (cfg->password) {
        explicit_bzero(cfg->password, strlen(cfg->password));
        free(cfg->password);
        cfg->password = NULL;
    }
    for (size_t i = 0; i < cfg->nprops; i++) {
        free(cfg->prop_storage[i]);
        cfg->prop_storage[i] = NULL;
    }
    cfg->nprops = 0;
    layers_free(cfg->layers);
    cfg->layers = NULL;
}
