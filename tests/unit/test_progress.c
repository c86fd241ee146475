/* progress_format(): percentage, rate and ETA of the one-shot commands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cdc/progress.h"

static void test_half_way(void **state)
{
    char buf[256];
    (void)state;
    /* half done in 10 s: 10 s to go */
    assert_string_equal(progress_format(buf, sizeof(buf), "x", 500, 1000, 500, "rows", 10.0),
                        "x (50%), 50 rows/s, ETA 0:10");
}

static void test_unknown_total_and_start(void **state)
{
    char buf[256];
    (void)state;
    assert_string_equal(progress_format(buf, sizeof(buf), "x", 5, 0, 5, "events", 1.0),
                        "x, 5 events/s, ETA ?");
    /* nothing done yet, no time elapsed: no division by zero */
    assert_string_equal(progress_format(buf, sizeof(buf), "x", 0, 100, 0, "rows", 0.0),
                        "x (0%), 0 rows/s, ETA ?");
}

static void test_done_and_past_total(void **state)
{
    char buf[256];
    (void)state;
    assert_string_equal(progress_format(buf, sizeof(buf), "x", 100, 100, 7, "rows", 2.0),
                        "x (100%), 4 rows/s, ETA 0:00");
    /* rows inserted after the count: never above 100 % nor a negative ETA */
    assert_string_equal(progress_format(buf, sizeof(buf), "x", 150, 100, 150, "rows", 2.0),
                        "x (100%), 75 rows/s, ETA 0:00");
}

static void test_long_eta_capped(void **state)
{
    char buf[256];
    (void)state;
    /* 1 of 1,000,000 in an hour: capped at 99:59:59 */
    assert_string_equal(progress_format(buf, sizeof(buf), "x", 1, 1000000, 1, "rows", 3600.0),
                        "x (0%), 0 rows/s, ETA 99:59:59");
    /* hours shown when over one */
    assert_string_equal(progress_format(buf, sizeof(buf), "x", 1, 3, 1, "rows", 3600.0),
                        "x (33%), 0 rows/s, ETA 2:00:00");
}

static void test_due(void **state)
{
    progress p;
    (void)state;
    progress_init(&p, "x", true, 1000);
    assert_false(progress_due(&p, 1000 + PROGRESS_TTY_MS - 1, false));
    assert_true(progress_due(&p, 1000 + PROGRESS_TTY_MS, false));
    assert_true(progress_due(&p, 1000, true));
    progress_init(&p, "x", false, 1000);
    assert_false(progress_due(&p, 1000 + PROGRESS_TTY_MS, false));
    assert_true(progress_due(&p, 1000 + PROGRESS_LOG_MS, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_way),
        cmocka_unit_test(test_unknown_total_and_start),
        cmocka_unit_test(test_done_and_past_total),
        cmocka_unit_test(test_long_eta_capped),
        cmocka_unit_test(test_due),
    };
    return cmocka_run_group_tests_name("progress", tests, NULL, NULL);
}
