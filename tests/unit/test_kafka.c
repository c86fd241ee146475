/*
 * publish/kafka against librdkafka's in-process mock cluster (real brokers
 * speaking the Kafka protocol on loopback).  Tests that only need a broker
 * use KAFKA_BROKERS when set; tests that inject faults need the mock and
 * are skipped then.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "publish/kafka.h"

/* ---- a mock cluster per test (so fault injection stays local) ---- */

struct cluster {
    rd_kafka_t *owner; /* handle the mock cluster hangs off */
    rd_kafka_mock_cluster_t *mc;
    const char *bootstraps;
};

static void quiet_log(int level, const char *fac, const char *msg)
{
    (void)level;
    (void)fac;
    (void)msg;
}

static void cluster_start(struct cluster *c)
{
    char why[256];
    const char *env = getenv("KAFKA_BROKERS");
    rd_kafka_conf_t *conf;

    memset(c, 0, sizeof(*c));
    if (env && *env) {
        c->bootstraps = env;
        return;
    }
    conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "log_level", "0", why, sizeof(why)), RD_KAFKA_CONF_OK);
    c->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!c->owner)
        fail_msg("cannot create the mock owner: %s", why);
    c->mc = rd_kafka_mock_cluster_new(c->owner, 3);
    assert_non_null(c->mc);
    c->bootstraps = rd_kafka_mock_cluster_bootstraps(c->mc);
}

static void cluster_stop(struct cluster *c)
{
    if (c->mc)
        rd_kafka_mock_cluster_destroy(c->mc);
    if (c->owner)
        rd_kafka_destroy(c->owner);
    memset(c, 0, sizeof(*c));
}

/* Fault-injection tests need the mock; skip them on a real cluster. */
#define NEED_MOCK(c)                                                                               \
    do {                                                                                           \
        if (!(c)->mc) {                                                                            \
            cluster_stop(c);                                                                       \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* Take every broker of the mock cluster down, or bring them back. */
static void all_brokers(struct cluster *c, bool up)
{
    for (int b = 1; b <= 3; b++)
        assert_int_equal(up ? rd_kafka_mock_broker_set_up(c->mc, b)
                            : rd_kafka_mock_broker_set_down(c->mc, b),
                         0);
}

/* A topic name unique to this process and test, for real clusters too. */
static void topic_name(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "test-kafka-%ld-%s-%ld", (long)getpid(), what, (long)time(NULL));
}

/* ---- collecting delivery reports ---- */

struct got {
    size_t n;
    uint64_t ticket[4096];
    int err[4096];
    bool permanent[4096];
    int32_t partition[4096];
    int64_t offset[4096];
    size_t len[4096];
};

static void collect(const kafka_report *rep, void *arg)
{
    struct got *g = arg;

    if (g->n >= sizeof(g->ticket) / sizeof(g->ticket[0]))
        fail_msg("too many reports");
    g->ticket[g->n] = rep->ticket;
    g->err[g->n] = rep->err;
    g->permanent[g->n] = rep->permanent;
    g->partition[g->n] = rep->partition;
    g->offset[g->n] = rep->offset;
    g->len[g->n] = rep->len;
    if (rep->err)
        assert_non_null(rep->errstr);
    g->n++;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait on the event fd (never a sleep loop) until want reports arrived or
 * timeout_ms passed.  Returns the number of reports collected.
 */
static size_t wait_reports(kafka_producer *kp, struct got *g, size_t want, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    char err[512];

    while (g->n < want) {
        int64_t left = deadline - mono_ms();
        struct pollfd pfd = {.fd = kafka_event_fd(kp), .events = POLLIN};
        if (left <= 0)
            break;
        /* kafka_poll() also enforces message.timeout.ms: call it often
         * even while the fd stays quiet */
        assert_true(poll(&pfd, 1, left < 100 ? (int)left : 100) >= 0);
        int served = kafka_poll(kp, collect, g, err, sizeof(err));
        if (served < 0)
            fail_msg("kafka_poll: %s", err);
    }
    return g->n;
}

static kafka_producer *producer(const char *bootstraps, const kafka_prop *props, size_t n)
{
    char err[512];
    kafka_producer *kp = kafka_producer_new(bootstraps, props, n, err, sizeof(err));
    if (!kp)
        fail_msg("kafka_producer_new: %s", err);
    return kp;
}

static void produce_ok(kafka_producer *kp, const char *topic, const char *key, const char *value,
                       const kafka_header *h, size_t nh, uint64_t ticket)
{
    char err[512];
    enum kafka_produce_result r;

    r = kafka_produce(kp, topic, key, key ? strlen(key) : 0, value, strlen(value), h, nh, ticket,
                      err, sizeof(err));
    if (r != KAFKA_PRODUCE_OK)
        fail_msg("kafka_produce: %d %s", r, err);
}

/*
 * A producer on a new mock topic whose first message (ticket) is
 * acknowledged: the topic's metadata is in before a fault is injected.
 * g holds that one report.
 */
static kafka_producer *delivering_producer(struct cluster *c, const char *topic, int partitions,
                                           const kafka_prop *props, size_t nprops, struct got *g,
                                           uint64_t ticket)
{
    kafka_producer *kp;

    assert_int_equal(rd_kafka_mock_topic_create(c->mc, topic, partitions, 3), 0);
    kafka_set_logger(quiet_log);
    kp = producer(c->bootstraps, props, nprops);
    produce_ok(kp, topic, "k", "before", NULL, 0, ticket);
    assert_int_equal(wait_reports(kp, g, 1, 10000), 1);
    assert_int_equal(g->ticket[0], ticket);
    assert_int_equal(g->err[0], 0);
    return kp;
}

/* ---- tests ---- */

static void test_free_null(void **state)
{
    (void)state;
    kafka_producer_free(NULL);
}

static void test_config_errors(void **state)
{
    (void)state;
    char err[512];
    kafka_prop unknown[] = {{"linger.ms", "5"}, {"no.such.property", "1"}};
    kafka_prop badval[] = {{"acks", "banana"}};
    kafka_prop secret[] = {{"ssl.key.passwrd", "hunter2"}};
    kafka_prop good[] = {{"linger.ms", "5"}, {"enable.idempotence", "false"}};

    err[0] = 0;
    assert_int_equal(kafka_config_check("127.0.0.1:9092", unknown, 2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "-X no.such.property=1"));
    assert_non_null(strstr(err, "-X list shows every property"));

    err[0] = 0;
    assert_int_equal(kafka_config_check("127.0.0.1:9092", badval, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "-X acks=banana"));

    err[0] = 0;
    assert_int_equal(kafka_config_check(NULL, secret, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ssl.key.passwrd"));
    assert_null(strstr(err, "hunter2"));

    /* a user may override our defaults */
    assert_int_equal(kafka_config_check("127.0.0.1:9092", good, 2, err, sizeof(err)), 0);

    /* the producer constructor applies the same checks */
    err[0] = 0;
    assert_null(kafka_producer_new("127.0.0.1:9092", badval, 1, err, sizeof(err)));
    assert_non_null(strstr(err, "acks"));
}

static void test_produce_reports_tickets(void **state)
{
    (void)state;
    enum { N = 300 };
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128], err[512];
    unsigned seen[N] = {0};

    cluster_start(&c);
    topic_name(topic, sizeof(topic), "tickets");
    kafka_producer *kp = producer(c.bootstraps, NULL, 0);
    assert_true(kafka_event_fd(kp) >= 0);
    for (uint64_t i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k%u", (unsigned)(i % 7));
        /* tickets above 2^32 must survive the trip through the opaque */
        produce_ok(kp, topic, key, "{\"v\":1}", NULL, 0, (1ULL << 40) + i);
    }
    assert_int_equal(wait_reports(kp, g, N, 10000), N);
    for (size_t i = 0; i < g->n; i++) {
        uint64_t t = g->ticket[i];
        assert_true(t >= (1ULL << 40) && t < (1ULL << 40) + N);
        seen[t - (1ULL << 40)]++;
        assert_int_equal(g->err[i], 0);
        assert_false(g->permanent[i]);
        assert_true(g->offset[i] >= 0);
        assert_true(g->partition[i] >= 0);
        assert_int_equal(g->len[i], 2 + strlen("{\"v\":1}")); /* key + value */
    }
    for (size_t i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(kafka_outq_len(kp), 0);
    /* nothing more comes: exactly one report per message */
    wait_reports(kp, g, N + 1, 300);
    assert_int_equal(g->n, N);
    assert_int_equal(kafka_poll(kp, collect, g, err, sizeof(err)), 0);
    kafka_producer_free(kp);
    cluster_stop(&c);
    free(g);
}

static void test_same_key_same_partition(void **state)
{
    (void)state;
    enum { KEYS = 8, PER = 10 };
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128];
    int32_t part_of[KEYS];
    bool used[64] = {false};
    int distinct = 0;

    cluster_start(&c);
    topic_name(topic, sizeof(topic), "keys");
    if (c.mc)
        assert_int_equal(rd_kafka_mock_topic_create(c.mc, topic, 6, 3), 0);
    kafka_producer *kp = producer(c.bootstraps, NULL, 0);
    for (int r = 0; r < PER; r++)
        for (int k = 0; k < KEYS; k++) {
            char key[32];
            snprintf(key, sizeof(key), "order-%d", k);
            produce_ok(kp, topic, key, "{}", NULL, 0, (uint64_t)(k + 1));
        }
    assert_int_equal(wait_reports(kp, g, KEYS * PER, 10000), KEYS * PER);
    for (int k = 0; k < KEYS; k++)
        part_of[k] = -1;
    for (size_t i = 0; i < g->n; i++) {
        int k = (int)g->ticket[i] - 1;
        assert_int_equal(g->err[i], 0);
        assert_true(k >= 0 && k < KEYS);
        if (part_of[k] < 0)
            part_of[k] = g->partition[i];
        assert_int_equal(g->partition[i], part_of[k]);
        assert_true(g->partition[i] >= 0 && g->partition[i] < 64);
        if (!used[g->partition[i]]) {
            used[g->partition[i]] = true;
            distinct++;
        }
    }
    /* the keys spread out: this is a hash, not "everything on partition 0" */
    if (c.mc)
        assert_true(distinct >= 2);
    kafka_producer_free(kp);
    cluster_stop(&c);
    free(g);
}

static void test_message_too_large_local(void **state)
{
    (void)state;
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128], err[512];
    kafka_prop props[] = {{"message.max.bytes", "10000"}};
    size_t big = 20000;
    char *value = malloc(big);

    cluster_start(&c);
    topic_name(topic, sizeof(topic), "large");
    memset(value, 'x', big);
    kafka_producer *kp = producer(c.bootstraps, props, 1);
    err[0] = 0;
    enum kafka_produce_result r =
        kafka_produce(kp, topic, "k", 1, value, big, NULL, 0, 7, err, sizeof(err));
    if (r == KAFKA_PRODUCE_OK) {
        /* accepted locally: then the report must be a permanent failure */
        assert_int_equal(wait_reports(kp, g, 1, 10000), 1);
        assert_int_equal(g->ticket[0], 7);
        assert_true(g->err[0] != 0);
        assert_true(g->permanent[0]);
    } else {
        assert_int_equal(r, KAFKA_PRODUCE_REJECTED);
        assert_non_null(strstr(err, topic));
        /* no report will come for a refused message */
        wait_reports(kp, g, 1, 300);
        assert_int_equal(g->n, 0);
    }
    /* the producer still works afterwards */
    produce_ok(kp, topic, "k", "small", NULL, 0, 8);
    assert_int_equal(wait_reports(kp, g, g->n + 1, 10000) >= 1, true);
    assert_int_equal(g->ticket[g->n - 1], 8);
    assert_int_equal(g->err[g->n - 1], 0);
    kafka_producer_free(kp);
    cluster_stop(&c);
    free(value);
    free(g);
}

/* The broker refuses the record (as a real one does above its
 * message.max.bytes): the report is an error about the message itself. */
static void test_message_too_large_broker(void **state)
{
    (void)state;
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128];

    cluster_start(&c);
    NEED_MOCK(&c);
    topic_name(topic, sizeof(topic), "large-broker");
    assert_int_equal(rd_kafka_mock_topic_create(c.mc, topic, 1, 3), 0);
    kafka_producer *kp = producer(c.bootstraps, NULL, 0);
    /* let the producer get its id and metadata first */
    produce_ok(kp, topic, "k", "warm-up", NULL, 0, 1);
    assert_int_equal(wait_reports(kp, g, 1, 10000), 1);
    assert_int_equal(g->err[0], 0);

    /* 0 = Produce */
    rd_kafka_mock_push_request_errors(c.mc, 0, 1, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    produce_ok(kp, topic, "k", "refused", NULL, 0, 2);
    assert_int_equal(wait_reports(kp, g, 2, 10000), 2);
    assert_int_equal(g->ticket[1], 2);
    assert_int_equal(g->err[1], RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    assert_true(g->permanent[1]);
    kafka_producer_free(kp);
    cluster_stop(&c);
    free(g);
}

static void test_brokers_down_transient(void **state)
{
    (void)state;
    enum { N = 5 };
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128];
    /* the producer times everything out after 2 s without a report; a
     * short reconnect backoff brings the connections back quickly */
    kafka_prop props[] = {{"message.timeout.ms", "2000"}, {"reconnect.backoff.max.ms", "500"}};

    cluster_start(&c);
    NEED_MOCK(&c);
    topic_name(topic, sizeof(topic), "down");
    kafka_producer *kp = delivering_producer(&c, topic, 3, props, 2, g, 100);

    all_brokers(&c, false);
    int64_t t0 = mono_ms();
    for (int i = 0; i < N; i++)
        produce_ok(kp, topic, "k", "during", NULL, 0, (uint64_t)(200 + i));
    assert_int_equal(wait_reports(kp, g, 1 + N, 6000), 1 + N);
    assert_true(mono_ms() - t0 < 6000);
    for (size_t i = 1; i < g->n; i++) {
        assert_true(g->ticket[i] >= 200 && g->ticket[i] < 200 + N);
        assert_true(g->err[i] != 0);
        assert_false(g->permanent[i]);
    }
    kafka_producer_free(kp);
    kafka_set_logger(NULL);
    cluster_stop(&c);
    free(g);
}

static void test_stalled_decision(void **state)
{
    (void)state;
    assert_false(kafka_stalled(5000, 1000, 0, 2000)); /* nothing waits */
    assert_false(kafka_stalled(5000, 1000, 3, 0));    /* 0: never */
    assert_false(kafka_stalled(2999, 1000, 3, 2000));
    assert_true(kafka_stalled(3000, 1000, 3, 2000));
    assert_true(kafka_stalled(90000, 1000, 1, 2000));
    assert_false(kafka_stalled(1000, 1500, 3, 2000)); /* progress after now: not stalled */
}

/*
 * A message produced after one that times out must never be delivered
 * ahead of it.  librdkafka's own per-message timeout does exactly that: B,
 * younger than message.timeout.ms when A expires, would be sent once a
 * broker is back.  Here the timeout fails both at once.  (The alias
 * delivery.timeout.ms sets the same property.)
 */
static void test_timeout_fails_everything_at_once(void **state)
{
    (void)state;
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128];
    kafka_prop props[] = {{"delivery.timeout.ms", "2000"}, {"reconnect.backoff.max.ms", "200"}};

    cluster_start(&c);
    NEED_MOCK(&c);
    topic_name(topic, sizeof(topic), "timeout-all");
    kafka_producer *kp = delivering_producer(&c, topic, 1, props, 2, g, 1);

    all_brokers(&c, false);
    int64_t t0 = mono_ms();
    produce_ok(kp, topic, "k", "A", NULL, 0, 2);
    assert_int_equal(wait_reports(kp, g, 2, 1200), 1); /* nothing yet */
    produce_ok(kp, topic, "k", "B", NULL, 0, 3);
    assert_true(wait_reports(kp, g, 2, 6000) >= 2);
    int64_t took = mono_ms() - t0;
    /* the brokers are back the moment A is reported */
    all_brokers(&c, true);
    assert_true(took >= 1900 && took < 6000);
    /* B is reported with A, timed out too; it never reaches the broker */
    assert_int_equal(wait_reports(kp, g, 3, 3000), 3);
    for (size_t i = 1; i < 3; i++) {
        assert_int_equal(g->err[i], RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
        assert_false(g->permanent[i]);
    }
    assert_true((g->ticket[1] == 2 && g->ticket[2] == 3) ||
                (g->ticket[1] == 3 && g->ticket[2] == 2));
    /* (not kafka_outq_len(): it also counts error events librdkafka queues
     * as the brokers come back; each message has one report, and both are
     * in) */

    /* and the producer delivers again */
    produce_ok(kp, topic, "k", "C", NULL, 0, 4);
    assert_int_equal(wait_reports(kp, g, 4, 10000), 4);
    assert_int_equal(g->ticket[3], 4);
    assert_int_equal(g->err[3], 0);
    kafka_producer_free(kp);
    kafka_set_logger(NULL);
    cluster_stop(&c);
    free(g);
}

static void test_purge_reports_everything(void **state)
{
    (void)state;
    enum { N = 20 };
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128];
    unsigned seen[N] = {0};

    cluster_start(&c);
    NEED_MOCK(&c);
    topic_name(topic, sizeof(topic), "purge");
    kafka_producer *kp = delivering_producer(&c, topic, 3, NULL, 0, g, 1000);
    g->n = 0;

    /* brokers away: messages stay queued or in flight (default timeout
     * is minutes), until the purge */
    all_brokers(&c, false);
    for (int i = 0; i < N; i++)
        produce_ok(kp, topic, "k", "stuck", NULL, 0, (uint64_t)i);
    wait_reports(kp, g, 1, 200);
    assert_int_equal(g->n, 0);
    assert_int_equal(kafka_outq_len(kp), N);
    assert_int_equal(kafka_purge(kp), 0);
    assert_int_equal(wait_reports(kp, g, N, 5000), N);
    for (size_t i = 0; i < g->n; i++) {
        assert_true(g->ticket[i] < N);
        seen[g->ticket[i]]++;
        assert_true(g->err[i] == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                    g->err[i] == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT);
        assert_false(g->permanent[i]);
        assert_int_equal(g->len[i], 1 + strlen("stuck")); /* failures free bytes too */
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(kafka_outq_len(kp), 0);
    kafka_producer_free(kp);
    kafka_set_logger(NULL);
    cluster_stop(&c);
    free(g);
}

static void test_flush_serves_reports(void **state)
{
    (void)state;
    enum { N = 50 };
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128];

    cluster_start(&c);
    topic_name(topic, sizeof(topic), "flush");
    kafka_producer *kp = producer(c.bootstraps, NULL, 0);
    for (int i = 0; i < N; i++)
        produce_ok(kp, topic, "k", "v", NULL, 0, (uint64_t)i + 1);
    assert_int_equal(kafka_flush(kp, 10000, collect, g), 0);
    assert_int_equal(g->n, N);
    assert_int_equal(kafka_outq_len(kp), 0);
    kafka_producer_free(kp);
    cluster_stop(&c);
    free(g);
}

static void test_flush_times_out(void **state)
{
    (void)state;
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128];

    cluster_start(&c);
    NEED_MOCK(&c);
    topic_name(topic, sizeof(topic), "flush-timeout");
    kafka_set_logger(quiet_log);
    all_brokers(&c, false);
    kafka_producer *kp = producer(c.bootstraps, NULL, 0);
    produce_ok(kp, topic, "k", "v", NULL, 0, 1);
    int64_t t0 = mono_ms();
    assert_int_equal(kafka_flush(kp, 500, collect, g), -1);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 450 && took < 3000);
    assert_int_equal(g->n, 0);
    assert_int_equal(kafka_outq_len(kp), 1);
    assert_int_equal(kafka_purge(kp), 0);
    assert_int_equal(kafka_flush(kp, 5000, collect, g), 0);
    assert_int_equal(g->n, 1);
    kafka_producer_free(kp);
    kafka_set_logger(NULL);
    cluster_stop(&c);
    free(g);
}

/* What a consumer reads back: keys, values and headers as produced. */
static void test_consumer_reads_back(void **state)
{
    (void)state;
    enum { N = 5 };
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128], why[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *cons;
    rd_kafka_topic_partition_list_t *parts;
    int got = 0;

    cluster_start(&c);
    topic_name(topic, sizeof(topic), "readback");
    if (c.mc)
        assert_int_equal(rd_kafka_mock_topic_create(c.mc, topic, 1, 3), 0);
    kafka_producer *kp = producer(c.bootstraps, NULL, 0);
    for (int i = 0; i < N; i++) {
        char id[32], value[64];
        const char bin[3] = {0, 1, 2}; /* header values are bytes, not strings */
        snprintf(id, sizeof(id), "id-%d", i);
        snprintf(value, sizeof(value), "{\"n\":%d}", i);
        kafka_header h[] = {
            {"id", id, strlen(id)},
            {"type", "OrderPlaced", 11},
            {"bin", bin, sizeof(bin)},
        };
        produce_ok(kp, topic, "agg-42", value, h, 3, (uint64_t)i + 1);
    }
    assert_int_equal(kafka_flush(kp, 10000, collect, g), 0);
    assert_int_equal(g->n, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(g->partition[i], g->partition[0]);

    conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", c.bootstraps, why, sizeof(why)),
                     RD_KAFKA_CONF_OK);
    /* assign needs a group handle in librdkafka, but nothing joins it */
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", topic, why, sizeof(why)),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof(why)),
                     RD_KAFKA_CONF_OK);
    cons = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!cons)
        fail_msg("consumer: %s", why);
    rd_kafka_poll_set_consumer(cons);
    parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, g->partition[0])->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(cons, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);

    int64_t deadline = mono_ms() + 10000;
    while (got < N && mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 500);
        rd_kafka_headers_t *hdrs = NULL;
        const void *hv;
        size_t hl;
        char want[64];

        if (!m)
            continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        assert_int_equal(m->key_len, 6);
        assert_memory_equal(m->key, "agg-42", 6);
        snprintf(want, sizeof(want), "{\"n\":%d}", got);
        assert_int_equal(m->len, strlen(want));
        assert_memory_equal(m->payload, want, m->len);
        assert_int_equal(rd_kafka_message_headers(m, &hdrs), 0);
        assert_int_equal(rd_kafka_header_get_last(hdrs, "id", &hv, &hl), 0);
        snprintf(want, sizeof(want), "id-%d", got);
        assert_int_equal(hl, strlen(want));
        assert_memory_equal(hv, want, hl);
        assert_int_equal(rd_kafka_header_get_last(hdrs, "type", &hv, &hl), 0);
        assert_int_equal(hl, 11);
        assert_memory_equal(hv, "OrderPlaced", 11);
        assert_int_equal(rd_kafka_header_get_last(hdrs, "bin", &hv, &hl), 0);
        assert_int_equal(hl, 3);
        assert_memory_equal(hv, "\0\1\2", 3);
        assert_int_equal(m->offset, g->offset[got]);
        got++;
        rd_kafka_message_destroy(m);
    }
    assert_int_equal(got, N);
    rd_kafka_consumer_close(cons);
    rd_kafka_destroy(cons);
    kafka_producer_free(kp);
    cluster_stop(&c);
    free(g);
}

/* An idempotence failure is fatal: kafka_poll says so and why. */
static void test_fatal_error(void **state)
{
    (void)state;
    struct cluster c;
    struct got *g = calloc(1, sizeof(*g));
    char topic[128], err[512];
    int rc = 0;

    cluster_start(&c);
    NEED_MOCK(&c);
    topic_name(topic, sizeof(topic), "fatal");
    assert_int_equal(rd_kafka_mock_topic_create(c.mc, topic, 1, 3), 0);
    kafka_set_logger(quiet_log);
    kafka_producer *kp = producer(c.bootstraps, NULL, 0);
    produce_ok(kp, topic, "k", "warm-up", NULL, 0, 1);
    assert_int_equal(wait_reports(kp, g, 1, 10000), 1);
    assert_int_equal(g->err[0], 0);

    /* the broker claims a sequence gap: the idempotent producer cannot
     * guarantee order any more (0 = Produce) */
    rd_kafka_mock_push_request_errors(c.mc, 0, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    produce_ok(kp, topic, "k", "gap", NULL, 0, 2);
    int64_t deadline = mono_ms() + 10000;
    err[0] = 0;
    while (rc >= 0 && mono_ms() < deadline) {
        struct pollfd pfd = {.fd = kafka_event_fd(kp), .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - mono_ms())) <= 0)
            break;
        rc = kafka_poll(kp, collect, g, err, sizeof(err));
    }
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "fatal"));
    assert_non_null(strstr(err, "OUT_OF_ORDER_SEQUENCE_NUMBER"));
    /* and it stays fatal */
    assert_int_equal(kafka_poll(kp, collect, g, err, sizeof(err)), -1);
    kafka_producer_free(kp);
    kafka_set_logger(NULL);
    cluster_stop(&c);
    free(g);
}

/* A full local queue is not a failure: QUEUE_FULL, no report, and the
 * headers of the refused message are not leaked (ASan checks). */
static void test_queue_full(void **state)
{
    (void)state;
    struct got *g = calloc(1, sizeof(*g));
    char err[512];
    kafka_prop props[] = {{"queue.buffering.max.messages", "5"}};
    kafka_header h[] = {{"id", "x", 1}, {"type", "T", 1}};
    enum kafka_produce_result r = KAFKA_PRODUCE_OK;
    int accepted = 0;

    kafka_set_logger(quiet_log);
    /* nothing listens on port 1: messages stay queued */
    kafka_producer *kp = producer("127.0.0.1:1", props, 1);
    for (int i = 0; i < 10; i++) {
        r = kafka_produce(kp, "t", "k", 1, "v", 1, h, 2, (uint64_t)i + 1, err, sizeof(err));
        if (r != KAFKA_PRODUCE_OK)
            break;
        accepted++;
    }
    assert_int_equal(r, KAFKA_PRODUCE_QUEUE_FULL);
    assert_int_equal(accepted, 5);
    /* outq also counts error events waiting to be served */
    assert_true(kafka_outq_len(kp) >= 5);
    assert_int_equal(kafka_purge(kp), 0);
    assert_int_equal(wait_reports(kp, g, 5, 5000), 5);
    for (int i = 0; i < 5; i++) {
        assert_true(g->ticket[i] >= 1 && g->ticket[i] <= 5);
        assert_false(g->permanent[i]);
    }
    /* room again */
    r = kafka_produce(kp, "t", "k", 1, "v", 1, h, 2, 99, err, sizeof(err));
    assert_int_equal(r, KAFKA_PRODUCE_OK);
    assert_int_equal(kafka_purge(kp), 0);
    assert_int_equal(wait_reports(kp, g, 6, 5000), 6);
    kafka_producer_free(kp);
    kafka_set_logger(NULL);
    free(g);
}

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static int log_lines;
static int log_error_lines;

static void counting_log(int level, const char *fac, const char *msg)
{
    (void)fac;
    (void)msg;
    pthread_mutex_lock(&log_mu);
    log_lines++;
    if (level <= LOG_WARNING)
        log_error_lines++;
    pthread_mutex_unlock(&log_mu);
}

/* Logs and non-fatal errors go to the process-wide logger; with no broker
 * reachable the error event wakes the event fd and kafka_poll serves it. */
static void test_logger_and_error_events(void **state)
{
    (void)state;
    char err[512];
    int n = 0;
    struct got *g = calloc(1, sizeof(*g));

    kafka_set_logger(counting_log);
    /* port 1 on loopback: connection refused at once */
    kafka_producer *kp = producer("127.0.0.1:1", NULL, 0);
    int64_t deadline = mono_ms() + 5000;
    while (mono_ms() < deadline) {
        struct pollfd pfd = {.fd = kafka_event_fd(kp), .events = POLLIN};
        int64_t left = deadline - mono_ms();
        if (poll(&pfd, 1, (int)(left > 0 ? left : 0)) <= 0)
            break;
        assert_true(kafka_poll(kp, collect, g, err, sizeof(err)) >= 0);
        pthread_mutex_lock(&log_mu);
        n = log_error_lines;
        pthread_mutex_unlock(&log_mu);
        if (n > 0)
            break;
    }
    assert_true(n > 0);
    assert_int_equal(g->n, 0); /* errors are not delivery reports */
    kafka_producer_free(kp);
    kafka_set_logger(NULL);
    free(g);
}

static void test_list_properties(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    kafka_list_properties(f);
    fclose(f);
    assert_non_null(strstr(buf, "bootstrap.servers"));
    assert_non_null(strstr(buf, "enable.idempotence"));
    free(buf);
}

/* The reasons librdkafka 2.0.2 gave on a real SASL_SSL listener (wrong
 * password, a CA that did not sign the broker's certificate): one sentence
 * naming the property to fix, no password (none is given). */
static void test_explain_connection_errors(void **state)
{
    (void)state;
    char out[480];
    const kafka_security sec = {"SASL_SSL", "SCRAM-SHA-512", "relay", "/etc/ca.pem"};

    assert_true(kafka_explain_error(
        RD_KAFKA_RESP_ERR__AUTHENTICATION,
        "sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: Authentication failed "
        "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
        &sec, out, sizeof(out)));
    assert_non_null(strstr(out, "sasl.password"));
    assert_non_null(strstr(out, "\"relay\""));
    assert_non_null(strstr(out, "SCRAM-SHA-512"));
    assert_null(strstr(out, "ssl.ca.location"));

    assert_true(kafka_explain_error(
        RD_KAFKA_RESP_ERR__SSL,
        "sasl_ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL "
        "routines::certificate verify failed: broker certificate could not be verified, verify "
        "that ssl.ca.location is correctly configured",
        &sec, out, sizeof(out)));
    assert_non_null(strstr(out, "ssl.ca.location (now /etc/ca.pem)"));
    assert_null(strstr(out, "sasl.password"));

    /* an unset CA: the system's */
    const kafka_security nosec = {NULL, NULL, NULL, NULL};
    assert_true(kafka_explain_error(RD_KAFKA_RESP_ERR__SSL, "certificate verify failed", &nosec,
                                    out, sizeof(out)));
    assert_non_null(strstr(out, "system's CAs"));

    assert_true(kafka_explain_error(
        RD_KAFKA_RESP_ERR__TRANSPORT,
        "127.0.0.1:9093/bootstrap: Disconnected while requesting ApiVersion: might be caused by "
        "incorrect security.protocol configuration (connecting to a SSL listener?)",
        &nosec, out, sizeof(out)));
    assert_non_null(strstr(out, "security.protocol (now plaintext)"));

    /* a broker that is simply down is no configuration problem */
    assert_false(kafka_explain_error(RD_KAFKA_RESP_ERR__TRANSPORT,
                                     "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 "
                                     "failed: Connection refused",
                                     &sec, out, sizeof(out)));
    assert_false(kafka_explain_error(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, "1/1 brokers are down",
                                     &sec, out, sizeof(out)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_list_properties),
        cmocka_unit_test(test_produce_reports_tickets),
        cmocka_unit_test(test_same_key_same_partition),
        cmocka_unit_test(test_message_too_large_local),
        cmocka_unit_test(test_message_too_large_broker),
        cmocka_unit_test(test_brokers_down_transient),
        cmocka_unit_test(test_stalled_decision),
        cmocka_unit_test(test_timeout_fails_everything_at_once),
        cmocka_unit_test(test_purge_reports_everything),
        cmocka_unit_test(test_flush_serves_reports),
        cmocka_unit_test(test_flush_times_out),
        cmocka_unit_test(test_consumer_reads_back),
        cmocka_unit_test(test_logger_and_error_events),
        cmocka_unit_test(test_fatal_error),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_explain_connection_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
