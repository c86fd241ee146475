/* Unit tests for cdc/check's pure parts: accepted column types, the
 * wal_status verdict, the exit code and the two output forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cdc/check.h"

static void test_types(void **state)
{
    (void)state;
    assert_true(check_type_accepted(OB_TIMESTAMP, "timestamptz", false));
    assert_false(check_type_accepted(OB_TIMESTAMP, "timestamp", false));
    assert_false(check_type_accepted(OB_TIMESTAMP, "text", false));
    assert_true(check_type_accepted(OB_ID, "uuid", false));
    assert_true(check_type_accepted(OB_ID, "int8", false));
    assert_false(check_type_accepted(OB_ID, "jsonb", false));
    assert_true(check_type_accepted(OB_PAYLOAD, "jsonb", false));
    assert_true(check_type_accepted(OB_PAYLOAD, "bytea", false));
    assert_false(check_type_accepted(OB_PAYLOAD, "int4", false));
    assert_true(check_type_accepted(OB_AGGREGATE_TYPE, "varchar", false));
    assert_false(check_type_accepted(OB_AGGREGATE_TYPE, "int4", false));
    assert_false(check_type_accepted(OB_TYPE, "uuid", false));
    assert_true(check_type_accepted(OB_TRACEPARENT, "text", false));
    /* debezium: a timestamp without time zone, or epoch milliseconds */
    assert_true(check_type_accepted(OB_TIMESTAMP, "timestamp", true));
    assert_true(check_type_accepted(OB_TIMESTAMP, "int8", true));
    assert_false(check_type_accepted(OB_TIMESTAMP, "text", true));
    assert_false(check_type_accepted(OB_PAYLOAD, "int4", true));
    assert_non_null(strstr(check_types_of(OB_TIMESTAMP, false), "timestamptz"));
}

static void test_wal_status(void **state)
{
    (void)state;
    assert_int_equal(check_wal_status("reserved"), CHECK_OK);
    assert_int_equal(check_wal_status(""), CHECK_OK); /* before PostgreSQL 13 */
    assert_int_equal(check_wal_status("extended"), CHECK_WARN);
    assert_int_equal(check_wal_status("unreserved"), CHECK_FAIL);
    assert_int_equal(check_wal_status("lost"), CHECK_FAIL);
}

static void test_report(void **state)
{
    (void)state;
    check_report r = {0};
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    check_add(&r, "a", CHECK_OK, NULL, "fine %d", 1);
    check_add(&r, "b", CHECK_WARN, "do x", "hmm");
    assert_int_equal(check_exit_code(&r), 0);
    check_add(&r, "c", CHECK_FAIL, "do \"y\"", "broken");
    check_add(&r, "d", CHECK_SKIP, NULL, "skipped");
    assert_int_equal(check_exit_code(&r), 1);

    f = open_memstream(&buf, &len);
    check_print(&r, false, f);
    fclose(f);
    assert_non_null(strstr(buf, "\xE2\x9C\x93 a: fine 1\n"));
    assert_non_null(strstr(buf, "\xE2\x9C\x97 c: broken\n    fix: do \"y\"\n"));
    assert_non_null(strstr(buf, "1 ok, 1 warnings, 1 to fix, 1 skipped\n"));
    free(buf);

    f = open_memstream(&buf, &len);
    check_print(&r, true, f);
    fclose(f);
    json_error_t jerr;
    json_t *doc = json_loads(buf, 0, &jerr);
    assert_non_null(doc);
    assert_true(json_is_false(json_object_get(doc, "ok")));
    assert_int_equal(json_integer_value(json_object_get(doc, "failed")), 1);
    json_t *c = json_array_get(json_object_get(doc, "checks"), 2);
    assert_string_equal(json_string_value(json_object_get(c, "status")), "fail");
    assert_string_equal(json_string_value(json_object_get(c, "fix")), "do \"y\"");
    assert_null(json_object_get(json_array_get(json_object_get(doc, "checks"), 0), "fix"));
    json_decref(doc);
    free(buf);
    check_report_free(&r);
    check_report_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_wal_status),
        cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
