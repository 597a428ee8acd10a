/*
 * SHA-256 of a file (FIPS 180-4), to identify the exact model file a run used.
 */
#ifndef BENCH_SHA256_H
#define BENCH_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
/* Lower-case hex digest of a whole file into hex[65]. 0 or -1 with errno. */
int sha256_file_hex(const char *path, char hex[65]);
void sha256_hex(const uint8_t d[32], char hex[65]);

#endif /* BENCH_SHA256_H */
