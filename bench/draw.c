/*
 * Box and label drawing with a 5x7 bitmap font drawn for this project
 * (capitals, digits and the punctuation that class names and scores use).
 */
#include "draw.h"

#include <math.h>
#include <string.h>

typedef struct {
    char c;
    const char *rows[FONT_H];
} glyph_art;

/* '#' = ink. Kept as pictures so a glyph can be checked by eye. */
static const glyph_art FONT_ART[] = {
    {'A', {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'B', {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."}},
    {'C', {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."}},
    {'D', {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."}},
    {'E', {"#####", "#....", "#....", "####.", "#....", "#....", "#####"}},
    {'F', {"#####", "#....", "#....", "####.", "#....", "#....", "#...."}},
    {'G', {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"}},
    {'H', {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'I', {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'J', {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}},
    {'K', {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"}},
    {'L', {"#....", "#....", "#....", "#....", "#....", "#....", "#####"}},
    {'M', {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"}},
    {'N', {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"}},
    {'O', {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'P', {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."}},
    {'Q', {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"}},
    {'R', {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"}},
    {'S', {".####", "#....", "#....", ".###.", "....#", "....#", "####."}},
    {'T', {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}},
    {'U', {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'V', {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'W', {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."}},
    {'X', {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"}},
    {'Y', {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."}},
    {'Z', {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"}},
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"####.", "....#", "....#", ".###.", "....#", "....#", "####."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {' ', {".....", ".....", ".....", ".....", ".....", ".....", "....."}},
    {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
    {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
    {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
    {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
    {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
    {'%', {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"}},
    {'/', {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."}},
    {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
    {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
    {'\'', {"..#..", "..#..", ".#...", ".....", ".....", ".....", "....."}},
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}},
};
#define NGLYPHS (sizeof FONT_ART / sizeof FONT_ART[0])

static uint8_t font_bits[NGLYPHS][FONT_H];
static int font_ready;

/* Converts the pictures to bits once (cheap; idempotent, so a race between
 * threads would only redo the same work). */
static void font_init(void)
{
    if (font_ready)
        return;
    for (size_t g = 0; g < NGLYPHS; g++)
        for (int r = 0; r < FONT_H; r++) {
            uint8_t bits = 0;
            for (int c = 0; c < FONT_W; c++)
                if (FONT_ART[g].rows[r][c] == '#')
                    bits |= (uint8_t)(1u << (FONT_W - 1 - c));
            font_bits[g][r] = bits;
        }
    font_ready = 1;
}

const uint8_t *font_glyph(char c)
{
    font_init();
    if (c >= 'a' && c <= 'z')
        c = (char)(c - 'a' + 'A');
    size_t unknown = 0;
    for (size_t g = 0; g < NGLYPHS; g++) {
        if (FONT_ART[g].c == c)
            return font_bits[g];
        if (FONT_ART[g].c == '?')
            unknown = g;
    }
    return font_bits[unknown];
}

int draw_text_width(const char *text, int scale)
{
    int n = (int)strlen(text);
    return n > 0 ? (n * (FONT_W + 1) - 1) * scale : 0;
}

static void put(yolo_image *img, int x, int y, const uint8_t rgb[3])
{
    if (x < 0 || y < 0 || x >= img->width || y >= img->height)
        return;
    uint8_t *p = img->rgb + ((size_t)y * (size_t)img->width + (size_t)x) * 3;
    p[0] = rgb[0];
    p[1] = rgb[1];
    p[2] = rgb[2];
}

void draw_fill(yolo_image *img, int x1, int y1, int x2, int y2, const uint8_t rgb[3])
{
    if (x1 < 0)
        x1 = 0;
    if (y1 < 0)
        y1 = 0;
    if (x2 > img->width - 1)
        x2 = img->width - 1;
    if (y2 > img->height - 1)
        y2 = img->height - 1;
    for (int y = y1; y <= y2; y++)
        for (int x = x1; x <= x2; x++)
            put(img, x, y, rgb);
}

void draw_rect(yolo_image *img, int x1, int y1, int x2, int y2, int t, const uint8_t rgb[3])
{
    draw_fill(img, x1, y1, x2, y1 + t - 1, rgb);
    draw_fill(img, x1, y2 - t + 1, x2, y2, rgb);
    draw_fill(img, x1, y1, x1 + t - 1, y2, rgb);
    draw_fill(img, x2 - t + 1, y1, x2, y2, rgb);
}

void draw_text(yolo_image *img, int x, int y, const char *text, int scale, const uint8_t rgb[3])
{
    for (const char *p = text; *p; p++, x += (FONT_W + 1) * scale) {
        const uint8_t *g = font_glyph(*p);
        for (int r = 0; r < FONT_H; r++)
            for (int c = 0; c < FONT_W; c++)
                if (g[r] & (1u << (FONT_W - 1 - c)))
                    draw_fill(img, x + c * scale, y + r * scale, x + c * scale + scale - 1,
                              y + r * scale + scale - 1, rgb);
    }
}

void draw_class_color(int cls, uint8_t rgb[3])
{
    /* Spread hues with the golden ratio so neighbouring ids differ. */
    double h = fmod((double)(cls < 0 ? -cls : cls) * 0.618033988749895, 1.0) * 6.0;
    int i = (int)h;
    double f = h - i, v = 230, s = 0.85;
    double p = v * (1 - s), q = v * (1 - s * f), tt = v * (1 - s * (1 - f));
    double r, g, b;
    switch (i) {
    case 0: r = v; g = tt; b = p; break;
    case 1: r = q; g = v; b = p; break;
    case 2: r = p; g = v; b = tt; break;
    case 3: r = p; g = q; b = v; break;
    case 4: r = tt; g = p; b = v; break;
    default: r = v; g = p; b = q; break;
    }
    rgb[0] = (uint8_t)r;
    rgb[1] = (uint8_t)g;
    rgb[2] = (uint8_t)b;
}

void draw_detection(yolo_image *img, const yolo_detection *d, const char *label)
{
    int side = img->width < img->height ? img->width : img->height;
    int t = side / 320 + 1;
    int scale = side / 400 + 1;
    uint8_t col[3];
    draw_class_color(d->cls, col);
    int x1 = (int)lrintf(d->x1), y1 = (int)lrintf(d->y1);
    int x2 = (int)lrintf(d->x2), y2 = (int)lrintf(d->y2);
    draw_rect(img, x1, y1, x2, y2, t, col);
    int tw = draw_text_width(label, scale) + 2 * scale;
    int th = (FONT_H + 2) * scale;
    int ly = y1 - th >= 0 ? y1 - th : y1; /* above the box, else inside */
    draw_fill(img, x1, ly, x1 + tw, ly + th - 1, col);
    /* black text on light colours, white on dark (luma, Rec. 601) */
    int luma = (299 * col[0] + 587 * col[1] + 114 * col[2]) / 1000;
    const uint8_t black[3] = {0, 0, 0}, white[3] = {255, 255, 255};
    draw_text(img, x1 + scale, ly + scale, label, scale, luma > 140 ? black : white);
}
