/*
 * lsn — WAL positions and PostgreSQL timestamps.
 *
 * An LSN is a uint64_t printed as two upper-case hex halves, "16/B374D848".
 * PostgreSQL timestamps on the wire are int64 microseconds since
 * 2000-01-01 00:00:00 UTC.  Pure functions, no allocation.
 */
#ifndef DECODE_LSN_H
#define DECODE_LSN_H

#include <stddef.h>
#include <stdint.h>

#include "decode/compiler.h"

/* Longest "%X/%X" text plus NUL. */
#define LSN_BUFSZ 18
/* "2026-11-23T18:14:13.123456Z" plus NUL, with room to spare. */
#define PGTIME_BUFSZ 40

/* Microseconds between the Unix epoch and the PostgreSQL epoch. */
#define PGTIME_UNIX_OFFSET_US INT64_C(946684800000000)

/*
 * Parse "HI/LO" (1-8 hex digits each, nothing else, no sign, no spaces)
 * into *out.  Returns 0, or -1 when the text is not an LSN.
 */
int lsn_parse(const char *s, uint64_t *out) OBX_WUR;

/* Format an LSN as "%X/%X" into buf (at least LSN_BUFSZ bytes); returns buf. */
char *lsn_format(uint64_t lsn, char *buf);

/* lsn_format() returning the length of the text (NUL not counted).  No
 * snprintf: cheap enough to call for every event. */
size_t lsn_format_len(uint64_t lsn, char *buf);

/*
 * Format a PostgreSQL wire timestamp as RFC 3339 UTC with microseconds,
 * "2026-11-23T18:14:13.123456Z", into buf (PGTIME_BUFSZ bytes).  Returns buf.
 */
char *pgtime_format(int64_t pg_us, char *buf);

/* pgtime_format() returning the length of the text (NUL not counted). */
size_t pgtime_format_len(int64_t pg_us, char *buf);

/* PostgreSQL wire timestamp -> microseconds since the Unix epoch. */
int64_t pgtime_to_unix_us(int64_t pg_us);

/*
 * Parse a timestamptz in PostgreSQL's ISO DateStyle text output
 * ("2026-11-23 18:14:13.123456+00", offsets like "+05:30" or "-03:30:15",
 * fraction optional; "T" accepted instead of the space; "Z" accepted) into
 * microseconds since the Unix epoch, UTC.  Returns 0 or -1 when malformed.
 */
int pgtime_parse_text(const char *s, size_t len, int64_t *unix_us) OBX_WUR;

/*
 * Parse a timestamp without time zone in the same text form (no offset
 * allowed) as if it were UTC, as Debezium reads such a column's epoch.
 * Returns 0 or -1 when malformed.
 */
int pgtime_parse_naive(const char *s, size_t len, int64_t *unix_us) OBX_WUR;

/*
 * Format microseconds since the Unix epoch as RFC 3339 UTC ("...Z") into buf
 * (PGTIME_BUFSZ bytes): the year zero-padded to 4 digits, "-" before it
 * before year 0 (ISO 8601's astronomical years), any int64 accepted.
 * Returns buf.
 */
char *unixtime_format(int64_t unix_us, char *buf);

/* unixtime_format() returning the length of the text (NUL not counted). */
size_t unixtime_format_len(int64_t unix_us, char *buf);

#endif
