/*
 * Record formats (envelope, debezium, cloudevents, cloudevents-binary), the
 * router knobs (--field, tombstones, message timestamps), W3C traceparent
 * validation, and the envelope's JSON Schema.
 *
 * Fixtures under tests/fixtures/formats/ (see the README there) are compared
 * byte for byte: topic, key, every header in order, timestamp, value.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "decode/lsn.h"
#include "schema/envelope.h"

#define DEFAULT_TOPIC "outbox.event.{aggregate_type}"
#define TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#define UUID "6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a"
#define COMMIT_TS INT64_C(848772853123999) /* 2026-11-23T18:14:13.123999Z */
#define PG_EPOCH_US INT64_C(946684800000000)

#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT4 23
#define OID_TEXT 25
#define OID_JSON 114
#define OID_FLOAT8 701
#define OID_NUMERIC 1700
#define OID_JSONB 3802

static const char *root(void)
{
    const char *r = getenv("OBX_ROOT");

    return r != NULL && r[0] != '\0' ? r : ".";
}

static outbox_field fld(const char *s)
{
    return (outbox_field){.data = s, .len = strlen(s), .present = true};
}

static outbox_row base_row(void)
{
    outbox_row r;

    memset(&r, 0, sizeof r);
    r.f[OB_ID] = fld(UUID);
    r.f[OB_AGGREGATE_TYPE] = fld("order");
    r.f[OB_AGGREGATE_ID] = fld("42");
    r.f[OB_TYPE] = fld("OrderPlaced");
    r.f[OB_PAYLOAD] = fld("{\"total\": 42.5, \"orderId\": 42}");
    r.payload_type_oid = OID_JSONB;
    r.f[OB_TIMESTAMP] = fld("2026-11-23 18:14:13.123456+00");
    r.f[OB_TRACEPARENT] = fld(TP);
    return r;
}

static envelope_source base_src(void)
{
    return (envelope_source){.lsn = 0x16B3748,
                             .commit_lsn = 0x16B3800,
                             .seq = 0,
                             .xid = 745,
                             .commit_ts = COMMIT_TS,
                             .db = "app",
                             .table = "public.outbox",
                             .slot = "outbox_relay"};
}

static const envelope_header *header(const envelope_msg *m, const char *name)
{
    const envelope_header *found = NULL;

    for (int i = 0; i < m->nheaders; i++) {
        if (strcmp(m->headers[i].name, name) == 0) {
            if (found != NULL)
                fail_msg("header \"%s\" twice", name);
            found = &m->headers[i];
        }
    }
    return found;
}

static void assert_header(const envelope_msg *m, const char *name, const char *value)
{
    const envelope_header *h = header(m, name);

    if (h == NULL)
        fail_msg("header \"%s\" missing", name);
    if (h->len != strlen(value) || memcmp(h->value, value, h->len) != 0)
        fail_msg("header \"%s\" is \"%s\", expected \"%s\"", name, h->value, value);
}

static void build(const envelope_opts *o, const outbox_row *row, const envelope_extra *x, size_t nx,
                  envelope_msg *m)
{
    envelope_source src = base_src();
    char err[256] = "";

    if (envelope_build_opts(o, row, x, nx, &src, m, err, sizeof err) != 0)
        fail_msg("envelope_build_opts failed: %s", err);
}

static void build_fails(const envelope_opts *o, const outbox_row *row, const envelope_extra *x,
                        size_t nx, const char *needle)
{
    envelope_source src = base_src();
    envelope_msg m;
    char err[256] = "";

    memset(&m, 0x5a, sizeof m);
    assert_int_equal(envelope_build_opts(o, row, x, nx, &src, &m, err, sizeof err), -1);
    assert_int_equal(errno, EINVAL);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static json_t *value_json(const envelope_msg *m)
{
    json_error_t jerr;
    json_t *j;

    assert_non_null(m->value);
    assert_int_equal(strlen(m->value), m->valuelen);
    j = json_loadb(m->value, m->valuelen, JSON_DECODE_ANY, &jerr);
    if (j == NULL)
        fail_msg("value is not JSON (%s): %s", jerr.text, m->value);
    return j;
}

/* ---- fixtures ----------------------------------------------------------- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        fail_msg("cannot open fixture \"%s\": %s", path, strerror(errno));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static uint32_t type_oid(const char *name)
{
    static const struct {
        const char *name;
        uint32_t oid;
    } types[] = {{"text", OID_TEXT},       {"int4", OID_INT4},    {"jsonb", OID_JSONB},
                 {"json", OID_JSON},       {"bool", OID_BOOL},    {"bytea", OID_BYTEA},
                 {"numeric", OID_NUMERIC}, {"float8", OID_FLOAT8}};

    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].name, name) == 0)
            return types[i].oid;
    fail_msg("fixture type \"%s\" unknown", name);
    return 0;
}

static outbox_field jfield(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (v == NULL || json_is_null(v))
        return (outbox_field){0};
    assert_true(json_is_string(v));
    return (outbox_field){
        .data = json_string_value(v), .len = json_string_length(v), .present = true};
}

static void check_fixture(const char *name)
{
    char path[1024];
    json_error_t jerr;
    json_t *c, *r, *s, *x, *h, *v;
    outbox_row row;
    envelope_source src;
    envelope_opts o = {.topic_tmpl = DEFAULT_TOPIC};
    envelope_field fields[ENVELOPE_MAX_FIELDS];
    envelope_extra extras[ENVELOPE_MAX_FIELDS];
    relcache_attr atts[16];
    pgo_value cols[16];
    relcache_entry rel = {.qualname = "public.outbox"};
    pgo_tuple tuple = {.cols = cols};
    size_t nx = 0, i;
    envelope_msg m = {0};
    char err[256] = "";
    int64_t unix_us;

    snprintf(path, sizeof path, "%s/tests/fixtures/formats/%s.case.json", root(), name);
    c = json_load_file(path, 0, &jerr);
    if (c == NULL)
        fail_msg("fixture %s: %s (line %d)", path, jerr.text, jerr.line);
    assert_int_equal(
        envelope_format_parse(json_string_value(json_object_get(c, "format")), &o.format), 0);
    o.tombstone_on_empty = json_is_true(json_object_get(c, "tombstone_on_empty"));
    if (json_object_get(c, "timestamp") != NULL)
        assert_int_equal(envelope_timestamp_parse(
                             json_string_value(json_object_get(c, "timestamp")), &o.timestamp),
                         0);
    json_array_foreach(json_object_get(c, "fields"), i, v)
    {
        assert_true(i < ENVELOPE_MAX_FIELDS);
        if (envelope_field_parse(json_string_value(v), &fields[i], err, sizeof err) != 0)
            fail_msg("fixture %s: %s", name, err);
        o.nfields = i + 1;
    }
    o.fields = fields;
    if (envelope_opts_check(&o, err, sizeof err) != 0)
        fail_msg("fixture %s: %s", name, err);
    json_array_foreach(json_object_get(c, "columns"), i, v)
    {
        json_t *val = json_object_get(v, "value");

        assert_true(i < 16);
        atts[i] =
            (relcache_attr){.name = (char *)json_string_value(json_object_get(v, "name")),
                            .type_oid = type_oid(json_string_value(json_object_get(v, "type")))};
        cols[i] = json_is_string(val) ? (pgo_value){.kind = 't',
                                                    .len = (uint32_t)json_string_length(val),
                                                    .data = json_string_value(val)}
                                      : (pgo_value){.kind = 'n'};
        rel.natts = (uint16_t)(i + 1);
        tuple.ncols = (uint16_t)(i + 1);
    }
    rel.atts = atts;
    assert_int_equal(
        envelope_fields_resolve(fields, o.nfields, &rel, &tuple, extras, &nx, err, sizeof err), 0);

    r = json_object_get(c, "row");
    memset(&row, 0, sizeof row);
    row.f[OB_ID] = jfield(r, "id");
    row.f[OB_AGGREGATE_TYPE] = jfield(r, "aggregate_type");
    row.f[OB_AGGREGATE_ID] = jfield(r, "aggregate_id");
    row.f[OB_TYPE] = jfield(r, "type");
    row.f[OB_PAYLOAD] = jfield(r, "payload");
    row.f[OB_TIMESTAMP] = jfield(r, "timestamp");
    row.f[OB_TRACEPARENT] = jfield(r, "traceparent");
    row.payload_type_oid = type_oid(json_string_value(json_object_get(r, "payload_type")));

    s = json_object_get(c, "source");
    src = (envelope_source){.seq = (uint32_t)json_integer_value(json_object_get(s, "seq")),
                            .xid = (uint32_t)json_integer_value(json_object_get(s, "xid")),
                            .db = json_string_value(json_object_get(s, "db")),
                            .table = json_string_value(json_object_get(s, "table")),
                            .slot = json_string_value(json_object_get(s, "slot"))};
    assert_int_equal(lsn_parse(json_string_value(json_object_get(s, "lsn")), &src.lsn), 0);
    assert_int_equal(
        lsn_parse(json_string_value(json_object_get(s, "commit_lsn")), &src.commit_lsn), 0);
    {
        const char *ct = json_string_value(json_object_get(s, "commit_time"));

        assert_int_equal(pgtime_parse_text(ct, strlen(ct), &unix_us), 0);
        src.commit_ts = unix_us - PG_EPOCH_US;
    }

    if (envelope_build_opts(&o, &row, extras, nx, &src, &m, err, sizeof err) != 0)
        fail_msg("fixture %s: build failed: %s", name, err);

    x = json_object_get(c, "expect");
    assert_string_equal(m.topic, json_string_value(json_object_get(x, "topic")));
    assert_int_equal(m.keylen, strlen(json_string_value(json_object_get(x, "key"))));
    assert_memory_equal(m.key, json_string_value(json_object_get(x, "key")), m.keylen);
    assert_int_equal(m.timestamp_ms, json_integer_value(json_object_get(x, "timestamp_ms")));
    assert_false(m.dropped_traceparent);
    h = json_object_get(x, "headers");
    if ((size_t)m.nheaders != json_array_size(h)) {
        for (int k = 0; k < m.nheaders; k++)
            print_message("got header %s: %s\n", m.headers[k].name, m.headers[k].value);
        fail_msg("fixture %s: %d headers, expected %zu", name, m.nheaders, json_array_size(h));
    }
    json_array_foreach(h, i, v)
    {
        const char *hn = json_string_value(json_array_get(v, 0));
        const char *hv = json_string_value(json_array_get(v, 1));

        if (strcmp(m.headers[i].name, hn) != 0 || m.headers[i].len != strlen(hv) ||
            memcmp(m.headers[i].value, hv, m.headers[i].len) != 0)
            fail_msg("fixture %s: header %zu is %s: %s, expected %s: %s", name, i,
                     m.headers[i].name, m.headers[i].value, hn, hv);
    }
    v = json_object_get(x, "value_file");
    if (json_is_null(v)) {
        assert_null(m.value);
        assert_int_equal(m.valuelen, 0);
    } else {
        size_t wlen;
        char *want;

        snprintf(path, sizeof path, "%s/tests/fixtures/formats/%s", root(), json_string_value(v));
        want = slurp(path, &wlen);
        if (m.valuelen != wlen || memcmp(m.value, want, wlen) != 0)
            fail_msg("fixture %s: value\n  got  %.*s\n  want %s", name, (int)m.valuelen, m.value,
                     want);
        free(want);
    }
    envelope_msg_clear(&m);
    json_decref(c);
}

static void test_fixture(void **state)
{
    check_fixture((const char *)*state);
}

/* ---- formats, case by case ---------------------------------------------- */

static void test_debezium_bare_payloads(void **state)
{
    envelope_opts o = {.format = ENVELOPE_FORMAT_DEBEZIUM, .topic_tmpl = DEFAULT_TOPIC};
    outbox_row row = base_row();
    envelope_msg m = {0};

    (void)state;
    /* JSON: verbatim (surrounding blanks trimmed), not quoted */
    row.f[OB_PAYLOAD] = fld("  {\"n\": 1.10}\n");
    build(&o, &row, NULL, 0, &m);
    assert_string_equal(m.value, "{\"n\": 1.10}");
    assert_int_equal(m.nheaders, 2); /* id, traceparent */
    assert_header(&m, "id", UUID);
    assert_header(&m, "traceparent", TP);
    assert_int_equal(m.timestamp_ms, 0);
    envelope_msg_clear(&m);

    /* text that is not JSON: the text itself (a string converter's output) */
    row.payload_type_oid = OID_TEXT;
    row.f[OB_PAYLOAD] = fld(" hello \"world\" ");
    build(&o, &row, NULL, 0, &m);
    assert_string_equal(m.value, " hello \"world\" ");
    envelope_msg_clear(&m);

    /* bytea: the bytes */
    row.payload_type_oid = OID_BYTEA;
    row.f[OB_PAYLOAD] = fld("\\x00ff41");
    build(&o, &row, NULL, 0, &m);
    assert_int_equal(m.valuelen, 3);
    assert_memory_equal(m.value, "\x00\xff\x41", 3);
    assert_null(header(&m, "payload-encoding"));
    envelope_msg_clear(&m);

    /* NULL payload without envelope fields: a NULL value even without the
     * tombstone knob, as Debezium's converters give for a null payload */
    row.f[OB_PAYLOAD] = (outbox_field){0};
    build(&o, &row, NULL, 0, &m);
    assert_null(m.value);
    assert_header(&m, "id", UUID);
    envelope_msg_clear(&m);

    /* still a poison row when declared JSON and broken */
    row.payload_type_oid = OID_JSONB;
    row.f[OB_PAYLOAD] = fld("{broken");
    build_fails(&o, &row, NULL, 0, "not valid json");
}

static void test_debezium_tombstone_blank_text(void **state)
{
    envelope_opts o = {.format = ENVELOPE_FORMAT_DEBEZIUM, .topic_tmpl = DEFAULT_TOPIC};
    outbox_row row = base_row();
    envelope_msg m = {0};

    (void)state;
    row.payload_type_oid = OID_TEXT;
    row.f[OB_PAYLOAD] = fld("  \t ");
    build(&o, &row, NULL, 0, &m);
    assert_non_null(m.value); /* knob off: the blank text is the value */
    assert_string_equal(m.value, "  \t ");
    envelope_msg_clear(&m);

    o.tombstone_on_empty = true;
    build(&o, &row, NULL, 0, &m);
    assert_null(m.value);
    assert_int_equal(m.valuelen, 0);
    assert_string_equal(m.key, "42");
    assert_header(&m, "id", UUID);
    envelope_msg_clear(&m);

    /* a real payload is never a tombstone */
    row.f[OB_PAYLOAD] = fld("{}");
    build(&o, &row, NULL, 0, &m);
    assert_string_equal(m.value, "{}");
    envelope_msg_clear(&m);

    /* bytea is never blank (Debezium: only strings trim to empty) */
    row.payload_type_oid = OID_BYTEA;
    row.f[OB_PAYLOAD] = fld("\\x");
    build(&o, &row, NULL, 0, &m);
    assert_non_null(m.value);
    assert_int_equal(m.valuelen, 0);
    envelope_msg_clear(&m);
}

static void test_cloudevents_payload_kinds(void **state)
{
    envelope_opts o = {.format = ENVELOPE_FORMAT_CLOUDEVENTS, .topic_tmpl = DEFAULT_TOPIC};
    outbox_row row = base_row();
    envelope_msg m = {0};
    json_t *j;

    (void)state;
    build(&o, &row, NULL, 0, &m);
    j = value_json(&m);
    assert_string_equal(json_string_value(json_object_get(j, "specversion")), "1.0");
    assert_string_equal(json_string_value(json_object_get(j, "id")), UUID);
    assert_string_equal(json_string_value(json_object_get(j, "subject")), "42");
    assert_string_equal(json_string_value(json_object_get(j, "time")),
                        "2026-11-23T18:14:13.123456Z");
    assert_string_equal(json_string_value(json_object_get(j, "traceparent")), TP);
    assert_string_equal(json_string_value(json_object_get(j, "datacontenttype")),
                        "application/json");
    assert_true(json_is_object(json_object_get(j, "data")));
    assert_header(&m, "content-type", "application/cloudevents+json");
    assert_header(&m, "traceparent", TP);
    json_decref(j);
    envelope_msg_clear(&m);

    row.payload_type_oid = OID_TEXT;
    row.f[OB_PAYLOAD] = fld("plain words");
    build(&o, &row, NULL, 0, &m);
    j = value_json(&m);
    assert_string_equal(json_string_value(json_object_get(j, "data")), "plain words");
    assert_string_equal(json_string_value(json_object_get(j, "datacontenttype")),
                        "text/plain; charset=utf-8");
    json_decref(j);
    envelope_msg_clear(&m);

    row.payload_type_oid = OID_BYTEA;
    row.f[OB_PAYLOAD] = fld("\\x00ff");
    build(&o, &row, NULL, 0, &m);
    j = value_json(&m);
    assert_null(json_object_get(j, "data"));
    assert_string_equal(json_string_value(json_object_get(j, "data_base64")), "AP8=");
    assert_string_equal(json_string_value(json_object_get(j, "datacontenttype")),
                        "application/octet-stream");
    json_decref(j);
    envelope_msg_clear(&m);

    /* no payload: no data, no datacontenttype */
    row.f[OB_PAYLOAD] = (outbox_field){0};
    build(&o, &row, NULL, 0, &m);
    j = value_json(&m);
    assert_null(json_object_get(j, "data"));
    assert_null(json_object_get(j, "datacontenttype"));
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_cloudevents_source_encoding(void **state)
{
    envelope_opts o = {.format = ENVELOPE_FORMAT_CLOUDEVENTS_BINARY, .topic_tmpl = DEFAULT_TOPIC};
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    char err[128];

    (void)state;
    src.db = "my db/x%";
    src.table = "Sales.\"Out Box\"";
    assert_int_equal(envelope_build_opts(&o, &row, NULL, 0, &src, &m, err, sizeof err), 0);
    assert_header(&m, "ce_source", "/outbox-relay/my%20db%2Fx%25/Sales.%22Out%20Box%22");
    assert_header(&m, "content-type", "application/json");
    assert_string_equal(m.value, "{\"total\": 42.5, \"orderId\": 42}");
    envelope_msg_clear(&m);

    /* binary mode, NULL payload: NULL value, no content-type */
    row.f[OB_PAYLOAD] = (outbox_field){0};
    assert_int_equal(envelope_build_opts(&o, &row, NULL, 0, &src, &m, err, sizeof err), 0);
    assert_null(m.value);
    assert_null(header(&m, "content-type"));
    assert_header(&m, "ce_id", UUID);
    envelope_msg_clear(&m);
}

static void test_message_timestamp(void **state)
{
    envelope_opts o = {.format = ENVELOPE_FORMAT_ENVELOPE, .topic_tmpl = DEFAULT_TOPIC};
    outbox_row row = base_row();
    envelope_msg m = {0};

    (void)state;
    build(&o, &row, NULL, 0, &m);
    assert_int_equal(m.timestamp_ms, 0);
    envelope_msg_clear(&m);

    o.timestamp = ENVELOPE_TS_EVENT; /* 2026-11-23T18:14:13.123456Z */
    build(&o, &row, NULL, 0, &m);
    assert_int_equal(m.timestamp_ms, INT64_C(1795457653123));
    envelope_msg_clear(&m);

    o.timestamp = ENVELOPE_TS_COMMIT; /* 2026-11-23T18:14:13.123999Z */
    build(&o, &row, NULL, 0, &m);
    assert_int_equal(m.timestamp_ms, INT64_C(1795457653123));
    envelope_msg_clear(&m);

    o.timestamp = ENVELOPE_TS_EVENT; /* an offset, and no column at all */
    row.f[OB_TIMESTAMP] = fld("2026-11-23 20:14:14.5+02");
    build(&o, &row, NULL, 0, &m);
    assert_int_equal(m.timestamp_ms, INT64_C(1795457654500));
    envelope_msg_clear(&m);
    row.f[OB_TIMESTAMP] = (outbox_field){0};
    build(&o, &row, NULL, 0, &m);
    assert_int_equal(m.timestamp_ms, INT64_C(1795457653123));
    envelope_msg_clear(&m);

    /* before 1970: left to the producer */
    row.f[OB_TIMESTAMP] = fld("1969-12-31 23:59:59+00");
    build(&o, &row, NULL, 0, &m);
    assert_int_equal(m.timestamp_ms, 0);
    envelope_msg_clear(&m);

    assert_int_equal(envelope_timestamp_parse("event", &o.timestamp), 0);
    assert_int_equal(o.timestamp, ENVELOPE_TS_EVENT);
    assert_int_equal(envelope_timestamp_parse("none", &o.timestamp), 0);
    assert_int_equal(o.timestamp, ENVELOPE_TS_NONE);
    assert_int_equal(envelope_timestamp_parse("commit", &o.timestamp), 0);
    assert_int_equal(o.timestamp, ENVELOPE_TS_COMMIT);
    assert_int_equal(envelope_timestamp_parse("now", &o.timestamp), -1);
    assert_int_equal(envelope_timestamp_parse(NULL, &o.timestamp), -1);
}

/* ---- --field ------------------------------------------------------------ */

static void test_field_parse(void **state)
{
    envelope_field f;
    char err[256];
    static const struct {
        const char *arg;
        const char *needle;
    } bad[] = {
        {"type", "no placement"},
        {"type:", "unknown placement"},
        {"type:headers", "unknown placement"},
        {"type:Header", "unknown placement"},
        {":header", "empty column"},
        {"type:header:", "empty name"},
        {"type:header:a:b", "may not contain"},
        {"ty\tpe:header", "control character"},
        {"type:envelope:\xff", "utf-8"},
        {"a123456789012345678901234567890123456789012345678901234567890123:header", "longer"},
    };

    (void)state;
    assert_int_equal(envelope_field_parse("type:header", &f, err, sizeof err), 0);
    assert_string_equal(f.column, "type");
    assert_string_equal(f.name, "type");
    assert_int_equal(f.placement, ENVELOPE_PLACE_HEADER);
    assert_int_equal(
        envelope_field_parse("correlation_id:envelope:correlationId", &f, err, sizeof err), 0);
    assert_string_equal(f.column, "correlation_id");
    assert_string_equal(f.name, "correlationId");
    assert_int_equal(f.placement, ENVELOPE_PLACE_ENVELOPE);
    assert_int_equal(envelope_field_parse("state:header:tracestate", &f, err, sizeof err), 0);
    assert_string_equal(f.name, "tracestate");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        memset(&f, 0x5a, sizeof f);
        assert_int_equal(envelope_field_parse(bad[i].arg, &f, err, sizeof err), -1);
        if (strstr(err, bad[i].needle) == NULL)
            fail_msg("\"%s\": error \"%s\" does not mention \"%s\"", bad[i].arg, err,
                     bad[i].needle);
    }
    assert_int_equal(envelope_field_parse(NULL, &f, err, sizeof err), -1);
}

static int opts_check(enum envelope_format fmt, const char *const *args, size_t n, bool tomb,
                      char *err, size_t errlen)
{
    envelope_field f[ENVELOPE_MAX_FIELDS + 2];
    envelope_opts o = {.format = fmt,
                       .topic_tmpl = DEFAULT_TOPIC,
                       .fields = f,
                       .nfields = n,
                       .tombstone_on_empty = tomb};

    assert_true(n <= ENVELOPE_MAX_FIELDS + 2);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(envelope_field_parse(args[i], &f[i], err, errlen), 0);
    return envelope_opts_check(&o, err, errlen);
}

static void want_check(enum envelope_format fmt, const char *const *args, size_t n, bool tomb,
                       const char *needle)
{
    char err[256] = "";
    int rc = opts_check(fmt, args, n, tomb, err, sizeof err);

    if (needle == NULL) {
        if (rc != 0)
            fail_msg("%s: unexpected error \"%s\"", envelope_format_name(fmt), err);
        return;
    }
    if (rc != -1)
        fail_msg("%s: accepted, expected an error about \"%s\"", envelope_format_name(fmt), needle);
    if (strstr(err, needle) == NULL)
        fail_msg("%s: error \"%s\" does not mention \"%s\"", envelope_format_name(fmt), err,
                 needle);
}

static void test_opts_check(void **state)
{
    const char *ok_hdr[] = {"corr:header:correlation-id", "state:header:tracestate"};
    const char *shadow[] = {"x:header:lsn"};
    const char *dup[] = {"a:header:h", "b:header:h"};
    const char *same_name_other_place[] = {"type:header:eventType", "type:envelope:eventType"};
    const char *dbz_payload[] = {"x:envelope:payload"};
    const char *ce_upper[] = {"x:envelope:eventType"};
    const char *ce_long[] = {"x:envelope:abcdefghijklmnopqrstu"};
    const char *ce_ok[] = {"x:envelope:abcdefghijklmnopqrst"};
    const char *ce_reserved[] = {"x:envelope:subject"};
    const char *ce_hdr_prefix[] = {"x:header:ce_foo"};
    const char *ce_bin_clash[] = {"x:envelope:foo", "y:header:ce_foo"};
    const char *many[ENVELOPE_MAX_FIELDS + 1];
    char names[ENVELOPE_MAX_FIELDS + 1][16];
    envelope_opts o = {.format = ENVELOPE_FORMAT_ENVELOPE};
    char err[256];

    (void)state;
    want_check(ENVELOPE_FORMAT_ENVELOPE, ok_hdr, 2, false, NULL);
    want_check(ENVELOPE_FORMAT_ENVELOPE, shadow, 1, false, "writes header \"lsn\"");
    want_check(ENVELOPE_FORMAT_DEBEZIUM, shadow, 1, false, NULL); /* debezium has no lsn */
    want_check(ENVELOPE_FORMAT_DEBEZIUM, dup, 2, false, "two fields");
    want_check(ENVELOPE_FORMAT_DEBEZIUM, same_name_other_place, 2, false, NULL);
    want_check(ENVELOPE_FORMAT_DEBEZIUM, dbz_payload, 1, false, "\"payload\"");
    want_check(ENVELOPE_FORMAT_ENVELOPE, dbz_payload, 1, false, NULL); /* inside "fields" */
    want_check(ENVELOPE_FORMAT_CLOUDEVENTS, ce_upper, 1, false, "a-z 0-9");
    want_check(ENVELOPE_FORMAT_CLOUDEVENTS, ce_long, 1, false, "1 to 20");
    want_check(ENVELOPE_FORMAT_CLOUDEVENTS, ce_ok, 1, false, NULL);
    want_check(ENVELOPE_FORMAT_CLOUDEVENTS_BINARY, ce_reserved, 1, false, "relay sets");
    want_check(ENVELOPE_FORMAT_CLOUDEVENTS_BINARY, ce_hdr_prefix, 1, false, "ce_ headers");
    want_check(ENVELOPE_FORMAT_CLOUDEVENTS, ce_hdr_prefix, 1, false, NULL);
    want_check(ENVELOPE_FORMAT_CLOUDEVENTS_BINARY, ce_bin_clash, 2, false, "ce_ headers");
    /* tombstones: debezium only */
    want_check(ENVELOPE_FORMAT_DEBEZIUM, NULL, 0, true, NULL);
    want_check(ENVELOPE_FORMAT_ENVELOPE, NULL, 0, true, "debezium");
    want_check(ENVELOPE_FORMAT_CLOUDEVENTS, NULL, 0, true, "debezium");
    /* a cap on fields */
    for (int i = 0; i <= ENVELOPE_MAX_FIELDS; i++) {
        snprintf(names[i], sizeof names[i], "c%d:header", i);
        many[i] = names[i];
    }
    want_check(ENVELOPE_FORMAT_ENVELOPE, many, ENVELOPE_MAX_FIELDS, false, NULL);
    want_check(ENVELOPE_FORMAT_ENVELOPE, many, ENVELOPE_MAX_FIELDS + 1, false, "too many");
    /* the topic template and the enums */
    o.topic_tmpl = "bad{placeholder}";
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "placeholder"));
    o.topic_tmpl = DEFAULT_TOPIC;
    o.format = (enum envelope_format)9;
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), -1);
    o.format = ENVELOPE_FORMAT_ENVELOPE;
    o.timestamp = (enum envelope_timestamp)7;
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), -1);
    assert_int_equal(envelope_opts_check(NULL, err, sizeof err), -1);
}

/* The relation and tuple the resolve tests use. */
static relcache_attr r_atts[] = {
    {.name = "id", .type_oid = OID_TEXT},      {.name = "corr", .type_oid = OID_TEXT},
    {.name = "n", .type_oid = OID_INT4},       {.name = "ok", .type_oid = OID_BOOL},
    {.name = "doc", .type_oid = OID_JSONB},    {.name = "num", .type_oid = OID_NUMERIC},
    {.name = "gone", .type_oid = OID_TEXT},    {.name = "f", .type_oid = OID_FLOAT8},
    {.name = "nothing", .type_oid = OID_TEXT},
};

static void test_fields_resolve(void **state)
{
    pgo_value cols[] = {
        {.kind = 't', .len = 2, .data = "id"},
        {.kind = 't', .len = 4, .data = "c-77"},
        {.kind = 't', .len = 3, .data = "-12"},
        {.kind = 't', .len = 1, .data = "t"},
        {.kind = 't', .len = 9, .data = "{\"a\": [1]}"},
        {.kind = 't', .len = 3, .data = "NaN"},
        {.kind = 'n'},
        {.kind = 't', .len = 7, .data = "1.5e+30"},
        {.kind = 't', .len = 0, .data = NULL},
    };
    relcache_entry rel = {.qualname = "public.outbox", .natts = 9, .atts = r_atts};
    pgo_tuple tuple = {.ncols = 9, .cols = cols};
    const char *args[] = {"corr:header:correlation-id",
                          "corr:envelope:correlation_id",
                          "n:envelope",
                          "ok:envelope",
                          "doc:envelope",
                          "num:envelope",
                          "gone:envelope",
                          "gone:header",
                          "f:envelope",
                          "absent:envelope",
                          "nothing:envelope"};
    enum { NARGS = sizeof args / sizeof args[0] };
    envelope_field f[NARGS];
    envelope_extra x[NARGS];
    envelope_opts o = {.format = ENVELOPE_FORMAT_ENVELOPE,
                       .topic_tmpl = DEFAULT_TOPIC,
                       .fields = f,
                       .nfields = NARGS};
    outbox_row row = base_row();
    envelope_msg m = {0};
    size_t nx = 99;
    char err[256];
    json_t *j;
    const char *fields_json;

    (void)state;
    cols[4].len = (uint32_t)strlen(cols[4].data);
    for (size_t i = 0; i < NARGS; i++)
        assert_int_equal(envelope_field_parse(args[i], &f[i], err, sizeof err), 0);
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), 0);
    assert_int_equal(envelope_fields_resolve(f, NARGS, &rel, &tuple, x, &nx, err, sizeof err), 0);
    assert_int_equal(nx, NARGS - 1); /* "absent" has no column: omitted */
    for (size_t i = 0; i < nx; i++)
        assert_string_not_equal(x[i].field->column, "absent");

    build(&o, &row, x, nx, &m);
    /* envelope format: typed values in "fields", in --field order */
    fields_json = strstr(m.value, ",\"fields\":");
    assert_non_null(fields_json);
    assert_string_equal(fields_json,
                        ",\"fields\":{\"correlation_id\":\"c-77\",\"n\":-12,\"ok\":true,"
                        "\"doc\":{\"a\": [1]},\"num\":\"NaN\",\"gone\":null,\"f\":1.5e+30,"
                        "\"nothing\":\"\"}}");
    j = value_json(&m);
    json_decref(j);
    assert_header(&m, "correlation-id", "c-77");
    assert_null(header(&m, "gone")); /* NULL: no header */
    envelope_msg_clear(&m);

    /* debezium: the same fields wrap the payload */
    o.format = ENVELOPE_FORMAT_DEBEZIUM;
    build(&o, &row, x, nx, &m);
    assert_string_equal(m.value,
                        "{\"payload\":{\"total\": 42.5, \"orderId\": 42},\"correlation_id\":"
                        "\"c-77\",\"n\":-12,\"ok\":true,\"doc\":{\"a\": [1]},\"num\":\"NaN\","
                        "\"gone\":null,\"f\":1.5e+30,\"nothing\":\"\"}");
    assert_header(&m, "correlation-id", "c-77");
    envelope_msg_clear(&m);

    /* debezium with fields and a NULL payload, knob off: {"payload":null,...} */
    row.f[OB_PAYLOAD] = (outbox_field){0};
    build(&o, &row, &x[2], 1, &m); /* n:envelope */
    assert_string_equal(m.value, "{\"payload\":null,\"n\":-12}");
    envelope_msg_clear(&m);
    o.tombstone_on_empty = true;
    build(&o, &row, x, 2, &m);
    assert_null(m.value);
    envelope_msg_clear(&m);

    /* binary values are refused, not passed on as text */
    cols[1].kind = 'b';
    assert_int_equal(envelope_fields_resolve(f, NARGS, &rel, &tuple, x, &nx, err, sizeof err), -1);
    assert_non_null(strstr(err, "corr"));
    cols[1].kind = 't';

    /* a tuple narrower than the relation: the missing column is omitted */
    tuple.ncols = 3;
    assert_int_equal(envelope_fields_resolve(f, NARGS, &rel, &tuple, x, &nx, err, sizeof err), 0);
    assert_int_equal(nx, 3); /* corr twice, n */
    assert_int_equal(envelope_fields_resolve(f, NARGS, NULL, &tuple, x, &nx, err, sizeof err), 0);
    assert_int_equal(nx, 0);
}

static void test_fields_cloudevents(void **state)
{
    relcache_entry rel = {.qualname = "public.outbox", .natts = 9, .atts = r_atts};
    pgo_value cols[9] = {{.kind = 'n'},
                         {.kind = 't', .len = 4, .data = "c-77"},
                         {.kind = 't', .len = 3, .data = "-12"},
                         {.kind = 'n'},
                         {.kind = 'n'},
                         {.kind = 'n'},
                         {.kind = 'n'},
                         {.kind = 'n'},
                         {.kind = 'n'}};
    pgo_tuple tuple = {.ncols = 9, .cols = cols};
    envelope_field f[3];
    envelope_extra x[3];
    envelope_opts o = {.format = ENVELOPE_FORMAT_CLOUDEVENTS,
                       .topic_tmpl = DEFAULT_TOPIC,
                       .fields = f,
                       .nfields = 3};
    outbox_row row = base_row();
    envelope_msg m = {0};
    size_t nx;
    char err[256];
    json_t *j;

    (void)state;
    assert_int_equal(envelope_field_parse("corr:envelope:correlationid", &f[0], err, sizeof err),
                     0);
    assert_int_equal(envelope_field_parse("n:envelope:seqno", &f[1], err, sizeof err), 0);
    assert_int_equal(envelope_field_parse("corr:header:correlation-id", &f[2], err, sizeof err), 0);
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), 0);
    assert_int_equal(envelope_fields_resolve(f, 3, &rel, &tuple, x, &nx, err, sizeof err), 0);
    assert_int_equal(nx, 3);
    build(&o, &row, x, nx, &m);
    j = value_json(&m);
    /* extension attributes are strings, whatever the column type */
    assert_string_equal(json_string_value(json_object_get(j, "correlationid")), "c-77");
    assert_string_equal(json_string_value(json_object_get(j, "seqno")), "-12");
    assert_header(&m, "correlation-id", "c-77");
    json_decref(j);
    envelope_msg_clear(&m);

    o.format = ENVELOPE_FORMAT_CLOUDEVENTS_BINARY;
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), 0);
    build(&o, &row, x, nx, &m);
    assert_header(&m, "ce_correlationid", "c-77");
    assert_header(&m, "ce_seqno", "-12");
    assert_header(&m, "correlation-id", "c-77");
    envelope_msg_clear(&m);
}

static void test_field_values_poison(void **state)
{
    envelope_field f;
    envelope_extra x = {.field = &f, .data = "{nope", .len = 5, .type_oid = OID_JSONB};
    envelope_opts o = {.format = ENVELOPE_FORMAT_ENVELOPE, .topic_tmpl = DEFAULT_TOPIC};
    outbox_row row = base_row();
    char err[64];

    (void)state;
    assert_int_equal(envelope_field_parse("doc:envelope", &f, err, sizeof err), 0);
    build_fails(&o, &row, &x, 1, "not valid json");
    x = (envelope_extra){.field = &f, .data = "caf\xe9", .len = 4, .type_oid = OID_TEXT};
    build_fails(&o, &row, &x, 1, "utf-8");
    build_fails(&o, &row, NULL, 1, "missing argument");
}

/* ---- traceparent -------------------------------------------------------- */

static void test_traceparent_validation(void **state)
{
    static const char *const good[] = {
        TP,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
        "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future-part",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };
    static const char *const bad[] = {
        "",
        "00",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",  /* upper-case flags */
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  /* dash misplaced */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* v00 with a tail */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",   /* short flags */
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  /* short version */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",  /* not hex */
        "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* future, no dash */
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* leading blank */
        "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!envelope_traceparent_valid(good[i], strlen(good[i])))
            fail_msg("refused a valid traceparent \"%s\"", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (envelope_traceparent_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted a malformed traceparent \"%s\"", bad[i]);
    assert_false(envelope_traceparent_valid(NULL, 55));
    /* the length is what counts, not a NUL */
    assert_false(envelope_traceparent_valid(TP, 54));
}

static void test_traceparent_dropped(void **state)
{
    static const enum envelope_format fmts[] = {ENVELOPE_FORMAT_ENVELOPE, ENVELOPE_FORMAT_DEBEZIUM,
                                                ENVELOPE_FORMAT_CLOUDEVENTS,
                                                ENVELOPE_FORMAT_CLOUDEVENTS_BINARY};
    outbox_row row = base_row();

    (void)state;
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        envelope_opts o = {.format = fmts[i], .topic_tmpl = DEFAULT_TOPIC};
        envelope_msg m = {0};

        row.f[OB_TRACEPARENT] = fld("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01");
        build(&o, &row, NULL, 0, &m);
        assert_true(m.dropped_traceparent);
        assert_null(header(&m, "traceparent"));
        assert_null(header(&m, "ce_traceparent"));
        assert_null(strstr(m.value, "traceparent"));
        assert_null(strstr(m.value, "4BF92F"));
        envelope_msg_clear(&m);

        /* invalid UTF-8 is malformed too: dropped, not a poison row */
        row.f[OB_TRACEPARENT] = fld("caf\xe9");
        build(&o, &row, NULL, 0, &m);
        assert_true(m.dropped_traceparent);
        envelope_msg_clear(&m);

        /* absent is not dropped */
        row.f[OB_TRACEPARENT] = (outbox_field){0};
        build(&o, &row, NULL, 0, &m);
        assert_false(m.dropped_traceparent);
        envelope_msg_clear(&m);

        row.f[OB_TRACEPARENT] = fld(TP);
        build(&o, &row, NULL, 0, &m);
        assert_false(m.dropped_traceparent);
        assert_header(&m, "traceparent", TP);
        envelope_msg_clear(&m);
    }
}

/* ---- the JSON writer against jansson ------------------------------------ */

/* Every string the writer escapes comes out as jansson's compact dump. */
static void test_escaping_matches_jansson(void **state)
{
    envelope_opts o = {.format = ENVELOPE_FORMAT_ENVELOPE, .topic_tmpl = "t"};
    outbox_row row = base_row();
    char s[8];
    static const char *const utf8[] = {"caf\xc3\xa9", "\xe2\x80\xa8", "\xf0\x9f\x98\x80",
                                       "\x7f",        "a/b",          "\"\\\""};
    uint32_t rng = 1;

    (void)state;
    for (int pass = 0; pass < 128 + 6 + 200; pass++) {
        envelope_msg m = {0};
        json_t *js;
        char *want, *got;
        size_t len;
        char rnd[24];

        if (pass < 128) {
            s[0] = (char)(pass == 0 ? 'x' : pass);
            s[1] = (char)pass;
            len = pass == 0 ? 1 : 2;
            row.f[OB_ID] = (outbox_field){.data = s, .len = len, .present = true};
        } else if (pass < 134) {
            row.f[OB_ID] = fld(utf8[pass - 128]);
        } else {
            for (size_t k = 0; k < sizeof rnd; k++) {
                rng = rng * 1103515245u + 12345u;
                rnd[k] = (char)((rng >> 16) % 0x7f + 1);
            }
            row.f[OB_ID] = (outbox_field){.data = rnd, .len = sizeof rnd, .present = true};
        }
        build(&o, &row, NULL, 0, &m);
        js = json_stringn(row.f[OB_ID].data, row.f[OB_ID].len);
        assert_non_null(js);
        want = json_dumps(js, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_non_null(want);
        got = m.value + strlen("{\"id\":");
        if (strncmp(got, want, strlen(want)) != 0 || got[strlen(want)] != ',')
            fail_msg("pass %d: writer %.*s, jansson %s", pass, (int)strlen(want), got, want);
        free(want);
        json_decref(js);
        envelope_msg_clear(&m);
    }
}

/*
 * The writer, the JSON check and the UTF-8 check scan eight bytes at a
 * time: put each special byte at every position of strings of every length
 * up to five words, so each lands first, last and in the middle of a word
 * and of the tail, and compare with jansson.
 */
static void test_scans_every_position(void **state)
{
    static const char *const specials[] = {"\x01", "\x1f", "\"",      "\\",       "\x7f",
                                           "\n",   "\t",   "\x80",    "\xc3\xa9", "\xe2\x80\xa8",
                                           "\xff", "\\n",  "\\u00e9", "\\x",      " "};
    envelope_opts o = {.format = ENVELOPE_FORMAT_ENVELOPE, .topic_tmpl = "t"};
    char text[64], doc[72];

    (void)state;
    for (size_t len = 1; len <= 41; len++) {
        for (size_t k = 0; k < len; k++) {
            for (size_t c = 0; c < sizeof specials / sizeof specials[0]; c++) {
                size_t sl = strlen(specials[c]), n = len + sl - 1;
                outbox_row row = base_row();
                envelope_source src = base_src();
                envelope_msg m = {0};
                json_t *js, *ref, *v;
                char *want, err[256] = "";
                bool utf8, got_ok;

                memset(text, 'a', len);
                memcpy(text + k, specials[c], sl);
                memset(text + k + sl, 'b', len - k - 1);
                /* 1. the id, escaped as jansson escapes it (refused when not UTF-8) */
                row.f[OB_ID] = (outbox_field){.data = text, .len = n, .present = true};
                js = json_stringn(text, n);
                utf8 = js != NULL;
                got_ok = envelope_build_opts(&o, &row, NULL, 0, &src, &m, err, sizeof err) == 0;
                if (got_ok != utf8)
                    fail_msg("len %zu at %zu special %zu: built %d, jansson utf-8 %d (%s)", len, k,
                             c, got_ok, utf8, err);
                if (utf8) {
                    want = json_dumps(js, JSON_COMPACT | JSON_ENCODE_ANY);
                    assert_non_null(want);
                    if (strncmp(m.value + strlen("{\"id\":"), want, strlen(want)) != 0 ||
                        m.value[strlen("{\"id\":") + strlen(want)] != ',')
                        fail_msg("len %zu at %zu special %zu: writer %s, jansson %s", len, k, c,
                                 m.value, want);
                    free(want);
                }
                json_decref(js);
                envelope_msg_clear(&m);

                /* 2. the same bytes as a JSON string payload: a json column
                 * refuses what jansson refuses, a text column quotes it */
                doc[0] = '"';
                memcpy(doc + 1, text, n);
                doc[n + 1] = '"';
                ref = json_loadb(doc, n + 2, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
                row = base_row();
                row.f[OB_PAYLOAD] = (outbox_field){.data = doc, .len = n + 2, .present = true};
                row.payload_type_oid = OID_JSON;
                got_ok = envelope_build_opts(&o, &row, NULL, 0, &src, &m, err, sizeof err) == 0;
                if (got_ok != (ref != NULL))
                    fail_msg("payload len %zu at %zu special %zu: accepted %d, jansson %d", len, k,
                             c, got_ok, ref != NULL);
                if (ref != NULL) {
                    v = value_json(&m);
                    if (!json_equal(json_object_get(v, "payload"), ref))
                        fail_msg("payload len %zu at %zu special %zu: not embedded", len, k, c);
                    json_decref(v);
                }
                json_decref(ref);
                envelope_msg_clear(&m);
            }
        }
    }
}

/* ---- out of memory ------------------------------------------------------ */

static long alloc_budget = -1;

static void *budget_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

/* Every format fails cleanly at every allocation the writer makes. */
static void test_out_of_memory_formats(void **state)
{
    static const enum envelope_format fmts[] = {ENVELOPE_FORMAT_ENVELOPE, ENVELOPE_FORMAT_DEBEZIUM,
                                                ENVELOPE_FORMAT_CLOUDEVENTS,
                                                ENVELOPE_FORMAT_CLOUDEVENTS_BINARY};
    envelope_field f;
    envelope_extra x = {.field = &f, .data = "c-1", .len = 3, .type_oid = OID_TEXT};
    envelope_source src = base_src();
    outbox_row row = base_row();
    char err[128];

    (void)state;
    assert_int_equal(envelope_field_parse("corr:envelope:corr", &f, err, sizeof err), 0);
    json_set_alloc_funcs(budget_malloc, free);
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        envelope_opts o = {.format = fmts[i], .topic_tmpl = DEFAULT_TOPIC};
        bool succeeded = false;

        for (long n = 0; n < 1000 && !succeeded; n++) {
            envelope_msg m;
            int rc;

            memset(&m, 0x5a, sizeof m);
            alloc_budget = n;
            rc = envelope_build_opts(&o, &row, &x, 1, &src, &m, err, sizeof err);
            alloc_budget = -1;
            if (rc == 0) {
                succeeded = true;
                assert_true(n > 0);
                envelope_msg_clear(&m);
            } else {
                assert_int_equal(errno, ENOMEM);
                assert_non_null(strstr(err, "out of memory"));
            }
        }
        assert_true(succeeded);
    }
    json_set_alloc_funcs(malloc, free);
}

/* ---- the JSON Schema ---------------------------------------------------- */

/*
 * Validate JSON documents (one per line in docs) against
 * schema/envelope.schema.json with python3-jsonschema.  Returns the number
 * of invalid documents, or -1 when the validator is not installed.
 */
static int schema_invalid_count(const char *docs_path, bool quiet)
{
    char cmd[2048];
    FILE *p;
    int invalid = -2;

    if (system("python3 -c 'import jsonschema' >/dev/null 2>&1") != 0)
        return -1;
    snprintf(cmd, sizeof cmd,
             "python3 '%s/tests/fixtures/formats/validate_envelopes.py' "
             "'%s/schema/envelope.schema.json' '%s'%s",
             root(), root(), docs_path, quiet ? " 2>/dev/null" : "");
    p = popen(cmd, "r");
    assert_non_null(p);
    if (fscanf(p, "invalid %d", &invalid) != 1)
        invalid = -2;
    assert_int_equal(pclose(p) == -1, 0);
    if (invalid < 0)
        fail_msg("validator gave no count (command: %s)", cmd);
    return invalid;
}

static void write_doc(FILE *f, const char *json)
{
    fputs(json, f);
    fputc('\n', f);
}

static void test_schema_accepts_envelopes(void **state)
{
    char path[] = "/tmp/obx-envelopes-XXXXXX";
    int fd = mkstemp(path);
    FILE *f;
    envelope_opts o = {.format = ENVELOPE_FORMAT_ENVELOPE, .topic_tmpl = DEFAULT_TOPIC};
    envelope_field fld_corr;
    envelope_extra x = {.field = &fld_corr, .data = "c-1", .len = 3, .type_oid = OID_TEXT};
    envelope_source src = base_src();
    char err[128];
    int n = 0, invalid;

    (void)state;
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(
        envelope_field_parse("corr:envelope:correlation_id", &fld_corr, err, sizeof err), 0);
    for (int v = 0; v < 8; v++) {
        outbox_row row = base_row();
        envelope_msg m = {0};

        switch (v) {
        case 1:
            row.f[OB_PAYLOAD] = (outbox_field){0};
            break;
        case 2:
            row.payload_type_oid = OID_BYTEA;
            row.f[OB_PAYLOAD] = fld("\\x0102");
            break;
        case 3:
            row.payload_type_oid = OID_TEXT;
            row.f[OB_PAYLOAD] = fld("just text");
            break;
        case 4:
            row.f[OB_TRACEPARENT] = (outbox_field){0};
            break;
        case 5:
            row.f[OB_TIMESTAMP] = (outbox_field){0};
            break;
        case 6:
            src.lsn = UINT64_C(0xFFFFFFFFFFFFFFFF);
            break;
        default:
            break;
        }
        if (envelope_build_opts(&o, &row, &x, v == 7 ? 1 : 0, &src, &m, err, sizeof err) != 0)
            fail_msg("variant %d: %s", v, err);
        write_doc(f, m.value);
        envelope_msg_clear(&m);
        n++;
    }
    assert_int_equal(fclose(f), 0);
    invalid = schema_invalid_count(path, false);
    unlink(path);
    if (invalid == -1)
        skip(); /* python3-jsonschema not installed */
    assert_int_equal(invalid, 0);
    assert_int_equal(n, 8);
}

/* The schema is strict: each of these breaks the contract and must fail. */
static void test_schema_rejects_broken_envelopes(void **state)
{
    static const char *const broken[] = {
        /* missing id */
        "{\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"1\","
        "\"occurred_at\":\"2026-11-23T18:14:13.123456Z\",\"payload\":null,\"source\":"
        "{\"lsn\":\"0/1\",\"commit_lsn\":\"0/2\",\"seq\":0,\"xid\":1,"
        "\"commit_time\":\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\",\"slot\":\"s\"}}",
        /* lsn not X/X */
        "{\"id\":\"i\",\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"1\","
        "\"occurred_at\":\"2026-11-23T18:14:13.123456Z\",\"payload\":null,\"source\":"
        "{\"lsn\":\"16B3748\",\"commit_lsn\":\"0/2\",\"seq\":0,\"xid\":1,"
        "\"commit_time\":\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\",\"slot\":\"s\"}}",
        /* occurred_at not RFC 3339 */
        "{\"id\":\"i\",\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"1\","
        "\"occurred_at\":\"2026-11-23 18:14:13\",\"payload\":null,\"source\":"
        "{\"lsn\":\"0/1\",\"commit_lsn\":\"0/2\",\"seq\":0,\"xid\":1,"
        "\"commit_time\":\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\",\"slot\":\"s\"}}",
        /* an unknown top-level key */
        "{\"id\":\"i\",\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"1\","
        "\"occurred_at\":\"2026-11-23T18:14:13Z\",\"payload\":null,\"source\":"
        "{\"lsn\":\"0/1\",\"commit_lsn\":\"0/2\",\"seq\":0,\"xid\":1,"
        "\"commit_time\":\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\",\"slot\":\"s\"},"
        "\"extra\":1}",
        /* a negative seq */
        "{\"id\":\"i\",\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"1\","
        "\"occurred_at\":\"2026-11-23T18:14:13Z\",\"payload\":null,\"source\":"
        "{\"lsn\":\"0/1\",\"commit_lsn\":\"0/2\",\"seq\":-1,\"xid\":1,"
        "\"commit_time\":\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\",\"slot\":\"s\"}}",
        /* a malformed traceparent */
        "{\"id\":\"i\",\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"1\","
        "\"occurred_at\":\"2026-11-23T18:14:13Z\",\"payload\":null,\"source\":"
        "{\"lsn\":\"0/1\",\"commit_lsn\":\"0/2\",\"seq\":0,\"xid\":1,"
        "\"commit_time\":\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\",\"slot\":\"s\"},"
        "\"trace\":{\"traceparent\":\"00-xyz\"}}",
        /* an empty aggregate id */
        "{\"id\":\"i\",\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"\","
        "\"occurred_at\":\"2026-11-23T18:14:13Z\",\"payload\":null,\"source\":"
        "{\"lsn\":\"0/1\",\"commit_lsn\":\"0/2\",\"seq\":0,\"xid\":1,"
        "\"commit_time\":\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\",\"slot\":\"s\"}}",
        /* source without slot */
        "{\"id\":\"i\",\"type\":\"T\",\"aggregate_type\":\"a\",\"aggregate_id\":\"1\","
        "\"occurred_at\":\"2026-11-23T18:14:13Z\",\"payload\":null,\"source\":"
        "{\"lsn\":\"0/1\",\"commit_lsn\":\"0/2\",\"seq\":0,\"xid\":1,"
        "\"commit_time\":\"2026-11-23T18:14:13Z\",\"db\":\"d\",\"table\":\"t\"}}",
    };
    enum { NBROKEN = sizeof broken / sizeof broken[0] };

    (void)state;
    /* each alone, so one invalid document cannot hide the others */
    for (size_t i = 0; i < NBROKEN; i++) {
        char path[] = "/tmp/obx-envelopes-XXXXXX";
        int fd = mkstemp(path), invalid;
        FILE *f;

        assert_true(fd >= 0);
        f = fdopen(fd, "w");
        assert_non_null(f);
        write_doc(f, broken[i]);
        assert_int_equal(fclose(f), 0);
        invalid = schema_invalid_count(path, true);
        unlink(path);
        if (invalid == -1)
            skip();
        if (invalid != 1)
            fail_msg("schema accepted broken envelope %zu: %s", i, broken[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_fixture, "envelope-design"),
        cmocka_unit_test_prestate(test_fixture, "debezium-order"),
        cmocka_unit_test_prestate(test_fixture, "debezium-additional"),
        cmocka_unit_test_prestate(test_fixture, "debezium-tombstone"),
        cmocka_unit_test_prestate(test_fixture, "cloudevents-structured"),
        cmocka_unit_test_prestate(test_fixture, "cloudevents-binary"),
        cmocka_unit_test(test_debezium_bare_payloads),
        cmocka_unit_test(test_debezium_tombstone_blank_text),
        cmocka_unit_test(test_cloudevents_payload_kinds),
        cmocka_unit_test(test_cloudevents_source_encoding),
        cmocka_unit_test(test_message_timestamp),
        cmocka_unit_test(test_field_parse),
        cmocka_unit_test(test_opts_check),
        cmocka_unit_test(test_fields_resolve),
        cmocka_unit_test(test_fields_cloudevents),
        cmocka_unit_test(test_field_values_poison),
        cmocka_unit_test(test_traceparent_validation),
        cmocka_unit_test(test_traceparent_dropped),
        cmocka_unit_test(test_escaping_matches_jansson),
        cmocka_unit_test(test_scans_every_position),
        cmocka_unit_test(test_out_of_memory_formats),
        cmocka_unit_test(test_schema_accepts_envelopes),
        cmocka_unit_test(test_schema_rejects_broken_envelopes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
