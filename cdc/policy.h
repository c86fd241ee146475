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
/* Reply requests are answered at most this often.  A server that is
 * shutting down asks again right after every reply while it waits for a
 * confirmation: answered at once, the two would ping-pong thousands of
 * messages a second.  Far below half of any sane wal_sender_timeout. */
#define POLICY_REPLY_MIN_INTERVAL_MS 100

typedef struct feedback_state {
    int64_t last_sent_ms;     /* when the last update went out; < 0 never */
    uint64_t last_sent_flush; /* the flush LSN it carried */
    int interval_ms;          /* --status-interval */
} feedback_state;

/*
 * Whether a status update is due now: the server asked for one and
 * POLICY_REPLY_MIN_INTERVAL_MS passed since the last update, the interval
 * passed, or the flush LSN advanced and POLICY_ADVANCE_DELAY_MS passed
 * since the last update (so a burst of acknowledgements costs one update,
 * not one per event).  A reply request not yet due stays pending with the
 * caller.
 */
bool policy_feedback_due(const feedback_state *fs, int64_t now_ms, uint64_t flush_lsn,
                         bool reply_requested);

/*
 * Milliseconds until policy_feedback_due() becomes true (0 = due now), with
 * reply_pending: a reply request not answered yet.  The event loop's poll
 * timeout bound.
 */
int64_t policy_feedback_wait(const feedback_state *fs, int64_t now_ms, uint64_t flush_lsn,
                             bool reply_pending);

/*
 * A server that is shutting down (smart or fast) waits until the client has
 * confirmed everything it sent, asking for a reply after every reply.  When
 * the relay cannot confirm (events unacknowledged: brokers down) it must end
 * the stream instead of holding the shutdown forever; it reconnects later,
 * and the unconfirmed transactions are sent again.
 *
 * The signature: POLICY_STALL_REQUESTS keepalives in a row asking for a
 * reply, each within POLICY_STALL_GAP_MS of the previous one, all with the
 * same walEnd beyond what the relay can confirm.  A server that is not
 * waiting asks at most every wal_sender_timeout / 2 (and a walEnd the relay
 * can confirm ends the wait on the server's side).
 */
#define POLICY_STALL_REQUESTS 5
#define POLICY_STALL_GAP_MS 500

typedef struct stall_watch {
    uint64_t wal_end; /* the walEnd the requests counted so far carried */
    int64_t last_ms;  /* when the last of them arrived */
    unsigned count;   /* how many in a row */
} stall_watch;

/*
 * Feed one keepalive: its walEnd, whether it asks for a reply, and the
 * flush position the relay can confirm now.  Returns true when the server
 * is waiting for a confirmation the relay cannot give (end the stream); the
 * watch then starts over.
 */
bool policy_server_stalled(stall_watch *w, int64_t now_ms, uint64_t wal_end, bool reply_requested,
                           uint64_t confirmable);

/*
 * Whether to close a stream the relay has stopped reading (backpressure)
 * because nothing was acknowledged for park_ms: a server shutting down
 * waits on a client that does not read just as on one that cannot confirm.
 * The relay reconnects once backpressure has cleared.  acked_ms: the last
 * acknowledgement (or the connection, if later).  park_ms 0: never.
 */
bool policy_park_stream(bool paused, int64_t now_ms, int64_t acked_ms, int64_t park_ms);

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

/*
 * The pgoutput proto_version to ask a server for (server_version as
 * PQserverVersion gives it, e.g. 170010): the highest it speaks, capped at
 * what the decoder reads -- 1 on 13 (no streaming, no messages), 2 on 14,
 * 3 on 15, 4 on 16 and later.  A higher one than the server's is an
 * error at START_REPLICATION.
 */
int policy_proto_version(int server_version, int decoder_max);

/*
 * Where the relay last saw its slot: in this process, or in --state-file
 * (it survives a database failover, being on the relay's side).
 */
typedef struct slot_history {
    bool known;        /* the slot was streamed before */
    char systemid[32]; /* IDENTIFY_SYSTEM's system identifier then */
    int timeline;      /* and its timeline */
} slot_history;

enum policy_slot_verdict {
    POLICY_SLOT_USE,            /* the slot is there: stream it */
    POLICY_SLOT_CREATE,         /* missing, and a new slot skips nothing owed */
    POLICY_SLOT_NOT_CONFIGURED, /* missing and no --create-slot: configuration error */
    POLICY_SLOT_REFUSE,         /* missing where it existed, or may have: stop (exit 1) */
};

/*
 * What to do about the slot.  A new slot starts at the server's current
 * position: every transaction committed since the old slot's confirmed
 * position would be skipped, silently.  So a missing slot is only created
 * when the relay never saw it (hist) and the server was never promoted
 * (timeline 1: a promoted standby moves to a new timeline, and a failover
 * without a synchronized slot loses it), or when the operator asks for a
 * fresh start (allow_new).  An existing slot is always used: its confirmed
 * position is valid on this server, even after a promotion (a synchronized
 * failover slot) or pg_upgrade (a new system identifier).  allow_new
 * only counts with create_slot.
 */
enum policy_slot_verdict policy_slot_verdict(bool exists, bool create_slot, bool allow_new,
                                             const slot_history *hist, int timeline);

#endif
