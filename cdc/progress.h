/*
 * progress — the progress report of the one-shot commands (backfill,
 * replay): on a terminal a live line, rewritten at most 4 times a second;
 * otherwise an info log line every 10 s.
 */
#ifndef CDC_PROGRESS_H
#define CDC_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROGRESS_TTY_MS 250
#define PROGRESS_LOG_MS 10000

typedef struct progress {
    const char *what; /* "backfill", "replay": the line's prefix */
    bool tty;         /* live line on stderr */
    bool shown;       /* a live line is on the terminal now */
    int64_t started_ms, last_ms;
} progress;

/* tty: stderr is a terminal and logs are text (the caller decides). */
void progress_init(progress *p, const char *what, bool tty, int64_t now_ms);

/*
 * Pure: "HEAD (P%), R UNIT/s, ETA H:MM:SS" into buf.  done and total are in
 * any unit (rows, WAL bytes) and give the percentage and the ETA at the
 * pace so far; total 0 = unknown (no percentage, ETA "?").  count / secs is
 * the rate shown.  Returns buf.
 */
const char *progress_format(char *buf, size_t len, const char *head, uint64_t done, uint64_t total,
                            uint64_t count, const char *unit, double secs);

/* Show line now when force, or when the interval has passed. */
bool progress_due(const progress *p, int64_t now_ms, bool force);
void progress_show(progress *p, int64_t now_ms, const char *line);

/* Erase the live line before anything else is written to stderr. */
void progress_clear(progress *p);

#endif
