/*
 * The debezium format: what Debezium's outbox EventRouter emits with its
 * default settings and a string key converter: value = the payload itself
 * (or {"payload": ..., NAME: ...} with envelope fields, as its envelope
 * placement does), header id.  A NULL payload, or a blank one with
 * --tombstone-on-empty (route.tombstone.on.empty.payload), is a tombstone.
 */
#include "schema/format.h"

#include <stdbool.h>
#include <string.h>

#include "decode/errfmt.h"
#include "schema/errbuf.h"
#include "schema/fields.h"

static int check_field(const envelope_field *f, char *err, size_t errlen)
{
    if (f->placement == ENVELOPE_PLACE_ENVELOPE && strcmp(f->name, "payload") == 0)
        return errfmt(err, errlen, -1,
                      "--field %s:envelope:payload: \"payload\" holds the payload (pick "
                      "another NAME)",
                      f->column);
    return 0;
}

static bool ws(char c);

/* The end of the JSON value at s[i] (validated JSON: no checks). */
static size_t value_end(const char *s, size_t len, size_t i)
{
    int depth = 0;

    do {
        switch (s[i]) {
        case '"':
            for (i++; s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            i++;
            break;
        case '{':
        case '[':
            depth++;
            i++;
            break;
        case '}':
        case ']':
            depth--;
            i++;
            break;
        default:
            if (depth == 0) {
                while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && !ws(s[i]))
                    i++;
                return i;
            }
            i++;
        }
    } while (depth > 0 && i < len);
    return i;
}

static bool ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && ws(s[i]))
        i++;
    return i;
}

/* Whether the value at s[i] is one Debezium's payload expansion drops from
 * an object: null, or an empty array (it has no schema to give it). */
static bool dropped(const char *s, size_t len, size_t i)
{
    if (len - i >= 4 && memcmp(s + i, "null", 4) == 0)
        return true;
    return s[i] == '[' && skip_ws(s, len, i + 1) < len && s[skip_ws(s, len, i + 1)] == ']';
}

/*
 * The JSON value at s[*i] written compact, as JsonConverter writes an
 * expanded payload: no spaces, object members that are null or an empty
 * array left out.  Strings and numbers as they are.
 */
static void write_expanded(jsonw *w, const char *s, size_t len, size_t *i)
{
    size_t j = skip_ws(s, len, *i), e;
    bool first = true;

    if (s[j] == '{' || s[j] == '[') {
        bool obj = s[j] == '{';

        jsonw_raw(w, obj ? "{" : "[", 1);
        j = skip_ws(s, len, j + 1);
        while (s[j] != (obj ? '}' : ']')) {
            size_t k = j, kend = j;

            if (obj) {
                kend = value_end(s, len, j);
                j = skip_ws(s, len, kend);
                j = skip_ws(s, len, j + 1); /* ':' */
            }
            if (obj && dropped(s, len, j)) {
                j = skip_ws(s, len, value_end(s, len, j));
            } else {
                if (!first)
                    jsonw_raw(w, ",", 1);
                first = false;
                if (obj) {
                    jsonw_raw(w, s + k, kend - k);
                    jsonw_raw(w, ":", 1);
                }
                write_expanded(w, s, len, &j);
                j = skip_ws(s, len, j);
            }
            if (s[j] == ',')
                j = skip_ws(s, len, j + 1);
        }
        jsonw_raw(w, obj ? "}" : "]", 1);
        *i = j + 1;
        return;
    }
    e = value_end(s, len, j);
    jsonw_raw(w, s + j, e - j);
    *i = e;
}

/* The payload as a member or the whole value, per converter and expansion. */
static void write_payload(const format_ctx *c, jsonw *w, bool bare)
{
    const prepared *p = c->p;

    if (c->opts->dbz_expand && p->pl == PREPARED_JSON) {
        size_t i = 0;

        write_expanded(w, p->pdata, p->plen, &i);
    } else if (c->opts->dbz_json_converter && (p->pl == PREPARED_JSON || p->pl == PREPARED_TEXT)) {
        jsonw_str(w, p->pdata, p->plen); /* a Connect string */
    } else if (bare) {
        prepared_write_bare(w, p);
    } else {
        prepared_write_payload(w, p);
    }
}

static int write_value(const format_ctx *c, jsonw *w, bool *tombstone, char *err, size_t errlen)
{
    bool wrapped = fields_any(c->x, c->nx, ENVELOPE_PLACE_ENVELOPE);

    *tombstone = (c->opts->tombstone_on_empty && c->p->payload_blank) ||
                 (c->p->pl == PREPARED_NULL && !wrapped);
    if (*tombstone)
        return 0;
    if (c->opts->dbz_expand && c->p->pl == PREPARED_JSON && c->p->pdata[0] != '{')
        return errfmt(err, errlen, -1,
                      "payload is JSON but not an object: table.expand.json.payload "
                      "expands objects only (Debezium's task stops on it)");
    if (!wrapped) {
        if (c->opts->dbz_json_converter && c->p->pl == PREPARED_BINARY)
            prepared_write_payload(w, c->p); /* Connect bytes: base64 */
        else
            write_payload(c, w, true);
        return 0;
    }
    jsonw_open(w);
    JSONW_KEY(w, "payload");
    write_payload(c, w, false);
    fields_write(w, c->x, c->nx, false);
    jsonw_close(w);
    return 0;
}

static int add_headers(const format_ctx *c, bool tombstone, envelope_msg *m)
{
    const outbox_field *id = &c->row->f[OB_ID];

    /* Debezium's context headers come first, as its connector adds them
     * before the router adds its own */
    if (c->opts->dbz_context != NULL &&
        (envelope_msg_add_header_str(m, "__debezium.context.connectorLogicalName",
                                     c->opts->dbz_context) != 0 ||
         envelope_msg_add_header_str(m, "__debezium.context.taskId", "0") != 0 ||
         envelope_msg_add_header_str(m, "__debezium.context.connectorName", "postgresql") != 0 ||
         envelope_msg_add_header_str(m, "__debezium.context.runId", c->opts->dbz_run_id) != 0))
        return -1;
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
static const char *const reserved_headers[] = {"id",
                                               "traceparent",
                                               "payload-encoding",
                                               "__debezium.context.connectorLogicalName",
                                               "__debezium.context.taskId",
                                               "__debezium.context.connectorName",
                                               "__debezium.context.runId",
                                               NULL};

const format_ops format_debezium = {
    .name = "debezium",
    .reserved_headers = reserved_headers,
    .tombstones = true,
    .null_headers = true,
    .check_field = check_field,
    .write_value = write_value,
    .add_headers = add_headers,
};
