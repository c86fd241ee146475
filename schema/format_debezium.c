/*
 * The debezium format: what Debezium's outbox EventRouter emits with its
 * default settings and a string key converter: value = the payload itself
 * (or {"payload": ..., NAME: ...} with envelope fields, as its envelope
 * placement does), header id.  A NULL payload, or a blank one with
 * --tombstone-on-empty (route.tombstone.on.empty.payload), is a tombstone.
 */
#include "schema/format.h"

#include <string.h>

#include "schema/errbuf.h"
#include "schema/fields.h"

static int check_field(const envelope_field *f, char *err, size_t errlen)
{
    if (f->placement == ENVELOPE_PLACE_ENVELOPE && strcmp(f->name, "payload") == 0)
        return errbuf_fail(err, errlen,
                           "--field %s:envelope:payload: \"payload\" holds the payload (pick "
                           "another NAME)",
                           f->column);
    return 0;
}

static int write_value(const format_ctx *c, jsonw *w, bool *tombstone, char *err, size_t errlen)
{
    bool wrapped = fields_any(c->x, c->nx, ENVELOPE_PLACE_ENVELOPE);

    (void)err;
    (void)errlen;
    *tombstone = (c->opts->tombstone_on_empty && c->p->payload_blank) ||
                 (c->p->pl == PREPARED_NULL && !wrapped);
    if (*tombstone)
        return 0;
    if (!wrapped) {
        prepared_write_bare(w, c->p);
        return 0;
    }
    jsonw_open(w);
    JSONW_KEY(w, "payload");
    prepared_write_payload(w, c->p);
    fields_write(w, c->x, c->nx, false);
    jsonw_close(w);
    return 0;
}

static int add_headers(const format_ctx *c, bool tombstone, envelope_msg *m)
{
    const outbox_field *id = &c->row->f[OB_ID];

    if (envelope_msg_add_header(m, "id", id->data, id->len) != 0)
        return -1;
    /* bytea inside the {payload, ...} wrapper is base64: say so */
    if (!tombstone && c->p->pl == PREPARED_BINARY &&
        fields_any(c->x, c->nx, ENVELOPE_PLACE_ENVELOPE) &&
        envelope_msg_add_header_str(m, "payload-encoding", "base64") != 0)
        return -1;
    return 0;
}

/* This format's entry in format.c's table.  Every format ends with one of
 * these, alike in shape on purpose: the ops are the whole interface. */
static const char *const reserved_headers[] = {"id", "traceparent", "payload-encoding", NULL};

const format_ops format_debezium = {
    .name = "debezium",
    .reserved_headers = reserved_headers,
    .tombstones = true,
    .null_headers = true,
    .check_field = check_field,
    .write_value = write_value,
    .add_headers = add_headers,
};
