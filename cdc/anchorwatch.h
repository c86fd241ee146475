/*
 * anchorwatch — how much WAL the anchor slots retain, and the relay's own
 * slot's wal_status, for /metrics.
 *
 * Anchors (see cdc/admin.h) retain WAL on purpose and grow until advanced
 * or dropped.  A background thread reads pg_replication_slots over its own
 * ordinary connection every interval, off the event loop, and keeps the
 * last reading; the loop copies it into the metrics before rendering them.
 * A failed reading keeps the previous one and is logged once at debug
 * level; it never affects streaming.
 */
#ifndef CDC_ANCHORWATCH_H
#define CDC_ANCHORWATCH_H

#include <stdbool.h>

#include "cdc/metrics.h"

typedef struct anchorwatch anchorwatch;

/* Start the thread (copies conninfo, password and slot, the relay's slot
 * whose wal_status it also reads).  NULL when out of resources: the metrics
 * then simply have no anchor figures. */
anchorwatch *anchorwatch_start(const char *conninfo, const char *password, const char *slot,
                               int interval_ms);

/* Copy the last reading into m (loop thread).  Returns true when m changed. */
bool anchorwatch_copy(anchorwatch *w, metrics *m);

/* Stop the thread, close its connection, free everything.  NULL ok. */
void anchorwatch_stop(anchorwatch *w);

#endif
