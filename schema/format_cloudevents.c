/*
 * The cloudevents format: CloudEvents 1.0, Kafka protocol binding,
 * structured mode: the value is the event as JSON (header content-type
 * application/cloudevents+json); envelope fields are extension attributes,
 * their values strings.
 */
#include "schema/format.h"

#include "schema/ce.h"
#include "schema/fields.h"

static int check_field(const envelope_field *f, char *err, size_t errlen)
{
    return f->placement == ENVELOPE_PLACE_ENVELOPE ? ce_check_attribute(f, err, errlen) : 0;
}

static int write_value(const format_ctx *c, jsonw *w, bool *tombstone, char *err, size_t errlen)
{
    const outbox_row *row = c->row;
    const prepared *p = c->p;

    (void)err;
    (void)errlen;
    *tombstone = false;
    jsonw_open(w);
    JSONW_KEY(w, "specversion");
    jsonw_lit(w, "\"1.0\"");
    JSONW_KEY(w, "id");
    prepared_write_role(w, row, OB_ID);
    JSONW_KEY(w, "source");
    jsonw_raw(w, "\"", 1);
    ce_write_source(w, c->src);
    jsonw_raw(w, "\"", 1);
    JSONW_KEY(w, "type");
    prepared_write_role(w, row, OB_TYPE);
    JSONW_KEY(w, "subject");
    prepared_write_role(w, row, OB_AGGREGATE_ID);
    JSONW_KEY(w, "time");
    jsonw_plain_str(w, p->occurred, p->occurred_len);
    if (p->traceparent) {
        /* the distributed-tracing extension attribute */
        JSONW_KEY(w, "traceparent");
        prepared_write_role(w, row, OB_TRACEPARENT);
    }
    fields_write(w, c->x, c->nx, true);
    if (p->pl != PREPARED_NULL) {
        JSONW_KEY(w, "datacontenttype");
        jsonw_cstr(w, ce_content_type(p));
        if (p->pl == PREPARED_BINARY)
            JSONW_KEY(w, "data_base64");
        else
            JSONW_KEY(w, "data");
        prepared_write_payload(w, p);
    }
    jsonw_close(w);
    return 0;
}

static int add_headers(const format_ctx *c, bool tombstone, envelope_msg *m)
{
    (void)c;
    (void)tombstone;
    return envelope_msg_add_header_str(m, "content-type", "application/cloudevents+json");
}

/* This format's entry in format.c's table.  Every format ends with one of
 * these, alike in shape on purpose: the ops are the whole interface. */
static const char *const reserved_headers[] = {"content-type", "traceparent", NULL};

const format_ops format_cloudevents = {
    .name = "cloudevents",
    .reserved_headers = reserved_headers,
    .check_field = check_field,
    .write_value = write_value,
    .add_headers = add_headers,
};
