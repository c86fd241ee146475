#include "schema/format.h"

#include <string.h>

/* Indexed by enum envelope_format.  A new format is one more line here. */
static const format_ops *const table[] = {
    [ENVELOPE_FORMAT_ENVELOPE] = &format_envelope,
    [ENVELOPE_FORMAT_DEBEZIUM] = &format_debezium,
    [ENVELOPE_FORMAT_CLOUDEVENTS] = &format_cloudevents,
    [ENVELOPE_FORMAT_CLOUDEVENTS_BINARY] = &format_cloudevents_binary,
};

#define NFORMATS (sizeof table / sizeof table[0])

_Static_assert(NFORMATS == ENVELOPE_FORMAT_COUNT, "one table entry per enum envelope_format");

const format_ops *format_get(enum envelope_format fmt)
{
    return (size_t)fmt < NFORMATS ? table[fmt] : NULL;
}

int format_parse(const char *name, enum envelope_format *out)
{
    if (name == NULL || out == NULL)
        return -1;
    for (size_t i = 0; i < NFORMATS; i++) {
        if (strcmp(name, table[i]->name) == 0) {
            *out = (enum envelope_format)i;
            return 0;
        }
    }
    return -1;
}

bool format_reserves(const format_ops *f, const char *header)
{
    for (const char *const *h = f->reserved_headers; *h != NULL; h++)
        if (strcmp(header, *h) == 0)
            return true;
    return false;
}
