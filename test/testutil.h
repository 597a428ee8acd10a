/*
 * Helpers shared by the cmocka test programs: reading files and .npy arrays
 * from the repository (tests run from its root), and float comparison.
 */
#ifndef LIBYOLO_TESTUTIL_H
#define LIBYOLO_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first. */
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 in a build with AddressSanitizer (gcc or clang), for the few tests it
 * cannot run (too slow, or a process memory limit it does not survive). */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* Reads a whole file; NULL if it cannot. Caller frees. */
static inline void *tu_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    unsigned char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (size)
            *size = (size_t)n;
    }
    return buf;
}

/* A little-endian, C-order .npy array (format 1.0/2.0), dtype '<f4' or '|u1'. */
typedef struct {
    char dtype[8];   /* "<f4" or "|u1" */
    int ndim;
    size_t shape[8];
    size_t count;
    void *data;      /* owned copy */
} tu_npy;

static inline int tu_npy_load(const char *path, tu_npy *out)
{
    size_t size;
    unsigned char *raw = tu_read_file(path, &size);
    memset(out, 0, sizeof *out);
    if (!raw)
        return -1;
    if (size < 10 || memcmp(raw, "\x93NUMPY", 6) != 0)
        goto bad;
    size_t hlen, hoff;
    if (raw[6] == 1) {
        hlen = (size_t)raw[8] | ((size_t)raw[9] << 8);
        hoff = 10;
    } else {
        if (size < 12)
            goto bad;
        hlen = (size_t)raw[8] | ((size_t)raw[9] << 8) | ((size_t)raw[10] << 16) |
               ((size_t)raw[11] << 24);
        hoff = 12;
    }
    if (hoff + hlen > size)
        goto bad;
    char *hdr = malloc(hlen + 1);
    if (!hdr)
        goto bad;
    memcpy(hdr, raw + hoff, hlen);
    hdr[hlen] = 0;
    const char *d = strstr(hdr, "'descr': '");
    const char *s = strstr(hdr, "'shape': (");
    if (!d || !s || strstr(hdr, "'fortran_order': True")) {
        free(hdr);
        goto bad;
    }
    d += 10;
    size_t i = 0;
    while (d[i] && d[i] != '\'' && i < sizeof out->dtype - 1) {
        out->dtype[i] = d[i];
        i++;
    }
    size_t itemsize = strcmp(out->dtype, "<f4") == 0 ? 4 : strcmp(out->dtype, "|u1") == 0 ? 1 : 0;
    s += 10;
    out->count = 1;
    while (*s && *s != ')' && out->ndim < 8) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s)
            break;
        out->shape[out->ndim++] = v;
        out->count *= v;
        s = end;
        while (*s == ',' || *s == ' ')
            s++;
    }
    free(hdr);
    if (!itemsize || hoff + hlen + out->count * itemsize > size)
        goto bad;
    out->data = malloc(out->count * itemsize + 1);
    if (!out->data)
        goto bad;
    memcpy(out->data, raw + hoff + hlen, out->count * itemsize);
    free(raw);
    return 0;
bad:
    free(raw);
    return -1;
}

static inline void tu_npy_free(tu_npy *a)
{
    free(a->data);
    a->data = NULL;
}

/* Max |a-b| over n floats. */
static inline double tu_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d)
            m = d != d ? INFINITY : d;
    }
    return m;
}

/* Deterministic pseudo-random floats in [-1, 1) for test inputs. */
static inline float tu_rand(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(*state >> 40) / (double)(1ULL << 23) - 1.0);
}

#endif /* LIBYOLO_TESTUTIL_H */
