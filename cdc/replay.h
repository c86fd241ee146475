/*
 * replay — publish a past LSN range again from an anchor slot.
 *
 * A logical slot cannot rewind, so replay never streams the relay's slot or
 * the anchor itself: on one replication connection it copies the anchor into
 * a temporary slot (pg_copy_logical_replication_slot(anchor, tmp, true): the
 * copy belongs to that session and vanishes with it), streams the copy from
 * --from, publishes exactly the transactions whose commit LSN lies in
 * [from, to] with the same envelopes as the relay (same ids, same
 * source.slot, commit_lsn and seq), waits for every acknowledgement and
 * ends.  Nothing is ever confirmed: neither the anchor nor the relay's slot
 * moves.
 *
 * replay_args owns the argv copy handed to config_parse(); release it with
 * replay_args_free().  The pure pieces (argument parsing, the refusal
 * checks, the range filter) have unit tests; replay_main() does the I/O.
 */
#ifndef CDC_REPLAY_H
#define CDC_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdc/admin.h"
#include "cdc/config.h"

typedef struct replay_args {
    config cfg; /* every run option: tables, columns, format, topic, brokers, -X, ... */
    const char *anchor_name;     /* --anchor as given */
    char anchor[ADMIN_SLOT_MAX]; /* its slot name */
    bool has_from;
    uint64_t from; /* --from (required) */
    bool has_to;
    uint64_t to; /* --to; default: the server's position when replay starts */
    bool dry_run;
    char **argv_copy; /* owned */
} replay_args;

/*
 * Parse `replay` arguments (argv[0] is "replay"): --anchor, --from, --to and
 * --dry-run here, everything else through config_parse() as for `run`
 * (--start-lsn, --end-lsn, --create-slot and --http are refused: replay
 * has its own range and creates nothing).  With --dry-run no broker is
 * needed.  Returns 0 to go on, 1 when help or version was printed (exit 0),
 * 2 with err naming the fix.  Call replay_args_free() in every case.
 */
int replay_parse(int argc, char **argv, replay_args *a, char *err, size_t errlen) OBX_WUR;

void replay_args_free(replay_args *a);

/* What the server says about the anchor. */
typedef struct replay_anchor_state {
    bool exists;
    bool usable;        /* logical, pgoutput, in the connection's database */
    bool lost;          /* wal_status = 'lost' */
    uint64_t confirmed; /* confirmed_flush_lsn: the earliest commit LSN it can serve */
} replay_anchor_state;

/*
 * The refusals, in the order an operator fixes them: anchor missing or
 * unusable or lost, from > to, from before the anchor's confirmed position
 * (its WAL is gone: the message names the earliest possible LSN; a to before
 * it too), from or to past the server's position now (server, from
 * pg_current_wal_insert_lsn()).  from == to is a valid range of one commit
 * LSN.  On success *to_incl is the inclusive upper commit LSN: to, or
 * server - 1 without --to (a commit record at or past the position when
 * replay started began after it).  Returns 0, or -1 (exit 2) with err.
 */
int replay_check(const char *anchor_name, const replay_anchor_state *an, uint64_t from, bool has_to,
                 uint64_t to, uint64_t server, uint64_t *to_incl, char *err, size_t errlen) OBX_WUR;

/* Whether a transaction with this commit LSN (Begin.final_lsn) is replayed. */
bool replay_in_range(uint64_t commit_lsn, uint64_t from, uint64_t to_incl);

/* The sub-command: returns the exit code (0 done, 1 runtime failure, 2 refused). */
int replay_main(int argc, char **argv);

#endif
