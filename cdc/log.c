#include "cdc/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum log_level min_level = LOG_LEVEL_INFO;
static bool as_json;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void log_setup(enum log_level level, bool json)
{
    min_level = level;
    as_json = json;
}

bool log_enabled(enum log_level level)
{
    return level <= min_level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char text[2048], stamp[96];
    struct timeval tv;
    struct tm tm;
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(tv.tv_usec / 1000));

    if (as_json) {
        json_t *o =
            json_pack("{s:s, s:s, s:s}", "time", stamp, "level", level_names[level], "msg", text);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (line)
            fprintf(stderr, "%s\n", line);
        free(line);
        json_decref(o);
    } else {
        fprintf(stderr, "%s outbox-relay %s: %s\n", stamp, level_names[level], text);
    }
}
