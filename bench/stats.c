/*
 * Statistics of timing samples. Nearest-rank percentiles (no interpolation:
 * every reported percentile is a latency that really happened).
 */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double stats_percentile_sorted(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return NAN;
    /* The small epsilon keeps e.g. p90 of 10 samples at rank 9 when p*n/100
     * comes out a hair above 9.0 in floating point. */
    double exact = p * (double)n / 100.0;
    size_t rank = (size_t)ceil(exact - 1e-9);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

int stats_compute(const double *x, size_t n, stats_summary *out)
{
    memset(out, 0, sizeof *out);
    out->n = n;
    if (n == 0) {
        out->mean = out->std = out->min = out->max = NAN;
        out->p50 = out->p90 = out->p99 = NAN;
        return 0;
    }
    double *s = malloc(n * sizeof *s);
    if (!s)
        return -1;
    memcpy(s, x, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += s[i];
    double mean = sum / (double)n;
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (s[i] - mean) * (s[i] - mean);
    out->sum = sum;
    out->mean = mean;
    out->std = n > 1 ? sqrt(ss / (double)(n - 1)) : NAN;
    out->min = s[0];
    out->max = s[n - 1];
    out->p50 = stats_percentile_sorted(s, n, 50);
    out->p90 = stats_percentile_sorted(s, n, 90);
    out->p99 = stats_percentile_sorted(s, n, 99);
    free(s);
    return 0;
}

int sv_push(sample_vec *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        double *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

void sv_free(sample_vec *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}
