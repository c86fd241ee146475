/*
 * topic — topic templates: literal text plus the placeholders
 * {aggregate_type}, {aggregate_id}, {type} and {table}, checked once at
 * start-up and expanded for every row into a Kafka topic name (at most
 * TOPIC_NAME_MAX characters of a-z A-Z 0-9 . _ -, not "." or "..").
 * Nothing here allocates: the expansion goes into the caller's buffer.
 */
#ifndef SCHEMA_TOPIC_H
#define SCHEMA_TOPIC_H

#include <stddef.h>

#include "decode/compiler.h"
#include "decode/outbox.h"

/* Kafka's own limit on topic names. */
#define TOPIC_NAME_MAX 249

/* The placeholders, for error messages. */
#define TOPIC_PLACEHOLDERS "{aggregate_type}, {aggregate_id}, {type}, {table}"

/* Check a template: known placeholders only, literal characters Kafka
 * allows, not too long.  Returns 0, or -1 with err naming what is wrong. */
int topic_check(const char *tmpl, char *err, size_t errlen) OBX_WUR;

/*
 * Expand tmpl for one row (table: "schema.table", may be NULL) into out
 * (TOPIC_NAME_MAX + 1 bytes) and check the result is a topic name Kafka
 * accepts.  Returns 0, or -1 with err (the row is then a poison row).
 */
int topic_expand(const char *tmpl, const outbox_row *row, const char *table, char *out, char *err,
                 size_t errlen) OBX_WUR;

#endif
