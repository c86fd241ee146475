/*
 * errbuf — how the schema layer reports a failure: the function returns -1
 * and writes the reason into the caller's buffer (err may be NULL or errlen
 * 0: the reason is then dropped).  errno ENOMEM after -1 marks a failure
 * that was ours (memory), not the row's.  Nothing here allocates.
 */
#ifndef SCHEMA_ERRBUF_H
#define SCHEMA_ERRBUF_H

#include <stddef.h>

/* Format the reason into err.  Returns -1, so `return errbuf_fail(...)`. */
int errbuf_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "out of memory" into err and errno ENOMEM.  Returns -1. */
int errbuf_oom(char *err, size_t errlen);

/* Copy s[0..len) into buf (bufsz > 0 bytes, truncated to fit, NUL
 * terminated) with every byte outside printable ASCII replaced by '?': row
 * text quoted in a reason or a log line.  Returns buf. */
const char *errbuf_printable(const char *s, size_t len, char *buf, size_t bufsz);

#endif
