#include "schema/jsonv.h"

#include <stdint.h>
#include <string.h>

int jsonv_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Length of the strict UTF-8 sequence at s[0..len), or 0 when there is
 * none. */
static size_t utf8_char(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len - 1 < n)
        return 0;
    for (size_t k = 1; k <= n; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n + 1;
}

/* Eight bytes at a time.  Loads go through memcpy (no alignment or
 * aliasing assumptions; compilers make it one load). */
#define W_ONES UINT64_C(0x0101010101010101)
#define W_HIGHS (W_ONES * 0x80)

static uint64_t load8(const unsigned char *s)
{
    uint64_t v;

    memcpy(&v, s, sizeof v);
    return v;
}

/* Non-zero when a byte of v is zero: exact, borrows start only at a zero. */
static uint64_t w_has_zero(uint64_t v)
{
    return (v - W_ONES) & ~v & W_HIGHS;
}

/* Non-zero when a byte of v is < 0x20, '"' or '\\': a byte JSON must escape
 * inside a string. */
static uint64_t w_json_special(uint64_t v)
{
    return ((v - W_ONES * 0x20) & ~v & W_HIGHS) | w_has_zero(v ^ (W_ONES * '"')) |
           w_has_zero(v ^ (W_ONES * '\\'));
}

static bool json_special(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

size_t jsonv_plain_run(const unsigned char *s, size_t i, size_t n)
{
    while (n - i >= 8 && w_json_special(load8(s + i)) == 0)
        i += 8;
    while (i < n && !json_special(s[i]))
        i++;
    return i;
}

bool jsonv_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, n;

    for (;;) {
        while (len - i >= 8 && (load8(s + i) & W_HIGHS) == 0)
            i += 8;
        while (i < len && s[i] < 0x80)
            i++;
        if (i == len)
            return true;
        n = utf8_char(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
}

/* ---- the JSON scanner --------------------------------------------------- */

struct jscan {
    const unsigned char *s;
    size_t len, pos;
};

/* The scanners below work on local copies of pos: a store through j would
 * alias every byte read from j->s and force reloads. */
static void js_ws(struct jscan *j)
{
    const unsigned char *s = j->s;
    size_t pos = j->pos, len = j->len;

    while (pos < len && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r'))
        pos++;
    j->pos = pos;
}

static bool js_eat(struct jscan *j, char c)
{
    if (j->pos < j->len && j->s[j->pos] == (unsigned char)c) {
        j->pos++;
        return true;
    }
    return false;
}

static bool js_hex4(struct jscan *j, unsigned *out)
{
    unsigned v = 0;

    if (j->len - j->pos < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        int d = jsonv_hexval((char)j->s[j->pos + (size_t)i]);

        if (d < 0)
            return false;
        v = v << 4 | (unsigned)d;
    }
    j->pos += 4;
    *out = v;
    return true;
}

/* Index of the first byte from i on that is not printable ASCII other than
 * '"' and '\\', or n. */
static size_t json_ascii_run(const unsigned char *s, size_t i, size_t n)
{
    uint64_t v;

    while (n - i >= 8) {
        v = load8(s + i);
        if ((w_json_special(v) | (v & W_HIGHS)) != 0)
            break;
        i += 8;
    }
    while (i < n && s[i] < 0x80 && !json_special(s[i]))
        i++;
    return i;
}

static bool js_string(struct jscan *j)
{
    if (!js_eat(j, '"'))
        return false;
    while (j->pos < j->len) {
        unsigned char c;
        unsigned u, lo;
        size_t n;

        j->pos = json_ascii_run(j->s, j->pos, j->len);
        if (j->pos >= j->len)
            break;
        c = j->s[j->pos];
        if (c == '"') {
            j->pos++;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c != '\\') {
            n = utf8_char(j->s + j->pos, j->len - j->pos);
            if (n == 0)
                return false;
            j->pos += n;
            continue;
        }
        j->pos++;
        if (j->pos >= j->len)
            return false;
        c = j->s[j->pos++];
        if (strchr("\"\\/bfnrt", c) != NULL && c != '\0')
            continue;
        if (c != 'u' || !js_hex4(j, &u))
            return false;
        if (u >= 0xDC00 && u <= 0xDFFF)
            return false;
        if (u >= 0xD800 && u <= 0xDBFF &&
            (!js_eat(j, '\\') || !js_eat(j, 'u') || !js_hex4(j, &lo) || lo < 0xDC00 || lo > 0xDFFF))
            return false;
    }
    return false;
}

static bool js_digits(struct jscan *j)
{
    const unsigned char *s = j->s;
    size_t pos = j->pos, len = j->len;

    while (pos < len && s[pos] >= '0' && s[pos] <= '9')
        pos++;
    if (pos == j->pos)
        return false;
    j->pos = pos;
    return true;
}

static bool js_number(struct jscan *j)
{
    js_eat(j, '-');
    if (js_eat(j, '0')) {
        /* no leading zeros */
    } else if (j->pos >= j->len || j->s[j->pos] < '1' || j->s[j->pos] > '9' || !js_digits(j)) {
        return false;
    }
    if (js_eat(j, '.') && !js_digits(j))
        return false;
    if (js_eat(j, 'e') || js_eat(j, 'E')) {
        if (!js_eat(j, '+'))
            js_eat(j, '-');
        if (!js_digits(j))
            return false;
    }
    return true;
}

static bool js_literal(struct jscan *j, const char *word)
{
    size_t n = strlen(word);

    if (j->len - j->pos < n || memcmp(j->s + j->pos, word, n) != 0)
        return false;
    j->pos += n;
    return true;
}

/* After '{' or ',' inside an object: the member's key and its colon.
 * Inlined: as a call it costs the check about 4% more instructions. */
static inline __attribute__((always_inline)) bool js_member_key(struct jscan *j)
{
    if (!js_string(j))
        return false;
    js_ws(j);
    if (!js_eat(j, ':'))
        return false;
    js_ws(j);
    return true;
}

bool jsonv_number(const char *s, size_t n)
{
    struct jscan j = {.s = (const unsigned char *)s, .len = n, .pos = 0};

    return n > 0 && js_number(&j) && j.pos == n;
}

/* A state machine over an explicit stack (no recursion, so no depth limit
 * but the stack's): read a value, then close containers or move on to the
 * next member. */
bool jsonv_text_valid(const char *s, size_t len, size_t *bad_at)
{
    struct jscan j = {.s = (const unsigned char *)s, .len = len, .pos = 0};
    char stack[JSONV_MAX_DEPTH];
    int depth = 0;

    js_ws(&j);
    for (;;) {
        /* a value */
        if (j.pos >= j.len)
            goto bad;
        switch (j.s[j.pos]) {
        case '{':
        case '[':
            if (depth == JSONV_MAX_DEPTH)
                goto bad;
            stack[depth++] = (char)j.s[j.pos++];
            js_ws(&j);
            if (js_eat(&j, stack[depth - 1] == '{' ? '}' : ']')) {
                depth--;
                break;
            }
            if (stack[depth - 1] == '{' && !js_member_key(&j))
                goto bad;
            continue;
        case '"':
            if (!js_string(&j))
                goto bad;
            break;
        case 't':
        case 'f':
        case 'n':
            if (!js_literal(&j, "true") && !js_literal(&j, "false") && !js_literal(&j, "null"))
                goto bad;
            break;
        default:
            if (!js_number(&j))
                goto bad;
            break;
        }
        /* after a value: close containers, or move to the next member */
        for (;;) {
            js_ws(&j);
            if (depth == 0) {
                if (j.pos != j.len)
                    goto bad;
                return true;
            }
            if (js_eat(&j, stack[depth - 1] == '{' ? '}' : ']')) {
                depth--;
                continue;
            }
            if (!js_eat(&j, ','))
                goto bad;
            js_ws(&j);
            if (stack[depth - 1] == '{' && !js_member_key(&j))
                goto bad;
            break;
        }
    }
bad:
    *bad_at = j.pos;
    return false;
}
