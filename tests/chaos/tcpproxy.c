/*
 * tcpproxy — a loopback TCP forwarder the chaos tests can cut, to put a
 * network between the relay and PostgreSQL.
 *
 *   tcpproxy TARGET_PORT
 *
 * Listens on an ephemeral 127.0.0.1 port (printed as the first line of
 * stdout) and forwards every connection to 127.0.0.1:TARGET_PORT.
 * Signals control the "network":
 *   SIGUSR1  cut: no byte moves in either direction, new connections are
 *            accepted but not forwarded (a black hole, as when packets are
 *            dropped: nobody is told)
 *   SIGUSR2  restore: bytes move again, held connections are forwarded
 *   SIGHUP   reset: every current connection is closed with a RST (what the
 *            peers see when a long cut heals after TCP gave up)
 *   SIGTERM, SIGINT  exit 0
 * Single-threaded poll() loop, at most MAX_CONNS connection pairs; a pair
 * is closed when either side closes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 64
#define BUF_SIZE 65536

typedef struct {
    int fd[2];             /* 0: client side, 1: upstream; -1 when closed */
    char buf[2][BUF_SIZE]; /* buf[i]: read from fd[i], to be written to fd[1 - i] */
    size_t len[2], off[2];
} pair;

static volatile sig_atomic_t cut, reset_req, stop;
static pair pairs[MAX_CONNS];
static int target_port;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        cut = 1;
    else if (sig == SIGUSR2)
        cut = 0;
    else if (sig == SIGHUP)
        reset_req = 1;
    else
        stop = 1;
}

static void close_rst(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

static void pair_close(pair *p)
{
    close_rst(p->fd[0]);
    close_rst(p->fd[1]);
    p->fd[0] = p->fd[1] = -1;
    p->len[0] = p->len[1] = p->off[0] = p->off[1] = 0;
}

static int connect_upstream(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)target_port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Move bytes of one pair in the directions poll() allows; -1 closes it. */
static int pump(pair *p, const struct pollfd *pf)
{
    for (int i = 0; i < 2; i++) {
        if (p->len[i] == 0 && (pf[i].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = read(p->fd[i], p->buf[i], BUF_SIZE);
            if (r <= 0)
                return r < 0 && (errno == EINTR || errno == EAGAIN) ? 0 : -1;
            p->len[i] = (size_t)r;
            p->off[i] = 0;
        }
        if (p->len[i] > 0 && (pf[1 - i].revents & POLLOUT)) {
            ssize_t w = write(p->fd[1 - i], p->buf[i] + p->off[i], p->len[i]);
            if (w < 0)
                return errno == EINTR || errno == EAGAIN ? 0 : -1;
            p->off[i] += (size_t)w;
            p->len[i] -= (size_t)w;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);
    struct sigaction sa;
    int lfd, one = 1;

    if (argc != 2 || (target_port = atoi(argv[1])) <= 0 || target_port > 65535) {
        fprintf(stderr, "usage: tcpproxy TARGET_PORT\n");
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < MAX_CONNS; i++)
        pairs[i].fd[0] = pairs[i].fd[1] = -1;

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        fprintf(stderr, "tcpproxy: cannot listen: %m\n");
        return 1;
    }
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);

    while (!stop) {
        struct pollfd pf[1 + 2 * MAX_CONNS];
        int n = 1;

        if (reset_req) {
            reset_req = 0;
            for (int i = 0; i < MAX_CONNS; i++)
                if (pairs[i].fd[0] >= 0)
                    pair_close(&pairs[i]);
        }
        pf[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (int i = 0; i < MAX_CONNS; i++) {
            pair *p = &pairs[i];
            for (int k = 0; k < 2; k++) {
                short ev = 0;
                if (!cut && p->fd[0] >= 0 && p->fd[1] >= 0) {
                    if (p->len[k] == 0)
                        ev |= POLLIN;
                    if (p->len[1 - k] > 0)
                        ev |= POLLOUT;
                }
                pf[n++] = (struct pollfd){.fd = ev ? p->fd[k] : -1, .events = ev};
            }
        }
        if (poll(pf, (nfds_t)n, 200) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "tcpproxy: poll: %m\n");
            return 1;
        }
        if (pf[0].revents & POLLIN) {
            int cfd = accept(lfd, NULL, NULL);
            int slot = -1;
            for (int i = 0; i < MAX_CONNS && cfd >= 0; i++)
                if (pairs[i].fd[0] < 0) {
                    slot = i;
                    break;
                }
            if (cfd >= 0 && slot < 0)
                close_rst(cfd);
            else if (cfd >= 0)
                pairs[slot].fd[0] = cfd;
        }
        for (int i = 0; i < MAX_CONNS; i++) {
            pair *p = &pairs[i];
            if (p->fd[0] < 0 || cut)
                continue;
            if (p->fd[1] < 0 && (p->fd[1] = connect_upstream()) < 0) {
                pair_close(p);
                continue;
            }
            if (pump(p, &pf[1 + 2 * i]) != 0)
                pair_close(p);
        }
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (pairs[i].fd[0] >= 0)
            pair_close(&pairs[i]);
    close(lfd);
    return 0;
}
