/*
 * setup — the relay's start on its replication connection: check the
 * server, the outbox tables, the publication and the slot, create the
 * publication and slot when --create-slot asks, pick the start position,
 * then start streaming (cdc/stream.h).  Only `run` uses it: replay streams
 * a temporary copy of an anchor and creates nothing.
 */
#ifndef CDC_SETUP_H
#define CDC_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdc/config.h"
#include "cdc/policy.h"
#include "cdc/stream.h"

/*
 * Connect, run every check, create publication and slot when configured
 * and missing, then START_REPLICATION.  first: the relay's first start,
 * where --start-lsn is checked against the slot (refused when before its
 * confirmed position) and applied.  Later starts begin at the higher of the
 * slot's confirmed position and resume_lsn (a position up to which every
 * transaction was already received, or --start-lsn after a rewind).
 * Every check comes before anything is created, so a bad configuration
 * leaves nothing behind.
 * hist (borrowed, may be NULL): where the slot was seen before; a missing
 * slot is created only as policy_slot_verdict() allows, else STREAM_LOST
 * with the recovery steps.  From PostgreSQL 17 a created slot has failover
 * on.
 */
enum stream_status setup_start(stream *st, const config *cfg, uint64_t resume_lsn, bool first,
                               const slot_history *hist, stream_info *info, char *err,
                               size_t errlen);

#endif
