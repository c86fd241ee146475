/*
 * policy — small pure decisions of the event loop that guard data or
 * liveness: when to send a standby status update, when to stop reading
 * (backpressure), how long to back off before reconnecting.
 *
 * No clock, no I/O: the caller passes the time in milliseconds.
 */
#ifndef CDC_POLICY_H
#define CDC_POLICY_H

#include <stdbool.h>
#include <stdint.h>

/* Status updates are sent at least this often whatever the configuration:
 * well inside half of the default wal_sender_timeout (60 s). */
#define POLICY_MAX_STATUS_INTERVAL_MS 10000
/* How soon after the watermark advances a status update follows: well
 * inside the 100 ms target between an acknowledgement and the slot's
 * confirmation, yet at most 50 updates a second however fast events are
 * acknowledged. */
#define POLICY_ADVANCE_DELAY_MS 20

typedef struct feedback_state {
    int64_t last_sent_ms;     /* when the last update went out; < 0 never */
    uint64_t last_sent_flush; /* the flush LSN it carried */
    int interval_ms;          /* --status-interval */
} feedback_state;

/*
 * Whether a status update is due now: the server asked for one, the
 * interval passed, or the flush LSN advanced and POLICY_ADVANCE_DELAY_MS
 * passed since the last update (so a burst of acknowledgements costs one
 * update, not one per event).
 */
bool policy_feedback_due(const feedback_state *fs, int64_t now_ms, uint64_t flush_lsn,
                         bool reply_requested);

/*
 * Milliseconds until policy_feedback_due() can next become true without a
 * new reply request (0 = due now): the event loop's poll timeout bound.
 */
int64_t policy_feedback_wait(const feedback_state *fs, int64_t now_ms, uint64_t flush_lsn);

/* Record that an update carrying flush_lsn was sent at now_ms. */
void policy_feedback_sent(feedback_state *fs, int64_t now_ms, uint64_t flush_lsn);

/*
 * Whether to stop reading the replication socket: in-flight events or bytes
 * reached their caps, or the watermark's window holds more than max_events
 * transactions not yet confirmed (acknowledged ones wait there behind a
 * slower one; this bounds its memory).  Strictly more, so that one open
 * transaction never pauses itself.  Reading resumes below the caps (no
 * hysteresis needed: one more message exceeds a cap by at most its own
 * size).
 */
bool policy_backpressure(uint64_t inflight_events, uint64_t window_txns, uint64_t inflight_bytes,
                         uint64_t max_events, uint64_t max_bytes);

/*
 * Reconnect delay for the attempt-th consecutive failure (0-based): base *
 * 2^attempt capped at cap_ms, with "full jitter" from rand01 in [0,1)
 * spread over the upper half, so the delay is in [d/2, d).  Pure: the
 * caller supplies the random number.
 */
int64_t policy_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms, double rand01);

/*
 * On a stop request, whether to keep streaming first: a transaction is
 * open (its first events may already be at the broker, and stopping inside
 * it would send them again on restart, because the slot can only be
 * confirmed at a commit), the stream is healthy, and the stop deadline has
 * not passed.  Once this is false the relay flushes and stops.
 */
bool policy_finish_before_stop(bool connected, bool txn_open, bool need_rewind, int64_t now_ms,
                               int64_t deadline_ms);

/*
 * Whether a stop has run out of time, so that work still waiting (a full
 * producer queue) is abandoned.  deadline_ms 0: no stop seen yet, never
 * overdue -- a signal that arrives while an event is being handed over has
 * not started the clock, and must not cut that transaction short.
 */
bool policy_stop_overdue(int64_t now_ms, int64_t deadline_ms);

/*
 * --give-up-after: whether the relay has gone give_up_ms without progress
 * (progress_ms: the last time it was streaming with nothing in flight or
 * saw the confirmed position advance).  give_up_ms 0: never.
 */
bool policy_give_up(int64_t now_ms, int64_t progress_ms, int64_t give_up_ms);

#endif
