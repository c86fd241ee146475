#include "publish/probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
}

/* statistics: the idempotent producer's state, e.g. "Assigned" once it
 * holds a producer id */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    probe_result *out = opaque;
    const char *k = strstr(json, "\"idemp_state\"");

    (void)rk;
    (void)len;
    if (k) {
        k += strlen("\"idemp_state\"");
        k += strspn(k, ": \"");
        size_t n = strcspn(k, "\"");
        snprintf(out->idemp_state, sizeof(out->idemp_state), "%.*s", (int)n, k);
    }
    return 0; /* librdkafka frees json */
}

static bool conf_bool(rd_kafka_conf_t *conf, const char *name, bool dflt)
{
    char v[64];
    size_t n = sizeof(v);

    if (rd_kafka_conf_get(conf, name, v, &n) != RD_KAFKA_CONF_OK)
        return dflt;
    return strcmp(v, "true") == 0;
}

static int64_t conf_int(rd_kafka_conf_t *conf, const char *name)
{
    char v[64];
    size_t n = sizeof(v);

    if (rd_kafka_conf_get(conf, name, v, &n) != RD_KAFKA_CONF_OK)
        return -1;
    return strtoll(v, NULL, 10);
}

static int64_t entry_int(const rd_kafka_ConfigResource_t *r, const char *name)
{
    size_t n;
    const rd_kafka_ConfigEntry_t **e = rd_kafka_ConfigResource_configs(r, &n);

    for (size_t i = 0; i < n; i++)
        if (strcmp(rd_kafka_ConfigEntry_name(e[i]), name) == 0 && rd_kafka_ConfigEntry_value(e[i]))
            return strtoll(rd_kafka_ConfigEntry_value(e[i]), NULL, 10);
    return -1;
}

static int entry_bool(const rd_kafka_ConfigResource_t *r, const char *name)
{
    size_t n;
    const rd_kafka_ConfigEntry_t **e = rd_kafka_ConfigResource_configs(r, &n);

    for (size_t i = 0; i < n; i++)
        if (strcmp(rd_kafka_ConfigEntry_name(e[i]), name) == 0 && rd_kafka_ConfigEntry_value(e[i]))
            return strcmp(rd_kafka_ConfigEntry_value(e[i]), "true") == 0;
    return -1;
}

/* DescribeConfigs of the first broker and the existing topics. */
static void describe(rd_kafka_t *rk, int32_t broker_id, probe_topic *topics, size_t ntopics,
                     int timeout_ms, probe_result *out)
{
    rd_kafka_ConfigResource_t **res = calloc(ntopics + 1, sizeof(*res));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_event_t *ev = NULL;
    char id[16], why[256];
    size_t n = 0;

    if (!res || !q || !opts) {
        snprintf(out->describe_err, sizeof(out->describe_err), "out of memory");
        goto done;
    }
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, why, sizeof(why));
    snprintf(id, sizeof(id), "%d", (int)broker_id);
    res[n++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_BROKER, id);
    for (size_t i = 0; i < ntopics; i++)
        if (topics[i].exists)
            res[n++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topics[i].name);
    rd_kafka_DescribeConfigs(rk, res, n, opts, q);
    ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    if (!ev) {
        snprintf(out->describe_err, sizeof(out->describe_err), "DescribeConfigs timed out");
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        snprintf(out->describe_err, sizeof(out->describe_err), "DescribeConfigs: %s",
                 rd_kafka_event_error_string(ev));
        goto done;
    }
    const rd_kafka_DescribeConfigs_result_t *result = rd_kafka_event_DescribeConfigs_result(ev);
    size_t nr = 0;
    const rd_kafka_ConfigResource_t **rr =
        result ? rd_kafka_DescribeConfigs_result_resources(result, &nr) : NULL;
    for (size_t i = 0; i < nr; i++) {
        const rd_kafka_ConfigResource_t *r = rr[i];
        if (rd_kafka_ConfigResource_error(r)) {
            if (rd_kafka_ConfigResource_type(r) == RD_KAFKA_RESOURCE_BROKER)
                snprintf(out->describe_err, sizeof(out->describe_err), "DescribeConfigs: %s",
                         rd_kafka_ConfigResource_error_string(r));
            continue;
        }
        if (rd_kafka_ConfigResource_type(r) == RD_KAFKA_RESOURCE_BROKER) {
            out->broker_auto_create = entry_bool(r, "auto.create.topics.enable");
            out->broker_max_bytes = entry_int(r, "message.max.bytes");
            continue;
        }
        for (size_t t = 0; t < ntopics; t++)
            if (strcmp(topics[t].name, rd_kafka_ConfigResource_name(r)) == 0)
                topics[t].max_message_bytes = entry_int(r, "max.message.bytes");
    }
done:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (res) {
        for (size_t i = 0; i < n; i++)
            rd_kafka_ConfigResource_destroy(res[i]);
        free(res);
    }
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (q)
        rd_kafka_queue_destroy(q);
}

int probe_brokers(const char *brokers, const kafka_prop *props, size_t nprops, probe_topic *topics,
                  size_t ntopics, int timeout_ms, probe_result *out, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = kafka_conf_new(brokers, props, nprops, err, errlen);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t rerr;
    rd_kafka_t *rk;
    char why[512];

    memset(out, 0, sizeof(*out));
    out->broker_auto_create = -1;
    out->broker_max_bytes = -1;
    for (size_t i = 0; i < ntopics; i++) {
        topics[i].exists = false;
        topics[i].max_message_bytes = -1;
    }
    if (!conf)
        return -1;
    out->idempotence = conf_bool(conf, "enable.idempotence", false);
    /* librdkafka's producer allows it unless told otherwise, whatever the
     * configuration object says before rd_kafka_new() */
    out->client_auto_create = true;
    for (size_t i = 0; i < nprops; i++)
        if (strcmp(props[i].name, "allow.auto.create.topics") == 0)
            out->client_auto_create = strcmp(props[i].value, "true") == 0;
    out->client_max_bytes = conf_int(conf, "message.max.bytes");
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_opaque(conf, out);
    if (rd_kafka_conf_set(conf, "statistics.interval.ms", "100", why, sizeof(why)) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "statistics.interval.ms: %s", why);
        return -1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "cannot create a kafka client: %s", why);
        return -1;
    }
    /* all topics: asking for the template's topics by name could create them */
    rerr = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    if (rerr) {
        snprintf(out->reach_err, sizeof(out->reach_err), "%s", rd_kafka_err2str(rerr));
    } else {
        out->reachable = true;
        out->nbrokers = md->broker_cnt;
        for (size_t t = 0; t < ntopics; t++)
            for (int i = 0; i < md->topic_cnt; i++)
                if (strcmp(md->topics[i].topic, topics[t].name) == 0 && md->topics[i].err == 0)
                    topics[t].exists = true;
        if (md->broker_cnt > 0)
            describe(rk, md->brokers[0].id, topics, ntopics, timeout_ms, out);
        rd_kafka_metadata_destroy(md);
        /* an idempotent producer asks for its producer id once connected: a
         * broker (or an ACL) that refuses raises a fatal error */
        for (int waited = 0; waited < timeout_ms && out->idempotence; waited += 50) {
            rd_kafka_poll(rk, 50);
            if (rd_kafka_fatal_error(rk, out->fatal, sizeof(out->fatal)))
                break;
            out->fatal[0] = '\0';
            if (strcmp(out->idemp_state, "Assigned") == 0)
                break;
        }
    }
    rd_kafka_destroy(rk);
    return 0;
}
