/*
 * Drawing detections onto an RGB image: box outlines in a per-class colour
 * and a filled label ("person 0.87") in our own 5x7 bitmap font.
 */
#ifndef BENCH_DRAW_H
#define BENCH_DRAW_H

#include <stdint.h>

#include "yolo.h"

#define FONT_W 5
#define FONT_H 7

/* Row bits of a glyph (bit 4 = leftmost column) for character c; lowercase
 * letters use the capital glyphs; unknown characters give '?'. */
const uint8_t *font_glyph(char c);

/* Pixel width of text drawn at scale s (1 column of spacing per glyph). */
int draw_text_width(const char *text, int scale);
void draw_rect(yolo_image *img, int x1, int y1, int x2, int y2, int thickness,
               const uint8_t rgb[3]);
void draw_fill(yolo_image *img, int x1, int y1, int x2, int y2, const uint8_t rgb[3]);
void draw_text(yolo_image *img, int x, int y, const char *text, int scale,
               const uint8_t rgb[3]);
void draw_class_color(int cls, uint8_t rgb[3]);
/* One detection: box, and its label above the box (inside when no room). */
void draw_detection(yolo_image *img, const yolo_detection *d, const char *label);

#endif /* BENCH_DRAW_H */
