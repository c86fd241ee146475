/*
 * kafka — the Kafka producer: configuration pass-through, produce with a
 * ticket, delivery reports on an event fd, purge and flush.
 *
 * Knows nothing of PostgreSQL.  Each produced message carries a caller
 * ticket (a uint64_t: the watermark's transaction ticket); its delivery
 * report comes back exactly once, from kafka_poll() on the caller's thread.
 * The producer is idempotent with acks=all and the murmur2_random
 * partitioner (Java-client compatible) unless the caller's -X overrides.
 */
#ifndef PUBLISH_KAFKA_H
#define PUBLISH_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "decode/compiler.h"
#include "publish/sink.h"

typedef struct kafka_producer kafka_producer;

/* The sink's own types: a Kafka producer is a sink (publish/sink.h). */
typedef sink_prop kafka_prop;
typedef sink_header kafka_header;
typedef sink_report kafka_report;
typedef sink_report_fn kafka_report_fn;
typedef sink_log_fn kafka_log_fn;

/*
 * Validate configuration without connecting: every property name and value
 * must be accepted by librdkafka.  Returns 0, or -1 with err naming the
 * property and the fix ("-X list shows every property").
 */
int kafka_config_check(const char *brokers, const kafka_prop *props, size_t nprops, char *err,
                       size_t errlen) OBX_WUR;

/*
 * The librdkafka configuration the producer would be created with: the
 * relay's defaults, brokers, then props.  NULL with err on a refused
 * property.  The caller owns it (rd_kafka_conf_destroy, or rd_kafka_new).
 */
struct rd_kafka_conf_s *kafka_conf_new(const char *brokers, const kafka_prop *props, size_t nprops,
                                       char *err, size_t errlen) OBX_WUR;

/*
 * Create the producer.  brokers may be NULL when props set
 * bootstrap.servers.  Returns NULL with err on failure.
 */
kafka_producer *kafka_producer_new(const char *brokers, const kafka_prop *props, size_t nprops,
                                   char *err, size_t errlen) OBX_WUR;

/* Flushes nothing: call kafka_flush() first when delivery matters. NULL ok. */
void kafka_producer_free(kafka_producer *kp);

/* The producer as a sink (the same object: sink_free() frees it). */
sink *kafka_producer_sink(kafka_producer *kp);

/* Readable when delivery reports (or errors) wait: poll() it, then kafka_poll(). */
int kafka_event_fd(const kafka_producer *kp);

/* The sink's results (publish/sink.h), under the producer's names. */
#define kafka_produce_result sink_produce_result
#define KAFKA_PRODUCE_OK SINK_PRODUCE_OK
#define KAFKA_PRODUCE_QUEUE_FULL SINK_PRODUCE_QUEUE_FULL
#define KAFKA_PRODUCE_ERROR SINK_PRODUCE_ERROR
#define KAFKA_PRODUCE_REJECTED SINK_PRODUCE_REJECTED

/*
 * Enqueue one message.  value is copied.  ticket comes back in the
 * delivery report.  On anything but KAFKA_PRODUCE_OK no delivery report
 * will come.
 */
enum kafka_produce_result kafka_produce(kafka_producer *kp, const char *topic, const void *key,
                                        size_t keylen, const void *value, size_t valuelen,
                                        const kafka_header *headers, size_t nheaders,
                                        uint64_t ticket, char *err, size_t errlen) OBX_WUR;

/*
 * kafka_produce() with a message timestamp (milliseconds since the Unix
 * epoch; 0 = the producer stamps the time).  value NULL with valuelen 0
 * produces a NULL value (a tombstone).
 */
enum kafka_produce_result kafka_produce_ts(kafka_producer *kp, const char *topic, const void *key,
                                           size_t keylen, const void *value, size_t valuelen,
                                           int64_t timestamp_ms, const kafka_header *headers,
                                           size_t nheaders, uint64_t ticket, char *err,
                                           size_t errlen) OBX_WUR;

/*
 * The first header called name of the reported message: 0 with *value and
 * *len set, or -1 when it has none.  Only during the report callback.
 */
int kafka_report_header(const kafka_report *rep, const char *name, const void **value, size_t *len);

/*
 * Serve everything waiting without blocking: call fn once per delivery
 * report.  Returns the number of reports served, or -1 when the producer hit
 * a fatal error (idempotence broken, e.g.): err says why and the producer
 * must be purged and recreated.
 *
 * Also enforces message.timeout.ms (see kafka_stalled()): call it at least
 * about once a second while messages wait, even when the event fd stays
 * quiet.  When it fires, every waiting message is reported at once with
 * RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.
 */
int kafka_poll(kafka_producer *kp, kafka_report_fn fn, void *arg, char *err, size_t errlen) OBX_WUR;

/*
 * The producer's delivery timeout, a pure decision: messages wait
 * (outstanding > 0) and no delivery report came for timeout_ms since
 * progress_ms (the last report served, or the produce that found nothing
 * waiting).  timeout_ms 0 never times out.
 *
 * message.timeout.ms (alias delivery.timeout.ms, default 300000) means
 * this here, not librdkafka's per-message timeout, which is turned off:
 * that one fails the oldest messages of a partition and then sends the
 * younger ones behind them, so a caller that sends the failed ones again
 * puts them after their successors (per-aggregate order broken).  Failing
 * everything at once leaves nothing to overtake.
 */
bool kafka_stalled(int64_t now_ms, int64_t progress_ms, size_t outstanding, int64_t timeout_ms);

/* Purge queued and in-flight messages; their reports then arrive with an
 * error via kafka_poll().  Returns 0 or -1. */
int kafka_purge(kafka_producer *kp) OBX_WUR;

/*
 * Wait up to timeout_ms for every message to be delivered, serving reports
 * through fn.  Returns 0 when the queue drained, -1 on timeout.
 */
int kafka_flush(kafka_producer *kp, int timeout_ms, kafka_report_fn fn, void *arg) OBX_WUR;

/*
 * Whether the brokers look reachable: false from librdkafka's "all brokers
 * down" error until the next successful delivery.  Error events arrive
 * through kafka_poll(), so this is as fresh as the last poll.
 */
bool kafka_brokers_up(const kafka_producer *kp);

/* The names an authentication or TLS failure concerns (none secret; NULL
 * or "" when unset). */
typedef struct kafka_security {
    const char *protocol;    /* security.protocol */
    const char *mechanism;   /* sasl.mechanisms */
    const char *username;    /* sasl.username */
    const char *ca_location; /* ssl.ca.location */
} kafka_security;

/*
 * Whether a librdkafka error (err, reason) is a configuration problem of
 * the connection (credentials refused, a certificate not trusted, a
 * mechanism or protocol the brokers do not speak); then out gets one
 * sentence that names the -X property to fix.  It never contains a
 * password (it is given none).
 */
bool kafka_explain_error(int err, const char *reason, const kafka_security *sec, char *out,
                         size_t len);

/* The explained configuration fault while it lasts, or NULL. */
const char *kafka_config_fault(const kafka_producer *kp);

/* Messages queued or in flight. */
int kafka_outq_len(const kafka_producer *kp);

/* Print every librdkafka property (what `-X list` shows). */
void kafka_list_properties(FILE *out);

/* Where librdkafka's own log lines go: level is syslog-style. */
void kafka_set_logger(kafka_log_fn fn);

#endif
