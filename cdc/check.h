/*
 * check — `outbox-relay check`: before the first start, ask the database and
 * the brokers everything the relay will need, and print one line per check
 * (✓ ok, ⚠ warning, ✗ to fix, - skipped) with the fix for each problem.
 *
 * Read-only: it creates, alters and produces nothing.  Exit code: 0 when
 * nothing is to fix (warnings allowed), 1 when something is, 2 bad usage.
 *
 * A report owns its items; check_report_free() releases them.
 */
#ifndef CDC_CHECK_H
#define CDC_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "decode/outbox.h"

enum check_status { CHECK_OK, CHECK_WARN, CHECK_FAIL, CHECK_SKIP };

typedef struct check_item {
    char name[160]; /* stable id: "wal_level", "table public.outbox", "topic x", ... */
    enum check_status status;
    char msg[768];
    char fix[768]; /* "" when nothing to do */
} check_item;

typedef struct check_report {
    check_item *v;
    size_t n, cap;
} check_report;

/* `outbox-relay check [--json] [--warn-bytes SIZE] [run options]`; argv[0]
 * is "check".  Returns the exit code. */
int check_main(int argc, char **argv);

/* Pure: whether a column of type typname (pg_type.typname of the column or
 * its domain's base type) can carry role; debezium: for --format debezium,
 * which also takes a timestamp without time zone or epoch milliseconds. */
bool check_type_accepted(enum outbox_role role, const char *typname, bool debezium);

/* Pure: the accepted types of role, for the message ("uuid, text, ..."). */
const char *check_types_of(enum outbox_role role, bool debezium);

/* Pure: the verdict on a slot's wal_status ("reserved", "extended",
 * "unreserved", "lost"; "" before PostgreSQL 13). */
enum check_status check_wal_status(const char *wal_status);

/* Pure: 1 when an item failed, else 0. */
int check_exit_code(const check_report *r);

/* Append an item (formats msg; fix may be NULL).  Out of memory: dropped. */
void check_add(check_report *r, const char *name, enum check_status st, const char *fix,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Human lines or one JSON document to out. */
void check_print(const check_report *r, bool json, FILE *out);

void check_report_free(check_report *r);

#endif
