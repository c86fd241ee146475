#include "publish/kafka.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "publish/clock.h"

/* The ticket travels as the message's opaque pointer. */
_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t), "tickets need 64-bit pointers");

struct kafka_producer {
    sink base; /* first: a kafka_producer is a sink */
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq; /* where delivery reports and errors are queued */
    int efd;                 /* eventfd librdkafka writes to when mainq gets work */
    bool auto_create;        /* allow.auto.create.topics as finally configured */

    /* set only for the duration of kafka_poll() */
    kafka_report_fn fn;
    void *fn_arg;
    int served;

    bool fatal;
    char fatal_reason[512];
    bool brokers_down; /* "all brokers down" seen and no delivery since */

    /* A broker connection problem is logged once when it starts; repeats
     * are logged at debug level and counted, and its end is logged once:
     * deliveries acknowledged and no connection error for
     * KAFKA_QUIET_MS (one broker of several can be down while the others
     * acknowledge, so an acknowledgement alone proves nothing). */
    bool broker_fault;
    unsigned fault_repeats;
    int64_t fault_since_ms, last_error_ms;
    bool acked_since_error;

    /* What an authentication or TLS failure names (none of it secret), and
     * the explained configuration fault while it lasts ("" = none): shown
     * in /status through sink_fault() */
    char mechanism[64], username[128], ca_location[256], protocol[32];
    char config_fault[480];
    char authz_reason[300]; /* TOPIC_AUTHORIZATION_FAILED, explained */

    /* topics already produced to (see warm_topic()) */
    char **seen;
    size_t nseen, last_seen;

    /* message.timeout.ms, enforced here over the whole queue (see
     * kafka_stalled()); librdkafka's own is set to 0 (never) */
    int64_t timeout_ms;
    size_t outstanding;  /* produced, report not yet served */
    int64_t progress_ms; /* last report served, or the produce that ended an idle spell */
    bool timing_out;     /* purged for a stall: its purge reports say so */
    char timeout_reason[200];
};

/* librdkafka's default message.timeout.ms, when the configuration does not say. */
#define KAFKA_DEFAULT_TIMEOUT_MS 300000

/* Topics whose metadata is fetched on first use; beyond that many distinct
 * topics (a template with {aggregate_id}) the warm-up is skipped. */
#define KAFKA_WARM_TOPICS 256
#define KAFKA_WARM_TIMEOUT_MS 500

/* Longer than librdkafka's default reconnect.backoff.max.ms (10 s): a
 * broker still down reports again within this time. */
#define KAFKA_QUIET_MS 20000

/*
 * Our defaults, applied before the caller's -X so that any of them can be
 * overridden.  Per-aggregate order (README, Design: guarantees) relies on
 * enable.idempotence: without it a retried batch can land after a later
 * one; murmur2_random keeps key -> partition identical to the Java client.
 * linger.ms 1 with at most 2 requests in flight per broker connection
 * (librdkafka: linger 5, 5 in flight with idempotence): a short linger, and
 * under load the events that arrive while two requests are out wait for a
 * response and go in one batch, so batching follows the broker's pace.
 * Measured side by side with make bench (commit -> acknowledgement from
 * the relay's own histogram, 15 s runs, 4 alternating rounds): p99 2.5 ms
 * at 1,000 events/s and 4.8-21 ms at 5,000/s; linger 0 gave 1.0 ms and
 * 21-32 ms (its tiny requests queue at the broker under load), linger 2
 * 9.7 and 9.0 ms in a 30 s run, linger 0 with 5 in flight 98 ms at
 * 5,000/s.  A short linger once broke order in the chaos run's
 * msg-timeout scenario: librdkafka's per-message timeout let younger
 * messages overtake timed-out ones, which kafka_stalled() now prevents.
 */
static const kafka_prop default_props[] = {
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"partitioner", "murmur2_random"},
    {"linger.ms", "1"},
    {"max.in.flight.requests.per.connection", "2"},
};

static _Atomic(kafka_log_fn) log_fn;

static void default_log(int level, const char *fac, const char *msg)
{
    fprintf(stderr, "rdkafka %d %s: %s\n", level, fac, msg);
}

/* Called from librdkafka's threads: only reads the atomic pointer. */
static void log_trampoline(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    kafka_log_fn fn = atomic_load(&log_fn);

    (void)rk;
    /* A broker connection failure is logged by librdkafka's broker thread
     * (FAIL) and reported again through error_cb, which logs it once per
     * outage: keep the thread's copy for debugging only. */
    if (strcmp(fac, "FAIL") == 0 && level < LOG_DEBUG)
        level = LOG_DEBUG;
    (fn ? fn : default_log)(level, fac, buf);
}

void kafka_set_logger(kafka_log_fn fn)
{
    atomic_store(&log_fn, fn);
}

void kafka_list_properties(FILE *out)
{
    rd_kafka_conf_properties_show(out);
}

/* Values of these may be secrets: never echo them in an error message. */
static bool is_secret(const char *name)
{
    static const char *const words[] = {"password", "secret",     "ssl.key",
                                        "jaas",     "credential", "token"};

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcasestr(name, words[i]))
            return true;
    return false;
}

/*
 * Build a configuration: our defaults, then brokers, then the caller's
 * properties in order (a later one wins).  Returns NULL with err naming the
 * offending property.
 */
static rd_kafka_conf_t *build_conf(const char *brokers, const kafka_prop *props, size_t nprops,
                                   char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char why[512];

    if (!conf) {
        snprintf(err, errlen, "out of memory creating the kafka configuration");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(default_props) / sizeof(default_props[0]); i++) {
        if (rd_kafka_conf_set(conf, default_props[i].name, default_props[i].value, why,
                              sizeof(why)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "default %s=%s: %s", default_props[i].name,
                     default_props[i].value, why);
            goto fail;
        }
    }
    if (brokers && *brokers &&
        rd_kafka_conf_set(conf, "bootstrap.servers", brokers, why, sizeof(why)) !=
            RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "--brokers %s: %s", brokers, why);
        goto fail;
    }
    for (size_t i = 0; i < nprops; i++) {
        const char *name = props[i].name ? props[i].name : "";
        const char *value = props[i].value ? props[i].value : "";

        if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "-X %s=%s: %s; -X list shows every property", name,
                     is_secret(name) ? "***" : value, why);
            goto fail;
        }
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

struct rd_kafka_conf_s *kafka_conf_new(const char *brokers, const kafka_prop *props, size_t nprops,
                                       char *err, size_t errlen)
{
    return build_conf(brokers, props, nprops, err, errlen);
}

int kafka_config_check(const char *brokers, const kafka_prop *props, size_t nprops, char *err,
                       size_t errlen)
{
    rd_kafka_conf_t *conf = build_conf(brokers, props, nprops, err, errlen);

    if (!conf)
        return -1;
    rd_kafka_conf_destroy(conf);
    return 0;
}

/*
 * Whether a delivery error is about the message itself, so retrying the
 * same message can never succeed (the caller dead-letters it) — as opposed
 * to the path to the broker (timeouts, purges, transport, leadership,
 * replicas, authorization), which a retry after a rewind can ride out.
 *
 * An unknown topic is permanent only when this producer may not create
 * topics: then the name came from the topic template and nothing but an
 * operator fixes it.  With auto-creation allowed it is the usual race while
 * the broker creates the topic.  (The mock cluster creates topics whatever
 * the flag says, so this branch has no unit test.)
 *
 * Caveat: the broker judges a whole batch.  A size or record error it
 * returns fails every message of that partition's batch, so a small message
 * batched with a huge one also gets a permanent report; librdkafka does not
 * split and retry.  A caller that dead-letters on permanent may want to
 * produce such a message once more on its own first.
 */
static bool is_permanent(const kafka_producer *kp, rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
        return true;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return !kp->auto_create;
    default:
        return false;
    }
}

/* Log the end of a broker connection fault once it is over (see above). */
static void check_fault_over(kafka_producer *kp)
{
    int64_t now;
    char msg[200];

    if (!kp->broker_fault || !kp->acked_since_error)
        return;
    now = obx_now_ms();
    if (now - kp->last_error_ms < KAFKA_QUIET_MS)
        return;
    snprintf(msg, sizeof(msg),
             "brokers healthy again: deliveries acknowledged and no connection error for %d s "
             "(the fault began %.1f s ago; %u more connection error(s) in between)",
             KAFKA_QUIET_MS / 1000, (double)(now - kp->fault_since_ms) / 1e3, kp->fault_repeats);
    log_trampoline(kp->rk, LOG_INFO, "RECOVERED", msg);
    kp->config_fault[0] = '\0';
    kp->broker_fault = false;
    kp->fault_repeats = 0;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    kafka_producer *kp = opaque;
    kafka_report rep = {0};

    (void)rk;
    kp->served++;
    if (!m->err) {
        kp->brokers_down = false;
        kp->acked_since_error = true;
    }
    rep.ticket = (uint64_t)(uintptr_t)m->_private;
    rep.err = m->err;
    rep.errstr = m->err ? rd_kafka_err2str(m->err) : NULL;
    if (kp->timing_out &&
        (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)) {
        rep.err = RD_KAFKA_RESP_ERR__MSG_TIMED_OUT;
        rep.errstr = kp->timeout_reason;
    }
    if (m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
        /* a configuration problem, not the event's: it is retried (never
         * dead-lettered), and the reason says what to grant */
        snprintf(kp->authz_reason, sizeof(kp->authz_reason),
                 "%s: the brokers do not let %s%s%s write to this topic: grant it WRITE on the "
                 "topic (a Kafka ACL) or change --topic; the event waits and is retried",
                 rd_kafka_err2str(m->err), kp->username[0] ? "user \"" : "this client",
                 kp->username, kp->username[0] ? "\"" : "");
        rep.errstr = kp->authz_reason;
    }
    if (kp->outstanding > 0 && --kp->outstanding == 0)
        kp->timing_out = false;
    if (!kp->fn)
        return;
    rep.permanent = rep.err ? is_permanent(kp, rep.err) : false;
    rep.partition = m->partition;
    rep.offset = m->offset;
    rep.len = m->len + m->key_len;
    rep.topic = m->rkt ? rd_kafka_topic_name(m->rkt) : NULL;
    rep.key = m->key;
    rep.keylen = m->key_len;
    rep.value = m->payload;
    rep.valuelen = m->len;
    rep.verdict = sink_classify(rep.err == 0, rep.offset, rep.permanent);
    rep.inferred = rep.err == 0 && rep.offset < 0;
    rep.from = &kp->base;
    rep.msg = m;
    kp->fn(&rep, kp->fn_arg);
}

static bool contains(const char *s, const char *what)
{
    return s && strcasestr(s, what) != NULL;
}

bool kafka_explain_error(int err, const char *reason, const kafka_security *sec, char *out,
                         size_t len)
{
    const char *mech = sec && sec->mechanism && *sec->mechanism ? sec->mechanism : "SASL";
    const char *user = sec && sec->username ? sec->username : "";
    const char *ca = sec && sec->ca_location && *sec->ca_location ? sec->ca_location : NULL;

    if (contains(reason, "certificate verify failed") ||
        contains(reason, "could not be verified")) {
        if (contains(reason, "hostname mismatch") || contains(reason, "ip address mismatch"))
            snprintf(out, len,
                     "TLS: the broker's certificate is not issued for the address the relay "
                     "connects to: connect by a name the certificate carries, or fix -X "
                     "ssl.endpoint.identification.algorithm (%s)",
                     rd_kafka_err2name((rd_kafka_resp_err_t)err));
        else
            snprintf(out, len,
                     "TLS: the broker's certificate is not signed by a CA the relay trusts: fix "
                     "-X ssl.ca.location (now %s) (%s)",
                     ca ? ca : "unset: the system's CAs",
                     rd_kafka_err2name((rd_kafka_resp_err_t)err));
        return true;
    }
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION && contains(reason, "SASL") &&
        (contains(reason, "invalid credentials") || contains(reason, "authentication failed"))) {
        int n = snprintf(out, len,
                         "the brokers refused the %s login of user \"%s\": fix -X sasl.username "
                         "or -X sasl.password (or the user's credentials on the brokers)",
                         mech, user);
        /* librdkafka before 2.6.1 computes a SCRAM proof Apache Kafka 4.0
         * and later reject (their stricter nonce check): the right password
         * fails too */
        if (n > 0 && (size_t)n < len && contains(mech, "SCRAM") && rd_kafka_version() < 0x020601ff)
            snprintf(out + n, len - (size_t)n,
                     "; note: this librdkafka (%s) cannot log in with SCRAM to Apache Kafka 4.0 "
                     "or later even with the right password (fixed in librdkafka 2.6.1; "
                     "SASL/PLAIN over TLS works)",
                     rd_kafka_version_str());
        return true;
    }
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION &&
        (contains(reason, "mechanism") || contains(reason, "sasl.mechanisms"))) {
        snprintf(out, len,
                 "the brokers do not accept SASL mechanism %s: fix -X sasl.mechanisms (%s)", mech,
                 reason ? reason : "");
        return true;
    }
    if (contains(reason, "security.protocol")) {
        snprintf(out, len,
                 "the brokers do not speak the protocol the relay uses: fix -X security.protocol "
                 "(now %s)",
                 sec && sec->protocol && *sec->protocol ? sec->protocol : "plaintext");
        return true;
    }
    return false;
}

/*
 * Non-fatal errors (all brokers down, transport) are informational: the
 * affected messages get their own delivery reports.  A fatal one breaks
 * the idempotence guarantee and ends this producer.
 */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_producer *kp = opaque;
    char msg[800];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
        if (!kp->fatal) {
            kp->fatal = true;
            snprintf(kp->fatal_reason, sizeof(kp->fatal_reason),
                     "kafka producer fatal error: %s: %s", rd_kafka_err2name(orig), why);
        }
        log_trampoline(rk, LOG_ERR, "FATAL", kp->fatal_reason);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        kp->brokers_down = true;
    kp->last_error_ms = obx_now_ms();
    kp->acked_since_error = false;
    if (kp->broker_fault) {
        kp->fault_repeats++;
        snprintf(msg, sizeof(msg), "%s: %s", rd_kafka_err2name(err), reason);
        log_trampoline(rk, LOG_DEBUG, "ERROR", msg);
        return;
    }
    kp->broker_fault = true;
    kp->fault_since_ms = kp->last_error_ms;
    const kafka_security sec = {kp->protocol, kp->mechanism, kp->username, kp->ca_location};
    if (kafka_explain_error(err, reason, &sec, kp->config_fault, sizeof(kp->config_fault))) {
        /* one error, naming what to fix; the raw text follows at debug */
        snprintf(msg, sizeof(msg),
                 "%s; the relay keeps retrying and confirms nothing meanwhile (repeats are "
                 "logged at debug level)",
                 kp->config_fault);
        log_trampoline(rk, LOG_ERR, "CONFIG", msg);
        snprintf(msg, sizeof(msg), "%s: %s", rd_kafka_err2name(err), reason);
        log_trampoline(rk, LOG_DEBUG, "ERROR", msg);
        return;
    }
    snprintf(msg, sizeof(msg),
             "%s: %s (repeats are logged at debug level until the brokers are healthy again; "
             "undelivered events wait in the producer and are not confirmed)",
             rd_kafka_err2name(err), reason);
    log_trampoline(rk, LOG_WARNING, "ERROR", msg);
}

int kafka_report_header(const kafka_report *rep, const char *name, const void **value, size_t *len)
{
    rd_kafka_headers_t *hdrs;

    if (!rep->msg || rd_kafka_message_headers((const rd_kafka_message_t *)rep->msg, &hdrs) != 0 ||
        rd_kafka_header_get_last(hdrs, name, value, len) != 0)
        return -1;
    return 0;
}

bool kafka_brokers_up(const kafka_producer *kp)
{
    return !kp->brokers_down;
}

static const sink_ops kafka_sink_ops;

kafka_producer *kafka_producer_new(const char *brokers, const kafka_prop *props, size_t nprops,
                                   char *err, size_t errlen)
{
    static const uint64_t one = 1; /* an eventfd takes 8-byte writes */
    kafka_producer *kp = calloc(1, sizeof(*kp));
    rd_kafka_conf_t *conf = NULL;
    char val[16], why[512];
    size_t vlen = sizeof(val);

    if (!kp) {
        snprintf(err, errlen, "out of memory creating the kafka producer");
        return NULL;
    }
    kp->base.ops = &kafka_sink_ops;
    kp->efd = -1;
    conf = build_conf(brokers, props, nprops, err, errlen);
    if (!conf)
        goto fail;
    if (rd_kafka_conf_get(conf, "acks", val, &vlen) == RD_KAFKA_CONF_OK && strcmp(val, "0") == 0) {
        snprintf(err, errlen,
                 "acks=0: the broker would acknowledge nothing, and the slot is confirmed only "
                 "on acknowledgements; leave acks at its default (all)");
        goto fail;
    }

    /* message.timeout.ms (or its alias delivery.timeout.ms) is ours to
     * enforce: see kafka_stalled() for why librdkafka must not */
    kp->timeout_ms = KAFKA_DEFAULT_TIMEOUT_MS;
    vlen = sizeof(val);
    if (rd_kafka_conf_get(conf, "message.timeout.ms", val, &vlen) == RD_KAFKA_CONF_OK)
        kp->timeout_ms = strtoll(val, NULL, 10);
    if (rd_kafka_conf_set(conf, "message.timeout.ms", "0", why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "cannot set message.timeout.ms: %s", why);
        goto fail;
    }

    {
        struct {
            const char *name;
            char *dst;
            size_t len;
        } names[] = {{"sasl.mechanisms", kp->mechanism, sizeof(kp->mechanism)},
                     {"sasl.username", kp->username, sizeof(kp->username)},
                     {"ssl.ca.location", kp->ca_location, sizeof(kp->ca_location)},
                     {"security.protocol", kp->protocol, sizeof(kp->protocol)}};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            size_t l = names[i].len;
            if (rd_kafka_conf_get(conf, names[i].name, names[i].dst, &l) != RD_KAFKA_CONF_OK)
                names[i].dst[0] = '\0';
        }
    }

    kp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (kp->efd < 0) {
        snprintf(err, errlen, "cannot create the kafka event fd: %s", strerror(errno));
        goto fail;
    }
    rd_kafka_conf_set_opaque(conf, kp);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_log_cb(conf, log_trampoline);

    kp->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!kp->rk) {
        snprintf(err, errlen, "cannot create the kafka producer: %s", why);
        goto fail;
    }
    conf = NULL; /* owned by rk now */
    /* allow.auto.create.topics: only the producer's own configuration
     * knows it (a new conf object reads "false", the consumer's default,
     * until rd_kafka_new() applies the producer's "true") */
    kp->auto_create = true;
    vlen = sizeof(val);
    if (rd_kafka_conf_get((rd_kafka_conf_t *)rd_kafka_conf(kp->rk), "allow.auto.create.topics", val,
                          &vlen) == RD_KAFKA_CONF_OK)
        kp->auto_create = strcmp(val, "true") == 0;
    kp->mainq = rd_kafka_queue_get_main(kp->rk);
    rd_kafka_queue_io_event_enable(kp->mainq, kp->efd, &one, sizeof(one));
    /* librdkafka's threads may have queued an error before the fd was
     * attached; the fd only fires on empty -> non-empty, so wake ourselves
     * once or that op would sit there until the next report */
    if (write(kp->efd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        snprintf(err, errlen, "cannot signal the kafka event fd: %s", strerror(errno));
        goto fail;
    }
    return kp;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    kafka_producer_free(kp);
    return NULL;
}

void kafka_producer_free(kafka_producer *kp)
{
    if (!kp)
        return;
    kp->fn = NULL; /* reports served while destroying go nowhere */
    if (kp->mainq) {
        rd_kafka_queue_io_event_enable(kp->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(kp->mainq);
    }
    if (kp->rk)
        rd_kafka_destroy(kp->rk);
    if (kp->efd >= 0)
        close(kp->efd);
    for (size_t i = 0; i < kp->nseen; i++)
        free(kp->seen[i]);
    free(kp->seen);
    free(kp);
}

int kafka_event_fd(const kafka_producer *kp)
{
    return kp->efd;
}

enum kafka_produce_result kafka_produce(kafka_producer *kp, const char *topic, const void *key,
                                        size_t keylen, const void *value, size_t valuelen,
                                        const kafka_header *headers, size_t nheaders,
                                        uint64_t ticket, char *err, size_t errlen)
{
    return kafka_produce_ts(kp, topic, key, keylen, value, valuelen, 0, headers, nheaders, ticket,
                            err, errlen);
}

/*
 * The first message to a topic waits in librdkafka until the topic's
 * metadata arrives, and librdkafka 2.0.2 asks for it only from its 1 s
 * topic scan when no broker connection was up at the time: about a second
 * of stall for every new topic (every drain, every start).  So on the
 * first message to a topic ask for its metadata at once, bounded by
 * KAFKA_WARM_TIMEOUT_MS (about one round trip; skipped while every broker
 * is down).
 */
static void warm_topic(kafka_producer *kp, const char *topic)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt;
    char **v;

    /* per event: consecutive events mostly share their topic */
    if (kp->nseen == KAFKA_WARM_TOPICS ||
        (kp->nseen > 0 && strcmp(kp->seen[kp->last_seen], topic) == 0))
        return;
    for (size_t i = 0; i < kp->nseen; i++)
        if (strcmp(kp->seen[i], topic) == 0) {
            kp->last_seen = i;
            return;
        }
    if (kp->brokers_down)
        return;
    v = realloc(kp->seen, (kp->nseen + 1) * sizeof(*v));
    if (!v)
        return;
    kp->seen = v;
    if (!(v[kp->nseen] = strdup(topic)))
        return;
    kp->last_seen = kp->nseen++;
    rkt = rd_kafka_topic_new(kp->rk, topic, NULL);
    if (!rkt)
        return;
    if (rd_kafka_metadata(kp->rk, 0, rkt, &md, KAFKA_WARM_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
}

enum kafka_produce_result kafka_produce_ts(kafka_producer *kp, const char *topic, const void *key,
                                           size_t keylen, const void *value, size_t valuelen,
                                           int64_t timestamp_ms, const kafka_header *headers,
                                           size_t nheaders, uint64_t ticket, char *err,
                                           size_t errlen)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(nheaders);
    rd_kafka_resp_err_t rc;

    if (!hdrs) {
        snprintf(err, errlen, "out of memory for the headers of a message to \"%s\"", topic);
        return KAFKA_PRODUCE_ERROR;
    }
    for (size_t i = 0; i < nheaders; i++) {
        rc = rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                 (ssize_t)headers[i].len);
        if (rc) {
            snprintf(err, errlen, "cannot add header \"%s\": %s", headers[i].name,
                     rd_kafka_err2str(rc));
            rd_kafka_headers_destroy(hdrs);
            return KAFKA_PRODUCE_ERROR;
        }
    }
    /* headers are owned by librdkafka only when producev succeeds */
    rc = rd_kafka_producev(kp->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
                           RD_KAFKA_V_VALUE((void *)value, valuelen),
                           RD_KAFKA_V_TIMESTAMP(timestamp_ms),
                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
                           RD_KAFKA_V_OPAQUE((void *)(uintptr_t)ticket), RD_KAFKA_V_END);
    if (rc == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (kp->outstanding++ == 0)
            kp->progress_ms =
                obx_now_ms(); /* the stall clock starts with the first waiting message */
        warm_topic(kp, topic);
        return KAFKA_PRODUCE_OK;
    }
    rd_kafka_headers_destroy(hdrs);
    if (rc == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return KAFKA_PRODUCE_QUEUE_FULL;
    snprintf(err, errlen, "cannot produce to \"%s\": %s", topic, rd_kafka_err2str(rc));
    switch (rc) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        return KAFKA_PRODUCE_REJECTED;
    default:
        return KAFKA_PRODUCE_ERROR;
    }
}

bool kafka_stalled(int64_t now, int64_t progress_ms, size_t outstanding, int64_t timeout_ms)
{
    return timeout_ms > 0 && outstanding > 0 && now - progress_ms >= timeout_ms;
}

/*
 * No report for message.timeout.ms while messages wait: fail every one of
 * them at once, as timed out.  Nothing of this producer is left to be
 * sent, so what the brokers hold of each partition is a prefix of what was
 * produced to it.  (librdkafka's own per-message timeout fails the oldest
 * messages and then sends the younger ones behind them, under a bumped
 * idempotence epoch: a caller that sends the failed ones again would put
 * them after their successors.)  Their reports are served at once,
 * through the caller's fn (kafka_poll() calls this while it is set).
 */
static void time_out_all(kafka_producer *kp)
{
    snprintf(kp->timeout_reason, sizeof(kp->timeout_reason),
             "no delivery report for %lld ms (message.timeout.ms) with %zu message(s) waiting: "
             "all of them timed out",
             (long long)(obx_now_ms() - kp->progress_ms), kp->outstanding);
    /* the purge reports reach dr_cb only through rd_kafka_poll() below */
    kp->timing_out = kafka_purge(kp) == 0;
    while (rd_kafka_poll(kp->rk, 0) > 0)
        ;
}

int kafka_poll(kafka_producer *kp, kafka_report_fn fn, void *arg, char *err, size_t errlen)
{
    uint64_t junk;

    /* drain first: an enqueue after this read wakes the caller again */
    while (read(kp->efd, &junk, sizeof(junk)) > 0)
        ;
    kp->fn = fn;
    kp->fn_arg = arg;
    kp->served = 0;
    /* the fd only fires when the queue goes from empty to non-empty, so
     * leave nothing behind */
    while (rd_kafka_poll(kp->rk, 0) > 0)
        ;
    if (kp->served > 0)
        kp->progress_ms = obx_now_ms();
    else if (!kp->timing_out &&
             kafka_stalled(obx_now_ms(), kp->progress_ms, kp->outstanding, kp->timeout_ms))
        time_out_all(kp);
    kp->fn = NULL;
    kp->fn_arg = NULL;
    check_fault_over(kp);
    if (kp->fatal) {
        snprintf(err, errlen, "%s", kp->fatal_reason);
        return -1;
    }
    return kp->served;
}

int kafka_purge(kafka_producer *kp)
{
    kp->timing_out = false;
    return rd_kafka_purge(kp->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT) ? -1 : 0;
}

/*
 * Like rd_kafka_flush(), but reports go through fn.  The poll() timeout is
 * capped so that work queued without a wake-up (the fd fires only on an
 * empty-to-non-empty transition) is still served promptly.
 */
int kafka_flush(kafka_producer *kp, int timeout_ms, kafka_report_fn fn, void *arg)
{
    int64_t deadline = obx_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    char err[512];

    for (;;) {
        int64_t left;
        struct pollfd pfd = {.fd = kp->efd, .events = POLLIN};

        if (kafka_poll(kp, fn, arg, err, sizeof(err)) < 0)
            return -1;
        if (rd_kafka_outq_len(kp->rk) == 0)
            return 0;
        left = deadline - obx_now_ms();
        if (left <= 0)
            return -1;
        if (left > 100)
            left = 100;
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            return -1;
    }
}

int kafka_outq_len(const kafka_producer *kp)
{
    return rd_kafka_outq_len(kp->rk);
}

/* ---- the producer as a sink (publish/sink.h) ------------------------------ */

sink *kafka_producer_sink(kafka_producer *kp)
{
    return &kp->base;
}

static enum sink_produce_result ks_produce(sink *sk, const sink_msg *m, uint64_t ticket, char *err,
                                           size_t errlen)
{
    return kafka_produce_ts((kafka_producer *)sk, m->topic, m->key, m->keylen, m->value,
                            m->valuelen, m->timestamp_ms, m->headers, m->nheaders, ticket, err,
                            errlen);
}

static int ks_poll(sink *sk, sink_report_fn fn, void *arg, char *err, size_t errlen)
{
    return kafka_poll((kafka_producer *)sk, fn, arg, err, errlen);
}

static int ks_flush(sink *sk, int timeout_ms, sink_report_fn fn, void *arg)
{
    return kafka_flush((kafka_producer *)sk, timeout_ms, fn, arg);
}

static int ks_purge(sink *sk)
{
    return kafka_purge((kafka_producer *)sk);
}

static int ks_event_fd(const sink *sk)
{
    return kafka_event_fd((const kafka_producer *)sk);
}

static int ks_queue_len(const sink *sk)
{
    return kafka_outq_len((const kafka_producer *)sk);
}

static bool ks_healthy(const sink *sk)
{
    return kafka_brokers_up((const kafka_producer *)sk);
}

const char *kafka_config_fault(const kafka_producer *kp)
{
    return kp->config_fault[0] ? kp->config_fault : NULL;
}

static const char *ks_fault(const sink *sk)
{
    return kafka_config_fault((const kafka_producer *)sk);
}

static void ks_free(sink *sk)
{
    kafka_producer_free((kafka_producer *)sk);
}

/* At least once: no transactions, so begin and commit are no-ops (NULL). */
static const sink_ops kafka_sink_ops = {
    .name = "kafka",
    .produce = ks_produce,
    .poll = ks_poll,
    .flush = ks_flush,
    .purge = ks_purge,
    .event_fd = ks_event_fd,
    .queue_len = ks_queue_len,
    .healthy = ks_healthy,
    .fault = ks_fault,
    .report_header = kafka_report_header,
    .free = ks_free,
};
