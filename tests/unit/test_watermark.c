#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cdc/watermark.h"

/* Small deterministic generator so the randomized tests replay exactly. */
static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
    rng_state = s ? s : 0x9e3779b97f4a7c15ULL;
}

static uint64_t rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static uint64_t rng_below(uint64_t n)
{
    return rng_next() % n;
}

/* begin + n events + commit; returns the ticket */
static uint64_t txn(watermark *wm, unsigned events, uint64_t end_lsn)
{
    uint64_t t = watermark_begin(wm);
    assert_true(t != 0);
    for (unsigned i = 0; i < events; i++)
        assert_int_equal(watermark_add_event(wm, t), 0);
    assert_int_equal(watermark_commit(wm, t, end_lsn), 0);
    return t;
}

static void test_new_and_free_null(void **state)
{
    (void)state;
    watermark *wm = watermark_new(0x1000);
    assert_non_null(wm);
    assert_int_equal(watermark_flush_lsn(wm), 0x1000);
    assert_false(watermark_failed(wm));
    assert_int_equal(watermark_inflight_events(wm), 0);
    assert_int_equal(watermark_inflight_txns(wm), 0);
    assert_false(watermark_txn_open(wm));
    watermark_free(wm);
    watermark_free(NULL);
}

static void test_in_order_acks(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);
    uint64_t t1 = txn(wm, 2, 200);
    uint64_t t2 = txn(wm, 1, 300);

    assert_true(t2 > t1);
    assert_int_equal(watermark_inflight_events(wm), 3);
    assert_int_equal(watermark_flush_lsn(wm), 100);
    assert_int_equal(watermark_ack(wm, t1), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100); /* one of two */
    assert_int_equal(watermark_ack(wm, t1), 0);
    assert_int_equal(watermark_flush_lsn(wm), 200);
    assert_int_equal(watermark_ack(wm, t2), 0);
    assert_int_equal(watermark_flush_lsn(wm), 300);
    assert_int_equal(watermark_inflight_events(wm), 0);
    assert_int_equal(watermark_inflight_txns(wm), 0);
    /* more acks than events */
    assert_int_equal(watermark_ack(wm, t2), -1);
    assert_int_equal(watermark_ack(wm, t1), -1);
    assert_int_equal(watermark_flush_lsn(wm), 300);
    watermark_free(wm);
}

static void test_out_of_order_across_txns(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);
    uint64_t t1 = txn(wm, 1, 200);
    uint64_t t2 = txn(wm, 2, 300);
    uint64_t t3 = txn(wm, 1, 400);

    assert_int_equal(watermark_ack(wm, t3), 0);
    assert_int_equal(watermark_ack(wm, t2), 0);
    assert_int_equal(watermark_ack(wm, t2), 0);
    /* t2 and t3 fully acknowledged, t1 not: nothing may move */
    assert_int_equal(watermark_flush_lsn(wm), 100);
    assert_int_equal(watermark_inflight_events(wm), 1);
    /* t2 and t3 collapsed behind t1 */
    assert_int_equal(watermark_inflight_txns(wm), 2);
    assert_int_equal(watermark_ack(wm, t2), -1); /* already complete */
    assert_int_equal(watermark_ack(wm, t1), 0);
    assert_int_equal(watermark_flush_lsn(wm), 400);
    assert_int_equal(watermark_inflight_txns(wm), 0);
    watermark_free(wm);
}

/* Transactions without events behind a stuck one cost one slot however many. */
static void test_empty_txns_behind_stuck_head(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);
    uint64_t stuck = txn(wm, 1, 110);

    for (uint64_t lsn = 120; lsn < 100000; lsn += 10)
        txn(wm, 0, lsn);
    for (uint64_t lsn = 100000; lsn < 100100; lsn += 10)
        assert_int_equal(watermark_keepalive(wm, lsn), 0);
    assert_int_equal(watermark_inflight_txns(wm), 2);
    assert_int_equal(watermark_flush_lsn(wm), 100);
    assert_int_equal(watermark_ack(wm, stuck), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100090);
    assert_int_equal(watermark_inflight_txns(wm), 0);
    watermark_free(wm);
}

static void test_empty_txns(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);

    /* alone: complete at once */
    txn(wm, 0, 150);
    assert_int_equal(watermark_flush_lsn(wm), 150);
    assert_int_equal(watermark_inflight_txns(wm), 0);

    /* before and after an in-flight one, and between two */
    txn(wm, 0, 160);
    uint64_t a = txn(wm, 1, 170);
    txn(wm, 0, 180);
    uint64_t b = txn(wm, 1, 190);
    txn(wm, 0, 200);
    assert_int_equal(watermark_flush_lsn(wm), 160);
    assert_int_equal(watermark_ack(wm, b), 0);
    assert_int_equal(watermark_flush_lsn(wm), 160);
    assert_int_equal(watermark_ack(wm, a), 0);
    assert_int_equal(watermark_flush_lsn(wm), 200);

    /* after the in-flight ones, acked in order */
    uint64_t c = txn(wm, 1, 210);
    txn(wm, 0, 220);
    assert_int_equal(watermark_flush_lsn(wm), 200);
    assert_int_equal(watermark_ack(wm, c), 0);
    assert_int_equal(watermark_flush_lsn(wm), 220);
    assert_int_equal(watermark_inflight_txns(wm), 0);
    watermark_free(wm);
}

/*
 * One transaction of a million events followed by two small ones, all
 * reports shuffled together: nothing moves until the big one's very last
 * ack, then the flush LSN jumps as far as the small ones allow.
 */
static void test_huge_txn_random_acks(void **state)
{
    (void)state;
    enum { N = 1000000, SMALL = 3 };
    watermark *wm = watermark_new(1);
    uint64_t big = watermark_begin(wm);
    uint64_t *order = malloc(sizeof(*order) * (N + 2 * SMALL));
    size_t n = 0, big_left = N, small_left = 2 * SMALL;

    assert_non_null(order);
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(watermark_add_event(wm, big), 0);
        order[n++] = big;
    }
    assert_int_equal(watermark_commit(wm, big, 0x1000), 0);
    uint64_t s1 = txn(wm, SMALL, 0x2000);
    uint64_t s2 = txn(wm, SMALL, 0x3000);
    for (int i = 0; i < SMALL; i++) {
        order[n++] = s1;
        order[n++] = s2;
    }
    rng_seed(42);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)rng_below(i + 1);
        uint64_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(watermark_ack(wm, order[i]), 0);
        if (order[i] == big)
            big_left--;
        else
            small_left--;
        uint64_t want = 1;
        if (big_left == 0)
            want = small_left == 0 ? 0x3000 : 0x1000;
        /* s1 may finish before s2 but after big: check the middle case */
        if (big_left == 0 && small_left > 0) {
            size_t s1_left = 0;
            for (size_t k = i + 1; k < n; k++)
                s1_left += order[k] == s1;
            if (s1_left == 0)
                want = 0x2000;
        }
        if (watermark_flush_lsn(wm) != want)
            fail_msg("after %zu acks: flush %#llx, want %#llx", i + 1,
                     (unsigned long long)watermark_flush_lsn(wm), (unsigned long long)want);
    }
    assert_int_equal(watermark_flush_lsn(wm), 0x3000);
    assert_int_equal(watermark_inflight_events(wm), 0);
    assert_int_equal(watermark_ack(wm, big), -1);
    free(order);
    watermark_free(wm);
}

static void test_failure_stops_for_good(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);
    uint64_t t1 = txn(wm, 1, 200);
    uint64_t t2 = txn(wm, 2, 300);
    uint64_t t3 = txn(wm, 1, 400);
    uint64_t t4 = txn(wm, 0, 500);

    (void)t4;
    assert_int_equal(watermark_fail(wm, t2), 0);
    assert_true(watermark_failed(wm));
    assert_int_equal(watermark_ack(wm, t3), 0);
    assert_int_equal(watermark_ack(wm, t2), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100);
    assert_int_equal(watermark_ack(wm, t1), 0);
    /* stops exactly before the failed transaction */
    assert_int_equal(watermark_flush_lsn(wm), 200);
    assert_int_equal(watermark_inflight_events(wm), 0);

    /* later transactions cannot move it either */
    uint64_t t5 = txn(wm, 1, 600);
    assert_int_equal(watermark_ack(wm, t5), 0);
    txn(wm, 0, 700);
    assert_int_equal(watermark_flush_lsn(wm), 200);
    assert_true(watermark_failed(wm));
    /* nor may a keepalive position */
    assert_int_equal(watermark_keepalive(wm, 10000), 0);
    assert_int_equal(watermark_flush_lsn(wm), 200);
    /* the failed event was counted: no more reports for t2 */
    assert_int_equal(watermark_ack(wm, t2), -1);
    assert_int_equal(watermark_fail(wm, t2), -1);
    watermark_free(wm);
}

static void test_failure_at_head_with_nothing_before(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);
    uint64_t t1 = txn(wm, 1, 200);
    uint64_t t2 = txn(wm, 1, 300);

    assert_int_equal(watermark_ack(wm, t2), 0);
    assert_int_equal(watermark_fail(wm, t1), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100);
    assert_true(watermark_failed(wm));
    watermark_free(wm);
}

/* Reference model: every transaction kept, the prefix recomputed. */
struct ref_txn {
    uint64_t ticket;
    unsigned events;
    unsigned acked;
    uint64_t end_lsn;
    bool committed;
    bool failed;
};

struct pending_ack {
    uint64_t ticket;
    size_t ref;
    uint64_t due; /* step at which the report arrives */
};

static bool ref_complete(const struct ref_txn *r)
{
    return r->committed && !r->failed && r->acked == r->events;
}

/* Full recomputation, used at the end to cross-check the incremental one. */
static uint64_t ref_flush(const struct ref_txn *r, size_t n, uint64_t initial)
{
    uint64_t f = initial;
    for (size_t i = 0; i < n && ref_complete(&r[i]); i++)
        if (r[i].end_lsn > f)
            f = r[i].end_lsn;
    return f;
}

static void run_randomized(uint64_t seed, size_t steps, bool with_failure)
{
    watermark *wm = watermark_new(1000);
    struct ref_txn *ref = calloc(steps + 1, sizeof(*ref));
    struct pending_ack *pend = calloc(steps * 8 + 16, sizeof(*pend));
    size_t nref = 0, npend = 0, ncomplete = 0, prefix = 0;
    size_t incomplete_max = 0, slots_max = 0;
    uint64_t lsn = 1000, want = 1000;
    bool failed = false;

    assert_non_null(ref);
    assert_non_null(pend);
    rng_seed(seed);
    for (uint64_t step = 0; step < steps; step++) {
        /* deliver reports that are due, in random order among them */
        for (size_t k = 0; k < npend;) {
            if (pend[k].due > step || rng_below(4) == 0) {
                k++;
                continue;
            }
            struct pending_ack p = pend[k];
            struct ref_txn *r = &ref[p.ref];
            pend[k] = pend[--npend];
            r->acked++;
            if (with_failure && !failed && rng_below(2000) == 0) {
                assert_int_equal(watermark_fail(wm, p.ticket), 0);
                r->failed = true;
                failed = true;
            } else {
                assert_int_equal(watermark_ack(wm, p.ticket), 0);
                if (ref_complete(r))
                    ncomplete++;
            }
        }

        /* one transaction per step */
        unsigned events = (unsigned)(rng_below(3) == 0 ? 0 : rng_below(5));
        uint64_t t = watermark_begin(wm);
        assert_true(t != 0);
        ref[nref].ticket = t;
        ref[nref].events = events;
        for (unsigned e = 0; e < events; e++) {
            assert_int_equal(watermark_add_event(wm, t), 0);
            /* delays vary from immediate to hundreds of steps */
            uint64_t delay = rng_below(8) == 0 ? rng_below(400) : rng_below(6);
            pend[npend++] = (struct pending_ack){t, nref, step + delay};
        }
        lsn += 1 + rng_below(100);
        ref[nref].end_lsn = lsn;
        ref[nref].committed = true;
        assert_int_equal(watermark_commit(wm, t, lsn), 0);
        if (ref_complete(&ref[nref]))
            ncomplete++;
        nref++;

        while (prefix < nref && ref_complete(&ref[prefix]))
            want = ref[prefix++].end_lsn;
        if (watermark_flush_lsn(wm) != want)
            fail_msg("step %llu: flush %llu, reference %llu", (unsigned long long)step,
                     (unsigned long long)watermark_flush_lsn(wm), (unsigned long long)want);
        assert_int_equal(watermark_inflight_events(wm), npend);
        assert_int_equal(watermark_failed(wm), failed);

        /* memory: at most one slot per transaction not yet confirmed, and
         * the last slot is never complete next to a complete one */
        size_t incomplete = nref - ncomplete;
        if (watermark_inflight_txns(wm) > nref - prefix)
            fail_msg("step %llu: %zu slots for %zu unconfirmed transactions",
                     (unsigned long long)step, watermark_inflight_txns(wm), nref - prefix);
        if (prefix < nref && ref_complete(&ref[nref - 1]) && nref - prefix >= 2 &&
            ref_complete(&ref[nref - 2]) && watermark_inflight_txns(wm) == nref - prefix)
            fail_msg("step %llu: the two last transactions are complete and not collapsed",
                     (unsigned long long)step);
        if (incomplete > incomplete_max)
            incomplete_max = incomplete;
        if (watermark_inflight_txns(wm) > slots_max)
            slots_max = watermark_inflight_txns(wm);
    }
    /* drain everything */
    while (npend > 0) {
        struct pending_ack p = pend[--npend];
        assert_int_equal(watermark_ack(wm, p.ticket), 0);
        ref[p.ref].acked++;
    }
    assert_int_equal(watermark_flush_lsn(wm), ref_flush(ref, nref, 1000));
    if (!failed) {
        assert_int_equal(watermark_flush_lsn(wm), lsn);
        assert_int_equal(watermark_inflight_txns(wm), 0);
    } else {
        assert_true(watermark_flush_lsn(wm) < lsn);
    }
    assert_int_equal(failed, with_failure); /* the failure path really ran */
    /* the run must have made the ring wrap and grow past its 3 slots */
    assert_true(slots_max > 3);
    assert_true(incomplete_max > 3);
    free(pend);
    free(ref);
    watermark_free(wm);
}

static void test_randomized_against_reference(void **state)
{
    (void)state;
    run_randomized(1, 20000, false);
    run_randomized(7, 5000, false);
}

static void test_randomized_with_failure(void **state)
{
    (void)state;
    run_randomized(3, 20000, true);
}

static void test_stale_after_reset(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);
    uint64_t t1 = txn(wm, 2, 200);
    uint64_t t2 = watermark_begin(wm);
    assert_int_equal(watermark_add_event(wm, t2), 0);
    assert_int_equal(watermark_fail(wm, t1), 0);

    watermark_reset(wm, 100);
    assert_false(watermark_failed(wm));
    assert_false(watermark_txn_open(wm));
    assert_int_equal(watermark_inflight_events(wm), 0);
    assert_int_equal(watermark_inflight_txns(wm), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100);

    uint64_t t3 = txn(wm, 1, 200);
    assert_true(t3 > t2);
    /* stale reports change nothing */
    assert_int_equal(watermark_ack(wm, t1), 1);
    assert_int_equal(watermark_fail(wm, t1), 1);
    assert_int_equal(watermark_ack(wm, t2), 1);
    assert_false(watermark_failed(wm));
    assert_int_equal(watermark_inflight_events(wm), 1);
    assert_int_equal(watermark_flush_lsn(wm), 100);
    /* never issued */
    assert_int_equal(watermark_ack(wm, 0), -1);
    assert_int_equal(watermark_ack(wm, t3 + 1), -1);
    assert_int_equal(watermark_fail(wm, t3 + 100), -1);
    /* a stale ticket cannot be used for a new transaction */
    assert_int_equal(watermark_add_event(wm, t1), -1);

    assert_int_equal(watermark_ack(wm, t3), 0);
    assert_int_equal(watermark_flush_lsn(wm), 200);

    /* reset never lowers the flush LSN */
    watermark_reset(wm, 50);
    assert_int_equal(watermark_flush_lsn(wm), 200);
    watermark_reset(wm, 250);
    assert_int_equal(watermark_flush_lsn(wm), 250);
    watermark_free(wm);
}

static void test_ack_before_commit(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);
    uint64_t t = watermark_begin(wm);

    assert_int_equal(watermark_add_event(wm, t), 0);
    assert_int_equal(watermark_add_event(wm, t), 0);
    assert_int_equal(watermark_ack(wm, t), 0);
    assert_int_equal(watermark_ack(wm, t), 0);
    assert_int_equal(watermark_ack(wm, t), -1);
    assert_int_equal(watermark_inflight_events(wm), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100);
    assert_int_equal(watermark_inflight_txns(wm), 1);
    assert_true(watermark_txn_open(wm));
    /* a keepalive position is refused while the transaction is open */
    assert_int_equal(watermark_keepalive(wm, 1000), -1);
    assert_int_equal(watermark_flush_lsn(wm), 100);
    /* more events after the early acks */
    assert_int_equal(watermark_add_event(wm, t), 0);
    assert_int_equal(watermark_ack(wm, t), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100);
    assert_int_equal(watermark_commit(wm, t, 300), 0);
    assert_int_equal(watermark_flush_lsn(wm), 300);
    watermark_free(wm);
}

static void test_protocol_errors(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);
    uint64_t t1 = txn(wm, 1, 500);
    uint64_t t2 = watermark_begin(wm);

    assert_true(t2 != 0);
    /* begin while open */
    assert_int_equal(watermark_begin(wm), 0);
    assert_true(watermark_txn_open(wm));
    /* events or commit for a transaction that is not the open one */
    assert_int_equal(watermark_add_event(wm, t1), -1);
    assert_int_equal(watermark_commit(wm, t1, 600), -1);
    assert_int_equal(watermark_add_event(wm, t2 + 1), -1);
    /* end LSN going backwards */
    assert_int_equal(watermark_commit(wm, t2, 499), -1);
    assert_true(watermark_txn_open(wm));
    /* equal is not backwards; the transaction stays usable after a refusal */
    assert_int_equal(watermark_commit(wm, t2, 500), 0);
    assert_false(watermark_txn_open(wm));
    /* commit of an already committed transaction */
    assert_int_equal(watermark_commit(wm, t2, 700), -1);
    assert_int_equal(watermark_add_event(wm, t2), -1);
    assert_int_equal(watermark_ack(wm, t1), 0);
    assert_int_equal(watermark_flush_lsn(wm), 500);
    watermark_free(wm);
}

static void test_keepalive(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);

    /* nothing in flight: confirmed at once, never decreasing */
    assert_int_equal(watermark_keepalive(wm, 150), 0);
    assert_int_equal(watermark_flush_lsn(wm), 150);
    assert_int_equal(watermark_keepalive(wm, 120), 0);
    assert_int_equal(watermark_keepalive(wm, 150), 0);
    assert_int_equal(watermark_flush_lsn(wm), 150);

    /* open transaction without events: refused */
    uint64_t t = watermark_begin(wm);
    assert_int_equal(watermark_keepalive(wm, 200), -1);
    assert_int_equal(watermark_flush_lsn(wm), 150);
    assert_int_equal(watermark_commit(wm, t, 210), 0);
    assert_int_equal(watermark_flush_lsn(wm), 210);
    assert_int_equal(watermark_keepalive(wm, 220), 0);
    assert_int_equal(watermark_flush_lsn(wm), 220);

    /* the keepalive arrives while events are still in flight: it waits
     * behind them and is confirmed once they are acknowledged (a server that
     * already has our write position past it sends no new keepalive) */
    t = txn(wm, 2, 300);
    assert_int_equal(watermark_keepalive(wm, 400), 0);
    assert_int_equal(watermark_flush_lsn(wm), 220);
    assert_int_equal(watermark_ack(wm, t), 0);
    assert_int_equal(watermark_flush_lsn(wm), 220);
    assert_int_equal(watermark_ack(wm, t), 0);
    assert_int_equal(watermark_flush_lsn(wm), 400);

    /* many keepalives behind one stuck transaction cost O(1) and never
     * pass it */
    t = txn(wm, 1, 500);
    for (uint64_t lsn = 501; lsn < 100501; lsn++)
        assert_int_equal(watermark_keepalive(wm, lsn), 0);
    assert_true(watermark_inflight_txns(wm) <= 2);
    assert_int_equal(watermark_flush_lsn(wm), 400);
    /* a transaction after the keepalives, acknowledged first */
    uint64_t t2 = txn(wm, 1, 100600);
    assert_int_equal(watermark_ack(wm, t2), 0);
    assert_int_equal(watermark_flush_lsn(wm), 400);
    assert_int_equal(watermark_ack(wm, t), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100600);

    /* a later failure stops keepalive positions behind it too */
    t = txn(wm, 1, 100700);
    assert_int_equal(watermark_keepalive(wm, 100800), 0);
    assert_int_equal(watermark_fail(wm, t), 0);
    assert_int_equal(watermark_keepalive(wm, 100900), 0);
    assert_int_equal(watermark_flush_lsn(wm), 100600);
    watermark_free(wm);
}

static void test_abort_open(void **state)
{
    (void)state;
    watermark *wm = watermark_new(100);

    /* aborted without events: gone at once */
    uint64_t t0 = watermark_begin(wm);
    watermark_abort_open(wm);
    assert_false(watermark_txn_open(wm));
    assert_int_equal(watermark_inflight_txns(wm), 0);
    assert_int_equal(watermark_ack(wm, t0), -1);
    assert_int_equal(watermark_commit(wm, t0, 200), -1);
    watermark_abort_open(wm); /* nothing open: no-op */

    /* aborted with events in flight: reports still accepted */
    uint64_t t1 = txn(wm, 1, 200);
    uint64_t t2 = watermark_begin(wm);
    assert_int_equal(watermark_add_event(wm, t2), 0);
    watermark_abort_open(wm);
    assert_int_equal(watermark_keepalive(wm, 250), 0); /* waits behind the aborted one */
    uint64_t t3 = txn(wm, 0, 300);                     /* sent again after the reconnect */
    (void)t3;
    assert_int_equal(watermark_ack(wm, t1), 0);
    assert_int_equal(watermark_flush_lsn(wm), 200);
    assert_int_equal(watermark_ack(wm, t2), 0);
    assert_int_equal(watermark_flush_lsn(wm), 300);
    assert_int_equal(watermark_inflight_events(wm), 0);
    assert_int_equal(watermark_inflight_txns(wm), 0);
    watermark_free(wm);
}

static void test_million_empty_behind_inflight(void **state)
{
    (void)state;
    watermark *wm = watermark_new(10);
    uint64_t big = txn(wm, 3, 20);
    uint64_t lsn = 20;
    size_t max_slots = 0;

    for (int i = 0; i < 1000000; i++) {
        txn(wm, 0, ++lsn);
        if (watermark_inflight_txns(wm) > max_slots)
            max_slots = watermark_inflight_txns(wm);
    }
    assert_true(max_slots <= 2);
    assert_int_equal(watermark_flush_lsn(wm), 10);
    assert_int_equal(watermark_ack(wm, big), 0);
    assert_int_equal(watermark_ack(wm, big), 0);
    assert_int_equal(watermark_flush_lsn(wm), 10);
    assert_int_equal(watermark_ack(wm, big), 0);
    assert_int_equal(watermark_flush_lsn(wm), lsn);
    assert_int_equal(watermark_inflight_txns(wm), 0);
    watermark_free(wm);
}

/* One event each, acked a few transactions later, behind a stuck head:
 * they are not collapsed (that would move half the ring per
 * acknowledgement), so the window holds every unconfirmed transaction --
 * what the relay's backpressure bounds -- and confirms all of them at once
 * when the head is acknowledged. */
static void test_lagging_acks_behind_stuck_head(void **state)
{
    (void)state;
    enum { LAG = 5, N = 200000 };
    watermark *wm = watermark_new(10);
    uint64_t stuck = txn(wm, 1, 20);
    uint64_t window[LAG];
    uint64_t lsn = 20;
    size_t max_slots = 0;

    for (int i = 0; i < N; i++) {
        if (i >= LAG)
            assert_int_equal(watermark_ack(wm, window[i % LAG]), 0);
        window[i % LAG] = txn(wm, 1, ++lsn);
        if (watermark_inflight_txns(wm) > max_slots)
            max_slots = watermark_inflight_txns(wm);
    }
    assert_true(max_slots <= N + 1);
    assert_int_equal(watermark_inflight_txns(wm), N + 1);
    assert_int_equal(watermark_inflight_events(wm), LAG + 1);
    assert_int_equal(watermark_flush_lsn(wm), 10);
    for (int i = 0; i < LAG; i++)
        assert_int_equal(watermark_ack(wm, window[i]), 0);
    assert_int_equal(watermark_flush_lsn(wm), 10);
    assert_int_equal(watermark_ack(wm, stuck), 0);
    assert_int_equal(watermark_flush_lsn(wm), lsn);
    watermark_free(wm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_and_free_null),
        cmocka_unit_test(test_in_order_acks),
        cmocka_unit_test(test_out_of_order_across_txns),
        cmocka_unit_test(test_empty_txns),
        cmocka_unit_test(test_empty_txns_behind_stuck_head),
        cmocka_unit_test(test_huge_txn_random_acks),
        cmocka_unit_test(test_failure_stops_for_good),
        cmocka_unit_test(test_failure_at_head_with_nothing_before),
        cmocka_unit_test(test_randomized_against_reference),
        cmocka_unit_test(test_randomized_with_failure),
        cmocka_unit_test(test_stale_after_reset),
        cmocka_unit_test(test_ack_before_commit),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_abort_open),
        cmocka_unit_test(test_million_empty_behind_inflight),
        cmocka_unit_test(test_lagging_acks_behind_stuck_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
