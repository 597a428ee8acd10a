/*
 * Summary statistics of timing samples: nearest-rank percentiles, sample
 * standard deviation, and a growable sample array.
 */
#ifndef BENCH_STATS_H
#define BENCH_STATS_H

#include <stddef.h>

/* p90 (and higher) percentiles of fewer samples than this mean little
 * (MLPerf LoadGen's rule); the report flags them. */
#define STATS_MIN_SAMPLES_P90 64

typedef struct {
    size_t n;
    double mean, std; /* std: sample (n-1); NaN when n < 2 */
    double min, max;
    double p50, p90, p99; /* nearest rank; NaN when n == 0 */
    double sum;
} stats_summary;

/* Nearest-rank percentile of sorted[0..n): the value at rank ceil(p/100*n)
 * (1-based), rank at least 1. NaN if n == 0. */
double stats_percentile_sorted(const double *sorted, size_t n, double p);

/* Summary of x[0..n) (x is not modified). All NaN when n == 0. Returns -1
 * only when it cannot allocate. */
int stats_compute(const double *x, size_t n, stats_summary *out);

typedef struct {
    double *v;
    size_t n, cap;
} sample_vec;

int sv_push(sample_vec *s, double x);
void sv_free(sample_vec *s);

#endif /* BENCH_STATS_H */
