/*
 * The test harness and the mock broker, checked on their own so a relay
 * test failure is never a harness bug in disguise: a real librdkafka
 * producer talks to the mock broker, its queued messages survive "down
 * all" and arrive after "up all", injected request errors are retried, and
 * the consumer reads back keys, values and headers.  The PostgreSQL side:
 * a throwaway cluster with the outbox schema, extra settings through
 * PGTMP_CONF, and a slot's confirmed_flush_lsn.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "tests/harness/harness.h"

static hx_broker broker;
static int delivered, failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        failed++;
    else
        delivered++;
}

static rd_kafka_t *new_producer(void)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    assert_int_equal(
        rd_kafka_conf_set(conf, "bootstrap.servers", broker.bootstraps, errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(
        rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "500", errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(rk);
    return rk;
}

static void produce(rd_kafka_t *rk, const char *topic, int from, int to)
{
    for (int i = from; i < to; i++) {
        char key[32], val[64], hdr[32];
        snprintf(key, sizeof(key), "k%d", i % 3);
        snprintf(val, sizeof(val), "{\"n\":%d}", i);
        snprintf(hdr, sizeof(hdr), "h%d", i);
        assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                           RD_KAFKA_V_KEY(key, strlen(key)),
                                           RD_KAFKA_V_VALUE(val, strlen(val)),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_HEADER("n", hdr, -1), RD_KAFKA_V_END),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    }
}

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0 || hx_broker_start(&broker, 3) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hx_broker_stop(&broker);
    hx_cleanup();
    return 0;
}

static void test_produce_consume(void **state)
{
    char topic[128];
    const char *topics[1] = {topic};
    hx_records recs = {0};
    rd_kafka_t *rk;
    int seen[20] = {0};

    (void)state;
    snprintf(topic, sizeof(topic), "itest.%s.harness", hx_run_id());
    delivered = failed = 0;
    rk = new_producer();
    produce(rk, topic, 0, 20);
    assert_int_equal(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(delivered, 20);
    rd_kafka_destroy(rk);

    assert_int_equal(hx_consume(broker.bootstraps, topics, 1, 20, 30000, &recs), 20);
    for (size_t i = 0; i < recs.n; i++) {
        int n = -1;
        const hx_header *h = hx_record_header(&recs.v[i], "n");
        char want[32];
        assert_int_equal(sscanf(recs.v[i].value, "{\"n\":%d}", &n), 1);
        assert_true(n >= 0 && n < 20);
        seen[n]++;
        snprintf(want, sizeof(want), "k%d", n % 3);
        assert_string_equal(recs.v[i].key, want);
        assert_non_null(h);
        snprintf(want, sizeof(want), "h%d", n);
        assert_string_equal(h->value, want);
        assert_string_equal(recs.v[i].topic, topic);
    }
    for (int i = 0; i < 20; i++)
        assert_int_equal(seen[i], 1);
    hx_records_free(&recs);
}

static void test_down_up_delivers_queued(void **state)
{
    char topic[128];
    const char *topics[1] = {topic};
    hx_records recs = {0};
    rd_kafka_t *rk;

    (void)state;
    if (broker.external)
        skip();
    snprintf(topic, sizeof(topic), "itest.%s.downup", hx_run_id());
    delivered = failed = 0;
    rk = new_producer();
    produce(rk, topic, 0, 5);
    assert_int_equal(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(delivered, 5);

    assert_int_equal(hx_broker_cmd(&broker, "down all"), 0);
    produce(rk, topic, 5, 15);
    /* nothing can be acknowledged while every broker is down */
    for (int i = 0; i < 30; i++)
        rd_kafka_poll(rk, 100);
    assert_int_equal(delivered, 5);
    assert_int_equal(failed, 0);
    assert_int_equal(rd_kafka_outq_len(rk), 10);

    assert_int_equal(hx_broker_cmd(&broker, "up all"), 0);
    assert_int_equal(rd_kafka_flush(rk, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(delivered, 15);
    assert_int_equal(failed, 0);
    rd_kafka_destroy(rk);

    assert_int_equal(hx_consume(broker.bootstraps, topics, 1, 15, 30000, &recs), 15);
    hx_records_free(&recs);
}

static void test_injected_errors_are_retried(void **state)
{
    char topic[128];
    const char *topics[1] = {topic};
    hx_records recs = {0};
    rd_kafka_t *rk;

    (void)state;
    if (broker.external)
        skip();
    snprintf(topic, sizeof(topic), "itest.%s.errs", hx_run_id());
    assert_int_equal(hx_broker_cmd(&broker, "topic %s 2", topic), 0);
    assert_int_not_equal(hx_broker_cmd(&broker, "bogus"), 0);
    delivered = failed = 0;
    rk = new_producer();
    /* Produce (0) fails three times with NOT_LEADER_OR_FOLLOWER (6): retriable */
    assert_int_equal(hx_broker_cmd(&broker, "err 0 6 3"), 0);
    produce(rk, topic, 0, 4);
    assert_int_equal(rd_kafka_flush(rk, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(delivered, 4);
    rd_kafka_destroy(rk);
    assert_int_equal(hx_consume(broker.bootstraps, topics, 1, 4, 30000, &recs), 4);
    for (size_t i = 0; i < recs.n; i++)
        assert_true(recs.v[i].partition == 0 || recs.v[i].partition == 1);
    hx_records_free(&recs);
}

static void test_postgres(void **state)
{
    hx_pg pg, rep;
    PGconn *conn;
    char buf[64];
    uint64_t before, confirmed = 0;

    (void)state;
    assert_int_equal(hx_pg_start(&pg, "harness", NULL, true), 0);
    conn = hx_connect(pg.conninfo);
    assert_non_null(conn);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf), "SHOW wal_level"), 1);
    assert_string_equal(buf, "logical");
    assert_int_equal(hx_slot_confirmed(conn, "nope", &confirmed), 0);
    assert_int_equal(hx_current_lsn(conn, false, &before), 0);
    assert_int_equal(
        hx_exec(conn, "SELECT pg_create_logical_replication_slot('hslot', 'pgoutput')"), 0);
    assert_int_equal(hx_slot_confirmed(conn, "hslot", &confirmed), 1);
    assert_true(confirmed >= before);
    assert_int_equal(hx_exec(conn, "INSERT INTO outbox (aggregatetype, aggregateid, type) "
                                   "VALUES ('a', '1', 't')"),
                     0);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf),
                               "SELECT count(*) FROM pg_publication_tables "
                               "WHERE pubname = 'outbox_pub' AND tablename = 'outbox'"),
                     1);
    assert_string_equal(buf, "1");
    PQfinish(conn);
    hx_pg_stop(&pg);

    assert_int_equal(hx_pg_start(&rep, "replica", "wal_level = replica", false), 0);
    conn = hx_connect(rep.conninfo);
    assert_non_null(conn);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf), "SHOW wal_level"), 1);
    assert_string_equal(buf, "replica");
    PQfinish(conn);
    hx_pg_stop(&rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_produce_consume),
        cmocka_unit_test(test_down_up_delivers_queued),
        cmocka_unit_test(test_injected_errors_are_retried),
        cmocka_unit_test(test_postgres),
    };
    return cmocka_run_group_tests_name("harness", tests, setup, teardown);
}
