/*
 * Faults only a real Apache Kafka cluster produces (scripts/kafka): these
 * tests run when KAFKA_DIR names a cluster scripts/kafka started and
 * KAFKA_BROKERS its bootstrap list (scripts/run-tests does both), and skip
 * against the mock broker.
 *
 *   - NOT_ENOUGH_REPLICAS: a topic with min.insync.replicas=3 and one of its
 *     three replicas stopped: the relay holds (nothing readable, the slot
 *     not past the rows) and delivers everything once the broker is back.
 *   - A record larger than the topic's max.message.bytes: the broker refuses
 *     it; it goes to the dead-letter topic with the reason, the slot moves
 *     on, later rows flow.
 *   - Automatic topic creation disabled on the brokers and the topic
 *     missing: the relay holds and says which topic; once the topic is
 *     created everything is delivered, nothing dead-lettered.
 *
 * Partition-leader kill -9, rolling restarts, controller kill and a cut
 * network run under load in scripts/chaos --real, with its verifier.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "tests/harness/harness.h"

static hx_pg pg;
static PGconn *conn;
static const char *brokers;   /* $KAFKA_BROKERS */
static const char *kafka_dir; /* $KAFKA_DIR */
static char noauto_dir[600];  /* a cluster this binary started, when not "" */

static bool real_cluster(void)
{
    return brokers && *brokers && kafka_dir && *kafka_dir;
}

static int setup(void **state)
{
    (void)state;
    brokers = getenv("KAFKA_BROKERS");
    kafka_dir = getenv("KAFKA_DIR");
    if (hx_init() != 0)
        return -1;
    if (!real_cluster())
        return 0;
    if (hx_pg_start(&pg, "kafka", NULL, true) != 0)
        return -1;
    conn = hx_connect(pg.conninfo);
    return conn ? 0 : -1;
}

static const char *root(void)
{
    const char *r = getenv("OBX_ROOT");
    return r && *r ? r : ".";
}

/* scripts/kafka VERB [ARG] on the cluster in dir; 0 or -1. */
static int kafka_ctl(const char *dir, const char *verb, const char *arg)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "KAFKA_DIR='%s' KAFKA_QUIET=1 '%s/scripts/kafka' %s %s >&2", dir,
             root(), verb, arg ? arg : "");
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "itest_kafka: \"%s\" failed (%d)\n", cmd, rc);
    return rc == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(conn);
    conn = NULL;
    if (noauto_dir[0]) {
        (void)kafka_ctl(noauto_dir, "stop", noauto_dir);
        noauto_dir[0] = '\0';
    }
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

/* Create a topic with the Admin API: partitions, replication factor and
 * topic configs as NULL-terminated name, value pairs. */
static int create_topic(const char *bs, const char *name, int partitions, int rf,
                        const char *const *configs)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    int rc = -1;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", bs, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "itest_kafka: %s\n", errstr);
        return -1;
    }
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(name, partitions, rf, errstr, sizeof(errstr));
    for (; configs && configs[0]; configs += 2)
        rd_kafka_NewTopic_set_config(nt, configs[0], configs[1]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opt, 30000, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    if (!ev) {
        fprintf(stderr, "itest_kafka: no CreateTopics result within 60 s\n");
    } else if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "itest_kafka: CreateTopics: %s\n", rd_kafka_event_error_string(ev));
    } else {
        size_t n;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        if (n == 1 && rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_NO_ERROR)
            rc = 0;
        else
            fprintf(stderr, "itest_kafka: create %s: %s\n", name,
                    n ? rd_kafka_topic_result_error_string(res[0]) : "no result");
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    /* let every broker learn the topic before a producer asks */
    hx_sleep_ms(500);
    return rc;
}

static void create_slot(const char *slot)
{
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot), 0);
}

/* n transactions of rows rows each, aggregate type agg, aggregate ids
 * k0..k4, payload {"i": i} in write order. */
static void write_rows(const char *agg, int txns, int rows)
{
    int i = 0;
    for (int t = 0; t < txns; t++) {
        assert_int_equal(hx_exec(conn, "BEGIN"), 0);
        for (int r = 0; r < rows; r++, i++)
            assert_int_equal(
                hx_exec(conn,
                        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                        " VALUES ('%s', 'k%d', 'Tested', '{\"i\": %d}')",
                        agg, i % 5, i),
                0);
        assert_int_equal(hx_exec(conn, "COMMIT"), 0);
    }
}

/* confirmed_flush_lsn of slot (0 when none). */
static uint64_t confirmed(const char *slot)
{
    uint64_t lsn = 0;
    assert_true(hx_slot_confirmed(conn, slot, &lsn) >= 0);
    return lsn;
}

/* Wait up to timeout_ms for the slot to reach target; true when it did. */
static bool wait_confirmed(const char *slot, uint64_t target, int timeout_ms)
{
    int64_t deadline = hx_now_ms() + timeout_ms;
    while (hx_now_ms() < deadline) {
        if (confirmed(slot) >= target)
            return true;
        hx_sleep_ms(200);
    }
    return false;
}

/* Every payload i in 0..n-1 read back exactly once... or more (at least
 * once), and per key in increasing order. */
static void assert_all_in_order(const hx_records *recs, int n)
{
    int *seen = calloc((size_t)n, sizeof(int));
    int last[5] = {-1, -1, -1, -1, -1};
    assert_non_null(seen);
    for (size_t r = 0; r < recs->n; r++) {
        json_error_t jerr;
        json_t *v = json_loadb(recs->v[r].value, recs->v[r].value_len, 0, &jerr);
        assert_non_null(v);
        int i = (int)json_integer_value(json_object_get(json_object_get(v, "payload"), "i"));
        json_decref(v);
        assert_true(i >= 0 && i < n);
        int k = recs->v[r].key[1] - '0';
        assert_true(k >= 0 && k < 5);
        if (seen[i]++ == 0) {
            assert_true(i > last[k]); /* first copies per aggregate in order */
            last[k] = i;
        }
    }
    for (int i = 0; i < n; i++)
        assert_true(seen[i] >= 1);
    free(seen);
}

/* extra: more options, NULL-terminated (or NULL) */
static void start_relay(hx_proc *relay, const char *tag, const char *bs, const char *slot,
                        const char *tmpl, const char *dlq, const char *const *extra)
{
    const char *args[32] = {"run", "-d",      pg.conninfo, "-b",          bs, "--slot",
                            slot,  "--topic", tmpl,        "--dlq-topic", dlq};
    size_t n = 11;
    for (; extra && *extra && n < 31; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    assert_int_equal(hx_relay_start(relay, tag, args), 0);
}

static void stop_relay(hx_proc *relay)
{
    assert_int_equal(hx_proc_signal(relay, SIGTERM), 0);
    int rc = hx_proc_wait(relay, 30000);
    if (rc != 0)
        hx_proc_dump(relay, "the relay did not stop cleanly");
    assert_int_equal(rc, 0);
}

static void test_not_enough_replicas_holds_then_delivers(void **state)
{
    (void)state;
    if (!real_cluster())
        skip();
    char tmpl[200], topic[200], dlq[200];
    const char *slot = "kafka_isr";
    const char *cfg[] = {"min.insync.replicas", "3", NULL};
    hx_proc relay;
    hx_records recs = {0};
    uint64_t end;
    const int n = 60;

    snprintf(tmpl, sizeof(tmpl), "itest.%s.isr.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.isr.order", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.isr.dlq", hx_run_id());
    assert_int_equal(create_topic(brokers, topic, 3, 3, cfg), 0);
    assert_int_equal(create_topic(brokers, dlq, 1, 3, NULL), 0);
    create_slot(slot);
    start_relay(&relay, "isr", brokers, slot, tmpl, dlq, NULL);
    /* a clean stop takes node 3 out of every ISR at once: 2 < 3 in sync */
    assert_int_equal(kafka_ctl(kafka_dir, "stop-node", "3"), 0);
    write_rows("order", 6, n / 6);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);

    /* the relay holds: the slot stays before the rows, nothing readable */
    hx_sleep_ms(8000);
    assert_true(hx_proc_running(&relay));
    assert_true(confirmed(slot) < end);
    const char *t[] = {topic};
    assert_true(hx_consume(brokers, t, 1, 0, 15000, &recs) >= 0);
    assert_int_equal(recs.n, 0);

    /* the broker returns: everything arrives, in order per aggregate */
    assert_int_equal(kafka_ctl(kafka_dir, "start-node", "3"), 0);
    assert_int_equal(kafka_ctl(kafka_dir, "wait-ready", "120"), 0);
    if (!wait_confirmed(slot, end, 120000))
        hx_proc_dump(&relay, "the slot did not reach the end after the broker returned");
    assert_true(confirmed(slot) >= end);
    assert_true(hx_consume(brokers, t, 1, (size_t)n, 60000, &recs) >= n);
    assert_all_in_order(&recs, n);
    hx_records_free(&recs);
    const char *d[] = {dlq};
    assert_true(hx_consume(brokers, d, 1, 0, 15000, &recs) >= 0);
    assert_int_equal(recs.n, 0);
    hx_records_free(&recs);
    stop_relay(&relay);
    /* in sync again before the next test */
    assert_int_equal(kafka_ctl(kafka_dir, "wait-isr", "120"), 0);
}

static const char *header(const hx_record *rec, const char *name)
{
    const hx_header *h = hx_record_header(rec, name);
    return h && h->value ? h->value : NULL;
}

static void test_record_too_large_for_topic(void **state)
{
    (void)state;
    if (!real_cluster())
        skip();
    char tmpl[200], small[200], good[200], dlq[200];
    const char *slot = "kafka_size";
    const char *cfg[] = {"max.message.bytes", "4096", NULL};
    hx_records recs = {0};

    snprintf(tmpl, sizeof(tmpl), "itest.%s.size.{aggregate_type}", hx_run_id());
    snprintf(small, sizeof(small), "itest.%s.size.small", hx_run_id());
    snprintf(good, sizeof(good), "itest.%s.size.good", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.size.dlq", hx_run_id());
    assert_int_equal(create_topic(brokers, small, 1, 3, cfg), 0);
    create_slot(slot);
    /* a row the small topic takes, then (separately: the broker judges a
     * whole batch) one it refuses, then rows for another topic */
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                   " VALUES ('small', 's1', 'Fits', '{\"n\": 1}')"),
                     0);
    assert_int_equal(
        hx_relay_run_to_end(conn, pg.conninfo, brokers, "size1", slot,
                            (const char *const[]){"--topic", tmpl, "--dlq-topic", dlq, NULL}),
        0);
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                   " VALUES ('small', 's2', 'TooBig',"
                                   "  jsonb_build_object('big', repeat('x', 20000)));"
                                   "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)"
                                   " VALUES ('good', 'g1', 'After', '{\"n\": 3}')"),
                     0);
    assert_int_equal(
        hx_relay_run_to_end(conn, pg.conninfo, brokers, "size2", slot,
                            (const char *const[]){"--topic", tmpl, "--dlq-topic", dlq, NULL}),
        0);

    const char *t1[] = {small};
    assert_true(hx_consume(brokers, t1, 1, 1, 30000, &recs) >= 1);
    assert_int_equal(recs.n, 1);
    assert_string_equal(recs.v[0].key, "s1");
    hx_records_free(&recs);
    const char *t2[] = {good};
    assert_true(hx_consume(brokers, t2, 1, 1, 30000, &recs) >= 1);
    assert_int_equal(recs.n, 1);
    assert_string_equal(recs.v[0].key, "g1");
    hx_records_free(&recs);
    const char *t3[] = {dlq};
    assert_true(hx_consume(brokers, t3, 1, 1, 30000, &recs) >= 1);
    assert_int_equal(recs.n, 1);
    const char *err = header(&recs.v[0], "error");
    assert_non_null(err);
    fprintf(stderr, "# dead-letter reason: %s\n", err);
    assert_non_null(strstr(err, "refused"));
    assert_non_null(strstr(err, "too large"));
    assert_string_equal(header(&recs.v[0], "original-topic"), small);
    /* the refused record itself is in the dead-letter record */
    assert_non_null(strstr(recs.v[0].value, "xxxxxxxxxx"));
    hx_records_free(&recs);
}

static void test_missing_topic_without_auto_create(void **state)
{
    (void)state;
    if (!real_cluster())
        skip();
    char tmpl[200], topic[200], dlq[200], cmd[1400], bs[256] = "";
    const char *slot = "kafka_noauto";
    hx_proc relay;
    hx_records recs = {0};
    uint64_t end;
    const int n = 20;

    /* a one-node cluster of its own: auto.create.topics.enable=false (in
     * OBX_TEST_TMP, where scripts/run-integration looks for leftovers) */
    const char *tmp = getenv("OBX_TEST_TMP");
    snprintf(noauto_dir, sizeof(noauto_dir), "%s/kafka-noauto", tmp && *tmp ? tmp : hx_tmpdir());
    snprintf(cmd, sizeof(cmd), "'%s/scripts/kafka' start -n 1 --no-auto-create -d '%s' | tail -n1",
             root(), noauto_dir);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    if (!fgets(bs, sizeof(bs), f))
        bs[0] = '\0';
    int rc = pclose(f);
    bs[strcspn(bs, "\n")] = '\0';
    assert_int_equal(rc, 0);
    assert_true(bs[0] != '\0');

    snprintf(tmpl, sizeof(tmpl), "itest.%s.noauto.{aggregate_type}", hx_run_id());
    snprintf(topic, sizeof(topic), "itest.%s.noauto.order", hx_run_id());
    snprintf(dlq, sizeof(dlq), "itest.%s.noauto.dlq", hx_run_id());
    assert_int_equal(create_topic(bs, dlq, 1, 1, NULL), 0);
    create_slot(slot);
    /* librdkafka gives a topic it does not find 3 s (default 30 s) before
     * it fails its messages as unknown */
    start_relay(&relay, "noauto", bs, slot, tmpl, dlq,
                (const char *const[]){"-X", "topic.metadata.propagation.max.ms=3000", NULL});
    write_rows("order", 4, n / 4);
    assert_int_equal(hx_current_lsn(conn, true, &end), 0);

    /* the relay holds (long enough for librdkafka to give up on the topic
     * a few times) and names the topic */
    hx_sleep_ms(12000);
    assert_true(hx_proc_running(&relay));
    if (confirmed(slot) >= end)
        hx_proc_dump(&relay, "the slot moved past rows for a topic that does not exist");
    assert_true(confirmed(slot) < end);
    char *log = hx_proc_stderr(&relay);
    assert_non_null(log);
    if (!strstr(log, topic))
        hx_proc_dump(&relay, "the log does not name the missing topic");
    assert_non_null(strstr(log, topic));
    free(log);

    /* the operator creates it: everything arrives, nothing dead-lettered */
    assert_int_equal(create_topic(bs, topic, 2, 1, NULL), 0);
    if (!wait_confirmed(slot, end, 90000))
        hx_proc_dump(&relay, "the slot did not reach the end after the topic was created");
    assert_true(confirmed(slot) >= end);
    const char *t[] = {topic};
    assert_true(hx_consume(bs, t, 1, (size_t)n, 30000, &recs) >= n);
    assert_all_in_order(&recs, n);
    hx_records_free(&recs);
    const char *d[] = {dlq};
    assert_true(hx_consume(bs, d, 1, 0, 15000, &recs) >= 0);
    assert_int_equal(recs.n, 0);
    hx_records_free(&recs);
    stop_relay(&relay);
    assert_int_equal(kafka_ctl(noauto_dir, "stop", noauto_dir), 0);
    noauto_dir[0] = '\0';
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_enough_replicas_holds_then_delivers),
        cmocka_unit_test(test_record_too_large_for_topic),
        cmocka_unit_test(test_missing_topic_without_auto_create),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
