/*
 * outbox — map an INSERT tuple of an outbox table to an outbox row.
 *
 * A column map names the column that plays each role (Debezium-compatible
 * defaults, overridden with --column ROLE=COLUMN).  Binding resolves the map
 * against a relation's current column list (by name, never by position);
 * extracting validates one tuple.  A row that fails validation is a poison
 * row: the caller gets the reason and sends it to the dead-letter topic.
 *
 * Two more sources of rows: --column arguments may be prefixed with a table
 * ("orders.outbox:aggregate_id=order_id"), so each outbox table gets its own
 * map (outbox_colmap_build); and a transactional logical decoding message
 * whose content is a JSON object with the envelope's fields becomes a row
 * too (outbox_from_message), for outboxes without a table.
 */
#ifndef DECODE_OUTBOX_H
#define DECODE_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/pgoutput.h"
#include "decode/relcache.h"

enum outbox_role {
    OB_ID,
    OB_AGGREGATE_TYPE,
    OB_AGGREGATE_ID,
    OB_TYPE,
    OB_PAYLOAD,
    OB_TIMESTAMP,
    OB_TRACEPARENT,
    OB_NROLES
};

/* Role names as used on the command line: "id", "aggregate_type",
 * "aggregate_id", "type", "payload", "timestamp", "traceparent". */
const char *outbox_role_name(enum outbox_role role);

/* Whether a row must have a non-null, non-empty value for role. */
bool outbox_role_required(enum outbox_role role);

typedef struct outbox_colmap {
    char col[OB_NROLES][64]; /* column name per role (NAMEDATALEN is 64) */
    /* Roles made optional beyond outbox_role_required() (bit 1 << role):
     * the debezium format needs no type and takes a NULL or empty aggregate
     * id as a NULL key, as Debezium's EventRouter does. */
    unsigned optional;
} outbox_colmap;

/* Whether map requires role: outbox_role_required() and not optional. */
bool outbox_colmap_requires(const outbox_colmap *map, enum outbox_role role);

/* Defaults: id, aggregatetype, aggregateid, type, payload, timestamp,
 * tracingspancontext. */
void outbox_colmap_init(outbox_colmap *map);

/*
 * Apply "ROLE=COLUMN" (e.g. "aggregate_id=order_id").  Returns 0, or -1
 * with err naming the valid roles / the problem.
 */
int outbox_colmap_set(outbox_colmap *map, const char *role_eq_col, char *err,
                      size_t errlen) OBX_WUR;

/* "schema.table" with its NUL: two names of up to 63 bytes and the dot. */
#define OUTBOX_QUALNAME_MAX 128

/*
 * Split one --column argument, "[[SCHEMA.]TABLE:]ROLE=COLUMN".  The table
 * prefix is what precedes the first ':' before the first '='; a table
 * without a schema is in "public".  On 0, table holds "schema.table", or ""
 * when the argument has no prefix (it applies to every table), and *spec
 * points into arg at ROLE=COLUMN (not validated here: outbox_colmap_set
 * does that).  Returns -1 with err for an empty or malformed prefix.
 */
int outbox_column_split(const char *arg, char table[OUTBOX_QUALNAME_MAX], const char **spec,
                        char *err, size_t errlen) OBX_WUR;

/*
 * The column map of the outbox table qualname ("schema.table") from the
 * --column arguments in command-line order: the defaults, then every
 * unprefixed mapping in order, then those prefixed with this table in
 * order, so a table's own mapping wins wherever it stands.  Arguments for
 * other tables are skipped (whether those tables exist is the caller's
 * check).  Returns 0, or -1 with err naming the bad argument; *map is
 * unspecified then.
 */
int outbox_colmap_build(outbox_colmap *map, const char *qualname, const char *const *args,
                        size_t nargs, char *err, size_t errlen) OBX_WUR;

/* Column positions of each role in one relation version; -1 when absent. */
typedef struct outbox_binding {
    int idx[OB_NROLES];
    uint32_t type_oid[OB_NROLES]; /* 0 when absent */
    unsigned optional;            /* the map's optional roles */
} outbox_binding;

/*
 * Resolve map against rel.  Returns 0, or -1 when a required role's column
 * is missing (err names the column and the --column option to fix it).
 * A binding is filled even on -1 so the caller can still dead-letter rows.
 */
int outbox_bind(const outbox_colmap *map, const relcache_entry *rel, outbox_binding *out, char *err,
                size_t errlen) OBX_WUR;

typedef struct outbox_field {
    const char *data; /* borrowed from the tuple; not NUL-terminated */
    size_t len;
    bool present; /* false for NULL or for a role without a column */
} outbox_field;

typedef struct outbox_row {
    outbox_field f[OB_NROLES];
    uint32_t payload_type_oid;   /* jsonb 3802, json 114, text 25, bytea 17 ... */
    uint32_t timestamp_type_oid; /* timestamptz 1184, timestamp 1114, int8 20 ...; 0: text */
} outbox_row;

/*
 * Extract and validate a row: every required role present, non-null,
 * non-empty, in text format; the tuple must have as many columns as the
 * relation.  A binary ('b') or unchanged-toast ('u') value is refused for
 * every role, optional ones included: a field has no format flag, so binary
 * send format would pass for text downstream.  Returns 0, or -1 with the
 * reason in err (the poison reason).
 */
int outbox_extract(const outbox_binding *b, const relcache_entry *rel, const pgo_tuple *tuple,
                   outbox_row *out, char *err, size_t errlen) OBX_WUR;

/*
 * Whether a logical decoding message is an outbox event for --messages
 * prefix: transactional (a non-transactional message arrives even when its
 * transaction aborts, so it can never be an event) and its prefix equal to
 * prefix.  False when prefix is NULL (--messages not given).
 */
bool outbox_message_is_event(const pgo_message *m, const char *prefix);

/*
 * A message seen as a relation, so it takes the row paths (--field,
 * dead-letter records): the pseudo table "message:PREFIX" with the one text
 * column "content" holding the message's content.  Points into msg and
 * into itself: fill it in place with outbox_message_rel_init(), do not copy.
 */
typedef struct outbox_message_rel {
    char table[160];
    relcache_attr att;
    relcache_entry rel;
    pgo_value col;
    pgo_tuple tuple;
} outbox_message_rel;

void outbox_message_rel_init(outbox_message_rel *m, const pgo_message *msg);

/* A row made from a message, with the storage it points into. */
typedef struct outbox_message_row {
    outbox_row row;
    /* Owned: the parsed content, which the row's string fields point into.
     * Freed by outbox_message_row_clear(). */
    struct json_t *doc;
} outbox_message_row;

/*
 * Make a row from the content of a logical decoding message: a JSON object
 * with "id", "aggregate_type", "aggregate_id", "type" (non-empty strings;
 * id and aggregate_id may also be integers), "payload" (any JSON; absent
 * means null), "traceparent" and "timestamp" (optional strings, null or
 * absent when unset; timestamp in RFC 3339 or PostgreSQL's text form).
 * Other members are ignored; duplicate members are refused.
 *
 * The payload is the member's JSON text exactly as written (numbers keep
 * their digits) with payload_type_oid 3802 (jsonb), so the envelope embeds
 * it as JSON.  Ownership: the payload and integer ids point into content,
 * the other fields into out->doc; keep content alive while the row is used
 * and release with outbox_message_row_clear().  Numbers beyond double range
 * (e.g. 1e400) anywhere in the content are refused: the JSON parser cannot
 * hold them.
 *
 * Returns 0, or -1 with the poison reason in err (out is cleared then:
 * nothing to release).  Pure: no I/O, no globals.
 */
int outbox_from_message(const char *content, size_t len, outbox_message_row *out, char *err,
                        size_t errlen) OBX_WUR;

/* Release what outbox_from_message() allocated and empty the row.  NULL or
 * an already cleared row is a no-op. */
void outbox_message_row_clear(outbox_message_row *m);

#endif
