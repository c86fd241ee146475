#include "schema/dlrecord.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/lsn.h"
#include "schema/base64.h"
#include "decode/errfmt.h"
#include "schema/errbuf.h"
#include "schema/jsonv.h"

/* A base64 JSON string of len bytes, or NULL when out of memory. */
static json_t *json_base64(const char *data, size_t len)
{
    size_t n = base64_encoded_len(len);
    char *b;
    json_t *j;

    if (n == SIZE_MAX)
        return NULL;
    b = malloc(n + 1);
    if (b == NULL)
        return NULL;
    n = base64_encode((const unsigned char *)data, len, b);
    j = json_stringn_nocheck(b, n);
    free(b);
    return j;
}

/* One column's value for the dead-letter row, or NULL when out of memory. */
static json_t *column_value(const pgo_value *v)
{
    const char *d = v->data != NULL ? v->data : "";
    size_t len = v->data != NULL ? v->len : 0;

    switch (v->kind) {
    case 't':
        /* Raw bytes survive the dead-letter topic even when not text. */
        return jsonv_utf8_valid(d, len) ? json_stringn(d, len) : json_base64(d, len);
    case 'b':
        return json_base64(d, len);
    default:
        return json_null();
    }
}

/* The row as {column: value, ...} into m's value.  Returns 0, or -1 when
 * out of memory. */
static int write_row(const relcache_entry *rel, const pgo_tuple *tuple, envelope_msg *m)
{
    json_t *obj = json_object();
    int n = 0, rc = -1;

    if (obj == NULL)
        return -1;
    if (rel != NULL && tuple != NULL && (tuple->cols != NULL || tuple->ncols == 0))
        n = tuple->ncols < rel->natts ? tuple->ncols : rel->natts;
    for (int i = 0; i < n; i++) {
        const char *name = rel->atts[i].name;
        char fallback[32], *fixed = NULL;
        json_t *v = column_value(&tuple->cols[i]);
        int set;

        if (name == NULL) {
            snprintf(fallback, sizeof fallback, "column_%d", i + 1);
            name = fallback;
        } else if (!jsonv_utf8_valid(name, strlen(name))) {
            /* A name in a non-UTF-8 database encoding: keep the column. */
            fixed = strdup(name);
            if (fixed == NULL) {
                json_decref(v);
                goto done;
            }
            for (char *p = fixed; *p != '\0'; p++)
                if ((unsigned char)*p >= 0x80)
                    *p = '?';
            name = fixed;
        }
        set = json_object_set_new(obj, name, v);
        free(fixed);
        if (set != 0)
            goto done;
    }
    m->value = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (m->value == NULL)
        goto done;
    m->valuelen = strlen(m->value);
    rc = 0;
done:
    json_decref(obj);
    return rc;
}

/* The headers: error, lsn (or backfill), table, original-topic. */
static int add_headers(envelope_msg *m, const char *reason, const envelope_source *src,
                       const char *table, const char *original_topic)
{
    char lbuf[LSN_BUFSZ];

    if (envelope_msg_add_header_str(m, "error", reason != NULL ? reason : "unknown error") != 0)
        return -1;
    if (src != NULL && src->backfill
            ? envelope_msg_add_header_str(m, "backfill", "true") != 0
            : envelope_msg_add_header_str(m, "lsn", lsn_format(src != NULL ? src->lsn : 0, lbuf)) !=
                  0)
        return -1;
    if (envelope_msg_add_header_str(m, "table", table) != 0)
        return -1;
    if (original_topic != NULL &&
        envelope_msg_add_header_str(m, "original-topic", original_topic) != 0)
        return -1;
    return 0;
}

int dlrecord_build(const char *dlq_topic, const relcache_entry *rel, const pgo_tuple *tuple,
                   const outbox_row *row, const char *reason, const envelope_source *src,
                   const char *original_topic, envelope_msg *out, char *err, size_t errlen)
{
    envelope_msg m = {0};
    const char *table = "";

    if (out == NULL || dlq_topic == NULL)
        return errfmt(err, errlen, -1, "envelope_build_dead_letter: missing argument");
    memset(out, 0, sizeof *out);
    if (src != NULL && src->table != NULL)
        table = src->table;
    else if (rel != NULL && rel->qualname != NULL)
        table = rel->qualname;
    m.topic = strdup(dlq_topic);
    if (m.topic == NULL)
        goto nomem;
    if (row != NULL && row->f[OB_AGGREGATE_ID].present && row->f[OB_AGGREGATE_ID].data != NULL &&
        envelope_msg_set_key(&m, row->f[OB_AGGREGATE_ID].data, row->f[OB_AGGREGATE_ID].len) != 0)
        goto nomem;
    if (write_row(rel, tuple, &m) != 0 || add_headers(&m, reason, src, table, original_topic) != 0)
        goto nomem;
    *out = m;
    return 0;
nomem:
    envelope_msg_clear(&m);
    return errbuf_oom(err, errlen);
}
