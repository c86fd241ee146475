/*
 * workload — the chaos tests' writer: concurrent PostgreSQL sessions
 * inserting outbox rows, with an answer key kept in the same transactions.
 *
 *   workload -d CONNINFO -s SCENARIO [-c CLIENTS] [-T SECONDS] [-n ROWS]
 *            [-a AGGREGATES] [-r TXNS_PER_SECOND_PER_CLIENT] [-t AGGTYPE]
 *            [-p PAD_BYTES] [--setup]
 *
 * Each client runs transactions of 1, 10 or 100 rows (60/30/10 %); about
 * 10 % end in ROLLBACK, and a third of the larger ones roll back a
 * savepoint holding some of their rows.  Every row is one statement that
 *   - bumps the aggregate's counter in chaos_agg (a row lock held to the
 *     end of the transaction, so for one aggregate commit order = seq order),
 *   - inserts the outbox row with payload {"agg": A, "seq": S, "pad": ...},
 *   - records (id, agg, seq) in chaos_ledger.
 * The ledger is therefore exactly the set of committed events: the
 * verifier needs nothing from this program's own bookkeeping, which is
 * just as well, since a COMMIT cut by a server restart has no known outcome.
 * Aggregates are taken in ascending order within a transaction so clients
 * do not deadlock (a deadlock or serialization failure is retried anyway).
 *
 * --setup creates chaos_agg and chaos_ledger (idempotent) and the scenario's
 * counters, then exits.  Without it, the program writes until SECONDS pass,
 * ROWS rows were committed, or SIGTERM/SIGINT; a lost connection is
 * re-established with backoff until the deadline.  Last line on stdout:
 * "txns=N rows=N rolled_back_rows=N errors=N reconnects=N".
 * Exit 0, or 1 when no client could ever connect, 2 on usage errors.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define MAX_CLIENTS 64
#define MAX_TXN_ROWS 100

typedef struct {
    const char *conninfo, *scenario, *aggtype;
    int clients, aggs, pad;
    double seconds, rate;
    long max_rows;
    bool setup;
} options;

static options opt = {
    .aggtype = "chaos", .clients = 4, .aggs = 32, .pad = 16, .seconds = 10, .rate = 0};
static volatile sig_atomic_t interrupted;
static atomic_long n_txns, n_rows, n_rb_rows, n_errors, n_reconnects;
static atomic_int n_connected;
static int64_t deadline_ns;

static const char *row_sql =
    "WITH s AS (UPDATE chaos_agg SET seq = seq + 1 WHERE scenario = $1 AND agg = $2 "
    "RETURNING seq), "
    "o AS (INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) "
    "SELECT $3, $2::text, 'ChaosEvent', jsonb_build_object('agg', $2, 'seq', s.seq, 'pad', $4) "
    "FROM s RETURNING id, (payload->>'seq')::bigint AS seq) "
    "INSERT INTO chaos_ledger (scenario, id, agg, seq) SELECT $1, id, $2, seq FROM o";

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool should_stop(void)
{
    return interrupted || now_ns() >= deadline_ns ||
           (opt.max_rows > 0 && atomic_load(&n_rows) >= opt.max_rows);
}

/* xorshift64*: each client its own reproducible stream */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Run a command; 0 on success, else -1 with the SQLSTATE copied to state. */
static int run(PGconn *c, const char *sql, char *state, size_t len)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        snprintf(state, len, "%s", s ? s : "");
        rc = -1;
    }
    PQclear(r);
    return rc;
}

static PGconn *connect_client(void)
{
    char ci[1024];
    PGconn *c;
    PGresult *r;
    /* text scenario, int4 aggregate, text type, text pad */
    static const Oid types[4] = {25, 23, 25, 25};

    snprintf(ci, sizeof(ci), "%s connect_timeout=5 application_name=chaos_workload", opt.conninfo);
    c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    r = PQprepare(c, "row", row_sql, 4, types);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "workload: prepare: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        return NULL;
    }
    PQclear(r);
    return c;
}

/* Connect with capped backoff until it works or it is time to stop. */
static PGconn *reconnect(PGconn *old)
{
    long wait = 50;

    PQfinish(old);
    for (int attempt = 0; attempt < 10000 && !should_stop(); attempt++) {
        PGconn *c = connect_client();
        if (c) {
            atomic_fetch_add(&n_connected, 1);
            return c;
        }
        sleep_ms(wait);
        wait = wait * 2 > 1000 ? 1000 : wait * 2;
    }
    return NULL;
}

static int txn_size(uint64_t *s)
{
    unsigned p = (unsigned)(rnd(s) % 100);
    return p < 60 ? 1 : p < 90 ? 10 : MAX_TXN_ROWS;
}

static void *client(void *arg)
{
    int index = (int)(intptr_t)arg;
    uint64_t seed = 0x9e3779b97f4a7c15ULL * (uint64_t)(index + 1) ^ (uint64_t)now_ns();
    int aggs[MAX_TXN_ROWS];
    char aggbuf[16], pad[256], state[8];
    const char *params[4];
    PGconn *c = NULL;
    int64_t next_ns = now_ns();
    double interval_ns = opt.rate > 0 ? 1e9 / opt.rate : 0;

    memset(pad, 'x', sizeof(pad));
    pad[opt.pad < (int)sizeof(pad) ? opt.pad : (int)sizeof(pad) - 1] = '\0';
    params[0] = opt.scenario;
    params[1] = aggbuf;
    params[2] = opt.aggtype;
    params[3] = pad;

    c = reconnect(NULL);
    while (c && !should_stop()) {
        int n = txn_size(&seed);
        bool rollback = rnd(&seed) % 100 < 10;
        int sp_from = -1, sp_to = -1, done = 0;
        bool failed = false;

        for (int i = 0; i < n; i++)
            aggs[i] = (int)(rnd(&seed) % (uint64_t)opt.aggs);
        qsort(aggs, (size_t)n, sizeof(aggs[0]), cmp_int);
        if (n > 1 && rnd(&seed) % 3 == 0) {
            sp_from = (int)(rnd(&seed) % (uint64_t)n);
            sp_to = sp_from + (int)(rnd(&seed) % (uint64_t)(n - sp_from)); /* inclusive */
        }
        if (run(c, "BEGIN", state, sizeof(state)) != 0) {
            failed = true;
            goto end;
        }
        for (int i = 0; i < n; i++) {
            PGresult *r;
            if (i == sp_from && run(c, "SAVEPOINT chaos_sp", state, sizeof(state)) != 0) {
                failed = true;
                goto end;
            }
            snprintf(aggbuf, sizeof(aggbuf), "%d", aggs[i]);
            r = PQexecPrepared(c, "row", 4, params, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdTuples(r), "1") != 0) {
                const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                snprintf(state, sizeof(state), "%s", s ? s : "");
                if (PQresultStatus(r) == PGRES_COMMAND_OK)
                    fprintf(stderr,
                            "workload: a row statement inserted %s rows (no counter "
                            "for aggregate %d?)\n",
                            PQcmdTuples(r), aggs[i]);
                PQclear(r);
                failed = true;
                goto end;
            }
            PQclear(r);
            if (i == sp_to) {
                if (run(c, "ROLLBACK TO SAVEPOINT chaos_sp", state, sizeof(state)) != 0) {
                    failed = true;
                    goto end;
                }
                atomic_fetch_add(&n_rb_rows, sp_to - sp_from + 1);
            } else if (i < sp_from || i > sp_to) {
                done++;
            }
        }
        if (rollback) {
            if (run(c, "ROLLBACK", state, sizeof(state)) != 0)
                failed = true;
            else
                atomic_fetch_add(&n_rb_rows, done);
        } else if (run(c, "COMMIT", state, sizeof(state)) != 0) {
            failed = true;
        } else {
            atomic_fetch_add(&n_rows, done);
            atomic_fetch_add(&n_txns, 1);
        }
    end:
        if (failed) {
            atomic_fetch_add(&n_errors, 1);
            if (PQstatus(c) != CONNECTION_OK) {
                atomic_fetch_add(&n_reconnects, 1);
                c = reconnect(c);
                continue;
            }
            /* deadlock, serialization failure or the like: give the
             * transaction up (it committed nothing) and go on */
            if (run(c, "ROLLBACK", state, sizeof(state)) != 0 && PQstatus(c) != CONNECTION_OK) {
                atomic_fetch_add(&n_reconnects, 1);
                c = reconnect(c);
                continue;
            }
        }
        if (interval_ns > 0) {
            int64_t now = now_ns();
            next_ns += (int64_t)interval_ns;
            if (next_ns > now)
                sleep_ms((next_ns - now) / 1000000);
            else if (now - next_ns > 1000000000)
                next_ns = now; /* after an outage, do not burst to catch up */
        }
    }
    PQfinish(c);
    return NULL;
}

static int do_setup(void)
{
    PGconn *c = PQconnectdb(opt.conninfo);
    char sql[1024];
    PGresult *r;
    int rc = 0;

    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "workload: cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return 1;
    }
    snprintf(sql, sizeof(sql),
             "SET client_min_messages = warning; "
             "CREATE TABLE IF NOT EXISTS chaos_agg (scenario text NOT NULL, agg int NOT NULL, "
             "seq bigint NOT NULL DEFAULT 0, PRIMARY KEY (scenario, agg)); "
             "CREATE TABLE IF NOT EXISTS chaos_ledger (scenario text NOT NULL, id uuid PRIMARY "
             "KEY, agg int NOT NULL, seq bigint NOT NULL); "
             "CREATE INDEX IF NOT EXISTS chaos_ledger_scenario ON chaos_ledger (scenario); "
             "INSERT INTO chaos_agg (scenario, agg) SELECT '%s', g FROM generate_series(0, %d) g "
             "ON CONFLICT DO NOTHING",
             opt.scenario, opt.aggs - 1);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "workload: setup: %s", PQerrorMessage(c));
        rc = 1;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: workload -d CONNINFO -s SCENARIO [-c CLIENTS] [-T SECONDS] "
                    "[-n ROWS] [-a AGGREGATES] [-r TXN/S PER CLIENT] [-t AGGTYPE] "
                    "[-p PAD] [--setup]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"setup", no_argument, NULL, 'S'}, {NULL, 0, NULL, 0}};
    pthread_t th[MAX_CLIENTS];
    struct sigaction sa;
    int o;

    while ((o = getopt_long(argc, argv, "d:s:c:T:n:a:r:t:p:", longopts, NULL)) != -1) {
        switch (o) {
        case 'd':
            opt.conninfo = optarg;
            break;
        case 's':
            opt.scenario = optarg;
            break;
        case 'c':
            opt.clients = atoi(optarg);
            break;
        case 'T':
            opt.seconds = atof(optarg);
            break;
        case 'n':
            opt.max_rows = atol(optarg);
            break;
        case 'a':
            opt.aggs = atoi(optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 't':
            opt.aggtype = optarg;
            break;
        case 'p':
            opt.pad = atoi(optarg);
            break;
        case 'S':
            opt.setup = true;
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!opt.conninfo || !opt.scenario || optind != argc || opt.clients < 1 ||
        opt.clients > MAX_CLIENTS || opt.aggs < 1 || opt.seconds <= 0 || opt.pad < 0 ||
        strchr(opt.scenario, '\'')) {
        usage();
        return 2;
    }
    if (opt.setup)
        return do_setup();

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    deadline_ns = now_ns() + (int64_t)(opt.seconds * 1e9);
    for (int i = 0; i < opt.clients; i++)
        if (pthread_create(&th[i], NULL, client, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "workload: cannot start client %d\n", i);
            interrupted = 1;
            for (int j = 0; j < i; j++)
                pthread_join(th[j], NULL);
            return 1;
        }
    for (int i = 0; i < opt.clients; i++)
        pthread_join(th[i], NULL);
    printf("txns=%ld rows=%ld rolled_back_rows=%ld errors=%ld reconnects=%ld\n",
           atomic_load(&n_txns), atomic_load(&n_rows), atomic_load(&n_rb_rows),
           atomic_load(&n_errors), atomic_load(&n_reconnects));
    return atomic_load(&n_connected) > 0 ? 0 : 1;
}
