/*
 * Trace Event Format writer. Perfetto refuses duration events on one thread
 * that overlap without nesting, so the driver clamps children into their
 * parents and trace_check_nesting verifies the result.
 */
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void trace_init(trace_log *t, uint64_t t0_ns, size_t max_events)
{
    memset(t, 0, sizeof *t);
    t->t0_ns = t0_ns;
    t->max_events = max_events;
}

void trace_free(trace_log *t)
{
    free(t->ev);
    memset(t, 0, sizeof *t);
}

static trace_event *trace_push(trace_log *t)
{
    if (t->n >= t->max_events) {
        t->dropped++;
        return NULL;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        trace_event *p = realloc(t->ev, cap * sizeof *p);
        if (!p) {
            t->dropped++;
            return NULL;
        }
        t->ev = p;
        t->cap = cap;
    }
    trace_event *e = &t->ev[t->n++];
    memset(e, 0, sizeof *e);
    return e;
}

void trace_complete(trace_log *t, const char *cat, const char *name, uint64_t start_ns,
                    uint64_t dur_ns, int64_t arg)
{
    trace_event *e = trace_push(t);
    if (!e)
        return;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->cat = cat;
    e->ph = 'X';
    e->ts_ns = start_ns;
    e->dur_ns = dur_ns;
    e->arg = arg;
}

void trace_counter(trace_log *t, const char *name, uint64_t ts_ns, double value)
{
    trace_event *e = trace_push(t);
    if (!e)
        return;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->cat = "counter";
    e->ph = 'C';
    e->ts_ns = ts_ns;
    e->value = value;
}

static int cmp_event(const void *pa, const void *pb)
{
    const trace_event *a = pa, *b = pb;
    if (a->ts_ns != b->ts_ns)
        return a->ts_ns < b->ts_ns ? -1 : 1;
    if (a->ph != b->ph)
        return a->ph == 'X' ? -1 : 1;
    if (a->dur_ns != b->dur_ns)
        return a->dur_ns > b->dur_ns ? -1 : 1; /* parent before child */
    return 0;
}

void trace_sort(trace_log *t)
{
    if (t->n > 1)
        qsort(t->ev, t->n, sizeof *t->ev, cmp_event);
}

long trace_check_nesting(const trace_log *t)
{
    uint64_t stack[64];
    int depth = 0;
    for (size_t i = 0; i < t->n; i++) {
        const trace_event *e = &t->ev[i];
        if (e->ph != 'X')
            continue;
        uint64_t end = e->ts_ns + e->dur_ns;
        while (depth > 0 && stack[depth - 1] <= e->ts_ns)
            depth--;
        if (depth > 0 && end > stack[depth - 1])
            return (long)i;
        if (depth == 64)
            return (long)i;
        stack[depth++] = end;
    }
    return -1;
}

static double rel_us(const trace_log *t, uint64_t ns)
{
    return ns >= t->t0_ns ? (double)(ns - t->t0_ns) / 1000.0 : -(double)(t->t0_ns - ns) / 1000.0;
}

/* An "M" event naming the process or the thread. */
static void write_meta(json_writer *j, const char *what, const char *name)
{
    jw_obj(j);
    jw_kstr(j, "name", what);
    jw_kstr(j, "ph", "M");
    jw_kint(j, "pid", 1);
    jw_kint(j, "tid", 1);
    jw_key(j, "args");
    jw_obj(j);
    jw_kstr(j, "name", name);
    jw_obj_end(j);
    jw_obj_end(j);
}

/* One X or C event; ts and dur in microseconds with three decimals, which
 * is ns resolution, so rounding cannot break the nesting. */
static void write_event(json_writer *j, const trace_log *t, const trace_event *e)
{
    char num[48];
    jw_obj(j);
    jw_kstr(j, "name", e->name);
    jw_kstr(j, "cat", e->cat);
    jw_kstr(j, "ph", e->ph == 'X' ? "X" : "C");
    snprintf(num, sizeof num, "%.3f", rel_us(t, e->ts_ns));
    jw_key(j, "ts");
    jw_raw(j, num);
    if (e->ph == 'X') {
        snprintf(num, sizeof num, "%.3f", (double)e->dur_ns / 1000.0);
        jw_key(j, "dur");
        jw_raw(j, num);
    }
    jw_kint(j, "pid", 1);
    jw_kint(j, "tid", 1);
    if (e->ph == 'C') {
        jw_key(j, "args");
        jw_obj(j);
        jw_knum(j, e->name, e->value);
        jw_obj_end(j);
    } else if (e->arg >= 0) {
        jw_key(j, "args");
        jw_obj(j);
        jw_kint(j, strcmp(e->cat, "layer") == 0 ? "layer" : "index", e->arg);
        jw_obj_end(j);
    }
    jw_obj_end(j);
}

void trace_write(const trace_log *t, bw_file *f, const char *process_name)
{
    json_writer j;
    jw_init(&j, f, 0);
    jw_obj(&j);
    jw_kstr(&j, "displayTimeUnit", "ms");
    jw_key(&j, "otherData");
    jw_obj(&j);
    jw_kstr(&j, "clock", "CLOCK_MONOTONIC, ts relative to the run start");
    jw_kuint(&j, "dropped_events", t->dropped);
    jw_obj_end(&j);
    jw_key(&j, "traceEvents");
    jw_arr(&j);
    bw_write(f, "\n", 1);
    /* metadata: names of the process and the one thread */
    write_meta(&j, "process_name", process_name);
    write_meta(&j, "thread_name", "pipeline");
    for (size_t i = 0; i < t->n; i++) {
        bw_write(f, "\n", 1);
        write_event(&j, t, &t->ev[i]);
    }
    jw_arr_end(&j);
    jw_obj_end(&j);
}
