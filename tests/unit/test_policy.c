/* Unit tests for cdc/policy: status-update timing, backpressure, backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cdc/policy.h"

static void test_first_update_is_due_at_once(void **state)
{
    (void)state;
    feedback_state fs = {.last_sent_ms = -1, .last_sent_flush = 0, .interval_ms = 1000};
    assert_true(policy_feedback_due(&fs, 5, 0, false));
    assert_int_equal(policy_feedback_wait(&fs, 5, 0, false), 0);
}

static void test_interval(void **state)
{
    (void)state;
    feedback_state fs = {.last_sent_ms = -1, .interval_ms = 1000};
    policy_feedback_sent(&fs, 10000, 100);
    assert_false(policy_feedback_due(&fs, 10000, 100, false));
    assert_false(policy_feedback_due(&fs, 10999, 100, false));
    assert_int_equal(policy_feedback_wait(&fs, 10500, 100, false), 500);
    assert_true(policy_feedback_due(&fs, 11000, 100, false));
    assert_true(policy_feedback_due(&fs, 50000, 100, false));
}

static void test_reply_request_forces_update(void **state)
{
    (void)state;
    feedback_state fs = {.last_sent_ms = -1, .interval_ms = 1000};
    /* never sent: at once */
    assert_true(policy_feedback_due(&fs, 10, 100, true));
    policy_feedback_sent(&fs, 10000, 100);
    /* long before the interval, but not sooner than the reply rate limit */
    assert_false(policy_feedback_due(&fs, 10001, 100, true));
    assert_int_equal(policy_feedback_wait(&fs, 10001, 100, true), POLICY_REPLY_MIN_INTERVAL_MS - 1);
    assert_true(policy_feedback_due(&fs, 10000 + POLICY_REPLY_MIN_INTERVAL_MS, 100, true));
    /* the request does not make the wait longer than the interval would */
    policy_feedback_sent(&fs, 20000, 100);
    fs.interval_ms = 50;
    assert_int_equal(policy_feedback_wait(&fs, 20000, 100, true), 50);
}

/*
 * The shutdown ping-pong: the server asks again right after every reply.
 * With the rate limit the relay answers at most 10 times a second whatever
 * the server does.
 */
static void test_reply_ping_pong_rate_limited(void **state)
{
    (void)state;
    feedback_state fs = {.last_sent_ms = -1, .interval_ms = 1000};
    int sent = 0;
    for (int64_t now = 0; now < 10000; now++) /* a request every millisecond */
        if (policy_feedback_due(&fs, now, 100, true)) {
            policy_feedback_sent(&fs, now, 100);
            sent++;
        }
    assert_int_equal(sent, 10000 / POLICY_REPLY_MIN_INTERVAL_MS);
}

/* Feed n requests with walEnd end, gap ms apart from *now; how many said stalled. */
static int feed(stall_watch *w, int64_t *now, int n, int gap, uint64_t end, bool reply,
                uint64_t confirmable)
{
    int stalled = 0;
    for (int i = 0; i < n; i++, *now += gap)
        stalled += policy_server_stalled(w, *now, end, reply, confirmable);
    return stalled;
}

static void test_stall_detected_when_server_waits(void **state)
{
    (void)state;
    stall_watch w = {0};
    int64_t now = 1000;
    /* a shutting-down server: same walEnd, beyond the confirmable 500 */
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS - 1, 100, 900, true, 500), 0);
    assert_true(policy_server_stalled(&w, now, 900, true, 500));
    /* then it starts over: another full run is needed */
    now += 100;
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS - 1, 100, 900, true, 500), 0);
    assert_true(policy_server_stalled(&w, now, 900, true, 500));
}

static void test_stall_not_when_confirmable(void **state)
{
    (void)state;
    stall_watch w = {0};
    int64_t now = 0;
    /* everything the server sent can be confirmed: its wait ends by itself */
    assert_int_equal(feed(&w, &now, 50, 10, 900, true, 900), 0);
    assert_int_equal(feed(&w, &now, 50, 10, 900, true, 1000), 0);
    /* confirmable reached in the middle of a run: the run starts over */
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS - 1, 10, 2000, true, 1000), 0);
    assert_false(policy_server_stalled(&w, now, 2000, true, 2000));
    now += 10;
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS - 1, 10, 2000, true, 1000), 0);
}

static void test_stall_not_when_server_moves_on(void **state)
{
    (void)state;
    stall_watch w = {0};
    int64_t now = 0;
    int stalled = 0;
    /* walEnd advancing: the server is streaming, not waiting */
    for (uint64_t end = 1000; end < 1100; end++, now += 10)
        stalled += policy_server_stalled(&w, now, end, true, 0);
    assert_int_equal(stalled, 0);
    /* one step back counts as a change too */
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS - 1, 10, 5000, true, 0), 0);
    assert_false(policy_server_stalled(&w, now, 4999, true, 0));
}

static void test_stall_not_for_slow_requests(void **state)
{
    (void)state;
    stall_watch w = {0};
    int64_t now = 0;
    /* wal_sender_timeout / 2 requests while the brokers are down: normal */
    assert_int_equal(feed(&w, &now, 100, 30000, 900, true, 500), 0);
    /* just over the gap, many times */
    assert_int_equal(feed(&w, &now, 100, POLICY_STALL_GAP_MS + 1, 900, true, 500), 0);
    /* at the gap: a stall */
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS, POLICY_STALL_GAP_MS, 900, true, 500), 1);
    /* the clock going backwards restarts the count rather than faking a run */
    w = (stall_watch){0};
    now = 10000;
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS - 1, 10, 900, true, 500), 0);
    assert_false(policy_server_stalled(&w, 5000, 900, true, 500));
}

static void test_stall_ignores_keepalives_without_request(void **state)
{
    (void)state;
    stall_watch w = {0};
    int64_t now = 0;
    /* plain keepalives never count, whatever their rate */
    assert_int_equal(feed(&w, &now, 1000, 1, 900, false, 500), 0);
    /* nor do they break a run with the same walEnd */
    assert_int_equal(feed(&w, &now, 2, 10, 900, true, 500), 0);
    assert_int_equal(feed(&w, &now, 3, 10, 900, false, 500), 0);
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS - 2, 10, 900, true, 500), 1);
    /* but a plain keepalive with another walEnd does */
    assert_int_equal(feed(&w, &now, 2, 10, 900, true, 500), 0);
    assert_int_equal(feed(&w, &now, 1, 10, 901, false, 500), 0);
    assert_int_equal(feed(&w, &now, POLICY_STALL_REQUESTS - 1, 10, 900, true, 500), 0);
}

static void test_proto_version(void **state)
{
    (void)state;
    assert_int_equal(policy_proto_version(100023, 4), 1);
    assert_int_equal(policy_proto_version(130023, 4), 1);
    assert_int_equal(policy_proto_version(140000, 4), 2);
    assert_int_equal(policy_proto_version(140023, 4), 2);
    assert_int_equal(policy_proto_version(150018, 4), 3);
    assert_int_equal(policy_proto_version(160000, 4), 4);
    assert_int_equal(policy_proto_version(170010, 4), 4);
    assert_int_equal(policy_proto_version(180004, 4), 4);
    assert_int_equal(policy_proto_version(190000, 4), 4); /* 5 would need a new decoder */
    assert_int_equal(policy_proto_version(170010, 3), 3);
}

static void test_slot_verdict(void **state)
{
    (void)state;
    slot_history none = {0}, seen = {.known = true, .systemid = "7", .timeline = 1};

    /* an existing slot is used whatever the history or the timeline */
    assert_int_equal(policy_slot_verdict(true, false, false, &seen, 3), POLICY_SLOT_USE);
    assert_int_equal(policy_slot_verdict(true, true, true, NULL, 1), POLICY_SLOT_USE);
    /* first start on a server never promoted */
    assert_int_equal(policy_slot_verdict(false, true, false, &none, 1), POLICY_SLOT_CREATE);
    assert_int_equal(policy_slot_verdict(false, true, false, NULL, 1), POLICY_SLOT_CREATE);
    assert_int_equal(policy_slot_verdict(false, false, false, &none, 1),
                     POLICY_SLOT_NOT_CONFIGURED);
    /* seen before, now gone: never recreated silently, --create-slot or not */
    assert_int_equal(policy_slot_verdict(false, true, false, &seen, 1), POLICY_SLOT_REFUSE);
    assert_int_equal(policy_slot_verdict(false, false, false, &seen, 1), POLICY_SLOT_REFUSE);
    assert_int_equal(policy_slot_verdict(false, true, false, &seen, 2), POLICY_SLOT_REFUSE);
    /* a promoted server without the slot: maybe lost in that failover */
    assert_int_equal(policy_slot_verdict(false, true, false, &none, 2), POLICY_SLOT_REFUSE);
    /* the operator's explicit fresh start */
    assert_int_equal(policy_slot_verdict(false, true, true, &seen, 2), POLICY_SLOT_CREATE);
    assert_int_equal(policy_slot_verdict(false, true, true, &none, 5), POLICY_SLOT_CREATE);
    /* ... which needs --create-slot to create anything */
    assert_int_equal(policy_slot_verdict(false, false, true, &none, 1), POLICY_SLOT_NOT_CONFIGURED);
    assert_int_equal(policy_slot_verdict(false, false, true, &seen, 1), POLICY_SLOT_REFUSE);
}

static void test_park_stream(void **state)
{
    (void)state;
    assert_false(policy_park_stream(false, 100000, 0, 3000)); /* reading: never */
    assert_false(policy_park_stream(true, 2999, 0, 3000));
    assert_true(policy_park_stream(true, 3000, 0, 3000));
    assert_false(policy_park_stream(true, 100000, 0, 0)); /* 0: off */
}

static void test_advance_sends_soon_but_batched(void **state)
{
    (void)state;
    feedback_state fs = {.last_sent_ms = -1, .interval_ms = 1000};
    policy_feedback_sent(&fs, 10000, 100);
    /* The watermark advanced: not at once, but within the advance delay. */
    assert_false(policy_feedback_due(&fs, 10000 + POLICY_ADVANCE_DELAY_MS - 1, 200, false));
    assert_int_equal(policy_feedback_wait(&fs, 10005, 200, false), POLICY_ADVANCE_DELAY_MS - 5);
    assert_true(policy_feedback_due(&fs, 10000 + POLICY_ADVANCE_DELAY_MS, 200, false));
    /* Sent: the same flush does not make it due again before the interval. */
    policy_feedback_sent(&fs, 10100, 200);
    assert_false(policy_feedback_due(&fs, 10300, 200, false));
    /* A flush below the last one sent never counts as an advance. */
    assert_false(policy_feedback_due(&fs, 10300, 150, false));
    policy_feedback_sent(&fs, 10300, 150);
    assert_int_equal(fs.last_sent_flush, 200);
}

static void test_interval_capped_for_wal_sender_timeout(void **state)
{
    (void)state;
    feedback_state fs = {.last_sent_ms = -1, .interval_ms = 3600 * 1000};
    policy_feedback_sent(&fs, 0, 1);
    assert_false(policy_feedback_due(&fs, POLICY_MAX_STATUS_INTERVAL_MS - 1, 1, false));
    assert_true(policy_feedback_due(&fs, POLICY_MAX_STATUS_INTERVAL_MS, 1, false));
}

static void test_clock_backwards(void **state)
{
    (void)state;
    feedback_state fs = {.last_sent_ms = -1, .interval_ms = 1000};
    policy_feedback_sent(&fs, 10000, 1);
    assert_false(policy_feedback_due(&fs, 9000, 1, false));
    assert_int_equal(policy_feedback_wait(&fs, 9000, 1, false), 1000);
}

static void test_backpressure(void **state)
{
    (void)state;
    assert_false(policy_backpressure(0, 0, 0, 10, 100));
    assert_false(policy_backpressure(9, 10, 99, 10, 100));
    assert_true(policy_backpressure(10, 0, 0, 10, 100));
    assert_true(policy_backpressure(0, 0, 100, 10, 100));
    /* acknowledged transactions piling up behind a stuck one */
    assert_true(policy_backpressure(1, 11, 0, 10, 100));
    /* --max-inflight 1: the one open transaction does not pause itself */
    assert_false(policy_backpressure(0, 1, 0, 1, 100));
    assert_true(policy_backpressure(1, 1, 0, 1, 100));
    assert_true(policy_backpressure(UINT64_MAX, UINT64_MAX, UINT64_MAX, 10, 100));
}

static void test_backoff_grows_capped_jittered(void **state)
{
    (void)state;
    assert_int_equal(policy_backoff_ms(0, 200, 30000, 0.0), 100);
    assert_int_equal(policy_backoff_ms(1, 200, 30000, 0.0), 200);
    assert_int_equal(policy_backoff_ms(3, 200, 30000, 0.0), 800);
    for (unsigned a = 0; a < 100; a++) {
        int64_t lo = policy_backoff_ms(a, 200, 30000, 0.0);
        int64_t hi = policy_backoff_ms(a, 200, 30000, 0.9999);
        assert_true(lo >= 100);
        assert_true(hi < 30000);
        assert_true(lo <= hi);
    }
    /* Huge attempt counts do not overflow. */
    assert_int_equal(policy_backoff_ms(4000000000u, 200, 30000, 0.0), 15000);
    /* Out-of-range random numbers are clamped. */
    assert_int_equal(policy_backoff_ms(0, 200, 30000, -5.0), 100);
    assert_true(policy_backoff_ms(0, 200, 30000, 7.0) < 200);
}

static void test_finish_open_txn_before_stop(void **state)
{
    (void)state;
    /* mid-transaction, healthy, time left: keep reading to its commit */
    assert_true(policy_finish_before_stop(true, true, false, 100, 1000));
    /* between transactions: stop at once */
    assert_false(policy_finish_before_stop(true, false, false, 100, 1000));
    /* deadline reached or passed: stop, the open transaction is sent again */
    assert_false(policy_finish_before_stop(true, true, false, 1000, 1000));
    assert_false(policy_finish_before_stop(true, true, false, 5000, 1000));
    /* disconnected or rewinding: nothing more will arrive on this stream */
    assert_false(policy_finish_before_stop(false, true, false, 100, 1000));
    assert_false(policy_finish_before_stop(true, true, true, 100, 1000));
    /* --shutdown-timeout 0: deadline == now */
    assert_false(policy_finish_before_stop(true, true, false, 100, 100));
}

static void test_stop_overdue(void **state)
{
    (void)state;
    /* no stop seen yet (deadline unset): a signal that lands while an event
     * is handed over must not abandon it, whatever the clock says */
    assert_false(policy_stop_overdue(0, 0));
    assert_false(policy_stop_overdue(123456789, 0));
    assert_false(policy_stop_overdue(999, 1000));
    assert_true(policy_stop_overdue(1000, 1000));
    assert_true(policy_stop_overdue(5000, 1000));
}

static void test_give_up(void **state)
{
    (void)state;
    assert_false(policy_give_up(100000, 0, 0)); /* 0: never */
    assert_false(policy_give_up(5999, 0, 6000));
    assert_true(policy_give_up(6000, 0, 6000));
    assert_false(policy_give_up(6000, 7000, 6000)); /* clock before progress */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_update_is_due_at_once),
        cmocka_unit_test(test_interval),
        cmocka_unit_test(test_reply_request_forces_update),
        cmocka_unit_test(test_reply_ping_pong_rate_limited),
        cmocka_unit_test(test_stall_detected_when_server_waits),
        cmocka_unit_test(test_stall_not_when_confirmable),
        cmocka_unit_test(test_stall_not_when_server_moves_on),
        cmocka_unit_test(test_stall_not_for_slow_requests),
        cmocka_unit_test(test_stall_ignores_keepalives_without_request),
        cmocka_unit_test(test_park_stream),
        cmocka_unit_test(test_proto_version),
        cmocka_unit_test(test_slot_verdict),
        cmocka_unit_test(test_advance_sends_soon_but_batched),
        cmocka_unit_test(test_interval_capped_for_wal_sender_timeout),
        cmocka_unit_test(test_clock_backwards),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_backoff_grows_capped_jittered),
        cmocka_unit_test(test_finish_open_txn_before_stop),
        cmocka_unit_test(test_stop_overdue),
        cmocka_unit_test(test_give_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
