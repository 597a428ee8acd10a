/*
 * EXIF orientation: finding the Orientation tag (0x0112) in a TIFF-structured
 * EXIF block (from a JPEG APP1 segment or a PNG eXIf chunk) and applying it to
 * decoded pixels the way OpenCV's imread does (orientations 1-8).
 *
 * The block is hostile input: every offset is checked against its size, and
 * anything malformed means "no orientation" (1), as OpenCV ignores bad EXIF.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define EXIF_TAG_ORIENTATION 0x0112

static unsigned read_u16(const uint8_t *p, int big_endian)
{
    return big_endian ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t read_u32(const uint8_t *p, int big_endian)
{
    return big_endian ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                      : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Orientation value of IFD0 in a TIFF block ("II"/"MM" header first);
 * 1 when absent or malformed. Values outside 1..8 are returned as they are
 * (callers treat them like 1). */
int exif_orientation(const uint8_t *tiff, size_t size)
{
    if (!tiff || size < 8)
        return 1;
    int be;
    if (tiff[0] == 'M' && tiff[1] == 'M')
        be = 1;
    else if (tiff[0] == 'I' && tiff[1] == 'I')
        be = 0;
    else
        return 1;
    uint32_t ifd = read_u32(tiff + 4, be);
    if (ifd > size || size - ifd < 2)
        return 1;
    unsigned count = read_u16(tiff + ifd, be);
    for (unsigned i = 0; i < count; i++) {
        size_t entry = (size_t)ifd + 2 + (size_t)i * 12;
        if (entry + 12 > size)
            return 1;
        if (read_u16(tiff + entry, be) == EXIF_TAG_ORIENTATION)
            return (int)read_u16(tiff + entry + 8, be); /* SHORT value, left-justified */
    }
    return 1;
}

/* JPEG APP1 payload (after the length field). Like OpenCV, the first APP1
 * segment is taken and its 6-byte "Exif\0\0" header skipped unchecked. */
int exif_orientation_jpeg_app1(const uint8_t *app1, size_t size)
{
    if (!app1 || size <= 6)
        return 1;
    return exif_orientation(app1 + 6, size - 6);
}

/* Maps output pixel (x, y) of the oriented image to its source pixel. The
 * source is w x h; for orientations 5-8 the output is h x w. */
static void source_of(int orientation, int w, int h, int x, int y, int *sx, int *sy)
{
    switch (orientation) {
    case 2: *sx = w - 1 - x; *sy = y; break;                 /* mirror */
    case 3: *sx = w - 1 - x; *sy = h - 1 - y; break;         /* 180 */
    case 4: *sx = x; *sy = h - 1 - y; break;                 /* flip */
    case 5: *sx = y; *sy = x; break;                         /* transpose */
    case 6: *sx = y; *sy = h - 1 - x; break;                 /* 90 clockwise */
    case 7: *sx = w - 1 - y; *sy = h - 1 - x; break;         /* transverse */
    case 8: *sx = w - 1 - y; *sy = x; break;                 /* 90 counter-clockwise */
    default: *sx = x; *sy = y; break;
    }
}

/* Rewrites img in its display orientation. Orientation 1 and unknown values
 * leave it untouched (OpenCV does the same). */
yolo_status exif_apply_orientation(yolo_image *img, int orientation)
{
    if (orientation < 2 || orientation > 8)
        return YOLO_OK;
    int w = img->width, h = img->height;
    int ow = orientation >= 5 ? h : w, oh = orientation >= 5 ? w : h;
    uint8_t *out = malloc((size_t)w * (size_t)h * 3);
    if (!out)
        return yolo_fail(YOLO_ERR_NOMEM, "image: no memory to rotate a %dx%d image", w, h);
    for (int y = 0; y < oh; y++) {
        uint8_t *dst = out + (size_t)y * (size_t)ow * 3;
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            source_of(orientation, w, h, x, y, &sx, &sy);
            memcpy(dst + (size_t)x * 3, img->rgb + ((size_t)sy * (size_t)w + (size_t)sx) * 3, 3);
        }
    }
    free(img->rgb);
    img->rgb = out;
    img->width = ow;
    img->height = oh;
    return YOLO_OK;
}
