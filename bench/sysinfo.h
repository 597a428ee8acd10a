/*
 * The machine a run was made on (CPU, kernel, governor, BLAS, compiler),
 * this machine's measured FMA peak for the ISA a run's kernels use (a short
 * built-in microbenchmark), and hardware counters through perf_event_open.
 */
#ifndef BENCH_SYSINFO_H
#define BENCH_SYSINFO_H

#include <stdint.h>

#include "yolo.h"

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
} sysinfo;

void sysinfo_collect(sysinfo *s);

/* Measured single-precision FMA peak in GFLOP/s of code of the given ISA
 * (the one the library's kernels run, yolo_ctx_isa: so a run forced to
 * AVX2 on an AVX-512 machine is measured against the AVX2 peak), with
 * nthreads threads running for about seconds. name receives the loop's:
 * "avx512f" (16 lanes), "avx2+fma" (8) or "sse mul+add" (4: generic; the
 * x86-64 baseline has no FMA). */
double fma_peak_gflops(yolo_isa isa, int nthreads, double seconds, char *name, int name_size);

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
