#include "tests/harness/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

extern char **environ;

#define MAX_CHILDREN 64
#define MAX_CLUSTERS 8
#define PGTMP_TIMEOUT_MS 180000

enum child_kind { CHILD_NONE, CHILD_RELAY, CHILD_BROKER };

/*
 * The registry lives in static storage so the signal handler can walk it
 * without allocating.  A pid of 0 marks a free slot.
 */
static struct {
    enum child_kind kind;
    pid_t pid;
    int stdin_fd; /* brokers: closing it makes them exit */
} children[MAX_CHILDREN];

static struct {
    bool used;
    char dir[512];
} clusters[MAX_CLUSTERS];

static char tmpdir[256];
static bool tmpdir_owned; /* made by us with mkdtemp: removed at cleanup */
static char run_id[64];
static char root[256] = ".";
static char pgtmp_path[300];
static char pidfile[300];
static bool initialized;
static volatile sig_atomic_t cleaning;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
    va_list ap;
    fputs("harness: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int64_t hx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hx_sleep_ms(int ms)
{
    int64_t deadline = hx_now_ms() + ms;
    int64_t left;

    while ((left = deadline - hx_now_ms()) > 0)
        poll(NULL, 0, (int)left);
}

const char *hx_tmpdir(void)
{
    return tmpdir;
}

const char *hx_run_id(void)
{
    return run_id;
}

/* ---- registry and cleanup --------------------------------------------------- */

static void register_child(enum child_kind kind, pid_t pid, int stdin_fd)
{
    FILE *f;

    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i].pid == 0) {
            children[i].stdin_fd = stdin_fd;
            children[i].kind = kind;
            children[i].pid = pid;
            break;
        }
    }
    /* scripts/run-integration kills what is listed here if we die hard */
    f = fopen(pidfile, "a");
    if (f) {
        fprintf(f, "%d\n", (int)pid);
        fclose(f);
    }
}

static void unregister_child(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].pid == pid)
            children[i].pid = 0;
}

static void register_cluster(const char *dir)
{
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        if (!clusters[i].used) {
            snprintf(clusters[i].dir, sizeof(clusters[i].dir), "%s", dir);
            clusters[i].used = true;
            return;
        }
    }
}

static void unregister_cluster(const char *dir)
{
    for (int i = 0; i < MAX_CLUSTERS; i++)
        if (clusters[i].used && strcmp(clusters[i].dir, dir) == 0)
            clusters[i].used = false;
}

/* Async-signal-safe: fork, execve and waitpid only (bounded by pgtmp's own timeouts). */
static void run_pgtmp_stop(const char *dir)
{
    char *argv[] = {"bash", pgtmp_path, "stop", (char *)dir, NULL};
    pid_t pid = fork();
    int st;

    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execve("/bin/bash", argv, environ);
        _exit(127);
    }
    if (pid > 0)
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
}

/* Async-signal-safe part of the cleanup: kill children, stop clusters. */
static void cleanup_now(bool gentle)
{
    int st;

    for (int i = 0; i < MAX_CHILDREN; i++) {
        pid_t pid = children[i].pid;
        if (pid == 0)
            continue;
        if (children[i].kind == CHILD_BROKER && children[i].stdin_fd >= 0) {
            close(children[i].stdin_fd);
            children[i].stdin_fd = -1;
        }
        if (children[i].kind == CHILD_RELAY)
            kill(-pid, SIGKILL);
        if (gentle && children[i].kind == CHILD_BROKER) {
            /* a broker leaves on EOF; give it a moment before SIGKILL */
            for (int j = 0; j < 200 && waitpid(pid, &st, WNOHANG) == 0; j++)
                poll(NULL, 0, 10);
        }
        kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        children[i].pid = 0;
    }
    for (int i = 0; i < MAX_CLUSTERS; i++) {
        if (clusters[i].used) {
            run_pgtmp_stop(clusters[i].dir);
            clusters[i].used = false;
        }
    }
}

static void remove_tree(const char *dir)
{
    char *argv[] = {"rm", "-rf", (char *)dir, NULL};
    pid_t pid;
    int st;

    if (posix_spawnp(&pid, "rm", NULL, NULL, argv, environ) == 0)
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
}

void hx_cleanup(void)
{
    if (!initialized || cleaning)
        return;
    cleaning = 1;
    cleanup_now(true);
    if (tmpdir_owned && tmpdir[0]) {
        remove_tree(tmpdir);
        tmpdir_owned = false;
    }
    cleaning = 0;
}

static void on_fatal_signal(int sig)
{
    if (!cleaning) {
        cleaning = 1;
        cleanup_now(false);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void at_exit(void)
{
    hx_cleanup();
}

int hx_init(void)
{
    const char *env;
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGABRT};
    struct sigaction sa;
    char exe[256] = "itest";

    if (initialized)
        return 0;
    if ((env = getenv("OBX_ROOT")) && *env)
        snprintf(root, sizeof(root), "%s", env);
    snprintf(pgtmp_path, sizeof(pgtmp_path), "%s/scripts/pgtmp", root);
    snprintf(run_id, sizeof(run_id), "r%lx%x", (unsigned long)time(NULL), (unsigned)getpid());

    {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
            exe[n] = '\0';
            memmove(exe, strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe,
                    strlen(strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe) + 1);
        }
    }
    if ((env = getenv("OBX_TEST_TMP")) && *env) {
        snprintf(tmpdir, sizeof(tmpdir), "%s/%s.%d", env, exe, (int)getpid());
        if (mkdir(tmpdir, 0755) != 0 && errno != EEXIST) {
            say("cannot create \"%s\": %s", tmpdir, strerror(errno));
            return -1;
        }
        tmpdir_owned = false; /* the runner removes OBX_TEST_TMP */
    } else {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/obx-itest.XXXXXX");
        if (!mkdtemp(tmpdir)) {
            say("cannot create a temporary directory: %s", strerror(errno));
            return -1;
        }
        tmpdir_owned = true;
    }
    /* the cluster runs as the postgres user, which must reach its directory */
    chmod(tmpdir, 0755);
    snprintf(pidfile, sizeof(pidfile), "%s/pids", tmpdir);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < MAX_CHILDREN; i++)
        children[i].stdin_fd = -1;
    atexit(at_exit);
    initialized = true;
    return 0;
}

/* Reap pid within timeout_ms; SIGKILL it after that.  Returns the wait status or -1. */
static int wait_bounded(pid_t pid, int timeout_ms, bool *timed_out)
{
    int64_t deadline = hx_now_ms() + timeout_ms;
    int st;
    pid_t r;

    *timed_out = false;
    for (;;) {
        r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return -1;
        if (hx_now_ms() >= deadline)
            break;
        poll(NULL, 0, 10);
    }
    *timed_out = true;
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    return r == pid ? st : -1;
}

static int status_code(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

/* Run argv with extra environment entries (NULL-terminated), bounded in time. */
static int run_cmd(char *const argv[], char *const extra_env[], int timeout_ms)
{
    size_t nenv = 0, nextra = 0;
    char **envp;
    pid_t pid;
    bool timed_out;
    int st, rc;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;

    while (environ[nenv])
        nenv++;
    while (extra_env && extra_env[nextra])
        nextra++;
    envp = calloc(nenv + nextra + 1, sizeof(*envp));
    if (!envp)
        return -1;
    memcpy(envp, environ, nenv * sizeof(*envp));
    for (size_t i = 0; i < nextra; i++)
        envp[nenv + i] = extra_env[i];
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    /* stdout would mix into the TAP stream; errors still reach stderr */
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(envp);
    if (rc != 0) {
        say("cannot run %s: %s", argv[0], strerror(rc));
        return -1;
    }
    st = wait_bounded(pid, timeout_ms, &timed_out);
    if (timed_out) {
        say("%s %s timed out", argv[0], argv[1] ? argv[1] : "");
        return -1;
    }
    return st < 0 ? -1 : status_code(st);
}

/* ---- PostgreSQL ------------------------------------------------------------- */

static int read_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return -1;
    n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return 0;
}

int hx_pg_start(hx_pg *pg, const char *name, const char *extra_conf, bool with_schema)
{
    char port[32];
    char confenv[1024];
    const char *major = getenv("OBX_PGVERSION");
    char *argv[] = {"bash", pgtmp_path, "start", pg->dir, major && *major ? (char *)major : NULL,
                    NULL};
    char *env[] = {confenv, NULL};
    int rc;

    memset(pg, 0, sizeof(*pg));
    if (!initialized && hx_init() != 0)
        return -1;
    snprintf(pg->dir, sizeof(pg->dir), "%s/pg-%s", tmpdir, name);
    snprintf(confenv, sizeof(confenv), "PGTMP_CONF=%s", extra_conf ? extra_conf : "");
    /* registered first: a start killed half-way must still be stopped */
    register_cluster(pg->dir);
    rc = run_cmd(argv, env, PGTMP_TIMEOUT_MS);
    if (rc != 0) {
        say("scripts/pgtmp start \"%s\" failed (%d)", pg->dir, rc);
        hx_pg_stop(pg);
        return -1;
    }
    pg->running = true;
    {
        char path[600];
        snprintf(path, sizeof(path), "%s/port", pg->dir);
        if (read_file(path, port, sizeof(port)) != 0 || (pg->port = atoi(port)) <= 0) {
            say("no port in \"%s\"", path);
            hx_pg_stop(pg);
            return -1;
        }
    }
    hx_pg_conninfo(pg, "postgres", pg->conninfo, sizeof(pg->conninfo));
    if (with_schema) {
        PGconn *conn = hx_connect(pg->conninfo);
        int lrc = conn ? hx_load_schema(conn) : -1;
        PQfinish(conn);
        if (lrc != 0) {
            hx_pg_stop(pg);
            return -1;
        }
    }
    return 0;
}

void hx_pg_stop(hx_pg *pg)
{
    char *argv[] = {"bash", pgtmp_path, "stop", pg->dir, NULL};

    if (!pg->dir[0])
        return;
    if (run_cmd(argv, NULL, PGTMP_TIMEOUT_MS) != 0)
        say("scripts/pgtmp stop \"%s\" failed", pg->dir);
    unregister_cluster(pg->dir);
    pg->running = false;
    pg->dir[0] = '\0';
}

int hx_pg_standby(hx_pg *standby, const hx_pg *primary, const char *name)
{
    char port[32], path[600];
    char *argv[] = {"bash", pgtmp_path, "standby", (char *)primary->dir, standby->dir, NULL};

    memset(standby, 0, sizeof(*standby));
    snprintf(standby->dir, sizeof(standby->dir), "%s/pg-%s", tmpdir, name);
    register_cluster(standby->dir);
    if (run_cmd(argv, NULL, PGTMP_TIMEOUT_MS) != 0) {
        say("scripts/pgtmp standby \"%s\" failed", standby->dir);
        hx_pg_stop(standby);
        return -1;
    }
    standby->running = true;
    snprintf(path, sizeof(path), "%s/port", standby->dir);
    if (read_file(path, port, sizeof(port)) != 0 || (standby->port = atoi(port)) <= 0) {
        say("no port in \"%s\"", path);
        hx_pg_stop(standby);
        return -1;
    }
    hx_pg_conninfo(standby, "postgres", standby->conninfo, sizeof(standby->conninfo));
    return 0;
}

int hx_pg_kill9(hx_pg *pg)
{
    char path[600], buf[64];
    pid_t pid;

    snprintf(path, sizeof(path), "%s/data/postmaster.pid", pg->dir);
    if (read_file(path, buf, sizeof(buf)) != 0 || (pid = (pid_t)atoi(buf)) <= 0) {
        say("no postmaster pid in \"%s\"", path);
        return -1;
    }
    /* the postmaster leads its own process group (pg_ctl starts it with
     * setsid): the whole server dies at once, as in a machine crash */
    if (kill(-pid, SIGKILL) != 0 && kill(pid, SIGKILL) != 0) {
        say("cannot kill postmaster %d: %s", (int)pid, strerror(errno));
        return -1;
    }
    for (int i = 0; i < 100 && kill(pid, 0) == 0; i++)
        hx_sleep_ms(50);
    pg->running = false;
    return 0;
}

int hx_pg_ctl(const hx_pg *pg, const char *action)
{
    char pgbin[600], path[600], cmd[2048];
    int rc;

    snprintf(path, sizeof(path), "%s/pgbin", pg->dir);
    if (read_file(path, pgbin, sizeof(pgbin)) != 0) {
        say("no \"%s\": not a cluster of scripts/pgtmp", path);
        return -1;
    }
    pgbin[strcspn(pgbin, "\n")] = '\0';
    /* start and restart name the port and the log file again (restart
     * would reuse the last start's options, but not after a crash) */
    snprintf(cmd, sizeof(cmd),
             "%s '%s/pg_ctl' -D '%s/data' -w -t 60 -o '-p %d' -l '%s/data/server.log' %s "
             ">/dev/null 2>&1",
             getuid() == 0 ? "runuser -u postgres --" : "", pgbin, pg->dir, pg->port, pg->dir,
             action);
    rc = system(cmd);
    if (rc != 0) {
        say("pg_ctl %s failed (%d)", action, rc);
        return -1;
    }
    return 0;
}

int hx_pg_version(const hx_pg *pg)
{
    PGconn *c = hx_connect(pg->conninfo);
    int v = c ? PQserverVersion(c) : -1;
    PQfinish(c);
    return v;
}

void hx_pg_conninfo(const hx_pg *pg, const char *dbname, char *buf, size_t len)
{
    snprintf(buf, len, "host=127.0.0.1 port=%d user=postgres dbname=%s connect_timeout=10",
             pg->port, dbname);
}

static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *hx_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);

    if (PQstatus(conn) != CONNECTION_OK) {
        say("cannot connect: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, quiet_notices, NULL);
    return conn;
}

static int exec_str(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType s = PQresultStatus(res);
    int rc = 0;

    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        say("sql failed: %s (%.200s)", PQresultErrorMessage(res), sql);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static char *vformat(const char *fmt, va_list ap)
{
    char *s = NULL;

    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

int hx_exec(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    char *sql;
    int rc;

    va_start(ap, fmt);
    sql = vformat(fmt, ap);
    va_end(ap);
    if (!sql)
        return -1;
    rc = exec_str(conn, sql);
    free(sql);
    return rc;
}

int hx_query1(PGconn *conn, char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    char *sql;
    PGresult *res;
    int rc;

    va_start(ap, fmt);
    sql = vformat(fmt, ap);
    va_end(ap);
    if (!sql)
        return -1;
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        say("query failed: %s (%.200s)", PQresultErrorMessage(res), sql);
        rc = -1;
    } else if (PQntuples(res) == 0 || PQnfields(res) == 0) {
        rc = 0;
    } else {
        snprintf(buf, len, "%s", PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
        rc = 1;
    }
    PQclear(res);
    free(sql);
    return rc;
}

int hx_load_schema(PGconn *conn)
{
    char path[600];
    FILE *f;
    char *sql;
    long n;
    int rc;

    snprintf(path, sizeof(path), "%s/schema/outbox.sql", root);
    f = fopen(path, "r");
    if (!f) {
        say("cannot open \"%s\": %s", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    sql = malloc((size_t)n + 1);
    if (!sql || fread(sql, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(sql);
        return -1;
    }
    sql[n] = '\0';
    fclose(f);
    rc = exec_str(conn, sql);
    free(sql);
    return rc;
}

int hx_pg_create_db(const hx_pg *pg, const char *dbname, bool with_schema)
{
    char ci[256];
    PGconn *conn = hx_connect(pg->conninfo);
    int rc;

    if (!conn)
        return -1;
    rc = hx_exec(conn, "CREATE DATABASE \"%s\"", dbname);
    PQfinish(conn);
    if (rc != 0 || !with_schema)
        return rc;
    hx_pg_conninfo(pg, dbname, ci, sizeof(ci));
    conn = hx_connect(ci);
    rc = conn ? hx_load_schema(conn) : -1;
    PQfinish(conn);
    return rc;
}

int hx_lsn_parse(const char *s, uint64_t *lsn)
{
    unsigned int hi, lo;
    int n = 0;

    if (!s || sscanf(s, "%X/%X%n", &hi, &lo, &n) != 2 || s[n] != '\0')
        return -1;
    *lsn = ((uint64_t)hi << 32) | lo;
    return 0;
}

const char *hx_lsn_format(uint64_t lsn, char *buf, size_t len)
{
    snprintf(buf, len, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
    return buf;
}

int hx_current_lsn(PGconn *conn, bool insert, uint64_t *lsn)
{
    char buf[64];

    if (hx_query1(conn, buf, sizeof(buf), "SELECT %s()",
                  insert ? "pg_current_wal_insert_lsn" : "pg_current_wal_lsn") != 1)
        return -1;
    return hx_lsn_parse(buf, lsn);
}

int hx_slot_confirmed(PGconn *conn, const char *slot, uint64_t *lsn)
{
    const char *params[1] = {slot};
    PGresult *res = PQexecParams(
        conn, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", 1, NULL,
        params, NULL, NULL, 0);
    int rc;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        say("slot query failed: %s", PQresultErrorMessage(res));
        rc = -1;
    } else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        rc = 0;
    } else {
        rc = hx_lsn_parse(PQgetvalue(res, 0, 0), lsn) == 0 ? 1 : -1;
    }
    PQclear(res);
    return rc;
}

bool hx_wait_confirmed(PGconn *conn, const char *slot, uint64_t lsn, int timeout_ms)
{
    int64_t deadline = hx_now_ms() + timeout_ms;
    uint64_t c = 0;
    char b1[32], b2[32];

    while (hx_now_ms() < deadline) {
        if (hx_slot_confirmed(conn, slot, &c) == 1 && c >= lsn)
            return true;
        hx_sleep_ms(100);
    }
    say("slot %s confirmed %s, wanted %s", slot, hx_lsn_format(c, b1, sizeof(b1)),
        hx_lsn_format(lsn, b2, sizeof(b2)));
    return false;
}

int hx_insert_rows(PGconn *conn, const char *agg_type, int from, int to, int tx_size)
{
    for (int i = from; i < to; i += tx_size) {
        int end = i + tx_size < to ? i + tx_size : to;
        if (hx_exec(conn,
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                    " SELECT '%s', 'agg-' || (n %% 7), 'Tested',"
                    " jsonb_build_object('n', n) FROM generate_series(%d, %d) n",
                    agg_type, i, end - 1) != 0)
            return -1;
    }
    return 0;
}

/* ---- broker ----------------------------------------------------------------- */

bool hx_broker_is_external(void)
{
    const char *env = getenv("KAFKA_BROKERS");
    return env && *env;
}

/* Read one line from the broker within timeout_ms into line.  0 or -1. */
static int broker_readline(hx_broker *b, char *line, size_t len, int timeout_ms)
{
    int64_t deadline = hx_now_ms() + timeout_ms;

    for (;;) {
        char *nl = memchr(b->rbuf, '\n', b->rlen);
        struct pollfd pfd = {.fd = b->from_fd, .events = POLLIN};
        int64_t left;
        ssize_t n;

        if (nl) {
            size_t l = (size_t)(nl - b->rbuf);
            snprintf(line, len, "%.*s", (int)l, b->rbuf);
            memmove(b->rbuf, nl + 1, b->rlen - l - 1);
            b->rlen -= l + 1;
            return 0;
        }
        if (b->rlen == sizeof(b->rbuf)) {
            say("broker line too long");
            return -1;
        }
        left = deadline - hx_now_ms();
        if (left <= 0) {
            say("no reply from the mock broker in time");
            return -1;
        }
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            return -1;
        if (!(pfd.revents & (POLLIN | POLLHUP)))
            continue;
        n = read(b->from_fd, b->rbuf + b->rlen, sizeof(b->rbuf) - b->rlen);
        if (n <= 0) {
            say("the mock broker went away");
            return -1;
        }
        b->rlen += (size_t)n;
    }
}

int hx_broker_start(hx_broker *b, int n)
{
    const char *env = getenv("KAFKA_BROKERS");
    char path[600], nbuf[16];
    int in[2], out[2];
    pid_t pid;

    memset(b, 0, sizeof(*b));
    b->to_fd = b->from_fd = -1;
    if (!initialized && hx_init() != 0)
        return -1;
    if (env && *env) {
        snprintf(b->bootstraps, sizeof(b->bootstraps), "%s", env);
        b->external = true;
        return 0;
    }
    env = getenv("OBX_MOCKBROKER");
    snprintf(path, sizeof(path), "%s", env && *env ? env : "build/mockbroker");
    snprintf(nbuf, sizeof(nbuf), "%d", n);
    if (access(path, X_OK) != 0) {
        say("no mock broker at \"%s\" (make build/mockbroker)", path);
        return -1;
    }
    if (pipe2(in, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        say("fork: %s", strerror(errno));
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return -1;
    }
    if (pid == 0) {
        char *argv[] = {path, "-n", nbuf, NULL};
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv(path, argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    b->pid = pid;
    b->to_fd = in[1];
    b->from_fd = out[0];
    register_child(CHILD_BROKER, pid, b->to_fd);
    if (broker_readline(b, b->bootstraps, sizeof(b->bootstraps), 15000) != 0 ||
        !strchr(b->bootstraps, ':')) {
        say("the mock broker printed no bootstrap list");
        hx_broker_stop(b);
        return -1;
    }
    return 0;
}

int hx_broker_cmd(hx_broker *b, const char *fmt, ...)
{
    char cmd[512], reply[512];
    va_list ap;
    int n;

    if (b->external || b->pid <= 0) {
        say("broker commands need the mock broker");
        return -1;
    }
    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(cmd) - 1)
        return -1;
    cmd[n++] = '\n';
    if (write(b->to_fd, cmd, (size_t)n) != n) {
        say("cannot write to the mock broker: %s", strerror(errno));
        return -1;
    }
    if (broker_readline(b, reply, sizeof(reply), 10000) != 0)
        return -1;
    if (strcmp(reply, "ok") != 0) {
        say("mock broker: %.*s -> %s", n - 1, cmd, reply);
        return -1;
    }
    return 0;
}

void hx_broker_stop(hx_broker *b)
{
    bool timed_out;

    if (b->pid > 0) {
        /* closing stdin is the broker's way out; SIGKILL if it lingers */
        if (b->to_fd >= 0)
            close(b->to_fd);
        for (int i = 0; i < MAX_CHILDREN; i++)
            if (children[i].pid == b->pid)
                children[i].stdin_fd = -1;
        wait_bounded(b->pid, 5000, &timed_out);
        unregister_child(b->pid);
        b->pid = 0;
        b->to_fd = -1;
    }
    if (b->from_fd >= 0)
        close(b->from_fd);
    b->from_fd = -1;
}

/* ---- relay ------------------------------------------------------------------ */

int hx_relay_start(hx_proc *p, const char *tag, const char *const *args)
{
    const char *env = getenv("OBX_RELAY");
    char path[600];
    const char *argv[128];
    size_t n = 0;
    pid_t pid;

    memset(p, 0, sizeof(*p));
    if (!initialized && hx_init() != 0)
        return -1;
    snprintf(path, sizeof(path), "%s", env && *env ? env : "./outbox-relay");
    if (access(path, X_OK) != 0) {
        say("no relay binary at \"%s\" (make outbox-relay)", path);
        return -1;
    }
    argv[n++] = path;
    for (; args && *args && n < 127; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    snprintf(p->errpath, sizeof(p->errpath), "%s/%s.stderr", tmpdir, tag);
    snprintf(p->outpath, sizeof(p->outpath), "%s/%s.stdout", tmpdir, tag);

    pid = fork();
    if (pid < 0) {
        say("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        int err = open(p->errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int out = open(p->outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (devnull < 0 || err < 0 || out < 0)
            _exit(126);
        dup2(devnull, 0);
        dup2(out, 1);
        dup2(err, 2);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    setpgid(pid, pid); /* both sides, so a signal right after fork reaches the group */
    p->pid = pid;
    register_child(CHILD_RELAY, pid, -1);
    return 0;
}

int hx_proc_signal(hx_proc *p, int sig)
{
    if (p->pid <= 0 || p->exited)
        return -1;
    return kill(-p->pid, sig);
}

bool hx_proc_running(hx_proc *p)
{
    int st;

    if (p->pid <= 0 || p->exited)
        return false;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->exited = true;
        p->status = status_code(st);
        kill(-p->pid, SIGKILL); /* anything it left in its group */
        unregister_child(p->pid);
        return false;
    }
    return true;
}

int hx_proc_wait(hx_proc *p, int timeout_ms)
{
    bool timed_out;
    int st;

    if (p->pid <= 0)
        return -1;
    if (p->exited)
        return p->status;
    st = wait_bounded(p->pid, timeout_ms, &timed_out);
    kill(-p->pid, SIGKILL);
    unregister_child(p->pid);
    p->exited = true;
    p->status = (timed_out || st < 0) ? -1 : status_code(st);
    if (timed_out)
        say("process %d did not exit within %d ms: killed", (int)p->pid, timeout_ms);
    return p->status;
}

char *hx_proc_stderr(const hx_proc *p)
{
    FILE *f = fopen(p->errpath, "r");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;

    if (!m) {
        if (f)
            fclose(f);
        return strdup("");
    }
    while (f && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    if (f)
        fclose(f);
    fclose(m);
    return buf ? buf : strdup("");
}

void hx_proc_dump(const hx_proc *p, const char *why)
{
    char *s = hx_proc_stderr(p);
    size_t len = s ? strlen(s) : 0;
    const char *start = s;
    int lines = 0;

    for (size_t i = len; i > 0; i--) {
        if (s[i - 1] == '\n' && ++lines > 40) {
            start = s + i;
            break;
        }
    }
    fprintf(stderr, "--- relay stderr (%s), %s, last lines:\n%s---\n", p->errpath, why,
            start ? start : "");
    free(s);
}

/* ---- consumer --------------------------------------------------------------- */

static char *dup_bytes(const void *p, size_t len)
{
    char *s;

    if (!p)
        return NULL;
    s = malloc(len + 1);
    if (!s)
        return NULL;
    memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

static int add_record(hx_records *out, const rd_kafka_message_t *m)
{
    hx_record *r;
    rd_kafka_headers_t *hdrs = NULL;

    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 1024;
        hx_record *v = realloc(out->v, cap * sizeof(*v));
        if (!v)
            return -1;
        out->v = v;
        out->cap = cap;
    }
    r = &out->v[out->n];
    memset(r, 0, sizeof(*r));
    r->topic = strdup(rd_kafka_topic_name(m->rkt));
    r->partition = m->partition;
    r->offset = m->offset;
    r->key = dup_bytes(m->key, m->key_len);
    r->key_len = m->key_len;
    r->value = dup_bytes(m->payload, m->len);
    r->value_len = m->len;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        size_t cnt = rd_kafka_header_cnt(hdrs);
        r->headers = calloc(cnt ? cnt : 1, sizeof(*r->headers));
        for (size_t i = 0; r->headers && i < cnt; i++) {
            const char *name;
            const void *val;
            size_t vlen;
            if (rd_kafka_header_get_all(hdrs, i, &name, &val, &vlen) != RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            r->headers[i].name = strdup(name);
            r->headers[i].value = dup_bytes(val, vlen);
            r->headers[i].len = vlen;
            r->nheaders++;
        }
    }
    out->n++;
    return 0;
}

struct part_state {
    char *topic;
    int32_t partition;
    bool eof;
};

/* Assign every partition of every topic that exists, from the beginning. */
static int assign_all(rd_kafka_t *rk, const char *const *topics, size_t ntopics,
                      struct part_state **parts, size_t *nparts, int timeout_ms)
{
    int64_t deadline = hx_now_ms() + timeout_ms;
    rd_kafka_topic_partition_list_t *list = NULL;

    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        size_t found = 0;
        rd_kafka_resp_err_t err;

        list = rd_kafka_topic_partition_list_new(16);
        *nparts = 0;
        free(*parts);
        *parts = NULL;
        err = rd_kafka_metadata(rk, 1, NULL, &md, 5000);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            for (size_t t = 0; t < ntopics; t++) {
                for (int i = 0; i < md->topic_cnt; i++) {
                    const struct rd_kafka_metadata_topic *mt = &md->topics[i];
                    if (strcmp(mt->topic, topics[t]) != 0 || mt->err || mt->partition_cnt == 0)
                        continue;
                    found++;
                    for (int j = 0; j < mt->partition_cnt; j++)
                        rd_kafka_topic_partition_list_add(list, mt->topic, mt->partitions[j].id)
                            ->offset = RD_KAFKA_OFFSET_BEGINNING;
                }
            }
            rd_kafka_metadata_destroy(md);
        }
        if (found == ntopics)
            break;
        rd_kafka_topic_partition_list_destroy(list);
        list = NULL;
        if (hx_now_ms() >= deadline) {
            say("topics not found within %d ms (%zu of %zu)", timeout_ms, found, ntopics);
            return -1;
        }
        hx_sleep_ms(200);
    }
    *parts = calloc((size_t)list->cnt + 1, sizeof(**parts));
    if (!*parts) {
        rd_kafka_topic_partition_list_destroy(list);
        return -1;
    }
    for (int i = 0; i < list->cnt; i++) {
        (*parts)[i].topic = strdup(list->elems[i].topic);
        (*parts)[i].partition = list->elems[i].partition;
    }
    *nparts = (size_t)list->cnt;
    if (rd_kafka_assign(rk, list) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(list);
        return -1;
    }
    rd_kafka_topic_partition_list_destroy(list);
    return 0;
}

long hx_consume(const char *brokers, const char *const *topics, size_t ntopics, size_t want,
                int timeout_ms, hx_records *out)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    struct part_state *parts = NULL;
    size_t nparts = 0, got = 0;
    int64_t deadline = hx_now_ms() + timeout_ms;
    long rc = -1;
    static const char *const props[][2] = {
        {"group.id", "obx-itest-reader"}, /* required by the consumer; never joined */
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "earliest"},
        {"isolation.level", "read_committed"},
        {"topic.metadata.refresh.interval.ms", "1000"},
        {"log_level", "3"},
    };

    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK)
        goto conf_error;
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK)
            goto conf_error;
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    conf = NULL; /* owned by rk now, or freed by the failed rd_kafka_new */
    if (!rk) {
        say("cannot create a consumer: %s", errstr);
        goto out;
    }
    if (assign_all(rk, topics, ntopics, &parts, &nparts, timeout_ms) != 0)
        goto out;

    for (;;) {
        int64_t left = deadline - hx_now_ms();
        rd_kafka_message_t *m;
        bool all_eof = true;

        for (size_t i = 0; i < nparts; i++)
            all_eof = all_eof && parts[i].eof;
        if (got >= want && all_eof)
            break;
        if (left <= 0)
            break;
        m = rd_kafka_consumer_poll(rk, left > 500 ? 500 : (int)left);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF || m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            for (size_t i = 0; i < nparts; i++) {
                if (parts[i].partition == m->partition &&
                    strcmp(parts[i].topic, rd_kafka_topic_name(m->rkt)) == 0)
                    parts[i].eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
            }
        }
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (add_record(out, m) != 0) {
                rd_kafka_message_destroy(m);
                goto out;
            }
            got++;
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* transient consumer errors (broker down, ...) are retried by librdkafka */
            if (getenv("OBX_TEST_VERBOSE"))
                say("consumer: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    rc = (long)got;
    goto out;

conf_error:
    say("consumer configuration: %s", errstr);
out:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    for (size_t i = 0; i < nparts; i++)
        free(parts[i].topic);
    free(parts);
    return rc;
}

void hx_records_free(hx_records *r)
{
    for (size_t i = 0; i < r->n; i++) {
        hx_record *x = &r->v[i];
        free(x->topic);
        free(x->key);
        free(x->value);
        for (size_t h = 0; h < x->nheaders; h++) {
            free(x->headers[h].name);
            free(x->headers[h].value);
        }
        free(x->headers);
    }
    free(r->v);
    memset(r, 0, sizeof(*r));
}

const hx_header *hx_record_header(const hx_record *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return &r->headers[i];
    return NULL;
}

int hx_relay_run_to_end(PGconn *conn, const char *conninfo, const char *brokers, const char *tag,
                        const char *slot, const char *const *extra)
{
    const char *args[64];
    size_t n = 0;
    char endbuf[32], cbuf[32];
    uint64_t end, c = 0;
    hx_proc relay;
    int rc;

    if (hx_current_lsn(conn, true, &end) != 0)
        return -1;
    hx_lsn_format(end, endbuf, sizeof(endbuf));
    args[n++] = "run";
    args[n++] = "-d";
    args[n++] = conninfo;
    args[n++] = "-b";
    args[n++] = brokers;
    args[n++] = "--slot";
    args[n++] = slot;
    args[n++] = "--end-lsn";
    args[n++] = endbuf;
    for (; extra && *extra && n < sizeof(args) / sizeof(args[0]) - 1; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    if (hx_relay_start(&relay, tag, args) != 0)
        return -1;
    rc = hx_proc_wait(&relay, 60000);
    if (rc != 0) {
        hx_proc_dump(&relay, "relay did not reach --end-lsn cleanly");
        fprintf(stderr, "harness: relay %s exited %d\n", tag, rc);
        return -1;
    }
    if (hx_slot_confirmed(conn, slot, &c) != 1 || c < end) {
        fprintf(stderr, "harness: slot %s confirmed %s, wanted %s\n", slot,
                hx_lsn_format(c, cbuf, sizeof(cbuf)), endbuf);
        return -1;
    }
    return 0;
}
