/*
 * jsonw — a JSON writer that appends to one growing buffer: no tree, no
 * dump, no splice.  Strings are escaped exactly as jansson's JSON_COMPACT
 * dump does (test_formats compares the two byte for byte).  Memory comes
 * from jansson's allocator, so its allocation hooks (the tests' torture
 * mode) cover it.
 *
 * Ownership: the writer owns its buffer until jsonw_finish() hands it to
 * the caller, who releases it with free() like any json_dumps() output;
 * jsonw_discard() frees a buffer that was not handed over.  A failed
 * allocation sticks: every later call is a no-op and jsonw_finish() says
 * so, so a value is written without checking each call.
 *
 * The calls a record makes dozens of times (reserve, raw bytes, a constant
 * key) are inline here; the rest is in jsonw.c.
 */
#ifndef SCHEMA_JSONW_H
#define SCHEMA_JSONW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Nesting of objects the writer tracks (a record needs 3). */
#define JSONW_MAX_DEPTH 4

typedef struct jsonw {
    char *buf;
    size_t len, cap;
    bool failed;
    int depth;
    bool first[JSONW_MAX_DEPTH];
    json_malloc_t alloc;
    json_free_t release;
} jsonw;

/* An empty writer (allocates nothing yet). */
void jsonw_init(jsonw *w);

/* The slow path of jsonw_reserve(): grow the buffer (doubling, from 256
 * bytes) until n more bytes fit.  Returns false, and sticks, on failure. */
bool jsonw_grow(jsonw *w, size_t n);

/* Room for n more bytes.  Returns false when out of memory. */
static inline bool jsonw_reserve(jsonw *w, size_t n)
{
    if (w->failed)
        return false;
    if (n <= w->cap - w->len)
        return true;
    return jsonw_grow(w, n);
}

/* s[0..n) as it is: JSON text the caller vouches for. */
static inline void jsonw_raw(jsonw *w, const char *s, size_t n)
{
    if (!jsonw_reserve(w, n))
        return;
    if (n > 0)
        memcpy(w->buf + w->len, s, n);
    w->len += n;
}

/* A NUL-terminated piece of JSON text ("null", "true", "\"1.0\"", ...). */
static inline void jsonw_lit(jsonw *w, const char *s)
{
    jsonw_raw(w, s, strlen(s));
}

/* A JSON string of s[0..n), which must be valid UTF-8 (checked before). */
void jsonw_str(jsonw *w, const char *s, size_t n);

/* jsonw_str() of a NUL-terminated string. */
void jsonw_cstr(jsonw *w, const char *s);

/* A string that needs no escaping (formatted here: digits, hex, ASCII
 * punctuation), between quotes. */
static inline void jsonw_plain_str(jsonw *w, const char *s, size_t n)
{
    if (n > SIZE_MAX - 2 || !jsonw_reserve(w, n + 2))
        return;
    w->buf[w->len++] = '"';
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len++] = '"';
}

/* An unsigned integer as a JSON number. */
void jsonw_uint(jsonw *w, uint64_t v);

/* in[0..len) as a base64 JSON string (schema/base64). */
void jsonw_base64(jsonw *w, const unsigned char *in, size_t len);

/* Open and close an object; members are written with a key each. */
void jsonw_open(jsonw *w);
void jsonw_close(jsonw *w);

/* "key": (escaped) with the comma that goes before every member but the
 * first. */
void jsonw_key(jsonw *w, const char *key);

/* jsonw_key() for a key known when compiling, which needs no escaping: its
 * literal "\"key\":" is written as it is.  Use JSONW_KEY(w, "key"). */
static inline void jsonw_key_lit(jsonw *w, const char *lit, size_t n)
{
    bool *first = &w->first[w->depth > 0 ? w->depth - 1 : 0];

    if (!jsonw_reserve(w, n + 1))
        return;
    if (!*first)
        w->buf[w->len++] = ',';
    *first = false;
    memcpy(w->buf + w->len, lit, n);
    w->len += n;
}

#define JSONW_KEY(w, key) jsonw_key_lit((w), "\"" key "\":", sizeof("\"" key "\":") - 1)

/* Hand the text over, NUL-terminated (*outlen without the NUL; the caller
 * frees *out).  Returns 0, or -1 when out of memory (nothing to free). */
int jsonw_finish(jsonw *w, char **out, size_t *outlen);

/* Free what was not handed over.  Safe after jsonw_finish() and twice. */
void jsonw_discard(jsonw *w);

#endif
