/*
 * End to end: 10,000 outbox rows over 500 aggregates, in transactions of 1,
 * 10 and 1,000 rows, interleaved with writes to tables outside the
 * publication, a transaction that stays open while 100 others commit, a
 * rolled-back transaction and a rolled-back savepoint.  The relay runs to
 * --end-lsn; a consumer then reads back exactly the committed rows, once
 * each, keyed by aggregate id, in per-aggregate commit order, with the
 * envelope README.md describes ("The record"), and the slot is confirmed past
 * the last commit.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/harness/harness.h"

#define NAGG 500
#define NTYPES 5
#define LONG_TXN_ROWS 100
#define LONG_TXN_BEGIN 100  /* the long transaction starts before plan entry 100 */
#define LONG_TXN_COMMIT 201 /* and commits as plan entry 201 */
#define SLOT "outbox_relay"
#define TRACEPARENT "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static const char *const agg_types[NTYPES] = {"order", "customer", "invoice", "shipment",
                                              "payment"};

enum txn_kind { TXN_ONE, TXN_TEN, TXN_THOUSAND, TXN_LONG, TXN_SAVEPOINT, TXN_ROLLBACK };

typedef struct txn {
    enum txn_kind kind;
    size_t first; /* first committed row number */
    size_t nrows; /* committed rows */
} txn;

typedef struct row {
    int agg;
    int aseq;   /* 1-based position of this row among its aggregate's rows, in commit order */
    size_t txn; /* index into the plan */
    int seen;
} row;

static hx_pg pg;
static hx_broker broker;
static char topic_tmpl[160];
static txn *plan;
static size_t nplan;
static row *rows;
static size_t nrows;

static uint32_t rng = 12345;

static uint32_t next_rand(void)
{
    rng = rng * 1103515245u + 12345u;
    return (rng >> 8) & 0xffffff;
}

static void row_id(size_t r, bool rolled_back, char *buf, size_t len)
{
    snprintf(buf, len, "00000000-0000-4000-%s-%012zx", rolled_back ? "9000" : "8000", r);
}

static const char *row_type(size_t r)
{
    static const char *const t[] = {"Created", "Updated", "Shipped"};
    return t[r % 3];
}

static void topic_for(const char *aggtype, char *buf, size_t len)
{
    snprintf(buf, len, "itest.%s.relay.%s", hx_run_id(), aggtype);
}

/* Build the transactions in commit order and give every row its values. */
static void make_plan(void)
{
    size_t n1 = 1000, n10 = 390, n1000 = 5, total;
    size_t k = 0, r = 0;
    int aseq[NAGG] = {0};

    total = n1 + n10 + n1000 + 1 /* long */ + 1 /* savepoint */ + 1 /* rollback */;
    plan = calloc(total, sizeof(*plan));
    assert_non_null(plan);
    for (size_t i = 0; i < n1; i++)
        plan[k++].kind = TXN_ONE;
    for (size_t i = 0; i < n10; i++)
        plan[k++].kind = TXN_TEN;
    for (size_t i = 0; i < n1000; i++)
        plan[k++].kind = TXN_THOUSAND;
    plan[k++].kind = TXN_SAVEPOINT;
    plan[k++].kind = TXN_ROLLBACK;
    /* shuffle, keeping the slot for the long transaction free */
    for (size_t i = k - 1; i > 0; i--) {
        size_t j = next_rand() % (i + 1);
        txn t = plan[i];
        plan[i] = plan[j];
        plan[j] = t;
    }
    memmove(&plan[LONG_TXN_COMMIT + 1], &plan[LONG_TXN_COMMIT],
            (k - LONG_TXN_COMMIT) * sizeof(*plan));
    plan[LONG_TXN_COMMIT].kind = TXN_LONG;
    nplan = k + 1;

    nrows = n1 + 10 * n10 + 1000 * n1000 + LONG_TXN_ROWS + 10;
    rows = calloc(nrows, sizeof(*rows));
    assert_non_null(rows);
    for (size_t t = 0; t < nplan; t++) {
        static const size_t sizes[] = {[TXN_ONE] = 1,         [TXN_TEN] = 10,
                                       [TXN_THOUSAND] = 1000, [TXN_LONG] = LONG_TXN_ROWS,
                                       [TXN_SAVEPOINT] = 10,  [TXN_ROLLBACK] = 0};
        plan[t].first = r;
        plan[t].nrows = sizes[plan[t].kind];
        for (size_t i = 0; i < plan[t].nrows; i++, r++) {
            rows[r].agg = (int)(next_rand() % NAGG);
            rows[r].aseq = ++aseq[rows[r].agg];
            rows[r].txn = t;
        }
    }
    assert_int_equal(r, nrows);
}

/* Append an INSERT of committed rows [from, to) to the SQL in f. */
static void insert_rows(FILE *f, size_t from, size_t to)
{
    fputs("INSERT INTO public.outbox (id, aggregatetype, aggregateid, type, payload, "
          "tracingspancontext) VALUES ",
          f);
    for (size_t r = from; r < to; r++) {
        char id[64];
        row_id(r, false, id, sizeof(id));
        fprintf(f,
                "%s('%s', '%s', 'a%03d', '%s', "
                "'{\"agg\": \"a%03d\", \"aseq\": %d, \"g\": %zu, \"text\": \"caf\u00e9 \\\" q\"}', "
                "%s)",
                r == from ? "" : ", ", id, agg_types[rows[r].agg % NTYPES], rows[r].agg,
                row_type(r), rows[r].agg, rows[r].aseq, r,
                r % 100 == 0 ? "'" TRACEPARENT "'" : "NULL");
    }
    fputs(";\n", f);
}

static void insert_rolled_back(FILE *f, size_t from, size_t n)
{
    fputs("INSERT INTO public.outbox (id, aggregatetype, aggregateid, type, payload) VALUES ", f);
    for (size_t i = 0; i < n; i++) {
        char id[64];
        row_id(from + i, true, id, sizeof(id));
        fprintf(f, "%s('%s', 'order', 'a000', 'RolledBack', '{\"rolledback\": true}')",
                i ? ", " : "", id);
    }
    fputs(";\n", f);
}

static void noise(FILE *f, size_t n)
{
    fprintf(f,
            "INSERT INTO public.orders (agg, note) VALUES (%zu, 'not published');\n"
            "UPDATE public.orders SET note = 'touched' WHERE id = (SELECT max(id) FROM "
            "public.orders);\n",
            n % NAGG);
}

static void run_sql(PGconn *conn, char *sql)
{
    int rc = hx_exec(conn, "%s", sql);
    free(sql);
    assert_int_equal(rc, 0);
}

/* Write the whole plan; the long transaction goes through a second session. */
static void write_plan(PGconn *conn, PGconn *conn2)
{
    size_t rb = 0;

    for (size_t t = 0; t < nplan; t++) {
        const txn *x = &plan[t];
        char *sql = NULL;
        size_t len = 0;
        FILE *f;

        if (t == LONG_TXN_BEGIN) {
            const txn *l = &plan[LONG_TXN_COMMIT];
            f = open_memstream(&sql, &len);
            fputs("BEGIN;\n", f);
            for (size_t i = 0; i < l->nrows; i += 25) {
                insert_rows(f, l->first + i, l->first + i + 25);
                noise(f, i);
            }
            fclose(f);
            run_sql(conn2, sql);
            sql = NULL;
        }
        f = open_memstream(&sql, &len);
        switch (x->kind) {
        case TXN_ONE:
            insert_rows(f, x->first, x->first + 1);
            break;
        case TXN_TEN:
            fputs("BEGIN;\n", f);
            insert_rows(f, x->first, x->first + 4);
            noise(f, t);
            insert_rows(f, x->first + 4, x->first + 10);
            /* rows may be deleted at once: the event was captured from the WAL */
            if (t % 10 == 0)
                fprintf(f, "DELETE FROM public.outbox WHERE aggregateid = 'a%03d';\n",
                        rows[x->first].agg);
            fputs("COMMIT;\n", f);
            break;
        case TXN_THOUSAND:
            fputs("BEGIN;\n", f);
            for (size_t i = 0; i < 1000; i += 100) {
                insert_rows(f, x->first + i, x->first + i + 100);
                noise(f, i);
            }
            fputs("COMMIT;\n", f);
            break;
        case TXN_LONG:
            fputs("SELECT 1;\n", f);
            break;
        case TXN_SAVEPOINT:
            fputs("BEGIN;\n", f);
            insert_rows(f, x->first, x->first + 5);
            fputs("SAVEPOINT sp;\n", f);
            insert_rolled_back(f, rb, 5);
            rb += 5;
            noise(f, t);
            fputs("ROLLBACK TO SAVEPOINT sp;\n", f);
            insert_rows(f, x->first + 5, x->first + 10);
            fputs("COMMIT;\n", f);
            break;
        case TXN_ROLLBACK:
            fputs("BEGIN;\n", f);
            insert_rolled_back(f, rb, 50);
            rb += 50;
            noise(f, t);
            fputs("ROLLBACK;\n", f);
            break;
        }
        if (t % 7 == 3)
            fprintf(f, "INSERT INTO public.audit (x) VALUES (%zu);\n", t);
        fclose(f);
        run_sql(conn, sql);
        if (x->kind == TXN_LONG)
            assert_int_equal(hx_exec(conn2, "COMMIT"), 0);
    }
}

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0)
        return -1;
    if (hx_pg_start(&pg, "relay", NULL, true) != 0)
        return -1;
    if (hx_broker_start(&broker, 3) != 0)
        return -1;
    snprintf(topic_tmpl, sizeof(topic_tmpl), "itest.%s.relay.{aggregate_type}", hx_run_id());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hx_broker_stop(&broker);
    hx_pg_stop(&pg);
    hx_cleanup();
    free(plan);
    free(rows);
    return 0;
}

/* Run the relay to end_lsn and expect a clean exit within timeout_ms. */
static void relay_to(const char *tag, uint64_t end_lsn, int timeout_ms)
{
    char lsn[32];
    hx_proc p;
    const char *args[] = {"run",
                          "-d",
                          pg.conninfo,
                          "-b",
                          broker.bootstraps,
                          "--create-slot",
                          "--topic",
                          topic_tmpl,
                          "--end-lsn",
                          hx_lsn_format(end_lsn, lsn, sizeof(lsn)),
                          "--status-interval",
                          "1",
                          NULL};
    int rc;

    assert_int_equal(hx_relay_start(&p, tag, args), 0);
    rc = hx_proc_wait(&p, timeout_ms);
    if (rc != 0)
        hx_proc_dump(&p, "expected exit 0");
    assert_int_equal(rc, 0);
}

static const char *jstr(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void expect_str(const char *what, const char *got, const char *want)
{
    if (!got)
        fail_msg("%s is missing (expected \"%s\")", what, want);
    if (strcmp(got, want) != 0)
        fail_msg("%s is \"%s\", expected \"%s\"", what, got, want);
}

typedef struct seen_event {
    size_t r;
    uint64_t commit_lsn;
    uint64_t lsn;
    json_int_t seq;
    json_int_t xid;
    char commit_time[40];
    const hx_record *rec;
} seen_event;

static int by_position(const void *a, const void *b)
{
    const seen_event *x = a, *y = b;
    if (x->commit_lsn != y->commit_lsn)
        return x->commit_lsn < y->commit_lsn ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_key_offset(const void *a, const void *b)
{
    const seen_event *x = a, *y = b;
    int c = strcmp(x->rec->topic, y->rec->topic);
    if (c)
        return c;
    c = strcmp(x->rec->key ? x->rec->key : "", y->rec->key ? y->rec->key : "");
    if (c)
        return c;
    if (x->rec->partition != y->rec->partition)
        return x->rec->partition < y->rec->partition ? -1 : 1;
    return x->rec->offset < y->rec->offset ? -1 : x->rec->offset > y->rec->offset;
}

/* Check one record against the row it claims to be; fills ev. */
static void check_record(const hx_record *rec, seen_event *ev)
{
    json_error_t jerr;
    json_t *v, *src, *payload;
    const char *id, *s;
    unsigned long long rn = 0;
    char want[160], idbuf[64];
    const hx_header *h;
    size_t r;

    v = json_loadb(rec->value, rec->value_len, 0, &jerr);
    if (!v)
        fail_msg("record value is not JSON (%s): %.200s", jerr.text, rec->value);
    id = jstr(v, "id");
    assert_non_null(id);
    if (strncmp(id, "00000000-0000-4000-9000-", 24) == 0)
        fail_msg("a rolled-back row was published: %s", id);
    if (sscanf(id, "00000000-0000-4000-8000-%12llx", &rn) != 1 || rn >= nrows)
        fail_msg("unknown event id \"%s\"", id);
    r = (size_t)rn;
    row_id(r, false, idbuf, sizeof(idbuf));
    assert_string_equal(id, idbuf);

    ev->r = r;
    ev->rec = rec;
    snprintf(want, sizeof(want), "a%03d", rows[r].agg);
    assert_non_null(rec->key);
    expect_str("key", rec->key, want);
    expect_str("v.aggregate_id", jstr(v, "aggregate_id"), want);
    expect_str("v.aggregate_type", jstr(v, "aggregate_type"), agg_types[rows[r].agg % NTYPES]);
    expect_str("v.type", jstr(v, "type"), row_type(r));
    topic_for(agg_types[rows[r].agg % NTYPES], want, sizeof(want));
    expect_str("topic", rec->topic, want);
    s = jstr(v, "occurred_at");
    assert_non_null(s);
    assert_true(strlen(s) >= 20);

    /* payload is JSON, never a quoted string */
    payload = json_object_get(v, "payload");
    assert_true(json_is_object(payload));
    assert_int_equal(json_integer_value(json_object_get(payload, "g")), (json_int_t)r);
    assert_int_equal(json_integer_value(json_object_get(payload, "aseq")), rows[r].aseq);
    expect_str("payload.text", jstr(payload, "text"), "caf\u00e9 \" q");

    src = json_object_get(v, "source");
    assert_true(json_is_object(src));
    assert_int_equal(hx_lsn_parse(jstr(src, "lsn"), &ev->lsn), 0);
    assert_int_equal(hx_lsn_parse(jstr(src, "commit_lsn"), &ev->commit_lsn), 0);
    assert_true(ev->lsn < ev->commit_lsn);
    assert_true(json_is_integer(json_object_get(src, "seq")));
    ev->seq = json_integer_value(json_object_get(src, "seq"));
    assert_true(json_is_integer(json_object_get(src, "xid")));
    ev->xid = json_integer_value(json_object_get(src, "xid"));
    s = jstr(src, "commit_time");
    assert_non_null(s);
    snprintf(ev->commit_time, sizeof(ev->commit_time), "%s", s);
    expect_str("src.db", jstr(src, "db"), "postgres");
    expect_str("src.table", jstr(src, "table"), "public.outbox");
    expect_str("src.slot", jstr(src, "slot"), SLOT);
    if (r % 100 == 0) {
        json_t *trace = json_object_get(v, "trace");
        assert_true(json_is_object(trace));
        expect_str("trace.traceparent", jstr(trace, "traceparent"), TRACEPARENT);
        h = hx_record_header(rec, "traceparent");
        assert_non_null(h);
        expect_str(h->name, h->value, TRACEPARENT);
    }

    h = hx_record_header(rec, "id");
    assert_non_null(h);
    expect_str(h->name, h->value, idbuf);
    h = hx_record_header(rec, "type");
    assert_non_null(h);
    expect_str(h->name, h->value, row_type(r));
    h = hx_record_header(rec, "aggregate_type");
    assert_non_null(h);
    expect_str(h->name, h->value, agg_types[rows[r].agg % NTYPES]);
    h = hx_record_header(rec, "content-type");
    assert_non_null(h);
    assert_non_null(h->value);
    assert_true(h->len > 0);
    h = hx_record_header(rec, "lsn");
    assert_non_null(h);
    {
        uint64_t hl;
        assert_int_equal(hx_lsn_parse(h->value, &hl), 0);
    }
    json_decref(v);
}

static void test_relay_end_to_end(void **state)
{
    PGconn *conn, *conn2;
    uint64_t start_lsn, end_lsn, confirmed = 0;
    char buf[128];
    char topics_buf[NTYPES][160];
    const char *topics[NTYPES];
    hx_records recs = {0};
    seen_event *ev;
    long got;

    (void)state;
    make_plan();
    conn = hx_connect(pg.conninfo);
    conn2 = hx_connect(pg.conninfo);
    assert_non_null(conn);
    assert_non_null(conn2);
    assert_int_equal(hx_exec(conn, "CREATE TABLE public.orders (id bigserial PRIMARY KEY, agg "
                                   "int, note text);\n"
                                   "CREATE TABLE public.audit (x int)"),
                     0);

    /* First run: create slot and publication, nothing to stream yet. */
    assert_int_equal(hx_current_lsn(conn, false, &start_lsn), 0);
    relay_to("relay-create", start_lsn, 60000);
    assert_int_equal(hx_slot_confirmed(conn, SLOT, &confirmed), 1);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf),
                               "SELECT plugin FROM pg_replication_slots WHERE slot_name = '%s'",
                               SLOT),
                     1);
    assert_string_equal(buf, "pgoutput");

    write_plan(conn, conn2);
    /* insert, not write, position: with synchronous_commit = off the write one lags */
    assert_int_equal(hx_current_lsn(conn, true, &end_lsn), 0);
    assert_int_equal(hx_query1(conn, buf, sizeof(buf), "SELECT count(*) FROM public.orders"), 1);

    /* The slot does not move on its own while nothing consumes it. */
    assert_int_equal(hx_slot_confirmed(conn, SLOT, &confirmed), 1);
    assert_true(confirmed < end_lsn);

    relay_to("relay-run", end_lsn, 300000);
    assert_int_equal(hx_slot_confirmed(conn, SLOT, &confirmed), 1);
    if (confirmed < end_lsn)
        fail_msg("confirmed_flush_lsn %s is before the last commit (%s)",
                 hx_lsn_format(confirmed, buf, 32), hx_lsn_format(end_lsn, buf + 64, 32));

    for (int i = 0; i < NTYPES; i++) {
        topic_for(agg_types[i], topics_buf[i], sizeof(topics_buf[i]));
        topics[i] = topics_buf[i];
    }
    got = hx_consume(broker.bootstraps, topics, NTYPES, nrows, 120000, &recs);
    assert_true(got >= 0);
    if ((size_t)got != nrows)
        fprintf(stderr, "read %ld records, expected %zu\n", got, nrows);

    ev = calloc(recs.n ? recs.n : 1, sizeof(*ev));
    assert_non_null(ev);
    for (size_t i = 0; i < recs.n; i++) {
        check_record(&recs.v[i], &ev[i]);
        rows[ev[i].r].seen++;
    }
    for (size_t r = 0; r < nrows; r++)
        if (rows[r].seen != 1)
            fail_msg("row %zu (aggregate a%03d, transaction %zu) was read %d times", r, rows[r].agg,
                     rows[r].txn, rows[r].seen);
    assert_int_equal(recs.n, nrows);

    /*
     * (commit_lsn, seq) is a total order that matches commit order and,
     * inside a transaction, statement order; one transaction shares one
     * commit_lsn, xid and commit_time, and change positions grow with seq.
     */
    qsort(ev, recs.n, sizeof(*ev), by_position);
    for (size_t i = 0; i < recs.n; i++) {
        if (ev[i].r != i)
            fail_msg("event at (commit_lsn, seq) rank %zu is row %zu", i, ev[i].r);
        if (i == 0)
            continue;
        if (rows[i].txn == rows[i - 1].txn) {
            assert_true(ev[i].commit_lsn == ev[i - 1].commit_lsn);
            assert_true(ev[i].seq > ev[i - 1].seq);
            assert_true(ev[i].lsn > ev[i - 1].lsn);
            assert_int_equal(ev[i].xid, ev[i - 1].xid);
            assert_string_equal(ev[i].commit_time, ev[i - 1].commit_time);
        } else {
            assert_true(ev[i].commit_lsn > ev[i - 1].commit_lsn);
        }
    }
    /* the transaction left open while others committed still comes whole, in commit order */
    {
        const txn *l = &plan[LONG_TXN_COMMIT];
        assert_true(ev[l->first].lsn < ev[l->first - 1].commit_lsn);
    }

    /* Per aggregate: one partition, and offsets follow commit order. */
    qsort(ev, recs.n, sizeof(*ev), by_key_offset);
    for (size_t i = 1; i < recs.n; i++) {
        if (strcmp(ev[i].rec->topic, ev[i - 1].rec->topic) != 0 ||
            strcmp(ev[i].rec->key, ev[i - 1].rec->key) != 0)
            continue;
        assert_int_equal(ev[i].rec->partition, ev[i - 1].rec->partition);
        if (rows[ev[i].r].aseq != rows[ev[i - 1].r].aseq + 1)
            fail_msg("aggregate %s: sequence %d follows %d", ev[i].rec->key, rows[ev[i].r].aseq,
                     rows[ev[i - 1].r].aseq);
    }

    free(ev);
    hx_records_free(&recs);
    PQfinish(conn2);
    PQfinish(conn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay_end_to_end),
    };
    return cmocka_run_group_tests_name("relay", tests, setup, teardown);
}
