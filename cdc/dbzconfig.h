/*
 * dbzconfig — a Debezium PostgreSQL connector's properties file
 * (--debezium-config FILE) read as the relay's own options, so a switch
 * from Debezium needs no translation by hand.
 *
 * The file is Java Properties text (key=value or key: value or key value;
 * '#' and '!' comments; a trailing backslash continues the line; \t \n \r
 * \f \\ and \uXXXX escapes).  Each connector key becomes cfgfile entries
 * whose keys are the relay's long options (config_parse() layers them
 * like --config's, under the command line):
 *
 *   database.hostname/.port/.user/.password/.dbname/.sslmode  dbname (conninfo)
 *   slot.name, publication.name           slot, publication
 *   table.include.list                    table (plain SCHEMA.TABLE names)
 *   topic.prefix                          debezium-context
 *   value.converter (+ .schemas.enable=false)  debezium-converter
 *   transforms=NAME, transforms.NAME.type=io.debezium.transforms.outbox.EventRouter
 *   transforms.NAME.table.field.event.id/.key/.payload/.timestamp  column
 *     (.timestamp also message-timestamp=event)
 *   transforms.NAME.route.by.field        column aggregate_type=
 *   transforms.NAME.route.topic.replacement  topic (${routedByValue} ->
 *                                         {aggregate_type})
 *   transforms.NAME.route.tombstone.on.empty.payload  tombstone-on-empty-payload
 *   transforms.NAME.table.expand.json.payload  expand-json-payload
 *   transforms.NAME.table.fields.additional.placement  field (header, envelope)
 *   transforms.NAME.tracing.span.context.field  column traceparent=
 * and format=debezium.  Keys that change nothing here (name, tasks.max,
 * connector.class when PostgreSQL's, plugin.name=pgoutput, snapshot.mode,
 * publication.autocreate.mode, key.converter=StringConverter, defaults
 * restated) are accepted; any other key, or a value the relay cannot honour
 * (a table regex, placement partition, schemas.enable=true, ...), is
 * refused naming the key.
 */
#ifndef CDC_DBZCONFIG_H
#define CDC_DBZCONFIG_H

#include <stddef.h>

#include "decode/compiler.h"
#include "cdc/cfgfile.h"

/* Pure: text[0..len) read from a file named name -> entries appended to
 * out.  Returns 0, or -1 with err "NAME:LINE: KEY: message". */
int dbzconfig_parse(const char *name, const char *text, size_t len, cfgfile_entries *out, char *err,
                    size_t errlen) OBX_WUR;

/* Read path and parse it.  0, or -1 with err naming the file. */
int dbzconfig_read(const char *path, cfgfile_entries *out, char *err, size_t errlen) OBX_WUR;

#endif
