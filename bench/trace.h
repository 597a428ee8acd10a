/*
 * Chrome / Perfetto trace (Trace Event Format) of a run: passes, batches,
 * pipeline steps and layers as strictly nested complete events ("X") on one
 * thread, memory and power as counter tracks ("C"), thread names as
 * metadata ("M"). Times are CLOCK_MONOTONIC ns, written in microseconds
 * relative to the run's start.
 */
#ifndef BENCH_TRACE_H
#define BENCH_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "writers.h"

typedef struct {
    char name[48];
    const char *cat;      /* static string: "pass", "batch", "step", "layer" */
    char ph;              /* 'X' or 'C' */
    uint64_t ts_ns, dur_ns;
    double value;         /* counters */
    int64_t arg;          /* X: image / layer index or -1 */
} trace_event;

typedef struct {
    trace_event *ev;
    size_t n, cap, max_events;
    size_t dropped;
    uint64_t t0_ns;
} trace_log;

void trace_init(trace_log *t, uint64_t t0_ns, size_t max_events);
void trace_free(trace_log *t);
void trace_complete(trace_log *t, const char *cat, const char *name, uint64_t start_ns,
                    uint64_t dur_ns, int64_t arg);
void trace_counter(trace_log *t, const char *name, uint64_t ts_ns, double value);
/* Sorts the events (start ascending, longer first) for writing and checking. */
void trace_sort(trace_log *t);
/* After trace_sort: index of the first X event that overlaps its parent
 * without being inside it, or -1 when all nest strictly. */
long trace_check_nesting(const trace_log *t);
/* Writes the trace JSON (call trace_sort first). */
void trace_write(const trace_log *t, bw_file *f, const char *process_name);

#endif /* BENCH_TRACE_H */
