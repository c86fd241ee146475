#include "cdc/pipeline.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "publish/clock.h"
#include "cdc/log.h"
#include "decode/lsn.h"

void pipeline_sink_msg(const envelope_msg *m, sink_header *hdrs, sink_msg *out)
{
    for (int i = 0; i < m->nheaders; i++)
        hdrs[i] = (sink_header){
            .name = m->headers[i].name, .value = m->headers[i].value, .len = m->headers[i].len};
    *out = (sink_msg){.topic = m->topic,
                      .key = m->key,
                      .keylen = m->keylen,
                      .value = m->value,
                      .valuelen = m->valuelen,
                      .timestamp_ms = m->timestamp_ms,
                      .headers = hdrs,
                      .nheaders = (size_t)m->nheaders};
}

void pipeline_fail(pipeline *p, const char *fmt, ...)
{
    char reason[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    p->hooks.fail(p->hooks.arg, reason);
}

static bool failed(pipeline *p)
{
    return p->hooks.failed(p->hooks.arg);
}

static void before_log(pipeline *p)
{
    if (p->hooks.before_log)
        p->hooks.before_log(p->hooks.arg);
}

envelope_source pipeline_source(pipeline *p, uint64_t lsn, const char *table)
{
    return (envelope_source){.lsn = lsn,
                             .commit_lsn = p->commit_lsn,
                             .seq = p->seq++,
                             .xid = p->xid,
                             .commit_ts = p->commit_ts,
                             .db = p->db,
                             .table = table,
                             .slot = p->cfg->slot};
}

/* Count a dead letter for why; log it at most once per
 * PIPELINE_DLQ_LOG_INTERVAL_MS with the rows it stands for. */
static void note_dead_letter(pipeline *p, enum metrics_dlq_reason why, const char *table,
                             const envelope_source *src, const char *reason)
{
    pipeline_dlq_stats *ds = &p->dlq[why];
    int64_t now = obx_now_ms();
    char at[LSN_BUFSZ + 8] = "";

    ds->unlogged++;
    if (ds->logged_at != 0 && now - ds->logged_at < PIPELINE_DLQ_LOG_INTERVAL_MS)
        return;
    if (src && !src->backfill) {
        char b[LSN_BUFSZ];
        snprintf(at, sizeof(at), " at %s", lsn_format(src->lsn, b));
    }
    before_log(p);
    log_warn("dead-lettered %llu row(s) for %s to \"%s\"%s; latest%s of \"%s\": %s",
             (unsigned long long)ds->unlogged, metrics_dlq_reason_name(why), p->cfg->dlq_topic,
             p->dry_run ? " (dry run: counted only)" : "", at, table, reason);
    ds->unlogged = 0;
    ds->logged_at = now;
}

static void count_dead_letter(pipeline *p, enum metrics_dlq_reason why)
{
    p->dead_lettered++;
    p->dlq[why].total++;
    if (p->m)
        metrics_dead_lettered(p->m, why);
}

void pipeline_dead_letter(pipeline *p, enum metrics_dlq_reason why, const relcache_entry *rel,
                          const pgo_tuple *tuple, const outbox_row *row, const char *reason,
                          const envelope_source *src, const char *original_topic)
{
    const char *dlq = p->cfg->dlq_topic;
    envelope_msg m = {0};
    char err[512];
    enum sink_produce_result pr;

    note_dead_letter(p, why, rel->qualname, src, reason);
    if (envelope_build_dead_letter(dlq, rel, tuple, row, reason, src, original_topic, &m, err,
                                   sizeof(err)) != 0) {
        pipeline_fail(p, "cannot build dead-letter record: %s", err);
        return;
    }
    pr = p->hooks.produce(p->hooks.arg, &m, 0, err, sizeof(err));
    if (pr == SINK_PRODUCE_REJECTED) {
        /* The row itself is what the sink refuses (too large, as a rule):
         * dead-letter it without its values, so the reason, position and
         * table still reach the topic.  The one fallback, for every
         * command. */
        char why_more[768];
        envelope_msg_clear(&m);
        snprintf(why_more, sizeof(why_more), "%s (row values omitted: %s)", reason, err);
        if (envelope_build_dead_letter(dlq, rel, NULL, NULL, why_more, src, original_topic, &m, err,
                                       sizeof(err)) != 0) {
            pipeline_fail(p, "cannot build dead-letter record: %s", err);
            return;
        }
        pr = p->hooks.produce(p->hooks.arg, &m, 0, err, sizeof(err));
    }
    if (pr == SINK_PRODUCE_OK)
        count_dead_letter(p, why);
    else
        pipeline_fail(p, "cannot produce to dead-letter topic \"%s\": %s", dlq, err);
    envelope_msg_clear(&m);
}

/* Turn a valid row into a record and hand it to the sink; a row the record
 * cannot be made of, or the sink refuses, is dead-lettered. */
static void publish_row(pipeline *p, const relcache_entry *rel, const pgo_tuple *tuple,
                        const outbox_row *row, const envelope_source *src)
{
    envelope_msg m = {0};
    envelope_extra extras[ENVELOPE_MAX_FIELDS];
    size_t nextras = 0;
    char err[512];

    if (envelope_fields_resolve(p->cfg->fields, p->cfg->nfields, rel, tuple, extras, &nextras, err,
                                sizeof(err)) != 0) {
        pipeline_dead_letter(p, METRICS_DLQ_INVALID_RECORD, rel, tuple, row, err, src, NULL);
        return;
    }
    errno = 0;
    if (envelope_build_opts(&p->cfg->envelope, row, extras, nextras, src, &m, err, sizeof(err)) !=
        0) {
        if (errno == ENOMEM) /* a good row must not be dead-lettered for our own failure */
            pipeline_fail(p, "cannot build record: %s", err);
        else
            pipeline_dead_letter(p, METRICS_DLQ_INVALID_RECORD, rel, tuple, row, err, src, NULL);
        return;
    }
    if (m.dropped_traceparent) {
        p->traceparents_dropped++;
        if (p->traceparents_dropped == 1 || p->traceparents_dropped % 1000 == 0) {
            before_log(p);
            log_warn("dropped %llu malformed traceparent value(s); latest in \"%s\" (not W3C "
                     "trace context)",
                     (unsigned long long)p->traceparents_dropped, src->table);
        }
    }
    switch (p->hooks.produce(p->hooks.arg, &m, 0, err, sizeof(err))) {
    case SINK_PRODUCE_OK:
        p->published++;
        if (p->m)
            metrics_published(p->m, m.topic);
        break;
    case SINK_PRODUCE_REJECTED:
        if (!failed(p))
            pipeline_dead_letter(p, METRICS_DLQ_REJECTED, rel, tuple, row, err, src, m.topic);
        break;
    case SINK_PRODUCE_QUEUE_FULL: /* the produce hook waits for room */
    case SINK_PRODUCE_ERROR:
        pipeline_fail(p, "the sink refused a record: %s", err);
        break;
    }
    envelope_msg_clear(&m);
}

void pipeline_tuple(pipeline *p, const outbox_binding *binding, const relcache_entry *rel,
                    const pgo_tuple *tuple, const envelope_source *src)
{
    outbox_row row;
    char err[512];

    if (outbox_extract(binding, rel, tuple, &row, err, sizeof(err)) != 0)
        pipeline_dead_letter(p, METRICS_DLQ_INVALID_ROW, rel, tuple, NULL, err, src, NULL);
    else
        publish_row(p, rel, tuple, &row, src);
}

/* Whether an event (what) of the current transaction is published: not
 * when the transaction is skipped; outside one, the pass fails. */
static bool publishing(pipeline *p, const char *what)
{
    if (!p->txn_open) {
        pipeline_fail(p, "%s outside a transaction", what);
        return false;
    }
    return !p->txn_skip;
}

static void handle_insert(pipeline *p, relcache *rels, const pgo_insert *ins, uint64_t lsn)
{
    relcache_entry *rel = relcache_get(rels, ins->oid);
    pipeline_rel *pr;
    envelope_source src;

    if (!rel) {
        pipeline_fail(p, "insert for relation %u before its Relation message", ins->oid);
        return;
    }
    pr = rel->user;
    if (!pr || !pr->is_outbox)
        return;
    if (!publishing(p, "insert"))
        return;
    src = pipeline_source(p, lsn, rel->qualname);
    if (!pr->bound)
        pipeline_dead_letter(p, METRICS_DLQ_UNMAPPED_COLUMN, rel, &ins->tuple, NULL, pr->bind_err,
                             &src, NULL);
    else
        pipeline_tuple(p, &pr->binding, rel, &ins->tuple, &src);
}

/*
 * A logical decoding message: with --messages, a transactional one with the
 * prefix is an event in transaction order with the rows.  Its dead-letter
 * record shows the content as the single column "content" of a pseudo
 * table "message:PREFIX".
 */
static void handle_message(pipeline *p, const pgo_message *msg, uint64_t lsn)
{
    const char *prefix = p->cfg->messages_prefix;
    char err[512];
    outbox_message_rel pm;
    outbox_message_row mr;
    envelope_source src;

    if (!prefix || strcmp(msg->prefix, prefix) != 0)
        return;
    if (!outbox_message_is_event(msg, prefix)) {
        /* Sent at once, outside any transaction, even when the emitting
         * transaction rolls back: never an event. */
        if (p->messages_skipped++ == 0) {
            before_log(p);
            log_warn("skipping non-transactional messages with prefix \"%s\": they arrive "
                     "even when their transaction aborts (emit them with transactional = true)",
                     msg->prefix);
        }
        return;
    }
    if (!publishing(p, "transactional message"))
        return;
    outbox_message_rel_init(&pm, msg);
    src = pipeline_source(p, lsn ? lsn : msg->lsn, pm.table);
    if (outbox_from_message(msg->content, msg->len, &mr, err, sizeof(err)) != 0) {
        pipeline_dead_letter(p, METRICS_DLQ_INVALID_ROW, &pm.rel, &pm.tuple, NULL, err, &src, NULL);
        return;
    }
    publish_row(p, &pm.rel, &pm.tuple, &mr.row, &src);
    outbox_message_row_clear(&mr);
}

static void handle_truncate(pipeline *p, relcache *rels, const pgo_truncate *t)
{
    for (uint32_t i = 0; i < t->nrels; i++) {
        relcache_entry *rel = relcache_get(rels, pgo_truncate_oid(t, i));
        pipeline_rel *pr = rel ? rel->user : NULL;
        if (!pr || !pr->is_outbox)
            continue;
        p->outbox_truncates++;
        if (!pr->truncate_logged) {
            /* Not an event: the rows' events were captured when inserted. */
            before_log(p);
            log_info("outbox table \"%s\" was truncated (not an event; counted)", rel->qualname);
            pr->truncate_logged = true;
        }
    }
}

static void handle_relation(pipeline *p, relcache *rels, const pgo_relation *prel)
{
    relcache_entry *rel = relcache_put(rels, prel);
    pipeline_rel *pr;

    if (!rel || !(pr = calloc(1, sizeof(*pr)))) {
        pipeline_fail(p, "out of memory caching relation %u", prel->oid);
        return;
    }
    rel->user = pr; /* the cache frees it with the entry */
    for (size_t i = 0; i < p->cfg->ntables && !pr->is_outbox; i++)
        if (strcmp(p->cfg->tables[i].qualname, rel->qualname) == 0) {
            pr->is_outbox = true;
            pr->table = &p->cfg->tables[i];
        }
    if (!pr->is_outbox)
        return;
    pr->bound =
        outbox_bind(&pr->table->colmap, rel, &pr->binding, pr->bind_err, sizeof(pr->bind_err)) == 0;
    if (!pr->bound) {
        before_log(p);
        log_error("%s; its rows go to dead-letter topic \"%s\" until fixed", pr->bind_err,
                  p->cfg->dlq_topic);
    } else {
        log_debug("outbox table \"%s\" (oid %u, %u columns)", rel->qualname, rel->oid, rel->natts);
    }
}

static void handle_begin(pipeline *p, const pgo_begin *b)
{
    enum pipeline_txn t = PIPELINE_TXN_PUBLISH;
    char err[512];

    if (p->txn_open) {
        pipeline_fail(p, "Begin inside an open transaction");
        return;
    }
    if (p->hooks.begin)
        t = p->hooks.begin(p->hooks.arg, b);
    if (t == PIPELINE_TXN_STOP)
        return;
    if (t == PIPELINE_TXN_PUBLISH && p->sk && sink_begin(p->sk, err, sizeof(err)) != 0) {
        pipeline_fail(p, "cannot begin a sink transaction: %s", err);
        return;
    }
    p->txn_open = true;
    p->txn_skip = t == PIPELINE_TXN_SKIP;
    p->xid = b->xid;
    p->commit_lsn = b->final_lsn;
    p->commit_ts = b->commit_ts;
    p->seq = 0;
}

static void handle_commit(pipeline *p, const pgo_commit *c)
{
    char err[512];

    if (!p->txn_open) {
        pipeline_fail(p, "Commit without Begin");
        return;
    }
    if (!p->txn_skip) {
        if (p->sk && sink_commit(p->sk, err, sizeof(err)) != 0) {
            pipeline_fail(p, "cannot commit a sink transaction: %s", err);
            return;
        }
        p->txns++;
    }
    p->txn_open = false;
    if (p->hooks.commit)
        p->hooks.commit(p->hooks.arg, c);
}

void pipeline_xlogdata(pipeline *p, relcache *rels, pgo_msg *msg, const uint8_t *payload,
                       size_t len, uint64_t wal_start)
{
    static const pgo_options all_kinds = {.all_kinds = true};
    char err[512];

    if (pgo_parse_opts(payload, len, &all_kinds, msg, err, sizeof(err)) != 0) {
        char b[LSN_BUFSZ];
        before_log(p);
        log_error("cannot decode pgoutput message at %s: %s", lsn_format(wal_start, b), err);
        pipeline_fail(p, "undecodable message at %s", b);
        return;
    }
    switch (msg->kind) {
    case PGO_BEGIN:
        handle_begin(p, &msg->u.begin);
        break;
    case PGO_COMMIT:
        handle_commit(p, &msg->u.commit);
        break;
    case PGO_RELATION:
        handle_relation(p, rels, &msg->u.relation);
        break;
    case PGO_INSERT:
        handle_insert(p, rels, &msg->u.insert, wal_start);
        break;
    case PGO_MESSAGE:
        handle_message(p, &msg->u.message, wal_start);
        break;
    case PGO_TRUNCATE:
        handle_truncate(p, rels, &msg->u.truncate);
        break;
    case PGO_UPDATE: /* outbox UPDATE and DELETE are not events */
    case PGO_DELETE:
    case PGO_ORIGIN:
    case PGO_TYPE:
    case PGO_SKIPPED:
        break;
    case PGO_STREAM_START: /* never requested: streaming and two_phase are off */
    case PGO_STREAM_STOP:
    case PGO_STREAM_COMMIT:
    case PGO_STREAM_ABORT:
    case PGO_BEGIN_PREPARE:
    case PGO_PREPARE:
    case PGO_COMMIT_PREPARED:
    case PGO_ROLLBACK_PREPARED:
    case PGO_STREAM_PREPARE:
        pipeline_fail(p, "unexpected %s message", pgo_type_name(msg->type));
        break;
    }
}

/*
 * The dead-letter record carries the refused event's ticket (with
 * DEADLETTER_TICKET), so its delivery acknowledges that event.  A caveat
 * of Kafka: the broker judges a whole batch, so a record batched with a
 * refused one is refused too and dead-lettered with it -- its content is
 * in the dead-letter record.
 */
void pipeline_dead_letter_refused(pipeline *p, deadletter_queue *q, uint64_t epoch,
                                  const envelope_source *base)
{
    deadletter_refused *f;

    while (!failed(p) && (f = deadletter_queue_pop(q))) {
        envelope_msg m = {0};
        char err[512], b[LSN_BUFSZ];

        if (f->epoch != epoch) { /* its event will be sent again anyway */
            deadletter_refused_free(f);
            continue;
        }
        p->dlq[METRICS_DLQ_REJECTED].unlogged++;
        before_log(p);
        log_warn("record at %s for topic \"%s\" refused by the broker; dead-lettered to \"%s\": "
                 "%s",
                 lsn_format(f->lsn, b), f->topic, p->cfg->dlq_topic, f->reason);
        if (deadletter_build(f, p->cfg->dlq_topic, base, &m, err, sizeof(err)) != 0)
            pipeline_fail(p, "cannot build the dead-letter record of a refused record: %s", err);
        else if (p->hooks.produce(p->hooks.arg, &m, f->ticket | DEADLETTER_TICKET, err,
                                  sizeof(err)) != SINK_PRODUCE_OK)
            pipeline_fail(p, "cannot dead-letter a refused record to \"%s\": %s", p->cfg->dlq_topic,
                          err);
        else
            count_dead_letter(p, METRICS_DLQ_REJECTED);
        envelope_msg_clear(&m);
        deadletter_refused_free(f);
    }
}

void pipeline_log_dlq(pipeline *p, int64_t now_ms)
{
    for (int i = 0; i < METRICS_DLQ_NREASONS; i++)
        if (p->dlq[i].unlogged) {
            before_log(p);
            log_warn("dead-lettered %llu more row(s) for %s (%llu in all)",
                     (unsigned long long)p->dlq[i].unlogged,
                     metrics_dlq_reason_name((enum metrics_dlq_reason)i),
                     (unsigned long long)p->dlq[i].total);
            p->dlq[i].unlogged = 0;
            p->dlq[i].logged_at = now_ms;
        }
}

void pipeline_dlq_summary(const pipeline *p, char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    for (int i = 0; i < METRICS_DLQ_NREASONS && off < len; i++)
        if (p->dlq[i].total)
            off += (size_t)snprintf(buf + off, len - off, "%s%s %llu", off ? ", " : "",
                                    metrics_dlq_reason_name((enum metrics_dlq_reason)i),
                                    (unsigned long long)p->dlq[i].total);
}
