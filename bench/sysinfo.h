/*
 * The machine a run was made on (CPU, kernel, governor, BLAS, compiler),
 * this machine's measured FMA peak (a short built-in microbenchmark with
 * runtime ISA dispatch), and hardware counters through perf_event_open.
 */
#ifndef BENCH_SYSINFO_H
#define BENCH_SYSINFO_H

#include <stdint.h>

typedef struct {
    char cpu_model[256];
    int cpus_online;
    int cpus_allowed;         /* in this process's affinity mask */
    char governor[64];        /* "" if unreadable */
    char kernel[256];         /* uname -srvm */
    char hostname[128];
    char blas_config[256];    /* "" if not obtainable */
    int blas_threads;         /* -1 if not obtainable */
    char compiler[128];
    char compile_flags[512];  /* what the compiler predefined: opt level, ISA */
    char isa[32];             /* widest FMA ISA the peak loop used */
} sysinfo;

void sysinfo_collect(sysinfo *s);

/* Measured single-precision FMA peak in GFLOP/s with nthreads threads
 * running for about seconds; isa receives "avx512f", "avx2+fma" or "scalar". */
double fma_peak_gflops(int nthreads, double seconds, char *isa, int isa_size);

/* Hardware counters of this process (cycles, instructions). */
typedef struct {
    int fd_cycles, fd_instr;
    int available;
    char reason[256];         /* why unavailable */
    uint64_t cycles, instructions;
} hw_counters;

void hw_counters_open(hw_counters *h);
void hw_counters_start(hw_counters *h);
void hw_counters_stop(hw_counters *h); /* accumulates into cycles/instructions */
void hw_counters_close(hw_counters *h);

/* Pins every thread of this process to the CPUs in mask[0..max). Returns the
 * number of threads pinned, -1 with errno on failure. */
int pin_all_threads(const unsigned char *mask, int max);

#endif /* BENCH_SYSINFO_H */
