#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "decode/lsn.h"

static void parse_ok(const char *s, uint64_t want)
{
    uint64_t got = 12345;

    if (lsn_parse(s, &got) != 0)
        fail_msg("lsn_parse(\"%s\") failed", s);
    assert_int_equal(got, want);
}

static void parse_bad(const char *s)
{
    uint64_t got = 777;

    if (lsn_parse(s, &got) != -1)
        fail_msg("lsn_parse(\"%s\") accepted garbage", s);
    assert_int_equal(got, 777); /* untouched on error */
}

static void test_lsn_parse_valid(void **state)
{
    (void)state;
    parse_ok("0/0", 0);
    parse_ok("FFFFFFFF/FFFFFFFF", UINT64_MAX);
    parse_ok("ffffffff/ffffffff", UINT64_MAX);
    parse_ok("16/B374D848", UINT64_C(0x16B374D848));
    parse_ok("16/b374d848", UINT64_C(0x16B374D848));
    parse_ok("0/1", 1);
    parse_ok("1/0", UINT64_C(1) << 32);
    parse_ok("00000001/00000002", (UINT64_C(1) << 32) | 2);
    parse_ok("aBcD/EfAb", (UINT64_C(0xABCD) << 32) | 0xEFAB);
}

static void test_lsn_parse_invalid(void **state)
{
    (void)state;
    parse_bad("");
    parse_bad("/");
    parse_bad("1/");
    parse_bad("/1");
    parse_bad("G/1");
    parse_bad("1/G");
    parse_bad("123456789/0");
    parse_bad("0/123456789");
    parse_bad("000000000/0"); /* nine digits even when zero */
    parse_bad(" 0/1");
    parse_bad("0/1 ");
    parse_bad("0 /1");
    parse_bad("0/ 1");
    parse_bad("0/1\n");
    parse_bad("\t0/1");
    parse_bad("+1/1");
    parse_bad("-1/1");
    parse_bad("1/-1");
    parse_bad("1/+1");
    parse_bad("0x1/1");
    parse_bad("1/0x1");
    parse_bad("1//1");
    parse_bad("1/1/1");
    parse_bad("11");
    parse_bad("1.1");
    parse_bad(NULL);
    assert_int_equal(lsn_parse("0/0", NULL), -1);
}

static void test_lsn_format(void **state)
{
    char buf[LSN_BUFSZ];
    uint64_t back;
    static const uint64_t samples[] = {0,
                                       1,
                                       UINT64_C(0x16B374D848),
                                       UINT64_C(0xFFFFFFFF),
                                       UINT64_C(0x100000000),
                                       UINT64_MAX,
                                       UINT64_C(0x8000000000000000)};

    (void)state;
    assert_string_equal(lsn_format(0, buf), "0/0");
    assert_string_equal(lsn_format(UINT64_MAX, buf), "FFFFFFFF/FFFFFFFF");
    assert_int_equal(strlen(buf) + 1, LSN_BUFSZ);
    assert_string_equal(lsn_format(UINT64_C(0x16B374D848), buf), "16/B374D848");
    assert_string_equal(lsn_format(UINT64_C(0x100000000), buf), "1/0");
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        assert_ptr_equal(lsn_format(samples[i], buf), buf);
        assert_int_equal(lsn_parse(buf, &back), 0);
        assert_int_equal(back, samples[i]);
    }
}

static void test_pgtime_to_unix(void **state)
{
    (void)state;
    assert_int_equal(pgtime_to_unix_us(0), PGTIME_UNIX_OFFSET_US);
    assert_int_equal(pgtime_to_unix_us(-PGTIME_UNIX_OFFSET_US), 0);
    assert_int_equal(pgtime_to_unix_us(-1), PGTIME_UNIX_OFFSET_US - 1);
    /* +/-infinity must saturate, not wrap around. */
    assert_true(pgtime_to_unix_us(INT64_MAX) == INT64_MAX);
    assert_true(pgtime_to_unix_us(INT64_MAX - 5) == INT64_MAX);
    assert_true(pgtime_to_unix_us(INT64_MIN) == INT64_MIN + PGTIME_UNIX_OFFSET_US);
}

static void test_pgtime_format(void **state)
{
    char buf[PGTIME_BUFSZ];
    const int64_t day = INT64_C(86400000000);

    (void)state;
    assert_string_equal(pgtime_format(0, buf), "2000-01-01T00:00:00.000000Z");
    assert_string_equal(pgtime_format(1, buf), "2000-01-01T00:00:00.000001Z");
    /* Pre-2000 times are negative on the wire. */
    assert_string_equal(pgtime_format(-1, buf), "1999-12-31T23:59:59.999999Z");
    assert_string_equal(pgtime_format(-PGTIME_UNIX_OFFSET_US, buf), "1970-01-01T00:00:00.000000Z");
    assert_string_equal(pgtime_format(-PGTIME_UNIX_OFFSET_US - 1, buf),
                        "1969-12-31T23:59:59.999999Z");
    /* 2000 is a leap year (divisible by 400). */
    assert_string_equal(pgtime_format(59 * day, buf), "2000-02-29T00:00:00.000000Z");
    assert_string_equal(pgtime_format(60 * day, buf), "2000-03-01T00:00:00.000000Z");
    assert_string_equal(pgtime_format(366 * day - 1, buf), "2000-12-31T23:59:59.999999Z");
    /* 2026-11-23T18:14:13.123456Z = unix 1795457653.123456 */
    assert_string_equal(pgtime_format(INT64_C(1795457653123456) - PGTIME_UNIX_OFFSET_US, buf),
                        "2026-11-23T18:14:13.123456Z");
}

static void test_unixtime_format(void **state)
{
    char buf[PGTIME_BUFSZ];

    (void)state;
    assert_string_equal(unixtime_format(0, buf), "1970-01-01T00:00:00.000000Z");
    assert_string_equal(unixtime_format(-1, buf), "1969-12-31T23:59:59.999999Z");
    assert_string_equal(unixtime_format(-1000000, buf), "1969-12-31T23:59:59.000000Z");
    assert_string_equal(unixtime_format(-1000001, buf), "1969-12-31T23:59:58.999999Z");
    /* 2024-02-29 and the day after; 1900 is not a leap year. */
    assert_string_equal(unixtime_format(INT64_C(1709164800) * 1000000, buf),
                        "2024-02-29T00:00:00.000000Z");
    assert_string_equal(unixtime_format(INT64_C(1709251200) * 1000000, buf),
                        "2024-03-01T00:00:00.000000Z");
    assert_string_equal(unixtime_format(INT64_C(-2203891200) * 1000000, buf),
                        "1900-03-01T00:00:00.000000Z");
    assert_string_equal(unixtime_format(INT64_C(-2203977600) * 1000000, buf),
                        "1900-02-28T00:00:00.000000Z");
    assert_string_equal(unixtime_format(INT64_C(-62135596800) * 1000000, buf),
                        "0001-01-01T00:00:00.000000Z");
    assert_string_equal(unixtime_format(INT64_C(253402300799999999), buf),
                        "9999-12-31T23:59:59.999999Z");
    /* Extremes must not overflow the buffer or crash. */
    assert_true(strlen(unixtime_format(INT64_MAX, buf)) < PGTIME_BUFSZ);
    assert_true(strlen(unixtime_format(INT64_MIN, buf)) < PGTIME_BUFSZ);
    assert_true(strlen(pgtime_format(INT64_MIN, buf)) < PGTIME_BUFSZ);
}

/* Cross-check against glibc's gmtime_r (proleptic Gregorian, UTC). */
static void test_unixtime_matches_gmtime(void **state)
{
    char buf[PGTIME_BUFSZ], want[PGTIME_BUFSZ + 8];
    uint64_t x = 0x9E3779B97F4A7C15u;
    const int64_t lo = INT64_C(-62135596800), hi = INT64_C(253402300799); /* years 1..9999 */

    (void)state;
    for (int i = 0; i < 200000; i++) {
        struct tm tm;
        time_t t;
        int64_t secs, us, got;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        secs = lo + (int64_t)(x % (uint64_t)(hi - lo + 1));
        us = (int64_t)((x >> 20) % 1000000);
        t = (time_t)secs;
        assert_non_null(gmtime_r(&t, &tm));
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)us);
        unixtime_format(secs * 1000000 + us, buf);
        if (strcmp(buf, want) != 0)
            fail_msg("%lld: got %s want %s", (long long)secs, buf, want);
        /* And back through the text parser, with a space and "+00". */
        want[10] = ' ';
        strcpy(want + 26, "+00");
        assert_int_equal(pgtime_parse_text(want, strlen(want), &got), 0);
        assert_true(got == secs * 1000000 + us);
    }
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void lsn_format_check(uint64_t lsn)
{
    char buf[LSN_BUFSZ], want[32];
    int wn = snprintf(want, sizeof want, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
    size_t n;

    memset(buf, 'x', sizeof buf);
    n = lsn_format_len(lsn, buf);
    if (strcmp(buf, want) != 0 || n != (size_t)wn)
        fail_msg("lsn %llx: got \"%s\" (%zu) want \"%s\" (%d)", (unsigned long long)lsn, buf, n,
                 want, wn);
    memset(buf, 'x', sizeof buf);
    assert_ptr_equal(lsn_format(lsn, buf), buf);
    assert_string_equal(buf, want);
}

/* The hand-written formatter against snprintf: every digit count of each
 * half, the carries between them, and random positions. */
static void test_lsn_format_matches_snprintf(void **state)
{
    uint64_t x = 0xD1B54A32D192ED03u;

    (void)state;
    lsn_format_check(0);
    lsn_format_check(UINT64_MAX);
    for (int b = 0; b < 64; b++) {
        uint64_t p = UINT64_C(1) << b;

        lsn_format_check(p);
        lsn_format_check(p - 1);
        lsn_format_check(p + 1);
        lsn_format_check(~p);
        lsn_format_check(UINT64_MAX >> b);
        lsn_format_check(UINT64_MAX << b);
    }
    for (int i = 0; i < 200000; i++) {
        uint64_t r = xorshift(&x);

        /* shift so that short halves are as common as long ones */
        lsn_format_check(r >> (r % 64));
        lsn_format_check(r);
    }
}

/* What the old snprintf code printed, with glibc's gmtime_r for the
 * calendar (its tm_year spans every int64 microsecond count). */
static void unixtime_want(int64_t unix_us, char *want, size_t len)
{
    int64_t secs = unix_us / 1000000, us = unix_us % 1000000;
    long long y;
    struct tm tm;
    time_t t;

    if (us < 0) {
        secs--;
        us += 1000000;
    }
    t = (time_t)secs;
    assert_non_null(gmtime_r(&t, &tm));
    y = (long long)tm.tm_year + 1900;
    snprintf(want, len, "%s%04lld-%02d-%02dT%02d:%02d:%02d.%06dZ", y < 0 ? "-" : "", y < 0 ? -y : y,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)us);
}

static void unixtime_check(int64_t unix_us)
{
    char buf[PGTIME_BUFSZ], want[64];
    size_t n;

    unixtime_want(unix_us, want, sizeof want);
    memset(buf, 'x', sizeof buf);
    n = unixtime_format_len(unix_us, buf);
    if (strcmp(buf, want) != 0 || n != strlen(want))
        fail_msg("%lld: got \"%s\" (%zu) want \"%s\"", (long long)unix_us, buf, n, want);
    assert_ptr_equal(unixtime_format(unix_us, buf), buf);
    assert_string_equal(buf, want);
}

/* Whole int64 range, day and microsecond edges, leap days, year widths. */
static void test_unixtime_format_matches_snprintf(void **state)
{
    static const int years[] = {-290307, -100000, -10000, -9999, -401,  -400,   -101,  -100,
                                -5,      -4,      -1,     0,     1,     4,      100,   1582,
                                1600,    1700,    1900,   1969,  1970,  2000,   2024,  2038,
                                2100,    2400,    9999,   10000, 99999, 100000, 294246};
    const int64_t day = INT64_C(86400000000);
    uint64_t x = 0x2545F4914F6CDD1Du;
    char buf[PGTIME_BUFSZ];

    (void)state;
    unixtime_check(0);
    unixtime_check(INT64_MAX);
    unixtime_check(INT64_MIN);
    unixtime_check(INT64_MAX - 1);
    unixtime_check(INT64_MIN + 1);
    for (int64_t d = -3; d <= 3; d++) {
        unixtime_check(d * day);
        unixtime_check(d * day - 1);
        unixtime_check(d * day + 1);
        unixtime_check(d * day + 999999);
        unixtime_check(d * day + 1000000);
        unixtime_check(d * day - 999999);
        unixtime_check(d * day - 1000000);
        unixtime_check(d * day - 1000001);
    }
    for (size_t i = 0; i < sizeof years / sizeof years[0]; i++) {
        struct tm tm = {.tm_year = years[i] - 1900, .tm_mon = 1, .tm_mday = 28};
        int64_t feb28 = (int64_t)timegm(&tm) * 1000000;
        int64_t jan1;

        tm = (struct tm){.tm_year = years[i] - 1900, .tm_mon = 0, .tm_mday = 1};
        jan1 = (int64_t)timegm(&tm) * 1000000;
        for (int64_t k = -1; k <= 2; k++) {
            unixtime_check(feb28 + k * day);
            unixtime_check(feb28 + k * day - 1);
            unixtime_check(jan1 + k * day);
            unixtime_check(jan1 + k * day - 1);
        }
    }
    for (int i = 0; i < 200000; i++) {
        uint64_t r = xorshift(&x);

        unixtime_check((int64_t)r); /* anywhere */
        unixtime_check((int64_t)(r % (UINT64_C(200) * 365 * 86400000000)) +
                       INT64_C(-2208988800000000));                  /* 1900..2100 */
        unixtime_check((int64_t)(r >> (r % 64)) * (r & 1 ? -1 : 1)); /* all magnitudes */
    }
    /* the PostgreSQL-epoch variant, saturating at +/-infinity */
    assert_int_equal(pgtime_format_len(0, buf), 27);
    assert_string_equal(buf, "2000-01-01T00:00:00.000000Z");
    for (int i = 0; i < 1000; i++) {
        int64_t pg = (int64_t)xorshift(&x);
        char want[64];

        unixtime_want(pgtime_to_unix_us(pg), want, sizeof want);
        assert_int_equal(pgtime_format_len(pg, buf), strlen(want));
        assert_string_equal(buf, want);
        assert_string_equal(pgtime_format(pg, buf), want);
    }
}

static int64_t parse_text(const char *s)
{
    int64_t v = 0;

    if (pgtime_parse_text(s, strlen(s), &v) != 0)
        fail_msg("pgtime_parse_text(\"%s\") failed", s);
    return v;
}

static void parse_text_bad(const char *s)
{
    int64_t v = 4242;

    if (pgtime_parse_text(s, strlen(s), &v) != -1)
        fail_msg("pgtime_parse_text(\"%s\") accepted it", s);
    assert_true(v == 4242);
}

static void test_pgtime_parse_text_valid(void **state)
{
    const int64_t base = INT64_C(1795457653123456); /* 2026-11-23 18:14:13.123456 UTC */

    (void)state;
    assert_true(parse_text("2026-11-23 18:14:13.123456+00") == base);
    assert_true(parse_text("2026-11-23T18:14:13.123456Z") == base);
    assert_true(parse_text("2026-11-23T18:14:13.123456+00:00") == base);
    assert_true(parse_text("2026-11-23 18:14:13+00") == base - 123456);
    /* PostgreSQL trims trailing zeros from the fraction. */
    assert_true(parse_text("2026-11-23 18:14:13.5+00") == base - 123456 + 500000);
    assert_true(parse_text("2026-11-23 18:14:13.000001+00") == base - 123456 + 1);
    /* Offsets: local = UTC + offset. */
    assert_true(parse_text("2026-11-23 23:44:13.123456+05:30") == base);
    assert_true(parse_text("2026-11-23 14:43:58.123456-03:30:15") == base);
    assert_true(parse_text("2026-11-24 03:14:13.123456+09") == base);
    assert_true(parse_text("2026-11-23 08:14:13.123456-10") == base);
    assert_true(parse_text("2026-11-24 09:14:13.123456+15") == base);
    /* Epochs, pre-1970 and pre-2000. */
    assert_true(parse_text("1970-01-01 00:00:00+00") == 0);
    assert_true(parse_text("1969-12-31 23:59:59.999999+00") == -1);
    assert_true(parse_text("2000-01-01 00:00:00+00") == PGTIME_UNIX_OFFSET_US);
    assert_true(parse_text("1999-12-31 23:59:59.999999+00") == PGTIME_UNIX_OFFSET_US - 1);
    assert_true(parse_text("1970-01-01 01:00:00+01") == 0);
    assert_true(parse_text("1969-12-31 19:00:00-05") == 0);
    assert_true(parse_text("0001-01-01 00:00:00+00") == INT64_C(-62135596800) * 1000000);
    /* Leap days. */
    assert_true(parse_text("2024-02-29 00:00:00+00") == INT64_C(1709164800) * 1000000);
    assert_true(parse_text("2000-02-29 00:00:00+00") == INT64_C(951782400) * 1000000);
    assert_true(parse_text("1904-02-29 00:00:00+00") == INT64_C(-2077747200) * 1000000);
    /* Years past 9999 print with five digits. */
    assert_true(parse_text("10000-01-01 00:00:00+00") == INT64_C(253402300800) * 1000000);
    assert_true(parse_text("200000-01-01 00:00:00+00") > 0);
}

static void test_pgtime_parse_text_invalid(void **state)
{
    int64_t v = 1;

    (void)state;
    parse_text_bad("");
    parse_text_bad("infinity");
    parse_text_bad("-infinity");
    parse_text_bad("2026-11-23 18:14:13.123456"); /* no zone */
    parse_text_bad("2026-11-23 18:14:13");
    parse_text_bad("2026-11-23");
    parse_text_bad("2026-11-23 18:14:13+00 BC");
    parse_text_bad("2026-11-23 18:14:13+00 ");
    parse_text_bad(" 2026-11-23 18:14:13+00");
    parse_text_bad("2026-11-23  18:14:13+00");
    parse_text_bad("2026-11-23 18:14:13.+00");
    parse_text_bad("2026-11-23 18:14:13.1234567+00"); /* seven digits */
    parse_text_bad("2023-02-29 00:00:00+00");
    parse_text_bad("1900-02-29 00:00:00+00");
    parse_text_bad("2100-02-29 00:00:00+00");
    parse_text_bad("2026-04-31 00:00:00+00");
    parse_text_bad("2026-00-10 00:00:00+00");
    parse_text_bad("2026-13-10 00:00:00+00");
    parse_text_bad("2026-12-00 00:00:00+00");
    parse_text_bad("2026-12-32 00:00:00+00");
    parse_text_bad("2026-12-01 24:00:00+00");
    parse_text_bad("2026-12-01 23:60:00+00");
    parse_text_bad("2026-12-01 23:59:60+00");
    parse_text_bad("2026-12-01 23:59:59+16");
    parse_text_bad("2026-12-01 23:59:59+05:60");
    parse_text_bad("2026-12-01 23:59:59+05:30:60");
    parse_text_bad("2026-12-01 23:59:59+5");
    parse_text_bad("2026-12-01 23:59:59+05:3");
    parse_text_bad("2026-12-01 23:59:59+05:");
    parse_text_bad("2026-12-01 23:59:59+");
    parse_text_bad("2026-12-01 23:59:59z");
    parse_text_bad("0000-01-01 00:00:00+00");
    parse_text_bad("-001-01-01 00:00:00+00");
    parse_text_bad("026-12-01 23:59:59+00");
    parse_text_bad("2026-1-01 23:59:59+00");
    parse_text_bad("2026-12-01 3:59:59+00");
    parse_text_bad("2026/12/01 23:59:59+00");
    parse_text_bad("99999999-12-01 23:59:59+00");
    parse_text_bad("1000000-12-01 23:59:59+00");
    parse_text_bad("300000-01-01 00:00:00+00"); /* past the int64 microsecond range */
    assert_int_equal(pgtime_parse_text(NULL, 0, &v), -1);
    assert_int_equal(pgtime_parse_text("2026-11-23 18:14:13+00", 22, NULL), -1);
}

/* Column data is not NUL-terminated: only len bytes may be read. */
static void test_pgtime_parse_text_len(void **state)
{
    const char *s = "2026-11-23 18:14:13.123456+00";
    char *heap;
    int64_t v;

    (void)state;
    /* Cut short inside the zone or the fraction: rejected. */
    assert_int_equal(pgtime_parse_text(s, strlen(s) - 1, &v), -1);
    assert_int_equal(pgtime_parse_text(s, strlen(s) - 3, &v), -1);
    assert_int_equal(pgtime_parse_text(s, 0, &v), -1);
    for (size_t n = 0; n < strlen(s); n++) {
        /* An exactly sized heap copy lets ASan catch any over-read. */
        heap = malloc(n ? n : 1);
        assert_non_null(heap);
        memcpy(heap, s, n);
        assert_int_equal(pgtime_parse_text(heap, n, &v), -1);
        free(heap);
    }
    heap = malloc(strlen(s));
    assert_non_null(heap);
    memcpy(heap, s, strlen(s));
    assert_int_equal(pgtime_parse_text(heap, strlen(s), &v), 0);
    assert_true(v == INT64_C(1795457653123456));
    free(heap);
    /* Trailing bytes past len are ignored. */
    assert_int_equal(pgtime_parse_text("2026-11-23 18:14:13+00GARBAGE", 22, &v), 0);
    assert_true(v == INT64_C(1795457653000000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn_parse_valid),
        cmocka_unit_test(test_lsn_parse_invalid),
        cmocka_unit_test(test_lsn_format),
        cmocka_unit_test(test_pgtime_to_unix),
        cmocka_unit_test(test_pgtime_format),
        cmocka_unit_test(test_unixtime_format),
        cmocka_unit_test(test_unixtime_matches_gmtime),
        cmocka_unit_test(test_lsn_format_matches_snprintf),
        cmocka_unit_test(test_unixtime_format_matches_snprintf),
        cmocka_unit_test(test_pgtime_parse_text_valid),
        cmocka_unit_test(test_pgtime_parse_text_invalid),
        cmocka_unit_test(test_pgtime_parse_text_len),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
