#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "schema/envelope.h"

#define DEFAULT_TOPIC "outbox.event.{aggregate_type}"
#define TRACEPARENT "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#define UUID "6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a"
/* 2026-11-23T18:14:13.123999Z in PostgreSQL epoch microseconds. */
#define COMMIT_TS INT64_C(848772853123999)

#define OID_BYTEA 17
#define OID_INT4 23
#define OID_TEXT 25
#define OID_JSON 114
#define OID_VARCHAR 1043
#define OID_JSONB 3802

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
    r.f[OB_TRACEPARENT] = fld(TRACEPARENT);
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

static bool is_zeroed(const envelope_msg *m)
{
    envelope_msg z;

    memset(&z, 0, sizeof z);
    return memcmp(m, &z, sizeof z) == 0;
}

/* Build and expect success; the value must be one valid JSON object. */
static json_t *build_ok_flags(const outbox_row *row, const envelope_source *src, const char *tmpl,
                              envelope_msg *m, size_t flags)
{
    char err[256] = "";
    json_error_t jerr;
    json_t *j;
    int rc = envelope_build(ENVELOPE_FORMAT_ENVELOPE, tmpl, row, src, m, err, sizeof err);

    if (rc != 0)
        fail_msg("envelope_build failed: %s", err);
    assert_non_null(m->value);
    assert_int_equal(strlen(m->value), m->valuelen);
    j = json_loadb(m->value, m->valuelen, flags, &jerr);
    if (j == NULL)
        fail_msg("value is not JSON (%s): %s", jerr.text, m->value);
    assert_true(json_is_object(j));
    return j;
}

static json_t *build_ok(const outbox_row *row, const envelope_source *src, const char *tmpl,
                        envelope_msg *m)
{
    return build_ok_flags(row, src, tmpl, m, JSON_ALLOW_NUL);
}

static void build_fails_src(const outbox_row *row, const envelope_source *src, const char *tmpl,
                            const char *needle)
{
    envelope_msg m;
    char err[256] = "";

    memset(&m, 0x5a, sizeof m); /* garbage in: must come back zeroed */
    errno = ENOMEM;
    assert_int_equal(envelope_build(ENVELOPE_FORMAT_ENVELOPE, tmpl, row, src, &m, err, sizeof err),
                     -1);
    assert_int_equal(errno, EINVAL); /* the row's fault, not memory */
    assert_true(is_zeroed(&m));
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void build_fails(const outbox_row *row, const char *tmpl, const char *needle)
{
    envelope_source src = base_src();

    build_fails_src(row, &src, tmpl, needle);
}

/* Whether text is acceptable as a non-JSON text payload (valid UTF-8). */
static bool utf8_ok_for_text(const char *text)
{
    json_t *j = json_string(text);
    bool ok = j != NULL;

    json_decref(j);
    return ok;
}

static const envelope_header *header(const envelope_msg *m, const char *name)
{
    const envelope_header *found = NULL;

    for (int i = 0; i < m->nheaders; i++) {
        if (strcmp(m->headers[i].name, name) == 0) {
            assert_null(found); /* no duplicates */
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
    assert_int_equal(h->len, strlen(value));
    assert_memory_equal(h->value, value, h->len);
}

static const char *jstr(json_t *obj, const char *path1, const char *path2)
{
    json_t *v = json_object_get(obj, path1);

    if (path2 != NULL)
        v = json_object_get(v, path2);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* ---- tests -------------------------------------------------------------- */

static void test_format_parse(void **state)
{
    enum envelope_format f = (enum envelope_format)99;

    (void)state;
    assert_int_equal(envelope_format_parse("envelope", &f), 0);
    assert_int_equal(f, ENVELOPE_FORMAT_ENVELOPE);
    assert_int_equal(envelope_format_parse("debezium", &f), 0);
    assert_int_equal(f, ENVELOPE_FORMAT_DEBEZIUM);
    assert_int_equal(envelope_format_parse("cloudevents", &f), 0);
    assert_int_equal(f, ENVELOPE_FORMAT_CLOUDEVENTS);
    assert_int_equal(envelope_format_parse("cloudevents-binary", &f), 0);
    assert_int_equal(f, ENVELOPE_FORMAT_CLOUDEVENTS_BINARY);
    assert_string_equal(envelope_format_name(ENVELOPE_FORMAT_CLOUDEVENTS_BINARY),
                        "cloudevents-binary");
    assert_string_equal(envelope_format_name((enum envelope_format)42), "?");
    assert_int_equal(envelope_format_parse("cloudevents-structured", &f), -1);
    assert_int_equal(envelope_format_parse("Debezium", &f), -1);
    assert_int_equal(envelope_format_parse("Envelope", &f), -1);
    assert_int_equal(envelope_format_parse("", &f), -1);
    assert_int_equal(envelope_format_parse(NULL, &f), -1);
}

static void test_exact_value(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j;
    const char *want =
        "{\"id\":\"" UUID "\",\"type\":\"OrderPlaced\",\"aggregate_type\":\"order\","
        "\"aggregate_id\":\"42\",\"occurred_at\":\"2026-11-23T18:14:13.123456Z\","
        "\"payload\":{\"total\": 42.5, \"orderId\": 42},"
        "\"source\":{\"lsn\":\"0/16B3748\",\"commit_lsn\":\"0/16B3800\",\"seq\":0,\"xid\":745,"
        "\"commit_time\":\"2026-11-23T18:14:13.123999Z\",\"db\":\"app\","
        "\"table\":\"public.outbox\",\"slot\":\"outbox_relay\"},"
        "\"trace\":{\"traceparent\":\"" TRACEPARENT "\"}}";

    (void)state;
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_string_equal(m.value, want);
    assert_int_equal(m.valuelen, strlen(want));
    assert_string_equal(m.topic, "outbox.event.order");
    json_decref(j);
    envelope_msg_clear(&m);
    assert_true(is_zeroed(&m));
}

static void test_fields_parse_back(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j, *s;
    const char *order[] = {"id",          "type",    "aggregate_type", "aggregate_id",
                           "occurred_at", "payload", "source",         "trace"};
    const char *key;
    json_t *v;
    size_t i = 0;

    (void)state;
    src.seq = 7;
    src.xid = 4000000000u; /* above INT32_MAX: must stay unsigned */
    src.lsn = UINT64_C(0x16B374D848);
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    json_object_foreach(j, key, v)
    {
        assert_true(i < 8);
        assert_string_equal(key, order[i]);
        i++;
    }
    assert_int_equal(i, 8);
    assert_string_equal(jstr(j, "id", NULL), UUID);
    assert_string_equal(jstr(j, "aggregate_id", NULL), "42");
    s = json_object_get(j, "source");
    assert_string_equal(jstr(s, "lsn", NULL), "16/B374D848");
    assert_int_equal(json_integer_value(json_object_get(s, "seq")), 7);
    assert_int_equal(json_integer_value(json_object_get(s, "xid")), 4000000000LL);
    assert_string_equal(jstr(j, "trace", "traceparent"), TRACEPARENT);
    assert_header(&m, "lsn", "16/B374D848");
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_headers_and_key(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j;

    (void)state;
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_int_equal(m.keylen, 2);
    assert_memory_equal(m.key, "42", 2);
    assert_int_equal(m.nheaders, 6);
    assert_header(&m, "id", UUID);
    assert_header(&m, "type", "OrderPlaced");
    assert_header(&m, "aggregate_type", "order");
    assert_header(&m, "content-type", "application/json");
    assert_header(&m, "lsn", "0/16B3748");
    assert_header(&m, "traceparent", TRACEPARENT);
    assert_null(header(&m, "payload-encoding"));
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_traceparent_absent(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j;

    (void)state;
    row.f[OB_TRACEPARENT] = (outbox_field){0};
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_null(json_object_get(j, "trace"));
    assert_null(header(&m, "traceparent"));
    assert_int_equal(m.nheaders, 5);
    assert_null(strstr(m.value, "trace"));
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_jsonb_embedded_verbatim(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j, *p;

    (void)state;
    /* A round trip through doubles would print 19.989999999999998; a
     * 30-digit integer would not load at all. */
    row.f[OB_PAYLOAD] = fld("{\"price\": 19.99, \"big\": 123456789012345678901234567890}");
    j = build_ok_flags(&row, &src, DEFAULT_TOPIC, &m, JSON_DECODE_INT_AS_REAL);
    p = json_object_get(j, "payload");
    assert_true(json_is_object(p));
    assert_non_null(strstr(m.value, "\"payload\":{\"price\": 19.99, \"big\": "
                                    "123456789012345678901234567890},\"source\":"));
    json_decref(j);
    envelope_msg_clear(&m);

    /* json (not jsonb) scalar and array payloads, with surrounding spaces */
    row.payload_type_oid = OID_JSON;
    row.f[OB_PAYLOAD] = fld("  [1, \"two\", null]\n");
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    p = json_object_get(j, "payload");
    assert_true(json_is_array(p));
    assert_int_equal(json_array_size(p), 3);
    assert_non_null(strstr(m.value, "\"payload\":[1, \"two\", null],\"source\""));
    json_decref(j);
    envelope_msg_clear(&m);

    row.f[OB_PAYLOAD] = fld("\"a\\u0000b\"");
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_int_equal(json_string_length(json_object_get(j, "payload")), 3);
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_splice_not_fooled_by_strings(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j;

    (void)state;
    row.f[OB_ID] = fld(",\"payload\":null,");
    row.f[OB_TYPE] = fld("\\");
    row.f[OB_PAYLOAD] = fld("{\"x\":1}");
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_string_equal(jstr(j, "id", NULL), ",\"payload\":null,");
    assert_string_equal(jstr(j, "type", NULL), "\\");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "payload"), "x")), 1);
    json_decref(j);
    envelope_msg_clear(&m);
}

/* The payload check against jansson's parser, case by case, through the
 * text column path (valid JSON is embedded, anything else quoted). */
static void test_json_validator(void **state)
{
    static const struct {
        const char *text;
        bool valid;
    } cases[] = {
        {"{}", true},
        {"[]", true},
        {" [ ] ", true},
        {"0", true},
        {"-0.5e+10", true},
        {"1E-2", true},
        {"true", true},
        {"false", true},
        {"null", true},
        {"\"\"", true},
        {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", true},
        {"\"\\u00e9\\ud83d\\ude00\"", true},
        {"\"\xc3\xa9\xf0\x9f\x98\x80\"", true},
        {"{\"a\":[1,{\"b\":null},\"c\"],\"d\":{}}", true},
        {"{\"a\" : 1 , \"b\" : [ true , false ] }", true},
        {"-", false},
        {"01", false},
        {"1.", false},
        {".5", false},
        {"1e", false},
        {"1e+", false},
        {"+1", false},
        {"[1,]", false},
        {"[,1]", false},
        {"{\"a\":1,}", false},
        {"{\"a\" 1}", false},
        {"{\"a\"}", false},
        {"{1:2}", false},
        {"{,}", false},
        {"[", false},
        {"]", false},
        {"[1]]", false},
        {"[1", false},
        {"{\"a\":1", false},
        {"1 2", false},
        {"tru", false},
        {"nulll", false},
        {"True", false},
        {"\"abc", false},
        {"\"a\tb\"", false},
        {"\"\\x41\"", false},
        {"\"\\u12\"", false},
        {"\"\\ud800\"", false},
        {"\"\\udc00\"", false},
        {"\"\\ud800\\u0041\"", false},
        {"\"\xff\"", false},
        {"\"\xc0\xaf\"", false},
        {"'a'", false},
        {"NaN", false},
        {"[1,2", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        outbox_row row = base_row();
        envelope_source src = base_src();
        envelope_msg m = {0};
        char err[256];
        json_t *j, *p;
        json_t *ref = json_loads(cases[i].text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        bool reference = ref != NULL;
        int rc;

        json_decref(ref);
        /* the reference itself must agree with the table */
        if (reference != cases[i].valid)
            fail_msg("case %zu: jansson says %d", i, reference);
        row.payload_type_oid = OID_JSONB;
        row.f[OB_PAYLOAD] = fld(cases[i].text);
        rc = envelope_build(ENVELOPE_FORMAT_ENVELOPE, DEFAULT_TOPIC, &row, &src, &m, err,
                            sizeof err);
        if ((rc == 0) != cases[i].valid)
            fail_msg("case %zu <%s>: rc %d, want valid=%d (%s)", i, cases[i].text, rc,
                     cases[i].valid, err);
        envelope_msg_clear(&m);
        row.payload_type_oid = OID_TEXT;
        rc = envelope_build(ENVELOPE_FORMAT_ENVELOPE, DEFAULT_TOPIC, &row, &src, &m, err,
                            sizeof err);
        if (!utf8_ok_for_text(cases[i].text)) {
            assert_int_equal(rc, -1);
            continue;
        }
        assert_int_equal(rc, 0);
        j = json_loadb(m.value, m.valuelen, JSON_ALLOW_NUL, NULL);
        assert_non_null(j);
        p = json_object_get(j, "payload");
        if (!cases[i].valid) {
            assert_true(json_is_string(p));
            assert_string_equal(json_string_value(p), cases[i].text);
        } else if (json_is_string(p)) {
            /* a valid JSON string is embedded, so it is not the quoted text */
            assert_string_not_equal(json_string_value(p), cases[i].text);
        }
        json_decref(j);
        envelope_msg_clear(&m);
    }
}

static void test_json_validator_limits(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    char deep[2 * 2049 + 1];

    (void)state;
    /* numbers jansson cannot hold are still JSON, and stay as written */
    row.f[OB_PAYLOAD] = fld("[1e400, -123456789012345678901234567890.5]");
    assert_int_equal(
        envelope_build(ENVELOPE_FORMAT_ENVELOPE, DEFAULT_TOPIC, &row, &src, &m, NULL, 0), 0);
    assert_non_null(strstr(m.value, "\"payload\":[1e400, -123456789012345678901234567890.5],"));
    envelope_msg_clear(&m);
    /* nesting: 2046 levels are fine, and the record around them (one more)
     * is still within jansson's 2048; 2047 are refused (2048 used to pass,
     * making a record of 2049 levels that jansson cannot read) */
    memset(deep, '[', 2046);
    memset(deep + 2046, ']', 2046);
    deep[4092] = '\0';
    row.f[OB_PAYLOAD] = fld(deep);
    json_decref(build_ok(&row, &src, DEFAULT_TOPIC, &m));
    envelope_msg_clear(&m);
    memset(deep, '[', 2047);
    memset(deep + 2047, ']', 2047);
    deep[4094] = '\0';
    row.f[OB_PAYLOAD] = fld(deep);
    build_fails(&row, DEFAULT_TOPIC, "not valid json");
}

static void test_json_payload_invalid(void **state)
{
    outbox_row row = base_row();

    (void)state;
    row.payload_type_oid = OID_JSON;
    row.f[OB_PAYLOAD] = fld("{\"a\": 1");
    build_fails(&row, DEFAULT_TOPIC, "not valid json");
    row.payload_type_oid = OID_JSONB;
    row.f[OB_PAYLOAD] = fld("{\"a\": 1} trailing");
    build_fails(&row, DEFAULT_TOPIC, "not valid json");
    row.f[OB_PAYLOAD] = fld("");
    build_fails(&row, DEFAULT_TOPIC, "not valid json");
    row.f[OB_PAYLOAD] = fld("\"\xff\"");
    build_fails(&row, DEFAULT_TOPIC, "not valid json");
    /* a raw NUL byte inside the text is not JSON */
    row.f[OB_PAYLOAD] = (outbox_field){.data = "{\"a\":\0}", .len = 7, .present = true};
    build_fails(&row, DEFAULT_TOPIC, "not valid json");
}

static void test_text_payload(void **state)
{
    static const struct {
        uint32_t oid;
        const char *text;
        json_type type;
    } cases[] = {
        {OID_TEXT, "{\"a\": 1}", JSON_OBJECT}, {OID_TEXT, "hello world", JSON_STRING},
        {OID_TEXT, " 42 ", JSON_INTEGER},      {OID_TEXT, "\"quoted\"", JSON_STRING},
        {OID_TEXT, "", JSON_STRING},           {OID_TEXT, "{broken", JSON_STRING},
        {OID_VARCHAR, "[1,2]", JSON_ARRAY},    {OID_VARCHAR, "not json", JSON_STRING},
        {OID_TEXT, "null", JSON_NULL},         {OID_INT4, "7", JSON_STRING},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        outbox_row row = base_row();
        envelope_source src = base_src();
        envelope_msg m = {0};
        json_t *j, *p;

        row.payload_type_oid = cases[i].oid;
        row.f[OB_PAYLOAD] = fld(cases[i].text);
        j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
        p = json_object_get(j, "payload");
        assert_non_null(p);
        if (json_typeof(p) != cases[i].type)
            fail_msg("case %zu (%s): type %d, want %d", i, cases[i].text, json_typeof(p),
                     cases[i].type);
        if (cases[i].type == JSON_STRING && cases[i].text[0] != '"')
            assert_string_equal(json_string_value(p), cases[i].text);
        assert_null(header(&m, "payload-encoding"));
        json_decref(j);
        envelope_msg_clear(&m);
    }
}

static void test_text_payload_invalid_utf8(void **state)
{
    outbox_row row = base_row();

    (void)state;
    row.payload_type_oid = OID_TEXT;
    row.f[OB_PAYLOAD] = fld("caf\xe9");
    build_fails(&row, DEFAULT_TOPIC, "utf-8");
    row.payload_type_oid = OID_INT4;
    build_fails(&row, DEFAULT_TOPIC, "utf-8");
}

static void test_bytea_base64(void **state)
{
    static const struct {
        const char *text;
        const char *b64;
    } cases[] = {
        {"\\x68656c6c6f", "aGVsbG8="}, {"\\x", ""},
        {"\\x00ff10", "AP8Q"},         {"\\xDEADBEEF", "3q2+7w=="},
        {"ab\\\\\\001", "YWJcAQ=="}, /* escape format: a b \ 0x01 */
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        outbox_row row = base_row();
        envelope_source src = base_src();
        envelope_msg m = {0};
        json_t *j;

        row.payload_type_oid = OID_BYTEA;
        row.f[OB_PAYLOAD] = fld(cases[i].text);
        j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
        assert_string_equal(jstr(j, "payload", NULL), cases[i].b64);
        assert_header(&m, "payload-encoding", "base64");
        assert_int_equal(m.nheaders, 7);
        json_decref(j);
        envelope_msg_clear(&m);
    }
}

static void test_bytea_malformed(void **state)
{
    const char *bad[] = {"\\x6", "\\xZZ", "\\x6g", "a\\b", "trailing\\", "\\12"};

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        outbox_row row = base_row();

        row.payload_type_oid = OID_BYTEA;
        row.f[OB_PAYLOAD] = fld(bad[i]);
        build_fails(&row, DEFAULT_TOPIC, "bytea");
    }
}

static void test_null_payload(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j;

    (void)state;
    row.f[OB_PAYLOAD] = (outbox_field){0}; /* NULL column */
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_true(json_is_null(json_object_get(j, "payload")));
    assert_non_null(strstr(m.value, "\"payload\":null,\"source\""));
    json_decref(j);
    envelope_msg_clear(&m);

    /* NULL bytea: no encoding header for a value that is not there */
    row.payload_type_oid = OID_BYTEA;
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_true(json_is_null(json_object_get(j, "payload")));
    assert_null(header(&m, "payload-encoding"));
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_timestamp_offset(void **state)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"2026-11-23 23:44:13.5+05:30", "2026-11-23T18:14:13.500000Z"},
        {"2026-11-23 14:44:13-03:30", "2026-11-23T18:14:13.000000Z"},
        {"2026-11-24 02:00:00+09", "2026-11-23T17:00:00.000000Z"},
        {"2026-11-23T18:14:13.000001Z", "2026-11-23T18:14:13.000001Z"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        outbox_row row = base_row();
        envelope_source src = base_src();
        envelope_msg m = {0};
        json_t *j;

        row.f[OB_TIMESTAMP] = fld(cases[i].in);
        j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
        assert_string_equal(jstr(j, "occurred_at", NULL), cases[i].out);
        json_decref(j);
        envelope_msg_clear(&m);
    }
}

static void test_timestamp_absent_uses_commit_time(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j;

    (void)state;
    row.f[OB_TIMESTAMP] = (outbox_field){0};
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_string_equal(jstr(j, "occurred_at", NULL), "2026-11-23T18:14:13.123999Z");
    assert_string_equal(jstr(j, "source", "commit_time"), "2026-11-23T18:14:13.123999Z");
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_timestamp_garbage(void **state)
{
    outbox_row row = base_row();

    (void)state;
    row.f[OB_TIMESTAMP] = fld("yesterday");
    build_fails(&row, DEFAULT_TOPIC, "yesterday");
    /* timestamp without time zone: no offset, so refused */
    row.f[OB_TIMESTAMP] = fld("2026-11-23 18:14:13");
    build_fails(&row, DEFAULT_TOPIC, "timestamp");
}

static void test_topic_placeholders(void **state)
{
    static const struct {
        const char *tmpl;
        const char *topic;
    } cases[] = {
        {"outbox.event.{aggregate_type}", "outbox.event.order"},
        {"{aggregate_id}", "42"},
        {"ev-{type}", "ev-OrderPlaced"},
        {"{table}_events", "public.outbox_events"},
        {"{aggregate_type}.{aggregate_id}.{type}.{table}", "order.42.OrderPlaced.public.outbox"},
        {"plain", "plain"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        outbox_row row = base_row();
        envelope_source src = base_src();
        envelope_msg m = {0};
        char err[256];
        json_t *j;

        assert_int_equal(envelope_topic_check(cases[i].tmpl, err, sizeof err), 0);
        j = build_ok(&row, &src, cases[i].tmpl, &m);
        assert_string_equal(m.topic, cases[i].topic);
        json_decref(j);
        envelope_msg_clear(&m);
    }
}

static void test_topic_invalid_after_expansion(void **state)
{
    outbox_row row = base_row();

    (void)state;
    row.f[OB_AGGREGATE_TYPE] = fld("a b");
    build_fails(&row, DEFAULT_TOPIC, "outbox.event.a b");
    row.f[OB_AGGREGATE_TYPE] = fld("ordér");
    build_fails(&row, DEFAULT_TOPIC, "not a valid kafka topic");
    row.f[OB_AGGREGATE_TYPE] = fld("a/b");
    build_fails(&row, DEFAULT_TOPIC, "a/b");
    row.f[OB_AGGREGATE_TYPE] = fld("..");
    build_fails(&row, "{aggregate_type}", "..");
    row.f[OB_AGGREGATE_TYPE] = fld(".");
    build_fails(&row, "{aggregate_type}", "not a valid kafka topic");
}

static void test_topic_length(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    char at[300];
    json_t *j;
    const size_t prefix = strlen("outbox.event.");

    (void)state;
    memset(at, 'x', sizeof at);
    /* exactly 249 characters is fine */
    row.f[OB_AGGREGATE_TYPE] = (outbox_field){.data = at, .len = 249 - prefix, .present = true};
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_int_equal(strlen(m.topic), 249);
    json_decref(j);
    envelope_msg_clear(&m);
    /* 250 is not */
    row.f[OB_AGGREGATE_TYPE].len = 250 - prefix;
    build_fails(&row, DEFAULT_TOPIC, "longer than 249");
    row.f[OB_AGGREGATE_TYPE].len = sizeof at;
    build_fails(&row, DEFAULT_TOPIC, "longer than 249");
    /* the overflow may come from a literal after the placeholder */
    row.f[OB_AGGREGATE_TYPE].len = 249 - prefix;
    build_fails(&row, DEFAULT_TOPIC "x", "longer than 249");
    /* empty after expansion */
    row.f[OB_AGGREGATE_TYPE] = (outbox_field){.data = "", .len = 0, .present = true};
    build_fails(&row, "{aggregate_type}", "not a valid kafka topic");
}

static void test_topic_check_bad_templates(void **state)
{
    static const struct {
        const char *tmpl;
        const char *needle;
    } cases[] = {
        {"outbox.{aggregatetype}", "{aggregatetype}"},
        {"outbox.{}", "{}"},
        {"outbox.{aggregate_type", "unclosed"},
        {"{type}{", "unclosed"},
        {"", "empty"},
        {"outbox events", "' '"},
        {"outbox}", "'}'"},
        {"..", "not a valid"},
        {".", "not a valid"},
    };
    char err[256];
    char longt[300];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        assert_int_equal(envelope_topic_check(cases[i].tmpl, err, sizeof err), -1);
        if (strstr(err, cases[i].needle) == NULL)
            fail_msg("template \"%s\": error \"%s\" lacks \"%s\"", cases[i].tmpl, err,
                     cases[i].needle);
    }
    assert_int_equal(envelope_topic_check(NULL, err, sizeof err), -1);
    memset(longt, 'a', 250);
    longt[250] = '\0';
    assert_int_equal(envelope_topic_check(longt, err, sizeof err), -1);
    longt[249] = '\0';
    assert_int_equal(envelope_topic_check(longt, err, sizeof err), 0);
    assert_int_equal(envelope_topic_check(DEFAULT_TOPIC, err, sizeof err), 0);
    assert_int_equal(envelope_topic_check("{table}.{type}.{aggregate_id}", err, sizeof err), 0);

    /* envelope_build refuses the same templates */
    outbox_row row = base_row();
    build_fails(&row, "outbox.{aggregatetype}", "{aggregatetype}");
    build_fails(&row, "outbox.{type", "unclosed");
}

static void test_invalid_utf8_fields(void **state)
{
    static const char *const bad[] = {
        "4\xff",            /* not UTF-8 at all */
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xe2\x82",         /* truncated */
    };
    const enum outbox_role roles[] = {OB_AGGREGATE_ID, OB_ID, OB_TYPE};

    (void)state;
    for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            outbox_row row = base_row();

            row.f[roles[r]] = fld(bad[i]);
            /* a topic that does not use the field, so the value is what fails */
            build_fails(&row, "events", "utf-8");
        }
    }
    /* valid multibyte text is fine */
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j;
    row.f[OB_AGGREGATE_ID] = fld("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    j = build_ok(&row, &src, "events", &m);
    assert_string_equal(jstr(j, "aggregate_id", NULL), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    assert_int_equal(m.keylen, 9);
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_missing_required_field(void **state)
{
    outbox_row row = base_row();

    (void)state;
    row.f[OB_TYPE] = (outbox_field){0};
    build_fails(&row, "events", "type");
}

static void test_unknown_format(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    char err[128];

    (void)state;
    assert_int_equal(
        envelope_build((enum envelope_format)7, DEFAULT_TOPIC, &row, &src, &m, err, sizeof err),
        -1);
    assert_true(is_zeroed(&m));
}

static void test_source_nulls(void **state)
{
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    json_t *j;

    (void)state;
    src.db = NULL;
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_true(json_is_null(json_object_get(json_object_get(j, "source"), "db")));
    json_decref(j);
    envelope_msg_clear(&m);

    src.db = "caf\xe9";
    build_fails_src(&row, &src, DEFAULT_TOPIC, "utf-8");
}

/* ---- dead letters ------------------------------------------------------- */

static relcache_attr dl_atts[] = {
    {.name = "id", .type_oid = 2950},           {.name = "aggregateid", .type_oid = OID_TEXT},
    {.name = "payload", .type_oid = OID_JSONB}, {.name = "blob", .type_oid = OID_BYTEA},
    {.name = "note", .type_oid = OID_TEXT},     {.name = "toast", .type_oid = OID_TEXT},
};

static relcache_entry dl_rel(void)
{
    return (relcache_entry){.oid = 16384,
                            .nspname = "public",
                            .relname = "outbox",
                            .qualname = "public.outbox",
                            .natts = 6,
                            .atts = dl_atts};
}

static void test_dead_letter_contents(void **state)
{
    relcache_entry rel = dl_rel();
    pgo_value cols[6] = {
        {.kind = 't', .len = 36, .data = UUID},     {.kind = 't', .len = 2, .data = "42"},
        {.kind = 't', .len = 7, .data = "{broken"}, {.kind = 'b', .len = 3, .data = "\x00\xff\x10"},
        {.kind = 't', .len = 4, .data = "caf\xe9"}, {.kind = 'u'},
    };
    pgo_tuple tuple = {.ncols = 6, .cols = cols};
    outbox_row row = base_row();
    envelope_source src = base_src();
    envelope_msg m = {0};
    char err[128];
    json_t *j;
    json_error_t jerr;
    const char *want = "{\"id\":\"" UUID "\",\"aggregateid\":\"42\",\"payload\":\"{broken\","
                       "\"blob\":\"AP8Q\",\"note\":\"Y2Fm6Q==\",\"toast\":null}";

    (void)state;
    assert_int_equal(envelope_build_dead_letter("outbox.dlq", &rel, &tuple, &row,
                                                "payload is not valid json", &src,
                                                "outbox.event.order", &m, err, sizeof err),
                     0);
    assert_string_equal(m.topic, "outbox.dlq");
    assert_int_equal(m.keylen, 2);
    assert_memory_equal(m.key, "42", 2);
    assert_string_equal(m.value, want);
    assert_int_equal(m.valuelen, strlen(want));
    j = json_loadb(m.value, m.valuelen, 0, &jerr);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 6);
    assert_true(json_is_null(json_object_get(j, "toast")));
    json_decref(j);
    assert_int_equal(m.nheaders, 4);
    assert_header(&m, "error", "payload is not valid json");
    assert_header(&m, "lsn", "0/16B3748");
    assert_header(&m, "table", "public.outbox");
    assert_header(&m, "original-topic", "outbox.event.order");
    envelope_msg_clear(&m);
    assert_true(is_zeroed(&m));
}

static void test_dead_letter_without_row(void **state)
{
    relcache_entry rel = dl_rel();
    pgo_value cols[2] = {
        {.kind = 'n'},
        {.kind = 't', .len = 0, .data = ""},
    };
    pgo_tuple tuple = {.ncols = 2, .cols = cols}; /* fewer columns than rel */
    envelope_source src = base_src();
    envelope_msg m = {0};
    char err[128];

    (void)state;
    assert_int_equal(envelope_build_dead_letter("dlq", &rel, &tuple, NULL,
                                                "required column \"aggregateid\" is null", &src,
                                                NULL, &m, err, sizeof err),
                     0);
    assert_null(m.key);
    assert_int_equal(m.keylen, 0);
    assert_string_equal(m.value, "{\"id\":null,\"aggregateid\":\"\"}");
    assert_int_equal(m.nheaders, 3);
    assert_null(header(&m, "original-topic"));
    assert_header(&m, "error", "required column \"aggregateid\" is null");
    envelope_msg_clear(&m);

    /* row present but its aggregate id is NULL: still no key */
    outbox_row row = base_row();
    row.f[OB_AGGREGATE_ID] = (outbox_field){0};
    assert_int_equal(
        envelope_build_dead_letter("dlq", &rel, &tuple, &row, "x", &src, NULL, &m, err, sizeof err),
        0);
    assert_null(m.key);
    envelope_msg_clear(&m);
}

static void test_dead_letter_more_cols_than_rel(void **state)
{
    relcache_entry rel = dl_rel();
    pgo_value cols[8];
    pgo_tuple tuple = {.ncols = 8, .cols = cols};
    envelope_source src = base_src();
    envelope_msg m = {0};
    char err[128];
    json_t *j;

    (void)state;
    for (int i = 0; i < 8; i++)
        cols[i] = (pgo_value){.kind = 't', .len = 1, .data = "v"};
    rel.natts = 2;
    assert_int_equal(envelope_build_dead_letter("dlq", &rel, &tuple, NULL, "column count mismatch",
                                                &src, NULL, &m, err, sizeof err),
                     0);
    assert_string_equal(m.value, "{\"id\":\"v\",\"aggregateid\":\"v\"}");
    envelope_msg_clear(&m);

    /* no tuple at all */
    assert_int_equal(
        envelope_build_dead_letter("dlq", &rel, NULL, NULL, "x", &src, NULL, &m, err, sizeof err),
        0);
    assert_string_equal(m.value, "{}");
    j = json_loads(m.value, 0, NULL);
    assert_non_null(j);
    json_decref(j);
    envelope_msg_clear(&m);
}

static void test_dead_letter_invalid_column_name(void **state)
{
    relcache_attr atts[1] = {{.name = "n\xe9", .type_oid = OID_TEXT}};
    relcache_entry rel = dl_rel();
    pgo_value cols[1] = {{.kind = 't', .len = 1, .data = "v"}};
    pgo_tuple tuple = {.ncols = 1, .cols = cols};
    envelope_source src = base_src();
    envelope_msg m = {0};
    char err[128];

    (void)state;
    rel.natts = 1;
    rel.atts = atts;
    assert_int_equal(
        envelope_build_dead_letter("dlq", &rel, &tuple, NULL, "x", &src, NULL, &m, err, sizeof err),
        0);
    assert_string_equal(m.value, "{\"n?\":\"v\"}");
    envelope_msg_clear(&m);
}

/* jansson allocations fail from the n-th on: every error path must come
 * back with -1, a zeroed message and (under ASan) no leak. */
static long alloc_budget = -1;

static void *budget_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

/* ---- backfill ----------------------------------------------------------- */

static envelope_source backfill_src(void)
{
    /* Position fields set on purpose: a backfill must ignore them. */
    envelope_source s = base_src();

    s.backfill = true;
    return s;
}

static void test_backfill_envelope_source(void **state)
{
    outbox_row row = base_row();
    envelope_source src = backfill_src();
    envelope_msg m = {0};
    json_t *j, *source;
    const char *k;
    json_t *v;
    size_t nkeys = 0;

    (void)state;
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    source = json_object_get(j, "source");
    assert_true(json_is_object(source));
    assert_true(json_is_true(json_object_get(source, "backfill")));
    assert_string_equal(jstr(j, "source", "snapshot_time"), "2026-11-23T18:14:13.123999Z");
    assert_string_equal(jstr(j, "source", "db"), "app");
    assert_string_equal(jstr(j, "source", "table"), "public.outbox");
    json_object_foreach(source, k, v)
    {
        (void)v;
        nkeys++;
    }
    assert_int_equal(nkeys, 4); /* no lsn, commit_lsn, seq, xid, commit_time, slot */
    /* the event itself is the streamed one */
    assert_string_equal(jstr(j, "id", NULL), UUID);
    assert_string_equal(jstr(j, "occurred_at", NULL), "2026-11-23T18:14:13.123456Z");
    assert_string_equal(m.topic, "outbox.event.order");
    assert_int_equal(m.keylen, 2);
    assert_memory_equal(m.key, "42", 2);
    assert_null(header(&m, "lsn"));
    assert_header(&m, "backfill", "true");
    assert_header(&m, "id", UUID);
    json_decref(j);
    envelope_msg_clear(&m);

    /* without a timestamp column the snapshot's time stands in */
    row.f[OB_TIMESTAMP] = (outbox_field){0};
    j = build_ok(&row, &src, DEFAULT_TOPIC, &m);
    assert_string_equal(jstr(j, "occurred_at", NULL), "2026-11-23T18:14:13.123999Z");
    json_decref(j);
    envelope_msg_clear(&m);
}

/* Formats without a source: the same record as streamed, plus the
 * backfill header. */
static void test_backfill_other_formats(void **state)
{
    static const enum envelope_format fmts[] = {
        ENVELOPE_FORMAT_DEBEZIUM, ENVELOPE_FORMAT_CLOUDEVENTS, ENVELOPE_FORMAT_CLOUDEVENTS_BINARY};
    outbox_row row = base_row();
    envelope_source wal = base_src(), bf = backfill_src();
    char err[256];

    (void)state;
    bf.lsn = 0x99; /* different positions must not show */
    bf.commit_lsn = 0x999;
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        envelope_msg a = {0}, b = {0};

        assert_int_equal(envelope_build(fmts[i], DEFAULT_TOPIC, &row, &wal, &a, err, sizeof err),
                         0);
        assert_int_equal(envelope_build(fmts[i], DEFAULT_TOPIC, &row, &bf, &b, err, sizeof err), 0);
        assert_string_equal(a.topic, b.topic);
        assert_int_equal(a.keylen, b.keylen);
        assert_memory_equal(a.key, b.key, a.keylen);
        assert_int_equal(a.valuelen, b.valuelen);
        assert_memory_equal(a.value, b.value, a.valuelen);
        assert_int_equal(b.nheaders, a.nheaders + 1);
        for (int h = 0; h < a.nheaders; h++)
            assert_header(&b, a.headers[h].name, a.headers[h].value);
        assert_null(header(&a, "backfill"));
        assert_header(&b, "backfill", "true");
        envelope_msg_clear(&a);
        envelope_msg_clear(&b);
    }
}

static void test_backfill_dead_letter(void **state)
{
    relcache_entry rel = dl_rel();
    outbox_row row = base_row();
    envelope_source src = backfill_src();
    envelope_msg m = {0};
    char err[128];

    (void)state;
    assert_int_equal(envelope_build_dead_letter("outbox.dlq", &rel, NULL, &row, "row has no type",
                                                &src, NULL, &m, err, sizeof err),
                     0);
    assert_int_equal(m.nheaders, 3);
    assert_header(&m, "error", "row has no type");
    assert_header(&m, "backfill", "true");
    assert_header(&m, "table", "public.outbox");
    assert_null(header(&m, "lsn"));
    envelope_msg_clear(&m);
}

static void test_out_of_memory(void **state)
{
    relcache_entry rel = dl_rel();
    pgo_value cols[2] = {{.kind = 't', .len = 2, .data = "42"},
                         {.kind = 'b', .len = 1, .data = "x"}};
    pgo_tuple tuple = {.ncols = 2, .cols = cols};
    envelope_source src = base_src();
    char err[128];
    int variants = 0;

    (void)state;
    json_set_alloc_funcs(budget_malloc, free);
    for (int v = 0; v < 3; v++) {
        outbox_row row = base_row();
        bool succeeded = false;

        if (v == 1) {
            row.payload_type_oid = OID_BYTEA;
            row.f[OB_PAYLOAD] = fld("\\x0102");
        }
        for (long n = 0; n < 10000 && !succeeded; n++) {
            envelope_msg m;
            int rc;

            memset(&m, 0x5a, sizeof m);
            alloc_budget = n;
            if (v < 2)
                rc = envelope_build(ENVELOPE_FORMAT_ENVELOPE, DEFAULT_TOPIC, &row, &src, &m, err,
                                    sizeof err);
            else
                rc = envelope_build_dead_letter("dlq", &rel, &tuple, &row, "why", &src, NULL, &m,
                                                err, sizeof err);
            alloc_budget = -1;
            if (rc == 0) {
                succeeded = true;
                assert_true(n > 0);
                assert_non_null(m.value);
                envelope_msg_clear(&m);
            } else {
                assert_true(is_zeroed(&m));
                assert_int_equal(errno, ENOMEM);
                if (strstr(err, "out of memory") == NULL)
                    fail_msg("variant %d, budget %ld: \"%s\"", v, n, err);
            }
        }
        assert_true(succeeded);
        variants++;
    }
    json_set_alloc_funcs(malloc, free);
    assert_int_equal(variants, 3);
}

static void test_msg_clear(void **state)
{
    envelope_msg m = {0};

    (void)state;
    envelope_msg_clear(NULL);
    envelope_msg_clear(&m);
    envelope_msg_clear(&m);
    assert_true(is_zeroed(&m));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_parse),
        cmocka_unit_test(test_exact_value),
        cmocka_unit_test(test_fields_parse_back),
        cmocka_unit_test(test_headers_and_key),
        cmocka_unit_test(test_traceparent_absent),
        cmocka_unit_test(test_jsonb_embedded_verbatim),
        cmocka_unit_test(test_splice_not_fooled_by_strings),
        cmocka_unit_test(test_json_validator),
        cmocka_unit_test(test_json_validator_limits),
        cmocka_unit_test(test_json_payload_invalid),
        cmocka_unit_test(test_text_payload),
        cmocka_unit_test(test_text_payload_invalid_utf8),
        cmocka_unit_test(test_bytea_base64),
        cmocka_unit_test(test_bytea_malformed),
        cmocka_unit_test(test_null_payload),
        cmocka_unit_test(test_timestamp_offset),
        cmocka_unit_test(test_timestamp_absent_uses_commit_time),
        cmocka_unit_test(test_timestamp_garbage),
        cmocka_unit_test(test_topic_placeholders),
        cmocka_unit_test(test_topic_invalid_after_expansion),
        cmocka_unit_test(test_topic_length),
        cmocka_unit_test(test_topic_check_bad_templates),
        cmocka_unit_test(test_invalid_utf8_fields),
        cmocka_unit_test(test_missing_required_field),
        cmocka_unit_test(test_unknown_format),
        cmocka_unit_test(test_source_nulls),
        cmocka_unit_test(test_dead_letter_contents),
        cmocka_unit_test(test_dead_letter_without_row),
        cmocka_unit_test(test_dead_letter_more_cols_than_rel),
        cmocka_unit_test(test_dead_letter_invalid_column_name),
        cmocka_unit_test(test_backfill_envelope_source),
        cmocka_unit_test(test_backfill_other_formats),
        cmocka_unit_test(test_backfill_dead_letter),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_msg_clear),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
