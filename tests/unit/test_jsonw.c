/*
 * schema/jsonw: the writer's exact bytes (objects, keys, numbers, base64),
 * its string escaping against jansson's compact dump for every byte, and a
 * failed allocation that sticks: later writes do nothing and finish fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "schema/jsonw.h"

/* Finish w and compare its text with want; frees it. */
static void finish_is(jsonw *w, const char *want)
{
    char *out = NULL;
    size_t len = 0;

    assert_int_equal(jsonw_finish(w, &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(len, strlen(want));
    assert_string_equal(out, want);
    free(out);
    jsonw_discard(w); /* nothing left to free: must be harmless */
}

static void test_objects_and_keys(void **state)
{
    static const unsigned char foo[] = "foo";
    jsonw w;

    (void)state;
    jsonw_init(&w);
    jsonw_open(&w);
    JSONW_KEY(&w, "a");
    jsonw_uint(&w, 0);
    JSONW_KEY(&w, "b");
    jsonw_open(&w);
    jsonw_key(&w, "k\"ey");
    jsonw_lit(&w, "null");
    JSONW_KEY(&w, "max");
    jsonw_uint(&w, UINT64_MAX);
    jsonw_close(&w);
    JSONW_KEY(&w, "c");
    jsonw_open(&w);
    jsonw_close(&w);
    JSONW_KEY(&w, "d");
    jsonw_plain_str(&w, "0/16B3748", 9);
    JSONW_KEY(&w, "e");
    jsonw_base64(&w, foo, 3);
    JSONW_KEY(&w, "f");
    jsonw_cstr(&w, "");
    jsonw_close(&w);
    finish_is(&w, "{\"a\":0,\"b\":{\"k\\\"ey\":null,\"max\":18446744073709551615},\"c\":{},"
                  "\"d\":\"0/16B3748\",\"e\":\"Zm9v\",\"f\":\"\"}");
}

/* Every byte below 0x80 in one string, then each alone amid text at every
 * offset of a word: the escapes must be jansson's, byte for byte. */
static void test_escaping_matches_jansson(void **state)
{
    char s[128], t[40];

    (void)state;
    for (int i = 0; i < 127; i++)
        s[i] = (char)(i + 1);
    s[127] = '\0';
    for (size_t len = 0; len <= 127; len += 127) {
        json_t *j = json_stringn(s, len);
        char *want = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
        jsonw w;

        jsonw_init(&w);
        jsonw_str(&w, s, len);
        finish_is(&w, want);
        free(want);
        json_decref(j);
    }
    for (int c = 0; c < 0x80; c++) {
        for (size_t at = 0; at < 17; at++) {
            json_t *j;
            char *want;
            jsonw w;

            memset(t, 'x', 17);
            t[at] = (char)c;
            j = json_stringn(t, 17);
            want = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
            jsonw_init(&w);
            jsonw_str(&w, t, 17);
            finish_is(&w, want);
            free(want);
            json_decref(j);
        }
    }
}

/* UTF-8 goes through as it is (jansson's default dump does the same). */
static void test_utf8_unescaped(void **state)
{
    jsonw w;

    (void)state;
    jsonw_init(&w);
    jsonw_cstr(&w, "Zo\xc3\xab \xe2\x82\xac \xf0\x9f\x98\x80");
    finish_is(&w, "\"Zo\xc3\xab \xe2\x82\xac \xf0\x9f\x98\x80\"");
}

/* Long enough to grow past the first 256 bytes several times. */
static void test_growth(void **state)
{
    char big[5000];
    char *want = malloc(sizeof big + 3);
    jsonw w;

    (void)state;
    assert_non_null(want);
    memset(big, 'q', sizeof big);
    want[0] = '"';
    memcpy(want + 1, big, sizeof big);
    memcpy(want + 1 + sizeof big, "\"", 2);
    jsonw_init(&w);
    jsonw_str(&w, big, sizeof big);
    finish_is(&w, want);
    free(want);
}

static size_t allow_bytes;

static void *limited_malloc(size_t n)
{
    if (n > allow_bytes)
        return NULL;
    allow_bytes -= n;
    return malloc(n);
}

static void test_failure_sticks(void **state)
{
    char text[300];
    char *out = (char *)1;
    size_t len = 7;
    jsonw w;

    (void)state;
    memset(text, 'a', sizeof text);
    json_set_alloc_funcs(limited_malloc, free);
    allow_bytes = 256; /* the first buffer, not the second */
    jsonw_init(&w);
    jsonw_raw(&w, text, 200);
    assert_false(w.failed);
    jsonw_raw(&w, text, 100); /* needs 512: refused */
    assert_true(w.failed);
    allow_bytes = SIZE_MAX; /* memory again: the failure still sticks */
    jsonw_raw(&w, "x", 1);
    jsonw_str(&w, "y", 1);
    assert_int_equal(w.len, 200);
    assert_int_equal(jsonw_finish(&w, &out, &len), -1);
    assert_ptr_equal(out, (char *)1); /* untouched */
    assert_int_equal(len, 7);
    jsonw_discard(&w);
    json_set_alloc_funcs(malloc, free);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects_and_keys), cmocka_unit_test(test_escaping_matches_jansson),
        cmocka_unit_test(test_utf8_unescaped),   cmocka_unit_test(test_growth),
        cmocka_unit_test(test_failure_sticks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
