#include "schema/errbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

int errbuf_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int errbuf_oom(char *err, size_t errlen)
{
    errbuf_fail(err, errlen, "out of memory");
    errno = ENOMEM;
    return -1;
}

const char *errbuf_printable(const char *s, size_t len, char *buf, size_t bufsz)
{
    size_t n = len < bufsz - 1 ? len : bufsz - 1;

    for (size_t i = 0; i < n; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    buf[n] = '\0';
    return buf;
}
