/*
 * The image set of a run: a folder searched recursively for PNG and JPEG
 * files (recognised by their first bytes, not their names), sorted by path so
 * runs are repeatable, and the order in which a pass visits them (--count
 * repeats or subsamples the folder).
 */
#ifndef BENCH_DATASET_H
#define BENCH_DATASET_H

#include <stddef.h>

typedef enum { IMG_UNKNOWN = 0, IMG_PNG, IMG_JPEG } image_kind;

typedef struct {
    char *path;       /* as found: DIR/sub/name.jpg */
    char *rel;        /* relative to DIR */
    image_kind kind;
    int width, height; /* filled by the caller once decoded */
    int skipped;      /* unreadable: left out of every pass */
} dataset_item;

typedef struct {
    dataset_item *items;
    size_t n;
    size_t other_files; /* regular files that are not PNG/JPEG */
} dataset;

/* Kind of a file from its first bytes (PNG signature, JPEG SOI FF D8 FF). */
image_kind dataset_sniff(const unsigned char *head, size_t n);

/* Walks dir. 0 on success (even with no images: check ds->n), -1 with a
 * message when dir is missing, not a folder or unreadable. */
int dataset_scan(const char *dir, dataset *ds, char *err, size_t err_size);
void dataset_free(dataset *ds);

/* The item indices one pass visits: with count 0 every item once; with
 * count > n the list repeated; with count < n an even subsample. Skipped
 * items are left out. Returns a malloc'd array of *len entries (NULL and
 * *len 0 when nothing is left). */
size_t *dataset_order(const dataset *ds, size_t count, size_t *len);

/* File name without folder and extension ("000000000139" for
 * "x/000000000139.jpg"), written to buf. */
void dataset_stem(const char *path, char *buf, size_t size);

#endif /* BENCH_DATASET_H */
