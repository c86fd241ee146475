#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "decode/outbox.h"
#include "tests/fixtures/pg15/fixtures.h"

#define OID_UUID 2950
#define OID_TEXT 25
#define OID_JSONB 3802
#define OID_TIMESTAMPTZ 1184

/* A relation built by hand and owned by the test. */
typedef struct testrel {
    relcache_attr atts[10];
    relcache_entry e;
} testrel;

static void testrel_init(testrel *t, const char *qualname, int natts, const char *const *names,
                         const uint32_t *types)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < natts; i++) {
        t->atts[i].name = (char *)names[i];
        t->atts[i].type_oid = types[i];
        t->atts[i].typmod = -1;
    }
    t->e.oid = 16384;
    t->e.qualname = (char *)qualname;
    t->e.natts = (uint16_t)natts;
    t->e.atts = t->atts;
}

static const char *const std_names[] = {"id",      "aggregatetype", "aggregateid",       "type",
                                        "payload", "timestamp",     "tracingspancontext"};
static const uint32_t std_types[] = {OID_UUID,  OID_TEXT,        OID_TEXT, OID_TEXT,
                                     OID_JSONB, OID_TIMESTAMPTZ, OID_TEXT};

/* A tuple whose values point at string literals; kind 't' unless NULL. */
typedef struct testtup {
    pgo_value v[10];
    pgo_tuple t;
} testtup;

static void testtup_init(testtup *tt, int ncols, const char *const *vals)
{
    memset(tt, 0, sizeof *tt);
    for (int i = 0; i < ncols; i++) {
        if (vals[i] == NULL) {
            tt->v[i].kind = 'n';
        } else {
            tt->v[i].kind = 't';
            tt->v[i].data = vals[i];
            tt->v[i].len = (uint32_t)strlen(vals[i]);
        }
    }
    tt->t.ncols = (uint16_t)ncols;
    tt->t.cols = tt->v;
}

static const char *const std_vals[] = {"6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a",
                                       "order",
                                       "42",
                                       "OrderPlaced",
                                       "{\"orderId\": 42}",
                                       "2026-11-23 18:14:13.123456+00",
                                       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};

static void assert_field(const outbox_field *f, const char *want)
{
    if (want == NULL) {
        assert_false(f->present);
        return;
    }
    assert_true(f->present);
    assert_int_equal(f->len, strlen(want));
    assert_memory_equal(f->data, want, f->len);
}

static void test_role_names(void **state)
{
    static const char *const want[OB_NROLES] = {"id",      "aggregate_type", "aggregate_id", "type",
                                                "payload", "timestamp",      "traceparent"};

    (void)state;
    for (int r = 0; r < OB_NROLES; r++)
        assert_string_equal(outbox_role_name((enum outbox_role)r), want[r]);
    assert_non_null(outbox_role_name(OB_NROLES));
    assert_true(outbox_role_required(OB_ID));
    assert_true(outbox_role_required(OB_AGGREGATE_TYPE));
    assert_true(outbox_role_required(OB_AGGREGATE_ID));
    assert_true(outbox_role_required(OB_TYPE));
    assert_false(outbox_role_required(OB_PAYLOAD));
    assert_false(outbox_role_required(OB_TIMESTAMP));
    assert_false(outbox_role_required(OB_TRACEPARENT));
}

static void test_colmap_defaults(void **state)
{
    outbox_colmap m;

    (void)state;
    memset(&m, 'x', sizeof m);
    outbox_colmap_init(&m);
    for (int r = 0; r < OB_NROLES; r++)
        assert_string_equal(m.col[r], std_names[r]);
}

static void test_colmap_set(void **state)
{
    outbox_colmap m, before;
    char err[512];
    char longcol[80];

    (void)state;
    outbox_colmap_init(&m);
    assert_int_equal(outbox_colmap_set(&m, "aggregate_id=order_id", err, sizeof err), 0);
    assert_string_equal(m.col[OB_AGGREGATE_ID], "order_id");
    assert_int_equal(outbox_colmap_set(&m, "traceparent=traceparent", err, sizeof err), 0);
    assert_string_equal(m.col[OB_TRACEPARENT], "traceparent");
    /* Everything after the first '=' is the column, '=' included. */
    assert_int_equal(outbox_colmap_set(&m, "type=a=b", err, sizeof err), 0);
    assert_string_equal(m.col[OB_TYPE], "a=b");
    /* Column names are case sensitive and kept verbatim. */
    assert_int_equal(outbox_colmap_set(&m, "payload=Body", err, sizeof err), 0);
    assert_string_equal(m.col[OB_PAYLOAD], "Body");
    /* 63 bytes is NAMEDATALEN - 1: allowed. */
    memset(longcol, 'c', 63);
    longcol[63] = '\0';
    char spec[100];
    snprintf(spec, sizeof spec, "id=%s", longcol);
    assert_int_equal(outbox_colmap_set(&m, spec, err, sizeof err), 0);
    assert_string_equal(m.col[OB_ID], longcol);

    memcpy(&before, &m, sizeof m);
    err[0] = '\0';
    assert_int_equal(outbox_colmap_set(&m, "aggregateid=x", err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown role \"aggregateid\""));
    assert_non_null(strstr(err, "id, aggregate_type, aggregate_id, type, payload, timestamp, "
                                "traceparent"));
    assert_int_equal(outbox_colmap_set(&m, "i=x", err, sizeof err), -1);
    assert_int_equal(outbox_colmap_set(&m, "ID=x", err, sizeof err), -1);
    assert_int_equal(outbox_colmap_set(&m, "idx=x", err, sizeof err), -1);
    assert_int_equal(outbox_colmap_set(&m, "=x", err, sizeof err), -1);
    assert_int_equal(outbox_colmap_set(&m, "id", err, sizeof err), -1);
    assert_non_null(strstr(err, "ROLE=COLUMN"));
    assert_int_equal(outbox_colmap_set(&m, "", err, sizeof err), -1);
    assert_int_equal(outbox_colmap_set(&m, "id=", err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    snprintf(spec, sizeof spec, "id=%sc", longcol); /* 64 bytes */
    assert_int_equal(outbox_colmap_set(&m, spec, err, sizeof err), -1);
    assert_non_null(strstr(err, "63"));
    assert_int_equal(outbox_colmap_set(&m, NULL, err, sizeof err), -1);
    /* A failed set leaves the map alone. */
    assert_memory_equal(&m, &before, sizeof m);
    /* A tiny error buffer is never overrun. */
    char tiny[4] = "zzz";
    assert_int_equal(outbox_colmap_set(&m, "bogus=x", tiny, 2), -1);
    assert_int_equal(tiny[1], '\0');
    assert_int_equal(tiny[2], 'z');
}

static void test_bind_default(void **state)
{
    outbox_colmap m;
    outbox_binding b;
    testrel t;
    char err[512] = "";

    (void)state;
    outbox_colmap_init(&m);
    testrel_init(&t, "public.outbox", 7, std_names, std_types);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), 0);
    for (int r = 0; r < OB_NROLES; r++) {
        assert_int_equal(b.idx[r], r);
        assert_int_equal(b.type_oid[r], std_types[r]);
    }
}

/* Binding is by name: a table with its columns in another order, without
 * the optional ones, and with extra columns. */
static void test_bind_by_name(void **state)
{
    static const char *const names[] = {"extra",       "type", "payload",
                                        "aggregateid", "id",   "aggregatetype"};
    static const uint32_t types[] = {OID_TEXT, OID_TEXT, 114, OID_TEXT, OID_TEXT, OID_TEXT};
    outbox_colmap m;
    outbox_binding b;
    testrel t;
    char err[512] = "";

    (void)state;
    outbox_colmap_init(&m);
    testrel_init(&t, "app.events", 6, names, types);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), 0);
    assert_int_equal(b.idx[OB_ID], 4);
    assert_int_equal(b.idx[OB_AGGREGATE_TYPE], 5);
    assert_int_equal(b.idx[OB_AGGREGATE_ID], 3);
    assert_int_equal(b.idx[OB_TYPE], 1);
    assert_int_equal(b.idx[OB_PAYLOAD], 2);
    assert_int_equal(b.type_oid[OB_PAYLOAD], 114);
    assert_int_equal(b.type_oid[OB_ID], OID_TEXT);
    assert_int_equal(b.idx[OB_TIMESTAMP], -1);
    assert_int_equal(b.type_oid[OB_TIMESTAMP], 0);
    assert_int_equal(b.idx[OB_TRACEPARENT], -1);
}

static void test_bind_missing_required(void **state)
{
    static const char *const names[] = {"id", "aggregatetype", "type", "payload"};
    static const uint32_t types[] = {OID_UUID, OID_TEXT, OID_TEXT, OID_JSONB};
    outbox_colmap m;
    outbox_binding b;
    testrel t;
    char err[512] = "";

    (void)state;
    outbox_colmap_init(&m);
    testrel_init(&t, "public.outbox", 4, names, types);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), -1);
    assert_string_equal(err,
                        "outbox table \"public.outbox\" has no column \"aggregateid\" for role "
                        "aggregate_id; add it or map another column with --column "
                        "aggregate_id=COLUMN");
    /* Still filled, so rows can be dead-lettered. */
    assert_int_equal(b.idx[OB_ID], 0);
    assert_int_equal(b.idx[OB_AGGREGATE_TYPE], 1);
    assert_int_equal(b.idx[OB_AGGREGATE_ID], -1);
    assert_int_equal(b.idx[OB_TYPE], 2);
    assert_int_equal(b.idx[OB_PAYLOAD], 3);
    assert_int_equal(b.type_oid[OB_PAYLOAD], OID_JSONB);

    /* A remapped column that does not exist is named as mapped. */
    assert_int_equal(outbox_colmap_set(&m, "aggregate_id=order_id", err, sizeof err), 0);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), -1);
    assert_non_null(strstr(err, "no column \"order_id\" for role aggregate_id"));

    /* An optional role mapped to a missing column is not an error. */
    testrel_init(&t, "public.outbox", 7, std_names, std_types);
    outbox_colmap_init(&m);
    assert_int_equal(outbox_colmap_set(&m, "payload=body", err, sizeof err), 0);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), 0);
    assert_int_equal(b.idx[OB_PAYLOAD], -1);

    /* Names are compared exactly. */
    static const char *const upper[] = {"ID", "aggregatetype", "aggregateid", "type"};
    testrel_init(&t, "public.outbox", 4, upper, types);
    outbox_colmap_init(&m);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), -1);
    assert_non_null(strstr(err, "role id;"));
    assert_int_equal(outbox_bind(NULL, &t.e, &b, err, sizeof err), -1);
    assert_int_equal(outbox_bind(&m, NULL, &b, err, sizeof err), -1);
}

static void test_bind_remapped(void **state)
{
    static const char *const names[] = {"event_id",   "kind", "order_id",
                                        "event_type", "body", "created"};
    static const uint32_t types[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, 17, OID_TIMESTAMPTZ};
    static const char *const vals[] = {"evt-1", "order", "o-7", "Shipped", "\\x0102", NULL};
    outbox_colmap m;
    outbox_binding b;
    outbox_row row;
    testrel t;
    testtup tt;
    char err[512] = "";

    (void)state;
    outbox_colmap_init(&m);
    assert_int_equal(outbox_colmap_set(&m, "id=event_id", err, sizeof err), 0);
    assert_int_equal(outbox_colmap_set(&m, "aggregate_type=kind", err, sizeof err), 0);
    assert_int_equal(outbox_colmap_set(&m, "aggregate_id=order_id", err, sizeof err), 0);
    assert_int_equal(outbox_colmap_set(&m, "type=event_type", err, sizeof err), 0);
    assert_int_equal(outbox_colmap_set(&m, "payload=body", err, sizeof err), 0);
    assert_int_equal(outbox_colmap_set(&m, "timestamp=created", err, sizeof err), 0);
    testrel_init(&t, "app.events", 6, names, types);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), 0);
    testtup_init(&tt, 6, vals);
    assert_int_equal(outbox_extract(&b, &t.e, &tt.t, &row, err, sizeof err), 0);
    assert_field(&row.f[OB_ID], "evt-1");
    assert_field(&row.f[OB_AGGREGATE_TYPE], "order");
    assert_field(&row.f[OB_AGGREGATE_ID], "o-7");
    assert_field(&row.f[OB_TYPE], "Shipped");
    assert_field(&row.f[OB_PAYLOAD], "\\x0102");
    assert_field(&row.f[OB_TIMESTAMP], NULL);
    assert_field(&row.f[OB_TRACEPARENT], NULL);
    assert_int_equal(row.payload_type_oid, 17);
}

static void test_extract_good(void **state)
{
    outbox_colmap m;
    outbox_binding b;
    outbox_row row;
    testrel t;
    testtup tt;
    char err[512] = "";

    (void)state;
    outbox_colmap_init(&m);
    testrel_init(&t, "public.outbox", 7, std_names, std_types);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), 0);
    testtup_init(&tt, 7, std_vals);
    memset(&row, 0xa5, sizeof row);
    assert_int_equal(outbox_extract(&b, &t.e, &tt.t, &row, err, sizeof err), 0);
    for (int r = 0; r < OB_NROLES; r++)
        assert_field(&row.f[r], std_vals[r]);
    /* Borrowed, not copied. */
    assert_ptr_equal(row.f[OB_ID].data, std_vals[0]);
    assert_int_equal(row.payload_type_oid, OID_JSONB);

    /* Optional roles may be NULL or empty. */
    const char *vals[7];
    memcpy(vals, std_vals, sizeof vals);
    vals[OB_PAYLOAD] = NULL;
    vals[OB_TIMESTAMP] = NULL;
    vals[OB_TRACEPARENT] = "";
    testtup_init(&tt, 7, vals);
    assert_int_equal(outbox_extract(&b, &t.e, &tt.t, &row, err, sizeof err), 0);
    assert_field(&row.f[OB_PAYLOAD], NULL);
    assert_field(&row.f[OB_TIMESTAMP], NULL);
    assert_true(row.f[OB_TRACEPARENT].present);
    assert_int_equal(row.f[OB_TRACEPARENT].len, 0);
    assert_int_equal(row.payload_type_oid, OID_JSONB);
}

static void expect_poison(const outbox_binding *b, const relcache_entry *rel, const pgo_tuple *t,
                          const char *needle)
{
    outbox_row row;
    char err[512] = "";

    assert_int_equal(outbox_extract(b, rel, t, &row, err, sizeof err), -1);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void test_extract_poison(void **state)
{
    outbox_colmap m;
    outbox_binding b;
    testrel t;
    testtup tt;
    char err[512] = "";
    const char *vals[7];

    (void)state;
    outbox_colmap_init(&m);
    testrel_init(&t, "public.outbox", 7, std_names, std_types);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), 0);

    for (int r = 0; r < 4; r++) {
        char needle[128];

        memcpy(vals, std_vals, sizeof vals);
        vals[r] = NULL;
        testtup_init(&tt, 7, vals);
        snprintf(needle, sizeof needle, "\"%s\" (role %s) is null", std_names[r],
                 outbox_role_name((enum outbox_role)r));
        expect_poison(&b, &t.e, &tt.t, needle);

        vals[r] = "";
        testtup_init(&tt, 7, vals);
        snprintf(needle, sizeof needle, "\"%s\" (role %s) is empty", std_names[r],
                 outbox_role_name((enum outbox_role)r));
        expect_poison(&b, &t.e, &tt.t, needle);

        testtup_init(&tt, 7, std_vals);
        tt.v[r].kind = 'u';
        tt.v[r].data = NULL;
        tt.v[r].len = 0;
        expect_poison(&b, &t.e, &tt.t, "unchanged toast");

        testtup_init(&tt, 7, std_vals);
        tt.v[r].kind = 'b';
        expect_poison(&b, &t.e, &tt.t, "binary");

        testtup_init(&tt, 7, std_vals);
        tt.v[r].kind = 'q';
        expect_poison(&b, &t.e, &tt.t, "unknown kind");
    }
    /* Binary payload would be read as text downstream: refused too. */
    testtup_init(&tt, 7, std_vals);
    tt.v[OB_PAYLOAD].kind = 'b';
    expect_poison(&b, &t.e, &tt.t, "binary");

    /* Column count must match the relation, both ways. */
    testtup_init(&tt, 6, std_vals);
    expect_poison(&b, &t.e, &tt.t, "has 6 columns but the relation has 7");
    static const char *const eight[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    testtup_init(&tt, 8, eight);
    expect_poison(&b, &t.e, &tt.t, "has 8 columns");
    testtup_init(&tt, 0, std_vals);
    expect_poison(&b, &t.e, &tt.t, "has 0 columns");

    /* A binding whose required role is unbound (bind returned -1). */
    outbox_binding broken = b;
    broken.idx[OB_AGGREGATE_ID] = -1;
    testtup_init(&tt, 7, std_vals);
    expect_poison(&broken, &t.e, &tt.t, "no column for role aggregate_id");
    /* A stale binding pointing past the tuple. */
    broken = b;
    broken.idx[OB_TYPE] = 9;
    expect_poison(&broken, &t.e, &tt.t, "outside");
    /* A 't' value with a length but no data. */
    testtup_init(&tt, 7, std_vals);
    tt.v[OB_TRACEPARENT].data = NULL;
    expect_poison(&b, &t.e, &tt.t, "no data");

    outbox_row row;
    assert_int_equal(outbox_extract(NULL, &t.e, &tt.t, &row, err, sizeof err), -1);
    assert_int_equal(outbox_extract(&b, NULL, &tt.t, &row, err, sizeof err), -1);
    assert_int_equal(outbox_extract(&b, &t.e, NULL, &row, err, sizeof err), -1);
}

/* After ALTER TABLE ADD COLUMN the relation has one more column: a tuple
 * bound against the new version extracts, one of the old width does not. */
static void test_extract_after_alter(void **state)
{
    static const char *const names8[] = {
        "id",      "aggregatetype", "aggregateid",        "type",
        "payload", "timestamp",     "tracingspancontext", "priority"};
    static const uint32_t types8[] = {OID_UUID,  OID_TEXT,        OID_TEXT, OID_TEXT,
                                      OID_JSONB, OID_TIMESTAMPTZ, OID_TEXT, 16390};
    const char *vals[8];
    outbox_colmap m;
    outbox_binding b;
    outbox_row row;
    testrel t;
    testtup tt;
    char err[512] = "";

    (void)state;
    outbox_colmap_init(&m);
    testrel_init(&t, "public.outbox", 8, names8, types8);
    assert_int_equal(outbox_bind(&m, &t.e, &b, err, sizeof err), 0);
    memcpy(vals, std_vals, sizeof std_vals);
    vals[7] = "high";
    testtup_init(&tt, 8, vals);
    assert_int_equal(outbox_extract(&b, &t.e, &tt.t, &row, err, sizeof err), 0);
    assert_field(&row.f[OB_TYPE], "OrderPlaced");
    testtup_init(&tt, 7, std_vals);
    assert_int_equal(outbox_extract(&b, &t.e, &tt.t, &row, err, sizeof err), -1);
}

static void split_ok(const char *arg, const char *want_table, const char *want_spec)
{
    char table[OUTBOX_QUALNAME_MAX];
    const char *spec = NULL;
    char err[256] = "";

    memset(table, 'x', sizeof table);
    if (outbox_column_split(arg, table, &spec, err, sizeof err) != 0)
        fail_msg("\"%s\": %s", arg, err);
    assert_string_equal(table, want_table);
    assert_string_equal(spec, want_spec);
    /* spec points into arg, not at a copy. */
    assert_true(spec >= arg && spec <= arg + strlen(arg));
}

static void split_bad(const char *arg, const char *needle)
{
    char table[OUTBOX_QUALNAME_MAX];
    const char *spec;
    char err[256] = "";

    assert_int_equal(outbox_column_split(arg, table, &spec, err, sizeof err), -1);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void test_column_split(void **state)
{
    char name63[64], arg[200];

    (void)state;
    split_ok("aggregate_id=order_id", "", "aggregate_id=order_id");
    split_ok("orders.outbox:aggregate_id=order_id", "orders.outbox", "aggregate_id=order_id");
    /* No schema: public, as --table does. */
    split_ok("outbox:type=kind", "public.outbox", "type=kind");
    /* A ':' after the '=' belongs to the column name. */
    split_ok("type=a:b", "", "type=a:b");
    split_ok("billing.outbox:type=a:b", "billing.outbox", "type=a:b");
    /* Without '=', the prefix is still split off; the spec fails later. */
    split_ok("orders.outbox:aggregate_id", "orders.outbox", "aggregate_id");
    split_ok("", "", "");
    memset(name63, 'n', 63);
    name63[63] = '\0';
    snprintf(arg, sizeof arg, "%s.%s:id=x", name63, name63);
    char want[OUTBOX_QUALNAME_MAX];
    snprintf(want, sizeof want, "%s.%s", name63, name63);
    split_ok(arg, want, "id=x");

    split_bad(":id=x", "table prefix \"\" of column mapping \":id=x\" is not [SCHEMA.]TABLE");
    split_bad(".outbox:id=x", "not [SCHEMA.]TABLE");
    split_bad("orders.:id=x", "not [SCHEMA.]TABLE");
    split_bad("a.b.c:id=x", "not [SCHEMA.]TABLE");
    snprintf(arg, sizeof arg, "%sn.t:id=x", name63);
    split_bad(arg, "longer than 63");
    snprintf(arg, sizeof arg, "s.%sn:id=x", name63);
    split_bad(arg, "longer than 63");
    split_bad(NULL, "no column mapping");
}

static void test_colmap_build(void **state)
{
    static const char *const args[] = {
        "orders.outbox:aggregate_id=order_id", /* before the global one: still wins */
        "aggregate_id=agg",
        "payload=body",
        "billing.outbox:payload=doc",
        "outbox:type=kind", /* public.outbox */
    };
    outbox_colmap m;
    char err[512] = "";

    (void)state;
    assert_int_equal(outbox_colmap_build(&m, "orders.outbox", args, 5, err, sizeof err), 0);
    assert_string_equal(m.col[OB_AGGREGATE_ID], "order_id");
    assert_string_equal(m.col[OB_PAYLOAD], "body");
    assert_string_equal(m.col[OB_TYPE], "type");
    assert_string_equal(m.col[OB_ID], "id");

    assert_int_equal(outbox_colmap_build(&m, "billing.outbox", args, 5, err, sizeof err), 0);
    assert_string_equal(m.col[OB_AGGREGATE_ID], "agg");
    assert_string_equal(m.col[OB_PAYLOAD], "doc");

    assert_int_equal(outbox_colmap_build(&m, "public.outbox", args, 5, err, sizeof err), 0);
    assert_string_equal(m.col[OB_TYPE], "kind");
    assert_string_equal(m.col[OB_AGGREGATE_ID], "agg");

    /* A table nobody mentions: the unprefixed ones only. */
    assert_int_equal(outbox_colmap_build(&m, "other.t", args, 5, err, sizeof err), 0);
    assert_string_equal(m.col[OB_AGGREGATE_ID], "agg");
    assert_string_equal(m.col[OB_TYPE], "type");
    /* No arguments: the defaults. */
    assert_int_equal(outbox_colmap_build(&m, "public.outbox", NULL, 0, err, sizeof err), 0);
    assert_string_equal(m.col[OB_AGGREGATE_ID], "aggregateid");

    /* Later mappings of the same role win within a pass. */
    static const char *const twice[] = {"t.o:id=a", "t.o:id=b", "id=c", "id=d"};
    assert_int_equal(outbox_colmap_build(&m, "t.o", twice, 4, err, sizeof err), 0);
    assert_string_equal(m.col[OB_ID], "b");
    assert_int_equal(outbox_colmap_build(&m, "t.x", twice, 4, err, sizeof err), 0);
    assert_string_equal(m.col[OB_ID], "d");

    /* A bad argument is reported for every table, even one it does not
     * name: the command line is wrong either way. */
    static const char *const bad[] = {"t.o:idx=a"};
    assert_int_equal(outbox_colmap_build(&m, "t.x", bad, 1, err, sizeof err), 0);
    assert_int_equal(outbox_colmap_build(&m, "t.o", bad, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "invalid --column \"t.o:idx=a\": unknown role \"idx\""));
    static const char *const badprefix[] = {"id=x", ".o:id=a"};
    assert_int_equal(outbox_colmap_build(&m, "t.x", badprefix, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "not [SCHEMA.]TABLE"));
    assert_int_equal(outbox_colmap_build(NULL, "t.x", bad, 1, err, sizeof err), -1);
    assert_int_equal(outbox_colmap_build(&m, NULL, bad, 1, err, sizeof err), -1);
    assert_int_equal(outbox_colmap_build(&m, "t.x", NULL, 1, err, sizeof err), -1);
}

static void test_message_is_event(void **state)
{
    pgo_message m = {.flags = 1, .transactional = true, .prefix = "outbox"};

    (void)state;
    assert_true(outbox_message_is_event(&m, "outbox"));
    assert_false(outbox_message_is_event(&m, "outbox2"));
    assert_false(outbox_message_is_event(&m, "outbo"));
    assert_false(outbox_message_is_event(&m, ""));
    assert_false(outbox_message_is_event(&m, NULL));
    m.transactional = false;
    m.flags = 0;
    assert_false(outbox_message_is_event(&m, "outbox"));
    m.transactional = true;
    m.prefix = NULL;
    assert_false(outbox_message_is_event(&m, "outbox"));
    assert_false(outbox_message_is_event(NULL, "outbox"));
}

/* Parse from an exactly sized heap copy (ASan sees any read past it). */
static char *msg_copy;

static int from_message(const char *content, size_t len, outbox_message_row *out, char *err,
                        size_t errlen)
{
    free(msg_copy);
    msg_copy = malloc(len ? len : 1);
    assert_non_null(msg_copy);
    memcpy(msg_copy, content, len);
    return outbox_from_message(msg_copy, len, out, err, errlen);
}

static void test_from_message_good(void **state)
{
    static const char json[] =
        "  {\"type\": \"OrderShipped\", \"id\": \"evt-1\", \"aggregate_type\": \"order\",\n"
        "   \"aggregate_id\": \"42\", \"payload\" : {\"total\": 2.50, \"big\": "
        "123456789012345678901234567890, \"s\": \"a}\\\"]\"},\n"
        "   \"traceparent\": \"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\",\n"
        "   \"timestamp\": \"2026-11-23T18:14:13.123456Z\", \"extra\": [1, {\"payload\": 0}]}  ";
    outbox_message_row m;
    char err[512] = "";

    (void)state;
    memset(&m, 0xa5, sizeof m);
    if (from_message(json, strlen(json), &m, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_field(&m.row.f[OB_ID], "evt-1");
    assert_field(&m.row.f[OB_AGGREGATE_TYPE], "order");
    assert_field(&m.row.f[OB_AGGREGATE_ID], "42");
    assert_field(&m.row.f[OB_TYPE], "OrderShipped");
    /* Verbatim: 2.50 and the 30-digit integer keep their digits. */
    assert_field(&m.row.f[OB_PAYLOAD],
                 "{\"total\": 2.50, \"big\": 123456789012345678901234567890, \"s\": \"a}\\\"]\"}");
    assert_true(m.row.f[OB_PAYLOAD].data > msg_copy &&
                m.row.f[OB_PAYLOAD].data < msg_copy + strlen(json));
    assert_field(&m.row.f[OB_TRACEPARENT],
                 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_field(&m.row.f[OB_TIMESTAMP], "2026-11-23T18:14:13.123456Z");
    assert_int_equal(m.row.payload_type_oid, 3802);
    assert_non_null(m.doc);
    outbox_message_row_clear(&m);
    assert_null(m.doc);
    assert_false(m.row.f[OB_ID].present);
    outbox_message_row_clear(&m); /* twice is fine */
    outbox_message_row_clear(NULL);

    /* Minimal: no payload (null), no optional fields; integer ids. */
    static const char minimal[] =
        "{\"id\": 7, \"aggregate_type\": \"a\", \"aggregate_id\": -12, \"type\": \"t\"}";
    assert_int_equal(from_message(minimal, strlen(minimal), &m, err, sizeof err), 0);
    assert_field(&m.row.f[OB_ID], "7");
    assert_field(&m.row.f[OB_AGGREGATE_ID], "-12");
    assert_field(&m.row.f[OB_PAYLOAD], NULL);
    assert_field(&m.row.f[OB_TIMESTAMP], NULL);
    assert_field(&m.row.f[OB_TRACEPARENT], NULL);
    assert_int_equal(m.row.payload_type_oid, 3802);
    outbox_message_row_clear(&m);

    /* Explicit nulls for the optional fields; scalar and escaped payloads;
     * escapes in strings are decoded; a key written with escapes. */
    static const char nulls[] =
        "{\"id\": \"i\", \"aggregate_type\": \"caf\\u00e9\", \"aggregate_id\": \"a\\nb\", "
        "\"type\": \"t\", \"traceparent\": null, \"timestamp\": null, \"pay\\u006coad\": 12.0}";
    assert_int_equal(from_message(nulls, strlen(nulls), &m, err, sizeof err), 0);
    assert_field(&m.row.f[OB_AGGREGATE_TYPE], "caf\xc3\xa9");
    assert_field(&m.row.f[OB_AGGREGATE_ID], "a\nb");
    assert_field(&m.row.f[OB_TRACEPARENT], NULL);
    assert_field(&m.row.f[OB_TIMESTAMP], NULL);
    assert_field(&m.row.f[OB_PAYLOAD], "12.0");
    outbox_message_row_clear(&m);
    static const char jsonnull[] =
        "{\"id\":\"i\",\"aggregate_type\":\"a\",\"aggregate_id\":\"b\",\"type\":\"t\","
        "\"payload\":null}";
    assert_int_equal(from_message(jsonnull, strlen(jsonnull), &m, err, sizeof err), 0);
    assert_field(&m.row.f[OB_PAYLOAD], "null");
    outbox_message_row_clear(&m);
    /* PostgreSQL's timestamptz text is accepted too. */
    static const char pgts[] = "{\"id\":\"i\",\"aggregate_type\":\"a\",\"aggregate_id\":\"b\","
                               "\"type\":\"t\",\"timestamp\":\"2026-11-23 18:14:13+05:30\"}";
    assert_int_equal(from_message(pgts, strlen(pgts), &m, err, sizeof err), 0);
    assert_field(&m.row.f[OB_TIMESTAMP], "2026-11-23 18:14:13+05:30");
    outbox_message_row_clear(&m);
}

static void message_poison(const char *json, const char *needle)
{
    outbox_message_row m;
    char err[512] = "";

    memset(&m, 0xa5, sizeof m);
    if (from_message(json, strlen(json), &m, err, sizeof err) != -1)
        fail_msg("accepted %s", json);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
    /* Cleared: nothing to release, safe to clear anyway. */
    assert_null(m.doc);
    assert_false(m.row.f[OB_ID].present);
    outbox_message_row_clear(&m);
}

#define GOOD_REST "\"aggregate_type\":\"a\",\"aggregate_id\":\"b\",\"type\":\"t\""

static void test_from_message_poison(void **state)
{
    (void)state;
    message_poison("", "not valid json");
    message_poison("{", "not valid json");
    message_poison("{\"id\":\"i\"," GOOD_REST "} x", "not valid json");
    message_poison("{\"id\":\"i\"," GOOD_REST ",}", "not valid json");
    message_poison("[1, 2]", "message content is an array, not a json object");
    message_poison("\"just a string\"", "not valid json");
    message_poison("{\"id\":\"i\",\"id\":\"j\"," GOOD_REST "}", "duplicate");
    message_poison("{\"id\":\"i\"," GOOD_REST ",\"payload\":1,\"pay\\u006coad\":2}", "duplicate");
    message_poison("{\"id\":\"i\\u0000\"," GOOD_REST "}", "not valid json");
    message_poison("{\"id\":\"\xff\"," GOOD_REST "}", "not valid json");
    message_poison("{\"id\":\"i\"," GOOD_REST ",\"payload\":1e400}", "not valid json");

    message_poison("{" GOOD_REST "}", "message has no \"id\"");
    message_poison("{\"id\":\"i\",\"aggregate_id\":\"b\",\"type\":\"t\"}",
                   "message has no \"aggregate_type\"");
    message_poison("{\"id\":\"i\",\"aggregate_type\":\"a\",\"type\":\"t\"}",
                   "message has no \"aggregate_id\"");
    message_poison("{\"id\":\"i\",\"aggregate_type\":\"a\",\"aggregate_id\":\"b\"}",
                   "message has no \"type\"");
    message_poison("{\"id\":null," GOOD_REST "}", "message field \"id\" is null");
    message_poison("{\"id\":\"\"," GOOD_REST "}", "message field \"id\" is empty");
    message_poison("{\"id\":\"i\",\"aggregate_type\":\"\",\"aggregate_id\":\"b\",\"type\":\"t\"}",
                   "\"aggregate_type\" is empty");
    message_poison("{\"id\":\"i\",\"aggregate_type\":\"a\",\"aggregate_id\":\"b\",\"type\":7}",
                   "message field \"type\" is a number, not a string");
    message_poison(
        "{\"id\":\"i\",\"aggregate_type\":[\"a\"],\"aggregate_id\":\"b\",\"type\":\"t\"}",
        "\"aggregate_type\" is an array, not a string");
    message_poison("{\"id\":{}," GOOD_REST "}", "\"id\" is an object");
    message_poison("{\"id\":true," GOOD_REST "}", "\"id\" is a boolean");
    message_poison("{\"id\":4.5," GOOD_REST "}", "\"id\" is a number but not an integer");
    message_poison("{\"id\":1e3," GOOD_REST "}", "not an integer");
    message_poison("{\"id\":\"i\",\"aggregate_type\":\"a\",\"aggregate_id\":-0.5,\"type\":\"t\"}",
                   "\"aggregate_id\" is a number but not an integer");
    message_poison("{\"id\":\"i\"," GOOD_REST ",\"traceparent\":5}",
                   "\"traceparent\" is a number, not a string");
    message_poison("{\"id\":\"i\"," GOOD_REST ",\"timestamp\":1700000000}",
                   "\"timestamp\" is a number");
    message_poison("{\"id\":\"i\"," GOOD_REST ",\"timestamp\":\"yesterday\"}",
                   "\"timestamp\" is not a timestamp");

    outbox_message_row m;
    char err[64];
    assert_int_equal(outbox_from_message(NULL, 5, &m, err, sizeof err), -1);
    assert_int_equal(outbox_from_message("{}", 2, NULL, err, sizeof err), -1);
    /* A tiny error buffer is never overrun. */
    char tiny[4] = "zzz";
    assert_int_equal(outbox_from_message("[]", 2, &m, tiny, 2), -1);
    assert_int_equal(tiny[1], '\0');
    assert_int_equal(tiny[2], 'z');
}

/* The captured message: prefix "outbox", transactional, event content. */
static void test_from_message_fixture(void **state)
{
    const fixture *f = NULL;
    pgo_msg *pm = malloc(sizeof *pm);
    pgo_options o = {.all_kinds = true};
    outbox_message_row m;
    char err[512] = "";

    (void)state;
    assert_non_null(pm);
    for (size_t i = 0; i < NFIXTURES; i++)
        if (strcmp(fixtures[i].name, "0061-M.bin") == 0)
            f = &fixtures[i];
    assert_non_null(f);
    assert_int_equal(pgo_parse_opts(f->data, f->len, &o, pm, err, sizeof err), 0);
    assert_int_equal(pm->kind, PGO_MESSAGE);
    assert_true(outbox_message_is_event(&pm->u.message, "outbox"));
    assert_false(outbox_message_is_event(&pm->u.message, "outbox-relay"));
    if (outbox_from_message(pm->u.message.content, pm->u.message.len, &m, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_field(&m.row.f[OB_ID], "0b7f2a4e-msg-1");
    assert_field(&m.row.f[OB_AGGREGATE_ID], "48");
    assert_field(&m.row.f[OB_TYPE], "OrderShipped");
    assert_field(&m.row.f[OB_PAYLOAD], "{\"orderId\": 48, \"lines\": [1, 2.50, \"x\"]}");
    /* Borrowed from the message content, not copied. */
    assert_ptr_equal(m.row.f[OB_PAYLOAD].data,
                     memmem(pm->u.message.content, pm->u.message.len, "{\"orderId\"", 10));
    assert_field(&m.row.f[OB_TIMESTAMP], "2026-11-23T18:14:13.123456Z");
    outbox_message_row_clear(&m);

    /* The other captured messages are not events, or not event content. */
    for (size_t i = 0; i < NFIXTURES; i++) {
        if (fixtures[i].data[0] != 'M' || &fixtures[i] == f)
            continue;
        assert_int_equal(pgo_parse_opts(fixtures[i].data, fixtures[i].len, &o, pm, err, sizeof err),
                         0);
        assert_false(outbox_message_is_event(&pm->u.message, "outbox"));
        assert_int_equal(
            outbox_from_message(pm->u.message.content, pm->u.message.len, &m, err, sizeof err), -1);
    }
    free(pm);
}

/* Fail the n-th allocation jansson makes, for every n: the function fails
 * cleanly or succeeds, and never leaks (LeakSanitizer in the asan build). */
static long alloc_budget = -1;

static void *failing_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static void test_from_message_alloc_failures(void **state)
{
    static const char json[] = "{\"id\":\"i\",\"aggregate_type\":\"a\",\"aggregate_id\":\"b\","
                               "\"type\":\"t\",\"payload\":{\"k\":[1,2,{\"z\":\"y\"}]},"
                               "\"pa\\u0079load2\":1}";
    outbox_message_row m;
    char err[512];
    int failed = 0;
    long n;

    (void)state;
    json_set_alloc_funcs(failing_malloc, free);
    for (n = 0; n < 1000; n++) {
        int rc;

        alloc_budget = n;
        err[0] = '\0';
        rc = outbox_from_message(json, strlen(json), &m, err, sizeof err);
        if (rc == 0) {
            assert_field(&m.row.f[OB_ID], "i");
            outbox_message_row_clear(&m);
            if (alloc_budget > 0)
                break; /* every allocation has had its turn to fail */
        } else {
            assert_true(err[0] != '\0');
            assert_null(m.doc);
            failed++;
        }
    }
    alloc_budget = -1;
    json_set_alloc_funcs(malloc, free);
    assert_true(failed > 3);
    assert_true(n < 1000);
}

/* A message as the pseudo table "message:PREFIX" with one text column. */
static void test_message_rel(void **state)
{
    (void)state;
    static const char content[] = "{\"id\": 1}";
    pgo_message msg = {.transactional = true,
                       .prefix = "outbox",
                       .content = content,
                       .len = (uint32_t)(sizeof(content) - 1)};
    outbox_message_rel pm;

    outbox_message_rel_init(&pm, &msg);
    assert_string_equal(pm.rel.qualname, "message:outbox");
    assert_int_equal(pm.rel.natts, 1);
    assert_string_equal(pm.rel.atts[0].name, "content");
    assert_int_equal(pm.rel.atts[0].type_oid, 25);
    assert_int_equal(pm.tuple.ncols, 1);
    assert_int_equal(pm.tuple.cols[0].kind, 't');
    assert_ptr_equal(pm.tuple.cols[0].data, content);
    assert_int_equal(pm.tuple.cols[0].len, sizeof(content) - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_rel),
        cmocka_unit_test(test_role_names),
        cmocka_unit_test(test_colmap_defaults),
        cmocka_unit_test(test_colmap_set),
        cmocka_unit_test(test_bind_default),
        cmocka_unit_test(test_bind_by_name),
        cmocka_unit_test(test_bind_missing_required),
        cmocka_unit_test(test_bind_remapped),
        cmocka_unit_test(test_extract_good),
        cmocka_unit_test(test_extract_poison),
        cmocka_unit_test(test_extract_after_alter),
        cmocka_unit_test(test_column_split),
        cmocka_unit_test(test_colmap_build),
        cmocka_unit_test(test_message_is_event),
        cmocka_unit_test(test_from_message_good),
        cmocka_unit_test(test_from_message_poison),
        cmocka_unit_test(test_from_message_fixture),
        cmocka_unit_test(test_from_message_alloc_failures),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);

    free(msg_copy);
    return rc;
}
