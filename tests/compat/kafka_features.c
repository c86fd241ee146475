/*
 * kafka_features: what this machine's librdkafka can do against one Kafka cluster.
 * scripts/kafka-compat runs it against every broker version it covers and
 * builds README's compatibility table from its output.
 *
 *   kafka_features PLAINTEXT_BOOTSTRAP [SASL_BOOTSTRAP USER PASSWORD CA_FILE]
 *
 * One line per check, "CHECK<TAB>ok|FAIL<TAB>what was seen":
 *   idempotent    1,000 records with enable.idempotence=true, all acknowledged
 *                 at a position, no fatal error
 *   transactions  a committed transaction of 10 records and an aborted one
 *                 of 5; a read_committed reader (by partition assignment)
 *                 reads exactly the 10, a read_uncommitted one all 15
 *   assign        a consumer by partition assignment (what the relay's tools
 *                 use) reads every record, and commits its offset to a group
 *   subscribe     a balanced consumer group (rd_kafka_subscribe): the group
 *                 is joined and records arrive within 60 s
 *   scram         (with a SASL_SSL listener) SCRAM-SHA-512 over TLS: one
 *                 record produced and acknowledged
 *   plain         the same with SASL/PLAIN over TLS
 * Exit status: 0 when every check ran (whatever their result), 2 on usage.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

static const char *bootstrap;
static char run_id[32];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void result(const char *check, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void result(const char *check, bool ok, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\t' || *p == '\n')
            *p = ' ';
    printf("%s\t%s\t%s\n", check, ok ? "ok" : "FAIL", msg);
    fflush(stdout);
}

/* Quiet logs: the first error is kept for the result line. */
static char last_log[400];

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)fac;
    if (level <= 4 && !last_log[0])
        snprintf(last_log, sizeof(last_log), "%s", buf);
}

static rd_kafka_conf_t *conf_new(const char *const *kv)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)))
        fprintf(stderr, "compat: %s\n", errstr);
    for (; kv && kv[0]; kv += 2)
        if (rd_kafka_conf_set(conf, kv[0], kv[1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
            fprintf(stderr, "compat: %s=%s: %s\n", kv[0], kv[1], errstr);
    return conf;
}

struct dr_state {
    int ok, failed;
    rd_kafka_resp_err_t first_err;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct dr_state *st = opaque;
    (void)rk;
    if (!m->err && m->offset >= 0) {
        st->ok++;
    } else {
        st->failed++;
        if (!st->first_err)
            st->first_err = m->err ? m->err : RD_KAFKA_RESP_ERR__FAIL;
    }
}

static rd_kafka_t *producer(const char *const *kv, struct dr_state *st)
{
    char errstr[512];
    rd_kafka_conf_t *conf = conf_new(kv);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, st);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        fprintf(stderr, "compat: %s\n", errstr);
    return rk;
}

static int produce(rd_kafka_t *rk, const char *topic, int n, const char *tag)
{
    for (int i = 0; i < n; i++) {
        char v[64];
        snprintf(v, sizeof(v), "%s-%d", tag, i);
        rd_kafka_resp_err_t err;
        while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                                        RD_KAFKA_V_VALUE(v, strlen(v)),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                        RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (err)
            return -1;
    }
    return 0;
}

/* Read partition 0 of topic from the start by assignment until the high
 * watermark (or timeout); the number of records read. */
static int read_assigned(const char *topic, const char *isolation, const char *group, bool commit,
                         int timeout_ms, char *why, size_t whylen)
{
    char errstr[512];
    const char *kv[] = {"group.id",
                        group,
                        "isolation.level",
                        isolation,
                        "enable.auto.commit",
                        "false",
                        "enable.partition.eof",
                        "true",
                        NULL};
    rd_kafka_conf_t *conf = conf_new(kv);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    int n = 0;
    if (!rk) {
        snprintf(why, whylen, "%.200s", errstr);
        return -1;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    int64_t deadline = now_ms() + timeout_ms;
    bool eof = false;
    int64_t last_offset = -1;
    while (!eof && now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            eof = true;
        else if (m->err)
            snprintf(why, whylen, "%s", rd_kafka_message_errstr(m));
        else {
            n++;
            last_offset = m->offset;
        }
        rd_kafka_message_destroy(m);
    }
    if (!eof)
        snprintf(why, whylen, "no end of partition within %d ms", timeout_ms);
    if (commit && last_offset >= 0) {
        rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(c, topic, 0)->offset = last_offset + 1;
        rd_kafka_resp_err_t err = rd_kafka_commit(rk, c, 0);
        if (err) {
            snprintf(why, whylen, "offset commit: %s", rd_kafka_err2str(err));
            n = -1;
        }
        rd_kafka_topic_partition_list_destroy(c);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return eof ? n : -1;
}

static void check_idempotent(void)
{
    char topic[80];
    struct dr_state st = {0};
    const char *kv[] = {"enable.idempotence", "true", "acks", "all", NULL};
    snprintf(topic, sizeof(topic), "compat.%s.idem", run_id);
    last_log[0] = '\0';
    rd_kafka_t *rk = producer(kv, &st);
    if (!rk || produce(rk, topic, 1000, "i") != 0) {
        result("idempotent", false, "cannot produce");
        if (rk)
            rd_kafka_destroy(rk);
        return;
    }
    rd_kafka_flush(rk, 60000);
    char fatal[256] = "";
    rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
    bool ok = st.ok == 1000 && st.failed == 0 && !ferr;
    result("idempotent", ok, "%d/1000 acknowledged, %d failed%s%s%s", st.ok, st.failed,
           st.first_err ? " first: " : "", st.first_err ? rd_kafka_err2name(st.first_err) : "",
           ferr ? fatal : "");
    rd_kafka_destroy(rk);
}

static void check_transactions(void)
{
    char topic[80], txid[80], why[300] = "";
    struct dr_state st = {0};
    snprintf(topic, sizeof(topic), "compat.%s.txn", run_id);
    snprintf(txid, sizeof(txid), "compat-%s", run_id);
    const char *kv[] = {"transactional.id", txid, NULL};
    rd_kafka_t *rk = producer(kv, &st);
    rd_kafka_error_t *e = NULL;
    const char *step = "init_transactions";
    if (!rk) {
        result("transactions", false, "no producer");
        return;
    }
    if ((e = rd_kafka_init_transactions(rk, 60000)))
        goto fail;
    step = "begin (commit)";
    if ((e = rd_kafka_begin_transaction(rk)))
        goto fail;
    produce(rk, topic, 10, "committed");
    step = "commit_transaction";
    if ((e = rd_kafka_commit_transaction(rk, 60000)))
        goto fail;
    step = "begin (abort)";
    if ((e = rd_kafka_begin_transaction(rk)))
        goto fail;
    produce(rk, topic, 5, "aborted");
    rd_kafka_flush(rk, 30000);
    step = "abort_transaction";
    if ((e = rd_kafka_abort_transaction(rk, 60000)))
        goto fail;
    rd_kafka_destroy(rk);
    int committed =
        read_assigned(topic, "read_committed", "compat-rc", false, 30000, why, sizeof(why));
    int all = read_assigned(topic, "read_uncommitted", "compat-ru", false, 30000, why, sizeof(why));
    result("transactions", committed == 10 && all == 15,
           "commit 10 + abort 5: read_committed read %d, read_uncommitted %d%s%s", committed, all,
           why[0] ? "; " : "", why);
    return;
fail:
    result("transactions", false, "%s: %s (%s)", step, rd_kafka_error_string(e),
           rd_kafka_error_name(e));
    rd_kafka_error_destroy(e);
    rd_kafka_destroy(rk);
}

static void check_consumers(void)
{
    char topic[80], group[80], why[300] = "", errstr[512];
    struct dr_state st = {0};
    snprintf(topic, sizeof(topic), "compat.%s.cons", run_id);
    rd_kafka_t *p = producer(NULL, &st);
    if (!p || produce(p, topic, 20, "c") != 0) {
        result("assign", false, "cannot produce");
        result("subscribe", false, "cannot produce");
        if (p)
            rd_kafka_destroy(p);
        return;
    }
    rd_kafka_flush(p, 30000);
    rd_kafka_destroy(p);

    snprintf(group, sizeof(group), "compat-assign-%s", run_id);
    int n = read_assigned(topic, "read_committed", group, true, 30000, why, sizeof(why));
    result("assign", n == 20, "read %d/20 by assignment, offset committed to group%s%s", n,
           why[0] ? "; " : "", why);

    /* balanced group: JoinGroup/SyncGroup through the group coordinator */
    snprintf(group, sizeof(group), "compat-sub-%s", run_id);
    const char *kv[] = {"group.id", group, "auto.offset.reset", "earliest", NULL};
    last_log[0] = '\0';
    rd_kafka_conf_t *conf = conf_new(kv);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        result("subscribe", false, "%s", errstr);
        return;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    int got = 0;
    char first_err[300] = "";
    int64_t t0 = now_ms();
    while (!err && got < 20 && now_ms() - t0 < 60000) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (!m->err)
            got++;
        else if (!first_err[0])
            snprintf(first_err, sizeof(first_err), "%s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
    }
    result("subscribe", got == 20, "%s%d/20 read in %.1f s%s%s%s%s",
           err ? rd_kafka_err2str(err) : "", got, (double)(now_ms() - t0) / 1e3,
           first_err[0] ? "; consumer error: " : "", first_err, last_log[0] ? "; log: " : "",
           last_log);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static void check_sasl(const char *check, const char *mechanism, const char *sasl_bs,
                       const char *user, const char *pw, const char *ca)
{
    char topic[80];
    struct dr_state st = {0};
    const char *kv[] = {"bootstrap.servers",
                        sasl_bs,
                        "security.protocol",
                        "SASL_SSL",
                        "sasl.mechanisms",
                        mechanism,
                        "sasl.username",
                        user,
                        "sasl.password",
                        pw,
                        "ssl.ca.location",
                        ca,
                        "message.timeout.ms",
                        "20000",
                        NULL};
    snprintf(topic, sizeof(topic), "compat.%s.%s", run_id, check);
    last_log[0] = '\0';
    rd_kafka_t *rk = producer(kv, &st);
    if (!rk || produce(rk, topic, 1, "s") != 0) {
        result(check, false, "cannot produce");
        if (rk)
            rd_kafka_destroy(rk);
        return;
    }
    rd_kafka_flush(rk, 30000);
    /* the password never reaches the line: only librdkafka's reason */
    result(check, st.ok == 1, "%d/1 acknowledged%s%s", st.ok, last_log[0] ? "; " : "", last_log);
    rd_kafka_destroy(rk);
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 6) {
        fprintf(stderr, "usage: kafka_features BOOTSTRAP [SASL_BOOTSTRAP USER PASSWORD CA_FILE]\n");
        return 2;
    }
    bootstrap = argv[1];
    snprintf(run_id, sizeof(run_id), "%ld%d", (long)time(NULL), (int)(now_ms() % 1000));
    printf("librdkafka\tok\t%s\n", rd_kafka_version_str());
    check_idempotent();
    check_transactions();
    check_consumers();
    if (argc == 6) {
        check_sasl("scram", "SCRAM-SHA-512", argv[2], argv[3], argv[4], argv[5]);
        check_sasl("plain", "PLAIN", argv[2], argv[3], argv[4], argv[5]);
    }
    return 0;
}
