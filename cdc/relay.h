/*
 * relay — the single-threaded event loop that owns the replication stream,
 * the decoder state, the producer and the watermark.
 *
 * poll() on the PostgreSQL socket, the producer's event fd and the next
 * timer deadline.  Events of a transaction are produced as they are
 * decoded; the slot is confirmed only up to the watermark.
 */
#ifndef CDC_RELAY_H
#define CDC_RELAY_H

#include "cdc/config.h"

/*
 * Run until SIGINT/SIGTERM or --end-lsn (SIGHUP: reload_apply(), and on;
 * SIGPIPE ignored).  Returns the process exit code:
 * 0 clean stop, 1 runtime failure, 2 bad configuration found at start-up.
 */
int relay_run(const config *cfg);

#endif
