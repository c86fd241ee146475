/*
 * Unit tests for cdc/metrics: counters, the latency ring and lag, error
 * scrubbing, the /status document, and the Prometheus exposition checked by
 * a strict parser written here (which is itself shown to reject bad
 * documents, so it cannot pass everything).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/metrics.h"
#include "decode/lsn.h"

/* ---- a strict parser of the text exposition format 0.0.4 ---------------- */

#define X_MAX_SAMPLES 512
#define X_MAX_FAMILIES 64

typedef struct xsample {
    char name[128];
    char labels[1024]; /* label pairs as written, without braces */
    double value;
    int family;
} xsample;

typedef struct xfamily {
    char name[128];
    char type[16];
    bool help, typed;
    int nsamples;
} xfamily;

typedef struct expo {
    xsample s[X_MAX_SAMPLES];
    int ns;
    xfamily f[X_MAX_FAMILIES];
    int nf;
    char err[256];
} expo;

static int xfail(expo *e, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int xfail(expo *e, int line, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(e->err, sizeof(e->err), "line %d: ", line);
    va_start(ap, fmt);
    vsnprintf(e->err + n, sizeof(e->err) - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* Length of a metric name at s ([a-zA-Z_:][a-zA-Z0-9_:]*), 0 if none. */
static size_t x_name_len(const char *s)
{
    size_t n = 0;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_' || s[n] == ':')
        n++;
    return n;
}

static size_t x_label_name_len(const char *s)
{
    size_t n = 0;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_')
        n++;
    return n;
}

static int x_family(expo *e, const char *name, size_t len)
{
    for (int i = 0; i < e->nf; i++)
        if (strlen(e->f[i].name) == len && strncmp(e->f[i].name, name, len) == 0)
            return i;
    return -1;
}

static int x_family_add(expo *e, const char *name, size_t len)
{
    int i = x_family(e, name, len);
    if (i >= 0)
        return i;
    if (e->nf == X_MAX_FAMILIES || len >= sizeof(e->f[0].name))
        return -1;
    i = e->nf++;
    memset(&e->f[i], 0, sizeof(e->f[i]));
    memcpy(e->f[i].name, name, len);
    return i;
}

static bool x_value(const char *s, size_t len, double *v)
{
    char buf[64], *end;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (strcmp(buf, "+Inf") == 0) {
        *v = INFINITY;
        return true;
    }
    if (strcmp(buf, "-Inf") == 0) {
        *v = -INFINITY;
        return true;
    }
    if (strcmp(buf, "NaN") == 0) {
        *v = NAN;
        return true;
    }
    /* strtod would take "inf", "0x1p3" and friends: allow only decimal. */
    for (size_t i = 0; i < len; i++)
        if (!(isdigit((unsigned char)buf[i]) || strchr("+-.eE", buf[i])))
            return false;
    *v = strtod(buf, &end);
    return *end == '\0';
}

/* Find the label called name in a sample's label text and unescape its
 * value into out.  Returns true when found. */
static bool x_label(const char *labels, const char *name, char *out, size_t outlen)
{
    const char *p = labels;
    size_t nl = strlen(name);
    while (*p) {
        size_t ln = x_label_name_len(p);
        bool match = ln == nl && strncmp(p, name, nl) == 0;
        size_t o = 0;
        p += ln + 2; /* name=" */
        while (*p != '"') {
            char c = *p++;
            if (c == '\\') {
                c = *p++;
                if (c == 'n')
                    c = '\n';
            }
            if (match && o + 1 < outlen)
                out[o++] = c;
        }
        p++;
        if (match) {
            out[o] = '\0';
            return true;
        }
        if (*p == ',')
            p++;
    }
    return false;
}

static int x_parse_sample(expo *e, int line, const char *p, const char *eol)
{
    xsample *s;
    size_t n = x_name_len(p);
    const char *q;
    int fam;

    if (n == 0)
        return xfail(e, line, "invalid metric name");
    if (e->ns == X_MAX_SAMPLES)
        return xfail(e, line, "too many samples");
    s = &e->s[e->ns];
    memset(s, 0, sizeof(*s));
    if (n >= sizeof(s->name))
        return xfail(e, line, "name too long");
    memcpy(s->name, p, n);
    q = p + n;
    if (*q == '{') {
        const char *start = ++q;
        char seen[16][64];
        int nseen = 0;
        while (*q != '}') {
            size_t ln = x_label_name_len(q);
            if (ln == 0 || ln >= 64)
                return xfail(e, line, "invalid label name");
            if (ln >= 2 && q[0] == '_' && q[1] == '_')
                return xfail(e, line, "reserved label name");
            for (int i = 0; i < nseen; i++)
                if (strlen(seen[i]) == ln && strncmp(seen[i], q, ln) == 0)
                    return xfail(e, line, "duplicate label");
            if (nseen == 16)
                return xfail(e, line, "too many labels");
            memcpy(seen[nseen], q, ln);
            seen[nseen++][ln] = '\0';
            q += ln;
            if (q[0] != '=' || q[1] != '"')
                return xfail(e, line, "label without =\"");
            q += 2;
            while (*q != '"') {
                if (q >= eol)
                    return xfail(e, line, "unterminated label value");
                if (*q == '\\') {
                    if (q[1] != '\\' && q[1] != '"' && q[1] != 'n')
                        return xfail(e, line, "bad escape in label value");
                    q++;
                }
                q++;
            }
            q++;
            if (*q == ',')
                q++;
            else if (*q != '}')
                return xfail(e, line, "expected , or } after a label");
        }
        if ((size_t)(q - start) >= sizeof(s->labels))
            return xfail(e, line, "labels too long");
        memcpy(s->labels, start, (size_t)(q - start));
        q++;
    }
    if (*q != ' ')
        return xfail(e, line, "expected one space before the value");
    q++;
    const char *v = q;
    while (q < eol && *q != ' ')
        q++;
    if (!x_value(v, (size_t)(q - v), &s->value))
        return xfail(e, line, "invalid value");
    if (q < eol) { /* an optional integer timestamp */
        q++;
        if (q == eol)
            return xfail(e, line, "trailing space");
        for (; q < eol; q++)
            if (!isdigit((unsigned char)*q) && *q != '-')
                return xfail(e, line, "invalid timestamp");
    }

    /* Which family: the name itself, or a histogram's suffixed series. */
    fam = x_family(e, s->name, strlen(s->name));
    if (fam < 0 || !e->f[fam].typed) {
        static const char *const sfx[] = {"_bucket", "_sum", "_count"};
        fam = -1;
        for (int i = 0; i < 3 && fam < 0; i++) {
            size_t sl = strlen(sfx[i]), nl = strlen(s->name);
            if (nl > sl && strcmp(s->name + nl - sl, sfx[i]) == 0) {
                int f = x_family(e, s->name, nl - sl);
                if (f >= 0 && e->f[f].typed && strcmp(e->f[f].type, "histogram") == 0)
                    fam = f;
            }
        }
    }
    if (fam < 0)
        return xfail(e, line, "sample %s before its TYPE", s->name);
    if (strcmp(e->f[fam].type, "histogram") == 0 && strcmp(s->name, e->f[fam].name) == 0)
        return xfail(e, line, "histogram sample without suffix");
    if (e->ns > 0 && e->s[e->ns - 1].family != fam && e->f[fam].nsamples > 0)
        return xfail(e, line, "family %s not contiguous", e->f[fam].name);
    for (int i = 0; i < e->ns; i++)
        if (strcmp(e->s[i].name, s->name) == 0 && strcmp(e->s[i].labels, s->labels) == 0)
            return xfail(e, line, "duplicate series %s{%s}", s->name, s->labels);
    if (strcmp(e->f[fam].type, "counter") == 0 && !(s->value >= 0))
        return xfail(e, line, "counter %s not >= 0", s->name);
    s->family = fam;
    e->f[fam].nsamples++;
    e->ns++;
    return 0;
}

/* A histogram's series in document order: buckets with increasing le and
 * non-decreasing counts, ending with +Inf equal to _count; a _sum. */
static int x_check_histogram(expo *e, int fam)
{
    const char *name = e->f[fam].name;
    double last_le = -INFINITY, last_count = -1, inf_count = -1, count = -1;
    bool have_sum = false;
    char le[64];

    for (int i = 0; i < e->ns; i++) {
        const xsample *s = &e->s[i];
        size_t nl = strlen(name);
        if (s->family != fam)
            continue;
        if (strcmp(s->name + nl, "_bucket") == 0) {
            double b;
            if (!x_label(s->labels, "le", le, sizeof(le)) || !x_value(le, strlen(le), &b))
                return xfail(e, 0, "%s bucket without a valid le", name);
            if (inf_count >= 0)
                return xfail(e, 0, "%s bucket after +Inf", name);
            if (!(b > last_le))
                return xfail(e, 0, "%s le not increasing at %s", name, le);
            if (s->value < last_count)
                return xfail(e, 0, "%s bucket counts decrease at le=%s", name, le);
            last_le = b;
            last_count = s->value;
            if (isinf(b))
                inf_count = s->value;
        } else if (strcmp(s->name + nl, "_sum") == 0) {
            have_sum = true;
        } else if (strcmp(s->name + nl, "_count") == 0) {
            count = s->value;
        }
    }
    if (inf_count < 0)
        return xfail(e, 0, "%s has no +Inf bucket", name);
    if (count < 0 || !have_sum)
        return xfail(e, 0, "%s lacks _sum or _count", name);
    if (count != inf_count)
        return xfail(e, 0, "%s +Inf bucket %g != _count %g", name, inf_count, count);
    return 0;
}

static int expo_parse(const char *text, expo *e)
{
    const char *p = text;
    int line = 0;

    memset(e, 0, sizeof(*e));
    if (!*text)
        return xfail(e, 0, "empty document");
    if (text[strlen(text) - 1] != '\n')
        return xfail(e, 0, "no final newline");
    while (*p) {
        const char *eol = strchr(p, '\n');
        line++;
        for (const char *c = p; c < eol; c++)
            if (*c == '\r' || *c == '\0')
                return xfail(e, line, "carriage return");
        if (eol == p)
            return xfail(e, line, "empty line");
        if (*p == '#') {
            bool help = strncmp(p, "# HELP ", 7) == 0, type = strncmp(p, "# TYPE ", 7) == 0;
            const char *q = p + 7;
            size_t n;
            int fam;
            if (!help && !type)
                return xfail(e, line, "unexpected comment");
            n = x_name_len(q);
            if (n == 0 || q[n] != ' ')
                return xfail(e, line, "invalid name in HELP/TYPE");
            fam = x_family_add(e, q, n);
            if (fam < 0)
                return xfail(e, line, "too many families");
            if (e->f[fam].nsamples > 0)
                return xfail(e, line, "HELP/TYPE after samples of %s", e->f[fam].name);
            q += n + 1;
            if (help) {
                if (e->f[fam].help)
                    return xfail(e, line, "second HELP");
                for (const char *c = q; c < eol; c++)
                    if (*c == '\\' && c[1] != '\\' && c[1] != 'n')
                        return xfail(e, line, "bad escape in HELP");
                e->f[fam].help = true;
            } else {
                static const char *const types[] = {"counter", "gauge", "histogram", "summary",
                                                    "untyped"};
                size_t tl = (size_t)(eol - q);
                bool ok = false;
                if (e->f[fam].typed)
                    return xfail(e, line, "second TYPE");
                for (int i = 0; i < 5; i++)
                    ok |= strlen(types[i]) == tl && strncmp(types[i], q, tl) == 0;
                if (!ok)
                    return xfail(e, line, "unknown type");
                memcpy(e->f[fam].type, q, tl);
                e->f[fam].typed = true;
            }
        } else if (x_parse_sample(e, line, p, eol) != 0) {
            return -1;
        }
        p = eol + 1;
    }
    for (int i = 0; i < e->nf; i++) {
        if (!e->f[i].typed || e->f[i].nsamples == 0)
            return xfail(e, 0, "family %s without TYPE or samples", e->f[i].name);
        if (strcmp(e->f[i].type, "histogram") == 0 && x_check_histogram(e, i) != 0)
            return -1;
    }
    return 0;
}

/* The value of the series name{labels} (labels exactly as rendered). */
static double expo_get(const expo *e, const char *name, const char *labels)
{
    for (int i = 0; i < e->ns; i++)
        if (strcmp(e->s[i].name, name) == 0 && strcmp(e->s[i].labels, labels) == 0)
            return e->s[i].value;
    fail_msg("no series %s{%s}", name, labels);
    return NAN;
}

static int expo_count(const expo *e, const char *name)
{
    int n = 0;
    for (int i = 0; i < e->ns; i++)
        n += strcmp(e->s[i].name, name) == 0;
    return n;
}

/* Render m and parse it strictly; the caller frees *text. */
static void render_and_parse(const metrics *m, int64_t now_us, expo *e, char **text)
{
    size_t len = 0;
    assert_int_equal(metrics_render_prometheus(m, now_us, text, &len), 0);
    assert_int_equal(strlen(*text), len);
    if (expo_parse(*text, e) != 0)
        fail_msg("exposition rejected: %s\n%s", e->err, *text);
}

#define T0 INT64_C(1700000000000000)

/* ---- the parser itself ------------------------------------------------------ */

static void test_parser_accepts_a_good_document(void **state)
{
    (void)state;
    static expo e;
    const char *doc = "# HELP a_total Things.\n# TYPE a_total counter\n"
                      "a_total{x=\"q\\\"\\\\\\n\"} 3\n"
                      "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                      "h_sum 3.5\nh_count 2\n";
    char v[16];
    assert_int_equal(expo_parse(doc, &e), 0);
    assert_true(x_label(e.s[0].labels, "x", v, sizeof(v)));
    assert_string_equal(v, "q\"\\\n");
    assert_true(expo_get(&e, "h_count", "") == 2);
}

static void test_parser_rejects_bad_documents(void **state)
{
    (void)state;
    static expo e;
    static const char *const bad[] = {
        "",
        "# TYPE a gauge\na 1",                                      /* no final newline */
        "a 1\n# TYPE a gauge\n",                                    /* sample before TYPE */
        "# TYPE 1a gauge\n1a 1\n",                                  /* invalid name */
        "# TYPE a gauge\na-b 1\n",                                  /* invalid name */
        "# TYPE a gauge\na{x=\"\\t\"} 1\n",                         /* bad escape */
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                   /* duplicate label */
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",             /* duplicate series */
        "# TYPE a gauge\na one\n",                                  /* bad value */
        "# TYPE a gauge\na  1\n",                                   /* two spaces */
        "# TYPE a gauge\n# TYPE a counter\na 1\n",                  /* second TYPE */
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"y\"} 1\n", /* not contiguous */
        "# TYPE a_total counter\na_total -1\n",                     /* negative counter */
        "# TYPE a wibble\na 1\n",                                   /* unknown type */
        "# TYPE a gauge\n\na 1\n",                                  /* empty line */
        "# comment\n# TYPE a gauge\na 1\n",                         /* stray comment */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n"
        "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", /* counts decrease */
        "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
        "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",                     /* le decreases */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",    /* no +Inf */
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", /* +Inf != count */
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",          /* no _sum */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (expo_parse(bad[i], &e) == 0)
            fail_msg("document %zu accepted:\n%s", i, bad[i]);
}

/* ---- rendering --------------------------------------------------------------- */

static void test_fresh_metrics_render_valid(void **state)
{
    (void)state;
    static expo e;
    char *text = NULL;
    metrics *m = metrics_new("outbox_relay", T0);
    assert_non_null(m);
    render_and_parse(m, T0, &e, &text);
    assert_true(expo_get(&e, "outbox_relay_state", "state=\"starting\"") == 1);
    assert_true(expo_get(&e, "outbox_relay_state", "state=\"streaming\"") == 0);
    assert_int_equal(expo_count(&e, "outbox_relay_state"), METRICS_NSTATES);
    assert_true(expo_get(&e, "outbox_relay_events_published_total", "topic=\"other\"") == 0);
    assert_true(
        expo_get(&e, "outbox_relay_events_dead_lettered_total", "reason=\"unmapped_column\"") == 0);
    assert_true(expo_get(&e, "outbox_relay_commit_to_ack_seconds_count", "") == 0);
    assert_true(expo_get(&e, "outbox_relay_start_time_seconds", "") == 1700000000.0);
    assert_int_equal(expo_count(&e, "outbox_relay_build_info"), 1);
    /* every name carries the prefix */
    for (int i = 0; i < e.ns; i++)
        assert_memory_equal(e.s[i].name, "outbox_relay_", 13);
    free(text);
    metrics_free(m);
}

/* The relay's slot's wal_status: absent until known, then one series per
 * status with 1 for the current one (the alert reads it). */
static void test_slot_wal_status(void **state)
{
    (void)state;
    static expo e;
    char *text = NULL;
    metrics *m = metrics_new("outbox_relay", T0);
    assert_non_null(m);
    render_and_parse(m, T0, &e, &text);
    assert_int_equal(expo_count(&e, "outbox_relay_slot_wal_status"), 0);
    free(text);
    strcpy(m->slot_wal_status, "unreserved");
    render_and_parse(m, T0, &e, &text);
    assert_int_equal(expo_count(&e, "outbox_relay_slot_wal_status"), 4);
    assert_true(expo_get(&e, "outbox_relay_slot_wal_status", "wal_status=\"unreserved\"") == 1);
    assert_true(expo_get(&e, "outbox_relay_slot_wal_status", "wal_status=\"reserved\"") == 0);
    assert_true(expo_get(&e, "outbox_relay_slot_wal_status", "wal_status=\"lost\"") == 0);
    free(text);
    metrics_free(m);
}

static void test_counters_render(void **state)
{
    (void)state;
    static expo e;
    char *text = NULL;
    metrics *m = metrics_new("s", T0);
    assert_non_null(m);

    for (int i = 0; i < 3; i++)
        metrics_published(m, "outbox.event.order");
    metrics_published(m, "outbox.event.customer");
    metrics_published(m, "outbox.event.order");
    metrics_dead_lettered(m, METRICS_DLQ_INVALID_ROW);
    metrics_dead_lettered(m, METRICS_DLQ_INVALID_ROW);
    metrics_dead_lettered(m, METRICS_DLQ_REJECTED);
    metrics_rewound(m);
    metrics_reconnected(m, METRICS_TARGET_POSTGRES);
    metrics_reconnected(m, METRICS_TARGET_POSTGRES);
    metrics_reconnected(m, METRICS_TARGET_KAFKA);
    metrics_set_state(m, METRICS_STREAMING);
    m->broker_reachable = true;
    m->received_lsn = 0x16B374D848;
    m->confirmed_lsn = 0x16B3740000;
    m->server_lsn = 0x16B3750000;
    m->inflight_events = 7;
    m->inflight_bytes = 1234;

    render_and_parse(m, T0, &e, &text);
    assert_true(
        expo_get(&e, "outbox_relay_events_published_total", "topic=\"outbox.event.order\"") == 4);
    assert_true(expo_get(&e, "outbox_relay_events_published_total",
                         "topic=\"outbox.event.customer\"") == 1);
    assert_true(expo_get(&e, "outbox_relay_events_dead_lettered_total", "reason=\"invalid_row\"") ==
                2);
    assert_true(expo_get(&e, "outbox_relay_events_dead_lettered_total", "reason=\"rejected\"") ==
                1);
    assert_true(
        expo_get(&e, "outbox_relay_events_dead_lettered_total", "reason=\"invalid_record\"") == 0);
    assert_true(expo_get(&e, "outbox_relay_rewinds_total", "") == 1);
    assert_true(expo_get(&e, "outbox_relay_reconnects_total", "target=\"postgres\"") == 2);
    assert_true(expo_get(&e, "outbox_relay_reconnects_total", "target=\"kafka\"") == 1);
    assert_true(expo_get(&e, "outbox_relay_state", "state=\"streaming\"") == 1);
    assert_true(expo_get(&e, "outbox_relay_state", "state=\"starting\"") == 0);
    assert_true(expo_get(&e, "outbox_relay_broker_reachable", "") == 1);
    assert_true(expo_get(&e, "outbox_relay_received_lsn", "") == (double)0x16B374D848);
    assert_true(expo_get(&e, "outbox_relay_confirmed_lsn", "") == (double)0x16B3740000);
    assert_true(expo_get(&e, "outbox_relay_replication_lag_bytes", "") == 0x10000);
    assert_true(expo_get(&e, "outbox_relay_inflight_events", "") == 7);
    assert_true(expo_get(&e, "outbox_relay_inflight_bytes", "") == 1234);
    assert_true(metrics_ready(m));
    metrics_set_state(m, METRICS_RECONNECTING);
    assert_false(metrics_ready(m));
    metrics_set_state(m, METRICS_STREAMING);
    m->broker_reachable = false;
    assert_false(metrics_ready(m));
    free(text);
    metrics_free(m);
}

static void test_label_values_escaped(void **state)
{
    (void)state;
    static expo e;
    char *text = NULL, v[64];
    metrics *m = metrics_new("s", T0);
    assert_non_null(m);
    metrics_published(m, "a\"b\\c\nd");
    render_and_parse(m, T0, &e, &text);
    assert_non_null(strstr(text, "topic=\"a\\\"b\\\\c\\nd\"} 1\n"));
    for (int i = 0; i < e.ns; i++)
        if (x_label(e.s[i].labels, "topic", v, sizeof(v)) && strcmp(v, "other") != 0)
            assert_string_equal(v, "a\"b\\c\nd");
    free(text);
    metrics_free(m);
}

static void test_topics_bounded(void **state)
{
    (void)state;
    static expo e;
    char *text = NULL, t[32];
    metrics *m = metrics_new("s", T0);
    assert_non_null(m);
    for (int i = 0; i < METRICS_MAX_TOPICS + 8; i++) {
        snprintf(t, sizeof(t), "topic.%d", i);
        metrics_published(m, t);
        metrics_published(m, t);
    }
    metrics_published(m, "topic.0");
    metrics_published(m, "other"); /* a real topic named "other" shares the bucket */
    render_and_parse(m, T0, &e, &text);
    assert_int_equal(expo_count(&e, "outbox_relay_events_published_total"), METRICS_MAX_TOPICS + 1);
    assert_true(expo_get(&e, "outbox_relay_events_published_total", "topic=\"topic.0\"") == 3);
    assert_true(expo_get(&e, "outbox_relay_events_published_total", "topic=\"other\"") ==
                8 * 2 + 1);
    free(text);
    metrics_free(m);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    static expo e;
    char *text = NULL;
    metrics *m = metrics_new("s", T0);
    assert_non_null(m);
    metrics_observe_latency(m, 0.001);  /* on a bound: le is inclusive */
    metrics_observe_latency(m, 0.0011); /* -> 0.0025 */
    metrics_observe_latency(m, -3);     /* clock skew counts as 0 */
    metrics_observe_latency(m, 0.3);    /* -> 0.5 */
    metrics_observe_latency(m, 20);     /* only +Inf */
    render_and_parse(m, T0, &e, &text);
    const char *h = "outbox_relay_commit_to_ack_seconds_bucket";
    assert_true(expo_get(&e, h, "le=\"0.001\"") == 2);
    assert_true(expo_get(&e, h, "le=\"0.0025\"") == 3);
    assert_true(expo_get(&e, h, "le=\"0.25\"") == 3);
    assert_true(expo_get(&e, h, "le=\"0.5\"") == 4);
    assert_true(expo_get(&e, h, "le=\"10\"") == 4);
    assert_true(expo_get(&e, h, "le=\"+Inf\"") == 5);
    assert_true(expo_get(&e, "outbox_relay_commit_to_ack_seconds_count", "") == 5);
    assert_true(fabs(expo_get(&e, "outbox_relay_commit_to_ack_seconds_sum", "") - 20.3021) < 1e-6);
    assert_int_equal(expo_count(&e, h), METRICS_LATENCY_NBUCKETS + 1);
    free(text);
    metrics_free(m);
}

/* ---- latency ring and lag ------------------------------------------------------ */

static void test_latency_and_lag_follow_reports(void **state)
{
    (void)state;
    metrics *m = metrics_new("s", T0);
    assert_non_null(m);

    assert_true(metrics_lag_seconds(m, T0) == 0);
    metrics_event_sent(m, 5, T0); /* two events of ticket 5 */
    metrics_event_sent(m, 5, T0);
    metrics_event_sent(m, 6, T0 + 2000000); /* one of ticket 6, 2 s later */
    assert_int_equal(m->txn_len, 2);
    assert_true(metrics_lag_seconds(m, T0 + 3000000) == 3.0);

    /* reports out of order: 6 first, lag still measured from 5 */
    metrics_event_reported(m, 6, true, T0 + 2500000);
    assert_true(metrics_lag_seconds(m, T0 + 3000000) == 3.0);
    metrics_event_reported(m, 5, true, T0 + 1000000);
    assert_true(metrics_lag_seconds(m, T0 + 3000000) == 3.0);
    metrics_event_reported(m, 5, true, T0 + 4000000);
    assert_true(metrics_lag_seconds(m, T0 + 5000000) == 0);
    assert_int_equal(m->txn_len, 0);

    assert_int_equal(m->acknowledged, 3);
    assert_int_equal(m->latency_count, 3);
    assert_true(fabs(m->latency_sum - (0.5 + 1.0 + 4.0)) < 1e-9);

    /* a stale report (ticket not tracked) is counted, not timed */
    metrics_event_reported(m, 99, true, T0 + 9000000);
    assert_int_equal(m->acknowledged, 4);
    assert_int_equal(m->latency_count, 3);
    /* a failed delivery counts as an error and times nothing */
    metrics_event_sent(m, 7, T0);
    metrics_event_reported(m, 7, false, T0 + 1000000);
    assert_int_equal(m->delivery_errors, 1);
    assert_int_equal(m->latency_count, 3);
    metrics_free(m);
}

static void test_reset_and_ring_bound(void **state)
{
    (void)state;
    metrics *m = metrics_new("s", T0);
    assert_non_null(m);
    for (uint64_t t = 1; t <= METRICS_TRACK_MAX + 10; t++)
        metrics_event_sent(m, t, T0 + (int64_t)t);
    assert_int_equal(m->txn_len, METRICS_TRACK_MAX);
    /* the untracked tail is acknowledged but not timed */
    metrics_event_reported(m, METRICS_TRACK_MAX + 5, true, T0 + 100);
    assert_int_equal(m->latency_count, 0);
    /* a tracked ticket deep in the ring is found by the search */
    metrics_event_reported(m, 12345, true, T0 + 12345 + 1000);
    assert_int_equal(m->latency_count, 1);
    assert_true(fabs(m->latency_sum - 0.001) < 1e-9);
    assert_true(metrics_lag_seconds(m, T0 + 1000001) == 1.0);
    metrics_inflight_reset(m);
    assert_int_equal(m->txn_len, 0);
    assert_true(metrics_lag_seconds(m, T0 + 1000001) == 0);
    /* after the reset the ring wraps around cleanly */
    metrics_event_sent(m, 100000, T0);
    metrics_event_reported(m, 100000, true, T0 + 2000);
    assert_int_equal(m->latency_count, 2);
    assert_int_equal(m->txn_len, 0);
    metrics_free(m);
}

static void test_backpressure_time(void **state)
{
    (void)state;
    static expo e;
    char *text = NULL;
    metrics *m = metrics_new("s", T0);
    assert_non_null(m);
    metrics_backpressure(m, false, 1000);
    metrics_backpressure(m, true, 2000);
    metrics_backpressure(m, true, 2500);
    metrics_backpressure(m, false, 3250); /* paused 2000..3250 */
    metrics_backpressure(m, false, 9000);
    metrics_backpressure(m, true, 9000);
    metrics_backpressure(m, false, 9100);
    assert_int_equal(m->backpressure_ms, 1350);
    render_and_parse(m, T0, &e, &text);
    assert_true(expo_get(&e, "outbox_relay_backpressure_seconds_total", "") == 1.35);
    free(text);
    metrics_free(m);
}

/* ---- /status and secrets --------------------------------------------------------- */

static void test_status_document(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    json_error_t jerr;
    json_t *o;
    metrics *m = metrics_new("my_slot", T0);
    assert_non_null(m);
    metrics_set_state(m, METRICS_STREAMING);
    m->broker_reachable = true;
    m->received_lsn = 0x16B374D848;
    m->confirmed_lsn = 0x16B3740000;
    m->server_lsn = 0x16B3750000;
    m->inflight_events = 2;
    m->inflight_bytes = 99;
    metrics_published(m, "x");
    metrics_dead_lettered(m, METRICS_DLQ_UNMAPPED_COLUMN);
    metrics_event_sent(m, 1, T0);

    assert_int_equal(metrics_render_status(m, T0 + 1500000, &text, &len), 0);
    o = json_loads(text, 0, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "streaming");
    assert_string_equal(json_string_value(json_object_get(o, "slot")), "my_slot");
    assert_string_equal(json_string_value(json_object_get(o, "received_lsn")), "16/B374D848");
    assert_string_equal(json_string_value(json_object_get(o, "confirmed_lsn")), "16/B3740000");
    assert_string_equal(json_string_value(json_object_get(o, "server_lsn")), "16/B3750000");
    assert_int_equal(json_integer_value(json_object_get(o, "lag_bytes")), 0x10000);
    assert_true(json_real_value(json_object_get(o, "lag_seconds")) == 1.5);
    assert_int_equal(json_integer_value(json_object_get(o, "inflight_events")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "inflight_bytes")), 99);
    assert_int_equal(json_integer_value(json_object_get(o, "events_published")), 1);
    assert_int_equal(json_integer_value(json_object_get(o, "dead_lettered")), 1);
    assert_true(json_is_true(json_object_get(o, "broker_reachable")));
    assert_true(json_is_null(json_object_get(o, "last_error")));
    assert_string_equal(json_string_value(json_object_get(o, "started_at")),
                        "2023-11-14T22:13:20.000000Z");
    json_decref(o);
    free(text);

    metrics_set_error(m, "cannot connect: \xff\xfe broken", T0 + 5);
    assert_int_equal(metrics_render_status(m, T0, &text, &len), 0);
    o = json_loads(text, 0, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "last_error")),
                        "cannot connect: ?? broken");
    assert_true(json_is_string(json_object_get(o, "last_error_at")));
    json_decref(o);
    free(text);
    metrics_clear_error(m);
    assert_string_equal(m->last_error, "");
    metrics_free(m);
}

static void test_last_error_never_holds_a_password(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"connect to \"host=db password=s3cret user=u\" failed",
         "connect to \"host=db password=*** user=u\" failed"},
        {"password = 'se cr\\'et' host=x", "password = *** host=x"},
        {"PASSWORD=s3cret", "PASSWORD=***"},
        {"uri postgresql://relay:s3cret@db:5432/app?x=1 refused",
         "uri postgresql://relay:***@db:5432/app?x=1 refused"},
        {"uri postgres://relay@db/app fine", "uri postgres://relay@db/app fine"},
        {"line\nbreak\ttab", "line break tab"},
    };
    static expo e;
    metrics *m = metrics_new("s", T0);
    char *text = NULL;
    size_t len;
    assert_non_null(m);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        metrics_set_error(m, cases[i].in, T0);
        assert_string_equal(m->last_error, cases[i].want);
        assert_int_equal(metrics_render_status(m, T0, &text, &len), 0);
        assert_null(strstr(text, "s3cret"));
        assert_null(strstr(text, "se cr"));
        free(text);
        render_and_parse(m, T0, &e, &text);
        assert_null(strstr(text, "s3cret"));
        free(text);
    }
    /* a long message is cut, not overflowed */
    char big[4 * METRICS_ERROR_MAX];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big + METRICS_ERROR_MAX - 5, "password=abcdefgh", 17);
    metrics_set_error(m, big, T0);
    assert_int_equal(strlen(m->last_error), METRICS_ERROR_MAX - 1);
    assert_null(strstr(m->last_error, "abc"));
    metrics_free(m);
    metrics_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_accepts_a_good_document),
        cmocka_unit_test(test_parser_rejects_bad_documents),
        cmocka_unit_test(test_fresh_metrics_render_valid),
        cmocka_unit_test(test_slot_wal_status),
        cmocka_unit_test(test_counters_render),
        cmocka_unit_test(test_label_values_escaped),
        cmocka_unit_test(test_topics_bounded),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_latency_and_lag_follow_reports),
        cmocka_unit_test(test_reset_and_ring_bound),
        cmocka_unit_test(test_backpressure_time),
        cmocka_unit_test(test_status_document),
        cmocka_unit_test(test_last_error_never_holds_a_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
