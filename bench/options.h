/*
 * bench/run options: the command line, the `key = value` suite file named by
 * --config (same names without the dashes; the command line wins), defaults
 * and validation with messages that name the option and the bad value.
 */
#ifndef BENCH_OPTIONS_H
#define BENCH_OPTIONS_H

#include <stddef.h>

#define OPT_MAX_CPUS 1024

typedef struct {
    char *model;          /* positional 1 (or `model = ` in the suite file) */
    char *images;         /* positional 2 (or `images = `) */
    int count;            /* images per pass; 0 = each image once */
    int batch;            /* images per forward */
    int img_size;         /* 0 = the model's default */
    int square;           /* pad to img_size square instead of minimal padding */
    double conf, iou;
    int multi_label;
    int max_det;
    int max_arena_mib;    /* yolo_ctx_params.max_arena_bytes in MiB; 0 = the library's default */
    int warmup;           /* passes before the timed ones, reported apart */
    int runs;             /* timed passes without the layer callback */
    double min_time;      /* seconds: keep making timed passes until this long */
    int layer_timing;     /* 1: also make passes with the layer callback */
    int threads;          /* 0 = leave the BLAS default */
    int no_winograd;      /* 1: yolo_ctx_params.no_winograd (direct convolutions only) */
    char *isa;            /* yolo_ctx_params.isa by name; NULL = auto */
    char *pin;            /* CPU list, e.g. "0,2-3"; NULL = no pinning */
    char *run_dir;        /* NULL = outputs/<run_id> */
    char *config;
    char *powercap_root;  /* NULL = $BENCH_POWERCAP_ROOT or /sys/class/powercap */
    int mem_interval_ms;  /* RSS sampling period */
    int energy_interval_ms; /* energy sampling period (<= 500) */
    int no_images;
    int save_raw;
    int quiet;
    int help, version;
} bench_options;

void opts_init(bench_options *o);
void opts_free(bench_options *o);

/* Parses argv (and the --config file it names). Returns 0, or -1 with a
 * message in err. */
int opts_parse(bench_options *o, int argc, char **argv, char *err, size_t err_size);

/* Applies one option by name (without dashes); value NULL for a bare flag.
 * Used by the command line and the suite file. 0 or -1 with message. */
int opts_set(bench_options *o, const char *name, const char *value, char *err,
             size_t err_size);

/* Reads a suite file, skipping keys already set on the command line
 * (cli_set marks them). 0 or -1 with a message naming file and line. */
int opts_load_config(bench_options *o, const char *path, const unsigned char *cli_set,
                     char *err, size_t err_size);

/* "0,2-3" -> mask[0..max) with 1 for each CPU; *count = CPUs named.
 * 0 or -1 with message. */
int opts_parse_cpulist(const char *s, unsigned char *mask, int max, int *count, char *err,
                       size_t err_size);

/* Usage text. */
#include <stdio.h>
void opts_usage(FILE *f);

/* Number of options in the table, and name/current value as text, so run.json
 * can list every option. value is written to buf. */
int opts_count(void);
const char *opts_name(int i);
void opts_value_text(const bench_options *o, int i, char *buf, size_t size, int *is_number,
                     int *is_null);

#endif /* BENCH_OPTIONS_H */
