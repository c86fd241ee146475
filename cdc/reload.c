#include "cdc/reload.h"

#include <signal.h>
#include <string.h>

#include "cdc/log.h"

static volatile sig_atomic_t hup_received;

static void on_hup(int sig)
{
    (void)sig;
    hup_received = 1;
}

void reload_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_hup;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
}

bool reload_pending(void)
{
    if (!hup_received)
        return false;
    hup_received = 0;
    return true;
}

void reload_apply(const config *cfg)
{
    (void)cfg;
    log_info("received SIGHUP: nothing to reload (the configuration is read at start; restart "
             "to change it), carrying on");
}

void reload_all_signals(void (*stop)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    reload_signals();
}
