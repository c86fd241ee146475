/* Unit tests for cdc/admin and the pure parts of cdc/replay: argument
 * parsing, anchor names, the advance decision, the replay refusals and the
 * commit-LSN range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cdc/admin.h"
#include "cdc/replay.h"

#define ARGV(...) ((char *[]){__VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){__VA_ARGS__}) / sizeof(char *)))
#define APARSE(a, err, ...)                                                                        \
    admin_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (a), (err), sizeof(err))
#define RPARSE(a, err, ...)                                                                        \
    replay_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (a), (err), sizeof(err))

static void test_anchor_slot_names(void **state)
{
    (void)state;
    char out[ADMIN_SLOT_MAX], err[256];
    char longname[80];

    assert_int_equal(admin_anchor_slot("nightly", out, err, sizeof(err)), 0);
    assert_string_equal(out, "outbox_anchor_nightly");
    /* a name copied from `anchor list --json` "slot" keeps working */
    assert_int_equal(admin_anchor_slot("outbox_anchor_nightly", out, err, sizeof(err)), 0);
    assert_string_equal(out, "outbox_anchor_nightly");
    assert_int_equal(admin_anchor_slot("", out, err, sizeof(err)), -1);
    assert_int_equal(admin_anchor_slot("outbox_anchor_", out, err, sizeof(err)), -1);
    assert_int_equal(admin_anchor_slot("Nightly", out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "lower-case"));
    assert_int_equal(admin_anchor_slot("a-b", out, err, sizeof(err)), -1);
    assert_int_equal(admin_anchor_slot("a\"b", out, err, sizeof(err)), -1);
    /* 63 bytes in all is the limit */
    memset(longname, 'x', 49);
    longname[49] = '\0';
    assert_int_equal(admin_anchor_slot(longname, out, err, sizeof(err)), 0);
    assert_int_equal(strlen(out), 63);
    longname[49] = 'x';
    longname[50] = '\0';
    assert_int_equal(admin_anchor_slot(longname, out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too long"));
}

static void test_admin_parse(void **state)
{
    (void)state;
    admin_args a;
    char err[512];

    assert_int_equal(APARSE(&a, err, "anchor", "create", "n1", "-d", "dbname=app"), 0);
    assert_int_equal(a.cmd, ADMIN_ANCHOR_CREATE);
    assert_string_equal(a.anchor, "outbox_anchor_n1");
    assert_string_equal(a.conninfo, "dbname=app");
    assert_null(a.from_slot);

    assert_int_equal(APARSE(&a, err, "anchor", "create", "--from-slot", "outbox_relay", "n1"), 0);
    assert_string_equal(a.from_slot, "outbox_relay");
    assert_string_equal(a.conninfo, "");

    assert_int_equal(APARSE(&a, err, "anchor", "list", "--json", "--warn-bytes", "10M"), 0);
    assert_int_equal(a.cmd, ADMIN_ANCHOR_LIST);
    assert_true(a.json);
    assert_int_equal(a.warn_bytes, 10u << 20);

    assert_int_equal(APARSE(&a, err, "anchor", "advance", "n1", "1/A0"), 0);
    assert_int_equal(a.cmd, ADMIN_ANCHOR_ADVANCE);
    assert_int_equal(a.lsn, (UINT64_C(1) << 32) | 0xA0);

    assert_int_equal(APARSE(&a, err, "anchor", "drop", "n1"), 0);
    assert_int_equal(a.cmd, ADMIN_ANCHOR_DROP);

    assert_int_equal(APARSE(&a, err, "status", "--json", "-S", "s2"), 0);
    assert_int_equal(a.cmd, ADMIN_STATUS);
    assert_string_equal(a.slot, "s2");
    assert_int_equal(a.warn_bytes, ADMIN_WARN_BYTES_DEFAULT);

    /* every usage error is a 2 with a message naming the fix */
    assert_int_equal(APARSE(&a, err, "anchor"), 2);
    assert_non_null(strstr(err, "create, list, advance or drop"));
    assert_int_equal(APARSE(&a, err, "anchor", "frob"), 2);
    assert_int_equal(APARSE(&a, err, "anchor", "create"), 2);
    assert_non_null(strstr(err, "anchor create NAME"));
    assert_int_equal(APARSE(&a, err, "anchor", "advance", "n1"), 2);
    assert_int_equal(APARSE(&a, err, "anchor", "advance", "n1", "nope"), 2);
    assert_non_null(strstr(err, "malformed LSN"));
    assert_int_equal(APARSE(&a, err, "anchor", "drop", "n1", "extra"), 2);
    assert_int_equal(APARSE(&a, err, "anchor", "drop", "N1"), 2);
    assert_int_equal(APARSE(&a, err, "anchor", "drop", "n1", "--from-slot", "x"), 2);
    assert_int_equal(APARSE(&a, err, "anchor", "create", "n1", "--from-slot", "outbox_anchor_n1"),
                     2);
    assert_int_equal(APARSE(&a, err, "anchor", "list", "--warn-bytes", "lots"), 2);
    assert_int_equal(APARSE(&a, err, "anchor", "list", "--bogus"), 2);
    assert_non_null(strstr(err, "--bogus"));
    assert_int_equal(APARSE(&a, err, "anchor", "list", "-d"), 2);
    assert_non_null(strstr(err, "needs a value"));
    assert_int_equal(APARSE(&a, err, "status", "extra"), 2);
    assert_int_equal(APARSE(&a, err, "status", "--slot", "Bad"), 2);
    assert_int_equal(APARSE(&a, err, "backup"), 2);
}

static void test_advance_check(void **state)
{
    (void)state;
    char err[512];

    assert_int_equal(admin_advance_check("n", 0x1000, 0x5000, 0x2000, err, sizeof(err)),
                     ADMIN_ADVANCE_GO);
    assert_int_equal(admin_advance_check("n", 0x1000, 0x5000, 0x5000, err, sizeof(err)),
                     ADMIN_ADVANCE_GO);
    assert_int_equal(admin_advance_check("n", 0x1000, 0x5000, 0x1000, err, sizeof(err)),
                     ADMIN_ADVANCE_NOOP);
    assert_int_equal(admin_advance_check("n", 0x1000, 0x5000, 0xFFF, err, sizeof(err)),
                     ADMIN_ADVANCE_REFUSE);
    assert_non_null(strstr(err, "cannot move back"));
    assert_non_null(strstr(err, "0/1000"));
    assert_int_equal(admin_advance_check("n", 0x1000, 0x5000, 0, err, sizeof(err)),
                     ADMIN_ADVANCE_REFUSE);
    assert_int_equal(admin_advance_check("n", 0x1000, 0x5000, 0x5001, err, sizeof(err)),
                     ADMIN_ADVANCE_REFUSE);
    assert_non_null(strstr(err, "past the server"));
}

static void test_replay_parse(void **state)
{
    (void)state;
    replay_args a;
    char err[512];

    assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "n1", "--from", "0/100", "--to", "0/200",
                            "-b", "k:9092", "--topic", "re.{aggregate_type}", "-S", "main_slot",
                            "-d", "dbname=app"),
                     0);
    assert_string_equal(a.anchor, "outbox_anchor_n1");
    assert_int_equal(a.from, 0x100);
    assert_true(a.has_to);
    assert_int_equal(a.to, 0x200);
    assert_false(a.dry_run);
    assert_string_equal(a.cfg.brokers, "k:9092");
    assert_string_equal(a.cfg.topic, "re.{aggregate_type}");
    assert_string_equal(a.cfg.slot, "main_slot");
    assert_string_equal(a.cfg.conninfo, "dbname=app");
    replay_args_free(&a);

    /* --opt=value forms, from == to, dry run without brokers */
    assert_int_equal(
        RPARSE(&a, err, "replay", "--anchor=n1", "--from=0/100", "--to=0/100", "--dry-run"), 0);
    assert_true(a.dry_run);
    assert_int_equal(a.from, a.to);
    assert_string_equal(a.cfg.slot, "outbox_relay");
    replay_args_free(&a);

    /* a dry run's -b given by the user wins over the placeholder */
    assert_int_equal(RPARSE(&a, err, "replay", "--dry-run", "--anchor", "n1", "--from", "0/1", "-b",
                            "real:9092"),
                     0);
    assert_string_equal(a.cfg.brokers, "real:9092");
    replay_args_free(&a);

    assert_int_equal(RPARSE(&a, err, "replay", "--from", "0/100", "--dry-run"), 2);
    assert_non_null(strstr(err, "--anchor"));
    replay_args_free(&a);
    assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "n1", "--dry-run"), 2);
    assert_non_null(strstr(err, "--from"));
    replay_args_free(&a);
    assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "n1", "--from", "0/200", "--to", "0/100",
                            "--dry-run"),
                     2);
    assert_non_null(strstr(err, "swap"));
    replay_args_free(&a);
    assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "n1", "--from", "x", "--dry-run"), 2);
    assert_non_null(strstr(err, "malformed --from"));
    replay_args_free(&a);
    assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "n1", "--from", "0/1", "--to"), 2);
    assert_non_null(strstr(err, "needs a value"));
    replay_args_free(&a);
    assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "Bad", "--from", "0/1", "--dry-run"), 2);
    replay_args_free(&a);
    static const char *const refused[] = {"--start-lsn", "--end-lsn", "--create-slot", "--http"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "n1", "--from", "0/1", "--dry-run",
                                (char *)refused[i], "0/5"),
                         2);
        assert_non_null(strstr(err, refused[i]));
        replay_args_free(&a);
    }
    /* run options are still checked; no broker without --dry-run is refused */
    assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "n1", "--from", "0/1"), 2);
    assert_non_null(strstr(err, "brokers"));
    replay_args_free(&a);
    assert_int_equal(RPARSE(&a, err, "replay", "--anchor", "n1", "--from", "0/1", "--dry-run",
                            "--format", "xml"),
                     2);
    assert_non_null(strstr(err, "--format"));
    replay_args_free(&a);
}

static void test_replay_check(void **state)
{
    (void)state;
    const replay_anchor_state ok = {.exists = true, .usable = true, .confirmed = 0x1000};
    replay_anchor_state an;
    uint64_t to = 0;
    char err[512];

    /* a plain range; from == confirmed; from == to */
    assert_int_equal(replay_check("n", &ok, 0x1000, true, 0x2000, 0x9000, &to, err, sizeof(err)),
                     0);
    assert_int_equal(to, 0x2000);
    assert_int_equal(replay_check("n", &ok, 0x1800, true, 0x1800, 0x9000, &to, err, sizeof(err)),
                     0);
    assert_int_equal(to, 0x1800);
    /* no --to: up to (excluding) the server's position now */
    assert_int_equal(replay_check("n", &ok, 0x1000, false, 0, 0x9000, &to, err, sizeof(err)), 0);
    assert_int_equal(to, 0x8FFF);
    /* --to equal to the server's position means the same */
    assert_int_equal(replay_check("n", &ok, 0x1000, true, 0x9000, 0x9000, &to, err, sizeof(err)),
                     0);
    assert_int_equal(to, 0x8FFF);

    an = (replay_anchor_state){0};
    assert_int_equal(replay_check("n", &an, 0x1000, false, 0, 0x9000, &to, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not exist"));
    an = ok;
    an.usable = false;
    assert_int_equal(replay_check("n", &an, 0x1000, false, 0, 0x9000, &to, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "pgoutput"));
    an = ok;
    an.lost = true;
    assert_int_equal(replay_check("n", &an, 0x1000, false, 0, 0x9000, &to, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "lost"));

    /* from > to */
    assert_int_equal(replay_check("n", &ok, 0x2001, true, 0x2000, 0x9000, &to, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "swap"));
    /* to before the anchor: names the earliest possible LSN */
    assert_int_equal(replay_check("n", &ok, 0x800, true, 0xFFF, 0x9000, &to, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "--to 0/FFF"));
    assert_non_null(strstr(err, "0/1000"));
    /* from before the anchor, 0/0 included */
    assert_int_equal(replay_check("n", &ok, 0xFFF, true, 0x2000, 0x9000, &to, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "give --from 0/1000 or later"));
    assert_int_equal(replay_check("n", &ok, 0, false, 0, 0x9000, &to, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "--from 0/0"));
    assert_non_null(strstr(err, "0/1000"));
    /* from at or after the server's position */
    assert_int_equal(replay_check("n", &ok, 0x9000, false, 0, 0x9000, &to, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "server's current position 0/9000"));
    assert_int_equal(replay_check("n", &ok, 0xA000, true, 0xB000, 0x9000, &to, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "--from 0/A000"));
    /* to past the server */
    assert_int_equal(replay_check("n", &ok, 0x1000, true, 0x9001, 0x9000, &to, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "leave --to out"));
    /* high LSNs compare as 64-bit values */
    an = ok;
    an.confirmed = UINT64_C(0x100000000);
    assert_int_equal(
        replay_check("n", &an, 0xFFFFFFFF, false, 0, UINT64_C(0x200000000), &to, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "1/0"));
}

static void test_replay_range(void **state)
{
    (void)state;
    assert_true(replay_in_range(0x100, 0x100, 0x200));
    assert_true(replay_in_range(0x200, 0x100, 0x200));
    assert_false(replay_in_range(0xFF, 0x100, 0x200));
    assert_false(replay_in_range(0x201, 0x100, 0x200));
    assert_true(replay_in_range(0x100, 0x100, 0x100));
    assert_false(replay_in_range(0, 0x100, 0x100));
    assert_true(replay_in_range(UINT64_MAX, 0, UINT64_MAX));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anchor_slot_names), cmocka_unit_test(test_admin_parse),
        cmocka_unit_test(test_advance_check),     cmocka_unit_test(test_replay_parse),
        cmocka_unit_test(test_replay_check),      cmocka_unit_test(test_replay_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
