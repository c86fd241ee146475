/*
 * latency — commit-to-delivery latency of an outbox relay, measured from
 * outside it.
 *
 *   latency -d CONNINFO -b BROKERS -t TOPIC [-T TABLE] [-r RATE] [-s SECONDS]
 *           [-c CONNECTIONS] [-p PAYLOAD_BYTES] [-S SLOT] [-w DRAIN_SECONDS]
 *           [-W WARMUP_SECONDS] [-l LABEL] [-o RESULTS_FILE]
 *           [-X CONSUMER_PROP=VALUE]...
 *
 * A load generator and a consumer in one process, on one clock
 * (CLOCK_REALTIME, the clock PostgreSQL stamps commits with):
 *
 *  - generator: CONNECTIONS threads, each with its own connection and
 *    `synchronous_commit = on`, insert one outbox row per transaction into
 *    TABLE (default public.outbox) at a steady aggregate RATE for SECONDS,
 *    on an absolute schedule (a late insert is sent at once, not skipped;
 *    the worst schedule lag is reported so a generator that could not keep
 *    up is visible).  Each row's payload carries {"seq": N}.  The time the
 *    COMMIT returned to the client is recorded per seq.  The first
 *    WARMUP_SECONDS (default 2) of events are sent and must arrive but are
 *    left out of the percentiles: they pay for topic creation, metadata and
 *    the consumer's first fetch, which are not the steady state.
 *  - consumer: reads TOPIC from the beginning (use a fresh topic per run)
 *    and records, per seq, the time the message was handed to us, the
 *    message's Kafka timestamp (CreateTime: set by the relay's producer when
 *    it produced the message, millisecond resolution) and, when the value
 *    carries it, the envelope's source.commit_time (the server's commit
 *    timestamp, microseconds).
 *
 * What is measurable from outside the relay, and reported:
 *
 *  - e2e: COMMIT returned to the writer -> message received by a consumer.
 *    The same method for every relay (the polling baseline too).  It is
 *    commit -> visible to consumers: the broker's append, which the
 *    producer's acknowledgement also follows, plus the consumer's fetch
 *    delay.  The relay's own delivery report is not observable from here;
 *    the fetch delay is bounded by the consumer's fetch.wait.max.ms (1 ms
 *    by default here: the mock broker answers an empty fetch only when
 *    that wait expires, so a larger value adds up to that much).  It is
 *    therefore close to, not a strict bound of, commit -> acknowledgement:
 *    the ack leaves the broker at about the time the data becomes
 *    fetchable, and reaches the producer a loopback hop later.
 *  - commit_time -> received (relay only): from the server's commit
 *    timestamp, slightly earlier than the COMMIT returning.
 *  - commit -> CreateTime: how long until the relay called produce (decode,
 *    envelope, walsender); CreateTime -> received: linger, the broker round
 *    trip with acks=all, and the consumer's fetch.  Millisecond resolution.
 *  - with -S SLOT: after the last event was received, how long until the
 *    slot's confirmed_flush_lsn passed the latest source.commit_lsn the
 *    consumer saw (status updates confirming the slot after the
 *    acknowledgement); without envelopes, the WAL insert position taken
 *    after the last commit.
 *  - with -M HOST:PORT (the relay's --http address): commit -> delivery
 *    report as the relay itself measures it (server commit timestamp to
 *    the acknowledgement reaching the relay), from the difference of its
 *    outbox_relay_commit_to_ack_seconds histogram between the end of the
 *    warm-up and the end of the run.  The bucket bounds include 5 ms and
 *    25 ms, so the share of events acknowledged within each is exact;
 *    percentiles are interpolated linearly inside a bucket.
 *
 * Output: a human summary on stderr and one line on stdout (and appended to
 * RESULTS_FILE) of key=value pairs for scripts/bench.  Exit 0 when every
 * event arrived, 1 when some are missing, 2 on usage errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "decode/lsn.h"

#define MAX_CONNS 32
#define MAX_PROPS 32

typedef struct {
    const char *conninfo, *brokers, *topic, *table, *slot, *label, *out, *metrics;
    double rate, seconds, drain_seconds, warmup;
    int conns, payload_bytes;
    const char *props[MAX_PROPS][2];
    int nprops;
} options;

/* Per-event observations, indexed by seq; 0 = not seen. */
typedef struct {
    int64_t commit_ns; /* COMMIT returned to the generator */
    int64_t recv_ns;   /* first receipt by the consumer */
    int64_t srv_us;    /* envelope source.commit_time, µs since epoch */
    int64_t create_ms; /* Kafka message timestamp */
} event_obs;

static options opt;
static event_obs *obs;
static int64_t nevents, nwarm; /* events sent; the first nwarm are warm-up */
static atomic_long received, duplicates, unknown, gen_errors;
static atomic_long max_sched_lag_us;
static atomic_int gen_done;
static volatile sig_atomic_t interrupted;
static char last_lsn[64];
static uint64_t max_commit_lsn; /* the latest source.commit_lsn received (consumer thread) */

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until_ns(int64_t t)
{
    struct timespec ts = {.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR && !interrupted)
        ;
}

/* "2026-11-23T18:14:13.123999Z" -> µs since the epoch, or 0. */
static int64_t parse_rfc3339_us(const char *s)
{
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    int64_t us = 0;
    int digits = 0;

    if (!p)
        return 0;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 6)
                us = us * 10 + (*p - '0');
        for (; digits < 6; digits++)
            us *= 10;
    }
    if (*p != 'Z' && *p != '+' && *p != '-')
        return 0;
    /* offsets other than Z/+00:00 are not produced by the relay */
    return (int64_t)timegm(&tm) * 1000000 + us;
}

/* ---- generator ----------------------------------------------------------- */

typedef struct {
    int index;
    int64_t start_ns;
    char *note;
} gen_arg;

static void *generator(void *p)
{
    gen_arg *ga = p;
    PGconn *conn = PQconnectdb(opt.conninfo);
    PGresult *res;
    char sql[512], seqbuf[32], aggbuf[32];
    const char *params[3];
    double interval_ns = 1e9 / opt.rate;

    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "latency: generator %d: cannot connect: %s", ga->index,
                PQerrorMessage(conn));
        atomic_fetch_add(&gen_errors, 1);
        PQfinish(conn);
        return NULL;
    }
    res = PQexec(conn, "SET synchronous_commit = on");
    PQclear(res);
    snprintf(
        sql, sizeof(sql),
        "INSERT INTO %s (aggregatetype, aggregateid, type, payload) VALUES "
        "('order', $1, 'OrderPlaced', jsonb_build_object('seq', $2::bigint, 'note', $3::text))",
        opt.table);
    res = PQprepare(conn, "ins", sql, 3, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "latency: prepare: %s", PQerrorMessage(conn));
        atomic_fetch_add(&gen_errors, 1);
        PQclear(res);
        PQfinish(conn);
        return NULL;
    }
    PQclear(res);
    for (int64_t seq = ga->index; seq < nevents && !interrupted; seq += opt.conns) {
        int64_t due = ga->start_ns + (int64_t)((double)seq * interval_ns);
        int64_t t = now_ns();
        if (t < due)
            sleep_until_ns(due);
        else if ((t - due) / 1000 > atomic_load(&max_sched_lag_us))
            atomic_store(&max_sched_lag_us, (long)((t - due) / 1000));
        snprintf(seqbuf, sizeof(seqbuf), "%" PRId64, seq);
        snprintf(aggbuf, sizeof(aggbuf), "%" PRId64, seq % 500);
        params[0] = aggbuf;
        params[1] = seqbuf;
        params[2] = ga->note;
        res = PQexecPrepared(conn, "ins", 3, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "latency: insert %" PRId64 ": %s", seq, PQerrorMessage(conn));
            atomic_fetch_add(&gen_errors, 1);
        } else {
            obs[seq].commit_ns = now_ns();
        }
        PQclear(res);
    }
    PQfinish(conn);
    return NULL;
}

/* ---- consumer ------------------------------------------------------------ */

static rd_kafka_t *consumer_new(void)
{
    char errstr[512], group[128];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *defaults[][2] = {
        {"bootstrap.servers", opt.brokers},
        {"group.id", group},
        {"enable.auto.commit", "false"},
        {"fetch.wait.max.ms", "1"}, /* bounds the fetch delay added to e2e */
        {"fetch.error.backoff.ms", "1"},
        {"allow.auto.create.topics", "true"},
        {"log_level", "3"},
    };

    snprintf(group, sizeof(group), "latency-%d-%ld", (int)getpid(), (long)time(NULL));
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], errstr, sizeof(errstr))) {
            fprintf(stderr, "latency: %s: %s\n", defaults[i][0], errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    for (int i = 0; i < opt.nprops; i++)
        if (rd_kafka_conf_set(conf, opt.props[i][0], opt.props[i][1], errstr, sizeof(errstr))) {
            fprintf(stderr, "latency: -X %s: %s\n", opt.props[i][0], errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk)
        fprintf(stderr, "latency: consumer: %s\n", errstr);
    return rk;
}

/*
 * Assign every partition of the topic from the beginning, waiting (up to
 * 30 s) for the topic to exist: the relay may create it with its first
 * message.  No group rebalance, so nothing is missed or delayed by one.
 */
static int assign_all(rd_kafka_t *rk)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, opt.topic, NULL);
    int64_t deadline = now_ns() + 30 * (int64_t)1000000000;
    int rc = -1;

    while (!interrupted && now_ns() < deadline) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 2000);
        if (!err && md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0) {
            int n = md->topics[0].partition_cnt;
            rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
            for (int i = 0; i < n; i++)
                rd_kafka_topic_partition_list_add(parts, opt.topic, md->topics[0].partitions[i].id)
                    ->offset = RD_KAFKA_OFFSET_BEGINNING;
            err = rd_kafka_assign(rk, parts);
            rd_kafka_topic_partition_list_destroy(parts);
            rd_kafka_metadata_destroy(md);
            if (err)
                fprintf(stderr, "latency: assign: %s\n", rd_kafka_err2str(err));
            rc = err ? -1 : 0;
            break;
        }
        if (md)
            rd_kafka_metadata_destroy(md);
        usleep(50000);
    }
    rd_kafka_topic_destroy(rkt);
    if (rc != 0 && !interrupted)
        fprintf(stderr, "latency: topic %s did not appear within 30 s\n", opt.topic);
    return rc;
}

static void handle_message(const rd_kafka_message_t *m, int64_t t)
{
    json_error_t jerr;
    json_t *v = json_loadb(m->payload, m->len, 0, &jerr);
    json_t *seqj = v ? json_object_get(json_object_get(v, "payload"), "seq") : NULL;
    rd_kafka_timestamp_type_t tstype;
    int64_t seq;

    if (!json_is_integer(seqj) || (seq = json_integer_value(seqj)) < 0 || seq >= nevents) {
        atomic_fetch_add(&unknown, 1);
        json_decref(v);
        return;
    }
    if (obs[seq].recv_ns) {
        atomic_fetch_add(&duplicates, 1);
    } else {
        json_t *ct = json_object_get(json_object_get(v, "source"), "commit_time");
        json_t *cl = json_object_get(json_object_get(v, "source"), "commit_lsn");
        uint64_t lsn;
        if (json_is_string(cl) && lsn_parse(json_string_value(cl), &lsn) == 0 &&
            lsn > max_commit_lsn)
            max_commit_lsn = lsn;
        obs[seq].recv_ns = t;
        obs[seq].create_ms = rd_kafka_message_timestamp(m, &tstype);
        if (json_is_string(ct))
            obs[seq].srv_us = parse_rfc3339_us(json_string_value(ct));
        atomic_fetch_add(&received, 1);
    }
    json_decref(v);
}

typedef struct {
    rd_kafka_t *rk;
    atomic_int ready;
    int rc;
} cons_arg;

static void *consumer(void *p)
{
    cons_arg *ca = p;
    rd_kafka_t *rk = ca->rk;
    int64_t drain_deadline = 0;

    if (assign_all(rk) != 0) {
        ca->rc = -1;
        atomic_store(&ca->ready, 1);
        return NULL;
    }
    atomic_store(&ca->ready, 1);
    while (!interrupted) {
        /* short: once every event is in, the confirm lag is timed from here */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 2);
        int64_t t = now_ns();
        if (m) {
            if (!m->err)
                handle_message(m, t);
            else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "latency: consume: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
        }
        if (atomic_load(&gen_done)) {
            if (!drain_deadline)
                drain_deadline = t + (int64_t)(opt.drain_seconds * 1e9);
            if (atomic_load(&received) + atomic_load(&gen_errors) >= nevents || t > drain_deadline)
                break;
        }
    }
    return NULL;
}

/* ---- reporting ----------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct {
    size_t n;
    double p50, p95, p99, max; /* milliseconds */
} pct;

/* Nearest-rank percentiles of v[0..n) (microseconds), sorted in place. */
static pct percentiles(int64_t *v, size_t n)
{
    pct r = {.n = n};
    if (!n)
        return r;
    qsort(v, n, sizeof(*v), cmp_i64);
#define RANK(q)                                                                                    \
    v[(size_t)((q) * (double)n + 0.999999) > 0 ? (size_t)((q) * (double)n + 0.999999) - 1 : 0]
    r.p50 = RANK(0.50) / 1000.0;
    r.p95 = RANK(0.95) / 1000.0;
    r.p99 = RANK(0.99) / 1000.0;
#undef RANK
    r.max = v[n - 1] / 1000.0;
    return r;
}

enum { M_E2E, M_SRV, M_PRE, M_POST, M_COUNT };

/* conn: opened beforehand, so that connecting is not counted. */
static double confirm_lag_ms(PGconn *conn, int64_t last_recv_ns)
{
    char sql[256];
    char target[sizeof(last_lsn)];
    _Static_assert(sizeof(last_lsn) >= LSN_BUFSZ, "an LSN fits");
    const char *params[2] = {opt.slot, target};
    int64_t deadline = now_ns() + 10 * (int64_t)1000000000;
    double lag = -1;

    if (!opt.slot || !last_recv_ns || (!max_commit_lsn && !last_lsn[0]))
        return -1;
    if (max_commit_lsn)
        lsn_format(max_commit_lsn, target);
    else
        snprintf(target, sizeof(target), "%s", last_lsn);
    if (PQstatus(conn) != CONNECTION_OK)
        return -1;
    /* past the commit's start, or at least at the insert position */
    snprintf(sql, sizeof(sql),
             "SELECT confirmed_flush_lsn %s $2::pg_lsn FROM pg_replication_slots "
             "WHERE slot_name = $1",
             max_commit_lsn ? ">" : ">=");
    while (now_ns() < deadline && !interrupted) {
        PGresult *res = PQexecParams(conn, sql, 2, NULL, params, NULL, NULL, 0);
        int64_t t = now_ns();
        bool done = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                    strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        if (done) {
            lag = (double)(t - last_recv_ns) / 1e6;
            break;
        }
        usleep(2000);
    }
    return lag;
}

/* ---- the relay's own commit -> acknowledgement histogram ------------------ */

#define MAX_BUCKETS 32

typedef struct {
    int n;                   /* buckets read; 0 = no snapshot */
    double le[MAX_BUCKETS];  /* upper bounds, seconds (+Inf last) */
    double cum[MAX_BUCKETS]; /* cumulative counts */
} histo;

/*
 * GET http://HOSTPORT/metrics (loopback only: the relay's --http) and read
 * the commit_to_ack_seconds buckets.  Returns 0 on success.
 */
static int scrape(const char *hostport, histo *h)
{
    char host[64], req[128], *buf = NULL, *line;
    size_t len = 0, cap = 0;
    const char *colon = strrchr(hostport, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd, rc = -1;

    memset(h, 0, sizeof(*h));
    if (!colon || (size_t)(colon - hostport) >= sizeof(host))
        return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || (ntohl(sa.sin_addr.s_addr) >> 24) != 127)
        return -1;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto out;
    snprintf(req, sizeof(req), "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", hostport);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        goto out;
    for (;;) {
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap + 65536);
            if (!nb)
                goto out;
            buf = nb;
            cap += 65536;
        }
        ssize_t got = read(fd, buf + len, cap - len - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            goto out;
        if (got == 0)
            break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        static const char pfx[] = "outbox_relay_commit_to_ack_seconds_bucket{le=\"";
        char *q;
        if (strncmp(line, pfx, sizeof(pfx) - 1) != 0 || h->n >= MAX_BUCKETS)
            continue;
        line += sizeof(pfx) - 1;
        h->le[h->n] = strncmp(line, "+Inf", 4) == 0 ? 1e300 : strtod(line, NULL);
        q = strstr(line, "} ");
        if (!q)
            continue;
        h->cum[h->n++] = strtod(q + 2, NULL);
    }
    rc = h->n > 0 ? 0 : -1;
out:
    close(fd);
    free(buf);
    return rc;
}

typedef struct {
    double count, within5, within25; /* events; shares in [0,1] */
    double p50, p95, p99;            /* ms, interpolated */
} ack_stats;

/* Cumulative count of bucket i in b - a (a: no snapshot, or the same buckets). */
static double histo_cum(const histo *a, const histo *b, int i)
{
    return b->cum[i] - (a->n ? a->cum[i] : 0);
}

/* Quantile q of the histogram b - a, linear inside the bucket (ms). */
static double histo_quantile(const histo *a, const histo *b, double q, double total)
{
    double want = q * total, prev_le = 0, prev_c = 0;
    for (int i = 0; i < b->n; i++) {
        double c = histo_cum(a, b, i);
        if (c >= want) {
            if (b->le[i] >= 1e300)
                return prev_le * 1000; /* beyond the last bound: report it as a floor */
            double f = c > prev_c ? (want - prev_c) / (c - prev_c) : 1;
            return (prev_le + f * (b->le[i] - prev_le)) * 1000;
        }
        prev_le = b->le[i];
        prev_c = c;
    }
    return -1;
}

static ack_stats histo_diff(const histo *a, const histo *b)
{
    ack_stats r = {0};
    if (!b->n || (a->n && a->n != b->n))
        return r;
    r.count = histo_cum(a, b, b->n - 1);
    if (r.count <= 0)
        return r;
    for (int i = 0; i < b->n; i++) {
        double c = histo_cum(a, b, i);
        if (b->le[i] > 0.00499 && b->le[i] < 0.00501)
            r.within5 = c / r.count;
        if (b->le[i] > 0.02499 && b->le[i] < 0.02501)
            r.within25 = c / r.count;
    }
    r.p50 = histo_quantile(a, b, 0.50, r.count);
    r.p95 = histo_quantile(a, b, 0.95, r.count);
    r.p99 = histo_quantile(a, b, 0.99, r.count);
    return r;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: latency -d CONNINFO -b BROKERS -t TOPIC [-T TABLE] [-r RATE] [-s SECONDS]\n"
            "               [-c CONNECTIONS] [-p PAYLOAD_BYTES] [-S SLOT] [-w DRAIN_SECONDS]\n"
            "               [-W WARMUP_SECONDS] [-l LABEL] [-o RESULTS_FILE]\n"
            "               [-M RELAY_HTTP_HOST:PORT] [-X CONSUMER_PROP=VALUE]...\n");
}

int main(int argc, char **argv)
{
    pthread_t gen[MAX_CONNS], cons;
    gen_arg gargs[MAX_CONNS];
    cons_arg ca = {0};
    char *note;
    int c, rc = 0;
    int64_t start, end_ns, last_recv = 0;
    int64_t *vals[M_COUNT];
    size_t nv[M_COUNT] = {0};
    pct p[M_COUNT];
    histo h0 = {0}, h1 = {0};
    PGconn *slot_conn = NULL;
    ack_stats ack = {0};
    struct sigaction sa = {0};

    opt.table = "public.outbox";
    opt.rate = 1000;
    opt.seconds = 10;
    opt.conns = 4;
    opt.payload_bytes = 200;
    opt.drain_seconds = 20;
    opt.warmup = 2;
    opt.label = "latency";
    while ((c = getopt(argc, argv, "d:b:t:T:r:s:c:p:S:w:W:l:o:M:X:h")) != -1) {
        switch (c) {
        case 'd':
            opt.conninfo = optarg;
            break;
        case 'b':
            opt.brokers = optarg;
            break;
        case 't':
            opt.topic = optarg;
            break;
        case 'T':
            opt.table = optarg;
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 's':
            opt.seconds = atof(optarg);
            break;
        case 'c':
            opt.conns = atoi(optarg);
            break;
        case 'p':
            opt.payload_bytes = atoi(optarg);
            break;
        case 'S':
            opt.slot = optarg;
            break;
        case 'w':
            opt.drain_seconds = atof(optarg);
            break;
        case 'W':
            opt.warmup = atof(optarg);
            break;
        case 'l':
            opt.label = optarg;
            break;
        case 'o':
            opt.out = optarg;
            break;
        case 'M':
            opt.metrics = optarg;
            break;
        case 'X': {
            char *eq = strchr(optarg, '=');
            if (!eq || opt.nprops == MAX_PROPS) {
                fprintf(stderr, "latency: -X wants PROP=VALUE\n");
                return 2;
            }
            *eq = '\0';
            opt.props[opt.nprops][0] = optarg;
            opt.props[opt.nprops++][1] = eq + 1;
            break;
        }
        default:
            usage();
            return 2;
        }
    }
    if (!opt.conninfo || !opt.brokers || !opt.topic || opt.rate <= 0 || opt.seconds <= 0 ||
        opt.conns < 1 || opt.conns > MAX_CONNS || opt.payload_bytes < 0 || opt.warmup < 0 ||
        optind != argc) {
        usage();
        return 2;
    }
    nwarm = (int64_t)(opt.rate * opt.warmup);
    nevents = nwarm + (int64_t)(opt.rate * opt.seconds);
    obs = calloc((size_t)nevents, sizeof(*obs));
    note = malloc((size_t)opt.payload_bytes + 1);
    for (int i = 0; i < M_COUNT; i++)
        vals[i] = malloc((size_t)nevents * sizeof(int64_t));
    if (!obs || !note || !vals[M_E2E] || !vals[M_SRV] || !vals[M_PRE] || !vals[M_POST]) {
        fprintf(stderr, "latency: out of memory\n");
        return 1;
    }
    /* payload ≈ payload_bytes of JSON: {"seq": N, "note": "xxx…"} */
    for (int i = 0; i < opt.payload_bytes; i++)
        note[i] = (char)('a' + i % 26);
    note[opt.payload_bytes > 30 ? opt.payload_bytes - 30 : 0] = '\0';

    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    ca.rk = consumer_new();
    if (!ca.rk)
        return 1;
    pthread_create(&cons, NULL, consumer, &ca);
    /* The topic may only appear with the first event: start writing at once
     * and let the consumer read from the beginning. */
    start = now_ns() + 50 * 1000000;
    for (int i = 0; i < opt.conns; i++) {
        gargs[i] = (gen_arg){.index = i, .start_ns = start, .note = note};
        pthread_create(&gen[i], NULL, generator, &gargs[i]);
    }
    if (opt.metrics) {
        /* the warm-up's events are acknowledged a few ms after the last is due */
        sleep_until_ns(start + (int64_t)((double)nwarm * 1e9 / opt.rate));
        if (scrape(opt.metrics, &h0) != 0)
            fprintf(stderr, "latency: cannot read the histogram at http://%s/metrics\n",
                    opt.metrics);
    }
    for (int i = 0; i < opt.conns; i++)
        pthread_join(gen[i], NULL);
    end_ns = now_ns();
    if (opt.slot) {
        PGresult *res;
        slot_conn = PQconnectdb(opt.conninfo);
        res = PQexec(slot_conn, "SELECT pg_current_wal_insert_lsn()");
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            snprintf(last_lsn, sizeof(last_lsn), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    atomic_store(&gen_done, 1);
    pthread_join(cons, NULL);
    if (ca.rc)
        rc = 1;
    /* at once: the lag is timed from the last receipt */
    for (int64_t s = 0; s < nevents; s++)
        if (obs[s].commit_ns && obs[s].recv_ns > last_recv)
            last_recv = obs[s].recv_ns;
    double lag = slot_conn ? confirm_lag_ms(slot_conn, last_recv) : -1;
    PQfinish(slot_conn);

    for (int64_t s = 0; s < nevents; s++) {
        event_obs *o = &obs[s];
        if (!o->commit_ns || !o->recv_ns)
            continue;
        if (s < nwarm)
            continue;
        vals[M_E2E][nv[M_E2E]++] = (o->recv_ns - o->commit_ns) / 1000;
        if (o->srv_us)
            vals[M_SRV][nv[M_SRV]++] = o->recv_ns / 1000 - o->srv_us;
        if (o->create_ms > 0) {
            vals[M_PRE][nv[M_PRE]++] = o->create_ms * 1000 - o->commit_ns / 1000;
            vals[M_POST][nv[M_POST]++] = o->recv_ns / 1000 - o->create_ms * 1000;
        }
    }
    for (int i = 0; i < M_COUNT; i++)
        p[i] = percentiles(vals[i], nv[i]);
    if (opt.metrics && h0.n) {
        /* every report is in (the consumer saw every event); the relay
         * refreshes what --http serves every 500 ms */
        usleep(600 * 1000);
        if (scrape(opt.metrics, &h1) == 0)
            ack = histo_diff(&h0, &h1);
        else
            fprintf(stderr, "latency: cannot read the histogram at http://%s/metrics\n",
                    opt.metrics);
    }
    double achieved = (double)nevents / ((double)(end_ns - start) / 1e9);
    long missing = (long)(nevents - atomic_load(&received));

    fprintf(stderr,
            "%s: %" PRId64 " events at %.0f/s (achieved %.0f/s, worst schedule lag %.1f ms), "
            "received %ld, missing %ld, duplicates %ld, unrecognised %ld, insert errors %ld\n"
            "  commit->received     p50 %.2f  p95 %.2f  p99 %.2f  max %.2f ms\n",
            opt.label, nevents, opt.rate, achieved, atomic_load(&max_sched_lag_us) / 1000.0,
            (long)atomic_load(&received), missing, (long)atomic_load(&duplicates),
            (long)atomic_load(&unknown), (long)atomic_load(&gen_errors), p[M_E2E].p50, p[M_E2E].p95,
            p[M_E2E].p99, p[M_E2E].max);
    if (p[M_SRV].n)
        fprintf(stderr, "  commit_time->recv    p50 %.2f  p95 %.2f  p99 %.2f  max %.2f ms\n",
                p[M_SRV].p50, p[M_SRV].p95, p[M_SRV].p99, p[M_SRV].max);
    fprintf(stderr,
            "  commit->CreateTime   p50 %.1f  p99 %.1f ms   CreateTime->recv p50 %.1f  p99 %.1f ms "
            "(1 ms resolution)\n",
            p[M_PRE].p50, p[M_PRE].p99, p[M_POST].p50, p[M_POST].p99);
    if (opt.slot)
        fprintf(stderr, "  last event received -> slot confirmed: %.1f ms\n", lag);
    if (ack.count > 0)
        fprintf(stderr,
                "  commit_time->ack (relay's histogram, %.0f events)  p50 %.2f  p95 %.2f  p99 "
                "%.2f ms; within 5 ms %.2f%%, within 25 ms %.2f%%\n",
                ack.count, ack.p50, ack.p95, ack.p99, ack.within5 * 100, ack.within25 * 100);

    char line[1400];
    snprintf(line, sizeof(line),
             "label=%s rate=%.0f achieved=%.0f events=%" PRId64 " received=%ld missing=%ld dup=%ld "
             "sched_lag_ms=%.1f p50=%.2f p95=%.2f p99=%.2f max=%.2f srv_p50=%.2f srv_p99=%.2f "
             "pre_p50=%.1f pre_p99=%.1f post_p50=%.1f post_p99=%.1f confirm_lag_ms=%.1f "
             "ack_n=%.0f ack_p50=%.2f ack_p95=%.2f ack_p99=%.2f ack_in5=%.2f ack_in25=%.2f\n",
             opt.label, opt.rate, achieved, nevents, (long)atomic_load(&received), missing,
             (long)atomic_load(&duplicates), atomic_load(&max_sched_lag_us) / 1000.0, p[M_E2E].p50,
             p[M_E2E].p95, p[M_E2E].p99, p[M_E2E].max, p[M_SRV].p50, p[M_SRV].p99, p[M_PRE].p50,
             p[M_PRE].p99, p[M_POST].p50, p[M_POST].p99, lag, ack.count,
             ack.count > 0 ? ack.p50 : -1, ack.count > 0 ? ack.p95 : -1,
             ack.count > 0 ? ack.p99 : -1, ack.within5 * 100, ack.within25 * 100);
    fputs(line, stdout);
    if (opt.out) {
        FILE *f = fopen(opt.out, "a");
        if (f) {
            fputs(line, f);
            fclose(f);
        }
    }
    rd_kafka_consumer_close(ca.rk);
    rd_kafka_destroy(ca.rk);
    for (int i = 0; i < M_COUNT; i++)
        free(vals[i]);
    free(note);
    free(obs);
    if (missing > 0 || interrupted)
        rc = 1;
    return rc;
}
