/*
 * pgoutput — a pure parser for the pgoutput logical replication protocol.
 *
 * Bytes in, one typed message out: no I/O, no globals, no allocation.  Every
 * read is bounds-checked.  Pointers in the parsed message (names, column
 * data, message content, truncated OIDs) are borrowed from the input buffer
 * and valid only as long as it is; column data and message content are NOT
 * NUL-terminated, names are.
 *
 * Every message of protocol versions 1-4 is decoded fully into its own
 * struct.  An unknown type byte is an error, and so are bytes after a
 * message's last field: the layout is fixed by the requested proto_version
 * and options, so extra bytes mean the stream is not what we think it is.
 */
#ifndef DECODE_PGOUTPUT_H
#define DECODE_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/compiler.h"

/* PostgreSQL's MaxTupleAttributeNumber: no tuple or relation has more. */
#define PGO_MAX_COLS 1664

/* Highest pgoutput proto_version this decoder understands: 2 adds
 * streaming, 3 two-phase, 4 streaming = 'parallel' (see pgo_options). */
#define PGO_MAX_PROTO_VERSION 4

/* Message kinds; each value is the message's type byte. */
enum pgo_kind {
    PGO_SKIPPED = 0, /* only from pgo_parse(): a valid message other than B/C/R/I */
    PGO_BEGIN = 'B',
    PGO_COMMIT = 'C',
    PGO_ORIGIN = 'O',
    PGO_RELATION = 'R',
    PGO_TYPE = 'Y',
    PGO_INSERT = 'I',
    PGO_UPDATE = 'U',
    PGO_DELETE = 'D',
    PGO_TRUNCATE = 'T',
    PGO_MESSAGE = 'M',
    PGO_STREAM_START = 'S',
    PGO_STREAM_STOP = 'E',
    PGO_STREAM_COMMIT = 'c',
    PGO_STREAM_ABORT = 'A',
    PGO_BEGIN_PREPARE = 'b',
    PGO_PREPARE = 'P',
    PGO_COMMIT_PREPARED = 'K',
    PGO_ROLLBACK_PREPARED = 'r',
    PGO_STREAM_PREPARE = 'p',
};

/* Truncate flags. */
#define PGO_TRUNCATE_CASCADE 1
#define PGO_TRUNCATE_RESTART_IDENTITY 2

/* Message flags: 1 = transactional (sent inside its transaction, only if
 * it commits); 0 = sent at once, even when the emitting transaction aborts. */
#define PGO_MESSAGE_TRANSACTIONAL 1

/* One column of a TupleData. */
typedef struct pgo_value {
    char kind;        /* 'n' null, 'u' unchanged toast, 't' text, 'b' binary */
    uint32_t len;     /* bytes at data ('t'/'b' only) */
    const char *data; /* borrowed, not NUL-terminated; NULL for 'n'/'u' */
} pgo_value;

typedef struct pgo_tuple {
    uint16_t ncols;
    pgo_value *cols; /* points into pgo_msg's storage */
} pgo_tuple;

typedef struct pgo_attr {
    uint8_t flags; /* 1 = part of the replica identity key */
    const char *name;
    uint32_t type_oid;
    int32_t typmod;
} pgo_attr;

typedef struct pgo_begin {
    uint64_t final_lsn; /* start of the commit record */
    int64_t commit_ts;  /* PostgreSQL epoch microseconds */
    uint32_t xid;
} pgo_begin;

typedef struct pgo_commit {
    uint8_t flags; /* 0 so far; passed on, not checked */
    uint64_t commit_lsn;
    uint64_t end_lsn; /* what the relay confirms */
    int64_t commit_ts;
} pgo_commit;

/* The transaction was replayed from another node (replication origin). */
typedef struct pgo_origin {
    uint64_t commit_lsn; /* the commit's LSN on the origin server */
    const char *name;
} pgo_origin;

/* nspname is "" for pg_catalog (the server saves the bytes). */
typedef struct pgo_relation {
    uint32_t oid;
    const char *nspname;
    const char *relname;
    char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    uint16_t natts;
    pgo_attr *atts; /* points into pgo_msg's storage */
} pgo_relation;

/* A user type used by a published column; nspname "" is pg_catalog. */
typedef struct pgo_type {
    uint32_t oid;
    const char *nspname;
    const char *typname;
} pgo_type;

typedef struct pgo_insert {
    uint32_t oid;
    pgo_tuple tuple;
} pgo_insert;

/* old_kind: 'K' (old key columns, the rest 'n'), 'O' (whole old row,
 * REPLICA IDENTITY FULL) or 0 when no old tuple was sent (the key did not
 * change); old_tuple is empty then.  tuple is the new row, where unchanged
 * TOASTed values are 'u'. */
typedef struct pgo_update {
    uint32_t oid;
    char old_kind;
    pgo_tuple old_tuple; /* points into pgo_msg's old_col_storage */
    pgo_tuple tuple;
} pgo_update;

typedef struct pgo_delete {
    uint32_t oid;
    char old_kind; /* 'K' or 'O', as for pgo_update */
    pgo_tuple old_tuple;
} pgo_delete;

/* nrels OIDs, big-endian, at oids: read them with pgo_truncate_oid(). */
typedef struct pgo_truncate {
    uint32_t nrels;
    uint8_t flags;       /* PGO_TRUNCATE_* */
    const uint8_t *oids; /* borrowed: nrels * 4 bytes */
} pgo_truncate;

/* pg_logical_emit_message(); content may hold any bytes, NULs included. */
typedef struct pgo_message {
    uint8_t flags; /* PGO_MESSAGE_* */
    bool transactional;
    uint64_t lsn;
    const char *prefix;
    uint32_t len;
    const char *content; /* borrowed, not NUL-terminated */
} pgo_message;

typedef struct pgo_stream_start {
    uint32_t xid;
    bool first_segment; /* the first block of this transaction */
} pgo_stream_start;

typedef struct pgo_stream_commit {
    uint32_t xid;
    uint8_t flags;
    uint64_t commit_lsn;
    uint64_t end_lsn;
    int64_t commit_ts;
} pgo_stream_commit;

/* subxid == xid when the whole transaction aborted, else only that
 * subtransaction's changes are void.  abort_lsn/abort_ts are sent only with
 * streaming = 'parallel' (has_abort_info), 0 otherwise. */
typedef struct pgo_stream_abort {
    uint32_t xid;
    uint32_t subxid;
    bool has_abort_info;
    uint64_t abort_lsn;
    int64_t abort_ts;
} pgo_stream_abort;

typedef struct pgo_begin_prepare {
    uint64_t prepare_lsn;
    uint64_t end_lsn;
    int64_t prepare_ts;
    uint32_t xid;
    const char *gid;
} pgo_begin_prepare;

/* Prepare ('P') and Stream Prepare ('p') share one layout. */
typedef struct pgo_prepare {
    uint8_t flags;
    uint64_t prepare_lsn;
    uint64_t end_lsn;
    int64_t prepare_ts;
    uint32_t xid;
    const char *gid;
} pgo_prepare;

typedef struct pgo_commit_prepared {
    uint8_t flags;
    uint64_t commit_lsn;
    uint64_t end_lsn;
    int64_t commit_ts;
    uint32_t xid;
    const char *gid;
} pgo_commit_prepared;

typedef struct pgo_rollback_prepared {
    uint8_t flags;
    uint64_t prepare_end_lsn;
    uint64_t rollback_end_lsn;
    int64_t prepare_ts;
    int64_t rollback_ts;
    uint32_t xid;
    const char *gid;
} pgo_rollback_prepared;

/*
 * A parsed message.  Large (it holds storage for 3 * PGO_MAX_COLS columns):
 * allocate one and reuse it for every message.
 */
typedef struct pgo_msg {
    enum pgo_kind kind;
    char type; /* the raw type byte, also for PGO_SKIPPED */
    /* Relation, Type, Insert, Update, Delete, Truncate and Message inside
     * Stream Start/Stop carry the (sub)transaction's xid; 0 elsewhere. */
    uint32_t stream_xid;
    union {
        pgo_begin begin;
        pgo_commit commit;
        pgo_origin origin;
        pgo_relation relation;
        pgo_type type;
        pgo_insert insert;
        pgo_update update;
        pgo_delete delete;
        pgo_truncate truncate;
        pgo_message message;
        pgo_stream_start stream_start;
        pgo_stream_commit stream_commit;
        pgo_stream_abort stream_abort;
        pgo_begin_prepare begin_prepare;
        pgo_prepare prepare; /* also Stream Prepare */
        pgo_commit_prepared commit_prepared;
        pgo_rollback_prepared rollback_prepared;
    } u;
    pgo_attr att_storage[PGO_MAX_COLS];
    pgo_value col_storage[PGO_MAX_COLS];
    pgo_value old_col_storage[PGO_MAX_COLS];
} pgo_msg;

/* What the parser must know about the stream that the bytes do not say. */
typedef struct pgo_options {
    /* Between Stream Start and Stream Stop: change messages carry an xid. */
    bool in_stream;
    /* streaming = 'parallel' was requested (proto_version 4): Stream Abort
     * carries abort_lsn and abort_ts (24 bytes instead of 8). */
    bool parallel_abort;
    /* Report every message with its own kind.  Without it only Begin,
     * Commit, Relation and Insert do; the others are PGO_SKIPPED (their
     * union member is filled all the same). */
    bool all_kinds;
} pgo_options;

/*
 * Parse one pgoutput message (the payload of an XLogData 'w' frame, or one
 * row of pg_logical_slot_peek_binary_changes) of buf[0..len) into *out.
 * opts NULL means all false.  Returns 0, or -1 with a reason in err (lower
 * case, names the message type and byte offset); on -1 out->kind is
 * PGO_SKIPPED and the rest of *out is unspecified.
 */
int pgo_parse_opts(const uint8_t *buf, size_t len, const pgo_options *opts, pgo_msg *out, char *err,
                   size_t errlen) OBX_WUR;

/*
 * pgo_parse_opts() with in_stream as given, parallel_abort and all_kinds
 * false: Begin, Commit, Relation and Insert get their kinds, every other
 * valid message is PGO_SKIPPED.
 */
int pgo_parse(const uint8_t *buf, size_t len, bool in_stream, pgo_msg *out, char *err,
              size_t errlen) OBX_WUR;

/* The i-th OID of a Truncate, or 0 when i >= t->nrels. */
uint32_t pgo_truncate_oid(const pgo_truncate *t, uint32_t i);

/* Lower-case name of a message type byte ("stream abort"), or NULL when
 * the byte is not a pgoutput message type. */
const char *pgo_type_name(char type);

#endif
