/*
 * reload — SIGHUP for the long-running commands (run, replay, backfill).
 *
 * Operators send SIGHUP by habit (systemctl reload, log rotation, a closed
 * terminal); without a handler it would end the process at once, with no
 * drain and no final status update.  The handler only sets a flag; each
 * command's loop calls reload_pending() once per pass and, when it says so,
 * reload_apply() — the one place that decides what a reload changes.
 * With --config (or OUTBOX_RELAY_CONFIG) it reads the file again: the log
 * level and the log format take effect at once; any other option that
 * changed is logged as needing a restart and keeps its running value.  A
 * file that no longer parses is logged and changes nothing.  No connection
 * is reopened; the command carries on.
 */
#ifndef CDC_RELOAD_H
#define CDC_RELOAD_H

#include <stdbool.h>

#include "cdc/config.h"

/* Install the SIGHUP handler (no SA_RESTART: a poll() in progress returns
 * EINTR, so the loop acts on it at once). */
void reload_signals(void);

/* Every signal a long-running command handles: SIGINT and SIGTERM call
 * stop (it sets the command's stop flag), SIGPIPE is ignored, SIGHUP as
 * reload_signals(). */
void reload_all_signals(void (*stop)(int));

/* Whether SIGHUP arrived since the last call (clears the flag). */
bool reload_pending(void);

/*
 * What one SIGHUP does, on the loop's thread (never in the handler): cfg
 * is the running configuration (borrowed).  Several SIGHUPs before a pass
 * count as one.  Never stops the command and reopens nothing.
 */
void reload_apply(const config *cfg);

#endif
