/*
 * fields — additional columns (--field COLUMN:header[:NAME],
 * --field COLUMN:envelope[:NAME]): parsing the option, checking the names
 * against a format, finding the columns in a row, checking their values,
 * and writing them as members of a JSON object or as headers.  Where an
 * envelope-placed field lands in each format is the format's business
 * (schema/format_*.c); see envelope.h for the rules.
 *
 * Fields and extras are borrowed; nothing here allocates except headers
 * added to a message, which the message owns.
 */
#ifndef SCHEMA_FIELDS_H
#define SCHEMA_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

#include "decode/compiler.h"
#include "schema/envelope.h"
#include "schema/format.h"
#include "schema/jsonw.h"

/* envelope_field_parse(). */
int fields_parse(const char *arg, envelope_field *out, char *err, size_t errlen) OBX_WUR;

/* Check fields[0..n) for format f: names it reserves, its own rules
 * (f->check_field), two fields with one name.  Returns 0, or -1 with err. */
int fields_check(const format_ops *f, const envelope_field *fields, size_t n, char *err,
                 size_t errlen) OBX_WUR;

/* envelope_fields_resolve(). */
int fields_resolve(const envelope_field *fields, size_t nfields, const relcache_entry *rel,
                   const pgo_tuple *tuple, envelope_extra *out, size_t *nout, char *err,
                   size_t errlen) OBX_WUR;

/* Check every extra's text before anything is written: UTF-8, and JSON for
 * json/jsonb columns.  Returns 0, or -1 with the poison reason. */
int fields_check_values(const envelope_extra *x, size_t n, char *err, size_t errlen) OBX_WUR;

/* Whether any of x[0..n) has placement pl. */
bool fields_any(const envelope_extra *x, size_t n, enum envelope_placement pl);

/* The envelope-placed extras as members of the object being written,
 * typed by column type, or all as strings (strings_only). */
void fields_write(jsonw *w, const envelope_extra *x, size_t n, bool strings_only);

/* The extras placed pl as headers prefix+NAME (a NULL value gives no
 * header, or with nulls a header whose value is NULL).  Returns 0, or -1
 * when out of memory. */
int fields_add_headers(envelope_msg *m, const envelope_extra *x, size_t n,
                       enum envelope_placement pl, const char *prefix, bool nulls) OBX_WUR;

#endif
