/*
 * oneshot — what the one-shot commands (replay, backfill) share: they
 * produce a bounded set of records, wait for every delivery report,
 * dead-letter the records the broker refuses for good (cdc/deadletter.h),
 * and succeed only when each record, or its dead letter, is acknowledged;
 * and their command lines start alike (--dry-run, options they refuse, the
 * argument vector handed on to config_parse()).
 *
 * A oneshot is zeroed, then filled by its command: the sink (owned from
 * then on; NULL in a dry run, where records are only counted), the config
 * (borrowed), the stop flag its signal handler sets, the source of
 * dead-letter records and the hooks; oneshot_init() then sets up the
 * pipeline (cdc/pipeline.h) the command publishes through.
 * oneshot_clear() frees what it owns.  What to read and how to report it
 * stays with the command.
 */
#ifndef CDC_ONESHOT_H
#define CDC_ONESHOT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "decode/errfmt.h"
#include "cdc/config.h"
#include "cdc/deadletter.h"
#include "cdc/pipeline.h"
#include "publish/sink.h"
#include "schema/envelope.h"

/* Topics counted for the final report; records to more are still sent. */
#define ONESHOT_MAX_TOPICS 4096
/* The final flush waits at least this long (or --shutdown-timeout). */
#define ONESHOT_FLUSH_MIN_MS 30000

typedef struct oneshot_topic {
    char *topic; /* owned */
    uint64_t n;
} oneshot_topic;

typedef struct oneshot oneshot;

struct oneshot {
    sink *sk;          /* owned; NULL: dry run, where records are only counted */
    const config *cfg; /* borrowed */
    const volatile sig_atomic_t *stop;
    uint64_t max_inflight_bytes; /* 0: cfg->max_inflight_bytes */
    envelope_source dl_base;     /* source of dead letters for refused records */
    /* The command's hooks, with hooks.arg: begin, commit and before_log
     * as the pipeline's (cdc/pipeline.h; produce, fail and failed are the
     * oneshot's own), and idle, run each pass while waiting for the sink
     * (progress, keepalives).  Any may be NULL. */
    pipeline_hooks hooks;
    void (*idle)(void *arg);
    pipeline p; /* rows -> records; set up by oneshot_init() */

    uint64_t records; /* produced (or counted): events and dead letters */
    uint64_t acked, failed;
    uint64_t inferred; /* among failed: acknowledged without an offset */
    uint64_t inflight_bytes;
    char first_failure[512];
    char fatal[512]; /* set: stop, exit 1; the first reason wins */
    deadletter_queue refused;
    bool draining_refused;
    oneshot_topic *topics;
    size_t ntopics;
};

/*
 * Set up o's pipeline after cfg, stop, hooks, dl_base and (unless a dry
 * run) sk are filled: records go through oneshot_produce(), a failure is
 * oneshot_fatal(), source.db is db (borrowed).
 */
void oneshot_init(oneshot *o, const char *db, bool dry_run);

/*
 * The start every one-shot command shares once its parse returned prc (0
 * go on, 1 help printed, 2 bad usage with err): a usage error is printed;
 * then the log is set up and SIGINT/SIGTERM call handler.  Returns -1 to go
 * on, else the exit code (the caller frees its arguments and returns it).
 */
int oneshot_start(int prc, const char *err, const config *cfg, void (*handler)(int));

/* Free what o owns: flush nothing more (reports still queued are served for
 * 0 ms), the sink, the refused queue, the topic counts.  NULL ok. */
void oneshot_clear(oneshot *o);

/* Record the reason to stop; a later one is ignored. */
void oneshot_fatal(oneshot *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One more record to topic.  Topics past ONESHOT_MAX_TOPICS, or that cannot
 * be copied, go uncounted. */
void oneshot_count_topic(oneshot *o, const char *topic);

/* Count a failed delivery; the first one's text is kept in first_failure. */
void oneshot_note_failure(oneshot *o, const char *topic, const char *errstr);

/*
 * The report callback for sink_poll()/sink_flush(); arg is the oneshot.
 * Delivered: acknowledged.  Refused for good: queued for its dead letter
 * (oneshot_serve()).  Retry -- a failure, or an acknowledgement without an
 * offset, which is not proof of delivery (the rule `run` follows too) --
 * counts as failed: the command ends with exit 1, and running it again is
 * safe.
 */
void oneshot_on_report(const sink_report *rep, void *arg);

/* Serve delivery reports, then dead-letter what the broker refused. */
void oneshot_serve(oneshot *o);

/*
 * Hand m to the sink with ticket, first waiting while --max-inflight
 * records or max_inflight_bytes are unacknowledged (the idle hook runs each
 * pass).  Dry run: count it.  Returns the sink's result; on
 * SINK_PRODUCE_ERROR because of o->fatal or the stop flag, err holds
 * o->fatal.  The topic is counted only when produced.
 */
enum sink_produce_result oneshot_produce(oneshot *o, const envelope_msg *m, uint64_t ticket,
                                         char *err, size_t errlen);

/*
 * Wait until every record is reported and every refused one dead-lettered,
 * at most max(--shutdown-timeout, ONESHOT_FLUSH_MIN_MS) ms and while not
 * stopped nor fatal.  Returns true when drained, and sets *waited_ms to the
 * bound it used.  Sets no reason to stop: the caller says what failed.
 */
bool oneshot_flush(oneshot *o, int *waited_ms);

/* Pure: records acked, none failed, none queued. */
bool oneshot_acked_all(uint64_t records, uint64_t acked, uint64_t failed, int queued);

/* Not fatal, and in a real run oneshot_acked_all() with the sink's queue. */
bool oneshot_complete(const oneshot *o);

/* Records produced but not acknowledged. */
uint64_t oneshot_missing(const oneshot *o);

/* "TOPIC\tCOUNT" lines, in first-seen order. */
void oneshot_print_topics(const oneshot *o, FILE *out);

/* ---- the command line both commands share -------------------------------- */

/*
 * A command's own option at argv[*i]: 1 taken (*i advanced past its
 * value), 0 not one of its own, 2 bad usage (err says the fix).
 */
typedef int (*oneshot_option_fn)(void *arg, int argc, char **argv, int *i, char *err,
                                 size_t errlen);

typedef struct oneshot_cmdline {
    const char *name;           /* "replay": in messages */
    const char *usage;          /* what --help prints */
    const char *const *refused; /* `run` options that do not apply */
    size_t nrefused;
    const char *refused_why;                           /* after "OPTION does not apply to NAME: " */
    oneshot_option_fn option;                          /* the command's own options */
    int (*check)(void *arg, char *err, size_t errlen); /* before config_parse(): 0 or 2;
                                                         NULL: none */
    void *arg;
} oneshot_cmdline;

/*
 * The command line of a one-shot command: --help, --dry-run (*dry_run),
 * the refused options and the command's own through cl, everything else
 * through config_parse() into cfg as for `run`.  *argv_copy (the vector
 * handed to config_parse()) is the caller's to free(), in every case.
 * Returns 0 to go on, 1 when help or version was printed (exit 0), 2 with
 * err naming the fix.
 */
int oneshot_parse(int argc, char **argv, const oneshot_cmdline *cl, bool *dry_run,
                  char ***argv_copy, config *cfg, char *err, size_t errlen);

/* Within an option function: argv[*i] is "--name VALUE" or "--name=VALUE".
 * 1 with *value set (*i advanced), 0 when it is another option, 2 when the
 * value is missing (err set). */
int oneshot_option(int argc, char **argv, int *i, const char *name, const char **value, char *err,
                   size_t errlen);

/* Format the message into err; evaluates to 2 (bad usage). */
#define oneshot_usage_fail(err, errlen, ...) errfmt(err, errlen, 2, __VA_ARGS__)

/* "--name VALUE" or "--name=VALUE": returns the value and advances *i, or
 * NULL when argv[*i] is not that option (*missing when it lacks a value). */
const char *oneshot_opt_value(int argc, char **argv, int *i, const char *name, bool *missing);

/* Pure: the index in names[n] of the option arg is ("--name" or
 * "--name=..."), or -1. */
int oneshot_option_index(const char *arg, const char *const *names, size_t n);

/* The argument vector handed on to config_parse(): "outbox-relay" first and
 * room for argc + 3 more entries (oneshot_argv_dry_run() and the final
 * NULL).  Returns it, or NULL when out of memory; free() it.  Its entries
 * are borrowed. */
char **oneshot_argv_new(int argc);

/* A dry run produces nothing: "-b localhost:9092" goes right after argv[0],
 * so the broker check passes and a -b given later on the line still wins.
 * argv (from oneshot_argv_new) holds n entries; returns the new count. */
int oneshot_argv_dry_run(char **argv, int n);

#endif
