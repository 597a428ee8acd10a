/*
 * Memory of the benchmark process: a sampler thread recording RSS over time
 * (from /proc/self/statm), the true peak per phase (VmHWM of
 * /proc/self/status, reset between phases by writing "5" to
 * /proc/self/clear_refs), and what the library says it allocated.
 */
#ifndef BENCH_MEMORY_H
#define BENCH_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "ticker.h"

typedef struct {
    uint64_t t_ns;
    uint64_t rss_bytes;
} mem_sample;

typedef struct {
    ticker tk;
    mem_sample *samples;
    size_t n, cap;
} mem_sampler;

/* Current RSS in bytes from /proc/self/statm; 0 if unreadable. */
uint64_t mem_rss_bytes(void);
/* A "VmHWM:" style field of /proc/self/status in bytes; -1 if absent. */
int64_t mem_status_field(const char *field);
/* Resets the peak RSS (VmHWM) to the current RSS. 0, or -1 with errno. */
int mem_reset_peak(void);

int mem_sampler_start(mem_sampler *s, int interval_ms);
void mem_sampler_stop(mem_sampler *s);
void mem_sampler_free(mem_sampler *s);
/* Highest sampled RSS in [t0, t1]; 0 when no sample falls there. */
uint64_t mem_sampler_max(mem_sampler *s, uint64_t t0, uint64_t t1);

#endif /* BENCH_MEMORY_H */
