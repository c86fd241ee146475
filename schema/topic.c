#include "schema/topic.h"

#include <stdbool.h>
#include <string.h>

#include "decode/errfmt.h"
#include "schema/errbuf.h"

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
        return errfmt(err, errlen, -1,
                      "unclosed \"{\" in topic template at \"%.40s\" (placeholders: %s)", p,
                      TOPIC_PLACEHOLDERS);
    n = (size_t)(close - p - 1);
    for (int i = 0; i < PH_N; i++) {
        if (strlen(ph_names[i]) == n && memcmp(ph_names[i], p + 1, n) == 0) {
            *adv = n + 2;
            return i;
        }
    }
    return errfmt(err, errlen, -1,
                  "unknown placeholder \"%.*s\" in topic template (placeholders: %s)",
                  (int)(n + 2 > 64 ? 64 : n + 2), p, TOPIC_PLACEHOLDERS);
}

int topic_check(const char *tmpl, char *err, size_t errlen)
{
    size_t literal = 0;
    bool any_ph = false;

    if (tmpl == NULL || tmpl[0] == '\0')
        return errfmt(err, errlen, -1, "empty topic template");
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
            return errfmt(err, errlen, -1,
                          "character '%c' (0x%02x) in topic template \"%s\" is not allowed "
                          "in a kafka topic name (use a-z A-Z 0-9 . _ -)",
                          (*p >= 0x20 && *p < 0x7f) ? *p : '?', (unsigned char)*p, tmpl);
        literal++;
        p++;
    }
    if (literal > TOPIC_NAME_MAX)
        return errfmt(err, errlen, -1, "topic template \"%.40s...\" is longer than %d characters",
                      tmpl, TOPIC_NAME_MAX);
    if (!any_ph && (strcmp(tmpl, ".") == 0 || strcmp(tmpl, "..") == 0))
        return errfmt(err, errlen, -1, "topic \"%s\" is not a valid kafka topic name", tmpl);
    return 0;
}

/* What placeholder ph stands for in this row. */
static void placeholder_value(int ph, const outbox_row *row, const char *table, const char **v,
                              size_t *vlen)
{
    static const enum outbox_role roles[PH_N] = {
        [PH_AGGREGATE_TYPE] = OB_AGGREGATE_TYPE,
        [PH_AGGREGATE_ID] = OB_AGGREGATE_ID,
        [PH_TYPE] = OB_TYPE,
    };
    const outbox_field *f;

    if (ph == PH_TABLE) {
        *v = table != NULL ? table : "";
        *vlen = strlen(*v);
        return;
    }
    f = &row->f[roles[ph]];
    *v = f->present && f->data != NULL ? f->data : "";
    *vlen = f->present && f->data != NULL ? f->len : 0;
}

int topic_expand(const char *tmpl, const outbox_row *row, const char *table, char *out, char *err,
                 size_t errlen)
{
    size_t o = 0;
    char shown[80];

    if (tmpl == NULL || tmpl[0] == '\0')
        return errfmt(err, errlen, -1, "empty topic template");
    for (const char *p = tmpl; *p != '\0';) {
        const char *v = p;
        size_t vlen, adv;

        if (*p != '{') {
            /* the literal text up to the next placeholder, in one copy */
            vlen = adv = strcspn(p, "{");
        } else {
            int ph = placeholder_at(p, &adv, err, errlen);

            if (ph < 0)
                return -1;
            placeholder_value(ph, row, table, &v, &vlen);
        }
        if (vlen > TOPIC_NAME_MAX - o) {
            memcpy(out + o, v, TOPIC_NAME_MAX - o);
            return errfmt(err, errlen, -1, "topic \"%s...\" is longer than %d characters",
                          errbuf_printable(out, 60, shown, sizeof shown), TOPIC_NAME_MAX);
        }
        memcpy(out + o, v, vlen);
        o += vlen;
        p += adv;
    }
    out[o] = '\0';
    for (size_t i = 0; i < o; i++) {
        if (!topic_char(out[i]))
            return errfmt(err, errlen, -1,
                          "topic \"%s\" is not a valid kafka topic name (byte 0x%02x)",
                          errbuf_printable(out, o, shown, sizeof shown), (unsigned char)out[i]);
    }
    if (o == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        return errfmt(err, errlen, -1, "topic \"%s\" is not a valid kafka topic name", out);
    return 0;
}
