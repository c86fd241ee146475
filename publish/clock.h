/*
 * clock — the one monotonic clock every loop, deadline and timeout reads.
 *
 * Header only (a static inline function).  It lives in publish/, the lowest
 * layer that may read a clock (decode/ and schema/ are pure); cdc/ reads it
 * from here too.
 */
#ifndef PUBLISH_CLOCK_H
#define PUBLISH_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC: only differences mean anything.  Never
 * 0 on Linux after boot, which callers use as "unset". */
static inline int64_t obx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
