/*
 * libFuzzer target for the record builder (schema/envelope): arbitrary row
 * values through every format, checked against jansson.  See
 * tests/fuzz/README.
 *
 * Input: four control bytes, then the row's values separated by 0x1F:
 * payload, id, aggregate_id, aggregate_type, type, timestamp, traceparent
 * and up to three --field values; what follows the last separator is tried
 * as a --field argument and, when a control bit says so, as the topic
 * template (every built record's topic must be one Kafka accepts).  The control bytes pick the
 * payload's column type (json, jsonb, text, varchar, bytea, int4), SQL NULLs, the
 * --field column types (json, jsonb, bool, int4, numeric, float8, text) and
 * placements, tombstones, the message timestamp, a backfill source and the
 * topic template.
 *
 * Each input is built twice over the four formats:
 *   1. the payload alone (fixed, valid identity fields), differential
 *      against jansson: a json/jsonb payload is accepted exactly when
 *      jansson parses it, and the record's payload (envelope "payload",
 *      CloudEvents "data"/"data_base64", the bare value of debezium and
 *      cloudevents-binary) is the value jansson reads from the input; text
 *      is embedded as JSON exactly when jansson parses it, else written as
 *      the string it is; bytea comes out as the bytes an independent
 *      decoder reads;
 *   2. the whole fuzzed row with its fields: every record that is built
 *      parses with jansson when the format writes JSON, its identity fields
 *      and field values read back as given; a row that is refused gets a
 *      dead-letter record whose value parses and holds every column.
 *
 * One documented exception: a number beyond double range (1e400) is valid
 * JSON that PostgreSQL's json and numeric accept and the builder embeds
 * digit for digit (a payload, a json --field, or a numeric/float --field
 * written as a JSON number), but jansson cannot hold it ("real number
 * overflow").
 * jansson stops at such a number before reading the rest, so an input
 * holding one (huge_number) is not judged against jansson; it still goes
 * through the builder under the sanitizers.  The same for a \u0000 escape
 * in an object key: RFC 8259 allows it, jansson refuses it even with
 * JSON_ALLOW_NUL.  And one jansson leniency:
 * a NUL byte right after a number at the end of the text is taken as the
 * end ("33\0" parses); the target counts text with a raw NUL as not JSON,
 * as RFC 8259 and the builder do.
 *
 * By design the builder embeds JSON nested at most 2046 deep (a record adds
 * up to two levels and jansson reads 2048): deeper text that jansson reads
 * is refused as a json payload and written as a string as text.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/outbox.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"
#include "schema/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT4 23
#define OID_TEXT 25
#define OID_JSON 114
#define OID_FLOAT8 701
#define OID_VARCHAR 1043
#define OID_NUMERIC 1700
#define OID_JSONB 3802

#define LOAD_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL)
#define NEXTRA 3
#define NPIECES (7 + NEXTRA)

static const enum envelope_format formats[] = {
    ENVELOPE_FORMAT_ENVELOPE,
    ENVELOPE_FORMAT_DEBEZIUM,
    ENVELOPE_FORMAT_CLOUDEVENTS,
    ENVELOPE_FORMAT_CLOUDEVENTS_BINARY,
};
#define NFORMATS (sizeof formats / sizeof formats[0])

static const uint32_t payload_oids[8] = {OID_JSON,  OID_JSONB, OID_TEXT, OID_VARCHAR,
                                         OID_BYTEA, OID_INT4,  OID_JSON, OID_JSONB};
static const uint32_t extra_oids[8] = {OID_JSON,    OID_JSONB,  OID_BOOL, OID_INT4,
                                       OID_NUMERIC, OID_FLOAT8, OID_TEXT, OID_TEXT};

/* A broken promise: say which, then abort so libFuzzer keeps the input. */
static void check(bool cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_envelope: %s\n", what);
        abort();
    }
}

typedef struct piece {
    const char *data;
    size_t len;
} piece;

static bool json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static piece trim(piece p)
{
    while (p.len > 0 && json_ws(p.data[0])) {
        p.data++;
        p.len--;
    }
    while (p.len > 0 && json_ws(p.data[p.len - 1]))
        p.len--;
    return p;
}

/*
 * Whether p holds, outside strings, a run of number characters that strtod
 * reads as beyond double range: jansson stops at such a number ("real
 * number overflow") before it looks at the rest, so it cannot judge the
 * text.  A heuristic on purpose (it may also fire on invalid JSON): it only
 * decides which inputs the differential skips.
 */
static bool huge_number(piece p)
{
    bool in_str = false;
    char buf[512];

    for (size_t i = 0; i < p.len; i++) {
        char c = p.data[i];
        size_t n = 0;

        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
            continue;
        }
        while (i + n < p.len && strchr("0123456789eE+-.", p.data[i + n]) != NULL &&
               p.data[i + n] != '\0')
            n++;
        if (n == 0)
            continue;
        if (n >= sizeof buf)
            return true;
        memcpy(buf, p.data + i, n);
        buf[n] = '\0';
        errno = 0;
        double d = strtod(buf, NULL);
        if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL))
            return true;
        i += n - 1;
    }
    return false;
}

/* How deep the builder lets embedded JSON nest: jansson's 2048 less the
 * two levels a record adds around a --field value. */
#define EMBED_MAX_DEPTH 2046

/* The deepest nesting of brackets in p, outside strings. */
static int json_depth(piece p)
{
    bool in_str = false;
    int depth = 0, max = 0;

    for (size_t i = 0; i < p.len; i++) {
        char c = p.data[i];

        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                max = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}

/*
 * jansson's reading of p, or NULL; *overflow when jansson cannot judge p:
 * a number beyond double range (see huge_number), or a \u0000 in an object
 * key, which jansson refuses even with JSON_ALLOW_NUL ("NUL byte in object
 * key not supported") though RFC 8259 allows it.
 */
static json_t *jload(piece p, bool *overflow)
{
    json_error_t e;
    json_t *j;

    *overflow = huge_number(p);
    if (*overflow)
        return NULL;
    j = json_loadb(p.data != NULL ? p.data : "", p.len, LOAD_FLAGS, &e);
    if (j == NULL && strstr(e.text, "NUL byte in object key") != NULL) {
        *overflow = true;
        return NULL;
    }
    /* Deeper than the builder embeds (see EMBED_MAX_DEPTH): not JSON to
     * it, by design. */
    if (j != NULL && json_depth(p) > EMBED_MAX_DEPTH) {
        json_decref(j);
        j = NULL;
    }
    /* jansson takes a NUL byte right after a number at the end as the end
     * of the text ("33\0" parses as 33).  A raw NUL is never JSON (not a
     * token, and a control character inside a string): refuse it here. */
    if (j != NULL && p.len > 0 && memchr(p.data, '\0', p.len) != NULL) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* Whether p is UTF-8 jansson takes as a string. */
static bool utf8_ok(piece p)
{
    json_t *s = json_stringn(p.data != NULL ? p.data : "", p.len);

    json_decref(s);
    return s != NULL;
}

static int hexv(char c)
{
    static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
    const char *p;

    if (c == '\0')
        return -1;
    if ((p = strchr(lower, c)) != NULL)
        return (int)(p - lower);
    if ((p = strchr(upper, c)) != NULL)
        return (int)(p - upper);
    return -1;
}

/* bytea's text output (hex "\x..." or escape), decoded independently of
 * schema/: NULL when malformed. */
static unsigned char *bytea(piece p, size_t *outlen)
{
    unsigned char *out = malloc(p.len + 1);
    size_t o = 0, i;

    if (p.len >= 2 && p.data[0] == '\\' && p.data[1] == 'x') {
        if (p.len % 2 != 0)
            goto bad;
        for (i = 2; i < p.len; i += 2) {
            int hi = hexv(p.data[i]), lo = hexv(p.data[i + 1]);

            if (hi < 0 || lo < 0)
                goto bad;
            out[o++] = (unsigned char)(hi * 16 + lo);
        }
    } else {
        for (i = 0; i < p.len;) {
            if (p.data[i] != '\\') {
                out[o++] = (unsigned char)p.data[i++];
                continue;
            }
            if (i + 1 < p.len && p.data[i + 1] == '\\') {
                out[o++] = '\\';
                i += 2;
                continue;
            }
            if (i + 3 >= p.len)
                goto bad;
            unsigned v = 0;
            for (int k = 1; k <= 3; k++) {
                char c = p.data[i + (size_t)k];

                if (c < '0' || c > (k == 1 ? '3' : '7'))
                    goto bad;
                v = v * 8 + (unsigned)(c - '0');
            }
            out[o++] = (unsigned char)v;
            i += 4;
        }
    }
    *outlen = o;
    return out;
bad:
    free(out);
    return NULL;
}

static bool is_base64_of(json_t *s, const unsigned char *bin, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t want = (n + 2) / 3 * 4, o = 0;
    char *b;
    bool same;

    if (!json_is_string(s) || json_string_length(s) != want)
        return false;
    b = malloc(want + 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)bin[i] << 16 | (i + 1 < n ? (uint32_t)bin[i + 1] << 8 : 0) |
                     (i + 2 < n ? bin[i + 2] : 0);

        b[o++] = tab[v >> 18 & 63];
        b[o++] = tab[v >> 12 & 63];
        b[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        b[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    same = memcmp(b, json_string_value(s), want) == 0;
    free(b);
    return same;
}

static bool str_is(json_t *s, piece p)
{
    return json_is_string(s) && json_string_length(s) == p.len &&
           (p.len == 0 || memcmp(json_string_value(s), p.data, p.len) == 0);
}

static bool bytes_are(const char *v, size_t vlen, const void *d, size_t n)
{
    return vlen == n && (n == 0 || memcmp(v, d, n) == 0);
}

/* What the row's payload should read back as. */
typedef struct expect {
    bool is_null;
    json_t *json;       /* the payload is JSON: jansson's value */
    bool overflow;      /* a number jansson cannot hold: not judged */
    piece text;         /* not JSON: the text, as a string */
    unsigned char *bin; /* bytea */
    size_t binlen;
} expect;

/* Whether the JSON of a record written in fmt holds the expected payload. */
static void check_payload_in(enum envelope_format fmt, const envelope_msg *m, const expect *x)
{
    json_error_t e;
    json_t *v, *pl = NULL;
    bool bare = fmt == ENVELOPE_FORMAT_DEBEZIUM || fmt == ENVELOPE_FORMAT_CLOUDEVENTS_BINARY;

    if (x->is_null) {
        if (bare) {
            check(m->value == NULL, "a NULL payload gave a bare value");
            return;
        }
    }
    if (bare) {
        check(m->value != NULL, "no value for a payload");
        if (x->bin) {
            check(bytes_are(m->value, m->valuelen, x->bin, x->binlen), "bare bytea differs");
        } else if (x->json != NULL) {
            v = json_loadb(m->value, m->valuelen, LOAD_FLAGS, &e);
            check(v != NULL, "bare JSON value does not parse");
            check(json_equal(v, x->json), "bare JSON value differs from jansson's");
            json_decref(v);
        } else {
            check(bytes_are(m->value, m->valuelen, x->text.data, x->text.len),
                  "bare text value differs");
        }
        return;
    }
    v = json_loadb(m->value, m->valuelen, LOAD_FLAGS, &e);
    check(v != NULL, "record value does not parse with jansson");
    check(json_is_object(v), "record value is not an object");
    if (fmt == ENVELOPE_FORMAT_ENVELOPE) {
        pl = json_object_get(v, "payload");
        check(pl != NULL, "no payload member");
    } else {
        pl = json_object_get(v, x->bin ? "data_base64" : "data");
        if (x->is_null) {
            check(pl == NULL && json_object_get(v, "data_base64") == NULL, "NULL payload has data");
            json_decref(v);
            return;
        }
        check(pl != NULL, "no data member");
    }
    if (x->is_null)
        check(json_is_null(pl), "NULL payload is not null");
    else if (x->bin)
        check(is_base64_of(pl, x->bin, x->binlen), "bytea payload is not its base64");
    else if (x->json)
        check(json_equal(pl, x->json), "JSON payload differs from jansson's value");
    else
        check(str_is(pl, x->text), "text payload is not the text");
    json_decref(v);
}

static void build_source(envelope_source *src, bool backfill)
{
    memset(src, 0, sizeof *src);
    src->lsn = UINT64_C(0x16B3748);
    src->commit_lsn = UINT64_C(0x16B3800);
    src->seq = 2;
    src->xid = 741;
    src->commit_ts = INT64_C(830000000000000);
    src->db = "shop";
    src->table = "public.outbox";
    src->slot = "outbox_relay";
    src->backfill = backfill;
}

static void set_field(outbox_row *row, enum outbox_role r, piece p, bool present)
{
    row->f[r].present = present;
    row->f[r].data = present ? p.data : NULL;
    row->f[r].len = present ? p.len : 0;
}

/* 1: the payload alone, differential against jansson. */
static void payload_differential(piece payload, uint32_t oid, bool is_null, bool backfill)
{
    static const piece id = {"7", 1}, agg = {"order-1", 7}, atype = {"Order", 5},
                       type = {"created", 7};
    outbox_row row;
    envelope_source src;
    expect x = {0};
    bool expect_ok = true;

    memset(&row, 0, sizeof row);
    set_field(&row, OB_ID, id, true);
    set_field(&row, OB_AGGREGATE_ID, agg, true);
    set_field(&row, OB_AGGREGATE_TYPE, atype, true);
    set_field(&row, OB_TYPE, type, true);
    set_field(&row, OB_PAYLOAD, payload, !is_null);
    row.payload_type_oid = oid;
    build_source(&src, backfill);

    x.is_null = is_null;
    if (!is_null) {
        switch (oid) {
        case OID_JSON:
        case OID_JSONB:
        case OID_TEXT:
        case OID_VARCHAR:
            x.json = jload(trim(payload), &x.overflow);
            if (x.overflow)
                return; /* jansson cannot judge it */
            if (x.json == NULL) {
                if (oid == OID_JSON || oid == OID_JSONB)
                    expect_ok = false;
                else
                    expect_ok = utf8_ok(payload);
                x.text = payload;
            }
            break;
        case OID_BYTEA:
            x.bin = bytea(payload, &x.binlen);
            expect_ok = x.bin != NULL;
            break;
        default:
            expect_ok = utf8_ok(payload);
            x.text = payload;
            break;
        }
    }
    for (size_t f = 0; f < NFORMATS; f++) {
        envelope_msg m;
        char err[256];
        int rc =
            envelope_build(formats[f], "outbox.{aggregate_type}", &row, &src, &m, err, sizeof err);

        if (rc != 0 && !expect_ok) {
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "builder refused (%s): %s\n", envelope_format_name(formats[f]), err);
            check(false, "builder refused a payload jansson accepts");
        }
        check(expect_ok, "builder accepted a payload jansson refuses");
        check(m.topic != NULL && strcmp(m.topic, "outbox.Order") == 0, "topic");
        check(bytes_are(m.key, m.keylen, agg.data, agg.len), "key");
        check_payload_in(formats[f], &m, &x);
        envelope_msg_clear(&m);
    }
    json_decref(x.json);
    free(x.bin);
}

/* The value of a --field column as it should read back in the envelope. */
static void check_extra(json_t *v, const envelope_extra *x)
{
    bool overflow;
    json_t *j;
    piece p = {x->data, x->len};

    check(v != NULL, "field missing from the record");
    if (x->data == NULL) {
        check(json_is_null(v), "NULL field is not null");
        return;
    }
    switch (x->type_oid) {
    case OID_JSON:
    case OID_JSONB:
        j = jload(p, &overflow);
        check(j != NULL, "a json field jansson refuses was accepted");
        check(json_equal(v, j), "json field differs from jansson's value");
        json_decref(j);
        return;
    case OID_BOOL:
        if (x->len == 1 && (x->data[0] == 't' || x->data[0] == 'f')) {
            check(json_is_boolean(v) && json_is_true(v) == (x->data[0] == 't'), "bool field");
            return;
        }
        break;
    case OID_INT4:
    case OID_NUMERIC:
    case OID_FLOAT8:
        if (json_is_number(v)) {
            j = jload(p, &overflow);
            check(j != NULL && json_is_number(j) && json_equal(v, j), "number field");
            json_decref(j);
            return;
        }
        break;
    default:
        break;
    }
    check(str_is(v, p), "field is not its text");
}

static const char *const column_names[NPIECES] = {
    "payload", "id", "aggregateid", "aggregatetype", "type", "timestamp", "traceparent",
    "f0",      "f1", "f2",
};

/* 2: the whole row through every format; a refused row's dead letter. */
/* Whether s is a topic name Kafka takes: 1-249 of [a-zA-Z0-9._-]. */
static bool kafka_topic_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 249)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* The text after the last value: a --field argument, and a topic template
 * when ctl asks for one.  Returns the template, or NULL. */
static const char *tail_args(piece tail, const uint8_t *ctl, char *tmpl, size_t tmplsz)
{
    envelope_field fp;
    char err[256];

    if (tail.len == 0 || tail.len >= tmplsz || memchr(tail.data, '\0', tail.len) != NULL)
        return NULL;
    memcpy(tmpl, tail.data, tail.len);
    tmpl[tail.len] = '\0';
    if (envelope_field_parse(tmpl, &fp, err, sizeof err) == 0) {
        check(fp.column[0] != '\0' && memchr(fp.column, '\0', sizeof fp.column) != NULL,
              "--field column");
        check(fp.name[0] != '\0' && memchr(fp.name, '\0', sizeof fp.name) != NULL, "--field name");
    }
    if ((ctl[3] & 0x80) && envelope_topic_check(tmpl, err, sizeof err) == 0)
        return tmpl;
    return NULL;
}

static void whole_row(const piece *pc, piece tail, const uint8_t *ctl)
{
    char tmpl_buf[512];
    const char *tmpl = tail_args(tail, ctl, tmpl_buf, sizeof tmpl_buf);
    bool dead_letter_done = false;
    outbox_row row;
    envelope_source src;
    envelope_field fields[NEXTRA];
    envelope_extra extras[NEXTRA];
    envelope_opts opts = {0};
    size_t nextra = (ctl[1] >> 2) & 3;
    bool overflow = false;
    static const enum outbox_role roles[] = {OB_PAYLOAD,        OB_ID,   OB_AGGREGATE_ID,
                                             OB_AGGREGATE_TYPE, OB_TYPE, OB_TIMESTAMP,
                                             OB_TRACEPARENT};

    if (nextra > NEXTRA)
        nextra = NEXTRA;
    memset(&row, 0, sizeof row);
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        set_field(&row, roles[i], pc[i], true);
    row.f[OB_PAYLOAD].present = !(ctl[0] & 0x80);
    row.f[OB_TIMESTAMP].present = ctl[1] & 1;
    row.f[OB_TRACEPARENT].present = ctl[1] & 2;
    row.payload_type_oid = payload_oids[ctl[0] & 7];
    build_source(&src, ctl[0] & 0x40);
    for (size_t i = 0; i < nextra; i++) {
        unsigned sel = (unsigned)(ctl[2] | ctl[3] << 8) >> (3 * i);

        memset(&fields[i], 0, sizeof fields[i]);
        snprintf(fields[i].column, sizeof fields[i].column, "%s", column_names[7 + i]);
        snprintf(fields[i].name, sizeof fields[i].name, "x%zu", i);
        fields[i].placement =
            (ctl[1] >> (4 + i)) & 1 ? ENVELOPE_PLACE_ENVELOPE : ENVELOPE_PLACE_HEADER;
        extras[i].field = &fields[i];
        extras[i].type_oid = extra_oids[sel & 7];
        extras[i].data = (sel & 7) == 7 ? NULL : (pc[7 + i].data ? pc[7 + i].data : "");
        extras[i].len = (sel & 7) == 7 ? 0 : pc[7 + i].len;
        /* json and number columns are embedded as written: one jansson
         * cannot judge makes a record jansson cannot read back */
        if (extras[i].data != NULL && extras[i].type_oid != OID_BOOL &&
            extras[i].type_oid != OID_TEXT) {
            json_decref(jload((piece){extras[i].data, extras[i].len}, &overflow));
            if (overflow)
                return;
        }
    }
    opts.topic_tmpl = tmpl ? tmpl : ctl[1] & 0x80 ? "events" : "outbox.{aggregate_type}.{type}";
    opts.fields = fields;
    opts.nfields = nextra;
    opts.timestamp = (enum envelope_timestamp)((ctl[0] >> 4) & 3) % 3;
    if (row.f[OB_PAYLOAD].present &&
        (row.payload_type_oid == OID_JSON || row.payload_type_oid == OID_JSONB ||
         row.payload_type_oid == OID_TEXT || row.payload_type_oid == OID_VARCHAR)) {
        json_decref(jload(trim(pc[0]), &overflow));
        if (overflow)
            return; /* covered by the payload differential */
    }

    for (size_t f = 0; f < NFORMATS; f++) {
        envelope_msg m;
        char err[256];
        int rc;

        opts.format = formats[f];
        opts.tombstone_on_empty = formats[f] == ENVELOPE_FORMAT_DEBEZIUM && (ctl[0] & 8);
        if (envelope_opts_check(&opts, err, sizeof err) != 0)
            continue;
        rc = envelope_build_opts(&opts, &row, extras, nextra, &src, &m, err, sizeof err);
        if (rc != 0 && dead_letter_done)
            continue;
        if (rc != 0) {
            /* A poison row: its dead letter (the same whatever the format)
             * must be a readable record. */
            relcache_attr atts[NPIECES];
            pgo_value cols[NPIECES];
            relcache_entry rel = {.oid = 16384,
                                  .nspname = "public",
                                  .relname = "outbox",
                                  .qualname = "public.outbox",
                                  .natts = NPIECES,
                                  .atts = atts};
            pgo_tuple tup = {.ncols = NPIECES, .cols = cols};
            json_error_t e;
            json_t *v;

            for (size_t i = 0; i < NPIECES; i++) {
                atts[i] = (relcache_attr){.name = (char *)column_names[i], .type_oid = OID_TEXT};
                cols[i] = (pgo_value){
                    .kind = 't', .len = (uint32_t)pc[i].len, .data = pc[i].data ? pc[i].data : ""};
            }
            check(envelope_build_dead_letter("outbox.dlq", &rel, &tup, &row, err, &src, NULL, &m,
                                             err, sizeof err) == 0,
                  "no dead letter");
            v = json_loadb(m.value, m.valuelen, LOAD_FLAGS, &e);
            check(v != NULL && json_is_object(v), "dead-letter value does not parse");
            for (size_t i = 0; i < NPIECES; i++) {
                json_t *c = json_object_get(v, column_names[i]);

                check(c != NULL, "dead letter lost a column");
                if (utf8_ok(pc[i]))
                    check(str_is(c, pc[i]), "dead-letter column is not its text");
                else
                    check(json_is_string(c), "dead-letter binary column is not base64");
            }
            json_decref(v);
            envelope_msg_clear(&m);
            dead_letter_done = true;
            continue;
        }
        check(m.key != NULL && bytes_are(m.key, m.keylen, pc[2].data, pc[2].len), "key");
        check(m.topic != NULL && kafka_topic_ok(m.topic), "a topic Kafka would refuse");
        check(m.nheaders <= ENVELOPE_MAX_HEADERS, "too many headers");
        for (int h = 0; h < m.nheaders; h++)
            /* a null header (debezium: a NULL field) has value NULL, len 0 */
            check(m.headers[h].name != NULL &&
                      (m.headers[h].value != NULL || m.headers[h].len == 0),
                  "header");
        if (formats[f] == ENVELOPE_FORMAT_ENVELOPE || formats[f] == ENVELOPE_FORMAT_CLOUDEVENTS) {
            json_error_t e;
            json_t *v = json_loadb(m.value, m.valuelen, LOAD_FLAGS, &e);
            bool env = formats[f] == ENVELOPE_FORMAT_ENVELOPE;

            if (v == NULL)
                fprintf(stderr, "jansson: %s at %d\n", e.text, e.position);
            check(v != NULL && json_is_object(v), "record value does not parse with jansson");
            check(str_is(json_object_get(v, "id"), pc[1]), "id");
            check(str_is(json_object_get(v, "type"), pc[4]), "type");
            check(str_is(json_object_get(v, env ? "aggregate_id" : "subject"), pc[2]),
                  "aggregate id");
            if (env)
                check(str_is(json_object_get(v, "aggregate_type"), pc[3]), "aggregate type");
            check(json_is_string(json_object_get(v, env ? "occurred_at" : "time")), "time");
            for (size_t i = 0; i < nextra; i++) {
                json_t *where = env ? json_object_get(v, "fields") : v;

                if (fields[i].placement != ENVELOPE_PLACE_ENVELOPE)
                    continue;
                check(where != NULL, "no fields member");
                if (env) {
                    check_extra(json_object_get(where, fields[i].name), &extras[i]);
                } else {
                    json_t *s = json_object_get(where, fields[i].name);

                    check(extras[i].data == NULL
                              ? json_is_null(s) || s == NULL
                              : str_is(s, (piece){extras[i].data, extras[i].len}),
                          "cloudevents extension is not the text");
                }
            }
            json_decref(v);
        } else if (m.value != NULL && formats[f] == ENVELOPE_FORMAT_DEBEZIUM &&
                   (m.value[0] == '{' && nextra > 0)) {
            json_error_t e;
            json_t *v = json_loadb(m.value, m.valuelen, LOAD_FLAGS, &e);
            bool wrapped = false;

            for (size_t i = 0; i < nextra; i++)
                wrapped |= fields[i].placement == ENVELOPE_PLACE_ENVELOPE;
            if (wrapped) {
                check(v != NULL && json_is_object(v), "debezium wrapper does not parse");
                check(json_object_get(v, "payload") != NULL, "debezium wrapper has no payload");
                for (size_t i = 0; i < nextra; i++)
                    if (fields[i].placement == ENVELOPE_PLACE_ENVELOPE)
                        check_extra(json_object_get(v, fields[i].name), &extras[i]);
            }
            json_decref(v);
        }
        envelope_msg_clear(&m);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t ctl[4] = {0};
    piece pc[NPIECES], tail = {"", 0};
    size_t k = 0, start;

    for (size_t i = 0; i < 4 && i < size; i++)
        ctl[i] = data[i];
    start = size < 4 ? size : 4;
    memset(pc, 0, sizeof pc);
    /* Values between 0x1F separators; missing ones are empty. */
    for (size_t i = start; k < NPIECES; i++) {
        if (i == size || data[i] == 0x1F) {
            pc[k].data = (const char *)data + start;
            pc[k].len = i - start;
            k++;
            start = i + 1;
            if (i == size)
                break;
        }
    }
    if (k == NPIECES && start <= size)
        tail = (piece){(const char *)data + start, size - start};
    for (; k < NPIECES; k++)
        pc[k] = (piece){"", 0};

    payload_differential(pc[0], payload_oids[ctl[0] & 7], ctl[0] & 0x80, ctl[0] & 0x40);
    whole_row(pc, tail, ctl);
    return 0;
}
