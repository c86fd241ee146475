/* oneshot: the per-topic counts and their cap, the first failure's text,
 * what a delivery report counts, and the verdict at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cdc/oneshot.h"

static void test_count_topic(void **state)
{
    (void)state;
    oneshot o = {0};

    oneshot_count_topic(&o, "orders");
    oneshot_count_topic(&o, "users");
    oneshot_count_topic(&o, "orders");
    assert_int_equal(o.ntopics, 2);
    assert_string_equal(o.topics[0].topic, "orders");
    assert_int_equal(o.topics[0].n, 2);
    assert_string_equal(o.topics[1].topic, "users");
    assert_int_equal(o.topics[1].n, 1);
    oneshot_clear(&o);
    assert_int_equal(o.ntopics, 0);
    assert_null(o.topics);
}

static void test_count_topic_cap(void **state)
{
    (void)state;
    oneshot o = {0};
    char t[32];

    for (int i = 0; i < ONESHOT_MAX_TOPICS; i++) {
        snprintf(t, sizeof(t), "t%d", i);
        oneshot_count_topic(&o, t);
    }
    assert_int_equal(o.ntopics, ONESHOT_MAX_TOPICS);
    /* a new topic past the cap goes uncounted, a known one still counts */
    oneshot_count_topic(&o, "one-too-many");
    assert_int_equal(o.ntopics, ONESHOT_MAX_TOPICS);
    for (size_t i = 0; i < o.ntopics; i++)
        assert_string_not_equal(o.topics[i].topic, "one-too-many");
    oneshot_count_topic(&o, "t4095");
    assert_string_equal(o.topics[ONESHOT_MAX_TOPICS - 1].topic, "t4095");
    assert_int_equal(o.topics[ONESHOT_MAX_TOPICS - 1].n, 2);
    oneshot_clear(&o);
}

static void test_print_topics(void **state)
{
    (void)state;
    oneshot o = {0};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    oneshot_count_topic(&o, "b");
    oneshot_count_topic(&o, "a");
    oneshot_count_topic(&o, "b");
    oneshot_print_topics(&o, f);
    assert_int_equal(fclose(f), 0);
    assert_string_equal(buf, "b\t2\na\t1\n");
    free(buf);
    oneshot_clear(&o);
}

static void test_first_failure(void **state)
{
    (void)state;
    oneshot o = {0};

    oneshot_note_failure(&o, "orders", "Local: Message timed out");
    oneshot_note_failure(&o, "users", "Broker: Unknown topic");
    assert_int_equal(o.failed, 2);
    assert_string_equal(o.first_failure, "delivery to \"orders\" failed: Local: Message timed out");

    oneshot p = {0};
    oneshot_note_failure(&p, NULL, NULL);
    assert_int_equal(p.failed, 1);
    assert_string_equal(p.first_failure, "delivery to \"?\" failed: unknown error");
}

static void test_fatal_first_wins(void **state)
{
    (void)state;
    oneshot o = {0};

    oneshot_fatal(&o, "producer failed: %s", "boom");
    oneshot_fatal(&o, "interrupted");
    assert_string_equal(o.fatal, "producer failed: boom");
}

static void test_reports(void **state)
{
    (void)state;
    oneshot o = {.inflight_bytes = 100};
    sink_report ack = {
        .ticket = 1, .verdict = SINK_DELIVERED, .offset = 12, .len = 30, .topic = "orders"};
    sink_report lost = {.ticket = 2,
                        .verdict = SINK_RETRY,
                        .err = -192,
                        .errstr = "Local: Message timed out",
                        .offset = -1,
                        .len = 30,
                        .topic = "orders"};
    sink_report refused = {.ticket = 3,
                           .verdict = SINK_REFUSED,
                           .err = 10,
                           .errstr = "Broker: Message size too large",
                           .permanent = true,
                           .offset = -1,
                           .len = 50,
                           .topic = "orders",
                           .value = "v",
                           .valuelen = 1};

    oneshot_on_report(&ack, &o);
    assert_int_equal(o.acked, 1);
    assert_int_equal(o.failed, 0);
    assert_int_equal(o.inflight_bytes, 70);

    oneshot_on_report(&lost, &o);
    assert_int_equal(o.acked, 1);
    assert_int_equal(o.failed, 1);
    assert_string_equal(o.first_failure, "delivery to \"orders\" failed: Local: Message timed out");
    assert_int_equal(o.inferred, 0);
    assert_int_equal(o.inflight_bytes, 40);

    /* refused for good: queued for its dead letter, not a failure; the
     * in-flight bytes never go below 0 */
    oneshot_on_report(&refused, &o);
    assert_int_equal(o.failed, 1);
    assert_int_equal(o.refused.n, 1);
    assert_int_equal(o.inflight_bytes, 0);

    /* a dead letter refused in turn is a failure */
    refused.ticket |= DEADLETTER_TICKET;
    oneshot_on_report(&refused, &o);
    assert_int_equal(o.failed, 2);
    assert_int_equal(o.refused.n, 1);
    oneshot_clear(&o);
    assert_true(deadletter_queue_empty(&o.refused));
}

/*
 * An acknowledgement without an offset (librdkafka inferred it from a later
 * request or a duplicate-sequence reply) is not proof the record was
 * written: replay and backfill fail on it (exit 1, run it again), as `run`
 * sends the event again.  They used to count it as acknowledged and exit 0.
 */
static void test_inferred_ack_is_not_delivery(void **state)
{
    (void)state;
    oneshot o = {.records = 2};
    /* as publish/kafka.c reports it: acknowledged, offset unknown */
    sink_report r = {.ticket = 1,
                     .verdict = sink_classify(true, -1001, false),
                     .inferred = true,
                     .offset = -1001,
                     .len = 10,
                     .topic = "orders"};

    assert_int_equal(r.verdict, SINK_RETRY);
    oneshot_on_report(&r, &o);
    r.ticket = 2;
    r.offset = 5;
    r.inferred = false;
    r.verdict = sink_classify(true, 5, false);
    oneshot_on_report(&r, &o);
    assert_int_equal(o.acked, 1);
    assert_int_equal(o.failed, 1);
    assert_int_equal(o.inferred, 1);
    assert_non_null(strstr(o.first_failure, "without an offset"));
    assert_false(oneshot_acked_all(o.records, o.acked, o.failed, 0));
    oneshot_clear(&o);
}

static void test_dry_run_produce_counts(void **state)
{
    (void)state;
    oneshot o = {0};
    envelope_msg m = {.topic = "orders"};
    char err[64] = "";

    assert_int_equal(oneshot_produce(&o, &m, 1, err, sizeof(err)), SINK_PRODUCE_OK);
    assert_int_equal(oneshot_produce(&o, &m, 2, err, sizeof(err)), SINK_PRODUCE_OK);
    assert_int_equal(o.ntopics, 1);
    assert_int_equal(o.topics[0].n, 2);
    assert_int_equal(o.records, 0); /* the caller counts its records */
    oneshot_clear(&o);
}

static void test_acked_all(void **state)
{
    (void)state;
    assert_true(oneshot_acked_all(0, 0, 0, 0));
    assert_true(oneshot_acked_all(3, 3, 0, 0));
    assert_false(oneshot_acked_all(3, 2, 0, 0)); /* one unacknowledged */
    assert_false(oneshot_acked_all(3, 3, 1, 0)); /* a failure */
    assert_false(oneshot_acked_all(3, 3, 0, 1)); /* still queued */
}

static void test_verdict(void **state)
{
    (void)state;
    oneshot o = {.records = 5, .acked = 3};

    /* a dry run has no producer: only a fatal error fails it */
    assert_true(oneshot_complete(&o));
    assert_int_equal(oneshot_missing(&o), 2);
    oneshot_fatal(&o, "interrupted");
    assert_false(oneshot_complete(&o));

    oneshot p = {.records = 2, .acked = 3};
    assert_int_equal(oneshot_missing(&p), 0);
}

static void test_clear_null(void **state)
{
    (void)state;
    oneshot o = {0};
    oneshot_clear(NULL);
    oneshot_clear(&o);
    oneshot_clear(&o);
}

static void test_opt_value(void **state)
{
    (void)state;
    char *argv[] = {"outbox-relay", "--from", "0/10", "--to=0/20", "--topic", "x", "--from"};
    int argc = 7, i = 1;
    bool missing;

    assert_string_equal(oneshot_opt_value(argc, argv, &i, "--from", &missing), "0/10");
    assert_false(missing);
    assert_int_equal(i, 2);
    i = 3;
    assert_string_equal(oneshot_opt_value(argc, argv, &i, "--to", &missing), "0/20");
    assert_int_equal(i, 3);
    i = 4; /* --topic is not --to */
    assert_null(oneshot_opt_value(argc, argv, &i, "--to", &missing));
    assert_false(missing);
    assert_int_equal(i, 4);
    i = 6; /* last, without its value */
    assert_null(oneshot_opt_value(argc, argv, &i, "--from", &missing));
    assert_true(missing);
    assert_int_equal(i, 6);
}

static void test_option_index(void **state)
{
    (void)state;
    static const char *const names[] = {"--start-lsn", "--http"};

    assert_int_equal(oneshot_option_index("--start-lsn", names, 2), 0);
    assert_int_equal(oneshot_option_index("--http=:8080", names, 2), 1);
    assert_int_equal(oneshot_option_index("--https", names, 2), -1);
    assert_int_equal(oneshot_option_index("--start", names, 2), -1);
    assert_int_equal(oneshot_option_index("--http", names, 0), -1);
}

static void test_usage_fail(void **state)
{
    (void)state;
    char err[32];

    assert_int_equal(oneshot_usage_fail(err, sizeof(err), "bad %s", "--to"), 2);
    assert_string_equal(err, "bad --to");
}

static void test_argv_dry_run(void **state)
{
    (void)state;
    char arg_t[] = "-t", arg_tv[] = "public.outbox", arg_b[] = "-b", arg_bv[] = "k:9092";
    char **v = oneshot_argv_new(4);
    int n = 1;

    assert_non_null(v);
    assert_string_equal(v[0], "outbox-relay");
    v[n++] = arg_t;
    v[n++] = arg_tv;
    v[n++] = arg_b;
    v[n++] = arg_bv;
    n = oneshot_argv_dry_run(v, n);
    assert_int_equal(n, 7);
    /* the placeholder first, so the -b given on the line comes later and wins */
    assert_string_equal(v[1], "-b");
    assert_string_equal(v[2], "localhost:9092");
    assert_string_equal(v[3], "-t");
    assert_string_equal(v[4], "public.outbox");
    assert_string_equal(v[5], "-b");
    assert_string_equal(v[6], "k:9092");
    assert_null(v[7]); /* room for the final NULL */
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_topic),
        cmocka_unit_test(test_count_topic_cap),
        cmocka_unit_test(test_print_topics),
        cmocka_unit_test(test_first_failure),
        cmocka_unit_test(test_fatal_first_wins),
        cmocka_unit_test(test_reports),
        cmocka_unit_test(test_inferred_ack_is_not_delivery),
        cmocka_unit_test(test_dry_run_produce_counts),
        cmocka_unit_test(test_acked_all),
        cmocka_unit_test(test_verdict),
        cmocka_unit_test(test_clear_null),
        cmocka_unit_test(test_opt_value),
        cmocka_unit_test(test_option_index),
        cmocka_unit_test(test_usage_fail),
        cmocka_unit_test(test_argv_dry_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
