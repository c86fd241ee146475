#include "decode/errfmt.h"
#include "schema/errbuf.h"

#include "decode/errfmt.h"

#include <errno.h>

int errbuf_oom(char *err, size_t errlen)
{
    errfmt(err, errlen, -1, "out of memory");
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
