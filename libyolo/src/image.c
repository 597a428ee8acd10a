/*
 * Image files: decoding PNG (libpng) and JPEG (libjpeg-turbo) to 8-bit RGB
 * exactly as OpenCV 4.6's imread(IMREAD_COLOR) does (then BGR -> RGB), and
 * writing PNG/JPEG.
 *
 * What imread does, and so what we do: the format comes from the first bytes;
 * gray is replicated; alpha is dropped without blending; 16-bit samples keep
 * their high byte; palettes (with tRNS) are expanded; 1/2/4-bit gray is
 * scaled to 0-255; CMYK/YCCK JPEGs use OpenCV's integer conversion; the EXIF
 * orientation (JPEG APP1, PNG eXIf) is applied. One deliberate difference: a
 * truncated JPEG, which OpenCV fills with gray, is refused.
 *
 * Files are hostile: libpng/libjpeg errors come back through our own handlers
 * (longjmp), never print and never exit; sizes are capped before allocation
 * (yolo_image_load_params), only regular files are read and never more than
 * their size, and a JPEG whose data ends early is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "internal.h"

/* Images larger than this are refused before allocating, whatever the
 * caller's limit (images made from pixels or saved included). */
#define IMAGE_MAX_SIDE 65535u
#define JPEG_SAVE_QUALITY 90

/* max_pixels is the caller's limit, named in the message by limit_name. */
static yolo_status check_size(const char *name, unsigned long w, unsigned long h,
                              uint64_t max_pixels, const char *limit_name)
{
    if (w == 0 || h == 0)
        return yolo_fail(YOLO_ERR_IMAGE, "%s: image has no pixels (%lux%lu)", name, w, h);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (uint64_t)w * h > max_pixels)
        return yolo_fail(YOLO_ERR_IMAGE,
                         "%s: image is %lux%lu (%llu pixels), too large: the limit is %u per "
                         "side and %llu pixels (%s)",
                         name, w, h, (unsigned long long)w * h, IMAGE_MAX_SIDE,
                         (unsigned long long)max_pixels, limit_name);
    return YOLO_OK;
}

/* Images made from pixels or written, not decoded from a file. */
static yolo_status check_size_absolute(const char *name, int w, int h)
{
    return check_size(name, (unsigned long)w, (unsigned long)h, YOLO_IMAGE_MAX_PIXELS_LIMIT,
                      "YOLO_IMAGE_MAX_PIXELS_LIMIT");
}

static yolo_status check_decoded_size(const char *name, unsigned long w, unsigned long h,
                                      uint64_t max_pixels)
{
    return check_size(name, w, h, max_pixels, "yolo_image_load_params.max_pixels");
}

static yolo_status image_alloc(yolo_image *img, int w, int h, const char *name)
{
    img->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!img->rgb)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: no memory for a %dx%d image", name, w, h);
    img->width = w;
    img->height = h;
    return YOLO_OK;
}

void yolo_image_free(yolo_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}

/* ------------------------------------------------------------------------ */
/* PNG decoding                                                             */

typedef struct {
    const uint8_t *data;
    size_t size, pos;
    const char *name;
    uint64_t max_pixels;
    char msg[256];
    png_structp png;
    png_infop info;
    png_bytep *rows;
    yolo_image img;
    int orientation;
} png_job;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_job *job = png_get_error_ptr(png);
    snprintf(job->msg, sizeof job->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (e.g. a CRC error in an ancillary chunk) are ignored, as OpenCV
 * decodes such files; the library never prints. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_read_memory(png_structp png, png_bytep dst, size_t n)
{
    png_job *job = png_get_io_ptr(png);
    if (n > job->size - job->pos)
        png_error(png, "file is truncated");
    memcpy(dst, job->data + job->pos, n);
    job->pos += n;
}

/* The transformations OpenCV asks libpng for when it wants 8-bit colour. */
static void png_request_rgb8(png_structp png, int color_type, int bit_depth)
{
    png_set_strip_alpha(png); /* also drops alpha expanded from tRNS */
    if (bit_depth == 16)
        png_set_strip_16(png); /* high byte, not a rounded scale */
    if (color_type == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (!(color_type & PNG_COLOR_MASK_COLOR)) {
        if (bit_depth < 8)
            png_set_expand_gray_1_2_4_to_8(png);
        png_set_gray_to_rgb(png);
    }
    png_set_interlace_handling(png);
}

static int png_exif_orientation(png_job *job)
{
#ifdef PNG_eXIf_SUPPORTED
    png_uint_32 n = 0;
    png_bytep exif = NULL;
    if (png_get_valid(job->png, job->info, PNG_INFO_eXIf) &&
        png_get_eXIf_1(job->png, job->info, &n, &exif) && exif)
        return exif_orientation(exif, n);
#else
    (void)job;
#endif
    return 1;
}

/* Everything libpng may longjmp out of happens in here. */
static yolo_status png_decode_guarded(png_job *job)
{
    if (setjmp(png_jmpbuf(job->png)))
        return yolo_fail(YOLO_ERR_IMAGE, "%s: bad PNG: %s", job->name, job->msg);
    png_set_read_fn(job->png, job, png_read_memory);
    png_read_info(job->png, job->info);

    png_uint_32 w = png_get_image_width(job->png, job->info);
    png_uint_32 h = png_get_image_height(job->png, job->info);
    yolo_status st = check_decoded_size(job->name, w, h, job->max_pixels);
    if (st != YOLO_OK)
        return st;
    job->orientation = png_exif_orientation(job);
    png_request_rgb8(job->png, png_get_color_type(job->png, job->info),
                     png_get_bit_depth(job->png, job->info));
    png_read_update_info(job->png, job->info);
    if (png_get_channels(job->png, job->info) != 3 || png_get_bit_depth(job->png, job->info) != 8 ||
        png_get_rowbytes(job->png, job->info) != (size_t)w * 3)
        return yolo_fail(YOLO_ERR_INTERNAL, "%s: PNG did not convert to 8-bit RGB", job->name);

    job->rows = malloc((size_t)h * sizeof *job->rows);
    if (!job->rows || image_alloc(&job->img, (int)w, (int)h, job->name) != YOLO_OK)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: no memory for a %ux%u image", job->name,
                         (unsigned)w, (unsigned)h);
    for (png_uint_32 y = 0; y < h; y++)
        job->rows[y] = job->img.rgb + (size_t)y * w * 3;
    png_read_image(job->png, job->rows);
    png_read_end(job->png, NULL); /* OpenCV reads to IEND too: a cut file fails */
    return YOLO_OK;
}

static yolo_status decode_png(const uint8_t *data, size_t size, const char *name,
                              uint64_t max_pixels, yolo_image *out)
{
    png_job job = {.data = data, .size = size, .name = name, .max_pixels = max_pixels,
                   .orientation = 1};
    job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, png_on_error, png_on_warning);
    if (job.png)
        job.info = png_create_info_struct(job.png);
    if (!job.png || !job.info) {
        png_destroy_read_struct(&job.png, NULL, NULL);
        return yolo_fail(YOLO_ERR_NOMEM, "%s: no memory for the PNG decoder", name);
    }
    yolo_status st = png_decode_guarded(&job);
    png_destroy_read_struct(&job.png, &job.info, NULL);
    free(job.rows);
    if (st == YOLO_OK)
        st = exif_apply_orientation(&job.img, job.orientation);
    if (st != YOLO_OK) {
        yolo_image_free(&job.img);
        return st;
    }
    *out = job.img;
    return YOLO_OK;
}

/* ------------------------------------------------------------------------ */
/* JPEG decoding                                                            */

typedef struct {
    struct jpeg_error_mgr pub; /* first: libjpeg sees only this part */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    int truncated;
    int no_memory;
} jpeg_errors;

typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_errors err;
    const char *name;
    uint64_t max_pixels;
    yolo_image img;
    uint8_t *cmyk_row;
    int orientation;
} jpeg_job;

/* libjpeg's allocation failing (JERR_OUT_OF_MEMORY), or needing more than
 * the limit it was given (JPEGMEM in the environment; libjpeg-turbo has no
 * temporary files to fall back on), is running out of memory. */
static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_errors *err = (jpeg_errors *)cinfo->err;
    err->no_memory =
        err->pub.msg_code == JERR_OUT_OF_MEMORY || err->pub.msg_code == JERR_NO_BACKING_STORE;
    err->pub.format_message(cinfo, err->msg);
    longjmp(err->jump, 1);
}

/* Warnings: the data ending before the image does, which libjpeg would pad
 * with gray, is turned into an error: "Premature end of JPEG file" (no more
 * bytes) and "premature end of data segment" (a marker, e.g. EOI, where the
 * entropy-coded data of the declared pixels should go on). The others (e.g.
 * extraneous bytes) are ignored, as OpenCV decodes those files the same way. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    jpeg_errors *err = (jpeg_errors *)cinfo->err;
    if (level < 0 && (err->pub.msg_code == JWRN_JPEG_EOF || err->pub.msg_code == JWRN_HIT_MARKER)) {
        err->truncated = 1;
        err->pub.format_message(cinfo, err->msg);
        longjmp(err->jump, 1);
    }
    if (level < 0)
        err->pub.num_warnings++;
}

static void jpeg_on_output(j_common_ptr cinfo)
{
    (void)cinfo; /* never print */
}

static int jpeg_first_app1_orientation(j_decompress_ptr cinfo)
{
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1)
            return exif_orientation_jpeg_app1(m->data, m->data_length);
    return 1;
}

/* OpenCV's CMYK -> RGB: Adobe-style inverted samples, integer arithmetic,
 * no colour profile. */
static void cmyk_row_to_rgb(const uint8_t *cmyk, uint8_t *rgb, int width)
{
    for (int x = 0; x < width; x++, cmyk += 4, rgb += 3) {
        int k = cmyk[3];
        for (int c = 0; c < 3; c++)
            rgb[c] = (uint8_t)(k - (((255 - cmyk[c]) * k) >> 8));
    }
}

static yolo_status jpeg_read_pixels(jpeg_job *job)
{
    struct jpeg_decompress_struct *ci = &job->cinfo;
    int w = (int)ci->output_width, h = (int)ci->output_height;
    int cmyk = ci->out_color_space == JCS_CMYK;
    if (ci->output_components != (cmyk ? 4 : 3))
        return yolo_fail(YOLO_ERR_IMAGE, "%s: JPEG with %d components is not supported", job->name,
                         ci->output_components);
    if (image_alloc(&job->img, w, h, job->name) != YOLO_OK)
        return YOLO_ERR_NOMEM;
    if (cmyk && !(job->cmyk_row = malloc((size_t)w * 4)))
        return yolo_fail(YOLO_ERR_NOMEM, "%s: no memory for a JPEG row", job->name);
    while (ci->output_scanline < ci->output_height) {
        uint8_t *dst = job->img.rgb + (size_t)ci->output_scanline * (size_t)w * 3;
        JSAMPROW row = cmyk ? job->cmyk_row : dst;
        if (jpeg_read_scanlines(ci, &row, 1) != 1)
            return yolo_fail(YOLO_ERR_IMAGE, "%s: JPEG decoder returned no row", job->name);
        if (cmyk)
            cmyk_row_to_rgb(job->cmyk_row, dst, w);
    }
    return YOLO_OK;
}

/* Everything libjpeg may longjmp out of happens in here. */
static yolo_status jpeg_decode_guarded(jpeg_job *job, const uint8_t *data, size_t size)
{
    struct jpeg_decompress_struct *ci = &job->cinfo;
    if (setjmp(job->err.jump)) {
        if (job->err.truncated)
            return yolo_fail(YOLO_ERR_IMAGE, "%s: JPEG file is truncated: its data ends before "
                             "the %ux%u pixels its header declares (%s); refused rather than "
                             "decoded with gray fill", job->name, (unsigned)ci->image_width,
                             (unsigned)ci->image_height, job->err.msg);
        if (job->err.no_memory)
            return yolo_fail(YOLO_ERR_NOMEM, "%s: the JPEG decoder ran out of memory for a "
                             "%ux%u image (%s)", job->name, (unsigned)ci->image_width,
                             (unsigned)ci->image_height, job->err.msg);
        return yolo_fail(YOLO_ERR_IMAGE, "%s: bad JPEG: %s", job->name, job->err.msg);
    }
    jpeg_mem_src(ci, data, (unsigned long)size);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(ci, TRUE);
    yolo_status st = check_decoded_size(job->name, ci->image_width, ci->image_height,
                                        job->max_pixels);
    if (st != YOLO_OK)
        return st;
    job->orientation = jpeg_first_app1_orientation(ci);
    /* Like OpenCV: any 4-component file (CMYK or YCCK) is read as CMYK. */
    ci->out_color_space = ci->num_components == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(ci);
    st = jpeg_read_pixels(job);
    if (st != YOLO_OK)
        return st;
    jpeg_finish_decompress(ci); /* reads up to EOI: a missing tail is caught here */
    return YOLO_OK;
}

static yolo_status decode_jpeg(const uint8_t *data, size_t size, const char *name,
                               uint64_t max_pixels, yolo_image *out)
{
    jpeg_job *job = calloc(1, sizeof *job);
    if (!job)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: no memory for the JPEG decoder", name);
    job->name = name;
    job->max_pixels = max_pixels;
    job->orientation = 1;
    job->cinfo.err = jpeg_std_error(&job->err.pub);
    job->err.pub.error_exit = jpeg_on_error;
    job->err.pub.emit_message = jpeg_on_message;
    job->err.pub.output_message = jpeg_on_output;
    yolo_status st = YOLO_ERR_NOMEM;
    if (!setjmp(job->err.jump)) { /* jpeg_create_decompress can fail on memory */
        jpeg_create_decompress(&job->cinfo);
        st = jpeg_decode_guarded(job, data, size);
    } else {
        st = yolo_fail(YOLO_ERR_NOMEM, "%s: JPEG decoder setup failed: %s", name, job->err.msg);
    }
    jpeg_destroy_decompress(&job->cinfo);
    free(job->cmyk_row);
    if (st == YOLO_OK)
        st = exif_apply_orientation(&job->img, job->orientation);
    if (st == YOLO_OK)
        *out = job->img;
    else
        yolo_image_free(&job->img);
    free(job);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

static yolo_status decode_any(const uint8_t *data, size_t size, const char *name,
                              uint64_t max_pixels, yolo_image *out)
{
    if (size == 0)
        return yolo_fail(YOLO_ERR_IMAGE, "%s: empty file", name);
    if (size >= 8 && memcmp(data, png_signature, 8) == 0)
        return decode_png(data, size, name, max_pixels, out);
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return decode_jpeg(data, size, name, max_pixels, out);
    return yolo_fail(YOLO_ERR_IMAGE, "%s: not a PNG or JPEG file (unknown first bytes)", name);
}

yolo_image_load_params yolo_image_load_default_params(void)
{
    yolo_image_load_params p;
    memset(&p, 0, sizeof p);
    p.max_pixels = YOLO_IMAGE_DEFAULT_MAX_PIXELS;
    p.max_file_bytes = YOLO_IMAGE_DEFAULT_MAX_FILE_BYTES;
    return p;
}

/* The caller's limits with 0 meaning the default; fn names the function in
 * the message of a limit out of range. */
static yolo_status load_limits(const yolo_image_load_params *params, const char *fn,
                               yolo_image_load_params *out)
{
    *out = yolo_image_load_default_params();
    if (!params)
        return YOLO_OK;
    if (params->max_pixels > YOLO_IMAGE_MAX_PIXELS_LIMIT)
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "%s: max_pixels is %llu, above YOLO_IMAGE_MAX_PIXELS_LIMIT (%llu)", fn,
                         (unsigned long long)params->max_pixels,
                         (unsigned long long)YOLO_IMAGE_MAX_PIXELS_LIMIT);
    if (params->max_pixels)
        out->max_pixels = params->max_pixels;
    if (params->max_file_bytes)
        out->max_file_bytes = params->max_file_bytes;
    return YOLO_OK;
}

yolo_status yolo_image_load_memory_ex(const void *data, size_t size,
                                      const yolo_image_load_params *params, yolo_image *out)
{
    yolo_clear_error();
    if (!out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_image_load_memory: out is NULL");
    memset(out, 0, sizeof *out);
    if (!data && size)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_image_load_memory: data is NULL");
    yolo_image_load_params lim;
    yolo_status st = load_limits(params, "yolo_image_load_memory", &lim);
    if (st != YOLO_OK)
        return st;
    return decode_any(data, size, "<memory>", lim.max_pixels, out);
}

yolo_status yolo_image_load_memory(const void *data, size_t size, yolo_image *out)
{
    return yolo_image_load_memory_ex(data, size, NULL, out);
}

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

static yolo_status not_regular(const char *path, mode_t mode)
{
    return yolo_fail(YOLO_ERR_IO, "%s: is %s; only regular files are read as images", path,
                     file_kind(mode));
}

/* Reads a whole regular file, no more than its size at open; sets the error
 * message on failure. Anything else is refused before it is read: a FIFO
 * would block (without a writer) or never end, a device such as /dev/zero
 * never ends. The path is checked before opening (opening a device can
 * have effects) and the open file again (it may have been replaced);
 * O_NONBLOCK keeps even that open from waiting for a FIFO's writer. */
static yolo_status read_file(const char *path, uint64_t max_bytes, uint8_t **data, size_t *size)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return yolo_fail(YOLO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return not_regular(path, st.st_mode);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return yolo_fail(YOLO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    yolo_status status = YOLO_OK;
    uint8_t *buf = NULL;
    size_t want = 0, got = 0;
    if (fstat(fd, &st) != 0)
        status = yolo_fail(YOLO_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        status = not_regular(path, st.st_mode);
    else if ((uint64_t)st.st_size > max_bytes || (uint64_t)st.st_size >= SIZE_MAX)
        status = yolo_fail(YOLO_ERR_IMAGE,
                           "%s: file is %lld bytes, too large: the limit is %llu bytes "
                           "(yolo_image_load_params.max_file_bytes)",
                           path, (long long)st.st_size, (unsigned long long)max_bytes);
    else if (!(buf = malloc((want = (size_t)st.st_size) + 1)))
        status = yolo_fail(YOLO_ERR_NOMEM, "%s: no memory to read its %zu bytes", path, want);
    while (status == YOLO_OK && got < want) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            status = yolo_fail(YOLO_ERR_IO, "%s: read error: %s", path, strerror(errno));
        else if (n == 0)
            break; /* shrank since fstat: the decoder sees a short file */
        else
            got += (size_t)n;
    }
    close(fd);
    if (status != YOLO_OK) {
        free(buf);
        return status;
    }
    *data = buf;
    *size = got;
    return YOLO_OK;
}

yolo_status yolo_image_load_ex(const char *path, const yolo_image_load_params *params,
                               yolo_image *out)
{
    yolo_clear_error();
    if (!path || !out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_image_load: path or out is NULL");
    memset(out, 0, sizeof *out);
    yolo_image_load_params lim;
    yolo_status st = load_limits(params, "yolo_image_load", &lim);
    if (st != YOLO_OK)
        return st;
    uint8_t *data = NULL;
    size_t size = 0;
    st = read_file(path, lim.max_file_bytes, &data, &size);
    if (st != YOLO_OK)
        return st;
    st = decode_any(data, size, path, lim.max_pixels, out);
    free(data);
    return st;
}

yolo_status yolo_image_load(const char *path, yolo_image *out)
{
    return yolo_image_load_ex(path, NULL, out);
}

yolo_status yolo_image_from_rgb(const uint8_t *rgb, int width, int height, int row_stride,
                                yolo_image *out)
{
    yolo_clear_error();
    if (!out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_image_from_rgb: out is NULL");
    memset(out, 0, sizeof *out);
    if (!rgb || width <= 0 || height <= 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_image_from_rgb: bad image %dx%d%s", width,
                         height, rgb ? "" : " (rgb is NULL)");
    yolo_status st = check_size_absolute("yolo_image_from_rgb", width, height);
    if (st != YOLO_OK)
        return YOLO_ERR_INVALID_ARG;
    if (row_stride == 0)
        row_stride = width * 3;
    if (row_stride < width * 3)
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "yolo_image_from_rgb: row_stride %d is less than 3 * width (%d)",
                         row_stride, width * 3);
    st = image_alloc(out, width, height, "yolo_image_from_rgb");
    if (st != YOLO_OK)
        return st;
    for (int y = 0; y < height; y++)
        memcpy(out->rgb + (size_t)y * (size_t)width * 3, rgb + (size_t)y * (size_t)row_stride,
               (size_t)width * 3);
    return YOLO_OK;
}

/* ------------------------------------------------------------------------ */
/* Saving                                                                   */

typedef struct {
    png_structp png;
    png_infop info;
    char msg[256];
} png_writer;

static void png_on_write_error(png_structp png, png_const_charp msg)
{
    png_writer *w = png_get_error_ptr(png);
    snprintf(w->msg, sizeof w->msg, "%s", msg);
    png_longjmp(png, 1);
}

static yolo_status png_write_guarded(png_writer *w, const yolo_image *img, FILE *f,
                                     const char *path)
{
    if (setjmp(png_jmpbuf(w->png)))
        return yolo_fail(YOLO_ERR_IO, "%s: cannot write PNG: %s", path, w->msg);
    png_init_io(w->png, f);
    png_set_IHDR(w->png, w->info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(w->png, w->info);
    for (int y = 0; y < img->height; y++)
        png_write_row(w->png, img->rgb + (size_t)y * (size_t)img->width * 3);
    png_write_end(w->png, NULL);
    return YOLO_OK;
}

static yolo_status save_png(const yolo_image *img, FILE *f, const char *path)
{
    png_writer w = {0};
    w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_on_write_error, png_on_warning);
    if (w.png)
        w.info = png_create_info_struct(w.png);
    if (!w.png || !w.info) {
        png_destroy_write_struct(&w.png, NULL);
        return yolo_fail(YOLO_ERR_NOMEM, "%s: no memory for the PNG encoder", path);
    }
    yolo_status st = png_write_guarded(&w, img, f, path);
    png_destroy_write_struct(&w.png, &w.info);
    return st;
}

typedef struct {
    struct jpeg_compress_struct cinfo;
    jpeg_errors err;
} jpeg_writer;

static yolo_status jpeg_write_guarded(jpeg_writer *w, const yolo_image *img, FILE *f,
                                      const char *path)
{
    if (setjmp(w->err.jump))
        return yolo_fail(YOLO_ERR_IO, "%s: cannot write JPEG: %s", path, w->err.msg);
    jpeg_create_compress(&w->cinfo);
    jpeg_stdio_dest(&w->cinfo, f);
    w->cinfo.image_width = (JDIMENSION)img->width;
    w->cinfo.image_height = (JDIMENSION)img->height;
    w->cinfo.input_components = 3;
    w->cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&w->cinfo);
    jpeg_set_quality(&w->cinfo, JPEG_SAVE_QUALITY, TRUE);
    jpeg_start_compress(&w->cinfo, TRUE);
    while (w->cinfo.next_scanline < w->cinfo.image_height) {
        JSAMPROW row = img->rgb + (size_t)w->cinfo.next_scanline * (size_t)img->width * 3;
        jpeg_write_scanlines(&w->cinfo, &row, 1);
    }
    jpeg_finish_compress(&w->cinfo);
    return YOLO_OK;
}

static yolo_status save_jpeg(const yolo_image *img, FILE *f, const char *path)
{
    jpeg_writer *w = calloc(1, sizeof *w);
    if (!w)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: no memory for the JPEG encoder", path);
    w->cinfo.err = jpeg_std_error(&w->err.pub);
    w->err.pub.error_exit = jpeg_on_error;
    w->err.pub.emit_message = jpeg_on_message;
    w->err.pub.output_message = jpeg_on_output;
    yolo_status st = jpeg_write_guarded(w, img, f, path);
    jpeg_destroy_compress(&w->cinfo);
    free(w);
    return st;
}

static int has_jpeg_extension(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

yolo_status yolo_image_save(const yolo_image *img, const char *path)
{
    yolo_clear_error();
    if (!img || !path || !img->rgb || img->width <= 0 || img->height <= 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_image_save: no image or no path");
    if (check_size_absolute(path, img->width, img->height) != YOLO_OK)
        return YOLO_ERR_INVALID_ARG;
    FILE *f = fopen(path, "wb");
    if (!f)
        return yolo_fail(YOLO_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    yolo_status st = has_jpeg_extension(path) ? save_jpeg(img, f, path) : save_png(img, f, path);
    if (fclose(f) != 0 && st == YOLO_OK)
        st = yolo_fail(YOLO_ERR_IO, "%s: write error: %s", path, strerror(errno));
    if (st != YOLO_OK)
        remove(path); /* no half-written file left behind */
    return st;
}
