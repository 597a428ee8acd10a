/*
 * Recursive folder walk for the image set. Symbolic links to files are
 * followed; links to folders are not (no cycles).
 */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

image_kind dataset_sniff(const unsigned char *h, size_t n)
{
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 8 && memcmp(h, png, 8) == 0)
        return IMG_PNG;
    if (n >= 3 && h[0] == 0xFF && h[1] == 0xD8 && h[2] == 0xFF)
        return IMG_JPEG;
    return IMG_UNKNOWN;
}

static image_kind sniff_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return IMG_UNKNOWN;
    unsigned char head[8];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return dataset_sniff(head, n);
}

static int push_item(dataset *ds, size_t *cap, const char *path, const char *rel,
                     image_kind kind)
{
    if (ds->n == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        dataset_item *p = realloc(ds->items, c * sizeof *p);
        if (!p)
            return -1;
        ds->items = p;
        *cap = c;
    }
    dataset_item *it = &ds->items[ds->n];
    memset(it, 0, sizeof *it);
    it->path = strdup(path);
    it->rel = strdup(rel);
    it->kind = kind;
    if (!it->path || !it->rel) {
        free(it->path);
        free(it->rel);
        return -1;
    }
    ds->n++;
    return 0;
}

static int walk(dataset *ds, size_t *cap, const char *dir, size_t root_len, int depth)
{
    if (depth > 64)
        return 0;
    DIR *d = opendir(dir);
    if (!d)
        return depth == 0 ? -1 : 0; /* an unreadable subfolder is skipped */
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue; /* ., .., hidden files */
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(n);
        if (!path) {
            rc = -1;
            break;
        }
        snprintf(path, n, "%s/%s", dir, e->d_name);
        struct stat lst, st;
        if (lstat(path, &lst) == 0 && S_ISDIR(lst.st_mode)) {
            rc = walk(ds, cap, path, root_len, depth + 1);
        } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            image_kind k = sniff_file(path);
            if (k != IMG_UNKNOWN)
                rc = push_item(ds, cap, path, path + root_len, k);
            else
                ds->other_files++;
        }
        free(path);
    }
    closedir(d);
    return rc;
}

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const dataset_item *)a)->rel, ((const dataset_item *)b)->rel);
}

int dataset_scan(const char *dir_in, dataset *ds, char *err, size_t err_size)
{
    memset(ds, 0, sizeof *ds);
    struct stat st;
    if (stat(dir_in, &st) != 0) {
        snprintf(err, err_size, "image folder %s: %s", dir_in, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, err_size, "image folder %s is not a folder", dir_in);
        return -1;
    }
    /* Strip trailing slashes so relative names never start with '/'. */
    size_t len = strlen(dir_in);
    char *dir = strdup(dir_in);
    if (!dir) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    while (len > 1 && dir[len - 1] == '/')
        dir[--len] = 0;
    size_t cap = 0;
    errno = 0;
    int rc = walk(ds, &cap, dir, len + 1, 0);
    if (rc != 0) {
        snprintf(err, err_size, "cannot read image folder %s: %s", dir,
                 errno ? strerror(errno) : "out of memory");
        free(dir);
        dataset_free(ds);
        return -1;
    }
    free(dir);
    if (ds->n > 1)
        qsort(ds->items, ds->n, sizeof *ds->items, cmp_item);
    return 0;
}

void dataset_free(dataset *ds)
{
    for (size_t i = 0; i < ds->n; i++) {
        free(ds->items[i].path);
        free(ds->items[i].rel);
    }
    free(ds->items);
    memset(ds, 0, sizeof *ds);
}

size_t *dataset_order(const dataset *ds, size_t count, size_t *len)
{
    *len = 0;
    size_t good = 0;
    for (size_t i = 0; i < ds->n; i++)
        good += !ds->items[i].skipped;
    if (good == 0)
        return NULL;
    size_t *idx = malloc(good * sizeof *idx);
    if (!idx)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < ds->n; i++)
        if (!ds->items[i].skipped)
            idx[k++] = i;
    size_t n = count ? count : good;
    size_t *out = malloc(n * sizeof *out);
    if (!out) {
        free(idx);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        /* n > good: cycle; n < good: i*good/n spreads the picks evenly. */
        size_t j = n > good ? i % good : (size_t)((unsigned long long)i * good / n);
        out[i] = idx[j];
    }
    free(idx);
    *len = n;
    return out;
}

void dataset_stem(const char *path, char *buf, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n >= size)
        n = size - 1;
    memcpy(buf, base, n);
    buf[n] = 0;
}
