/*
 * dlrecord — the dead-letter record of a row that cannot become an event:
 * the row's columns as a JSON object, the reason and position as headers
 * (envelope_build_dead_letter() in envelope.h is the contract).  The record
 * is owned by the caller's envelope_msg.
 */
#ifndef SCHEMA_DLRECORD_H
#define SCHEMA_DLRECORD_H

#include <stddef.h>

#include "decode/compiler.h"
#include "schema/envelope.h"

/* envelope_build_dead_letter(). */
int dlrecord_build(const char *dlq_topic, const relcache_entry *rel, const pgo_tuple *tuple,
                   const outbox_row *row, const char *reason, const envelope_source *src,
                   const char *original_topic, envelope_msg *out, char *err, size_t errlen) OBX_WUR;

#endif
