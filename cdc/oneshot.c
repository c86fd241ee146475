#include "cdc/oneshot.h"

#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdc/log.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool stopped(const oneshot *o)
{
    return o->stop && *o->stop;
}

void oneshot_clear(oneshot *o)
{
    if (!o)
        return;
    if (o->kp && kafka_flush(o->kp, 0, oneshot_on_report, o) != 0)
        log_debug("%d messages unacknowledged at exit", kafka_outq_len(o->kp));
    kafka_producer_free(o->kp);
    o->kp = NULL;
    deadletter_queue_clear(&o->refused);
    for (size_t i = 0; i < o->ntopics; i++)
        free(o->topics[i].topic);
    free(o->topics);
    o->topics = NULL;
    o->ntopics = 0;
}

void oneshot_fatal(oneshot *o, const char *fmt, ...)
{
    va_list ap;
    if (o->fatal[0])
        return;
    va_start(ap, fmt);
    vsnprintf(o->fatal, sizeof(o->fatal), fmt, ap);
    va_end(ap);
}

void oneshot_count_topic(oneshot *o, const char *topic)
{
    for (size_t i = 0; i < o->ntopics; i++)
        if (strcmp(o->topics[i].topic, topic) == 0) {
            o->topics[i].n++;
            return;
        }
    if (o->ntopics == ONESHOT_MAX_TOPICS)
        return;
    oneshot_topic *v = realloc(o->topics, (o->ntopics + 1) * sizeof(*v));
    if (!v)
        return;
    o->topics = v;
    v[o->ntopics].topic = strdup(topic);
    v[o->ntopics].n = 1;
    if (v[o->ntopics].topic)
        o->ntopics++;
}

void oneshot_note_failure(oneshot *o, const char *topic, const char *errstr)
{
    if (o->failed++ == 0)
        snprintf(o->first_failure, sizeof(o->first_failure), "delivery to \"%s\" failed: %s",
                 topic ? topic : "?", errstr ? errstr : "unknown error");
}

void oneshot_on_report(const kafka_report *rep, void *arg)
{
    oneshot *o = arg;

    o->inflight_bytes = rep->len > o->inflight_bytes ? 0 : o->inflight_bytes - rep->len;
    switch (deadletter_classify(rep)) {
    case DEADLETTER_ACKED: o->acked++; break;
    case DEADLETTER_ACKED_NO_OFFSET:
        o->acked++;
        o->acked_no_offset++;
        break;
    case DEADLETTER_REFUSED:
        /* its dead-letter record's delivery will count for it */
        if (deadletter_queue_report(&o->refused, rep, 0) != 0)
            oneshot_note_failure(o, rep->topic, rep->errstr);
        break;
    case DEADLETTER_FAILED:
        oneshot_note_failure(o, rep->topic, rep->errstr);
        break;
    }
}

/* Dead-letter the records the broker refused for good, as the daemon does
 * (deadletter_build), with the refused record's ticket. */
static void dead_letter_refused(oneshot *o)
{
    deadletter_refused *f;

    o->draining_refused = true;
    while (!o->fatal[0] && (f = deadletter_queue_pop(&o->refused))) {
        envelope_msg m = {0};
        char err[512];

        if (o->hooks.refused)
            o->hooks.refused(o->hooks.arg, f);
        if (deadletter_build(f, o->cfg->dlq_topic, &o->dl_base, &m, err, sizeof(err)) != 0) {
            oneshot_fatal(o, "cannot build dead-letter record: %s", err);
        } else {
            enum kafka_produce_result pr =
                oneshot_produce(o, &m, f->ticket | DEADLETTER_TICKET, err, sizeof(err));
            if (o->hooks.dead_lettered)
                o->hooks.dead_lettered(o->hooks.arg, f, pr, err);
        }
        envelope_msg_clear(&m);
        deadletter_refused_free(f);
    }
    o->draining_refused = false;
}

void oneshot_serve(oneshot *o)
{
    char err[512];
    if (o->kp && kafka_poll(o->kp, oneshot_on_report, o, err, sizeof(err)) < 0)
        oneshot_fatal(o, "producer failed: %s", err);
    /* Not from inside dead_letter_refused(): its own produce waits here. */
    if (!deadletter_queue_empty(&o->refused) && !o->draining_refused)
        dead_letter_refused(o);
}

enum kafka_produce_result oneshot_produce(oneshot *o, const envelope_msg *m, uint64_t ticket,
                                          char *err, size_t errlen)
{
    kafka_header hdrs[ENVELOPE_MAX_HEADERS];
    uint64_t max_bytes;
    enum kafka_produce_result pr;

    if (!o->kp) {
        oneshot_count_topic(o, m->topic);
        return KAFKA_PRODUCE_OK;
    }
    max_bytes = o->max_inflight_bytes ? o->max_inflight_bytes : o->cfg->max_inflight_bytes;
    for (int i = 0; i < m->nheaders; i++) {
        hdrs[i].name = m->headers[i].name;
        hdrs[i].value = m->headers[i].value;
        hdrs[i].len = m->headers[i].len;
    }
    for (;;) {
        /* Bounded like the relay: at the bound wait for reports. */
        bool full = kafka_outq_len(o->kp) >= (int)o->cfg->max_inflight_events ||
                    o->inflight_bytes >= max_bytes;
        if (o->fatal[0]) {
            snprintf(err, errlen, "%s", o->fatal);
            return KAFKA_PRODUCE_ERROR;
        }
        if (!full) {
            pr = kafka_produce_ts(o->kp, m->topic, m->key, m->keylen, m->value, m->valuelen,
                                  m->timestamp_ms, hdrs, (size_t)m->nheaders, ticket, err, errlen);
            if (pr != KAFKA_PRODUCE_QUEUE_FULL)
                break;
        }
        if (stopped(o)) {
            oneshot_fatal(o, "interrupted");
            snprintf(err, errlen, "%s", o->fatal);
            return KAFKA_PRODUCE_ERROR;
        }
        struct pollfd pfd = {.fd = kafka_event_fd(o->kp), .events = POLLIN};
        (void)poll(&pfd, 1, 100);
        oneshot_serve(o);
        if (o->hooks.idle)
            o->hooks.idle(o->hooks.arg);
    }
    if (pr == KAFKA_PRODUCE_OK) {
        o->inflight_bytes += m->valuelen + m->keylen;
        oneshot_count_topic(o, m->topic);
    }
    return pr;
}

bool oneshot_flush(oneshot *o, int *waited_ms)
{
    int wait = o->cfg->shutdown_timeout_ms > ONESHOT_FLUSH_MIN_MS ? o->cfg->shutdown_timeout_ms
                                                                  : ONESHOT_FLUSH_MIN_MS;
    int64_t deadline = now_ms() + wait;

    if (waited_ms)
        *waited_ms = wait;
    /* Refused records are dead-lettered as their reports arrive, which
     * produces more: flush until nothing is queued nor waiting. */
    while (o->kp && !o->fatal[0] && !stopped(o) && now_ms() < deadline) {
        if (kafka_flush(o->kp, 200, oneshot_on_report, o) == 0 &&
            deadletter_queue_empty(&o->refused))
            return true;
        oneshot_serve(o);
        if (o->hooks.idle)
            o->hooks.idle(o->hooks.arg);
    }
    return false;
}

bool oneshot_acked_all(uint64_t records, uint64_t acked, uint64_t failed, int queued)
{
    return queued <= 0 && failed == 0 && acked >= records;
}

bool oneshot_complete(const oneshot *o)
{
    if (o->fatal[0])
        return false;
    return !o->kp || oneshot_acked_all(o->records, o->acked, o->failed, kafka_outq_len(o->kp));
}

uint64_t oneshot_missing(const oneshot *o)
{
    return o->acked < o->records ? o->records - o->acked : 0;
}

void oneshot_print_topics(const oneshot *o, FILE *out)
{
    for (size_t i = 0; i < o->ntopics; i++)
        fprintf(out, "%s\t%llu\n", o->topics[i].topic, (unsigned long long)o->topics[i].n);
}

void oneshot_warn_inferred(const oneshot *o)
{
    if (o->acked_no_offset)
        log_warn("%llu record(s) were acknowledged without an offset (inferred by the producer "
                 "from a later acknowledgement): sound on a Kafka broker, which enforces "
                 "idempotent sequences; if yours may not, run it again to be sure (consumers "
                 "deduplicate on id)",
                 (unsigned long long)o->acked_no_offset);
}

int oneshot_usage_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return 2;
}

const char *oneshot_opt_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
    size_t n = strlen(name);
    const char *arg = argv[*i];

    *missing = false;
    if (strncmp(arg, name, n) != 0)
        return NULL;
    if (arg[n] == '=')
        return arg + n + 1;
    if (arg[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    (*i)++;
    return argv[*i];
}

int oneshot_option_index(const char *arg, const char *const *names, size_t n)
{
    for (size_t r = 0; r < n; r++) {
        size_t rl = strlen(names[r]);
        if (strncmp(arg, names[r], rl) == 0 && (arg[rl] == '\0' || arg[rl] == '='))
            return (int)r;
    }
    return -1;
}

char **oneshot_argv_new(int argc)
{
    static char argv0[] = "outbox-relay";
    char **v = calloc((size_t)argc + 4, sizeof(char *));

    if (v)
        v[0] = argv0;
    return v;
}

int oneshot_argv_dry_run(char **argv, int n)
{
    static char dry_b[] = "-b", dry_brokers[] = "localhost:9092";

    memmove(argv + 3, argv + 1, (size_t)(n - 1) * sizeof(char *));
    argv[1] = dry_b;
    argv[2] = dry_brokers;
    return n + 2;
}

void oneshot_signals(void (*handler)(int))
{
    struct sigaction sa = {0};

    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}
