/*
 * The smallest complete use of libyolo: load a model and an image, detect,
 * print one line per detection. Uses only the public header.
 *   cc detect.c $(pkg-config --cflags --libs libyolo) -o detect
 *   ./detect weights/yolov7-tiny.bin images/astronaut.png
 */
#include <stdio.h>
#include <yolo.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.bin IMAGE\n", argv[0]);
        return 2;
    }
    yolo_model *model = NULL;
    yolo_ctx *ctx = NULL;
    yolo_image img = {0};
    yolo_detect_params params = yolo_detect_default_params();
    const yolo_detection *dets;
    int n = 0;
    yolo_status st = yolo_model_load(argv[1], NULL, &model);
    if (st == YOLO_OK)
        st = yolo_ctx_create(model, NULL, &ctx);
    if (st == YOLO_OK)
        st = yolo_image_load(argv[2], &img);
    if (st == YOLO_OK)
        st = yolo_detect(ctx, &img, &params, &dets, &n);
    for (int i = 0; st == YOLO_OK && i < n; i++) {
        const char *name = "?";
        yolo_model_class_name(model, dets[i].cls, &name);
        const yolo_detection *d = &dets[i];
        printf("%-14s %.3f  %7.1f %7.1f %7.1f %7.1f\n", name, (double)d->conf, (double)d->x1,
               (double)d->y1, (double)d->x2, (double)d->y2);
    }
    if (st != YOLO_OK)
        fprintf(stderr, "detect: %s: %s\n", yolo_status_str(st), yolo_last_error());
    else
        printf("%d detections\n", n);
    yolo_image_free(&img);
    yolo_ctx_free(ctx);
    yolo_model_free(model);
    return st == YOLO_OK ? 0 : 1;
}
