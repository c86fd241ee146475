/*
 * harness — what integration tests need around the relay: a throwaway
 * PostgreSQL (scripts/pgtmp), SQL through libpq, the slot's confirmed LSN,
 * a Kafka-protocol broker (build/mockbroker, or $KAFKA_BROKERS), the relay
 * binary as a child process, and a consumer that reads back what the relay
 * published.
 *
 * Everything started here is registered and torn down by hx_cleanup(),
 * which runs from the tests' group teardown, at exit, and from a handler
 * for SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGABRT, so a test that fails or is
 * killed leaves no server behind.  Children also get PR_SET_PDEATHSIG, and
 * the mock broker exits on stdin EOF.
 *
 * Environment: OBX_TEST_TMP (where clusters and logs go; else a mkdtemp
 * directory), OBX_ROOT (repository root, default "."), OBX_RELAY (default
 * ./outbox-relay), OBX_MOCKBROKER (default build/mockbroker), KAFKA_BROKERS
 * (use that cluster instead of starting the mock broker), OBX_PGVERSION
 * (the PostgreSQL major version clusters run, 13 to 18; default: Debian's).
 *
 * Functions returning int return 0 on success and -1 on failure, after
 * printing the cause to stderr (prefixed "harness: ").
 */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libpq-fe.h>

#define HX_WUR __attribute__((warn_unused_result))

/* Register cleanup handlers and make the temporary directory.  Idempotent. */
int hx_init(void) HX_WUR;

/* Stop everything still running that the harness started.  Idempotent. */
void hx_cleanup(void);

/* The directory for this test binary's files (exists after hx_init). */
const char *hx_tmpdir(void);

/* A short id unique to this run, usable in topic and object names. */
const char *hx_run_id(void);

/* Monotonic milliseconds. */
int64_t hx_now_ms(void);

/* Sleep without a signal-interruptible loop: poll() with a timeout. */
void hx_sleep_ms(int ms);

/* ---- PostgreSQL ---------------------------------------------------------- */

typedef struct hx_pg {
    char dir[512];
    int port;
    char conninfo[256]; /* database "postgres", superuser "postgres" */
    bool running;
} hx_pg;

/*
 * Start a throwaway cluster named name under hx_tmpdir().  extra_conf, when
 * not NULL, is appended to postgresql.conf (e.g. "wal_level = replica").
 * with_schema loads schema/outbox.sql into database "postgres".
 */
int hx_pg_start(hx_pg *pg, const char *name, const char *extra_conf, bool with_schema) HX_WUR;
void hx_pg_stop(hx_pg *pg);

/*
 * Run the cluster's own pg_ctl (the build that started it) with action,
 * e.g. "-m fast stop", "start", "-m immediate stop", waiting for it (-w, at
 * most 60 s).  0 or -1.
 */
int hx_pg_ctl(const hx_pg *pg, const char *action) HX_WUR;

/*
 * A streaming standby of primary named name (scripts/pgtmp standby: physical
 * slot "standby"; from PostgreSQL 17 with slot synchronization and the
 * primary's synchronized_standby_slots).  Stopped by hx_pg_stop/cleanup.
 */
int hx_pg_standby(hx_pg *standby, const hx_pg *primary, const char *name) HX_WUR;

/* kill -9 the whole server (postmaster and its children).  0 or -1. */
int hx_pg_kill9(hx_pg *pg) HX_WUR;

/* The server's version number (e.g. 170010), or -1. */
int hx_pg_version(const hx_pg *pg);

/* Conninfo for another database of the cluster (static buffer per call site: copy it). */
void hx_pg_conninfo(const hx_pg *pg, const char *dbname, char *buf, size_t len);

/* CREATE DATABASE dbname and, when with_schema, load schema/outbox.sql into it. */
int hx_pg_create_db(const hx_pg *pg, const char *dbname, bool with_schema) HX_WUR;

/* Load schema/outbox.sql through conn. */
int hx_load_schema(PGconn *conn) HX_WUR;

/* Connect or return NULL (cause printed). */
PGconn *hx_connect(const char *conninfo);

/* Run SQL that returns no rows we need (several statements allowed). */
int hx_exec(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3))) HX_WUR;

/*
 * Run a query and copy the first column of its first row into buf ("" for
 * NULL).  Returns 1 when there was a row, 0 when none, -1 on error.
 */
int hx_query1(PGconn *conn, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* pg_current_wal_lsn() or pg_current_wal_insert_lsn() (insert = true). */
int hx_current_lsn(PGconn *conn, bool insert, uint64_t *lsn) HX_WUR;

/*
 * The slot's confirmed_flush_lsn.  Returns 1 with *lsn set, 0 when the slot
 * does not exist (or has no confirmed position), -1 on error.
 */
int hx_slot_confirmed(PGconn *conn, const char *slot, uint64_t *lsn);

/* Wait until the slot's confirmed position reaches lsn, polling every
 * 100 ms for at most timeout_ms.  false on timeout (what it saw and what it
 * wanted are logged). */
bool hx_wait_confirmed(PGconn *conn, const char *slot, uint64_t lsn, int timeout_ms);

/* Insert rows [from, to) of agg_type into public.outbox, tx_size rows per
 * transaction: aggregate ids agg-0..agg-6, type Tested, payload {"n": n}.
 * Returns 0, or -1 on the first failed transaction. */
int hx_insert_rows(PGconn *conn, const char *agg_type, int from, int to, int tx_size) HX_WUR;

/* Parse "X/Y" (0 or -1) and format into buf (at least 24 bytes). */
int hx_lsn_parse(const char *s, uint64_t *lsn);
const char *hx_lsn_format(uint64_t lsn, char *buf, size_t len);

/* ---- broker ---------------------------------------------------------------- */

typedef struct hx_broker {
    char bootstraps[1024];
    bool external; /* $KAFKA_BROKERS: no fault injection possible */
    pid_t pid;
    int to_fd;   /* the mock broker's stdin */
    int from_fd; /* its stdout */
    char rbuf[1024];
    size_t rlen;
} hx_broker;

/* Whether KAFKA_BROKERS points at a real cluster (fault tests skip then). */
bool hx_broker_is_external(void);

/* Start the mock broker with n brokers, or adopt $KAFKA_BROKERS. */
int hx_broker_start(hx_broker *b, int n) HX_WUR;

/*
 * Send one command ("down all", "up 1", "topic t 3", "err 0 6 3", ...) and
 * wait for its reply.  Returns 0 on "ok", -1 otherwise (or when external).
 */
int hx_broker_cmd(hx_broker *b, const char *fmt, ...) __attribute__((format(printf, 2, 3))) HX_WUR;

void hx_broker_stop(hx_broker *b);

/* ---- the relay ------------------------------------------------------------- */

typedef struct hx_proc {
    pid_t pid; /* also its process group id */
    char errpath[600];
    char outpath[600];
    bool exited;
    int status; /* exit code, or 128 + signal */
} hx_proc;

/*
 * Start the relay (OBX_RELAY) with args (NULL-terminated, without argv[0]),
 * in its own process group, stdin from /dev/null, stdout and stderr to
 * files under hx_tmpdir() named after tag.
 */
int hx_relay_start(hx_proc *p, const char *tag, const char *const *args) HX_WUR;

/*
 * Run the relay on slot ("run -d CONNINFO -b BROKERS --slot SLOT --end-lsn
 * <insert position now>" plus extra, NULL-terminated) until it stops by
 * itself, and check it exited 0 with the slot confirmed at or past that
 * position.  Returns 0, or -1 with the cause printed (and the relay's log).
 */
int hx_relay_run_to_end(PGconn *conn, const char *conninfo, const char *brokers, const char *tag,
                        const char *slot, const char *const *extra) HX_WUR;

/* Send sig to the relay's process group.  0 or -1. */
int hx_proc_signal(hx_proc *p, int sig);

/*
 * Wait up to timeout_ms for the process to exit.  Returns its exit code (or
 * 128 + signal).  On timeout it is killed with SIGKILL, reaped, and -1 is
 * returned.
 */
int hx_proc_wait(hx_proc *p, int timeout_ms);

/* Whether the process is still running (reaps it when it exited). */
bool hx_proc_running(hx_proc *p);

/* The captured stderr as a NUL-terminated malloc'd string ("" when empty). */
char *hx_proc_stderr(const hx_proc *p);

/* Print the last lines of the captured stderr to our stderr (for failures). */
void hx_proc_dump(const hx_proc *p, const char *why);

/* ---- consumer -------------------------------------------------------------- */

typedef struct hx_header {
    char *name;
    char *value; /* NUL-terminated copy; NULL for a null header */
    size_t len;
} hx_header;

typedef struct hx_record {
    char *topic;
    int32_t partition;
    int64_t offset;
    char *key; /* NUL-terminated copies; NULL when absent */
    size_t key_len;
    char *value;
    size_t value_len;
    hx_header *headers;
    size_t nheaders;
} hx_record;

typedef struct hx_records {
    hx_record *v;
    size_t n;
    size_t cap;
} hx_records;

/*
 * Read every record of the given topics from the beginning (all partitions
 * assigned, no consumer group).  Stops once at least want records were read
 * and every partition reached its end, or after timeout_ms.  Topics that do
 * not exist yet are waited for within the same timeout.  Appends to out;
 * returns the number of records read, or -1 on error.
 */
long hx_consume(const char *brokers, const char *const *topics, size_t ntopics, size_t want,
                int timeout_ms, hx_records *out);

void hx_records_free(hx_records *r);

/* The value of the first header called name, or NULL. */
const hx_header *hx_record_header(const hx_record *r, const char *name);

#endif
