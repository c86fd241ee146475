/*
 * dump — every record of every topic of a cluster, one line each, for the
 * Debezium comparison (scripts/compat): the same rows sent by Debezium to
 * one cluster and by the relay to another give the same dump when the two
 * agree record by record.
 *
 *   dump -b BROKERS [-t TOPIC_PREFIX] [-T]
 *
 * Topics whose name starts with "__" (Kafka's own) are skipped; with -t only
 * topics starting with TOPIC_PREFIX are read.  Each partition is read by
 * assignment from the low to the high watermark, so the dump cannot end
 * early.  Lines are sorted by topic, partition and offset:
 *
 *   TOPIC <TAB> PARTITION <TAB> key=K <TAB> value=V <TAB> headers=[N=V,...] <TAB> ts=T
 *
 * K, V and header values are printed escaped (\xHH for every byte outside
 * printable ASCII, \\ and \t and \n), NULL as the word null (a NULL is not
 * an empty string).  T is the record's timestamp in milliseconds; with -T
 * the timestamp is left out (for settings whose timestamp is a wall clock).
 * Exit 0, or 1 on an error.
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void put_bytes(FILE *o, const void *p, size_t n)
{
    const unsigned char *s = p;

    if (p == NULL) {
        fputs("null", o);
        return;
    }
    fputc('\'', o);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\')
            fputs("\\\\", o);
        else if (s[i] == '\'')
            fputs("\\'", o);
        else if (s[i] >= 0x20 && s[i] < 0x7f)
            fputc(s[i], o);
        else
            fprintf(o, "\\x%02x", s[i]);
    }
    fputc('\'', o);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int dump_partition(rd_kafka_t *rk, const char *topic, int32_t part, int no_ts)
{
    int64_t lo, hi, next;
    rd_kafka_topic_partition_list_t *tl;

    if (rd_kafka_query_watermark_offsets(rk, topic, part, &lo, &hi, 10000) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "dump: no watermarks for %s [%d]\n", topic, part);
        return -1;
    }
    if (hi <= lo)
        return 0;
    tl = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tl, topic, part)->offset = lo;
    if (rd_kafka_assign(rk, tl) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(tl);
        return -1;
    }
    rd_kafka_topic_partition_list_destroy(tl);
    next = lo;
    for (int idle = 0; next < hi && idle < 300;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        rd_kafka_headers_t *hs = NULL;

        if (m == NULL) {
            idle++;
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "dump: %s [%d]: %s\n", topic, part, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            idle++;
            continue;
        }
        idle = 0;
        if (m->offset >= next) {
            rd_kafka_timestamp_type_t tt;
            int64_t ts = rd_kafka_message_timestamp(m, &tt);

            printf("%s\t%d\tkey=", topic, part);
            put_bytes(stdout, m->key, m->key_len);
            fputs("\tvalue=", stdout);
            put_bytes(stdout, m->payload, m->len);
            fputs("\theaders=[", stdout);
            if (rd_kafka_message_headers(m, &hs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                const char *name;
                const void *val;
                size_t vlen;

                for (size_t i = 0; rd_kafka_header_get_all(hs, i, &name, &val, &vlen) ==
                                   RD_KAFKA_RESP_ERR_NO_ERROR;
                     i++) {
                    printf("%s%s=", i ? "," : "", name);
                    put_bytes(stdout, val, vlen);
                }
            }
            fputs("]", stdout);
            if (!no_ts)
                printf("\tts=%lld", (long long)ts);
            fputc('\n', stdout);
            next = m->offset + 1;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
    if (next < hi) {
        fprintf(stderr, "dump: %s [%d] stopped at %lld of %lld\n", topic, part, (long long)next,
                (long long)hi);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *prefix = "";
    int no_ts = 0, opt, rc = 0;
    char errstr[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    const struct rd_kafka_metadata *md;
    char **names;
    int nnames = 0;

    while ((opt = getopt(argc, argv, "b:t:T")) != -1) {
        switch (opt) {
        case 'b':
            brokers = optarg;
            break;
        case 't':
            prefix = optarg;
            break;
        case 'T':
            no_ts = 1;
            break;
        default:
            fprintf(stderr, "usage: dump -b BROKERS [-t TOPIC_PREFIX] [-T]\n");
            return 2;
        }
    }
    if (brokers == NULL) {
        fprintf(stderr, "usage: dump -b BROKERS [-t TOPIC_PREFIX] [-T]\n");
        return 2;
    }
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof errstr) ||
        rd_kafka_conf_set(conf, "group.id", "outbox-relay-compat-dump", errstr, sizeof errstr) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "false", errstr, sizeof errstr)) {
        fprintf(stderr, "dump: %s\n", errstr);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        fprintf(stderr, "dump: %s\n", errstr);
        return 1;
    }
    rd_kafka_poll_set_consumer(rk);
    if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "dump: no metadata from %s\n", brokers);
        rd_kafka_destroy(rk);
        return 1;
    }
    names = calloc((size_t)md->topic_cnt + 1, sizeof *names);
    for (int i = 0; names != NULL && i < md->topic_cnt; i++) {
        const char *t = md->topics[i].topic;

        if (strncmp(t, "__", 2) != 0 && strncmp(t, prefix, strlen(prefix)) == 0)
            names[nnames++] = strdup(t);
    }
    qsort(names, (size_t)nnames, sizeof *names, cmp_str);
    for (int i = 0; i < nnames && rc == 0; i++) {
        for (int j = 0; j < md->topic_cnt; j++) {
            if (strcmp(md->topics[j].topic, names[i]) != 0)
                continue;
            for (int p = 0; p < md->topics[j].partition_cnt && rc == 0; p++)
                if (dump_partition(rk, names[i], p, no_ts) != 0)
                    rc = 1;
        }
    }
    for (int i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    rd_kafka_metadata_destroy(md);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}
