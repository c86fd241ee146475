/*
 * deadletter — records the broker refused for good, kept until a
 * dead-letter record stands in for each.
 *
 * A delivery report with a permanent error (too large for the topic, an
 * invalid record, a policy violation) is about the record itself: sending
 * it again cannot help.  The daemon, replay and backfill keep what the
 * dead-letter record needs of it (topic, key, value up to
 * DEADLETTER_VALUE_MAX, the broker's reason, its "lsn" and "table" headers)
 * in a deadletter_queue from inside the report callback, and later, on
 * their own loop, build a dead-letter record for each and produce it with
 * the refused record's ticket marked with DEADLETTER_TICKET: its delivery
 * counts as the refused record's, and a permanent failure of it is a
 * failure, never another dead letter.
 *
 * The queue owns its entries; deadletter_queue_pop() hands one to the
 * caller, who frees it with deadletter_refused_free().  Nothing here logs,
 * counts or produces: that stays with the caller.
 */
#ifndef CDC_DEADLETTER_H
#define CDC_DEADLETTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/outbox.h"
#include "publish/sink.h"
#include "schema/envelope.h"

/* A dead-letter record for a refused record carries the refused record's
 * ticket with this bit. */
#define DEADLETTER_TICKET (UINT64_C(1) << 63)
/* Refused values up to this size are kept in their dead-letter record. */
#define DEADLETTER_VALUE_MAX (64 * 1024)

/* The verdict on rep (the sink's, publish/sink.h), except that a dead
 * letter (its ticket has DEADLETTER_TICKET) refused in turn is SINK_RETRY:
 * never another dead letter. */
enum sink_verdict deadletter_classify(const sink_report *rep);

/* A record the broker refused for good. */
typedef struct deadletter_refused {
    uint64_t ticket; /* the refused record's, without DEADLETTER_TICKET */
    uint64_t epoch;  /* the caller's tag when refused (the relay: its rewind count) */
    uint64_t lsn;    /* from its "lsn" header; 0 when it has none or it does not parse */
    char table[OUTBOX_QUALNAME_MAX]; /* its "table" header; "" when none or too long */
    char reason[256];                /* "the broker refused the record: ..." */
    char *topic;                     /* never NULL */
    char *key;                       /* NULL: no key */
    size_t keylen;
    char *value;        /* NULL: a NULL value, or one over DEADLETTER_VALUE_MAX */
    size_t valuelen;    /* the refused value's size, kept or not */
    bool value_omitted; /* the value was over DEADLETTER_VALUE_MAX */
    struct deadletter_refused *next;
} deadletter_refused;

/*
 * Copy what a dead-letter record needs of the refused record rep (borrowed,
 * valid during the report callback), with its "lsn" and "table" header
 * values (either may be NULL: none).  Returns a new entry, or NULL when out
 * of memory.
 */
deadletter_refused *deadletter_refused_new(const sink_report *rep, const void *lsn, size_t lsnlen,
                                           const void *table, size_t tablelen, uint64_t epoch);

/* NULL does nothing. */
void deadletter_refused_free(deadletter_refused *f);

/*
 * Build the dead-letter record for f into out: the refused record as the
 * columns topic, key and value of a pseudo table "delivery" (a value left
 * out is said so in the reason), header original-topic f->topic.  base
 * gives the source (db, slot, backfill, commit_ts); its lsn becomes f's and
 * its table "delivery".  Returns 0, or -1 with err (out of memory); clear
 * out with envelope_msg_clear() either way.
 */
int deadletter_build(const deadletter_refused *f, const char *dlq_topic,
                     const envelope_source *base, envelope_msg *out, char *err,
                     size_t errlen) OBX_WUR;

/* First in, first out.  A zeroed queue is an empty one. */
typedef struct deadletter_queue {
    deadletter_refused *head, *tail;
    size_t n;
} deadletter_queue;

/* Queue the refused record of rep (from inside the report callback).
 * Returns 0, or -1 when out of memory (nothing queued). */
int deadletter_queue_report(deadletter_queue *q, const sink_report *rep, uint64_t epoch) OBX_WUR;

/* Takes ownership of f. */
void deadletter_queue_push(deadletter_queue *q, deadletter_refused *f);

/* The oldest entry, now the caller's; NULL when empty. */
deadletter_refused *deadletter_queue_pop(deadletter_queue *q);

bool deadletter_queue_empty(const deadletter_queue *q);

/* Free every entry; the queue is empty and usable again. */
void deadletter_queue_clear(deadletter_queue *q);

#endif
