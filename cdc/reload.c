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

static bool is_log_key(const char *key)
{
    return strcmp(key, "log-level") == 0 || strcmp(key, "log-format") == 0 ||
           strcmp(key, "verbose") == 0 || strcmp(key, "quiet") == 0;
}

void reload_apply(const config *cfg)
{
    static bool applied_known;
    static enum log_level applied_level;
    static bool applied_json;
    char err[1024], keys[64][64];
    config next;
    int n;

    if (!applied_known) {
        applied_level = cfg->log_level;
        applied_json = cfg->log_json;
        applied_known = true;
    }
    if (!cfg->config_file) {
        log_info("received SIGHUP: no --config file to read again, carrying on");
        return;
    }
    if (config_reload(cfg, &next, err, sizeof(err)) != CONFIG_OK) {
        log_warn("received SIGHUP: %s: keeping the running configuration", err);
        config_free(&next);
        return;
    }
    if (next.log_level != applied_level || next.log_json != applied_json) {
        static const char *const names[] = {"error", "warn", "info", "debug"};
        log_setup(next.log_level, next.log_json);
        applied_level = next.log_level;
        applied_json = next.log_json;
        log_info("received SIGHUP: \"%s\" read again: log level %s, log format %s",
                 cfg->config_file, names[next.log_level], next.log_json ? "json" : "text");
    } else {
        log_info("received SIGHUP: \"%s\" read again", cfg->config_file);
    }
    n = config_changed_keys(cfg, &next, keys, 64);
    for (int i = 0; i < n; i++)
        if (!is_log_key(keys[i]))
            log_warn("received SIGHUP: \"%s\" changed, which takes a restart: the running "
                     "value stays",
                     keys[i]);
    config_free(&next);
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
