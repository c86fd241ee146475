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

int envelope_format_parse(const char *name, enum envelope_format *out)
{
    if (name == NULL || out == NULL)
        return -1;
    if (strcmp(name, "envelope") == 0) {
        *out = ENVELOPE_FORMAT_ENVELOPE;
        return 0;
    }
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

static bool utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;

    for (size_t i = 0, n; i < len; i += n) {
        n = utf8_char(s + i, len - i);
        if (n == 0)
            return false;
    }
    return true;
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

static void js_ws(struct jscan *j)
{
    while (j->pos < j->len && (j->s[j->pos] == ' ' || j->s[j->pos] == '\t' ||
                               j->s[j->pos] == '\n' || j->s[j->pos] == '\r'))
        j->pos++;
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

static bool js_string(struct jscan *j)
{
    if (!js_eat(j, '"'))
        return false;
    while (j->pos < j->len) {
        unsigned char c = j->s[j->pos];
        unsigned u, lo;
        size_t n;

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
    size_t start = j->pos;

    while (j->pos < j->len && j->s[j->pos] >= '0' && j->s[j->pos] <= '9')
        j->pos++;
    return j->pos > start;
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

/* ---- messages ----------------------------------------------------------- */

void envelope_msg_clear(envelope_msg *msg)
{
    if (msg == NULL)
        return;
    free(msg->topic);
    free(msg->key);
    free(msg->value);
    for (int i = 0; i < msg->nheaders && i < ENVELOPE_MAX_HEADERS; i++) {
        free(msg->headers[i].name);
        free(msg->headers[i].value);
    }
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

static int add_header(envelope_msg *m, const char *name, const char *value, size_t len)
{
    envelope_header *h;

    if (m->nheaders >= ENVELOPE_MAX_HEADERS)
        return -1;
    h = &m->headers[m->nheaders];
    h->name = strdup(name);
    h->value = memdup0(value, len);
    h->len = len;
    m->nheaders++; /* counted even half-built, so clear() frees it */
    return h->name != NULL && h->value != NULL ? 0 : -1;
}

static int add_header_str(envelope_msg *m, const char *name, const char *value)
{
    return add_header(m, name, value, strlen(value));
}

static bool json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * The payload: either a jansson node (*node) or validated JSON text to
 * splice in verbatim (*raw, *rawlen).  Returns 0, or -1 with the poison
 * reason (or out of memory).
 */
static int payload_value(const outbox_row *row, json_t **node, const char **raw, size_t *rawlen,
                         bool *is_base64, char *err, size_t errlen)
{
    const outbox_field *f = &row->f[OB_PAYLOAD];
    const char *s = f->data;
    size_t len = f->len;
    size_t bad_at;

    *node = NULL;
    *raw = NULL;
    *is_base64 = false;
    if (!f->present) {
        *node = json_null();
        return 0;
    }
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
        if (json_text_valid(s, len, &bad_at)) {
            *raw = s;
            *rawlen = len;
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
        size_t blen = 0;
        unsigned char *b = bytea_decode(s, len, &blen, &bad);

        if (b == NULL)
            return bad ? fail(err, errlen, "bytea payload is neither hex nor escape format")
                       : oom(err, errlen);
        *node = json_base64((const char *)b, blen);
        free(b);
        *is_base64 = true;
        return *node != NULL ? 0 : oom(err, errlen);
    }
    default:
        break;
    }
    if (!utf8_valid(s, len))
        return fail(err, errlen, "payload is not valid utf-8");
    *node = json_stringn(s, len);
    return *node != NULL ? 0 : oom(err, errlen);
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

/* Set key to a JSON string of a row field, refusing invalid UTF-8. */
static int set_field(json_t *obj, const char *key, const outbox_row *row, enum outbox_role role,
                     char *err, size_t errlen)
{
    const outbox_field *f = &row->f[role];

    if (!f->present || (f->data == NULL && f->len > 0))
        return fail(err, errlen, "row has no %s", role_name(role));
    if (!utf8_valid(f->data, f->len))
        return fail(err, errlen, "%s is not valid utf-8", role_name(role));
    if (json_object_set_new(obj, key, json_stringn(f->len > 0 ? f->data : "", f->len)) != 0)
        return oom(err, errlen);
    return 0;
}

/* Set key to a NUL-terminated string, or null when s is NULL. */
static int set_cstr(json_t *obj, const char *key, const char *s, char *err, size_t errlen)
{
    if (s != NULL && !utf8_valid(s, strlen(s)))
        return fail(err, errlen, "source %s is not valid utf-8", key);
    if (json_object_set_new(obj, key, s != NULL ? json_string(s) : json_null()) != 0)
        return oom(err, errlen);
    return 0;
}

/*
 * Replace the payload placeholder in the dumped envelope with raw.  The
 * first ',"payload":null' is the key itself: inside a dumped string every
 * '"' is escaped, so ',"' never occurs there, and payload precedes source.
 */
static char *splice_payload(const char *dumped, const char *raw, size_t rawlen, size_t *outlen)
{
    static const char mark[] = ",\"payload\":";
    const char *at = strstr(dumped, ",\"payload\":null");
    size_t dlen = strlen(dumped), head, tail;
    char *out;

    if (at == NULL)
        return NULL;
    head = (size_t)(at - dumped) + sizeof mark - 1;
    tail = dlen - head - 4;
    out = malloc(head + rawlen + tail + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, dumped, head);
    memcpy(out + head, raw, rawlen);
    memcpy(out + head + rawlen, dumped + head + 4, tail);
    out[head + rawlen + tail] = '\0';
    *outlen = head + rawlen + tail;
    return out;
}

/* Attach a new empty object under key; borrowed, owned by obj. */
static json_t *add_object(json_t *obj, const char *key)
{
    json_t *child = json_object();

    if (child == NULL || json_object_set_new(obj, key, child) != 0)
        return NULL;
    return child;
}

static int build_value(const outbox_row *row, const envelope_source *src, envelope_msg *m,
                       bool *is_base64, char *err, size_t errlen)
{
    json_t *o = json_object(), *payload = NULL, *source, *trace;
    const outbox_field *ts = &row->f[OB_TIMESTAMP];
    const outbox_field *tp = &row->f[OB_TRACEPARENT];
    const char *raw = NULL;
    size_t rawlen = 0;
    char tbuf[PGTIME_BUFSZ], lbuf[LSN_BUFSZ];
    char *dumped = NULL;
    int rc = -1;

    if (o == NULL)
        goto nomem;
    if (set_field(o, "id", row, OB_ID, err, errlen) != 0 ||
        set_field(o, "type", row, OB_TYPE, err, errlen) != 0 ||
        set_field(o, "aggregate_type", row, OB_AGGREGATE_TYPE, err, errlen) != 0 ||
        set_field(o, "aggregate_id", row, OB_AGGREGATE_ID, err, errlen) != 0)
        goto done;
    if (ts->present && ts->data != NULL) {
        int64_t us;
        char shown[64];

        if (pgtime_parse_text(ts->data, ts->len, &us) != 0) {
            fail(err, errlen, "timestamp \"%s\" is not a timestamptz",
                 printable(ts->data, ts->len, shown, sizeof shown));
            goto done;
        }
        unixtime_format(us, tbuf);
    } else {
        pgtime_format(src->commit_ts, tbuf);
    }
    if (json_object_set_new(o, "occurred_at", json_string(tbuf)) != 0)
        goto nomem;
    if (payload_value(row, &payload, &raw, &rawlen, is_base64, err, errlen) != 0)
        goto done;
    /* Raw JSON text goes in after the dump, in place of this null. */
    if (json_object_set_new(o, "payload", raw != NULL ? json_null() : payload) != 0)
        goto nomem;
    source = add_object(o, "source");
    if (source == NULL ||
        json_object_set_new(source, "lsn", json_string(lsn_format(src->lsn, lbuf))) != 0 ||
        json_object_set_new(source, "commit_lsn", json_string(lsn_format(src->commit_lsn, lbuf))) !=
            0 ||
        json_object_set_new(source, "seq", json_integer(src->seq)) != 0 ||
        json_object_set_new(source, "xid", json_integer(src->xid)) != 0 ||
        json_object_set_new(source, "commit_time",
                            json_string(pgtime_format(src->commit_ts, tbuf))) != 0)
        goto nomem;
    if (set_cstr(source, "db", src->db, err, errlen) != 0 ||
        set_cstr(source, "table", src->table, err, errlen) != 0 ||
        set_cstr(source, "slot", src->slot, err, errlen) != 0)
        goto done;
    if (tp->present && tp->data != NULL) {
        if (!utf8_valid(tp->data, tp->len)) {
            fail(err, errlen, "traceparent is not valid utf-8");
            goto done;
        }
        trace = add_object(o, "trace");
        if (trace == NULL ||
            json_object_set_new(trace, "traceparent", json_stringn(tp->data, tp->len)) != 0)
            goto nomem;
    }
    dumped = json_dumps(o, DUMP_FLAGS);
    if (dumped == NULL)
        goto nomem;
    if (raw != NULL) {
        m->value = splice_payload(dumped, raw, rawlen, &m->valuelen);
        if (m->value == NULL)
            goto nomem;
    } else {
        m->value = dumped;
        m->valuelen = strlen(dumped);
        dumped = NULL;
    }
    rc = 0;
    goto done;
nomem:
    oom(err, errlen);
done:
    free(dumped);
    json_decref(o);
    return rc;
}

int envelope_build(enum envelope_format fmt, const char *topic_tmpl, const outbox_row *row,
                   const envelope_source *src, envelope_msg *out, char *err, size_t errlen)
{
    envelope_msg m = {0};
    char topic[TOPIC_MAX + 1];
    char lbuf[LSN_BUFSZ];
    const outbox_field *tp;
    bool is_base64 = false;

    errno = 0;
    if (out == NULL || row == NULL || src == NULL) {
        fail(err, errlen, "envelope_build: missing argument");
        goto fail;
    }
    memset(out, 0, sizeof *out);
    if (fmt != ENVELOPE_FORMAT_ENVELOPE) {
        fail(err, errlen, "unknown envelope format %d", (int)fmt);
        goto fail;
    }
    if (topic_expand(topic_tmpl, row, src, topic, err, errlen) != 0)
        goto fail;
    /* The value checks every field, so the key and headers below need not. */
    if (build_value(row, src, &m, &is_base64, err, errlen) != 0)
        goto fail;
    m.topic = strdup(topic);
    m.key = memdup0(row->f[OB_AGGREGATE_ID].data, row->f[OB_AGGREGATE_ID].len);
    if (m.topic == NULL || m.key == NULL)
        goto nomem;
    m.keylen = row->f[OB_AGGREGATE_ID].len;
    tp = &row->f[OB_TRACEPARENT];
    if (add_header(&m, "id", row->f[OB_ID].data, row->f[OB_ID].len) != 0 ||
        add_header(&m, "type", row->f[OB_TYPE].data, row->f[OB_TYPE].len) != 0 ||
        add_header(&m, "aggregate_type", row->f[OB_AGGREGATE_TYPE].data,
                   row->f[OB_AGGREGATE_TYPE].len) != 0 ||
        add_header_str(&m, "content-type", "application/json") != 0 ||
        add_header_str(&m, "lsn", lsn_format(src->lsn, lbuf)) != 0)
        goto nomem;
    if (tp->present && tp->data != NULL && add_header(&m, "traceparent", tp->data, tp->len) != 0)
        goto nomem;
    if (is_base64 && add_header_str(&m, "payload-encoding", "base64") != 0)
        goto nomem;
    *out = m;
    return 0;
nomem:
    oom(err, errlen);
fail:
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
    if (add_header_str(&m, "error", reason != NULL ? reason : "unknown error") != 0 ||
        add_header_str(&m, "lsn", lsn_format(src != NULL ? src->lsn : 0, lbuf)) != 0 ||
        add_header_str(&m, "table", table) != 0)
        goto nomem;
    if (original_topic != NULL && add_header_str(&m, "original-topic", original_topic) != 0)
        goto nomem;
    *out = m;
    return 0;
nomem:
    envelope_msg_clear(&m);
    return oom(err, errlen);
}
