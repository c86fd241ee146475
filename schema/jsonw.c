#include "schema/jsonw.h"

#include "schema/base64.h"
#include "schema/jsonv.h"

void jsonw_init(jsonw *w)
{
    memset(w, 0, sizeof *w);
    json_get_alloc_funcs(&w->alloc, &w->release);
}

bool jsonw_grow(jsonw *w, size_t n)
{
    size_t cap = w->cap > 0 ? w->cap : 256;
    char *nb;

    while (cap - w->len < n) {
        if (cap > SIZE_MAX / 2) {
            w->failed = true;
            return false;
        }
        cap *= 2;
    }
    nb = w->alloc(cap);
    if (nb == NULL) {
        w->failed = true;
        return false;
    }
    if (w->len > 0)
        memcpy(nb, w->buf, w->len);
    w->release(w->buf);
    w->buf = nb;
    w->cap = cap;
    return true;
}

/* Runs that need no escape are copied whole, room for the rest reserved as
 * it comes (an escape is at most 6 bytes). */
void jsonw_str(jsonw *w, const char *str, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    /* the two-character escapes jansson writes; every other control byte
     * is \u00XX */
    static const char short_escape[] = {
        ['"'] = '"',  ['\\'] = '\\', ['\b'] = 'b', ['\f'] = 'f',
        ['\n'] = 'n', ['\r'] = 'r',  ['\t'] = 't',
    };
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run;

    if (n > SIZE_MAX - 2 || !jsonw_reserve(w, n + 2))
        return;
    w->buf[w->len++] = '"';
    for (;;) {
        unsigned char c;
        char *e;

        run = i;
        i = jsonv_plain_run(s, i, n);
        memcpy(w->buf + w->len, s + run, i - run);
        w->len += i - run;
        if (i == n)
            break;
        /* the escape, then what is left of s and the closing quote */
        if (!jsonw_reserve(w, 6 + (n - i - 1) + 1))
            return;
        c = s[i++];
        e = w->buf + w->len;
        e[0] = '\\';
        w->len += 2;
        if (c < sizeof short_escape && short_escape[c] != '\0') {
            e[1] = short_escape[c];
        } else {
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 0xF];
            w->len += 4;
        }
    }
    w->buf[w->len++] = '"';
}

void jsonw_cstr(jsonw *w, const char *s)
{
    jsonw_str(w, s, strlen(s));
}

void jsonw_uint(jsonw *w, uint64_t v)
{
    char b[20]; /* UINT64_MAX has 20 digits */
    size_t n = sizeof b;

    do {
        b[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    jsonw_raw(w, b + n, sizeof b - n);
}

void jsonw_base64(jsonw *w, const unsigned char *in, size_t len)
{
    size_t n = base64_encoded_len(len);

    if (n > SIZE_MAX - 2 || !jsonw_reserve(w, n + 2))
        return;
    w->buf[w->len++] = '"';
    w->len += base64_encode(in, len, w->buf + w->len);
    w->buf[w->len++] = '"';
}

void jsonw_open(jsonw *w)
{
    jsonw_raw(w, "{", 1);
    if (w->depth < JSONW_MAX_DEPTH)
        w->first[w->depth] = true;
    w->depth++;
}

void jsonw_close(jsonw *w)
{
    w->depth--;
    jsonw_raw(w, "}", 1);
}

void jsonw_key(jsonw *w, const char *key)
{
    bool *first = &w->first[w->depth > 0 ? w->depth - 1 : 0];

    if (!*first)
        jsonw_raw(w, ",", 1);
    *first = false;
    jsonw_cstr(w, key);
    jsonw_raw(w, ":", 1);
}

int jsonw_finish(jsonw *w, char **out, size_t *outlen)
{
    if (!jsonw_reserve(w, 1)) {
        w->release(w->buf);
        memset(w, 0, sizeof *w);
        return -1;
    }
    w->buf[w->len] = '\0';
    *out = w->buf;
    *outlen = w->len;
    w->buf = NULL;
    return 0;
}

void jsonw_discard(jsonw *w)
{
    if (w->release != NULL)
        w->release(w->buf);
    w->buf = NULL;
}
