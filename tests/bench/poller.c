/*
 * poller — the polling outbox relay people build without CDC, as the
 * latency baseline of scripts/bench.  Not part of the product.
 *
 *   poller -d CONNINFO -b BROKERS -t TOPIC [-T TABLE] [-i INTERVAL_MS]
 *          [-n BATCH] [-X PROP=VALUE]...
 *
 * Every INTERVAL_MS (default 100) it runs, in one transaction:
 *
 *   SELECT id, aggregateid, payload::text FROM TABLE WHERE NOT published
 *    ORDER BY id FOR UPDATE SKIP LOCKED LIMIT BATCH        (default 500)
 *
 * produces each row (key = aggregate id, value = {"id":…, "aggregate_id":
 * …, "payload": <payload>}) with the same producer settings the relay uses
 * (idempotence, acks=all, librdkafka's default linger), waits for every
 * acknowledgement (rd_kafka_flush), marks the rows published and commits.
 * A full batch is followed at once by the next poll (a sensible poller
 * drains its backlog); otherwise it sleeps until the next tick.  A failed
 * delivery rolls back, so the rows are sent again on the next tick.
 *
 * TABLE (default public.outbox_poll) needs: id bigserial primary key,
 * aggregateid text, payload jsonb, published boolean not null default false
 * (scripts/bench creates it).  Stops on SIGTERM/SIGINT; prints its counts.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

static volatile sig_atomic_t stop;
static long delivery_errors;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        delivery_errors++;
}

static int exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "poller: %s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *conninfo = NULL, *brokers = NULL, *topic = NULL, *table = "public.outbox_poll";
    int interval_ms = 100, batch = 500, c, rc = 0;
    char errstr[512], select_sql[512], update_sql[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    PGconn *conn;
    long published = 0, polls = 0;
    size_t idcap = 1 << 16, vcap = 1 << 16;
    char *ids = malloc(idcap), *value = malloc(vcap);
    struct sigaction sa = {0};

    if (!ids || !value)
        return 1;
    if (rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "acks", "all", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "partitioner", "murmur2_random", errstr, sizeof(errstr))) {
        fprintf(stderr, "poller: %s\n", errstr);
        return 1;
    }
    while ((c = getopt(argc, argv, "d:b:t:T:i:n:X:h")) != -1) {
        switch (c) {
        case 'd':
            conninfo = optarg;
            break;
        case 'b':
            brokers = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'T':
            table = optarg;
            break;
        case 'i':
            interval_ms = atoi(optarg);
            break;
        case 'n':
            batch = atoi(optarg);
            break;
        case 'X': {
            char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "poller: -X wants PROP=VALUE\n");
                return 2;
            }
            *eq = '\0';
            if (rd_kafka_conf_set(conf, optarg, eq + 1, errstr, sizeof(errstr))) {
                fprintf(stderr, "poller: -X %s: %s\n", optarg, errstr);
                return 2;
            }
            break;
        }
        default:
            fprintf(stderr, "usage: poller -d CONNINFO -b BROKERS -t TOPIC [-T TABLE] "
                            "[-i INTERVAL_MS] [-n BATCH] [-X PROP=VALUE]...\n");
            return 2;
        }
    }
    if (!conninfo || !brokers || !topic || interval_ms < 0 || batch < 1) {
        fprintf(stderr, "poller: -d, -b and -t are required\n");
        return 2;
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr))) {
        fprintf(stderr, "poller: %s\n", errstr);
        return 2;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "poller: %s\n", errstr);
        return 1;
    }
    conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "poller: cannot connect: %s", PQerrorMessage(conn));
        rd_kafka_destroy(rk);
        return 1;
    }
    snprintf(select_sql, sizeof(select_sql),
             "SELECT id, aggregateid, payload::text FROM %s WHERE NOT published "
             "ORDER BY id FOR UPDATE SKIP LOCKED LIMIT %d",
             table, batch);
    snprintf(update_sql, sizeof(update_sql),
             "UPDATE %s SET published = true WHERE id = ANY($1::bigint[])", table);

    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    while (!stop) {
        int64_t tick = mono_ms();
        PGresult *res;
        int n;
        size_t idlen = 0;

        if (exec_ok(conn, "BEGIN") != 0) {
            rc = 1;
            break;
        }
        res = PQexec(conn, select_sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "poller: select: %s", PQerrorMessage(conn));
            PQclear(res);
            rc = 1;
            break;
        }
        n = PQntuples(res);
        polls++;
        delivery_errors = 0;
        ids[idlen++] = '{';
        for (int i = 0; i < n; i++) {
            const char *id = PQgetvalue(res, i, 0), *agg = PQgetvalue(res, i, 1);
            const char *payload = PQgetisnull(res, i, 2) ? "null" : PQgetvalue(res, i, 2);
            size_t need = strlen(payload) + strlen(agg) + strlen(id) + 64;
            int len;
            rd_kafka_resp_err_t err;

            if (need > vcap) {
                char *nv = realloc(value, need);
                if (!nv) {
                    rc = 1;
                    break;
                }
                value = nv;
                vcap = need;
            }
            /* aggregate ids here are digits: no JSON escaping needed */
            len = snprintf(value, vcap, "{\"id\":%s,\"aggregate_id\":\"%s\",\"payload\":%s}", id,
                           agg, payload);
            do {
                err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                        RD_KAFKA_V_KEY(agg, strlen(agg)),
                                        RD_KAFKA_V_VALUE(value, (size_t)len), RD_KAFKA_V_END);
                if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                    rd_kafka_poll(rk, 10);
            } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
            if (err) {
                fprintf(stderr, "poller: produce: %s\n", rd_kafka_err2str(err));
                delivery_errors++;
            }
            if (idlen + strlen(id) + 2 > idcap) {
                char *ni = realloc(ids, idcap * 2);
                if (!ni) {
                    rc = 1;
                    break;
                }
                ids = ni;
                idcap *= 2;
            }
            idlen += (size_t)sprintf(ids + idlen, "%s%s", i ? "," : "", id);
        }
        PQclear(res);
        ids[idlen++] = '}';
        ids[idlen] = '\0';
        if (rc)
            break;
        if (n > 0) {
            const char *params[1] = {ids};
            /* wait for every acknowledgement before marking */
            if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR || delivery_errors) {
                fprintf(stderr, "poller: %ld deliveries failed; rolling back\n", delivery_errors);
                if (exec_ok(conn, "ROLLBACK") != 0) {
                    rc = 1;
                    break;
                }
                continue;
            }
            res = PQexecParams(conn, update_sql, 1, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                fprintf(stderr, "poller: update: %s", PQerrorMessage(conn));
                PQclear(res);
                rc = 1;
                break;
            }
            PQclear(res);
            published += n;
        }
        if (exec_ok(conn, "COMMIT") != 0) {
            rc = 1;
            break;
        }
        if (n < batch) {
            int64_t wait = tick + interval_ms - mono_ms();
            if (wait > 0) {
                struct timespec ts = {.tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000};
                nanosleep(&ts, NULL);
            }
        }
    }
    fprintf(stderr, "poller: %ld polls, %ld events published\n", polls, published);
    rd_kafka_flush(rk, 5000);
    rd_kafka_destroy(rk);
    PQfinish(conn);
    free(ids);
    free(value);
    return rc;
}
