/*
 * Model file loader: maps a libyolo model file read-only and validates it
 * completely before anything else touches it. The file is treated as
 * hostile: every count is bounded before a loop, every offset and size is
 * checked against the file with overflow-checked arithmetic, every name must
 * be NUL-terminated, and finally the graph's tensor shapes are checked by
 * running shape inference on a nominal input. Any byte pattern gives either
 * a valid model or a status with a message naming the file and the fault.
 *
 * Format version 1 (docs/model-format.md is the full specification):
 * little-endian; offsets absolute from the file start.
 *
 *   header, 128 bytes at 0:
 *     0 char[8] magic "LIBYOLO\0"   8 u32 version (1)     12 u32 header_size (128)
 *    16 u64 file_size              24 u32 n_layers (1..4096)
 *    28 u32 n_tensors (0..65536)   32 u64 meta_off (128)  40 u64 meta_size
 *    48 u64 layers_off (8-aligned) 56 u64 tensors_off (8-aligned)
 *    64 u64 data_off (64-aligned)  72 u64 data_size (data_off + data_size = file_size)
 *    80 u32 tables_crc32 of [128, data_off)   84 u32 data_crc32 of the data
 *    88 u32[9] reserved            124 u32 header_crc32 of [0, 124)
 *   metadata at meta_off: nc, num_levels, num_anchors, default_img_size,
 *     max_stride, activation, fused, reserved (u32 each, 0..31), strides
 *     u32[4] (32), anchors f32[4][4][2] (48), source sha256 (176), name
 *     char[64] (208), names_size u32 (272), then nc NUL-terminated class
 *     names (276); meta_size = 276 + names_size.
 *   n_layers records of 192 bytes at layers_off: type, act, n_inputs,
 *     i32 inputs[16] (12), c_out (76), kernel, stride, pad, groups, f32 alpha
 *     (96), f32 eps, u32 tensors[8] (104, 0xFFFFFFFF = none), source_index
 *     (136), reserved.
 *   n_tensors records of 96 bytes at tensors_off: char name[56], dtype (56,
 *     0 = f32), ndim (60), u32 shape[4] (64), u64 offset (80, from data_off,
 *     64-aligned), u64 size (88, = prod(shape) * 4).
 *   tensor data at data_off.
 * Reserved words, unused input slots, unused levels/anchors and unused
 * tensor dimensions must be zero: a version-1 file has no other meaning
 * for them, so anything else is damage.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph.h"

#define FORMAT_VERSION 1u
#define HEADER_SIZE 128u
#define META_FIXED_SIZE 276u
#define LAYER_RECORD_SIZE 192u
#define TENSOR_RECORD_SIZE 96u
#define MAX_LAYERS 4096u
#define MAX_TENSORS 65536u
#define MAX_CLASSES 10000u
#define MAX_IMG_SIZE 16384u
#define MAX_STRIDE 1024u
#define NO_TENSOR 0xFFFFFFFFu
/* Bounds on layer integers so kernels' int arithmetic cannot overflow. */
#define MAX_CHANNELS 65536u
#define MAX_KERNEL 255u

/* ---- little-endian readers ---------------------------------------------- */

static uint32_t rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd_u64(const uint8_t *p)
{
    return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32;
}

static float rd_f32(const uint8_t *p)
{
    uint32_t u = rd_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* zlib's CRC-32, folded with carry-less multiplies where the CPU can
 * (crc32.c): the data pass is most of the load time. */
static uint32_t crc32_bytes(const uint8_t *p, size_t n)
{
    return crc32_ieee(0, p, n);
}

/* 1 if [off, off + len) lies inside [0, limit), without overflow. */
static int span_inside(uint64_t off, uint64_t len, uint64_t limit)
{
    return off <= limit && len <= limit - off;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* ---- loader state --------------------------------------------------------- */

typedef struct {
    uint32_t version, header_size, n_layers, n_tensors;
    uint32_t tables_crc, data_crc, header_crc;
    uint64_t file_size, meta_off, meta_size, layers_off, tensors_off, data_off, data_size;
} file_header;

typedef struct {
    const char *path;
    const uint8_t *base;
    size_t size;
    file_header h;
    yolo_model *m;
} loader;

static yolo_status map_file(loader *ld, int populate)
{
    int fd = open(ld->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return yolo_fail(YOLO_ERR_IO, "%s: cannot open: %s", ld->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return yolo_fail(YOLO_ERR_IO, "%s: cannot stat: %s", ld->path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return yolo_fail(YOLO_ERR_IO, "%s: not a regular file", ld->path);
    }
    if ((uint64_t)st.st_size < HEADER_SIZE) {
        close(fd);
        return yolo_fail(YOLO_ERR_FORMAT, "%s: file has %lld bytes, less than the %u-byte header",
                         ld->path, (long long)st.st_size, HEADER_SIZE);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return yolo_fail(YOLO_ERR_FORMAT, "%s: file too large to map", ld->path);
    }
    /* The data checksum reads every page: mapping them all in one call is
     * cheaper than a page fault every few pages inside the CRC loop. */
    int flags = MAP_PRIVATE | (populate ? MAP_POPULATE : 0);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, flags, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return yolo_fail(YOLO_ERR_IO, "%s: cannot map %lld bytes: %s", ld->path,
                         (long long)st.st_size, strerror(e));
    ld->base = p;
    ld->size = (size_t)st.st_size;
    ld->m->map = p;
    ld->m->map_size = ld->size;
    return YOLO_OK;
}

/* ---- header --------------------------------------------------------------- */

static void read_header(const uint8_t *b, file_header *h)
{
    h->version = rd_u32(b + 8);
    h->header_size = rd_u32(b + 12);
    h->file_size = rd_u64(b + 16);
    h->n_layers = rd_u32(b + 24);
    h->n_tensors = rd_u32(b + 28);
    h->meta_off = rd_u64(b + 32);
    h->meta_size = rd_u64(b + 40);
    h->layers_off = rd_u64(b + 48);
    h->tensors_off = rd_u64(b + 56);
    h->data_off = rd_u64(b + 64);
    h->data_size = rd_u64(b + 72);
    h->tables_crc = rd_u32(b + 80);
    h->data_crc = rd_u32(b + 84);
    h->header_crc = rd_u32(b + 124);
}

/* Magic and version first: a file of another version may lay out the rest
 * of its header differently, so name the version before anything else. */
static yolo_status check_header(const loader *ld)
{
    const file_header *h = &ld->h;
    if (memcmp(ld->base, "LIBYOLO\0", 8) != 0)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: not a libyolo model file (bad magic)", ld->path);
    if (h->version != FORMAT_VERSION)
        return yolo_fail(YOLO_ERR_VERSION,
                         "%s: model format version %u is not supported (this library reads "
                         "version %u); re-export the model with tools/export.py",
                         ld->path, h->version, FORMAT_VERSION);
    if (h->header_size != HEADER_SIZE)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: header_size is %u, expected %u", ld->path,
                         h->header_size, HEADER_SIZE);
    uint32_t crc = crc32_bytes(ld->base, 124);
    if (crc != h->header_crc)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: header checksum mismatch (stored 0x%08x, computed 0x%08x)",
                         ld->path, h->header_crc, crc);
    if (h->file_size != (uint64_t)ld->size)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: header says the file has %llu bytes but it has %zu (truncated "
                         "or padded?)",
                         ld->path, (unsigned long long)h->file_size, ld->size);
    if (!all_zero(ld->base + 88, 36))
        return yolo_fail(YOLO_ERR_FORMAT, "%s: reserved header bytes [88, 124) are not zero",
                         ld->path);
    if (h->n_layers < 1 || h->n_layers > MAX_LAYERS)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: n_layers is %u, must be 1..%u", ld->path,
                         h->n_layers, MAX_LAYERS);
    if (h->n_tensors > MAX_TENSORS)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: n_tensors is %u, must be 0..%u", ld->path,
                         h->n_tensors, MAX_TENSORS);
    return YOLO_OK;
}

/* The sections must follow each other in file order without overlap. */
static yolo_status check_layout(const loader *ld)
{
    const file_header *h = &ld->h;
    uint64_t size = ld->size;
    uint64_t layers_len = (uint64_t)h->n_layers * LAYER_RECORD_SIZE;
    uint64_t tensors_len = (uint64_t)h->n_tensors * TENSOR_RECORD_SIZE;
    if (h->meta_off != HEADER_SIZE)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: meta_off is %llu, expected %u", ld->path,
                         (unsigned long long)h->meta_off, HEADER_SIZE);
    if (h->meta_size < META_FIXED_SIZE || !span_inside(h->meta_off, h->meta_size, size))
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: metadata block [%llu, +%llu) is too small or outside the %llu-byte "
                         "file",
                         ld->path, (unsigned long long)h->meta_off,
                         (unsigned long long)h->meta_size, (unsigned long long)size);
    if (h->layers_off % 8 || h->layers_off < h->meta_off + h->meta_size ||
        !span_inside(h->layers_off, layers_len, size))
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: layer table at %llu (%u records of %u bytes) is misaligned, overlaps "
                         "the metadata or runs past the end of the %llu-byte file",
                         ld->path, (unsigned long long)h->layers_off, h->n_layers,
                         LAYER_RECORD_SIZE, (unsigned long long)size);
    if (h->tensors_off % 8 || h->tensors_off < h->layers_off + layers_len ||
        !span_inside(h->tensors_off, tensors_len, size))
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: tensor table at %llu (%u records of %u bytes) is misaligned, "
                         "overlaps the layer table or runs past the end of the %llu-byte file",
                         ld->path, (unsigned long long)h->tensors_off, h->n_tensors,
                         TENSOR_RECORD_SIZE, (unsigned long long)size);
    if (h->data_off % 64 || h->data_off < h->tensors_off + tensors_len ||
        !span_inside(h->data_off, h->data_size, size) || h->data_off + h->data_size != size)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: data section [%llu, +%llu) must be 64-aligned, follow the tensor "
                         "table and end at the end of the %llu-byte file",
                         ld->path, (unsigned long long)h->data_off,
                         (unsigned long long)h->data_size, (unsigned long long)size);
    return YOLO_OK;
}

static yolo_status check_checksums(const loader *ld, int verify_data)
{
    const file_header *h = &ld->h;
    uint32_t crc = crc32_bytes(ld->base + HEADER_SIZE, (size_t)(h->data_off - HEADER_SIZE));
    if (crc != h->tables_crc)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: metadata/layer/tensor tables checksum mismatch over bytes [%u, %llu) "
                         "(stored 0x%08x, computed 0x%08x)",
                         ld->path, HEADER_SIZE, (unsigned long long)h->data_off, h->tables_crc,
                         crc);
    if (!verify_data)
        return YOLO_OK;
    crc = crc32_bytes(ld->base + h->data_off, (size_t)h->data_size);
    if (crc != h->data_crc)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: tensor data checksum mismatch over bytes [%llu, %llu) (stored "
                         "0x%08x, computed 0x%08x)",
                         ld->path, (unsigned long long)h->data_off,
                         (unsigned long long)(h->data_off + h->data_size), h->data_crc, crc);
    return YOLO_OK;
}

/* ---- metadata -------------------------------------------------------------- */

static yolo_status check_strides_anchors(const loader *ld, const uint8_t *p)
{
    yolo_model_info *info = &ld->m->info;
    for (int l = 0; l < YOLO_MAX_LEVELS; l++) {
        uint32_t s = rd_u32(p + 32 + 4 * l);
        if (l >= info->num_levels) {
            if (s != 0 || !all_zero(p + 48 + 32 * (size_t)l, 32))
                return yolo_fail(YOLO_ERR_FORMAT,
                                 "%s: level %d is unused (num_levels %d) but its stride or "
                                 "anchors are not zero",
                                 ld->path, l, info->num_levels);
            continue;
        }
        if (!all_zero(p + 48 + 32 * (size_t)l + 8 * (size_t)info->num_anchors,
                      8 * (size_t)(YOLO_MAX_ANCHORS - info->num_anchors)))
            return yolo_fail(YOLO_ERR_FORMAT, "%s: unused anchors of level %d are not zero",
                             ld->path, l);
        if (s < 1 || s > (uint32_t)info->max_stride || (uint32_t)info->max_stride % s != 0)
            return yolo_fail(YOLO_ERR_FORMAT,
                             "%s: stride of level %d is %u; it must divide max_stride %d",
                             ld->path, l, s, info->max_stride);
        info->strides[l] = (int)s;
        for (int a = 0; a < info->num_anchors; a++) {
            for (int k = 0; k < 2; k++) {
                float v = rd_f32(p + 48 + 4 * (size_t)(l * 8 + a * 2 + k));
                if (!isfinite(v) || v <= 0.0f || v > 1e6f)
                    return yolo_fail(YOLO_ERR_FORMAT,
                                     "%s: anchor %d of level %d has %s %g; must be a positive size",
                                     ld->path, a, l, k ? "height" : "width", (double)v);
                info->anchors[l][a][k] = v;
            }
        }
    }
    return YOLO_OK;
}

static yolo_status read_class_names(const loader *ld, const uint8_t *blob, uint32_t size)
{
    yolo_model *m = ld->m;
    int nc = m->info.num_classes;
    uint32_t nuls = 0;
    for (uint32_t i = 0; i < size; i++)
        nuls += blob[i] == 0;
    if (nuls != (uint32_t)nc || size == 0 || blob[size - 1] != 0)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: class-name blob (%u bytes at %llu) must hold exactly %d "
                         "NUL-terminated names; it has %u NULs%s",
                         ld->path, size, (unsigned long long)(ld->h.meta_off + META_FIXED_SIZE),
                         nc, nuls, size && blob[size - 1] ? " and does not end in NUL" : "");
    m->class_names = malloc((size_t)nc * sizeof *m->class_names);
    if (!m->class_names)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: out of memory for %d class names", ld->path, nc);
    const char *s = (const char *)blob;
    for (int c = 0; c < nc; c++) {
        m->class_names[c] = s;
        s += strlen(s) + 1;
    }
    return YOLO_OK;
}

static yolo_status read_metadata(const loader *ld)
{
    const uint8_t *p = ld->base + ld->h.meta_off;
    yolo_model *m = ld->m;
    yolo_model_info *info = &m->info;
    uint32_t nc = rd_u32(p), nl = rd_u32(p + 4), na = rd_u32(p + 8);
    uint32_t img = rd_u32(p + 12), max_stride = rd_u32(p + 16);
    uint32_t act = rd_u32(p + 20), fused = rd_u32(p + 24);
    if (nc < 1 || nc > MAX_CLASSES)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: num_classes is %u, must be 1..%u", ld->path, nc,
                         MAX_CLASSES);
    if (nl < 1 || nl > YOLO_MAX_LEVELS || na < 1 || na > YOLO_MAX_ANCHORS)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: num_levels %u / num_anchors %u out of range (1..%d / 1..%d)",
                         ld->path, nl, na, YOLO_MAX_LEVELS, YOLO_MAX_ANCHORS);
    if (max_stride < 1 || max_stride > MAX_STRIDE || img < 1 || img > MAX_IMG_SIZE)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: max_stride %u / default_img_size %u out of range (1..%u / 1..%u)",
                         ld->path, max_stride, img, MAX_STRIDE, MAX_IMG_SIZE);
    if (act > YOLO_ACT_SILU || fused > 1 || rd_u32(p + 28) != 0)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: activation %u / fused %u out of range, or reserved word not zero",
                         ld->path, act, fused);
    info->num_classes = (int)nc;
    info->num_outputs = (int)nc + 5;
    info->num_levels = (int)nl;
    info->num_anchors = (int)na;
    info->default_img_size = (int)img;
    info->max_stride = (int)max_stride;
    info->activation = (yolo_activation)act;
    info->fused = (int)fused;
    yolo_status st = check_strides_anchors(ld, p);
    if (st != YOLO_OK)
        return st;
    memcpy(info->source_sha256, p + 176, 32);
    if (memchr(p + 208, 0, 64) == NULL)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: model name (64 bytes at %llu) is not NUL-terminated",
                         ld->path, (unsigned long long)(ld->h.meta_off + 208));
    memcpy(m->name, p + 208, 64);
    info->name = m->name;
    uint32_t names_size = rd_u32(p + 272);
    if ((uint64_t)names_size + META_FIXED_SIZE != ld->h.meta_size)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: meta_size %llu is not %u + names_size %u", ld->path,
                         (unsigned long long)ld->h.meta_size, META_FIXED_SIZE, names_size);
    return read_class_names(ld, p + META_FIXED_SIZE, names_size);
}

/* ---- tensor table ------------------------------------------------------------ */

static yolo_status read_tensor(const loader *ld, int t, const uint8_t *r, model_tensor *out)
{
    const char *path = ld->path;
    if (memchr(r, 0, 56) == NULL)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: tensor %d: name is not NUL-terminated", path, t);
    memcpy(out->name, r, 56);
    uint32_t dtype = rd_u32(r + 56), ndim = rd_u32(r + 60);
    if (dtype != 0)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: tensor %d (%s): dtype %u, only 0 (float32) is known",
                         path, t, out->name, dtype);
    if (ndim < 1 || ndim > 4)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: tensor %d (%s): ndim %u, must be 1..4", path, t,
                         out->name, ndim);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < 4; d++) {
        uint32_t v = rd_u32(r + 64 + 4 * d);
        if (d >= ndim) {
            if (v != 0)
                return yolo_fail(YOLO_ERR_FORMAT,
                                 "%s: tensor %d (%s): unused dimension %u is %u, not 0", path, t,
                                 out->name, d, v);
            out->shape[d] = 0;
            continue;
        }
        if (v < 1 || v > INT_MAX || elems > ((uint64_t)1 << 40) / v)
            return yolo_fail(YOLO_ERR_FORMAT,
                             "%s: tensor %d (%s): dimension %u is %u (zero or too large)", path, t,
                             out->name, d, v);
        out->shape[d] = (int)v;
        elems *= v;
    }
    out->ndim = (int)ndim;
    uint64_t off = rd_u64(r + 80), size = rd_u64(r + 88);
    if (size != elems * 4)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: tensor %d (%s): size is %llu bytes but its shape holds %llu floats",
                         path, t, out->name, (unsigned long long)size, (unsigned long long)elems);
    if (off % 64 != 0)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: tensor %d (%s): offset %llu is not 64-aligned",
                         path, t, out->name, (unsigned long long)off);
    if (!span_inside(off, size, ld->h.data_size))
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: tensor %d (%s) spans data bytes [%llu, +%llu) but the data section "
                         "has %llu bytes",
                         path, t, out->name, (unsigned long long)off, (unsigned long long)size,
                         (unsigned long long)ld->h.data_size);
    if (elems > SIZE_MAX)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: tensor %d (%s): too large", path, t, out->name);
    out->elems = (size_t)elems;
    out->data = (const float *)(const void *)(ld->base + ld->h.data_off + off);
    return YOLO_OK;
}

static yolo_status read_tensors(const loader *ld)
{
    yolo_model *m = ld->m;
    uint32_t n = ld->h.n_tensors;
    if (n == 0)
        return YOLO_OK;
    m->tensors = calloc(n, sizeof *m->tensors);
    if (!m->tensors)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: out of memory for %u tensors", ld->path, n);
    m->n_tensors = (int)n;
    for (uint32_t t = 0; t < n; t++) {
        const uint8_t *r = ld->base + ld->h.tensors_off + (size_t)t * TENSOR_RECORD_SIZE;
        yolo_status st = read_tensor(ld, (int)t, r, &m->tensors[t]);
        if (st != YOLO_OK)
            return st;
        m->info.num_params += m->tensors[t].elems;
    }
    return YOLO_OK;
}

/* ---- layer table ------------------------------------------------------------- */

static const char *const type_names[LAYER_TYPE_MAX + 1] = {
    "?", "Conv", "Conv2d", "BatchNorm2d", "activation", "MaxPool2d", "MP", "SP",
    "Concat", "Upsample", "Shortcut", "ReOrg", "Add", "Detect"};

/* Inputs each type takes, from the format's table; Detect is checked
 * against num_levels separately. */
static void arity(int type, int *lo, int *hi)
{
    *lo = 1;
    *hi = 1;
    if (type == LAYER_CONCAT || type == LAYER_DETECT)
        *hi = YOLO_MAX_INPUTS;
    if (type == LAYER_SHORTCUT || type == LAYER_ADD) {
        *lo = 2;
        *hi = YOLO_MAX_INPUTS;
    }
}

static yolo_status read_layer_inputs(const loader *ld, int i, const uint8_t *r, model_layer *l)
{
    uint32_t n = rd_u32(r + 8);
    int lo, hi;
    arity(l->type, &lo, &hi);
    if (n < (uint32_t)lo || n > (uint32_t)hi)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: layer %d (%s): n_inputs is %u, must be %d..%d",
                         ld->path, i, type_names[l->type], n, lo, hi);
    l->n_inputs = (int)n;
    for (uint32_t k = 0; k < n; k++) {
        int32_t v = (int32_t)rd_u32(r + 12 + 4 * k);
        if (v < -1 || v >= i)
            return yolo_fail(YOLO_ERR_FORMAT,
                             "%s: layer %d (%s): input %u refers to layer %d; a layer may read "
                             "only the network input (-1) or an earlier layer",
                             ld->path, i, type_names[l->type], k, (int)v);
        l->inputs[k] = (int)v;
    }
    if (!all_zero(r + 12 + 4 * (size_t)n, 4 * (size_t)(YOLO_MAX_INPUTS - n)))
        return yolo_fail(YOLO_ERR_FORMAT, "%s: layer %d (%s): unused input slots are not zero",
                         ld->path, i, type_names[l->type]);
    return YOLO_OK;
}

static yolo_status read_layer_params(const loader *ld, int i, const uint8_t *r, model_layer *l)
{
    uint32_t c_out = rd_u32(r + 76), k = rd_u32(r + 80), s = rd_u32(r + 84);
    uint32_t pad = rd_u32(r + 88), groups = rd_u32(r + 92);
    if (c_out > MAX_CHANNELS || k > MAX_KERNEL || s > MAX_KERNEL || pad > MAX_KERNEL ||
        groups > MAX_CHANNELS)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: layer %d (%s): c_out %u, kernel %u, stride %u, pad %u or groups %u "
                         "out of range",
                         ld->path, i, type_names[l->type], c_out, k, s, pad, groups);
    l->c_out = (int)c_out;
    l->kernel = (int)k;
    l->stride = (int)s;
    l->pad = (int)pad;
    l->groups = (int)groups;
    l->alpha = rd_f32(r + 96);
    l->eps = rd_f32(r + 100);
    if (!isfinite(l->alpha) || !isfinite(l->eps) || l->eps < 0.0f)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: layer %d (%s): alpha %g or eps %g is not valid",
                         ld->path, i, type_names[l->type], (double)l->alpha, (double)l->eps);
    uint32_t src = rd_u32(r + 136);
    if (src > INT_MAX)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: layer %d (%s): source_index %u out of range",
                         ld->path, i, type_names[l->type], src);
    l->source_index = (int)src;
    if (!all_zero(r + 140, LAYER_RECORD_SIZE - 140))
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: layer %d (%s): reserved bytes [140, 192) are not zero", ld->path,
                         i, type_names[l->type]);
    return YOLO_OK;
}

static yolo_status read_layer_tensors(const loader *ld, int i, const uint8_t *r, model_layer *l)
{
    const yolo_model *m = ld->m;
    for (int k = 0; k < YOLO_MAX_LAYER_TENSORS; k++) {
        uint32_t t = rd_u32(r + 104 + 4 * (size_t)k);
        if (t == NO_TENSOR) {
            l->tensors[k] = NULL;
            continue;
        }
        if (t >= (uint32_t)m->n_tensors)
            return yolo_fail(YOLO_ERR_FORMAT,
                             "%s: layer %d (%s): tensor slot %d refers to tensor %u but the file "
                             "has %d tensors",
                             ld->path, i, type_names[l->type], k, t, m->n_tensors);
        l->tensors[k] = &m->tensors[t];
    }
    return YOLO_OK;
}

static yolo_status read_layer(const loader *ld, int i, model_layer *l)
{
    const uint8_t *r = ld->base + ld->h.layers_off + (size_t)i * LAYER_RECORD_SIZE;
    uint32_t type = rd_u32(r), act = rd_u32(r + 4);
    if (type < 1 || type > LAYER_TYPE_MAX || op_lookup((int)type) == NULL)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: layer %d: unknown layer type %u", ld->path, i, type);
    l->type = (int)type;
    if (act > YOLO_ACT_SILU)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: layer %d (%s): unknown activation %u", ld->path, i,
                         type_names[type], act);
    l->act = (yolo_activation)act;
    yolo_status st = read_layer_inputs(ld, i, r, l);
    if (st == YOLO_OK)
        st = read_layer_params(ld, i, r, l);
    if (st == YOLO_OK)
        st = read_layer_tensors(ld, i, r, l);
    return st;
}

static yolo_status read_layers(const loader *ld)
{
    yolo_model *m = ld->m;
    int n = (int)ld->h.n_layers;
    m->layers = calloc((size_t)n, sizeof *m->layers);
    if (!m->layers)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: out of memory for %d layers", ld->path, n);
    m->n_layers = n;
    for (int i = 0; i < n; i++) {
        yolo_status st = read_layer(ld, i, &m->layers[i]);
        if (st != YOLO_OK)
            return st;
        int is_detect = m->layers[i].type == LAYER_DETECT;
        if (is_detect != (i == n - 1))
            return yolo_fail(YOLO_ERR_FORMAT,
                             "%s: layer %d (%s): the Detect layer must be the last layer, and only "
                             "the last",
                             ld->path, i, type_names[m->layers[i].type]);
    }
    const model_layer *det = &m->layers[n - 1];
    if (det->n_inputs != m->info.num_levels)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: layer %d (Detect) has %d inputs but the model has %d levels",
                         ld->path, n - 1, det->n_inputs, m->info.num_levels);
    return YOLO_OK;
}

/* Runs shape inference on a (1, 3, S, S) input with S = 2 * max_stride: each
 * op checks its tensors against its input channels. */
static yolo_status check_shapes(const loader *ld)
{
    yolo_model *m = ld->m;
    int s = 2 * m->info.max_stride;
    yolo_shape in = {1, 3, s, s};
    yolo_shape *shapes = malloc((size_t)m->n_layers * sizeof *shapes);
    if (!shapes)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: out of memory", ld->path);
    yolo_status st = graph_infer_shapes(m, in, shapes);
    free(shapes);
    return st;
}

/* ---- public API ------------------------------------------------------------- */

yolo_load_params yolo_load_default_params(void)
{
    yolo_load_params p;
    memset(&p, 0, sizeof p);
    p.verify_data_checksum = 1;
    return p;
}

static yolo_status load(loader *ld, const yolo_load_params *params)
{
    yolo_status st = map_file(ld, params->verify_data_checksum);
    if (st != YOLO_OK)
        return st;
    read_header(ld->base, &ld->h);
    if ((st = check_header(ld)) != YOLO_OK || (st = check_layout(ld)) != YOLO_OK ||
        (st = check_checksums(ld, params->verify_data_checksum)) != YOLO_OK ||
        (st = read_metadata(ld)) != YOLO_OK || (st = read_tensors(ld)) != YOLO_OK ||
        (st = read_layers(ld)) != YOLO_OK || (st = check_shapes(ld)) != YOLO_OK)
        return st;
    yolo_model_info *info = &ld->m->info;
    info->num_layers = ld->m->n_layers;
    info->weight_bytes = ld->h.data_size;
    info->file_crc32 = ld->h.header_crc;
    ld->m->max_inputs_channels = 3;
    /* A private read-only file mapping: pages may be dropped and re-read. */
    ld->m->map_droppable = 1;
    return graph_fast_model_init(ld->m);
}

yolo_status yolo_model_load(const char *path, const yolo_load_params *params, yolo_model **out)
{
    yolo_clear_error();
    if (out)
        *out = NULL;
    if (!path || !out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_model_load: path and out must not be NULL");
    yolo_load_params defaults = yolo_load_default_params();
    loader ld;
    memset(&ld, 0, sizeof ld);
    ld.path = path;
    ld.m = calloc(1, sizeof *ld.m);
    if (!ld.m)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: out of memory", path);
    /* Longer paths are cut in the stored copy only; messages here use path. */
    snprintf(ld.m->path, sizeof ld.m->path, "%s", path);
    yolo_status st = load(&ld, params ? params : &defaults);
    if (st != YOLO_OK) {
        yolo_model_free(ld.m);
        return st;
    }
    *out = ld.m;
    return YOLO_OK;
}

void yolo_model_free(yolo_model *model)
{
    if (!model)
        return;
    /* Its contexts are gone (yolo.h: the model outlives them), so nothing
     * points into the packed weights or the mapping any more. */
    graph_fast_model_free(model);
    if (model->map)
        munmap(model->map, model->map_size);
    free(model->class_names);
    free(model->layers);
    free(model->tensors);
    free(model);
}

yolo_status yolo_model_get_info(const yolo_model *model, yolo_model_info *out)
{
    yolo_clear_error();
    if (!model || !out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_model_get_info: NULL argument");
    *out = model->info;
    return YOLO_OK;
}

yolo_status yolo_model_class_name(const yolo_model *model, int cls, const char **out)
{
    yolo_clear_error();
    if (!model || !out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_model_class_name: NULL argument");
    if (cls < 0 || cls >= model->info.num_classes)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "%s: class %d out of range (model has %d classes)",
                         model->path, cls, model->info.num_classes);
    *out = model->class_names[cls];
    return YOLO_OK;
}

yolo_status yolo_model_layer(const yolo_model *model, int index, yolo_layer_desc *out)
{
    yolo_clear_error();
    if (!model || !out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_model_layer: NULL argument");
    if (index < 0 || index >= model->n_layers)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "%s: layer %d out of range (model has %d layers)",
                         model->path, index, model->n_layers);
    const model_layer *l = &model->layers[index];
    memset(out, 0, sizeof *out);
    out->type_name = layer_type_name(l);
    out->source_index = l->source_index;
    out->num_inputs = l->n_inputs;
    for (int k = 0; k < l->n_inputs; k++)
        out->inputs[k] = l->inputs[k];
    return YOLO_OK;
}
