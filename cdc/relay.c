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

#include "cdc/http.h"
#include "cdc/anchorwatch.h"
#include "cdc/deadletter.h"
#include "cdc/log.h"
#include "cdc/metrics.h"
#include "cdc/policy.h"
#include "cdc/stream.h"
#include "cdc/watermark.h"
#include "decode/lsn.h"
#include "decode/outbox.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"
#include "publish/kafka.h"
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

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* What the relay remembers about a relation, in relcache_entry.user. */
typedef struct relinfo {
    bool is_outbox;
    bool truncate_logged;
    const config_table *table; /* the --table entry, for its column map */
    bool bound;
    outbox_binding binding;
    char bind_err[384];
} relinfo;

/* Why rows went to the dead-letter topic: counted per reason, each reason
 * logged at most once per DLQ_LOG_INTERVAL_MS with the rows it stood for. */
enum dlq_reason {
    DLQ_UNMAPPED,    /* the table lacks a column a required role maps to */
    DLQ_INVALID_ROW, /* a required value NULL or empty, or not text */
    DLQ_INVALID_RECORD, /* payload not JSON, bad timestamp, topic Kafka rejects */
    DLQ_REJECTED,    /* the producer refused the message (too large, ...) */
    DLQ_NREASONS
};
static const char *const dlq_reason_names[DLQ_NREASONS] = {"unmapped_column", "invalid_row",
                                                          "invalid_record", "rejected"};
#define DLQ_LOG_INTERVAL_MS 60000

typedef struct dlq_stats {
    uint64_t total;
    uint64_t unlogged; /* rows since the last log line for this reason */
    int64_t logged_at; /* 0 = never logged */
} dlq_stats;

_Static_assert((int)DLQ_NREASONS == (int)METRICS_DLQ_NREASONS, "dead-letter reasons differ");

typedef struct relay {
    const config *cfg;
    metrics *m;
    http_server *http;
    stream *st;
    stream_info info;
    bool connected;
    kafka_producer *kp;
    watermark *wm;
    relcache *rels;
    pgo_msg *msg;

    /* the transaction being received */
    bool txn_open;
    uint64_t ticket;
    uint32_t xid;
    uint64_t commit_lsn;
    int64_t commit_ts;
    uint32_t seq;

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
    bool parked; /* stream closed under backpressure: reconnect when it clears */
    uint64_t acked_seen; /* events_acked when acked_at was last moved */
    int64_t acked_at;    /* the last acknowledgement seen (or connection) */

    /* The fault being ridden out: logged once, repeats only counted, and
     * its end logged once when the stream has been healthy for a while. */
    char fault[512];
    unsigned fault_repeats;
    uint64_t fault_flush;

    unsigned reconnect_attempt;
    int64_t reconnect_at;
    int64_t stream_started_at;
    int64_t stop_deadline; /* set when a stop is first seen */

    uint64_t events_published, events_acked, dead_lettered, rewinds;
    uint64_t messages_skipped, outbox_truncates, traceparents_dropped;
    /* from delivery reports, dead-lettered by the loop; an entry's epoch is
     * the rewind count when refused: stale after a rewind */
    deadletter_queue refused;
    anchorwatch *anchors; /* with --http: anchor retention for /metrics */
    enum metrics_state title_state;
    uint64_t title_flush;
    /* --give-up-after: the last time the relay made progress (streaming
     * with nothing in flight, or the confirmed position moved) */
    int64_t progress_at;
    uint64_t progress_flush;
    int64_t title_at;
    dlq_stats dlq[DLQ_NREASONS];
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
    if (r->txn_open && r->connected)
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
    r->reconnect_attempt = 0; /* the next fault starts with a short backoff again */
    r->fault[0] = '\0';
    r->fault_repeats = 0;
}

/* Debug: where an event landed (or why not), by its id, for tracing one event. */
static void log_report(const kafka_report *rep)
{
    const void *id = NULL;
    size_t idlen = 0;

    if (kafka_report_header(rep, "id", &id, &idlen) != 0 &&
        kafka_report_header(rep, "ce_id", &id, &idlen) != 0) {
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

static void on_report(const kafka_report *rep, void *arg)
{
    relay *r = arg;
    uint64_t ticket = rep->ticket & ~DEADLETTER_TICKET;
    enum deadletter_verdict v = deadletter_classify(rep);
    int rc;

    r->inflight_bytes = rep->len > r->inflight_bytes ? 0 : r->inflight_bytes - rep->len;
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_report(rep);
    if (v == DEADLETTER_ACKED) {
        rc = watermark_ack(r->wm, ticket);
        r->events_acked++;
    } else if (v == DEADLETTER_ACKED_NO_OFFSET) {
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
    } else if (v == DEADLETTER_REFUSED) {
        /* The record itself is refused (too large for the broker, ...):
         * it goes to the dead-letter topic, whose delivery will count as
         * its acknowledgement. */
        if (deadletter_queue_report(&r->refused, rep, r->rewinds) != 0)
            request_rewind(r, "out of memory keeping a refused message");
        return;
    } else {
        rc = watermark_fail(r->wm, ticket);
        if (rc == 0)
            request_rewind(r, "delivery failed: %s", rep->errstr ? rep->errstr : "unknown error");
    }
    if (rc == 0)
        metrics_event_reported(r->m, ticket, v == DEADLETTER_ACKED, metrics_now_us());
    if (rc < 0)
        request_rewind(r, "delivery report for unknown ticket %llu", (unsigned long long)ticket);
}

static int serve_producer(relay *r)
{
    char err[512];
    if (kafka_poll(r->kp, on_report, r, err, sizeof(err)) < 0) {
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
 * Hand one message to the producer with ticket.  On QUEUE_FULL the producer
 * is served until there is room: the queue is sized well above
 * --max-inflight, so this only happens when librdkafka's own limits are set
 * lower.
 */
static enum kafka_produce_result produce_as(relay *r, const envelope_msg *m, uint64_t ticket,
                                            char *err, size_t errlen)
{
    kafka_header hdrs[ENVELOPE_MAX_HEADERS];
    enum kafka_produce_result pr;

    for (int i = 0; i < m->nheaders; i++) {
        hdrs[i].name = m->headers[i].name;
        hdrs[i].value = m->headers[i].value;
        hdrs[i].len = m->headers[i].len;
    }
    for (;;) {
        pr = kafka_produce_ts(r->kp, m->topic, m->key, m->keylen, m->value, m->valuelen,
                              m->timestamp_ms, hdrs, (size_t)m->nheaders, ticket, err, errlen);
        if (pr != KAFKA_PRODUCE_QUEUE_FULL)
            break;
        if (stop_requested)
            see_stop(r, stream_now_ms());
        if (policy_stop_overdue(stream_now_ms(), r->stop_deadline)) {
            request_rewind(r, "stopping while the producer queue is full");
            return KAFKA_PRODUCE_ERROR;
        }
        struct pollfd pfd = {.fd = kafka_event_fd(r->kp), .events = POLLIN};
        (void)poll(&pfd, 1, 100);
        if (serve_producer(r) != 0)
            return KAFKA_PRODUCE_ERROR;
        if (policy_feedback_due(&r->fb, stream_now_ms(), watermark_flush_lsn(r->wm), false))
            (void)send_status(r, stream_now_ms());
        if (r->http && http_server_update(r->http, r->m, stream_now_ms(), metrics_now_us()) != 0)
            log_debug("cannot render metrics");
    }
    if (pr == KAFKA_PRODUCE_OK)
        r->inflight_bytes += m->valuelen + m->keylen;
    return pr;
}

/* One more event of the open transaction. */
static enum kafka_produce_result produce(relay *r, const envelope_msg *m, char *err,
                                         size_t errlen)
{
    enum kafka_produce_result pr = produce_as(r, m, r->ticket, err, errlen);

    if (pr == KAFKA_PRODUCE_OK) {
        if (watermark_add_event(r->wm, r->ticket) != 0) {
            request_rewind(r, "watermark refused an event of ticket %llu",
                           (unsigned long long)r->ticket);
            return KAFKA_PRODUCE_ERROR;
        }
        metrics_event_sent(r->m, r->ticket, metrics_pgtime_to_unix_us(r->commit_ts));
    }
    return pr;
}

/* A row that cannot become an event goes to the dead-letter topic; that
 * delivery is its acknowledgement.  If even that cannot be produced, the
 * relay rewinds: it never skips a row. */
static void dead_letter(relay *r, enum dlq_reason why, const relcache_entry *rel,
                        const pgo_tuple *tuple, const outbox_row *row, const char *reason,
                        const envelope_source *src, const char *original_topic)
{
    envelope_msg m = {0};
    char err[512];
    char lsnb[LSN_BUFSZ];
    dlq_stats *ds = &r->dlq[why];
    int64_t now = stream_now_ms();

    ds->unlogged++;
    if (ds->logged_at == 0 || now - ds->logged_at >= DLQ_LOG_INTERVAL_MS) {
        log_warn("dead-lettered %llu row(s) for %s to \"%s\"; latest at %s of \"%s\": %s",
                 (unsigned long long)ds->unlogged, dlq_reason_names[why], r->cfg->dlq_topic,
                 lsn_format(src->lsn, lsnb), rel->qualname, reason);
        ds->unlogged = 0;
        ds->logged_at = now;
    }
    if (envelope_build_dead_letter(r->cfg->dlq_topic, rel, tuple, row, reason, src,
                                   original_topic, &m, err, sizeof(err)) != 0) {
        request_rewind(r, "cannot build dead-letter record: %s", err);
        return;
    }
    enum kafka_produce_result pr = produce(r, &m, err, sizeof(err));
    if (pr == KAFKA_PRODUCE_REJECTED) {
        /* The row itself is what the producer refuses (too large, as a
         * rule): dead-letter it without its values, so the reason, position
         * and table still reach the topic. */
        char why_more[768];
        envelope_msg_clear(&m);
        snprintf(why_more, sizeof(why_more), "%s (row values omitted: %s)", reason, err);
        if (envelope_build_dead_letter(r->cfg->dlq_topic, rel, NULL, NULL, why_more, src,
                                       original_topic, &m, err, sizeof(err)) != 0) {
            request_rewind(r, "cannot build dead-letter record: %s", err);
            return;
        }
        pr = produce(r, &m, err, sizeof(err));
    }
    if (pr != KAFKA_PRODUCE_OK)
        request_rewind(r, "cannot produce to dead-letter topic \"%s\": %s", r->cfg->dlq_topic,
                       err);
    else {
        r->dead_lettered++;
        ds->total++;
        metrics_dead_lettered(r->m, (enum metrics_dlq_reason)why);
    }
    envelope_msg_clear(&m);
}

/*
 * Dead-letter the records the broker refused for good (deadletter_build):
 * the dead-letter record carries the original event's ticket, so its
 * delivery acknowledges that event.  A caveat of librdkafka: the broker
 * judges a whole batch, so a record batched with a refused one is refused
 * too and dead-lettered with it -- its content is in the dead-letter record.
 */
static void dead_letter_refused(relay *r)
{
    deadletter_refused *f;

    while (!r->need_rewind && (f = deadletter_queue_pop(&r->refused))) {
        envelope_source base = {.db = r->info.dbname, .slot = r->cfg->slot};
        envelope_msg m = {0};
        char err[512], b[LSN_BUFSZ];

        if (f->epoch != r->rewinds) { /* its event will be sent again anyway */
            deadletter_refused_free(f);
            continue;
        }
        r->dlq[DLQ_REJECTED].unlogged++;
        log_warn("record at %s for topic \"%s\" refused by the broker; dead-lettered to \"%s\": "
                 "%s",
                 lsn_format(f->lsn, b), f->topic, r->cfg->dlq_topic, f->reason);
        if (deadletter_build(f, r->cfg->dlq_topic, &base, &m, err, sizeof(err)) != 0 ||
            produce_as(r, &m, f->ticket | DEADLETTER_TICKET, err, sizeof(err)) !=
                KAFKA_PRODUCE_OK) {
            if (watermark_fail(r->wm, f->ticket) == 0)
                request_rewind(r, "cannot dead-letter a refused record: %s", err);
        } else {
            r->dead_lettered++;
            r->dlq[DLQ_REJECTED].total++;
            metrics_dead_lettered(r->m, METRICS_DLQ_REJECTED);
        }
        envelope_msg_clear(&m);
        deadletter_refused_free(f);
    }
}

/* The source position of the next event of the open transaction. */
static envelope_source next_source(relay *r, uint64_t lsn, const char *table)
{
    return (envelope_source){.lsn = lsn,
                             .commit_lsn = r->commit_lsn,
                             .seq = r->seq++,
                             .xid = r->xid,
                             .commit_ts = r->commit_ts,
                             .db = r->info.dbname,
                             .table = table,
                             .slot = r->cfg->slot};
}

/* Turn a valid row into a record and hand it to the producer; a row the
 * record cannot be made of, or the producer refuses, is dead-lettered. */
static void publish_event(relay *r, const relcache_entry *rel, const pgo_tuple *tuple,
                          const outbox_row *row, const envelope_source *src)
{
    envelope_msg m = {0};
    envelope_extra extras[ENVELOPE_MAX_FIELDS];
    size_t nextras = 0;
    char err[512];

    if (envelope_fields_resolve(r->cfg->fields, r->cfg->nfields, rel, tuple, extras, &nextras, err,
                                sizeof(err)) != 0) {
        dead_letter(r, DLQ_INVALID_RECORD, rel, tuple, row, err, src, NULL);
        return;
    }
    errno = 0;
    if (envelope_build_opts(&r->cfg->envelope, row, extras, nextras, src, &m, err, sizeof(err)) !=
        0) {
        if (errno == ENOMEM) /* a good row must not be dead-lettered for our own failure */
            request_rewind(r, "cannot build record: %s", err);
        else
            dead_letter(r, DLQ_INVALID_RECORD, rel, tuple, row, err, src, NULL);
        return;
    }
    if (m.dropped_traceparent) {
        char b[LSN_BUFSZ];
        r->traceparents_dropped++;
        if (r->traceparents_dropped == 1 || r->traceparents_dropped % 1000 == 0)
            log_warn("dropped %llu malformed traceparent value(s); latest at %s of \"%s\" (not "
                     "W3C trace context)",
                     (unsigned long long)r->traceparents_dropped, lsn_format(src->lsn, b),
                     src->table);
    }
    switch (produce(r, &m, err, sizeof(err))) {
    case KAFKA_PRODUCE_OK:
        r->events_published++;
        metrics_published(r->m, m.topic);
        break;
    case KAFKA_PRODUCE_REJECTED:
        if (!r->need_rewind)
            dead_letter(r, DLQ_REJECTED, rel, tuple, row, err, src, m.topic);
        break;
    case KAFKA_PRODUCE_QUEUE_FULL: /* not returned by produce() */
    case KAFKA_PRODUCE_ERROR: request_rewind(r, "producer refused a message: %s", err); break;
    }
    envelope_msg_clear(&m);
}

static void handle_insert(relay *r, const pgo_insert *ins, uint64_t lsn)
{
    relcache_entry *rel = relcache_get(r->rels, ins->oid);
    relinfo *ri;
    outbox_row row;
    char err[512];
    envelope_source src;

    if (!rel) {
        request_rewind(r, "insert for relation %u before its Relation message", ins->oid);
        return;
    }
    ri = rel->user;
    if (!ri || !ri->is_outbox)
        return;
    if (!r->txn_open) {
        request_rewind(r, "insert outside a transaction");
        return;
    }
    src = next_source(r, lsn, rel->qualname);
    if (!ri->bound)
        dead_letter(r, DLQ_UNMAPPED, rel, &ins->tuple, NULL, ri->bind_err, &src, NULL);
    else if (outbox_extract(&ri->binding, rel, &ins->tuple, &row, err, sizeof(err)) != 0)
        dead_letter(r, DLQ_INVALID_ROW, rel, &ins->tuple, NULL, err, &src, NULL);
    else
        publish_event(r, rel, &ins->tuple, &row, &src);
}

/*
 * A logical decoding message: with --messages, a transactional one with the
 * prefix is an event in transaction order with the rows.  Its dead-letter
 * record shows the content as the single column "content" of a pseudo
 * table "message:PREFIX".
 */
static void handle_message(relay *r, const pgo_message *msg, uint64_t lsn)
{
    char err[512];
    outbox_message_rel pm;
    outbox_message_row mr;
    envelope_source src;

    if (!r->cfg->messages_prefix || strcmp(msg->prefix, r->cfg->messages_prefix) != 0)
        return;
    if (!outbox_message_is_event(msg, r->cfg->messages_prefix)) {
        /* Sent at once, outside any transaction, even when the emitting
         * transaction rolls back: never an event. */
        r->messages_skipped++;
        if (r->messages_skipped == 1)
            log_warn("skipping non-transactional messages with prefix \"%s\": they arrive "
                     "even when their transaction aborts (emit them with transactional = true)",
                     msg->prefix);
        return;
    }
    if (!r->txn_open) {
        request_rewind(r, "transactional message outside a transaction");
        return;
    }
    outbox_message_rel_init(&pm, msg);
    src = next_source(r, lsn ? lsn : msg->lsn, pm.table);
    if (outbox_from_message(msg->content, msg->len, &mr, err, sizeof(err)) != 0) {
        dead_letter(r, DLQ_INVALID_ROW, &pm.rel, &pm.tuple, NULL, err, &src, NULL);
        return;
    }
    publish_event(r, &pm.rel, &pm.tuple, &mr.row, &src);
    outbox_message_row_clear(&mr);
}

static void handle_truncate(relay *r, const pgo_truncate *t)
{
    for (uint32_t i = 0; i < t->nrels; i++) {
        relcache_entry *rel = relcache_get(r->rels, pgo_truncate_oid(t, i));
        relinfo *ri = rel ? rel->user : NULL;
        if (!ri || !ri->is_outbox)
            continue;
        r->outbox_truncates++;
        if (!ri->truncate_logged) {
            /* Not an event: the rows' events were captured when inserted. */
            log_info("outbox table \"%s\" was truncated (not an event; counted)", rel->qualname);
            ri->truncate_logged = true;
        }
    }
}

static void handle_relation(relay *r, const pgo_relation *prel)
{
    relcache_entry *rel = relcache_put(r->rels, prel);
    relinfo *ri;

    if (!rel) {
        request_rewind(r, "out of memory caching relation %u", prel->oid);
        return;
    }
    ri = calloc(1, sizeof(*ri));
    if (!ri) {
        request_rewind(r, "out of memory caching relation %u", prel->oid);
        return;
    }
    rel->user = ri;
    for (size_t i = 0; i < r->cfg->ntables && !ri->is_outbox; i++)
        if (strcmp(r->cfg->tables[i].qualname, rel->qualname) == 0) {
            ri->is_outbox = true;
            ri->table = &r->cfg->tables[i];
        }
    if (!ri->is_outbox)
        return;
    ri->bound = outbox_bind(&ri->table->colmap, rel, &ri->binding, ri->bind_err,
                            sizeof(ri->bind_err)) == 0;
    if (!ri->bound)
        log_error("%s; its rows go to dead-letter topic \"%s\" until fixed", ri->bind_err,
                  r->cfg->dlq_topic);
    else
        log_debug("outbox table \"%s\" (oid %u, %u columns)", rel->qualname, rel->oid,
                  rel->natts);
}

/* A message that cannot be decoded is never skipped: the relay rewinds to
 * the confirmed position and reads it again (with backoff). */
static void handle_xlogdata(relay *r, const stream_frame *f)
{
    char err[512];

    static const pgo_options all_kinds = {.all_kinds = true};

    if (pgo_parse_opts(f->payload, f->len, &all_kinds, r->msg, err, sizeof(err)) != 0) {
        char b[LSN_BUFSZ];
        log_error("cannot decode pgoutput message at %s: %s", lsn_format(f->wal_start, b), err);
        request_rewind(r, "undecodable message at %s", b);
        return;
    }
    switch (r->msg->kind) {
    case PGO_BEGIN:
        if (r->txn_open) {
            request_rewind(r, "Begin inside an open transaction");
            break;
        }
        r->ticket = watermark_begin(r->wm);
        if (r->ticket == 0) {
            request_rewind(r, "watermark refused a transaction");
            break;
        }
        r->txn_open = true;
        r->xid = r->msg->u.begin.xid;
        r->commit_lsn = r->msg->u.begin.final_lsn;
        r->commit_ts = r->msg->u.begin.commit_ts;
        r->seq = 0;
        break;
    case PGO_COMMIT:
        if (!r->txn_open) {
            request_rewind(r, "Commit without Begin");
            break;
        }
        if (watermark_commit(r->wm, r->ticket, r->msg->u.commit.end_lsn) != 0) {
            request_rewind(r, "watermark refused commit end %llX",
                           (unsigned long long)r->msg->u.commit.end_lsn);
            break;
        }
        r->txn_open = false;
        if (r->msg->u.commit.end_lsn > r->received)
            r->received = r->msg->u.commit.end_lsn;
        break;
    case PGO_RELATION: handle_relation(r, &r->msg->u.relation); break;
    case PGO_INSERT: handle_insert(r, &r->msg->u.insert, f->wal_start); break;
    case PGO_MESSAGE: handle_message(r, &r->msg->u.message, f->wal_start); break;
    case PGO_TRUNCATE: handle_truncate(r, &r->msg->u.truncate); break;
    case PGO_UPDATE: /* outbox UPDATE and DELETE are not events */
    case PGO_DELETE:
    case PGO_ORIGIN:
    case PGO_TYPE:
    case PGO_SKIPPED: break;
    case PGO_STREAM_START: /* never requested: streaming and two_phase are off */
    case PGO_STREAM_STOP:
    case PGO_STREAM_COMMIT:
    case PGO_STREAM_ABORT:
    case PGO_BEGIN_PREPARE:
    case PGO_PREPARE:
    case PGO_COMMIT_PREPARED:
    case PGO_ROLLBACK_PREPARED:
    case PGO_STREAM_PREPARE:
        request_rewind(r, "unexpected %s message", pgo_type_name(r->msg->type));
        break;
    }
}

static void handle_keepalive(relay *r, const stream_frame *f)
{
    /* Between a Commit and the next Begin every transaction that committed
     * before walEnd has been received: walEnd is confirmed once everything
     * before it is acknowledged, so a quiet outbox does not pin WAL. */
    if (!r->txn_open) {
        if (f->wal_end > r->received)
            r->received = f->wal_end;
        if (watermark_keepalive(r->wm, f->wal_end) != 0)
            request_rewind(r, "watermark refused keepalive position");
    }
    if (f->wal_end > r->m->server_lsn)
        r->m->server_lsn = f->wal_end;
    if (f->reply_requested)
        r->reply_requested = true;
    if (policy_server_stalled(&r->stall, stream_now_ms(), f->wal_end, f->reply_requested,
                              watermark_flush_lsn(r->wm)))
        r->end_stream = true;
}

static void disconnect(relay *r)
{
    stream_free(r->st);
    r->st = stream_new(r->cfg);
    r->connected = false;
    if (r->txn_open) {
        watermark_abort_open(r->wm);
        r->txn_open = false;
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
    if (kafka_purge(r->kp) != 0)
        log_warn("cannot purge the producer");
    if (kafka_poll(r->kp, on_report, r, err, sizeof(err)) < 0)
        log_debug("producer error while purging: %s", err);
    kafka_producer_free(r->kp);
    r->kp = kafka_producer_new(r->cfg->brokers, r->cfg->props, r->cfg->nprops, err, sizeof(err));
    if (!r->kp) {
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
    s = stream_start(r->st, resume, first, &r->info, err, sizeof(err));
    if (s == STREAM_OK) {
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
        log_msg(r->fault[0] ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,"streaming slot \"%s\" of database \"%s\" from %s (slot confirmed %s, "
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
    for (int i = 0; i < DLQ_NREASONS; i++)
        if (r->dlq[i].unlogged) {
            log_warn("dead-lettered %llu more row(s) for %s (%llu in all)",
                     (unsigned long long)r->dlq[i].unlogged, dlq_reason_names[i],
                     (unsigned long long)r->dlq[i].total);
            r->dlq[i].unlogged = 0;
            r->dlq[i].logged_at = now;
        }
    log_info("published %llu, acknowledged %llu, dead-lettered %llu, rewinds %llu, in flight "
             "%llu, confirmed %s",
             (unsigned long long)r->events_published, (unsigned long long)r->events_acked,
             (unsigned long long)r->dead_lettered, (unsigned long long)r->rewinds,
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
                                r->inflight_bytes,
                                r->cfg->max_inflight_events, r->cfg->max_inflight_bytes))
            return 0;
        int got = stream_next(r->st, &f, err, sizeof(err));
        if (got == 0)
            return 0;
        if (got < 0) {
            note_fault(r, LOG_LEVEL_WARN, "%s", err);
            disconnect(r);
            schedule_reconnect(r, stream_now_ms());
            return 0;
        }
        if (f.kind == STREAM_FRAME_XLOGDATA) {
            handle_xlogdata(r, &f);
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

static int shutdown_relay(relay *r, const char *why)
{
    char err[512], b[LSN_BUFSZ];
    int rc = 0;

    metrics_set_state(r->m, METRICS_STOPPING);
    if (r->http && http_server_update(r->http, r->m, stream_now_ms(), metrics_now_us()) != 0)
        log_debug("cannot render metrics");
    log_info("stopping (%s): waiting up to %d ms for the broker", why,
             r->cfg->shutdown_timeout_ms);
    if (kafka_flush(r->kp, r->cfg->shutdown_timeout_ms, on_report, r) != 0)
        log_warn("%d messages not acknowledged in time; they will be sent again on restart",
                 kafka_outq_len(r->kp));
    if (r->connected) {
        if (r->txn_open) {
            char c[LSN_BUFSZ];
            log_warn("stopping inside transaction %u (commits at %s): the %u event(s) of it "
                     "already published will be sent again on restart",
                     r->xid, lsn_format(r->commit_lsn, c), r->seq);
            watermark_abort_open(r->wm);
            r->txn_open = false;
        }
        if (stream_finish(r->st, r->received, watermark_flush_lsn(r->wm), 5000, err,
                          sizeof(err)) != 0)
            log_warn("%s", err);
        r->connected = false;
    }
    log_stats(r, stream_now_ms());
    log_info("stopped; confirmed %s", lsn_format(watermark_flush_lsn(r->wm), b));
    return rc;
}

int relay_run(const config *cfg)
{
    relay r = {0};
    char err[512];
    int exit_code = 1;
    struct sigaction sa = {0};

    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());

    r.cfg = cfg;
    r.fb.interval_ms = cfg->status_interval_ms;
    r.fb.last_sent_ms = -1;
    r.st = stream_new(cfg);
    r.wm = watermark_new(0);
    r.rels = relcache_new();
    r.msg = malloc(sizeof(*r.msg));
    if (!r.st || !r.wm || !r.rels || !r.msg) {
        log_error("out of memory");
        goto out;
    }
    r.m = metrics_new(cfg->slot, metrics_now_us());
    if (!r.m) {
        log_error("out of memory");
        goto out;
    }
    r.kp = kafka_producer_new(cfg->brokers, cfg->props, cfg->nprops, err, sizeof(err));
    if (!r.kp) {
        log_error("%s", err);
        exit_code = 2;
        goto out;
    }
    /* Before the first connection, so /healthz answers while standing by. */
    if (cfg->http_addr) {
        r.http = http_server_start(cfg->http_addr, HTTP_STALE_MS, err, sizeof(err));
        if (!r.http) {
            log_error("%s", err);
            exit_code = 2;
            goto out;
        }
        log_info("serving /metrics, /status, /healthz and /readyz on %s", cfg->http_addr);
        r.anchors = anchorwatch_start(cfg->conninfo, cfg->password, ANCHORWATCH_INTERVAL_MS);
    }

    /* The first start decides between "bad configuration" (exit 2) and
     * running; a slot held by another process is waited for. */
    for (;;) {
        int64_t now = stream_now_ms();
        exit_code = try_connect(&r, true, now);
        if (exit_code != 0)
            goto out;
        if (r.connected)
            break;
        /* Nothing to serve yet: sleep until the retry (a signal cuts it
         * short), in slices so /healthz sees the process alive. */
        for (int64_t left; !stop_requested && (left = r.reconnect_at - stream_now_ms()) > 0;) {
            if (left > 1000)
                left = 1000;
            struct timespec ts = {left / 1000, (left % 1000) * 1000000};
            nanosleep(&ts, NULL);
            if (r.http &&
                http_server_update(r.http, r.m, stream_now_ms(), metrics_now_us()) != 0)
                log_debug("cannot render metrics");
        }
        if (stop_requested) {
            exit_code = 0;
            goto out;
        }
    }
    r.stats_at = r.progress_at = stream_now_ms();

    for (;;) {
        int64_t now = stream_now_ms();
        int more = 0;

        if (stop_requested) {
            see_stop(&r, now);
            if (!policy_finish_before_stop(r.connected, r.txn_open, r.need_rewind, now,
                                           r.stop_deadline)) {
                exit_code = shutdown_relay(&r, "signal");
                goto out;
            }
        }
        (void)serve_producer(&r);
        dead_letter_refused(&r);
        if (r.need_rewind && rewind_stream(&r, now) != 0) {
            exit_code = 1;
            goto out;
        }
        if (cfg->has_end_lsn && watermark_flush_lsn(r.wm) >= cfg->end_lsn) {
            exit_code = shutdown_relay(&r, "reached --end-lsn");
            goto out;
        }
        if (!r.connected && now >= r.reconnect_at && !(r.parked && stream_paused(&r))) {
            if (try_connect(&r, false, now) != 0) {
                exit_code = 1;
                goto out;
            }
        }
        if (r.connected) {
            more = read_frames(&r);
            now = stream_now_ms();
            if (r.events_acked != r.acked_seen) {
                r.acked_seen = r.events_acked;
                r.acked_at = now;
            }
            if (r.connected && (r.end_stream || policy_park_stream(stream_paused(&r), now,
                                                                   r.acked_at, PARK_STREAM_MS)))
                end_stream(&r, now);
            if (r.connected &&
                policy_feedback_due(&r.fb, now, watermark_flush_lsn(r.wm), r.reply_requested))
                if (send_status(&r, now) != 0) {
                    disconnect(&r);
                    schedule_reconnect(&r, now);
                }
        }
        check_recovered(&r, now);
        if (r.connected && (watermark_flush_lsn(r.wm) != r.progress_flush ||
                            watermark_inflight_events(r.wm) == 0)) {
            r.progress_at = now;
            r.progress_flush = watermark_flush_lsn(r.wm);
        }
        if (policy_give_up(now, r.progress_at, cfg->give_up_after_ms)) {
            log_error("giving up: no progress for %d s (--give-up-after)%s%s",
                      cfg->give_up_after_ms / 1000, r.fault[0] ? "; last fault: " : "", r.fault);
            (void)shutdown_relay(&r, "giving up");
            exit_code = 1;
            goto out;
        }
        update_title(&r, now);
        if (now - r.stats_at >= STATS_INTERVAL_MS)
            log_stats(&r, now);
        if (r.need_rewind)
            continue;

        bool paused = policy_backpressure(watermark_inflight_events(r.wm),
                                          watermark_inflight_txns(r.wm), r.inflight_bytes,
                                          cfg->max_inflight_events, cfg->max_inflight_bytes);
        r.m->received_lsn = r.received;
        r.m->inflight_events = watermark_inflight_events(r.wm);
        r.m->inflight_bytes = r.inflight_bytes;
        r.m->broker_reachable = kafka_brokers_up(r.kp);
        metrics_backpressure(r.m, r.connected && paused, now);
        (void)anchorwatch_copy(r.anchors, r.m);
        if (r.http && http_server_update(r.http, r.m, now, metrics_now_us()) != 0)
            log_debug("cannot render metrics");

        /* Sleep until a socket is ready or the next deadline. */
        int64_t timeout = 1000;
        struct pollfd pfd[2];
        int npfd = 0, pg = -1;
        if (more)
            timeout = 0;
        if (r.connected) {
            int64_t w = policy_feedback_wait(&r.fb, now, watermark_flush_lsn(r.wm),
                                             r.reply_requested);
            if (w < timeout)
                timeout = w;
            pfd[npfd].fd = stream_socket(r.st);
            pfd[npfd].events = (short)((paused ? 0 : POLLIN) |
                                       (stream_wants_write(r.st) ? POLLOUT : 0));
            pfd[npfd].revents = 0;
            pg = npfd++;
        } else if (r.reconnect_at - now < timeout && !(r.parked && paused)) {
            timeout = r.reconnect_at > now ? r.reconnect_at - now : 0;
        }
        pfd[npfd].fd = kafka_event_fd(r.kp);
        pfd[npfd].events = POLLIN;
        pfd[npfd].revents = 0;
        npfd++;
        if (poll(pfd, (nfds_t)npfd, (int)timeout) < 0 && errno != EINTR) {
            log_error("poll failed: %s", strerror(errno));
            exit_code = 1;
            goto out;
        }
        if (pg >= 0 && r.connected) {
            if ((pfd[pg].revents & (POLLIN | POLLERR | POLLHUP)) &&
                stream_consume(r.st, err, sizeof(err)) != 0) {
                note_fault(&r, LOG_LEVEL_WARN, "%s", err);
                disconnect(&r);
                schedule_reconnect(&r, stream_now_ms());
            } else if ((pfd[pg].revents & POLLOUT) && stream_flush(r.st, err, sizeof(err)) != 0) {
                note_fault(&r, LOG_LEVEL_WARN, "%s", err);
                disconnect(&r);
                schedule_reconnect(&r, stream_now_ms());
            }
        }
    }
out:
    http_server_free(r.http); /* stops its thread before the metrics go */
    anchorwatch_stop(r.anchors);
    /* Serve what is already there; anything unacknowledged is sent again
     * on the next start. */
    if (r.kp && kafka_flush(r.kp, 0, on_report, &r) != 0)
        log_debug("%d messages unacknowledged at exit", kafka_outq_len(r.kp));
    kafka_producer_free(r.kp);
    stream_free(r.st);
    deadletter_queue_clear(&r.refused);
    relcache_free(r.rels);
    watermark_free(r.wm);
    metrics_free(r.m);
    free(r.msg);
    return exit_code;
}
