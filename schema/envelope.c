#include "schema/envelope.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/lsn.h"

#define OID_BYTEA 17
#define OID_TEXT 25
#define OID_JSON 114
#define OID_VARCHAR 1043
#define OID_JSONB 3802

/* Kafka's own limit on topic names. */
#define TOPIC_MAX 249

#define PLACEHOLDERS "{aggregate_type}, {aggregate_id}, {type}, {table}"

#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* errno tells the caller a failure was ours, not the row's. */
static int oom(char *err, size_t errlen)
{
    fail(err, errlen, "out of memory");
    errno = ENOMEM;
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Length of the strict UTF-8 sequence at s[0..len) (no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0 when there is none.  At least as
 * strict as jansson, so a string that passes is refused by json_stringn()
 * only when memory runs out.
 */
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

/*
 * Eight bytes at a time: every record runs its strings through these scans
 * several times (UTF-8 check, JSON check, escaping), and almost all of
 * their bytes are printable ASCII.  Loads go through memcpy (no alignment
 * or aliasing assumptions; compilers make it one load).
 */
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

/* Index of the first byte from i on that JSON must escape, or n. */
static size_t json_plain_run(const unsigned char *s, size_t i, size_t n)
{
    while (n - i >= 8 && w_json_special(load8(s + i)) == 0)
        i += 8;
    while (i < n && !json_special(s[i]))
        i++;
    return i;
}

static bool utf8_valid(const char *str, size_t len)
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

/* ---- JSON validation ---------------------------------------------------- */

/*
 * Payload JSON is checked here and embedded verbatim, not parsed into a
 * jansson tree and dumped again: the round trip rewrites numbers (19.99
 * comes back as 19.989999999999998), refuses integers beyond 64 bits and
 * reals beyond double that PostgreSQL's json/jsonb accept, and its
 * allocation failures look like syntax errors, which would dead-letter
 * good rows.  This checker allocates nothing.  RFC 8259, any value at top
 * level, \u0000 allowed, lone surrogate escapes refused (as jansson does).
 */
#define JSON_MAX_DEPTH 2048

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
        int d = hexval((char)j->s[j->pos + (size_t)i]);

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

/* Whether s[0..len) is exactly one JSON value; *bad_at = where it is not. */
static bool json_text_valid(const char *s, size_t len, size_t *bad_at)
{
    struct jscan j = {.s = (const unsigned char *)s, .len = len, .pos = 0};
    char stack[JSON_MAX_DEPTH];
    int depth = 0;

    js_ws(&j);
    for (;;) {
        /* a value */
        if (j.pos >= j.len)
            goto bad;
        switch (j.s[j.pos]) {
        case '{':
        case '[':
            if (depth == JSON_MAX_DEPTH)
                goto bad;
            stack[depth++] = (char)j.s[j.pos++];
            js_ws(&j);
            if (js_eat(&j, stack[depth - 1] == '{' ? '}' : ']')) {
                depth--;
                break;
            }
            if (stack[depth - 1] == '{') {
                if (!js_string(&j))
                    goto bad;
                js_ws(&j);
                if (!js_eat(&j, ':'))
                    goto bad;
                js_ws(&j);
            }
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
            if (stack[depth - 1] == '{') {
                if (!js_string(&j))
                    goto bad;
                js_ws(&j);
                if (!js_eat(&j, ':'))
                    goto bad;
                js_ws(&j);
            }
            break;
        }
    }
bad:
    *bad_at = j.pos;
    return false;
}

static char *base64_encode(const unsigned char *in, size_t len, size_t *outlen)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n, o = 0;
    char *out;

    if (len > (SIZE_MAX - 1) / 4 * 3 - 2)
        return NULL;
    n = (len + 2) / 3 * 4;
    out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;

        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 0x3F];
        out[o++] = tab[(v >> 12) & 0x3F];
        out[o++] = i + 1 < len ? tab[(v >> 6) & 0x3F] : '=';
        out[o++] = i + 2 < len ? tab[v & 0x3F] : '=';
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

/* A base64 JSON string of len bytes, or NULL when out of memory. */
static json_t *json_base64(const char *data, size_t len)
{
    size_t blen;
    char *b = base64_encode((const unsigned char *)data, len, &blen);
    json_t *j;

    if (b == NULL)
        return NULL;
    j = json_stringn_nocheck(b, blen);
    free(b);
    return j;
}

/*
 * bytea text output: "\x" hex (bytea_output = hex, the default) or the
 * escape format ("\\" and "\ooo" octal).  Returns the bytes (malloc'd, maybe
 * empty), NULL with *bad set when malformed, NULL alone when out of memory.
 */
static unsigned char *bytea_decode(const char *s, size_t len, size_t *outlen, bool *bad)
{
    unsigned char *out = malloc(len + 1);
    size_t o = 0;

    *bad = false;
    if (out == NULL)
        return NULL;
    if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
        if ((len - 2) % 2 != 0)
            goto malformed;
        for (size_t i = 2; i < len; i += 2) {
            int hi = hexval(s[i]), lo = hexval(s[i + 1]);

            if (hi < 0 || lo < 0)
                goto malformed;
            out[o++] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        for (size_t i = 0; i < len;) {
            if (s[i] != '\\') {
                out[o++] = (unsigned char)s[i++];
            } else if (i + 1 < len && s[i + 1] == '\\') {
                out[o++] = '\\';
                i += 2;
            } else if (i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
                       s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
                out[o++] = (unsigned char)((s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3 |
                                           (s[i + 3] - '0'));
                i += 4;
            } else {
                goto malformed;
            }
        }
    }
    *outlen = o;
    return out;
malformed:
    free(out);
    *bad = true;
    return NULL;
}

/* ---- knobs -------------------------------------------------------------- */

static const char *const format_names[] = {
    [ENVELOPE_FORMAT_ENVELOPE] = "envelope",
    [ENVELOPE_FORMAT_DEBEZIUM] = "debezium",
    [ENVELOPE_FORMAT_CLOUDEVENTS] = "cloudevents",
    [ENVELOPE_FORMAT_CLOUDEVENTS_BINARY] = "cloudevents-binary",
};

#define NFORMATS (sizeof format_names / sizeof format_names[0])

int envelope_format_parse(const char *name, enum envelope_format *out)
{
    if (name == NULL || out == NULL)
        return -1;
    for (size_t i = 0; i < NFORMATS; i++) {
        if (strcmp(name, format_names[i]) == 0) {
            *out = (enum envelope_format)i;
            return 0;
        }
    }
    return -1;
}

const char *envelope_format_name(enum envelope_format fmt)
{
    return (size_t)fmt < NFORMATS ? format_names[fmt] : "?";
}

int envelope_timestamp_parse(const char *name, enum envelope_timestamp *out)
{
    static const char *const names[] = {[ENVELOPE_TS_NONE] = "none",
                                        [ENVELOPE_TS_COMMIT] = "commit",
                                        [ENVELOPE_TS_EVENT] = "event"};

    if (name == NULL || out == NULL)
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (enum envelope_timestamp)i;
            return 0;
        }
    }
    return -1;
}

#define FIELD_USAGE "expected COLUMN:header[:NAME] or COLUMN:envelope[:NAME]"

/* Copy s[0..n) into a name buffer: non-empty, short, no control bytes. */
static int copy_name(char *dst, const char *s, size_t n, const char *what, const char *arg,
                     char *err, size_t errlen)
{
    if (n == 0)
        return fail(err, errlen, "--field \"%s\": empty %s (" FIELD_USAGE ")", arg, what);
    if (n >= ENVELOPE_NAME_MAX)
        return fail(err, errlen, "--field \"%s\": %s longer than %d bytes", arg, what,
                    ENVELOPE_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return fail(err, errlen, "--field \"%s\": control character in %s", arg, what);
    if (!utf8_valid(s, n))
        return fail(err, errlen, "--field \"%s\": %s is not valid utf-8", arg, what);
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

int envelope_field_parse(const char *arg, envelope_field *out, char *err, size_t errlen)
{
    const char *c1, *c2, *pl;
    size_t pllen;
    envelope_field f;

    if (arg == NULL || out == NULL)
        return fail(err, errlen, "--field: missing argument (" FIELD_USAGE ")");
    memset(&f, 0, sizeof f);
    c1 = strchr(arg, ':');
    if (c1 == NULL)
        return fail(err, errlen, "--field \"%s\": no placement (" FIELD_USAGE ")", arg);
    pl = c1 + 1;
    c2 = strchr(pl, ':');
    pllen = c2 != NULL ? (size_t)(c2 - pl) : strlen(pl);
    if (pllen == 6 && memcmp(pl, "header", 6) == 0)
        f.placement = ENVELOPE_PLACE_HEADER;
    else if (pllen == 8 && memcmp(pl, "envelope", 8) == 0)
        f.placement = ENVELOPE_PLACE_ENVELOPE;
    else
        return fail(err, errlen, "--field \"%s\": unknown placement \"%.*s\" (" FIELD_USAGE ")",
                    arg, (int)(pllen > 32 ? 32 : pllen), pl);
    if (copy_name(f.column, arg, (size_t)(c1 - arg), "column", arg, err, errlen) != 0)
        return -1;
    if (c2 != NULL) {
        if (strchr(c2 + 1, ':') != NULL)
            return fail(err, errlen, "--field \"%s\": NAME may not contain ':' (" FIELD_USAGE ")",
                        arg);
        if (copy_name(f.name, c2 + 1, strlen(c2 + 1), "name", arg, err, errlen) != 0)
            return -1;
    } else {
        memcpy(f.name, f.column, sizeof f.name);
    }
    *out = f;
    return 0;
}

/* Headers each format writes itself; a header field may not shadow them. */
static const char *const own_headers[][10] = {
    [ENVELOPE_FORMAT_ENVELOPE] = {"id", "type", "aggregate_type", "content-type", "lsn",
                                  "traceparent", "payload-encoding"},
    [ENVELOPE_FORMAT_DEBEZIUM] = {"id", "traceparent", "payload-encoding"},
    [ENVELOPE_FORMAT_CLOUDEVENTS] = {"content-type", "traceparent"},
    [ENVELOPE_FORMAT_CLOUDEVENTS_BINARY] = {"content-type", "traceparent"},
};

/* CloudEvents 1.0 context attributes (and the tracing extension's). */
static const char *const ce_reserved[] = {
    "specversion",     "id",         "source", "type",        "subject",     "time",
    "datacontenttype", "dataschema", "data",   "data_base64", "traceparent", "tracestate",
};

static bool in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n && list[i] != NULL; i++)
        if (strcmp(name, list[i]) == 0)
            return true;
    return false;
}

/* CloudEvents attribute names: lower-case ASCII letters and digits, at most
 * 20 characters (the spec's SHOULD, made a MUST so every SDK accepts them). */
static bool ce_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

static int check_field(enum envelope_format fmt, const envelope_field *f, char *err, size_t errlen)
{
    bool ce = fmt == ENVELOPE_FORMAT_CLOUDEVENTS || fmt == ENVELOPE_FORMAT_CLOUDEVENTS_BINARY;

    if (f->column[0] == '\0' || f->name[0] == '\0' ||
        memchr(f->column, '\0', sizeof f->column) == NULL ||
        memchr(f->name, '\0', sizeof f->name) == NULL)
        return fail(err, errlen, "--field: empty or unterminated column or name");
    if (f->placement == ENVELOPE_PLACE_HEADER) {
        if (in_list(f->name, own_headers[fmt], 10))
            return fail(err, errlen,
                        "--field %s:header:%s: the %s format writes header \"%s\" itself (pick "
                        "another NAME)",
                        f->column, f->name, format_names[fmt], f->name);
        if (fmt == ENVELOPE_FORMAT_CLOUDEVENTS_BINARY && strncmp(f->name, "ce_", 3) == 0)
            return fail(err, errlen,
                        "--field %s:header:%s: ce_ headers are CloudEvents attributes (use "
                        "%s:envelope:%s)",
                        f->column, f->name, f->column, f->name + 3);
        return 0;
    }
    if (f->placement != ENVELOPE_PLACE_ENVELOPE)
        return fail(err, errlen, "--field %s: unknown placement", f->column);
    if (fmt == ENVELOPE_FORMAT_DEBEZIUM && strcmp(f->name, "payload") == 0)
        return fail(err, errlen,
                    "--field %s:envelope:payload: \"payload\" holds the payload (pick another "
                    "NAME)",
                    f->column);
    if (ce && !ce_name_ok(f->name))
        return fail(err, errlen,
                    "--field %s:envelope:%s: a CloudEvents attribute name is 1 to 20 characters "
                    "a-z 0-9 (give one as NAME)",
                    f->column, f->name);
    if (ce && in_list(f->name, ce_reserved, sizeof ce_reserved / sizeof ce_reserved[0]))
        return fail(err, errlen,
                    "--field %s:envelope:%s: \"%s\" is a CloudEvents attribute the relay sets "
                    "(pick another NAME)",
                    f->column, f->name, f->name);
    return 0;
}

int envelope_opts_check(const envelope_opts *o, char *err, size_t errlen)
{
    if (o == NULL || (o->fields == NULL && o->nfields > 0))
        return fail(err, errlen, "envelope_opts_check: missing argument");
    if ((size_t)o->format >= NFORMATS)
        return fail(err, errlen, "unknown format %d (use %s)", (int)o->format,
                    ENVELOPE_FORMAT_NAMES);
    if (envelope_topic_check(o->topic_tmpl, err, errlen) != 0)
        return -1;
    if (o->nfields > ENVELOPE_MAX_FIELDS)
        return fail(err, errlen, "too many --field options (%zu, at most %d)", o->nfields,
                    ENVELOPE_MAX_FIELDS);
    for (size_t i = 0; i < o->nfields; i++) {
        if (check_field(o->format, &o->fields[i], err, errlen) != 0)
            return -1;
        for (size_t k = 0; k < i; k++) {
            const envelope_field *a = &o->fields[k], *b = &o->fields[i];
            bool same_ns =
                a->placement == b->placement || o->format == ENVELOPE_FORMAT_CLOUDEVENTS_BINARY;
            char an[ENVELOPE_NAME_MAX + 3], bn[ENVELOPE_NAME_MAX + 3];

            /* in binary mode envelope fields are ce_ headers too */
            snprintf(an, sizeof an, "%s%s",
                     a->placement == ENVELOPE_PLACE_ENVELOPE &&
                             o->format == ENVELOPE_FORMAT_CLOUDEVENTS_BINARY
                         ? "ce_"
                         : "",
                     a->name);
            snprintf(bn, sizeof bn, "%s%s",
                     b->placement == ENVELOPE_PLACE_ENVELOPE &&
                             o->format == ENVELOPE_FORMAT_CLOUDEVENTS_BINARY
                         ? "ce_"
                         : "",
                     b->name);
            if (same_ns && strcmp(an, bn) == 0)
                return fail(err, errlen, "--field: two fields are called \"%s\"", b->name);
        }
    }
    if (o->tombstone_on_empty && o->format != ENVELOPE_FORMAT_DEBEZIUM)
        return fail(err, errlen, "tombstones on empty payload exist only in the debezium format");
    if ((unsigned)o->timestamp > ENVELOPE_TS_EVENT)
        return fail(err, errlen, "unknown message timestamp source %d", (int)o->timestamp);
    return 0;
}

int envelope_fields_resolve(const envelope_field *fields, size_t nfields, const relcache_entry *rel,
                            const pgo_tuple *tuple, envelope_extra *out, size_t *nout, char *err,
                            size_t errlen)
{
    int ncols;

    if (nout == NULL || (nfields > 0 && (fields == NULL || out == NULL)))
        return fail(err, errlen, "envelope_fields_resolve: missing argument");
    *nout = 0;
    if (rel == NULL || tuple == NULL || (tuple->cols == NULL && tuple->ncols > 0))
        return 0;
    ncols = tuple->ncols < rel->natts ? tuple->ncols : rel->natts;
    for (size_t i = 0; i < nfields; i++) {
        for (int c = 0; c < ncols; c++) {
            const pgo_value *v = &tuple->cols[c];

            if (rel->atts[c].name == NULL || strcmp(rel->atts[c].name, fields[i].column) != 0)
                continue;
            if (v->kind != 't' && v->kind != 'n')
                return fail(err, errlen, "column \"%s\" (--field) is not in text format",
                            fields[i].column);
            out[*nout] =
                (envelope_extra){.field = &fields[i],
                                 .data = v->kind == 't' ? (v->data != NULL ? v->data : "") : NULL,
                                 .len = v->kind == 't' ? v->len : 0,
                                 .type_oid = rel->atts[c].type_oid};
            (*nout)++;
            break;
        }
    }
    return 0;
}

static bool lower_hex(const char *s, size_t n, bool *all_zero)
{
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        if (s[i] != '0')
            *all_zero = false;
    }
    return true;
}

bool envelope_traceparent_valid(const char *s, size_t len)
{
    bool zero;

    if (s == NULL || len < 55)
        return false;
    if (!lower_hex(s, 2, &zero) || (s[0] == 'f' && s[1] == 'f'))
        return false;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    if (!lower_hex(s + 3, 32, &zero) || zero)
        return false;
    if (!lower_hex(s + 36, 16, &zero) || zero)
        return false;
    if (!lower_hex(s + 53, 2, &zero))
        return false;
    if (s[0] == '0' && s[1] == '0')
        return len == 55;
    return len == 55 || s[55] == '-';
}

/* ---- topic templates ---------------------------------------------------- */

enum placeholder { PH_AGGREGATE_TYPE, PH_AGGREGATE_ID, PH_TYPE, PH_TABLE, PH_N };

static const char *const ph_names[PH_N] = {
    [PH_AGGREGATE_TYPE] = "aggregate_type",
    [PH_AGGREGATE_ID] = "aggregate_id",
    [PH_TYPE] = "type",
    [PH_TABLE] = "table",
};

static bool topic_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/*
 * p points at '{': identify the placeholder and set *adv to its length.
 * Returns its index, or -1 with err naming it.
 */
static int placeholder_at(const char *p, size_t *adv, char *err, size_t errlen)
{
    const char *close = strchr(p, '}');
    size_t n;

    if (close == NULL)
        return fail(err, errlen, "unclosed \"{\" in topic template at \"%.40s\" (placeholders: %s)",
                    p, PLACEHOLDERS);
    n = (size_t)(close - p - 1);
    for (int i = 0; i < PH_N; i++) {
        if (strlen(ph_names[i]) == n && memcmp(ph_names[i], p + 1, n) == 0) {
            *adv = n + 2;
            return i;
        }
    }
    return fail(err, errlen, "unknown placeholder \"%.*s\" in topic template (placeholders: %s)",
                (int)(n + 2 > 64 ? 64 : n + 2), p, PLACEHOLDERS);
}

int envelope_topic_check(const char *tmpl, char *err, size_t errlen)
{
    size_t literal = 0;
    bool any_ph = false;

    if (tmpl == NULL || tmpl[0] == '\0')
        return fail(err, errlen, "empty topic template");
    for (const char *p = tmpl; *p != '\0';) {
        size_t adv;

        if (*p == '{') {
            if (placeholder_at(p, &adv, err, errlen) < 0)
                return -1;
            any_ph = true;
            p += adv;
            continue;
        }
        /* Refuse now what would make every expanded topic invalid. */
        if (!topic_char(*p))
            return fail(err, errlen,
                        "character '%c' (0x%02x) in topic template \"%s\" is not allowed in a "
                        "kafka topic name (use a-z A-Z 0-9 . _ -)",
                        (*p >= 0x20 && *p < 0x7f) ? *p : '?', (unsigned char)*p, tmpl);
        literal++;
        p++;
    }
    if (literal > TOPIC_MAX)
        return fail(err, errlen, "topic template \"%.40s...\" is longer than %d characters", tmpl,
                    TOPIC_MAX);
    if (!any_ph && (strcmp(tmpl, ".") == 0 || strcmp(tmpl, "..") == 0))
        return fail(err, errlen, "topic \"%s\" is not a valid kafka topic name", tmpl);
    return 0;
}

/* Copy s into buf replacing what a log line or header should not carry. */
static const char *printable(const char *s, size_t len, char *buf, size_t bufsz)
{
    size_t n = len < bufsz - 1 ? len : bufsz - 1;

    for (size_t i = 0; i < n; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    buf[n] = '\0';
    return buf;
}

/* Expand tmpl for one row into out (TOPIC_MAX + 1 bytes) and validate it. */
static int topic_expand(const char *tmpl, const outbox_row *row, const envelope_source *src,
                        char *out, char *err, size_t errlen)
{
    size_t o = 0;
    char shown[80];

    if (tmpl == NULL || tmpl[0] == '\0')
        return fail(err, errlen, "empty topic template");
    for (const char *p = tmpl; *p != '\0';) {
        const char *v = p;
        size_t vlen = 1, adv = 1;

        if (*p == '{') {
            int ph = placeholder_at(p, &adv, err, errlen);
            const outbox_field *f = NULL;

            switch (ph) {
            case PH_AGGREGATE_TYPE:
                f = &row->f[OB_AGGREGATE_TYPE];
                break;
            case PH_AGGREGATE_ID:
                f = &row->f[OB_AGGREGATE_ID];
                break;
            case PH_TYPE:
                f = &row->f[OB_TYPE];
                break;
            case PH_TABLE:
                v = src->table != NULL ? src->table : "";
                vlen = strlen(v);
                break;
            default:
                return -1;
            }
            if (f != NULL) {
                v = f->present && f->data != NULL ? f->data : "";
                vlen = f->present && f->data != NULL ? f->len : 0;
            }
        }
        if (vlen > TOPIC_MAX - o) {
            memcpy(out + o, v, TOPIC_MAX - o);
            return fail(err, errlen, "topic \"%s...\" is longer than %d characters",
                        printable(out, 60, shown, sizeof shown), TOPIC_MAX);
        }
        memcpy(out + o, v, vlen);
        o += vlen;
        p += adv;
    }
    out[o] = '\0';
    for (size_t i = 0; i < o; i++) {
        if (!topic_char(out[i]))
            return fail(err, errlen, "topic \"%s\" is not a valid kafka topic name (byte 0x%02x)",
                        printable(out, o, shown, sizeof shown), (unsigned char)out[i]);
    }
    if (o == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        return fail(err, errlen, "topic \"%s\" is not a valid kafka topic name", out);
    return 0;
}

int envelope_topic_for(const char *tmpl, const char *aggregate_type, const char *aggregate_id,
                       const char *type, const char *table, char *out, size_t outlen, char *err,
                       size_t errlen)
{
    outbox_row row;
    envelope_source src;
    char buf[TOPIC_MAX + 1];
    const char *v[3] = {aggregate_type, aggregate_id, type};
    const enum outbox_role r[3] = {OB_AGGREGATE_TYPE, OB_AGGREGATE_ID, OB_TYPE};

    memset(&row, 0, sizeof row);
    memset(&src, 0, sizeof src);
    for (int i = 0; i < 3; i++) {
        row.f[r[i]].present = v[i] != NULL;
        row.f[r[i]].data = v[i];
        row.f[r[i]].len = v[i] != NULL ? strlen(v[i]) : 0;
    }
    src.table = table;
    if (topic_expand(tmpl, &row, &src, buf, err, errlen) != 0)
        return -1;
    if (strlen(buf) >= outlen)
        return fail(err, errlen, "topic buffer too small");
    memcpy(out, buf, strlen(buf) + 1);
    return 0;
}

/* ---- messages ----------------------------------------------------------- */

void envelope_msg_clear(envelope_msg *msg)
{
    if (msg == NULL)
        return;
    free(msg->topic);
    free(msg->key);
    free(msg->value);
    /* a header's value lives in its name's allocation (add_header) */
    for (int i = 0; i < msg->nheaders && i < ENVELOPE_MAX_HEADERS; i++)
        free(msg->headers[i].name);
    memset(msg, 0, sizeof *msg);
}

/* Copy of len bytes, NUL-terminated for the convenience of readers. */
static char *memdup0(const char *s, size_t len)
{
    char *d = malloc(len + 1);

    if (d == NULL)
        return NULL;
    if (len > 0)
        memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* Name and value in one allocation, the value NUL-terminated after the
 * name's NUL: half the malloc/free pairs of a record. */
static int add_header(envelope_msg *m, const char *name, const char *value, size_t len)
{
    envelope_header *h;
    size_t nlen = strlen(name);
    char *b;

    if (m->nheaders >= ENVELOPE_MAX_HEADERS || len > SIZE_MAX - nlen - 2)
        return -1;
    b = malloc(nlen + 1 + len + 1);
    if (b == NULL)
        return -1;
    memcpy(b, name, nlen + 1);
    if (len > 0)
        memcpy(b + nlen + 1, value, len);
    b[nlen + 1 + len] = '\0';
    h = &m->headers[m->nheaders++];
    h->name = b;
    h->value = b + nlen + 1;
    h->len = len;
    return 0;
}

static int add_header_str(envelope_msg *m, const char *name, const char *value)
{
    return add_header(m, name, value, strlen(value));
}

static bool json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ---- JSON writer -------------------------------------------------------- */

/*
 * Values are written straight into their final buffer: no tree, no dump,
 * no splice.  Strings are escaped exactly as jansson's JSON_COMPACT dump
 * does (the tests compare the two), so the envelope's bytes did not change
 * when the writer replaced jansson here.  Memory comes from jansson's
 * allocator, so its allocation hooks (the tests' torture mode) cover it; the
 * result is released with free() like any json_dumps() output.  A failed
 * allocation sticks: every later call is a no-op and jw_finish() says so.
 */
#define JW_MAX_DEPTH 4

typedef struct jw {
    char *buf;
    size_t len, cap;
    bool failed;
    int depth;
    bool first[JW_MAX_DEPTH];
    json_malloc_t alloc;
    json_free_t release;
} jw;

static void jw_init(jw *w)
{
    memset(w, 0, sizeof *w);
    json_get_alloc_funcs(&w->alloc, &w->release);
}

static bool jw_reserve(jw *w, size_t n)
{
    size_t cap;
    char *nb;

    if (w->failed)
        return false;
    if (n <= w->cap - w->len)
        return true;
    cap = w->cap > 0 ? w->cap : 256;
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

static void jw_raw(jw *w, const char *s, size_t n)
{
    if (!jw_reserve(w, n))
        return;
    if (n > 0)
        memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void jw_lit(jw *w, const char *s)
{
    jw_raw(w, s, strlen(s));
}

/*
 * A JSON string of s[0..n), which must be valid UTF-8 (checked before):
 * runs that need no escape are copied whole, room for the rest reserved as
 * it comes (an escape is at most 6 bytes).
 */
static void jw_str(jw *w, const char *str, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run;

    if (n > SIZE_MAX - 2 || !jw_reserve(w, n + 2))
        return;
    w->buf[w->len++] = '"';
    for (;;) {
        unsigned char c;
        char *e;

        run = i;
        i = json_plain_run(s, i, n);
        memcpy(w->buf + w->len, s + run, i - run);
        w->len += i - run;
        if (i == n)
            break;
        /* the escape, then what is left of s and the closing quote */
        if (!jw_reserve(w, 6 + (n - i - 1) + 1))
            return;
        c = s[i++];
        e = w->buf + w->len;
        e[0] = '\\';
        w->len += 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 0xF];
            w->len += 4;
            break;
        }
    }
    w->buf[w->len++] = '"';
}

/* A string that needs no escaping (formatted here: digits, hex, ASCII
 * punctuation), between quotes. */
static void jw_plain_str(jw *w, const char *s, size_t n)
{
    if (n > SIZE_MAX - 2 || !jw_reserve(w, n + 2))
        return;
    w->buf[w->len++] = '"';
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len++] = '"';
}

static void jw_cstr(jw *w, const char *s)
{
    jw_str(w, s, strlen(s));
}

static void jw_uint(jw *w, uint64_t v)
{
    char b[20]; /* UINT64_MAX has 20 digits */
    size_t n = sizeof b;

    do {
        b[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    jw_raw(w, b + n, sizeof b - n);
}

static void jw_base64(jw *w, const unsigned char *in, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    if (len > (SIZE_MAX - 2) / 4 * 3 - 2 || !jw_reserve(w, (len + 2) / 3 * 4 + 2))
        return;
    w->buf[w->len++] = '"';
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;

        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        w->buf[w->len++] = tab[(v >> 18) & 0x3F];
        w->buf[w->len++] = tab[(v >> 12) & 0x3F];
        w->buf[w->len++] = i + 1 < len ? tab[(v >> 6) & 0x3F] : '=';
        w->buf[w->len++] = i + 2 < len ? tab[v & 0x3F] : '=';
    }
    w->buf[w->len++] = '"';
}

static void jw_open(jw *w)
{
    jw_raw(w, "{", 1);
    if (w->depth < JW_MAX_DEPTH)
        w->first[w->depth] = true;
    w->depth++;
}

static void jw_close(jw *w)
{
    w->depth--;
    jw_raw(w, "}", 1);
}

/* "key": with the comma that goes before every member but the first. */
static void jw_key(jw *w, const char *key)
{
    bool *first = &w->first[w->depth > 0 ? w->depth - 1 : 0];

    if (!*first)
        jw_raw(w, ",", 1);
    *first = false;
    jw_cstr(w, key);
    jw_raw(w, ":", 1);
}

/* jw_key() for a key known when compiling, which needs no escaping: its
 * literal "\"key\":" is written as it is (JW_KEY). */
static void jw_key_lit(jw *w, const char *lit, size_t n)
{
    bool *first = &w->first[w->depth > 0 ? w->depth - 1 : 0];

    if (!jw_reserve(w, n + 1))
        return;
    if (!*first)
        w->buf[w->len++] = ',';
    *first = false;
    memcpy(w->buf + w->len, lit, n);
    w->len += n;
}

#define JW_KEY(w, key) jw_key_lit((w), "\"" key "\":", sizeof("\"" key "\":") - 1)

/* Hand the text over, NUL-terminated.  Returns 0, or -1 when out of memory. */
static int jw_finish(jw *w, char **out, size_t *outlen)
{
    if (!jw_reserve(w, 1)) {
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

static void jw_discard(jw *w)
{
    if (w->release != NULL)
        w->release(w->buf);
    w->buf = NULL;
}

/* ---- the row ------------------------------------------------------------ */

enum payload_kind {
    PL_NULL,   /* SQL NULL */
    PL_JSON,   /* validated JSON text, embedded as it is */
    PL_TEXT,   /* text that is not JSON: a JSON string */
    PL_BINARY, /* bytea, decoded into bytes */
};

/* What build needs from a row, checked once for every format. */
typedef struct prepared {
    enum payload_kind pl;
    const char *pdata; /* PL_JSON / PL_TEXT: borrowed; PL_BINARY: bin */
    size_t plen;
    unsigned char *bin;  /* owned */
    bool payload_blank;  /* NULL, or text that is empty or only spaces */
    int64_t occurred_us; /* Unix microseconds */
    char occurred[PGTIME_BUFSZ];
    size_t occurred_len;
    bool traceparent; /* the row has a valid one */
} prepared;

/*
 * Classify the payload.  Returns 0, or -1 with the poison reason (or out of
 * memory, errno ENOMEM).
 */
static int prepare_payload(const outbox_row *row, prepared *p, char *err, size_t errlen)
{
    const outbox_field *f = &row->f[OB_PAYLOAD];
    const char *s = f->data;
    size_t len = f->len;
    size_t bad_at;

    p->pl = PL_NULL;
    p->payload_blank = true;
    if (!f->present)
        return 0;
    if (s == NULL && len > 0)
        return fail(err, errlen, "payload has length %zu but no data", len);
    if (s == NULL)
        s = "";
    switch (row->payload_type_oid) {
    case OID_JSON:
    case OID_JSONB:
    case OID_TEXT:
    case OID_VARCHAR:
        while (len > 0 && json_ws(s[0])) {
            s++;
            len--;
        }
        while (len > 0 && json_ws(s[len - 1]))
            len--;
        p->payload_blank = len == 0;
        if (json_text_valid(s, len, &bad_at)) {
            p->pl = PL_JSON;
            p->pdata = s;
            p->plen = len;
            return 0;
        }
        if (row->payload_type_oid == OID_JSON || row->payload_type_oid == OID_JSONB)
            return fail(err, errlen, "payload is not valid json (at byte %zu of %zu)",
                        bad_at + (size_t)(s - f->data), f->len);
        /* Not JSON: the text as it is, surrounding spaces included. */
        s = f->data != NULL ? f->data : "";
        len = f->len;
        break;
    case OID_BYTEA: {
        bool bad;

        p->bin = bytea_decode(s, len, &p->plen, &bad);
        if (p->bin == NULL)
            return bad ? fail(err, errlen, "bytea payload is neither hex nor escape format")
                       : oom(err, errlen);
        p->pl = PL_BINARY;
        p->pdata = (const char *)p->bin;
        p->payload_blank = false; /* as Debezium: only text can be blank */
        return 0;
    }
    default:
        for (size_t i = 0; i < len && p->payload_blank; i++)
            p->payload_blank = json_ws(s[i]);
        break;
    }
    if (!utf8_valid(s, len))
        return fail(err, errlen, "payload is not valid utf-8");
    p->pl = PL_TEXT;
    p->pdata = s;
    p->plen = len;
    return 0;
}

/* Role names as the envelope spells them in poison reasons. */
static const char *role_name(enum outbox_role role)
{
    switch (role) {
    case OB_ID:
        return "id";
    case OB_AGGREGATE_TYPE:
        return "aggregate_type";
    case OB_AGGREGATE_ID:
        return "aggregate_id";
    case OB_TYPE:
        return "type";
    default:
        return "field";
    }
}

/*
 * Check what every format needs: the four identity fields present and UTF-8,
 * a parseable timestamp, the payload, the traceparent (dropped, not
 * refused, when malformed).  Returns 0, or -1 with the poison reason.
 */
static int prepare(const outbox_row *row, const envelope_source *src, prepared *p, char *err,
                   size_t errlen)
{
    static const enum outbox_role ids[] = {OB_ID, OB_TYPE, OB_AGGREGATE_TYPE, OB_AGGREGATE_ID};
    const outbox_field *ts = &row->f[OB_TIMESTAMP];
    const outbox_field *tp = &row->f[OB_TRACEPARENT];

    memset(p, 0, sizeof *p);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const outbox_field *f = &row->f[ids[i]];

        if (!f->present || (f->data == NULL && f->len > 0))
            return fail(err, errlen, "row has no %s", role_name(ids[i]));
        if (!utf8_valid(f->data, f->len))
            return fail(err, errlen, "%s is not valid utf-8", role_name(ids[i]));
    }
    if (ts->present && ts->data != NULL) {
        char shown[64];

        if (pgtime_parse_text(ts->data, ts->len, &p->occurred_us) != 0)
            return fail(err, errlen, "timestamp \"%s\" is not a timestamptz",
                        printable(ts->data, ts->len, shown, sizeof shown));
    } else {
        p->occurred_us = pgtime_to_unix_us(src->commit_ts);
    }
    p->occurred_len = unixtime_format_len(p->occurred_us, p->occurred);
    p->traceparent =
        tp->present && tp->data != NULL && envelope_traceparent_valid(tp->data, tp->len);
    return prepare_payload(row, p, err, errlen);
}

static void jw_field(jw *w, const outbox_row *row, enum outbox_role role)
{
    const outbox_field *f = &row->f[role];

    jw_str(w, f->len > 0 ? f->data : "", f->len);
}

/* The payload as a JSON value: embedded JSON, a string, base64 or null. */
static void jw_payload(jw *w, const prepared *p)
{
    switch (p->pl) {
    case PL_NULL:
        jw_lit(w, "null");
        break;
    case PL_JSON:
        jw_raw(w, p->pdata, p->plen);
        break;
    case PL_TEXT:
        jw_str(w, p->pdata, p->plen);
        break;
    case PL_BINARY:
        jw_base64(w, (const unsigned char *)p->pdata, p->plen);
        break;
    }
}

/* ---- additional fields -------------------------------------------------- */

#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_NUMERIC 1700

/* Check every extra's text before anything is written. */
static int check_extras(const envelope_extra *x, size_t n, char *err, size_t errlen)
{
    size_t bad_at;

    for (size_t i = 0; i < n; i++) {
        if (x[i].data == NULL)
            continue;
        if (!utf8_valid(x[i].data, x[i].len))
            return fail(err, errlen, "column \"%s\" (--field) is not valid utf-8",
                        x[i].field->column);
        if ((x[i].type_oid == OID_JSON || x[i].type_oid == OID_JSONB) &&
            !json_text_valid(x[i].data, x[i].len, &bad_at))
            return fail(err, errlen, "column \"%s\" (--field) is not valid json (at byte %zu)",
                        x[i].field->column, bad_at);
    }
    return 0;
}

/* Whether s[0..n) is a JSON number (PostgreSQL prints NaN and Infinity too). */
static bool is_json_number(const char *s, size_t n)
{
    struct jscan j = {.s = (const unsigned char *)s, .len = n, .pos = 0};

    return n > 0 && js_number(&j) && j.pos == n;
}

/* One extra as a JSON value typed by its column type. */
static void jw_extra(jw *w, const envelope_extra *x, bool strings_only)
{
    if (x->data == NULL) {
        jw_lit(w, "null");
        return;
    }
    if (!strings_only) {
        switch (x->type_oid) {
        case OID_JSON:
        case OID_JSONB:
            jw_raw(w, x->data, x->len);
            return;
        case OID_BOOL:
            if (x->len == 1 && (x->data[0] == 't' || x->data[0] == 'f')) {
                jw_lit(w, x->data[0] == 't' ? "true" : "false");
                return;
            }
            break;
        case OID_INT2:
        case OID_INT4:
        case OID_INT8:
        case OID_OID:
        case OID_FLOAT4:
        case OID_FLOAT8:
        case OID_NUMERIC:
            if (is_json_number(x->data, x->len)) {
                jw_raw(w, x->data, x->len);
                return;
            }
            break;
        default:
            break;
        }
    }
    jw_str(w, x->data, x->len);
}

static bool has_placement(const envelope_extra *x, size_t n, enum envelope_placement pl)
{
    for (size_t i = 0; i < n; i++)
        if (x[i].field->placement == pl)
            return true;
    return false;
}

/* Envelope-placed extras as members of the object being written. */
static void jw_extras(jw *w, const envelope_extra *x, size_t n, bool strings_only)
{
    for (size_t i = 0; i < n; i++) {
        if (x[i].field->placement != ENVELOPE_PLACE_ENVELOPE)
            continue;
        jw_key(w, x[i].field->name);
        jw_extra(w, &x[i], strings_only);
    }
}

/* Header-placed extras (a NULL value gives no header); prefix for ce_. */
static int add_extra_headers(envelope_msg *m, const envelope_extra *x, size_t n,
                             enum envelope_placement pl, const char *prefix)
{
    char name[ENVELOPE_NAME_MAX + 8];

    for (size_t i = 0; i < n; i++) {
        if (x[i].field->placement != pl || x[i].data == NULL)
            continue;
        snprintf(name, sizeof name, "%s%s", prefix, x[i].field->name);
        if (add_header(m, name, x[i].data, x[i].len) != 0)
            return -1;
    }
    return 0;
}

/* ---- formats ------------------------------------------------------------ */

/* Set when a source string is not UTF-8: the caller makes it a poison row.
 * keylit is the key's JSON text with its colon (JW_SOURCE_STR). */
static void jw_source_str(jw *w, const char *keylit, size_t keylen, const char *key, const char *s,
                          const char **bad)
{
    jw_key_lit(w, keylit, keylen);
    if (s == NULL) {
        jw_lit(w, "null");
        return;
    }
    if (!utf8_valid(s, strlen(s))) {
        if (*bad == NULL)
            *bad = key;
        jw_lit(w, "null");
        return;
    }
    jw_cstr(w, s);
}

/* The commit (or snapshot) time; formatted once when it is also occurred_at. */
static void jw_commit_time(jw *w, const envelope_source *src, const prepared *p)
{
    char tbuf[PGTIME_BUFSZ];
    int64_t us = pgtime_to_unix_us(src->commit_ts);

    if (us == p->occurred_us)
        jw_plain_str(w, p->occurred, p->occurred_len);
    else
        jw_plain_str(w, tbuf, unixtime_format_len(us, tbuf));
}

#define JW_SOURCE_STR(w, key, s, bad)                                                              \
    jw_source_str((w), "\"" key "\":", sizeof("\"" key "\":") - 1, key, (s), (bad))

static int value_envelope(jw *w, const outbox_row *row, const envelope_source *src,
                          const prepared *p, const envelope_extra *x, size_t nx, char *err,
                          size_t errlen)
{
    char lbuf[LSN_BUFSZ];
    const char *bad = NULL;

    jw_open(w);
    JW_KEY(w, "id");
    jw_field(w, row, OB_ID);
    JW_KEY(w, "type");
    jw_field(w, row, OB_TYPE);
    JW_KEY(w, "aggregate_type");
    jw_field(w, row, OB_AGGREGATE_TYPE);
    JW_KEY(w, "aggregate_id");
    jw_field(w, row, OB_AGGREGATE_ID);
    JW_KEY(w, "occurred_at");
    jw_plain_str(w, p->occurred, p->occurred_len);
    JW_KEY(w, "payload");
    jw_payload(w, p);
    JW_KEY(w, "source");
    jw_open(w);
    if (src->backfill) {
        /* Read from the table: no WAL position, transaction or slot to name. */
        JW_KEY(w, "backfill");
        jw_lit(w, "true");
        JW_KEY(w, "snapshot_time");
        jw_commit_time(w, src, p);
    } else {
        JW_KEY(w, "lsn");
        jw_plain_str(w, lbuf, lsn_format_len(src->lsn, lbuf));
        JW_KEY(w, "commit_lsn");
        jw_plain_str(w, lbuf, lsn_format_len(src->commit_lsn, lbuf));
        JW_KEY(w, "seq");
        jw_uint(w, src->seq);
        JW_KEY(w, "xid");
        jw_uint(w, src->xid);
        JW_KEY(w, "commit_time");
        jw_commit_time(w, src, p);
    }
    JW_SOURCE_STR(w, "db", src->db, &bad);
    JW_SOURCE_STR(w, "table", src->table, &bad);
    if (!src->backfill)
        JW_SOURCE_STR(w, "slot", src->slot, &bad);
    jw_close(w);
    if (bad != NULL)
        return fail(err, errlen, "source %s is not valid utf-8", bad);
    if (p->traceparent) {
        JW_KEY(w, "trace");
        jw_open(w);
        JW_KEY(w, "traceparent");
        jw_field(w, row, OB_TRACEPARENT);
        jw_close(w);
    }
    if (has_placement(x, nx, ENVELOPE_PLACE_ENVELOPE)) {
        JW_KEY(w, "fields");
        jw_open(w);
        jw_extras(w, x, nx, false);
        jw_close(w);
    }
    jw_close(w);
    return 0;
}

/* The payload as the whole value: JSON text, text or bytes as they are. */
static void value_bare(jw *w, const prepared *p)
{
    jw_raw(w, p->pdata != NULL ? p->pdata : "", p->plen);
}

/*
 * CloudEvents "source": a URI-reference naming the outbox table,
 * "/outbox-relay/<db>/<schema.table>", each segment percent-encoded where
 * RFC 3986 does not allow the character in a path segment.  Together with
 * id (the outbox row's id) it is unique per event, as the spec requires.
 */
static void ce_source(jw *w, const envelope_source *src)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *seg[2] = {src->db != NULL ? src->db : "", src->table != NULL ? src->table : ""};

    jw_lit(w, "/outbox-relay");
    for (int k = 0; k < 2; k++) {
        jw_raw(w, "/", 1);
        for (const unsigned char *c = (const unsigned char *)seg[k]; *c != '\0'; c++) {
            if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                strchr("-._~!$&'()*+,;=:@", *c) != NULL) {
                jw_raw(w, (const char *)c, 1);
            } else {
                char pct[3] = {'%', hex[*c >> 4], hex[*c & 0xF]};

                jw_raw(w, pct, 3);
            }
        }
    }
}

/* The source URI alone, as a NUL-terminated string (binary mode header). */
static char *ce_source_str(const envelope_source *src, size_t *len)
{
    jw w;
    char *s = NULL;

    jw_init(&w);
    ce_source(&w, src);
    if (jw_finish(&w, &s, len) != 0)
        return NULL;
    return s;
}

static const char *ce_content_type(const prepared *p)
{
    switch (p->pl) {
    case PL_TEXT:
        return "text/plain; charset=utf-8";
    case PL_BINARY:
        return "application/octet-stream";
    default:
        return "application/json";
    }
}

static void value_cloudevents(jw *w, const outbox_row *row, const envelope_source *src,
                              const prepared *p, const envelope_extra *x, size_t nx)
{
    jw_open(w);
    JW_KEY(w, "specversion");
    jw_lit(w, "\"1.0\"");
    JW_KEY(w, "id");
    jw_field(w, row, OB_ID);
    JW_KEY(w, "source");
    jw_raw(w, "\"", 1);
    ce_source(w, src); /* nothing in it needs escaping */
    jw_raw(w, "\"", 1);
    JW_KEY(w, "type");
    jw_field(w, row, OB_TYPE);
    JW_KEY(w, "subject");
    jw_field(w, row, OB_AGGREGATE_ID);
    JW_KEY(w, "time");
    jw_plain_str(w, p->occurred, p->occurred_len);
    if (p->traceparent) {
        /* the distributed-tracing extension attribute */
        JW_KEY(w, "traceparent");
        jw_field(w, row, OB_TRACEPARENT);
    }
    jw_extras(w, x, nx, true);
    if (p->pl != PL_NULL) {
        JW_KEY(w, "datacontenttype");
        jw_cstr(w, ce_content_type(p));
        if (p->pl == PL_BINARY)
            JW_KEY(w, "data_base64");
        else
            JW_KEY(w, "data");
        jw_payload(w, p);
    }
    jw_close(w);
}

static int headers_envelope(envelope_msg *m, const outbox_row *row, const envelope_source *src,
                            const prepared *p)
{
    char lbuf[LSN_BUFSZ];

    if (add_header(m, "id", row->f[OB_ID].data, row->f[OB_ID].len) != 0 ||
        add_header(m, "type", row->f[OB_TYPE].data, row->f[OB_TYPE].len) != 0 ||
        add_header(m, "aggregate_type", row->f[OB_AGGREGATE_TYPE].data,
                   row->f[OB_AGGREGATE_TYPE].len) != 0 ||
        add_header_str(m, "content-type", "application/json") != 0 ||
        (!src->backfill && add_header_str(m, "lsn", lsn_format(src->lsn, lbuf)) != 0))
        return -1;
    if (p->pl == PL_BINARY && add_header_str(m, "payload-encoding", "base64") != 0)
        return -1;
    return 0;
}

static int headers_cloudevents_binary(envelope_msg *m, const outbox_row *row,
                                      const envelope_source *src, const prepared *p)
{
    size_t slen = 0;
    char *source = ce_source_str(src, &slen);
    int rc;

    if (source == NULL)
        return -1;
    rc = add_header_str(m, "ce_specversion", "1.0") != 0 ||
                 add_header(m, "ce_id", row->f[OB_ID].data, row->f[OB_ID].len) != 0 ||
                 add_header(m, "ce_source", source, slen) != 0 ||
                 add_header(m, "ce_type", row->f[OB_TYPE].data, row->f[OB_TYPE].len) != 0 ||
                 add_header(m, "ce_subject", row->f[OB_AGGREGATE_ID].data,
                            row->f[OB_AGGREGATE_ID].len) != 0 ||
                 add_header_str(m, "ce_time", p->occurred) != 0
             ? -1
             : 0;
    free(source);
    if (rc == 0 && p->traceparent &&
        add_header(m, "ce_traceparent", row->f[OB_TRACEPARENT].data, row->f[OB_TRACEPARENT].len) !=
            0)
        rc = -1;
    if (rc == 0 && p->pl != PL_NULL && add_header_str(m, "content-type", ce_content_type(p)) != 0)
        rc = -1;
    return rc;
}

static int64_t message_timestamp(enum envelope_timestamp ts, const envelope_source *src,
                                 const prepared *p)
{
    int64_t us;

    switch (ts) {
    case ENVELOPE_TS_COMMIT:
        us = pgtime_to_unix_us(src->commit_ts);
        break;
    case ENVELOPE_TS_EVENT:
        us = p->occurred_us;
        break;
    default:
        return 0;
    }
    /* Kafka has no timestamps before 1970: leave those to the producer. */
    return us >= 1000 ? us / 1000 : 0;
}

int envelope_build(enum envelope_format fmt, const char *topic_tmpl, const outbox_row *row,
                   const envelope_source *src, envelope_msg *out, char *err, size_t errlen)
{
    envelope_opts o = {.format = fmt, .topic_tmpl = topic_tmpl};

    return envelope_build_opts(&o, row, NULL, 0, src, out, err, errlen);
}

int envelope_build_opts(const envelope_opts *opts, const outbox_row *row,
                        const envelope_extra *extras, size_t nextras, const envelope_source *src,
                        envelope_msg *out, char *err, size_t errlen)
{
    envelope_msg m = {0};
    char topic[TOPIC_MAX + 1];
    prepared p = {0};
    jw w;
    bool tombstone = false, wrapped;
    enum envelope_format fmt;

    errno = 0;
    jw_init(&w);
    if (out == NULL || row == NULL || src == NULL || opts == NULL ||
        (extras == NULL && nextras > 0)) {
        fail(err, errlen, "envelope_build: missing argument");
        goto fail;
    }
    memset(out, 0, sizeof *out);
    fmt = opts->format;
    if (fmt != ENVELOPE_FORMAT_ENVELOPE && fmt != ENVELOPE_FORMAT_DEBEZIUM &&
        fmt != ENVELOPE_FORMAT_CLOUDEVENTS && fmt != ENVELOPE_FORMAT_CLOUDEVENTS_BINARY) {
        fail(err, errlen, "unknown envelope format %d", (int)fmt);
        goto fail;
    }
    if (topic_expand(opts->topic_tmpl, row, src, topic, err, errlen) != 0 ||
        prepare(row, src, &p, err, errlen) != 0 || check_extras(extras, nextras, err, errlen) != 0)
        goto fail;
    /* One allocation for the usual record: the payload (base64 grows it by
     * a third) plus the envelope around it. */
    (void)jw_reserve(&w, p.plen + p.plen / 3 + 512 + 96 * nextras);
    m.dropped_traceparent =
        row->f[OB_TRACEPARENT].present && row->f[OB_TRACEPARENT].data != NULL && !p.traceparent;
    m.timestamp_ms = message_timestamp(opts->timestamp, src, &p);

    switch (fmt) {
    case ENVELOPE_FORMAT_ENVELOPE:
        if (value_envelope(&w, row, src, &p, extras, nextras, err, errlen) != 0)
            goto fail;
        break;
    case ENVELOPE_FORMAT_DEBEZIUM:
        wrapped = has_placement(extras, nextras, ENVELOPE_PLACE_ENVELOPE);
        tombstone = (opts->tombstone_on_empty && p.payload_blank) || (p.pl == PL_NULL && !wrapped);
        if (tombstone)
            break;
        if (wrapped) {
            jw_open(&w);
            JW_KEY(&w, "payload");
            jw_payload(&w, &p);
            jw_extras(&w, extras, nextras, false);
            jw_close(&w);
        } else {
            value_bare(&w, &p);
        }
        break;
    case ENVELOPE_FORMAT_CLOUDEVENTS:
        value_cloudevents(&w, row, src, &p, extras, nextras);
        break;
    case ENVELOPE_FORMAT_CLOUDEVENTS_BINARY:
        tombstone = p.pl == PL_NULL;
        if (!tombstone)
            value_bare(&w, &p);
        break;
    }
    if (!tombstone && jw_finish(&w, &m.value, &m.valuelen) != 0)
        goto nomem;

    m.topic = strdup(topic);
    m.key = memdup0(row->f[OB_AGGREGATE_ID].data, row->f[OB_AGGREGATE_ID].len);
    if (m.topic == NULL || m.key == NULL)
        goto nomem;
    m.keylen = row->f[OB_AGGREGATE_ID].len;
    switch (fmt) {
    case ENVELOPE_FORMAT_ENVELOPE:
        if (headers_envelope(&m, row, src, &p) != 0)
            goto nomem;
        break;
    case ENVELOPE_FORMAT_DEBEZIUM:
        if (add_header(&m, "id", row->f[OB_ID].data, row->f[OB_ID].len) != 0)
            goto nomem;
        /* bytea inside the {payload, ...} wrapper is base64: say so */
        if (!tombstone && p.pl == PL_BINARY &&
            has_placement(extras, nextras, ENVELOPE_PLACE_ENVELOPE) &&
            add_header_str(&m, "payload-encoding", "base64") != 0)
            goto nomem;
        break;
    case ENVELOPE_FORMAT_CLOUDEVENTS:
        if (add_header_str(&m, "content-type", "application/cloudevents+json") != 0)
            goto nomem;
        break;
    case ENVELOPE_FORMAT_CLOUDEVENTS_BINARY:
        if (headers_cloudevents_binary(&m, row, src, &p) != 0 ||
            add_extra_headers(&m, extras, nextras, ENVELOPE_PLACE_ENVELOPE, "ce_") != 0)
            goto nomem;
        break;
    }
    /* Every format says so, as the envelope's source does: a consumer of a
     * format without a source can still tell a backfilled record apart. */
    if (src->backfill && add_header_str(&m, "backfill", "true") != 0)
        goto nomem;
    /* The W3C header in every format: tracing instrumentations read it. */
    if (p.traceparent &&
        add_header(&m, "traceparent", row->f[OB_TRACEPARENT].data, row->f[OB_TRACEPARENT].len) != 0)
        goto nomem;
    if (add_extra_headers(&m, extras, nextras, ENVELOPE_PLACE_HEADER, "") != 0)
        goto nomem;
    jw_discard(&w); /* a tombstone never took the buffer */
    free(p.bin);
    *out = m;
    return 0;
nomem:
    oom(err, errlen);
fail:
    jw_discard(&w);
    free(p.bin);
    envelope_msg_clear(&m);
    /* Only our own allocations leave ENOMEM behind: anything else is the row. */
    if (errno != ENOMEM)
        errno = EINVAL;
    return -1;
}

/* ---- dead letters ------------------------------------------------------- */

/* One column's value for the dead-letter row, or NULL when out of memory. */
static json_t *dead_letter_value(const pgo_value *v)
{
    const char *d = v->data != NULL ? v->data : "";
    size_t len = v->data != NULL ? v->len : 0;

    switch (v->kind) {
    case 't':
        /* Raw bytes survive the dead-letter topic even when not text. */
        return utf8_valid(d, len) ? json_stringn(d, len) : json_base64(d, len);
    case 'b':
        return json_base64(d, len);
    default:
        return json_null();
    }
}

static int dead_letter_row(const relcache_entry *rel, const pgo_tuple *tuple, envelope_msg *m)
{
    json_t *obj = json_object();
    int n = 0, rc = -1;

    if (obj == NULL)
        return -1;
    if (rel != NULL && tuple != NULL && (tuple->cols != NULL || tuple->ncols == 0))
        n = tuple->ncols < rel->natts ? tuple->ncols : rel->natts;
    for (int i = 0; i < n; i++) {
        const char *name = rel->atts[i].name;
        char fallback[32], *fixed = NULL;
        json_t *v = dead_letter_value(&tuple->cols[i]);
        int set;

        if (name == NULL) {
            snprintf(fallback, sizeof fallback, "column_%d", i + 1);
            name = fallback;
        } else if (!utf8_valid(name, strlen(name))) {
            /* A name in a non-UTF-8 database encoding: keep the column. */
            fixed = strdup(name);
            if (fixed == NULL) {
                json_decref(v);
                goto done;
            }
            for (char *p = fixed; *p != '\0'; p++)
                if ((unsigned char)*p >= 0x80)
                    *p = '?';
            name = fixed;
        }
        set = json_object_set_new(obj, name, v);
        free(fixed);
        if (set != 0)
            goto done;
    }
    m->value = json_dumps(obj, DUMP_FLAGS);
    if (m->value == NULL)
        goto done;
    m->valuelen = strlen(m->value);
    rc = 0;
done:
    json_decref(obj);
    return rc;
}

int envelope_build_dead_letter(const char *dlq_topic, const relcache_entry *rel,
                               const pgo_tuple *tuple, const outbox_row *row, const char *reason,
                               const envelope_source *src, const char *original_topic,
                               envelope_msg *out, char *err, size_t errlen)
{
    envelope_msg m = {0};
    char lbuf[LSN_BUFSZ];
    const char *table = "";

    if (out == NULL || dlq_topic == NULL)
        return fail(err, errlen, "envelope_build_dead_letter: missing argument");
    memset(out, 0, sizeof *out);
    if (src != NULL && src->table != NULL)
        table = src->table;
    else if (rel != NULL && rel->qualname != NULL)
        table = rel->qualname;
    m.topic = strdup(dlq_topic);
    if (m.topic == NULL)
        goto nomem;
    if (row != NULL && row->f[OB_AGGREGATE_ID].present && row->f[OB_AGGREGATE_ID].data != NULL) {
        m.key = memdup0(row->f[OB_AGGREGATE_ID].data, row->f[OB_AGGREGATE_ID].len);
        if (m.key == NULL)
            goto nomem;
        m.keylen = row->f[OB_AGGREGATE_ID].len;
    }
    if (dead_letter_row(rel, tuple, &m) != 0)
        goto nomem;
    if (add_header_str(&m, "error", reason != NULL ? reason : "unknown error") != 0)
        goto nomem;
    if (src != NULL && src->backfill ? add_header_str(&m, "backfill", "true") != 0
                                     : add_header_str(&m, "lsn",
                                                      lsn_format(src != NULL ? src->lsn : 0,
                                                                 lbuf)) != 0)
        goto nomem;
    if (add_header_str(&m, "table", table) != 0)
        goto nomem;
    if (original_topic != NULL && add_header_str(&m, "original-topic", original_topic) != 0)
        goto nomem;
    *out = m;
    return 0;
nomem:
    envelope_msg_clear(&m);
    return oom(err, errlen);
}
