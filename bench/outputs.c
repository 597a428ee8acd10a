/*
 * The run folder: every file except the two streamed CSVs (layer_timer.csv
 * and steps_timer.csv, written during the passes by runner.c and committed
 * here). Every file goes through bw_file: temporary name, checked writes,
 * rename when complete. docs/benchmark.md describes each file and column.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "draw.h"
#include "sha256.h"

/* ---- derived figures ---------------------------------------------------------------------- */

void bench_summarize(const bench_run *r, bench_summary *s)
{
    memset(s, 0, sizeof *s);
    double fwd_flops[PASS_KINDS] = {0};
    double fwd_ns_timed = 0;
    for (int k = 0; k < PASS_KINDS; k++) {
        for (int st = 0; st < NSTEPS; st++)
            stats_compute(r->steps[k][st].v, r->steps[k][st].n, &s->step[k][st]);
        s->energy_j[k] = r->energy.source == ENERGY_NONE ? NAN : 0;
    }
    for (int i = 0; i < r->npasses; i++) {
        const pass_rec *p = &r->passes[i];
        s->passes[p->kind]++;
        s->images[p->kind] += p->images;
        s->wall_s[p->kind] += (double)(p->t1 - p->t0) / 1e9;
        s->batch_s[p->kind] += (double)p->batch_ns / 1e9;
        fwd_flops[p->kind] += (double)p->flops;
        if (r->energy.source != ENERGY_NONE)
            s->energy_j[p->kind] += energy_total_between(&r->energy, &p->e0, &p->e1);
    }
    for (int k = 0; k < PASS_KINDS; k++)
        if (!s->passes[k])
            s->energy_j[k] = NAN; /* no such pass: unknown, not 0 J */
    fwd_ns_timed = s->step[PASS_TIMED][ST_FORWARD].sum * 1e6;
    double timed_images = (double)s->images[PASS_TIMED];
    s->throughput_img_per_s =
        s->batch_s[PASS_TIMED] > 0 ? timed_images / s->batch_s[PASS_TIMED] : NAN;
    s->ms_per_image = timed_images > 0 ? s->batch_s[PASS_TIMED] * 1e3 / timed_images : NAN;
    s->forward_ms_per_image =
        timed_images > 0 ? s->step[PASS_TIMED][ST_FORWARD].sum / timed_images : NAN;
    const sample_vec *first = r->steps[PASS_WARMUP][ST_FORWARD].n ? &r->steps[PASS_WARMUP][ST_FORWARD]
                                                                   : &r->steps[PASS_TIMED][ST_FORWARD];
    s->first_forward_ms = first->n ? first->v[0] : NAN;
    double m0 = s->step[PASS_TIMED][ST_FORWARD].mean, m1 = s->step[PASS_LAYERS][ST_FORWARD].mean;
    s->layer_overhead_pct = s->step[PASS_LAYERS][ST_FORWARD].n && m0 > 0 ? (m1 - m0) / m0 * 100 : NAN;
    s->layer_coverage = r->layered_forward_ns
                            ? (double)r->layered_layer_ns / (double)r->layered_forward_ns
                            : NAN;
    s->gflop_per_image =
        s->images[PASS_TIMED] ? fwd_flops[PASS_TIMED] / 1e9 / (double)s->images[PASS_TIMED] : NAN;
    s->achieved_gflop_per_s = fwd_ns_timed > 0 ? fwd_flops[PASS_TIMED] / fwd_ns_timed : NAN;
    s->fraction_of_fma_peak = r->fma_peak > 0 ? s->achieved_gflop_per_s / r->fma_peak : NAN;
    double e = s->energy_j[PASS_TIMED];
    s->energy_j_per_image = s->images[PASS_TIMED] ? e / (double)s->images[PASS_TIMED] : NAN;
    s->images_per_j = e > 0 ? (double)s->images[PASS_TIMED] / e : NAN;
    s->gflop_per_j = e > 0 ? fwd_flops[PASS_TIMED] / 1e9 / e : NAN;
    s->avg_power_w = s->wall_s[PASS_TIMED] > 0 ? e / s->wall_s[PASS_TIMED] : NAN;
}

/* ---- helpers -------------------------------------------------------------------------------------- */

static int open_in_run(bench_run *r, bw_file *f, const char *name)
{
    char *p = path_join(r->run_dir, name);
    if (!p) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return -1;
    }
    int rc = bw_open(f, p, r->err, sizeof r->err);
    free(p);
    return rc;
}

/* Opens a run-folder CSV and writes its header line. */
static int open_csv(bench_run *r, bw_file *f, const char *name, const char *header)
{
    if (open_in_run(r, f, name) != 0)
        return -1;
    bw_printf(f, "%s\n", header);
    return 0;
}

static int commit(bench_run *r, bw_file *f) { return bw_commit(f, r->err, sizeof r->err); }

static void csv_num(bw_file *f, double v, const char *fmt)
{
    if (isfinite(v))
        bw_printf(f, fmt, v);
    /* unknown: an empty field (CSV's null), never 0 */
}

int outputs_write_npy(const char *path, const float *data, int rows, int cols, char *err,
                      size_t err_size)
{
    bw_file f;
    if (bw_open(&f, path, err, err_size) != 0)
        return -1;
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }",
                     rows, cols);
    /* magic(6) + version(2) + len(2) + header padded with spaces to 64 bytes, '\n' last */
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    uint16_t hl = (uint16_t)(n + pad + 1);
    bw_write(&f, "\x93NUMPY\x01\x00", 8);
    unsigned char le[2] = {(unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    bw_write(&f, le, 2);
    bw_write(&f, hdr, (size_t)n);
    for (int i = 0; i < pad; i++)
        bw_write(&f, " ", 1);
    bw_write(&f, "\n", 1);
    bw_write(&f, data, (size_t)rows * (size_t)cols * sizeof(float)); /* x86: little-endian */
    return bw_commit(&f, err, err_size);
}

/* ---- run.json ------------------------------------------------------------------------------------- */

static void write_options(json_writer *j, const bench_options *o)
{
    jw_key(j, "options");
    jw_obj(j);
    for (int i = 0; i < opts_count(); i++) {
        char buf[1024];
        int is_num, is_null;
        opts_value_text(o, i, buf, sizeof buf, &is_num, &is_null);
        jw_key(j, opts_name(i));
        if (is_null)
            jw_null(j);
        else if (is_num)
            jw_raw(j, buf);
        else
            jw_str(j, buf);
    }
    jw_obj_end(j);
}

static const char *activation_name(yolo_activation a)
{
    return a == YOLO_ACT_SILU ? "SiLU" : a == YOLO_ACT_LEAKY_RELU ? "LeakyReLU(0.1)" : "none";
}

static void write_model_json(json_writer *j, const bench_run *r)
{
    jw_key(j, "model");
    jw_obj(j);
    jw_kstr(j, "path", r->o->model);
    jw_kstr(j, "name", r->info.name);
    jw_kstr(j, "sha256", r->model_sha);
    char src[65];
    sha256_hex(r->info.source_sha256, src);
    jw_kstr(j, "source_checkpoint_sha256", src);
    jw_kint(j, "classes", r->info.num_classes);
    jw_kint(j, "layers", r->info.num_layers);
    jw_kuint(j, "parameters", r->info.num_params);
    jw_kint(j, "max_stride", r->stride);
    jw_kint(j, "default_img_size", r->info.default_img_size);
    jw_kbool(j, "fused", r->info.fused);
    jw_kstr(j, "activation", activation_name(r->info.activation));
    jw_knum(j, "gflops_at_img_size_square", r->model_gflops_img_size);
    jw_obj_end(j);
}

static void write_images_json(json_writer *j, const bench_run *r)
{
    jw_key(j, "images");
    jw_obj(j);
    jw_kstr(j, "folder", r->o->images);
    jw_kuint(j, "found", r->ds.n);
    jw_kuint(j, "skipped", r->skipped);
    jw_kuint(j, "per_pass", r->norder);
    jw_kuint(j, "other_files_ignored", r->ds.other_files);
    jw_obj_end(j);
}

static void write_machine_json(json_writer *j, const bench_run *r)
{
    const sysinfo *si = &r->sys;
    jw_key(j, "machine");
    jw_obj(j);
    jw_kstr(j, "cpu_model", si->cpu_model);
    jw_kint(j, "cpus_online", si->cpus_online);
    jw_kint(j, "cpus_allowed", si->cpus_allowed);
    jw_kint(j, "threads_used", r->threads_used);
    jw_kstr(j, "pinned_cpus", r->o->pin);
    jw_kstr(j, "governor", si->governor[0] ? si->governor : NULL);
    jw_kstr(j, "kernel", si->kernel);
    jw_kstr(j, "blas_config", si->blas_config[0] ? si->blas_config : NULL);
    if (si->blas_threads >= 0)
        jw_kint(j, "blas_threads", si->blas_threads);
    else
        jw_knull(j, "blas_threads");
    jw_kstr(j, "compiler", si->compiler);
    jw_kstr(j, "compile_flags", si->compile_flags);
    jw_kstr(j, "libyolo_version", yolo_version());
    jw_knum(j, "fma_peak_gflop_per_s", r->fma_peak);
    jw_knum(j, "fma_peak_gflop_per_s_1_thread", r->fma_peak_1);
    jw_kstr(j, "fma_peak_isa", r->fma_isa);
    jw_obj_end(j);
}

static void write_energy_json(json_writer *j, const bench_run *r)
{
    jw_key(j, "energy");
    jw_obj(j);
    jw_kstr(j, "source", energy_source_name(r->energy.source));
    jw_kstr(j, "note", r->energy.reason[0] ? r->energy.reason : NULL);
    jw_key(j, "domains");
    jw_arr(j);
    for (int i = 0; i < r->energy.ndom; i++) {
        jw_obj(j);
        jw_kstr(j, "name", r->energy.dom[i].name);
        jw_kstr(j, "kind", energy_kind_name(r->energy.dom[i].kind));
        jw_kstr(j, "path", r->energy.dom[i].path);
        jw_kint(j, "read_errors", r->energy.dom[i].read_errors);
        jw_obj_end(j);
    }
    jw_arr_end(j);
    jw_obj_end(j);
}

int outputs_write_run_json(bench_run *r, int completed)
{
    bw_file f;
    if (open_in_run(r, &f, "run.json") != 0)
        return -1;
    json_writer j;
    jw_init(&j, &f, 1);
    jw_obj(&j);
    jw_kint(&j, "schema_version", BENCH_SCHEMA_VERSION);
    jw_kstr(&j, "run_id", r->run_id);
    jw_kstr(&j, "run_dir", r->run_dir);
    jw_kbool(&j, "completed", completed);
    if (r->interrupted)
        jw_kint(&j, "interrupted_by_signal", r->interrupted);
    else
        jw_knull(&j, "interrupted_by_signal");
    jw_kstr(&j, "error", r->failed ? r->err : NULL);
    jw_kstr(&j, "start_utc", r->start_iso);
    jw_kstr(&j, "end_utc", r->end_iso[0] ? r->end_iso : NULL);
    write_options(&j, r->o);
    jw_kint(&j, "img_size_used", r->img_size);
    jw_kstr(&j, "isa", yolo_isa_name(r->isa));
    jw_kstr(&j, "isa_chosen_by", r->isa_by);
    write_model_json(&j, r);
    write_images_json(&j, r);
    write_machine_json(&j, r);
    write_energy_json(&j, r);
    jw_key(&j, "hardware_counters");
    jw_obj(&j);
    jw_kbool(&j, "available", r->hw.available);
    jw_kstr(&j, "note", r->hw.reason);
    jw_obj_end(&j);
    jw_obj_end(&j);
    return commit(r, &f);
}

/* ---- layer_types.csv ------------------------------------------------------------------------------ */

static int write_layer_types(bench_run *r)
{
    bw_file f;
    if (open_csv(r, &f, "layer_types.csv",
                 "type,layers_per_forward,calls,total_ms,ms_per_forward,pct_of_layer_time,"
                 "pct_of_forward,gflop_per_forward,gflop_per_s") != 0)
        return -1;
    double fw = (double)r->layered_forwards;
    double all_ns = (double)r->layered_layer_ns, fwd_ns = (double)r->layered_forward_ns;
    uint64_t all_flops = 0, all_calls = 0;
    for (int i = 0; i < r->ntypes; i++) {
        const type_stat *t = &r->types[i];
        all_flops += t->flops;
        all_calls += t->calls;
        csv_field(&f, t->name);
        bw_printf(&f, ",%.2f,%llu,%.4f,%.4f,%.3f,%.3f,%.6f,", fw ? (double)t->calls / fw : 0,
                  (unsigned long long)t->calls, (double)t->ns / 1e6,
                  fw ? (double)t->ns / 1e6 / fw : 0, all_ns ? 100.0 * (double)t->ns / all_ns : 0,
                  fwd_ns ? 100.0 * (double)t->ns / fwd_ns : 0,
                  fw ? (double)t->flops / 1e9 / fw : 0);
        csv_num(&f, t->ns && t->flops ? (double)t->flops / (double)t->ns : NAN, "%.3f");
        bw_printf(&f, "\n");
    }
    /* the last row: all layers together; its pct_of_forward is the coverage */
    bw_printf(&f, "ALL,%.2f,%llu,%.4f,%.4f,100.000,", fw ? (double)all_calls / fw : 0,
              (unsigned long long)all_calls, all_ns / 1e6, fw ? all_ns / 1e6 / fw : 0);
    csv_num(&f, fwd_ns ? 100.0 * all_ns / fwd_ns : NAN, "%.3f");
    bw_printf(&f, ",%.6f,", fw ? (double)all_flops / 1e9 / fw : 0);
    csv_num(&f, all_ns ? (double)all_flops / all_ns : NAN, "%.3f");
    bw_printf(&f, "\n");
    return commit(r, &f);
}

/* ---- energy.csv ------------------------------------------------------------------------------------ */

static void energy_row(bench_run *r, bw_file *f, const char *phase, int pass, double secs,
                       size_t images, double flops, const energy_snapshot *a,
                       const energy_snapshot *b)
{
    const energy_meter *m = &r->energy;
    int ok = m->source != ENERGY_NONE;
    bw_printf(f, "%s,%d,%s,%.6f,%zu,", phase, pass, energy_source_name(m->source), secs, images);
    double tot = ok ? energy_total_between(m, a, b) : NAN;
    csv_num(f, tot, "%.6f");
    bw_printf(f, ",");
    csv_num(f, ok && secs > 0 ? tot / secs : NAN, "%.4f");
    bw_printf(f, ",");
    csv_num(f, ok && images ? tot / (double)images : NAN, "%.6f");
    bw_printf(f, ",");
    csv_num(f, ok && tot > 0 ? (double)images / tot : NAN, "%.4f");
    bw_printf(f, ",");
    csv_num(f, ok && tot > 0 ? flops / 1e9 / tot : NAN, "%.4f");
    for (int k = DOM_PACKAGE; k <= DOM_PSYS; k++) {
        double v = 0;
        int have = 0;
        for (int i = 0; i < m->ndom; i++)
            if ((int)m->dom[i].kind == k) {
                v += b->j[i] - a->j[i];
                have = 1;
            }
        bw_printf(f, ",");
        csv_num(f, ok && have ? v : NAN, "%.6f");
    }
    bw_printf(f, ",");
    csv_field(f, ok ? "" : m->reason);
    bw_printf(f, "\n");
}

static int write_energy(bench_run *r)
{
    bw_file f;
    if (open_csv(r, &f, "energy.csv",
                 "phase,pass,source,seconds,images,energy_j,avg_power_w,j_per_image,"
                 "images_per_j,gflop_per_j,package_j,core_j,uncore_j,dram_j,psys_j,"
                 "unavailable_reason") != 0)
        return -1;
    /* one row per pass, then one per phase (sums of its passes) */
    for (int i = 0; i < r->npasses; i++) {
        const pass_rec *p = &r->passes[i];
        energy_row(r, &f, PASS_NAMES[p->kind], p->index, (double)(p->t1 - p->t0) / 1e9,
                   p->images, (double)p->flops, &p->e0, &p->e1);
    }
    for (int k = 0; k < PASS_KINDS; k++) {
        energy_snapshot a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        double secs = 0, flops = 0;
        size_t images = 0;
        int any = 0;
        for (int i = 0; i < r->npasses; i++) {
            const pass_rec *p = &r->passes[i];
            if ((int)p->kind != k)
                continue;
            any = 1;
            for (int d = 0; d < r->energy.ndom; d++)
                b.j[d] += p->e1.j[d] - p->e0.j[d];
            secs += (double)(p->t1 - p->t0) / 1e9;
            images += p->images;
            flops += (double)p->flops;
        }
        if (any) {
            char name[32];
            snprintf(name, sizeof name, "%s_total", PASS_NAMES[k]);
            energy_row(r, &f, name, -1, secs, images, flops, &a, &b);
        }
    }
    return commit(r, &f);
}

/* ---- memory.csv / memory_phases.csv ------------------------------------------------------------------ */

static const char *phase_at(const bench_run *r, uint64_t t)
{
    for (int i = 0; i < r->nphases; i++)
        if (t >= r->phases[i].t0 && t <= r->phases[i].t1)
            return r->phases[i].name;
    return "other";
}

static int write_memory(bench_run *r)
{
    bw_file f;
    if (open_csv(r, &f, "memory.csv", "t_s,phase,rss_bytes") != 0)
        return -1;
    for (size_t i = 0; i < r->mem.n; i++) {
        const mem_sample *s = &r->mem.samples[i];
        if (s->t_ns < r->t_start)
            continue;
        bw_printf(&f, "%.4f,%s,%llu\n", (double)(s->t_ns - r->t_start) / 1e9, phase_at(r, s->t_ns),
                  (unsigned long long)s->rss_bytes);
    }
    if (commit(r, &f) != 0)
        return -1;
    if (open_csv(r, &f, "memory_phases.csv",
                 "phase,start_s,end_s,peak_rss_bytes_vmhwm,peak_reset_at_start,"
                 "peak_rss_bytes_sampled,library_arena_bytes,library_scratch_bytes,"
                 "library_weight_bytes,library_packed_weight_bytes") != 0)
        return -1;
    for (int i = 0; i < r->nphases; i++) {
        const mem_phase *p = &r->phases[i];
        bw_printf(&f, "%s,%.4f,%.4f,", p->name, (double)(p->t0 - r->t_start) / 1e9,
                  (double)(p->t1 - r->t_start) / 1e9);
        if (p->vmhwm >= 0)
            bw_printf(&f, "%lld", (long long)p->vmhwm);
        bw_printf(&f, ",%s,", p->reset_ok ? "true" : "false");
        if (p->sampled_peak)
            bw_printf(&f, "%llu", (unsigned long long)p->sampled_peak);
        bw_printf(&f, ",%llu,%llu,%llu,%llu\n", (unsigned long long)r->ctxmem.arena_bytes,
                  (unsigned long long)r->ctxmem.scratch_bytes,
                  (unsigned long long)r->ctxmem.weight_bytes,
                  (unsigned long long)r->ctxmem.packed_weight_bytes);
    }
    return commit(r, &f);
}

/* ---- trace.json ------------------------------------------------------------------------------------ */

static int write_trace(bench_run *r)
{
    for (size_t i = 0; i < r->mem.n; i++)
        trace_counter(&r->trace, "rss_mb", r->mem.samples[i].t_ns,
                      (double)r->mem.samples[i].rss_bytes / 1048576.0);
    for (size_t i = 1; i < r->energy.nsamples; i++) {
        const energy_sample *a = &r->energy.samples[i - 1], *b = &r->energy.samples[i];
        if (b->t_ns > a->t_ns)
            trace_counter(&r->trace, "power_w", b->t_ns,
                          (b->total_j - a->total_j) / ((double)(b->t_ns - a->t_ns) / 1e9));
    }
    trace_sort(&r->trace);
    long bad = trace_check_nesting(&r->trace);
    if (bad >= 0)
        fprintf(stderr, "bench/run: warning: trace event %ld (%s) does not nest\n", bad,
                r->trace.ev[bad].name);
    bw_file f;
    if (open_in_run(r, &f, "trace.json") != 0)
        return -1;
    char pname[200];
    snprintf(pname, sizeof pname, "bench/run %s", r->info.name ? r->info.name : "");
    trace_write(&r->trace, &f, pname);
    return commit(r, &f);
}

/* ---- detections ------------------------------------------------------------------------------------ */

static const char *class_name(const bench_run *r, int cls)
{
    const char *n = NULL;
    if (yolo_model_class_name(r->model, cls, &n) != YOLO_OK || !n)
        return "?";
    return n;
}

static int write_detections(bench_run *r)
{
    bw_file f;
    if (open_in_run(r, &f, "detections.json") != 0)
        return -1;
    json_writer j;
    jw_init(&j, &f, 1);
    jw_obj(&j);
    jw_kint(&j, "schema_version", BENCH_SCHEMA_VERSION);
    jw_knum(&j, "conf_thres", r->o->conf);
    jw_knum(&j, "iou_thres", r->o->iou);
    jw_kbool(&j, "multi_label", r->o->multi_label);
    jw_kstr(&j, "box_format", "x1,y1,x2,y2 in original image pixels (not rounded)");
    jw_key(&j, "images");
    jw_arr(&j);
    for (size_t i = 0; i < r->ds.n; i++) {
        const det_list *dl = &r->dets[i];
        if (!dl->captured)
            continue;
        jw_obj(&j);
        jw_kstr(&j, "file", r->ds.items[i].rel);
        jw_kint(&j, "width", r->ds.items[i].width);
        jw_kint(&j, "height", r->ds.items[i].height);
        jw_kint(&j, "input_width", dl->in_w);
        jw_kint(&j, "input_height", dl->in_h);
        jw_key(&j, "detections");
        jw_arr(&j);
        for (int k = 0; k < dl->n; k++) {
            const yolo_detection *d = &dl->d[k];
            jw_obj(&j);
            jw_key(&j, "box");
            jw_arr(&j);
            jw_num(&j, d->x1);
            jw_num(&j, d->y1);
            jw_num(&j, d->x2);
            jw_num(&j, d->y2);
            jw_arr_end(&j);
            jw_kint(&j, "class_id", d->cls);
            jw_kstr(&j, "class_name", class_name(r, d->cls));
            jw_knum(&j, "confidence", d->conf);
            jw_obj_end(&j);
        }
        jw_arr_end(&j);
        jw_obj_end(&j);
    }
    jw_arr_end(&j);
    jw_obj_end(&j);
    return commit(r, &f);
}

/* COCO results: image_id is the file stem when it is a number (COCO's file
 * names), else the image's index in the sorted list. */
static int write_detections_coco(bench_run *r)
{
    bw_file f;
    json_writer j;
    if (open_in_run(r, &f, "detections_coco.json") != 0)
        return -1;
    jw_init(&j, &f, 0);
    jw_arr(&j);
    for (size_t i = 0; i < r->ds.n; i++) {
        const det_list *dl = &r->dets[i];
        if (!dl->captured)
            continue;
        char stem[256];
        dataset_stem(r->ds.items[i].path, stem, sizeof stem);
        char *end;
        long long id = strtoll(stem, &end, 10);
        if (!stem[0] || *end || id < 0)
            id = (long long)i;
        for (int k = 0; k < dl->n; k++) {
            const yolo_detection *d = &dl->d[k];
            bw_write(&f, "\n", 1);
            jw_obj(&j);
            jw_kint(&j, "image_id", id);
            int cat = r->info.num_classes == 80 ? bench_coco80_to_91(d->cls) : d->cls;
            jw_kint(&j, "category_id", cat);
            jw_key(&j, "bbox");
            jw_arr(&j);
            jw_num(&j, d->x1);
            jw_num(&j, d->y1);
            jw_num(&j, d->x2 - d->x1);
            jw_num(&j, d->y2 - d->y1);
            jw_arr_end(&j);
            jw_knum(&j, "score", d->conf);
            jw_obj_end(&j);
        }
    }
    jw_arr_end(&j);
    bw_write(&f, "\n", 1);
    return commit(r, &f);
}

/* Annotated copies in images/: decoded again (outside any timing), boxes and
 * labels drawn, saved as JPEG under a temporary name, then renamed. */
static int write_images(bench_run *r)
{
    char *dir = path_join(r->run_dir, "images");
    if (!dir || (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
        snprintf(r->err, sizeof r->err, "cannot create %s: %s", dir ? dir : "images/",
                 strerror(errno));
        free(dir);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < r->ds.n && rc == 0; i++) {
        const det_list *dl = &r->dets[i];
        if (!dl->captured)
            continue;
        yolo_image img;
        if (yolo_image_load(r->ds.items[i].path, &img) != YOLO_OK)
            continue; /* already warned about */
        for (int k = 0; k < dl->n; k++) {
            char label[96];
            snprintf(label, sizeof label, "%s %.2f", class_name(r, dl->d[k].cls), dl->d[k].conf);
            draw_detection(&img, &dl->d[k], label);
        }
        char stem[200], name[300], tmp[320];
        dataset_stem(r->ds.items[i].path, stem, sizeof stem);
        snprintf(name, sizeof name, "%s/%04zu_%s.jpg", dir, i, stem);
        snprintf(tmp, sizeof tmp, "%s/.%04zu_%s.tmp.jpg", dir, i, stem);
        if (yolo_image_save(&img, tmp) != YOLO_OK) {
            snprintf(r->err, sizeof r->err, "cannot write %s: %s", name, yolo_last_error());
            unlink(tmp);
            rc = -1;
        } else if (rename(tmp, name) != 0) {
            snprintf(r->err, sizeof r->err, "cannot rename %s: %s", tmp, strerror(errno));
            unlink(tmp);
            rc = -1;
        }
        yolo_image_free(&img);
    }
    free(dir);
    return rc;
}

/* ---- summary.json ---------------------------------------------------------------------------------- */

static void stats_json(json_writer *j, const char *prefix, const stats_summary *s)
{
    char k[96];
#define K(suffix, v)                                                        \
    do {                                                                    \
        snprintf(k, sizeof k, "%s_%s", prefix, suffix);                     \
        jw_knum(j, k, v);                                                   \
    } while (0)
    K("ms_mean", s->mean);
    K("ms_std", s->std);
    K("ms_min", s->min);
    K("ms_p50", s->p50);
    K("ms_p90", s->p90);
    K("ms_p99", s->p99);
    K("ms_max", s->max);
#undef K
    snprintf(k, sizeof k, "%s_samples", prefix);
    jw_kuint(j, k, s->n);
}

/* Latency (per batch), throughput and the per-step statistics. */
static void summary_timing(json_writer *j, const bench_run *r, const bench_summary *s)
{
    const stats_summary *lat = &s->step[PASS_TIMED][ST_BATCH];
    jw_knum(j, "latency_ms_median", lat->p50);
    jw_knum(j, "latency_ms_mean", lat->mean);
    jw_knum(j, "latency_ms_p90", lat->p90);
    jw_kbool(j, "latency_p90_reliable", lat->n >= STATS_MIN_SAMPLES_P90);
    jw_kint(j, "latency_images_per_sample", r->o->batch);
    jw_knum(j, "throughput_img_per_s", s->throughput_img_per_s);
    jw_knum(j, "time_ms_per_image", s->ms_per_image);
    jw_knum(j, "forward_ms_per_image", s->forward_ms_per_image);
    jw_knum(j, "first_forward_ms", s->first_forward_ms);
    for (int st = 0; st < NSTEPS; st++)
        stats_json(j, STEP_NAMES[st], &s->step[PASS_TIMED][st]);
    stats_json(j, "warmup_forward", &s->step[PASS_WARMUP][ST_FORWARD]);
    stats_json(j, "layer_timed_forward", &s->step[PASS_LAYERS][ST_FORWARD]);
    jw_knum(j, "layer_timing_overhead_pct", s->layer_overhead_pct);
    jw_knum(j, "layer_coverage_ratio", s->layer_coverage);
}

static void summary_flops_energy(json_writer *j, const bench_run *r, const bench_summary *s)
{
    jw_knum(j, "model_gflop_at_img_size_square", r->model_gflops_img_size);
    jw_knum(j, "gflop_per_image", s->gflop_per_image);
    jw_knum(j, "achieved_gflop_per_s", s->achieved_gflop_per_s);
    jw_knum(j, "fma_peak_gflop_per_s", r->fma_peak);
    jw_knum(j, "fraction_of_fma_peak", s->fraction_of_fma_peak);
    jw_kstr(j, "energy_source", energy_source_name(r->energy.source));
    jw_kstr(j, "energy_unavailable_reason",
            r->energy.source == ENERGY_NONE ? r->energy.reason : NULL);
    jw_knum(j, "energy_j_warmup", s->energy_j[PASS_WARMUP]);
    jw_knum(j, "energy_j_timed", s->energy_j[PASS_TIMED]);
    jw_knum(j, "energy_j_per_image", s->energy_j_per_image);
    jw_knum(j, "images_per_j", s->images_per_j);
    jw_knum(j, "gflop_per_j", s->gflop_per_j);
    jw_knum(j, "power_w_mean_timed", s->avg_power_w);
}

static void summary_memory_counters(json_writer *j, const bench_run *r)
{
    for (int i = 0; i < r->nphases; i++) {
        char k[64];
        snprintf(k, sizeof k, "peak_rss_bytes_%s", r->phases[i].name);
        if (r->phases[i].vmhwm >= 0)
            jw_kint(j, k, r->phases[i].vmhwm);
        else
            jw_knull(j, k);
    }
    jw_kuint(j, "library_arena_bytes", r->ctxmem.arena_bytes);
    jw_kuint(j, "library_scratch_bytes", r->ctxmem.scratch_bytes);
    jw_kuint(j, "library_weight_bytes", r->ctxmem.weight_bytes);
    jw_kuint(j, "library_packed_weight_bytes", r->ctxmem.packed_weight_bytes);
    int hw = r->hw.available;
    double ipc = hw && r->hw.cycles ? (double)r->hw.instructions / (double)r->hw.cycles : NAN;
    jw_knum(j, "cycles_main_thread", hw ? (double)r->hw.cycles : NAN);
    jw_knum(j, "instructions_main_thread", hw ? (double)r->hw.instructions : NAN);
    jw_knum(j, "ipc_main_thread", ipc);
    jw_kstr(j, "hardware_counters_note", r->hw.reason);
}

static int write_summary(bench_run *r, const bench_summary *s)
{
    bw_file f;
    if (open_in_run(r, &f, "summary.json") != 0)
        return -1;
    json_writer j;
    jw_init(&j, &f, 1);
    jw_obj(&j);
    jw_kint(&j, "schema_version", BENCH_SCHEMA_VERSION);
    jw_kbool(&j, "completed", !r->interrupted && !r->failed);
    jw_kstr(&j, "model_name", r->info.name);
    jw_kstr(&j, "model_sha256", r->model_sha);
    jw_kint(&j, "img_size", r->img_size);
    jw_kint(&j, "batch", r->o->batch);
    jw_kint(&j, "threads_used", r->threads_used);
    jw_kstr(&j, "isa", yolo_isa_name(r->isa));
    jw_kint(&j, "warmup_passes", s->passes[PASS_WARMUP]);
    jw_kint(&j, "timed_passes", s->passes[PASS_TIMED]);
    jw_kint(&j, "layer_timed_passes", s->passes[PASS_LAYERS]);
    jw_kuint(&j, "images_timed", s->images[PASS_TIMED]);
    jw_kuint(&j, "images_skipped", r->skipped);
    summary_timing(&j, r, s);
    summary_flops_energy(&j, r, s);
    summary_memory_counters(&j, r);
    jw_obj_end(&j);
    return commit(r, &f);
}

int outputs_write_all(bench_run *r)
{
    bench_summary s;
    bench_summarize(r, &s);
    if (commit(r, &r->f_layers) != 0 || commit(r, &r->f_steps) != 0)
        return -1;
    if (write_layer_types(r) != 0 || write_energy(r) != 0 || write_memory(r) != 0 ||
        write_trace(r) != 0 || write_detections(r) != 0 || write_detections_coco(r) != 0)
        return -1;
    if (!r->o->no_images && !r->interrupted && write_images(r) != 0)
        return -1;
    if (write_summary(r, &s) != 0)
        return -1;
    return outputs_write_run_json(r, !r->interrupted && !r->failed);
}
