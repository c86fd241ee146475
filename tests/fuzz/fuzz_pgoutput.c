/*
 * libFuzzer target for the decode layer: pgoutput parsing, the relation
 * cache and outbox row extraction.  See tests/fuzz/README.
 *
 * Each input is tried two ways:
 *   1. as one pgoutput message, with in_stream false and true;
 *   2. as a framed sequence (Int16 big-endian length, message, ...) fed
 *      through one relation cache, so Relation -> Insert chains and
 *      relation replacement are reached too.
 * Besides crashes and sanitizer reports, the target aborts when a parsed
 * message breaks the parser's promises (pointers outside the input, names
 * without a NUL, counts over PGO_MAX_COLS).
 */
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

static void check_msg(const uint8_t *buf, size_t len, const pgo_msg *m)
{
    check(m->type == (char)buf[0]);
    if (m->kind == PGO_RELATION) {
        const pgo_relation *r = &m->u.relation;

        check(r->natts <= PGO_MAX_COLS);
        check_name(buf, len, r->nspname);
        check_name(buf, len, r->relname);
        for (uint16_t i = 0; i < r->natts; i++)
            check_name(buf, len, r->atts[i].name);
    } else if (m->kind == PGO_INSERT) {
        const pgo_tuple *t = &m->u.insert.tuple;

        check(t->ncols <= PGO_MAX_COLS);
        for (uint16_t i = 0; i < t->ncols; i++) {
            const pgo_value *v = &t->cols[i];

            if (v->kind == 't' || v->kind == 'b')
                check(inside(buf, len, v->data, v->len));
            else
                check((v->kind == 'n' || v->kind == 'u') && v->data == NULL);
        }
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
        check(r != OB_ID || row->f[r].len > 0);
        for (size_t i = 0; i < row->f[r].len; i++)
            sink ^= (uint8_t)row->f[r].data[i];
    }
    if (row->f[OB_TIMESTAMP].present &&
        pgtime_parse_text(row->f[OB_TIMESTAMP].data, row->f[OB_TIMESTAMP].len, &us) == 0)
        unixtime_format(us, ts);
    (void)sink;
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
static void insert_against_default(relcache *rc, const pgo_insert *ins)
{
    static const char *const names[] = {"id",      "aggregatetype", "aggregateid",       "type",
                                        "payload", "timestamp",     "tracingspancontext"};
    static pgo_attr atts[PGO_MAX_COLS];
    static char extra[PGO_MAX_COLS][8];
    pgo_relation rel = {.oid = ins->oid, .nspname = "public", .relname = "outbox"};
    relcache_entry *e;

    for (uint16_t i = 0; i < ins->tuple.ncols; i++) {
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
    rel.natts = ins->tuple.ncols;
    rel.atts = atts;
    e = relcache_put(rc, &rel);
    if (e != NULL)
        bind_and_extract(e, &ins->tuple);
}

static void single(const uint8_t *data, size_t size)
{
    char err[256];
    relcache *rc;

    for (int s = 0; s < 2; s++) {
        err[0] = '\0';
        if (pgo_parse(data, size, s, msg, err, sizeof err) != 0) {
            check(err[0] != '\0' && strlen(err) < sizeof err);
            continue;
        }
        check_msg(data, size, msg);
        rc = relcache_new();
        check(rc != NULL);
        if (msg->kind == PGO_RELATION) {
            relcache_entry *e = relcache_put(rc, &msg->u.relation);

            check(e != NULL && e == relcache_get(rc, msg->u.relation.oid));
            check(e->natts == msg->u.relation.natts);
            bind_and_extract(e, NULL);
        } else if (msg->kind == PGO_INSERT) {
            insert_against_default(rc, &msg->u.insert);
        }
        relcache_free(rc);
    }
}

static void framed(const uint8_t *data, size_t size)
{
    relcache *rc = relcache_new();
    char err[256];
    size_t pos = 0;

    check(rc != NULL);
    while (size - pos >= 2) {
        size_t n = (size_t)data[pos] << 8 | data[pos + 1];

        pos += 2;
        if (n > size - pos)
            n = size - pos;
        /* Parse from an exact copy so ASan sees reads past this frame. */
        uint8_t *copy = malloc(n ? n : 1);
        check(copy != NULL);
        memcpy(copy, data + pos, n);
        pos += n;
        if (pgo_parse(copy, n, false, msg, err, sizeof err) == 0) {
            check_msg(copy, n, msg);
            if (msg->kind == PGO_RELATION) {
                relcache_entry *e = relcache_put(rc, &msg->u.relation);

                check(e != NULL);
                /* The cache must not keep pointers into the message. */
                e->user = malloc(16);
            } else if (msg->kind == PGO_INSERT) {
                relcache_entry *e = relcache_get(rc, msg->u.insert.oid);

                if (e != NULL)
                    bind_and_extract(e, &msg->u.insert.tuple);
            }
        }
        free(copy);
    }
    relcache_free(rc);
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
    return 0;
}
