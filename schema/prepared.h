/*
 * prepared — one outbox row checked once for every format: the identity
 * fields present and UTF-8, the timestamp parsed and formatted, the payload
 * classified (JSON embedded as it is, other text, bytea decoded, NULL), the
 * traceparent checked.  Formats read a prepared row and never re-check it.
 *
 * A prepared row borrows the outbox row's text; it owns only the decoded
 * bytes of a bytea payload, released by prepared_free().
 */
#ifndef SCHEMA_PREPARED_H
#define SCHEMA_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/compiler.h"
#include "decode/lsn.h"
#include "decode/outbox.h"
#include "schema/envelope.h"
#include "schema/jsonw.h"

enum prepared_payload {
    PREPARED_NULL,   /* SQL NULL */
    PREPARED_JSON,   /* validated JSON text, embedded as it is */
    PREPARED_TEXT,   /* text that is not JSON: a JSON string */
    PREPARED_BINARY, /* bytea, decoded into bytes */
};

typedef struct prepared {
    enum prepared_payload pl;
    const char *pdata; /* PREPARED_JSON / _TEXT: borrowed; PREPARED_BINARY: bin */
    size_t plen;
    unsigned char *bin;  /* owned */
    bool payload_blank;  /* NULL, or text that is empty or only spaces */
    int64_t occurred_us; /* Unix microseconds */
    char occurred[PGTIME_BUFSZ];
    size_t occurred_len;
    bool traceparent; /* the row has a valid one: tp[0..tplen) */
    const char *tp;
    size_t tplen;
} prepared;

/*
 * Prepare row; commit_ts (PostgreSQL epoch microseconds) stands in for a
 * missing timestamp.  A malformed traceparent is dropped (p->traceparent
 * false), not refused.  With dbz (the debezium format), as Debezium's
 * EventRouter: type and aggregate id may be absent; a timestamp column
 * without time zone is read as UTC and an integer one as Unix
 * milliseconds; a traceparent may also be Java Properties text with a
 * traceparent= line (Debezium's tracingspancontext).  Returns 0, or -1 with
 * the poison reason, or out of memory (errno ENOMEM).  Call prepared_free()
 * either way.
 */
int prepared_row(const outbox_row *row, int64_t commit_ts, bool dbz, prepared *p, char *err,
                 size_t errlen) OBX_WUR;

/* Free what p owns.  Safe on a zeroed p and twice. */
void prepared_free(prepared *p);

/* The payload as a JSON value: embedded JSON, a string, base64 or null. */
void prepared_write_payload(jsonw *w, const prepared *p);

/* The payload as the whole value: JSON text, text or bytes as they are. */
void prepared_write_bare(jsonw *w, const prepared *p);

/* A role's text as a JSON string (the identity roles are checked UTF-8). */
void prepared_write_role(jsonw *w, const outbox_row *row, enum outbox_role role);

/* The commit (or snapshot) time as a JSON string; formatted once when it is
 * also occurred_at. */
void prepared_write_commit_time(jsonw *w, int64_t commit_ts, const prepared *p);

/* The Kafka message timestamp in Unix milliseconds for --message-timestamp
 * ts; 0 lets the producer stamp it. */
int64_t prepared_message_timestamp(enum envelope_timestamp ts, int64_t commit_ts,
                                   const prepared *p);

#endif
