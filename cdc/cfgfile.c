#include "cdc/cfgfile.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/errfmt.h"

#define fail(err, errlen, ...) errfmt(err, errlen, -1, __VA_ARGS__)

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* Takes ownership of key, value and where (all freed on failure). */
static int append(cfgfile_entries *out, char *key, char *value, char *where, int line)
{
    if (!key || !value || !where)
        goto fail;
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        cfgfile_entry *v = realloc(out->v, cap * sizeof(*v));
        if (!v)
            goto fail;
        out->v = v;
        out->cap = cap;
    }
    out->v[out->n++] = (cfgfile_entry){.key = key, .value = value, .where = where, .line = line};
    return 0;
fail:
    free(key);
    wipe_free(value);
    free(where);
    return -1;
}

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * One line (without its line end) into *key and *value (malloc'd).
 * Returns 1 for an entry, 0 for a blank or comment line, -1 with err.
 */
static int parse_line(const char *s, size_t n, char **key, char **value, char *err, size_t errlen)
{
    size_t i = 0, k0, k1, v0, v1;
    char *v;

    while (i < n && blank(s[i]))
        i++;
    if (i == n || s[i] == '#')
        return 0;
    k0 = i;
    while (i < n && key_char(s[i]))
        i++;
    k1 = i;
    while (i < n && blank(s[i]))
        i++;
    if (k1 == k0) {
        if (s[i] >= 'A' && s[i] <= 'Z')
            return fail(err, errlen, "keys are lower case, e.g. \"brokers = host:9092\"");
        return fail(err, errlen, "expected \"key = value\", found '%c'", s[i]);
    }
    if (i == n || s[i] != '=') {
        if (i < n && s[i] >= 'A' && s[i] <= 'Z')
            return fail(err, errlen, "keys are lower case, e.g. \"brokers = host:9092\"");
        if (i < n && !blank(s[i]) && i == k1)
            return fail(err, errlen, "character '%c' is not allowed in a key", s[i]);
        return fail(err, errlen, "expected \"=\" after \"%.*s\" (write \"key = value\")",
                    (int)(k1 - k0 > 64 ? 64 : k1 - k0), s + k0);
    }
    i++;
    while (i < n && blank(s[i]))
        i++;
    if (i == n || s[i] == '#')
        return fail(err, errlen, "\"%.*s\" has no value", (int)(k1 - k0 > 64 ? 64 : k1 - k0),
                    s + k0);
    v = malloc(n - i + 1);
    if (!v)
        return fail(err, errlen, "out of memory");
    if (s[i] == '"') {
        size_t o = 0;
        bool closed = false;
        for (i++; i < n; i++) {
            if (s[i] == '\\' && i + 1 < n && (s[i + 1] == '"' || s[i + 1] == '\\')) {
                v[o++] = s[++i];
            } else if (s[i] == '"') {
                closed = true;
                i++;
                break;
            } else {
                v[o++] = s[i];
            }
        }
        v[o] = '\0';
        if (!closed) {
            wipe_free(v);
            return fail(err, errlen, "unterminated quoted value (close it with \")");
        }
        while (i < n && blank(s[i]))
            i++;
        if (i < n && s[i] != '#') {
            wipe_free(v);
            return fail(err, errlen, "text after the closing quote (a comment starts with #)");
        }
        if (o == 0) {
            wipe_free(v);
            return fail(err, errlen, "\"%.*s\" has an empty value",
                        (int)(k1 - k0 > 64 ? 64 : k1 - k0), s + k0);
        }
    } else {
        v0 = i;
        v1 = i;
        for (; i < n; i++) {
            if (s[i] == '#' && blank(s[i - 1]))
                break;
            if (!blank(s[i]))
                v1 = i + 1;
        }
        memcpy(v, s + v0, v1 - v0);
        v[v1 - v0] = '\0';
    }
    *key = strndup(s + k0, k1 - k0);
    if (!*key) {
        wipe_free(v);
        return fail(err, errlen, "out of memory");
    }
    *value = v;
    return 1;
}

int cfgfile_parse(const char *name, const char *text, size_t len, cfgfile_entries *out, char *err,
                  size_t errlen)
{
    size_t pos = 0;
    int line = 0;
    char lerr[256];

    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    if (memchr(text, '\0', len)) {
        const char *z = memchr(text, '\0', len);
        int zl = 1;
        for (const char *p = text; p < z; p++)
            zl += *p == '\n';
        return fail(err, errlen, "%s:%d: a NUL byte: is this a text file?", name, zl);
    }
    while (pos < len) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        char *key = NULL, *value = NULL, *where;
        int r;

        line++;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && s[n - 1] == '\r')
            n--;
        if (n > CFGFILE_MAX_LINE)
            return fail(err, errlen, "%s:%d: line longer than %d bytes", name, line,
                        CFGFILE_MAX_LINE);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
                return fail(err, errlen, "%s:%d: control character 0x%02x", name, line,
                            (unsigned char)s[i]);
        r = parse_line(s, n, &key, &value, lerr, sizeof(lerr));
        if (r < 0)
            return fail(err, errlen, "%s:%d: %s", name, line, lerr);
        if (r == 0)
            continue;
        if (asprintf(&where, "%s:%d", name, line) < 0)
            where = NULL;
        if (append(out, key, value, where, line) != 0)
            return fail(err, errlen, "%s:%d: out of memory", name, line);
    }
    return 0;
}

int cfgfile_read(const char *path, cfgfile_entries *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0;
    int rc;

    if (!f)
        return fail(err, errlen, "cannot read --config \"%s\": %s", path, strerror(errno));
    buf = malloc(CFGFILE_MAX_SIZE + 1);
    if (!buf) {
        fclose(f);
        return fail(err, errlen, "out of memory");
    }
    len = fread(buf, 1, CFGFILE_MAX_SIZE + 1, f);
    if (ferror(f)) {
        rc = fail(err, errlen, "cannot read --config \"%s\": %s", path, strerror(errno));
    } else if (len > CFGFILE_MAX_SIZE) {
        rc = fail(err, errlen, "%s: larger than %d bytes: is this the configuration file?", path,
                  CFGFILE_MAX_SIZE);
    } else {
        rc = cfgfile_parse(path, buf, len, out, err, errlen);
    }
    fclose(f);
    explicit_bzero(buf, len);
    free(buf);
    return rc;
}

int cfgfile_from_env(char *const *envp, cfgfile_entries *out, char *err, size_t errlen)
{
    const size_t plen = strlen(CFGFILE_ENV_PREFIX);

    for (; envp && *envp; envp++) {
        const char *e = *envp, *eq = strchr(e, '=');
        char *key, *where;
        size_t n;
        bool kafka;

        if (!eq || strncmp(e, CFGFILE_ENV_PREFIX, plen) != 0)
            continue;
        n = (size_t)(eq - e) - plen;
        if (n == strlen("CONFIG") && strncmp(e + plen, "CONFIG", n) == 0)
            continue;
        if (n == 0)
            return fail(err, errlen, "environment variable %.*s: a name must follow the prefix",
                        (int)plen, e);
        kafka = n > 6 && strncmp(e + plen, "KAFKA_", 6) == 0;
        key = malloc(n + 1);
        if (!key)
            return fail(err, errlen, "out of memory");
        if (kafka) {
            memcpy(key, "kafka.", 6);
            for (size_t i = 6; i < n; i++) {
                char c = e[plen + i];
                key[i] = c == '_' ? '.' : (char)tolower((unsigned char)c);
            }
        } else {
            for (size_t i = 0; i < n; i++) {
                char c = e[plen + i];
                key[i] = c == '_' ? '-' : (char)tolower((unsigned char)c);
            }
        }
        key[n] = '\0';
        if (asprintf(&where, "env %.*s", (int)(eq - e), e) < 0)
            where = NULL;
        if (append(out, key, strdup(eq + 1), where, 0) != 0)
            return fail(err, errlen, "out of memory");
    }
    return 0;
}

void cfgfile_env_name(const char *key, char *buf, size_t len)
{
    size_t o = 0;
    int w = snprintf(buf, len, "%s", CFGFILE_ENV_PREFIX);

    if (w < 0 || (size_t)w >= len)
        return;
    o = (size_t)w;
    for (; *key && o + 1 < len; key++)
        buf[o++] = (*key == '-' || *key == '.') ? '_' : (char)toupper((unsigned char)*key);
    buf[o] = '\0';
}

void cfgfile_entries_free(cfgfile_entries *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].key);
        wipe_free(e->v[i].value);
        free(e->v[i].where);
    }
    free(e->v);
    e->v = NULL;
    e->n = e->cap = 0;
}
