#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "decode/pgoutput.h"
#include "tests/fixtures/pg15/fixtures.h"

/* pgo_msg is large: one per test run, as the relay does. */
static pgo_msg *msg;
static char err[256];
/* parse()'s copy lives until the next call, so parsed names stay readable. */
static uint8_t *last_copy;

static int setup(void **state)
{
    (void)state;
    msg = malloc(sizeof *msg);
    return msg == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    free(msg);
    free(last_copy);
    return 0;
}

static const fixture *fx(const char *name)
{
    for (size_t i = 0; i < NFIXTURES; i++)
        if (strcmp(fixtures[i].name, name) == 0)
            return &fixtures[i];
    fail_msg("no fixture %s (re-run tests/fixtures/capture.sh?)", name);
    return NULL;
}

/* Exactly sized heap copy, so ASan sees any read past the end. */
static uint8_t *dup_bytes(const void *p, size_t len)
{
    uint8_t *b = malloc(len ? len : 1);

    assert_non_null(b);
    if (len)
        memcpy(b, p, len);
    return b;
}

static int parse(const void *p, size_t len, bool in_stream)
{
    free(last_copy);
    last_copy = dup_bytes(p, len);
    err[0] = '\0';
    msg->kind = -1; /* so a kind left alone shows */
    return pgo_parse(last_copy, len, in_stream, msg, err, sizeof err);
}

static int parse_opts(const void *p, size_t len, const pgo_options *o)
{
    free(last_copy);
    last_copy = dup_bytes(p, len);
    err[0] = '\0';
    msg->kind = -1;
    return pgo_parse_opts(last_copy, len, o, msg, err, sizeof err);
}

/* The options a fixture was captured under. */
static pgo_options fx_opts(const fixture *f, bool all_kinds)
{
    pgo_options o = {.in_stream = f->in_stream != 0, .all_kinds = all_kinds};

    return o;
}

/* Straight from the static arrays (ASan guards globals too): the parsed
 * names and values stay valid after the call.  Legacy kinds, as the relay
 * parses today. */
static int parse_fx(const fixture *f)
{
    err[0] = '\0';
    return pgo_parse(f->data, f->len, f->in_stream != 0, msg, err, sizeof err);
}

/* Every kind, with the fixture's options. */
static int parse_fx_all(const fixture *f)
{
    pgo_options o = fx_opts(f, true);

    err[0] = '\0';
    return pgo_parse_opts(f->data, f->len, &o, msg, err, sizeof err);
}

/* Parse a fixture that must parse, with every kind. */
static void must_parse_all(const char *name)
{
    const fixture *f = fx(name);

    if (parse_fx_all(f) != 0)
        fail_msg("%s: %s", name, err);
    assert_int_equal(msg->kind, (unsigned char)f->data[0]);
}

static void check_error(const char *needle)
{
    assert_true(err[0] != '\0');
    assert_int_equal(msg->kind, PGO_SKIPPED);
    if (needle != NULL && strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void expect_error(const void *p, size_t len, bool in_stream, const char *needle)
{
    if (parse(p, len, in_stream) != -1)
        fail_msg("accepted a bad message (len %zu, type 0x%02x)", len,
                 len ? ((const uint8_t *)p)[0] : 0);
    check_error(needle);
}

static void expect_error_opts(const void *p, size_t len, const pgo_options *o, const char *needle)
{
    if (parse_opts(p, len, o) != -1)
        fail_msg("accepted a bad message (len %zu, type 0x%02x)", len,
                 len ? ((const uint8_t *)p)[0] : 0);
    check_error(needle);
}

/* A tiny writer for hand-built messages. */
typedef struct wbuf {
    uint8_t b[32768];
    size_t n;
} wbuf;

static void w8(wbuf *w, unsigned v)
{
    assert_true(w->n + 1 <= sizeof w->b);
    w->b[w->n++] = (uint8_t)v;
}

static void w16(wbuf *w, unsigned v)
{
    w8(w, v >> 8);
    w8(w, v);
}

static void w32(wbuf *w, uint32_t v)
{
    w16(w, v >> 16);
    w16(w, v & 0xFFFF);
}

static void w64(wbuf *w, uint64_t v)
{
    w32(w, (uint32_t)(v >> 32));
    w32(w, (uint32_t)v);
}

static void wstr(wbuf *w, const char *s)
{
    size_t n = strlen(s) + 1;

    assert_true(w->n + n <= sizeof w->b);
    memcpy(w->b + w->n, s, n);
    w->n += n;
}

static void wtext(wbuf *w, const char *s)
{
    w8(w, 't');
    w32(w, (uint32_t)strlen(s));
    memcpy(w->b + w->n, s, strlen(s));
    w->n += strlen(s);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Every captured message parses with the options it was captured under:
 * legacy kinds from pgo_parse(), its own kind with all_kinds. */
static void test_fixtures_parse(void **state)
{
    int v1 = 0, v3 = 0, streamed = 0;

    (void)state;
    for (size_t i = 0; i < NFIXTURES; i++) {
        const fixture *f = &fixtures[i];
        char t = (char)f->data[0];

        if (parse_fx(f) != 0)
            fail_msg("%s: %s", f->name, err);
        assert_int_equal(msg->type, t);
        if (t == 'B' || t == 'C' || t == 'R' || t == 'I')
            assert_int_equal(msg->kind, t);
        else
            assert_int_equal(msg->kind, PGO_SKIPPED);
        if (parse_fx_all(f) != 0)
            fail_msg("%s (all kinds): %s", f->name, err);
        assert_int_equal(msg->kind, (unsigned char)t);
        assert_int_equal(msg->type, t);
        assert_non_null(pgo_type_name(t));
        /* Streamed change messages carry their transaction's xid. */
        if (f->in_stream && strchr("RYIUDTM", t)) {
            assert_true(msg->stream_xid > 0);
            streamed++;
        } else {
            assert_int_equal(msg->stream_xid, 0);
        }
        v1 += f->proto == 1;
        v3 += f->proto == 3;
    }
    assert_true(v1 >= 60);
    assert_true(v3 >= 20);
    assert_true(streamed >= 4);
}

/* Every type byte of protocol versions 1-4 appears in the capture except
 * Stream Abort's parallel layout (PostgreSQL 16, hand-built below). */
static void test_fixtures_cover_every_type(void **state)
{
    static const char all[] = "BCORYIUDTMSEcAbPKrp";

    (void)state;
    for (const char *t = all; *t; t++) {
        bool found = false;

        for (size_t i = 0; i < NFIXTURES && !found; i++)
            found = fixtures[i].data[0] == (unsigned char)*t;
        if (!found)
            fail_msg("no captured '%c' message (re-run tests/fixtures/capture.sh?)", *t);
    }
}

static void test_fixture_begin_commit(void **state)
{
    uint64_t final_lsn = 0;
    uint32_t xid = 0;
    int64_t ts = 0;
    int pairs = 0;

    (void)state;
    assert_int_equal(parse_fx(fx("0001-B.bin")), 0);
    assert_int_equal(msg->kind, PGO_BEGIN);
    assert_true(msg->u.begin.xid > 0);
    assert_true(msg->u.begin.final_lsn > 0);
    /* Captured in 2026: a positive PostgreSQL-epoch timestamp. */
    assert_true(msg->u.begin.commit_ts > INT64_C(800000000000000));

    /* Over the whole v1 capture: each Commit's commit_lsn is its Begin's
     * final_lsn, end_lsn lies past it, and ends grow in commit order. */
    uint64_t last_end = 0;
    for (size_t i = 0; i < NFIXTURES; i++) {
        if (fixtures[i].proto != 1)
            continue;
        assert_int_equal(parse_fx(&fixtures[i]), 0);
        if (msg->kind == PGO_BEGIN) {
            assert_int_equal(xid, 0); /* no Begin inside a transaction */
            final_lsn = msg->u.begin.final_lsn;
            xid = msg->u.begin.xid;
            ts = msg->u.begin.commit_ts;
            assert_true(xid > 0);
        } else if (msg->kind == PGO_COMMIT) {
            assert_true(xid > 0);
            assert_int_equal(msg->u.commit.flags, 0);
            assert_true(msg->u.commit.end_lsn > msg->u.commit.commit_lsn);
            assert_true(msg->u.commit.commit_lsn == final_lsn);
            assert_true(msg->u.commit.commit_ts == ts);
            assert_true(msg->u.commit.end_lsn > last_end);
            last_end = msg->u.commit.end_lsn;
            xid = 0;
            pairs++;
        }
    }
    assert_int_equal(pairs, 17);
}

static const char *const outbox_cols[] = {"id",      "aggregatetype", "aggregateid",       "type",
                                          "payload", "timestamp",     "tracingspancontext"};
static const uint32_t outbox_types[] = {2950, 25, 25, 25, 3802, 1184, 25};

static void test_fixture_relation(void **state)
{
    const pgo_relation *r = &msg->u.relation;
    uint32_t oid;

    (void)state;
    assert_int_equal(parse_fx(fx("0002-R.bin")), 0);
    assert_int_equal(msg->kind, PGO_RELATION);
    assert_true(r->oid >= 16384); /* a user table */
    oid = r->oid;
    assert_string_equal(r->nspname, "public");
    assert_string_equal(r->relname, "outbox");
    assert_int_equal(r->replident, 'd');
    assert_int_equal(r->natts, 7);
    assert_ptr_equal(r->atts, msg->att_storage);
    for (int i = 0; i < 7; i++) {
        assert_string_equal(r->atts[i].name, outbox_cols[i]);
        assert_int_equal(r->atts[i].type_oid, outbox_types[i]);
        assert_int_equal(r->atts[i].typmod, -1);
        assert_int_equal(r->atts[i].flags, i == 0 ? 1 : 0); /* id is the key */
    }

    /* The second table: text id. */
    assert_int_equal(parse_fx(fx("0018-R.bin")), 0);
    assert_string_equal(r->relname, "outbox_textid");
    assert_int_equal(r->natts, 5);
    assert_string_equal(r->atts[0].name, "id");
    assert_int_equal(r->atts[0].type_oid, 25);
    assert_true(r->oid != oid);

    /* After ALTER TABLE ADD COLUMN: the same OID, one more column, whose
     * type is the enum announced by the Type message just before. */
    const fixture *y = fx("0022-Y.bin");
    assert_int_equal(parse_fx(y), 0);
    assert_int_equal(msg->kind, PGO_SKIPPED);
    assert_int_equal(msg->type, 'Y');
    assert_int_equal(parse_fx(fx("0023-R.bin")), 0);
    assert_int_equal(r->oid, oid);
    assert_int_equal(r->natts, 8);
    for (int i = 0; i < 7; i++)
        assert_string_equal(r->atts[i].name, outbox_cols[i]);
    assert_string_equal(r->atts[7].name, "priority");
    assert_int_equal(r->atts[7].type_oid, be32(y->data + 1));
}

static void assert_text(const pgo_value *v, const char *want)
{
    assert_int_equal(v->kind, 't');
    assert_int_equal(v->len, strlen(want));
    assert_memory_equal(v->data, want, v->len);
}

static void test_fixture_insert(void **state)
{
    const pgo_insert *ins = &msg->u.insert;
    const fixture *f = fx("0003-I.bin");
    uint32_t oid;

    (void)state;
    assert_int_equal(parse_fx(fx("0002-R.bin")), 0);
    oid = msg->u.relation.oid;
    assert_int_equal(pgo_parse(f->data, f->len, false, msg, err, sizeof err), 0);
    assert_int_equal(msg->kind, PGO_INSERT);
    assert_int_equal(ins->oid, oid);
    assert_int_equal(ins->tuple.ncols, 7);
    assert_ptr_equal(ins->tuple.cols, msg->col_storage);
    assert_text(&ins->tuple.cols[0], "6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a");
    assert_text(&ins->tuple.cols[1], "order");
    assert_text(&ins->tuple.cols[2], "42");
    assert_text(&ins->tuple.cols[3], "OrderPlaced");
    /* jsonb output is normalised: keys reordered, spacing fixed. */
    assert_text(&ins->tuple.cols[4], "{\"total\": 42.5, \"orderId\": 42}");
    assert_text(&ins->tuple.cols[5], "2026-11-23 18:14:13.123456+00");
    assert_text(&ins->tuple.cols[6], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /* Borrowed from the input buffer. */
    assert_true((const uint8_t *)ins->tuple.cols[0].data > f->data &&
                (const uint8_t *)ins->tuple.cols[0].data < f->data + f->len);

    /* The rolled-back savepoint's row is absent: kept-1 then kept-2. */
    assert_int_equal(parse_fx(fx("0011-I.bin")), 0);
    assert_text(&ins->tuple.cols[3], "kept-1");
    assert_int_equal(parse_fx(fx("0012-I.bin")), 0);
    assert_text(&ins->tuple.cols[3], "kept-2");

    /* NULL payload and traceparent arrive as 'n'. */
    assert_int_equal(parse_fx(fx("0015-I.bin")), 0);
    assert_text(&ins->tuple.cols[3], "NoPayload");
    assert_int_equal(ins->tuple.cols[4].kind, 'n');
    assert_null(ins->tuple.cols[4].data);
    assert_int_equal(ins->tuple.cols[4].len, 0);
    assert_int_equal(ins->tuple.cols[6].kind, 'n');

    /* Text id table. */
    assert_int_equal(parse_fx(fx("0019-I.bin")), 0);
    assert_int_equal(ins->tuple.ncols, 5);
    assert_text(&ins->tuple.cols[0], "evt-0001");

    /* After the ALTER: eight columns, the enum as text. */
    assert_int_equal(parse_fx(fx("0024-I.bin")), 0);
    assert_int_equal(ins->oid, oid);
    assert_int_equal(ins->tuple.ncols, 8);
    assert_text(&ins->tuple.cols[3], "AfterAlter");
    assert_text(&ins->tuple.cols[7], "high");
}

/* Nothing from the rolled-back transaction or the rolled-back savepoint,
 * and nothing from the table outside the publication (v1: without
 * two_phase a prepared transaction only shows at COMMIT PREPARED). */
static void test_fixture_nothing_uncommitted(void **state)
{
    (void)state;
    for (size_t i = 0; i < NFIXTURES; i++) {
        const fixture *f = &fixtures[i];

        if (f->proto != 1)
            continue;
        assert_int_equal(parse_fx(f), 0);
        assert_null(memmem(f->data, f->len, "RolledBack", 10));
        assert_null(memmem(f->data, f->len, "dropped", 7));
        assert_null(memmem(f->data, f->len, "invisible", 9));
        assert_null(memmem(f->data, f->len, "not_published", 13));
    }
}

static void assert_content(const pgo_message *m, const char *want, size_t len)
{
    assert_int_equal(m->len, len);
    assert_memory_equal(m->content, want, len);
}

static void test_fixture_messages(void **state)
{
    const pgo_message *m = &msg->u.message;
    uint64_t end_before;

    (void)state;
    /* Legacy parsing reports them as skipped, with the struct filled. */
    assert_int_equal(parse_fx(fx("0027-M.bin")), 0);
    assert_int_equal(msg->kind, PGO_SKIPPED);
    assert_int_equal(msg->type, 'M');
    assert_string_equal(m->prefix, "outbox-relay");

    /* Transactional: inside its transaction, before the commit record. */
    must_parse_all("0026-B.bin");
    uint64_t final_lsn = msg->u.begin.final_lsn;
    must_parse_all("0027-M.bin");
    assert_int_equal(msg->kind, PGO_MESSAGE);
    assert_int_equal(m->flags, PGO_MESSAGE_TRANSACTIONAL);
    assert_true(m->transactional);
    assert_true(m->lsn > 0 && m->lsn < final_lsn);
    assert_string_equal(m->prefix, "outbox-relay");
    assert_content(m, "transactional message", 21);
    const fixture *f = fx("0027-M.bin");
    assert_ptr_equal(m->content, (const char *)f->data + f->len - 21);

    /* Non-transactional: on its own, after the transaction before it. */
    must_parse_all("0029-C.bin");
    end_before = msg->u.commit.end_lsn;
    must_parse_all("0030-M.bin");
    assert_int_equal(m->flags, 0);
    assert_false(m->transactional);
    assert_true(m->lsn >= end_before);
    assert_content(m, "non-transactional message", 25);

    /* An outbox event as JSON, and binary content with NUL bytes. */
    must_parse_all("0061-M.bin");
    assert_true(m->transactional);
    assert_string_equal(m->prefix, "outbox");
    assert_true(m->len > 100);
    assert_int_equal(m->content[0], '{');
    assert_int_equal(m->content[m->len - 1], '}');
    must_parse_all("0063-M.bin");
    assert_string_equal(m->prefix, "bin");
    assert_content(m, "\x00\xff\x00\x01", 4);
}

static void test_fixture_update_delete(void **state)
{
    const pgo_update *u = &msg->u.update;
    const pgo_delete *d = &msg->u.delete;
    uint32_t items, items_full;

    (void)state;
    must_parse_all("0032-R.bin");
    assert_string_equal(msg->u.relation.relname, "items");
    assert_int_equal(msg->u.relation.natts, 3);
    assert_int_equal(msg->u.relation.replident, 'd');
    items = msg->u.relation.oid;
    must_parse_all("0037-R.bin");
    assert_string_equal(msg->u.relation.relname, "items_full");
    assert_int_equal(msg->u.relation.replident, 'f');
    /* REPLICA IDENTITY FULL: every column is part of the key. */
    assert_int_equal(msg->u.relation.atts[0].flags, 1);
    assert_int_equal(msg->u.relation.atts[1].flags, 1);
    items_full = msg->u.relation.oid;

    /* The first insert carries the whole 2.3 kB out-of-line value. */
    must_parse_all("0033-I.bin");
    assert_int_equal(msg->u.insert.tuple.cols[2].kind, 't');
    assert_int_equal(msg->u.insert.tuple.cols[2].len, 72 * 32);

    /* Key unchanged: no old tuple; the untouched TOAST value is 'u'. */
    must_parse_all("0041-U.bin");
    assert_int_equal(u->oid, items);
    assert_int_equal(u->old_kind, 0);
    assert_int_equal(u->old_tuple.ncols, 0);
    assert_int_equal(u->tuple.ncols, 3);
    assert_ptr_equal(u->tuple.cols, msg->col_storage);
    assert_text(&u->tuple.cols[0], "1");
    assert_text(&u->tuple.cols[1], "one, changed");
    assert_int_equal(u->tuple.cols[2].kind, 'u');
    assert_null(u->tuple.cols[2].data);

    /* Key changed: the old key, other columns null. */
    must_parse_all("0044-U.bin");
    assert_int_equal(u->old_kind, 'K');
    assert_ptr_equal(u->old_tuple.cols, msg->old_col_storage);
    assert_int_equal(u->old_tuple.ncols, 3);
    assert_text(&u->old_tuple.cols[0], "2");
    assert_int_equal(u->old_tuple.cols[1].kind, 'n');
    assert_int_equal(u->old_tuple.cols[2].kind, 'n');
    assert_text(&u->tuple.cols[0], "20");
    assert_text(&u->tuple.cols[1], "two");
    assert_int_equal(u->tuple.cols[2].kind, 'n');

    /* REPLICA IDENTITY FULL: the whole old row. */
    must_parse_all("0047-U.bin");
    assert_int_equal(u->oid, items_full);
    assert_int_equal(u->old_kind, 'O');
    assert_int_equal(u->old_tuple.ncols, 2);
    assert_text(&u->old_tuple.cols[1], "full");
    assert_text(&u->tuple.cols[1], "full, changed");

    must_parse_all("0050-D.bin");
    assert_int_equal(d->oid, items);
    assert_int_equal(d->old_kind, 'K');
    assert_int_equal(d->old_tuple.ncols, 3);
    assert_ptr_equal(d->old_tuple.cols, msg->old_col_storage);
    assert_text(&d->old_tuple.cols[0], "20");
    assert_int_equal(d->old_tuple.cols[1].kind, 'n');
    must_parse_all("0053-D.bin");
    assert_int_equal(d->oid, items_full);
    assert_int_equal(d->old_kind, 'O');
    assert_text(&d->old_tuple.cols[0], "1");
    assert_text(&d->old_tuple.cols[1], "full, changed");

    /* Legacy parsing: skipped, decoded all the same. */
    assert_int_equal(parse_fx(fx("0047-U.bin")), 0);
    assert_int_equal(msg->kind, PGO_SKIPPED);
    assert_int_equal(u->old_kind, 'O');
}

static void test_fixture_truncate(void **state)
{
    const pgo_truncate *t = &msg->u.truncate;
    uint32_t items, items_full;

    (void)state;
    /* Both relations are announced right before the Truncate. */
    must_parse_all("0056-R.bin");
    items = msg->u.relation.oid;
    must_parse_all("0057-R.bin");
    items_full = msg->u.relation.oid;
    must_parse_all("0058-T.bin");
    assert_int_equal(t->nrels, 2);
    assert_int_equal(t->flags, PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY);
    assert_int_equal(pgo_truncate_oid(t, 0), items);
    assert_int_equal(pgo_truncate_oid(t, 1), items_full);
    /* Out of range and NULL read as 0, never past the message. */
    assert_int_equal(pgo_truncate_oid(t, 2), 0);
    assert_int_equal(pgo_truncate_oid(t, UINT32_MAX), 0);
    assert_int_equal(pgo_truncate_oid(NULL, 0), 0);
    const fixture *f = fx("0058-T.bin");
    assert_ptr_equal(t->oids, f->data + 6);
}

static void test_fixture_origin(void **state)
{
    (void)state;
    /* Begin, then Origin, then the changes. */
    must_parse_all("0065-B.bin");
    must_parse_all("0066-O.bin");
    assert_int_equal(msg->kind, PGO_ORIGIN);
    assert_int_equal(msg->u.origin.commit_lsn, UINT64_C(0x1AABBCCDD));
    assert_string_equal(msg->u.origin.name, "fixture_origin");
    must_parse_all("0067-I.bin");
    assert_text(&msg->u.insert.tuple.cols[3], "FromOrigin");
}

static void test_fixture_type(void **state)
{
    uint32_t oid;

    (void)state;
    must_parse_all("0022-Y.bin");
    assert_int_equal(msg->kind, PGO_TYPE);
    assert_true(msg->u.type.oid >= 16384);
    assert_string_equal(msg->u.type.nspname, "public");
    assert_string_equal(msg->u.type.typname, "priority");
    oid = msg->u.type.oid;
    must_parse_all("0023-R.bin");
    assert_int_equal(msg->u.relation.atts[7].type_oid, oid);
    /* Sent again to the two-phase slot, before its first use there. */
    must_parse_all("v3-4943-Y.bin");
    assert_string_equal(msg->u.type.typname, "priority");
}

/* Streaming (proto 2+): blocks of changes with their xid, then the verdict. */
static void test_fixture_stream(void **state)
{
    uint32_t top, sub;

    (void)state;
    must_parse_all("v3-0001-S.bin");
    assert_int_equal(msg->kind, PGO_STREAM_START);
    top = msg->u.stream_start.xid;
    assert_true(top > 0);
    assert_true(msg->u.stream_start.first_segment);
    must_parse_all("v3-0276-S.bin");
    assert_int_equal(msg->u.stream_start.xid, top);
    assert_false(msg->u.stream_start.first_segment);

    /* Changes inside the block carry the xid; values are binary. */
    must_parse_all("v3-0002-R.bin");
    assert_int_equal(msg->stream_xid, top);
    assert_string_equal(msg->u.relation.relname, "items");
    must_parse_all("v3-0003-I.bin");
    assert_int_equal(msg->stream_xid, top);
    assert_int_equal(msg->u.insert.tuple.cols[0].kind, 'b');
    assert_int_equal(msg->u.insert.tuple.cols[0].len, 4);
    assert_memory_equal(msg->u.insert.tuple.cols[0].data, "\0\0\0\1", 4); /* int4 1 */
    assert_int_equal(msg->u.insert.tuple.cols[1].kind, 'b');
    assert_int_equal(msg->u.insert.tuple.cols[1].len, 100);
    assert_int_equal(msg->u.insert.tuple.cols[2].kind, 'n');
    /* Read without in_stream, the xid is taken for the OID: misaligned. */
    const fixture *f = fx("v3-0003-I.bin");
    expect_error(f->data, f->len, false, NULL);
    must_parse_all("v3-0275-E.bin");
    assert_int_equal(msg->kind, PGO_STREAM_STOP);

    /* The rolled-back savepoint: its subtransaction only. */
    must_parse_all("v3-3016-A.bin");
    assert_int_equal(msg->kind, PGO_STREAM_ABORT);
    assert_int_equal(msg->u.stream_abort.xid, top);
    sub = msg->u.stream_abort.subxid;
    assert_true(sub != top && sub > 0);
    assert_false(msg->u.stream_abort.has_abort_info);
    assert_int_equal(msg->u.stream_abort.abort_lsn, 0);
    assert_int_equal(msg->u.stream_abort.abort_ts, 0);

    must_parse_all("v3-3021-c.bin");
    assert_int_equal(msg->kind, PGO_STREAM_COMMIT);
    assert_int_equal(msg->u.stream_commit.xid, top);
    assert_int_equal(msg->u.stream_commit.flags, 0);
    assert_true(msg->u.stream_commit.end_lsn > msg->u.stream_commit.commit_lsn);
    assert_true(msg->u.stream_commit.commit_ts > INT64_C(800000000000000));

    /* The aborted big transaction: xid == subxid. */
    must_parse_all("v3-4941-A.bin");
    assert_true(msg->u.stream_abort.xid != top);
    assert_int_equal(msg->u.stream_abort.xid, msg->u.stream_abort.subxid);

    /* A v2/v3 Stream Abort read as the parallel layout is truncated. */
    pgo_options par = {.parallel_abort = true, .all_kinds = true};
    f = fx("v3-4941-A.bin");
    expect_error_opts(f->data, f->len, &par, "truncated at offset 9 reading abort lsn");
}

static void test_fixture_two_phase(void **state)
{
    uint32_t xid;
    uint64_t prepare_lsn, end_lsn;

    (void)state;
    must_parse_all("v3-4942-b.bin");
    assert_int_equal(msg->kind, PGO_BEGIN_PREPARE);
    xid = msg->u.begin_prepare.xid;
    prepare_lsn = msg->u.begin_prepare.prepare_lsn;
    end_lsn = msg->u.begin_prepare.end_lsn;
    assert_true(end_lsn > prepare_lsn && prepare_lsn > 0);
    assert_string_equal(msg->u.begin_prepare.gid, "fixture-gid-commit");
    must_parse_all("v3-4945-I.bin");
    assert_int_equal(msg->stream_xid, 0);
    must_parse_all("v3-4946-P.bin");
    assert_int_equal(msg->kind, PGO_PREPARE);
    assert_int_equal(msg->u.prepare.flags, 0);
    assert_int_equal(msg->u.prepare.xid, xid);
    assert_int_equal(msg->u.prepare.prepare_lsn, prepare_lsn);
    assert_int_equal(msg->u.prepare.end_lsn, end_lsn);
    assert_string_equal(msg->u.prepare.gid, "fixture-gid-commit");
    int64_t prepare_ts = msg->u.prepare.prepare_ts;
    must_parse_all("v3-4947-K.bin");
    assert_int_equal(msg->kind, PGO_COMMIT_PREPARED);
    assert_int_equal(msg->u.commit_prepared.xid, xid);
    assert_true(msg->u.commit_prepared.commit_lsn >= end_lsn);
    assert_true(msg->u.commit_prepared.end_lsn > msg->u.commit_prepared.commit_lsn);
    assert_true(msg->u.commit_prepared.commit_ts >= prepare_ts);
    assert_string_equal(msg->u.commit_prepared.gid, "fixture-gid-commit");

    /* Prepared, then rolled back: its changes were sent, 'r' voids them. */
    must_parse_all("v3-4948-b.bin");
    xid = msg->u.begin_prepare.xid;
    end_lsn = msg->u.begin_prepare.end_lsn;
    prepare_ts = msg->u.begin_prepare.prepare_ts;
    must_parse_all("v3-4949-I.bin");
    assert_int_equal(msg->u.insert.tuple.cols[3].kind, 'b');
    assert_non_null(memmem(msg->u.insert.tuple.cols[3].data, msg->u.insert.tuple.cols[3].len,
                           "RolledBackPrepared", 18));
    must_parse_all("v3-4951-r.bin");
    assert_int_equal(msg->kind, PGO_ROLLBACK_PREPARED);
    assert_int_equal(msg->u.rollback_prepared.xid, xid);
    assert_int_equal(msg->u.rollback_prepared.prepare_end_lsn, end_lsn);
    assert_true(msg->u.rollback_prepared.rollback_end_lsn > end_lsn);
    assert_int_equal(msg->u.rollback_prepared.prepare_ts, prepare_ts);
    assert_true(msg->u.rollback_prepared.rollback_ts >= prepare_ts);
    assert_string_equal(msg->u.rollback_prepared.gid, "fixture-gid-rollback");

    /* A big prepared transaction: streamed, then Stream Prepare. */
    must_parse_all("v3-6969-p.bin");
    assert_int_equal(msg->kind, PGO_STREAM_PREPARE);
    assert_string_equal(msg->u.prepare.gid, "fixture-gid-stream");
    assert_true(msg->u.prepare.end_lsn > msg->u.prepare.prepare_lsn);
    xid = msg->u.prepare.xid;
    must_parse_all("v3-6970-K.bin");
    assert_int_equal(msg->u.commit_prepared.xid, xid);
    assert_string_equal(msg->u.commit_prepared.gid, "fixture-gid-stream");
}

/* Every proper prefix of every fixture is an error, never a crash, under
 * the options it was captured with and under the others. */
static void test_fixture_truncations(void **state)
{
    (void)state;
    for (size_t i = 0; i < NFIXTURES; i++) {
        const fixture *f = &fixtures[i];

        for (size_t n = 0; n < f->len; n++) {
            for (int o = 0; o < 8; o++) {
                pgo_options opt = {.in_stream = o & 1, .parallel_abort = o & 2, .all_kinds = o & 4};

                if (parse_opts(f->data, n, &opt) != -1)
                    fail_msg("%s cut to %zu bytes (options %d) was accepted", f->name, n, o);
                check_error(NULL);
            }
        }
    }
    /* The message names the type and the offset. */
    const fixture *f = fx("0003-I.bin");
    expect_error(f->data, 20, false, "insert");
    expect_error(f->data, 20, false, "offset");
    expect_error(f->data, 3, false, "truncated at offset 1");
    expect_error(f->data, 0, false, "empty");
    f = fx("0004-C.bin");
    expect_error(f->data, 25, false, "commit message ('C'): truncated at offset 18");
    f = fx("0058-T.bin");
    expect_error(f->data, f->len - 1, false, "2 oids need 8 bytes, 7 left");
    f = fx("v3-4947-K.bin");
    expect_error(f->data, f->len - 1, false, "unterminated gid string");
}

/* Bytes after a fully decoded message mean we misread it: every fixture,
 * every type. */
static void test_trailing_garbage(void **state)
{
    (void)state;
    for (size_t i = 0; i < NFIXTURES; i++) {
        const fixture *f = &fixtures[i];
        pgo_options o = fx_opts(f, true);
        uint8_t *b = malloc(f->len + 1);

        assert_non_null(b);
        memcpy(b, f->data, f->len);
        b[f->len] = 0;
        expect_error_opts(b, f->len + 1, &o, "trailing");
        free(b);
    }
}

/* Messages with an extra leading xid, as inside Stream Start/Stop. */
static uint8_t *with_xid(const fixture *f, uint32_t xid, size_t *len)
{
    uint8_t *b = malloc(f->len + 4);

    assert_non_null(b);
    b[0] = f->data[0];
    b[1] = (uint8_t)(xid >> 24);
    b[2] = (uint8_t)(xid >> 16);
    b[3] = (uint8_t)(xid >> 8);
    b[4] = (uint8_t)xid;
    memcpy(b + 5, f->data + 1, f->len - 1);
    *len = f->len + 4;
    return b;
}

static void test_in_stream(void **state)
{
    static const char *const names[] = {"0002-R.bin", "0003-I.bin", "0022-Y.bin",
                                        "0027-M.bin", "0023-R.bin", "0024-I.bin"};

    (void)state;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const fixture *f = fx(names[i]);
        size_t len;
        uint8_t *b = with_xid(f, 0xDEADBEEF, &len);

        if (pgo_parse(b, len, true, msg, err, sizeof err) != 0)
            fail_msg("%s with xid: %s", names[i], err);
        if (f->data[0] == 'R') {
            assert_int_equal(msg->kind, PGO_RELATION);
            assert_string_equal(msg->u.relation.relname, "outbox");
            assert_int_equal(msg->u.relation.atts[0].type_oid, 2950);
        } else if (f->data[0] == 'I') {
            assert_int_equal(msg->kind, PGO_INSERT);
            assert_text(&msg->u.insert.tuple.cols[2], names[i][3] == '3' ? "42" : "46");
        }
        /* Every truncation of the streamed form fails too. */
        for (size_t n = 0; n < len; n++)
            expect_error(b, n, true, NULL);
        free(b);
    }
    /* Begin and Commit never carry the xid. */
    assert_int_equal(parse_fx(fx("0001-B.bin")), 0);
    const fixture *f = fx("0001-B.bin");
    assert_int_equal(parse(f->data, f->len, true), 0);
    f = fx("0004-C.bin");
    assert_int_equal(parse(f->data, f->len, true), 0);
    /* A streamed Relation read as unstreamed is misaligned: an error. */
    size_t len;
    uint8_t *b = with_xid(fx("0002-R.bin"), 0x41424344, &len);
    expect_error(b, len, false, NULL);
    free(b);
}

static void test_unknown_type(void **state)
{
    static const uint8_t types[] = {0, 'Z', 'w', 'k', 'X', 'a', 'Q', 0xFF, 'i', 'y'};

    (void)state;
    for (size_t i = 0; i < sizeof types; i++) {
        uint8_t b[32] = {0};

        b[0] = types[i];
        expect_error(b, sizeof b, false, "unknown pgoutput message type");
        expect_error(b, 1, true, "offset 0");
    }
    expect_error(NULL, 0, false, "empty");
    assert_int_equal(pgo_parse((const uint8_t *)"E", 1, false, NULL, err, sizeof err), -1);
    /* A NULL or tiny error buffer is never written past. */
    assert_int_equal(pgo_parse((const uint8_t *)"Z", 1, false, msg, NULL, 0), -1);
    char tiny[3] = "ab";
    assert_int_equal(pgo_parse((const uint8_t *)"Z", 1, false, msg, tiny, 1), -1);
    assert_int_equal(tiny[0], '\0');
    assert_int_equal(tiny[1], 'b');
}

static void test_corrupt_insert(void **state)
{
    const fixture *f = fx("0003-I.bin");
    uint8_t *b = dup_bytes(f->data, f->len);
    size_t last_len_at = 0, pos = 8;

    (void)state;
    /* Locate the last column's length field by walking the tuple. */
    for (int c = 0; c < 7; c++) {
        assert_int_equal(b[pos], 't');
        last_len_at = pos + 1;
        pos += 5 + be32(b + pos + 1);
    }
    assert_int_equal(pos, f->len);

    /* Huge and off-by-one lengths. */
    b[last_len_at] = 0xFF;
    expect_error(b, f->len, false, "column data");
    memcpy(b, f->data, f->len);
    b[last_len_at + 3]++;
    expect_error(b, f->len, false, "truncated");
    memcpy(b, f->data, f->len);
    b[last_len_at + 3]--;
    expect_error(b, f->len, false, "trailing");
    /* First column swallows everything: the other six are missing. */
    memcpy(b, f->data, f->len);
    uint32_t rest = (uint32_t)(f->len - 13);
    b[9] = (uint8_t)(rest >> 24);
    b[10] = (uint8_t)(rest >> 16);
    b[11] = (uint8_t)(rest >> 8);
    b[12] = (uint8_t)rest;
    expect_error(b, f->len, false, "column kind");

    /* Column counts: too many for PostgreSQL, or more than present. */
    memcpy(b, f->data, f->len);
    b[6] = 0xFF;
    b[7] = 0xFF;
    expect_error(b, f->len, false, "65535 columns, more than 1664");
    b[6] = 1664 >> 8;
    b[7] = 1665 & 0xFF;
    expect_error(b, f->len, false, "1665 columns");
    b[6] = 0;
    b[7] = 8;
    expect_error(b, f->len, false, "truncated");
    b[7] = 6;
    expect_error(b, f->len, false, "trailing");

    /* Bad new-tuple marker and column kind. */
    memcpy(b, f->data, f->len);
    b[5] = 'K';
    expect_error(b, f->len, false, "marker");
    memcpy(b, f->data, f->len);
    b[8] = 'x';
    expect_error(b, f->len, false, "unknown column kind 0x78 for column 0 at offset 8");
    free(b);
}

static void test_corrupt_relation(void **state)
{
    const fixture *f = fx("0002-R.bin");
    uint8_t *b = dup_bytes(f->data, f->len);
    size_t natts_at;

    (void)state;
    /* "public\0outbox\0" then replident then natts. */
    natts_at = 5 + strlen("public") + 1 + strlen("outbox") + 1 + 1;
    assert_int_equal(b[natts_at], 0);
    assert_int_equal(b[natts_at + 1], 7);
    b[natts_at] = 0xFF;
    expect_error(b, f->len, false, "more than 1664");
    b[natts_at] = 0;
    b[natts_at + 1] = 8;
    expect_error(b, f->len, false, "truncated");
    b[natts_at + 1] = 6;
    expect_error(b, f->len, false, "trailing");

    /* Missing NULs: every NUL from one point on replaced. */
    for (size_t from = 5; from < f->len; from++) {
        memcpy(b, f->data, f->len);
        for (size_t i = from; i < f->len; i++)
            if (b[i] == 0)
                b[i] = 'x';
        /* Must fail, or (when the scribble hit only typmods and the
         * like) parse into names that are inside the buffer. */
        if (parse(b, f->len, false) == 0) {
            for (int a = 0; a < msg->u.relation.natts; a++)
                assert_non_null(msg->u.relation.atts[a].name);
        }
    }
    memcpy(b, f->data, f->len);
    b[5 + 6] = 'x'; /* "publicxoutbox\0..." : names shift, layout breaks */
    expect_error(b, f->len, false, NULL);
    /* A string that runs to the end of the buffer. */
    const fixture *y = fx("0022-Y.bin");
    expect_error(y->data, y->len - 1, false, "unterminated");
    memcpy(b, f->data, f->len);
    expect_error(b, 5 + 3, false, "unterminated namespace string at offset 5");
    free(b);
}

static void test_max_columns(void **state)
{
    static wbuf w;

    (void)state;
    /* Insert with exactly PGO_MAX_COLS columns: accepted. */
    w.n = 0;
    w8(&w, 'I');
    w32(&w, 16384);
    w8(&w, 'N');
    w16(&w, PGO_MAX_COLS);
    for (int i = 0; i < PGO_MAX_COLS; i++)
        w8(&w, i % 2 ? 'n' : 'u');
    assert_int_equal(parse(w.b, w.n, false), 0);
    assert_int_equal(msg->u.insert.tuple.ncols, PGO_MAX_COLS);
    assert_int_equal(msg->u.insert.tuple.cols[PGO_MAX_COLS - 1].kind, 'n');
    assert_int_equal(msg->u.insert.tuple.cols[PGO_MAX_COLS - 2].kind, 'u');
    /* One more column is refused before anything is stored past the end. */
    w.b[6] = (PGO_MAX_COLS + 1) >> 8;
    w.b[7] = (PGO_MAX_COLS + 1) & 0xFF;
    w8(&w, 'n');
    expect_error(w.b, w.n, false, "more than");

    /* Relation with PGO_MAX_COLS columns. */
    w.n = 0;
    w8(&w, 'R');
    w32(&w, 16384);
    wstr(&w, "s");
    wstr(&w, "t");
    w8(&w, 'f');
    w16(&w, PGO_MAX_COLS);
    for (int i = 0; i < PGO_MAX_COLS; i++) {
        w8(&w, 0);
        wstr(&w, "");
        w32(&w, 25);
        w32(&w, 0xFFFFFFFF);
    }
    assert_int_equal(parse(w.b, w.n, false), 0);
    assert_int_equal(msg->u.relation.natts, PGO_MAX_COLS);
    assert_string_equal(msg->u.relation.atts[PGO_MAX_COLS - 1].name, "");
    assert_int_equal(msg->u.relation.atts[PGO_MAX_COLS - 1].typmod, -1);
    assert_int_equal(msg->u.relation.replident, 'f');

    /* Binary and zero-length text values. */
    w.n = 0;
    w8(&w, 'I');
    w32(&w, 7);
    w8(&w, 'N');
    w16(&w, 3);
    w8(&w, 'b');
    w32(&w, 2);
    w8(&w, 0xAB);
    w8(&w, 0xCD);
    w8(&w, 't');
    w32(&w, 0);
    wtext(&w, "x");
    assert_int_equal(parse(w.b, w.n, false), 0);
    assert_int_equal(msg->u.insert.tuple.cols[0].kind, 'b');
    assert_int_equal(msg->u.insert.tuple.cols[0].len, 2);
    assert_int_equal(msg->u.insert.tuple.cols[1].len, 0);
    assert_int_equal(msg->u.insert.tuple.cols[2].len, 1);
}

/* Hand-built messages of every type but Begin/Commit/Relation/Insert, from
 * the layouts in PostgreSQL's proto.c, with recognisable field values. */
static void build(wbuf *w, char type, int variant, bool in_stream)
{
    w->n = 0;
    w8(w, (unsigned char)type);
    if (in_stream && strchr("RYIUDTM", type))
        w32(w, 999);
    switch (type) {
    case 'O':
        w64(w, 0x16B374D848);
        wstr(w, "origin_1");
        break;
    case 'Y':
        w32(w, 16390);
        wstr(w, variant ? "" : "public"); /* "" is pg_catalog */
        wstr(w, "mood");
        break;
    case 'U':
        w32(w, 16384);
        if (variant == 1) {
            w8(w, 'K');
            w16(w, 1);
            wtext(w, "key");
        } else if (variant == 2) {
            w8(w, 'O');
            w16(w, 2);
            wtext(w, "old");
            w8(w, 'n');
        }
        w8(w, 'N');
        w16(w, 2);
        wtext(w, "new");
        w8(w, 'u');
        break;
    case 'D':
        w32(w, 16385);
        w8(w, variant ? 'O' : 'K');
        w16(w, 1);
        wtext(w, "gone");
        break;
    case 'T':
        w32(w, (uint32_t)variant); /* 0 relations is a valid message too */
        w8(w, (unsigned)variant);
        for (int i = 0; i < variant; i++)
            w32(w, 16384 + (uint32_t)i);
        break;
    case 'M':
        w8(w, variant == 1 ? 0 : 1);
        w64(w, 0x1000);
        wstr(w, "prefix");
        if (variant == 2) { /* empty content */
            w32(w, 0);
        } else {
            w32(w, 5);
            memcpy(w->b + w->n, "he\0lo", 5);
            w->n += 5;
        }
        break;
    case 'S':
        w32(w, 777);
        w8(w, variant == 1 ? 0 : 1);
        break;
    case 'E':
        break;
    case 'c':
        w32(w, 777);
        w8(w, 0);
        w64(w, 0x2000);
        w64(w, 0x2100);
        w64(w, 12345);
        break;
    case 'A':
        w32(w, 777);
        w32(w, variant == 2 ? 777 : 778);
        if (variant == 1) { /* protocol 4, streaming = parallel */
            w64(w, 0x3000);
            w64(w, (uint64_t)INT64_C(-5)); /* before 2000-01-01 */
        }
        break;
    case 'b':
        w64(w, 0x4000);
        w64(w, 0x4100);
        w64(w, 12345);
        w32(w, 777);
        wstr(w, "gid-1");
        break;
    case 'P':
    case 'K':
    case 'p':
        w8(w, 0);
        w64(w, 0x4000);
        w64(w, 0x4100);
        w64(w, 12345);
        w32(w, 777);
        wstr(w, variant == 1 ? "" : "gid-1");
        break;
    case 'r':
        w8(w, 0);
        w64(w, 0x4000);
        w64(w, 0x4100);
        w64(w, 12345);
        w64(w, 12346);
        w32(w, 777);
        wstr(w, "gid-1");
        break;
    default:
        fail_msg("no builder for %c", type);
    }
}

/* What build() wrote, field by field. */
static void check_built(char type, int variant, bool in_stream)
{
    assert_int_equal(msg->kind, (unsigned char)type);
    assert_int_equal(msg->type, type);
    assert_int_equal(msg->stream_xid, in_stream && strchr("RYIUDTM", type) ? 999 : 0);
    switch (type) {
    case 'O':
        assert_int_equal(msg->u.origin.commit_lsn, UINT64_C(0x16B374D848));
        assert_string_equal(msg->u.origin.name, "origin_1");
        break;
    case 'Y':
        assert_int_equal(msg->u.type.oid, 16390);
        assert_string_equal(msg->u.type.nspname, variant ? "" : "public");
        assert_string_equal(msg->u.type.typname, "mood");
        break;
    case 'U': {
        const pgo_update *u = &msg->u.update;

        assert_int_equal(u->oid, 16384);
        assert_int_equal(u->old_kind, variant == 1 ? 'K' : variant == 2 ? 'O' : 0);
        assert_int_equal(u->old_tuple.ncols, variant);
        if (variant == 1)
            assert_text(&u->old_tuple.cols[0], "key");
        if (variant == 2) {
            assert_text(&u->old_tuple.cols[0], "old");
            assert_int_equal(u->old_tuple.cols[1].kind, 'n');
        }
        assert_int_equal(u->tuple.ncols, 2);
        assert_text(&u->tuple.cols[0], "new");
        assert_int_equal(u->tuple.cols[1].kind, 'u');
        assert_null(u->tuple.cols[1].data);
        break;
    }
    case 'D':
        assert_int_equal(msg->u.delete.oid, 16385);
        assert_int_equal(msg->u.delete.old_kind, variant ? 'O' : 'K');
        assert_int_equal(msg->u.delete.old_tuple.ncols, 1);
        assert_text(&msg->u.delete.old_tuple.cols[0], "gone");
        break;
    case 'T':
        assert_int_equal(msg->u.truncate.nrels, variant);
        assert_int_equal(msg->u.truncate.flags, variant);
        for (int i = 0; i < variant; i++)
            assert_int_equal(pgo_truncate_oid(&msg->u.truncate, (uint32_t)i), 16384 + i);
        assert_int_equal(pgo_truncate_oid(&msg->u.truncate, (uint32_t)variant), 0);
        break;
    case 'M':
        assert_int_equal(msg->u.message.transactional, variant != 1);
        assert_int_equal(msg->u.message.flags, variant != 1);
        assert_int_equal(msg->u.message.lsn, 0x1000);
        assert_string_equal(msg->u.message.prefix, "prefix");
        assert_int_equal(msg->u.message.len, variant == 2 ? 0 : 5);
        if (variant != 2)
            assert_memory_equal(msg->u.message.content, "he\0lo", 5);
        break;
    case 'S':
        assert_int_equal(msg->u.stream_start.xid, 777);
        assert_int_equal(msg->u.stream_start.first_segment, variant != 1);
        break;
    case 'E':
        break;
    case 'c':
        assert_int_equal(msg->u.stream_commit.xid, 777);
        assert_int_equal(msg->u.stream_commit.flags, 0);
        assert_int_equal(msg->u.stream_commit.commit_lsn, 0x2000);
        assert_int_equal(msg->u.stream_commit.end_lsn, 0x2100);
        assert_int_equal(msg->u.stream_commit.commit_ts, 12345);
        break;
    case 'A':
        assert_int_equal(msg->u.stream_abort.xid, 777);
        assert_int_equal(msg->u.stream_abort.subxid, variant == 2 ? 777 : 778);
        assert_int_equal(msg->u.stream_abort.has_abort_info, variant == 1);
        assert_int_equal(msg->u.stream_abort.abort_lsn, variant == 1 ? 0x3000 : 0);
        assert_true(msg->u.stream_abort.abort_ts == (variant == 1 ? INT64_C(-5) : 0));
        break;
    case 'b':
        assert_int_equal(msg->u.begin_prepare.prepare_lsn, 0x4000);
        assert_int_equal(msg->u.begin_prepare.end_lsn, 0x4100);
        assert_int_equal(msg->u.begin_prepare.prepare_ts, 12345);
        assert_int_equal(msg->u.begin_prepare.xid, 777);
        assert_string_equal(msg->u.begin_prepare.gid, "gid-1");
        break;
    case 'P':
    case 'p':
        assert_int_equal(msg->u.prepare.flags, 0);
        assert_int_equal(msg->u.prepare.prepare_lsn, 0x4000);
        assert_int_equal(msg->u.prepare.end_lsn, 0x4100);
        assert_int_equal(msg->u.prepare.prepare_ts, 12345);
        assert_int_equal(msg->u.prepare.xid, 777);
        assert_string_equal(msg->u.prepare.gid, variant == 1 ? "" : "gid-1");
        break;
    case 'K':
        assert_int_equal(msg->u.commit_prepared.flags, 0);
        assert_int_equal(msg->u.commit_prepared.commit_lsn, 0x4000);
        assert_int_equal(msg->u.commit_prepared.end_lsn, 0x4100);
        assert_int_equal(msg->u.commit_prepared.commit_ts, 12345);
        assert_int_equal(msg->u.commit_prepared.xid, 777);
        assert_string_equal(msg->u.commit_prepared.gid, variant == 1 ? "" : "gid-1");
        break;
    case 'r':
        assert_int_equal(msg->u.rollback_prepared.flags, 0);
        assert_int_equal(msg->u.rollback_prepared.prepare_end_lsn, 0x4000);
        assert_int_equal(msg->u.rollback_prepared.rollback_end_lsn, 0x4100);
        assert_int_equal(msg->u.rollback_prepared.prepare_ts, 12345);
        assert_int_equal(msg->u.rollback_prepared.rollback_ts, 12346);
        assert_int_equal(msg->u.rollback_prepared.xid, 777);
        assert_string_equal(msg->u.rollback_prepared.gid, "gid-1");
        break;
    default:
        fail_msg("no check for %c", type);
    }
}

static void test_hand_built(void **state)
{
    static const char types[] = "OYUDTMSEcAbPKrp";
    static wbuf w;

    (void)state;
    for (const char *t = types; *t; t++) {
        for (int variant = 0; variant < 3; variant++) {
            for (int s = 0; s < 2; s++) {
                /* Only variant 1 of Stream Abort is the parallel layout. */
                pgo_options o = {
                    .in_stream = s, .parallel_abort = *t == 'A' && variant == 1, .all_kinds = true};

                build(&w, *t, variant, s);
                if (parse_opts(w.b, w.n, &o) != 0)
                    fail_msg("'%c' variant %d in_stream %d: %s", *t, variant, s, err);
                check_built(*t, variant, s);
                /* The legacy entry point: skipped, struct filled the same. */
                if (!o.parallel_abort) {
                    assert_int_equal(parse(w.b, w.n, s), 0);
                    assert_int_equal(msg->kind, PGO_SKIPPED);
                    assert_int_equal(msg->type, *t);
                }
                for (size_t n = 0; n < w.n; n++) {
                    if (parse_opts(w.b, n, &o) != -1)
                        fail_msg("'%c' variant %d cut to %zu accepted", *t, variant, n);
                    check_error(NULL);
                }
                /* Their layout is fixed by the protocol version too. */
                w8(&w, 0);
                expect_error_opts(w.b, w.n, &o, "trailing");
            }
        }
    }
}

/* The two Stream Abort layouts: the option decides, never the length. */
static void test_stream_abort_layouts(void **state)
{
    static wbuf w;
    pgo_options par = {.parallel_abort = true, .all_kinds = true};
    pgo_options plain = {.all_kinds = true};

    (void)state;
    build(&w, 'A', 1, false); /* 24 bytes after the type */
    assert_int_equal(w.n, 25);
    assert_int_equal(parse_opts(w.b, w.n, &par), 0);
    check_built('A', 1, false);
    /* Read as the short layout: 16 bytes too many. */
    expect_error_opts(w.b, w.n, &plain, "16 trailing bytes at offset 9");
    /* Its first 8 bytes are a complete short one, but not a parallel one. */
    assert_int_equal(parse_opts(w.b, 9, &plain), 0);
    assert_int_equal(msg->u.stream_abort.subxid, 778);
    assert_false(msg->u.stream_abort.has_abort_info);
    expect_error_opts(w.b, 9, &par, "truncated at offset 9 reading abort lsn");
    expect_error_opts(w.b, 17, &par, "truncated at offset 17 reading abort time");
    /* The legacy entry point never assumes the parallel layout. */
    expect_error(w.b, w.n, false, "trailing");
    /* in_stream does not add an xid to Stream Abort. */
    pgo_options both = par;
    both.in_stream = true;
    assert_int_equal(parse_opts(w.b, w.n, &both), 0);
    check_built('A', 1, false);
}

static void test_hand_built_corrupt(void **state)
{
    static wbuf w;
    pgo_options all = {.all_kinds = true};

    (void)state;
    /* Truncate with a relation count that would overflow n * 4. */
    build(&w, 'T', 1, false);
    w.b[1] = w.b[2] = w.b[3] = w.b[4] = 0xFF;
    expect_error(w.b, w.n, false, "4294967295 oids need 17179869180 bytes, 4 left");
    w.b[1] = 0x40; /* 0x40000001 * 4 wraps a 32-bit size */
    w.b[2] = 0;
    w.b[3] = 0;
    w.b[4] = 1;
    expect_error(w.b, w.n, false, "truncated");
    /* Fewer oids than announced, and more. */
    build(&w, 'T', 2, false);
    w.b[4] = 3;
    expect_error(w.b, w.n, false, "truncated");
    w.b[4] = 1;
    expect_error(w.b, w.n, false, "trailing");
    /* Message content longer than the buffer. */
    build(&w, 'M', 0, false);
    w.b[w.n - 6] = 0x7F;
    expect_error(w.b, w.n, false, "content");
    build(&w, 'M', 0, false);
    w.b[w.n - 9] = 0xFF;
    expect_error(w.b, w.n, false, "content");
    /* Prefix without its NUL. */
    build(&w, 'M', 2, false);
    expect_error(w.b, 1 + 1 + 8 + 3, false, "unterminated prefix");
    /* Update/Delete with bad markers or tuples. */
    build(&w, 'U', 0, false);
    w.b[5] = 'X';
    expect_error(w.b, w.n, false, "new tuple marker 'N' at offset 5, got 0x58");
    build(&w, 'U', 1, false);
    w.b[5 + 1 + 2 + 1 + 4 + 3] = 'X'; /* the 'N' after the key tuple */
    expect_error(w.b, w.n, false, "marker 'N' at offset 16");
    build(&w, 'U', 1, false);
    w.b[5 + 1 + 2 + 1 + 4 + 3] = 'K'; /* two old tuples */
    expect_error(w.b, w.n, false, "marker");
    build(&w, 'D', 0, false);
    w.b[5] = 'N';
    expect_error(w.b, w.n, false, "'K' or 'O'");
    build(&w, 'D', 0, false);
    w.b[8] = 'z';
    expect_error(w.b, w.n, false, "column kind");
    build(&w, 'U', 0, false);
    w.b[6] = 0x10; /* 4096+ columns */
    expect_error(w.b, w.n, false, "more than 1664");
    build(&w, 'U', 2, false);
    w.b[6] = 0x10; /* in the old tuple */
    expect_error(w.b, w.n, false, "more than 1664");
    /* Stream Start's flag is 0 or 1, nothing else. */
    build(&w, 'S', 0, false);
    w.b[5] = 2;
    expect_error_opts(w.b, w.n, &all, "first segment flag at offset 5 is 0x02");
    /* Gid without its NUL. */
    build(&w, 'P', 0, false);
    expect_error(w.b, w.n - 1, false, "unterminated gid");
    build(&w, 'r', 0, false);
    w.b[w.n - 1] = 'x';
    expect_error(w.b, w.n, false, "unterminated gid");
    /* Origin name without its NUL. */
    build(&w, 'O', 0, false);
    w.b[w.n - 1] = '!';
    expect_error(w.b, w.n, false, "unterminated origin name");
    /* Stream Stop has no body. */
    build(&w, 'E', 0, false);
    w8(&w, 'E');
    expect_error(w.b, w.n, false, "1 trailing bytes at offset 1");
}

static void test_helpers(void **state)
{
    static const char all[] = "BCORYIUDTMSEcAbPKrp";

    (void)state;
    assert_string_equal(pgo_type_name('A'), "stream abort");
    assert_string_equal(pgo_type_name('M'), "logical decoding");
    assert_string_equal(pgo_type_name('p'), "stream prepare");
    for (const char *t = all; *t; t++)
        assert_non_null(pgo_type_name(*t));
    for (int c = -128; c < 128; c++)
        if (c == 0 || strchr(all, c) == NULL)
            assert_null(pgo_type_name((char)c));
    /* NULL options mean all false. */
    const fixture *f = fx("0066-O.bin");
    assert_int_equal(pgo_parse_opts(f->data, f->len, NULL, msg, err, sizeof err), 0);
    assert_int_equal(msg->kind, PGO_SKIPPED);
    assert_int_equal(pgo_parse_opts(f->data, f->len, NULL, NULL, err, sizeof err), -1);
    assert_string_equal(err, "no message to parse into");
}

/* Flip every byte of every fixture to a few values: no crash, no read out
 * of bounds (run under ASan), and a failure always explains itself. */
static void test_mutations(void **state)
{
    static const uint8_t vals[] = {0x00, 0xFF, 0x7F, 0x80, 'n', 't', 'b', 'u'};
    long ok = 0, bad = 0;

    (void)state;
    for (size_t i = 0; i < NFIXTURES; i++) {
        const fixture *f = &fixtures[i];
        uint8_t *b = dup_bytes(f->data, f->len);

        for (size_t pos = 0; pos < f->len; pos++) {
            for (size_t v = 0; v < sizeof vals; v++) {
                int rc;

                memcpy(b, f->data, f->len);
                b[pos] = vals[v];
                err[0] = '\0';
                pgo_options o = {.in_stream = (pos + v) & 1,
                                 .parallel_abort = (pos + v) & 2,
                                 .all_kinds = (pos + v) & 4};
                rc = pgo_parse_opts(b, f->len, &o, msg, err, sizeof err);
                if (rc == 0) {
                    ok++;
                } else {
                    assert_int_equal(rc, -1);
                    assert_true(err[0] != '\0');
                    bad++;
                }
            }
        }
        free(b);
    }
    assert_true(bad > 0);
    assert_true(ok > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_parse),
        cmocka_unit_test(test_fixtures_cover_every_type),
        cmocka_unit_test(test_fixture_begin_commit),
        cmocka_unit_test(test_fixture_relation),
        cmocka_unit_test(test_fixture_insert),
        cmocka_unit_test(test_fixture_nothing_uncommitted),
        cmocka_unit_test(test_fixture_messages),
        cmocka_unit_test(test_fixture_update_delete),
        cmocka_unit_test(test_fixture_truncate),
        cmocka_unit_test(test_fixture_origin),
        cmocka_unit_test(test_fixture_type),
        cmocka_unit_test(test_fixture_stream),
        cmocka_unit_test(test_fixture_two_phase),
        cmocka_unit_test(test_fixture_truncations),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_in_stream),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_corrupt_insert),
        cmocka_unit_test(test_corrupt_relation),
        cmocka_unit_test(test_max_columns),
        cmocka_unit_test(test_hand_built),
        cmocka_unit_test(test_stream_abort_layouts),
        cmocka_unit_test(test_hand_built_corrupt),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_mutations),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
