#include "cdc/metrics.h"

#include "cdc/scrub.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "decode/lsn.h"

#ifndef OUTBOX_RELAY_VERSION
#define OUTBOX_RELAY_VERSION "0.1.0"
#endif

#define PREFIX "outbox_relay_"

/* Bounds and their label text, written once so le="..." never depends on
 * printf rounding. */
static const double latency_bounds[METRICS_LATENCY_NBUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const char *const latency_labels[METRICS_LATENCY_NBUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};

static const char *const state_names[METRICS_NSTATES] = {"starting", "streaming", "reconnecting",
                                                         "rewinding", "stopping"};
static const char *const dlq_names[METRICS_DLQ_NREASONS] = {"unmapped_column", "invalid_row",
                                                            "invalid_record", "rejected"};
static const char *const target_names[METRICS_NTARGETS] = {"postgres", "kafka"};

metrics *metrics_new(const char *slot, int64_t now_us)
{
    metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->state = METRICS_STARTING;
    m->backpressure_since = -1;
    m->started_us = now_us;
    snprintf(m->slot, sizeof(m->slot), "%s", slot ? slot : "");
    return m;
}

void metrics_free(metrics *m)
{
    free(m);
}

int64_t metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t metrics_pgtime_to_unix_us(int64_t pg_us)
{
    return pg_us + PGTIME_UNIX_OFFSET_US;
}

void metrics_published(metrics *m, const char *topic)
{
    size_t i;

    /* "other" is the overflow bucket's label: a real topic of that name
     * shares it rather than producing a duplicate series. */
    if (strcmp(topic, "other") == 0 || strlen(topic) >= METRICS_TOPIC_MAX) {
        m->other_topics++;
        return;
    }
    if (m->last_topic < m->ntopics && strcmp(m->topics[m->last_topic].name, topic) == 0) {
        m->topics[m->last_topic].published++;
        return;
    }
    /* O(METRICS_MAX_TOPICS) strcmp at worst, only when the topic changes
     * from one event to the next. */
    for (i = 0; i < m->ntopics; i++)
        if (strcmp(m->topics[i].name, topic) == 0)
            break;
    if (i == m->ntopics) {
        if (m->ntopics == METRICS_MAX_TOPICS) {
            m->other_topics++;
            return;
        }
        snprintf(m->topics[i].name, sizeof(m->topics[i].name), "%s", topic);
        m->ntopics++;
    }
    m->topics[i].published++;
    m->last_topic = i;
}

static metrics_txn *txn_at(metrics *m, size_t i)
{
    return &m->txns[(m->txn_head + i) % METRICS_TRACK_MAX];
}

void metrics_event_sent(metrics *m, uint64_t ticket, int64_t commit_us)
{
    if (m->txn_len > 0) {
        metrics_txn *last = txn_at(m, m->txn_len - 1);
        if (last->ticket == ticket) {
            last->pending++;
            return;
        }
        if (last->ticket > ticket)
            return; /* out of order: the ring must stay sorted to be searched */
    }
    if (m->txn_len == METRICS_TRACK_MAX)
        return;
    *txn_at(m, m->txn_len++) =
        (metrics_txn){.ticket = ticket, .commit_us = commit_us, .pending = 1};
}

/* Binary search of the ring (sorted by ticket); NULL when not tracked. */
static metrics_txn *txn_find(metrics *m, uint64_t ticket)
{
    size_t lo = 0, hi = m->txn_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        metrics_txn *t = txn_at(m, mid);
        if (t->ticket == ticket)
            return t;
        if (t->ticket < ticket)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void metrics_event_reported(metrics *m, uint64_t ticket, bool ok, int64_t now_us)
{
    metrics_txn *t = txn_find(m, ticket);

    if (ok)
        m->acknowledged++;
    else
        m->delivery_errors++;
    if (!t || t->pending == 0)
        return;
    t->pending--;
    if (ok)
        metrics_observe_latency(m, (double)(now_us - t->commit_us) / 1e6);
    /* Drop finished transactions from the front so the head is always the
     * oldest one still waiting: that is what lag in seconds measures. */
    while (m->txn_len > 0 && txn_at(m, 0)->pending == 0) {
        m->txn_head = (m->txn_head + 1) % METRICS_TRACK_MAX;
        m->txn_len--;
    }
}

void metrics_inflight_reset(metrics *m)
{
    m->txn_head = 0;
    m->txn_len = 0;
}

void metrics_observe_latency(metrics *m, double seconds)
{
    int i;

    if (!(seconds > 0)) /* negative (clock skew to the database) or NaN */
        seconds = 0;
    for (i = 0; i < METRICS_LATENCY_NBUCKETS; i++)
        if (seconds <= latency_bounds[i]) /* le is inclusive */
            break;
    m->latency_buckets[i]++;
    m->latency_count++;
    m->latency_sum += seconds;
}

void metrics_dead_lettered(metrics *m, enum metrics_dlq_reason why)
{
    if ((unsigned)why < METRICS_DLQ_NREASONS)
        m->dead_lettered[why]++;
}

const char *metrics_dlq_reason_name(enum metrics_dlq_reason why)
{
    return (unsigned)why < METRICS_DLQ_NREASONS ? dlq_names[why] : "unknown";
}

void metrics_rewound(metrics *m)
{
    m->rewinds++;
}

void metrics_reconnected(metrics *m, enum metrics_target target)
{
    if ((unsigned)target < METRICS_NTARGETS)
        m->reconnects[target]++;
}

void metrics_backpressure(metrics *m, bool paused, int64_t now_ms)
{
    if (m->backpressure_since >= 0 && now_ms > m->backpressure_since)
        m->backpressure_ms += now_ms - m->backpressure_since;
    m->backpressure_since = paused ? now_ms : -1;
}

void metrics_set_state(metrics *m, enum metrics_state state)
{
    if ((unsigned)state < METRICS_NSTATES)
        m->state = state;
}

const char *metrics_state_name(enum metrics_state state)
{
    return (unsigned)state < METRICS_NSTATES ? state_names[state] : "unknown";
}

void metrics_set_error(metrics *m, const char *msg, int64_t now_us)
{
    char *out = m->last_error;
    size_t cap = sizeof(m->last_error) - 1, o = 0;
    const char *s = msg ? msg : "";

    while (*s && o < cap) {
        out[o++] = iscntrl((unsigned char)*s) ? ' ' : *s;
        s++;
    }
    out[o] = '\0';
    (void)scrub_passwords(out);
    /* Truncation may have cut a UTF-8 sequence, or the text was never
     * UTF-8: /status must stay valid JSON, so fall back to ASCII. */
    json_t *probe = json_string(out);
    if (!probe)
        for (char *p = out; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
    json_decref(probe);
    m->last_error_us = now_us;
}

void metrics_clear_error(metrics *m)
{
    m->last_error[0] = '\0';
    m->last_error_us = 0;
}

uint64_t metrics_lag_bytes(const metrics *m)
{
    return m->server_lsn > m->confirmed_lsn ? m->server_lsn - m->confirmed_lsn : 0;
}

double metrics_lag_seconds(const metrics *m, int64_t now_us)
{
    const metrics_txn *t;
    if (m->txn_len == 0)
        return 0;
    t = &m->txns[m->txn_head];
    return now_us > t->commit_us ? (double)(now_us - t->commit_us) / 1e6 : 0;
}

bool metrics_ready(const metrics *m)
{
    return m->state == METRICS_STREAMING && m->broker_reachable;
}

/* ---- Prometheus text ------------------------------------------------------ */

/* A growable string; the first allocation failure sticks and is reported
 * once at the end, so the rendering code needs no checks of its own. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 4096;
        while (ncap - b->len <= (size_t)n)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* A label value as the exposition format wants it: \, " and newline
 * escaped, nothing else touched. */
static void sb_label_value(sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_printf(b, "\\\\");
        else if (*s == '"')
            sb_printf(b, "\\\"");
        else if (*s == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *s);
    }
}

static void family(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP " PREFIX "%s %s\n# TYPE " PREFIX "%s %s\n", name, help, name, type);
}

static void sample_u64(sbuf *b, const char *name, uint64_t v)
{
    sb_printf(b, PREFIX "%s %" PRIu64 "\n", name, v);
}

static void sample_double(sbuf *b, const char *name, double v)
{
    sb_printf(b, PREFIX "%s %.6f\n", name, v);
}

static void family_u64(sbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    family(b, name, type, help);
    sample_u64(b, name, v);
}

int metrics_render_prometheus(const metrics *m, int64_t now_us, char **out, size_t *outlen)
{
    sbuf b = {0};
    uint64_t cum = 0;

    family(&b, "build_info", "gauge", "Version of the running relay (always 1).");
    sb_printf(&b, PREFIX "build_info{version=\"");
    sb_label_value(&b, OUTBOX_RELAY_VERSION);
    sb_printf(&b, "\"} 1\n");

    family(&b, "start_time_seconds", "gauge", "Unix time the relay started.");
    sample_double(&b, "start_time_seconds", (double)m->started_us / 1e6);

    family(&b, "state", "gauge", "Current state of the event loop (1 for the current one).");
    for (int i = 0; i < METRICS_NSTATES; i++)
        sb_printf(&b, PREFIX "state{state=\"%s\"} %d\n", state_names[i], (int)m->state == i);

    family(&b, "broker_reachable", "gauge",
           "Whether the Kafka broker is reachable as far as the producer knows.");
    sample_u64(&b, "broker_reachable", m->broker_reachable);

    family(&b, "events_published_total", "counter",
           "Events handed to the producer, by topic (\"other\" past the first topics).");
    for (size_t i = 0; i < m->ntopics; i++) {
        sb_printf(&b, PREFIX "events_published_total{topic=\"");
        sb_label_value(&b, m->topics[i].name);
        sb_printf(&b, "\"} %" PRIu64 "\n", m->topics[i].published);
    }
    sb_printf(&b, PREFIX "events_published_total{topic=\"other\"} %" PRIu64 "\n", m->other_topics);

    family_u64(&b, "events_acknowledged_total", "counter",
               "Events (dead-letter records included) the broker acknowledged.", m->acknowledged);

    family(&b, "events_dead_lettered_total", "counter",
           "Rows sent to the dead-letter topic, by reason.");
    for (int i = 0; i < METRICS_DLQ_NREASONS; i++)
        sb_printf(&b, PREFIX "events_dead_lettered_total{reason=\"%s\"} %" PRIu64 "\n",
                  dlq_names[i], m->dead_lettered[i]);

    family_u64(&b, "delivery_errors_total", "counter",
               "Delivery reports with an error (each makes the relay rewind).", m->delivery_errors);
    family_u64(&b, "rewinds_total", "counter",
               "Times the relay dropped the stream and restarted from the confirmed position.",
               m->rewinds);

    family(&b, "reconnects_total", "counter", "Reconnections, by target.");
    for (int i = 0; i < METRICS_NTARGETS; i++)
        sb_printf(&b, PREFIX "reconnects_total{target=\"%s\"} %" PRIu64 "\n", target_names[i],
                  m->reconnects[i]);

    family(&b, "commit_to_ack_seconds", "histogram",
           "Time from a transaction's commit to the broker's acknowledgement of its events.");
    for (int i = 0; i <= METRICS_LATENCY_NBUCKETS; i++) {
        cum += m->latency_buckets[i];
        sb_printf(&b, PREFIX "commit_to_ack_seconds_bucket{le=\"%s\"} %" PRIu64 "\n",
                  i < METRICS_LATENCY_NBUCKETS ? latency_labels[i] : "+Inf", cum);
    }
    sb_printf(&b, PREFIX "commit_to_ack_seconds_sum %.6f\n", m->latency_sum);
    sb_printf(&b, PREFIX "commit_to_ack_seconds_count %" PRIu64 "\n", m->latency_count);

    family_u64(&b, "received_lsn", "gauge",
               "End of the last transaction received from PostgreSQL (LSN as a number).",
               m->received_lsn);
    family_u64(&b, "confirmed_lsn", "gauge",
               "Flush position confirmed to the replication slot (LSN as a number).",
               m->confirmed_lsn);
    family_u64(&b, "server_lsn", "gauge",
               "The server's WAL end as last reported on the stream (LSN as a number).",
               m->server_lsn);
    family_u64(&b, "replication_lag_bytes", "gauge",
               "WAL between the server's position and the confirmed position.",
               metrics_lag_bytes(m));
    family(&b, "replication_lag_seconds", "gauge",
           "Age of the oldest committed transaction whose events are not all acknowledged.");
    sample_double(&b, "replication_lag_seconds", metrics_lag_seconds(m, now_us));
    family_u64(&b, "inflight_events", "gauge", "Events handed to the producer, not yet reported.",
               m->inflight_events);
    family_u64(&b, "inflight_bytes", "gauge", "Key and value bytes of the events in flight.",
               m->inflight_bytes);
    family(&b, "backpressure_seconds_total", "counter",
           "Time reading from PostgreSQL was paused because too much was in flight.");
    sample_double(&b, "backpressure_seconds_total", (double)m->backpressure_ms / 1e3);
    if (m->slot_wal_status[0]) {
        static const char *const ws[] = {"reserved", "extended", "unreserved", "lost"};
        family(&b, "slot_wal_status", "gauge",
               "wal_status of the relay's slot (1 for the current one): reserved, extended "
               "(past max_wal_size), unreserved (about to lose WAL), lost.");
        for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++)
            sb_printf(&b, PREFIX "slot_wal_status{wal_status=\"%s\"} %d\n", ws[i],
                      strcmp(m->slot_wal_status, ws[i]) == 0);
    }
    if (m->anchors_known) {
        family_u64(&b, "anchors", "gauge",
                   "Anchor slots (outbox_anchor_*), which retain WAL for replays.",
                   m->nanchors_total);
        family(&b, "anchor_retained_wal_bytes", "gauge",
               "WAL an anchor slot retains (server position minus its restart_lsn); it grows "
               "until the anchor is advanced or dropped.");
        for (size_t i = 0; i < m->nanchors; i++) {
            if (m->anchors[i].retained < 0)
                continue;
            sb_printf(&b, PREFIX "anchor_retained_wal_bytes{anchor=\"");
            sb_label_value(&b, m->anchors[i].name);
            sb_printf(&b, "\",wal_status=\"");
            sb_label_value(&b, m->anchors[i].wal_status);
            sb_printf(&b, "\"} %" PRId64 "\n", m->anchors[i].retained);
        }
    }

    if (b.failed) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *outlen = b.len;
    return 0;
}

/* ---- /status JSON --------------------------------------------------------- */

static json_t *time_or_null(int64_t unix_us)
{
    char buf[PGTIME_BUFSZ];
    if (unix_us == 0)
        return json_null();
    return json_string(pgtime_format(unix_us - PGTIME_UNIX_OFFSET_US, buf));
}

int metrics_render_status(const metrics *m, int64_t now_us, char **out, size_t *outlen)
{
    char rb[LSN_BUFSZ], cb[LSN_BUFSZ], sb[LSN_BUFSZ];
    uint64_t published = m->other_topics, dead = 0;
    json_t *o;
    char *text;

    for (size_t i = 0; i < m->ntopics; i++)
        published += m->topics[i].published;
    for (int i = 0; i < METRICS_DLQ_NREASONS; i++)
        dead += m->dead_lettered[i];
    /* "o" steals each value; a NULL from json_string() makes json_pack fail. */
    o = json_pack(
        "{s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:I, s:f, s:I, s:I, s:b, s:f, s:I, s:I, "
        "s:I, s:I, s:I, s:o, s:o}",
        "state", metrics_state_name(m->state), "slot", m->slot, "version", OUTBOX_RELAY_VERSION,
        "started_at", time_or_null(m->started_us), "received_lsn", lsn_format(m->received_lsn, rb),
        "confirmed_lsn", lsn_format(m->confirmed_lsn, cb), "server_lsn",
        lsn_format(m->server_lsn, sb), "lag_bytes", (json_int_t)metrics_lag_bytes(m), "lag_seconds",
        metrics_lag_seconds(m, now_us), "inflight_events", (json_int_t)m->inflight_events,
        "inflight_bytes", (json_int_t)m->inflight_bytes, "broker_reachable",
        (int)m->broker_reachable, "backpressure_seconds", (double)m->backpressure_ms / 1e3,
        "events_published", (json_int_t)published, "events_acknowledged",
        (json_int_t)m->acknowledged, "dead_lettered", (json_int_t)dead, "delivery_errors",
        (json_int_t)m->delivery_errors, "rewinds", (json_int_t)m->rewinds, "last_error",
        m->last_error[0] ? json_string(m->last_error) : json_null(), "last_error_at",
        time_or_null(m->last_error_us));
    if (!o)
        return -1;
    text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text)
        return -1;
    *out = text;
    *outlen = strlen(text);
    return 0;
}
