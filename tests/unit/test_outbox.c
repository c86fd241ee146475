#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "decode/outbox.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_names),     cmocka_unit_test(test_colmap_defaults),
        cmocka_unit_test(test_colmap_set),     cmocka_unit_test(test_bind_default),
        cmocka_unit_test(test_bind_by_name),   cmocka_unit_test(test_bind_missing_required),
        cmocka_unit_test(test_bind_remapped),  cmocka_unit_test(test_extract_good),
        cmocka_unit_test(test_extract_poison), cmocka_unit_test(test_extract_after_alter),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
