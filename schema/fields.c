#include "schema/fields.h"

#include <stdio.h>
#include <string.h>

#include "decode/pgtypes.h"
#include "decode/errfmt.h"
#include "schema/errbuf.h"
#include "schema/jsonv.h"

#define FIELD_USAGE "expected COLUMN:header[:NAME] or COLUMN:envelope[:NAME]"

/* Copy s[0..n) into a name buffer: non-empty, short, no control bytes. */
static int copy_name(char *dst, const char *s, size_t n, const char *what, const char *arg,
                     char *err, size_t errlen)
{
    if (n == 0)
        return errfmt(err, errlen, -1, "--field \"%s\": empty %s (" FIELD_USAGE ")", arg, what);
    if (n >= ENVELOPE_NAME_MAX)
        return errfmt(err, errlen, -1, "--field \"%s\": %s longer than %d bytes", arg, what,
                      ENVELOPE_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return errfmt(err, errlen, -1, "--field \"%s\": control character in %s", arg, what);
    if (!jsonv_utf8_valid(s, n))
        return errfmt(err, errlen, -1, "--field \"%s\": %s is not valid utf-8", arg, what);
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

int fields_parse(const char *arg, envelope_field *out, char *err, size_t errlen)
{
    const char *c1, *c2, *pl;
    size_t pllen;
    envelope_field f;

    if (arg == NULL || out == NULL)
        return errfmt(err, errlen, -1, "--field: missing argument (" FIELD_USAGE ")");
    memset(&f, 0, sizeof f);
    c1 = strchr(arg, ':');
    if (c1 == NULL)
        return errfmt(err, errlen, -1, "--field \"%s\": no placement (" FIELD_USAGE ")", arg);
    pl = c1 + 1;
    c2 = strchr(pl, ':');
    pllen = c2 != NULL ? (size_t)(c2 - pl) : strlen(pl);
    if (pllen == 6 && memcmp(pl, "header", 6) == 0)
        f.placement = ENVELOPE_PLACE_HEADER;
    else if (pllen == 8 && memcmp(pl, "envelope", 8) == 0)
        f.placement = ENVELOPE_PLACE_ENVELOPE;
    else
        return errfmt(err, errlen, -1,
                      "--field \"%s\": unknown placement \"%.*s\" (" FIELD_USAGE ")", arg,
                      (int)(pllen > 32 ? 32 : pllen), pl);
    if (copy_name(f.column, arg, (size_t)(c1 - arg), "column", arg, err, errlen) != 0)
        return -1;
    if (c2 != NULL) {
        if (strchr(c2 + 1, ':') != NULL)
            return errfmt(err, errlen, -1,
                          "--field \"%s\": NAME may not contain ':' (" FIELD_USAGE ")", arg);
        if (copy_name(f.name, c2 + 1, strlen(c2 + 1), "name", arg, err, errlen) != 0)
            return -1;
    } else {
        memcpy(f.name, f.column, sizeof f.name);
    }
    *out = f;
    return 0;
}

static int check_one(const format_ops *f, const envelope_field *fl, char *err, size_t errlen)
{
    if (fl->column[0] == '\0' || fl->name[0] == '\0' ||
        memchr(fl->column, '\0', sizeof fl->column) == NULL ||
        memchr(fl->name, '\0', sizeof fl->name) == NULL)
        return errfmt(err, errlen, -1, "--field: empty or unterminated column or name");
    if (fl->placement == ENVELOPE_PLACE_HEADER && format_reserves(f, fl->name))
        return errfmt(err, errlen, -1,
                      "--field %s:header:%s: the %s format writes header \"%s\" itself "
                      "(pick another NAME)",
                      fl->column, fl->name, f->name, fl->name);
    if (fl->placement != ENVELOPE_PLACE_HEADER && fl->placement != ENVELOPE_PLACE_ENVELOPE)
        return errfmt(err, errlen, -1, "--field %s: unknown placement", fl->column);
    return f->check_field != NULL ? f->check_field(fl, err, errlen) : 0;
}

/* The name fl takes among the headers (when it is one). */
static void header_name(const format_ops *f, const envelope_field *fl, char *buf, size_t bufsz)
{
    const char *prefix = fl->placement == ENVELOPE_PLACE_ENVELOPE && f->field_header_prefix != NULL
                             ? f->field_header_prefix
                             : "";

    snprintf(buf, bufsz, "%s%s", prefix, fl->name);
}

int fields_check(const format_ops *f, const envelope_field *fields, size_t n, char *err,
                 size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (check_one(f, &fields[i], err, errlen) != 0)
            return -1;
        for (size_t k = 0; k < i; k++) {
            const envelope_field *a = &fields[k], *b = &fields[i];
            /* with a header prefix, envelope fields are headers too */
            bool same_ns = a->placement == b->placement || f->field_header_prefix != NULL;
            char an[ENVELOPE_NAME_MAX + 8], bn[ENVELOPE_NAME_MAX + 8];

            header_name(f, a, an, sizeof an);
            header_name(f, b, bn, sizeof bn);
            if (same_ns && strcmp(an, bn) == 0)
                return errfmt(err, errlen, -1, "--field: two fields are called \"%s\"", b->name);
        }
    }
    return 0;
}

int fields_resolve(const envelope_field *fields, size_t nfields, const relcache_entry *rel,
                   const pgo_tuple *tuple, envelope_extra *out, size_t *nout, char *err,
                   size_t errlen)
{
    int ncols;

    if (nout == NULL || (nfields > 0 && (fields == NULL || out == NULL)))
        return errfmt(err, errlen, -1, "envelope_fields_resolve: missing argument");
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
                return errfmt(err, errlen, -1, "column \"%s\" (--field) is not in text format",
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

int fields_check_values(const envelope_extra *x, size_t n, char *err, size_t errlen)
{
    size_t bad_at;

    for (size_t i = 0; i < n; i++) {
        if (x[i].data == NULL)
            continue;
        if (!jsonv_utf8_valid(x[i].data, x[i].len))
            return errfmt(err, errlen, -1, "column \"%s\" (--field) is not valid utf-8",
                          x[i].field->column);
        if ((x[i].type_oid == PG_OID_JSON || x[i].type_oid == PG_OID_JSONB) &&
            !jsonv_text_valid(x[i].data, x[i].len, &bad_at))
            return errfmt(err, errlen, -1,
                          "column \"%s\" (--field) is not valid json (at byte %zu)",
                          x[i].field->column, bad_at);
    }
    return 0;
}

bool fields_any(const envelope_extra *x, size_t n, enum envelope_placement pl)
{
    for (size_t i = 0; i < n; i++)
        if (x[i].field->placement == pl)
            return true;
    return false;
}

/* One extra as a JSON value typed by its column type. */
static void write_extra(jsonw *w, const envelope_extra *x, bool strings_only)
{
    if (x->data == NULL) {
        jsonw_lit(w, "null");
        return;
    }
    if (!strings_only) {
        switch (x->type_oid) {
        case PG_OID_JSON:
        case PG_OID_JSONB:
            jsonw_raw(w, x->data, x->len);
            return;
        case PG_OID_BOOL:
            if (x->len == 1 && (x->data[0] == 't' || x->data[0] == 'f')) {
                jsonw_lit(w, x->data[0] == 't' ? "true" : "false");
                return;
            }
            break;
        case PG_OID_INT2:
        case PG_OID_INT4:
        case PG_OID_INT8:
        case PG_OID_OID:
        case PG_OID_FLOAT4:
        case PG_OID_FLOAT8:
        case PG_OID_NUMERIC:
            if (jsonv_number(x->data, x->len)) {
                jsonw_raw(w, x->data, x->len);
                return;
            }
            break;
        default:
            break;
        }
    }
    jsonw_str(w, x->data, x->len);
}

void fields_write(jsonw *w, const envelope_extra *x, size_t n, bool strings_only)
{
    for (size_t i = 0; i < n; i++) {
        if (x[i].field->placement != ENVELOPE_PLACE_ENVELOPE)
            continue;
        jsonw_key(w, x[i].field->name);
        write_extra(w, &x[i], strings_only);
    }
}

int fields_add_headers(envelope_msg *m, const envelope_extra *x, size_t n,
                       enum envelope_placement pl, const char *prefix, bool nulls)
{
    size_t plen = strnlen(prefix, 8);
    char name[8 + ENVELOPE_NAME_MAX];

    /* memcpy, not snprintf: this runs for every record with a header field
     * and snprintf costs about 500 instructions */
    memcpy(name, prefix, plen);
    for (size_t i = 0; i < n; i++) {
        size_t nlen;

        if (x[i].field->placement != pl || (x[i].data == NULL && !nulls))
            continue;
        nlen = strnlen(x[i].field->name, ENVELOPE_NAME_MAX - 1);

        memcpy(name + plen, x[i].field->name, nlen);
        name[plen + nlen] = '\0';
        if (x[i].data == NULL ? envelope_msg_add_null_header(m, name) != 0
                              : envelope_msg_add_header(m, name, x[i].data, x[i].len) != 0)
            return -1;
    }
    return 0;
}
