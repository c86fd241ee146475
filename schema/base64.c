#include "schema/base64.h"

#include <stdint.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encoded_len(size_t len)
{
    if (len / 3 >= SIZE_MAX / 4)
        return SIZE_MAX;
    return (len + 2) / 3 * 4;
}

size_t base64_encode(const unsigned char *in, size_t len, char *out)
{
    size_t i = 0, o = 0;
    uint32_t v;

    for (; len - i >= 3; i += 3) {
        v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 0x3F];
        out[o++] = alphabet[(v >> 6) & 0x3F];
        out[o++] = alphabet[v & 0x3F];
    }
    if (i < len) {
        /* one or two bytes left: two or three characters, then padding */
        v = (uint32_t)in[i] << 16;
        if (len - i == 2)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 0x3F];
        out[o++] = len - i == 2 ? alphabet[(v >> 6) & 0x3F] : '=';
        out[o++] = '=';
    }
    return o;
}
