/*
 * outbox — map an INSERT tuple of an outbox table to an outbox row.
 *
 * A column map names the column that plays each role (Debezium-compatible
 * defaults, overridden with --column ROLE=COLUMN).  Binding resolves the map
 * against a relation's current column list (by name, never by position);
 * extracting validates one tuple.  A row that fails validation is a poison
 * row: the caller gets the reason and sends it to the dead-letter topic.
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
} outbox_colmap;

/* Defaults: id, aggregatetype, aggregateid, type, payload, timestamp,
 * tracingspancontext. */
void outbox_colmap_init(outbox_colmap *map);

/*
 * Apply "ROLE=COLUMN" (e.g. "aggregate_id=order_id").  Returns 0, or -1
 * with err naming the valid roles / the problem.
 */
int outbox_colmap_set(outbox_colmap *map, const char *role_eq_col, char *err,
                      size_t errlen) OBX_WUR;

/* Column positions of each role in one relation version; -1 when absent. */
typedef struct outbox_binding {
    int idx[OB_NROLES];
    uint32_t type_oid[OB_NROLES]; /* 0 when absent */
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
    uint32_t payload_type_oid; /* jsonb 3802, json 114, text 25, bytea 17 ... */
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

#endif
