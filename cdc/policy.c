#include "cdc/policy.h"

static int effective_interval(const feedback_state *fs)
{
    if (fs->interval_ms <= 0 || fs->interval_ms > POLICY_MAX_STATUS_INTERVAL_MS)
        return POLICY_MAX_STATUS_INTERVAL_MS;
    return fs->interval_ms;
}

bool policy_feedback_due(const feedback_state *fs, int64_t now_ms, uint64_t flush_lsn,
                         bool reply_requested)
{
    return policy_feedback_wait(fs, now_ms, flush_lsn, reply_requested) == 0;
}

int64_t policy_feedback_wait(const feedback_state *fs, int64_t now_ms, uint64_t flush_lsn,
                             bool reply_pending)
{
    int64_t since, wait;

    if (fs->last_sent_ms < 0)
        return 0;
    since = now_ms - fs->last_sent_ms;
    if (since < 0) /* clock went backwards: treat as just sent */
        since = 0;
    wait = effective_interval(fs) - since;
    if (flush_lsn > fs->last_sent_flush) {
        int64_t soon = POLICY_ADVANCE_DELAY_MS - since;
        if (soon < wait)
            wait = soon;
    }
    if (reply_pending) {
        int64_t soon = POLICY_REPLY_MIN_INTERVAL_MS - since;
        if (soon < wait)
            wait = soon;
    }
    return wait > 0 ? wait : 0;
}

bool policy_server_stalled(stall_watch *w, int64_t now_ms, uint64_t wal_end, bool reply_requested,
                           uint64_t confirmable)
{
    if (wal_end != w->wal_end || wal_end <= confirmable) {
        /* the server moved on, or what it waits for can be confirmed */
        w->wal_end = wal_end;
        w->count = 0;
    }
    if (!reply_requested || wal_end <= confirmable)
        return false;
    if (w->count > 0 && (now_ms - w->last_ms > POLICY_STALL_GAP_MS || now_ms < w->last_ms))
        w->count = 0; /* too slow for a waiting server (or the clock jumped) */
    w->count++;
    w->last_ms = now_ms;
    if (w->count < POLICY_STALL_REQUESTS)
        return false;
    w->count = 0;
    return true;
}

bool policy_park_stream(bool paused, int64_t now_ms, int64_t acked_ms, int64_t park_ms)
{
    return paused && park_ms > 0 && now_ms - acked_ms >= park_ms;
}

void policy_feedback_sent(feedback_state *fs, int64_t now_ms, uint64_t flush_lsn)
{
    fs->last_sent_ms = now_ms;
    if (flush_lsn > fs->last_sent_flush)
        fs->last_sent_flush = flush_lsn;
}

bool policy_backpressure(uint64_t inflight_events, uint64_t window_txns, uint64_t inflight_bytes,
                         uint64_t max_events, uint64_t max_bytes)
{
    return inflight_events >= max_events || window_txns > max_events || inflight_bytes >= max_bytes;
}

int64_t policy_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms, double rand01)
{
    int64_t d = base_ms > 0 ? base_ms : 1;

    for (unsigned i = 0; i < attempt && d < cap_ms; i++)
        d *= 2;
    if (d > cap_ms)
        d = cap_ms;
    if (rand01 < 0)
        rand01 = 0;
    if (rand01 >= 1)
        rand01 = 0.999999;
    return d / 2 + (int64_t)((double)(d - d / 2) * rand01);
}

bool policy_finish_before_stop(bool connected, bool txn_open, bool need_rewind, int64_t now_ms,
                               int64_t deadline_ms)
{
    return connected && txn_open && !need_rewind && now_ms < deadline_ms;
}

bool policy_stop_overdue(int64_t now_ms, int64_t deadline_ms)
{
    return deadline_ms > 0 && now_ms >= deadline_ms;
}

bool policy_give_up(int64_t now_ms, int64_t progress_ms, int64_t give_up_ms)
{
    return give_up_ms > 0 && now_ms - progress_ms >= give_up_ms;
}

int policy_proto_version(int server_version, int decoder_max)
{
    int v = server_version >= 160000   ? 4
            : server_version >= 150000 ? 3
            : server_version >= 140000 ? 2
                                       : 1;
    return v < decoder_max ? v : decoder_max;
}

enum policy_slot_verdict policy_slot_verdict(bool exists, bool create_slot, bool allow_new,
                                             const slot_history *hist, int timeline)
{
    bool known = hist && hist->known;

    if (exists)
        return POLICY_SLOT_USE;
    if (!create_slot)
        return known ? POLICY_SLOT_REFUSE : POLICY_SLOT_NOT_CONFIGURED;
    if (allow_new)
        return POLICY_SLOT_CREATE;
    return known || timeline > 1 ? POLICY_SLOT_REFUSE : POLICY_SLOT_CREATE;
}
