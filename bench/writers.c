/*
 * Atomic output files (temporary name + rename, every write checked) and the
 * CSV / JSON text helpers used by every file of the run folder.
 */
#include "writers.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void set_err(char *err, size_t size, const char *fmt, ...)
{
    if (!err || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

/* Undoes a failed bw_open: frees the names, keeps errno. */
static int bw_open_failed(bw_file *w, int e)
{
    free(w->final_path);
    free(w->tmp_path);
    w->final_path = w->tmp_path = NULL;
    errno = e;
    return -1;
}

int bw_open(bw_file *w, const char *path, char *err, size_t err_size)
{
    memset(w, 0, sizeof *w);
    size_t n = strlen(path);
    w->final_path = malloc(n + 1);
    w->tmp_path = malloc(n + 16);
    if (!w->final_path || !w->tmp_path) {
        set_err(err, err_size, "%s: out of memory", path);
        return bw_open_failed(w, ENOMEM);
    }
    memcpy(w->final_path, path, n + 1);
    /* Same folder as the final name, so rename() stays atomic. */
    snprintf(w->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(w->tmp_path);
    if (fd < 0) {
        int e = errno;
        set_err(err, err_size, "cannot create %s: %s", w->tmp_path, strerror(e));
        return bw_open_failed(w, e);
    }
    fchmod(fd, 0644); /* mkstemp makes 0600; results are meant to be shared */
    w->f = fdopen(fd, "w");
    if (!w->f) {
        int e = errno;
        close(fd);
        unlink(w->tmp_path);
        set_err(err, err_size, "cannot open %s: %s", w->tmp_path, strerror(e));
        return bw_open_failed(w, e);
    }
    return 0;
}

void bw_write(bw_file *w, const void *data, size_t n)
{
    if (!w->f || w->err || n == 0)
        return;
    if (fwrite(data, 1, n, w->f) != n)
        w->err = errno ? errno : EIO;
}

void bw_printf(bw_file *w, const char *fmt, ...)
{
    if (!w->f || w->err)
        return;
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(w->f, fmt, ap);
    va_end(ap);
    if (r < 0)
        w->err = errno ? errno : EIO;
}

static void bw_release(bw_file *w)
{
    free(w->tmp_path);
    free(w->final_path);
    w->tmp_path = w->final_path = NULL;
    w->f = NULL;
}

void bw_abort(bw_file *w)
{
    if (w->f) {
        fclose(w->f);
        unlink(w->tmp_path);
    }
    bw_release(w);
}

int bw_commit(bw_file *w, char *err, size_t err_size)
{
    if (!w->f) {
        set_err(err, err_size, "internal: commit of a file that is not open");
        return -1;
    }
    int e = w->err;
    if (!e && fflush(w->f) != 0)
        e = errno ? errno : EIO;
    if (!e && ferror(w->f))
        e = EIO;
    /* fsync so that a power cut cannot leave a renamed but empty file;
     * EINVAL means the file cannot be synced (e.g. a pipe): not an error. */
    if (!e && fsync(fileno(w->f)) != 0 && errno != EINVAL)
        e = errno;
    if (fclose(w->f) != 0 && !e)
        e = errno ? errno : EIO;
    w->f = NULL;
    if (!e && rename(w->tmp_path, w->final_path) != 0)
        e = errno;
    if (e) {
        unlink(w->tmp_path);
        set_err(err, err_size, "cannot write %s: %s%s", w->final_path, strerror(e),
                e == ENOSPC || e == EFBIG || e == EDQUOT ? " (disk full or file size limit)" : "");
        bw_release(w);
        errno = e;
        return -1;
    }
    bw_release(w);
    return 0;
}

void csv_field(bw_file *w, const char *s)
{
    if (!s)
        s = "";
    if (!strpbrk(s, ",\"\r\n")) {
        bw_write(w, s, strlen(s));
        return;
    }
    bw_write(w, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            bw_write(w, "\"\"", 2);
        else
            bw_write(w, p, 1);
    }
    bw_write(w, "\"", 1);
}

size_t json_escape(const char *s, char *buf, size_t size)
{
    size_t n = 0;
    char tmp[8];
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '"': rep = "\\\""; break;
        case '\\': rep = "\\\\"; break;
        case '\n': rep = "\\n"; break;
        case '\r': rep = "\\r"; break;
        case '\t': rep = "\\t"; break;
        case '\b': rep = "\\b"; break;
        case '\f': rep = "\\f"; break;
        default:
            if (*p < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", *p);
                rep = tmp;
            }
        }
        if (rep) {
            for (const char *r = rep; *r; r++, n++)
                if (n + 1 < size)
                    buf[n] = *r;
        } else {
            if (n + 1 < size)
                buf[n] = (char)*p;
            n++;
        }
    }
    if (size)
        buf[n < size ? n : size - 1] = 0;
    return n;
}

/* ---- streaming JSON -------------------------------------------------------- */

void jw_init(json_writer *j, bw_file *out, int pretty)
{
    memset(j, 0, sizeof *j);
    j->out = out;
    j->pretty = pretty;
}

static void jw_indent(json_writer *j)
{
    if (!j->pretty)
        return;
    bw_write(j->out, "\n", 1);
    for (int i = 0; i < j->depth; i++)
        bw_write(j->out, "  ", 2);
}

/* Comma and indentation before a value (or a key). */
static void jw_pre(json_writer *j)
{
    if (j->after_key) {
        j->after_key = 0;
        return;
    }
    if (j->depth > 0) {
        if (j->count[j->depth] > 0)
            bw_write(j->out, ",", 1);
        jw_indent(j);
    }
    j->count[j->depth]++;
}

static void jw_open(json_writer *j, char c)
{
    jw_pre(j);
    bw_write(j->out, &c, 1);
    if (j->depth + 1 < JW_MAX_DEPTH)
        j->depth++;
    j->count[j->depth] = 0;
}

static void jw_close(json_writer *j, char c)
{
    int had = j->count[j->depth] > 0;
    if (j->depth > 0)
        j->depth--;
    if (had)
        jw_indent(j);
    bw_write(j->out, &c, 1);
    if (j->depth == 0 && j->pretty)
        bw_write(j->out, "\n", 1);
}

void jw_obj(json_writer *j) { jw_open(j, '{'); }
void jw_obj_end(json_writer *j) { jw_close(j, '}'); }
void jw_arr(json_writer *j) { jw_open(j, '['); }
void jw_arr_end(json_writer *j) { jw_close(j, ']'); }

static void jw_raw_string(json_writer *j, const char *s)
{
    char small[256];
    size_t n = json_escape(s, small, sizeof small);
    bw_write(j->out, "\"", 1);
    if (n < sizeof small) {
        bw_write(j->out, small, n);
    } else {
        char *big = malloc(n + 1);
        if (!big) {
            j->out->err = ENOMEM;
            return;
        }
        json_escape(s, big, n + 1);
        bw_write(j->out, big, n);
        free(big);
    }
    bw_write(j->out, "\"", 1);
}

void jw_key(json_writer *j, const char *key)
{
    jw_pre(j);
    jw_raw_string(j, key);
    bw_write(j->out, j->pretty ? ": " : ":", j->pretty ? 2 : 1);
    j->after_key = 1;
}

void jw_str(json_writer *j, const char *s)
{
    if (!s) {
        jw_null(j);
        return;
    }
    jw_pre(j);
    jw_raw_string(j, s);
}

void jw_num(json_writer *j, double v)
{
    if (!isfinite(v)) {
        jw_null(j);
        return;
    }
    jw_pre(j);
    /* %.17g round-trips; integers print without exponent noise. */
    char buf[40];
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, sizeof buf, "%.0f", v);
    else
        snprintf(buf, sizeof buf, "%.9g", v);
    bw_write(j->out, buf, strlen(buf));
}

void jw_int(json_writer *j, int64_t v)
{
    jw_pre(j);
    bw_printf(j->out, "%lld", (long long)v);
}

void jw_uint(json_writer *j, uint64_t v)
{
    jw_pre(j);
    bw_printf(j->out, "%llu", (unsigned long long)v);
}

void jw_bool(json_writer *j, int v)
{
    jw_pre(j);
    bw_printf(j->out, "%s", v ? "true" : "false");
}

void jw_null(json_writer *j)
{
    jw_pre(j);
    bw_write(j->out, "null", 4);
}

void jw_raw(json_writer *j, const char *token)
{
    jw_pre(j);
    bw_write(j->out, token, strlen(token));
}

void jw_kstr(json_writer *j, const char *key, const char *s) { jw_key(j, key); jw_str(j, s); }
void jw_knum(json_writer *j, const char *key, double v) { jw_key(j, key); jw_num(j, v); }
void jw_kint(json_writer *j, const char *key, int64_t v) { jw_key(j, key); jw_int(j, v); }
void jw_kuint(json_writer *j, const char *key, uint64_t v) { jw_key(j, key); jw_uint(j, v); }
void jw_kbool(json_writer *j, const char *key, int v) { jw_key(j, key); jw_bool(j, v); }
void jw_knull(json_writer *j, const char *key) { jw_key(j, key); jw_null(j); }

/* ---- paths ----------------------------------------------------------------- */

char *path_join(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, na);
    size_t k = na;
    if (k > 0 && p[k - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, b, nb + 1);
    return p;
}

int mkdir_p(const char *path, unsigned mode)
{
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(p, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0)
            continue;
        char c = p[i];
        p[i] = 0;
        if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            errno = e;
            return -1;
        }
        p[i] = c;
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}
