/*
 * errfmt — the project's one way to fail with a reason: format it into the
 * caller's error buffer and return the result code, so that a function
 * reads `return errfmt(err, errlen, -1, "cannot ...: %s", cause);`.
 */
#ifndef DECODE_ERRFMT_H
#define DECODE_ERRFMT_H

#include <stddef.h>

/* Format into err (errlen bytes, truncated to fit; err NULL or errlen 0:
 * dropped) and return rc. */
int errfmt(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
