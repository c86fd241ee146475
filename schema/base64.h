/*
 * base64 — RFC 4648 section 4 base64: the standard alphabet, '=' padding,
 * no line breaks.  The one encoder of the schema layer (bytea payloads in a
 * JSON value, binary columns of a dead letter).  It writes into the
 * caller's buffer and allocates nothing.
 */
#ifndef SCHEMA_BASE64_H
#define SCHEMA_BASE64_H

#include <stddef.h>

/* The length of the encoding of len bytes (4 per started 3), or SIZE_MAX
 * when that does not fit a size_t. */
size_t base64_encoded_len(size_t len);

/* Encode in[0..len) into out, which has room for base64_encoded_len(len)
 * bytes; no NUL is written.  Returns the number of bytes written. */
size_t base64_encode(const unsigned char *in, size_t len, char *out);

#endif
