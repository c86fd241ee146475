#include "schema/ce.h"

#include <stdbool.h>
#include <string.h>

#include "decode/errfmt.h"
#include "schema/errbuf.h"

void ce_write_source(jsonw *w, const envelope_source *src)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *seg[2] = {src->db != NULL ? src->db : "", src->table != NULL ? src->table : ""};

    jsonw_lit(w, "/outbox-relay");
    for (int k = 0; k < 2; k++) {
        jsonw_raw(w, "/", 1);
        for (const unsigned char *c = (const unsigned char *)seg[k]; *c != '\0'; c++) {
            if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                strchr("-._~!$&'()*+,;=:@", *c) != NULL) {
                jsonw_raw(w, (const char *)c, 1);
            } else {
                char pct[3] = {'%', hex[*c >> 4], hex[*c & 0xF]};

                jsonw_raw(w, pct, 3);
            }
        }
    }
}

char *ce_source_str(const envelope_source *src, size_t *len)
{
    jsonw w;
    char *s = NULL;

    jsonw_init(&w);
    ce_write_source(&w, src);
    if (jsonw_finish(&w, &s, len) != 0)
        return NULL;
    return s;
}

const char *ce_content_type(const prepared *p)
{
    switch (p->pl) {
    case PREPARED_TEXT:
        return "text/plain; charset=utf-8";
    case PREPARED_BINARY:
        return "application/octet-stream";
    default:
        return "application/json";
    }
}

/* CloudEvents 1.0 context attributes (and the tracing extension's). */
static const char *const reserved[] = {
    "specversion",     "id",         "source", "type",        "subject",     "time",
    "datacontenttype", "dataschema", "data",   "data_base64", "traceparent", "tracestate",
};

static bool name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

int ce_check_attribute(const envelope_field *f, char *err, size_t errlen)
{
    if (!name_ok(f->name))
        return errfmt(err, errlen, -1,
                      "--field %s:envelope:%s: a CloudEvents attribute name is 1 to 20 "
                      "characters a-z 0-9 (give one as NAME)",
                      f->column, f->name);
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(f->name, reserved[i]) == 0)
            return errfmt(err, errlen, -1,
                          "--field %s:envelope:%s: \"%s\" is a CloudEvents attribute the "
                          "relay sets (pick another NAME)",
                          f->column, f->name, f->name);
    return 0;
}
