/*
 * Private to model.c, graph.c, graph_fast.c and detect.c: the context struct and the shape
 * inference that both the loader (on a nominal input) and the planner (on
 * the real input) run over the graph.
 */
#ifndef LIBYOLO_GRAPH_H
#define LIBYOLO_GRAPH_H

#include "internal.h"

/* Largest element count of one layer output (whole batch). Kernels index
 * with int in places, so stay below INT_MAX. */
#define GRAPH_MAX_ELEMS ((size_t)0x7fffffff)

/* Output shapes of every layer for an input of shape `input`. Checks each
 * layer through its op's shape(), c_out, the Detect grid sizes against the
 * strides and the element bound. On failure the message starts with
 * `who` (the model path). out has model->n_layers entries. */
yolo_status graph_infer_shapes(const yolo_model *model, yolo_shape input, yolo_shape *out);

/* Where one layer's output lives in the arena for the planned shape. */
typedef struct {
    yolo_shape shape;
    uint64_t flops;
    size_t offset;      /* bytes from the arena start, 64-aligned */
    size_t bytes;
    int first, last;    /* live range in steps: input = 0, layer i = i + 1 */
    int intact;         /* 1: nothing later overwrites it during a run */
    /* Concat at zero cost (batch 1): a producer whose output lives in its
     * channel slice of a Concat's output has alias_of = that Concat and
     * alias_off = the slice's byte offset in it; root is the layer whose
     * memory holds it (itself when not aliased). A Concat with in_place
     * set copies only its inputs not in in_place (bit k = input k). */
    int alias_of, root;
    size_t alias_off;
    uint32_t in_place;
    int span_first, span_last; /* a root's memory: its members' whole range */
} layer_plan;

struct yolo_ctx {
    const yolo_model *model;
    yolo_ctx_params params;
    /* Keep every layer's output (no memory reuse) so yolo_layer_output works
     * for all layers: the REFERENCE backend, or params.keep_layer_outputs. */
    int keep_all;

    /* plan: valid when planned != 0 */
    int planned;
    int batch, height, width;
    /* Plan Concat inputs into their slice (see graph.c). On by default
     * (it applies only at batch 1, not to REFERENCE); tests and
     * tools/perf_layers.c turn it off to compare. */
    int concat_in_place;
    /* FAST: 1 = never use Winograd (for measurements and tests). */
    int winograd_off;
    int batch_planned;          /* batch of the plan being made */
    yolo_shape input_shape;     /* of the plan being made */
    layer_plan *plan;           /* n_layers entries, allocated at create */
    size_t arena_bytes, scratch_bytes;
    size_t packed_bytes; /* packed weights this ctx uses (shared with the model's other contexts) */
    uint64_t flops;
    float *arena;               /* 64-aligned, arena_cap bytes */
    size_t arena_cap;
    float *scratch;             /* 64-aligned, scratch_cap bytes */
    size_t scratch_cap;
    int has_output;             /* last forward completed */

    /* planning work space, allocated at create (n_layers entries each) */
    int *order;
    yolo_shape *shapes;
    struct plan_span *spans;

    /* FAST backend (NULL / 0 for the others): the pool, the kernel table of
     * the ctx's ISA, one scratch slice per pool thread, and where each
     * layer's packed weights are. The packed weights themselves belong to
     * the model (graph_fast.c: made by the first ctx that needs them, shared
     * by all its contexts, freed with the model); the ctx holds pointers:
     * packed_layer[i] the direct packing a run uses (NULL for layers without
     * one; set at create, or at plan for Winograd candidates run directly). */
    yolo_pool *pool;
    const yolo_kernels *kernels;
    const float **packed_layer;
    float *thread_scratch;
    /* Winograd (FAST): per layer, its transformed weights (from the first
     * plan that selects the layer, kept for later plans) and whether the
     * current plan runs it that way; per-thread scratch slices of
     * wino_per_thread floats; the transformed input shared by the threads
     * for layers with few tile blocks (wino_shared_floats). */
    const float **wino_packed;
    const float **wino_direct; /* direct packing of candidates a plan did not select */
    unsigned char *wino_on;
    float *wino_scratch, *wino_shared;
    size_t wino_scratch_cap, wino_per_thread, wino_shared_cap;

    /* yolo_detect's buffers, grown on demand */
    float *det_input;
    size_t det_input_cap;       /* floats */
    yolo_detection *dets;
    int dets_cap;
    int n_dets;
};

/* ---- shared by graph.c and graph_fast.c ----------------------------------- */

#define ARENA_ALIGN 64
#define MAX_THREADS 256 /* FAST backend pool size cap */

static inline size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

static inline int graph_is_conv(const model_layer *l)
{
    return l->type == LAYER_CONV || l->type == LAYER_CONV2D;
}

/* Grows a 64-aligned buffer; keeps the old one when it is big enough.
 * 0 when out of memory. */
int graph_ensure_buffer(float **buf, size_t *cap, size_t bytes);
/* The model's store of FAST packed weights (empty until a ctx needs them)
 * and its lock: made by the loader, freed by yolo_model_free. */
yolo_status graph_fast_model_init(yolo_model *m);
void graph_fast_model_free(yolo_model *m);
/* FAST: thread pool, the kernel table of isa (cpu_choose_isa's), per-thread
 * scratch, packed weights. */
yolo_status graph_fast_setup(yolo_ctx *c, yolo_isa isa);
/* FAST: picks the layers Winograd runs for this input shape, packs their
 * weights (once), sizes their scratch. */
yolo_status graph_fast_plan(yolo_ctx *ctx, yolo_shape input);

#endif /* LIBYOLO_GRAPH_H */
