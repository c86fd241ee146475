/*
 * mockbroker — a Kafka-protocol broker process for tests and the demo, on
 * librdkafka's mock cluster (real brokers speaking the wire protocol on
 * loopback ports, with topic auto-creation and fault injection).
 *
 *   mockbroker [-n BROKERS] [-p PARTITIONS]
 *
 * The first line of stdout is the bootstrap list.  Then one command per
 * line on stdin, one reply per command on stdout ("ok" or "error: ..."):
 *
 *   down ID|all               disconnect the broker(s) and refuse connections
 *   up ID|all                 accept connections again
 *   topic NAME [PARTITIONS]   create a topic (default partitions: -p)
 *   err APIKEY ERRCODE COUNT  the next COUNT requests of APIKEY fail with
 *                             ERRCODE (a Kafka error code, e.g. 0 6 3:
 *                             three Produce requests get NOT_LEADER)
 *   rtt ID|all MS             delay every response of the broker(s)
 *   leader TOPIC PARTITIONS SHIFT
 *                             move the leader of partitions 0..PARTITIONS-1
 *                             of TOPIC to broker 1 + (partition + SHIFT) %
 *                             BROKERS (clients learn it from NOT_LEADER
 *                             errors and metadata, as after an election)
 *   quit                      exit 0
 *
 * It also exits (0) on stdin EOF, so a test's broker dies with the test,
 * and on SIGTERM/SIGINT.
 *
 * -p only applies to topics made with the "topic" command: librdkafka 2.0.2
 * offers no way to change the partition count of auto-created topics (its
 * default is 4), so pre-create a topic when the count matters.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define LINE_MAX_LEN 1024

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static int parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (!s)
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* "all" means every broker; ids run from 1 to nbrokers. */
static int parse_broker(const char *s, int nbrokers, long *id)
{
    if (s && strcmp(s, "all") == 0) {
        *id = -1;
        return 0;
    }
    return parse_int(s, 1, nbrokers, id);
}

typedef rd_kafka_resp_err_t (*broker_fn)(rd_kafka_mock_cluster_t *, int32_t);

/*
 * The header allows -1 for "all brokers", but do it one by one so an older
 * library that lacks it behaves the same.
 */
static rd_kafka_resp_err_t for_brokers(rd_kafka_mock_cluster_t *mc, int nbrokers, long id,
                                       broker_fn fn)
{
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (id != -1)
        return fn(mc, (int32_t)id);
    for (int i = 1; i <= nbrokers && !err; i++)
        err = fn(mc, i);
    return err;
}

static int rtt_ms_arg;

static rd_kafka_resp_err_t set_rtt(rd_kafka_mock_cluster_t *mc, int32_t id)
{
    return rd_kafka_mock_broker_set_rtt(mc, id, rtt_ms_arg);
}

/* Returns 1 when the command asks to quit. */
static int run_command(rd_kafka_mock_cluster_t *mc, int nbrokers, int partitions, char *line)
{
    char *save = NULL;
    char *cmd = strtok_r(line, " \t\r", &save);
    char *a1 = strtok_r(NULL, " \t\r", &save);
    char *a2 = strtok_r(NULL, " \t\r", &save);
    char *a3 = strtok_r(NULL, " \t\r", &save);
    char *extra = strtok_r(NULL, " \t\r", &save);
    rd_kafka_resp_err_t err;
    long id, n, code, count;

    if (!cmd) {
        reply("error: empty command");
        return 0;
    }
    if (strcmp(cmd, "quit") == 0) {
        reply("ok");
        return 1;
    }
    if (extra) {
        reply("error: too many arguments");
        return 0;
    }
    if (strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0) {
        if (a2 || parse_broker(a1, nbrokers, &id) != 0) {
            reply("error: usage: %s ID|all (ids 1..%d)", cmd, nbrokers);
            return 0;
        }
        err = for_brokers(mc, nbrokers, id,
                          cmd[0] == 'd' ? rd_kafka_mock_broker_set_down
                                        : rd_kafka_mock_broker_set_up);
    } else if (strcmp(cmd, "rtt") == 0) {
        if (a3 || parse_broker(a1, nbrokers, &id) != 0 || parse_int(a2, 0, INT_MAX, &n) != 0) {
            reply("error: usage: rtt ID|all MS");
            return 0;
        }
        rtt_ms_arg = (int)n;
        err = for_brokers(mc, nbrokers, id, set_rtt);
    } else if (strcmp(cmd, "topic") == 0) {
        n = partitions;
        if (!a1 || a3 || (a2 && parse_int(a2, 1, 100000, &n) != 0)) {
            reply("error: usage: topic NAME [PARTITIONS]");
            return 0;
        }
        err = rd_kafka_mock_topic_create(mc, a1, (int)n, nbrokers < 3 ? nbrokers : 3);
    } else if (strcmp(cmd, "err") == 0) {
        rd_kafka_resp_err_t *errs;
        if (parse_int(a1, 0, 32767, &id) != 0 || parse_int(a2, -200, 32767, &code) != 0 ||
            parse_int(a3, 1, 100000, &count) != 0) {
            reply("error: usage: err APIKEY ERRCODE COUNT");
            return 0;
        }
        errs = calloc((size_t)count, sizeof(*errs));
        if (!errs) {
            reply("error: out of memory");
            return 0;
        }
        for (long i = 0; i < count; i++)
            errs[i] = (rd_kafka_resp_err_t)code;
        rd_kafka_mock_push_request_errors_array(mc, (int16_t)id, (size_t)count, errs);
        free(errs);
        err = RD_KAFKA_RESP_ERR_NO_ERROR;
    } else if (strcmp(cmd, "leader") == 0) {
        long shift;
        if (!a1 || parse_int(a2, 1, 100000, &n) != 0 || parse_int(a3, 0, INT_MAX, &shift) != 0) {
            reply("error: usage: leader TOPIC PARTITIONS SHIFT");
            return 0;
        }
        err = RD_KAFKA_RESP_ERR_NO_ERROR;
        for (long p = 0; p < n && !err; p++)
            err = rd_kafka_mock_partition_set_leader(mc, a1, (int32_t)p,
                                                     (int32_t)(1 + (p + shift) % nbrokers));
    } else {
        reply("error: unknown command \"%s\" (down, up, topic, err, rtt, leader, quit)", cmd);
        return 0;
    }
    if (err)
        reply("error: %s", rd_kafka_err2str(err));
    else
        reply("ok");
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: mockbroker [-n BROKERS (default 3)] [-p PARTITIONS (default 4)]\n");
}

int main(int argc, char **argv)
{
    long nbrokers = 3, partitions = 4;
    char errstr[512];
    char buf[LINE_MAX_LEN];
    size_t used = 0;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    struct sigaction sa;
    int opt, quit = 0;

    while ((opt = getopt(argc, argv, "n:p:h")) != -1) {
        switch (opt) {
        case 'n':
            if (parse_int(optarg, 1, 64, &nbrokers) != 0) {
                fprintf(stderr, "mockbroker: -n wants 1..64 brokers, not \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'p':
            if (parse_int(optarg, 1, 100000, &partitions) != 0) {
                fprintf(stderr, "mockbroker: -p wants a partition count, not \"%s\"\n", optarg);
                return 2;
            }
            break;
        default:
            usage();
            return 2;
        }
    }
    if (optind != argc) {
        usage();
        return 2;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* no SA_RESTART: poll() must return so the flag is seen at once */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The mock cluster needs a handle for its bookkeeping; it never connects. */
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "mockbroker: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "mockbroker: cannot create a librdkafka handle: %s\n", errstr);
        return 1;
    }
    mc = rd_kafka_mock_cluster_new(rk, (int)nbrokers);
    if (!mc) {
        fprintf(stderr, "mockbroker: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    reply("%s", rd_kafka_mock_cluster_bootstraps(mc));

    while (!quit && !stop_requested) {
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        ssize_t r;
        char *nl;
        int pr = poll(&pfd, 1, 1000);

        if (pr < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "mockbroker: poll: %m\n");
            break;
        }
        if (pr == 0)
            continue;
        r = read(STDIN_FILENO, buf + used, sizeof(buf) - 1 - used);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            fprintf(stderr, "mockbroker: read: %m\n");
            break;
        }
        if (r == 0)
            break; /* parent gone or done: stdin EOF ends the broker */
        used += (size_t)r;
        buf[used] = '\0';
        while (!quit && (nl = strchr(buf, '\n')) != NULL) {
            size_t linelen = (size_t)(nl - buf);
            *nl = '\0';
            quit = run_command(mc, (int)nbrokers, (int)partitions, buf);
            memmove(buf, nl + 1, used - linelen - 1);
            used -= linelen + 1;
            buf[used] = '\0';
        }
        if (used == sizeof(buf) - 1) {
            reply("error: line too long");
            used = 0;
        }
    }

    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
