/*
 * ce — what the two CloudEvents 1.0 formats (structured, binary; Kafka
 * protocol binding) share: the source URI, the data content type and the
 * rules for extension attribute names.  The formats themselves are
 * format_cloudevents.c and format_cloudevents_binary.c.
 */
#ifndef SCHEMA_CE_H
#define SCHEMA_CE_H

#include <stddef.h>

#include "schema/envelope.h"
#include "schema/jsonw.h"
#include "schema/prepared.h"

/*
 * "source": a URI-reference naming the outbox table,
 * "/outbox-relay/<db>/<schema.table>", each segment percent-encoded where
 * RFC 3986 does not allow the character in a path segment.  Together with
 * id (the outbox row's id) it is unique per event, as the spec requires.
 * Written as raw text: nothing in it needs JSON escaping.
 */
void ce_write_source(jsonw *w, const envelope_source *src);

/* The source URI alone, NUL-terminated (malloc'd by jansson's allocator,
 * the caller frees it), or NULL when out of memory. */
char *ce_source_str(const envelope_source *src, size_t *len);

/* datacontenttype for the payload: JSON, text or bytes. */
const char *ce_content_type(const prepared *p);

/* An envelope-placed field is an extension attribute: its name must be 1 to
 * 20 characters a-z 0-9 (the spec's SHOULD, made a MUST so every SDK
 * accepts it) and not an attribute the relay sets.  Returns 0, or -1 with
 * err. */
int ce_check_attribute(const envelope_field *f, char *err, size_t errlen);

#endif
