#include "cdc/replay.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bsd/string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "publish/clock.h"
#include "cdc/deadletter.h"
#include "cdc/log.h"
#include "cdc/oneshot.h"
#include "cdc/pgconn.h"
#include "cdc/progress.h"
#include "cdc/stream.h"
#include "decode/lsn.h"
#include "decode/outbox.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"
#include "publish/sink.h"
#include "schema/envelope.h"

#define STATUS_INTERVAL_MS 1000
/* Frames handled per pass before the sink is served again. */
#define FRAMES_PER_PASS 2000

static const char replay_usage[] =
    "usage: outbox-relay replay --anchor NAME --from LSN [--to LSN] [--dry-run] [run options]\n"
    "\n"
    "Publishes again the outbox events of the transactions whose commit LSN lies in\n"
    "[--from, --to], with the same envelopes as the relay (same ids and source\n"
    "positions), from a temporary copy of anchor NAME (see `outbox-relay anchor`).\n"
    "Neither the anchor nor the relay's slot moves.\n"
    "\n"
    "      --anchor NAME  the anchor to copy (outbox-relay anchor list shows them)\n"
    "      --from LSN     first commit LSN (at or after the anchor's confirmed position)\n"
    "      --to LSN       last commit LSN (default: the server's position at start)\n"
    "      --dry-run      count events per topic, publish nothing (no broker needed)\n"
    "  -S, --slot NAME    the relay's slot, as written in source.slot (default outbox_relay)\n"
    "\n"
    "Every `run` option that shapes events applies: -d, -b, -X, -t, -P, --topic, --format,\n"
    "--field, --column, --messages, --dlq-topic, ... (see outbox-relay --help).\n"
    "\n"
    "A record the broker refuses for good (too large for the topic, ...) goes to the\n"
    "dead-letter topic as in `run`; that record's acknowledgement counts as its own.\n"
    "\n"
    "exit codes: 0 every event in the range acknowledged (or its dead letter), 1 runtime\n"
    "failure (run it again: consumers deduplicate on id), 2 bad usage or a refused range\n";

static int replay_option(void *arg, int argc, char **argv, int *i, char *err, size_t errlen)
{
    replay_args *a = arg;
    const char *v;
    int m;

    if ((m = oneshot_option(argc, argv, i, "--anchor", &v, err, errlen)) == 1) {
        a->anchor_name = v;
        return admin_anchor_slot(v, a->anchor, err, errlen) == 0 ? 1 : 2;
    }
    if (m == 0 && (m = oneshot_option(argc, argv, i, "--from", &v, err, errlen)) == 1) {
        if (lsn_parse(v, &a->from) != 0)
            return oneshot_usage_fail(err, errlen,
                                      "malformed --from \"%s\": give an LSN like 0/16B3748", v);
        a->has_from = true;
    }
    if (m == 0 && (m = oneshot_option(argc, argv, i, "--to", &v, err, errlen)) == 1) {
        if (lsn_parse(v, &a->to) != 0)
            return oneshot_usage_fail(err, errlen,
                                      "malformed --to \"%s\": give an LSN like 0/16B3748", v);
        a->has_to = true;
    }
    return m;
}

static int replay_required(void *arg, char *err, size_t errlen)
{
    const replay_args *a = arg;

    if (!a->anchor_name)
        return oneshot_usage_fail(
            err, errlen, "replay needs --anchor NAME (outbox-relay anchor list shows them)");
    if (!a->has_from)
        return oneshot_usage_fail(err, errlen,
                                  "replay needs --from LSN: the first commit LSN to publish again");
    if (a->has_to && a->to < a->from)
        return oneshot_usage_fail(err, errlen, "--from is after --to: swap them");
    return 0;
}

int replay_parse(int argc, char **argv, replay_args *a, char *err, size_t errlen)
{
    static const char *const refused[] = {"--start-lsn", "--end-lsn", "--create-slot", "--http"};
    const oneshot_cmdline cl = {.name = "replay",
                                .usage = replay_usage,
                                .refused = refused,
                                .nrefused = sizeof(refused) / sizeof(refused[0]),
                                .refused_why = "give the range with --from and --to",
                                .option = replay_option,
                                .check = replay_required,
                                .arg = a};

    memset(a, 0, sizeof(*a));
    return oneshot_parse(argc, argv, &cl, &a->dry_run, &a->argv_copy, &a->cfg, err, errlen);
}

void replay_args_free(replay_args *a)
{
    if (!a)
        return;
    config_free(&a->cfg);
    free(a->argv_copy);
    a->argv_copy = NULL;
}

int replay_check(const char *anchor_name, const replay_anchor_state *an, uint64_t from, bool has_to,
                 uint64_t to, uint64_t server, uint64_t *to_incl, char *err, size_t errlen)
{
    char a[LSN_BUFSZ], b[LSN_BUFSZ];

    if (!an->exists) {
        snprintf(err, errlen,
                 "anchor \"%s\" does not exist: \"outbox-relay anchor list\" shows the anchors; "
                 "create one with \"outbox-relay anchor create NAME\" before the range you will "
                 "want to replay",
                 anchor_name);
        return -1;
    }
    if (!an->usable) {
        snprintf(err, errlen,
                 "anchor \"%s\" is not a logical pgoutput slot of this database: connect to its "
                 "database with -d, or recreate it with \"outbox-relay anchor create\"",
                 anchor_name);
        return -1;
    }
    if (an->lost) {
        snprintf(err, errlen,
                 "anchor \"%s\" is lost (the server removed WAL it needed, see "
                 "max_slot_wal_keep_size): drop it; this range can only be backfilled from the "
                 "table",
                 anchor_name);
        return -1;
    }
    if (has_to && from > to) {
        snprintf(err, errlen, "--from %s is after --to %s: swap them", lsn_format(from, a),
                 lsn_format(to, b));
        return -1;
    }
    if (has_to && to < an->confirmed) {
        snprintf(err, errlen,
                 "--to %s is before anchor \"%s\"'s earliest position %s: the WAL of that range "
                 "is gone; the earliest possible --from is %s",
                 lsn_format(to, a), anchor_name, lsn_format(an->confirmed, b), b);
        return -1;
    }
    if (from < an->confirmed) {
        snprintf(err, errlen,
                 "--from %s is before anchor \"%s\"'s earliest position: the WAL before it is "
                 "gone; give --from %s or later",
                 lsn_format(from, a), anchor_name, lsn_format(an->confirmed, b));
        return -1;
    }
    if (from >= server) {
        snprintf(err, errlen,
                 "--from %s is at or past the server's current position %s: nothing has "
                 "committed there yet",
                 lsn_format(from, a), lsn_format(server, b));
        return -1;
    }
    if (has_to && to > server) {
        snprintf(err, errlen,
                 "--to %s is past the server's current position %s: leave --to out to replay "
                 "up to now",
                 lsn_format(to, a), lsn_format(server, b));
        return -1;
    }
    /* A commit record starting at or past `server` was written after the
     * check: --to equal to the server's position means the same as none. */
    *to_incl = has_to && to < server ? to : server - 1;
    return 0;
}

bool replay_in_range(uint64_t commit_lsn, uint64_t from, uint64_t to_incl)
{
    return commit_lsn >= from && commit_lsn <= to_incl;
}

/* ---- the replay loop --------------------------------------------------------- */

static volatile sig_atomic_t replay_stop;

static void on_signal(int sig)
{
    (void)sig;
    replay_stop = 1;
}

typedef struct replayer {
    const replay_args *a;
    const config *cfg;
    stream *st; /* the replication connection (cdc/stream.h) */
    stream_info info;
    oneshot o; /* the producer, delivery counts, refused records, topic counts */
    relcache *rels;
    pgo_msg *msg;
    char tmp_slot[ADMIN_SLOT_MAX];
    uint64_t to_incl;

    uint64_t received; /* write position reported to the server */
    int64_t status_at;
    bool reply_requested;
    bool done;

    progress prog;
} replayer;

/* Simple query on the replication connection (no extended protocol there). */
static PGresult *rq(replayer *r, const char *sql, ExecStatusType want, char *err, size_t errlen)
{
    return pgconn_exec(stream_conn(r->st), sql, 0, NULL, want, err, errlen, NULL);
}

/* Where replay has read to; nothing is ever confirmed (flush 0). */
static void send_status(replayer *r, int64_t now)
{
    char e[512];

    if (stream_send_status(r->st, r->received, 0, false, e, sizeof(e)) != 0)
        oneshot_fatal(&r->o, "%s", e);
    r->status_at = now;
    r->reply_requested = false;
}

/* ---- hooks of the shared publisher (cdc/oneshot.h) ------------------------ */

static void on_idle(void *arg)
{
    replayer *r = arg;
    /* no connection while the last dead letters go out at the end */
    if (stream_socket(r->st) >= 0 && obx_now_ms() - r->status_at >= STATUS_INTERVAL_MS)
        send_status(r, obx_now_ms());
}

/* Transactions come in commit order: the first past the range ends it. */
static enum pipeline_txn on_begin(void *arg, const pgo_begin *b)
{
    replayer *r = arg;

    if (b->final_lsn > r->to_incl) {
        r->done = true;
        return PIPELINE_TXN_STOP;
    }
    return replay_in_range(b->final_lsn, r->a->from, r->to_incl) ? PIPELINE_TXN_PUBLISH
                                                                 : PIPELINE_TXN_SKIP;
}

static void on_commit(void *arg, const pgo_commit *c)
{
    replayer *r = arg;

    if (c->end_lsn > r->received)
        r->received = c->end_lsn;
    if (c->end_lsn > r->to_incl)
        r->done = true;
}

static void on_before_log(void *arg)
{
    replayer *r = arg;
    progress_clear(&r->prog);
}

/* Read what is buffered.  Returns 1 when more may be buffered, 0 when the
 * socket must be waited for, -1 on a fatal error. */
static int read_frames(replayer *r)
{
    stream_frame f;
    char err[512];

    for (int n = 0; n < FRAMES_PER_PASS && !r->done && !r->o.fatal[0]; n++) {
        int got = stream_next(r->st, &f, err, sizeof(err));
        if (got == 0)
            return 0;
        if (got < 0) {
            oneshot_fatal(&r->o, "%s", err);
            return -1;
        }
        if (f.kind == STREAM_FRAME_XLOGDATA) {
            pipeline_xlogdata(&r->o.p, r->rels, r->msg, f.payload, f.len, f.wal_start);
            continue;
        }
        /* Between transactions, everything that committed before the
         * server's position has been received. */
        if (!r->o.p.txn_open) {
            if (f.wal_end > r->received)
                r->received = f.wal_end;
            if (f.wal_end > r->to_incl)
                r->done = true;
        }
        if (f.reply_requested)
            r->reply_requested = true;
    }
    return r->o.fatal[0] ? -1 : 1;
}

static int connect_and_check(replayer *r, char *err, size_t errlen, int *code)
{
    const replay_args *a = r->a;
    replay_anchor_state an = {0};
    uint64_t server;
    char sql[1024], qerr[512];
    PGresult *res;
    char *lit;

    *code = 1;
    switch (stream_connect(r->st, "outbox-relay-replay", &r->info, err, errlen)) {
    case STREAM_OK:
        break;
    case STREAM_CONFIG:
        *code = 2;
        return -1;
    default:
        return -1;
    }
    int v = r->info.server_version;
    if (v < 120000) {
        *code = 2;
        snprintf(err, errlen, "replay needs PostgreSQL 12 or later (the server is %d)", v);
        return -1;
    }
    res =
        rq(r, "SELECT pg_catalog.pg_current_wal_insert_lsn()", PGRES_TUPLES_OK, qerr, sizeof(qerr));
    if (!res) {
        snprintf(err, errlen, "cannot read the server's position: %s", qerr);
        return -1;
    }
    if (lsn_parse(PQgetvalue(res, 0, 0), &server) != 0) {
        PQclear(res);
        snprintf(err, errlen, "unexpected server position");
        return -1;
    }
    PQclear(res);

    lit = PQescapeLiteral(stream_conn(r->st), a->anchor, strlen(a->anchor));
    if (!lit) {
        snprintf(err, errlen, "cannot quote the anchor name");
        return -1;
    }
    snprintf(sql, sizeof(sql),
             "SELECT slot_type = 'logical' AND plugin = 'pgoutput' AND database = "
             "pg_catalog.current_database(), coalesce(wal_status = 'lost', false),"
             " coalesce(confirmed_flush_lsn::text, '')"
             " FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
             lit);
    PQfreemem(lit);
    res = rq(r, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr));
    if (!res) {
        snprintf(err, errlen, "cannot read replication slots: %s", qerr);
        return -1;
    }
    if (PQntuples(res) == 1) {
        an.exists = true;
        an.usable = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        an.lost = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        if (lsn_parse(PQgetvalue(res, 0, 2), &an.confirmed) != 0)
            an.usable = false;
    }
    PQclear(res);
    if (replay_check(a->anchor_name, &an, a->from, a->has_to, a->to, server, &r->to_incl, err,
                     errlen) != 0) {
        *code = 2;
        return -1;
    }
    /* A record past `server`, so that an idle server's position moves past
     * the range and the end is seen; without the right to emit it, an idle
     * server may keep replay waiting for the next write. */
    res = rq(r, "SELECT pg_catalog.pg_logical_emit_message(false, 'outbox-relay-replay', '')",
             PGRES_TUPLES_OK, qerr, sizeof(qerr));
    if (!res)
        log_debug("cannot emit the end marker: %s", qerr);
    PQclear(res);
    return 0;
}

static int start_stream(replayer *r, char *err, size_t errlen)
{
    PGconn *conn = stream_conn(r->st);
    char sql[1024], qerr[512];
    char *la, *lt;
    PGresult *res;

    /* Temporary slots belong to the session that made them: the copy is
     * made on this connection, streamed by it, and dropped when it ends. */
    snprintf(r->tmp_slot, sizeof(r->tmp_slot), "outbox_replay_%ld_%ld", (long)getpid(),
             (long)time(NULL));
    la = PQescapeLiteral(conn, r->a->anchor, strlen(r->a->anchor));
    lt = PQescapeLiteral(conn, r->tmp_slot, strlen(r->tmp_slot));
    if (la && lt)
        snprintf(sql, sizeof(sql),
                 "SELECT lsn FROM pg_catalog.pg_copy_logical_replication_slot(%s, %s, true)", la,
                 lt);
    PQfreemem(la);
    PQfreemem(lt);
    if (!la || !lt) {
        snprintf(err, errlen, "cannot quote slot names");
        return -1;
    }
    if (!(res = rq(r, sql, PGRES_TUPLES_OK, qerr, sizeof(qerr)))) {
        snprintf(err, errlen, "cannot copy anchor \"%s\": %s", r->a->anchor_name, qerr);
        return -1;
    }
    PQclear(res);
    return stream_replicate(r->st, r->tmp_slot, r->a->from, &r->info, err, errlen) == STREAM_OK
               ? 0
               : -1;
}

/* Rate in events, percentage and ETA in WAL bytes from --from to the end. */
static void show_progress(replayer *r, bool force)
{
    int64_t now = obx_now_ms();
    char head[160], line[256], b[LSN_BUFSZ];
    uint64_t from = r->a->from, done = r->received > from ? r->received - from : 0;

    if (!progress_due(&r->prog, now, force))
        return;
    snprintf(head, sizeof(head), "%s reached, %llu events %s", lsn_format(r->received, b),
             (unsigned long long)(r->a->dry_run ? r->o.p.published : r->o.acked),
             r->a->dry_run ? "counted" : "acknowledged");
    progress_format(line, sizeof(line), head, done, r->to_incl > from ? r->to_incl - from : 0,
                    r->a->dry_run ? r->o.p.published : r->o.acked, "events",
                    (double)(now - r->prog.started_ms) / 1000.0);
    progress_show(&r->prog, now, line);
}

static int run_loop(replayer *r)
{
    r->status_at = obx_now_ms();
    while (!r->done && !r->o.fatal[0]) {
        int more;
        if (replay_stop) {
            oneshot_fatal(&r->o, "interrupted");
            break;
        }
        oneshot_serve(&r->o);
        show_progress(r, false);
        more = read_frames(r);
        if (more < 0 || r->done)
            break;
        int64_t now = obx_now_ms();
        if (r->reply_requested || now - r->status_at >= STATUS_INTERVAL_MS)
            send_status(r, now);
        struct pollfd pfd[2] = {{.fd = stream_socket(r->st), .events = POLLIN}, {.fd = -1}};
        if (stream_wants_write(r->st))
            pfd[0].events |= POLLOUT;
        if (r->o.sk) {
            pfd[1].fd = sink_event_fd(r->o.sk);
            pfd[1].events = POLLIN;
        }
        if (poll(pfd, 2, more ? 0 : 200) < 0 && errno != EINTR) {
            oneshot_fatal(&r->o, "poll failed: %s", strerror(errno));
            break;
        }
        char e[512];
        if ((pfd[0].revents & (POLLIN | POLLERR | POLLHUP)) &&
            stream_consume(r->st, e, sizeof(e)) != 0)
            oneshot_fatal(&r->o, "%s", e);
        else if ((pfd[0].revents & POLLOUT) && stream_flush(r->st, e, sizeof(e)) != 0)
            oneshot_fatal(&r->o, "%s", e);
    }
    return r->o.fatal[0] ? -1 : 0;
}

int replay_main(int argc, char **argv)
{
    replay_args a;
    replayer r = {0};
    char err[1024], b1[LSN_BUFSZ], b2[LSN_BUFSZ];
    int code = 1, prc;

    prc = replay_parse(argc, argv, &a, err, sizeof(err));
    if ((code = oneshot_start(prc, err, &a.cfg, on_signal)) >= 0) {
        replay_args_free(&a);
        return code;
    }
    code = 1;

    r.a = &a;
    r.cfg = &a.cfg;
    r.o.cfg = &a.cfg;
    r.o.stop = &replay_stop;
    r.o.max_inflight_bytes = UINT64_MAX; /* replay bounds records only (--max-inflight) */
    r.o.dl_base = (envelope_source){.db = r.info.dbname, .slot = a.cfg.slot};
    r.o.idle = on_idle;
    r.o.hooks = (pipeline_hooks){
        .begin = on_begin, .commit = on_commit, .before_log = on_before_log, .arg = &r};
    r.st = stream_new(&a.cfg);
    r.rels = relcache_new();
    r.msg = malloc(sizeof(*r.msg));
    if (!r.st || !r.rels || !r.msg) {
        log_error("out of memory");
        goto out;
    }
    if (connect_and_check(&r, err, sizeof(err), &code) != 0) {
        log_error("%s", err);
        goto out;
    }
    code = 1;
    if (!a.dry_run) {
        r.o.sk = sink_open(a.cfg.brokers, a.cfg.props, a.cfg.nprops, err, sizeof(err));
        if (!r.o.sk) {
            log_error("%s", err);
            code = 2;
            goto out;
        }
    }
    oneshot_init(&r.o, r.info.dbname, a.dry_run);
    if (start_stream(&r, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    log_info("replaying commits %s..%s of anchor \"%s\" through temporary slot \"%s\"%s",
             lsn_format(a.from, b1), lsn_format(r.to_incl, b2), a.anchor_name, r.tmp_slot,
             a.dry_run ? " (dry run: nothing is published)" : "");
    progress_init(&r.prog, "replay", isatty(STDERR_FILENO) && !a.cfg.log_json, obx_now_ms());
    prc = run_loop(&r);
    if (r.prog.tty)
        show_progress(&r, true);
    progress_clear(&r.prog);
    if (prc != 0) {
        log_error("replay incomplete: %s; run it again (consumers deduplicate on id)", r.o.fatal);
        goto out;
    }
    /* Ending the session drops the temporary slot; nothing was confirmed. */
    stream_close(r.st);
    if (r.o.sk) {
        int wait;
        if (!oneshot_flush(&r.o, &wait)) {
            if (replay_stop)
                oneshot_fatal(&r.o, "interrupted");
            else
                oneshot_fatal(&r.o, "%d records not acknowledged within %d ms",
                              sink_queue_len(r.o.sk) + (int)r.o.refused.n, wait);
        }
        if (r.o.fatal[0]) {
            log_error("replay incomplete: %s; run it again (consumers deduplicate on id)",
                      r.o.fatal);
            goto out;
        }
        if (!oneshot_complete(&r.o)) {
            log_error("replay incomplete: %llu of %llu records not acknowledged, %llu deliveries "
                      "failed (first: %s); run it again",
                      (unsigned long long)oneshot_missing(&r.o), (unsigned long long)r.o.records,
                      (unsigned long long)r.o.failed, r.o.failed ? r.o.first_failure : "none");
            goto out;
        }
    }
    oneshot_print_topics(&r.o, stdout);
    log_info("%s %llu events (%llu dead-lettered) of %llu transactions, commits %s..%s",
             a.dry_run ? "would publish" : "published", (unsigned long long)r.o.p.published,
             (unsigned long long)r.o.p.dead_lettered, (unsigned long long)r.o.p.txns,
             lsn_format(a.from, b1), lsn_format(r.to_incl, b2));
    code = 0;
out:
    oneshot_clear(&r.o);
    stream_free(r.st);
    relcache_free(r.rels);
    free(r.msg);
    replay_args_free(&a);
    return code;
}
