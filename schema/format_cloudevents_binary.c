/*
 * The cloudevents-binary format: CloudEvents 1.0, Kafka protocol binding,
 * binary mode: the attributes are ce_ headers, the value is the payload as
 * it is (a NULL payload a tombstone), content-type its datacontenttype;
 * envelope fields are ce_NAME headers.
 */
#include "schema/format.h"

#include <stdlib.h>
#include <string.h>

#include "schema/ce.h"
#include "decode/errfmt.h"
#include "schema/errbuf.h"

static int check_field(const envelope_field *f, char *err, size_t errlen)
{
    if (f->placement == ENVELOPE_PLACE_ENVELOPE)
        return ce_check_attribute(f, err, errlen);
    if (strncmp(f->name, "ce_", 3) == 0)
        return errfmt(err, errlen, -1,
                      "--field %s:header:%s: ce_ headers are CloudEvents attributes (use "
                      "%s:envelope:%s)",
                      f->column, f->name, f->column, f->name + 3);
    return 0;
}

static int write_value(const format_ctx *c, jsonw *w, bool *tombstone, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    *tombstone = c->p->pl == PREPARED_NULL;
    if (!*tombstone)
        prepared_write_bare(w, c->p);
    return 0;
}

static int add_role(envelope_msg *m, const char *name, const outbox_row *row, enum outbox_role role)
{
    return envelope_msg_add_header(m, name, row->f[role].data, row->f[role].len);
}

static int add_headers(const format_ctx *c, bool tombstone, envelope_msg *m)
{
    const prepared *p = c->p;
    size_t slen = 0;
    char *source = ce_source_str(c->src, &slen);
    int rc;

    (void)tombstone;
    if (source == NULL)
        return -1;
    rc = envelope_msg_add_header_str(m, "ce_specversion", "1.0") != 0 ||
                 add_role(m, "ce_id", c->row, OB_ID) != 0 ||
                 envelope_msg_add_header(m, "ce_source", source, slen) != 0 ||
                 add_role(m, "ce_type", c->row, OB_TYPE) != 0 ||
                 add_role(m, "ce_subject", c->row, OB_AGGREGATE_ID) != 0 ||
                 envelope_msg_add_header_str(m, "ce_time", p->occurred) != 0
             ? -1
             : 0;
    free(source);
    if (rc == 0 && p->traceparent && add_role(m, "ce_traceparent", c->row, OB_TRACEPARENT) != 0)
        rc = -1;
    if (rc == 0 && p->pl != PREPARED_NULL &&
        envelope_msg_add_header_str(m, "content-type", ce_content_type(p)) != 0)
        rc = -1;
    return rc;
}

/* This format's entry in format.c's table.  Every format ends with one of
 * these, alike in shape on purpose: the ops are the whole interface. */
static const char *const reserved_headers[] = {"content-type", "traceparent", NULL};

const format_ops format_cloudevents_binary = {
    .name = "cloudevents-binary",
    .reserved_headers = reserved_headers,
    .field_header_prefix = "ce_",
    .check_field = check_field,
    .write_value = write_value,
    .add_headers = add_headers,
};
