/*
 * The benchmark driver: loads the model, checks the images, runs warm-up and
 * timed passes (timed passes without the layer callback alternate with
 * passes with it, so the headline latency is never distorted and the
 * callback's overhead is measured), streams the per-layer and per-step CSVs,
 * and hands the results to outputs.c and report.c.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h"

const char *const STEP_NAMES[NSTEPS] = {"decode",      "letterbox", "to_tensor",   "forward",
                                        "postprocess", "nms",       "scale_boxes", "batch"};
const char *const PASS_NAMES[PASS_KINDS] = {"warmup", "timed", "timed_layers"};

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

void bench_utc_iso(char *buf, size_t size)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void bench_minimal_shape(int w, int h, int img_size, int stride, int *out_w, int *out_h)
{
    double r = fmin((double)img_size / h, (double)img_size / w);
    /* nearbyint in the default mode rounds half to even, as Python's round */
    int nw = (int)nearbyint(w * r), nh = (int)nearbyint(h * r);
    *out_w = nw + (img_size - nw) % stride;
    *out_h = nh + (img_size - nh) % stride;
}

int bench_coco80_to_91(int cls)
{
    static const int map[80] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 13, 14, 15, 16, 17,
                                18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36,
                                37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
                                54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73,
                                74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90};
    return cls >= 0 && cls < 80 ? map[cls] : -1;
}

/* ---- layer callback ---------------------------------------------------------------- */

/* Only copies the event: interning the type name and writing happen after
 * the forward, so the callback costs as little as possible. */
static int on_layer(void *user, const yolo_layer_event *e)
{
    bench_run *r = user;
    if (r->ncur == r->capcur) {
        int cap = r->capcur ? r->capcur * 2 : 256;
        layer_rec *p = realloc(r->cur, (size_t)cap * sizeof *p);
        if (!p)
            return 0; /* lose the record rather than the run */
        r->cur = p;
        r->capcur = cap;
    }
    layer_rec *l = &r->cur[r->ncur++];
    l->layer_index = e->layer_index;
    l->source_index = e->source_index;
    l->type_name = e->type_name;
    l->b = e->batch;
    l->c = e->channels;
    l->h = e->height;
    l->w = e->width;
    l->flops = e->flops;
    l->start_ns = e->start_ns;
    l->elapsed_ns = e->elapsed_ns;
    return 0;
}

static type_stat *type_for(bench_run *r, const char *name)
{
    if (!name)
        name = "?";
    for (int i = 0; i < r->ntypes; i++)
        if (strcmp(r->types[i].name, name) == 0)
            return &r->types[i];
    if (r->ntypes == MAX_TYPES)
        return &r->types[MAX_TYPES - 1];
    type_stat *t = &r->types[r->ntypes++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

/* Records the layers of one callback forward: CSV rows, per-type totals,
 * trace events clamped inside the forward so the trace nests strictly. */
static void flush_layers(bench_run *r, int pass, int batch, uint64_t f0, uint64_t f1)
{
    uint64_t sum = 0;
    for (int i = 0; i < r->ncur; i++) {
        layer_rec *l = &r->cur[i];
        type_stat *t = type_for(r, l->type_name);
        t->calls++;
        t->ns += l->elapsed_ns;
        t->flops += l->flops;
        sum += l->elapsed_ns;
        bw_printf(&r->f_layers, "%d,%d,%d,%d,", pass, batch, l->layer_index, l->source_index);
        csv_field(&r->f_layers, l->type_name ? l->type_name : "?");
        bw_printf(&r->f_layers, ",%d,%d,%d,%d,%llu,%llu,%.3f\n", l->b, l->c, l->h, l->w,
                  (unsigned long long)l->flops, (unsigned long long)l->elapsed_ns,
                  l->start_ns >= r->t_start ? (double)(l->start_ns - r->t_start) / 1e3 : 0.0);
        uint64_t s = l->start_ns < f0 ? f0 : l->start_ns;
        uint64_t e = l->start_ns + l->elapsed_ns;
        if (e > f1)
            e = f1;
        if (s > e)
            s = e;
        trace_complete(&r->trace, "layer", l->type_name ? l->type_name : "?", s, e - s,
                       l->layer_index);
    }
    r->layered_forward_ns += f1 - f0;
    r->layered_layer_ns += sum;
    r->layered_forwards++;
    r->layers_per_forward = (size_t)r->ncur;
    r->ncur = 0;
}

/* ---- steps ------------------------------------------------------------------------- */

typedef struct {
    bench_run *r;
    pass_kind kind;
    int pass, batch;
} step_ctx;

static void step_done(step_ctx *s, step_id st, int image, uint64_t t0, uint64_t t1)
{
    bench_run *r = s->r;
    uint64_t ns = t1 - t0;
    sv_push(&r->steps[s->kind][st], (double)ns / 1e6);
    const char *parent = st == ST_NMS || st == ST_SCALE ? "postprocess" : st == ST_BATCH ? "" : "batch";
    bw_printf(&r->f_steps, "%s,%d,%d,%d,", PASS_NAMES[s->kind], s->pass, s->batch, image);
    csv_field(&r->f_steps, image >= 0 ? r->ds.items[image].rel : "");
    bw_printf(&r->f_steps, ",%s,%s,%.3f,%llu\n", STEP_NAMES[st], parent,
              (double)(t0 - r->t_start) / 1e3, (unsigned long long)ns);
    char name[48];
    snprintf(name, sizeof name, "%s", STEP_NAMES[st]);
    if (st == ST_BATCH)
        snprintf(name, sizeof name, "batch %d", s->batch);
    trace_complete(&r->trace, st == ST_BATCH ? "batch" : "step", name, t0, ns, image);
}

/* ---- progress bar ----------------------------------------------------------------------- */

typedef struct {
    int enabled;
    uint64_t last_ns;
    int passes_planned; /* -1 when open-ended (--min-time) */
} progress_bar;

static void progress_draw(bench_run *r, progress_bar *pb, int pass, const char *kind,
                          size_t done, size_t total, int force)
{
    if (!pb->enabled)
        return;
    uint64_t now = bench_now_ns();
    if (!force && now - pb->last_ns < 100000000ull)
        return;
    pb->last_ns = now;
    double elapsed = (double)(now - r->t_start) / 1e9;
    double frac_pass = total ? (double)done / (double)total : 1;
    char eta[32] = "?";
    if (pb->passes_planned > 0) {
        double frac = ((double)pass + frac_pass) / pb->passes_planned;
        if (frac > 0.01)
            snprintf(eta, sizeof eta, "%.0fs", elapsed / frac - elapsed);
    } else if (r->o->min_time > 0) {
        double left = r->o->min_time - elapsed;
        snprintf(eta, sizeof eta, ">=%.0fs", left > 0 ? left : 0);
    }
    int width = 24, fill = (int)(frac_pass * width);
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    char passes[32];
    if (pb->passes_planned > 0)
        snprintf(passes, sizeof passes, "%d/%d", pass + 1, pb->passes_planned);
    else
        snprintf(passes, sizeof passes, "%d", pass + 1);
    fprintf(stderr, "\r[%s] pass %s %-12s image %zu/%zu  ETA %-8s", bar, passes, kind, done,
            total, eta);
    fflush(stderr);
}

static void progress_end(progress_bar *pb)
{
    if (pb->enabled)
        fprintf(stderr, "\r%*s\r", 80, "");
}

/* ---- one pass ------------------------------------------------------------------------- */

typedef struct {
    float *input;       /* batch x 3 x S x S */
    yolo_image *img, *lb;
    yolo_letterbox_info *lbi;
    size_t *idx;        /* dataset index of each decoded image */
    int n;              /* images decoded (unreadable ones left out) */
    int nlb;            /* images letterboxed */
    int W, H;           /* the batch's network input */
    yolo_detection *dets;
    int cap_dets;
} batch_buf;

static int save_raw(bench_run *r, size_t item, const float *pred, int rows, int cols)
{
    char stem[200], name[256];
    dataset_stem(r->ds.items[item].path, stem, sizeof stem);
    snprintf(name, sizeof name, "raw/%04zu_%s.npy", item, stem);
    char *path = path_join(r->run_dir, name);
    if (!path) {
        set_err(r->err, sizeof r->err, "out of memory");
        return -1;
    }
    int rc = outputs_write_npy(path, pred, rows, cols, r->err, sizeof r->err);
    free(path);
    return rc;
}

/* Keeps the first detections (and with --save-raw the raw predictions) of
 * an image; later passes give the same. 0, or -1 with r->err. */
static int capture(bench_run *r, size_t item, const batch_buf *bb, int nd, const float *pred,
                   int rows, int cols)
{
    det_list *dl = &r->dets[item];
    if (dl->captured)
        return 0;
    dl->d = malloc((size_t)(nd > 0 ? nd : 1) * sizeof *dl->d);
    if (!dl->d) {
        set_err(r->err, sizeof r->err, "out of memory keeping the detections of %s",
                r->ds.items[item].path);
        return -1;
    }
    memcpy(dl->d, bb->dets, (size_t)nd * sizeof *dl->d);
    dl->n = nd;
    dl->in_w = bb->W;
    dl->in_h = bb->H;
    dl->captured = 1;
    return r->o->save_raw ? save_raw(r, item, pred, rows, cols) : 0;
}

/* Decodes the batch's images; one that fails now (it decoded at the start)
 * is named, marked skipped and left out from here on. */
static void decode_batch(step_ctx *sc, batch_buf *bb, const size_t *items, int nitems)
{
    bench_run *r = sc->r;
    bb->n = bb->nlb = 0;
    for (int i = 0; i < nitems; i++) {
        size_t it = items[i];
        uint64_t t0 = bench_now_ns();
        yolo_status st = yolo_image_load(r->ds.items[it].path, &bb->img[bb->n]);
        uint64_t t1 = bench_now_ns();
        if (st != YOLO_OK) {
            fprintf(stderr, "\nwarning: skipping %s: %s\n", r->ds.items[it].path,
                    yolo_last_error());
            r->ds.items[it].skipped = 1;
            r->skipped++;
            continue;
        }
        step_done(sc, ST_DECODE, (int)it, t0, t1);
        bb->idx[bb->n++] = it;
    }
}

/* One canvas for the whole batch: minimal padding for a single image (as
 * detect.py), the largest minimal shape of the batch's images for several,
 * or the img-size square with --square. */
static yolo_letterbox_params batch_canvas(const bench_run *r, const batch_buf *bb)
{
    yolo_letterbox_params lp = yolo_letterbox_default_params();
    lp.img_size = r->img_size;
    lp.stride = r->stride;
    lp.auto_pad = !r->o->square && bb->n == 1;
    lp.canvas_w = lp.canvas_h = 0;
    if (r->o->square || bb->n == 1)
        return lp;
    for (int i = 0; i < bb->n; i++) {
        int w, h;
        bench_minimal_shape(bb->img[i].width, bb->img[i].height, r->img_size, r->stride, &w, &h);
        lp.canvas_w = w > lp.canvas_w ? w : lp.canvas_w;
        lp.canvas_h = h > lp.canvas_h ? h : lp.canvas_h;
    }
    return lp;
}

static int letterbox_batch(step_ctx *sc, batch_buf *bb)
{
    bench_run *r = sc->r;
    yolo_letterbox_params lp = batch_canvas(r, bb);
    for (int i = 0; i < bb->n; i++) {
        uint64_t t0 = bench_now_ns();
        yolo_status st = yolo_letterbox(&bb->img[i], &lp, &bb->lb[i], &bb->lbi[i]);
        uint64_t t1 = bench_now_ns();
        if (st != YOLO_OK) {
            set_err(r->err, sizeof r->err, "letterbox of %s failed: %s",
                    r->ds.items[bb->idx[i]].path, yolo_last_error());
            return -1;
        }
        bb->nlb++;
        step_done(sc, ST_LETTERBOX, (int)bb->idx[i], t0, t1);
    }
    bb->W = bb->lb[0].width;
    bb->H = bb->lb[0].height;
    for (int i = 1; i < bb->n; i++)
        if (bb->lb[i].width != bb->W || bb->lb[i].height != bb->H) {
            set_err(r->err, sizeof r->err, "letterbox gave different sizes within a batch");
            return -1;
        }
    return 0;
}

/* The library's memory as reported for the largest shape planned so far
 * (the arena grows with the batch and the canvas). */
static void note_library_memory(yolo_ctx_memory *seen, const yolo_ctx_memory *now)
{
    if (now->arena_bytes > seen->arena_bytes)
        seen->arena_bytes = now->arena_bytes;
    if (now->scratch_bytes > seen->scratch_bytes)
        seen->scratch_bytes = now->scratch_bytes;
    if (now->packed_weight_bytes > seen->packed_weight_bytes)
        seen->packed_weight_bytes = now->packed_weight_bytes;
    seen->weight_bytes = now->weight_bytes;
}

/* to_tensor and the forward pass; the layer records of a layer-timed pass
 * are written out after the forward's clock has stopped. */
static int forward_batch(step_ctx *sc, batch_buf *bb, pass_rec *pr, yolo_ctx *ctx)
{
    bench_run *r = sc->r;
    size_t plane = 3 * (size_t)bb->W * (size_t)bb->H;
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < bb->n; i++)
        yolo_image_to_tensor(&bb->lb[i], bb->input + (size_t)i * plane);
    uint64_t t1 = bench_now_ns();
    step_done(sc, ST_TO_TENSOR, -1, t0, t1);
    r->ncur = 0;
    t0 = bench_now_ns();
    yolo_status st = yolo_forward(ctx, bb->input, bb->n, bb->H, bb->W);
    t1 = bench_now_ns();
    if (st != YOLO_OK) {
        set_err(r->err, sizeof r->err, "forward pass failed: %s%s", yolo_last_error(),
                st == YOLO_ERR_NOMEM ? " (--max-arena MIB sets that limit)" : "");
        return -1;
    }
    step_done(sc, ST_FORWARD, -1, t0, t1);
    yolo_ctx_memory cm;
    if (yolo_ctx_memory_info(ctx, &cm) == YOLO_OK) {
        pr->flops += cm.flops;
        sv_push(&r->fwd_flops_per_image[pr->kind], (double)cm.flops / bb->n);
        note_library_memory(&r->ctxmem, &cm);
    }
    if (pr->kind == PASS_LAYERS)
        flush_layers(r, pr->index, sc->batch, t0, t1);
    return 0;
}

/* NMS and box scaling per image: postprocess with nms and scale_boxes as
 * its sub-steps. */
static int postprocess_batch(step_ctx *sc, batch_buf *bb, yolo_ctx *ctx)
{
    bench_run *r = sc->r;
    yolo_detect_params dp = yolo_detect_default_params();
    dp.conf_thres = (float)r->o->conf;
    dp.iou_thres = (float)r->o->iou;
    dp.multi_label = r->o->multi_label;
    dp.max_det = r->o->max_det;
    for (int i = 0; i < bb->n; i++) {
        size_t it = bb->idx[i];
        const float *pred;
        int rows, cols, nd = 0;
        uint64_t p0 = bench_now_ns();
        yolo_status st = yolo_predictions(ctx, i, &pred, &rows, &cols);
        uint64_t n0 = bench_now_ns();
        if (st == YOLO_OK)
            st = yolo_nms(pred, rows, cols, &dp, bb->dets, bb->cap_dets, &nd);
        uint64_t n1 = bench_now_ns();
        if (st == YOLO_OK)
            st = yolo_scale_boxes(bb->dets, nd, bb->W, bb->H, bb->img[i].width,
                                  bb->img[i].height);
        uint64_t p1 = bench_now_ns();
        if (st != YOLO_OK) {
            set_err(r->err, sizeof r->err, "post-processing of %s failed: %s",
                    r->ds.items[it].path, yolo_last_error());
            return -1;
        }
        step_done(sc, ST_POSTPROCESS, (int)it, p0, p1);
        step_done(sc, ST_NMS, (int)it, n0, n1);
        step_done(sc, ST_SCALE, (int)it, n1, p1);
        if (capture(r, it, bb, nd, pred, rows, cols) != 0)
            return -1;
    }
    return 0;
}

/* Runs one batch of items. Returns 0, or -1 on a fatal error (r->err). */
static int run_batch(bench_run *r, batch_buf *bb, pass_rec *pr, int batch_no,
                     const size_t *items, int nitems)
{
    step_ctx sc = {r, pr->kind, pr->index, batch_no};
    yolo_ctx *ctx = pr->kind == PASS_LAYERS ? r->ctx_layers : r->ctx;
    uint64_t tb0 = bench_now_ns();
    decode_batch(&sc, bb, items, nitems);
    int rc = 0;
    if (bb->n > 0) {
        rc = letterbox_batch(&sc, bb);
        if (rc == 0)
            rc = forward_batch(&sc, bb, pr, ctx);
        if (rc == 0)
            rc = postprocess_batch(&sc, bb, ctx);
    }
    if (rc == 0 && bb->n > 0) {
        uint64_t tb1 = bench_now_ns();
        step_done(&sc, ST_BATCH, -1, tb0, tb1);
        pr->batch_ns += tb1 - tb0;
        pr->images += (size_t)bb->n;
    }
    for (int i = 0; i < bb->nlb; i++)
        yolo_image_free(&bb->lb[i]);
    for (int i = 0; i < bb->n; i++)
        yolo_image_free(&bb->img[i]);
    return rc;
}

static pass_rec *new_pass(bench_run *r, pass_kind kind)
{
    if (r->npasses == r->cappasses) {
        int cap = r->cappasses ? r->cappasses * 2 : 16;
        pass_rec *p = realloc(r->passes, (size_t)cap * sizeof *p);
        if (!p)
            return NULL;
        r->passes = p;
        r->cappasses = cap;
    }
    pass_rec *p = &r->passes[r->npasses];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->index = r->npasses++;
    return p;
}

/* One pass over the order. 0, -1 fatal, 1 interrupted. */
static int run_pass(bench_run *r, batch_buf *bb, pass_kind kind, progress_bar *pb)
{
    pass_rec *pr = new_pass(r, kind);
    if (!pr) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return -1;
    }
    energy_snapshot_now(&r->energy, &pr->e0);
    pr->t0 = bench_now_ns();
    int B = r->o->batch, batch_no = 0;
    size_t done = 0;
    size_t items[256];
    int rc = 0;
    for (size_t k = 0; k < r->norder;) {
        int n = 0;
        while (k < r->norder && n < B) {
            size_t it = r->order[k++];
            if (!r->ds.items[it].skipped)
                items[n++] = it;
        }
        if (n == 0)
            continue;
        if (run_batch(r, bb, pr, batch_no++, items, n) != 0) {
            rc = -1;
            break;
        }
        done = k;
        progress_draw(r, pb, pr->index, PASS_NAMES[kind], done, r->norder, 0);
        if (g_signal) {
            rc = 1;
            break;
        }
    }
    pr->t1 = bench_now_ns();
    energy_snapshot_now(&r->energy, &pr->e1);
    pr->complete = rc == 0;
    char name[48];
    snprintf(name, sizeof name, "pass %d (%s)", pr->index, PASS_NAMES[kind]);
    trace_complete(&r->trace, "pass", name, pr->t0, pr->t1 - pr->t0, pr->index);
    return rc;
}

/* ---- phases (memory peaks) ------------------------------------------------------------------ */

static void phase_begin(bench_run *r, const char *name)
{
    mem_phase *p = &r->phases[r->nphases++];
    p->name = name;
    p->reset_ok = mem_reset_peak() == 0;
    p->t0 = bench_now_ns();
}

static void phase_end(bench_run *r)
{
    mem_phase *p = &r->phases[r->nphases - 1];
    p->t1 = bench_now_ns();
    p->vmhwm = mem_status_field("VmHWM");
    p->sampled_peak = mem_sampler_max(&r->mem, p->t0, p->t1);
}

/* ---- setup ------------------------------------------------------------------------------------ */

/* --run-dir DIR: created if needed; one that already holds a run is refused
 * so an earlier run is never overwritten. */
static int use_given_run_dir(bench_run *r, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            set_err(r->err, sizeof r->err, "run dir %s exists and is not a folder", dir);
            return -1;
        }
        char *probe = path_join(dir, "run.json");
        int used = probe && access(probe, F_OK) == 0;
        free(probe);
        if (used) {
            set_err(r->err, sizeof r->err,
                    "run dir %s already holds a run (run.json); choose another", dir);
            return -1;
        }
    } else if (mkdir_p(dir, 0755) != 0) {
        set_err(r->err, sizeof r->err, "cannot create run dir %s: %s", dir, strerror(errno));
        return -1;
    }
    r->run_dir = strdup(dir);
    return 0;
}

/* outputs/<run_id>, or <run_id>-2, -3, ... when it exists (mkdir is the
 * atomic test, so two runs started at once cannot share a folder). */
static int make_default_run_dir(bench_run *r)
{
    if (mkdir_p("outputs", 0755) != 0) {
        set_err(r->err, sizeof r->err, "cannot create outputs/: %s", strerror(errno));
        return -1;
    }
    for (int k = 1; k < 1000 && !r->run_dir; k++) {
        char name[220];
        if (k == 1)
            snprintf(name, sizeof name, "outputs/%s", r->run_id);
        else
            snprintf(name, sizeof name, "outputs/%s-%d", r->run_id, k);
        if (mkdir(name, 0755) == 0) {
            r->run_dir = strdup(name);
        } else if (errno != EEXIST) {
            set_err(r->err, sizeof r->err, "cannot create %s: %s", name, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int make_run_dir(bench_run *r)
{
    int rc = r->o->run_dir ? use_given_run_dir(r, r->o->run_dir) : make_default_run_dir(r);
    if (rc != 0)
        return -1;
    if (!r->run_dir) {
        set_err(r->err, sizeof r->err, "cannot choose a run dir");
        return -1;
    }
    /* can we write here at all? */
    char *probe = path_join(r->run_dir, ".write-test");
    FILE *f = probe ? fopen(probe, "w") : NULL;
    if (!f) {
        set_err(r->err, sizeof r->err, "run dir %s is not writable: %s", r->run_dir,
                strerror(probe ? errno : ENOMEM));
        free(probe);
        return -1;
    }
    fclose(f);
    unlink(probe);
    free(probe);
    return 0;
}

static void make_run_id(bench_run *r, const char *model_name)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char t[32];
    strftime(t, sizeof t, "%Y%m%dT%H%M%SZ", &tm);
    char clean[100];
    size_t k = 0;
    for (const char *p = model_name; *p && k + 1 < sizeof clean; p++)
        clean[k++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
                                ? *p
                                : '_');
    clean[k] = 0;
    snprintf(r->run_id, sizeof r->run_id, "%s_%s", t, k ? clean : "model");
}

static int open_streams(bench_run *r)
{
    char *p1 = path_join(r->run_dir, "layer_timer.csv");
    char *p2 = path_join(r->run_dir, "steps_timer.csv");
    int rc = -1;
    if (p1 && p2 && bw_open(&r->f_layers, p1, r->err, sizeof r->err) == 0) {
        if (bw_open(&r->f_steps, p2, r->err, sizeof r->err) == 0)
            rc = 0;
        else
            bw_abort(&r->f_layers);
    }
    free(p1);
    free(p2);
    if (rc == 0) {
        bw_printf(&r->f_layers, "pass,batch,layer,source_index,type,out_n,out_c,out_h,out_w,"
                                "flops,ns,start_us\n");
        bw_printf(&r->f_steps, "phase,pass,batch,image_index,image,step,parent,start_us,ns\n");
    }
    return rc;
}

/* Who chose the ISA of a ctx made with params.isa = asked (yolo.h): the
 * option, else the library's YOLO_ISA, else the CPU (its best). */
static const char *isa_chooser(yolo_isa asked)
{
    const char *env = getenv("YOLO_ISA");
    if (asked != YOLO_ISA_AUTO)
        return "--isa";
    return env && *env && strcasecmp(env, "auto") != 0 ? "YOLO_ISA" : "cpu";
}

/* Loads the model and checks the options that depend on it. Returns an
 * exit status, EXIT_OK to go on. */
static int load_model(bench_run *r)
{
    bench_options *o = r->o;
    yolo_load_params lp = yolo_load_default_params();
    if (yolo_model_load(o->model, &lp, &r->model) != YOLO_OK) {
        snprintf(r->err, sizeof r->err, "cannot load model: %s", yolo_last_error());
        return EXIT_ERROR;
    }
    if (yolo_model_get_info(r->model, &r->info) != YOLO_OK) {
        snprintf(r->err, sizeof r->err, "model info: %s", yolo_last_error());
        return EXIT_ERROR;
    }
    r->stride = r->info.max_stride > 0 ? r->info.max_stride : 32;
    r->img_size = o->img_size ? o->img_size : r->info.default_img_size;
    if (r->img_size <= 0 || r->img_size % r->stride != 0) {
        int lo = r->img_size / r->stride * r->stride;
        snprintf(r->err, sizeof r->err,
                 "--img-size %d is not a multiple of the model's stride %d (try %d or %d)",
                 r->img_size, r->stride, lo > 0 ? lo : r->stride, lo + r->stride);
        return EXIT_USAGE;
    }
    if (sha256_file_hex(o->model, r->model_sha) != 0)
        snprintf(r->model_sha, sizeof r->model_sha, "unreadable");
    yolo_ctx_params cp = yolo_ctx_default_params();
    cp.max_arena_bytes = (uint64_t)o->max_arena_mib << 20;
    cp.threads = o->threads;
    cp.no_winograd = o->no_winograd;
    if (o->isa)
        (void)yolo_isa_from_name(o->isa, &cp.isa); /* checked with the options */
    if (yolo_ctx_create(r->model, &cp, &r->ctx) != YOLO_OK ||
        yolo_ctx_isa(r->ctx, &r->isa) != YOLO_OK) {
        snprintf(r->err, sizeof r->err, "cannot create context: %s", yolo_last_error());
        return EXIT_ERROR;
    }
    r->isa_by = isa_chooser(cp.isa);
    if (yolo_ctx_plan(r->ctx, 1, r->img_size, r->img_size) == YOLO_OK &&
        yolo_ctx_memory_info(r->ctx, &r->ctxmem) == YOLO_OK)
        r->model_gflops_img_size = (double)r->ctxmem.flops / 1e9;
    if (o->layer_timing) {
        cp.on_layer = on_layer;
        cp.user = r;
        if (yolo_ctx_create(r->model, &cp, &r->ctx_layers) != YOLO_OK) {
            snprintf(r->err, sizeof r->err, "cannot create context: %s", yolo_last_error());
            return EXIT_ERROR;
        }
    }
    return EXIT_OK;
}

/* Decodes every image once so unreadable ones are named and left out before
 * any timing starts. Returns an exit status, EXIT_OK to go on. */
static int check_images(bench_run *r)
{
    if (dataset_scan(r->o->images, &r->ds, r->err, sizeof r->err) != 0)
        return EXIT_ERROR;
    if (r->ds.n == 0) {
        snprintf(r->err, sizeof r->err, "no PNG or JPEG images in %s%s", r->o->images,
                 r->ds.other_files ? " (only other files)" : " (the folder is empty)");
        return EXIT_ERROR;
    }
    for (size_t i = 0; i < r->ds.n; i++) {
        yolo_image img;
        if (yolo_image_load(r->ds.items[i].path, &img) != YOLO_OK) {
            fprintf(stderr, "warning: skipping %s: %s\n", r->ds.items[i].path, yolo_last_error());
            r->ds.items[i].skipped = 1;
            r->skipped++;
            continue;
        }
        r->ds.items[i].width = img.width;
        r->ds.items[i].height = img.height;
        yolo_image_free(&img);
    }
    r->order = dataset_order(&r->ds, (size_t)r->o->count, &r->norder);
    if (!r->order) {
        snprintf(r->err, sizeof r->err, "none of the %zu images in %s could be read", r->ds.n,
                 r->o->images);
        return EXIT_ERROR;
    }
    r->unique_images = r->ds.n - r->skipped;
    r->dets = calloc(r->ds.n, sizeof *r->dets);
    if (!r->dets) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

static int alloc_batch(bench_run *r, batch_buf *bb)
{
    int B = r->o->batch;
    size_t S = (size_t)r->img_size;
    memset(bb, 0, sizeof *bb);
    bb->input = malloc((size_t)B * 3 * S * S * sizeof(float));
    bb->img = calloc((size_t)B, sizeof *bb->img);
    bb->lb = calloc((size_t)B, sizeof *bb->lb);
    bb->lbi = calloc((size_t)B, sizeof *bb->lbi);
    bb->idx = calloc((size_t)B, sizeof *bb->idx);
    bb->cap_dets = r->o->max_det;
    bb->dets = calloc((size_t)bb->cap_dets, sizeof *bb->dets);
    return bb->input && bb->img && bb->lb && bb->lbi && bb->idx && bb->dets ? 0 : -1;
}

static void free_batch(batch_buf *bb)
{
    free(bb->input);
    free(bb->img);
    free(bb->lb);
    free(bb->lbi);
    free(bb->idx);
    free(bb->dets);
}

/* ---- the whole run -------------------------------------------------------------------------------- */

static int run_passes(bench_run *r, batch_buf *bb)
{
    bench_options *o = r->o;
    progress_bar pb = {0};
    pb.enabled = !o->quiet && isatty(2);
    pb.passes_planned = o->min_time > 0 ? -1 : o->warmup + o->runs * (o->layer_timing ? 2 : 1);
    int rc = 0;
    phase_begin(r, "warmup");
    for (int w = 0; w < o->warmup && rc == 0; w++)
        rc = run_pass(r, bb, PASS_WARMUP, &pb);
    phase_end(r);
    if (rc != 0)
        goto done;
    phase_begin(r, "timed");
    hw_counters_start(&r->hw);
    uint64_t t0 = bench_now_ns();
    int plain = 0;
    while (rc == 0 && (plain < o->runs || (double)(bench_now_ns() - t0) / 1e9 < o->min_time)) {
        rc = run_pass(r, bb, PASS_TIMED, &pb);
        plain++;
        if (rc == 0 && o->layer_timing)
            rc = run_pass(r, bb, PASS_LAYERS, &pb);
    }
    hw_counters_stop(&r->hw);
    phase_end(r);
done:
    progress_end(&pb);
    if (rc == 1)
        r->interrupted = (int)g_signal;
    return rc;
}

static void free_run(bench_run *r)
{
    if (bw_is_open(&r->f_layers))
        bw_abort(&r->f_layers);
    if (bw_is_open(&r->f_steps))
        bw_abort(&r->f_steps);
    mem_sampler_free(&r->mem);
    energy_close(&r->energy);
    hw_counters_close(&r->hw);
    trace_free(&r->trace);
    for (int k = 0; k < PASS_KINDS; k++) {
        for (int s = 0; s < NSTEPS; s++)
            sv_free(&r->steps[k][s]);
        sv_free(&r->fwd_flops_per_image[k]);
    }
    if (r->dets)
        for (size_t i = 0; i < r->ds.n; i++)
            free(r->dets[i].d);
    free(r->dets);
    free(r->cur);
    free(r->passes);
    free(r->order);
    free(r->run_dir);
    dataset_free(&r->ds);
    yolo_ctx_free(r->ctx_layers);
    yolo_ctx_free(r->ctx);
    yolo_model_free(r->model);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C ends the program at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* with a file size limit, writes must fail with EFBIG (reported) rather
     * than kill the process */
    signal(SIGXFSZ, SIG_IGN);
}

static int finish(bench_run *r, int status)
{
    if (status != EXIT_OK && r->err[0])
        fprintf(stderr, "bench/run: error: %s\n", r->err);
    free_run(r);
    return status;
}

static int apply_pin(bench_run *r)
{
    unsigned char mask[OPT_MAX_CPUS];
    int ncpu;
    if (opts_parse_cpulist(r->o->pin, mask, OPT_MAX_CPUS, &ncpu, r->err, sizeof r->err) != 0)
        return EXIT_USAGE;
    if (pin_all_threads(mask, OPT_MAX_CPUS) < 0) {
        set_err(r->err, sizeof r->err, "--pin %s: sched_setaffinity: %s", r->o->pin,
                strerror(errno));
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

static int make_raw_dir(bench_run *r)
{
    char *raw = path_join(r->run_dir, "raw");
    int bad = !raw || (mkdir(raw, 0755) != 0 && errno != EEXIST);
    if (bad)
        set_err(r->err, sizeof r->err, "cannot create %s/raw: %s", r->run_dir,
                strerror(raw ? errno : ENOMEM));
    free(raw);
    return bad ? -1 : 0;
}

/* The machine: its description, the threads the run uses and its FMA peak
 * for the ISA the library runs (measured after pinning, on the CPUs the run
 * may use). */
static void measure_machine(bench_run *r)
{
    sysinfo_collect(&r->sys);
    /* The library says how many threads its forward passes use. */
    if (yolo_ctx_threads(r->ctx, &r->threads_used) != YOLO_OK)
        r->threads_used = r->o->threads > 0 ? r->o->threads : r->sys.cpus_allowed;
    if (r->threads_used < 1)
        r->threads_used = 1;
    r->fma_peak = fma_peak_gflops(r->isa, r->threads_used, 0.1, r->fma_isa, sizeof r->fma_isa);
    r->fma_peak_1 =
        r->threads_used == 1 ? r->fma_peak : fma_peak_gflops(r->isa, 1, 0.1, NULL, 0);
    hw_counters_open(&r->hw);
}

/* Everything before the first pass: model, pinning, images, run folder,
 * machine, run.json (completed false) and the streamed CSVs. Nothing is
 * written before the model, the options and the images have been checked.
 * Returns an exit status, EXIT_OK to go on. */
static int setup_run(bench_run *r)
{
    bench_options *o = r->o;
    r->t_start = bench_now_ns();
    bench_utc_iso(r->start_iso, sizeof r->start_iso);
    energy_open(&r->energy, o->powercap_root, o->energy_interval_ms);
    if (mem_sampler_start(&r->mem, o->mem_interval_ms) != 0) {
        set_err(r->err, sizeof r->err, "cannot start the memory sampler thread");
        return EXIT_ERROR;
    }
    phase_begin(r, "load");
    int st = load_model(r);
    phase_end(r);
    if (st == EXIT_OK && o->pin)
        st = apply_pin(r);
    if (st == EXIT_OK)
        st = check_images(r);
    if (st != EXIT_OK)
        return st;
    make_run_id(r, r->info.name ? r->info.name : "model");
    if (make_run_dir(r) != 0 || (o->save_raw && make_raw_dir(r) != 0))
        return EXIT_ERROR;
    if (!o->quiet)
        fprintf(stderr, "bench/run: model %s (sha256 %.16s...), %zu images, run folder %s\n",
                r->info.name ? r->info.name : "?", r->model_sha, r->unique_images, r->run_dir);
    measure_machine(r);
    trace_init(&r->trace, r->t_start, 2000000);
    if (outputs_write_run_json(r, 0) != 0 || open_streams(r) != 0)
        return EXIT_ERROR;
    return EXIT_OK;
}

/* Warm-up and timed passes with the samplers running; a fatal error sets
 * r->failed (message in r->err), a signal r->interrupted. */
static void measure(bench_run *r)
{
    batch_buf bb;
    if (alloc_batch(r, &bb) != 0) {
        free_batch(&bb);
        set_err(r->err, sizeof r->err, "out of memory for a batch of %d", r->o->batch);
        r->failed = 1;
        return;
    }
    energy_start(&r->energy);
    int rc = run_passes(r, &bb);
    free_batch(&bb);
    energy_stop(&r->energy);
    mem_sampler_stop(&r->mem);
    bench_utc_iso(r->end_iso, sizeof r->end_iso);
    if (rc < 0)
        r->failed = 1;
}

/* Writes the run folder and the summary; returns the exit status. */
static int conclude(bench_run *r)
{
    char fatal[1024] = "";
    if (r->failed)
        snprintf(fatal, sizeof fatal, "%s", r->err);
    if (r->interrupted && !r->o->quiet)
        fprintf(stderr, "bench/run: interrupted by signal %d: writing what is complete\n",
                r->interrupted);
    if (outputs_write_all(r) != 0)
        return EXIT_ERROR;
    if (fatal[0]) {
        set_err(r->err, sizeof r->err, "%.700s (partial results in %.300s)", fatal, r->run_dir);
        return EXIT_ERROR;
    }
    if (!r->o->quiet)
        report_print(r, stdout);
    printf("run folder: %s\n", r->run_dir);
    fflush(stdout);
    if (r->interrupted)
        return 128 + r->interrupted;
    if (r->skipped) {
        fprintf(stderr, "bench/run: %zu image(s) were skipped (see the warnings above)\n",
                r->skipped);
        return EXIT_SKIPPED;
    }
    return EXIT_OK;
}

static int bench_run_all(bench_run *r)
{
    install_signals();
    int st = setup_run(r);
    if (st == EXIT_OK) {
        measure(r);
        st = conclude(r);
    }
    return finish(r, st);
}

int bench_main(int argc, char **argv)
{
    bench_options o;
    opts_init(&o);
    char err[1024];
    if (opts_parse(&o, argc, argv, err, sizeof err) != 0) {
        fprintf(stderr, "bench/run: %s\n", err);
        opts_free(&o);
        return EXIT_USAGE;
    }
    if (o.help) {
        opts_usage(stdout);
        opts_free(&o);
        return EXIT_OK;
    }
    if (o.version) {
        printf("bench/run (libyolo %s)\n", yolo_version());
        opts_free(&o);
        return EXIT_OK;
    }
    bench_run *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "bench/run: out of memory\n");
        opts_free(&o);
        return EXIT_ERROR;
    }
    r->o = &o;
    int status = bench_run_all(r);
    free(r);
    opts_free(&o);
    return status;
}
