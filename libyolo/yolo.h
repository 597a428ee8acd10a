/*
 * libyolo: YOLOv7 object detection on the CPU, in C.
 *
 * The one public header. Two opaque handles:
 *   yolo_model  immutable after load (weights are mmap'd read-only); share it
 *               between threads freely.
 *   yolo_ctx    everything one inference stream mutates: activation arena,
 *               scratch, predictions, detections. One thread at a time.
 *
 * Every function returns a yolo_status. On failure, yolo_last_error() gives a
 * message for the calling thread naming the file / layer / value at fault.
 * The library never prints, exits or aborts on bad input.
 *
 * Ownership: pointers returned through out-parameters are owned by the object
 * they came from and stay valid until that object is freed or, for results
 * held in a yolo_ctx, until the next call that computes on that ctx.
 *
 * Minimal use (error checks elided; see examples/detect.c):
 *
 *     yolo_model *m; yolo_ctx *c; yolo_image img;
 *     yolo_model_load("weights/yolov7-tiny.bin", NULL, &m);
 *     yolo_ctx_create(m, NULL, &c);
 *     yolo_image_load("dog.jpg", &img);
 *     yolo_detect_params dp = yolo_detect_default_params();
 *     const yolo_detection *d; int n;
 *     yolo_detect(c, &img, &dp, &d, &n);
 *     yolo_image_free(&img); yolo_ctx_free(c); yolo_model_free(m);
 */
#ifndef LIBYOLO_YOLO_H
#define LIBYOLO_YOLO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define YOLO_VERSION_MAJOR 0
#define YOLO_VERSION_MINOR 1
#define YOLO_VERSION_PATCH 0
#define YOLO_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------------ */
/* Status codes and errors                                                  */

#define YOLO_STATUS_LIST(X)                                                  \
    X(YOLO_OK, "ok")                                                         \
    X(YOLO_ERR_INVALID_ARG, "invalid argument")                              \
    X(YOLO_ERR_IO, "i/o error")                                              \
    X(YOLO_ERR_FORMAT, "malformed model file")                               \
    X(YOLO_ERR_VERSION, "unsupported model format version")                  \
    X(YOLO_ERR_IMAGE, "unreadable image")                                    \
    X(YOLO_ERR_NOMEM, "out of memory")                                       \
    X(YOLO_ERR_UNSUPPORTED, "unsupported")                                   \
    X(YOLO_ERR_CANCELLED, "cancelled by callback")                           \
    X(YOLO_ERR_INTERNAL, "internal error")

typedef enum {
#define YOLO_STATUS_ENUM(name, text) name,
    YOLO_STATUS_LIST(YOLO_STATUS_ENUM)
#undef YOLO_STATUS_ENUM
    YOLO_STATUS_COUNT
} yolo_status;

/* Short fixed text for a status ("malformed model file"). Never NULL. */
const char *yolo_status_str(yolo_status s);

/* Detailed message of the last failing call made by this thread, e.g.
 * "weights/x.bin: tensor 12 (model.3.conv.weight) ends at byte 912 but the
 * file has 800 bytes". Empty string if none. Valid until this thread's next
 * libyolo call. */
const char *yolo_last_error(void);

/* Library version string, e.g. "0.1.0". */
const char *yolo_version(void);

/* ------------------------------------------------------------------------ */
/* Model                                                                    */

typedef struct yolo_model yolo_model;

typedef struct {
    /* Verify the CRC-32 of the weight data at load (the graph and tables are
     * always verified). Costs one pass over the file; default 1. */
    int verify_data_checksum;
} yolo_load_params;

yolo_load_params yolo_load_default_params(void);

/* Maps the file read-only and validates every size, offset, count and tensor
 * shape against the graph. params may be NULL (defaults). */
yolo_status yolo_model_load(const char *path, const yolo_load_params *params,
                            yolo_model **out);
void yolo_model_free(yolo_model *model);

typedef enum { YOLO_ACT_NONE = 0, YOLO_ACT_LEAKY_RELU = 1, YOLO_ACT_SILU = 2 } yolo_activation;

typedef struct {
    const char *name;          /* e.g. "yolov7-tiny" */
    int num_classes;           /* 80 for COCO */
    int num_outputs;           /* per prediction row: 5 + num_classes */
    int num_levels;            /* detection levels: 3 (P5 models) or 4 (P6) */
    int num_anchors;           /* anchors per level */
    int strides[4];            /* per level, pixels */
    float anchors[4][4][2];    /* [level][anchor][w,h], pixels */
    int max_stride;            /* input sizes must be multiples of this */
    int default_img_size;      /* 640 or 1280 */
    yolo_activation activation;
    int fused;                 /* 1: BN/RepConv/implicit folded at export */
    int num_layers;            /* graph layers in the file */
    uint64_t num_params;       /* parameters (elements of all weight tensors) */
    uint64_t weight_bytes;     /* bytes of tensor data mapped */
    uint8_t source_sha256[32]; /* SHA-256 of the checkpoint exported */
    uint32_t file_crc32;       /* CRC-32 stored in the file's header */
} yolo_model_info;

yolo_status yolo_model_get_info(const yolo_model *model, yolo_model_info *out);

/* Class name of class id cls (0-based). *out stays valid while model lives. */
yolo_status yolo_model_class_name(const yolo_model *model, int cls, const char **out);

typedef struct {
    const char *type_name;     /* "Conv", "Conv2d", "BatchNorm2d", "MP", ... */
    int source_index;          /* index of the checkpoint's model.model[i] it came from */
    int num_inputs;
    int inputs[16];            /* producer layer indices; -1 is the network input */
} yolo_layer_desc;

yolo_status yolo_model_layer(const yolo_model *model, int index, yolo_layer_desc *out);

/* ------------------------------------------------------------------------ */
/* Images                                                                   */

/* 8-bit RGB, interleaved, rows packed (stride = 3*width). */
typedef struct {
    int width, height;
    uint8_t *rgb;
} yolo_image;

/* Decodes PNG or JPEG, chosen by the file's first bytes, to 8-bit RGB the way
 * OpenCV's imread(IMREAD_COLOR) does (gray replicated, alpha dropped, 16-bit
 * -> high byte, palette expanded, CMYK converted, EXIF orientation applied).
 * A truncated JPEG (its data ends before the pixels its header declares) is
 * refused (YOLO_ERR_IMAGE) rather than gray-filled.
 * Only regular files are read (a FIFO, a device or a directory is refused at
 * once: YOLO_ERR_IO), and no more than the file's size when it was opened.
 * The limits of yolo_image_load_params apply, with their defaults. Running out
 * of memory for the pixels, or in libjpeg (including its JPEGMEM limit),
 * gives YOLO_ERR_NOMEM. */
yolo_status yolo_image_load(const char *path, yolo_image *out);
yolo_status yolo_image_load_memory(const void *data, size_t size, yolo_image *out);

/* Limits on what an image file may make the library allocate; files are
 * hostile. A refusal names the file, its size and the limit. */
typedef struct {
    /* Largest width x height decoded, checked from the file's header before
     * any pixel memory is allocated (YOLO_ERR_IMAGE, "too large"). 0 = the
     * default, YOLO_IMAGE_DEFAULT_MAX_PIXELS: 64 Mi pixels (8192x8192), an
     * RGB image of 192 MiB; a progressive JPEG needs up to 8 bytes per pixel
     * more while decoding. At most YOLO_IMAGE_MAX_PIXELS_LIMIT. Either side
     * is at most 65535 whatever this says. */
    uint64_t max_pixels;
    /* Largest file yolo_image_load_ex reads, in bytes (YOLO_ERR_IMAGE). 0 = the
     * default, YOLO_IMAGE_DEFAULT_MAX_FILE_BYTES (1 GiB). */
    uint64_t max_file_bytes;
} yolo_image_load_params;

#define YOLO_IMAGE_DEFAULT_MAX_PIXELS ((uint64_t)1 << 26)
#define YOLO_IMAGE_MAX_PIXELS_LIMIT ((uint64_t)1 << 28)
#define YOLO_IMAGE_DEFAULT_MAX_FILE_BYTES ((uint64_t)1 << 30)

yolo_image_load_params yolo_image_load_default_params(void);
/* yolo_image_load / yolo_image_load_memory with these limits; params may be
 * NULL (the defaults). A max_pixels above YOLO_IMAGE_MAX_PIXELS_LIMIT is
 * YOLO_ERR_INVALID_ARG. */
yolo_status yolo_image_load_ex(const char *path, const yolo_image_load_params *params,
                               yolo_image *out);
yolo_status yolo_image_load_memory_ex(const void *data, size_t size,
                                      const yolo_image_load_params *params, yolo_image *out);
/* Wraps caller pixels (copied). */
yolo_status yolo_image_from_rgb(const uint8_t *rgb, int width, int height,
                                int row_stride, yolo_image *out);
/* Writes an 8-bit RGB PNG, or JPEG (quality 90) when path ends in .jpg/.jpeg. */
yolo_status yolo_image_save(const yolo_image *img, const char *path);
void yolo_image_free(yolo_image *img);

typedef struct {
    int img_size;     /* target long side; rounded up to a multiple of stride */
    int stride;       /* the model's max stride */
    int auto_pad;     /* 1: pad only to a stride multiple (detect.py); 0: to canvas */
    int scale_up;     /* 1: allow enlarging (detect.py default) */
    int canvas_w, canvas_h; /* with auto_pad 0: output size; 0 = img_size square */
} yolo_letterbox_params;

typedef struct {
    int out_w, out_h;         /* letterboxed image size */
    int new_w, new_h;         /* resized content size */
    int pad_left, pad_top;    /* content position */
    double ratio;             /* resize ratio r */
} yolo_letterbox_info;

yolo_letterbox_params yolo_letterbox_default_params(void);

/* Letterbox exactly as the official detect.py: resize with a bit-exact model
 * of OpenCV 4.6's uint8 INTER_LINEAR, pad with 114. dst is allocated. */
yolo_status yolo_letterbox(const yolo_image *src, const yolo_letterbox_params *params,
                           yolo_image *dst, yolo_letterbox_info *info);

/* RGB HWC uint8 -> planar CHW float32 in [0,1] (x / 255.0f, a true division,
 * as the official code on the CPU). dst holds 3*width*height floats. */
yolo_status yolo_image_to_tensor(const yolo_image *img, float *dst);

/* ------------------------------------------------------------------------ */
/* Context, forward pass and timing                                         */

typedef struct yolo_ctx yolo_ctx;

typedef struct {
    int layer_index;          /* 0 .. num_layers-1 */
    int source_index;         /* checkpoint model.model[i] */
    const char *type_name;    /* "Conv", "MP", ... */
    int batch, channels, height, width; /* output shape */
    uint64_t flops;           /* for this layer, whole batch; multiply-add = 2 */
    uint64_t elapsed_ns;      /* CLOCK_MONOTONIC, this layer only */
    uint64_t start_ns;        /* CLOCK_MONOTONIC timestamp at layer start */
} yolo_layer_event;

/* Called after each layer when set. Return 0 to go on, non-zero to stop the
 * run (yolo_forward returns YOLO_ERR_CANCELLED). */
typedef int (*yolo_layer_callback)(void *user, const yolo_layer_event *event);

typedef enum {
    YOLO_BACKEND_GEMM = 0,      /* im2col + OpenBLAS sgemm */
    YOLO_BACKEND_REFERENCE = 1, /* naive loops: slow, for testing */
    YOLO_BACKEND_FAST = 2       /* the default: packed weights, own AVX-512 / AVX2
                                 * kernels chosen for the CPU at run time, bias and
                                 * activation fused, the ctx's own thread pool */
} yolo_backend;

/* Instruction sets the FAST backend has kernels for. AUTO picks at
 * yolo_ctx_create: the environment variable YOLO_ISA when it is set (avx512,
 * avx2, generic, neon or auto; read once per process), otherwise the widest
 * ISA of this CPU. GENERIC is portable C compiled for the build's baseline
 * (x86-64-v2 with the default flags). NEON is reserved for ARM64: on x86 it is
 * an ISA the CPU lacks. */
typedef enum {
    YOLO_ISA_AUTO = 0,
    YOLO_ISA_GENERIC,
    YOLO_ISA_AVX2,   /* AVX2 + FMA */
    YOLO_ISA_AVX512, /* AVX-512 F, BW, VL + FMA */
    YOLO_ISA_NEON
} yolo_isa;

/* "auto", "generic", "avx2", "avx512", "neon" (the YOLO_ISA spellings); "?"
 * for a value outside the enum. Never NULL. */
const char *yolo_isa_name(yolo_isa isa);
/* The ISA of a name as yolo_isa_name spells it (any case). */
yolo_status yolo_isa_from_name(const char *name, yolo_isa *out);
/* *yes = 1 if a ctx may be forced to this ISA here: the CPU has it and
 * libyolo has kernels for it. AUTO always gives 1. */
yolo_status yolo_isa_supported(yolo_isa isa, int *yes);

typedef struct {
    /* Threads for this ctx's runs. FAST: the ctx's own pool, 0 = one per
     * online CPU. GEMM: OpenBLAS threads, 0 = leave OpenBLAS as is. */
    int threads;
    yolo_backend backend;        /* default YOLO_BACKEND_FAST */
    yolo_layer_callback on_layer; /* NULL: no timing cost */
    void *user;
    /* 1: give every layer its own memory so yolo_layer_output works for all
     * layers after a run (tests, debugging); 0 (default): outputs share the
     * arena by liveness and only the predictions stay readable. */
    int keep_layer_outputs;
    /* FAST: 1 runs every convolution directly, without Winograd: the 3x3
     * stride-1 layers' packed weights stay 1x their size instead of 4x
     * (yolov7: 148 MB packed instead of 400 MB), and a forward takes ~1.4x
     * as long (yolov7 and yolov7-tiny at 640x640). 0 (default): Winograd
     * F(4x4,3x3) where it pays. */
    int no_winograd;
    /* The ISA of the FAST backend's kernels (default AUTO, see yolo_isa).
     * An ISA this CPU lacks, or a YOLO_ISA value that names none, makes
     * yolo_ctx_create fail with YOLO_ERR_UNSUPPORTED. GEMM and REFERENCE
     * check it the same way but have no ISA-specific code of their own
     * (GEMM's sgemm is OpenBLAS's, which picks its kernels itself). */
    yolo_isa isa;
    /* Largest activation memory one plan may allocate, in bytes: the arena
     * of layer outputs plus the scratch (yolo_ctx_memory's arena_bytes +
     * scratch_bytes). yolo_ctx_plan / yolo_forward refuse a shape that needs
     * more with YOLO_ERR_NOMEM, before allocating, naming the size asked and
     * this limit: a small model file can otherwise ask for gigabytes. 0 = the
     * default, YOLO_CTX_DEFAULT_MAX_ARENA_BYTES (4 GiB; with the FAST
     * backend yolov7 needs 81 MiB at 1x3x640x640 and 2.35 GiB at batch 32;
     * REFERENCE keeps every layer's output: 470 MiB at batch 1). */
    uint64_t max_arena_bytes;
} yolo_ctx_params;

#define YOLO_CTX_DEFAULT_MAX_ARENA_BYTES ((uint64_t)4 << 30)

yolo_ctx_params yolo_ctx_default_params(void);

/* params may be NULL. The model must outlive the ctx. */
yolo_status yolo_ctx_create(const yolo_model *model, const yolo_ctx_params *params,
                            yolo_ctx **out);
void yolo_ctx_free(yolo_ctx *ctx);

/* Threads this ctx's forward passes use: the FAST backend's own pool, the
 * OpenBLAS thread count for GEMM, 1 for REFERENCE. */
yolo_status yolo_ctx_threads(const yolo_ctx *ctx, int *threads);

/* The ISA this ctx's FAST kernels run (never AUTO). GEMM and REFERENCE
 * give YOLO_ISA_GENERIC: their own loops are portable C. */
yolo_status yolo_ctx_isa(const yolo_ctx *ctx, yolo_isa *out);

/* Plans activation memory for one input shape (done by yolo_forward when the
 * shape changes; call it ahead to keep allocation out of timed runs). A
 * shape needing more than the ctx's max_arena_bytes is refused
 * (YOLO_ERR_NOMEM) before anything is allocated. */
yolo_status yolo_ctx_plan(yolo_ctx *ctx, int batch, int height, int width);

typedef struct {
    uint64_t arena_bytes;      /* activation arena */
    uint64_t scratch_bytes;    /* im2col and other scratch */
    uint64_t weight_bytes;     /* model weights mapped */
    uint64_t packed_weight_bytes; /* the weights laid out for this ctx's kernels
                                   * (FAST backend; Winograd layers hold 4x their
                                   * weights). Held by the model and shared by all
                                   * its contexts: counted once per model, not per
                                   * ctx */
    uint64_t flops;            /* whole forward for the planned shape */
} yolo_ctx_memory;

yolo_status yolo_ctx_memory_info(const yolo_ctx *ctx, yolo_ctx_memory *out);

/* Runs the network on an NCHW float32 batch [batch, 3, height, width];
 * height and width must be multiples of the model's max stride. */
yolo_status yolo_forward(yolo_ctx *ctx, const float *input, int batch, int height, int width);

/* Raw predictions of the last forward for batch item b: rows x cols floats,
 * row = (cx, cy, w, h, obj, class scores...) in input pixels, after sigmoid
 * and decode, rows level-major then anchor, y, x. */
yolo_status yolo_predictions(const yolo_ctx *ctx, int b, const float **pred,
                             int *rows, int *cols);

/* Output of layer i for batch item b of the last forward (NCHW slice). For
 * tests and debugging. */
yolo_status yolo_layer_output(const yolo_ctx *ctx, int layer, int b, const float **data,
                              int *channels, int *height, int *width);

/* ------------------------------------------------------------------------ */
/* Post-processing                                                          */

typedef struct {
    float x1, y1, x2, y2;   /* pixels, of the image the boxes refer to */
    float conf;             /* objectness x class score */
    int cls;
} yolo_detection;

typedef struct {
    float conf_thres;       /* 0.25 */
    float iou_thres;        /* 0.45 */
    int max_det;            /* 300 */
    int multi_label;        /* 0: best class per box (detect.py); 1: test.py */
    int agnostic;           /* 0: class-aware NMS */
    yolo_letterbox_params letterbox; /* used by yolo_detect */
} yolo_detect_params;

yolo_detect_params yolo_detect_default_params(void);

/* NMS over raw predictions (rows x cols as from yolo_predictions) exactly as
 * the official non_max_suppression. Writes at most cap detections (boxes in
 * input pixels) in NMS order, *n = count written. */
yolo_status yolo_nms(const float *pred, int rows, int cols, const yolo_detect_params *params,
                     yolo_detection *out, int cap, int *n);

/* Boxes from letterboxed input pixels back to the original image, clipped,
 * as the official scale_coords (not rounded). */
yolo_status yolo_scale_boxes(yolo_detection *dets, int n, int input_w, int input_h,
                             int orig_w, int orig_h);

/* Whole pipeline on one image: letterbox, forward, NMS, scale back. The
 * detections are held by ctx until its next call. */
yolo_status yolo_detect(yolo_ctx *ctx, const yolo_image *img, const yolo_detect_params *params,
                        const yolo_detection **dets, int *n);

#ifdef __cplusplus
}
#endif
#endif /* LIBYOLO_YOLO_H */
