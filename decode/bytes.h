/*
 * bytes — big-endian (network order) integers in byte buffers, as the
 * PostgreSQL wire and replication protocols carry them.
 *
 * Header only and pure: the caller checks the length before every read.
 */
#ifndef DECODE_BYTES_H
#define DECODE_BYTES_H

#include <stdint.h>

static inline uint16_t obx_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t obx_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t obx_be64(const uint8_t *p)
{
    return (uint64_t)obx_be32(p) << 32 | obx_be32(p + 4);
}

static inline void obx_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

#endif
