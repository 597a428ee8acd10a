/*
 * Terminal summary: time per layer type, per pipeline step (with n and the
 * p90 reliability flag), energy, memory, throughput, FLOP rates.
 */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static void fmt_num(char *buf, size_t size, double v, const char *fmt)
{
    if (isfinite(v))
        snprintf(buf, size, fmt, v);
    else
        snprintf(buf, size, "-");
}

static int cmp_type_ns(const void *a, const void *b)
{
    const type_stat *x = a, *y = b;
    return (x->ns < y->ns) - (x->ns > y->ns);
}

static void print_layer_types(const bench_run *r, FILE *f)
{
    if (!r->layered_forwards) {
        fprintf(f, "\nper layer type: no layer-timed passes (--no-layer-timing)\n");
        return;
    }
    type_stat sorted[MAX_TYPES];
    memcpy(sorted, r->types, sizeof sorted);
    qsort(sorted, (size_t)r->ntypes, sizeof sorted[0], cmp_type_ns);
    double fw = (double)r->layered_forwards;
    fprintf(f, "\nTime per layer type (%zu layer-timed forwards of %d image%s each)\n",
            r->layered_forwards, r->o->batch, r->o->batch > 1 ? "s" : "");
    fprintf(f, "  %-16s %10s %10s %7s %9s %10s\n", "type", "total ms", "ms/fwd", "%",
            "count/fwd", "GFLOP/s");
    for (int i = 0; i < r->ntypes; i++) {
        const type_stat *t = &sorted[i];
        char g[32];
        fmt_num(g, sizeof g, t->ns && t->flops ? (double)t->flops / (double)t->ns : NAN, "%.1f");
        fprintf(f, "  %-16s %10.2f %10.3f %6.1f%% %9.0f %10s\n", t->name, (double)t->ns / 1e6,
                (double)t->ns / 1e6 / fw,
                r->layered_layer_ns ? 100.0 * (double)t->ns / (double)r->layered_layer_ns : 0,
                (double)t->calls / fw, g);
    }
}

/* The steps timed once per image, the others once per batch. */
static const char *step_unit(int st)
{
    return st == ST_TO_TENSOR || st == ST_FORWARD || st == ST_BATCH ? "batch" : "image";
}

static void print_steps(const bench_summary *s, FILE *f)
{
    fprintf(f, "\nPipeline steps, timed passes without the layer callback (ms per image or "
               "per batch)\n");
    fprintf(f, "  %-13s %-5s %6s %9s %8s %9s %9s %9s %9s %9s\n", "step", "per", "n", "mean",
            "std", "min", "p50", "p90", "p99", "max");
    const char *flag = "";
    for (int st = 0; st < NSTEPS; st++) {
        const stats_summary *x = &s->step[PASS_TIMED][st];
        if (!x->n)
            continue;
        char sd[32];
        fmt_num(sd, sizeof sd, x->std, "%.3f");
        const char *mark = x->n < STATS_MIN_SAMPLES_P90 ? "*" : " ";
        if (*mark == '*')
            flag = mark;
        fprintf(f, "  %-13s %-5s %6zu %9.3f %8s %9.3f %9.3f %8.3f%s %8.3f%s %9.3f\n",
                st == ST_NMS ? "  nms" : st == ST_SCALE ? "  scale_boxes" : STEP_NAMES[st],
                step_unit(st), x->n, x->mean, sd, x->min, x->p50, x->p90, mark, x->p99, mark,
                x->max);
    }
    if (*flag)
        fprintf(f, "  * fewer than %d samples: p90/p99 are indicative only\n",
                STATS_MIN_SAMPLES_P90);
}

static void print_warmup_and_callback(const bench_summary *s, FILE *f)
{
    char a[32], b[32];
    fmt_num(a, sizeof a, s->first_forward_ms, "%.2f");
    fmt_num(b, sizeof b, s->step[PASS_WARMUP][ST_FORWARD].mean, "%.2f");
    fprintf(f, "\nWarm-up (apart from the statistics): first forward %s ms, warm-up forward mean "
               "%s ms over %zu\n",
            a, b, s->step[PASS_WARMUP][ST_FORWARD].n);
    fmt_num(a, sizeof a, s->layer_overhead_pct, "%+.2f%%");
    fmt_num(b, sizeof b, s->layer_coverage * 100, "%.1f%%");
    fprintf(f, "Layer callback: forward overhead %s (mean forward with vs without, %zu vs %zu "
               "forwards), coverage %s (sum of layer times / forward time)\n",
            a, s->step[PASS_LAYERS][ST_FORWARD].n, s->step[PASS_TIMED][ST_FORWARD].n, b);
}

static void print_speed(const bench_run *r, const bench_summary *s, FILE *f)
{
    const stats_summary *lat = &s->step[PASS_TIMED][ST_BATCH];
    char a[32], b[32], c[32], d[32];
    fmt_num(a, sizeof a, s->throughput_img_per_s, "%.2f");
    fmt_num(b, sizeof b, s->ms_per_image, "%.2f");
    fmt_num(c, sizeof c, s->forward_ms_per_image, "%.2f");
    fprintf(f, "\nPer image: throughput %s images/s = %s ms per image (forward alone %s ms per "
               "image)\n",
            a, b, c);
    fmt_num(a, sizeof a, lat->p50, "%.2f");
    fmt_num(b, sizeof b, lat->mean, "%.2f");
    fmt_num(c, sizeof c, lat->p90, "%.2f");
    fprintf(f, "Per batch of %d image%s (latency, decode to boxes): median %s ms, mean %s ms, "
               "p90 %s ms%s, n %zu\n",
            r->o->batch, r->o->batch > 1 ? "s" : "", a, b, c,
            lat->n < STATS_MIN_SAMPLES_P90 ? "*" : "", lat->n);
    fmt_num(a, sizeof a, s->achieved_gflop_per_s, "%.1f");
    fmt_num(b, sizeof b, r->fma_peak, "%.1f");
    fmt_num(c, sizeof c, s->fraction_of_fma_peak * 100, "%.1f%%");
    fmt_num(d, sizeof d, s->gflop_per_image, "%.2f");
    fprintf(f, "FLOPs: %s GFLOP/image, achieved %s GFLOP/s in forward, FMA peak %s GFLOP/s "
               "(%s, the peak of isa %s, %d threads) -> %s of peak%s\n",
            d, a, b, r->fma_isa, yolo_isa_name(r->isa), r->threads_used, c,
            s->fraction_of_fma_peak > 1.0
                ? " (FLOPs counted as direct convolution; Winograd layers do fewer)"
                : "");
}

static void print_energy(const bench_run *r, const bench_summary *s, FILE *f)
{
    if (r->energy.source == ENERGY_NONE) {
        fprintf(f, "Energy: unavailable (%s)\n", r->energy.reason);
        return;
    }
    char w[32], a[32], b[32], c[32], d[32], e[32];
    fmt_num(w, sizeof w, s->energy_j[PASS_WARMUP], "%.2f");
    fmt_num(a, sizeof a, s->energy_j[PASS_TIMED], "%.2f");
    fmt_num(b, sizeof b, s->energy_j_per_image, "%.3f");
    fmt_num(c, sizeof c, s->images_per_j, "%.3f");
    fmt_num(d, sizeof d, s->avg_power_w, "%.1f");
    fmt_num(e, sizeof e, s->gflop_per_j, "%.2f");
    fprintf(f, "Energy (%s, package+dram): warm-up %s J, timed %s J, %s J/image, %s images/J, "
               "%s W mean, %s GFLOP/J\n",
            energy_source_name(r->energy.source), w, a, b, c, d, e);
}

static void print_memory_counters(const bench_run *r, FILE *f)
{
    fprintf(f, "Memory: peak RSS");
    for (int i = 0; i < r->nphases; i++)
        if (r->phases[i].vmhwm >= 0)
            fprintf(f, " %s %.1f MiB%s", r->phases[i].name,
                    (double)r->phases[i].vmhwm / 1048576.0,
                    r->phases[i].reset_ok ? "" : " (cumulative)");
    fprintf(f,
            "; library: arena %.1f MiB, scratch %.1f MiB, weights %.1f MiB mapped"
            " + %.1f MiB packed for the kernels\n",
            (double)r->ctxmem.arena_bytes / 1048576.0, (double)r->ctxmem.scratch_bytes / 1048576.0,
            (double)r->ctxmem.weight_bytes / 1048576.0,
            (double)r->ctxmem.packed_weight_bytes / 1048576.0);
    if (r->hw.available)
        fprintf(f, "Counters (main thread): %llu cycles, %llu instructions, IPC %.2f\n",
                (unsigned long long)r->hw.cycles, (unsigned long long)r->hw.instructions,
                r->hw.cycles ? (double)r->hw.instructions / (double)r->hw.cycles : 0);
    else
        fprintf(f, "Counters: unavailable (%s)\n", r->hw.reason);
}

void report_print(bench_run *r, FILE *f)
{
    bench_summary s;
    bench_summarize(r, &s);
    fprintf(f, "\n== bench/run: %s (sha256 %.12s...) img-size %d batch %d threads %d isa %s "
               "(chosen by %s)\n",
            r->info.name ? r->info.name : "?", r->model_sha, r->img_size, r->o->batch,
            r->threads_used, yolo_isa_name(r->isa), r->isa_by ? r->isa_by : "?");
    if (r->interrupted)
        fprintf(f, "   INTERRUPTED (signal %d): figures cover the completed batches only\n",
                r->interrupted);
    print_layer_types(r, f);
    print_steps(&s, f);
    print_warmup_and_callback(&s, f);
    print_speed(r, &s, f);
    print_energy(r, &s, f);
    print_memory_counters(r, f);
}
