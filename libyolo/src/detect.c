/*
 * The whole detection pipeline on one image, as the official detect.py runs
 * it: letterbox -> float tensor -> forward (batch 1) -> NMS -> boxes scaled
 * back to the original image. Buffers live in the ctx and only grow, so
 * repeated calls on images of one size allocate nothing but the letterboxed
 * image.
 */
#include <stdlib.h>
#include <string.h>

#include "graph.h"

yolo_detect_params yolo_detect_default_params(void)
{
    yolo_detect_params p;
    memset(&p, 0, sizeof p);
    p.conf_thres = 0.25f;
    p.iou_thres = 0.45f;
    p.max_det = 300;
    p.multi_label = 0;
    p.agnostic = 0;
    p.letterbox = yolo_letterbox_default_params();
    /* 0 = take it from the model at yolo_detect time (a P6 model needs 64). */
    p.letterbox.stride = 0;
    p.letterbox.img_size = 0;
    return p;
}

static yolo_status grow_input(yolo_ctx *ctx, size_t floats)
{
    if (ctx->det_input_cap >= floats)
        return YOLO_OK;
    float *p = malloc(floats * sizeof *p);
    if (!p)
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_detect: out of memory for a %zu-float input",
                         floats);
    free(ctx->det_input);
    ctx->det_input = p;
    ctx->det_input_cap = floats;
    return YOLO_OK;
}

static yolo_status grow_dets(yolo_ctx *ctx, int cap)
{
    if (ctx->dets_cap >= cap)
        return YOLO_OK;
    yolo_detection *p = malloc((size_t)cap * sizeof *p);
    if (!p)
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_detect: out of memory for %d detections", cap);
    free(ctx->dets);
    ctx->dets = p;
    ctx->dets_cap = cap;
    return YOLO_OK;
}

/* Letterboxed image -> tensor -> forward -> NMS -> scale back. */
static yolo_status run_pipeline(yolo_ctx *ctx, const yolo_image *img, const yolo_detect_params *p,
                                const yolo_image *lb)
{
    size_t floats = 3 * (size_t)lb->width * (size_t)lb->height;
    yolo_status st = grow_input(ctx, floats);
    if (st == YOLO_OK)
        st = grow_dets(ctx, p->max_det > 0 ? p->max_det : 1);
    if (st == YOLO_OK)
        st = yolo_image_to_tensor(lb, ctx->det_input);
    if (st == YOLO_OK)
        st = yolo_forward(ctx, ctx->det_input, 1, lb->height, lb->width);
    const float *pred = NULL;
    int rows = 0, cols = 0, n = 0;
    if (st == YOLO_OK)
        st = yolo_predictions(ctx, 0, &pred, &rows, &cols);
    if (st == YOLO_OK)
        st = yolo_nms(pred, rows, cols, p, ctx->dets, p->max_det, &n);
    if (st == YOLO_OK)
        st = yolo_scale_boxes(ctx->dets, n, lb->width, lb->height, img->width, img->height);
    if (st == YOLO_OK)
        ctx->n_dets = n;
    return st;
}

yolo_status yolo_detect(yolo_ctx *ctx, const yolo_image *img, const yolo_detect_params *params,
                        const yolo_detection **dets, int *n)
{
    yolo_clear_error();
    if (dets)
        *dets = NULL;
    if (n)
        *n = 0;
    if (!ctx || !img || !dets || !n)
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "yolo_detect: ctx, img, dets and n must not be NULL");
    yolo_detect_params p = params ? *params : yolo_detect_default_params();
    const yolo_model_info *info = &ctx->model->info;
    if (p.letterbox.stride == 0)
        p.letterbox.stride = info->max_stride;
    if (p.letterbox.img_size == 0)
        p.letterbox.img_size = info->default_img_size;
    ctx->n_dets = 0;
    yolo_image lb;
    yolo_letterbox_info lbi;
    memset(&lb, 0, sizeof lb);
    yolo_status st = yolo_letterbox(img, &p.letterbox, &lb, &lbi);
    if (st != YOLO_OK)
        return st;
    st = run_pipeline(ctx, img, &p, &lb);
    yolo_image_free(&lb);
    if (st != YOLO_OK)
        return st;
    *dets = ctx->dets;
    *n = ctx->n_dets;
    return YOLO_OK;
}
