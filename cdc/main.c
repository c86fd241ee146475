/*
 * outbox-relay: command line entry point.  Parses and validates the
 * configuration (exit 2 on any problem, before touching anything), then
 * hands over to the event loop.
 */
#include <bsd/unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/admin.h"
#include "cdc/backfill.h"
#include "cdc/check.h"
#include "cdc/config.h"
#include "cdc/log.h"
#include "cdc/relay.h"
#include "cdc/replay.h"
#include "cdc/scrub.h"
#include "cdc/reload.h"
#include "publish/sink.h"

static void producer_log(int level, const char *fac, const char *msg)
{
    enum log_level l = level <= 3   ? LOG_LEVEL_ERROR
                       : level <= 4 ? LOG_LEVEL_WARN
                       : level <= 6 ? LOG_LEVEL_INFO
                                    : LOG_LEVEL_DEBUG;
    log_msg(l, "kafka %s: %s", fac, msg);
}

extern char **environ;

int main(int argc, char **argv)
{
    config cfg;
    char err[1024];
    int rc;

    /* Moves argv and the environment to the heap so the process title can
     * use their memory: from the first title on, ps and /proc/PID/cmdline
     * show the state, not the command line (nor a password in it). */
    setproctitle_init(argc, argv, environ);
    /* run, replay and backfill act on SIGHUP (cdc/reload.h): take it from
     * the first instruction on, so one sent while the command line is still
     * being read does not end the process. */
    if (argc < 2 || (strcmp(argv[1], "anchor") != 0 && strcmp(argv[1], "status") != 0 &&
                     strcmp(argv[1], "check") != 0))
        reload_signals();
    /* Sub-commands take a conninfo too: show only their name from here on. */
    if (argc > 1 && (strcmp(argv[1], "anchor") == 0 || strcmp(argv[1], "status") == 0 ||
                     strcmp(argv[1], "replay") == 0 || strcmp(argv[1], "backfill") == 0 ||
                     strcmp(argv[1], "check") == 0))
        setproctitle("%s", argv[1]);
    if (argc > 1 && (strcmp(argv[1], "anchor") == 0 || strcmp(argv[1], "status") == 0))
        return admin_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "check") == 0)
        return check_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "replay") == 0) {
        sink_set_logger(producer_log);
        return replay_main(argc - 1, argv + 1);
    }
    if (argc > 1 && strcmp(argv[1], "backfill") == 0) {
        sink_set_logger(producer_log);
        return backfill_main(argc - 1, argv + 1);
    }

    switch (config_parse(argc, argv, &cfg, err, sizeof(err))) {
    case CONFIG_OK:
        break;
    case CONFIG_EXIT:
        config_free(&cfg);
        return 0;
    case CONFIG_USAGE:
    default:
        fprintf(stderr, "outbox-relay: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    /* The conninfo may carry a password: keep a private copy and scrub the
     * command line, which every user can read in /proc/PID/cmdline. */
    char *conninfo = strdup(cfg.conninfo);
    if (!conninfo) {
        fprintf(stderr, "outbox-relay: out of memory\n");
        config_free(&cfg);
        return 1;
    }
    cfg.conninfo = conninfo;
    for (int i = 1; i < argc; i++)
        (void)scrub_passwords(argv[i]);
    setproctitle("starting, slot %s", cfg.slot);
    log_setup(cfg.log_level, cfg.log_json);
    sink_set_logger(producer_log);
    rc = relay_run(&cfg);
    config_free(&cfg);
    explicit_bzero(conninfo, strlen(conninfo));
    free(conninfo);
    return rc;
}
