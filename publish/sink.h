/*
 * sink — where events go: the one interface cdc/ produces through.
 *
 * A sink takes messages with a caller ticket (a uint64_t) and later reports
 * each one exactly once, from sink_poll() or sink_flush() on the caller's
 * thread, with a verdict: delivered (durable: the caller may confirm what
 * it stands for), refused for good (the message itself can never be
 * written: dead-letter it), or retry (not proof of delivery: send it again
 * or give up).  cdc/ sees only this header; the implementation's own types
 * (librdkafka's) stay in publish/.
 *
 * Implementations: publish/kafka.c (the at-least-once idempotent Kafka
 * producer).  A new sink is one file that fills a sink_ops table and one
 * case in sink_open().  A transactional (exactly-once) sink implements
 * begin/commit; the at-least-once one leaves them NULL (no-ops), so the
 * event loop calls sink_begin()/sink_commit() at every transaction boundary
 * without knowing which sink it has.
 *
 * sink_open() returns a sink the caller owns and frees with sink_free().
 * Reports, and everything they point to, are borrowed: valid only during
 * the report callback.
 */
#ifndef PUBLISH_SINK_H
#define PUBLISH_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "decode/compiler.h"

typedef struct sink sink;

/* A configuration property passed through to the implementation (-X). */
typedef struct sink_prop {
    const char *name;
    const char *value;
} sink_prop;

typedef struct sink_header {
    const char *name;
    const void *value;
    size_t len;
} sink_header;

/* One message to produce; everything is borrowed and copied by the sink. */
typedef struct sink_msg {
    const char *topic;
    const void *key;
    size_t keylen;
    const void *value; /* NULL with valuelen 0: a NULL value (a tombstone) */
    size_t valuelen;
    int64_t timestamp_ms; /* since the Unix epoch; 0: the sink stamps the time */
    const sink_header *headers;
    size_t nheaders;
} sink_msg;

enum sink_produce_result {
    SINK_PRODUCE_OK = 0,
    SINK_PRODUCE_QUEUE_FULL = 1, /* not a failure: poll and retry */
    SINK_PRODUCE_ERROR = -1,     /* the sink cannot take messages (fatal error, out of
                                    memory): err says why; start over with a new sink */
    SINK_PRODUCE_REJECTED = -2,  /* this message can never be produced (too large, a topic
                                    or partition that cannot exist): err says why */
};

/* What a delivery report means for the message it is about. */
enum sink_verdict {
    SINK_DELIVERED, /* written, at a known position: durable */
    SINK_REFUSED,   /* refused for good: the message itself is at fault */
    SINK_RETRY,     /* not proof it was written (failed, or acknowledged without a
                       position): send it again, or give up */
};

typedef struct sink_report {
    uint64_t ticket;
    enum sink_verdict verdict;
    bool inferred; /* acknowledged without a position: inferred by the producer, verdict
                      SINK_RETRY */
    int err;       /* the implementation's error code; 0 = acknowledged */
    const char *errstr;
    bool permanent; /* err is about this message itself, not the path to the broker */
    int32_t partition;
    int64_t offset;
    size_t len; /* key + value bytes of the message (the caller's in-flight byte count) */
    /* The message itself, borrowed: valid only during the report callback. */
    const char *topic;
    const void *key;
    size_t keylen;
    const void *value;
    size_t valuelen;
    const sink *from; /* the sink that reported it (NULL: none, no headers) */
    const void *msg;  /* the implementation's message, for sink_report_header() */
} sink_report;

typedef void (*sink_report_fn)(const sink_report *rep, void *arg);

/*
 * Pure: the verdict on a report (acknowledged or not, the position it was
 * written at, negative when unknown, and whether an error is about the
 * message itself).  An acknowledgement without a position is not proof.
 */
enum sink_verdict sink_classify(bool acknowledged, int64_t offset, bool permanent);

/* What an implementation provides; NULL begin/commit are no-ops. */
typedef struct sink_ops {
    const char *name;
    enum sink_produce_result (*produce)(sink *sk, const sink_msg *m, uint64_t ticket, char *err,
                                        size_t errlen);
    int (*poll)(sink *sk, sink_report_fn fn, void *arg, char *err, size_t errlen);
    int (*flush)(sink *sk, int timeout_ms, sink_report_fn fn, void *arg);
    int (*purge)(sink *sk);
    int (*event_fd)(const sink *sk);
    int (*queue_len)(const sink *sk);
    bool (*healthy)(const sink *sk);
    const char *(*fault)(const sink *sk); /* optional */
    int (*report_header)(const sink_report *rep, const char *name, const void **value, size_t *len);
    int (*begin)(sink *sk, char *err, size_t errlen);
    int (*commit)(sink *sk, char *err, size_t errlen);
    void (*free)(sink *sk);
} sink_ops;

/* The first member of every implementation's struct. */
struct sink {
    const sink_ops *ops;
};

/*
 * Validate configuration without connecting: every property name and value
 * must be accepted.  Returns 0, or -1 with err naming the property and the
 * fix.
 */
int sink_config_check(const char *brokers, const sink_prop *props, size_t nprops, char *err,
                      size_t errlen) OBX_WUR;

/* Create the sink (today: the Kafka producer).  brokers may be NULL when
 * props set them.  Returns NULL with err on failure. */
sink *sink_open(const char *brokers, const sink_prop *props, size_t nprops, char *err,
                size_t errlen) OBX_WUR;

/* Flushes nothing: call sink_flush() first when delivery matters. NULL ok. */
void sink_free(sink *sk);

/* Enqueue one message; ticket comes back in its report.  On anything but
 * SINK_PRODUCE_OK no report will come. */
enum sink_produce_result sink_produce(sink *sk, const sink_msg *m, uint64_t ticket, char *err,
                                      size_t errlen) OBX_WUR;

/* Serve every waiting report through fn without blocking.  Returns how many
 * were served, or -1 when the sink failed for good (err says why): purge
 * it and open a new one.  Call it about once a second while messages wait,
 * even when the event fd stays quiet (timeouts are enforced here). */
int sink_poll(sink *sk, sink_report_fn fn, void *arg, char *err, size_t errlen) OBX_WUR;

/* Wait up to timeout_ms for every message to be reported, serving reports
 * through fn.  0 when nothing is left, -1 on timeout. */
int sink_flush(sink *sk, int timeout_ms, sink_report_fn fn, void *arg) OBX_WUR;

/* Drop queued and in-flight messages; their reports (verdict retry) arrive
 * through the next poll.  0 or -1. */
int sink_purge(sink *sk) OBX_WUR;

/* Readable when reports wait: poll() it, then sink_poll(). */
int sink_event_fd(const sink *sk);

/* Messages queued or in flight. */
int sink_queue_len(const sink *sk);

/* Whether the destination looks reachable, as of the last poll. */
bool sink_healthy(const sink *sk);

/* A configuration fault of the path to the brokers (credentials refused, a
 * certificate not trusted) while it lasts, naming what to fix; NULL when
 * none or the sink cannot tell. */
const char *sink_fault(const sink *sk);

/* The first header called name of the reported message: 0 with *value and
 * *len set, or -1 when it has none.  Only during the report callback. */
int sink_report_header(const sink_report *rep, const char *name, const void **value, size_t *len);

/*
 * Transaction boundaries: every message produced between sink_begin() and
 * sink_commit() stands for one source transaction.  The at-least-once sink
 * does nothing; a transactional sink opens and commits its own transaction.
 * 0, or -1 with err (the sink must be purged and reopened).
 */
int sink_begin(sink *sk, char *err, size_t errlen) OBX_WUR;
int sink_commit(sink *sk, char *err, size_t errlen) OBX_WUR;

/* Print every configuration property (what `-X list` shows). */
void sink_list_properties(FILE *out);

/* Where the implementation's own log lines go: level is syslog-style. */
typedef void (*sink_log_fn)(int level, const char *fac, const char *msg);
void sink_set_logger(sink_log_fn fn);

#endif
