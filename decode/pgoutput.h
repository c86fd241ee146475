/*
 * pgoutput — a pure parser for the pgoutput logical replication protocol.
 *
 * Bytes in, one typed message out: no I/O, no globals, no allocation.  Every
 * read is bounds-checked.  Pointers in the parsed message (names, column
 * data) are borrowed from the input buffer and valid only as long as it is;
 * column data is NOT NUL-terminated, names are.
 *
 * Messages the relay acts on are decoded fully (Begin, Commit, Relation,
 * Insert); every other known type is recognised, walked field by field and
 * reported as PGO_SKIPPED; an unknown type byte is an error.  Bytes after a
 * message's last field are an error for every type: the layout is fixed by
 * the requested proto_version.
 */
#ifndef DECODE_PGOUTPUT_H
#define DECODE_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef OBX_WUR
#define OBX_WUR __attribute__((warn_unused_result))
#endif

/* PostgreSQL's MaxTupleAttributeNumber: no tuple or relation has more. */
#define PGO_MAX_COLS 1664

/* Highest pgoutput proto_version this decoder understands.  Versions 2-4
 * change nothing for Begin/Commit/Relation/Insert unless streaming or
 * two_phase is requested; their other messages are recognised and skipped. */
#define PGO_MAX_PROTO_VERSION 4

enum pgo_kind {
    PGO_BEGIN = 'B',
    PGO_COMMIT = 'C',
    PGO_RELATION = 'R',
    PGO_INSERT = 'I',
    PGO_SKIPPED = 0, /* a valid message of a type the relay ignores */
};

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
    uint8_t flags;
    uint64_t commit_lsn;
    uint64_t end_lsn; /* what the relay confirms */
    int64_t commit_ts;
} pgo_commit;

typedef struct pgo_relation {
    uint32_t oid;
    const char *nspname;
    const char *relname;
    char replident;
    uint16_t natts;
    pgo_attr *atts; /* points into pgo_msg's storage */
} pgo_relation;

typedef struct pgo_insert {
    uint32_t oid;
    pgo_tuple tuple;
} pgo_insert;

/*
 * A parsed message.  Large (it holds storage for PGO_MAX_COLS columns):
 * allocate one and reuse it for every message.
 */
typedef struct pgo_msg {
    enum pgo_kind kind;
    char type; /* the raw type byte, also for PGO_SKIPPED */
    union {
        pgo_begin begin;
        pgo_commit commit;
        pgo_relation relation;
        pgo_insert insert;
    } u;
    pgo_attr att_storage[PGO_MAX_COLS];
    pgo_value col_storage[PGO_MAX_COLS];
} pgo_msg;

/*
 * Parse one pgoutput message (the payload of an XLogData 'w' frame, or one
 * row of pg_logical_slot_peek_binary_changes) of buf[0..len).
 * in_stream: true between Stream Start and Stream Stop, where change
 * messages carry an extra xid (the relay does not request streaming yet).
 * Returns 0 and fills *out, or -1 with a reason in err (lower case, names
 * the message type and byte offset).
 */
int pgo_parse(const uint8_t *buf, size_t len, bool in_stream, pgo_msg *out, char *err,
              size_t errlen) OBX_WUR;

#endif
