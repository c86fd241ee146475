#include "cdc/oneshot.h"

#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "publish/clock.h"
#include "cdc/log.h"
#include "cdc/reload.h"

static bool stopped(const oneshot *o)
{
    return o->stop && *o->stop;
}

void oneshot_clear(oneshot *o)
{
    if (!o)
        return;
    if (o->sk && sink_flush(o->sk, 0, oneshot_on_report, o) != 0)
        log_debug("%d messages unacknowledged at exit", sink_queue_len(o->sk));
    sink_free(o->sk);
    o->sk = NULL;
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

void oneshot_on_report(const sink_report *rep, void *arg)
{
    oneshot *o = arg;

    o->inflight_bytes = rep->len > o->inflight_bytes ? 0 : o->inflight_bytes - rep->len;
    switch (deadletter_classify(rep)) {
    case SINK_DELIVERED:
        o->acked++;
        break;
    case SINK_REFUSED:
        /* its dead-letter record's delivery will count for it */
        if (deadletter_queue_report(&o->refused, rep, 0) != 0)
            oneshot_note_failure(o, rep->topic, "out of memory keeping a refused record");
        break;
    case SINK_RETRY:
        if (rep->inferred) {
            o->inferred++;
            oneshot_note_failure(o, rep->topic,
                                 "acknowledged without an offset (inferred by the producer, not "
                                 "proof it was written)");
        } else {
            oneshot_note_failure(o, rep->topic, rep->errstr);
        }
        break;
    }
}

void oneshot_serve(oneshot *o)
{
    char err[512];

    if (reload_pending())
        reload_apply(o->cfg);
    if (o->sk && sink_poll(o->sk, oneshot_on_report, o, err, sizeof(err)) < 0)
        oneshot_fatal(o, "producer failed: %s", err);
    /* Not from inside the dead-lettering: its own produce waits here. */
    if (!deadletter_queue_empty(&o->refused) && !o->draining_refused) {
        o->draining_refused = true;
        pipeline_dead_letter_refused(&o->p, &o->refused, 0, &o->dl_base);
        o->draining_refused = false;
    }
}

enum sink_produce_result oneshot_produce(oneshot *o, const envelope_msg *m, uint64_t ticket,
                                         char *err, size_t errlen)
{
    sink_header hdrs[ENVELOPE_MAX_HEADERS];
    sink_msg sm;
    uint64_t max_bytes;
    enum sink_produce_result pr;

    if (!o->sk) {
        oneshot_count_topic(o, m->topic);
        return SINK_PRODUCE_OK;
    }
    pipeline_sink_msg(m, hdrs, &sm);
    max_bytes = o->max_inflight_bytes ? o->max_inflight_bytes : o->cfg->max_inflight_bytes;
    for (;;) {
        /* Bounded like the relay: at the bound wait for reports. */
        bool full = sink_queue_len(o->sk) >= (int)o->cfg->max_inflight_events ||
                    o->inflight_bytes >= max_bytes;
        if (o->fatal[0]) {
            snprintf(err, errlen, "%s", o->fatal);
            return SINK_PRODUCE_ERROR;
        }
        if (!full) {
            pr = sink_produce(o->sk, &sm, ticket, err, errlen);
            if (pr != SINK_PRODUCE_QUEUE_FULL)
                break;
        }
        if (stopped(o)) {
            oneshot_fatal(o, "interrupted");
            snprintf(err, errlen, "%s", o->fatal);
            return SINK_PRODUCE_ERROR;
        }
        struct pollfd pfd = {.fd = sink_event_fd(o->sk), .events = POLLIN};
        (void)poll(&pfd, 1, 100);
        oneshot_serve(o);
        if (o->idle)
            o->idle(o->hooks.arg);
    }
    if (pr == SINK_PRODUCE_OK) {
        o->inflight_bytes += m->valuelen + m->keylen;
        oneshot_count_topic(o, m->topic);
    }
    return pr;
}

/* ---- the pipeline's hooks: records go through oneshot_produce() ------------ */

static enum sink_produce_result hook_produce(void *arg, const envelope_msg *m, uint64_t dl_ticket,
                                             char *err, size_t errlen)
{
    oneshot *o = arg;
    /* a refused record's dead letter stands for a record already counted */
    enum sink_produce_result pr =
        oneshot_produce(o, m, dl_ticket ? dl_ticket : o->records + 1, err, errlen);

    if (pr == SINK_PRODUCE_OK && !dl_ticket)
        o->records++;
    return pr;
}

static void hook_fail(void *arg, const char *reason)
{
    oneshot_fatal(arg, "%s", reason);
}

static bool hook_failed(void *arg)
{
    const oneshot *o = arg;
    return o->fatal[0] != '\0';
}

static enum pipeline_txn hook_begin(void *arg, const pgo_begin *b)
{
    oneshot *o = arg;
    return o->hooks.begin ? o->hooks.begin(o->hooks.arg, b) : PIPELINE_TXN_PUBLISH;
}

static void hook_commit(void *arg, const pgo_commit *c)
{
    oneshot *o = arg;
    if (o->hooks.commit)
        o->hooks.commit(o->hooks.arg, c);
}

static void hook_before_log(void *arg)
{
    oneshot *o = arg;
    if (o->hooks.before_log)
        o->hooks.before_log(o->hooks.arg);
}

void oneshot_init(oneshot *o, const char *db, bool dry_run)
{
    o->p = (pipeline){.cfg = o->cfg,
                      .sk = o->sk,
                      .db = db,
                      .dry_run = dry_run,
                      .hooks = {.produce = hook_produce,
                                .fail = hook_fail,
                                .failed = hook_failed,
                                .begin = hook_begin,
                                .commit = hook_commit,
                                .before_log = hook_before_log,
                                .arg = o}};
}

bool oneshot_flush(oneshot *o, int *waited_ms)
{
    int wait = o->cfg->shutdown_timeout_ms > ONESHOT_FLUSH_MIN_MS ? o->cfg->shutdown_timeout_ms
                                                                  : ONESHOT_FLUSH_MIN_MS;
    int64_t deadline = obx_now_ms() + wait;

    if (waited_ms)
        *waited_ms = wait;
    /* Refused records are dead-lettered as their reports arrive, which
     * produces more: flush until nothing is queued nor waiting. */
    while (o->sk && !o->fatal[0] && !stopped(o) && obx_now_ms() < deadline) {
        if (sink_flush(o->sk, 200, oneshot_on_report, o) == 0 &&
            deadletter_queue_empty(&o->refused))
            return true;
        oneshot_serve(o);
        if (o->idle)
            o->idle(o->hooks.arg);
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
    return !o->sk || oneshot_acked_all(o->records, o->acked, o->failed, sink_queue_len(o->sk));
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

int oneshot_start(int prc, const char *err, const config *cfg, void (*handler)(int))
{
    if (prc != 0) {
        if (prc == 2)
            fprintf(stderr, "outbox-relay: %s\n", err);
        return prc == 1 ? 0 : 2;
    }
    log_setup(cfg->log_level, cfg->log_json);
    reload_all_signals(handler);
    return -1;
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

int oneshot_option(int argc, char **argv, int *i, const char *name, const char **value, char *err,
                   size_t errlen)
{
    bool missing;

    *value = oneshot_opt_value(argc, argv, i, name, &missing);
    if (*value)
        return 1;
    if (missing)
        return oneshot_usage_fail(err, errlen, "option \"%s\" needs a value (see --help)", name);
    return 0;
}

int oneshot_parse(int argc, char **argv, const oneshot_cmdline *cl, bool *dry_run,
                  char ***argv_copy, config *cfg, char *err, size_t errlen)
{
    char **v = oneshot_argv_new(argc);
    int n = 1, r;

    *argv_copy = v;
    if (!v)
        return oneshot_usage_fail(err, errlen, "out of memory");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0) {
            fputs(cl->usage, stdout);
            return 1;
        }
        if (strcmp(argv[i], "--dry-run") == 0) {
            *dry_run = true;
            continue;
        }
        r = oneshot_option_index(argv[i], cl->refused, cl->nrefused);
        if (r >= 0)
            return oneshot_usage_fail(err, errlen, "%s does not apply to %s: %s", cl->refused[r],
                                      cl->name, cl->refused_why);
        r = cl->option(cl->arg, argc, argv, &i, err, errlen);
        if (r == 2)
            return 2;
        if (r == 0)
            v[n++] = argv[i];
    }
    if (cl->check && cl->check(cl->arg, err, errlen) != 0)
        return 2;
    if (*dry_run)
        n = oneshot_argv_dry_run(v, n);
    v[n] = NULL;
    switch (config_parse(n, v, cfg, err, errlen)) {
    case CONFIG_OK:
        return 0;
    case CONFIG_EXIT:
        return 1;
    case CONFIG_USAGE:
    default:
        return 2;
    }
}
