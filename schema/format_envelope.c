/*
 * The envelope format: our own JSON envelope (schema/envelope.schema.json),
 * the payload inside it, the event's source position beside it, fields
 * under "fields"; headers id, type, aggregate_type, content-type, lsn.
 */
#include "schema/format.h"

#include <string.h>

#include "decode/lsn.h"
#include "decode/errfmt.h"
#include "schema/errbuf.h"
#include "schema/fields.h"
#include "schema/jsonv.h"

/* A source string, or null when there is none; *bad names the first that
 * is not UTF-8 (the caller makes it a poison row).  keylit is the key's
 * JSON text with its colon (WRITE_SOURCE_STR). */
static void write_source_str(jsonw *w, const char *keylit, size_t keylen, const char *key,
                             const char *s, const char **bad)
{
    jsonw_key_lit(w, keylit, keylen);
    if (s == NULL) {
        jsonw_lit(w, "null");
        return;
    }
    if (!jsonv_utf8_valid(s, strlen(s))) {
        if (*bad == NULL)
            *bad = key;
        jsonw_lit(w, "null");
        return;
    }
    jsonw_cstr(w, s);
}

#define WRITE_SOURCE_STR(w, key, s, bad)                                                           \
    write_source_str((w), "\"" key "\":", sizeof("\"" key "\":") - 1, key, (s), (bad))

/* "source": the WAL position, or the snapshot for a backfilled row. */
static int write_source(jsonw *w, const envelope_source *src, const prepared *p, char *err,
                        size_t errlen)
{
    char lbuf[LSN_BUFSZ];
    const char *bad = NULL;

    jsonw_open(w);
    if (src->backfill) {
        /* Read from the table: no WAL position, transaction or slot to name. */
        JSONW_KEY(w, "backfill");
        jsonw_lit(w, "true");
        JSONW_KEY(w, "snapshot_time");
        prepared_write_commit_time(w, src->commit_ts, p);
    } else {
        JSONW_KEY(w, "lsn");
        jsonw_plain_str(w, lbuf, lsn_format_len(src->lsn, lbuf));
        JSONW_KEY(w, "commit_lsn");
        jsonw_plain_str(w, lbuf, lsn_format_len(src->commit_lsn, lbuf));
        JSONW_KEY(w, "seq");
        jsonw_uint(w, src->seq);
        JSONW_KEY(w, "xid");
        jsonw_uint(w, src->xid);
        JSONW_KEY(w, "commit_time");
        prepared_write_commit_time(w, src->commit_ts, p);
    }
    WRITE_SOURCE_STR(w, "db", src->db, &bad);
    WRITE_SOURCE_STR(w, "table", src->table, &bad);
    if (!src->backfill)
        WRITE_SOURCE_STR(w, "slot", src->slot, &bad);
    jsonw_close(w);
    if (bad != NULL)
        return errfmt(err, errlen, -1, "source %s is not valid utf-8", bad);
    return 0;
}

static int write_value(const format_ctx *c, jsonw *w, bool *tombstone, char *err, size_t errlen)
{
    const outbox_row *row = c->row;

    *tombstone = false;
    jsonw_open(w);
    JSONW_KEY(w, "id");
    prepared_write_role(w, row, OB_ID);
    JSONW_KEY(w, "type");
    prepared_write_role(w, row, OB_TYPE);
    JSONW_KEY(w, "aggregate_type");
    prepared_write_role(w, row, OB_AGGREGATE_TYPE);
    JSONW_KEY(w, "aggregate_id");
    prepared_write_role(w, row, OB_AGGREGATE_ID);
    JSONW_KEY(w, "occurred_at");
    jsonw_plain_str(w, c->p->occurred, c->p->occurred_len);
    JSONW_KEY(w, "payload");
    prepared_write_payload(w, c->p);
    JSONW_KEY(w, "source");
    if (write_source(w, c->src, c->p, err, errlen) != 0)
        return -1;
    if (c->p->traceparent) {
        JSONW_KEY(w, "trace");
        jsonw_open(w);
        JSONW_KEY(w, "traceparent");
        prepared_write_role(w, row, OB_TRACEPARENT);
        jsonw_close(w);
    }
    if (fields_any(c->x, c->nx, ENVELOPE_PLACE_ENVELOPE)) {
        JSONW_KEY(w, "fields");
        jsonw_open(w);
        fields_write(w, c->x, c->nx, false);
        jsonw_close(w);
    }
    jsonw_close(w);
    return 0;
}

static int add_headers(const format_ctx *c, bool tombstone, envelope_msg *m)
{
    const outbox_row *row = c->row;
    char lbuf[LSN_BUFSZ];

    (void)tombstone; /* never one */
    if (envelope_msg_add_header(m, "id", row->f[OB_ID].data, row->f[OB_ID].len) != 0 ||
        envelope_msg_add_header(m, "type", row->f[OB_TYPE].data, row->f[OB_TYPE].len) != 0 ||
        envelope_msg_add_header(m, "aggregate_type", row->f[OB_AGGREGATE_TYPE].data,
                                row->f[OB_AGGREGATE_TYPE].len) != 0 ||
        envelope_msg_add_header_str(m, "content-type", "application/json") != 0 ||
        (!c->src->backfill &&
         envelope_msg_add_header_str(m, "lsn", lsn_format(c->src->lsn, lbuf)) != 0))
        return -1;
    if (c->p->pl == PREPARED_BINARY &&
        envelope_msg_add_header_str(m, "payload-encoding", "base64") != 0)
        return -1;
    return 0;
}

/* This format's entry in format.c's table.  Every format ends with one of
 * these, alike in shape on purpose: the ops are the whole interface. */
static const char *const reserved_headers[] = {
    "id", "type", "aggregate_type", "content-type", "lsn", "traceparent", "payload-encoding", NULL,
};

const format_ops format_envelope = {
    .name = "envelope",
    .reserved_headers = reserved_headers,
    .write_value = write_value,
    .add_headers = add_headers,
};
