#include "cdc/dbzconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PROPS 256
#define ROUTER "io.debezium.transforms.outbox.EventRouter"

typedef struct prop {
    char *key, *value;
    int line;
} prop;

typedef struct props {
    prop v[MAX_PROPS];
    size_t n;
} props;

static void props_free(props *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].key);
        if (p->v[i].value)
            memset(p->v[i].value, 0, strlen(p->v[i].value));
        free(p->v[i].value);
    }
    p->n = 0;
}

static int failf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Unescape s[0..n) (Java Properties escapes) into a new string; NULL with
 * *bad when an escape is malformed, NULL alone when out of memory. */
static char *unescape(const char *s, size_t n, bool *bad)
{
    char *o = malloc(n * 3 + 1), *d = o;

    *bad = false;
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned cp;

        if (s[i] != '\\' || i + 1 == n) {
            *d++ = s[i];
            continue;
        }
        switch (s[++i]) {
        case 't':
            *d++ = '\t';
            break;
        case 'n':
            *d++ = '\n';
            break;
        case 'r':
            *d++ = '\r';
            break;
        case 'f':
            *d++ = '\f';
            break;
        case 'u':
            if (i + 4 >= n) {
                *bad = true;
                free(o);
                return NULL;
            }
            cp = 0;
            for (int k = 1; k <= 4; k++) {
                int h = hexval(s[i + (size_t)k]);
                if (h < 0) {
                    *bad = true;
                    free(o);
                    return NULL;
                }
                cp = cp << 4 | (unsigned)h;
            }
            i += 4;
            if (cp < 0x80) {
                *d++ = (char)cp;
            } else if (cp < 0x800) {
                *d++ = (char)(0xC0 | cp >> 6);
                *d++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *d++ = (char)(0xE0 | cp >> 12);
                *d++ = (char)(0x80 | (cp >> 6 & 0x3F));
                *d++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        default:
            *d++ = s[i];
            break;
        }
    }
    *d = '\0';
    return o;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\f';
}

/* Java Properties text -> props.  0, or -1 with err. */
static int parse_props(const char *name, const char *text, size_t len, props *out, char *err,
                       size_t errlen)
{
    size_t i = 0;
    int line = 0;
    char *logical = NULL;

    while (i < len) {
        size_t cap = 0, ln = 0, kend, vstart;
        int first = ++line;
        bool more = true, bad;

        free(logical);
        logical = NULL;
        /* a logical line: physical lines joined while one ends in an odd
         * number of backslashes */
        while (more && i <= len) {
            size_t s = i, e, nb = 0;
            char *grown;

            while (i < len && text[i] != '\n' && text[i] != '\r')
                i++;
            e = i;
            if (i < len && text[i] == '\r')
                i++;
            if (i < len && text[i] == '\n')
                i++;
            if (logical != NULL)
                while (s < e && blank(text[s]))
                    s++;
            for (size_t k = e; k > s && text[k - 1] == '\\'; k--)
                nb++;
            more = nb % 2 == 1 && i < len;
            if (nb % 2 == 1)
                e--;
            grown = realloc(logical, cap + (e - s) + 1);
            if (grown == NULL) {
                free(logical);
                return failf(err, errlen, "%s: out of memory", name);
            }
            logical = grown;
            memcpy(logical + ln, text + s, e - s);
            ln += e - s;
            cap = ln;
            logical[ln] = '\0';
            if (more)
                line++;
            if (i >= len)
                break;
        }
        if (logical == NULL)
            break;
        {
            size_t k = 0;

            while (k < ln && blank(logical[k]))
                k++;
            if (k == ln || logical[k] == '#' || logical[k] == '!')
                continue;
            kend = k;
            while (kend < ln && logical[kend] != '=' && logical[kend] != ':' &&
                   !blank(logical[kend])) {
                if (logical[kend] == '\\')
                    kend++;
                kend++;
            }
            if (kend > ln)
                kend = ln;
            vstart = kend;
            while (vstart < ln && blank(logical[vstart]))
                vstart++;
            if (vstart < ln && (logical[vstart] == '=' || logical[vstart] == ':'))
                vstart++;
            while (vstart < ln && blank(logical[vstart]))
                vstart++;
            if (out->n == MAX_PROPS) {
                free(logical);
                return failf(err, errlen, "%s:%d: more than %d properties", name, first, MAX_PROPS);
            }
            out->v[out->n].key = unescape(logical + k, kend - k, &bad);
            if (out->v[out->n].key == NULL) {
                free(logical);
                return failf(err, errlen, "%s:%d: %s", name, first,
                             bad ? "malformed \\u escape" : "out of memory");
            }
            out->v[out->n].value = unescape(logical + vstart, ln - vstart, &bad);
            if (out->v[out->n].value == NULL) {
                free(out->v[out->n].key);
                free(logical);
                return failf(err, errlen, "%s:%d: %s", name, first,
                             bad ? "malformed \\u escape" : "out of memory");
            }
            out->v[out->n].line = first;
            out->n++;
        }
    }
    free(logical);
    return 0;
}

static int add(cfgfile_entries *out, const char *key, const char *value, const char *name, int line)
{
    char where[512];
    cfgfile_entry *e;

    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        cfgfile_entry *v = realloc(out->v, cap * sizeof(*v));

        if (v == NULL)
            return -1;
        out->v = v;
        out->cap = cap;
    }
    snprintf(where, sizeof(where), "%s:%d", name, line);
    e = &out->v[out->n];
    e->key = strdup(key);
    e->value = strdup(value);
    e->where = strdup(where);
    e->line = line;
    if (!e->key || !e->value || !e->where) {
        free(e->key);
        free(e->value);
        free(e->where);
        return -1;
    }
    out->n++;
    return 0;
}

static bool is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static bool truthy(const char *v)
{
    return strcasecmp(v, "true") == 0;
}

/* ROLE=COLUMN as a column entry */
static int add_column(cfgfile_entries *out, const char *role, const char *col, const char *name,
                      int line)
{
    char buf[300];

    snprintf(buf, sizeof(buf), "%s=%s", role, col);
    return add(out, "column", buf, name, line);
}

/* libpq conninfo value quoting: 'v' with \ and ' escaped */
static void conn_add(char *ci, size_t cap, const char *k, const char *v)
{
    size_t n = strlen(ci);

    n += (size_t)snprintf(ci + n, n < cap ? cap - n : 0, "%s%s='", n ? " " : "", k);
    for (; *v && n + 3 < cap; v++) {
        if (*v == '\\' || *v == '\'')
            ci[n++] = '\\';
        ci[n++] = *v;
    }
    if (n + 2 < cap) {
        ci[n++] = '\'';
        ci[n] = '\0';
    }
}

int dbzconfig_parse(const char *name, const char *text, size_t len, cfgfile_entries *out, char *err,
                    size_t errlen)
{
    props *p = calloc(1, sizeof(*p));
    char tname[128] = "", prefix[160] = "", conninfo[2048] = "";
    int rc = -1, conn_line = 0;
    bool json_conv = false, schemas_off = false, have_router = false;
    int json_line = 0;

    if (p == NULL)
        return failf(err, errlen, "%s: out of memory", name);
    if (parse_props(name, text, len, p, err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < p->n; i++)
        if (is(p->v[i].key, "transforms")) {
            if (strchr(p->v[i].value, ',') != NULL || p->v[i].value[0] == '\0' ||
                strlen(p->v[i].value) >= sizeof(tname)) {
                failf(err, errlen,
                      "%s:%d: transforms: \"%s\": one transform, the outbox EventRouter, is what "
                      "the relay does",
                      name, p->v[i].line, p->v[i].value);
                goto out;
            }
            snprintf(tname, sizeof(tname), "%s", p->v[i].value);
            snprintf(prefix, sizeof(prefix), "transforms.%s.", tname);
        }
    if (add(out, "format", "debezium", name, 0) != 0)
        goto oom;
    for (size_t i = 0; i < p->n; i++) {
        const char *k = p->v[i].key, *v = p->v[i].value;
        int line = p->v[i].line;
        const char *t =
            prefix[0] && strncmp(k, prefix, strlen(prefix)) == 0 ? k + strlen(prefix) : NULL;
        int r = 0;

        if (is(k, "name") || is(k, "tasks.max") || is(k, "transforms") || is(k, "snapshot.mode") ||
            is(k, "publication.autocreate.mode") || is(k, "key.converter.schemas.enable")) {
            continue;
        } else if (is(k, "connector.class")) {
            if (!is(v, "io.debezium.connector.postgresql.PostgresConnector") &&
                !is(v, "PostgresConnector"))
                goto unsupported;
        } else if (is(k, "plugin.name")) {
            if (!is(v, "pgoutput"))
                goto unsupported;
        } else if (is(k, "database.password")) {
            failf(err, errlen,
                  "%s:%d: database.password: the relay reads no password from a file it is "
                  "given: drop the key and use --password-file PATH (or PGPASSFILE)",
                  name, line);
            goto out;
        } else if (is(k, "database.hostname") || is(k, "database.port") || is(k, "database.user") ||
                   is(k, "database.password") || is(k, "database.dbname") ||
                   is(k, "database.sslmode")) {
            static const char *const ck[][2] = {
                {"database.hostname", "host"}, {"database.port", "port"},
                {"database.user", "user"},     {"database.password", "password"},
                {"database.dbname", "dbname"}, {"database.sslmode", "sslmode"}};
            for (size_t j = 0; j < sizeof(ck) / sizeof(ck[0]); j++)
                if (is(k, ck[j][0]))
                    conn_add(conninfo, sizeof(conninfo), ck[j][1], v);
            conn_line = line;
        } else if (is(k, "slot.name")) {
            r = add(out, "slot", v, name, line);
        } else if (is(k, "publication.name")) {
            r = add(out, "publication", v, name, line);
        } else if (is(k, "topic.prefix")) {
            r = add(out, "debezium-context", v, name, line);
        } else if (is(k, "table.include.list")) {
            char *copy = strdup(v), *save = NULL;

            if (copy == NULL)
                goto oom;
            for (char *tok = strtok_r(copy, ",", &save); tok && r == 0;
                 tok = strtok_r(NULL, ",", &save)) {
                while (blank(*tok))
                    tok++;
                for (char *e = tok + strlen(tok); e > tok && blank(e[-1]);)
                    *--e = '\0';
                /* Debezium reads regular expressions; plain names only here */
                if (strpbrk(tok, "*+?[](){}|^$\\") != NULL || strchr(tok, '.') == NULL) {
                    failf(err, errlen,
                          "%s:%d: table.include.list: \"%s\" is not a plain SCHEMA.TABLE name "
                          "(regular expressions are not supported: list the outbox tables)",
                          name, line, tok);
                    free(copy);
                    goto out;
                }
                r = add(out, "table", tok, name, line);
            }
            free(copy);
        } else if (is(k, "key.converter")) {
            if (!is(v, "org.apache.kafka.connect.storage.StringConverter"))
                goto unsupported;
        } else if (is(k, "value.converter")) {
            if (is(v, "org.apache.kafka.connect.json.JsonConverter")) {
                json_conv = true;
                json_line = line;
                r = add(out, "debezium-converter", "json", name, line);
            } else if (!is(v, "org.apache.kafka.connect.storage.StringConverter")) {
                goto unsupported;
            }
        } else if (is(k, "value.converter.schemas.enable")) {
            if (truthy(v))
                goto unsupported;
            schemas_off = true;
        } else if (t != NULL && is(t, "type")) {
            if (!is(v, ROUTER))
                goto unsupported;
            have_router = true;
        } else if (t != NULL && is(t, "table.field.event.id")) {
            r = add_column(out, "id", v, name, line);
        } else if (t != NULL && is(t, "table.field.event.key")) {
            r = add_column(out, "aggregate_id", v, name, line);
        } else if (t != NULL && is(t, "table.field.event.payload")) {
            r = add_column(out, "payload", v, name, line);
        } else if (t != NULL && is(t, "table.field.event.timestamp")) {
            r = add_column(out, "timestamp", v, name, line);
            if (r == 0)
                r = add(out, "message-timestamp", "event", name, line);
        } else if (t != NULL && is(t, "route.by.field")) {
            r = add_column(out, "aggregate_type", v, name, line);
        } else if (t != NULL && is(t, "tracing.span.context.field")) {
            r = add_column(out, "traceparent", v, name, line);
        } else if (t != NULL && is(t, "route.topic.replacement")) {
            char topic[512];
            const char *ph = strstr(v, "${routedByValue}");

            if (ph == NULL || strstr(ph + 1, "${routedByValue}") != NULL ||
                strlen(v) >= sizeof(topic) - 8)
                goto unsupported;
            snprintf(topic, sizeof(topic), "%.*s{aggregate_type}%s", (int)(ph - v), v,
                     ph + strlen("${routedByValue}"));
            r = add(out, "topic", topic, name, line);
        } else if (t != NULL && is(t, "route.tombstone.on.empty.payload")) {
            r = add(out, "tombstone-on-empty-payload", truthy(v) ? "true" : "false", name, line);
        } else if (t != NULL && is(t, "table.expand.json.payload")) {
            r = add(out, "expand-json-payload", truthy(v) ? "true" : "false", name, line);
        } else if (t != NULL && is(t, "table.fields.additional.error.on.missing")) {
            if (!truthy(v))
                goto unsupported;
        } else if (t != NULL && is(t, "table.fields.additional.placement")) {
            char *copy = strdup(v), *save = NULL;

            if (copy == NULL)
                goto oom;
            for (char *tok = strtok_r(copy, ",", &save); tok && r == 0;
                 tok = strtok_r(NULL, ",", &save)) {
                while (blank(*tok))
                    tok++;
                if (strstr(tok, ":partition") != NULL) {
                    failf(err, errlen,
                          "%s:%d: %s: \"%s\": placement partition is not supported (the "
                          "relay partitions by key)",
                          name, line, k, tok);
                    free(copy);
                    goto out;
                }
                r = add(out, "field", tok, name, line);
            }
            free(copy);
        } else {
            failf(err, errlen, "%s:%d: %s: unknown or unsupported Debezium property", name, line,
                  k);
            goto out;
        }
        if (r != 0)
            goto oom;
        continue;
    unsupported:
        failf(err, errlen, "%s:%d: %s: \"%s\" is not supported by the relay", name, line, k, v);
        goto out;
    }
    if (prefix[0] && !have_router) {
        failf(err, errlen, "%s: transforms.%s.type: the transform must be %s", name, tname, ROUTER);
        goto out;
    }
    if (json_conv && !schemas_off) {
        failf(err, errlen,
              "%s:%d: value.converter: JsonConverter with schemas is not supported (set "
              "value.converter.schemas.enable=false)",
              name, json_line);
        goto out;
    }
    if (conninfo[0] && add(out, "dbname", conninfo, name, conn_line) != 0)
        goto oom;
    rc = 0;
    goto out;
oom:
    failf(err, errlen, "%s: out of memory", name);
out:
    memset(conninfo, 0, sizeof(conninfo));
    props_free(p);
    free(p);
    return rc;
}

int dbzconfig_read(const char *path, cfgfile_entries *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    int rc;

    if (f == NULL)
        return failf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    buf = malloc(CFGFILE_MAX_SIZE + 1);
    if (buf == NULL) {
        fclose(f);
        return failf(err, errlen, "%s: out of memory", path);
    }
    n = fread(buf, 1, CFGFILE_MAX_SIZE + 1, f);
    fclose(f);
    if (n > CFGFILE_MAX_SIZE) {
        free(buf);
        return failf(err, errlen, "%s: larger than %d bytes", path, CFGFILE_MAX_SIZE);
    }
    rc = dbzconfig_parse(path, buf, n, out, err, errlen);
    memset(buf, 0, n);
    free(buf);
    return rc;
}
