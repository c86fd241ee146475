#include "cdc/relay.h"

#include <bsd/unistd.h>

#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bsd/string.h>
#include <time.h>
#include <unistd.h>

#include "publish/clock.h"
#include "cdc/http.h"
#include "cdc/pipeline.h"
#include "cdc/anchorwatch.h"
#include "cdc/deadletter.h"
#include "cdc/log.h"
#include "cdc/metrics.h"
#include "cdc/policy.h"
#include "cdc/reload.h"
#include "cdc/setup.h"
#include "cdc/slotstate.h"
#include "cdc/stream.h"
#include "cdc/watermark.h"
#include "decode/lsn.h"
#include "decode/outbox.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"
#include "publish/sink.h"
#include "schema/envelope.h"

/* How often the anchor slots' retained WAL is read for /metrics. */
#define ANCHORWATCH_INTERVAL_MS 30000
/* Frames handled per loop pass before the producer is served again. */
#define FRAMES_PER_PASS 2000
#define RECONNECT_BASE_MS 200
#define RECONNECT_CAP_MS 30000
#define STANDBY_CAP_MS 5000
/* A stream that stayed up this long resets the reconnect backoff. */
#define STABLE_STREAM_MS 10000
#define STATS_INTERVAL_MS 60000
/* Backpressure with nothing acknowledged for this long: close the stream
 * until it clears (policy_park_stream). */
#define PARK_STREAM_MS 3000
/* librdkafka's own defaults for its queue: never sized below them. */
#define RELAY_QUEUE_MIN_MESSAGES 100000
#define RELAY_QUEUE_MIN_KBYTES 1048576

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/*
 * The sink, with the producer's queue sized above --max-inflight (events
 * and bytes, with room for dead letters), so that producing waits on the
 * relay's own bound first; a -X given for either still wins.
 */
static sink *open_sink(const config *cfg, char *err, size_t errlen)
{
    sink_prop props[CONFIG_MAX_PROPS + 2];
    char msgs[24], kbytes[24];
    uint64_t n = cfg->max_inflight_events * 2 + 1000, kb = cfg->max_inflight_bytes / 1024 * 2;

    if (n < RELAY_QUEUE_MIN_MESSAGES)
        n = RELAY_QUEUE_MIN_MESSAGES;
    if (kb < RELAY_QUEUE_MIN_KBYTES)
        kb = RELAY_QUEUE_MIN_KBYTES;
    snprintf(msgs, sizeof(msgs), "%llu", (unsigned long long)(n > INT32_MAX ? INT32_MAX : n));
    snprintf(kbytes, sizeof(kbytes), "%llu", (unsigned long long)(kb > INT32_MAX ? INT32_MAX : kb));
    props[0] = (sink_prop){"queue.buffering.max.messages", msgs};
    props[1] = (sink_prop){"queue.buffering.max.kbytes", kbytes};
    memcpy(props + 2, cfg->props, cfg->nprops * sizeof(*props));
    return sink_open(cfg->brokers, props, cfg->nprops + 2, err, errlen);
}

typedef struct relay {
    const config *cfg;
    metrics *m;
    http_server *http;
    stream *st;
    stream_info info;
    bool connected;
    sink *sk;
    watermark *wm;
    relcache *rels;
    pgo_msg *msg;
    pipeline p; /* rows -> records (cdc/pipeline.h) */

    /* the watermark's ticket of the transaction being received */
    uint64_t ticket;

    /* everything committed before this position has been received */
    uint64_t received;
    uint64_t inflight_bytes;
    bool need_rewind;
    bool rewound; /* the next connection starts over from the slot */
    char rewind_reason[512];
    bool reply_requested;
    feedback_state fb;
    /* the server waits for a confirmation we cannot give: end the stream */
    stall_watch stall;
    bool end_stream;
    bool parked;         /* stream closed under backpressure: reconnect when it clears */
    slot_history hist;   /* where the slot was streamed (and --state-file) */
    uint64_t acked_seen; /* events_acked when acked_at was last moved */
    int64_t acked_at;    /* the last acknowledgement seen (or connection) */

    /* The fault being ridden out: logged once, repeats only counted, and
     * its end logged once when the stream has been healthy for a while. */
    char fault[512];
    bool broker_fault_shown; /* last_error shows sink_fault() */
    unsigned fault_repeats;
    uint64_t fault_flush;

    unsigned reconnect_attempt;
    int64_t reconnect_at;
    int64_t stream_started_at;
    int64_t stop_deadline; /* set when a stop is first seen */

    uint64_t events_acked, rewinds;
    /* from delivery reports, dead-lettered by the loop; an entry's epoch is
     * the rewind count when refused: stale after a rewind */
    deadletter_queue refused;
    envelope_source dl_base; /* the source of refused records' dead letters */
    anchorwatch *anchors;    /* with --http: anchor retention for /metrics */
    enum metrics_state title_state;
    uint64_t title_flush;
    /* --give-up-after: the last time the relay made progress (streaming
     * with nothing in flight, or the confirmed position moved) */
    int64_t progress_at;
    uint64_t progress_flush;
    int64_t title_at;
    int64_t stats_at;
} relay;

static void request_rewind(relay *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void request_rewind(relay *r, const char *fmt, ...)
{
    va_list ap;
    if (r->need_rewind)
        return;
    va_start(ap, fmt);
    vsnprintf(r->rewind_reason, sizeof(r->rewind_reason), fmt, ap);
    va_end(ap);
    r->need_rewind = true;
}

/* A stop request was seen: start its clock (once). */
static void see_stop(relay *r, int64_t now)
{
    if (r->stop_deadline != 0)
        return;
    r->stop_deadline = now + r->cfg->shutdown_timeout_ms; /* monotonic clock: > 0 */
    if (r->p.txn_open && r->connected)
        log_info("stop requested: reading to the end of the open transaction first (up to %d ms)",
                 r->cfg->shutdown_timeout_ms);
}

static void note_fault(relay *r, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note_fault(relay *r, enum log_level level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(msg, r->fault) == 0) {
        r->fault_repeats++;
        log_debug("again (%u): %s", r->fault_repeats, msg);
        return;
    }
    log_msg(level, "%s", msg);
    metrics_set_error(r->m, msg, metrics_now_us());
    strlcpy(r->fault, msg, sizeof(r->fault));
    r->fault_repeats = 0;
    r->fault_flush = watermark_flush_lsn(r->wm);
}

/* The fault is over once the stream stayed up STABLE_STREAM_MS or the
 * watermark moved past where it stood when the fault began. */
static void check_recovered(relay *r, int64_t now)
{
    if (!r->fault[0] || !r->connected)
        return;
    if (now - r->stream_started_at < STABLE_STREAM_MS &&
        watermark_flush_lsn(r->wm) <= r->fault_flush)
        return;
    log_info("recovered from: %s (%u repeat%s)", r->fault, r->fault_repeats,
             r->fault_repeats == 1 ? "" : "s");
    r->reconnect_attempt = 0;  /* the next fault starts with a short backoff again */
    metrics_clear_error(r->m); /* /status shows a fault only while it lasts */
    r->fault[0] = '\0';
    r->fault_repeats = 0;
}

/* Debug: where an event landed (or why not), by its id, for tracing one event. */
static void log_report(const sink_report *rep)
{
    const void *id = NULL;
    size_t idlen = 0;

    if (sink_report_header(rep, "id", &id, &idlen) != 0 &&
        sink_report_header(rep, "ce_id", &id, &idlen) != 0) {
        id = "-";
        idlen = 1;
    }
    if (rep->err == 0)
        log_debug("acknowledged id %.*s: topic \"%s\" partition %d offset %lld", (int)idlen,
                  (const char *)id, rep->topic, (int)rep->partition, (long long)rep->offset);
    else
        log_debug("not delivered id %.*s: topic \"%s\": %s", (int)idlen, (const char *)id,
                  rep->topic, rep->errstr ? rep->errstr : "unknown error");
}

static void on_report(const sink_report *rep, void *arg)
{
    relay *r = arg;
    uint64_t ticket = rep->ticket & ~DEADLETTER_TICKET;
    enum sink_verdict v = deadletter_classify(rep);
    int rc;

    r->inflight_bytes = rep->len > r->inflight_bytes ? 0 : r->inflight_bytes - rep->len;
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_report(rep);
    if (v == SINK_DELIVERED) {
        rc = watermark_ack(r->wm, ticket);
        r->events_acked++;
    } else if (v == SINK_RETRY && rep->inferred) {
        /*
         * Acknowledged without an offset: librdkafka inferred the delivery
         * from a later request's success or from a duplicate-sequence reply.
         * Sound only on a broker that enforces idempotent sequence numbers;
         * librdkafka's mock cluster does not, and lost events this way.  Not
         * proof, so the event is sent again (a duplicate at worst).
         */
        rc = watermark_fail(r->wm, ticket);
        if (rc == 0)
            request_rewind(r,
                           "the broker acknowledged an event on \"%s\" partition %d without an "
                           "offset (inferred by the producer, not proof it was written): sending "
                           "it again",
                           rep->topic ? rep->topic : "?", (int)rep->partition);
    } else if (v == SINK_REFUSED) {
        /* The record itself is refused (too large for the broker, ...):
         * it goes to the dead-letter topic, whose delivery will count as
         * its acknowledgement. */
        if (deadletter_queue_report(&r->refused, rep, r->rewinds) != 0)
            request_rewind(r, "out of memory keeping a refused message");
        return;
    } else {
        rc = watermark_fail(r->wm, ticket);
        if (rc == 0)
            request_rewind(r, "delivery to \"%s\" failed: %s", rep->topic ? rep->topic : "?",
                           rep->errstr ? rep->errstr : "unknown error");
    }
    if (rc == 0)
        metrics_event_reported(r->m, ticket, v == SINK_DELIVERED, metrics_now_us());
    if (rc < 0)
        request_rewind(r, "delivery report for unknown ticket %llu", (unsigned long long)ticket);
}

static int serve_producer(relay *r)
{
    char err[512];
    if (sink_poll(r->sk, on_report, r, err, sizeof(err)) < 0) {
        request_rewind(r, "producer failed: %s", err);
        return -1;
    }
    return 0;
}

static int send_status(relay *r, int64_t now)
{
    char err[512];
    uint64_t flush = watermark_flush_lsn(r->wm);

    if (!r->connected)
        return 0;
    if (stream_send_status(r->st, r->received, flush, false, err, sizeof(err)) != 0) {
        note_fault(r, LOG_LEVEL_WARN, "%s", err);
        return -1;
    }
    if (log_enabled(LOG_LEVEL_DEBUG) && flush > r->fb.last_sent_flush) {
        char b[LSN_BUFSZ];
        log_debug("confirmed %s", lsn_format(flush, b));
    }
    policy_feedback_sent(&r->fb, now, flush);
    r->m->confirmed_lsn = flush;
    r->reply_requested = false;
    return 0;
}

/*
 * Hand one message to the sink with ticket.  On QUEUE_FULL the sink is
 * served (and the loop's timed duties done) until there is room: the
 * producer's queue is sized above --max-inflight (relay_sink_props()), so
 * this happens only when a -X sets it lower.
 */
static enum sink_produce_result produce_as(relay *r, const envelope_msg *m, uint64_t ticket,
                                           char *err, size_t errlen)
{
    sink_header hdrs[ENVELOPE_MAX_HEADERS];
    sink_msg sm;
    enum sink_produce_result pr;

    pipeline_sink_msg(m, hdrs, &sm);
    while ((pr = sink_produce(r->sk, &sm, ticket, err, errlen)) == SINK_PRODUCE_QUEUE_FULL) {
        if (stop_requested)
            see_stop(r, obx_now_ms());
        if (policy_stop_overdue(obx_now_ms(), r->stop_deadline)) {
            request_rewind(r, "stopping while the producer queue is full");
            return SINK_PRODUCE_ERROR;
        }
        struct pollfd pfd = {.fd = sink_event_fd(r->sk), .events = POLLIN};
        (void)poll(&pfd, 1, 100);
        if (serve_producer(r) != 0)
            return SINK_PRODUCE_ERROR;
        if (policy_feedback_due(&r->fb, obx_now_ms(), watermark_flush_lsn(r->wm), false))
            (void)send_status(r, obx_now_ms());
        if (r->http && http_server_update(r->http, r->m, obx_now_ms(), metrics_now_us()) != 0)
            log_debug("cannot render metrics");
    }
    if (pr == SINK_PRODUCE_OK)
        r->inflight_bytes += m->valuelen + m->keylen;
    return pr;
}

/* The pipeline's produce hook: one more event of the open transaction
 * (counted in the watermark), or a refused record's dead letter. */
static enum sink_produce_result hook_produce(void *arg, const envelope_msg *m, uint64_t dl_ticket,
                                             char *err, size_t errlen)
{
    relay *r = arg;
    enum sink_produce_result pr = produce_as(r, m, dl_ticket ? dl_ticket : r->ticket, err, errlen);

    if (pr != SINK_PRODUCE_OK || dl_ticket)
        return pr;
    if (watermark_add_event(r->wm, r->ticket) != 0) {
        request_rewind(r, "watermark refused an event of ticket %llu",
                       (unsigned long long)r->ticket);
        return SINK_PRODUCE_ERROR;
    }
    metrics_event_sent(r->m, r->ticket, metrics_pgtime_to_unix_us(r->p.commit_ts));
    return pr;
}

static void hook_fail(void *arg, const char *reason)
{
    request_rewind(arg, "%s", reason);
}

static bool hook_failed(void *arg)
{
    const relay *r = arg;
    return r->need_rewind;
}

static enum pipeline_txn hook_begin(void *arg, const pgo_begin *b)
{
    relay *r = arg;

    (void)b;
    r->ticket = watermark_begin(r->wm);
    if (r->ticket == 0) {
        request_rewind(r, "watermark refused a transaction");
        return PIPELINE_TXN_STOP;
    }
    return PIPELINE_TXN_PUBLISH;
}

static void hook_commit(void *arg, const pgo_commit *c)
{
    relay *r = arg;

    if (watermark_commit(r->wm, r->ticket, c->end_lsn) != 0) {
        request_rewind(r, "watermark refused commit end %llX", (unsigned long long)c->end_lsn);
        return;
    }
    if (c->end_lsn > r->received)
        r->received = c->end_lsn;
}

static void handle_keepalive(relay *r, const stream_frame *f)
{
    /* Between a Commit and the next Begin every transaction that committed
     * before walEnd has been received: walEnd is confirmed once everything
     * before it is acknowledged, so a quiet outbox does not pin WAL. */
    if (!r->p.txn_open) {
        if (f->wal_end > r->received)
            r->received = f->wal_end;
        if (watermark_keepalive(r->wm, f->wal_end) != 0)
            request_rewind(r, "watermark refused keepalive position");
    }
    if (f->wal_end > r->m->server_lsn)
        r->m->server_lsn = f->wal_end;
    if (f->reply_requested)
        r->reply_requested = true;
    if (policy_server_stalled(&r->stall, obx_now_ms(), f->wal_end, f->reply_requested,
                              watermark_flush_lsn(r->wm)))
        r->end_stream = true;
}

static void disconnect(relay *r)
{
    stream_free(r->st);
    r->st = stream_new(r->cfg);
    r->connected = false;
    if (r->p.txn_open) {
        watermark_abort_open(r->wm);
        r->p.txn_open = false;
    }
    relcache_clear(r->rels);
}

static void schedule_reconnect_capped(relay *r, int64_t now, int64_t cap_ms)
{
    if (r->stream_started_at && now - r->stream_started_at > STABLE_STREAM_MS)
        r->reconnect_attempt = 0;
    r->stream_started_at = 0;
    metrics_set_state(r->m, METRICS_RECONNECTING);
    r->reconnect_at = now + policy_backoff_ms(r->reconnect_attempt++, RECONNECT_BASE_MS, cap_ms,
                                              (double)random() / ((double)RAND_MAX + 1.0));
}

static void schedule_reconnect(relay *r, int64_t now)
{
    schedule_reconnect_capped(r, now, RECONNECT_CAP_MS);
}

static int rewind_stream(relay *r, int64_t now)
{
    char err[512];
    char b[LSN_BUFSZ];
    uint64_t confirmed = watermark_flush_lsn(r->wm);

    r->rewinds++;
    metrics_rewound(r->m);
    metrics_set_state(r->m, METRICS_REWINDING);
    note_fault(r, LOG_LEVEL_WARN, "rewinding to the confirmed position: %s", r->rewind_reason);
    log_debug("rewind %llu to %s", (unsigned long long)r->rewinds, lsn_format(confirmed, b));
    disconnect(r);
    /* Forget everything in flight first, so reports of purged messages are
     * recognised as stale; then start over with a fresh producer. */
    watermark_reset(r->wm, confirmed);
    metrics_inflight_reset(r->m);
    deadletter_queue_clear(&r->refused);
    if (sink_purge(r->sk) != 0)
        log_warn("cannot purge the producer");
    if (sink_poll(r->sk, on_report, r, err, sizeof(err)) < 0)
        log_debug("producer error while purging: %s", err);
    sink_free(r->sk);
    r->p.sk = r->sk = open_sink(r->cfg, err, sizeof(err));
    if (!r->sk) {
        log_error("cannot recreate the Kafka producer: %s", err);
        return -1;
    }
    metrics_reconnected(r->m, METRICS_TARGET_KAFKA);
    r->inflight_bytes = 0;
    r->need_rewind = false;
    r->rewound = true;
    schedule_reconnect(r, now);
    return 0;
}

/*
 * Remember where the slot lives now (and in --state-file), so that a slot
 * that goes missing later is never recreated silently.  A new timeline
 * with the slot there is a promotion that kept it (a failover slot): the
 * stream restarts from the slot's confirmed position rather than after the
 * last transaction received, whose position may not exist on the new
 * timeline.
 */
static void remember_server(relay *r)
{
    char err[512], b[LSN_BUFSZ];
    slot_history *h = &r->hist;

    if (h->known && strcmp(h->systemid, r->info.systemid) == 0 && h->timeline == r->info.timeline)
        return;
    if (h->known) {
        log_warn("the server is now system %s timeline %d (was system %s timeline %d): slot "
                 "\"%s\" is there, confirmed at %s; continuing from it",
                 r->info.systemid, r->info.timeline, h->systemid, h->timeline, r->cfg->slot,
                 lsn_format(r->info.slot_confirmed, b));
        if (r->info.start_lsn > r->info.slot_confirmed)
            request_rewind(r, "the server's timeline changed: streaming again from the slot's "
                              "confirmed position");
    }
    h->known = true;
    strlcpy(h->systemid, r->info.systemid, sizeof(h->systemid));
    h->timeline = r->info.timeline;
    if (r->cfg->state_file &&
        slotstate_save(r->cfg->state_file, r->cfg->slot, h, err, sizeof(err)) != 0)
        log_warn("%s", err);
}

/*
 * Returns 0 (connected, or a retry is scheduled) or the exit code to stop
 * with.  After a rewind (or at first) the stream starts from the slot's
 * confirmed position and the watermark starts over there; after a plain
 * connection loss it resumes after the last transaction received, and
 * whatever is still in flight keeps its place in the watermark.
 */
static int try_connect(relay *r, bool first, int64_t now)
{
    char err[1024];
    enum stream_status s;
    char b1[LSN_BUFSZ], b2[LSN_BUFSZ];
    bool restart = first || r->rewound;

    /* After a rewind: from the slot, but never before --start-lsn. */
    uint64_t resume = restart ? (r->cfg->has_start_lsn ? r->cfg->start_lsn : 0) : r->received;
    s = setup_start(r->st, r->cfg, resume, first, &r->hist, &r->info, err, sizeof(err));
    if (s == STREAM_OK) {
        remember_server(r);
        if (restart) {
            watermark_reset(r->wm, r->info.start_lsn);
            r->received = r->info.start_lsn;
            r->rewound = false;
        }
        r->connected = true;
        r->parked = false;
        r->acked_at = now;
        r->stream_started_at = now;
        metrics_set_state(r->m, METRICS_STREAMING);
        if (!first)
            metrics_reconnected(r->m, METRICS_TARGET_POSTGRES);
        r->fb.last_sent_ms = -1; /* tell the server where we are at once */
        log_msg(r->fault[0] ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
                "streaming slot \"%s\" of database \"%s\" from %s (slot confirmed %s, "
                "pgoutput proto_version %d)",
                r->cfg->slot, r->info.dbname, lsn_format(r->info.start_lsn, b1),
                lsn_format(r->info.slot_confirmed, b2), r->info.proto_version);
        return 0;
    }
    if (s == STREAM_LOST) {
        /* Not a configuration mistake and not transient: the WAL is gone. */
        log_error("%s", err);
        return 1;
    }
    if (first && s == STREAM_CONFIG) {
        log_error("%s", err);
        return 2;
    }
    if (first && s == STREAM_RETRY) {
        log_error("%s", err);
        return 1;
    }
    if (s == STREAM_CONFIG) {
        /* Something changed under a running relay (slot dropped or lost,
         * publication gone): retrying cannot fix it. */
        log_error("%s", err);
        return 1;
    }
    if (s == STREAM_BUSY) {
        /* A hot standby (or the server not yet noticing that the previous
         * connection died): look again often enough to take over soon. */
        note_fault(r, LOG_LEVEL_WARN, "%s", err);
        schedule_reconnect_capped(r, now, STANDBY_CAP_MS);
        return 0;
    }
    note_fault(r, LOG_LEVEL_WARN, "%s", err);
    schedule_reconnect(r, now);
    return 0;
}

/* ps shows the state, the slot and the confirmed position (at most once a
 * second: setproctitle rewrites the argument area). */
static void update_title(relay *r, int64_t now)
{
    char b[LSN_BUFSZ];
    uint64_t flush = watermark_flush_lsn(r->wm);

    if (r->title_state == r->m->state && r->title_flush == flush)
        return;
    if (r->title_state == r->m->state && now - r->title_at < 1000)
        return;
    r->title_state = r->m->state;
    r->title_flush = flush;
    r->title_at = now;
    setproctitle("%s, slot %s, confirmed %s", metrics_state_name(r->m->state), r->cfg->slot,
                 lsn_format(flush, b));
}

static void log_stats(relay *r, int64_t now)
{
    char b[LSN_BUFSZ];
    r->stats_at = now;
    pipeline_log_dlq(&r->p, now);
    log_info("published %llu, acknowledged %llu, dead-lettered %llu, rewinds %llu, in flight "
             "%llu, confirmed %s",
             (unsigned long long)r->p.published, (unsigned long long)r->events_acked,
             (unsigned long long)r->p.dead_lettered, (unsigned long long)r->rewinds,
             (unsigned long long)watermark_inflight_events(r->wm),
             lsn_format(watermark_flush_lsn(r->wm), b));
}

/* Read buffered frames.  Returns 1 when frames may still be buffered. */
static int read_frames(relay *r)
{
    stream_frame f;
    char err[512];

    for (int n = 0; n < FRAMES_PER_PASS; n++) {
        if (r->need_rewind || !r->connected)
            return 0;
        if (policy_backpressure(watermark_inflight_events(r->wm), watermark_inflight_txns(r->wm),
                                r->inflight_bytes, r->cfg->max_inflight_events,
                                r->cfg->max_inflight_bytes))
            return 0;
        int got = stream_next(r->st, &f, err, sizeof(err));
        if (got == 0)
            return 0;
        if (got < 0) {
            note_fault(r, LOG_LEVEL_WARN, "%s", err);
            disconnect(r);
            schedule_reconnect(r, obx_now_ms());
            return 0;
        }
        if (f.kind == STREAM_FRAME_XLOGDATA) {
            /* a message that cannot be decoded is never skipped: the
             * pipeline fails the pass and the relay rewinds */
            pipeline_xlogdata(&r->p, r->rels, r->msg, f.payload, f.len, f.wal_start);
        } else {
            handle_keepalive(r, &f);
        }
    }
    return 1;
}

static bool stream_paused(const relay *r)
{
    return policy_backpressure(watermark_inflight_events(r->wm), watermark_inflight_txns(r->wm),
                               r->inflight_bytes, r->cfg->max_inflight_events,
                               r->cfg->max_inflight_bytes);
}

/*
 * Close the stream the server is waiting on while the relay cannot confirm
 * what it was sent (a shutdown or restart waits for that), or that the
 * relay stopped reading: nothing is lost, whatever is in flight keeps its
 * place and the stream resumes after the last transaction received.
 */
static void end_stream(relay *r, int64_t now)
{
    char err[512];
    bool paused = !r->end_stream;

    if (paused)
        note_fault(r, LOG_LEVEL_WARN,
                   "nothing acknowledged for %d ms while reading is paused (%llu events in "
                   "flight): closing the replication stream until they are (a server "
                   "shutdown would wait on it)",
                   PARK_STREAM_MS, (unsigned long long)watermark_inflight_events(r->wm));
    else
        note_fault(r, LOG_LEVEL_WARN,
                   "the server is waiting for a confirmation the relay cannot give yet (%llu "
                   "events in flight; a shutdown or restart?): closing the replication stream, "
                   "reconnecting later",
                   (unsigned long long)watermark_inflight_events(r->wm));
    if (stream_finish(r->st, r->received, watermark_flush_lsn(r->wm), 500, err, sizeof(err)) != 0)
        log_debug("ending the stream: %s", err);
    r->end_stream = false;
    r->parked = paused;
    r->stall = (stall_watch){0};
    disconnect(r);
    schedule_reconnect(r, now);
}

/* A stop: what is acknowledged in time is confirmed, the rest is sent
 * again on the next start.  The caller picks the exit code. */
static void shutdown_relay(relay *r, const char *why)
{
    char err[512], b[LSN_BUFSZ];

    metrics_set_state(r->m, METRICS_STOPPING);
    if (r->http && http_server_update(r->http, r->m, obx_now_ms(), metrics_now_us()) != 0)
        log_debug("cannot render metrics");
    log_info("stopping (%s): waiting up to %d ms for the broker", why, r->cfg->shutdown_timeout_ms);
    if (sink_flush(r->sk, r->cfg->shutdown_timeout_ms, on_report, r) != 0)
        log_warn("%d messages not acknowledged in time; they will be sent again on restart",
                 sink_queue_len(r->sk));
    if (r->connected) {
        if (r->p.txn_open) {
            char c[LSN_BUFSZ];
            log_warn("stopping inside transaction %u (commits at %s): the %u event(s) of it "
                     "already published will be sent again on restart",
                     r->p.xid, lsn_format(r->p.commit_lsn, c), r->p.seq);
            watermark_abort_open(r->wm);
            r->p.txn_open = false;
        }
        if (stream_finish(r->st, r->received, watermark_flush_lsn(r->wm), 5000, err, sizeof(err)) !=
            0)
            log_warn("%s", err);
        r->connected = false;
    }
    log_stats(r, obx_now_ms());
    log_info("stopped; confirmed %s", lsn_format(watermark_flush_lsn(r->wm), b));
}

/* Everything the loop needs before the first connection.  0, or the exit
 * code: 1 out of memory, 2 a sink or --http that cannot start. */
static int relay_open(relay *r, const config *cfg)
{
    char err[512];

    r->cfg = cfg;
    r->fb.interval_ms = cfg->status_interval_ms;
    r->fb.last_sent_ms = -1;
    if (cfg->state_file &&
        slotstate_load(cfg->state_file, cfg->slot, &r->hist, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return 2;
    }
    r->st = stream_new(cfg);
    r->wm = watermark_new(0);
    r->rels = relcache_new();
    r->msg = malloc(sizeof(*r->msg));
    r->m = metrics_new(cfg->slot, metrics_now_us());
    r->dl_base = (envelope_source){.db = r->info.dbname, .slot = cfg->slot};
    r->p = (pipeline){.cfg = cfg,
                      .m = r->m,
                      .db = r->info.dbname,
                      .hooks = {.produce = hook_produce,
                                .fail = hook_fail,
                                .failed = hook_failed,
                                .begin = hook_begin,
                                .commit = hook_commit,
                                .arg = r}};
    if (!r->st || !r->wm || !r->rels || !r->msg || !r->m) {
        log_error("out of memory");
        return 1;
    }
    r->p.sk = r->sk = open_sink(cfg, err, sizeof(err));
    if (!r->sk) {
        log_error("%s", err);
        return 2;
    }
    /* Before the first connection, so /healthz answers while standing by. */
    if (cfg->http_addr) {
        r->http = http_server_start(cfg->http_addr, HTTP_STALE_MS, err, sizeof(err));
        if (!r->http) {
            log_error("%s", err);
            return 2;
        }
        log_info("serving /metrics, /status, /healthz and /readyz on %s", cfg->http_addr);
        r->anchors =
            anchorwatch_start(cfg->conninfo, cfg->password, cfg->slot, ANCHORWATCH_INTERVAL_MS);
    }
    return 0;
}

static void relay_close(relay *r)
{
    http_server_free(r->http); /* stops its thread before the metrics go */
    anchorwatch_stop(r->anchors);
    /* Serve what is already there; anything unacknowledged is sent again
     * on the next start. */
    if (r->sk && sink_flush(r->sk, 0, on_report, r) != 0)
        log_debug("%d messages unacknowledged at exit", sink_queue_len(r->sk));
    sink_free(r->sk);
    stream_free(r->st);
    deadletter_queue_clear(&r->refused);
    relcache_free(r->rels);
    watermark_free(r->wm);
    metrics_free(r->m);
    free(r->msg);
}

/*
 * The first start decides between "bad configuration" (exit 2) and
 * running; a slot held by another process is waited for.  Returns -1 once
 * streaming, else the exit code (0: stopped while waiting).
 */
static int first_start(relay *r)
{
    for (;;) {
        int code = try_connect(r, true, obx_now_ms());
        if (code != 0)
            return code;
        if (r->connected)
            return -1;
        /* Nothing to serve yet: sleep until the retry (a signal cuts it
         * short), in slices so /healthz sees the process alive. */
        for (int64_t left; !stop_requested && (left = r->reconnect_at - obx_now_ms()) > 0;) {
            if (left > 1000)
                left = 1000;
            struct timespec ts = {left / 1000, (left % 1000) * 1000000};
            nanosleep(&ts, NULL);
            if (reload_pending())
                reload_apply(r->cfg);
            if (r->http && http_server_update(r->http, r->m, obx_now_ms(), metrics_now_us()) != 0)
                log_debug("cannot render metrics");
        }
        if (stop_requested)
            return 0;
    }
}

/* The snapshot /metrics and /status serve. */
static void publish_metrics(relay *r, int64_t now, bool paused)
{
    r->m->received_lsn = r->received;
    r->m->inflight_events = watermark_inflight_events(r->wm);
    r->m->inflight_bytes = r->inflight_bytes;
    r->m->broker_reachable = sink_healthy(r->sk);
    /* a connection configuration fault (credentials, CA) is the error
     * /status shows while it lasts */
    const char *bf = sink_fault(r->sk);
    if (bf && strncmp(bf, r->m->last_error, METRICS_ERROR_MAX - 1) != 0) {
        metrics_set_error(r->m, bf, metrics_now_us());
        r->broker_fault_shown = true;
    } else if (!bf && r->broker_fault_shown) {
        if (!r->fault[0])
            metrics_clear_error(r->m);
        r->broker_fault_shown = false;
    }
    metrics_backpressure(r->m, r->connected && paused, now);
    (void)anchorwatch_copy(r->anchors, r->m);
    if (r->http && http_server_update(r->http, r->m, now, metrics_now_us()) != 0)
        log_debug("cannot render metrics");
}

/*
 * Sleep until a socket is ready or the next deadline (not at all when more
 * frames may be buffered), then pull what the replication socket has.
 * Paused by backpressure, the socket is not polled for reading.  0, or -1
 * when poll() itself failed.
 */
static int wait_for_work(relay *r, int64_t now, bool paused, bool more)
{
    char err[512];
    int64_t timeout = more ? 0 : 1000;
    struct pollfd pfd[2];
    int npfd = 0, pg = -1;

    if (r->connected) {
        int64_t w =
            policy_feedback_wait(&r->fb, now, watermark_flush_lsn(r->wm), r->reply_requested);
        if (w < timeout)
            timeout = w;
        pfd[npfd] = (struct pollfd){
            .fd = stream_socket(r->st),
            .events = (short)((paused ? 0 : POLLIN) | (stream_wants_write(r->st) ? POLLOUT : 0))};
        pg = npfd++;
    } else if (r->reconnect_at - now < timeout && !(r->parked && paused)) {
        timeout = r->reconnect_at > now ? r->reconnect_at - now : 0;
    }
    pfd[npfd++] = (struct pollfd){.fd = sink_event_fd(r->sk), .events = POLLIN};
    if (poll(pfd, (nfds_t)npfd, (int)timeout) < 0 && errno != EINTR) {
        log_error("poll failed: %s", strerror(errno));
        return -1;
    }
    if (pg < 0 || !r->connected)
        return 0;
    if (((pfd[pg].revents & (POLLIN | POLLERR | POLLHUP)) &&
         stream_consume(r->st, err, sizeof(err)) != 0) ||
        ((pfd[pg].revents & POLLOUT) && stream_flush(r->st, err, sizeof(err)) != 0)) {
        note_fault(r, LOG_LEVEL_WARN, "%s", err);
        disconnect(r);
        schedule_reconnect(r, obx_now_ms());
    }
    return 0;
}

/* One pass of the loop (README, Design: the event loop).  Returns -1 to go
 * on, else the exit code. */
static int run_pass(relay *r)
{
    const config *cfg = r->cfg;
    int64_t now = obx_now_ms();
    bool more = false;

    if (reload_pending())
        reload_apply(cfg);
    if (stop_requested) {
        see_stop(r, now);
        if (!policy_finish_before_stop(r->connected, r->p.txn_open, r->need_rewind, now,
                                       r->stop_deadline)) {
            shutdown_relay(r, "signal");
            return 0;
        }
    }
    (void)serve_producer(r);
    pipeline_dead_letter_refused(&r->p, &r->refused, r->rewinds, &r->dl_base);
    if (r->need_rewind && rewind_stream(r, now) != 0)
        return 1;
    if (cfg->has_end_lsn && watermark_flush_lsn(r->wm) >= cfg->end_lsn) {
        shutdown_relay(r, "reached --end-lsn");
        return 0;
    }
    if (!r->connected && now >= r->reconnect_at && !(r->parked && stream_paused(r)) &&
        try_connect(r, false, now) != 0)
        return 1;
    if (r->connected) {
        more = read_frames(r) != 0;
        now = obx_now_ms();
        if (r->events_acked != r->acked_seen) {
            r->acked_seen = r->events_acked;
            r->acked_at = now;
        }
        if (r->connected && (r->end_stream || policy_park_stream(stream_paused(r), now, r->acked_at,
                                                                 PARK_STREAM_MS)))
            end_stream(r, now);
        if (r->connected &&
            policy_feedback_due(&r->fb, now, watermark_flush_lsn(r->wm), r->reply_requested) &&
            send_status(r, now) != 0) {
            disconnect(r);
            schedule_reconnect(r, now);
        }
    }
    check_recovered(r, now);
    if (r->connected && (watermark_flush_lsn(r->wm) != r->progress_flush ||
                         watermark_inflight_events(r->wm) == 0)) {
        r->progress_at = now;
        r->progress_flush = watermark_flush_lsn(r->wm);
    }
    if (policy_give_up(now, r->progress_at, cfg->give_up_after_ms)) {
        log_error("giving up: no progress for %d s (--give-up-after)%s%s",
                  cfg->give_up_after_ms / 1000, r->fault[0] ? "; last fault: " : "", r->fault);
        shutdown_relay(r, "giving up");
        return 1;
    }
    update_title(r, now);
    if (now - r->stats_at >= STATS_INTERVAL_MS)
        log_stats(r, now);
    if (r->need_rewind)
        return -1;

    bool paused =
        policy_backpressure(watermark_inflight_events(r->wm), watermark_inflight_txns(r->wm),
                            r->inflight_bytes, cfg->max_inflight_events, cfg->max_inflight_bytes);
    publish_metrics(r, now, paused);
    return wait_for_work(r, now, paused, more) == 0 ? -1 : 1;
}

int relay_run(const config *cfg)
{
    relay r = {0};
    int exit_code;

    reload_all_signals(on_signal);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());

    exit_code = relay_open(&r, cfg);
    if (exit_code == 0 && (exit_code = first_start(&r)) < 0) {
        r.stats_at = r.progress_at = obx_now_ms();
        while ((exit_code = run_pass(&r)) < 0)
            ;
    }
    relay_close(&r);
    return exit_code;
}
