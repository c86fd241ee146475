/*
 * The formats' table (schema/format.c) against what the rest of the relay
 * relies on: ENVELOPE_FORMAT_NAMES (the usage text) lists exactly the
 * table's names in enum order, each name parses back to its enum, and no
 * --field header can take the name of a header a format writes itself —
 * checked by building a record that makes each format write every header
 * it has and offering each of those names as a header field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "schema/envelope.h"

static void test_names_match_table(void **state)
{
    char joined[256] = "";
    enum envelope_format back;

    (void)state;
    for (int i = 0; i < ENVELOPE_FORMAT_COUNT; i++) {
        const char *name = envelope_format_name((enum envelope_format)i);

        assert_string_not_equal(name, "?");
        assert_int_equal(envelope_format_parse(name, &back), 0);
        assert_int_equal(back, i);
        if (i > 0)
            strcat(joined, ", ");
        strcat(joined, name);
    }
    assert_string_equal(joined, ENVELOPE_FORMAT_NAMES);
    assert_string_equal(envelope_format_name(ENVELOPE_FORMAT_COUNT), "?");
}

static outbox_field fld(const char *s)
{
    return (outbox_field){.data = s, .len = strlen(s), .present = true};
}

static void test_own_headers_are_reserved(void **state)
{
    static const envelope_field field = {
        .column = "region", .name = "region", .placement = ENVELOPE_PLACE_ENVELOPE};
    const envelope_extra extra = {.field = &field, .data = "eu", .len = 2, .type_oid = 25};
    envelope_source src = {
        .lsn = 1, .commit_lsn = 2, .db = "app", .table = "public.outbox", .slot = "s"};
    outbox_row row;
    size_t checked = 0;

    (void)state;
    memset(&row, 0, sizeof row);
    row.f[OB_ID] = fld("id-1");
    row.f[OB_AGGREGATE_TYPE] = fld("order");
    row.f[OB_AGGREGATE_ID] = fld("42");
    row.f[OB_TYPE] = fld("OrderPlaced");
    row.f[OB_PAYLOAD] = fld("\\x0102"); /* bytea: payload-encoding where a format has it */
    row.payload_type_oid = 17;
    row.f[OB_TRACEPARENT] = fld("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    for (int i = 0; i < ENVELOPE_FORMAT_COUNT; i++) {
        envelope_opts o = {.format = (enum envelope_format)i, .topic_tmpl = "t"};
        envelope_msg m;
        char err[256];

        o.fields = &field;
        o.nfields = 1;
        assert_int_equal(envelope_opts_check(&o, err, sizeof err), 0);
        if (envelope_build_opts(&o, &row, &extra, 1, &src, &m, err, sizeof err) != 0)
            fail_msg("%s: %s", envelope_format_name(o.format), err);
        for (int h = 0; h < m.nheaders; h++) {
            envelope_field shadow = {.column = "c", .placement = ENVELOPE_PLACE_HEADER};
            envelope_opts so = {
                .format = o.format, .topic_tmpl = "t", .fields = &shadow, .nfields = 1};

            snprintf(shadow.name, sizeof shadow.name, "%s", m.headers[h].name);
            if (envelope_opts_check(&so, err, sizeof err) == 0)
                fail_msg("%s writes header \"%s\" but --field c:header:%s is accepted",
                         envelope_format_name(o.format), m.headers[h].name, m.headers[h].name);
            checked++;
        }
        envelope_msg_clear(&m);
    }
    /* envelope 7, debezium 3, cloudevents 2, cloudevents-binary 10 (ce_region) */
    assert_int_equal(checked, 22);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_match_table),
        cmocka_unit_test(test_own_headers_are_reserved),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
