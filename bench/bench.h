/*
 * The state of one benchmark run, shared by the driver (runner.c), the run
 * folder writers (outputs.c) and the terminal summary (report.c).
 */
#ifndef BENCH_BENCH_H
#define BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "energy.h"
#include "memory.h"
#include "options.h"
#include "stats.h"
#include "sysinfo.h"
#include "trace.h"
#include "writers.h"
#include "yolo.h"

#define BENCH_SCHEMA_VERSION 1

/* Exit statuses (documented in docs/benchmark.md and --help). */
#define EXIT_OK 0
#define EXIT_ERROR 1
#define EXIT_SKIPPED 2
#define EXIT_USAGE 64

typedef enum { PASS_WARMUP = 0, PASS_TIMED = 1, PASS_LAYERS = 2, PASS_KINDS = 3 } pass_kind;

/* Pipeline steps; nms and scale_boxes are sub-steps of postprocess. */
typedef enum {
    ST_DECODE,
    ST_LETTERBOX,
    ST_TO_TENSOR,
    ST_FORWARD,
    ST_POSTPROCESS,
    ST_NMS,
    ST_SCALE,
    ST_BATCH, /* the whole batch, decode to last scale_boxes */
    NSTEPS
} step_id;

extern const char *const STEP_NAMES[NSTEPS];
extern const char *const PASS_NAMES[PASS_KINDS];

#define MAX_TYPES 64

typedef struct {
    char name[48];
    uint64_t calls, ns, flops;
} type_stat;

typedef struct {
    int layer_index, source_index;
    const char *type_name;
    int b, c, h, w;
    uint64_t flops, start_ns, elapsed_ns;
} layer_rec;

typedef struct {
    pass_kind kind;
    int index;            /* pass number in the run, from 0 */
    uint64_t t0, t1;
    size_t images;
    uint64_t flops;
    uint64_t batch_ns;    /* sum of batch wall times */
    energy_snapshot e0, e1;
    int complete;
} pass_rec;

typedef struct {
    int captured;
    int n;
    yolo_detection *d;
    int in_w, in_h;       /* network input the boxes came from */
} det_list;

typedef struct {
    const char *name;     /* "load", "warmup", "timed" */
    uint64_t t0, t1;
    int64_t vmhwm;        /* bytes; -1 unreadable */
    uint64_t sampled_peak;
    int reset_ok;         /* clear_refs worked, so vmhwm is this phase's own */
} mem_phase;

typedef struct {
    bench_options *o;
    dataset ds;
    size_t *order;
    size_t norder;
    size_t unique_images;

    yolo_model *model;
    yolo_model_info info;
    yolo_ctx *ctx;        /* no layer callback: the headline numbers */
    yolo_ctx *ctx_layers; /* with the callback */
    yolo_ctx_memory ctxmem;
    int img_size, stride, threads_used;
    char model_sha[65];
    double model_gflops_img_size; /* batch 1 at img_size square */

    char run_id[160];
    char *run_dir;
    char start_iso[32], end_iso[32];
    uint64_t t_start;

    sample_vec steps[PASS_KINDS][NSTEPS]; /* ms */
    sample_vec fwd_flops_per_image[PASS_KINDS];

    type_stat types[MAX_TYPES];
    int ntypes;
    uint64_t layered_forward_ns, layered_layer_ns;
    size_t layered_forwards, layers_per_forward;
    layer_rec *cur;
    int ncur, capcur;

    pass_rec *passes;
    int npasses, cappasses;
    det_list *dets;

    bw_file f_layers, f_steps;
    trace_log trace;
    energy_meter energy;
    mem_sampler mem;
    mem_phase phases[3];
    int nphases;

    sysinfo sys;
    yolo_isa isa;         /* the library's kernels (yolo_ctx_isa) */
    const char *isa_by;   /* who chose it: "--isa", "YOLO_ISA" or "cpu" (the best it has) */
    double fma_peak, fma_peak_1; /* of isa */
    char fma_isa[32];     /* the peak loop's name */
    hw_counters hw;

    size_t skipped;
    int interrupted;      /* signal number, 0 if none */
    int failed;           /* a fatal error after the run folder existed */
    char err[1024];
} bench_run;

/* Headline figures derived from a bench_run (outputs.c). NaN = unknown. */
typedef struct {
    stats_summary step[PASS_KINDS][NSTEPS]; /* ms */
    int passes[PASS_KINDS];
    size_t images[PASS_KINDS];
    double wall_s[PASS_KINDS];         /* pass wall time */
    double batch_s[PASS_KINDS];        /* sum of batch times */
    double throughput_img_per_s;       /* timed passes: images / batch time */
    double ms_per_image;               /* timed passes: batch time / images */
    double forward_ms_per_image;       /* timed passes: forward time / images */
    double first_forward_ms;           /* the very first forward (cold) */
    double layer_overhead_pct;         /* forward with callback vs without, mean */
    double layer_coverage;             /* sum of layer times / forward wall time */
    double gflop_per_image;            /* measured, timed passes */
    double achieved_gflop_per_s;       /* timed passes, forward time */
    double fraction_of_fma_peak;
    double energy_j[PASS_KINDS];       /* NaN: unavailable, or no pass of the kind */
    double energy_j_per_image, images_per_j, gflop_per_j, avg_power_w;
} bench_summary;

void bench_summarize(const bench_run *r, bench_summary *s);

/* runner.c */
int bench_main(int argc, char **argv);
void bench_utc_iso(char *buf, size_t size);
/* Minimal letterbox output size for a w x h image (detect.py auto padding). */
void bench_minimal_shape(int w, int h, int img_size, int stride, int *out_w, int *out_h);
/* COCO category id of a class index of an 80-class model. */
int bench_coco80_to_91(int cls);

/* outputs.c: every file of the run folder except the streamed CSVs. */
int outputs_write_run_json(bench_run *r, int completed);
int outputs_write_all(bench_run *r);
int outputs_write_npy(const char *path, const float *data, int rows, int cols, char *err,
                      size_t err_size);

/* report.c */
void report_print(bench_run *r, FILE *f);

#endif /* BENCH_BENCH_H */
