/*
 * metrics — what the relay is doing, as counters and gauges the event loop
 * updates with plain stores, rendered as Prometheus text (format 0.0.4) and
 * as the JSON /status document.
 *
 * Single writer: only the loop thread touches a metrics struct.  The HTTP
 * thread never reads it; the loop renders it (metrics_render_prometheus(),
 * metrics_render_status()) and hands the text over (see cdc/http).
 * Everything is inline in the struct — no allocation after metrics_new(),
 * so updating a counter can never fail.  Times are passed in by the caller
 * (no clock in here) so the arithmetic is testable.
 */
#ifndef CDC_METRICS_H
#define CDC_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/compiler.h"

enum metrics_state {
    METRICS_STARTING = 0,
    METRICS_STREAMING,
    METRICS_RECONNECTING,
    METRICS_REWINDING,
    METRICS_STOPPING,
    METRICS_NSTATES
};

/* Why rows went to the dead-letter topic: the one list (cdc/pipeline.c counts them). */
enum metrics_dlq_reason {
    METRICS_DLQ_UNMAPPED_COLUMN = 0,
    METRICS_DLQ_INVALID_ROW,
    METRICS_DLQ_INVALID_RECORD,
    METRICS_DLQ_REJECTED,
    METRICS_DLQ_NREASONS
};

enum metrics_target { METRICS_TARGET_POSTGRES = 0, METRICS_TARGET_KAFKA, METRICS_NTARGETS };

/* Topics counted one by one; events to further topics are counted under
 * topic="other", so a topic template with {aggregate_id} cannot make the
 * exposition grow without bound. */
#define METRICS_MAX_TOPICS 32
/* Kafka topic names are at most 249 characters. */
#define METRICS_TOPIC_MAX 250
/* Upper bounds (seconds) of the commit-to-acknowledgement histogram; +Inf
 * comes on top. */
#define METRICS_LATENCY_NBUCKETS 13
/* Transactions whose commit time is remembered for latency; a window wider
 * than this loses latency samples (never counts). */
#define METRICS_TRACK_MAX 16384
#define METRICS_ERROR_MAX 512
/* Anchor slots shown in /metrics (by name; more are counted only). */
#define METRICS_MAX_ANCHORS 32

typedef struct metrics_anchor {
    char name[64];       /* the slot name */
    int64_t retained;    /* WAL bytes from restart_lsn to the server's position; < 0 unknown */
    char wal_status[16]; /* reserved, extended, unreserved, lost */
} metrics_anchor;

typedef struct metrics_topic {
    char name[METRICS_TOPIC_MAX];
    uint64_t published;
} metrics_topic;

/* One transaction with events in flight: its ticket, commit time and how
 * many of its events wait for a delivery report. */
typedef struct metrics_txn {
    uint64_t ticket;
    int64_t commit_us; /* Unix microseconds */
    uint32_t pending;
} metrics_txn;

typedef struct metrics {
    /* counters */
    metrics_topic topics[METRICS_MAX_TOPICS];
    size_t ntopics;
    size_t last_topic;     /* index of the last hit: consecutive events share topics */
    uint64_t other_topics; /* events to topics beyond METRICS_MAX_TOPICS (or "other") */
    uint64_t acknowledged;
    uint64_t dead_lettered[METRICS_DLQ_NREASONS];
    uint64_t delivery_errors;
    uint64_t rewinds;
    uint64_t reconnects[METRICS_NTARGETS];
    uint64_t latency_buckets[METRICS_LATENCY_NBUCKETS + 1]; /* per bucket, last = +Inf */
    uint64_t latency_count;
    double latency_sum;
    int64_t backpressure_ms;
    int64_t backpressure_since; /* < 0 when reading is not paused */

    /* gauges */
    enum metrics_state state;
    bool broker_reachable;
    uint64_t received_lsn;
    uint64_t confirmed_lsn;
    uint64_t server_lsn;
    uint64_t inflight_events;
    uint64_t inflight_bytes;
    int64_t started_us; /* Unix microseconds, for outbox_relay_start_time_seconds */

    char slot[64];
    char last_error[METRICS_ERROR_MAX];
    int64_t last_error_us; /* 0 = none */

    /* anchor slots, from cdc/anchorwatch (anchors_known false: no reading yet) */
    bool anchors_known;
    size_t nanchors_total;
    size_t nanchors;
    metrics_anchor anchors[METRICS_MAX_ANCHORS];
    char slot_wal_status[16]; /* the relay's slot, from cdc/anchorwatch; "" unknown */

    /* commit times of in-flight transactions: a ring in ticket order */
    metrics_txn txns[METRICS_TRACK_MAX];
    size_t txn_head, txn_len;
} metrics;

/*
 * A zeroed metrics struct in state "starting" for slot (copied, truncated
 * at 63 bytes), started at now_us (Unix microseconds).  Heap-allocated
 * because the latency ring makes it a few hundred KB.  NULL when out of
 * memory.
 */
metrics *metrics_new(const char *slot, int64_t now_us) OBX_WUR;
void metrics_free(metrics *m); /* NULL ok */

/* Unix time in microseconds (CLOCK_REALTIME): what the now_us arguments take. */
int64_t metrics_now_us(void);

/* PostgreSQL wire timestamp (µs since 2000-01-01) to Unix microseconds. */
int64_t metrics_pgtime_to_unix_us(int64_t pg_us);

/* One event was handed to the producer for topic. */
void metrics_published(metrics *m, const char *topic);

/*
 * One event of transaction ticket, committed at commit_us (Unix µs), was
 * handed to the producer: its delivery report will be timed against
 * commit_us.  Tickets must not decrease; calls for the same ticket share
 * one entry.  When METRICS_TRACK_MAX transactions are pending the event is
 * not tracked (no latency sample, no lag contribution).
 */
void metrics_event_sent(metrics *m, uint64_t ticket, int64_t commit_us);

/*
 * The delivery report of one event of ticket came back at now_us: ok =
 * acknowledged (counted, latency observed), else a delivery error
 * (counted).  Reports for tickets not tracked (stale after a rewind) are
 * counted but not timed.
 */
void metrics_event_reported(metrics *m, uint64_t ticket, bool ok, int64_t now_us);

/* Forget every in-flight transaction (rewind: their reports are stale). */
void metrics_inflight_reset(metrics *m);

/* Observe one latency (seconds) in the histogram.  Negative counts as 0. */
void metrics_observe_latency(metrics *m, double seconds);

void metrics_dead_lettered(metrics *m, enum metrics_dlq_reason why);

/* "unmapped_column", "invalid_row", ...: the reason's label. */
const char *metrics_dlq_reason_name(enum metrics_dlq_reason why);
void metrics_rewound(metrics *m);
void metrics_reconnected(metrics *m, enum metrics_target target);

/*
 * Backpressure bookkeeping, once per loop pass: paused = reading is
 * stopped now; now_ms from a monotonic clock.  Time between a pass that saw
 * paused and the next pass is added to the total.
 */
void metrics_backpressure(metrics *m, bool paused, int64_t now_ms);

void metrics_set_state(metrics *m, enum metrics_state state);
const char *metrics_state_name(enum metrics_state state);

/*
 * Remember the latest error for /status, with its time.  Defensive: the
 * value of a password= conninfo keyword and the password of a
 * scheme://user:password@ URI are replaced by "***" even though callers
 * should never pass them; control characters become spaces.
 */
void metrics_set_error(metrics *m, const char *msg, int64_t now_us);
void metrics_clear_error(metrics *m);

/*
 * Render the Prometheus text exposition (format 0.0.4, names prefixed
 * outbox_relay_) into a malloc'd NUL-terminated buffer (*out, length in
 * *outlen; the caller frees).  now_us dates the lag in seconds.  Returns 0,
 * or -1 when out of memory.
 */
int metrics_render_prometheus(const metrics *m, int64_t now_us, char **out, size_t *outlen) OBX_WUR;

/*
 * Render the /status JSON document (compact, malloc'd, caller frees).
 * Returns 0, or -1 when out of memory.
 */
int metrics_render_status(const metrics *m, int64_t now_us, char **out, size_t *outlen) OBX_WUR;

/* Replication lag: server position minus confirmed (0 when not ahead). */
uint64_t metrics_lag_bytes(const metrics *m);

/*
 * Seconds from the commit of the oldest transaction whose events are not
 * all acknowledged to now_us; 0 when nothing tracked is in flight.
 */
double metrics_lag_seconds(const metrics *m, int64_t now_us);

/* Whether /readyz should answer 200: streaming and the broker reachable. */
bool metrics_ready(const metrics *m);

#endif
