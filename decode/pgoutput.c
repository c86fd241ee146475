#include "decode/pgoutput.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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
    const uint8_t *p;

    if (rd_need(r, 2, field) != 0)
        return -1;
    p = r->buf + r->pos;
    *out = (uint16_t)((unsigned)p[0] << 8 | p[1]);
    r->pos += 2;
    return 0;
}

static int rd_u32(reader *r, const char *field, uint32_t *out)
{
    const uint8_t *p;

    if (rd_need(r, 4, field) != 0)
        return -1;
    p = r->buf + r->pos;
    *out = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    r->pos += 4;
    return 0;
}

static int rd_u64(reader *r, const char *field, uint64_t *out)
{
    uint32_t hi, lo;

    if (rd_need(r, 8, field) != 0)
        return -1;
    (void)rd_u32(r, field, &hi);
    (void)rd_u32(r, field, &lo);
    *out = (uint64_t)hi << 32 | lo;
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

static int rd_skip(reader *r, size_t n, const char *field)
{
    if (rd_need(r, n, field) != 0)
        return -1;
    r->pos += n;
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

static int rd_stream_xid(reader *r, bool in_stream)
{
    uint32_t xid;

    return in_stream ? rd_u32(r, "xid", &xid) : 0;
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

static int parse_begin(reader *r, pgo_msg *out)
{
    pgo_begin *b = &out->u.begin;

    if (rd_u64(r, "final lsn", &b->final_lsn) != 0 ||
        rd_i64(r, "commit time", &b->commit_ts) != 0 || rd_u32(r, "xid", &b->xid) != 0)
        return -1;
    return rd_end(r);
}

static int parse_commit(reader *r, pgo_msg *out)
{
    pgo_commit *c = &out->u.commit;

    if (rd_u8(r, "flags", &c->flags) != 0 || rd_u64(r, "commit lsn", &c->commit_lsn) != 0 ||
        rd_u64(r, "end lsn", &c->end_lsn) != 0 || rd_i64(r, "commit time", &c->commit_ts) != 0)
        return -1;
    return rd_end(r);
}

static int parse_relation(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_relation *rel = &out->u.relation;
    uint8_t replident;
    size_t at;

    if (rd_stream_xid(r, in_stream) != 0 || rd_u32(r, "relation oid", &rel->oid) != 0 ||
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
    return rd_end(r);
}

static int parse_insert(reader *r, bool in_stream, pgo_msg *out)
{
    pgo_insert *ins = &out->u.insert;
    uint8_t marker;
    size_t at;

    if (rd_stream_xid(r, in_stream) != 0 || rd_u32(r, "relation oid", &ins->oid) != 0)
        return -1;
    at = r->pos;
    if (rd_u8(r, "new tuple marker", &marker) != 0)
        return -1;
    if (marker != 'N') {
        rd_fail(r, "expected new tuple marker 'N' at offset %zu, got 0x%02x", at, marker);
        return -1;
    }
    if (rd_tuple(r, out->col_storage, &ins->tuple) != 0)
        return -1;
    return rd_end(r);
}

/*
 * Messages the relay ignores are walked field by field all the same, and
 * bytes after their last field are an error too: the layout of every
 * message is fixed by the proto_version the relay requested, so extra bytes
 * mean the stream is not what we think it is.
 */
static int skip_update(reader *r, bool in_stream, pgo_msg *out)
{
    uint32_t oid;
    uint8_t marker;
    pgo_tuple t;
    size_t at;

    if (rd_stream_xid(r, in_stream) != 0 || rd_u32(r, "relation oid", &oid) != 0)
        return -1;
    at = r->pos;
    if (rd_u8(r, "tuple marker", &marker) != 0)
        return -1;
    if (marker == 'K' || marker == 'O') {
        if (rd_tuple(r, out->col_storage, &t) != 0)
            return -1;
        at = r->pos;
        if (rd_u8(r, "new tuple marker", &marker) != 0)
            return -1;
    }
    if (marker != 'N') {
        rd_fail(r, "expected tuple marker at offset %zu, got 0x%02x", at, marker);
        return -1;
    }
    return rd_tuple(r, out->col_storage, &t);
}

static int skip_delete(reader *r, bool in_stream, pgo_msg *out)
{
    uint32_t oid;
    uint8_t marker;
    pgo_tuple t;
    size_t at;

    if (rd_stream_xid(r, in_stream) != 0 || rd_u32(r, "relation oid", &oid) != 0)
        return -1;
    at = r->pos;
    if (rd_u8(r, "tuple marker", &marker) != 0)
        return -1;
    if (marker != 'K' && marker != 'O') {
        rd_fail(r, "expected tuple marker 'K' or 'O' at offset %zu, got 0x%02x", at, marker);
        return -1;
    }
    return rd_tuple(r, out->col_storage, &t);
}

static int skip_truncate(reader *r, bool in_stream)
{
    uint32_t nrels;
    uint8_t flags;

    if (rd_stream_xid(r, in_stream) != 0 || rd_u32(r, "relation count", &nrels) != 0 ||
        rd_u8(r, "flags", &flags) != 0)
        return -1;
    if (nrels > (r->len - r->pos) / 4)
        return rd_need(r, (size_t)nrels * 4, "relation oids");
    return rd_skip(r, (size_t)nrels * 4, "relation oids");
}

static int skip_message(reader *r, bool in_stream)
{
    uint8_t flags;
    uint64_t lsn;
    uint32_t len;
    const char *prefix;

    if (rd_stream_xid(r, in_stream) != 0 || rd_u8(r, "flags", &flags) != 0 ||
        rd_u64(r, "lsn", &lsn) != 0 || rd_str(r, "prefix", &prefix) != 0 ||
        rd_u32(r, "content length", &len) != 0)
        return -1;
    return rd_skip(r, len, "content");
}

static int skip_named(reader *r, bool in_stream, const char *name)
{
    uint32_t oid;
    const char *s;

    if (rd_stream_xid(r, in_stream) != 0 || rd_u32(r, "oid", &oid) != 0 ||
        rd_str(r, "namespace", &s) != 0 || rd_str(r, name, &s) != 0)
        return -1;
    return 0;
}

/* Fixed-size head (bytes) followed by an optional gid string. */
static int skip_fixed(reader *r, size_t head, bool gid)
{
    const char *s;

    if (rd_skip(r, head, "fields") != 0)
        return -1;
    return gid ? rd_str(r, "gid", &s) : 0;
}

static const char *type_name(uint8_t t)
{
    switch (t) {
    case 'B':
        return "begin";
    case 'C':
        return "commit";
    case 'O':
        return "origin";
    case 'R':
        return "relation";
    case 'Y':
        return "type";
    case 'I':
        return "insert";
    case 'U':
        return "update";
    case 'D':
        return "delete";
    case 'T':
        return "truncate";
    case 'M':
        return "logical decoding";
    case 'S':
        return "stream start";
    case 'E':
        return "stream stop";
    case 'c':
        return "stream commit";
    case 'A':
        return "stream abort";
    case 'b':
        return "begin prepare";
    case 'P':
        return "prepare";
    case 'K':
        return "commit prepared";
    case 'r':
        return "rollback prepared";
    case 'p':
        return "stream prepare";
    default:
        return NULL;
    }
}

int pgo_parse(const uint8_t *buf, size_t len, bool in_stream, pgo_msg *out, char *err,
              size_t errlen)
{
    reader r = {.buf = buf, .len = len, .pos = 1, .err = err, .errlen = errlen};
    uint8_t t;
    int rc;

    if (out == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "no message to parse into");
        return -1;
    }
    if (buf == NULL || len == 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "empty pgoutput message");
        return -1;
    }
    t = buf[0];
    r.what = type_name(t);
    if (r.what == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "unknown pgoutput message type 0x%02x at offset 0", t);
        return -1;
    }
    r.type = (char)t;
    out->type = (char)t;
    out->kind = PGO_SKIPPED;
    switch (t) {
    case 'B':
        out->kind = PGO_BEGIN;
        rc = parse_begin(&r, out);
        break;
    case 'C':
        out->kind = PGO_COMMIT;
        rc = parse_commit(&r, out);
        break;
    case 'R':
        out->kind = PGO_RELATION;
        rc = parse_relation(&r, in_stream, out);
        break;
    case 'I':
        out->kind = PGO_INSERT;
        rc = parse_insert(&r, in_stream, out);
        break;
    case 'O':
        rc = skip_fixed(&r, 8, true);
        break;
    case 'Y':
        rc = skip_named(&r, in_stream, "type name");
        break;
    case 'U':
        rc = skip_update(&r, in_stream, out);
        break;
    case 'D':
        rc = skip_delete(&r, in_stream, out);
        break;
    case 'T':
        rc = skip_truncate(&r, in_stream);
        break;
    case 'M':
        rc = skip_message(&r, in_stream);
        break;
    case 'S':
        rc = skip_fixed(&r, 4 + 1, false);
        break;
    case 'E':
        rc = 0;
        break;
    case 'c':
        rc = skip_fixed(&r, 4 + 1 + 8 + 8 + 8, false);
        break;
    case 'A':
        /* Abort lsn and time follow only with streaming = parallel. */
        rc = skip_fixed(&r, len - 1 == 4 + 4 + 8 + 8 ? 4 + 4 + 8 + 8 : 4 + 4, false);
        break;
    case 'b':
        rc = skip_fixed(&r, 8 + 8 + 8 + 4, true);
        break;
    case 'P':
    case 'K':
    case 'p':
        rc = skip_fixed(&r, 1 + 8 + 8 + 8 + 4, true);
        break;
    case 'r':
        rc = skip_fixed(&r, 1 + 8 + 8 + 8 + 8 + 4, true);
        break;
    default:
        rc = -1; /* unreachable: type_name() knows exactly these */
        break;
    }
    if (rc == 0 && out->kind == PGO_SKIPPED)
        rc = rd_end(&r);
    if (rc != 0)
        out->kind = PGO_SKIPPED;
    return rc;
}
