/*
 * libFuzzer target for the decode layer: pgoutput parsing of every message
 * kind under every option, the relation cache, outbox row extraction,
 * logical-message events and --column arguments.  See tests/fuzz/README.
 *
 * Each input is tried four ways:
 *   1. as one pgoutput message under all 8 combinations of pgo_options
 *      (in_stream, parallel_abort, all_kinds);
 *   2. as a framed sequence (Int16 big-endian length, message, ...) fed
 *      through one relation cache the way the relay reads a stream: Stream
 *      Start/Stop toggle in_stream, Relation -> Insert/Update chains are
 *      extracted, transactional messages become outbox rows;
 *   3. as the content of a logical decoding message (outbox_from_message);
 *   4. as a --column argument (outbox_column_split, outbox_colmap_build).
 * Besides crashes and sanitizer reports, the target aborts when a result
 * breaks its promises: pointers outside the input, names without a NUL,
 * counts over PGO_MAX_COLS, a kind that is not the type byte, a payload
 * that is not JSON on its own.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/lsn.h"
#include "decode/outbox.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pgo_msg *msg;

static void check(int cond)
{
    if (!cond)
        abort();
}

static int inside(const uint8_t *buf, size_t len, const void *p, size_t n)
{
    const uint8_t *q = p;

    return q >= buf && q <= buf + len && n <= (size_t)(buf + len - q);
}

static void check_name(const uint8_t *buf, size_t len, const char *s)
{
    check(s != NULL && inside(buf, len, s, strlen(s) + 1));
}

static void check_tuple(const uint8_t *buf, size_t len, const pgo_tuple *t,
                        const pgo_value *storage)
{
    check(t->ncols <= PGO_MAX_COLS);
    check(t->cols == storage);
    for (uint16_t i = 0; i < t->ncols; i++) {
        const pgo_value *v = &t->cols[i];

        if (v->kind == 't' || v->kind == 'b')
            check(inside(buf, len, v->data, v->len));
        else
            check((v->kind == 'n' || v->kind == 'u') && v->data == NULL && v->len == 0);
    }
}

/* Everything a parsed message points at lies inside the message. */
static void check_msg(const uint8_t *buf, size_t len, const pgo_msg *m, const pgo_options *o)
{
    char t = (char)buf[0];
    bool change = strchr("RYIUDTM", t) != NULL;

    check(m->type == t);
    if (o->all_kinds)
        check((int)m->kind == (unsigned char)t);
    else if (t == 'B' || t == 'C' || t == 'R' || t == 'I')
        check((int)m->kind == t);
    else
        check(m->kind == PGO_SKIPPED);
    if (!(o->in_stream && change))
        check(m->stream_xid == 0);
    switch (t) {
    case 'O':
        check_name(buf, len, m->u.origin.name);
        break;
    case 'R':
        check(m->u.relation.natts <= PGO_MAX_COLS);
        check_name(buf, len, m->u.relation.nspname);
        check_name(buf, len, m->u.relation.relname);
        for (uint16_t i = 0; i < m->u.relation.natts; i++)
            check_name(buf, len, m->u.relation.atts[i].name);
        break;
    case 'Y':
        check_name(buf, len, m->u.type.nspname);
        check_name(buf, len, m->u.type.typname);
        break;
    case 'I':
        check_tuple(buf, len, &m->u.insert.tuple, m->col_storage);
        break;
    case 'U':
        check(m->u.update.old_kind == 0 || m->u.update.old_kind == 'K' ||
              m->u.update.old_kind == 'O');
        check(m->u.update.old_kind != 0 || m->u.update.old_tuple.ncols == 0);
        check_tuple(buf, len, &m->u.update.old_tuple, m->old_col_storage);
        check_tuple(buf, len, &m->u.update.tuple, m->col_storage);
        break;
    case 'D':
        check(m->u.delete.old_kind == 'K' || m->u.delete.old_kind == 'O');
        check_tuple(buf, len, &m->u.delete.old_tuple, m->old_col_storage);
        break;
    case 'T':
        check(inside(buf, len, m->u.truncate.oids, (size_t)m->u.truncate.nrels * 4));
        if (m->u.truncate.nrels > 0)
            (void)pgo_truncate_oid(&m->u.truncate, m->u.truncate.nrels - 1);
        check(pgo_truncate_oid(&m->u.truncate, m->u.truncate.nrels) == 0);
        break;
    case 'M':
        check_name(buf, len, m->u.message.prefix);
        check(inside(buf, len, m->u.message.content, m->u.message.len));
        check(m->u.message.transactional == ((m->u.message.flags & 1) != 0));
        break;
    case 'A':
        check(m->u.stream_abort.has_abort_info == o->parallel_abort);
        check(len == (o->parallel_abort ? 25u : 9u));
        break;
    case 'b':
        check_name(buf, len, m->u.begin_prepare.gid);
        break;
    case 'P':
    case 'p':
        check_name(buf, len, m->u.prepare.gid);
        break;
    case 'K':
        check_name(buf, len, m->u.commit_prepared.gid);
        break;
    case 'r':
        check_name(buf, len, m->u.rollback_prepared.gid);
        break;
    default:
        break;
    }
}

/* Use a row the way the envelope code will: every byte of every field. */
static void consume_row(const outbox_row *row)
{
    volatile uint8_t sink = 0;
    char ts[PGTIME_BUFSZ];
    int64_t us;

    for (int r = 0; r < OB_NROLES; r++) {
        if (!row->f[r].present)
            continue;
        check(!outbox_role_required((enum outbox_role)r) || row->f[r].len > 0);
        for (size_t i = 0; i < row->f[r].len; i++)
            sink ^= (uint8_t)row->f[r].data[i];
    }
    if (row->f[OB_TIMESTAMP].present &&
        pgtime_parse_text(row->f[OB_TIMESTAMP].data, row->f[OB_TIMESTAMP].len, &us) == 0)
        unixtime_format(us, ts);
    (void)sink;
}

/* A message's content as an event: on success every field is where the
 * contract says, and the payload is JSON by itself. */
static void message_row(const char *content, size_t len)
{
    outbox_message_row m;
    char err[512];

    err[0] = '\0';
    if (outbox_from_message(content, len, &m, err, sizeof err) != 0) {
        check(err[0] != '\0' && m.doc == NULL);
        return;
    }
    check(m.doc != NULL && m.row.payload_type_oid == 3802);
    for (int r = 0; r < OB_NROLES; r++)
        check(!outbox_role_required((enum outbox_role)r) || m.row.f[r].present);
    if (m.row.f[OB_PAYLOAD].present) {
        const outbox_field *p = &m.row.f[OB_PAYLOAD];
        json_t *alone;

        check(inside((const uint8_t *)content, len, p->data, p->len));
        alone = json_loadb(p->data, p->len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
        check(alone != NULL);
        json_decref(alone);
    }
    consume_row(&m.row);
    outbox_message_row_clear(&m);
    check(m.doc == NULL);
}

static void bind_and_extract(relcache_entry *e, const pgo_tuple *t)
{
    outbox_colmap map;
    outbox_binding b;
    outbox_row row;
    char err[512];

    outbox_colmap_init(&map);
    /* Both outcomes matter: a failed bind still fills the binding. */
    if (outbox_bind(&map, e, &b, err, sizeof err) != 0)
        check(err[0] != '\0');
    for (int r = 0; r < OB_NROLES; r++)
        check(b.idx[r] >= -1 && b.idx[r] < (int)e->natts);
    if (t != NULL) {
        if (outbox_extract(&b, e, t, &row, err, sizeof err) == 0)
            consume_row(&row);
        else
            check(err[0] != '\0');
    }
}

/* An Insert alone: pretend the outbox relation with as many columns. */
static void insert_against_default(relcache *rc, uint32_t oid, const pgo_tuple *tuple)
{
    static const char *const names[] = {"id",      "aggregatetype", "aggregateid",       "type",
                                        "payload", "timestamp",     "tracingspancontext"};
    static pgo_attr atts[PGO_MAX_COLS];
    static char extra[PGO_MAX_COLS][8];
    pgo_relation rel = {.oid = oid, .nspname = "public", .relname = "outbox"};
    relcache_entry *e;

    for (uint16_t i = 0; i < tuple->ncols; i++) {
        if (i < 7) {
            atts[i].name = names[i];
        } else {
            snprintf(extra[i], sizeof extra[i], "c%u", (unsigned)i);
            atts[i].name = extra[i];
        }
        atts[i].type_oid = i == 4 ? 3802 : 25;
        atts[i].typmod = -1;
        atts[i].flags = 0;
    }
    rel.natts = tuple->ncols;
    rel.atts = atts;
    e = relcache_put(rc, &rel);
    if (e != NULL)
        bind_and_extract(e, tuple);
}

static void single(const uint8_t *data, size_t size)
{
    char err[256];
    relcache *rc;

    for (int bits = 0; bits < 8; bits++) {
        pgo_options o = {.in_stream = bits & 1, .parallel_abort = bits & 2, .all_kinds = bits & 4};

        err[0] = '\0';
        if (pgo_parse_opts(data, size, &o, msg, err, sizeof err) != 0) {
            check(err[0] != '\0' && strlen(err) < sizeof err);
            check(msg->kind == PGO_SKIPPED);
            continue;
        }
        check_msg(data, size, msg, &o);
        if (bits != 4) /* extraction below once: all kinds, not streamed */
            continue;
        rc = relcache_new();
        check(rc != NULL);
        switch (msg->kind) {
        case PGO_RELATION: {
            relcache_entry *e = relcache_put(rc, &msg->u.relation);

            check(e != NULL && e == relcache_get(rc, msg->u.relation.oid));
            check(e->natts == msg->u.relation.natts);
            bind_and_extract(e, NULL);
            break;
        }
        case PGO_INSERT:
            insert_against_default(rc, msg->u.insert.oid, &msg->u.insert.tuple);
            break;
        case PGO_UPDATE:
            insert_against_default(rc, msg->u.update.oid, &msg->u.update.tuple);
            break;
        case PGO_MESSAGE:
            message_row(msg->u.message.content, msg->u.message.len);
            break;
        default:
            break;
        }
        relcache_free(rc);
    }
}

static void framed(const uint8_t *data, size_t size)
{
    relcache *rc = relcache_new();
    pgo_options o = {.parallel_abort = size & 1, .all_kinds = true};
    char err[256];
    size_t pos = 0;

    check(rc != NULL);
    while (size - pos >= 2) {
        size_t n = (size_t)data[pos] << 8 | data[pos + 1];
        relcache_entry *e;

        pos += 2;
        if (n > size - pos)
            n = size - pos;
        /* Parse from an exact copy so ASan sees reads past this frame. */
        uint8_t *copy = malloc(n ? n : 1);
        check(copy != NULL);
        memcpy(copy, data + pos, n);
        pos += n;
        if (pgo_parse_opts(copy, n, &o, msg, err, sizeof err) == 0) {
            check_msg(copy, n, msg, &o);
            switch (msg->kind) {
            case PGO_STREAM_START:
                o.in_stream = true;
                break;
            case PGO_STREAM_STOP:
                o.in_stream = false;
                break;
            case PGO_RELATION:
                e = relcache_put(rc, &msg->u.relation);
                check(e != NULL);
                /* The cache must not keep pointers into the message. */
                e->user = malloc(16);
                break;
            case PGO_INSERT:
                e = relcache_get(rc, msg->u.insert.oid);
                if (e != NULL)
                    bind_and_extract(e, &msg->u.insert.tuple);
                break;
            case PGO_UPDATE:
                e = relcache_get(rc, msg->u.update.oid);
                if (e != NULL)
                    bind_and_extract(e, &msg->u.update.tuple);
                break;
            case PGO_MESSAGE:
                if (outbox_message_is_event(&msg->u.message, "outbox"))
                    message_row(msg->u.message.content, msg->u.message.len);
                break;
            default:
                break;
            }
        }
        free(copy);
    }
    relcache_free(rc);
}

/* The input as a --column argument, NUL-terminated. */
static void column_arg(const uint8_t *data, size_t size)
{
    char table[OUTBOX_QUALNAME_MAX];
    const char *spec;
    char err[512];
    outbox_colmap map;
    char *arg;

    if (size > 512 || memchr(data, '\0', size) != NULL)
        return;
    arg = malloc(size + 1);
    check(arg != NULL);
    memcpy(arg, data, size);
    arg[size] = '\0';
    if (outbox_column_split(arg, table, &spec, err, sizeof err) == 0) {
        check(strlen(table) < sizeof table);
        check(spec >= arg && spec <= arg + size);
        if (table[0] != '\0') {
            const char *args[] = {arg};

            if (outbox_colmap_build(&map, table, args, 1, err, sizeof err) == 0)
                for (int r = 0; r < OB_NROLES; r++)
                    check(strlen(map.col[r]) < sizeof map.col[r]);
        }
    } else {
        check(err[0] != '\0');
    }
    free(arg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (msg == NULL) {
        msg = malloc(sizeof *msg);
        if (msg == NULL)
            abort();
    }
    single(data, size);
    framed(data, size);
    message_row((const char *)data, size);
    column_arg(data, size);
    return 0;
}
