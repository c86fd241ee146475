/*
 * envelope — turn an outbox row plus its source position into a Kafka
 * record: topic, key, headers, value and timestamp, in one of these formats:
 *
 *   envelope            our own JSON envelope (schema/envelope.schema.json)
 *   debezium            what Debezium's outbox EventRouter emits with its
 *                       default settings and a string key converter: key =
 *                       aggregate id, value = the payload itself, header id
 *   cloudevents         CloudEvents 1.0, Kafka protocol binding, structured
 *                       mode (value = the event as JSON)
 *   cloudevents-binary  CloudEvents 1.0, binary mode (ce_ headers, value =
 *                       the payload)
 *
 * The value is written once, straight into its final buffer: payload JSON is
 * embedded verbatim, never parsed and re-serialised.  Everything in an
 * envelope_msg is owned by it and released by envelope_msg_clear(); publish
 * may take the value (set msg->value to NULL after taking it).
 *
 * This is the schema layer's public face.  Behind it, one module a job:
 * schema/format (the formats' table; one file per format, format_*.c, and
 * how to add one), prepared (the row checked once for every format), fields
 * (--field), topic (templates), dlrecord (dead letters), jsonw (the JSON
 * writer), jsonv (UTF-8 and JSON checks), base64, ce (CloudEvents' shared
 * parts), errbuf (error reasons).
 */
#ifndef SCHEMA_ENVELOPE_H
#define SCHEMA_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/compiler.h"
#include "decode/outbox.h"

enum envelope_format {
    ENVELOPE_FORMAT_ENVELOPE,
    ENVELOPE_FORMAT_DEBEZIUM,
    ENVELOPE_FORMAT_CLOUDEVENTS,
    ENVELOPE_FORMAT_CLOUDEVENTS_BINARY,
    ENVELOPE_FORMAT_COUNT /* not a format: how many there are */
};

/* The names envelope_format_parse() accepts, for usage and error messages. */
#define ENVELOPE_FORMAT_NAMES "envelope, debezium, cloudevents, cloudevents-binary"

/* "envelope", "debezium", "cloudevents", "cloudevents-binary" -> the enum.
 * Returns 0, or -1 when unknown. */
int envelope_format_parse(const char *name, enum envelope_format *out) OBX_WUR;

/* The command-line name of fmt ("?" when out of range). */
const char *envelope_format_name(enum envelope_format fmt);

/*
 * Check a topic template: literal text plus the placeholders
 * {aggregate_type}, {aggregate_id}, {type}, {table}.  Returns 0, or -1
 * with err naming the bad placeholder.
 */
int envelope_topic_check(const char *tmpl, char *err, size_t errlen) OBX_WUR;

/* ---- router knobs ------------------------------------------------------- */

/*
 * Additional columns (`--field COLUMN:header[:NAME]`,
 * `--field COLUMN:envelope[:NAME]`, Debezium's
 * table.fields.additional.placement).  NAME defaults to the column name.
 *
 * header:   a Kafka header NAME with the column's text; a NULL value gives
 *           no header.
 * envelope: a field of the value, per format:
 *   envelope            "fields": {NAME: value, ...} (the envelope's own
 *                       keys stay closed; see envelope.schema.json)
 *   debezium            the value becomes {"payload": <payload>, NAME:
 *                       value, ...}, as Debezium's envelope placement does
 *   cloudevents         an extension attribute NAME (a-z, 0-9, at most 20
 *                       characters, as the CloudEvents spec requires), its
 *                       value the column's text as a string
 *   cloudevents-binary  the header ce_NAME (same naming rule)
 * Envelope values are typed by column type: json/jsonb embedded as JSON,
 * bool true/false, integers and finite numerics as numbers, NULL as null,
 * everything else a string (cloudevents: always a string).
 *
 * A column the table does not have is omitted from that row's record (no
 * error: outbox tables of one relay may differ).
 */
#define ENVELOPE_MAX_FIELDS 16
#define ENVELOPE_NAME_MAX 64 /* bytes with the NUL, for columns and names */

enum envelope_placement {
    ENVELOPE_PLACE_HEADER,
    ENVELOPE_PLACE_ENVELOPE,
};

typedef struct envelope_field {
    char column[ENVELOPE_NAME_MAX];
    char name[ENVELOPE_NAME_MAX];
    enum envelope_placement placement;
} envelope_field;

/*
 * Parse "COLUMN:header[:NAME]" or "COLUMN:envelope[:NAME]".  Returns 0, or
 * -1 with err saying what is wrong and what is expected.  Whether NAME fits
 * the format is checked by envelope_opts_check().
 */
int envelope_field_parse(const char *arg, envelope_field *out, char *err, size_t errlen) OBX_WUR;

/*
 * Kafka message timestamp (Debezium's table.field.event.timestamp):
 *   none    the producer stamps the send time (default; Debezium's default
 *           is its processing time, which is the same thing)
 *   commit  the transaction's commit time
 *   event   the timestamp role's column (--column timestamp=COLUMN), or the
 *           commit time when the row has none
 */
enum envelope_timestamp {
    ENVELOPE_TS_NONE,
    ENVELOPE_TS_COMMIT,
    ENVELOPE_TS_EVENT,
};

/* "none", "commit", "event" -> the enum.  Returns 0, or -1 when unknown. */
int envelope_timestamp_parse(const char *name, enum envelope_timestamp *out) OBX_WUR;

/* Everything about how records are built that is fixed for a run.  Borrowed. */
typedef struct envelope_opts {
    enum envelope_format format;
    const char *topic_tmpl; /* see envelope_topic_check() */
    const envelope_field *fields;
    size_t nfields;
    /* debezium only (route.tombstone.on.empty.payload): a row whose payload
     * is NULL or blank text becomes a record with a NULL value */
    bool tombstone_on_empty;
    enum envelope_timestamp timestamp;
    /* debezium only: the value as Kafka Connect's JsonConverter
     * (schemas.enable=false) writes it, where the default is what its
     * StringConverter writes (--debezium-converter json) */
    bool dbz_json_converter;
    /* debezium only (table.expand.json.payload): a JSON payload is written
     * as JSON, compact, its null members and empty arrays dropped, where
     * the default is the payload's text as a string */
    bool dbz_expand;
    /* debezium only (--debezium-context NAME, Debezium's topic.prefix): the
     * headers __debezium.context.connectorLogicalName (NAME), .taskId
     * ("0"), .connectorName ("postgresql") and .runId (dbz_run_id, one per
     * process, as Debezium makes one per connector start); NULL: none */
    const char *dbz_context;
    const char *dbz_run_id;
} envelope_opts;

/*
 * Check opts once at start-up: the topic template, at most
 * ENVELOPE_MAX_FIELDS fields, field names that fit the format and collide
 * with nothing the format writes itself (or with each other), tombstones
 * only for debezium.  Returns 0, or -1 with err naming the fix.
 */
int envelope_opts_check(const envelope_opts *opts, char *err, size_t errlen) OBX_WUR;

/* One field's value in one row.  Borrowed from the field and the tuple. */
typedef struct envelope_extra {
    const envelope_field *field;
    const char *data; /* NULL for SQL NULL; not NUL-terminated */
    size_t len;
    uint32_t type_oid;
} envelope_extra;

/*
 * Resolve fields against a relation and one of its INSERT tuples: the
 * column is found by name (never by position; O(fields x columns) string
 * compares, small beside the record itself).  A missing column is left out;
 * *nout counts the extras written to out (room for nfields).  Returns 0, or
 * -1 with a poison reason when a value is not in text format.
 */
int envelope_fields_resolve(const envelope_field *fields, size_t nfields, const relcache_entry *rel,
                            const pgo_tuple *tuple, envelope_extra *out, size_t *nout, char *err,
                            size_t errlen) OBX_WUR;

/* ---- trace context ------------------------------------------------------ */

/*
 * Whether s[0..len) is a W3C traceparent: "VV-TTTT…(32)-PPPP…(16)-FF",
 * lower-case hex, version not ff, trace-id and parent-id not all zero;
 * version 00 exactly 55 characters, a later version at least 55 with a '-'
 * after the flags when longer (the spec's forward compatibility rule).
 */
bool envelope_traceparent_valid(const char *s, size_t len);

/* ---- records ------------------------------------------------------------ */

/*
 * Where an event came from.  Strings are borrowed.
 *
 * A backfilled row (outbox-relay backfill: read from the table, not the
 * WAL) has no position: set backfill, db, table and commit_ts to the
 * snapshot's time; lsn, commit_lsn, seq, xid and slot are ignored.  The
 * envelope's source is then {"backfill": true, "snapshot_time", "db",
 * "table"} and the `lsn` header is left out; every format gets the header
 * `backfill: true`.  The time fallbacks (occurred_at / CloudEvents time
 * without a timestamp column, --message-timestamp commit) use the
 * snapshot's time.
 */
typedef struct envelope_source {
    uint64_t lsn;        /* the INSERT's own position */
    uint64_t commit_lsn; /* the transaction's commit LSN */
    uint32_t seq;        /* index of the event within its transaction, from 0 */
    uint32_t xid;
    int64_t commit_ts; /* PostgreSQL epoch microseconds (backfill: the snapshot's time) */
    const char *db;
    const char *table; /* "schema.table" */
    const char *slot;
    bool backfill; /* read from the table by a backfill: no WAL position */
} envelope_source;

/* The most any format writes (cloudevents-binary: 9, 10 for a backfill)
 * plus every field. */
#define ENVELOPE_MAX_HEADERS (12 + ENVELOPE_MAX_FIELDS)

/* value points into name's allocation: envelope_msg_clear() frees both
 * (never free value on its own). */
typedef struct envelope_header {
    char *name;
    char *value;
    size_t len;
} envelope_header;

typedef struct envelope_msg {
    char *topic;
    char *key;
    size_t keylen;
    char *value; /* malloc'd; NULL (valuelen 0) = a NULL value, a tombstone */
    size_t valuelen;
    int nheaders;
    envelope_header headers[ENVELOPE_MAX_HEADERS];
    int64_t timestamp_ms;     /* Kafka message timestamp; 0 = let the producer stamp it */
    bool dropped_traceparent; /* the row's traceparent was malformed and left out:
                                 count it and warn */
} envelope_msg;

/*
 * Build the record for one row.  extras (may be NULL when nextras is 0)
 * come from envelope_fields_resolve().  A json/jsonb payload (or
 * text/varchar that is JSON) is checked and embedded exactly as PostgreSQL
 * sent it, never re-serialized, so numbers keep every digit; in the
 * envelope, bytea becomes a base64 string with header `payload-encoding:
 * base64`.  A traceparent that is not W3C-valid is left out (no header, no
 * trace field) and out->dropped_traceparent set: the event itself is fine.
 * Returns 0, or -1 with err (the row is then a poison row: e.g. payload
 * declared json/jsonb that does not parse, a field or timestamp that is not
 * valid, an expanded topic name Kafka would reject; or out of memory, which
 * says so and leaves errno ENOMEM).  On -1 *out is zeroed and holds nothing.
 */
int envelope_build_opts(const envelope_opts *opts, const outbox_row *row,
                        const envelope_extra *extras, size_t nextras, const envelope_source *src,
                        envelope_msg *out, char *err, size_t errlen) OBX_WUR;

/* envelope_build_opts() with format and topic template only: no fields, no
 * tombstones, no message timestamp. */
int envelope_build(enum envelope_format fmt, const char *topic_tmpl, const outbox_row *row,
                   const envelope_source *src, envelope_msg *out, char *err, size_t errlen) OBX_WUR;

/*
 * Build the dead-letter record for a row that cannot become an event:
 * topic dlq_topic, key = the aggregate id when the row has one (else none),
 * value = the row as a JSON object {column: text value or null, ...} (binary
 * values base64), headers `error` (reason), `lsn`, `table`, and
 * `original-topic` when known (may be NULL); for a backfilled row (src
 * backfill) `backfill: true` instead of `lsn`.  Any of rel, tuple, row may be
 * NULL; a tuple and rel of different widths give the common columns.
 * Returns 0 or -1 (out of memory).
 */
int envelope_build_dead_letter(const char *dlq_topic, const relcache_entry *rel,
                               const pgo_tuple *tuple, const outbox_row *row, const char *reason,
                               const envelope_source *src, const char *original_topic,
                               envelope_msg *out, char *err, size_t errlen) OBX_WUR;

/*
 * Add a header name: value[0..len) (the value is copied and NUL-terminated;
 * it may hold NULs).  Returns 0, or -1 when out of memory or when msg has
 * ENVELOPE_MAX_HEADERS already.
 */
int envelope_msg_add_header(envelope_msg *msg, const char *name, const char *value,
                            size_t len) OBX_WUR;

/* A header whose value is NULL (not empty).  Returns 0, or -1 when out of
 * memory or full. */
int envelope_msg_add_null_header(envelope_msg *m, const char *name);

/* envelope_msg_add_header() of a NUL-terminated value. */
int envelope_msg_add_header_str(envelope_msg *msg, const char *name, const char *value) OBX_WUR;

/* Set the key to a copy of key[0..len), NUL-terminated for the convenience
 * of readers (msg must have none yet).  Returns 0, or -1 when out of
 * memory. */
int envelope_msg_set_key(envelope_msg *msg, const char *key, size_t len) OBX_WUR;

/* Free everything msg owns and zero it.  Safe on a zeroed msg. */
void envelope_msg_clear(envelope_msg *msg);

#endif
