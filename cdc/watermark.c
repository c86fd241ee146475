#include "cdc/watermark.h"

#include <stdlib.h>
#include <string.h>

/*
 * The window is a ring of slots in commit (= ticket) order.  A slot covers a
 * contiguous range of tickets: one transaction, or a run of completed
 * transactions collapsed at the end of the window (a slot that completes
 * next to a complete last slot absorbs it, or joins it when it is the last
 * itself).  The head slot is never complete: it is popped at once.
 *
 * Completion in the middle of the window (acknowledgements arrive in any
 * order across partitions) does not collapse: removing a slot from the
 * middle of a ring moves half of it, which cost more per event than
 * everything else the watermark does.  So the number of slots is at most
 * the number of transactions not yet confirmed, and a stream of
 * transactions without events behind a stuck one costs one slot; the relay
 * bounds the rest by pausing reading at --max-inflight slots (see
 * policy_backpressure()).
 *
 * A ticket's slot is found by binary search over the ring (slots are sorted
 * by ticket; collapsing breaks direct indexing by ticket).
 */

#define WATERMARK_INITIAL_SLOTS 3 /* small and not a power of two: wrap-around is common */

enum slot_state { SLOT_OPEN, SLOT_COMMITTED, SLOT_ABORTED };

struct slot {
    uint64_t first;   /* first ticket covered */
    uint64_t last;    /* last ticket covered (== first unless collapsed) */
    uint64_t end_lsn; /* highest commit end LSN covered; 0 for aborted only */
    uint64_t pending; /* events added and not yet acknowledged or failed */
    enum slot_state state;
    bool failed;
};

struct watermark {
    struct slot *ring;
    size_t cap;
    size_t head; /* ring index of the oldest slot */
    size_t count;

    uint64_t next_ticket;  /* next ticket begin() hands out */
    uint64_t epoch_ticket; /* first ticket issued since the last reset */
    uint64_t last_end;     /* end LSN of the last commit since the last reset */
    uint64_t flush;
    uint64_t inflight;
    bool open;
    bool failed;
};

static struct slot *slot_at(const watermark *wm, size_t i)
{
    size_t k = wm->head + i; /* head < cap and i < cap: one subtraction wraps */

    if (k >= wm->cap)
        k -= wm->cap;
    return &wm->ring[k];
}

static bool slot_complete(const struct slot *s)
{
    return s->state != SLOT_OPEN && s->pending == 0 && !s->failed;
}

static int grow(watermark *wm)
{
    size_t ncap = wm->cap * 2;
    struct slot *n;

    if (ncap < wm->cap)
        return -1;
    n = calloc(ncap, sizeof(*n));
    if (!n)
        return -1;
    for (size_t i = 0; i < wm->count; i++)
        n[i] = *slot_at(wm, i);
    free(wm->ring);
    wm->ring = n;
    wm->cap = ncap;
    wm->head = 0;
    return 0;
}

/* b (the slot right after a) joins a; both are complete. */
static void absorb(struct slot *a, const struct slot *b)
{
    a->last = b->last;
    if (b->end_lsn > a->end_lsn)
        a->end_lsn = b->end_lsn;
}

/*
 * Slot i just became complete: collapse it with complete neighbours where
 * that removes the last slot (no move: the next slot when it is the last,
 * then slot i itself when it has become the last); then pop the head while
 * it is complete, advancing the flush LSN.  Keeps the invariants described
 * at the top of the file.
 */
static void settle(watermark *wm, size_t i)
{
    if (i + 2 == wm->count && slot_complete(slot_at(wm, i + 1))) {
        absorb(slot_at(wm, i), slot_at(wm, i + 1));
        wm->count--;
    }
    if (i > 0 && i + 1 == wm->count && slot_complete(slot_at(wm, i - 1))) {
        absorb(slot_at(wm, i - 1), slot_at(wm, i));
        wm->count--;
    }
    while (wm->count > 0 && slot_complete(slot_at(wm, 0))) {
        struct slot *h = slot_at(wm, 0);
        if (h->end_lsn > wm->flush)
            wm->flush = h->end_lsn;
        wm->head = wm->head + 1 == wm->cap ? 0 : wm->head + 1;
        wm->count--;
    }
}

/* Index of the slot covering ticket, or -1 when no slot does. */
static long find(const watermark *wm, uint64_t ticket)
{
    size_t lo = 0, hi = wm->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct slot *s = slot_at(wm, mid);
        if (ticket < s->first)
            hi = mid;
        else if (ticket > s->last)
            lo = mid + 1;
        else
            return (long)mid;
    }
    return -1;
}

watermark *watermark_new(uint64_t confirmed)
{
    watermark *wm = calloc(1, sizeof(*wm));

    if (!wm)
        return NULL;
    wm->ring = calloc(WATERMARK_INITIAL_SLOTS, sizeof(*wm->ring));
    if (!wm->ring) {
        free(wm);
        return NULL;
    }
    wm->cap = WATERMARK_INITIAL_SLOTS;
    wm->next_ticket = 1;
    wm->epoch_ticket = 1;
    wm->flush = confirmed;
    return wm;
}

void watermark_free(watermark *wm)
{
    if (!wm)
        return;
    free(wm->ring);
    free(wm);
}

uint64_t watermark_begin(watermark *wm)
{
    struct slot *s;

    if (wm->open)
        return 0;
    if (wm->count == wm->cap && grow(wm) < 0)
        return 0;
    s = slot_at(wm, wm->count);
    memset(s, 0, sizeof(*s));
    s->first = s->last = wm->next_ticket;
    s->state = SLOT_OPEN;
    wm->count++;
    wm->open = true;
    return wm->next_ticket++;
}

/* The open transaction's slot when ticket names it, else NULL. */
static struct slot *open_slot(watermark *wm, uint64_t ticket)
{
    struct slot *s;

    if (!wm->open || wm->count == 0)
        return NULL;
    s = slot_at(wm, wm->count - 1);
    if (s->state != SLOT_OPEN || s->first != ticket)
        return NULL;
    return s;
}

int watermark_add_event(watermark *wm, uint64_t ticket)
{
    struct slot *s = open_slot(wm, ticket);

    if (!s)
        return -1;
    s->pending++;
    wm->inflight++;
    return 0;
}

/*
 * "Backwards" is judged against the previous commit since the last reset,
 * not against the confirmed LSN: after a server crash PostgreSQL may send
 * already-confirmed transactions again (PROTOCOL.md §4), and their
 * duplicates are harmless because the flush LSN only ever takes a maximum.
 */
int watermark_commit(watermark *wm, uint64_t ticket, uint64_t end_lsn)
{
    struct slot *s = open_slot(wm, ticket);

    if (!s || end_lsn < wm->last_end)
        return -1;
    s->state = SLOT_COMMITTED;
    s->end_lsn = end_lsn;
    wm->last_end = end_lsn;
    wm->open = false;
    if (slot_complete(s))
        settle(wm, wm->count - 1);
    return 0;
}

/*
 * The abandoned transaction never contributes an end LSN, but it stays in
 * the window until its in-flight events are reported, so the counts stay
 * true and its reports are not mistaken for errors.  It does not need to
 * block later transactions for safety (it is sent again after the
 * reconnect, with a new ticket), yet it does until its reports are in:
 * the simpler rule, and reports always come within message.timeout.ms.
 */
void watermark_abort_open(watermark *wm)
{
    struct slot *s;

    if (!wm->open)
        return;
    s = slot_at(wm, wm->count - 1);
    s->state = SLOT_ABORTED;
    s->end_lsn = 0;
    wm->open = false;
    if (slot_complete(s))
        settle(wm, wm->count - 1);
}

/* Shared by ack and fail: the slot index for a report, or the return code. */
static int report_slot(watermark *wm, uint64_t ticket, size_t *idx)
{
    long i;

    if (ticket == 0 || ticket >= wm->next_ticket)
        return -1;
    if (ticket < wm->epoch_ticket)
        return 1;
    i = find(wm, ticket);
    /* not in the window: completed and popped, so every event was counted */
    if (i < 0 || slot_at(wm, (size_t)i)->pending == 0)
        return -1;
    *idx = (size_t)i;
    return 0;
}

/* One report for ticket: its slot's index in *idx with the report counted,
 * or report_slot()'s 1 (stale) or -1 (unknown). */
static int count_report(watermark *wm, uint64_t ticket, size_t *idx)
{
    int rc = report_slot(wm, ticket, idx);

    if (rc != 0)
        return rc;
    slot_at(wm, *idx)->pending--;
    wm->inflight--;
    return 0;
}

int watermark_ack(watermark *wm, uint64_t ticket)
{
    size_t i = 0;
    int rc = count_report(wm, ticket, &i);

    if (rc == 0 && slot_complete(slot_at(wm, i)))
        settle(wm, i);
    return rc;
}

int watermark_fail(watermark *wm, uint64_t ticket)
{
    size_t i = 0;
    int rc = count_report(wm, ticket, &i);

    if (rc == 0) {
        slot_at(wm, i)->failed = true;
        wm->failed = true;
    }
    return rc;
}

uint64_t watermark_flush_lsn(const watermark *wm)
{
    return wm->flush;
}

bool watermark_failed(const watermark *wm)
{
    return wm->failed;
}

uint64_t watermark_inflight_events(const watermark *wm)
{
    return wm->inflight;
}

size_t watermark_inflight_txns(const watermark *wm)
{
    return wm->count;
}

bool watermark_txn_open(const watermark *wm)
{
    return wm->open;
}

/*
 * An empty window means every committed transaction is acknowledged and
 * none is open, so everything the server sent is durable: confirming its
 * walEnd skips only WAL without outbox events (PROTOCOL.md §4).
 */
int watermark_keepalive(watermark *wm, uint64_t lsn)
{
    uint64_t t;

    if (wm->open)
        return -1;
    if (lsn <= wm->last_end || lsn <= wm->flush)
        return 0;
    if (wm->count == 0 && !wm->failed) {
        wm->flush = lsn; /* nothing before it: confirmable at once */
        wm->last_end = lsn;
        return 0;
    }
    /* Behind unacknowledged transactions: an empty transaction ending at
     * lsn, collapsed with its neighbours as soon as it is complete. */
    t = watermark_begin(wm);
    if (t == 0)
        return 0; /* out of memory: this keepalive is simply not used */
    return watermark_commit(wm, t, lsn) == 0 ? 0 : -1;
}

/*
 * The flush LSN keeps its maximum: it only ever covered acknowledged
 * transactions, and a lower confirmed LSN (a status update that never
 * reached the server) just means some of them arrive again.
 */
void watermark_reset(watermark *wm, uint64_t confirmed)
{
    wm->head = 0;
    wm->count = 0;
    wm->epoch_ticket = wm->next_ticket;
    wm->last_end = 0;
    wm->inflight = 0;
    wm->open = false;
    wm->failed = false;
    if (confirmed > wm->flush)
        wm->flush = confirmed;
}
