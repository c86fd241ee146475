/* Unit tests for cdc/slotstate: the --state-file round trip and its refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cdc/slotstate.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/obx-slotstate.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/state", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir);
    return 0;
}

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_missing_file_is_unknown(void **state)
{
    (void)state;
    slot_history h = {.known = true};
    char err[256];
    unlink(path);
    assert_int_equal(slotstate_load(path, "s", &h, err, sizeof(err)), 0);
    assert_false(h.known);
}

static void test_round_trip(void **state)
{
    (void)state;
    slot_history h = {.known = true, .systemid = "7441234567890123456", .timeline = 3}, back;
    char err[256];
    assert_int_equal(slotstate_save(path, "outbox_relay", &h, err, sizeof(err)), 0);
    assert_int_equal(slotstate_load(path, "outbox_relay", &back, err, sizeof(err)), 0);
    assert_true(back.known);
    assert_string_equal(back.systemid, "7441234567890123456");
    assert_int_equal(back.timeline, 3);
    /* another slot's file says nothing about this one */
    assert_int_equal(slotstate_load(path, "other", &back, err, sizeof(err)), 0);
    assert_false(back.known);
    /* saved again over the old one */
    h.timeline = 4;
    assert_int_equal(slotstate_save(path, "outbox_relay", &h, err, sizeof(err)), 0);
    assert_int_equal(slotstate_load(path, "outbox_relay", &back, err, sizeof(err)), 0);
    assert_int_equal(back.timeline, 4);
}

static void test_malformed_refused(void **state)
{
    (void)state;
    slot_history h;
    char err[256];
    static const char *const bad[] = {"", "garbage\n", "slot=s system=1\n",
                                      "slot=s system=1 timeline=0\n",
                                      "slot=s system=1 timeline=x\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(bad[i]);
        err[0] = '\0';
        assert_int_equal(slotstate_load(path, "s", &h, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "malformed"));
    }
}

static void test_unwritable(void **state)
{
    (void)state;
    slot_history h = {.known = true, .systemid = "1", .timeline = 1};
    char err[256];
    assert_int_equal(slotstate_save("/nonexistent-dir/state", "s", &h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot write"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_file_is_unknown),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_unwritable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
