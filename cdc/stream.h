/*
 * stream — one logical replication connection, shared by `run` and
 * `replay`: connect (replication=database), check the server, fix the
 * session's text formats, START_REPLICATION on a slot, read CopyBoth
 * frames without blocking, send standby status updates, and end cleanly.
 * What to stream and what to set up first is the caller's: the relay's
 * checks and creation of slot and publication are cdc/setup.h, replay's
 * temporary copy of an anchor is cdc/replay.c (through stream_conn()).
 *
 * Owns the PGconn.  Knows nothing of the sink.  Errors come back in err;
 * the return value says whether they are configuration problems (the
 * operator must fix something: exit 2) or runtime ones (retry).
 */
#ifndef CDC_STREAM_H
#define CDC_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "cdc/config.h"

enum stream_status {
    STREAM_OK = 0,
    STREAM_RETRY = -1,  /* connection or server problem: back off and retry */
    STREAM_CONFIG = -2, /* the operator must fix something (message says what) */
    STREAM_BUSY = -3,   /* the slot is in use by another process: wait for it */
    STREAM_LOST = -4,   /* the slot was invalidated: fatal, a person must recreate it */
};

typedef struct stream stream;

typedef struct stream_info {
    char dbname[64];
    char systemid[32];
    int timeline;
    int server_version;      /* e.g. 150004 */
    int proto_version;       /* negotiated pgoutput proto_version */
    uint64_t slot_confirmed; /* the slot's confirmed_flush_lsn at start */
    uint64_t start_lsn;      /* where streaming started */
} stream_info;

/* cfg (borrowed) gives conninfo, password, publication and --messages. */
stream *stream_new(const config *cfg);
/* Closes the connection (without a final status update). NULL is a no-op. */
void stream_free(stream *st);
/* Close the connection, if any; st can connect again. */
void stream_close(stream *st);

/*
 * Connect as appname (the fallback application_name), check the server
 * (wal_level, IDENTIFY_SYSTEM: info's database, system id, timeline,
 * version and the pgoutput proto_version to ask for) and set the session's
 * DateStyle, TimeZone, IntervalStyle and extra_float_digits, so values
 * arrive in the text forms the envelope parses.
 */
enum stream_status stream_connect(stream *st, const char *appname, stream_info *info, char *err,
                                  size_t errlen);

/* The connection, for set-up queries before stream_replicate(); borrowed,
 * NULL when not connected. */
PGconn *stream_conn(stream *st);

/*
 * START_REPLICATION of slot from start_lsn with info's proto_version, the
 * configured publication and --messages; the connection turns
 * non-blocking.  STREAM_LOST when the slot was invalidated (told by
 * SQLSTATE and the slot's wal_status, not by the message text),
 * STREAM_BUSY when another process streams it.
 */
enum stream_status stream_replicate(stream *st, const char *slot, uint64_t start_lsn,
                                    const stream_info *info, char *err, size_t errlen);

/* The socket to poll(); -1 when not connected. */
int stream_socket(const stream *st);

/* Whether output is still waiting to be written (poll for POLLOUT). */
bool stream_wants_write(const stream *st);

/* After poll() said readable: pull bytes off the socket.  0 or -1. */
int stream_consume(stream *st, char *err, size_t errlen);

/* After poll() said writable: push pending output.  0 or -1. */
int stream_flush(stream *st, char *err, size_t errlen);

enum stream_frame_kind { STREAM_FRAME_XLOGDATA = 'w', STREAM_FRAME_KEEPALIVE = 'k' };

typedef struct stream_frame {
    enum stream_frame_kind kind;
    uint64_t wal_start; /* 'w': the record's position ('k': unused) */
    uint64_t wal_end;   /* 'w': as wal_start; 'k': the server's sent position */
    int64_t send_time;
    bool reply_requested;   /* 'k' only */
    const uint8_t *payload; /* 'w' only: one pgoutput message, borrowed */
    size_t len;
} stream_frame;

/*
 * Read the next frame without blocking.  Returns 1 with *frame filled (its
 * payload is valid until the next call), 0 when nothing is buffered, -1 when
 * the stream ended or failed (err says why).
 */
int stream_next(stream *st, stream_frame *frame, char *err, size_t errlen);

/*
 * Queue a standby status update: write = received, flush = apply = flush.
 * Returns 0 or -1.  Call stream_flush() (or poll for POLLOUT) afterwards.
 */
int stream_send_status(stream *st, uint64_t received, uint64_t flush, bool reply, char *err,
                       size_t errlen);

/*
 * Clean stop: send a final status update, CopyDone, drain the stream within
 * timeout_ms so a last error is not missed, close.  Returns 0 or -1.
 */
int stream_finish(stream *st, uint64_t received, uint64_t flush, int timeout_ms, char *err,
                  size_t errlen);

#endif
