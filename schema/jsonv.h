/*
 * jsonv — checks on text before it goes into a record: strict UTF-8, one
 * JSON value (RFC 8259), a JSON number, and the scan for bytes a JSON string
 * must escape (used by the writer, schema/jsonw).
 *
 * Payload JSON is checked here and embedded verbatim, never parsed into a
 * jansson tree and dumped again: the round trip rewrites numbers (19.99
 * comes back as 19.989999999999998), refuses integers beyond 64 bits and
 * reals beyond double that PostgreSQL's json/jsonb accept, and its
 * allocation failures look like syntax errors, which would dead-letter good
 * rows.  Nothing here allocates or keeps state; every function is pure.
 *
 * Every record runs its strings through these scans several times, and
 * almost all of their bytes are printable ASCII, so the scans go eight
 * bytes at a time: keep it so, this is the hot path of a record.
 */
#ifndef SCHEMA_JSONV_H
#define SCHEMA_JSONV_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The nesting the JSON check accepts (deeper is refused: consumers would).
 * A record embeds a payload one level down ({"payload": ...}) and a --field
 * value two ({"fields": {NAME: ...}}), so this is 2 below jansson's limit
 * of 2048: a value that passes never makes a record that jansson (and
 * parsers with the same limit) cannot read back (found by fuzzing: a
 * payload 2048 deep made a record of 2049).
 */
#define JSONV_MAX_DEPTH (2048 - 2)

/* Whether s[0..len) is strict UTF-8: no overlong forms, no surrogates,
 * nothing past U+10FFFF (at least as strict as jansson). */
bool jsonv_utf8_valid(const char *s, size_t len);

/*
 * Whether s[0..len) is exactly one JSON value, surrounding whitespace
 * allowed: any value at top level, nesting up to JSONV_MAX_DEPTH, \u0000
 * allowed, lone surrogate escapes refused (as jansson does).  When not,
 * *bad_at is the offset where the text stops being JSON.
 */
bool jsonv_text_valid(const char *s, size_t len, size_t *bad_at);

/* Whether s[0..n) is exactly one JSON number (so not NaN or Infinity, which
 * PostgreSQL prints for numeric and float columns). */
bool jsonv_number(const char *s, size_t n);

/* Index of the first byte of s from i on (i <= n) that a JSON string must
 * escape (below 0x20, '"', '\\'), or n. */
size_t jsonv_plain_run(const unsigned char *s, size_t i, size_t n);

/* The value of the hex digit c (either case), or -1. */
int jsonv_hexval(char c);

#endif
