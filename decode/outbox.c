#include "decode/outbox.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "decode/lsn.h"

static const char *const role_names[OB_NROLES] = {
    [OB_ID] = "id",
    [OB_AGGREGATE_TYPE] = "aggregate_type",
    [OB_AGGREGATE_ID] = "aggregate_id",
    [OB_TYPE] = "type",
    [OB_PAYLOAD] = "payload",
    [OB_TIMESTAMP] = "timestamp",
    [OB_TRACEPARENT] = "traceparent",
};

/* Debezium's outbox event router column names.  Deliberately the same shape
 * as role_names: one designated entry per role, so that a role added to the
 * enum without its default column is visible here. */
static const char *const default_cols[OB_NROLES] = {
    [OB_ID] = "id",
    [OB_AGGREGATE_TYPE] = "aggregatetype",
    [OB_AGGREGATE_ID] = "aggregateid",
    [OB_TYPE] = "type",
    [OB_PAYLOAD] = "payload",
    [OB_TIMESTAMP] = "timestamp",
    [OB_TRACEPARENT] = "tracingspancontext",
};

#define VALID_ROLES "id, aggregate_type, aggregate_id, type, payload, timestamp, traceparent"

const char *outbox_role_name(enum outbox_role role)
{
    if ((unsigned)role >= OB_NROLES)
        return "unknown";
    return role_names[role];
}

bool outbox_role_required(enum outbox_role role)
{
    return role == OB_ID || role == OB_AGGREGATE_TYPE || role == OB_AGGREGATE_ID || role == OB_TYPE;
}

void outbox_colmap_init(outbox_colmap *map)
{
    memset(map, 0, sizeof *map);
    for (int r = 0; r < OB_NROLES; r++)
        snprintf(map->col[r], sizeof map->col[r], "%s", default_cols[r]);
}

bool outbox_colmap_requires(const outbox_colmap *map, enum outbox_role role)
{
    return outbox_role_required(role) && (map == NULL || !(map->optional & 1u << role));
}

int outbox_colmap_set(outbox_colmap *map, const char *role_eq_col, char *err, size_t errlen)
{
    const char *eq;
    const char *col;
    size_t rlen, clen;

    if (map == NULL || role_eq_col == NULL) {
        snprintf(err, errlen, "no column mapping given");
        return -1;
    }
    eq = strchr(role_eq_col, '=');
    if (eq == NULL) {
        snprintf(err, errlen, "column mapping \"%s\" is not ROLE=COLUMN (roles: %s)", role_eq_col,
                 VALID_ROLES);
        return -1;
    }
    rlen = (size_t)(eq - role_eq_col);
    col = eq + 1;
    clen = strlen(col);
    for (int r = 0; r < OB_NROLES; r++) {
        if (strlen(role_names[r]) != rlen || strncmp(role_names[r], role_eq_col, rlen) != 0)
            continue;
        if (clen == 0) {
            snprintf(err, errlen, "empty column name for role %s in \"%s\"", role_names[r],
                     role_eq_col);
            return -1;
        }
        if (clen >= sizeof map->col[r]) {
            snprintf(err, errlen, "column name for role %s is %zu bytes, longer than 63",
                     role_names[r], clen);
            return -1;
        }
        memcpy(map->col[r], col, clen + 1);
        return 0;
    }
    snprintf(err, errlen, "unknown role \"%.*s\" in column mapping; valid roles: %s",
             (int)(rlen > 64 ? 64 : rlen), role_eq_col, VALID_ROLES);
    return -1;
}

int outbox_column_split(const char *arg, char table[OUTBOX_QUALNAME_MAX], const char **spec,
                        char *err, size_t errlen)
{
    const char *eq, *colon, *dot;
    size_t plen, slen, nlen;

    if (arg == NULL || table == NULL || spec == NULL) {
        snprintf(err, errlen, "no column mapping given");
        return -1;
    }
    table[0] = '\0';
    *spec = arg;
    eq = strchr(arg, '=');
    plen = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    colon = memchr(arg, ':', plen);
    if (colon == NULL)
        return 0;
    plen = (size_t)(colon - arg);
    dot = memchr(arg, '.', plen);
    if (dot != NULL) {
        slen = (size_t)(dot - arg);
        nlen = plen - slen - 1;
    } else {
        slen = 0;
        nlen = plen;
    }
    if (plen == 0 || (dot != NULL && slen == 0) || nlen == 0 ||
        (dot != NULL && memchr(dot + 1, '.', nlen) != NULL)) {
        snprintf(err, errlen,
                 "table prefix \"%.*s\" of column mapping \"%s\" is not [SCHEMA.]TABLE "
                 "(e.g. orders.outbox:aggregate_id=order_id)",
                 (int)(plen > 128 ? 128 : plen), arg, arg);
        return -1;
    }
    if (slen > 63 || nlen > 63) {
        snprintf(err, errlen,
                 "table prefix of column mapping \"%.*s...\" has a name longer than 63", 40, arg);
        return -1;
    }
    if (dot != NULL)
        snprintf(table, OUTBOX_QUALNAME_MAX, "%.*s", (int)plen, arg);
    else
        snprintf(table, OUTBOX_QUALNAME_MAX, "public.%.*s", (int)nlen, arg);
    *spec = colon + 1;
    return 0;
}

int outbox_colmap_build(outbox_colmap *map, const char *qualname, const char *const *args,
                        size_t nargs, char *err, size_t errlen)
{
    char table[OUTBOX_QUALNAME_MAX];
    char cerr[256];
    const char *spec;

    if (map == NULL || qualname == NULL || (args == NULL && nargs > 0)) {
        snprintf(err, errlen, "no column map, table or arguments to build from");
        return -1;
    }
    outbox_colmap_init(map);
    /* Pass 0 applies the mappings for every table, pass 1 this table's. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < nargs; i++) {
            if (outbox_column_split(args[i], table, &spec, err, errlen) != 0)
                return -1;
            if (pass == 0 ? table[0] != '\0' : strcmp(table, qualname) != 0)
                continue;
            if (outbox_colmap_set(map, spec, cerr, sizeof cerr) != 0) {
                snprintf(err, errlen, "invalid --column \"%s\": %s", args[i], cerr);
                return -1;
            }
        }
    }
    return 0;
}

int outbox_bind(const outbox_colmap *map, const relcache_entry *rel, outbox_binding *out, char *err,
                size_t errlen)
{
    int rc = 0;

    for (int r = 0; r < OB_NROLES; r++) {
        out->idx[r] = -1;
        out->type_oid[r] = 0;
    }
    out->optional = map != NULL ? map->optional : 0;
    if (map == NULL || rel == NULL) {
        snprintf(err, errlen, "no column map or relation to bind");
        return -1;
    }
    for (int r = 0; r < OB_NROLES; r++) {
        for (uint16_t i = 0; i < rel->natts; i++) {
            if (rel->atts[i].name != NULL && strcmp(rel->atts[i].name, map->col[r]) == 0) {
                out->idx[r] = i;
                out->type_oid[r] = rel->atts[i].type_oid;
                break;
            }
        }
        /* Report the first missing required role; keep binding the rest. */
        if (out->idx[r] < 0 && outbox_colmap_requires(map, (enum outbox_role)r) && rc == 0) {
            snprintf(err, errlen,
                     "outbox table \"%s\" has no column \"%s\" for role %s; add it or map "
                     "another column with --column %s=COLUMN",
                     rel->qualname != NULL ? rel->qualname : "?", map->col[r], role_names[r],
                     role_names[r]);
            rc = -1;
        }
    }
    return rc;
}

int outbox_extract(const outbox_binding *b, const relcache_entry *rel, const pgo_tuple *tuple,
                   outbox_row *out, char *err, size_t errlen)
{
    const char *table;

    if (b == NULL || rel == NULL || tuple == NULL || out == NULL) {
        snprintf(err, errlen, "no binding, relation or tuple to extract from");
        return -1;
    }
    memset(out, 0, sizeof *out);
    table = rel->qualname != NULL ? rel->qualname : "?";
    if (tuple->ncols != rel->natts) {
        snprintf(err, errlen, "row of \"%s\" has %u columns but the relation has %u", table,
                 (unsigned)tuple->ncols, (unsigned)rel->natts);
        return -1;
    }
    for (int r = 0; r < OB_NROLES; r++) {
        bool required = outbox_role_required((enum outbox_role)r) && !(b->optional & 1u << r);
        int i = b->idx[r];
        const pgo_value *v;
        const char *col;

        if (i < 0) {
            if (required) {
                snprintf(err, errlen, "outbox table \"%s\" has no column for role %s", table,
                         role_names[r]);
                return -1;
            }
            continue;
        }
        if (i >= tuple->ncols) {
            snprintf(err, errlen, "column %d for role %s is outside the %u-column row of \"%s\"", i,
                     role_names[r], (unsigned)tuple->ncols, table);
            return -1;
        }
        v = &tuple->cols[i];
        col = rel->atts[i].name;
        switch (v->kind) {
        case 'n':
            if (required) {
                snprintf(err, errlen, "column \"%s\" (role %s) is null", col, role_names[r]);
                return -1;
            }
            break;
        case 't':
            if (v->len == 0 && required) {
                snprintf(err, errlen, "column \"%s\" (role %s) is empty", col, role_names[r]);
                return -1;
            }
            if (v->len > 0 && v->data == NULL) {
                snprintf(err, errlen, "column \"%s\" (role %s) has no data", col, role_names[r]);
                return -1;
            }
            out->f[r].data = v->data != NULL ? v->data : "";
            out->f[r].len = v->len;
            out->f[r].present = true;
            break;
        case 'b':
            /* The row has no room for a format flag: a consumer would take
             * binary send format (jsonb's version byte ...) for text. */
            snprintf(err, errlen, "column \"%s\" (role %s) arrived in binary format, not text", col,
                     role_names[r]);
            return -1;
        case 'u':
            /* An INSERT always carries whole values; 'u' means corruption. */
            snprintf(err, errlen, "column \"%s\" (role %s) is an unchanged toast value", col,
                     role_names[r]);
            return -1;
        default:
            snprintf(err, errlen, "column \"%s\" (role %s) has unknown kind 0x%02x", col,
                     role_names[r], (unsigned char)v->kind);
            return -1;
        }
    }
    out->payload_type_oid = b->type_oid[OB_PAYLOAD];
    out->timestamp_type_oid = b->type_oid[OB_TIMESTAMP];
    return 0;
}

bool outbox_message_is_event(const pgo_message *m, const char *prefix)
{
    return m != NULL && prefix != NULL && m->transactional && m->prefix != NULL &&
           strcmp(m->prefix, prefix) == 0;
}

void outbox_message_rel_init(outbox_message_rel *m, const pgo_message *msg)
{
    memset(m, 0, sizeof *m);
    snprintf(m->table, sizeof m->table, "message:%s", msg->prefix ? msg->prefix : "");
    m->att.name = "content";
    m->att.type_oid = 25; /* text */
    m->rel.qualname = m->table;
    m->rel.natts = 1;
    m->rel.atts = &m->att;
    m->col.kind = 't';
    m->col.len = msg->len;
    m->col.data = msg->content;
    m->tuple.ncols = 1;
    m->tuple.cols = &m->col;
}

void outbox_message_row_clear(outbox_message_row *m)
{
    if (m == NULL)
        return;
    json_decref(m->doc);
    memset(m, 0, sizeof *m);
}

/*
 * A scanner over JSON text that jansson has already accepted, to find the
 * exact bytes of a top-level member's value: jansson keeps values, not
 * their text, and re-serialising would change numbers ("2.50" -> "2.5",
 * 0.1 -> 0.10000000000000001).  Still bounds-checked at every step: it
 * returns len rather than read past the end.
 */
static bool json_ws_char(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && json_ws_char(s[i]))
        i++;
    return i;
}

/* s[i] is the opening quote; returns the index after the closing one. */
static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return len;
}

static size_t skip_value(const char *s, size_t len, size_t i)
{
    size_t depth = 0;

    if (i >= len)
        return len;
    if (s[i] == '"')
        return skip_string(s, len, i);
    if (s[i] != '{' && s[i] != '[') {
        while (i < len && !json_ws_char(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']')
            i++;
        return i;
    }
    while (i < len) {
        char c = s[i];

        if (c == '"') {
            i = skip_string(s, len, i);
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return i + 1;
        }
        i++;
    }
    return len;
}

/* Whether the JSON string literal s[start..end) (quotes included) spells
 * name; escapes ("pay\u006Coad") are decoded by jansson to decide. */
static bool key_is(const char *s, size_t start, size_t end, const char *name)
{
    size_t n = strlen(name);
    json_t *k;
    bool same;

    if (end - start < 2)
        return false;
    if (memchr(s + start + 1, '\\', end - start - 2) == NULL)
        return end - start - 2 == n && memcmp(s + start + 1, name, n) == 0;
    k = json_loadb(s + start, end - start, JSON_DECODE_ANY, NULL);
    same = json_is_string(k) && json_string_length(k) == n &&
           memcmp(json_string_value(k), name, n) == 0;
    json_decref(k);
    return same;
}

/* The text of top-level member name of the object in s; false if absent. */
static bool member_text(const char *s, size_t len, const char *name, const char **text,
                        size_t *tlen)
{
    size_t i = skip_ws(s, len, 0);

    if (i >= len || s[i] != '{')
        return false;
    i++;
    for (;;) {
        size_t kstart, kend, vstart, vend;

        i = skip_ws(s, len, i);
        if (i >= len || s[i] != '"')
            return false;
        kstart = i;
        kend = skip_string(s, len, i);
        i = skip_ws(s, len, kend);
        if (i >= len || s[i] != ':')
            return false;
        vstart = skip_ws(s, len, i + 1);
        vend = skip_value(s, len, vstart);
        if (vend > vstart && key_is(s, kstart, kend, name)) {
            *text = s + vstart;
            *tlen = vend - vstart;
            return true;
        }
        i = skip_ws(s, len, vend);
        if (i >= len || s[i] != ',')
            return false;
        i++;
    }
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static bool integer_text(const char *s, size_t n)
{
    size_t i = s[0] == '-' ? 1 : 0;

    if (i == n)
        return false;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Message member names, by role. */
static const char *const message_keys[OB_NROLES] = {
    [OB_ID] = "id",
    [OB_AGGREGATE_TYPE] = "aggregate_type",
    [OB_AGGREGATE_ID] = "aggregate_id",
    [OB_TYPE] = "type",
    [OB_PAYLOAD] = "payload",
    [OB_TIMESTAMP] = "timestamp",
    [OB_TRACEPARENT] = "traceparent",
};

/* One string-ish member into f; 0, or -1 with the poison reason. */
static int message_field(const char *content, size_t len, json_t *doc, enum outbox_role role,
                         outbox_field *f, char *err, size_t errlen)
{
    const char *key = message_keys[role];
    bool required = outbox_role_required(role);
    json_t *v = json_object_get(doc, key);

    if (v == NULL || json_is_null(v)) {
        if (!required)
            return 0;
        if (v == NULL)
            snprintf(err, errlen, "message has no \"%s\"", key);
        else
            snprintf(err, errlen, "message field \"%s\" is null", key);
        return -1;
    }
    if (json_is_string(v)) {
        f->data = json_string_value(v);
        f->len = json_string_length(v);
    } else if (json_is_number(v) && (role == OB_ID || role == OB_AGGREGATE_ID)) {
        /* An integer id as written: jansson holds it as a double. */
        if (!member_text(content, len, key, &f->data, &f->len) || !integer_text(f->data, f->len)) {
            snprintf(err, errlen, "message field \"%s\" is a number but not an integer", key);
            return -1;
        }
    } else {
        snprintf(err, errlen, "message field \"%s\" is %s, not a string", key, json_kind(v));
        return -1;
    }
    if (f->len == 0 && required) {
        snprintf(err, errlen, "message field \"%s\" is empty", key);
        return -1;
    }
    f->present = true;
    return 0;
}

int outbox_from_message(const char *content, size_t len, outbox_message_row *out, char *err,
                        size_t errlen)
{
    json_error_t jerr;
    json_t *doc;
    int64_t us;

    if (out == NULL || (content == NULL && len > 0)) {
        snprintf(err, errlen, "no message content or row");
        return -1;
    }
    memset(out, 0, sizeof *out);
    /* Integers as doubles: a 30-digit number in a payload is valid JSON and
     * must not poison the event; its text is taken verbatim anyway. */
    doc = json_loadb(content != NULL ? content : "", len,
                     JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (doc == NULL) {
        snprintf(err, errlen, "message content is not valid json: %s at byte %d", jerr.text,
                 jerr.position);
        return -1;
    }
    if (!json_is_object(doc)) {
        snprintf(err, errlen, "message content is %s, not a json object", json_kind(doc));
        json_decref(doc);
        return -1;
    }
    out->doc = doc;
    for (int r = 0; r < OB_NROLES; r++) {
        if (r == OB_PAYLOAD)
            continue;
        if (message_field(content, len, doc, (enum outbox_role)r, &out->row.f[r], err, errlen) != 0)
            goto poison;
    }
    if (out->row.f[OB_TIMESTAMP].present &&
        pgtime_parse_text(out->row.f[OB_TIMESTAMP].data, out->row.f[OB_TIMESTAMP].len, &us) != 0) {
        snprintf(err, errlen, "message field \"timestamp\" is not a timestamp (use RFC 3339)");
        goto poison;
    }
    if (json_object_get(doc, "payload") != NULL) {
        outbox_field *p = &out->row.f[OB_PAYLOAD];

        /* jansson accepted the document, so the scanner finds the member;
         * failing to is a bug here, not bad input — still never a crash. */
        if (!member_text(content, len, "payload", &p->data, &p->len)) {
            snprintf(err, errlen, "cannot locate the payload in the message content");
            goto poison;
        }
        p->present = true;
    }
    out->row.payload_type_oid = 3802; /* jsonb: embedded as JSON */
    return 0;

poison:
    outbox_message_row_clear(out);
    return -1;
}
