/*
 * Tests of the model loader (libyolo/src/model.c): a valid generated file
 * loads with the right metadata; every kind of damage (truncation, bit
 * flips, wrong version or magic, inconsistent tables, tensors that do not
 * fit the graph) is refused with a message naming the file, and nothing
 * crashes. Also checks the exported weights/yolov7-tiny.bin.
 */
#include "testutil.h"

#include <unistd.h>

#include "modelgen.h"
#include "yolo.h"

static char tmp_dir[256];
static char tmp_path[320];

static int setup_dir(void **state)
{
    (void)state;
    if (mg_temp_dir(tmp_dir, sizeof tmp_dir, "model") != 0)
        return -1;
    snprintf(tmp_path, sizeof tmp_path, "%s/model.bin", tmp_dir);
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    unlink(tmp_path);
    rmdir(tmp_dir);
    return 0;
}

/* Writes buf to the temp file and loads it. */
static yolo_status load_bytes(const uint8_t *buf, size_t size, int verify_data, yolo_model **m)
{
    assert_int_equal(mg_write_buf(tmp_path, buf, size), 0);
    yolo_load_params lp = yolo_load_default_params();
    lp.verify_data_checksum = verify_data;
    return yolo_model_load(tmp_path, &lp, m);
}

/* Loads and expects a refusal with `status` and a message containing the
 * path and `needle` (if not NULL). */
static void expect_refused(const uint8_t *buf, size_t size, yolo_status status, const char *needle)
{
    yolo_model *m = (yolo_model *)1;
    yolo_status st = load_bytes(buf, size, 1, &m);
    if (st != status)
        fail_msg("expected status %s, got %s: %s", yolo_status_str(status), yolo_status_str(st),
                 yolo_last_error());
    assert_null(m);
    const char *msg = yolo_last_error();
    if (!strstr(msg, tmp_path))
        fail_msg("message does not name the file: %s", msg);
    if (needle && !strstr(msg, needle))
        fail_msg("message lacks \"%s\": %s", needle, msg);
}

static uint8_t *build_full(size_t *size)
{
    mg_model *g = malloc(sizeof *g);
    mg_build_full(g, 42);
    uint8_t *buf = mg_serialize(g, size);
    mg_free(g);
    free(g);
    return buf;
}

static void test_valid_model_loads(void **state)
{
    (void)state;
    mg_model *g = malloc(sizeof *g);
    mg_build_full(g, 42);
    size_t size;
    uint8_t *buf = mg_serialize(g, &size);
    yolo_model *m = NULL;
    assert_int_equal(load_bytes(buf, size, 1, &m), YOLO_OK);
    assert_string_equal(yolo_last_error(), "");
    yolo_model_info info;
    assert_int_equal(yolo_model_get_info(m, &info), YOLO_OK);
    assert_string_equal(info.name, "mg-test");
    assert_int_equal(info.num_classes, 3);
    assert_int_equal(info.num_outputs, 8);
    assert_int_equal(info.num_levels, 2);
    assert_int_equal(info.num_anchors, 2);
    assert_int_equal(info.strides[0], 8);
    assert_int_equal(info.strides[1], 16);
    assert_int_equal(info.max_stride, 16);
    assert_int_equal(info.default_img_size, 64);
    assert_int_equal(info.activation, YOLO_ACT_LEAKY_RELU);
    assert_int_equal(info.fused, 1);
    assert_int_equal(info.num_layers, g->n_layers);
    assert_true(info.anchors[1][1][0] == g->anchors[1][1][0]);
    assert_true(info.anchors[0][1][1] == g->anchors[0][1][1]);
    uint64_t params = 0;
    for (int t = 0; t < g->n_tensors; t++)
        params += g->tensors[t].elems;
    assert_int_equal(info.num_params, params);
    assert_int_equal(info.weight_bytes, mg_get64(buf + 72));
    assert_int_equal(info.file_crc32, mg_get32(buf + 124));
    assert_int_equal(info.source_sha256[3], 3 * 7 + 1);

    const char *name;
    assert_int_equal(yolo_model_class_name(m, 2, &name), YOLO_OK);
    assert_string_equal(name, "class2");
    assert_int_equal(yolo_model_class_name(m, 3, &name), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_model_class_name(m, -1, &name), YOLO_ERR_INVALID_ARG);

    yolo_layer_desc d;
    assert_int_equal(yolo_model_layer(m, 7, &d), YOLO_OK);
    assert_string_equal(d.type_name, "Concat");
    assert_int_equal(d.num_inputs, 3);
    assert_int_equal(d.inputs[0], 6);
    assert_int_equal(d.inputs[2], 4);
    assert_int_equal(d.source_index, 7);
    assert_int_equal(yolo_model_layer(m, 0, &d), YOLO_OK);
    assert_int_equal(d.inputs[0], -1);
    assert_int_equal(yolo_model_layer(m, 13, &d), YOLO_OK);
    assert_string_equal(d.type_name, "SiLU");
    assert_int_equal(yolo_model_layer(m, g->n_layers - 1, &d), YOLO_OK);
    assert_string_equal(d.type_name, "Detect");
    assert_int_equal(yolo_model_layer(m, g->n_layers, &d), YOLO_ERR_INVALID_ARG);
    yolo_model_free(m);
    free(buf);
    mg_free(g);
    free(g);
}

static void test_missing_file(void **state)
{
    (void)state;
    yolo_model *m = (yolo_model *)1;
    char path[400];
    snprintf(path, sizeof path, "%s/does-not-exist.bin", tmp_dir);
    assert_int_equal(yolo_model_load(path, NULL, &m), YOLO_ERR_IO);
    assert_null(m);
    assert_non_null(strstr(yolo_last_error(), path));
    assert_int_equal(yolo_model_load(NULL, NULL, &m), YOLO_ERR_INVALID_ARG);
    /* A directory is not a model either. */
    assert_int_equal(yolo_model_load(tmp_dir, NULL, &m), YOLO_ERR_IO);
}

/* Every prefix of a small file, and a dense sample of a larger one. */
static void test_truncations(void **state)
{
    (void)state;
    mg_model *g = malloc(sizeof *g);
    mg_build_tiny(g, 7);
    size_t size;
    uint8_t *buf = mg_serialize(g, &size);
    yolo_model *m = NULL;
    assert_int_equal(load_bytes(buf, size, 1, &m), YOLO_OK);
    yolo_model_free(m);
    for (size_t len = 0; len < size; len++)
        expect_refused(buf, len, YOLO_ERR_FORMAT, NULL);
    free(buf);
    mg_free(g);
    free(g);

    buf = build_full(&size);
    for (size_t len = 0; len < size; len += 37)
        expect_refused(buf, len, YOLO_ERR_FORMAT, NULL);
    expect_refused(buf, size - 1, YOLO_ERR_FORMAT, "bytes");
    free(buf);
}

static void test_trailing_bytes(void **state)
{
    (void)state;
    size_t size;
    uint8_t *buf = build_full(&size);
    uint8_t *big = calloc(1, size + 64);
    memcpy(big, buf, size);
    expect_refused(big, size + 64, YOLO_ERR_FORMAT, "header says");
    free(big);
    free(buf);
}

/* With the data checksum verified, every flipped bit is refused; without it,
 * a flip inside the tensor data loads (the weights just differ) and any
 * other flip is refused. */
static void test_bit_flips(void **state)
{
    (void)state;
    mg_model *g = malloc(sizeof *g);
    mg_build_tiny(g, 9);
    size_t size;
    uint8_t *buf = mg_serialize(g, &size);
    size_t data_off = (size_t)mg_get64(buf + 64);
    for (size_t pos = 0; pos < size; pos++) {
        uint8_t bit = (uint8_t)(1u << (pos % 8));
        buf[pos] ^= bit;
        for (int verify = 0; verify < 2; verify++) {
            yolo_model *m = NULL;
            yolo_status st = load_bytes(buf, size, verify, &m);
            int should_load = !verify && pos >= data_off;
            if (should_load != (st == YOLO_OK))
                fail_msg("bit flip at byte %zu (verify %d): status %s: %s", pos, verify,
                         yolo_status_str(st), yolo_last_error());
            yolo_model_free(m);
        }
        buf[pos] ^= bit;
    }
    free(buf);
    mg_free(g);
    free(g);
}

/* Bit flips in the header and tables with the checksums re-sealed, so the
 * structural checks must catch them. Whatever loads must also run. */
static void test_resealed_flips_never_crash(void **state)
{
    (void)state;
    size_t size;
    uint8_t *buf = build_full(&size);
    size_t data_off = (size_t)mg_get64(buf + 64);
    uint8_t *work = malloc(size);
    float *input = calloc(3 * 32 * 32, sizeof(float));
    int loaded = 0, refused = 0;
    for (size_t pos = 0; pos < data_off; pos++) {
        if (pos >= 80 && pos < 88)
            continue; /* the table/data CRC fields themselves */
        if (pos >= 124 && pos < 128)
            continue; /* the header CRC field */
        memcpy(work, buf, size);
        work[pos] ^= (uint8_t)(1u << ((pos * 5) % 8));
        mg_fix_crcs(work, size);
        yolo_model *m = NULL;
        yolo_status st = load_bytes(work, size, 1, &m);
        if (st != YOLO_OK) {
            refused++;
            assert_true(yolo_last_error()[0] != '\0');
            continue;
        }
        loaded++;
        yolo_ctx_params cp = yolo_ctx_default_params();
        cp.backend = YOLO_BACKEND_REFERENCE;
        yolo_ctx *c = NULL;
        assert_int_equal(yolo_ctx_create(m, &cp, &c), YOLO_OK);
        yolo_model_info info;
        yolo_model_get_info(m, &info);
        int s = 2 * info.max_stride;
        if (s <= 32)
            (void)yolo_forward(c, input, 1, s, s);
        yolo_ctx_free(c);
        yolo_model_free(m);
    }
    /* Many flips land in fields where any value is legal (names, anchors,
     * reserved words); the structural ones must be caught. */
    assert_true(refused > 0 && loaded > 0);
    free(input);
    free(work);
    free(buf);
}

static void test_wrong_version(void **state)
{
    (void)state;
    size_t size;
    uint8_t *buf = build_full(&size);
    mg_put32(buf + 8, 2);
    mg_fix_crcs(buf, size);
    expect_refused(buf, size, YOLO_ERR_VERSION, "version 2");
    assert_non_null(strstr(yolo_last_error(), "version 1"));
    /* Version is checked before the header CRC. */
    mg_put32(buf + 8, 7);
    expect_refused(buf, size, YOLO_ERR_VERSION, "version 7");
    free(buf);
}

static void test_wrong_magic(void **state)
{
    (void)state;
    size_t size;
    uint8_t *buf = build_full(&size);
    buf[0] = 'X';
    mg_fix_crcs(buf, size);
    expect_refused(buf, size, YOLO_ERR_FORMAT, "magic");
    free(buf);
}

static void test_checksums(void **state)
{
    (void)state;
    size_t size;
    uint8_t *buf = build_full(&size);
    size_t data_off = (size_t)mg_get64(buf + 64);
    buf[data_off + 5] ^= 0x10;
    expect_refused(buf, size, YOLO_ERR_FORMAT, "data checksum");
    yolo_model *m = NULL;
    assert_int_equal(load_bytes(buf, size, 0, &m), YOLO_OK);
    yolo_model_free(m);
    buf[data_off + 5] ^= 0x10;
    buf[200] ^= 1;
    expect_refused(buf, size, YOLO_ERR_FORMAT, "tables checksum");
    buf[200] ^= 1;
    buf[20] ^= 1;
    expect_refused(buf, size, YOLO_ERR_FORMAT, "header checksum");
    free(buf);
}

/* Serializes g, applies a patch at byte `off` of layer/tensor record space,
 * re-seals, and expects a FORMAT refusal mentioning needle. */
static void expect_model_refused(mg_model *g, const char *needle)
{
    size_t size;
    uint8_t *buf = mg_serialize(g, &size);
    expect_refused(buf, size, YOLO_ERR_FORMAT, needle);
    free(buf);
}

static void test_bad_graphs(void **state)
{
    (void)state;
    mg_model *g = malloc(sizeof *g);

    mg_build_full(g, 1);
    g->layers[2].inputs[0] = 4;
    expect_model_refused(g, "refers to layer 4");
    mg_free(g);

    mg_build_full(g, 1);
    g->layers[3].inputs[0] = 3; /* itself */
    expect_model_refused(g, "refers to layer 3");
    g->layers[3].inputs[0] = -2;
    expect_model_refused(g, "refers to layer -2");
    mg_free(g);

    mg_build_full(g, 1);
    g->layers[5].type = 14;
    expect_model_refused(g, "unknown layer type 14");
    g->layers[5].type = 0;
    expect_model_refused(g, "unknown layer type 0");
    mg_free(g);

    mg_build_full(g, 1);
    g->layers[3].type = MG_DETECT; /* a Detect before the end */
    expect_model_refused(g, "Detect");
    mg_free(g);

    mg_build_full(g, 1);
    g->layers[g->n_layers - 1].type = MG_CONCAT; /* no Detect at all */
    expect_model_refused(g, "Detect");
    mg_free(g);

    mg_build_full(g, 1);
    g->layers[9].n_in = 2; /* Upsample takes one input */
    expect_model_refused(g, "n_inputs");
    g->layers[9].n_in = 17;
    expect_model_refused(g, "n_inputs");
    mg_free(g);

    mg_build_full(g, 1);
    g->layers[1].tensors[0] = 999;
    expect_model_refused(g, "tensor 999");
    mg_free(g);

    mg_build_full(g, 1);
    g->layers[1].c_out = 9; /* the weight gives 8 */
    expect_model_refused(g, "layer 1");
    mg_free(g);

    mg_build_full(g, 1);
    g->layers[1].act = 3;
    expect_model_refused(g, "activation");
    mg_free(g);

    mg_build_full(g, 1);
    g->nc = 0;
    expect_model_refused(g, "num_classes");
    mg_free(g);

    mg_build_full(g, 1);
    g->strides[1] = 12; /* does not divide max_stride 16 */
    expect_model_refused(g, "stride");
    mg_free(g);

    mg_build_full(g, 1);
    g->strides[1] = 8; /* divides, but the grid of layer 8 is /16 */
    expect_model_refused(g, "Detect");
    mg_free(g);

    mg_build_full(g, 1);
    g->anchors[0][1][0] = -3.0f;
    expect_model_refused(g, "anchor");
    mg_free(g);

    mg_build_full(g, 1);
    memset(g->name, 'x', sizeof g->name);
    expect_model_refused(g, "name");
    mg_free(g);
    free(g);
}

static void test_bad_tensor_shapes(void **state)
{
    (void)state;
    mg_model *g = malloc(sizeof *g);

    /* Conv weight with the wrong input channels for its producer. */
    mg_build_full(g, 2);
    int t = (int)g->layers[2].tensors[0];
    int wrong[4] = {16, 9, 3, 3};
    mg_tensor_reshape(g, t, 4, wrong);
    expect_model_refused(g, g->tensors[t].name);
    assert_non_null(strstr(yolo_last_error(), "layer 2"));
    mg_free(g);

    /* Detect head with the wrong row count. */
    mg_build_full(g, 2);
    int det = g->n_layers - 1;
    t = (int)g->layers[det].tensors[2];
    int wrong_det[4] = {15, 24, 1, 1};
    mg_tensor_reshape(g, t, 4, wrong_det);
    expect_model_refused(g, "Detect");
    mg_free(g);

    /* BatchNorm vector of the wrong length. */
    mg_build_full(g, 2);
    t = (int)g->layers[12].tensors[3];
    int wrong_bn[1] = {17};
    mg_tensor_reshape(g, t, 1, wrong_bn);
    expect_model_refused(g, g->tensors[t].name);
    mg_free(g);

    /* A Conv missing its weight. */
    mg_build_full(g, 2);
    g->layers[1].tensors[0] = MG_NONE;
    expect_model_refused(g, "layer 1");
    mg_free(g);
    free(g);
}

/* Patches of the serialized tables, re-sealed with fresh CRCs. */
static void test_bad_tables(void **state)
{
    (void)state;
    size_t size;
    uint8_t *orig = build_full(&size);
    uint8_t *buf = malloc(size);
    size_t tensors_off = (size_t)mg_get64(orig + 56);
    size_t layers_off = (size_t)mg_get64(orig + 48);

#define PATCH(stmt, status, needle)                                                            \
    do {                                                                                       \
        memcpy(buf, orig, size);                                                               \
        stmt;                                                                                  \
        mg_fix_crcs(buf, size);                                                                \
        expect_refused(buf, size, status, needle);                                             \
    } while (0)

    PATCH(mg_put64(buf + tensors_off + 80, 32), YOLO_ERR_FORMAT, "not 64-aligned");
    PATCH(mg_put64(buf + tensors_off + 80, (uint64_t)1 << 62), YOLO_ERR_FORMAT, "data section");
    PATCH(mg_put64(buf + tensors_off + 88, 4), YOLO_ERR_FORMAT, "size");
    PATCH(mg_put32(buf + tensors_off + 56, 1), YOLO_ERR_FORMAT, "dtype");
    PATCH(mg_put32(buf + tensors_off + 60, 5), YOLO_ERR_FORMAT, "ndim");
    PATCH(mg_put32(buf + tensors_off + 64, 0), YOLO_ERR_FORMAT, "dimension");
    PATCH(memset(buf + tensors_off, 'a', 56), YOLO_ERR_FORMAT, "NUL");
    PATCH(mg_put32(buf + 24, 0), YOLO_ERR_FORMAT, "n_layers");
    PATCH(mg_put32(buf + 24, 100000), YOLO_ERR_FORMAT, "n_layers");
    PATCH(mg_put32(buf + 28, 0xFFFFFFFFu), YOLO_ERR_FORMAT, "n_tensors");
    PATCH(mg_put32(buf + 24, 4000), YOLO_ERR_FORMAT, "layer table");
    PATCH(mg_put64(buf + 48, layers_off + 4), YOLO_ERR_FORMAT, "layer table");
    PATCH(mg_put64(buf + 40, (uint64_t)-1), YOLO_ERR_FORMAT, "metadata");
    PATCH(mg_put64(buf + 64, (uint64_t)-64), YOLO_ERR_FORMAT, "data section");
    PATCH(mg_put32(buf + 12, 64), YOLO_ERR_FORMAT, "header_size");
    /* Class-name blob: one NUL too few (last name runs into the padding). */
    PATCH(buf[128 + 276 + 6] = 'x', YOLO_ERR_FORMAT, "class-name");
    /* Metadata counts. */
    PATCH(mg_put32(buf + 128 + 4, 5), YOLO_ERR_FORMAT, "num_levels");
    PATCH(mg_put32(buf + 128 + 4, 1), YOLO_ERR_FORMAT, "levels");
    PATCH(mg_put32(buf + 128 + 16, 0), YOLO_ERR_FORMAT, "max_stride");
    PATCH(mg_put32(buf + layers_off + 192 * 2 + 84, 100000), YOLO_ERR_FORMAT, "out of range");
    /* Reserved and unused fields must be zero. */
    PATCH(buf[100] = 1, YOLO_ERR_FORMAT, "reserved header");
    PATCH(buf[128 + 28] = 1, YOLO_ERR_FORMAT, "reserved");
    PATCH(buf[128 + 32 + 4 * 3] = 8, YOLO_ERR_FORMAT, "level 3 is unused");
    PATCH(buf[128 + 48 + 2 * 8 + 1] = 1, YOLO_ERR_FORMAT, "unused anchors");
    PATCH(buf[layers_off + 12 + 4 * 5] = 1, YOLO_ERR_FORMAT, "unused input");
    PATCH(buf[layers_off + 191] = 1, YOLO_ERR_FORMAT, "reserved bytes");
    PATCH(buf[tensors_off + 96 + 64 + 4 * 3] = 1, YOLO_ERR_FORMAT, "unused dimension");
#undef PATCH
    free(buf);
    free(orig);
}

/* The synthetic yolov7-tiny made by `make weights`. */
static void test_exported_tiny(void **state)
{
    (void)state;
    const char *path = "weights/yolov7-tiny.bin";
    if (access(path, R_OK) != 0)
        fail_msg("%s is missing: run `make weights` (make test does) from the repository root",
                 path);
    yolo_model *m = NULL;
    if (yolo_model_load(path, NULL, &m) != YOLO_OK)
        fail_msg("loading %s: %s", path, yolo_last_error());
    yolo_model_info info;
    assert_int_equal(yolo_model_get_info(m, &info), YOLO_OK);
    assert_string_equal(info.name, "yolov7-tiny");
    assert_int_equal(info.num_classes, 80);
    assert_int_equal(info.num_outputs, 85);
    assert_int_equal(info.num_levels, 3);
    assert_int_equal(info.num_anchors, 3);
    assert_int_equal(info.strides[0], 8);
    assert_int_equal(info.strides[1], 16);
    assert_int_equal(info.strides[2], 32);
    assert_int_equal(info.max_stride, 32);
    assert_int_equal(info.default_img_size, 640);
    assert_int_equal(info.activation, YOLO_ACT_LEAKY_RELU);
    /* Anchors of yolov7-tiny (docs: P3 (10,13), P5 (373,326)). */
    assert_true(info.anchors[0][0][0] == 10.0f && info.anchors[0][0][1] == 13.0f);
    assert_true(info.anchors[2][2][0] == 373.0f && info.anchors[2][2][1] == 326.0f);
    /* The fused deploy yolov7-tiny has 6,219,709 parameters (the official
     * code's count after fuse). */
    if (info.fused)
        assert_int_equal(info.num_params, 6219709);
    assert_true(info.weight_bytes >= info.num_params * 4);
    assert_true(info.num_layers >= 78);
    yolo_layer_desc d;
    assert_int_equal(yolo_model_layer(m, info.num_layers - 1, &d), YOLO_OK);
    assert_string_equal(d.type_name, "Detect");
    assert_int_equal(d.source_index, 77);
    const char *name;
    assert_int_equal(yolo_model_class_name(m, 79, &name), YOLO_OK);
    assert_true(name[0] != '\0');
    yolo_model_free(m);
}

/* The exported yolov7-tiny's ~25 MB of tensor data goes through the
 * folded CRC (the generated models above are mostly shorter than its
 * blocks): a flip at its start, inside the folding, in its last bytes is
 * refused; the intact copy loads. */
static void test_data_flips_big_file(void **state)
{
    (void)state;
    const char *path = "weights/yolov7-tiny.bin";
    size_t size;
    uint8_t *buf = tu_read_file(path, &size);
    if (!buf)
        fail_msg("%s is missing: run `make weights` from the repository root", path);
    size_t data_off = (size_t)mg_get64(buf + 64);
    assert_true(size > data_off + 4096);
    yolo_model *m = NULL;
    assert_int_equal(load_bytes(buf, size, 1, &m), YOLO_OK);
    yolo_model_free(m);
    size_t where[] = {data_off, data_off + 300, data_off + (size - data_off) / 2 + 5,
                      size - 200, size - 1};
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        buf[where[w]] ^= 0x10;
        expect_refused(buf, size, YOLO_ERR_FORMAT, "tensor data checksum");
        buf[where[w]] ^= 0x10;
    }
    free(buf);
}

static void test_errors_and_version(void **state)
{
    (void)state;
    assert_string_equal(yolo_version(), YOLO_VERSION_STRING);
    assert_string_equal(yolo_status_str(YOLO_OK), "ok");
    assert_string_equal(yolo_status_str(YOLO_ERR_VERSION), "unsupported model format version");
    assert_string_equal(yolo_status_str((yolo_status)999), "unknown status");
    assert_string_equal(yolo_status_str((yolo_status)-1), "unknown status");
    yolo_load_params lp = yolo_load_default_params();
    assert_int_equal(lp.verify_data_checksum, 1);
    /* A successful call clears the previous message. */
    yolo_model *m = NULL;
    assert_int_not_equal(yolo_model_load("no/such/file.bin", NULL, &m), YOLO_OK);
    assert_true(yolo_last_error()[0] != '\0');
    yolo_model_info info;
    assert_int_equal(yolo_model_get_info(NULL, &info), YOLO_ERR_INVALID_ARG);
    yolo_model_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_and_version),
        cmocka_unit_test(test_valid_model_loads),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_resealed_flips_never_crash),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_wrong_magic),
        cmocka_unit_test(test_checksums),
        cmocka_unit_test(test_bad_graphs),
        cmocka_unit_test(test_bad_tensor_shapes),
        cmocka_unit_test(test_bad_tables),
        cmocka_unit_test(test_exported_tiny),
        cmocka_unit_test(test_data_flips_big_file),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
