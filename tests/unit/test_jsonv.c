/*
 * schema/jsonv: the UTF-8 and JSON checks every record runs, on their edge
 * cases — at every position of the eight-byte words they scan, at the
 * nesting limit, with the offset where a text stops being JSON — and, for
 * random texts built from JSON's tokens, against jansson's parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "schema/jsonv.h"

static bool utf8(const char *s)
{
    return jsonv_utf8_valid(s, strlen(s));
}

static void test_utf8_edges(void **state)
{
    (void)state;
    assert_true(jsonv_utf8_valid("", 0));
    assert_true(utf8("plain ascii, longer than one word"));
    assert_true(
        utf8("\xc2\x80 \xdf\xbf \xe0\xa0\x80 \xef\xbf\xbf \xf0\x90\x80\x80 \xf4\x8f\xbf\xbf"));
    assert_false(utf8("\xc0\x80"));         /* overlong NUL */
    assert_false(utf8("\xc1\xbf"));         /* overlong */
    assert_false(utf8("\xe0\x9f\xbf"));     /* overlong three bytes */
    assert_false(utf8("\xf0\x8f\xbf\xbf")); /* overlong four bytes */
    assert_false(utf8("\xed\xa0\x80"));     /* U+D800, a surrogate */
    assert_false(utf8("\xed\xbf\xbf"));     /* U+DFFF */
    assert_true(utf8("\xed\x9f\xbf"));      /* U+D7FF, just below */
    assert_false(utf8("\xf4\x90\x80\x80")); /* past U+10FFFF */
    assert_false(utf8("\xf5\x80\x80\x80"));
    assert_false(utf8("\x80"));            /* a continuation alone */
    assert_false(utf8("\xe2\x82"));        /* cut short at the end */
    assert_false(utf8("\xe2\x82 abcdef")); /* cut short in the middle */
    assert_false(utf8("\xff"));
    /* a NUL is UTF-8 (the length says where the text ends) */
    assert_true(jsonv_utf8_valid("a\0b", 3));
}

/* A two-byte character and a bad byte at every offset of a 24-byte text:
 * the word-at-a-time loop must hand over to the byte loop at each. */
static void test_utf8_every_position(void **state)
{
    char s[25];

    (void)state;
    for (size_t at = 0; at + 2 <= 24; at++) {
        memset(s, 'a', 24);
        s[24] = '\0';
        memcpy(s + at, "\xc3\xa9", 2);
        assert_true(jsonv_utf8_valid(s, 24));
        s[at + 1] = 'x'; /* the continuation byte gone */
        assert_false(jsonv_utf8_valid(s, 24));
        s[at] = (char)0xfe;
        s[at + 1] = 'a';
        assert_false(jsonv_utf8_valid(s, 24));
        /* the bad byte just past the length does not count */
        assert_true(jsonv_utf8_valid(s, at));
    }
}

static bool valid(const char *s, size_t *bad_at)
{
    size_t dummy;

    return jsonv_text_valid(s, strlen(s), bad_at != NULL ? bad_at : &dummy);
}

/* Refused, stopping at byte at. */
static void refused_at(const char *s, size_t at)
{
    size_t bad_at = 9999;

    if (valid(s, &bad_at))
        fail_msg("accepted: %s", s);
    if (bad_at != at)
        fail_msg("%s: refused at %zu, expected %zu", s, bad_at, at);
}

static void test_json_values(void **state)
{
    static const char *const ok[] = {
        "0",
        "-0",
        "1.5",
        "-12.5e+3",
        "1E-7",
        "true",
        "false",
        "null",
        "\"\"",
        "[]",
        "{}",
        " \t\r\n[ 1 , {\"a\" : [null]} ]\n",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u0000\"",
        "\"\\ud83d\\ude00\"",
        "\"\\uD83D\\uDE00\"",
        "\"\xf0\x9f\x98\x80\"",
        "{\"a\":1,\"a\":2}",
        "123456789012345678901234567890",
        "1e400",
    };

    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!valid(ok[i], NULL))
            fail_msg("refused: %s", ok[i]);
    refused_at("", 0);
    refused_at("   ", 3);
    refused_at("01", 1);
    refused_at("-", 1);
    refused_at("1.", 2);
    refused_at(".5", 0);
    refused_at("+1", 0);
    refused_at("1e", 2);
    refused_at("1e+", 3);
    refused_at("NaN", 0);
    refused_at("tru", 0);
    refused_at("nul", 0);
    refused_at("true false", 5);
    refused_at("[1,]", 3);
    refused_at("[1 2]", 3);
    refused_at("{\"a\" 1}", 5);
    refused_at("{\"a\":}", 5);
    refused_at("{,}", 1);
    refused_at("{1:2}", 1);
    refused_at("[1}", 2);
    refused_at("{\"a\":1]", 6);
    refused_at("[[]", 3);
    refused_at("\"abc", 4);
    refused_at("\"a\x01\"", 2);           /* control byte in a string */
    refused_at("\"\\x\"", 3);             /* unknown escape */
    refused_at("\"\\u12g4\"", 3);         /* bad hex */
    refused_at("\"\\udc00\"", 7);         /* lone low surrogate */
    refused_at("\"\\ud800\"", 7);         /* high surrogate, nothing after */
    refused_at("\"\\ud800\\u0041\"", 13); /* high surrogate, no low one */
    refused_at("\"\xc3\"", 1);            /* bad UTF-8 inside a string */
}

/* JSONV_MAX_DEPTH containers deep is fine, one more is refused where it
 * opens. */
static void test_json_depth(void **state)
{
    size_t n = JSONV_MAX_DEPTH + 1;
    char *s = malloc(2 * n + 1);
    size_t bad_at = 0;

    (void)state;
    assert_non_null(s);
    memset(s, '[', n - 1);
    memset(s + n - 1, ']', n - 1);
    assert_true(jsonv_text_valid(s, 2 * (n - 1), &bad_at));
    memset(s, '[', n);
    memset(s + n, ']', n);
    assert_false(jsonv_text_valid(s, 2 * n, &bad_at));
    assert_int_equal(bad_at, JSONV_MAX_DEPTH);
    free(s);
}

static void test_json_number(void **state)
{
    static const char *const yes[] = {"0", "-1", "1.5e-3", "12345678901234567890123", "-0.0"};
    static const char *const no[] = {"",   "NaN", "Infinity", "-Infinity", "01", "1.",
                                     ".5", "+1",  "1 ",       " 1",        "1e", "0x1"};

    (void)state;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_true(jsonv_number(yes[i], strlen(yes[i])));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (jsonv_number(no[i], strlen(no[i])))
            fail_msg("accepted as a number: \"%s\"", no[i]);
}

/* Each byte a JSON string must escape, at every offset of a 20-byte run;
 * bytes that need no escape (0x20, 0x7f, 0x80, 0xff) end nothing. */
static void test_plain_run(void **state)
{
    static const unsigned char special[] = {0x00, 0x01, 0x1f, '"', '\\'};
    static const unsigned char plain[] = {0x20, 0x7f, 0x80, 0xff, '!', '#', '[', ']'};
    unsigned char s[20];

    (void)state;
    for (size_t k = 0; k < sizeof special; k++) {
        for (size_t at = 0; at < sizeof s; at++) {
            memset(s, 'x', sizeof s);
            s[at] = special[k];
            assert_int_equal(jsonv_plain_run(s, 0, sizeof s), at);
            assert_int_equal(jsonv_plain_run(s, at + 1, sizeof s), sizeof s);
            assert_int_equal(jsonv_plain_run(s, 0, at), at);
        }
    }
    memcpy(s, plain, sizeof plain);
    memcpy(s + sizeof plain, plain, sizeof plain);
    assert_int_equal(jsonv_plain_run(s, 0, 2 * sizeof plain), 2 * sizeof plain);
}

static void test_hexval(void **state)
{
    (void)state;
    assert_int_equal(jsonv_hexval('0'), 0);
    assert_int_equal(jsonv_hexval('9'), 9);
    assert_int_equal(jsonv_hexval('a'), 10);
    assert_int_equal(jsonv_hexval('F'), 15);
    assert_int_equal(jsonv_hexval('g'), -1);
    assert_int_equal(jsonv_hexval('/'), -1);
    assert_int_equal(jsonv_hexval(':'), -1);
    assert_int_equal(jsonv_hexval('\0'), -1);
}

/* Texts of up to 12 tokens drawn from JSON's (and a few that are not):
 * jsonv and jansson agree on every one.  A number token ends with a space
 * so that two never run together: jansson's limits on integers and reals
 * (which jsonv does not have, on purpose) never decide. */
static void test_json_against_jansson(void **state)
{
    static const char *const tok[] = {
        "{",     "}",           "[",
        "]",     ",",           ":",
        "\"a\"", "\"\\u00e9\"", "\"\\ud83d\\ude00\"",
        "1 ",    "-0.5e3 ",     "true",
        "null",  " ",           "\n",
        "x",     "\"",          "\\",
        "0 ",    "01 ",         "\"\xc3\xa9\"",
    };
    const size_t ntok = sizeof tok / sizeof tok[0];
    uint32_t seed = 12345;
    char s[256];
    size_t agreed = 0, accepted = 0;

    (void)state;
    for (int it = 0; it < 200000; it++) {
        size_t len = 0, ntoks;
        size_t bad_at;
        json_error_t jerr;
        json_t *j;
        bool ours, theirs;

        seed = seed * 1103515245u + 12345u;
        ntoks = 1 + (seed >> 16) % 12;
        for (size_t t = 0; t < ntoks; t++) {
            const char *p;

            seed = seed * 1103515245u + 12345u;
            p = tok[(seed >> 16) % ntok];
            memcpy(s + len, p, strlen(p));
            len += strlen(p);
        }
        ours = jsonv_text_valid(s, len, &bad_at);
        j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        theirs = j != NULL;
        json_decref(j);
        if (ours != theirs)
            fail_msg("jsonv %s, jansson %s: %.*s", ours ? "accepts" : "refuses",
                     theirs ? "accepts" : "refuses", (int)len, s);
        agreed++;
        accepted += ours;
    }
    /* the draw reaches both answers, not only refusals */
    assert_true(accepted > 1000);
    assert_int_equal(agreed, 200000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_edges),  cmocka_unit_test(test_utf8_every_position),
        cmocka_unit_test(test_json_values), cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_json_number), cmocka_unit_test(test_plain_run),
        cmocka_unit_test(test_hexval),      cmocka_unit_test(test_json_against_jansson),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
