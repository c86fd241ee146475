/*
 * slotstate — the --state-file: where the relay last saw its slot (the
 * server's system identifier and timeline), kept on the relay's side so
 * that it survives a database failover, unlike anything in the database.
 * policy_slot_verdict() reads it to tell a first start from a slot lost in
 * a failover.
 *
 * One line: "slot=NAME system=ID timeline=N".  Written to a temporary file
 * in the same directory, synced and renamed over the old one.
 */
#ifndef CDC_SLOTSTATE_H
#define CDC_SLOTSTATE_H

#include <stddef.h>

#include "cdc/policy.h"

/*
 * Fill h from path for slot: h->known is false when the file does not
 * exist or names another slot.  Returns 0, or -1 with err set when the
 * file cannot be read or is malformed.
 */
int slotstate_load(const char *path, const char *slot, slot_history *h, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Record h for slot in path.  Returns 0 or -1 with err set. */
int slotstate_save(const char *path, const char *slot, const slot_history *h, char *err,
                   size_t errlen) __attribute__((warn_unused_result));

#endif
