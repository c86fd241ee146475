/*
 * backfill — publish the rows outbox tables still hold, for outboxes that
 * keep their rows.
 *
 * On an ordinary (non-replication) connection, one transaction
 * (REPEATABLE READ, READ ONLY) gives one snapshot for everything: the
 * catalog checks, a count for the progress estimate, and a server-side
 * cursor per table that reads it in primary-key order in batches.  Each row
 * goes through the relay's own path — outbox_bind/outbox_extract on the
 * table's columns, envelope_build_opts — so topic, key, id, headers and
 * value are those of the live stream, except that the envelope's source is
 * {"backfill": true, "snapshot_time", "db", "table"} (no WAL position) and
 * every record carries the header `backfill: true`.  Rows that cannot become
 * events go to the dead-letter topic as the daemon sends them.  The run
 * ends once the broker acknowledged every record, or says how many were
 * not delivered (running it again is safe: consumers deduplicate on id).
 *
 * backfill_args owns the argv copy handed to config_parse(); release it
 * with backfill_args_free().
 */
#ifndef CDC_BACKFILL_H
#define CDC_BACKFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdc/config.h"

#define BACKFILL_BATCH_DEFAULT 1000
#define BACKFILL_BATCH_MAX 100000

typedef struct backfill_args {
    config cfg;        /* every run option that shapes events: -d, -b, -X, -t, --column, ... */
    const char *where; /* --where SQL: ANDed in as written (the user's own SQL); NULL = none */
    bool has_since;
    int64_t since_us; /* --since, microseconds since the Unix epoch */
    bool dry_run;
    int batch_size;   /* --batch-size: rows per FETCH */
    char **argv_copy; /* owned */
} backfill_args;

/*
 * Parse `backfill` arguments (argv[0] is "backfill"): --where, --since,
 * --dry-run and --batch-size here, everything else through config_parse()
 * as for `run`.  --start-lsn, --end-lsn, --create-slot, --http and
 * --messages are refused (backfill reads tables, has no LSN range, creates
 * nothing); --since must carry its time zone.  With --dry-run no broker is
 * needed.  Nothing is connected.  Returns 0 to go on, 1 when help or
 * version was printed (exit 0), 2 with err naming the fix.  Call
 * backfill_args_free() in every case.
 */
int backfill_parse(int argc, char **argv, backfill_args *a, char *err, size_t errlen) OBX_WUR;

void backfill_args_free(backfill_args *a);

/*
 * The sub-command: returns the exit code — 0 every event acknowledged (dry
 * run: counted), 1 a runtime failure (not every event delivered: the message
 * says how many; running it again is safe), 2 refused before anything was
 * published (bad option, missing table, no primary key, unmapped column,
 * --since without a timestamp column, --where that is not valid SQL).
 */
int backfill_main(int argc, char **argv);

#endif
