#include "schema/prepared.h"

#include <stdlib.h>
#include <string.h>

#include "decode/pgtypes.h"
#include "decode/errfmt.h"
#include "schema/errbuf.h"
#include "schema/jsonv.h"

static bool json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * bytea text output: "\x" hex (bytea_output = hex, the default) or the
 * escape format ("\\" and "\ooo" octal).  Returns the bytes (malloc'd, maybe
 * empty), NULL with *bad set when malformed, NULL alone when out of memory.
 */
static unsigned char *bytea_decode(const char *s, size_t len, size_t *outlen, bool *bad)
{
    unsigned char *out = malloc(len + 1);
    size_t o = 0;

    *bad = false;
    if (out == NULL)
        return NULL;
    if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
        if ((len - 2) % 2 != 0)
            goto malformed;
        for (size_t i = 2; i < len; i += 2) {
            int hi = jsonv_hexval(s[i]), lo = jsonv_hexval(s[i + 1]);

            if (hi < 0 || lo < 0)
                goto malformed;
            out[o++] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        for (size_t i = 0; i < len;) {
            if (s[i] != '\\') {
                out[o++] = (unsigned char)s[i++];
            } else if (i + 1 < len && s[i + 1] == '\\') {
                out[o++] = '\\';
                i += 2;
            } else if (i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
                       s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
                out[o++] = (unsigned char)((s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3 |
                                           (s[i + 3] - '0'));
                i += 4;
            } else {
                goto malformed;
            }
        }
    }
    *outlen = o;
    return out;
malformed:
    free(out);
    *bad = true;
    return NULL;
}

/* Classify the payload.  Returns 0, or -1 with the poison reason (or out of
 * memory, errno ENOMEM). */
static int prepare_payload(const outbox_row *row, prepared *p, char *err, size_t errlen)
{
    const outbox_field *f = &row->f[OB_PAYLOAD];
    const char *s = f->data;
    size_t len = f->len;
    size_t bad_at;

    p->pl = PREPARED_NULL;
    p->payload_blank = true;
    if (!f->present)
        return 0;
    if (s == NULL && len > 0)
        return errfmt(err, errlen, -1, "payload has length %zu but no data", len);
    if (s == NULL)
        s = "";
    switch (row->payload_type_oid) {
    case PG_OID_JSON:
    case PG_OID_JSONB:
    case PG_OID_TEXT:
    case PG_OID_VARCHAR:
        while (len > 0 && json_ws(s[0])) {
            s++;
            len--;
        }
        while (len > 0 && json_ws(s[len - 1]))
            len--;
        p->payload_blank = len == 0;
        if (jsonv_text_valid(s, len, &bad_at)) {
            p->pl = PREPARED_JSON;
            p->pdata = s;
            p->plen = len;
            return 0;
        }
        if (row->payload_type_oid == PG_OID_JSON || row->payload_type_oid == PG_OID_JSONB)
            return errfmt(err, errlen, -1, "payload is not valid json (at byte %zu of %zu)",
                          bad_at + (size_t)(s - f->data), f->len);
        /* Not JSON: the text as it is, surrounding spaces included. */
        s = f->data != NULL ? f->data : "";
        len = f->len;
        break;
    case PG_OID_BYTEA: {
        bool bad;

        p->bin = bytea_decode(s, len, &p->plen, &bad);
        if (p->bin == NULL)
            return bad ? errfmt(err, errlen, -1, "bytea payload is neither hex nor escape format")
                       : errbuf_oom(err, errlen);
        p->pl = PREPARED_BINARY;
        p->pdata = (const char *)p->bin;
        p->payload_blank = false; /* as Debezium: only text can be blank */
        return 0;
    }
    default:
        for (size_t i = 0; i < len && p->payload_blank; i++)
            p->payload_blank = json_ws(s[i]);
        break;
    }
    if (!jsonv_utf8_valid(s, len))
        return errfmt(err, errlen, -1, "payload is not valid utf-8");
    p->pl = PREPARED_TEXT;
    p->pdata = s;
    p->plen = len;
    return 0;
}

/* Role names as the envelope spells them in poison reasons. */
static const char *role_name(enum outbox_role role)
{
    switch (role) {
    case OB_ID:
        return "id";
    case OB_AGGREGATE_TYPE:
        return "aggregate_type";
    case OB_AGGREGATE_ID:
        return "aggregate_id";
    case OB_TYPE:
        return "type";
    default:
        return "field";
    }
}

/* "[-]digits" as an int64.  Returns 0, or -1 when it is not one. */
static int parse_int64(const char *s, size_t len, int64_t *out)
{
    bool neg = len > 0 && s[0] == '-';
    int64_t v = 0;
    size_t i = neg ? 1 : 0;

    if (i == len)
        return -1;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || __builtin_mul_overflow(v, 10, &v) ||
            __builtin_sub_overflow(v, s[i] - '0', &v))
            return -1;
    }
    if (!neg && __builtin_mul_overflow(v, -1, &v))
        return -1;
    *out = v;
    return 0;
}

/* The timestamp column's instant.  Returns 0, or -1 when it does not parse. */
static int parse_event_time(const outbox_field *ts, uint32_t type_oid, bool dbz, int64_t *us)
{
    int64_t ms;

    if (!dbz)
        return pgtime_parse_text(ts->data, ts->len, us);
    switch (type_oid) {
    case PG_OID_TIMESTAMP:
        return pgtime_parse_naive(ts->data, ts->len, us);
    case PG_OID_INT2:
    case PG_OID_INT4:
    case PG_OID_INT8:
        /* Debezium takes a plain integer column as epoch milliseconds */
        if (parse_int64(ts->data, ts->len, &ms) != 0 || __builtin_mul_overflow(ms, 1000, us))
            return -1;
        return 0;
    default:
        return pgtime_parse_text(ts->data, ts->len, us);
    }
}

/*
 * Debezium's tracingspancontext is Java Properties text ("traceparent=00-…"
 * on a line of its own, comments and other keys around it).  Find the
 * traceparent value in it; false when there is none.
 */
static bool properties_traceparent(const char *s, size_t len, const char **v, size_t *vlen)
{
    for (size_t i = 0; i < len;) {
        size_t e = i, k;

        while (e < len && s[e] != '\n' && s[e] != '\r')
            e++;
        k = i;
        while (k < e && (s[k] == ' ' || s[k] == '\t' || s[k] == '\f'))
            k++;
        if (e - k > 11 && memcmp(s + k, "traceparent", 11) == 0) {
            size_t j = k + 11, end = e;

            while (j < e && (s[j] == ' ' || s[j] == '\t'))
                j++;
            if (j < e && (s[j] == '=' || s[j] == ':')) {
                j++;
                while (j < e && (s[j] == ' ' || s[j] == '\t'))
                    j++;
                while (end > j && (s[end - 1] == ' ' || s[end - 1] == '\t'))
                    end--;
                *v = s + j;
                *vlen = end - j;
                return true;
            }
        }
        i = e + 1;
    }
    return false;
}

int prepared_row(const outbox_row *row, int64_t commit_ts, bool dbz, prepared *p, char *err,
                 size_t errlen)
{
    static const enum outbox_role ids[] = {OB_ID, OB_TYPE, OB_AGGREGATE_TYPE, OB_AGGREGATE_ID};
    const outbox_field *ts = &row->f[OB_TIMESTAMP];
    const outbox_field *tp = &row->f[OB_TRACEPARENT];

    memset(p, 0, sizeof *p);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const outbox_field *f = &row->f[ids[i]];

        if (dbz && !f->present && (ids[i] == OB_TYPE || ids[i] == OB_AGGREGATE_ID))
            continue;
        if (!f->present || (f->data == NULL && f->len > 0))
            return errfmt(err, errlen, -1, "row has no %s", role_name(ids[i]));
        if (!jsonv_utf8_valid(f->data, f->len))
            return errfmt(err, errlen, -1, "%s is not valid utf-8", role_name(ids[i]));
    }
    if (ts->present && ts->data != NULL) {
        char shown[64];

        if (parse_event_time(ts, row->timestamp_type_oid, dbz, &p->occurred_us) != 0)
            return errfmt(err, errlen, -1, "timestamp \"%s\" is not a %s",
                          errbuf_printable(ts->data, ts->len, shown, sizeof shown),
                          !dbz ? "timestamptz"
                          : row->timestamp_type_oid == PG_OID_TIMESTAMP
                              ? "timestamp"
                              : "timestamptz or epoch milliseconds");
    } else {
        p->occurred_us = pgtime_to_unix_us(commit_ts);
    }
    p->occurred_len = unixtime_format_len(p->occurred_us, p->occurred);
    if (tp->present && tp->data != NULL) {
        p->tp = tp->data;
        p->tplen = tp->len;
        if (dbz && !envelope_traceparent_valid(p->tp, p->tplen))
            (void)properties_traceparent(tp->data, tp->len, &p->tp, &p->tplen);
        p->traceparent = envelope_traceparent_valid(p->tp, p->tplen);
    }
    return prepare_payload(row, p, err, errlen);
}

void prepared_free(prepared *p)
{
    free(p->bin);
    p->bin = NULL;
}

void prepared_write_payload(jsonw *w, const prepared *p)
{
    switch (p->pl) {
    case PREPARED_NULL:
        jsonw_lit(w, "null");
        break;
    case PREPARED_JSON:
        jsonw_raw(w, p->pdata, p->plen);
        break;
    case PREPARED_TEXT:
        jsonw_str(w, p->pdata, p->plen);
        break;
    case PREPARED_BINARY:
        jsonw_base64(w, (const unsigned char *)p->pdata, p->plen);
        break;
    }
}

void prepared_write_bare(jsonw *w, const prepared *p)
{
    jsonw_raw(w, p->pdata != NULL ? p->pdata : "", p->plen);
}

void prepared_write_role(jsonw *w, const outbox_row *row, enum outbox_role role)
{
    const outbox_field *f = &row->f[role];

    jsonw_str(w, f->len > 0 ? f->data : "", f->len);
}

void prepared_write_commit_time(jsonw *w, int64_t commit_ts, const prepared *p)
{
    char tbuf[PGTIME_BUFSZ];
    int64_t us = pgtime_to_unix_us(commit_ts);

    if (us == p->occurred_us)
        jsonw_plain_str(w, p->occurred, p->occurred_len);
    else
        jsonw_plain_str(w, tbuf, unixtime_format_len(us, tbuf));
}

int64_t prepared_message_timestamp(enum envelope_timestamp ts, int64_t commit_ts, const prepared *p)
{
    int64_t us;

    switch (ts) {
    case ENVELOPE_TS_COMMIT:
        us = pgtime_to_unix_us(commit_ts);
        break;
    case ENVELOPE_TS_EVENT:
        us = p->occurred_us;
        break;
    default:
        return 0;
    }
    /* Kafka has no timestamps before 1970: leave those to the producer. */
    return us >= 1000 ? us / 1000 : 0;
}
