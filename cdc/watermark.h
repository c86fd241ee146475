/*
 * watermark — which LSN may be confirmed to PostgreSQL.
 *
 * An ordered window of transactions in commit order.  Each transaction gets
 * a ticket when it begins; each of its events is added, then acknowledged
 * (or failed) by a delivery report; once its Commit arrives the end LSN is
 * known.  The flush LSN is the end LSN of the longest prefix of committed
 * transactions whose events are all acknowledged.  A failed event stops the
 * prefix for good (until watermark_reset()).
 *
 * Pure: no I/O, no clock.  Memory: at most one slot per transaction not
 * yet confirmed; transactions completing at the end of the window are
 * collapsed, so a stream of transactions without outbox events costs one
 * slot.  The caller bounds the window (watermark_inflight_txns()).
 */
#ifndef CDC_WATERMARK_H
#define CDC_WATERMARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode/compiler.h"

typedef struct watermark watermark;

/* confirmed: the LSN already confirmed (flush LSN before any transaction). */
watermark *watermark_new(uint64_t confirmed);
void watermark_free(watermark *wm);

/*
 * A transaction began.  Returns its ticket (monotonic, never 0), or 0 when
 * out of memory or when a transaction is already open (a protocol error).
 */
uint64_t watermark_begin(watermark *wm) OBX_WUR;

/* One more event of the open transaction ticket was handed to the broker. */
int watermark_add_event(watermark *wm, uint64_t ticket) OBX_WUR;

/*
 * The open transaction ended with this end LSN.  A transaction with no
 * events is complete at once.  Returns 0, or -1 when ticket is not the open
 * transaction or end_lsn goes backwards.
 */
int watermark_commit(watermark *wm, uint64_t ticket, uint64_t end_lsn) OBX_WUR;

/* The open transaction is abandoned (stream lost before its Commit). */
void watermark_abort_open(watermark *wm);

/* One event of ticket was acknowledged.  Returns 0; 1 when ticket is from
 * before the last watermark_reset() (a stale report: ignored); -1 for a
 * ticket never issued or more acks than events. */
int watermark_ack(watermark *wm, uint64_t ticket) OBX_WUR;

/* One event of ticket failed for good: the watermark stops before ticket.
 * Returns as watermark_ack(). */
int watermark_fail(watermark *wm, uint64_t ticket) OBX_WUR;

/* End LSN of the longest fully acknowledged committed prefix (or the
 * initial confirmed LSN).  Never decreases. */
uint64_t watermark_flush_lsn(const watermark *wm);

/* True when some event failed: the caller must rewind. */
bool watermark_failed(const watermark *wm);

/* Events handed to the broker and not yet acknowledged or failed. */
uint64_t watermark_inflight_events(const watermark *wm);

/* Slots in the window (the open transaction included): transactions not
 * yet confirmed, where a run of them completed at the end of the window
 * counts once.  This measures memory; bound it with backpressure. */
size_t watermark_inflight_txns(const watermark *wm);

/* True when a transaction is open (between Begin and Commit). */
bool watermark_txn_open(const watermark *wm);

/*
 * A keepalive's walEnd arrived with no transaction open: every transaction
 * whose commit starts before lsn has been received (a later one commits
 * after lsn and comes whole).  lsn joins the window like a transaction
 * without events, so it is confirmed as soon as everything before it is
 * acknowledged -- an idle outbox does not pin WAL, even when the keepalive
 * came while events were still in flight.  Returns 0, or -1 when a
 * transaction is open (then nothing changes).  A position at or below the
 * last commit's end changes nothing.
 */
int watermark_keepalive(watermark *wm, uint64_t lsn) OBX_WUR;

/*
 * Forget everything in flight (after a rewind: the producer was purged and
 * the stream restarts from confirmed).  Tickets keep increasing so stale
 * delivery reports are recognised: ack/fail of a ticket from before the
 * reset return 1 and change nothing.
 */
void watermark_reset(watermark *wm, uint64_t confirmed);

#endif
