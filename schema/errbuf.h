/*
 * errbuf — what the schema layer adds to decode/errfmt.h (the project's one
 * way to fail with a reason: return -1 and write it into the caller's
 * buffer; err may be NULL or errlen 0).  errno ENOMEM after -1 marks a failure
 * that was ours (memory), not the row's.  Nothing here allocates.
 */
#ifndef SCHEMA_ERRBUF_H
#define SCHEMA_ERRBUF_H

#include <stddef.h>

/* "out of memory" into err and errno ENOMEM.  Returns -1. */
int errbuf_oom(char *err, size_t errlen);

/* Copy s[0..len) into buf (bufsz > 0 bytes, truncated to fit, NUL
 * terminated) with every byte outside printable ASCII replaced by '?': row
 * text quoted in a reason or a log line.  Returns buf. */
const char *errbuf_printable(const char *s, size_t len, char *buf, size_t bufsz);

#endif
