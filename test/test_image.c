/*
 * Image decoding, letterbox and input tensor against OpenCV 4.6.
 *
 * The expected arrays were produced by tools/make_test_images.py with
 * cv2.imread (BGR->RGB) and, for the letterbox, cv2.resize(INTER_LINEAR) +
 * cv2.copyMakeBorder following the official letterbox; every comparison is
 * byte for byte. Hostile files (headers claiming huge sizes, JPEG data ending
 * early, a FIFO, /dev/zero, a decoder out of memory) are generated at run
 * time from the small test images, in a temporary folder. Run from the
 * repository root.
 */
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jpeglib.h>
#include <zlib.h>

#include "yolo.h"

#define IMAGES_DIR "test/data/images/"
#define LETTERBOX_DIR "test/data/letterbox/"

/* Compares an image with a uint8 [H, W, 3] .npy; prints the first difference. */
static void assert_image_equals_npy(const yolo_image *img, const char *npy_path, const char *what)
{
    tu_npy ref;
    if (tu_npy_load(npy_path, &ref) != 0)
        fail_msg("%s: cannot read %s", what, npy_path);
    if (strcmp(ref.dtype, "|u1") != 0 || ref.ndim != 3 || ref.shape[2] != 3)
        fail_msg("%s: %s is not uint8 [H,W,3]", what, npy_path);
    if ((size_t)img->height != ref.shape[0] || (size_t)img->width != ref.shape[1]) {
        tu_npy_free(&ref);
        fail_msg("%s: got %dx%d, OpenCV %zux%zu (WxH)", what, img->width, img->height,
                 ref.shape[1], ref.shape[0]);
    }
    const uint8_t *exp = ref.data;
    size_t n = ref.count, bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (img->rgb[i] != exp[i] && bad++ == 0)
            first = i;
    if (bad) {
        size_t px = first / 3;
        int got = img->rgb[first], want = exp[first];
        tu_npy_free(&ref);
        fail_msg("%s: %zu of %zu bytes differ; first at x=%zu y=%zu c=%zu: %d vs OpenCV %d", what,
                 bad, n, px % (size_t)img->width, px / (size_t)img->width, first % 3, got, want);
    }
    tu_npy_free(&ref);
}

static yolo_status status_from_name(const char *name)
{
#define STATUS_BY_NAME(s, text)                                                                    \
    if (strcmp(name, #s) == 0)                                                                     \
        return s;
    YOLO_STATUS_LIST(STATUS_BY_NAME)
#undef STATUS_BY_NAME
    fail_msg("unknown status name %s", name);
    return YOLO_ERR_INTERNAL;
}

/* ---- decoding ------------------------------------------------------------ */

static void check_decode(const char *file)
{
    char path[512], npy[512];
    snprintf(path, sizeof path, IMAGES_DIR "%s", file);
    snprintf(npy, sizeof npy, IMAGES_DIR "decoded/%s.npy", file);
    yolo_image img;
    yolo_status st = yolo_image_load(path, &img);
    if (st != YOLO_OK)
        fail_msg("%s: %s: %s", path, yolo_status_str(st), yolo_last_error());
    assert_image_equals_npy(&img, npy, path);
    yolo_image_free(&img);

    /* From memory: the same pixels. */
    size_t size = 0;
    void *data = tu_read_file(path, &size);
    assert_non_null(data);
    st = yolo_image_load_memory(data, size, &img);
    free(data);
    if (st != YOLO_OK)
        fail_msg("%s (memory): %s: %s", path, yolo_status_str(st), yolo_last_error());
    assert_image_equals_npy(&img, npy, path);
    yolo_image_free(&img);
}

static void check_refusal(const char *file, const char *status_name, const char *substring)
{
    char path[512];
    snprintf(path, sizeof path, IMAGES_DIR "%s", file);
    yolo_image img = {7, 7, (uint8_t *)&img}; /* garbage: must be cleared */
    yolo_status st = yolo_image_load(path, &img);
    if (st != status_from_name(status_name))
        fail_msg("%s: expected %s, got %s (%s)", path, status_name, yolo_status_str(st),
                 yolo_last_error());
    assert_null(img.rgb);
    const char *msg = yolo_last_error();
    if (!strstr(msg, substring) || !strstr(msg, path))
        fail_msg("%s: message \"%s\" lacks \"%s\" or the path", path, msg, substring);
}

static void test_decode_like_opencv(void **state)
{
    (void)state;
    FILE *f = fopen(IMAGES_DIR "manifest.txt", "r");
    assert_non_null(f);
    char line[512];
    int decoded = 0, refused = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char file[128], kind[16], status[64], sub[256] = "";
        int n = sscanf(line, "%127s %15s %63s %255[^\n]", file, kind, status, sub);
        if (n >= 2 && strcmp(kind, "decode") == 0) {
            check_decode(file);
            decoded++;
        } else if (n == 4 && strcmp(kind, "refuse") == 0) {
            check_refusal(file, status, sub);
            refused++;
        } else {
            fail_msg("bad manifest line: %s", line);
        }
    }
    fclose(f);
    /* The manifest cannot silently shrink. */
    assert_true(decoded >= 36);
    assert_true(refused >= 11);
}

static void test_missing_file(void **state)
{
    (void)state;
    yolo_image img;
    const char *path = IMAGES_DIR "does-not-exist.png";
    assert_int_equal(yolo_image_load(path, &img), YOLO_ERR_IO);
    assert_non_null(strstr(yolo_last_error(), path));
    assert_null(img.rgb);
    assert_int_equal(yolo_image_load(IMAGES_DIR, &img), YOLO_ERR_IO); /* a directory */
    assert_int_equal(yolo_image_load(NULL, &img), YOLO_ERR_INVALID_ARG);
}

static void test_memory_refusals(void **state)
{
    (void)state;
    yolo_image img;
    assert_int_equal(yolo_image_load_memory("", 0, &img), YOLO_ERR_IMAGE);
    assert_non_null(strstr(yolo_last_error(), "empty"));
    assert_int_equal(yolo_image_load_memory("\xFF\xD8\xFF", 3, &img), YOLO_ERR_IMAGE);
    assert_int_equal(yolo_image_load_memory("\x89PNG\r\n\x1a\n", 8, &img), YOLO_ERR_IMAGE);
    assert_int_equal(yolo_image_load_memory("GIF89a", 6, &img), YOLO_ERR_IMAGE);
    assert_int_equal(yolo_image_load_memory(NULL, 5, &img), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_image_load_memory("x", 1, NULL), YOLO_ERR_INVALID_ARG);
}

/* Every cut of a valid JPEG and PNG is refused or decoded, never crashes. */
static void test_every_truncation(void **state)
{
    (void)state;
    const char *files[] = {IMAGES_DIR "baseline.jpg", IMAGES_DIR "progressive.jpg",
                           IMAGES_DIR "interlaced.png"};
    for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
        size_t size = 0;
        uint8_t *data = tu_read_file(files[k], &size);
        assert_non_null(data);
        for (size_t cut = 0; cut < size; cut++) {
            yolo_image img;
            yolo_status st = yolo_image_load_memory(data, cut, &img);
            if (st != YOLO_ERR_IMAGE)
                fail_msg("%s cut at %zu/%zu: %s", files[k], cut, size, yolo_status_str(st));
        }
        free(data);
    }
}

/* ---- saving -------------------------------------------------------------- */

/* A fresh private directory for files the test writes. */
static void make_tmp_dir(char *buf, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, n, "%s/libyolo-test-image-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(buf))
        fail_msg("mkdtemp %s: %s", buf, strerror(errno));
}

static void test_save_roundtrip(void **state)
{
    (void)state;
    yolo_image src;
    assert_int_equal(yolo_image_load(IMAGES_DIR "rgb.png", &src), YOLO_OK);

    char dir[256], png[512], jpg[512];
    make_tmp_dir(dir, sizeof dir);
    snprintf(png, sizeof png, "%s/roundtrip.png", dir);
    snprintf(jpg, sizeof jpg, "%s/roundtrip.JPG", dir);
    if (yolo_image_save(&src, png) != YOLO_OK)
        fail_msg("%s", yolo_last_error());
    yolo_image back;
    assert_int_equal(yolo_image_load(png, &back), YOLO_OK);
    assert_int_equal(back.width, src.width);
    assert_int_equal(back.height, src.height);
    assert_memory_equal(back.rgb, src.rgb, (size_t)src.width * src.height * 3);
    yolo_image_free(&back);
    remove(png);

    /* JPEG (chosen by the extension, any case): lossy but close on a smooth
     * picture. */
    for (int y = 0; y < src.height; y++)
        for (int x = 0; x < src.width; x++)
            for (int c = 0; c < 3; c++)
                src.rgb[((size_t)y * src.width + x) * 3 + c] = (uint8_t)(x * 3 + y * 2 + c * 40);
    assert_int_equal(yolo_image_save(&src, jpg), YOLO_OK);
    size_t size = 0;
    uint8_t *bytes = tu_read_file(jpg, &size);
    assert_non_null(bytes);
    assert_true(size > 3 && bytes[0] == 0xFF && bytes[1] == 0xD8);
    free(bytes);
    assert_int_equal(yolo_image_load(jpg, &back), YOLO_OK);
    assert_int_equal(back.width, src.width);
    double err = 0;
    for (size_t i = 0; i < (size_t)src.width * src.height * 3; i++)
        err += abs((int)back.rgb[i] - (int)src.rgb[i]);
    err /= (double)src.width * src.height * 3;
    if (!(err < 2.0)) /* quality 90 */
        fail_msg("JPEG round trip: mean abs error %.2f", err);
    assert_true(err > 0.0); /* it really went through the lossy codec */
    yolo_image_free(&back);
    remove(jpg);
    rmdir(dir);

    assert_int_equal(yolo_image_save(&src, IMAGES_DIR "no-such-dir/x.png"), YOLO_ERR_IO);
    assert_non_null(strstr(yolo_last_error(), "no-such-dir/x.png"));
    yolo_image_free(&src);
    yolo_image_free(&src); /* idempotent */
}

static void test_from_rgb(void **state)
{
    (void)state;
    uint8_t px[2 * 10] = {0};
    for (int i = 0; i < 20; i++)
        px[i] = (uint8_t)i;
    yolo_image img;
    /* 2x2 pixels, rows 10 bytes apart (4 bytes of padding). */
    assert_int_equal(yolo_image_from_rgb(px, 2, 2, 10, &img), YOLO_OK);
    const uint8_t want[12] = {0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15};
    assert_memory_equal(img.rgb, want, 12);
    yolo_image_free(&img);
    assert_int_equal(yolo_image_from_rgb(px, 2, 2, 0, &img), YOLO_OK); /* 0 = packed */
    assert_memory_equal(img.rgb, px, 12);
    yolo_image_free(&img);
    assert_int_equal(yolo_image_from_rgb(px, 2, 2, 5, &img), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_image_from_rgb(px, 0, 2, 0, &img), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_image_from_rgb(NULL, 2, 2, 0, &img), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_image_from_rgb(px, 70000, 1, 0, &img), YOLO_ERR_INVALID_ARG);
}

/* ---- hostile files: limits, file types, truncation, memory -------------- */

/* Each refusal below comes from the file's type or header, before the file
 * is read or the pixels allocated; the loads run in a child process so that
 * one that blocks (a FIFO opened for reading waits for a writer) fails the
 * test after a while instead of hanging it. The time each took is printed. */
typedef struct {
    yolo_status status;
    int cleared; /* out was left empty */
    double ms;
    char msg[1024];
} load_result;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static load_result load_in_child(const char *path, const yolo_image_load_params *params)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        load_result r;
        memset(&r, 0, sizeof r);
        yolo_image img = {7, 7, (uint8_t *)&r};
        double t0 = now_ms();
        r.status = yolo_image_load_ex(path, params, &img);
        r.ms = now_ms() - t0;
        r.cleared = img.rgb == NULL && img.width == 0 && img.height == 0;
        snprintf(r.msg, sizeof r.msg, "%s", yolo_last_error());
        if (r.status == YOLO_OK)
            yolo_image_free(&img);
        _exit(write(fds[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fds[1]);
    int status = 0, waited = 0;
    for (int i = 0; i < 30000 && !waited; i++) { /* 30 s: only a load that blocks */
        waited = waitpid(pid, &status, WNOHANG) == pid;
        if (!waited)
            usleep(1000);
    }
    if (!waited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        close(fds[0]);
        fail_msg("%s: yolo_image_load_ex was still blocked after 30 s", path);
    }
    load_result r;
    ssize_t n = read(fds[0], &r, sizeof r);
    close(fds[0]);
    if (n != (ssize_t)sizeof r || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("%s: the loading child died (status 0x%x)", path, status);
    return r;
}

/* Refused with status and a message naming the file and saying `says`. */
static void expect_refused(const char *path, const yolo_image_load_params *params,
                           yolo_status want, const char *says)
{
    load_result r = load_in_child(path, params);
    if (r.status != want || !strstr(r.msg, path) || !strstr(r.msg, says) || !r.cleared)
        fail_msg("%s: got %s \"%s\" (out %s), want %s naming the file and saying \"%s\"", path,
                 yolo_status_str(r.status), r.msg, r.cleared ? "cleared" : "NOT cleared",
                 yolo_status_str(want), says);
    print_message("refused in %.1f ms: %s\n", r.ms, r.msg);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Sets the size a JPEG's SOFn segment declares; 0 if it has none. */
static int jpeg_declare_size(uint8_t *d, size_t n, unsigned w, unsigned h)
{
    for (size_t i = 2; i + 9 < n && d[i] == 0xFF;) {
        uint8_t m = d[i + 1];
        if (m >= 0xC0 && m <= 0xC2) {
            d[i + 5] = (uint8_t)(h >> 8), d[i + 6] = (uint8_t)h;
            d[i + 7] = (uint8_t)(w >> 8), d[i + 8] = (uint8_t)w;
            return 1;
        }
        i += 2 + (((size_t)d[i + 2] << 8) | d[i + 3]);
    }
    return 0;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Sets the size a PNG's IHDR declares, with its CRC. */
static void png_declare_size(uint8_t *d, unsigned w, unsigned h)
{
    assert_memory_equal(d + 12, "IHDR", 4);
    put_be32(d + 16, w);
    put_be32(d + 20, h);
    put_be32(d + 29, (uint32_t)crc32(0, d + 12, 17));
}

/* A copy of test image `file` declaring w x h, written as dir/name. */
static void write_resized_header(const char *file, unsigned w, unsigned h, const char *dir,
                                 const char *name, char *path, size_t cap)
{
    char src[512];
    snprintf(src, sizeof src, IMAGES_DIR "%s", file);
    size_t n = 0;
    uint8_t *d = tu_read_file(src, &n);
    assert_non_null(d);
    if (n > 8 && d[0] == 0x89)
        png_declare_size(d, w, h);
    else
        assert_true(jpeg_declare_size(d, n, w, h));
    snprintf(path, cap, "%s/%s", dir, name);
    write_bytes(path, d, n);
    free(d);
}

static void test_refuses_what_is_not_a_regular_file(void **state)
{
    (void)state;
    char dir[256], fifo[512];
    make_tmp_dir(dir, sizeof dir);
    snprintf(fifo, sizeof fifo, "%s/photo.jpg", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    expect_refused(fifo, NULL, YOLO_ERR_IO, "is a FIFO");
    expect_refused("/dev/zero", NULL, YOLO_ERR_IO, "is a character device");
    expect_refused(dir, NULL, YOLO_ERR_IO, "is a directory");
    remove(fifo);
    rmdir(dir);
}

/* Headers claiming huge sizes are refused before any allocation, by the
 * default limit or the caller's; within the limit, a JPEG whose data ends
 * long before its declared size is refused as truncated (it used to be
 * decoded as a gray picture). */
static void test_declared_size_limits(void **state)
{
    (void)state;
    char dir[256], jpg[512], prog[512], png[512], at_limit[512];
    make_tmp_dir(dir, sizeof dir);
    yolo_image_load_params p = yolo_image_load_default_params();
    assert_true(p.max_pixels == YOLO_IMAGE_DEFAULT_MAX_PIXELS && p.max_pixels == 8192 * 8192);
    assert_true(p.max_file_bytes == YOLO_IMAGE_DEFAULT_MAX_FILE_BYTES);

    write_resized_header("baseline.jpg", 16384, 16384, dir, "claims16k.jpg", jpg, sizeof jpg);
    expect_refused(jpg, NULL, YOLO_ERR_IMAGE, "too large");
    expect_refused(jpg, NULL, YOLO_ERR_IMAGE, "yolo_image_load_params.max_pixels");
    p.max_pixels = YOLO_IMAGE_MAX_PIXELS_LIMIT; /* allowed: its data ends after ~40x24 */
    expect_refused(jpg, &p, YOLO_ERR_IMAGE, "truncated");

    write_resized_header("baseline.jpg", 8192, 8192, dir, "claims8k.jpg", at_limit,
                         sizeof at_limit);
    expect_refused(at_limit, NULL, YOLO_ERR_IMAGE, "truncated"); /* exactly the default */
    p.max_pixels = 8192 * 8192 - 1;
    expect_refused(at_limit, &p, YOLO_ERR_IMAGE, "too large");
    write_resized_header("progressive.jpg", 4096, 4096, dir, "prog4k.jpg", prog, sizeof prog);
    expect_refused(prog, NULL, YOLO_ERR_IMAGE, "truncated");

    write_resized_header("rgb.png", 16384, 16384, dir, "claims16k.png", png, sizeof png);
    expect_refused(png, NULL, YOLO_ERR_IMAGE, "too large");
    p.max_pixels = YOLO_IMAGE_MAX_PIXELS_LIMIT; /* allowed: then its data is far too short */
    expect_refused(png, &p, YOLO_ERR_IMAGE, "bad PNG");

    p.max_pixels = YOLO_IMAGE_MAX_PIXELS_LIMIT + 1;
    yolo_image img;
    assert_int_equal(yolo_image_load_ex(IMAGES_DIR "rgb.png", &p, &img), YOLO_ERR_INVALID_ARG);
    assert_non_null(strstr(yolo_last_error(), "max_pixels"));
    remove(jpg), remove(at_limit), remove(prog), remove(png);
    rmdir(dir);
}

/* The limits are inclusive, 0 means the default, and the memory loader
 * applies max_pixels too. */
static void test_limits_at_the_boundary(void **state)
{
    (void)state;
    const char *path = IMAGES_DIR "rgb.png";
    size_t size = 0;
    uint8_t *data = tu_read_file(path, &size);
    assert_non_null(data);
    yolo_image img;
    assert_int_equal(yolo_image_load(path, &img), YOLO_OK);
    uint64_t pixels = (uint64_t)img.width * (uint64_t)img.height;
    yolo_image_free(&img);

    yolo_image_load_params p = {pixels, size};
    assert_int_equal(yolo_image_load_ex(path, &p, &img), YOLO_OK);
    yolo_image_free(&img);
    assert_int_equal(yolo_image_load_memory_ex(data, size, &p, &img), YOLO_OK);
    yolo_image_free(&img);
    yolo_image_load_params zero = {0, 0};
    assert_int_equal(yolo_image_load_ex(path, &zero, &img), YOLO_OK);
    yolo_image_free(&img);

    p.max_pixels = pixels - 1;
    assert_int_equal(yolo_image_load_ex(path, &p, &img), YOLO_ERR_IMAGE);
    assert_non_null(strstr(yolo_last_error(), "too large"));
    assert_null(img.rgb);
    assert_int_equal(yolo_image_load_memory_ex(data, size, &p, &img), YOLO_ERR_IMAGE);
    assert_non_null(strstr(yolo_last_error(), "too large"));
    p.max_pixels = pixels;
    p.max_file_bytes = size - 1;
    expect_refused(path, &p, YOLO_ERR_IMAGE, "yolo_image_load_params.max_file_bytes");
    free(data);
}

/* A progressive JPEG of w x h, made in memory. */
static uint8_t *make_progressive_jpeg(int w, int h, size_t *size)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &out, &n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    JSAMPROW row = calloc((size_t)w, 3);
    assert_non_null(row);
    while (c.next_scanline < c.image_height)
        jpeg_write_scanlines(&c, &row, 1);
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    *size = n;
    return out;
}

/* libjpeg running out of memory is YOLO_ERR_NOMEM, not a bad image: with
 * the memory limit libjpeg takes from JPEGMEM (1 kB here: a progressive
 * image needs its coefficients in memory), and, where the sanitizer allows
 * a process memory limit, with malloc itself failing. */
static void test_jpeg_decoder_out_of_memory(void **state)
{
    (void)state;
    size_t n = 0;
    uint8_t *jpg = make_progressive_jpeg(512, 512, &n);
    yolo_image img;
    assert_int_equal(yolo_image_load_memory(jpg, n, &img), YOLO_OK);
    yolo_image_free(&img);
    setenv("JPEGMEM", "1", 1);
    yolo_status st = yolo_image_load_memory(jpg, n, &img);
    unsetenv("JPEGMEM");
    if (st != YOLO_ERR_NOMEM || !strstr(yolo_last_error(), "ran out of memory"))
        fail_msg("with JPEGMEM=1: %s: %s", yolo_status_str(st), yolo_last_error());
    assert_null(img.rgb);

    if (UNDER_ASAN) { /* its allocator does not survive RLIMIT_AS */
        free(jpg);
        return;
    }
    /* Both claim 8000x8000 (within the default limit): the JPEG's
     * coefficients alone take 192 MB, and so do the PNG's pixels; the child
     * may map only 64 MB more than it has. */
    assert_true(jpeg_declare_size(jpg, n, 8000, 8000));
    size_t pn = 0;
    uint8_t *png = tu_read_file(IMAGES_DIR "rgb.png", &pn);
    assert_non_null(png);
    png_declare_size(png, 8000, 8000);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        long long vm = -1;
        char line[256];
        FILE *f = fopen("/proc/self/status", "r");
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "VmSize: %lld kB", &vm) == 1)
                break;
        if (f)
            fclose(f);
        struct rlimit rl = {(rlim_t)(vm * 1024 + (64ll << 20)), RLIM_INFINITY};
        if (vm < 0 || setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(2);
        st = yolo_image_load_memory(jpg, n, &img); /* libjpeg's malloc fails */
        if (st != YOLO_ERR_NOMEM || !strstr(yolo_last_error(), "Insufficient memory"))
            _exit(3);
        st = yolo_image_load_memory(png, pn, &img);
        _exit(st == YOLO_ERR_NOMEM && strstr(yolo_last_error(), "no memory") ? 0 : 4);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    free(png);
    free(jpg);
}

/* ---- letterbox ----------------------------------------------------------- */

/* The pseudo-random source of tools/make_test_images.py (hash_image). */
static yolo_image hash_image(int w, int h)
{
    yolo_image img = {w, h, malloc((size_t)w * h * 3)};
    assert_non_null(img.rgb);
    for (uint32_t y = 0; y < (uint32_t)h; y++)
        for (uint32_t x = 0; x < (uint32_t)w; x++)
            for (uint32_t c = 0; c < 3; c++) {
                uint32_t v = x * 2654435761u + y * 40503u + c * 2246822519u;
                v = (v ^ (v >> 15)) * 2246822519u;
                img.rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)((v >> 13) & 255);
            }
    return img;
}

static void test_letterbox_like_opencv(void **state)
{
    (void)state;
    FILE *f = fopen(LETTERBOX_DIR "cases.txt", "r");
    assert_non_null(f);
    char line[512];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        char name[128];
        int sw, sh, out_w, out_h, new_w, new_h, left, top;
        yolo_letterbox_params p;
        double ratio;
        if (sscanf(line, "%127s %d %d %d %d %d %d %d %d %d %d %d %d %d %d %lf", name, &sw, &sh,
                   &p.img_size, &p.stride, &p.auto_pad, &p.scale_up, &p.canvas_w, &p.canvas_h,
                   &out_w, &out_h, &new_w, &new_h, &left, &top, &ratio) != 16)
            fail_msg("bad cases.txt line: %s", line);
        yolo_image src = hash_image(sw, sh), dst;
        yolo_letterbox_info info;
        if (yolo_letterbox(&src, &p, &dst, &info) != YOLO_OK)
            fail_msg("%s: %s", name, yolo_last_error());
        if (info.out_w != out_w || info.out_h != out_h || info.new_w != new_w ||
            info.new_h != new_h || info.pad_left != left || info.pad_top != top ||
            info.ratio != ratio)
            fail_msg("%s: info out %dx%d new %dx%d pad %d,%d r %.17g; expected out %dx%d new %dx%d "
                     "pad %d,%d r %.17g", name, info.out_w, info.out_h, info.new_w, info.new_h,
                     info.pad_left, info.pad_top, info.ratio, out_w, out_h, new_w, new_h, left,
                     top, ratio);
        char npy[512];
        snprintf(npy, sizeof npy, LETTERBOX_DIR "%s.npy", name);
        assert_image_equals_npy(&dst, npy, name);
        yolo_image_free(&dst);
        yolo_image_free(&src);
        cases++;
    }
    fclose(f);
    assert_true(cases >= 18);
}

/* Worked examples of the facts (hand-derivable): geometry only. */
static void test_letterbox_geometry(void **state)
{
    (void)state;
    static const int cases[][6] = {
        /* w, h -> out_w, out_h, pad_left, pad_top (S 640, stride 32, auto) */
        {512, 512, 640, 640, 0, 0},  {451, 300, 640, 448, 0, 11}, {300, 451, 448, 640, 11, 0},
        {640, 480, 640, 480, 0, 0},  {640, 427, 640, 448, 0, 10}, {1920, 1080, 640, 384, 0, 12},
        {2000, 3, 640, 32, 0, 15},
    };
    yolo_letterbox_params p = yolo_letterbox_default_params();
    assert_int_equal(p.img_size, 640);
    assert_int_equal(p.stride, 32);
    assert_int_equal(p.auto_pad, 1);
    assert_int_equal(p.scale_up, 1);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        yolo_image src = {cases[i][0], cases[i][1], calloc((size_t)cases[i][0] * cases[i][1], 3)};
        yolo_image dst;
        yolo_letterbox_info info;
        assert_int_equal(yolo_letterbox(&src, NULL, &dst, &info), YOLO_OK);
        assert_int_equal(info.out_w, cases[i][2]);
        assert_int_equal(info.out_h, cases[i][3]);
        assert_int_equal(info.pad_left, cases[i][4]);
        assert_int_equal(info.pad_top, cases[i][5]);
        assert_int_equal(dst.width, info.out_w);
        assert_int_equal(dst.height, info.out_h);
        /* The padding is 114 and the black content stays black. */
        assert_int_equal(dst.rgb[0], info.pad_top || info.pad_left ? 114 : 0);
        yolo_image_free(&dst);
        yolo_image_free(&src);
    }
    /* 1280x1 scales to 640x0: a clear error, not a crash. 1280x5 gives 2 rows (2.5 -> 2). */
    yolo_image thin = {1280, 1, calloc(1280, 3)}, dst;
    yolo_letterbox_info info;
    assert_int_equal(yolo_letterbox(&thin, NULL, &dst, &info), YOLO_ERR_INVALID_ARG);
    assert_non_null(strstr(yolo_last_error(), "1280x1"));
    assert_null(dst.rgb);
    free(thin.rgb);
    yolo_image five = {1280, 5, calloc(1280 * 5, 3)};
    assert_int_equal(yolo_letterbox(&five, NULL, &dst, &info), YOLO_OK);
    assert_int_equal(info.new_h, 2);
    yolo_image_free(&dst);
    /* img_size is rounded up to the stride: 600 -> 608. */
    p.img_size = 600;
    p.auto_pad = 0;
    assert_int_equal(yolo_letterbox(&five, &p, &dst, &info), YOLO_OK);
    assert_int_equal(dst.width, 608);
    assert_int_equal(dst.height, 608);
    yolo_image_free(&dst);
    p = yolo_letterbox_default_params();
    p.stride = 0;
    assert_int_equal(yolo_letterbox(&five, &p, &dst, &info), YOLO_ERR_INVALID_ARG);
    p = yolo_letterbox_default_params();
    p.img_size = -5;
    assert_int_equal(yolo_letterbox(&five, &p, &dst, &info), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_letterbox(NULL, NULL, &dst, &info), YOLO_ERR_INVALID_ARG);
    free(five.rgb);
}

/* ---- letterbox: the fast resize against a straightforward model ---------- */

/* OpenCV 4.6 INTER_LINEAR on uint8 written the plain way, one output byte
 * at a time from the formulas of docs (no row cache, no SIMD, no special
 * case for identity or exact halving: with weights 2048/0 and 1024/1024 the
 * general formula gives those bytes too). */
typedef struct {
    int s0, s1, w0, w1;
} ref_tap;

static ref_tap ref_axis_tap(int src_len, int dst_len, int d, int clamp_fraction)
{
    double scale = 1.0 / ((double)dst_len / (double)src_len);
    volatile double pos = (d + 0.5) * scale; /* no fused multiply-add */
    float f = (float)(pos - 0.5);
    int s = (int)floorf(f);
    f -= (float)s;
    ref_tap t = {s, s + 1, 0, 0};
    if (clamp_fraction) { /* horizontal: outside taps snap to the edge pixel */
        if (s < 0)
            s = 0, f = 0.f;
        if (s >= src_len - 1)
            s = src_len - 1, f = 0.f;
        t.s0 = s;
        t.s1 = s + 1 < src_len ? s + 1 : s;
    } else { /* vertical: keep the fraction, clamp the rows */
        t.s0 = t.s0 < 0 ? 0 : t.s0 >= src_len ? src_len - 1 : t.s0;
        t.s1 = t.s1 < 0 ? 0 : t.s1 >= src_len ? src_len - 1 : t.s1;
    }
    t.w0 = (int)rintf((1.f - f) * 2048.f);
    t.w1 = (int)rintf(f * 2048.f);
    return t;
}

static int ref_horizontal(const yolo_image *src, int row, ref_tap tx, int c)
{
    const uint8_t *r = src->rgb + (size_t)row * src->width * 3;
    return r[tx.s0 * 3 + c] * tx.w0 + r[tx.s1 * 3 + c] * tx.w1;
}

static uint8_t ref_resized_byte(const yolo_image *src, int dw, int dh, int x, int y, int c)
{
    ref_tap tx = ref_axis_tap(src->width, dw, x, 1), ty = ref_axis_tap(src->height, dh, y, 0);
    int h0 = ref_horizontal(src, ty.s0, tx, c), h1 = ref_horizontal(src, ty.s1, tx, c);
    int v = (((ty.w0 * (h0 >> 4)) >> 16) + ((ty.w1 * (h1 >> 4)) >> 16) + 2) >> 2;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static uint32_t lcg_next(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static yolo_image random_image(int w, int h, uint32_t *seed)
{
    yolo_image img = {w, h, malloc((size_t)w * h * 3)};
    assert_non_null(img.rgb);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        img.rgb[i] = (uint8_t)lcg_next(seed);
    return img;
}

/* Letterboxes a w x h random image into a canvas and compares every byte
 * with the model (content) or 114 (border). Returns 1 when the letterbox
 * was possible (0: a side would round to 0 pixels, refused). */
static int check_letterbox_against_model(int w, int h, int canvas_w, int canvas_h, int scale_up,
                                         uint32_t *seed, yolo_letterbox_info *info)
{
    yolo_image src = random_image(w, h, seed), dst;
    yolo_letterbox_params p = yolo_letterbox_default_params();
    p.auto_pad = 0;
    p.scale_up = scale_up;
    p.canvas_w = canvas_w;
    p.canvas_h = canvas_h;
    yolo_status st = yolo_letterbox(&src, &p, &dst, info);
    if (st != YOLO_OK) {
        free(src.rgb);
        if (st != YOLO_ERR_INVALID_ARG)
            fail_msg("%dx%d into %dx%d: %s", w, h, canvas_w, canvas_h, yolo_last_error());
        return 0;
    }
    assert_int_equal(dst.width, canvas_w);
    assert_int_equal(dst.height, canvas_h);
    for (int y = 0; y < dst.height; y++)
        for (int x = 0; x < dst.width; x++)
            for (int c = 0; c < 3; c++) {
                int cx = x - info->pad_left, cy = y - info->pad_top;
                int inside = cx >= 0 && cy >= 0 && cx < info->new_w && cy < info->new_h;
                int want = inside ? ref_resized_byte(&src, info->new_w, info->new_h, cx, cy, c) : 114;
                int got = dst.rgb[((size_t)y * dst.width + x) * 3 + c];
                if (got != want)
                    fail_msg("%dx%d -> %dx%d (canvas %dx%d): x=%d y=%d c=%d: %d, model %d", w, h,
                             info->new_w, info->new_h, canvas_w, canvas_h, x, y, c, got, want);
            }
    yolo_image_free(&dst);
    free(src.rgb);
    return 1;
}

static void test_letterbox_fast_matches_model(void **state)
{
    (void)state;
    uint32_t seed = 20240607;
    int pairs = 0, up = 0, down = 0, one_px = 0, halving = 0, identity = 0;
    yolo_letterbox_info info;
    for (int i = 0; i < 400; i++) {
        int w, h, cw, ch, scale_up = 1;
        switch (i % 8) {
        case 0: /* exact halving of both axes (OpenCV's 2x2 average path) */
            cw = 1 + (int)(lcg_next(&seed) % 90), ch = 1 + (int)(lcg_next(&seed) % 90);
            w = 2 * cw, h = 2 * ch;
            break;
        case 1: /* one pixel wide or high, stretched or not */
            w = i % 16 == 1 ? 1 : 1 + (int)(lcg_next(&seed) % 40);
            h = i % 16 == 1 ? 1 + (int)(lcg_next(&seed) % 40) : 1;
            cw = 1 + (int)(lcg_next(&seed) % 70), ch = 1 + (int)(lcg_next(&seed) % 70);
            break;
        case 2: /* identity (r = 1) */
            w = cw = 1 + (int)(lcg_next(&seed) % 120), h = ch = 1 + (int)(lcg_next(&seed) % 120);
            scale_up = 0;
            break;
        case 3: /* tiny sources, where the SIMD prefix and the edges meet */
            w = 1 + (int)(lcg_next(&seed) % 5), h = 1 + (int)(lcg_next(&seed) % 5);
            cw = 1 + (int)(lcg_next(&seed) % 24), ch = 1 + (int)(lcg_next(&seed) % 24);
            break;
        case 4: /* strong downscaling */
            w = 200 + (int)(lcg_next(&seed) % 300), h = 150 + (int)(lcg_next(&seed) % 300);
            cw = 8 + (int)(lcg_next(&seed) % 60), ch = 8 + (int)(lcg_next(&seed) % 60);
            break;
        default: /* anything, up or down */
            w = 1 + (int)(lcg_next(&seed) % 160), h = 1 + (int)(lcg_next(&seed) % 160);
            cw = 1 + (int)(lcg_next(&seed) % 160), ch = 1 + (int)(lcg_next(&seed) % 160);
            scale_up = (int)(lcg_next(&seed) & 1);
            break;
        }
        if (!check_letterbox_against_model(w, h, cw, ch, scale_up, &seed, &info))
            continue;
        pairs++;
        up += info.new_w > w || info.new_h > h;
        down += info.new_w < w || info.new_h < h;
        one_px += w == 1 || h == 1 || info.new_w == 1 || info.new_h == 1;
        halving += 2 * info.new_w == w && 2 * info.new_h == h;
        identity += info.new_w == w && info.new_h == h;
    }
    /* The mix cannot silently shrink. */
    if (pairs < 300 || up < 50 || down < 100 || one_px < 40 || halving < 40 || identity < 40)
        fail_msg("size pairs %d: up %d down %d one-pixel %d halving %d identity %d", pairs, up,
                 down, one_px, halving, identity);
}

/* The detector's shapes (full letterbox with auto padding, wide sources). */
static void test_letterbox_large_matches_model(void **state)
{
    (void)state;
    static const int sizes[][2] = {{512, 512}, {451, 300}, {1280, 720}, {1000, 563}, {333, 1001}};
    uint32_t seed = 7;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int w = sizes[i][0], h = sizes[i][1];
        yolo_image src = random_image(w, h, &seed), dst;
        yolo_letterbox_info info;
        assert_int_equal(yolo_letterbox(&src, NULL, &dst, &info), YOLO_OK);
        for (int y = 0; y < info.new_h; y++)
            for (int x = 0; x < info.new_w; x++)
                for (int c = 0; c < 3; c++) {
                    size_t at = ((size_t)(y + info.pad_top) * dst.width + x + info.pad_left) * 3;
                    int want = ref_resized_byte(&src, info.new_w, info.new_h, x, y, c);
                    if (dst.rgb[at + c] != want)
                        fail_msg("%dx%d: x=%d y=%d c=%d: %d, model %d", w, h, x, y, c,
                                 dst.rgb[at + c], want);
                }
        yolo_image_free(&dst);
        free(src.rgb);
    }
}

/* ---- tensor -------------------------------------------------------------- */

static void test_to_tensor(void **state)
{
    (void)state;
    uint8_t px[256 * 3];
    for (int v = 0; v < 256; v++) {
        px[v * 3 + 0] = (uint8_t)v;
        px[v * 3 + 1] = (uint8_t)(255 - v);
        px[v * 3 + 2] = (uint8_t)(v * 7);
    }
    yolo_image img = {256, 1, px};
    float t[3 * 256];
    assert_int_equal(yolo_image_to_tensor(&img, t), YOLO_OK);
    int differs_from_reciprocal = 0;
    for (int v = 0; v < 256; v++) {
        /* True fp32 division, correctly rounded: the same as rounding the
         * (exact enough) double quotient. */
        float want = (float)((double)v / 255.0);
        assert_true(t[v] == want);
        assert_true(t[256 + v] == (float)((double)(255 - v) / 255.0));
        assert_true(t[512 + v] == (float)((double)(uint8_t)(v * 7) / 255.0));
        volatile float recip = 1.0f / 255.0f;
        differs_from_reciprocal += (float)v * recip != want;
    }
    /* The facts: x * (1/255) differs from x / 255 for 126 values. */
    assert_int_equal(differs_from_reciprocal, 126);
    assert_int_equal(yolo_image_to_tensor(NULL, t), YOLO_ERR_INVALID_ARG);
}

/* Random images of several sizes (whole SIMD blocks and odd tails) against
 * the plain per-element division, every float compared bit for bit. */
static void test_to_tensor_random(void **state)
{
    (void)state;
    static const int sizes[][2] = {{1, 1}, {5, 3}, {37, 23}, {512, 1}, {513, 2}, {640, 448}};
    uint32_t seed = 99;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        yolo_image img = random_image(sizes[k][0], sizes[k][1], &seed);
        size_t plane = (size_t)img.width * img.height;
        float *t = malloc(plane * 3 * sizeof *t);
        assert_non_null(t);
        assert_int_equal(yolo_image_to_tensor(&img, t), YOLO_OK);
        for (size_t i = 0; i < plane; i++)
            for (size_t c = 0; c < 3; c++) {
                float want = (float)img.rgb[i * 3 + c] / 255.0f;
                if (memcmp(&t[c * plane + i], &want, sizeof want) != 0)
                    fail_msg("%dx%d: pixel %zu channel %zu: %.9g, want %.9g", img.width,
                             img.height, i, c, t[c * plane + i], want);
            }
        free(t);
        free(img.rgb);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_like_opencv),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_memory_refusals),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_save_roundtrip),
        cmocka_unit_test(test_from_rgb),
        cmocka_unit_test(test_refuses_what_is_not_a_regular_file),
        cmocka_unit_test(test_declared_size_limits),
        cmocka_unit_test(test_limits_at_the_boundary),
        cmocka_unit_test(test_jpeg_decoder_out_of_memory),
        cmocka_unit_test(test_letterbox_like_opencv),
        cmocka_unit_test(test_letterbox_geometry),
        cmocka_unit_test(test_letterbox_fast_matches_model),
        cmocka_unit_test(test_letterbox_large_matches_model),
        cmocka_unit_test(test_to_tensor),
        cmocka_unit_test(test_to_tensor_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
