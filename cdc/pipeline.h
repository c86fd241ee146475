/*
 * pipeline — the one path a row takes to become a record: relation
 * binding, insert or logical message -> row -> envelope -> sink, and the
 * dead-letter record for whatever cannot become an event (with its one
 * fallback: the same record without the row's values when the sink refuses
 * even that).  `run` (cdc/relay.c), `replay` (cdc/replay.c) and `backfill`
 * (cdc/backfill.c) all publish through it and supply only what differs
 * through hooks: how a record is handed to the sink (the ticket, what waits
 * while the sink is full), what a failure means (run rewinds, the one-shot
 * commands stop), and which transactions count (replay's range).
 *
 * The pipeline owns nothing but its counters: the config, metrics, relcache
 * and sink are borrowed.  Relcache entries it binds carry a pipeline_rel in
 * their user pointer, which relcache frees with the entry.
 */
#ifndef CDC_PIPELINE_H
#define CDC_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdc/config.h"
#include "cdc/deadletter.h"
#include "cdc/metrics.h"
#include "decode/outbox.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"
#include "publish/sink.h"
#include "schema/envelope.h"

/* Rows dead-lettered for one reason are logged at most once per this. */
#define PIPELINE_DLQ_LOG_INTERVAL_MS 60000

/* What the pipeline knows of a relation, in relcache_entry.user. */
typedef struct pipeline_rel {
    bool is_outbox;
    bool truncate_logged;
    const config_table *table; /* the --table entry, for its column map */
    bool bound;
    outbox_binding binding;
    char bind_err[384];
} pipeline_rel;

/* What a command decides about a transaction that begins. */
enum pipeline_txn {
    PIPELINE_TXN_PUBLISH, /* its events are published */
    PIPELINE_TXN_SKIP,    /* read past it (replay: outside the range) */
    PIPELINE_TXN_STOP,    /* read no further (or failed: the hook said why) */
};

typedef struct pipeline_hooks {
    /*
     * Hand m to the sink.  dl_ticket 0: an event (or a row's dead letter)
     * of the current transaction or row, whose ticket the command assigns;
     * otherwise the ticket to send it with: the dead letter standing for a
     * record the broker refused (that record's ticket with
     * DEADLETTER_TICKET), whose acknowledgement counts as the refused
     * record's.  Returns the sink's result, err set when not OK.
     */
    enum sink_produce_result (*produce)(void *arg, const envelope_msg *m, uint64_t dl_ticket,
                                        char *err, size_t errlen);
    /* The pass cannot go on (run: rewind; one-shots: stop); reason is the
     * message.  Only the first of a pass matters to the command. */
    void (*fail)(void *arg, const char *reason);
    /* Whether a failure is pending: nothing more is published. */
    bool (*failed)(void *arg);
    /* A transaction begins.  NULL: publish every one. */
    enum pipeline_txn (*begin)(void *arg, const pgo_begin *b);
    /* It committed (after the pipeline closed it).  NULL: nothing to do. */
    void (*commit)(void *arg, const pgo_commit *c);
    /* A line is about to be logged (a progress line is cleared).  NULL ok. */
    void (*before_log)(void *arg);
    void *arg;
} pipeline_hooks;

typedef struct pipeline_dlq_stats {
    uint64_t total;
    uint64_t unlogged; /* rows since the last log line for this reason */
    int64_t logged_at; /* 0 = never logged */
} pipeline_dlq_stats;

typedef struct pipeline {
    const config *cfg; /* borrowed */
    pipeline_hooks hooks;
    metrics *m;     /* borrowed; NULL: no metrics (one-shots) */
    sink *sk;       /* borrowed; NULL: dry run (no transactions to open) */
    const char *db; /* source.db, borrowed */
    bool dry_run;   /* only said in log lines */

    /* the transaction being received */
    bool txn_open;
    bool txn_skip; /* PIPELINE_TXN_SKIP: its rows are read past */
    uint32_t xid;
    uint64_t commit_lsn;
    int64_t commit_ts;
    uint32_t seq;

    uint64_t published;     /* events handed to the sink */
    uint64_t dead_lettered; /* dead letters handed to the sink, refused records' included */
    uint64_t txns;          /* transactions committed with PIPELINE_TXN_PUBLISH */
    uint64_t messages_skipped, outbox_truncates, traceparents_dropped;
    pipeline_dlq_stats dlq[METRICS_DLQ_NREASONS];
} pipeline;

/* m as the sink takes it: hdrs (room for ENVELOPE_MAX_HEADERS) and out
 * borrow from m. */
void pipeline_sink_msg(const envelope_msg *m, sink_header *hdrs, sink_msg *out);

/* Report a failure through the fail hook (formatted). */
void pipeline_fail(pipeline *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Decode one pgoutput message (a replication stream's XLogData payload at
 * wal_start) into msg and act on it: Begin/Commit through the hooks,
 * Relation into rels (bound to its --table), Insert and transactional
 * Message as events, Truncate counted.  A message that cannot be decoded,
 * or that breaks the protocol, fails the pass: it is never skipped.
 */
void pipeline_xlogdata(pipeline *p, relcache *rels, pgo_msg *msg, const uint8_t *payload,
                       size_t len, uint64_t wal_start);

/* The source position of the next event of the open transaction. */
envelope_source pipeline_source(pipeline *p, uint64_t lsn, const char *table);

/* Extract a row of rel with binding and publish it (or dead-letter it as
 * an invalid row). */
void pipeline_tuple(pipeline *p, const outbox_binding *binding, const relcache_entry *rel,
                    const pgo_tuple *tuple, const envelope_source *src);

/* Dead-letter a row that cannot become an event: why is counted and logged
 * (rate-limited), the record built and produced; when the sink refuses it,
 * once more without the row's values. */
void pipeline_dead_letter(pipeline *p, enum metrics_dlq_reason why, const relcache_entry *rel,
                          const pgo_tuple *tuple, const outbox_row *row, const char *reason,
                          const envelope_source *src, const char *original_topic);

/*
 * Dead-letter the records the broker refused for good, queued by the
 * report callback (deadletter_queue_report()).  Entries whose epoch is not
 * epoch are stale (their events will be sent again) and dropped.  Stops at
 * the first failure.  base: the dead letters' source (db, slot or backfill).
 */
void pipeline_dead_letter_refused(pipeline *p, deadletter_queue *q, uint64_t epoch,
                                  const envelope_source *base);

/* Log the dead letters not yet logged, per reason, with the totals. */
void pipeline_log_dlq(pipeline *p, int64_t now_ms);

/* "unmapped_column 2, rejected 1" into buf (empty when none). */
void pipeline_dlq_summary(const pipeline *p, char *buf, size_t len);

#endif
