/*
 * log — the one logger: levels, text or JSON lines on stderr.
 *
 * Messages are lower case without a trailing period, identifiers quoted,
 * the cause appended.  Never log a password or a full conninfo.
 */
#ifndef CDC_LOG_H
#define CDC_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Process-wide settings; call once from main before anything logs. */
void log_setup(enum log_level level, bool json);

bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
