/*
 * schema/base64: the one encoder, against RFC 4648's test vectors (section
 * 10), the two characters beyond the letters and digits, and a decoder
 * written here for a round trip over every length up to 64 and every byte
 * value.  Output never goes past base64_encoded_len().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "schema/base64.h"

/* Encode into a buffer with canaries around it; check length and canaries. */
static void encode_checked(const void *in, size_t len, char *out, size_t outsz)
{
    size_t n = base64_encoded_len(len);

    assert_true(n + 2 <= outsz);
    memset(out, '#', outsz);
    assert_int_equal(base64_encode(in, len, out + 1), n);
    assert_int_equal(out[0], '#');
    assert_int_equal(out[n + 1], '#');
    memmove(out, out + 1, n);
    out[n] = '\0';
}

static void test_rfc4648_vectors(void **state)
{
    static const char *const vec[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    char out[32];

    (void)state;
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        encode_checked(vec[i][0], strlen(vec[i][0]), out, sizeof out);
        assert_string_equal(out, vec[i][1]);
    }
}

static void test_alphabet_ends(void **state)
{
    static const unsigned char plus_slash[] = {0xfb, 0xff};
    static const unsigned char zeros[] = {0, 0, 0};
    static const unsigned char ones[] = {0xff, 0xff, 0xff};
    char out[16];

    (void)state;
    encode_checked(plus_slash, sizeof plus_slash, out, sizeof out);
    assert_string_equal(out, "+/8=");
    encode_checked(zeros, sizeof zeros, out, sizeof out);
    assert_string_equal(out, "AAAA");
    encode_checked(ones, sizeof ones, out, sizeof out);
    assert_string_equal(out, "////");
}

static int sextet(char c)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c != '\0' ? strchr(alphabet, c) : NULL;

    return p != NULL ? (int)(p - alphabet) : -1;
}

/* A strict decoder: four characters a group, '=' only at the end. */
static size_t decode(const char *s, size_t n, unsigned char *out)
{
    size_t o = 0;

    assert_int_equal(n % 4, 0);
    for (size_t i = 0; i < n; i += 4) {
        int pad = (s[i + 3] == '=') + (s[i + 2] == '=');
        uint32_t v = 0;

        if (pad > 0)
            assert_int_equal(i + 4, n);
        for (int k = 0; k < 4 - pad; k++) {
            int d = sextet(s[i + (size_t)k]);

            assert_true(d >= 0);
            v |= (uint32_t)d << (18 - 6 * k);
        }
        out[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)v;
    }
    return o;
}

static void test_round_trip(void **state)
{
    unsigned char in[256], back[256];
    char out[400];

    (void)state;
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(i * 167 + 13); /* every byte value once */
    for (size_t len = 0; len <= 64; len++) {
        encode_checked(in, len, out, sizeof out);
        assert_int_equal(strlen(out), (len + 2) / 3 * 4);
        assert_int_equal(decode(out, strlen(out), back), len);
        assert_memory_equal(back, in, len);
    }
    encode_checked(in, sizeof in, out, sizeof out);
    assert_int_equal(decode(out, strlen(out), back), sizeof in);
    assert_memory_equal(back, in, sizeof in);
}

static void test_encoded_len(void **state)
{
    (void)state;
    assert_int_equal(base64_encoded_len(0), 0);
    assert_int_equal(base64_encoded_len(1), 4);
    assert_int_equal(base64_encoded_len(3), 4);
    assert_int_equal(base64_encoded_len(4), 8);
    /* the largest input whose length fits, and the ones that do not */
    assert_int_equal(base64_encoded_len(SIZE_MAX / 4 * 3 - 3), SIZE_MAX / 4 * 4 - 4);
    assert_int_equal(base64_encoded_len(SIZE_MAX / 4 * 3), SIZE_MAX);
    assert_int_equal(base64_encoded_len(SIZE_MAX), SIZE_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_alphabet_ends),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encoded_len),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
