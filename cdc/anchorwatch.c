#include "cdc/anchorwatch.h"

#include <bsd/string.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdc/admin.h"
#include "cdc/log.h"
#include "cdc/pgconn.h"

#define ANCHOR_SQL                                                                                 \
    "SELECT slot_name, pg_catalog.pg_wal_lsn_diff("                                                \
    " CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()"           \
    " ELSE pg_catalog.pg_current_wal_lsn() END, restart_lsn)::bigint, coalesce(wal_status, '')"    \
    " FROM pg_catalog.pg_replication_slots WHERE slot_name LIKE '" ADMIN_ANCHOR_PREFIX "%'"        \
    " ORDER BY slot_name"

/* The relay's own slot: its wal_status, for the alert on a slot losing WAL. */
#define SLOT_SQL                                                                                   \
    "SELECT coalesce(wal_status, '') FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"

struct anchorwatch {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;

    char *conninfo, *password;
    char slot[64];
    int interval_ms;

    /* the last reading, under mu */
    bool fresh; /* not yet copied */
    bool known;
    size_t total, n;
    metrics_anchor v[METRICS_MAX_ANCHORS];
    char slot_wal_status[16]; /* "" unknown (or before PostgreSQL 13) */
};

/* One reading over conn (connected on demand).  0, or -1 with err. */
static int read_anchors(anchorwatch *w, PGconn **conn, char *err, size_t errlen)
{
    metrics_anchor v[METRICS_MAX_ANCHORS];
    size_t n = 0, total;
    PGresult *res;

    if (!*conn || PQstatus(*conn) != CONNECTION_OK) {
        PQfinish(*conn);
        *conn = pgconn_open(w->conninfo, w->password, false, "outbox-relay-anchors");
        if (!*conn || PQstatus(*conn) != CONNECTION_OK) {
            pgconn_error(*conn, err, errlen);
            return -1;
        }
    }
    res = PQexec(*conn, ANCHOR_SQL);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        strlcpy(err, PQresultErrorMessage(res), errlen);
        pgconn_one_line(err);
        PQclear(res);
        return -1;
    }
    total = (size_t)PQntuples(res);
    for (size_t i = 0; i < total && n < METRICS_MAX_ANCHORS; i++, n++) {
        strlcpy(v[n].name, PQgetvalue(res, (int)i, 0), sizeof(v[n].name));
        v[n].retained =
            PQgetisnull(res, (int)i, 1) ? -1 : strtoll(PQgetvalue(res, (int)i, 1), NULL, 10);
        strlcpy(v[n].wal_status, PQgetvalue(res, (int)i, 2), sizeof(v[n].wal_status));
    }
    PQclear(res);
    char ws[16] = "";
    if (w->slot[0]) {
        const char *params[1] = {w->slot};
        res = PQexecParams(*conn, SLOT_SQL, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            strlcpy(ws, PQgetvalue(res, 0, 0), sizeof(ws));
        PQclear(res);
    }
    pthread_mutex_lock(&w->mu);
    memcpy(w->slot_wal_status, ws, sizeof(ws));
    memcpy(w->v, v, n * sizeof(v[0]));
    w->n = n;
    w->total = total;
    w->known = true;
    w->fresh = true;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static void *run(void *arg)
{
    anchorwatch *w = arg;
    PGconn *conn = NULL;
    bool failing = false;
    int quick = 0;
    char err[512];

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec until;

        pthread_mutex_unlock(&w->mu);
        if (read_anchors(w, &conn, err, sizeof(err)) != 0) {
            if (!failing)
                log_debug("cannot read the anchor slots for /metrics: %s", err);
            failing = true;
        } else {
            failing = false;
        }
        /* the relay creates its slot after start-up (--create-slot): until
         * its wal_status is known, look again every second for a minute */
        int wait_ms = w->interval_ms;
        pthread_mutex_lock(&w->mu);
        if (w->slot[0] && !w->slot_wal_status[0] && quick < 60 && wait_ms > 1000) {
            wait_ms = 1000;
            quick++;
        }
        pthread_mutex_unlock(&w->mu);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&w->mu);
        while (!w->stop && pthread_cond_timedwait(&w->cond, &w->mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&w->mu);
    PQfinish(conn);
    return NULL;
}

static void free_watch(anchorwatch *w)
{
    if (w->password) {
        explicit_bzero(w->password, strlen(w->password));
        free(w->password);
    }
    if (w->conninfo) {
        explicit_bzero(w->conninfo, strlen(w->conninfo));
        free(w->conninfo);
    }
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

anchorwatch *anchorwatch_start(const char *conninfo, const char *password, const char *slot,
                               int interval_ms)
{
    anchorwatch *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    strlcpy(w->slot, slot ? slot : "", sizeof(w->slot));
    w->conninfo = strdup(conninfo ? conninfo : "");
    w->password = password ? strdup(password) : NULL;
    if (!w->conninfo || (password && !w->password) ||
        pthread_create(&w->thread, NULL, run, w) != 0) {
        free_watch(w);
        return NULL;
    }
    return w;
}

bool anchorwatch_copy(anchorwatch *w, metrics *m)
{
    bool changed = false;

    if (!w)
        return false;
    pthread_mutex_lock(&w->mu);
    if (w->fresh) {
        memcpy(m->anchors, w->v, w->n * sizeof(w->v[0]));
        m->nanchors = w->n;
        m->nanchors_total = w->total;
        m->anchors_known = w->known;
        memcpy(m->slot_wal_status, w->slot_wal_status, sizeof(m->slot_wal_status));
        w->fresh = false;
        changed = true;
    }
    pthread_mutex_unlock(&w->mu);
    return changed;
}

void anchorwatch_stop(anchorwatch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    free_watch(w);
}
