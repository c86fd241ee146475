/*
 * admin — the operator's sub-commands that talk SQL, not replication:
 * anchor slots (create, list, advance, drop) and status.
 *
 * An anchor is a logical pgoutput slot that nobody streams: it retains WAL
 * on purpose so that `replay` can later copy it and publish a past range
 * again.  Anchor slots are named ADMIN_ANCHOR_PREFIX + NAME so they never
 * collide with the relay's own slot; `anchor list` shows only them.
 *
 * Everything here uses a plain libpq connection (no replication=database).
 * admin_main() returns the process exit code: 0 done, 1 a runtime failure
 * (database unreachable, SQL error), 2 bad usage or a refused request (the
 * message on stderr names the fix).  Strings in admin_args point into argv.
 */
#ifndef CDC_ADMIN_H
#define CDC_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/lsn.h"

#define ADMIN_ANCHOR_PREFIX "outbox_anchor_"
/* Slot names are at most 63 bytes (NAMEDATALEN - 1). */
#define ADMIN_SLOT_MAX 64
/* `anchor list` and `status` warn when an anchor retains more WAL than this. */
#define ADMIN_WARN_BYTES_DEFAULT (UINT64_C(1) << 30)

enum admin_cmd {
    ADMIN_ANCHOR_CREATE,
    ADMIN_ANCHOR_LIST,
    ADMIN_ANCHOR_ADVANCE,
    ADMIN_ANCHOR_DROP,
    ADMIN_STATUS,
};

typedef struct admin_args {
    enum admin_cmd cmd;
    const char *conninfo;        /* -d; "" = libpq defaults and PG* variables */
    char *password;              /* --password-file; NULL = conninfo, PGPASSWORD, .pgpass */
    const char *slot;            /* --slot: the relay's slot (status) */
    const char *name;            /* anchor NAME as given */
    char anchor[ADMIN_SLOT_MAX]; /* its slot name, prefix included */
    const char *from_slot;       /* anchor create --from-slot; NULL = at the current position */
    uint64_t lsn;                /* anchor advance */
    bool json;
    uint64_t warn_bytes;
} admin_args;

/*
 * The slot name of anchor NAME: ADMIN_ANCHOR_PREFIX + NAME, or NAME itself
 * when it already carries the prefix (so names copied from `anchor list`
 * work).  NAME must be lower-case letters, digits and _, and the result at
 * most 63 bytes.  Returns 0, or -1 with err naming the fix.
 */
int admin_anchor_slot(const char *name, char out[ADMIN_SLOT_MAX], char *err, size_t errlen) OBX_WUR;

/*
 * Parse argv, where argv[0] is the sub-command ("anchor" or "status").
 * Returns 0 to go on, 1 when --help was printed (exit 0), 2 on bad usage
 * with err naming the fix.
 */
int admin_parse(int argc, char **argv, admin_args *a, char *err, size_t errlen) OBX_WUR;

enum admin_advance_verdict {
    ADMIN_ADVANCE_GO = 0,      /* move the anchor to the target */
    ADMIN_ADVANCE_NOOP = 1,    /* already there */
    ADMIN_ADVANCE_REFUSE = -1, /* err says why and what to give instead */
};

/*
 * Decide `anchor advance`: confirmed is the anchor's confirmed_flush_lsn,
 * server the server's pg_current_wal_flush_lsn().  A slot cannot move back,
 * and PostgreSQL would silently stop at the flushed position, so both are
 * refused rather than half-done.
 */
enum admin_advance_verdict admin_advance_check(const char *anchor, uint64_t confirmed,
                                               uint64_t server, uint64_t target, char *err,
                                               size_t errlen);

/* The sub-commands: returns the exit code (0, 1 or 2). */
int admin_main(int argc, char **argv);

#endif
