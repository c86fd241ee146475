#include "decode/pgoutput.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "decode/bytes.h"

/*
 * A cursor over one message.  Every read goes through the rd_* helpers,
 * which check the remaining length first and, on failure, write the reason
 * (message type and offset) into the caller's buffer exactly once.
 */
typedef struct reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    const char *what; /* message name for errors */
    char type;
    char *err;
    size_t errlen;
} reader;

static void rd_fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rd_fail(reader *r, const char *fmt, ...)
{
    char detail[160];
    va_list ap;

    if (r->err == NULL || r->errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(r->err, r->errlen, "pgoutput %s message ('%c'): %s", r->what, r->type, detail);
}

static int rd_need(reader *r, size_t n, const char *field)
{
    if (r->len - r->pos < n) {
        rd_fail(r, "truncated at offset %zu reading %s: need %zu bytes, %zu left", r->pos, field, n,
                r->len - r->pos);
        return -1;
    }
    return 0;
}

static int rd_u8(reader *r, const char *field, uint8_t *out)
{
    if (rd_need(r, 1, field) != 0)
        return -1;
    *out = r->buf[r->pos++];
    return 0;
}

static int rd_u16(reader *r, const char *field, uint16_t *out)
{
    if (rd_need(r, 2, field) != 0)
        return -1;
    *out = obx_be16(r->buf + r->pos);
    r->pos += 2;
    return 0;
}

static int rd_u32(reader *r, const char *field, uint32_t *out)
{
    if (rd_need(r, 4, field) != 0)
        return -1;
    *out = obx_be32(r->buf + r->pos);
    r->pos += 4;
    return 0;
}

static int rd_u64(reader *r, const char *field, uint64_t *out)
{
    if (rd_need(r, 8, field) != 0)
        return -1;
    *out = obx_be64(r->buf + r->pos);
    r->pos += 8;
    return 0;
}

static int rd_i64(reader *r, const char *field, int64_t *out)
{
    uint64_t v;

    if (rd_u64(r, field, &v) != 0)
        return -1;
    /* Two's complement reinterpretation without implementation-defined casts. */
    memcpy(out, &v, sizeof v);
    return 0;
}

/* A NUL-terminated string wholly inside the buffer; borrowed. */
static int rd_str(reader *r, const char *field, const char **out)
{
    const uint8_t *start = r->buf + r->pos;
    const uint8_t *nul;

    if (r->pos >= r->len) {
        rd_fail(r, "truncated at offset %zu reading %s: no string left", r->pos, field);
        return -1;
    }
    nul = memchr(start, '\0', r->len - r->pos);
    if (nul == NULL) {
        rd_fail(r, "unterminated %s string at offset %zu", field, r->pos);
        return -1;
    }
    *out = (const char *)start;
    r->pos += (size_t)(nul - start) + 1;
    return 0;
}

static int rd_end(reader *r)
{
    if (r->pos != r->len) {
        rd_fail(r, "%zu trailing bytes at offset %zu", r->len - r->pos, r->pos);
        return -1;
    }
    return 0;
}

/* TupleData into cols (PGO_MAX_COLS slots). */
static int rd_tuple(reader *r, pgo_value *cols, pgo_tuple *out)
{
    uint16_t ncols;
    size_t at = r->pos;

    if (rd_u16(r, "column count", &ncols) != 0)
        return -1;
    if (ncols > PGO_MAX_COLS) {
        rd_fail(r, "tuple at offset %zu has %u columns, more than %d", at, ncols, PGO_MAX_COLS);
        return -1;
    }
    for (uint16_t i = 0; i < ncols; i++) {
        pgo_value *v = &cols[i];
        uint8_t kind;
        uint32_t len;

        at = r->pos;
        if (rd_u8(r, "column kind", &kind) != 0)
            return -1;
        v->kind = (char)kind;
        v->len = 0;
        v->data = NULL;
        switch (kind) {
        case 'n':
        case 'u':
            break;
        case 't':
        case 'b':
            if (rd_u32(r, "column length", &len) != 0)
                return -1;
            if (rd_need(r, len, "column data") != 0)
                return -1;
            v->len = len;
            v->data = (const char *)r->buf + r->pos;
            r->pos += len;
            break;
        default:
            rd_fail(r, "unknown column kind 0x%02x for column %u at offset %zu", kind, i, at);
            return -1;
        }
    }
    out->ncols = ncols;
    out->cols = cols;
    return 0;
}

/* Change messages carry the (sub)xid first inside a streamed block. */
static int rd_stream_xid(reader *r, bool in_stream, pgo_msg *out)
{
    return in_stream ? rd_u32(r, "xid", &out->stream_xid) : 0;
}

static int parse_begin(reader *r, pgo_msg *out)
{
    pgo_begin *b = &out->u.begin;

    if (rd_u64(r, "final lsn", &b->final_lsn) || rd_i64(r, "commit time", &b->commit_ts) ||
        rd_u32(r, "xid", &b->xid))
        return -1;
    return 0;
}

static int parse_commit(reader *r, pgo_msg *out)
{
    pgo_commit *c = &out->u.commit;

    if (rd_u8(r, "flags", &c->flags) || rd_u64(r, "commit lsn", &c->commit_lsn) ||
        rd_u64(r, "end lsn", &c->end_lsn) || rd_i64(r, "commit time", &c->commit_ts))
        return -1;
    return 0;
}

static int parse_origin(reader *r, pgo_msg *out)
{
    pgo_origin *o = &out->u.origin;

    if (rd_u64(r, "origin lsn", &o->commit_lsn) || rd_str(r, "origin name", &o->name))
        return -1;
    return 0;
}

static int parse_relation(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_relation *rel = &out->u.relation;
    uint8_t replident;
    size_t at;

    if (rd_stream_xid(r, in_stream, out) != 0 || rd_u32(r, "relation oid", &rel->oid) != 0 ||
        rd_str(r, "namespace", &rel->nspname) != 0 ||
        rd_str(r, "relation name", &rel->relname) != 0 ||
        rd_u8(r, "replica identity", &replident) != 0)
        return -1;
    rel->replident = (char)replident;
    at = r->pos;
    if (rd_u16(r, "column count", &rel->natts) != 0)
        return -1;
    if (rel->natts > PGO_MAX_COLS) {
        rd_fail(r, "relation at offset %zu has %u columns, more than %d", at, rel->natts,
                PGO_MAX_COLS);
        return -1;
    }
    for (uint16_t i = 0; i < rel->natts; i++) {
        pgo_attr *a = &out->att_storage[i];
        uint32_t typmod;

        if (rd_u8(r, "column flags", &a->flags) != 0 || rd_str(r, "column name", &a->name) != 0 ||
            rd_u32(r, "column type", &a->type_oid) != 0 ||
            rd_u32(r, "column type modifier", &typmod) != 0)
            return -1;
        memcpy(&a->typmod, &typmod, sizeof typmod);
    }
    rel->atts = out->att_storage;
    return 0;
}

static int parse_type(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_type *t = &out->u.type;

    if (rd_stream_xid(r, in_stream, out) || rd_u32(r, "type oid", &t->oid) ||
        rd_str(r, "namespace", &t->nspname) || rd_str(r, "type name", &t->typname))
        return -1;
    return 0;
}

/* The 'N' that announces a new tuple, and the tuple. */
static int rd_new_tuple(reader *r, uint8_t marker, size_t at, pgo_msg *out, pgo_tuple *t)
{
    if (marker != 'N') {
        rd_fail(r, "expected new tuple marker 'N' at offset %zu, got 0x%02x", at, marker);
        return -1;
    }
    return rd_tuple(r, out->col_storage, t);
}

static int parse_insert(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_insert *ins = &out->u.insert;
    uint8_t marker;
    size_t at;

    if (rd_stream_xid(r, in_stream, out) != 0 || rd_u32(r, "relation oid", &ins->oid) != 0)
        return -1;
    at = r->pos;
    if (rd_u8(r, "new tuple marker", &marker) != 0)
        return -1;
    return rd_new_tuple(r, marker, at, out, &ins->tuple);
}

static int parse_update(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_update *u = &out->u.update;
    uint8_t marker;
    size_t at;

    u->old_kind = 0;
    u->old_tuple.ncols = 0;
    u->old_tuple.cols = out->old_col_storage;
    if (rd_stream_xid(r, in_stream, out) != 0 || rd_u32(r, "relation oid", &u->oid) != 0)
        return -1;
    at = r->pos;
    if (rd_u8(r, "tuple marker", &marker) != 0)
        return -1;
    if (marker == 'K' || marker == 'O') {
        u->old_kind = (char)marker;
        if (rd_tuple(r, out->old_col_storage, &u->old_tuple) != 0)
            return -1;
        at = r->pos;
        if (rd_u8(r, "new tuple marker", &marker) != 0)
            return -1;
    }
    return rd_new_tuple(r, marker, at, out, &u->tuple);
}

static int parse_delete(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_delete *d = &out->u.delete;
    uint8_t marker;
    size_t at;

    if (rd_stream_xid(r, in_stream, out) != 0 || rd_u32(r, "relation oid", &d->oid) != 0)
        return -1;
    at = r->pos;
    if (rd_u8(r, "old tuple marker", &marker) != 0)
        return -1;
    if (marker != 'K' && marker != 'O') {
        rd_fail(r, "expected old tuple marker 'K' or 'O' at offset %zu, got 0x%02x", at, marker);
        return -1;
    }
    d->old_kind = (char)marker;
    return rd_tuple(r, out->old_col_storage, &d->old_tuple);
}

static int parse_truncate(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_truncate *t = &out->u.truncate;

    if (rd_stream_xid(r, in_stream, out) != 0 || rd_u32(r, "relation count", &t->nrels) != 0 ||
        rd_u8(r, "flags", &t->flags) != 0)
        return -1;
    /* Divide rather than multiply: nrels * 4 can wrap a 32-bit size_t. */
    if (t->nrels > (r->len - r->pos) / 4) {
        rd_fail(r,
                "truncated at offset %zu reading relation oids: %u oids need %llu bytes, %zu left",
                r->pos, t->nrels, (unsigned long long)t->nrels * 4, r->len - r->pos);
        return -1;
    }
    t->oids = r->buf + r->pos;
    r->pos += (size_t)t->nrels * 4;
    return 0;
}

static int parse_message(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_message *m = &out->u.message;

    if (rd_stream_xid(r, in_stream, out) != 0 || rd_u8(r, "flags", &m->flags) != 0 ||
        rd_u64(r, "lsn", &m->lsn) != 0 || rd_str(r, "prefix", &m->prefix) != 0 ||
        rd_u32(r, "content length", &m->len) != 0 || rd_need(r, m->len, "content") != 0)
        return -1;
    m->transactional = (m->flags & PGO_MESSAGE_TRANSACTIONAL) != 0;
    m->content = (const char *)r->buf + r->pos;
    r->pos += m->len;
    return 0;
}

static int parse_stream_start(reader *r, pgo_msg *out)
{
    pgo_stream_start *s = &out->u.stream_start;
    uint8_t first;
    size_t at;

    if (rd_u32(r, "xid", &s->xid) != 0)
        return -1;
    at = r->pos;
    if (rd_u8(r, "first segment", &first) != 0)
        return -1;
    /* The server writes exactly 0 or 1; anything else is misalignment. */
    if (first > 1) {
        rd_fail(r, "first segment flag at offset %zu is 0x%02x, not 0 or 1", at, first);
        return -1;
    }
    s->first_segment = first == 1;
    return 0;
}

static int parse_stream_commit(reader *r, pgo_msg *out)
{
    pgo_stream_commit *c = &out->u.stream_commit;

    if (rd_u32(r, "xid", &c->xid) || rd_u8(r, "flags", &c->flags) ||
        rd_u64(r, "commit lsn", &c->commit_lsn) || rd_u64(r, "end lsn", &c->end_lsn) ||
        rd_i64(r, "commit time", &c->commit_ts))
        return -1;
    return 0;
}

/* The length must not choose the layout: a 24-byte body read as the short
 * form would be "trailing bytes", an 8-byte one read as the long form
 * "truncated" — both say the options do not match the stream. */
static int parse_stream_abort(reader *r, bool parallel, pgo_msg *out)
{
    pgo_stream_abort *a = &out->u.stream_abort;

    a->has_abort_info = parallel;
    a->abort_lsn = 0;
    a->abort_ts = 0;
    if (rd_u32(r, "xid", &a->xid) != 0 || rd_u32(r, "subxid", &a->subxid) != 0)
        return -1;
    if (!parallel)
        return 0;
    if (rd_u64(r, "abort lsn", &a->abort_lsn) || rd_i64(r, "abort time", &a->abort_ts))
        return -1;
    return 0;
}

static int parse_begin_prepare(reader *r, pgo_msg *out)
{
    pgo_begin_prepare *b = &out->u.begin_prepare;

    if (rd_u64(r, "prepare lsn", &b->prepare_lsn) || rd_u64(r, "end lsn", &b->end_lsn) ||
        rd_i64(r, "prepare time", &b->prepare_ts) || rd_u32(r, "xid", &b->xid) ||
        rd_str(r, "gid", &b->gid))
        return -1;
    return 0;
}

static int parse_prepare(reader *r, pgo_msg *out)
{
    pgo_prepare *p = &out->u.prepare;

    if (rd_u8(r, "flags", &p->flags) || rd_u64(r, "prepare lsn", &p->prepare_lsn) ||
        rd_u64(r, "end lsn", &p->end_lsn) || rd_i64(r, "prepare time", &p->prepare_ts) ||
        rd_u32(r, "xid", &p->xid) || rd_str(r, "gid", &p->gid))
        return -1;
    return 0;
}

static int parse_commit_prepared(reader *r, pgo_msg *out)
{
    pgo_commit_prepared *c = &out->u.commit_prepared;

    if (rd_u8(r, "flags", &c->flags) || rd_u64(r, "commit lsn", &c->commit_lsn) ||
        rd_u64(r, "end lsn", &c->end_lsn) || rd_i64(r, "commit time", &c->commit_ts) ||
        rd_u32(r, "xid", &c->xid) || rd_str(r, "gid", &c->gid))
        return -1;
    return 0;
}

static int parse_rollback_prepared(reader *r, pgo_msg *out)
{
    pgo_rollback_prepared *rb = &out->u.rollback_prepared;

    if (rd_u8(r, "flags", &rb->flags) || rd_u64(r, "prepare end lsn", &rb->prepare_end_lsn) ||
        rd_u64(r, "rollback end lsn", &rb->rollback_end_lsn) ||
        rd_i64(r, "prepare time", &rb->prepare_ts) ||
        rd_i64(r, "rollback time", &rb->rollback_ts) || rd_u32(r, "xid", &rb->xid) ||
        rd_str(r, "gid", &rb->gid))
        return -1;
    return 0;
}

const char *pgo_type_name(char type)
{
    switch (type) {
    case PGO_BEGIN:
        return "begin";
    case PGO_COMMIT:
        return "commit";
    case PGO_ORIGIN:
        return "origin";
    case PGO_RELATION:
        return "relation";
    case PGO_TYPE:
        return "type";
    case PGO_INSERT:
        return "insert";
    case PGO_UPDATE:
        return "update";
    case PGO_DELETE:
        return "delete";
    case PGO_TRUNCATE:
        return "truncate";
    case PGO_MESSAGE:
        return "logical decoding";
    case PGO_STREAM_START:
        return "stream start";
    case PGO_STREAM_STOP:
        return "stream stop";
    case PGO_STREAM_COMMIT:
        return "stream commit";
    case PGO_STREAM_ABORT:
        return "stream abort";
    case PGO_BEGIN_PREPARE:
        return "begin prepare";
    case PGO_PREPARE:
        return "prepare";
    case PGO_COMMIT_PREPARED:
        return "commit prepared";
    case PGO_ROLLBACK_PREPARED:
        return "rollback prepared";
    case PGO_STREAM_PREPARE:
        return "stream prepare";
    default:
        return NULL;
    }
}

uint32_t pgo_truncate_oid(const pgo_truncate *t, uint32_t i)
{
    const uint8_t *p;

    if (t == NULL || t->oids == NULL || i >= t->nrels)
        return 0;
    p = t->oids + (size_t)i * 4;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int parse_body(reader *r, const pgo_options *o, pgo_msg *out)
{
    switch (r->type) {
    case PGO_BEGIN:
        return parse_begin(r, out);
    case PGO_COMMIT:
        return parse_commit(r, out);
    case PGO_ORIGIN:
        return parse_origin(r, out);
    case PGO_RELATION:
        return parse_relation(r, o->in_stream, out);
    case PGO_TYPE:
        return parse_type(r, o->in_stream, out);
    case PGO_INSERT:
        return parse_insert(r, o->in_stream, out);
    case PGO_UPDATE:
        return parse_update(r, o->in_stream, out);
    case PGO_DELETE:
        return parse_delete(r, o->in_stream, out);
    case PGO_TRUNCATE:
        return parse_truncate(r, o->in_stream, out);
    case PGO_MESSAGE:
        return parse_message(r, o->in_stream, out);
    case PGO_STREAM_START:
        return parse_stream_start(r, out);
    case PGO_STREAM_STOP:
        return 0;
    case PGO_STREAM_COMMIT:
        return parse_stream_commit(r, out);
    case PGO_STREAM_ABORT:
        return parse_stream_abort(r, o->parallel_abort, out);
    case PGO_BEGIN_PREPARE:
        return parse_begin_prepare(r, out);
    case PGO_PREPARE:
    case PGO_STREAM_PREPARE:
        return parse_prepare(r, out);
    case PGO_COMMIT_PREPARED:
        return parse_commit_prepared(r, out);
    case PGO_ROLLBACK_PREPARED:
        return parse_rollback_prepared(r, out);
    default:
        return -1; /* unreachable: pgo_type_name() knows exactly these */
    }
}

/* Errors before there is a reader to report them. */
static int fail_early(char *err, size_t errlen, const char *what, int byte)
{
    if (err == NULL || errlen == 0)
        return -1;
    if (byte < 0)
        snprintf(err, errlen, "%s", what);
    else
        snprintf(err, errlen, "%s 0x%02x at offset 0", what, (unsigned)byte);
    return -1;
}

int pgo_parse_opts(const uint8_t *buf, size_t len, const pgo_options *opts, pgo_msg *out, char *err,
                   size_t errlen)
{
    static const pgo_options none;
    reader r = {.buf = buf, .len = len, .pos = 1, .err = err, .errlen = errlen};
    const pgo_options *o = opts != NULL ? opts : &none;
    int kind;

    if (out == NULL)
        return fail_early(err, errlen, "no message to parse into", -1);
    out->kind = PGO_SKIPPED;
    out->stream_xid = 0;
    if (buf == NULL || len == 0) {
        out->type = 0;
        return fail_early(err, errlen, "empty pgoutput message", -1);
    }
    r.type = (char)buf[0];
    out->type = r.type;
    r.what = pgo_type_name(r.type);
    if (r.what == NULL)
        return fail_early(err, errlen, "unknown pgoutput message type", buf[0]);
    if (parse_body(&r, o, out) != 0 || rd_end(&r) != 0)
        return -1;
    kind = (unsigned char)r.type;
    if (!o->all_kinds && kind != PGO_BEGIN && kind != PGO_COMMIT && kind != PGO_RELATION &&
        kind != PGO_INSERT)
        kind = PGO_SKIPPED;
    out->kind = kind;
    return 0;
}

int pgo_parse(const uint8_t *buf, size_t len, bool in_stream, pgo_msg *out, char *err,
              size_t errlen)
{
    pgo_options o = {.in_stream = in_stream};

    return pgo_parse_opts(buf, len, &o, out, err, errlen);
}
