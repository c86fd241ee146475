/*
 * format — the output formats behind one table.  Each format is one file,
 * schema/format_NAME.c, defining one format_ops: what it is called, which
 * headers it writes itself, how it writes the value and its headers, and
 * what it says about --field names.  envelope_build_opts() does what every
 * format shares (topic, key, prepared row, field values, the backfill,
 * traceparent and header-field headers) and calls the ops for the rest.
 *
 * Adding a format:
 *   1. write schema/format_NAME.c with `const format_ops format_NAME = {...}`
 *      (start from format_debezium.c, the smallest), declared below;
 *   2. add ENVELOPE_FORMAT_NAME to enum envelope_format and the name to
 *      ENVELOPE_FORMAT_NAMES (schema/envelope.h);
 *   3. add one entry to the table in format.c;
 *   4. tests: a fixture in tests/fixtures/formats, and README's format list.
 * format.c refuses to compile when the table and the enum differ in length;
 * test_format_table checks that ENVELOPE_FORMAT_NAMES lists the table's
 * names and that every header the format writes is in reserved_headers
 * (or refused by its check_field).
 *
 * Everything is borrowed: a format writes into the caller's writer and
 * message and keeps nothing.
 */
#ifndef SCHEMA_FORMAT_H
#define SCHEMA_FORMAT_H

#include <stdbool.h>
#include <stddef.h>

#include "decode/compiler.h"
#include "schema/envelope.h"
#include "schema/jsonw.h"
#include "schema/prepared.h"

/* One record being built.  All borrowed. */
typedef struct format_ctx {
    const envelope_opts *opts;
    const outbox_row *row;
    const envelope_source *src;
    const prepared *p;
    const envelope_extra *x; /* checked by fields_check_values() */
    size_t nx;
} format_ctx;

typedef struct format_ops {
    const char *name; /* as --format spells it */
    /* Headers the format writes itself (NULL-terminated): a header field
     * may not take these names. */
    const char *const *reserved_headers;
    /* Envelope-placed fields go into headers with this prefix instead of
     * the value (cloudevents-binary: "ce_"), so they share the headers'
     * name space; NULL when they go into the value. */
    const char *field_header_prefix;
    /* Whether --tombstone-on-empty applies. */
    bool tombstones;
    /* Whether a NULL header field gives a header with a NULL value (as
     * Debezium's EventRouter does) rather than no header. */
    bool null_headers;
    /* What this format refuses in a field's name beyond the reserved
     * headers (NULL: nothing).  Returns 0, or -1 with err naming the fix. */
    int (*check_field)(const envelope_field *f, char *err, size_t errlen);
    /* Write the value into w, or set *tombstone and write nothing for a
     * NULL value.  Returns 0, or -1 with err when the row cannot be this
     * format's record (a poison row); running out of memory is the
     * writer's sticky failure. */
    int (*write_value)(const format_ctx *c, jsonw *w, bool *tombstone, char *err, size_t errlen);
    /* Add the format's own headers.  Returns 0, or -1 when out of memory. */
    int (*add_headers)(const format_ctx *c, bool tombstone, envelope_msg *m);
} format_ops;

extern const format_ops format_envelope;
extern const format_ops format_debezium;
extern const format_ops format_cloudevents;
extern const format_ops format_cloudevents_binary;

/* The format of fmt, or NULL when fmt is not one. */
const format_ops *format_get(enum envelope_format fmt);

/* The format called name.  Returns 0, or -1 when there is none. */
int format_parse(const char *name, enum envelope_format *out) OBX_WUR;

/* Whether f writes header itself (is in its reserved_headers). */
bool format_reserves(const format_ops *f, const char *header);

#endif
