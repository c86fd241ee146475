/*
 * backfill against PostgreSQL 15 and the broker.
 *
 * backfill_main runs in-process in a forked child (as itest_replay does),
 * one dry run goes through the relay binary to cover main.c's dispatch.
 *
 * - 10,000 retained rows of several aggregates: every row arrives exactly
 *   once, with the table's id, key and payload, in primary-key order per
 *   key, source.backfill true and no WAL position; each record equals the
 *   one the relay streamed for that row (topic, partition, key, headers,
 *   value) except the source and the lsn/backfill headers; the envelopes
 *   validate against schema/envelope.schema.json
 * - --where and --since publish exactly the rows the same SQL selects
 * - --dry-run prints the right count per topic and publishes nothing
 * - a row that cannot become an event reaches the dead-letter topic
 * - refusals exit 2 with a message naming the fix, publishing nothing: bad
 *   --since, missing table, no primary key, --since without a timestamp
 *   column, a required column not mapped, --where that is not valid SQL, a
 *   table the role may not read
 */
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cdc/backfill.h"
#include "tests/harness/harness.h"

#define CMD_TIMEOUT_S 180
#define NROWS 10000

static hx_pg pg;
static hx_broker broker;
static PGconn *conn;

static int setup(void **state)
{
    (void)state;
    if (hx_init() != 0)
        return -1;
    if (hx_pg_start(&pg, "backfill", NULL, true) != 0)
        return -1;
    if (hx_broker_start(&broker, 3) != 0)
        return -1;
    conn = hx_connect(pg.conninfo);
    return conn ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(conn);
    hx_broker_stop(&broker);
    hx_pg_stop(&pg);
    hx_cleanup();
    return 0;
}

typedef struct cmd_result {
    int rc;
    char *out;
    char *err;
} cmd_result;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)
        buf[0] = '\0';
    fclose(f);
    return buf;
}

/* Run backfill_main(argv) in a child with stdout and stderr captured. */
static cmd_result run_backfill(const char *tag, const char *const *args)
{
    static int seq;
    char outp[700], errp[700];
    char *argv[64];
    int argc = 0, status = 0;
    cmd_result r = {.rc = -1};
    pid_t pid;

    snprintf(outp, sizeof(outp), "%s/%s-%d.out", hx_tmpdir(), tag, seq);
    snprintf(errp, sizeof(errp), "%s/%s-%d.err", hx_tmpdir(), tag, seq++);
    argv[argc++] = "backfill";
    for (; *args && argc < 63; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0)
            _exit(99);
        dup2(o, 1);
        dup2(e, 2);
        alarm(CMD_TIMEOUT_S);
        int rc = backfill_main(argc, argv);
        fflush(NULL);
        _exit(rc);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp(outp);
    r.err = slurp(errp);
    return r;
}

#define BACKFILL(tag, ...) run_backfill(tag, (const char *const[]){__VA_ARGS__, NULL})

static void cmd_free(cmd_result *r)
{
    free(r->out);
    free(r->err);
}

/* Expect exit code want and words in stderr. */
static void expect(cmd_result *r, int want, const char *words)
{
    if (r->rc != want || (words && !strstr(r->err, words))) {
        fprintf(stderr, "expected exit %d mentioning \"%s\", got %d\nstdout: %s\nstderr: %s\n",
                want, words ? words : "", r->rc, r->out, r->err);
        fail();
    }
}

static void topic_name(char *buf, size_t len, const char *what, const char *suffix)
{
    snprintf(buf, len, "itest.%s.%s.%s", hx_run_id(), what, suffix);
}

static json_t *value_json(const hx_record *rec)
{
    json_error_t je;
    json_t *v = json_loadb(rec->value, rec->value_len, 0, &je);
    if (!v)
        fprintf(stderr, "not JSON (%s): %.*s\n", je.text, (int)rec->value_len, rec->value);
    assert_non_null(v);
    return v;
}

static const char *id_of(const hx_record *rec)
{
    const hx_header *h = hx_record_header(rec, "id");
    assert_non_null(h);
    assert_non_null(h->value);
    return h->value;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(id_of(a), id_of(b));
}

static int by_position(const void *a, const void *b)
{
    const hx_record *x = a, *y = b;
    int t = strcmp(x->topic, y->topic);
    if (t)
        return t;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The ids the table holds for condition cond, in primary-key order. */
static PGresult *table_rows(const char *cond)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT id::text, aggregatetype, aggregateid, type, payload::text FROM outbox "
             "WHERE %s ORDER BY id",
             cond);
    PGresult *res = PQexec(conn, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    return res;
}

/*
 * recs (sorted by id) are exactly the rows of res (in id order): same id,
 * key, topic, type and payload, each once; every envelope is a backfilled
 * one.
 */
static void assert_matches_table(hx_records *recs, PGresult *res, const char *what)
{
    int n = PQntuples(res);
    char topic[200];

    assert_int_equal(recs->n, (size_t)n);
    qsort(recs->v, recs->n, sizeof(*recs->v), by_id);
    for (int i = 0; i < n; i++) {
        const hx_record *rec = &recs->v[i];
        json_t *v = value_json(rec), *src = json_object_get(v, "source");
        json_error_t je;
        json_t *payload = PQgetisnull(res, i, 4)
                              ? json_null()
                              : json_loads(PQgetvalue(res, i, 4), JSON_DECODE_ANY, &je);

        assert_string_equal(id_of(rec), PQgetvalue(res, i, 0));
        assert_string_equal(rec->key, PQgetvalue(res, i, 2));
        topic_name(topic, sizeof(topic), what, PQgetvalue(res, i, 1));
        assert_string_equal(rec->topic, topic);
        assert_string_equal(json_string_value(json_object_get(v, "type")), PQgetvalue(res, i, 3));
        assert_non_null(payload);
        assert_true(json_equal(json_object_get(v, "payload"), payload));
        assert_true(json_is_true(json_object_get(src, "backfill")));
        assert_null(json_object_get(src, "lsn"));
        assert_null(json_object_get(src, "commit_lsn"));
        assert_string_equal(json_string_value(json_object_get(src, "table")), "public.outbox");
        assert_string_equal(json_string_value(json_object_get(src, "db")), "postgres");
        assert_null(hx_record_header(rec, "lsn"));
        const hx_header *bf = hx_record_header(rec, "backfill");
        assert_non_null(bf);
        assert_string_equal(bf->value, "true");
        json_decref(payload);
        json_decref(v);
    }
}

/* Within each key, the records come in primary-key (id) order. */
static void assert_pk_order_per_key(hx_records *recs)
{
    struct {
        const char *topic;
        const char *key;
        const char *last_id;
        int32_t partition;
    } seen[256];
    size_t nseen = 0;

    qsort(recs->v, recs->n, sizeof(*recs->v), by_position);
    for (size_t i = 0; i < recs->n; i++) {
        const hx_record *rec = &recs->v[i];
        size_t k;
        for (k = 0; k < nseen; k++)
            if (strcmp(seen[k].key, rec->key) == 0 && strcmp(seen[k].topic, rec->topic) == 0)
                break;
        if (k == nseen) {
            assert_true(nseen < sizeof(seen) / sizeof(seen[0]));
            seen[nseen].topic = rec->topic;
            seen[nseen].key = rec->key;
            seen[nseen].partition = rec->partition;
            seen[nseen].last_id = id_of(rec);
            nseen++;
            continue;
        }
        assert_int_equal(seen[k].partition, rec->partition); /* one key, one partition */
        if (strcmp(seen[k].last_id, id_of(rec)) >= 0)
            fail_msg("key %s: id %s after %s", rec->key, id_of(rec), seen[k].last_id);
        seen[k].last_id = id_of(rec);
    }
}

static void validate_envelopes(const hx_records *recs)
{
    char path[700], cmd[2200];
    const char *root = getenv("OBX_ROOT") ? getenv("OBX_ROOT") : ".";
    int invalid = -1;
    FILE *f, *p;

    snprintf(path, sizeof(path), "%s/backfill-envelopes.jsonl", hx_tmpdir());
    f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < recs->n; i++) {
        assert_null(memchr(recs->v[i].value, '\n', recs->v[i].value_len));
        fwrite(recs->v[i].value, 1, recs->v[i].value_len, f);
        fputc('\n', f);
    }
    assert_int_equal(fclose(f), 0);
    snprintf(cmd, sizeof(cmd),
             "python3 '%s/tests/fixtures/formats/validate_envelopes.py' "
             "'%s/schema/envelope.schema.json' '%s'",
             root, root, path);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "invalid %d", &invalid), 1);
    assert_int_equal(pclose(p), 0);
    assert_int_equal(invalid, 0);
}

/* Records of both aggregate topics under prefix what. */
static void consume(const char *what, size_t want, int timeout_ms, hx_records *out)
{
    char t1[200], t2[200], t3[200];
    topic_name(t1, sizeof(t1), what, "order");
    topic_name(t2, sizeof(t2), what, "customer");
    topic_name(t3, sizeof(t3), what, "invoice");
    const char *topics[] = {t1, t2, t3};
    long n = hx_consume(broker.bootstraps, topics, 3, want, timeout_ms, out);
    assert_true(n >= 0 || want == 0);
}

/* Records of the topics the rows of res go to (res as table_rows gives). */
static void consume_rows(const char *what, PGresult *res, hx_records *out)
{
    char names[3][200];
    const char *topics[3];
    size_t n = 0;

    for (int i = 0; i < PQntuples(res); i++) {
        char t[200];
        size_t k;
        topic_name(t, sizeof(t), what, PQgetvalue(res, i, 1));
        for (k = 0; k < n && strcmp(names[k], t) != 0; k++)
            ;
        if (k == n) {
            assert_true(n < 3);
            strcpy(names[n], t);
            topics[n] = names[n];
            n++;
        }
    }
    assert_true(hx_consume(broker.bootstraps, topics, n, (size_t)PQntuples(res), 30000, out) >= 0);
}

static void tmpl(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "itest.%s.%s.{aggregate_type}", hx_run_id(), what);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_refusals(void **state)
{
    (void)state;
    const char *ci = pg.conninfo;
    char t[200];
    cmd_result r;

    tmpl(t, sizeof(t), "refused");
    assert_int_equal(hx_exec(conn,
                             "CREATE TABLE public.nopk (id uuid, aggregatetype text, aggregateid "
                             "text, type text, payload jsonb);"
                             "CREATE TABLE public.nots (id uuid PRIMARY KEY, aggregatetype text, "
                             "aggregateid text, type text, payload jsonb);"
                             "INSERT INTO public.nopk VALUES (gen_random_uuid(), 'order', '1', "
                             "'E', '{}');"
                             "INSERT INTO public.nots VALUES (gen_random_uuid(), 'order', '1', "
                             "'E', '{}');"),
                     0);

    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--since", "last tuesday");
    expect(&r, 2, "malformed --since");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--since", "2026-01-01 00:00:00");
    expect(&r, 2, "time zone");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--batch-size", "0");
    expect(&r, 2, "--batch-size");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--end-lsn", "0/1");
    expect(&r, 2, "does not apply to backfill");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "--topic", t);
    expect(&r, 2, "--brokers");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--topic", t, "-t", "public.nosuch");
    expect(&r, 2, "\"public.nosuch\" does not exist");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--topic", t, "-t", "public.nopk");
    expect(&r, 2, "has no primary key");
    cmd_free(&r);
    /* the second table is wrong: nothing of the first is published either */
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--topic", t, "-t", "public.nots",
                 "-t", "public.nopk");
    expect(&r, 2, "has no primary key");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--topic", t, "-t", "public.nots",
                 "--since", "2026-01-01T00:00:00Z");
    expect(&r, 2, "--column public.nots:timestamp=COLUMN");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--topic", t, "-t", "public.nots",
                 "--column", "type=kind");
    expect(&r, 2, "kind");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--topic", t, "-t", "public.nots",
                 "--where", "no_such_column = 1");
    expect(&r, 2, "--where is not valid");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", ci, "-b", broker.bootstraps, "--topic", t, "-t", "public.nots",
                 "--where", "aggregatetype = 'order'; DELETE FROM public.nots");
    expect(&r, 2, "--where is not valid");
    cmd_free(&r);

    /* the least-privilege role reads the outbox, not other tables */
    char relay_ci[200];
    snprintf(relay_ci, sizeof(relay_ci), "host=127.0.0.1 port=%d user=outbox_relay dbname=postgres",
             pg.port);
    r = BACKFILL("refuse", "-d", relay_ci, "-b", broker.bootstraps, "--topic", t, "-t",
                 "public.nots");
    expect(&r, 2, "GRANT SELECT ON public.nots");
    cmd_free(&r);
    r = BACKFILL("refuse", "-d", relay_ci, "--topic", t, "--dry-run");
    expect(&r, 0, "backfill dry run done");
    cmd_free(&r);

    /* nothing was published by any of them */
    char n[16];
    assert_int_equal(hx_query1(conn, n, sizeof(n), "SELECT count(*) FROM public.nots"), 1);
    assert_string_equal(n, "1");
    hx_records none = {0};
    char topic[200];
    topic_name(topic, sizeof(topic), "refused", "order");
    const char *topics[] = {topic};
    assert_true(hx_consume(broker.bootstraps, topics, 1, 1, 3000, &none) <= 0);
    assert_int_equal(none.n, 0);
    hx_records_free(&none);
    assert_int_equal(hx_exec(conn, "DROP TABLE public.nopk; DROP TABLE public.nots"), 0);
}

/*
 * The 10,000 rows: three aggregate types, 60 aggregate ids, one second
 * apart from 2026-01-01, every 10th with a traceparent, every 13th with a
 * null payload.  The relay streams them first, to compare records.
 */
static void test_backfill_matches_table_and_stream(void **state)
{
    (void)state;
    const char *ci = pg.conninfo;
    char orig_t[200], bf_t[200];
    cmd_result r;

    tmpl(orig_t, sizeof(orig_t), "orig");
    tmpl(bf_t, sizeof(bf_t), "bf");
    assert_int_equal(hx_exec(conn, "SELECT pg_create_logical_replication_slot('bf_slot', "
                                   "'pgoutput')"),
                     0);
    assert_int_equal(
        hx_exec(conn,
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, timestamp, "
                "tracingspancontext) SELECT (ARRAY['order','customer','invoice'])[g %% 3 + 1], "
                "(g %% 60)::text, 'Evt' || (g %% 4), CASE WHEN g %% 13 = 0 THEN NULL ELSE "
                "jsonb_build_object('n', g, 'amount', 42.50, 'txt', 'r\u00e9sum\u00e9 ' "
                "|| g) END, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', "
                "CASE WHEN g %% 10 = 0 THEN '00-0af7651916cd43dd8448eb211c80319c-' || "
                "lpad(to_hex(g + 1), 16, '0') || '-01' END FROM generate_series(1, %d) g",
                NROWS),
        0);

    const char *extra[] = {"--topic", orig_t, NULL};
    assert_int_equal(hx_relay_run_to_end(conn, ci, broker.bootstraps, "orig", "bf_slot", extra), 0);
    hx_records orig = {0}, bf = {0};
    consume("orig", NROWS, 60000, &orig);
    assert_int_equal(orig.n, NROWS);

    r = BACKFILL("bf", "-d", ci, "-b", broker.bootstraps, "--topic", bf_t, "--batch-size", "777");
    expect(&r, 0, "backfill done");
    /* the counts per topic on stdout */
    char line[300], topic[200];
    topic_name(topic, sizeof(topic), "bf", "order");
    snprintf(line, sizeof(line), "%s\t%d\n", topic, NROWS / 3);
    assert_non_null(strstr(r.out, line));
    cmd_free(&r);
    consume("bf", NROWS, 60000, &bf);

    PGresult *res = table_rows("true");
    assert_int_equal(PQntuples(res), NROWS);
    assert_matches_table(&bf, res, "bf");
    PQclear(res);
    validate_envelopes(&bf);

    /* the stream's record for each row: same partition, key, headers (the
     * stream's lsn header aside) and value (the source aside) */
    qsort(orig.v, orig.n, sizeof(*orig.v), by_id);
    for (size_t i = 0; i < bf.n; i++) {
        const hx_record *a = &orig.v[i], *b = &bf.v[i];
        assert_string_equal(id_of(a), id_of(b));
        assert_string_equal(a->key, b->key);
        assert_int_equal(a->partition, b->partition);
        assert_string_equal(strrchr(a->topic, '.'), strrchr(b->topic, '.'));
        assert_int_equal(b->nheaders, a->nheaders); /* lsn out, backfill in */
        for (size_t h = 0; h < a->nheaders; h++) {
            if (strcmp(a->headers[h].name, "lsn") == 0)
                continue;
            const hx_header *bh = hx_record_header(b, a->headers[h].name);
            assert_non_null(bh);
            assert_int_equal(bh->len, a->headers[h].len);
            assert_memory_equal(bh->value, a->headers[h].value, a->headers[h].len);
        }
        json_t *va = value_json(a), *vb = value_json(b);
        json_object_del(va, "source");
        json_object_del(vb, "source");
        assert_true(json_equal(va, vb));
        json_decref(va);
        json_decref(vb);
    }
    assert_pk_order_per_key(&bf);
    hx_records_free(&orig);
    hx_records_free(&bf);
    assert_int_equal(hx_exec(conn, "SELECT pg_drop_replication_slot('bf_slot')"), 0);
}

/*
 * SIGHUP (and SIGPIPE), several times, while a backfill publishes: it logs
 * and carries on to a clean end (exit 0), every row exactly once.  Without
 * a handler the first SIGHUP would have ended it half-way.
 */
static void test_sighup_carries_on(void **state)
{
    (void)state;
    char t[200];
    hx_records recs = {0};
    hx_proc p;
    int sent = 0, rc;
    const char *args[] = {"backfill",
                          "-d",
                          pg.conninfo,
                          "-b",
                          broker.bootstraps,
                          "--topic",
                          t,
                          "--batch-size",
                          "100",
                          "-X",
                          "batch.num.messages=10",
                          "-X",
                          "max.in.flight.requests.per.connection=1",
                          NULL};

    tmpl(t, sizeof(t), "hup");
    /* slow acknowledgements: the run lasts a few seconds */
    if (!broker.external)
        assert_int_equal(hx_broker_cmd(&broker, "rtt all 5"), 0);
    assert_int_equal(hx_relay_start(&p, "hup", args), 0);
    for (int i = 0; i < 40 && hx_proc_running(&p); i++) {
        hx_sleep_ms(100);
        if (hx_proc_running(&p) && hx_proc_signal(&p, i % 4 == 3 ? SIGPIPE : SIGHUP) == 0)
            sent++;
    }
    rc = hx_proc_wait(&p, CMD_TIMEOUT_S * 1000);
    if (!broker.external)
        assert_int_equal(hx_broker_cmd(&broker, "rtt all 0"), 0);
    if (rc != 0)
        hx_proc_dump(&p, "backfill with SIGHUP");
    assert_int_equal(rc, 0);
    /* a run too short to be signalled proves nothing */
    if (sent < 3)
        fail_msg("only %d signals landed while the backfill ran", sent);
    consume("hup", NROWS, 60000, &recs);
    PGresult *res = table_rows("true");
    assert_matches_table(&recs, res, "hup");
    PQclear(res);
    hx_records_free(&recs);
}

static void test_where_and_since(void **state)
{
    (void)state;
    const char *ci = pg.conninfo;
    char t[200];
    hx_records recs = {0};
    cmd_result r;

    /* --where alone */
    tmpl(t, sizeof(t), "where");
    r = BACKFILL("where", "-d", ci, "-b", broker.bootstraps, "--topic", t, "--where",
                 "aggregateid IN ('7', '8') -- a trailing comment is harmless");
    expect(&r, 0, NULL);
    cmd_free(&r);
    PGresult *res = table_rows("aggregateid IN ('7', '8')");
    assert_true(PQntuples(res) > 100);
    consume_rows("where", res, &recs);
    assert_matches_table(&recs, res, "where");
    PQclear(res);
    hx_records_free(&recs);

    /* --since alone, in another zone: on the timestamp column, inclusive */
    tmpl(t, sizeof(t), "since");
    r = BACKFILL("since", "-d", ci, "-b", broker.bootstraps, "--topic", t, "--since",
                 "2026-01-01 02:00:00+01");
    expect(&r, 0, NULL);
    cmd_free(&r);
    res = table_rows("timestamp >= '2026-01-01 01:00:00+00'");
    assert_int_equal(PQntuples(res), NROWS - 3600 + 1); /* from g = 3600 on */
    consume_rows("since", res, &recs);
    assert_matches_table(&recs, res, "since");
    PQclear(res);
    hx_records_free(&recs);

    /* both, and a mapped timestamp column */
    tmpl(t, sizeof(t), "both");
    assert_int_equal(hx_exec(conn, "ALTER TABLE outbox RENAME COLUMN timestamp TO created_at"), 0);
    r = BACKFILL("both", "-d", ci, "-b", broker.bootstraps, "--topic", t, "--since",
                 "2026-01-01T02:00:00Z", "--where", "aggregatetype = 'customer'", "--column",
                 "timestamp=created_at");
    expect(&r, 0, NULL);
    cmd_free(&r);
    res = table_rows("created_at >= '2026-01-01 02:00:00+00' AND aggregatetype = 'customer'");
    assert_true(PQntuples(res) > 100);
    consume_rows("both", res, &recs);
    assert_matches_table(&recs, res, "both");
    PQclear(res);
    hx_records_free(&recs);
    assert_int_equal(hx_exec(conn, "ALTER TABLE outbox RENAME COLUMN created_at TO timestamp"), 0);
}

static void test_dry_run(void **state)
{
    (void)state;
    char t[200], line[300], topic[200], n[16];
    hx_records none = {0};
    cmd_result r;

    tmpl(t, sizeof(t), "dry");
    r = BACKFILL("dry", "-d", pg.conninfo, "--topic", t, "--dry-run", "--where",
                 "aggregatetype <> 'invoice'");
    expect(&r, 0, "nothing published");
    static const char *const types[] = {"order", "customer"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(hx_query1(conn, n, sizeof(n),
                                   "SELECT count(*) FROM outbox WHERE aggregatetype = '%s'",
                                   types[i]),
                         1);
        topic_name(topic, sizeof(topic), "dry", types[i]);
        snprintf(line, sizeof(line), "%s\t%s\n", topic, n);
        if (!strstr(r.out, line))
            fail_msg("dry run printed:\n%s\nwanted %s", r.out, line);
    }
    topic_name(topic, sizeof(topic), "dry", "invoice");
    assert_null(strstr(r.out, topic));
    cmd_free(&r);
    consume("dry", 0, 3000, &none);
    assert_int_equal(none.n, 0);

    /* through the binary: main.c dispatches backfill */
    hx_proc p;
    const char *args[] = {"backfill", "-d", pg.conninfo, "--topic", t, "--dry-run", NULL};
    assert_int_equal(hx_relay_start(&p, "dry-binary", args), 0);
    int rc = hx_proc_wait(&p, 60000);
    if (rc != 0)
        hx_proc_dump(&p, "backfill --dry-run failed");
    assert_int_equal(rc, 0);
    char *out = slurp(p.outpath);
    topic_name(topic, sizeof(topic), "dry", "invoice");
    assert_int_equal(hx_query1(conn, n, sizeof(n),
                               "SELECT count(*) FROM outbox WHERE aggregatetype = 'invoice'"),
                     1);
    snprintf(line, sizeof(line), "%s\t%s\n", topic, n);
    assert_non_null(strstr(out, line));
    free(out);
    /* not a TTY: a log line, no live line */
    char *err = hx_proc_stderr(&p);
    assert_null(strchr(err, '\r'));
    assert_non_null(strstr(err, "backfill dry run done"));
    free(err);
    consume("dry", 0, 3000, &none);
    assert_int_equal(none.n, 0);
}

static void test_dead_letter(void **state)
{
    (void)state;
    char t[200], dlq[200], topic[200];
    hx_records recs = {0}, dl = {0};
    cmd_result r;

    tmpl(t, sizeof(t), "dl");
    snprintf(dlq, sizeof(dlq), "itest.%s.dlq", hx_run_id());
    assert_int_equal(hx_exec(conn,
                             "CREATE TABLE public.loose (id bigint PRIMARY KEY, aggregatetype "
                             "text, aggregateid text, type text, payload text);"
                             "INSERT INTO public.loose VALUES (1, 'order', '1', 'E', '{\"a\":1}'),"
                             " (2, 'order', '1', NULL, '{}'), (3, 'order', '', 'E', 'plain'),"
                             " (4, 'order', '2', 'E', NULL)"),
                     0);
    r = BACKFILL("dl", "-d", pg.conninfo, "-b", broker.bootstraps, "--topic", t, "-t",
                 "public.loose", "--dlq-topic", dlq);
    expect(&r, 0, "dead-lettered");
    cmd_free(&r);
    topic_name(topic, sizeof(topic), "dl", "order");
    const char *tp[] = {topic}, *dp[] = {dlq};
    assert_int_equal(hx_consume(broker.bootstraps, tp, 1, 2, 30000, &recs), 2);
    assert_int_equal(hx_consume(broker.bootstraps, dp, 1, 2, 30000, &dl), 2);
    for (size_t i = 0; i < dl.n; i++) {
        const hx_header *e = hx_record_header(&dl.v[i], "error");
        const hx_header *bf = hx_record_header(&dl.v[i], "backfill");
        const hx_header *tb = hx_record_header(&dl.v[i], "table");
        assert_non_null(e);
        assert_non_null(bf);
        assert_string_equal(bf->value, "true");
        assert_non_null(tb);
        assert_string_equal(tb->value, "public.loose");
        assert_null(hx_record_header(&dl.v[i], "lsn"));
        json_t *v = value_json(&dl.v[i]);
        json_int_t id = (json_int_t)atoll(json_string_value(json_object_get(v, "id")));
        assert_true(id == 2 || id == 3);
        json_decref(v);
    }
    hx_records_free(&recs);
    hx_records_free(&dl);
    assert_int_equal(hx_exec(conn, "DROP TABLE public.loose"), 0);
}

/* Brokers down: exit 1 saying how many were not delivered; once they are
 * back, running it again delivers every row. */
static void test_delivery_failure(void **state)
{
    (void)state;
    char t[200];
    hx_records recs = {0};
    cmd_result r;

    if (hx_broker_is_external())
        skip();
    tmpl(t, sizeof(t), "down");
    PGresult *res = table_rows("aggregateid = '1'");
    assert_true(PQntuples(res) > 100);
    assert_int_equal(hx_broker_cmd(&broker, "down all"), 0);
    r = BACKFILL("down", "-d", pg.conninfo, "-b", broker.bootstraps, "--topic", t, "--where",
                 "aggregateid = '1'", "-X", "message.timeout.ms=2000");
    assert_int_equal(hx_broker_cmd(&broker, "up all"), 0);
    char words[128];
    snprintf(words, sizeof(words), "%d of %d records not acknowledged", PQntuples(res),
             PQntuples(res));
    expect(&r, 1, words);
    expect(&r, 1, "running it again is safe");
    cmd_free(&r);

    r = BACKFILL("up", "-d", pg.conninfo, "-b", broker.bootstraps, "--topic", t, "--where",
                 "aggregateid = '1'");
    expect(&r, 0, NULL);
    cmd_free(&r);
    consume_rows("down", res, &recs);
    assert_matches_table(&recs, res, "down");
    PQclear(res);
    hx_records_free(&recs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_backfill_matches_table_and_stream),
        cmocka_unit_test(test_sighup_carries_on),
        cmocka_unit_test(test_where_and_since),
        cmocka_unit_test(test_dry_run),
        cmocka_unit_test(test_dead_letter),
        cmocka_unit_test(test_delivery_failure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
