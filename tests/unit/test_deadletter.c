/* deadletter: the verdict on a delivery report, what is kept of a refused
 * record, the queue's order, and the dead-letter record built for it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cdc/deadletter.h"

static sink_report report(const char *topic, const char *key, const char *value, size_t valuelen)
{
    return (sink_report){.ticket = 42,
                         .err = 10,
                         .errstr = "Broker: Message size too large",
                         .permanent = true,
                         .verdict = SINK_REFUSED,
                         .offset = -1,
                         .topic = topic,
                         .key = key,
                         .keylen = key ? strlen(key) : 0,
                         .value = value,
                         .valuelen = valuelen};
}

static const char *header(const envelope_msg *m, const char *name)
{
    for (int i = 0; i < m->nheaders; i++)
        if (strcmp(m->headers[i].name, name) == 0)
            return m->headers[i].value;
    return NULL;
}

/* A report as a sink makes it: its verdict from sink_classify(). */
static sink_report verdict_of(uint64_t ticket, int err, int64_t offset, bool permanent)
{
    return (sink_report){.ticket = ticket,
                         .err = err,
                         .offset = offset,
                         .permanent = permanent,
                         .verdict = sink_classify(err == 0, offset, permanent)};
}

static void test_classify(void **state)
{
    (void)state;
    sink_report r = verdict_of(7, 0, 12, false);

    assert_int_equal(deadletter_classify(&r), SINK_DELIVERED);
    r = verdict_of(7, 0, 0, false);
    assert_int_equal(deadletter_classify(&r), SINK_DELIVERED);
    /* inferred by the producer: not proof, for every command alike */
    r = verdict_of(7, 0, -1, false);
    assert_int_equal(deadletter_classify(&r), SINK_RETRY);
    r = verdict_of(7, 10, -1, true);
    assert_int_equal(deadletter_classify(&r), SINK_REFUSED);
    /* a refused dead letter is a failure, never a dead letter of a dead letter */
    r = verdict_of(7 | DEADLETTER_TICKET, 10, -1, true);
    assert_int_equal(deadletter_classify(&r), SINK_RETRY);
    /* a transient failure (timed out on the way) is sent again, not dead-lettered */
    r = verdict_of(7, 10, -1, false);
    assert_int_equal(deadletter_classify(&r), SINK_RETRY);
    /* an acknowledged dead letter is acknowledged */
    r = verdict_of(7 | DEADLETTER_TICKET, 0, 3, false);
    assert_int_equal(deadletter_classify(&r), SINK_DELIVERED);
}

static void test_refused_keeps_the_record(void **state)
{
    (void)state;
    /* a value with a NUL inside: copied by length, not as a string */
    static const char value[] = "{\"n\":\0 1}";
    sink_report r = report("orders", "a1", value, sizeof(value) - 1);
    deadletter_refused *f =
        deadletter_refused_new(&r, "0/16B3748", 9, "public.outbox", 13, UINT64_C(5));

    assert_non_null(f);
    assert_int_equal(f->ticket, 42);
    assert_int_equal(f->epoch, 5);
    assert_int_equal(f->lsn, UINT64_C(0x16B3748));
    assert_string_equal(f->table, "public.outbox");
    assert_string_equal(f->topic, "orders");
    assert_int_equal(f->keylen, 2);
    assert_memory_equal(f->key, "a1", 2);
    assert_int_equal(f->valuelen, sizeof(value) - 1);
    assert_memory_equal(f->value, value, sizeof(value) - 1);
    assert_false(f->value_omitted);
    assert_string_equal(f->reason, "the broker refused the record: Broker: Message size too large");
    assert_null(f->next);
    deadletter_refused_free(f);
    deadletter_refused_free(NULL);
}

static void test_refused_without_headers_key_or_reason(void **state)
{
    (void)state;
    sink_report r = report(NULL, NULL, NULL, 0);
    r.errstr = NULL;
    deadletter_refused *f = deadletter_refused_new(&r, NULL, 0, NULL, 0, 0);

    assert_non_null(f);
    assert_int_equal(f->lsn, 0);
    assert_string_equal(f->table, "");
    assert_string_equal(f->topic, "");
    assert_null(f->key);
    assert_null(f->value); /* a NULL value (tombstone) is not an omitted one */
    assert_false(f->value_omitted);
    assert_string_equal(f->reason, "the broker refused the record: unknown error");
    deadletter_refused_free(f);

    /* an lsn header that does not parse, a table header too long to be a name */
    char longtable[OUTBOX_QUALNAME_MAX + 10];
    memset(longtable, 't', sizeof(longtable));
    r = report("t", "k", "v", 1);
    f = deadletter_refused_new(&r, "nonsense", 8, longtable, sizeof(longtable), 0);
    assert_non_null(f);
    assert_int_equal(f->lsn, 0);
    assert_string_equal(f->table, "");
    deadletter_refused_free(f);
}

static void test_value_cap(void **state)
{
    (void)state;
    char *big = malloc(DEADLETTER_VALUE_MAX + 1);
    assert_non_null(big);
    memset(big, 'x', DEADLETTER_VALUE_MAX + 1);

    /* exactly at the cap: kept */
    sink_report r = report("t", "k", big, DEADLETTER_VALUE_MAX);
    deadletter_refused *f = deadletter_refused_new(&r, NULL, 0, NULL, 0, 0);
    assert_non_null(f);
    assert_non_null(f->value);
    assert_false(f->value_omitted);
    deadletter_refused_free(f);

    /* one byte over: left out, its size remembered */
    r = report("t", "k", big, DEADLETTER_VALUE_MAX + 1);
    f = deadletter_refused_new(&r, NULL, 0, NULL, 0, 0);
    assert_non_null(f);
    assert_null(f->value);
    assert_true(f->value_omitted);
    assert_int_equal(f->valuelen, DEADLETTER_VALUE_MAX + 1);
    deadletter_refused_free(f);
    free(big);
}

static deadletter_refused *refused_ticket(uint64_t ticket)
{
    sink_report r = report("t", "k", "v", 1);
    r.ticket = ticket;
    deadletter_refused *f = deadletter_refused_new(&r, NULL, 0, NULL, 0, 0);
    assert_non_null(f);
    return f;
}

static void test_queue_is_first_in_first_out(void **state)
{
    (void)state;
    deadletter_queue q = {0};
    deadletter_refused *f;

    assert_true(deadletter_queue_empty(&q));
    assert_null(deadletter_queue_pop(&q));
    for (uint64_t t = 1; t <= 3; t++)
        deadletter_queue_push(&q, refused_ticket(t));
    assert_false(deadletter_queue_empty(&q));
    assert_int_equal(q.n, 3);
    for (uint64_t t = 1; t <= 2; t++) {
        f = deadletter_queue_pop(&q);
        assert_non_null(f);
        assert_int_equal(f->ticket, t);
        assert_null(f->next);
        deadletter_refused_free(f);
    }
    /* pushed after a pop: still behind what was there */
    deadletter_queue_push(&q, refused_ticket(4));
    f = deadletter_queue_pop(&q);
    assert_int_equal(f->ticket, 3);
    deadletter_refused_free(f);
    f = deadletter_queue_pop(&q);
    assert_int_equal(f->ticket, 4);
    deadletter_refused_free(f);
    assert_true(deadletter_queue_empty(&q));
    assert_int_equal(q.n, 0);
    assert_null(deadletter_queue_pop(&q));

    /* clear frees everything (ASan's leak check) and leaves it usable */
    for (uint64_t t = 1; t <= 3; t++)
        deadletter_queue_push(&q, refused_ticket(t));
    deadletter_queue_clear(&q);
    assert_true(deadletter_queue_empty(&q));
    assert_int_equal(q.n, 0);
    deadletter_queue_push(&q, refused_ticket(9));
    f = deadletter_queue_pop(&q);
    assert_int_equal(f->ticket, 9);
    deadletter_refused_free(f);
}

static json_t *value_json(const envelope_msg *m)
{
    json_error_t je;
    json_t *v = json_loadb(m->value, m->valuelen, 0, &je);
    assert_non_null(v);
    return v;
}

static void test_build_from_the_stream(void **state)
{
    (void)state;
    sink_report r = report("outbox.event.order", "a1", "{\"n\": 1}", 8);
    deadletter_refused *f = deadletter_refused_new(&r, "0/16B3748", 9, NULL, 0, 0);
    envelope_source base = {.lsn = 99, .table = "public.outbox", .db = "app", .slot = "s"};
    envelope_msg m = {0};
    char err[256];

    assert_non_null(f);
    assert_int_equal(deadletter_build(f, "outbox.dlq", &base, &m, err, sizeof(err)), 0);
    assert_string_equal(m.topic, "outbox.dlq");
    assert_null(m.key);
    assert_string_equal(header(&m, "error"),
                        "the broker refused the record: Broker: Message size too large");
    assert_string_equal(header(&m, "lsn"), "0/16B3748"); /* the refused record's, not base's */
    assert_string_equal(header(&m, "table"), "delivery");
    assert_string_equal(header(&m, "original-topic"), "outbox.event.order");
    assert_null(header(&m, "backfill"));
    json_t *v = value_json(&m);
    assert_string_equal(json_string_value(json_object_get(v, "topic")), "outbox.event.order");
    assert_string_equal(json_string_value(json_object_get(v, "key")), "a1");
    assert_string_equal(json_string_value(json_object_get(v, "value")), "{\"n\": 1}");
    json_decref(v);
    envelope_msg_clear(&m);
    deadletter_refused_free(f);
}

static void test_build_omitted_value_and_backfill(void **state)
{
    (void)state;
    char *big = malloc(DEADLETTER_VALUE_MAX + 1);
    assert_non_null(big);
    memset(big, 'x', DEADLETTER_VALUE_MAX + 1);
    sink_report r = report("t", NULL, big, DEADLETTER_VALUE_MAX + 1);
    deadletter_refused *f = deadletter_refused_new(&r, NULL, 0, "public.outbox", 13, 0);
    envelope_source base = {.backfill = true, .commit_ts = 1, .db = "app"};
    envelope_msg m = {0};
    char err[256];

    assert_non_null(f);
    assert_int_equal(deadletter_build(f, "dlq", &base, &m, err, sizeof(err)), 0);
    assert_non_null(strstr(header(&m, "error"), "value omitted: too large"));
    assert_string_equal(header(&m, "backfill"), "true");
    assert_null(header(&m, "lsn"));
    json_t *v = value_json(&m);
    assert_true(json_is_null(json_object_get(v, "value")));
    assert_true(json_is_null(json_object_get(v, "key")));
    json_decref(v);
    envelope_msg_clear(&m);
    deadletter_refused_free(f);

    /* a NULL value is not "too large" */
    r = report("t", "k", NULL, 0);
    f = deadletter_refused_new(&r, NULL, 0, NULL, 0, 0);
    assert_non_null(f);
    assert_int_equal(deadletter_build(f, "dlq", &base, &m, err, sizeof(err)), 0);
    assert_null(strstr(header(&m, "error"), "omitted"));
    envelope_msg_clear(&m);
    deadletter_refused_free(f);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_refused_keeps_the_record),
        cmocka_unit_test(test_refused_without_headers_key_or_reason),
        cmocka_unit_test(test_value_cap),
        cmocka_unit_test(test_queue_is_first_in_first_out),
        cmocka_unit_test(test_build_from_the_stream),
        cmocka_unit_test(test_build_omitted_value_and_backfill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
