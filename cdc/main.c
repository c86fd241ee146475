/*
 * outbox-relay: command line entry point.  Parses and validates the
 * configuration (exit 2 on any problem, before touching anything), then
 * hands over to the event loop.
 */
#include <stdio.h>

#include "cdc/config.h"
#include "cdc/log.h"
#include "cdc/relay.h"
#include "publish/kafka.h"

static void kafka_log(int level, const char *fac, const char *msg)
{
    enum log_level l = level <= 3 ? LOG_LEVEL_ERROR : level <= 4 ? LOG_LEVEL_WARN
                       : level <= 6                            ? LOG_LEVEL_INFO
                                                               : LOG_LEVEL_DEBUG;
    log_msg(l, "kafka %s: %s", fac, msg);
}

int main(int argc, char **argv)
{
    config cfg;
    char err[1024];
    int rc;

    switch (config_parse(argc, argv, &cfg, err, sizeof(err))) {
    case CONFIG_OK: break;
    case CONFIG_EXIT: config_free(&cfg); return 0;
    case CONFIG_USAGE:
    default:
        fprintf(stderr, "outbox-relay: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    log_setup(cfg.log_level, cfg.log_json);
    kafka_set_logger(kafka_log);
    rc = relay_run(&cfg);
    config_free(&cfg);
    return rc;
}
