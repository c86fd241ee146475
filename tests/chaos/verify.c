/*
 * verify — the chaos tests' independent checker.  It trusts nothing the
 * relay says: the truth is the ledger the workload wrote in the same
 * transactions as the outbox rows (chaos_ledger), and what a plain
 * librdkafka consumer reads back from the broker.
 *
 *   verify -d CONNINFO -s SCENARIO -b BROKERS [-w SECONDS] TOPIC...
 *
 * Every partition of every TOPIC (the event topics and the dead-letter
 * topic) is assigned from the beginning, without a consumer group, and read
 * up to the high watermark taken at the start.  A record's event id is its
 * "id" header, else the "id" field of its JSON value (dead-letter records).
 * Figures, on one line of stdout:
 *   committed    ledger rows of the scenario
 *   delivered    distinct ledger ids read back
 *   lost         ledger ids never read (must be 0)
 *   phantom      distinct ids read that the ledger lacks (must be 0): a
 *                rolled-back row or savepoint, or a corrupt record
 *   duplicates   records read beyond the first copy of an id
 *   order        per-aggregate order violations after dropping duplicates:
 *                the first copies of one aggregate's events must come with
 *                strictly increasing seq, all in one partition (must be 0)
 *   mismatch     records whose payload agg/seq differ from the ledger's
 *   dlq          records read from topics named *dlq*
 *   truncated    partitions whose log no longer starts at offset 0 (the
 *                broker dropped old records: the figures cannot be trusted)
 * Exit 0 when lost, phantom, order, mismatch and truncated are all 0, 1
 * otherwise, 2 on usage or setup errors.  The first few lost, phantom and
 * out-of-order ids are printed to stderr as evidence.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#define ID_LEN 36
#define MAX_EVIDENCE 10

typedef struct {
    char id[ID_LEN + 1]; /* "" = empty slot */
    int agg;
    int64_t seq;
    bool in_ledger;
    unsigned copies;
} entry;

typedef struct {
    entry *v;
    size_t cap, n;
} table;

typedef struct {
    int64_t last_seq;
    int32_t partition;
    const char *topic;
    bool seen;
    int64_t last_off; /* offset of the aggregate's previous record */
    int64_t max_off;  /* offset of its highest seq so far */
} agg_state;

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int table_init(table *t, size_t expected)
{
    t->cap = 1024;
    while (t->cap < expected * 2 + 1024)
        t->cap *= 2;
    t->n = 0;
    t->v = calloc(t->cap, sizeof(*t->v));
    return t->v ? 0 : -1;
}

static int table_grow(table *t);

/* Find or insert id; NULL when out of memory. */
static entry *table_get(table *t, const char *id, bool *inserted)
{
    size_t i;

    if ((t->n + 1) * 2 > t->cap && table_grow(t) != 0)
        return NULL;
    for (i = hash_id(id) & (t->cap - 1); t->v[i].id[0]; i = (i + 1) & (t->cap - 1))
        if (strcmp(t->v[i].id, id) == 0) {
            *inserted = false;
            return &t->v[i];
        }
    snprintf(t->v[i].id, sizeof(t->v[i].id), "%s", id);
    t->n++;
    *inserted = true;
    return &t->v[i];
}

static int table_grow(table *t)
{
    table bigger = {.cap = t->cap * 2};
    bool ins;

    bigger.v = calloc(bigger.cap, sizeof(*bigger.v));
    if (!bigger.v)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->v[i].id[0])
            continue;
        entry *e = table_get(&bigger, t->v[i].id, &ins);
        *e = t->v[i];
    }
    free(t->v);
    *t = bigger;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int load_ledger(const char *conninfo, const char *scenario, table *t, int *max_agg)
{
    PGconn *c = PQconnectdb(conninfo);
    const char *params[1] = {scenario};
    PGresult *r = NULL;
    int rc = -1;

    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "verify: cannot connect: %s", PQerrorMessage(c));
        goto out;
    }
    r = PQexecParams(c, "SELECT id::text, agg, seq FROM chaos_ledger WHERE scenario = $1", 1, NULL,
                     params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "verify: reading the ledger: %s", PQerrorMessage(c));
        goto out;
    }
    if (table_init(t, (size_t)PQntuples(r)) != 0)
        goto out;
    *max_agg = -1;
    for (int i = 0; i < PQntuples(r); i++) {
        bool ins;
        entry *e = table_get(t, PQgetvalue(r, i, 0), &ins);
        if (!e)
            goto out;
        e->agg = atoi(PQgetvalue(r, i, 1));
        e->seq = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        e->in_ledger = true;
        if (e->agg > *max_agg)
            *max_agg = e->agg;
    }
    rc = PQntuples(r);
out:
    PQclear(r);
    PQfinish(c);
    return rc;
}

typedef struct {
    long records, dlq, duplicates, phantom, order, mismatch, truncated, unparsed;
    int evidence_phantom, evidence_order;
} figures;

/*
 * The event id, aggregate and seq of a record.  Event records carry the id
 * as a header and {"payload": {"agg", "seq"}} in the value; dead-letter
 * records hold the row as JSON with the payload as text.
 */
static int record_fields(const rd_kafka_message_t *m, char *id, int *agg, int64_t *seq)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *hv;
    size_t hlen;
    json_t *root, *payload, *a, *s, *jid;
    json_error_t jerr;
    int rc = -1;

    id[0] = '\0';
    *agg = -1;
    *seq = -1;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(hdrs, "id", &hv, &hlen) == RD_KAFKA_RESP_ERR_NO_ERROR && hv &&
        hlen == ID_LEN) {
        memcpy(id, hv, ID_LEN);
        id[ID_LEN] = '\0';
    }
    if (!m->payload)
        return id[0] ? 0 : -1;
    root = json_loadb(m->payload, m->len, 0, &jerr);
    if (!root)
        return id[0] ? 0 : -1;
    jid = json_object_get(root, "id");
    if (!id[0] && json_is_string(jid) && strlen(json_string_value(jid)) == ID_LEN)
        snprintf(id, ID_LEN + 1, "%s", json_string_value(jid));
    payload = json_object_get(root, "payload");
    if (json_is_string(payload)) {
        json_t *inner = json_loads(json_string_value(payload), 0, &jerr);
        json_decref(root);
        root = inner;
        payload = root;
    }
    if (payload && json_is_object(payload)) {
        a = json_object_get(payload, "agg");
        s = json_object_get(payload, "seq");
        if (json_is_integer(a) && json_is_integer(s)) {
            *agg = (int)json_integer_value(a);
            *seq = (int64_t)json_integer_value(s);
        }
    }
    rc = id[0] ? 0 : -1;
    json_decref(root);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: verify -d CONNINFO -s SCENARIO -b BROKERS [-w SECONDS] TOPIC...\n");
}

int main(int argc, char **argv)
{
    const char *conninfo = NULL, *scenario = NULL, *brokers = NULL;
    double wait_s = 60;
    char errstr[512];
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    int64_t *high = NULL, *pos = NULL;
    table t = {0};
    agg_state *aggs = NULL;
    figures f = {0};
    int o, max_agg = -1, rc = 2, ntopics;
    long committed, delivered = 0, lost = 0, remaining = 0;
    int64_t deadline;

    while ((o = getopt(argc, argv, "d:s:b:w:")) != -1) {
        switch (o) {
        case 'd':
            conninfo = optarg;
            break;
        case 's':
            scenario = optarg;
            break;
        case 'b':
            brokers = optarg;
            break;
        case 'w':
            wait_s = atof(optarg);
            break;
        default:
            usage();
            return 2;
        }
    }
    ntopics = argc - optind;
    if (!conninfo || !scenario || !brokers || ntopics < 1 || wait_s <= 0) {
        usage();
        return 2;
    }
    committed = load_ledger(conninfo, scenario, &t, &max_agg);
    if (committed < 0)
        goto out;
    aggs = calloc((size_t)(max_agg + 2), sizeof(*aggs));
    if (!aggs)
        goto out;

    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "group.id", "chaos-verify-unused", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "false", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "allow.auto.create.topics", "false", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr))) {
        fprintf(stderr, "verify: %s\n", errstr);
        goto out;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "verify: %s\n", errstr);
        goto out;
    }
    conf = NULL;

    /* every partition of every topic that exists; a missing topic (an
     * empty dead-letter topic nobody created) simply holds nothing */
    parts = rd_kafka_topic_partition_list_new(16);
    for (int i = 0; i < ntopics; i++) {
        const char *name = argv[optind + i];
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, name, NULL);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_UNKNOWN;
        for (int attempt = 0; attempt < 20; attempt++) {
            err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
                md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                break;
            if (md)
                rd_kafka_metadata_destroy(md);
            md = NULL;
            usleep(250000);
        }
        if (!md) {
            fprintf(stderr, "verify: no metadata for \"%s\": %s\n", name, rd_kafka_err2str(err));
            rd_kafka_topic_destroy(rkt);
            goto out;
        }
        if (md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            for (int p = 0; p < md->topics[0].partition_cnt; p++)
                rd_kafka_topic_partition_list_add(parts, name, md->topics[0].partitions[p].id)
                    ->offset = RD_KAFKA_OFFSET_BEGINNING;
        else
            fprintf(stderr, "verify: topic \"%s\" does not exist: nothing read from it\n", name);
        rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
    }
    high = calloc((size_t)parts->cnt + 1, sizeof(*high));
    pos = calloc((size_t)parts->cnt + 1, sizeof(*pos));
    if (!high || !pos)
        goto out;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            rk, parts->elems[i].topic, parts->elems[i].partition, &lo, &hi, 10000);
        if (err) {
            fprintf(stderr, "verify: watermarks of %s [%" PRId32 "]: %s\n", parts->elems[i].topic,
                    parts->elems[i].partition, rd_kafka_err2str(err));
            goto out;
        }
        if (lo > 0) {
            f.truncated++;
            fprintf(stderr,
                    "verify: %s [%" PRId32 "] starts at offset %" PRId64
                    ": the broker dropped old records\n",
                    parts->elems[i].topic, parts->elems[i].partition, lo);
        }
        high[i] = hi;
        pos[i] = lo;
        if (hi > lo)
            remaining++;
    }
    if (rd_kafka_assign(rk, parts) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "verify: assign failed\n");
        goto out;
    }

    deadline = now_ms() + (int64_t)(wait_s * 1000);
    while (remaining > 0 && now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        char id[ID_LEN + 1];
        int agg, pi = -1;
        int64_t seq;
        bool ins, is_dlq;
        entry *e;

        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "verify: consumer: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].partition == m->partition &&
                strcmp(parts->elems[i].topic, rd_kafka_topic_name(m->rkt)) == 0) {
                pi = i;
                break;
            }
        if (pi < 0 || m->offset < pos[pi]) {
            rd_kafka_message_destroy(m);
            continue;
        }
        pos[pi] = m->offset + 1;
        if (pos[pi] >= high[pi])
            remaining--;
        if (m->offset >= high[pi]) { /* written after we started: not ours to judge */
            rd_kafka_message_destroy(m);
            continue;
        }
        f.records++;
        is_dlq = strstr(rd_kafka_topic_name(m->rkt), "dlq") != NULL;
        if (is_dlq)
            f.dlq++;
        if (record_fields(m, id, &agg, &seq) != 0) {
            f.unparsed++;
            f.phantom++;
            fprintf(stderr, "verify: %s [%" PRId32 "] @%" PRId64 ": no event id in the record\n",
                    rd_kafka_topic_name(m->rkt), m->partition, m->offset);
            rd_kafka_message_destroy(m);
            continue;
        }
        e = table_get(&t, id, &ins);
        if (!e) {
            rd_kafka_message_destroy(m);
            goto out;
        }
        e->copies++;
        if (e->copies > 1) {
            f.duplicates++;
        } else if (!e->in_ledger) {
            f.phantom++;
            if (f.evidence_phantom++ < MAX_EVIDENCE)
                fprintf(stderr,
                        "verify: phantom %s (agg %d seq %" PRId64 ") at %s [%" PRId32 "] @%" PRId64
                        "\n",
                        id, agg, seq, rd_kafka_topic_name(m->rkt), m->partition, m->offset);
        } else {
            delivered++;
            if (!is_dlq && (agg != e->agg || seq != e->seq)) {
                f.mismatch++;
                fprintf(stderr,
                        "verify: %s carries agg %d seq %" PRId64
                        ", the ledger says agg %d seq %" PRId64 "\n",
                        id, agg, seq, e->agg, e->seq);
            } else if (!is_dlq) {
                agg_state *as = &aggs[e->agg];
                bool bad = as->seen && (seq <= as->last_seq || as->partition != m->partition ||
                                        strcmp(as->topic, rd_kafka_topic_name(m->rkt)) != 0);
                if (bad) {
                    f.order++;
                    if (f.evidence_order++ < MAX_EVIDENCE)
                        fprintf(stderr,
                                "verify: order: agg %d seq %" PRId64 " (%s [%" PRId32 "] @%" PRId64
                                ") after seq %" PRId64 " ([%" PRId32 "] @%" PRId64
                                "; previous record @%" PRId64 ")\n",
                                e->agg, seq, rd_kafka_topic_name(m->rkt), m->partition, m->offset,
                                as->last_seq, as->partition, as->max_off, as->last_off);
                }
                as->seen = true;
                as->last_off = m->offset;
                if (seq > as->last_seq) {
                    as->last_seq = seq;
                    as->max_off = m->offset;
                }
                as->partition = m->partition;
                as->topic = parts->elems[pi].topic;
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (remaining > 0)
        fprintf(stderr, "verify: %ld partitions not read to their end within %.0f s\n", remaining,
                wait_s);

    {
        int shown = 0;
        for (size_t i = 0; i < t.cap; i++)
            if (t.v[i].id[0] && t.v[i].in_ledger && t.v[i].copies == 0) {
                lost++;
                if (shown++ < MAX_EVIDENCE)
                    fprintf(stderr, "verify: lost %s (agg %d seq %" PRId64 ")\n", t.v[i].id,
                            t.v[i].agg, t.v[i].seq);
            }
    }
    printf("committed=%ld delivered=%ld lost=%ld phantom=%ld duplicates=%ld order=%ld "
           "mismatch=%ld dlq=%ld records=%ld truncated=%ld unread_partitions=%ld\n",
           committed, delivered, lost, f.phantom, f.duplicates, f.order, f.mismatch, f.dlq,
           f.records, f.truncated, remaining);
    rc = (lost || f.phantom || f.order || f.mismatch || f.truncated || remaining) ? 1 : 0;
out:
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    free(high);
    free(pos);
    free(aggs);
    free(t.v);
    return rc;
}
