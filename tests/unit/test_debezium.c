/*
 * The debezium format where it follows Debezium's EventRouter (each case
 * was seen from Debezium itself by scripts/compat): no type needed, a NULL
 * aggregate id as a NULL key, timestamp without time zone and epoch
 * milliseconds, Java Properties trace context, NULL header fields, the
 * JsonConverter and payload expansion forms, the context headers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "decode/lsn.h"
#include "decode/outbox.h"
#include "schema/envelope.h"

#define UUID "6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a"
#define TRACEPARENT "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#define COMMIT_TS INT64_C(848772853123999)

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
    r.f[OB_PAYLOAD] =
        fld("{\"none\": null, \"note\": \"a b\", \"empty\": [], \"in\": {\"x\": null, "
            "\"y\": [1, 2]}, \"orderId\": 42}");
    r.payload_type_oid = 3802;
    return r;
}

static envelope_source base_src(void)
{
    return (envelope_source){.lsn = 0x16B3748,
                             .commit_lsn = 0x16B3800,
                             .xid = 745,
                             .commit_ts = COMMIT_TS,
                             .db = "app",
                             .table = "public.outbox",
                             .slot = "outbox_relay"};
}

static envelope_opts dbz_opts(void)
{
    return (envelope_opts){.format = ENVELOPE_FORMAT_DEBEZIUM,
                           .topic_tmpl = "outbox.event.{aggregate_type}"};
}

static void build(const envelope_opts *o, const outbox_row *row, const envelope_extra *x, size_t nx,
                  envelope_msg *m)
{
    char err[256] = "";
    envelope_source src = base_src();

    if (envelope_build_opts(o, row, x, nx, &src, m, err, sizeof err) != 0)
        fail_msg("envelope_build_opts: %s", err);
}

static const envelope_header *header(const envelope_msg *m, const char *name)
{
    for (int i = 0; i < m->nheaders; i++)
        if (strcmp(m->headers[i].name, name) == 0)
            return &m->headers[i];
    return NULL;
}

static void assert_value(const envelope_msg *m, const char *want)
{
    assert_non_null(m->value);
    assert_int_equal(m->valuelen, strlen(want));
    assert_memory_equal(m->value, want, m->valuelen);
}

static void test_naive_timestamp_parse(void **state)
{
    int64_t us;

    (void)state;
    assert_int_equal(pgtime_parse_naive("2026-11-23 18:14:13.123456", 26, &us), 0);
    assert_int_equal(us, INT64_C(1795457653123456));
    assert_int_equal(pgtime_parse_naive("1999-01-08 04:05:06.7", 21, &us), 0);
    assert_int_equal(us / 1000, INT64_C(915768306700));
    /* an offset is not a timestamp without time zone; the other way round
     * stays refused */
    assert_int_equal(pgtime_parse_naive("2026-11-23 18:14:13+00", 22, &us), -1);
    assert_int_equal(pgtime_parse_text("2026-11-23 18:14:13", 19, &us), -1);
}

/* The documentation's and Quarkus' table: timestamp without time zone, as
 * Debezium reads it (UTC) for the record's timestamp. */
static void test_timestamp_without_zone(void **state)
{
    envelope_opts o = dbz_opts();
    outbox_row r = base_row();
    envelope_msg m;
    char err[256];
    envelope_source src = base_src();

    (void)state;
    o.timestamp = ENVELOPE_TS_EVENT;
    r.f[OB_TIMESTAMP] = fld("2026-11-23 18:14:13.123456");
    r.timestamp_type_oid = 1114;
    build(&o, &r, NULL, 0, &m);
    assert_int_equal(m.timestamp_ms, INT64_C(1795457653123));
    envelope_msg_clear(&m);
    /* the other formats still want a zone */
    o.format = ENVELOPE_FORMAT_ENVELOPE;
    assert_int_equal(envelope_build_opts(&o, &r, NULL, 0, &src, &m, err, sizeof err), -1);
}

static void test_timestamp_epoch_millis(void **state)
{
    envelope_opts o = dbz_opts();
    outbox_row r = base_row();
    envelope_msg m;
    char err[256];
    envelope_source src = base_src();

    (void)state;
    o.timestamp = ENVELOPE_TS_EVENT;
    r.f[OB_TIMESTAMP] = fld("1795457653123");
    r.timestamp_type_oid = 20;
    build(&o, &r, NULL, 0, &m);
    assert_int_equal(m.timestamp_ms, INT64_C(1795457653123));
    envelope_msg_clear(&m);
    r.f[OB_TIMESTAMP] = fld("12x");
    assert_int_equal(envelope_build_opts(&o, &r, NULL, 0, &src, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "epoch milliseconds"));
}

/* No type column, a NULL aggregate id: a record with a NULL key. */
static void test_no_type_null_key(void **state)
{
    envelope_opts o = dbz_opts();
    outbox_row r = base_row();
    envelope_msg m;

    (void)state;
    r.f[OB_TYPE] = (outbox_field){0};
    r.f[OB_AGGREGATE_ID] = (outbox_field){0};
    build(&o, &r, NULL, 0, &m);
    assert_null(m.key);
    assert_string_equal(m.topic, "outbox.event.order");
    envelope_msg_clear(&m);
    /* empty: an empty key, not a NULL one */
    r.f[OB_AGGREGATE_ID] = fld("");
    build(&o, &r, NULL, 0, &m);
    assert_non_null(m.key);
    assert_int_equal(m.keylen, 0);
    envelope_msg_clear(&m);
}

/* The extraction side: the debezium colmap makes type and aggregate id
 * optional, the default keeps them required. */
static void test_optional_roles_bind(void **state)
{
    relcache_attr atts[] = {{.name = (char *)"id", .type_oid = 2950},
                            {.name = (char *)"aggregatetype", .type_oid = 25},
                            {.name = (char *)"aggregateid", .type_oid = 25},
                            {.name = (char *)"payload", .type_oid = 3802}};
    relcache_entry rel = {.qualname = (char *)"public.outbox", .natts = 4, .atts = atts};
    pgo_value cols[] = {{.kind = 't', .data = UUID, .len = 36},
                        {.kind = 't', .data = "order", .len = 5},
                        {.kind = 'n'},
                        {.kind = 't', .data = "{}", .len = 2}};
    pgo_tuple tup = {.ncols = 4, .cols = cols};
    outbox_colmap map;
    outbox_binding b;
    outbox_row row;
    char err[256];

    (void)state;
    outbox_colmap_init(&map);
    assert_int_equal(outbox_bind(&map, &rel, &b, err, sizeof err), -1); /* no type */
    map.optional = 1u << OB_TYPE | 1u << OB_AGGREGATE_ID;
    assert_int_equal(outbox_bind(&map, &rel, &b, err, sizeof err), 0);
    assert_int_equal(outbox_extract(&b, &rel, &tup, &row, err, sizeof err), 0);
    assert_false(row.f[OB_AGGREGATE_ID].present);
    assert_false(row.f[OB_TYPE].present);
}

/* tracingspancontext as Debezium writes it: Java Properties text. */
static void test_properties_trace_context(void **state)
{
    envelope_opts o = dbz_opts();
    outbox_row r = base_row();
    envelope_msg m;
    const envelope_header *h;

    (void)state;
    r.f[OB_TRACEPARENT] = fld("#Debezium\n#Mon Nov 23 18:14:13 UTC 2026\ntracestate=x\n"
                              "traceparent=" TRACEPARENT "\n");
    build(&o, &r, NULL, 0, &m);
    assert_false(m.dropped_traceparent);
    h = header(&m, "traceparent");
    assert_non_null(h);
    assert_int_equal(h->len, strlen(TRACEPARENT));
    assert_memory_equal(h->value, TRACEPARENT, h->len);
    envelope_msg_clear(&m);
    r.f[OB_TRACEPARENT] = fld("traceparent=nonsense\n");
    build(&o, &r, NULL, 0, &m);
    assert_true(m.dropped_traceparent);
    assert_null(header(&m, "traceparent"));
    envelope_msg_clear(&m);
}

/* A NULL header field: a header with a NULL value, as Debezium adds it. */
static void test_null_header_field(void **state)
{
    envelope_opts o = dbz_opts();
    outbox_row r = base_row();
    envelope_field f = {.column = "extra", .name = "ex", .placement = ENVELOPE_PLACE_HEADER};
    envelope_extra x = {.field = &f, .data = NULL, .len = 0, .type_oid = 25};
    envelope_msg m;
    const envelope_header *h;

    (void)state;
    o.fields = &f;
    o.nfields = 1;
    build(&o, &r, &x, 1, &m);
    h = header(&m, "ex");
    assert_non_null(h);
    assert_null(h->value);
    envelope_msg_clear(&m);
    /* the envelope format still leaves it out */
    o.format = ENVELOPE_FORMAT_ENVELOPE;
    build(&o, &r, &x, 1, &m);
    assert_null(header(&m, "ex"));
    envelope_msg_clear(&m);
}

static void test_json_converter_string(void **state)
{
    envelope_opts o = dbz_opts();
    outbox_row r = base_row();
    envelope_msg m;

    (void)state;
    o.dbz_json_converter = true;
    r.f[OB_PAYLOAD] = fld("{\"a\": \"q\\\"\"}");
    build(&o, &r, NULL, 0, &m);
    assert_value(&m, "\"{\\\"a\\\": \\\"q\\\\\\\"\\\"}\"");
    envelope_msg_clear(&m);
}

static void test_expand_drops_nulls_and_empty_arrays(void **state)
{
    envelope_opts o = dbz_opts();
    outbox_row r = base_row();
    envelope_msg m;
    char err[256];
    envelope_source src = base_src();

    (void)state;
    o.dbz_json_converter = true;
    o.dbz_expand = true;
    build(&o, &r, NULL, 0, &m);
    assert_value(&m, "{\"note\":\"a b\",\"in\":{\"y\":[1,2]},\"orderId\":42}");
    envelope_msg_clear(&m);
    /* Debezium's task stops on a payload that is not an object: poison */
    r.f[OB_PAYLOAD] = fld("[1, 2]");
    assert_int_equal(envelope_build_opts(&o, &r, NULL, 0, &src, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "not an object"));
    /* expansion needs the JSON converter */
    o.dbz_json_converter = false;
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), -1);
}

static void test_context_headers(void **state)
{
    envelope_opts o = dbz_opts();
    outbox_row r = base_row();
    envelope_msg m;
    char err[256];

    (void)state;
    o.dbz_context = "dbzapp";
    o.dbz_run_id = "01a2357c-206e-7bd4-8b20-08f666257a1d";
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), 0);
    build(&o, &r, NULL, 0, &m);
    assert_int_equal(m.nheaders, 5);
    assert_string_equal(m.headers[0].name, "__debezium.context.connectorLogicalName");
    assert_string_equal(m.headers[0].value, "dbzapp");
    assert_string_equal(m.headers[1].value, "0");
    assert_string_equal(m.headers[2].value, "postgresql");
    assert_string_equal(m.headers[3].value, o.dbz_run_id);
    assert_string_equal(m.headers[4].name, "id");
    envelope_msg_clear(&m);
    o.format = ENVELOPE_FORMAT_ENVELOPE;
    assert_int_equal(envelope_opts_check(&o, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_naive_timestamp_parse),
        cmocka_unit_test(test_timestamp_without_zone),
        cmocka_unit_test(test_timestamp_epoch_millis),
        cmocka_unit_test(test_no_type_null_key),
        cmocka_unit_test(test_optional_roles_bind),
        cmocka_unit_test(test_properties_trace_context),
        cmocka_unit_test(test_null_header_field),
        cmocka_unit_test(test_json_converter_string),
        cmocka_unit_test(test_expand_drops_nulls_and_empty_arrays),
        cmocka_unit_test(test_context_headers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
