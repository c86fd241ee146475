/*
 * The public face of schema/: the knobs, the checks made once at start-up,
 * envelope_msg, and the build every format shares.  What differs between
 * formats is in schema/format_*.c behind schema/format.h.
 */
#include "schema/envelope.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "schema/dlrecord.h"
#include "decode/errfmt.h"
#include "schema/errbuf.h"
#include "schema/fields.h"
#include "schema/format.h"
#include "schema/jsonw.h"
#include "schema/prepared.h"
#include "schema/topic.h"

/* ---- knobs -------------------------------------------------------------- */

int envelope_format_parse(const char *name, enum envelope_format *out)
{
    return format_parse(name, out);
}

const char *envelope_format_name(enum envelope_format fmt)
{
    const format_ops *f = format_get(fmt);

    return f != NULL ? f->name : "?";
}

int envelope_timestamp_parse(const char *name, enum envelope_timestamp *out)
{
    static const char *const names[] = {[ENVELOPE_TS_NONE] = "none",
                                        [ENVELOPE_TS_COMMIT] = "commit",
                                        [ENVELOPE_TS_EVENT] = "event"};

    if (name == NULL || out == NULL)
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (enum envelope_timestamp)i;
            return 0;
        }
    }
    return -1;
}

int envelope_topic_check(const char *tmpl, char *err, size_t errlen)
{
    return topic_check(tmpl, err, errlen);
}

int envelope_field_parse(const char *arg, envelope_field *out, char *err, size_t errlen)
{
    return fields_parse(arg, out, err, errlen);
}

int envelope_opts_check(const envelope_opts *o, char *err, size_t errlen)
{
    const format_ops *f;

    if (o == NULL || (o->fields == NULL && o->nfields > 0))
        return errfmt(err, errlen, -1, "envelope_opts_check: missing argument");
    f = format_get(o->format);
    if (f == NULL)
        return errfmt(err, errlen, -1, "unknown format %d (use %s)", (int)o->format,
                      ENVELOPE_FORMAT_NAMES);
    if (topic_check(o->topic_tmpl, err, errlen) != 0)
        return -1;
    if (o->nfields > ENVELOPE_MAX_FIELDS)
        return errfmt(err, errlen, -1, "too many --field options (%zu, at most %d)", o->nfields,
                      ENVELOPE_MAX_FIELDS);
    if (fields_check(f, o->fields, o->nfields, err, errlen) != 0)
        return -1;
    if (o->tombstone_on_empty && !f->tombstones)
        return errfmt(err, errlen, -1,
                      "tombstones on empty payload exist only in the debezium format");
    if ((o->dbz_json_converter || o->dbz_expand || o->dbz_context != NULL) &&
        o->format != ENVELOPE_FORMAT_DEBEZIUM)
        return errfmt(err, errlen, -1,
                      "--debezium-converter, --expand-json-payload and --debezium-context "
                      "apply only to --format debezium");
    if (o->dbz_context != NULL && o->dbz_run_id == NULL)
        return errfmt(err, errlen, -1, "--debezium-context: no run id");
    if (o->dbz_expand && !o->dbz_json_converter)
        return errfmt(err, errlen, -1,
                      "--expand-json-payload needs --debezium-converter json (an expanded "
                      "payload through Debezium's StringConverter is a Java Struct's "
                      "toString(), no consumer can read it)");
    if ((unsigned)o->timestamp > ENVELOPE_TS_EVENT)
        return errfmt(err, errlen, -1, "unknown message timestamp source %d", (int)o->timestamp);
    return 0;
}

int envelope_fields_resolve(const envelope_field *fields, size_t nfields, const relcache_entry *rel,
                            const pgo_tuple *tuple, envelope_extra *out, size_t *nout, char *err,
                            size_t errlen)
{
    return fields_resolve(fields, nfields, rel, tuple, out, nout, err, errlen);
}

static bool lower_hex(const char *s, size_t n, bool *all_zero)
{
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        if (s[i] != '0')
            *all_zero = false;
    }
    return true;
}

bool envelope_traceparent_valid(const char *s, size_t len)
{
    bool zero;

    if (s == NULL || len < 55)
        return false;
    if (!lower_hex(s, 2, &zero) || (s[0] == 'f' && s[1] == 'f'))
        return false;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    if (!lower_hex(s + 3, 32, &zero) || zero)
        return false;
    if (!lower_hex(s + 36, 16, &zero) || zero)
        return false;
    if (!lower_hex(s + 53, 2, &zero))
        return false;
    if (s[0] == '0' && s[1] == '0')
        return len == 55;
    return len == 55 || s[55] == '-';
}

/* ---- messages ----------------------------------------------------------- */

void envelope_msg_clear(envelope_msg *msg)
{
    if (msg == NULL)
        return;
    free(msg->topic);
    free(msg->key);
    free(msg->value);
    /* a header's value lives in its name's allocation */
    for (int i = 0; i < msg->nheaders && i < ENVELOPE_MAX_HEADERS; i++)
        free(msg->headers[i].name);
    memset(msg, 0, sizeof *msg);
}

/* Name and value in one allocation, the value NUL-terminated after the
 * name's NUL: half the malloc/free pairs of a record. */
int envelope_msg_add_header(envelope_msg *m, const char *name, const char *value, size_t len)
{
    envelope_header *h;
    size_t nlen = strlen(name);
    char *b;

    if (m->nheaders >= ENVELOPE_MAX_HEADERS || len > SIZE_MAX - nlen - 2)
        return -1;
    b = malloc(nlen + 1 + len + 1);
    if (b == NULL)
        return -1;
    memcpy(b, name, nlen + 1);
    if (len > 0)
        memcpy(b + nlen + 1, value, len);
    b[nlen + 1 + len] = '\0';
    h = &m->headers[m->nheaders++];
    h->name = b;
    h->value = b + nlen + 1;
    h->len = len;
    return 0;
}

int envelope_msg_add_null_header(envelope_msg *m, const char *name)
{
    if (envelope_msg_add_header(m, name, "", 0) != 0)
        return -1;
    m->headers[m->nheaders - 1].value = NULL;
    return 0;
}

int envelope_msg_add_header_str(envelope_msg *m, const char *name, const char *value)
{
    return envelope_msg_add_header(m, name, value, strlen(value));
}

int envelope_msg_set_key(envelope_msg *m, const char *key, size_t len)
{
    char *d = malloc(len + 1);

    if (d == NULL)
        return -1;
    if (len > 0)
        memcpy(d, key, len);
    d[len] = '\0';
    m->key = d;
    m->keylen = len;
    return 0;
}

/* ---- records ------------------------------------------------------------ */

int envelope_build(enum envelope_format fmt, const char *topic_tmpl, const outbox_row *row,
                   const envelope_source *src, envelope_msg *out, char *err, size_t errlen)
{
    envelope_opts o = {.format = fmt, .topic_tmpl = topic_tmpl};

    return envelope_build_opts(&o, row, NULL, 0, src, out, err, errlen);
}

/* The headers every format gets after its own.  Returns 0, or -1 when out
 * of memory. */
static int add_common_headers(const format_ops *f, const format_ctx *c, envelope_msg *m)
{
    if (f->field_header_prefix != NULL &&
        fields_add_headers(m, c->x, c->nx, ENVELOPE_PLACE_ENVELOPE, f->field_header_prefix,
                           false) != 0)
        return -1;
    /* Every format says so, as the envelope's source does: a consumer of a
     * format without a source can still tell a backfilled record apart. */
    if (c->src->backfill && envelope_msg_add_header_str(m, "backfill", "true") != 0)
        return -1;
    /* The W3C header in every format: tracing instrumentations read it. */
    if (c->p->traceparent && envelope_msg_add_header(m, "traceparent", c->p->tp, c->p->tplen) != 0)
        return -1;
    return fields_add_headers(m, c->x, c->nx, ENVELOPE_PLACE_HEADER, "", f->null_headers);
}

int envelope_build_opts(const envelope_opts *opts, const outbox_row *row,
                        const envelope_extra *extras, size_t nextras, const envelope_source *src,
                        envelope_msg *out, char *err, size_t errlen)
{
    envelope_msg m = {0};
    char topic[TOPIC_NAME_MAX + 1];
    prepared p = {0};
    jsonw w;
    bool tombstone = false;
    const format_ops *f;
    format_ctx c;
    const outbox_field *key;

    errno = 0;
    jsonw_init(&w);
    if (out == NULL || row == NULL || src == NULL || opts == NULL ||
        (extras == NULL && nextras > 0)) {
        errfmt(err, errlen, -1, "envelope_build: missing argument");
        goto fail;
    }
    memset(out, 0, sizeof *out);
    f = format_get(opts->format);
    if (f == NULL) {
        errfmt(err, errlen, -1, "unknown envelope format %d", (int)opts->format);
        goto fail;
    }
    if (topic_expand(opts->topic_tmpl, row, src->table, topic, err, errlen) != 0 ||
        prepared_row(row, src->commit_ts, opts->format == ENVELOPE_FORMAT_DEBEZIUM, &p, err,
                     errlen) != 0 ||
        fields_check_values(extras, nextras, err, errlen) != 0)
        goto fail;
    /* One allocation for the usual record: the payload (base64 grows it by
     * a third) plus the envelope around it. */
    (void)jsonw_reserve(&w, p.plen + p.plen / 3 + 512 + 96 * nextras);
    m.dropped_traceparent =
        row->f[OB_TRACEPARENT].present && row->f[OB_TRACEPARENT].data != NULL && !p.traceparent;
    m.timestamp_ms = prepared_message_timestamp(opts->timestamp, src->commit_ts, &p);

    c = (format_ctx){.opts = opts, .row = row, .src = src, .p = &p, .x = extras, .nx = nextras};
    if (f->write_value(&c, &w, &tombstone, err, errlen) != 0)
        goto fail;
    if (!tombstone && jsonw_finish(&w, &m.value, &m.valuelen) != 0)
        goto nomem;
    key = &row->f[OB_AGGREGATE_ID];
    m.topic = strdup(topic);
    /* No aggregate id (the debezium format allows it): a NULL key */
    if (m.topic == NULL || (key->present && envelope_msg_set_key(&m, key->data, key->len) != 0) ||
        f->add_headers(&c, tombstone, &m) != 0 || add_common_headers(f, &c, &m) != 0)
        goto nomem;
    jsonw_discard(&w); /* a tombstone never took the buffer */
    prepared_free(&p);
    *out = m;
    return 0;
nomem:
    errbuf_oom(err, errlen);
fail:
    jsonw_discard(&w);
    prepared_free(&p);
    envelope_msg_clear(&m);
    /* Only our own allocations leave ENOMEM behind: anything else is the row. */
    if (errno != ENOMEM)
        errno = EINVAL;
    return -1;
}

int envelope_build_dead_letter(const char *dlq_topic, const relcache_entry *rel,
                               const pgo_tuple *tuple, const outbox_row *row, const char *reason,
                               const envelope_source *src, const char *original_topic,
                               envelope_msg *out, char *err, size_t errlen)
{
    return dlrecord_build(dlq_topic, rel, tuple, row, reason, src, original_topic, out, err,
                          errlen);
}
