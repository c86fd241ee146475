/*
 * envelope — turn an outbox row plus its source position into a Kafka
 * record: topic, key, headers and value (formats of DESIGN.md).
 *
 * Only the `envelope` format exists so far; the enum leaves room for
 * `cloudevents` and `debezium`.  Everything in an envelope_msg is owned by
 * it and released by envelope_msg_clear(); publish may take the value
 * (set msg->value to NULL after taking it).
 */
#ifndef SCHEMA_ENVELOPE_H
#define SCHEMA_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "decode/outbox.h"

enum envelope_format {
    ENVELOPE_FORMAT_ENVELOPE,
};

/* "envelope" -> ENVELOPE_FORMAT_ENVELOPE.  Returns 0, or -1 when unknown. */
int envelope_format_parse(const char *name, enum envelope_format *out) OBX_WUR;

/*
 * Check a topic template: literal text plus the placeholders
 * {aggregate_type}, {aggregate_id}, {type}, {table}.  Returns 0, or -1
 * with err naming the bad placeholder.
 */
int envelope_topic_check(const char *tmpl, char *err, size_t errlen) OBX_WUR;

/* Where an event came from.  Strings are borrowed. */
typedef struct envelope_source {
    uint64_t lsn;        /* the INSERT's own position */
    uint64_t commit_lsn; /* the transaction's commit LSN */
    uint32_t seq;        /* index of the event within its transaction, from 0 */
    uint32_t xid;
    int64_t commit_ts; /* PostgreSQL epoch microseconds */
    const char *db;
    const char *table; /* "schema.table" */
    const char *slot;
} envelope_source;

#define ENVELOPE_MAX_HEADERS 8

typedef struct envelope_header {
    char *name;
    char *value;
    size_t len;
} envelope_header;

typedef struct envelope_msg {
    char *topic;
    char *key;
    size_t keylen;
    char *value; /* JSON text, malloc'd */
    size_t valuelen;
    int nheaders;
    envelope_header headers[ENVELOPE_MAX_HEADERS];
} envelope_msg;

/*
 * Build the record for one row.  topic_tmpl is expanded with the row's
 * values.  A json/jsonb payload (or text/varchar that is JSON) is checked
 * and embedded exactly as PostgreSQL sent it, never re-serialized, so
 * numbers keep every digit; bytea becomes a base64 string with header
 * `payload-encoding: base64`.  Returns 0, or -1 with err (the row is then a
 * poison row: e.g. payload declared json/jsonb that does not parse, a field
 * or timestamp that is not valid, an expanded topic name Kafka would reject;
 * or out of memory, which says so).  On -1 *out is zeroed and holds nothing.
 */
int envelope_build(enum envelope_format fmt, const char *topic_tmpl, const outbox_row *row,
                   const envelope_source *src, envelope_msg *out, char *err, size_t errlen) OBX_WUR;

/*
 * Build the dead-letter record for a row that cannot become an event:
 * topic dlq_topic, key = the aggregate id when the row has one (else none),
 * value = the row as a JSON object {column: text value or null, ...} (binary
 * values base64), headers `error` (reason), `lsn`, `table`, and
 * `original-topic` when known (may be NULL).  Any of rel, tuple, row may be
 * NULL; a tuple and rel of different widths give the common columns.
 * Returns 0 or -1 (out of memory).
 */
int envelope_build_dead_letter(const char *dlq_topic, const relcache_entry *rel,
                               const pgo_tuple *tuple, const outbox_row *row, const char *reason,
                               const envelope_source *src, const char *original_topic,
                               envelope_msg *out, char *err, size_t errlen) OBX_WUR;

/* Free everything msg owns and zero it.  Safe on a zeroed msg. */
void envelope_msg_clear(envelope_msg *msg);

#endif
