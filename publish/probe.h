/*
 * probe — what `outbox-relay check` asks the brokers, with the producer
 * configuration the relay would run with: are they reachable, is idempotent
 * production possible, which topics exist, would a missing one be created
 * on first use, and how large may a message be.  Knows nothing of
 * PostgreSQL; connects, asks, disconnects, produces nothing.
 */
#ifndef PUBLISH_PROBE_H
#define PUBLISH_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "publish/kafka.h"

typedef struct probe_topic {
    const char *name; /* borrowed */
    bool exists;
    int64_t max_message_bytes; /* the topic's max.message.bytes; -1: unknown */
} probe_topic;

typedef struct probe_result {
    bool reachable; /* a metadata request was answered */
    int nbrokers;
    char reach_err[512];
    bool idempotence;         /* enable.idempotence in the effective configuration */
    char fatal[512];          /* a fatal producer error raised while probing; "" none */
    char idemp_state[32];     /* the idempotent producer's last state ("Assigned": it holds a
                                 producer id); "" unknown */
    bool client_auto_create;  /* allow.auto.create.topics */
    int broker_auto_create;   /* the broker's auto.create.topics.enable: 1, 0, -1 unknown */
    int64_t client_max_bytes; /* message.max.bytes of the producer */
    int64_t broker_max_bytes; /* the broker's message.max.bytes; -1 unknown */
    char describe_err[256];   /* why the broker's configuration is unknown */
} probe_result;

/*
 * Probe the brokers (brokers may be NULL when props set bootstrap.servers)
 * within about timeout_ms for each request, filling out and each topic's
 * exists and max_message_bytes.  Returns 0 (unreachable brokers are a
 * result, not an error), or -1 with err when the configuration is refused
 * or resources are short.
 */
int probe_brokers(const char *brokers, const kafka_prop *props, size_t nprops, probe_topic *topics,
                  size_t ntopics, int timeout_ms, probe_result *out, char *err,
                  size_t errlen) OBX_WUR;

#endif
