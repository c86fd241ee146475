/*
 * compiler — the attributes every module uses, defined once.
 *
 * Header only, no dependencies: decode/ includes it and stays pure.
 */
#ifndef DECODE_COMPILER_H
#define DECODE_COMPILER_H

/* A fallible function: ignoring its result is a compile error (-Werror). */
#define OBX_WUR __attribute__((warn_unused_result))

#endif
