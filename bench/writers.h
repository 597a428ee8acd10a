/*
 * Output files of a benchmark run: every file is written under a temporary
 * name in its final folder and renamed only once it is complete, so a crash,
 * a full disk or Ctrl-C never leaves a partial file with the final name.
 * Also the CSV and JSON text helpers (escaping, NaN -> null) and a small
 * streaming JSON writer that places commas itself.
 */
#ifndef BENCH_WRITERS_H
#define BENCH_WRITERS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    char *tmp_path;   /* where the bytes go until bw_commit */
    char *final_path;
    int err;          /* errno of the first failed write, 0 if none */
} bw_file;

/* snprintf into an error buffer; does nothing when err is NULL or size 0. */
void set_err(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Opens a temporary file beside path. Returns 0, or -1 with errno set and a
 * message in err (may be NULL). */
int bw_open(bw_file *w, const char *path, char *err, size_t err_size);
/* printf into the file; failures are remembered and reported by bw_commit. */
void bw_printf(bw_file *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bw_write(bw_file *w, const void *data, size_t n);
/* Flushes, fsyncs, closes and renames to the final name. On any failure
 * (including earlier writes) the temporary file is removed, the final name
 * is left untouched and -1 is returned with a message naming the file. */
int bw_commit(bw_file *w, char *err, size_t err_size);
/* Closes and removes the temporary file without publishing it. */
void bw_abort(bw_file *w);
static inline int bw_is_open(const bw_file *w) { return w->f != NULL; }

/* CSV field: quoted (with doubled quotes) only when it holds , " CR or LF. */
void csv_field(bw_file *w, const char *s);

/* Streaming JSON writer with indentation and automatic commas. */
#define JW_MAX_DEPTH 32
typedef struct {
    bw_file *out;
    int depth;
    int count[JW_MAX_DEPTH]; /* values written at each depth */
    int after_key;
    int pretty;
} json_writer;

void jw_init(json_writer *j, bw_file *out, int pretty);
void jw_obj(json_writer *j);      /* { */
void jw_obj_end(json_writer *j);  /* } */
void jw_arr(json_writer *j);      /* [ */
void jw_arr_end(json_writer *j);  /* ] */
void jw_key(json_writer *j, const char *key);
void jw_str(json_writer *j, const char *s);   /* NULL -> null */
void jw_num(json_writer *j, double v);        /* NaN/inf -> null */
void jw_int(json_writer *j, int64_t v);
void jw_uint(json_writer *j, uint64_t v);
void jw_bool(json_writer *j, int v);
void jw_null(json_writer *j);
/* A number already formatted (e.g. "%.3f"); must be valid JSON. */
void jw_raw(json_writer *j, const char *token);
/* key + value shorthands */
void jw_kstr(json_writer *j, const char *key, const char *s);
void jw_knum(json_writer *j, const char *key, double v);
void jw_kint(json_writer *j, const char *key, int64_t v);
void jw_kuint(json_writer *j, const char *key, uint64_t v);
void jw_kbool(json_writer *j, const char *key, int v);
void jw_knull(json_writer *j, const char *key);

/* JSON string escaping into a buffer (for tests); returns bytes needed
 * without the NUL, like snprintf. */
size_t json_escape(const char *s, char *buf, size_t size);

/* Joins a and b with one '/', malloc'd. */
char *path_join(const char *a, const char *b);
/* mkdir -p; 0 or -1 with errno. */
int mkdir_p(const char *path, unsigned mode);

#endif /* BENCH_WRITERS_H */
