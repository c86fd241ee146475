#include "cdc/progress.h"

#include <stdio.h>

#include "cdc/log.h"

void progress_init(progress *p, const char *what, bool tty, int64_t now_ms)
{
    p->what = what;
    p->tty = tty;
    p->shown = false;
    p->started_ms = p->last_ms = now_ms;
}

static void fmt_duration(double s, char *buf, size_t len)
{
    long t = s < 0 ? 0 : s > 359999 ? 359999 : (long)(s + 0.5);

    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

const char *progress_format(char *buf, size_t len, const char *head, uint64_t done, uint64_t total,
                            uint64_t count, const char *unit, double secs)
{
    char eta[32] = "?", pct[16] = "";
    double rate = secs > 0 ? (double)count / secs : 0;

    if (total > 0) {
        uint64_t d = done < total ? done : total;
        snprintf(pct, sizeof(pct), " (%.0f%%)", 100.0 * (double)d / (double)total);
        if (d == total)
            fmt_duration(0, eta, sizeof(eta));
        else if (d > 0 && secs > 0)
            fmt_duration(secs * (double)(total - d) / (double)d, eta, sizeof(eta));
    }
    snprintf(buf, len, "%s%s, %.0f %s/s, ETA %s", head, pct, rate, unit, eta);
    return buf;
}

bool progress_due(const progress *p, int64_t now_ms, bool force)
{
    return force || now_ms - p->last_ms >= (p->tty ? PROGRESS_TTY_MS : PROGRESS_LOG_MS);
}

void progress_show(progress *p, int64_t now_ms, const char *line)
{
    p->last_ms = now_ms;
    if (p->tty) {
        fprintf(stderr, "\r\033[K%s: %s", p->what, line);
        fflush(stderr);
        p->shown = true;
    } else {
        log_info("%s progress: %s", p->what, line);
    }
}

void progress_clear(progress *p)
{
    if (p->shown) {
        fputs("\r\033[K", stderr);
        p->shown = false;
    }
}
