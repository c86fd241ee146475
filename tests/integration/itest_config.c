/*
 * Bad configuration: every case exits 2 with a message on stderr that names
 * the problem, and leaves the database as it found it — no slot and no
 * publication created, none altered (most cases pass --create-slot, so a
 * relay that creates things before checking would be caught).  An
 * unreachable database at start-up exits non-zero naming the connection.
 *
 * Each case gets its own database; slots are cluster-wide, so a case drops
 * the slots it made itself.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/harness/harness.h"

#define RELAY_TIMEOUT_MS 30000

static hx_pg pg;
static hx_broker broker;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0)
        return -1;
    if (hx_pg_start(&pg, "config", NULL, false) != 0)
        return -1;
    if (hx_broker_start(&broker, 1) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hx_broker_stop(&broker);
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

/* Slots of the cluster, publications and their tables in conn's database. */
static void snapshot(PGconn *conn, char *buf, size_t len)
{
    char slots[1024], pubs[1024], tables[1024];

    assert_int_equal(hx_query1(conn, slots, sizeof(slots),
                               "SELECT coalesce(string_agg(slot_name || ':' || plugin, ',' "
                               "ORDER BY slot_name), '') FROM pg_replication_slots"),
                     1);
    assert_int_equal(hx_query1(conn, pubs, sizeof(pubs),
                               "SELECT coalesce(string_agg(pubname || ':' || pubinsert, ',' "
                               "ORDER BY pubname), '') FROM pg_publication"),
                     1);
    assert_int_equal(hx_query1(conn, tables, sizeof(tables),
                               "SELECT coalesce(string_agg(pubname || ':' || schemaname || '.' "
                               "|| tablename, ',' ORDER BY 1), '') FROM pg_publication_tables"),
                     1);
    snprintf(buf, len, "slots=[%s] publications=[%s] tables=[%s]", slots, pubs, tables);
}

/* Case-insensitive: does hay contain one of the '|'-separated words? */
static bool mentions(const char *hay, const char *words)
{
    char w[128];
    const char *p = words;

    while (*p) {
        size_t n = strcspn(p, "|");
        snprintf(w, sizeof(w), "%.*s", (int)n, p);
        if (n && strcasestr(hay, w))
            return true;
        p += n;
        if (*p == '|')
            p++;
    }
    return false;
}

/*
 * Run the relay against conninfo with args after the common ones; expect
 * exit code want (or any non-zero when want < 0), a message on stderr that
 * mentions one of words, and conn's database unchanged.
 */
static void expect_rejected(PGconn *conn, const char *conninfo, const char *tag, int want,
                            const char *words, const char *const *args)
{
    char before[4096], after[4096];
    const char *argv[40];
    size_t n = 0;
    hx_proc p;
    char *err;
    int rc;

    if (conn)
        snapshot(conn, before, sizeof(before));
    argv[n++] = "run";
    argv[n++] = "-d";
    argv[n++] = conninfo;
    argv[n++] = "-b";
    argv[n++] = broker.bootstraps;
    for (; *args && n < 39; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    assert_int_equal(hx_relay_start(&p, tag, argv), 0);
    rc = hx_proc_wait(&p, RELAY_TIMEOUT_MS);
    err = hx_proc_stderr(&p);
    if ((want >= 0 && rc != want) || (want < 0 && rc <= 0) || !mentions(err, words)) {
        hx_proc_dump(&p, "rejection expected");
        free(err);
        if (want >= 0 && rc != want)
            fail_msg("%s: exit %d, expected %d", tag, rc, want);
        if (want < 0 && rc <= 0)
            fail_msg("%s: exit %d, expected a failure", tag, rc);
        fail_msg("%s: stderr does not mention any of \"%s\"", tag, words);
    }
    free(err);
    if (conn) {
        snapshot(conn, after, sizeof(after));
        if (strcmp(before, after) != 0)
            fail_msg("%s: the database changed\n  before: %s\n  after:  %s", tag, before, after);
    }
}

/* A fresh database for one case; returns a connection to it. */
static PGconn *case_db(const char *name, bool with_schema, char *conninfo, size_t len)
{
    PGconn *conn;

    assert_int_equal(hx_pg_create_db(&pg, name, with_schema), 0);
    hx_pg_conninfo(&pg, name, conninfo, len);
    conn = hx_connect(conninfo);
    assert_non_null(conn);
    return conn;
}

static void drop_slot(PGconn *conn, const char *slot)
{
    assert_int_equal(hx_exec(conn,
                             "SELECT pg_drop_replication_slot(slot_name) FROM "
                             "pg_replication_slots WHERE slot_name = '%s'",
                             slot),
                     0);
}

static void test_unknown_option(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_unknown_opt", true, ci, sizeof(ci));
    const char *args[] = {"--create-slot", "--no-such-option", NULL};

    (void)state;
    expect_rejected(conn, ci, "unknown-option", 2, "no-such-option", args);
    PQfinish(conn);
}

static void test_malformed_start_lsn(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_start_lsn", true, ci, sizeof(ci));
    const char *args[] = {"--create-slot", "--start-lsn", "0/XYZ", NULL};
    const char *args2[] = {"--create-slot", "--start-lsn", "12345", NULL};

    (void)state;
    expect_rejected(conn, ci, "start-lsn", 2, "start-lsn|0/XYZ", args);
    expect_rejected(conn, ci, "start-lsn-2", 2, "start-lsn|12345", args2);
    PQfinish(conn);
}

static void test_unknown_kafka_property(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_kafka_prop", true, ci, sizeof(ci));
    const char *args[] = {"--create-slot", "-X", "no.such.property=1", NULL};

    (void)state;
    expect_rejected(conn, ci, "kafka-prop", 2, "no.such.property", args);
    PQfinish(conn);
}

static void test_unknown_format(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_format", true, ci, sizeof(ci));
    const char *args[] = {"--create-slot", "--format", "avro", NULL};

    (void)state;
    expect_rejected(conn, ci, "format", 2, "format|avro", args);
    PQfinish(conn);
}

static void test_wal_level_not_logical(void **state)
{
    hx_pg rep;
    PGconn *conn;
    const char *args[] = {"--create-slot", NULL};
    char buf[32];

    (void)state;
    assert_int_equal(hx_pg_start(&rep, "replica", "wal_level = replica", true), 0);
    conn = hx_connect(rep.conninfo);
    assert_non_null(conn);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf), "SHOW wal_level"), 1);
    assert_string_equal(buf, "replica");
    /* the schema made outbox_pub: drop it so a relay that creates it is caught */
    assert_int_equal(hx_exec(conn, "DROP PUBLICATION outbox_pub"), 0);
    expect_rejected(conn, rep.conninfo, "wal-level", 2, "wal_level", args);
    PQfinish(conn);
    hx_pg_stop(&rep);
}

static void test_slot_missing(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_slot_missing", true, ci, sizeof(ci));
    const char *args[] = {"--slot", "c_missing_slot", NULL};

    (void)state;
    expect_rejected(conn, ci, "slot-missing", 2, "c_missing_slot|slot", args);
    PQfinish(conn);
}

static void test_slot_other_plugin(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_slot_plugin", true, ci, sizeof(ci));
    const char *args[] = {"--slot", "c_td_slot", "--create-slot", NULL};

    (void)state;
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('c_td_slot', 'test_decoding')"),
        0);
    expect_rejected(conn, ci, "slot-plugin", 2, "test_decoding|pgoutput|plugin", args);
    drop_slot(conn, "c_td_slot");
    PQfinish(conn);
}

static void test_publication_missing(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_pub_missing", true, ci, sizeof(ci));
    const char *args[] = {"--slot", "c_pm_slot", NULL};

    (void)state;
    assert_int_equal(hx_exec(conn, "DROP PUBLICATION outbox_pub"), 0);
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('c_pm_slot', 'pgoutput')"), 0);
    expect_rejected(conn, ci, "publication-missing", 2, "publication|outbox_pub", args);
    drop_slot(conn, "c_pm_slot");
    PQfinish(conn);
}

static void test_publication_not_covering_table(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_pub_cover", true, ci, sizeof(ci));
    const char *args[] = {"--slot", "c_pc_slot", NULL};
    const char *args2[] = {"--slot", "c_pc_slot", "--create-slot", NULL};

    (void)state;
    assert_int_equal(hx_exec(conn, "CREATE TABLE public.other (x int);\n"
                                   "DROP PUBLICATION outbox_pub;\n"
                                   "CREATE PUBLICATION outbox_pub FOR TABLE public.other"),
                     0);
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('c_pc_slot', 'pgoutput')"), 0);
    expect_rejected(conn, ci, "publication-cover", 2, "public.outbox|outbox_pub|publication", args);
    /* --create-slot creates what is missing; it must not silently alter a publication */
    expect_rejected(conn, ci, "publication-cover-create", 2, "public.outbox|outbox_pub|publication",
                    args2);
    drop_slot(conn, "c_pc_slot");
    PQfinish(conn);
}

static void test_outbox_table_missing(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_table_missing", true, ci, sizeof(ci));
    const char *args[] = {"--create-slot",         "--slot",   "c_tm_slot",
                          "--publication",         "c_tm_pub", "--table",
                          "public.no_such_outbox", NULL};

    (void)state;
    expect_rejected(conn, ci, "table-missing", 2, "no_such_outbox", args);
    PQfinish(conn);
}

static void test_outbox_table_lacks_column(void **state)
{
    char ci[256];
    PGconn *conn = case_db("c_table_column", true, ci, sizeof(ci));
    const char *args[] = {"--create-slot",         "--slot",   "c_tc_slot",
                          "--publication",         "c_tc_pub", "--table",
                          "public.outbox_noaggid", NULL};

    (void)state;
    assert_int_equal(hx_exec(conn, "CREATE TABLE public.outbox_noaggid (id uuid PRIMARY KEY, "
                                   "aggregatetype text NOT NULL, type text NOT NULL, "
                                   "payload jsonb)"),
                     0);
    expect_rejected(conn, ci, "table-column", 2, "aggregateid", args);
    PQfinish(conn);
}

static void test_unreachable_database(void **state)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t slen = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char ci[256];
    const char *args[] = {NULL};

    (void)state;
    /* a loopback port nobody listens on: bound once, then released */
    assert_true(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
    close(fd);
    snprintf(ci, sizeof(ci),
             "host=127.0.0.1 port=%d user=postgres dbname=postgres "
             "connect_timeout=3",
             ntohs(sin.sin_port));
    expect_rejected(NULL, ci, "unreachable", -1, "connect|database|server", args);
}

/* Long options ("--name") in text, each once, into v (at most max). */
static size_t long_options(const char *text, char v[][40], size_t max)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, "--")) != NULL;) {
        size_t k = 0;
        char name[40];
        p += 2;
        while (k < sizeof(name) - 1 && ((*p >= 'a' && *p <= 'z') || *p == '-'))
            name[k++] = *p++;
        name[k] = '\0';
        if (k < 2 || name[0] == '-')
            continue;
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++)
            seen = strcmp(v[i], name) == 0;
        if (!seen && n < max)
            strcpy(v[n++], name);
    }
    return n;
}

static char *slurp(FILE *f)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t got; (got = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += got;
        if (cap - len < 4096) {
            buf = realloc(buf, cap *= 2);
            assert_non_null(buf);
        }
    }
    buf[len] = '\0';
    return buf;
}

/*
 * `outbox-relay --help` and README's table of options name the same long
 * options: every one --help lists is documented in the table, and every
 * one the table documents is in --help.
 */
static void test_help_matches_readme(void **state)
{
    const char *relay = getenv("OBX_RELAY"), *root = getenv("OBX_ROOT");
    char cmd[700], path[600], help_opts[80][40], readme_opts[80][40];
    FILE *f;

    (void)state;
    snprintf(cmd, sizeof(cmd), "%s --help", relay && *relay ? relay : "./outbox-relay");
    f = popen(cmd, "r");
    assert_non_null(f);
    char *help = slurp(f);
    assert_int_equal(pclose(f), 0);
    snprintf(path, sizeof(path), "%s/README.md", root && *root ? root : ".");
    f = fopen(path, "r");
    assert_non_null(f);
    char *readme = slurp(f);
    fclose(f);

    /* the table: the README lines that start with "| `-" */
    size_t tlen = 0;
    char *table = calloc(1, strlen(readme) + 1);
    assert_non_null(table);
    for (char *line = readme; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line + 1) : strlen(line);
        if (strncmp(line, "| `-", 4) == 0) {
            memcpy(table + tlen, line, len);
            tlen += len;
        }
        line = nl ? nl + 1 : NULL;
    }
    /* --help's options: its indented lines that start with "-" (not the
     * usage lines of the sub-commands) */
    size_t olen = 0;
    char *opts = calloc(1, strlen(help) + 1);
    assert_non_null(opts);
    for (char *line = help; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line + 1) : strlen(line);
        size_t lead = strspn(line, " ");
        if (lead >= 2 && line[lead] == '-') {
            memcpy(opts + olen, line, len);
            olen += len;
        }
        line = nl ? nl + 1 : NULL;
    }
    size_t nh = long_options(opts, help_opts, 80), nr = long_options(table, readme_opts, 80);
    assert_true(nh > 20);
    assert_true(nr > 20);
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(help_opts[i], "help") == 0 || strcmp(help_opts[i], "version") == 0 ||
            strcmp(help_opts[i], "verbose") == 0 || strcmp(help_opts[i], "quiet") == 0)
            continue;
        char needle[64];
        const char *at = table;
        size_t nl = (size_t)snprintf(needle, sizeof(needle), "--%.39s", help_opts[i]);
        /* the whole name: not a prefix of a longer option */
        while ((at = strstr(at, needle)) != NULL &&
               ((at[nl] >= 'a' && at[nl] <= 'z') || at[nl] == '-'))
            at += nl;
        if (!at)
            fail_msg("--%s is in --help but not in README's table of options", help_opts[i]);
    }
    for (size_t i = 0; i < nr; i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "--%.39s ", readme_opts[i]);
        char needle2[64];
        snprintf(needle2, sizeof(needle2), "--%.39s\n", readme_opts[i]);
        if (!strstr(opts, needle) && !strstr(opts, needle2))
            fail_msg("--%s is in README's table of options but not in --help", readme_opts[i]);
    }
    free(opts);
    free(table);
    free(readme);
    free(help);
}

/* ---- the configuration file and the environment ---------------------------- */

static void write_file(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void write_file(const char *path, const char *fmt, ...)
{
    va_list ap;
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    assert_int_equal(fclose(f), 0);
}

/* A bad file: exit 2 naming FILE:LINE, before anything is created (the
 * file asks for --create-slot). */
static void test_config_file_rejected(void **state)
{
    char ci[256], path[600], want[700];
    PGconn *conn = case_db("c_cfgfile_bad", true, ci, sizeof(ci));
    const char *args[] = {"--config", path, NULL};

    (void)state;
    snprintf(path, sizeof(path), "%s/bad.conf", hx_tmpdir());
    snprintf(want, sizeof(want), "%s:3:", path);
    write_file(path, "create-slot = true\nslot = c_cfgfile_slot\nmax-inflight = many\n");
    expect_rejected(conn, ci, "cfgfile-bad-value", 2, want, args);
    write_file(path, "create-slot = true\n# secret\nkafka.sasl.password = hunter2\n");
    expect_rejected(conn, ci, "cfgfile-secret", 2, want, args);
    write_file(path, "create-slot = true\n\nslot c_cfgfile_slot\n");
    expect_rejected(conn, ci, "cfgfile-syntax", 2, want, args);
    setenv("OUTBOX_RELAY_SLOTT", "typo", 1);
    write_file(path, "create-slot = true\n");
    expect_rejected(conn, ci, "cfgfile-env-typo", 2, "OUTBOX_RELAY_SLOTT", args);
    unsetenv("OUTBOX_RELAY_SLOTT");
    PQfinish(conn);
}

/* The relay runs from a file, the environment and the command line, each
 * winning over the one below: the file's dbname points at a database that
 * does not exist and the environment's at the real one; the file's slot
 * is overridden by the command line's; the topic template comes from the
 * file.  What a consumer reads and the slot's confirmed position show
 * which value was used. */
static void test_config_file_env_cli_run(void **state)
{
    char ci[256], path[600], tmpl[128], topic[128], endbuf[32];
    PGconn *conn = case_db("c_cfgfile_run", true, ci, sizeof(ci));
    uint64_t end, confirmed = 0;
    hx_records recs = {0};
    const char *topics[1] = {topic};
    hx_proc p;

    (void)state;
    snprintf(tmpl, sizeof(tmpl), "itest.%s.cfgfile.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.cfgfile.cfgorder", hx_run_id());
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('c_cfg_cli', 'pgoutput')"), 0);
    assert_int_equal(hx_exec(conn, "INSERT INTO public.outbox (aggregatetype, aggregateid, type, "
                                   "payload) VALUES ('cfgorder', '7', 'Placed', '{\"n\": 1}')"),
                     0);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    hx_lsn_format(end, endbuf, sizeof(endbuf));
    snprintf(path, sizeof(path), "%s/run.conf", hx_tmpdir());
    write_file(path,
               "# the relay of test_config_file_env_cli_run\n"
               "dbname = host=127.0.0.1 port=%d dbname=no_such_db user=postgres\n"
               "brokers = %s\n"
               "slot = c_cfg_file\n"
               "topic = %s\n"
               "end-lsn = %s\n"
               "kafka.linger.ms = 0\n",
               pg.port, broker.bootstraps, tmpl, endbuf);
    setenv("OUTBOX_RELAY_DBNAME", ci, 1);
    const char *args[] = {"run", "--config", path, "--slot", "c_cfg_cli", NULL};
    assert_int_equal(hx_relay_start(&p, "cfgfile-run", args), 0);
    unsetenv("OUTBOX_RELAY_DBNAME");
    int rc = hx_proc_wait(&p, RELAY_TIMEOUT_MS);
    if (rc != 0)
        hx_proc_dump(&p, "relay from a configuration file");
    assert_int_equal(rc, 0);
    assert_int_equal(hx_slot_confirmed(conn, "c_cfg_cli", &confirmed), 1);
    assert_true(confirmed >= end);
    assert_int_equal(hx_consume(broker.bootstraps, topics, 1, 1, 20000, &recs), 1);
    assert_string_equal(recs.v[0].key, "7");
    hx_records_free(&recs);
    drop_slot(conn, "c_cfg_cli");
    PQfinish(conn);
}

/* --print-config: exit 0, each value with its source, secrets masked. */
static void test_print_config(void **state)
{
    const char *relay = getenv("OBX_RELAY");
    char path[600], pw[600], cmd[2000];
    FILE *f;

    (void)state;
    snprintf(path, sizeof(path), "%s/print.conf", hx_tmpdir());
    snprintf(pw, sizeof(pw), "%s/sasl.pw", hx_tmpdir());
    write_file(pw, "hunter2\n");
    write_file(path,
               "brokers = file:9092\nslot = file_slot\ntable = a.outbox\n"
               "kafka.sasl.password.file = %s\ndbname = host=db user=u\n",
               pw);
    snprintf(cmd, sizeof(cmd),
             "OUTBOX_RELAY_SLOT=env_slot OUTBOX_RELAY_KAFKA_SSL_KEY_PASSWORD=topsecret "
             "OUTBOX_RELAY_DBNAME='host=db password=dbsecret' "
             "%s run --config %s --publication cli_pub --print-config",
             relay && *relay ? relay : "./outbox-relay", path);
    f = popen(cmd, "r");
    assert_non_null(f);
    char *out = slurp(f);
    assert_int_equal(pclose(f), 0);
    char want[700];
    snprintf(want, sizeof(want), "brokers = file:9092  # %s:1\n", path);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "slot = env_slot  # env OUTBOX_RELAY_SLOT\n"));
    assert_non_null(strstr(out, "publication = cli_pub  # command line\n"));
    assert_non_null(strstr(out, "format = envelope  # default\n"));
    snprintf(want, sizeof(want), "table = a.outbox  # %s:3\n", path);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want), "kafka.sasl.password = ********  # %s:4\n", path);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "kafka.ssl.key.password = ********  # env"));
    assert_non_null(strstr(out, "dbname = host=db password=***  # env OUTBOX_RELAY_DBNAME"));
    assert_null(strstr(out, "hunter2"));
    assert_null(strstr(out, "topsecret"));
    assert_null(strstr(out, "dbsecret"));
    free(out);
}

/* SIGHUP re-reads the file: the log format and level change at once (the
 * log turns to JSON lines), a changed topic template needs a restart, so
 * the events still go to the running template's topic; the relay carries
 * on and confirms. */
static void test_sighup_rereads_config(void **state)
{
    char ci[256], path[600], tmpl[128], topic[128], other[128];
    PGconn *conn = case_db("c_cfg_hup", true, ci, sizeof(ci));
    const char *topics[1] = {topic};
    hx_records recs = {0};
    uint64_t end, confirmed = 0;
    char active[8] = "";
    hx_proc p;

    (void)state;
    snprintf(tmpl, sizeof(tmpl), "itest.%s.hup.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.hup.huporder", hx_run_id());
    snprintf(other, sizeof(other), "itest.%s.hupnew.{aggregate_type}", hx_run_id());
    snprintf(path, sizeof(path), "%s/hup.conf", hx_tmpdir());
    write_file(path,
               "brokers = %s\nslot = c_hup\ncreate-slot = true\ntopic = %s\n"
               "log-level = info\nlog-format = text\n",
               broker.bootstraps, tmpl);
    const char *args[] = {"run", "--config", path, "-d", ci, NULL};
    assert_int_equal(hx_relay_start(&p, "cfg-hup", args), 0);
    for (int i = 0; i < 100 && strcmp(active, "t") != 0; i++) {
        hx_sleep_ms(100);
        hx_query1(conn, active, sizeof(active),
                  "SELECT active FROM pg_replication_slots WHERE slot_name = 'c_hup'");
    }
    assert_string_equal(active, "t");
    write_file(path,
               "brokers = %s\nslot = c_hup\ncreate-slot = true\ntopic = %s\n"
               "log-level = debug\nlog-format = json\n",
               broker.bootstraps, other);
    assert_int_equal(hx_proc_signal(&p, SIGHUP), 0);
    hx_sleep_ms(500);
    assert_int_equal(hx_exec(conn, "INSERT INTO public.outbox (aggregatetype, aggregateid, type)"
                                   " VALUES ('huporder', '9', 'Placed')"),
                     0);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);
    for (int i = 0; i < 200 && confirmed < end; i++) {
        hx_sleep_ms(100);
        (void)hx_slot_confirmed(conn, "c_hup", &confirmed);
    }
    assert_true(confirmed >= end);
    assert_true(hx_proc_running(&p));
    assert_int_equal(hx_consume(broker.bootstraps, topics, 1, 1, 20000, &recs), 1);
    assert_string_equal(recs.v[0].key, "9");
    hx_records_free(&recs);
    assert_int_equal(hx_proc_signal(&p, SIGTERM), 0);
    assert_int_equal(hx_proc_wait(&p, RELAY_TIMEOUT_MS), 0);
    char *err = hx_proc_stderr(&p);
    const char *hup = strstr(err, "received SIGHUP");
    if (!hup || !strstr(err, "{\"time\":") ||
        !strstr(err, "\"received SIGHUP: \\\"topic\\\" changed, which takes a restart") ||
        !strstr(err, "\"level\":\"debug\"")) {
        hx_proc_dump(&p, "SIGHUP");
        fail_msg("the log does not show the reload (JSON lines at debug level, the topic kept)");
    }
    /* before SIGHUP: text lines */
    assert_true(strstr(err, " outbox-relay info: ") != NULL &&
                strstr(err, " outbox-relay info: ") < hup);
    free(err);
    drop_slot(conn, "c_hup");
    PQfinish(conn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_file_rejected),
        cmocka_unit_test(test_config_file_env_cli_run),
        cmocka_unit_test(test_print_config),
        cmocka_unit_test(test_sighup_rereads_config),
        cmocka_unit_test(test_unknown_option),
        cmocka_unit_test(test_malformed_start_lsn),
        cmocka_unit_test(test_unknown_kafka_property),
        cmocka_unit_test(test_unknown_format),
        cmocka_unit_test(test_wal_level_not_logical),
        cmocka_unit_test(test_slot_missing),
        cmocka_unit_test(test_slot_other_plugin),
        cmocka_unit_test(test_publication_missing),
        cmocka_unit_test(test_publication_not_covering_table),
        cmocka_unit_test(test_outbox_table_missing),
        cmocka_unit_test(test_outbox_table_lacks_column),
        cmocka_unit_test(test_unreachable_database),
        cmocka_unit_test(test_help_matches_readme),
    };
    return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
