/*
 * Options of bench/run: one table drives the command line, the suite file,
 * validation, --help and the "options" object of run.json, so a new option is
 * one table row.
 */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "writers.h"
#include "yolo.h"

typedef enum { K_FLAG, K_INT, K_DOUBLE, K_STR } opt_kind;

typedef struct {
    const char *name;
    opt_kind kind;
    size_t offset;
    double min, max;      /* K_INT / K_DOUBLE range */
    const char *arg;      /* metavariable in --help */
    const char *help;
} opt_def;

#define OFF(f) offsetof(bench_options, f)

static const opt_def OPTS[] = {
    {"model", K_STR, OFF(model), 0, 0, "FILE", "model file (also the first argument)"},
    {"images", K_STR, OFF(images), 0, 0, "DIR", "image folder (also the second argument)"},
    {"count", K_INT, OFF(count), 0, 10000000, "N",
     "images per pass: repeat or subsample the folder to N (0: each once)"},
    {"batch", K_INT, OFF(batch), 1, 256, "B", "images per forward pass"},
    {"img-size", K_INT, OFF(img_size), 0, 8192, "PX",
     "network input long side, a multiple of the model stride (0: model default)"},
    {"square", K_FLAG, OFF(square), 0, 1, NULL, "pad to an img-size square, not minimally"},
    {"conf", K_DOUBLE, OFF(conf), 0, 1, "X", "confidence threshold"},
    {"iou", K_DOUBLE, OFF(iou), 0, 1, "X", "NMS IoU threshold"},
    {"multi-label", K_FLAG, OFF(multi_label), 0, 1, NULL, "one box per class above conf (test.py)"},
    {"max-det", K_INT, OFF(max_det), 1, 100000, "N", "detections kept per image"},
    {"max-arena", K_INT, OFF(max_arena_mib), 0, 1048576, "MIB",
     "activation memory a context may plan, MiB (0: the library's default, 4096)"},
    {"warmup", K_INT, OFF(warmup), 0, 1000000, "W", "warm-up passes, reported apart"},
    {"runs", K_INT, OFF(runs), 1, 1000000, "R", "timed passes (without the layer callback)"},
    {"min-time", K_DOUBLE, OFF(min_time), 0, 86400, "S",
     "go on with timed passes (at least R) until the timed phase has lasted S s"},
    {"layer-timing", K_FLAG, OFF(layer_timing), 0, 1, NULL,
     "also make passes with the per-layer callback, alternating with the timed ones"},
    {"threads", K_INT, OFF(threads), 0, 1024, "T",
     "threads of the library's contexts (0: the library's default)"},
    {"no-winograd", K_FLAG, OFF(no_winograd), 0, 1, NULL,
     "direct convolutions only (FAST backend): 4x less memory for the 3x3 layers' packed "
     "weights, slower"},
    {"isa", K_STR, OFF(isa), 0, 0, "NAME",
     "ISA of the library's kernels: avx512, avx2, generic, neon or auto (auto: $YOLO_ISA if "
     "set, else the CPU's best); one the CPU lacks is an error"},
    {"pin", K_STR, OFF(pin), 0, 0, "CPUS", "pin every thread to these CPUs, e.g. 0,2-3"},
    {"run-dir", K_STR, OFF(run_dir), 0, 0, "DIR", "run folder (default outputs/<run_id>)"},
    {"config", K_STR, OFF(config), 0, 0, "FILE", "suite file of `key = value` lines"},
    {"powercap-root", K_STR, OFF(powercap_root), 0, 0, "DIR",
     "powercap folder (default $BENCH_POWERCAP_ROOT or /sys/class/powercap)"},
    {"mem-interval", K_INT, OFF(mem_interval_ms), 1, 60000, "MS", "RSS sampling period, ms"},
    {"energy-interval", K_INT, OFF(energy_interval_ms), 10, 500, "MS",
     "energy sampling period, ms (at most 500 so no counter wrap is missed)"},
    {"no-images", K_FLAG, OFF(no_images), 0, 1, NULL, "do not write annotated images"},
    {"save-raw", K_FLAG, OFF(save_raw), 0, 1, NULL,
     "save each image's raw predictions as raw/NNNN_stem.npy"},
    {"quiet", K_FLAG, OFF(quiet), 0, 1, NULL,
     "no progress bar and no summary (still the last line: run folder)"},
    {"help", K_FLAG, OFF(help), 0, 1, NULL, "show this help"},
    {"version", K_FLAG, OFF(version), 0, 1, NULL, "show the version"},
};
#define NOPTS ((int)(sizeof OPTS / sizeof OPTS[0]))

void opts_init(bench_options *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 1;
    o->conf = 0.25;
    o->iou = 0.45;
    o->max_det = 300;
    o->warmup = 1;
    o->runs = 3;
    o->layer_timing = 1;
    o->mem_interval_ms = 20;
    o->energy_interval_ms = 100;
}

void opts_free(bench_options *o)
{
    for (int i = 0; i < NOPTS; i++)
        if (OPTS[i].kind == K_STR) {
            char **p = (char **)((char *)o + OPTS[i].offset);
            free(*p);
            *p = NULL;
        }
}

static int find_opt(const char *name)
{
    for (int i = 0; i < NOPTS; i++)
        if (strcmp(OPTS[i].name, name) == 0)
            return i;
    return -1;
}

/* Suite files may spell names with '_' (img_size) as well as '-'. */
static void normalize_name(const char *in, char *out, size_t size)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++)
        out[i] = in[i] == '_' ? '-' : (char)tolower((unsigned char)in[i]);
    out[i] = 0;
}

static int parse_bool(const char *v, int *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Skips trailing blanks; 1 when nothing else follows (the number was whole). */
static int only_blanks(const char *end)
{
    while (*end && isspace((unsigned char)*end))
        end++;
    return *end == 0;
}

static int set_flag(const opt_def *d, int *field, const char *value, int negate, char *err,
                    size_t err_size)
{
    int v = 1;
    if (value && parse_bool(value, &v) != 0) {
        set_err(err, err_size, "option %s: '%s' is not true/false", d->name, value);
        return -1;
    }
    *field = negate ? !v : v;
    return 0;
}

/* Parses an integer or real value and checks it against the table's range. */
static int parse_number(const opt_def *d, const char *value, double *out, char *err,
                        size_t err_size)
{
    char *end;
    errno = 0;
    double v = d->kind == K_INT ? (double)strtoll(value, &end, 10) : strtod(value, &end);
    if (errno || end == value || !only_blanks(end) || !isfinite(v)) {
        set_err(err, err_size, "option %s: '%s' is not %s", d->name, value,
                d->kind == K_INT ? "a whole number" : "a number");
        return -1;
    }
    if (v < d->min || v > d->max) {
        set_err(err, err_size, "option %s: %s is out of range [%g, %g]", d->name, value, d->min,
                d->max);
        return -1;
    }
    *out = v;
    return 0;
}

static int set_string(const opt_def *d, char **field, const char *value, char *err,
                      size_t err_size)
{
    if (strcmp(d->name, "pin") == 0) {
        unsigned char mask[OPT_MAX_CPUS];
        int n;
        if (opts_parse_cpulist(value, mask, OPT_MAX_CPUS, &n, err, err_size) != 0)
            return -1;
    }
    yolo_isa isa;
    if (strcmp(d->name, "isa") == 0 && yolo_isa_from_name(value, &isa) != YOLO_OK) {
        set_err(err, err_size, "option isa: '%s' is not an ISA (avx512, avx2, generic, neon, auto)",
                value);
        return -1;
    }
    char *copy = strdup(value);
    if (!copy) {
        set_err(err, err_size, "out of memory");
        return -1;
    }
    free(*field);
    *field = copy;
    return 0;
}

/* Table index of a name, also for the --no-NAME form of a flag (*negate). */
static int lookup(const char *name, int *negate)
{
    *negate = 0;
    int i = find_opt(name);
    if (i < 0 && strncmp(name, "no-", 3) == 0 && (i = find_opt(name + 3)) >= 0) {
        if (OPTS[i].kind != K_FLAG)
            return -1;
        *negate = 1;
    }
    return i;
}

int opts_set(bench_options *o, const char *name_in, const char *value, char *err,
             size_t err_size)
{
    char name[64];
    normalize_name(name_in, name, sizeof name);
    int negate;
    int i = lookup(name, &negate);
    if (i < 0) {
        set_err(err, err_size, "unknown option '%s' (see --help)", name_in);
        return -1;
    }
    const opt_def *d = &OPTS[i];
    void *field = (char *)o + d->offset;
    if (d->kind == K_FLAG)
        return set_flag(d, field, value, negate, err, err_size);
    if (!value || !*value) {
        set_err(err, err_size, "option %s needs a value (%s)", d->name, d->arg);
        return -1;
    }
    if (d->kind == K_STR)
        return set_string(d, field, value, err, err_size);
    double v;
    if (parse_number(d, value, &v, err, err_size) != 0)
        return -1;
    if (d->kind == K_INT)
        *(int *)field = (int)v;
    else
        *(double *)field = v;
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

int opts_load_config(bench_options *o, const char *path, const unsigned char *cli_set,
                     char *err, size_t err_size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(err, err_size, "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            set_err(err, err_size, "%s:%d: expected 'key = value', got '%s'", path, lineno, s);
            rc = -1;
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        char name[64];
        normalize_name(key, name, sizeof name);
        int negate;
        int i = lookup(name, &negate);
        if (i < 0 || strcmp(name, "config") == 0) {
            set_err(err, err_size, "%s:%d: unknown key '%s'", path, lineno, key);
            rc = -1;
            break;
        }
        if (cli_set && cli_set[i])
            continue; /* the command line wins */
        char msg[512];
        if (opts_set(o, key, val, msg, sizeof msg) != 0) {
            set_err(err, err_size, "%s:%d: %s", path, lineno, msg);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        set_err(err, err_size, "error reading config file %s", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* Splits "--name=value" / "--name value"; returns the table index or -1. */
static int cli_option(const char *arg, char *name, size_t name_size, const char **inline_val)
{
    const char *s = arg + 2;
    const char *eq = strchr(s, '=');
    size_t n = eq ? (size_t)(eq - s) : strlen(s);
    if (n >= name_size)
        n = name_size - 1;
    memcpy(name, s, n);
    name[n] = 0;
    *inline_val = eq ? eq + 1 : NULL;
    int negate;
    return lookup(name, &negate);
}

int opts_parse(bench_options *o, int argc, char **argv, char *err, size_t err_size)
{
    unsigned char cli_set[NOPTS];
    memset(cli_set, 0, sizeof cli_set);
    int npos = 0;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "-h") == 0)
            arg = "--help";
        if (strncmp(arg, "--", 2) == 0 && arg[2]) {
            char name[64];
            const char *val;
            int i = cli_option(arg, name, sizeof name, &val);
            if (i < 0) {
                set_err(err, err_size, "unknown option '%s' (see --help)", arg);
                return -1;
            }
            if (OPTS[i].kind != K_FLAG && !val) {
                if (a + 1 >= argc) {
                    set_err(err, err_size, "option --%s needs a value (%s)", OPTS[i].name,
                            OPTS[i].arg);
                    return -1;
                }
                val = argv[++a];
            }
            if (opts_set(o, name, val, err, err_size) != 0)
                return -1;
            cli_set[i] = 1;
        } else if (arg[0] == '-' && arg[1]) {
            set_err(err, err_size, "unknown option '%s' (see --help)", arg);
            return -1;
        } else {
            const char *pos_name = npos == 0 ? "model" : npos == 1 ? "images" : NULL;
            if (!pos_name) {
                set_err(err, err_size, "unexpected argument '%s' (usage: MODEL IMAGES_DIR)",
                        arg);
                return -1;
            }
            if (opts_set(o, pos_name, arg, err, err_size) != 0)
                return -1;
            cli_set[find_opt(pos_name)] = 1;
            npos++;
        }
    }
    if (o->help || o->version)
        return 0;
    if (o->config && opts_load_config(o, o->config, cli_set, err, err_size) != 0)
        return -1;
    if (!o->model) {
        set_err(err, err_size, "missing MODEL (usage: bench/run MODEL.bin IMAGES_DIR [options])");
        return -1;
    }
    if (!o->images) {
        set_err(err, err_size,
                "missing IMAGES_DIR (usage: bench/run MODEL.bin IMAGES_DIR [options])");
        return -1;
    }
    return 0;
}

int opts_parse_cpulist(const char *s, unsigned char *mask, int max, int *count, char *err,
                       size_t err_size)
{
    memset(mask, 0, (size_t)max);
    *count = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10);
        if (end == p || a < 0 || a >= max)
            goto bad;
        long b = a;
        p = end;
        if (*p == '-') {
            p++;
            b = strtol(p, &end, 10);
            if (end == p || b < a || b >= max)
                goto bad;
            p = end;
        }
        for (long c = a; c <= b; c++)
            if (!mask[c]) {
                mask[c] = 1;
                (*count)++;
            }
        if (*p == ',')
            p++;
        else if (*p)
            goto bad;
    }
    if (*count == 0)
        goto bad;
    return 0;
bad:
    set_err(err, err_size, "option pin: '%s' is not a CPU list like 0,2-3 (CPUs 0..%d)", s,
            max - 1);
    return -1;
}

/* " (default X)" for an option whose default is worth saying. */
static void default_text(const bench_options *d, int i, char *buf, size_t size)
{
    char v[64];
    int is_num, is_null;
    opts_value_text(d, i, v, sizeof v, &is_num, &is_null);
    buf[0] = 0;
    if (is_null || OPTS[i].kind == K_STR || strcmp(v, "false") == 0 ||
        strcmp(OPTS[i].name, "help") == 0)
        return;
    snprintf(buf, size, " (default %s)", strcmp(v, "true") == 0 ? "on" : v);
}

void opts_usage(FILE *f)
{
    fprintf(f, "usage: bench/run MODEL.bin IMAGES_DIR [options]\n\n"
               "Benchmarks YOLOv7 inference on the images of IMAGES_DIR (searched\n"
               "recursively, PNG and JPEG) and writes a run folder (see docs/benchmark.md).\n\n"
               "options (also as `name = value` lines in a --config file; the command line\n"
               "wins; flags take --no-NAME):\n");
    bench_options d;
    opts_init(&d);
    for (int i = 0; i < NOPTS; i++) {
        char left[64], def[96];
        snprintf(left, sizeof left, "--%s%s%s", OPTS[i].name, OPTS[i].arg ? " " : "",
                 OPTS[i].arg ? OPTS[i].arg : "");
        default_text(&d, i, def, sizeof def);
        fprintf(f, "  %-22s %s%s\n", left, OPTS[i].help, def);
    }
    fprintf(f, "\nenvironment: BENCH_POWERCAP_ROOT (powercap folder), BENCH_PERF_POWER_PMU\n"
               "(perf power PMU folder), YOLO_ISA (the library's ISA when --isa is auto)\n"
               "exit status: 0 ok; 1 error; 2 finished but some images were skipped;\n"
               "64 invalid options; 130/143 interrupted by SIGINT/SIGTERM (run marked\n"
               "incomplete).\n");
}

int opts_count(void) { return NOPTS; }
const char *opts_name(int i) { return i >= 0 && i < NOPTS ? OPTS[i].name : NULL; }

void opts_value_text(const bench_options *o, int i, char *buf, size_t size, int *is_number,
                     int *is_null)
{
    const void *field = (const char *)o + OPTS[i].offset;
    *is_number = 0;
    *is_null = 0;
    switch (OPTS[i].kind) {
    case K_FLAG:
        snprintf(buf, size, "%s", *(const int *)field ? "true" : "false");
        *is_number = 1; /* written bare: a JSON boolean */
        break;
    case K_INT:
        snprintf(buf, size, "%d", *(const int *)field);
        *is_number = 1;
        break;
    case K_DOUBLE:
        snprintf(buf, size, "%.15g", *(const double *)field); /* 0.45, not 0.45000000000000001 */
        *is_number = 1;
        break;
    case K_STR: {
        const char *s = *(char *const *)field;
        snprintf(buf, size, "%s", s ? s : "");
        *is_null = s == NULL;
        break;
    }
    }
}
