/*
 * yolo-dump: runs one image through libyolo's public API and writes what the
 * correctness checks compare against the official implementation: the
 * letterboxed input, the raw predictions, the detections and per-layer
 * statistics (tools/check_official.py and manual debugging use it).
 *
 *   yolo-dump MODEL.bin IMAGE [--img-size N] [--no-auto] [--conf C] [--iou I]
 *             [--multi-label] [--agnostic] [--max-det N] [--threads T]
 *             [--backend fast|gemm|reference] [--isa NAME] [--input-out F.npy]
 *             [--pred-out F.npy] [--det-out F.json] [--layers-out F.npy] [--pred-in F.npy]
 *   yolo-dump --list-isas
 *
 * --isa         yolo_ctx_params.isa: auto (default), avx512, avx2, generic, neon
 * --list-isas   prints the ISAs a ctx may be forced to on this machine, one a
 *               line, widest first (tools/check_official.py runs each)
 * --input-out   uint8 [3,H,W] RGB letterboxed input
 * --pred-out    float32 [rows, cols] raw predictions
 * --det-out     JSON list {x1,y1,x2,y2 (original image), conf, cls, net_xyxy}
 *               in NMS order, the fixtures' det_*.json schema
 * --layers-out  float32 [L, 9+256]: per checkpoint layer i (the output of the
 *               last graph layer whose source_index is i): n, c, h, w, sum,
 *               abs_sum, min, max, 0 (the reference's f32-vs-f64 column), then
 *               256 values at flat indices floor((k+0.5)*numel/256)
 * --pred-in     skip the forward pass and run NMS on these predictions
 *               (float32 [rows, cols]), to test post-processing alone
 * Without --conf/--iou the detect.py defaults 0.25/0.45 are used.
 * Errors: a message naming the file on stderr, exit status 1.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yolo.h"

#define LAYER_SAMPLES 256
#define LAYER_COLS (9 + LAYER_SAMPLES)

typedef struct {
    const char *model, *image;
    const char *input_out, *pred_out, *det_out, *layers_out, *pred_in;
    int img_size, no_auto, threads;
    yolo_backend backend;
    yolo_isa isa;
    yolo_detect_params dp;
} options;

/* State of one run, freed by cleanup(). */
typedef struct {
    yolo_model *model;
    yolo_ctx *ctx;
    yolo_image img, lb;
    float *input;
    float *pred_in;
    yolo_detection *dets;
} run_state;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("yolo-dump: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int fail_status(const char *what, yolo_status st)
{
    const char *msg = yolo_last_error();
    return fail("%s: %s%s%s", what, yolo_status_str(st), *msg ? ": " : "", msg);
}

static void usage(void)
{
    fputs("usage: yolo-dump MODEL.bin IMAGE [--img-size N] [--no-auto] [--conf C] [--iou I]\n"
          "                 [--multi-label] [--agnostic] [--max-det N] [--threads T]\n"
          "                 [--backend fast|gemm|reference]  (default: the library's, fast)\n"
          "                 [--isa auto|avx512|avx2|generic|neon]  (default auto)\n"
          "                 [--input-out F.npy] [--pred-out F.npy] [--det-out F.json]\n"
          "                 [--layers-out F.npy] [--pred-in F.npy]\n"
          "       yolo-dump --list-isas\n",
          stderr);
}

static int parse_number(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = s ? strtod(s, &end) : 0;
    if (!s || end == s || *end || !(v >= lo && v <= hi))
        return fail("%s: expected a number in [%g, %g], got '%s'", flag, lo, hi, s ? s : "");
    *out = v;
    return 0;
}

/* Options with a value; returns 1 on a bad value, -1 if flag is not one. */
static int parse_valued(options *o, const char *flag, const char *val)
{
    const char **paths[] = {&o->input_out, &o->pred_out, &o->det_out, &o->layers_out, &o->pred_in};
    const char *names[] = {"--input-out", "--pred-out", "--det-out", "--layers-out", "--pred-in"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(flag, names[i]) == 0) {
            if (!val)
                return fail("%s needs a file name", flag);
            *paths[i] = val;
            return 0;
        }
    if (strcmp(flag, "--isa") == 0)
        return yolo_isa_from_name(val, &o->isa) == YOLO_OK ? 0 : fail("%s", yolo_last_error());
    double v;
    if (strcmp(flag, "--img-size") == 0)
        return parse_number(flag, val, 32, 16384, &v) ? 1 : (o->img_size = (int)v, 0);
    if (strcmp(flag, "--threads") == 0)
        return parse_number(flag, val, 0, 1024, &v) ? 1 : (o->threads = (int)v, 0);
    if (strcmp(flag, "--max-det") == 0)
        return parse_number(flag, val, 0, 100000, &v) ? 1 : (o->dp.max_det = (int)v, 0);
    if (strcmp(flag, "--conf") == 0)
        return parse_number(flag, val, 0, 1, &v) ? 1 : (o->dp.conf_thres = (float)v, 0);
    if (strcmp(flag, "--iou") == 0)
        return parse_number(flag, val, 0, 1, &v) ? 1 : (o->dp.iou_thres = (float)v, 0);
    return -1;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->dp = yolo_detect_default_params();
    o->backend = yolo_ctx_default_params().backend;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--no-auto") == 0)
            o->no_auto = 1;
        else if (strcmp(a, "--multi-label") == 0)
            o->dp.multi_label = 1;
        else if (strcmp(a, "--agnostic") == 0)
            o->dp.agnostic = 1;
        else if (strcmp(a, "--backend") == 0 && i + 1 < argc) {
            const char *b = argv[++i];
            if (strcmp(b, "fast") == 0)
                o->backend = YOLO_BACKEND_FAST;
            else if (strcmp(b, "gemm") == 0)
                o->backend = YOLO_BACKEND_GEMM;
            else if (strcmp(b, "reference") == 0)
                o->backend = YOLO_BACKEND_REFERENCE;
            else
                return fail("--backend: expected fast, gemm or reference, got '%s'", b);
        }
        else if (strncmp(a, "--", 2) == 0) {
            int r = parse_valued(o, a, i + 1 < argc ? argv[i + 1] : NULL);
            if (r < 0) {
                usage();
                return fail("unknown option %s", a);
            }
            if (r > 0)
                return 1;
            i++;
        } else if (npos < 2)
            *(npos++ == 0 ? &o->model : &o->image) = a;
        else
            return fail("unexpected argument %s", a);
    }
    if (npos != 2) {
        usage();
        return 1;
    }
    return 0;
}

/* ---- .npy and JSON writers ------------------------------------------------ */

/* Writes a C-order .npy (format 1.0) of dtype "<f4" or "|u1". */
static int write_npy(const char *path, const char *dtype, const size_t *shape, int ndim,
                     const void *data, size_t itemsize)
{
    char dict[256], dims[160] = "";
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        size_t len = strlen(dims);
        const char *sep = ndim == 1 ? "," : i + 1 < ndim ? ", " : "";
        snprintf(dims + len, sizeof dims - len, "%zu%s", shape[i], sep);
        count *= shape[i];
    }
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                      dtype, dims);
    size_t total = 10 + (size_t)dl + 1, pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)dl + pad + 1;
    FILE *f = fopen(path, "wb");
    if (!f)
        return fail("%s: cannot open for writing", path);
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 255),
                              (unsigned char)(hlen >> 8)};
    fwrite(head, 1, sizeof head, f);
    fwrite(dict, 1, (size_t)dl, f);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    fwrite(data, itemsize, count, f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return fail("%s: write failed", path);
    return 0;
}

static int write_input(const char *path, const yolo_image *lb)
{
    size_t hw = (size_t)lb->width * (size_t)lb->height;
    uint8_t *chw = malloc(3 * hw);
    if (!chw)
        return fail("%s: out of memory", path);
    for (size_t p = 0; p < hw; p++)
        for (int c = 0; c < 3; c++)
            chw[(size_t)c * hw + p] = lb->rgb[3 * p + (size_t)c];
    size_t shape[3] = {3, (size_t)lb->height, (size_t)lb->width};
    int r = write_npy(path, "|u1", shape, 3, chw, 1);
    free(chw);
    return r;
}

static int write_dets_json(const char *path, const yolo_detection *net, const yolo_detection *orig,
                           int n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return fail("%s: cannot open for writing", path);
    fputs("[", f);
    for (int i = 0; i < n; i++)
        fprintf(f,
                "%s\n {\"x1\": %.9g, \"y1\": %.9g, \"x2\": %.9g, \"y2\": %.9g, \"conf\": %.9g, "
                "\"cls\": %d, \"net_xyxy\": [%.9g, %.9g, %.9g, %.9g]}",
                i ? "," : "", (double)orig[i].x1, (double)orig[i].y1, (double)orig[i].x2,
                (double)orig[i].y2, (double)orig[i].conf, orig[i].cls, (double)net[i].x1,
                (double)net[i].y1, (double)net[i].x2, (double)net[i].y2);
    fputs("\n]\n", f);
    if (fclose(f) != 0)
        return fail("%s: write failed", path);
    return 0;
}

/* ---- per-layer statistics ----------------------------------------------- */

static void layer_stats(const float *x, size_t numel, int c, int h, int w, float *row)
{
    double sum = 0, abs_sum = 0;
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < numel; i++) {
        sum += x[i];
        abs_sum += fabs((double)x[i]);
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    float head[9] = {1, (float)c, (float)h, (float)w, (float)sum, (float)abs_sum, lo, hi, 0};
    memcpy(row, head, sizeof head);
    for (int k = 0; k < LAYER_SAMPLES; k++)
        row[9 + k] = x[(size_t)floor((k + 0.5) * (double)numel / LAYER_SAMPLES)];
}

static int write_layers(const char *path, const yolo_model *m, const yolo_ctx *ctx)
{
    yolo_model_info info;
    yolo_layer_desc d;
    if (yolo_model_get_info(m, &info) != YOLO_OK)
        return fail("%s: cannot read model info", path);
    int n_src = 0;
    for (int i = 0; i < info.num_layers; i++)
        if (yolo_model_layer(m, i, &d) == YOLO_OK && d.source_index + 1 > n_src)
            n_src = d.source_index + 1;
    float *rows = calloc((size_t)n_src * LAYER_COLS, sizeof *rows);
    if (!rows)
        return fail("%s: out of memory", path);
    for (int i = 0; i < info.num_layers; i++) { /* later layers overwrite: the last one wins */
        const float *x;
        int c, h, w;
        yolo_status st = yolo_model_layer(m, i, &d);
        if (st == YOLO_OK)
            st = yolo_layer_output(ctx, i, 0, &x, &c, &h, &w);
        if (st != YOLO_OK) {
            free(rows);
            return fail_status(path, st);
        }
        layer_stats(x, (size_t)c * (size_t)h * (size_t)w, c, h, w,
                    rows + (size_t)d.source_index * LAYER_COLS);
    }
    size_t shape[2] = {(size_t)n_src, LAYER_COLS};
    int r = write_npy(path, "<f4", shape, 2, rows, 4);
    free(rows);
    return r;
}

/* ---- the run ---------------------------------------------------------------- */

static int load_pred_in(const char *path, float **data, int *rows, int *cols)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail("%s: cannot open", path);
    unsigned char head[10];
    char dict[4096];
    int ok = fread(head, 1, 10, f) == 10 && memcmp(head, "\x93NUMPY\x01", 7) == 0;
    size_t hlen = ok ? (size_t)head[8] | (size_t)head[9] << 8 : 0;
    ok = ok && hlen < sizeof dict && fread(dict, 1, hlen, f) == hlen;
    unsigned long r = 0, c = 0;
    if (ok) {
        dict[hlen] = 0;
        const char *s = strstr(dict, "'shape': (");
        ok = strstr(dict, "'<f4'") && s && sscanf(s, "'shape': (%lu, %lu)", &r, &c) == 2 &&
             r > 0 && r < (1ul << 24) && c >= 6 && c < 100000;
    }
    *data = ok ? malloc(r * c * sizeof **data) : NULL;
    ok = ok && *data && fread(*data, sizeof **data, r * c, f) == r * c;
    fclose(f);
    if (!ok)
        return fail("%s: not a float32 [rows, cols] .npy of predictions", path);
    *rows = (int)r;
    *cols = (int)c;
    return 0;
}

static int letterbox_image(const options *o, run_state *s, const yolo_model_info *info)
{
    yolo_status st = yolo_image_load(o->image, &s->img);
    if (st != YOLO_OK)
        return fail_status(o->image, st);
    yolo_letterbox_params lp = yolo_letterbox_default_params();
    lp.img_size = o->img_size ? o->img_size : info->default_img_size;
    lp.stride = info->max_stride;
    lp.auto_pad = !o->no_auto;
    yolo_letterbox_info li;
    st = yolo_letterbox(&s->img, &lp, &s->lb, &li);
    if (st != YOLO_OK)
        return fail_status(o->image, st);
    return o->input_out ? write_input(o->input_out, &s->lb) : 0;
}

static int forward(const options *o, run_state *s)
{
    yolo_ctx_params cp = yolo_ctx_default_params();
    cp.threads = o->threads;
    cp.backend = o->backend;
    cp.isa = o->isa;
    cp.keep_layer_outputs = o->layers_out != NULL;
    yolo_status st = yolo_ctx_create(s->model, &cp, &s->ctx);
    if (st != YOLO_OK)
        return fail_status(o->model, st);
    size_t n = 3 * (size_t)s->lb.width * (size_t)s->lb.height;
    s->input = malloc(n * sizeof *s->input);
    if (!s->input)
        return fail("%s: out of memory", o->image);
    st = yolo_image_to_tensor(&s->lb, s->input);
    if (st == YOLO_OK)
        st = yolo_forward(s->ctx, s->input, 1, s->lb.height, s->lb.width);
    if (st != YOLO_OK)
        return fail_status(o->model, st);
    return 0;
}

static int predictions(const options *o, run_state *s, const float **pred, int *rows, int *cols)
{
    if (o->pred_in) {
        if (load_pred_in(o->pred_in, &s->pred_in, rows, cols))
            return 1;
        *pred = s->pred_in;
        return 0;
    }
    if (forward(o, s))
        return 1;
    yolo_status st = yolo_predictions(s->ctx, 0, pred, rows, cols);
    if (st != YOLO_OK)
        return fail_status(o->model, st);
    size_t shape[2] = {(size_t)*rows, (size_t)*cols};
    if (o->pred_out && write_npy(o->pred_out, "<f4", shape, 2, *pred, 4))
        return 1;
    return o->layers_out ? write_layers(o->layers_out, s->model, s->ctx) : 0;
}

static int detections(const options *o, run_state *s, const float *pred, int rows, int cols)
{
    int cap = o->dp.max_det > 0 ? o->dp.max_det : 1, n = 0;
    s->dets = malloc(2 * (size_t)cap * sizeof *s->dets);
    if (!s->dets)
        return fail("%s: out of memory", o->image);
    yolo_detection *net = s->dets, *orig = s->dets + cap;
    yolo_status st = yolo_nms(pred, rows, cols, &o->dp, net, cap, &n);
    if (st != YOLO_OK)
        return fail_status(o->pred_in ? o->pred_in : o->model, st);
    memcpy(orig, net, (size_t)n * sizeof *net);
    st = yolo_scale_boxes(orig, n, s->lb.width, s->lb.height, s->img.width, s->img.height);
    if (st != YOLO_OK)
        return fail_status(o->image, st);
    printf("%s: %dx%d -> %dx%d input, %d rows, %d detections\n", o->image, s->img.width,
           s->img.height, s->lb.width, s->lb.height, rows, n);
    return o->det_out ? write_dets_json(o->det_out, net, orig, n) : 0;
}

static void cleanup(run_state *s)
{
    free(s->dets);
    free(s->pred_in);
    free(s->input);
    yolo_image_free(&s->lb);
    yolo_image_free(&s->img);
    yolo_ctx_free(s->ctx);
    yolo_model_free(s->model);
}

/* The ISAs a ctx may be forced to here, widest first. */
static int list_isas(void)
{
    static const yolo_isa isas[] = {YOLO_ISA_AVX512, YOLO_ISA_AVX2, YOLO_ISA_NEON,
                                    YOLO_ISA_GENERIC};
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++) {
        int yes = 0;
        if (yolo_isa_supported(isas[i], &yes) == YOLO_OK && yes)
            printf("%s\n", yolo_isa_name(isas[i]));
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list-isas") == 0)
        return list_isas();
    options o;
    if (parse_args(argc, argv, &o))
        return 1;
    run_state s;
    memset(&s, 0, sizeof s);
    yolo_model_info info;
    const float *pred = NULL;
    int rows = 0, cols = 0;
    yolo_status st = yolo_model_load(o.model, NULL, &s.model);
    if (st == YOLO_OK)
        st = yolo_model_get_info(s.model, &info);
    int r = st != YOLO_OK ? fail_status(o.model, st) : letterbox_image(&o, &s, &info);
    if (!r)
        r = predictions(&o, &s, &pred, &rows, &cols);
    if (!r)
        r = detections(&o, &s, pred, rows, cols);
    cleanup(&s);
    return r ? 1 : 0;
}
