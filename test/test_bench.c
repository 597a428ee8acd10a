/*
 * Unit tests of the benchmark driver's parts (everything in bench/ but main.c):
 * statistics, the RAPL readers on fake powercap trees (made here at run time
 * in a temporary folder: wrap-around, missing, unreadable, permission
 * denied, intel-rapl-mmio skipped, psys not added), CSV/JSON writers and
 * atomic files (a full disk via /dev/full and RLIMIT_FSIZE), option and suite
 * file parsing, the folder walk, the trace nesting check, the font, SHA-256,
 * letterbox shapes and the COCO id map.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "draw.h"
#include "sha256.h"

/* ---- helpers --------------------------------------------------------------------------- */

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/test_bench.XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void write_text(const char *dir, const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void make_dir(const char *dir, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    assert_int_equal(mkdir(path, 0755), 0);
}

/* Waits until a sampler thread has taken `want` samples (*count, read
 * under its lock) and returns the count. It waits on the samples, not for a
 * fixed time, so a slow or busy machine only makes it wait longer; a thread
 * that never ticks fails the test after a minute instead of hanging it. */
static size_t wait_for_ticks(ticker *tk, const size_t *count, size_t want)
{
    uint64_t deadline = bench_now_ns() + 60000000000ull;
    for (;;) {
        ticker_lock(tk);
        size_t n = *count;
        ticker_unlock(tk);
        if (n >= want || bench_now_ns() > deadline)
            return n;
        usleep(1000);
    }
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                char sub[1024];
                snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
                rm_rf(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* ---- statistics -------------------------------------------------------------------------- */

static void test_percentile_nearest_rank(void **state)
{
    (void)state;
    /* 1..10 shuffled: nearest rank ceil(p/100*n) */
    double x[10] = {7, 3, 10, 1, 9, 2, 8, 5, 4, 6};
    stats_summary s;
    assert_int_equal(stats_compute(x, 10, &s), 0);
    assert_true(s.p50 == 5);
    assert_true(s.p90 == 9);
    assert_true(s.p99 == 10);
    assert_true(s.min == 1 && s.max == 10);
    assert_true(fabs(s.mean - 5.5) < 1e-12);
    double y[4] = {40, 10, 30, 20};
    assert_int_equal(stats_compute(y, 4, &s), 0);
    assert_true(s.p50 == 20); /* rank 2 */
    assert_true(s.p90 == 40); /* rank ceil(3.6) = 4 */
    double sorted[4] = {10, 20, 30, 40};
    assert_true(stats_percentile_sorted(sorted, 4, 25) == 10);
    assert_true(stats_percentile_sorted(sorted, 4, 26) == 20);
    assert_true(stats_percentile_sorted(sorted, 4, 0) == 10);
    assert_true(stats_percentile_sorted(sorted, 4, 100) == 40);
    /* x[0] untouched (the summary sorts a copy) */
    assert_true(x[0] == 7);
}

static void test_stats_std_and_edges(void **state)
{
    (void)state;
    double x[8] = {2, 4, 4, 4, 5, 5, 7, 9};
    stats_summary s;
    stats_compute(x, 8, &s);
    assert_true(fabs(s.mean - 5) < 1e-12);
    assert_true(fabs(s.std - sqrt(32.0 / 7.0)) < 1e-12); /* sample std, n-1 */
    double one = 3.5;
    stats_compute(&one, 1, &s);
    assert_true(s.p50 == 3.5 && s.p99 == 3.5 && isnan(s.std));
    stats_compute(NULL, 0, &s);
    assert_true(s.n == 0 && isnan(s.mean) && isnan(s.p50));
    sample_vec v = {0};
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sv_push(&v, i), 0);
    assert_int_equal(v.n, 1000);
    stats_compute(v.v, v.n, &s);
    assert_true(s.p99 == 989); /* rank 990 */
    sv_free(&v);
}

/* ---- energy -------------------------------------------------------------------------------- */

static void test_wrap_delta(void **state)
{
    (void)state;
    assert_int_equal(energy_wrap_delta(100, 300, 1000), 200);
    assert_int_equal(energy_wrap_delta(900, 100, 1000), 200);
    assert_int_equal(energy_wrap_delta(1000000, 500000, 2000000), 1500000);
}

static void make_zone(const char *root, const char *zone, const char *name, const char *uj,
                      const char *max)
{
    make_dir(root, zone);
    char rel[256];
    snprintf(rel, sizeof rel, "%s/name", zone);
    write_text(root, rel, name);
    snprintf(rel, sizeof rel, "%s/energy_uj", zone);
    write_text(root, rel, uj);
    snprintf(rel, sizeof rel, "%s/max_energy_range_uj", zone);
    write_text(root, rel, max);
}

static void test_powercap_fake_tree(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    make_dir(root, "intel-rapl"); /* the control type: not a zone */
    make_zone(root, "intel-rapl:0", "package-0\n", "1000000\n", "2000000\n");
    make_zone(root, "intel-rapl:0:0", "core\n", "100\n", "2000000\n");
    make_zone(root, "intel-rapl:0:1", "dram\n", "5000\n", "2000000\n");
    make_zone(root, "intel-rapl:1", "psys\n", "0\n", "2000000\n");
    make_zone(root, "intel-rapl-mmio:0", "package-0\n", "7\n", "2000000\n");
    energy_meter m;
    energy_open(&m, root, 100);
    assert_int_equal(m.source, ENERGY_POWERCAP);
    assert_int_equal(m.ndom, 4); /* mmio skipped */
    int kinds[6] = {0};
    for (int i = 0; i < m.ndom; i++) {
        assert_null(strstr(m.dom[i].path, "mmio"));
        kinds[m.dom[i].kind]++;
    }
    assert_int_equal(kinds[DOM_PACKAGE], 1);
    assert_int_equal(kinds[DOM_CORE], 1);
    assert_int_equal(kinds[DOM_DRAM], 1);
    assert_int_equal(kinds[DOM_PSYS], 1);
    energy_snapshot a, b;
    energy_snapshot_now(&m, &a);
    /* package wraps: 1.0 J -> 0.5 J with max 2.0 J = 1.5 J used */
    write_text(root, "intel-rapl:0/energy_uj", "500000\n");
    write_text(root, "intel-rapl:0:0/energy_uj", "300100\n");  /* core +0.3 J */
    write_text(root, "intel-rapl:0:1/energy_uj", "255000\n");  /* dram +0.25 J */
    write_text(root, "intel-rapl:1/energy_uj", "10000000\n");  /* psys +10 J */
    energy_snapshot_now(&m, &b);
    /* package + dram; core is inside package; psys never added to them */
    assert_true(fabs(energy_total_between(&m, &a, &b) - 1.75) < 1e-9);
    energy_close(&m);
    rm_rf(root);
    free(root);
}

/* A counter that wraps several times between two pass boundaries: every
 * read in between (the sampler's ticks; energy_snapshot_now reads the same
 * way) adds its step modulo the range, so no wrap is lost. */
static void test_powercap_many_wraps(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    make_zone(root, "intel-rapl:0", "package-0\n", "0\n", "1000000\n");
    energy_meter m;
    energy_open(&m, root, 100);
    assert_int_equal(m.source, ENERGY_POWERCAP);
    energy_snapshot a, b, mid;
    energy_snapshot_now(&m, &a);
    for (int k = 1; k <= 10; k++) { /* 0.3 J a step, 1 J range: wraps 3 times */
        char uj[32];
        snprintf(uj, sizeof uj, "%d\n", k * 300000 % 1000000);
        write_text(root, "intel-rapl:0/energy_uj", uj);
        energy_snapshot_now(&m, &mid);
    }
    energy_snapshot_now(&m, &b);
    assert_true(fabs(energy_total_between(&m, &a, &b) - 3.0) < 1e-9);
    energy_close(&m);
    rm_rf(root);
    free(root);
}

static void test_powercap_psys_alone_and_env(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    make_zone(root, "intel-rapl:1", "psys\n", "100\n", "1000\n");
    setenv("BENCH_POWERCAP_ROOT", root, 1);
    energy_meter m;
    energy_open(&m, NULL, 100); /* the env var names the root */
    unsetenv("BENCH_POWERCAP_ROOT");
    assert_int_equal(m.source, ENERGY_POWERCAP);
    energy_snapshot a, b;
    energy_snapshot_now(&m, &a);
    write_text(root, "intel-rapl:1/energy_uj", "50\n"); /* wraps: 950 uJ */
    energy_snapshot_now(&m, &b);
    assert_true(fabs(energy_total_between(&m, &a, &b) - 950e-6) < 1e-12);
    energy_close(&m);
    rm_rf(root);
    free(root);
}

/* psys may already hold DRAM: with a dram zone but no package zone the
 * total is psys alone, not psys + dram and not dram alone. */
static void test_powercap_psys_and_dram_without_package(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    make_zone(root, "intel-rapl:1", "psys\n", "0\n", "100000000\n");
    make_zone(root, "intel-rapl:0:1", "dram\n", "0\n", "100000000\n");
    energy_meter m;
    energy_open(&m, root, 100);
    assert_int_equal(m.source, ENERGY_POWERCAP);
    assert_int_equal(m.ndom, 2);
    energy_snapshot a, b;
    energy_snapshot_now(&m, &a);
    write_text(root, "intel-rapl:1/energy_uj", "3000000\n");   /* psys +3 J */
    write_text(root, "intel-rapl:0:1/energy_uj", "1000000\n"); /* dram +1 J */
    energy_snapshot_now(&m, &b);
    assert_true(fabs(energy_total_between(&m, &a, &b) - 3.0) < 1e-9);
    energy_close(&m);
    rm_rf(root);
    free(root);
}

static void test_powercap_missing_and_empty(void **state)
{
    (void)state;
    setenv("BENCH_PERF_POWER_PMU", "/nonexistent/power", 1);
    energy_meter m;
    energy_open(&m, "/nonexistent/powercap", 100);
    assert_int_equal(m.source, ENERGY_NONE);
    assert_non_null(strstr(m.reason, "no powercap"));
    assert_non_null(strstr(m.reason, "No such file"));
    assert_non_null(strstr(m.reason, "no perf power PMU"));
    energy_snapshot a;
    energy_snapshot_now(&m, &a); /* harmless when unavailable */
    energy_close(&m);
    char *root = make_tmpdir();
    make_zone(root, "intel-rapl-mmio:0", "package-0\n", "7\n", "100\n");
    energy_open(&m, root, 100);
    assert_int_equal(m.source, ENERGY_NONE);
    assert_non_null(strstr(m.reason, "no RAPL zone"));
    energy_close(&m);
    unsetenv("BENCH_PERF_POWER_PMU");
    rm_rf(root);
    free(root);
}

static void test_powercap_unreadable_counter(void **state)
{
    (void)state;
    /* energy_uj is a folder: open works even for root, read fails EISDIR */
    char *root = make_tmpdir();
    make_dir(root, "intel-rapl:0");
    write_text(root, "intel-rapl:0/name", "package-0\n");
    make_dir(root, "intel-rapl:0/energy_uj");
    energy_meter m;
    memset(&m, 0, sizeof m);
    assert_int_equal(energy_scan_powercap(&m, root), -1);
    assert_non_null(strstr(m.reason, "no readable RAPL zone"));
    assert_non_null(strstr(m.reason, "Is a directory"));
    uint64_t v;
    char p[1024];
    snprintf(p, sizeof p, "%s/intel-rapl:0/energy_uj", root);
    assert_int_equal(energy_read_u64(p, &v), -1);
    assert_int_equal(errno, EISDIR);
    rm_rf(root);
    free(root);
}

/* A real EACCES. Root reads mode-000 files, so the check runs in a child
 * that first drops to an unprivileged user. */
static void test_powercap_permission_denied(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    chmod(root, 0755);
    make_zone(root, "intel-rapl:0", "package-0\n", "1000\n", "100000\n");
    char p[1024];
    snprintf(p, sizeof p, "%s/intel-rapl:0/energy_uj", root);
    assert_int_equal(chmod(p, 0000), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(10);
        energy_meter m;
        memset(&m, 0, sizeof m);
        if (energy_scan_powercap(&m, root) != -1)
            _exit(11);
        if (!strstr(m.reason, "Permission denied"))
            _exit(12);
        if (!strstr(m.reason, "root-only"))
            _exit(13);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    rm_rf(root);
    free(root);
}

static void test_energy_sampler_thread(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    make_zone(root, "intel-rapl:0", "package-0\n", "1000\n", "100000000\n");
    energy_meter m;
    energy_open(&m, root, 10);
    assert_int_equal(energy_start(&m), 0);
    assert_true(wait_for_ticks(&m.tk, &m.nsamples, 2) >= 2);
    energy_stop(&m);
    energy_close(&m);
    rm_rf(root);
    free(root);
}

/* ---- writers ---------------------------------------------------------------------------------- */

static void test_json_escape(void **state)
{
    (void)state;
    char buf[64];
    size_t n = json_escape("a\"b\\c\n\x01\t", buf, sizeof buf);
    assert_string_equal(buf, "a\\\"b\\\\c\\n\\u0001\\t");
    assert_int_equal(n, strlen(buf));
    char small[4];
    n = json_escape("abcdef", small, sizeof small);
    assert_int_equal(n, 6); /* the size it needs, like snprintf */
    assert_string_equal(small, "abc");
}

static char *slurp(const char *path)
{
    return tu_read_file(path, NULL);
}

static void test_json_and_csv_writer(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *path = path_join(dir, "out.json");
    char err[256];
    bw_file f;
    assert_int_equal(bw_open(&f, path, err, sizeof err), 0);
    json_writer j;
    jw_init(&j, &f, 0);
    jw_obj(&j);
    jw_kstr(&j, "name", "a\"b");
    jw_knum(&j, "nan", NAN);
    jw_knum(&j, "half", 0.5);
    jw_kint(&j, "n", -3);
    jw_key(&j, "list");
    jw_arr(&j);
    jw_num(&j, 1);
    jw_null(&j);
    jw_bool(&j, 1);
    jw_arr_end(&j);
    jw_key(&j, "empty");
    jw_obj(&j);
    jw_obj_end(&j);
    jw_kstr(&j, "none", NULL);
    jw_obj_end(&j);
    assert_int_equal(bw_commit(&f, err, sizeof err), 0);
    char *text = slurp(path);
    assert_non_null(text);
    assert_string_equal(text, "{\"name\":\"a\\\"b\",\"nan\":null,\"half\":0.5,\"n\":-3,"
                              "\"list\":[1,null,true],\"empty\":{},\"none\":null}");
    free(text);
    free(path);

    path = path_join(dir, "out.csv");
    assert_int_equal(bw_open(&f, path, err, sizeof err), 0);
    csv_field(&f, "plain");
    bw_printf(&f, ",");
    csv_field(&f, "a,b");
    bw_printf(&f, ",");
    csv_field(&f, "say \"hi\"");
    bw_printf(&f, ",");
    csv_field(&f, "two\nlines");
    bw_printf(&f, "\n");
    assert_int_equal(bw_commit(&f, err, sizeof err), 0);
    text = slurp(path);
    assert_string_equal(text, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\n");
    free(text);
    free(path);
    assert_int_equal(count_entries(dir), 2); /* no temporary files left */
    rm_rf(dir);
    free(dir);
}

/* Writes much more than any buffer through a file whose descriptor now
 * points at /dev/full: the commit must fail, name the file, and leave
 * neither the final name nor the temporary file. */
static void test_atomic_write_dev_full(void **state)
{
    (void)state;
    int full = open("/dev/full", O_WRONLY);
    if (full < 0) {
        fprintf(stderr, "(/dev/full missing: using RLIMIT_FSIZE test only)\n");
        skip();
    }
    char *dir = make_tmpdir();
    char *path = path_join(dir, "big.csv");
    char err[512];
    bw_file f;
    assert_int_equal(bw_open(&f, path, err, sizeof err), 0);
    assert_true(dup2(full, fileno(f.f)) >= 0);
    close(full);
    for (int i = 0; i < 20000; i++)
        bw_printf(&f, "%d,some text to fill the disk\n", i);
    assert_int_equal(bw_commit(&f, err, sizeof err), -1);
    assert_non_null(strstr(err, "big.csv"));
    assert_non_null(strstr(err, "No space left"));
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(count_entries(dir), 0);
    rm_rf(dir);
    free(dir);
    free(path);
}

/* RLIMIT_FSIZE applies to root too. In a child (the limit would hurt the
 * other tests), with SIGXFSZ ignored so write() fails with EFBIG. */
static void test_atomic_write_file_size_limit(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *path = path_join(dir, "limited.json");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(10);
        char err[512];
        bw_file f;
        if (bw_open(&f, path, err, sizeof err) != 0)
            _exit(11);
        for (int i = 0; i < 5000; i++)
            bw_printf(&f, "%d\n", i);
        if (bw_commit(&f, err, sizeof err) != -1)
            _exit(12);
        if (!strstr(err, "limited.json"))
            _exit(13);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(count_entries(dir), 0);
    rm_rf(dir);
    free(dir);
    free(path);
}

static void test_atomic_write_bad_dir(void **state)
{
    (void)state;
    char err[512];
    bw_file f;
    assert_int_equal(bw_open(&f, "/nonexistent/dir/x.json", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
}

static void test_npy_writer(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *path = path_join(dir, "p.npy");
    float data[6] = {1, 2, 3, 4.5f, -5, 6};
    char err[256];
    assert_int_equal(outputs_write_npy(path, data, 2, 3, err, sizeof err), 0);
    tu_npy a;
    assert_int_equal(tu_npy_load(path, &a), 0);
    assert_string_equal(a.dtype, "<f4");
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 2);
    assert_int_equal(a.shape[1], 3);
    assert_true(tu_max_abs_diff(a.data, data, 6) == 0);
    tu_npy_free(&a);
    size_t size;
    unsigned char *raw = tu_read_file(path, &size);
    assert_int_equal((10 + (raw[8] | raw[9] << 8)) % 64, 0); /* header aligned */
    free(raw);
    rm_rf(dir);
    free(dir);
    free(path);
}

/* ---- options ------------------------------------------------------------------------------------ */

static int parse(bench_options *o, char *err, size_t n, int argc, const char **argv)
{
    opts_init(o);
    return opts_parse(o, argc, (char **)(uintptr_t)argv, err, n);
}

static void test_options_cli_wins_over_config(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    write_text(dir, "suite.conf",
               "# a suite\nbatch = 4\nconf = 0.5   # inline comment\nimg_size = 320\n"
               "multi-label = true\nlayer-timing = no\n\n");
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/suite.conf", dir);
    const char *argv[] = {"run", "m.bin", "imgs", "--batch", "2", "--config", cfg, "--count=7"};
    bench_options o;
    char err[512] = "";
    assert_int_equal(parse(&o, err, sizeof err, 8, argv), 0);
    assert_int_equal(o.batch, 2);          /* command line wins */
    assert_true(fabs(o.conf - 0.5) < 1e-12); /* from the file */
    assert_int_equal(o.img_size, 320);
    assert_int_equal(o.multi_label, 1);
    assert_int_equal(o.layer_timing, 0);
    assert_int_equal(o.count, 7);
    assert_string_equal(o.model, "m.bin");
    assert_string_equal(o.images, "imgs");
    assert_int_equal(o.runs, 3); /* default kept */
    opts_free(&o);
    rm_rf(dir);
    free(dir);
}

static void expect_error(int argc, const char **argv, const char *needle)
{
    bench_options o;
    char err[512] = "";
    assert_int_equal(parse(&o, err, sizeof err, argc, argv), -1);
    if (!strstr(err, needle))
        fail_msg("message '%s' lacks '%s'", err, needle);
    opts_free(&o);
}

static void test_options_invalid_values(void **state)
{
    (void)state;
    const char *a1[] = {"run", "m", "d", "--batch", "0"};
    expect_error(5, a1, "out of range");
    const char *a2[] = {"run", "m", "d", "--conf", "abc"};
    expect_error(5, a2, "not a number");
    const char *a3[] = {"run", "m", "d", "--runs", "3x"};
    expect_error(5, a3, "not a whole number");
    const char *a4[] = {"run", "m", "d", "--pin", "3-1"};
    expect_error(5, a4, "CPU list");
    const char *a5[] = {"run", "m", "d", "--bogus"};
    expect_error(4, a5, "unknown option");
    const char *a6[] = {"run", "m"};
    expect_error(2, a6, "missing IMAGES_DIR");
    const char *a7[] = {"run", "m", "d", "--warmup"};
    expect_error(4, a7, "needs a value");
    const char *a8[] = {"run", "m", "d", "--config", "/nonexistent.conf"};
    expect_error(5, a8, "cannot read config file");
    const char *a9[] = {"run", "m", "d", "e"};
    expect_error(4, a9, "unexpected argument");
    const char *a10[] = {"run", "m", "d", "--iou", "1.5"};
    expect_error(5, a10, "iou");
}

static void test_options_config_errors(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    write_text(dir, "bad.conf", "batch = 2\nfrobnicate = 1\n");
    write_text(dir, "bad2.conf", "just words\n");
    write_text(dir, "bad3.conf", "\nruns = -1\n");
    char p[1024];
    snprintf(p, sizeof p, "%s/bad.conf", dir);
    const char *a1[] = {"run", "m", "d", "--config", p};
    expect_error(5, a1, "bad.conf:2: unknown key 'frobnicate'");
    snprintf(p, sizeof p, "%s/bad2.conf", dir);
    expect_error(5, a1, "bad2.conf:1: expected 'key = value'");
    snprintf(p, sizeof p, "%s/bad3.conf", dir);
    expect_error(5, a1, "bad3.conf:2: option runs");
    rm_rf(dir);
    free(dir);
}

static void test_options_flags_and_cpulist(void **state)
{
    (void)state;
    const char *argv[] = {"run", "--no-layer-timing", "m", "d", "--no-images", "--quiet",
                          "--square"};
    bench_options o;
    char err[256];
    assert_int_equal(parse(&o, err, sizeof err, 7, argv), 0);
    assert_int_equal(o.layer_timing, 0);
    assert_int_equal(o.no_images, 1);
    assert_int_equal(o.quiet, 1);
    assert_int_equal(o.square, 1);
    opts_free(&o);
    unsigned char mask[16];
    int n;
    assert_int_equal(opts_parse_cpulist("0,2-3", mask, 16, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_true(mask[0] && !mask[1] && mask[2] && mask[3] && !mask[4]);
    assert_int_equal(opts_parse_cpulist("", mask, 16, &n, err, sizeof err), -1);
    assert_int_equal(opts_parse_cpulist("99", mask, 16, &n, err, sizeof err), -1);
    /* --no-NAME exists for flags only */
    const char *nc[] = {"run", "m", "d", "--no-count"};
    assert_int_equal(parse(&o, err, sizeof err, 4, nc), -1);
    assert_non_null(strstr(err, "unknown option"));
    opts_free(&o);
    const char *fv[] = {"run", "m", "d", "--square=no", "--multi-label=yes"};
    assert_int_equal(parse(&o, err, sizeof err, 5, fv), 0);
    assert_int_equal(o.square, 0);
    assert_int_equal(o.multi_label, 1);
    opts_free(&o);
    const char *h[] = {"run", "--help"};
    assert_int_equal(parse(&o, err, sizeof err, 2, h), 0); /* no positionals needed */
    assert_int_equal(o.help, 1);
    opts_free(&o);
}

/* ---- dataset ------------------------------------------------------------------------------------- */

static void write_bytes(const char *dir, const char *rel, const void *b, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void test_dataset_walk(void **state)
{
    (void)state;
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const unsigned char jpg[4] = {0xFF, 0xD8, 0xFF, 0xE0};
    char *dir = make_tmpdir();
    make_dir(dir, "sub");
    write_bytes(dir, "b.png", png, 8);
    write_bytes(dir, "sub/a.jpg", jpg, 4);
    write_bytes(dir, "sub/fake.jpg", "hello", 5); /* named .jpg, is not one */
    write_bytes(dir, "c.JPEG.txt", jpg, 4);       /* is one, whatever its name */
    write_bytes(dir, ".hidden.png", png, 8);
    dataset ds;
    char err[512];
    assert_int_equal(dataset_scan(dir, &ds, err, sizeof err), 0);
    assert_int_equal(ds.n, 3);
    assert_string_equal(ds.items[0].rel, "b.png");
    assert_string_equal(ds.items[1].rel, "c.JPEG.txt");
    assert_string_equal(ds.items[2].rel, "sub/a.jpg");
    assert_int_equal(ds.items[0].kind, IMG_PNG);
    assert_int_equal(ds.items[2].kind, IMG_JPEG);
    assert_int_equal(ds.other_files, 1);
    size_t len;
    size_t *o = dataset_order(&ds, 7, &len);
    assert_int_equal(len, 7);
    size_t want[7] = {0, 1, 2, 0, 1, 2, 0};
    for (int i = 0; i < 7; i++)
        assert_int_equal(o[i], want[i]);
    free(o);
    o = dataset_order(&ds, 2, &len); /* subsample 2 of 3: 0, 1 (i*3/2) */
    assert_int_equal(len, 2);
    assert_int_equal(o[0], 0);
    assert_int_equal(o[1], 1);
    free(o);
    ds.items[0].skipped = 1;
    o = dataset_order(&ds, 0, &len);
    assert_int_equal(len, 2);
    assert_int_equal(o[0], 1);
    free(o);
    char stem[64];
    dataset_stem("x/y/000000000139.jpg", stem, sizeof stem);
    assert_string_equal(stem, "000000000139");
    dataset_free(&ds);
    rm_rf(dir);
    free(dir);
    assert_int_equal(dataset_scan("/nonexistent/images", &ds, err, sizeof err), -1);
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(dataset_scan("/dev/null", &ds, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a folder"));
}

/* ---- trace ---------------------------------------------------------------------------------------- */

static void test_trace_nesting(void **state)
{
    (void)state;
    trace_log t;
    trace_init(&t, 1000, 100);
    trace_complete(&t, "step", "forward", 1000, 100, -1);
    trace_complete(&t, "layer", "Conv", 1010, 10, 0);
    trace_complete(&t, "layer", "Conv", 1020, 30, 1); /* starts where the last ends */
    trace_complete(&t, "layer", "MP", 1050, 50, 2);   /* ends with its parent */
    trace_counter(&t, "rss_mb", 1030, 12.5);
    trace_sort(&t);
    assert_int_equal(trace_check_nesting(&t), -1);
    assert_string_equal(t.ev[0].name, "forward");
    trace_complete(&t, "layer", "bad", 1090, 20, 3); /* crosses the parent's end */
    trace_sort(&t);
    long bad = trace_check_nesting(&t);
    assert_true(bad >= 0);
    assert_string_equal(t.ev[bad].name, "bad");
    char *dir = make_tmpdir();
    char *path = path_join(dir, "trace.json");
    char err[256];
    bw_file f;
    assert_int_equal(bw_open(&f, path, err, sizeof err), 0);
    trace_write(&t, &f, "test");
    assert_int_equal(bw_commit(&f, err, sizeof err), 0);
    char *text = slurp(path);
    assert_non_null(strstr(text, "\"traceEvents\":["));
    assert_non_null(strstr(text, "\"ph\":\"X\",\"ts\":0.000,\"dur\":0.100"));
    assert_non_null(strstr(text, "\"ph\":\"C\""));
    assert_non_null(strstr(text, "\"thread_name\""));
    free(text);
    free(path);
    rm_rf(dir);
    free(dir);
    trace_free(&t);
    trace_init(&t, 0, 2); /* the cap: extra events are counted, not stored */
    for (int i = 0; i < 5; i++)
        trace_complete(&t, "step", "x", (uint64_t)i, 1, -1);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.dropped, 3);
    trace_free(&t);
}

/* ---- font, drawing -------------------------------------------------------------------------------- */

static void test_font_and_draw(void **state)
{
    (void)state;
    const uint8_t *a = font_glyph('A');
    assert_int_equal(a[0], 0x0E); /* .###. */
    assert_int_equal(a[3], 0x1F); /* ##### */
    assert_ptr_equal(font_glyph('a'), a);
    assert_ptr_equal(font_glyph('~'), font_glyph('?'));
    assert_int_equal(draw_text_width("AB", 1), 11);
    assert_int_equal(draw_text_width("AB", 2), 22);
    uint8_t px[20 * 10 * 3];
    memset(px, 0, sizeof px);
    yolo_image img = {20, 10, px};
    const uint8_t white[3] = {255, 255, 255};
    draw_text(&img, 0, 0, "I", 1, white);
    /* 'I' row 1 is ..#.. : pixel (2,1) inked, (0,1) not */
    assert_int_equal(px[(1 * 20 + 2) * 3], 255);
    assert_int_equal(px[(1 * 20 + 0) * 3], 0);
    memset(px, 0, sizeof px);
    draw_rect(&img, 2, 2, 30, 7, 1, white); /* clipped at the right edge */
    assert_int_equal(px[(2 * 20 + 5) * 3], 255);
    assert_int_equal(px[(4 * 20 + 2) * 3], 255);
    assert_int_equal(px[(4 * 20 + 5) * 3], 0); /* inside stays empty */
    uint8_t c0[3], c1[3];
    draw_class_color(0, c0);
    draw_class_color(1, c1);
    assert_true(memcmp(c0, c1, 3) != 0);
}

/* ---- SHA-256, letterbox shapes, COCO ids ----------------------------------------------------------------- */

static void test_sha256_known_answers(void **state)
{
    (void)state;
    /* FIPS 180-2 appendix B examples */
    sha256_ctx c;
    uint8_t d[32];
    char hex[65];
    sha256_init(&c);
    sha256_update(&c, "abc", 3);
    sha256_final(&c, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_init(&c);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_update(&c, m, strlen(m));
    sha256_final(&c, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    sha256_init(&c);
    sha256_final(&c, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_minimal_shape(void **state)
{
    (void)state;
    /* worked examples of detect.py's letterbox (S=640, stride 32) */
    int w, h;
    bench_minimal_shape(512, 512, 640, 32, &w, &h);
    assert_true(w == 640 && h == 640);
    bench_minimal_shape(451, 300, 640, 32, &w, &h);
    assert_true(w == 640 && h == 448);
    bench_minimal_shape(300, 451, 640, 32, &w, &h);
    assert_true(w == 448 && h == 640);
    bench_minimal_shape(640, 427, 640, 32, &w, &h);
    assert_true(w == 640 && h == 448);
    bench_minimal_shape(1920, 1080, 640, 32, &w, &h);
    assert_true(w == 640 && h == 384);
    bench_minimal_shape(451, 300, 1280, 64, &w, &h);
    assert_true(w == 1280 && h == 896);
}

static void test_coco_map(void **state)
{
    (void)state;
    assert_int_equal(bench_coco80_to_91(0), 1);
    assert_int_equal(bench_coco80_to_91(10), 11);
    assert_int_equal(bench_coco80_to_91(11), 13);
    assert_int_equal(bench_coco80_to_91(24), 27);
    assert_int_equal(bench_coco80_to_91(26), 31);
    assert_int_equal(bench_coco80_to_91(79), 90);
    assert_int_equal(bench_coco80_to_91(80), -1);
    /* strictly increasing, skipping exactly the 11 unused ids */
    int skipped = 0;
    for (int i = 1; i < 80; i++) {
        assert_true(bench_coco80_to_91(i) > bench_coco80_to_91(i - 1));
        skipped += bench_coco80_to_91(i) - bench_coco80_to_91(i - 1) - 1;
    }
    assert_int_equal(skipped, 10); /* 12,26,29,30,45,66,68,69,71,83 */
}

static void test_memory_probes(void **state)
{
    (void)state;
    assert_true(mem_rss_bytes() > 0);
    int64_t hwm = mem_status_field("VmHWM");
    assert_true(hwm > 0);
    assert_true(mem_status_field("NoSuchField") == -1);
    mem_sampler s;
    assert_int_equal(mem_sampler_start(&s, 5), 0);
    assert_true(wait_for_ticks(&s.tk, &s.n, 2) >= 2);
    mem_sampler_stop(&s);
    assert_true(mem_sampler_max(&s, 0, UINT64_MAX) > 0);
    mem_sampler_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentile_nearest_rank),
        cmocka_unit_test(test_stats_std_and_edges),
        cmocka_unit_test(test_wrap_delta),
        cmocka_unit_test(test_powercap_fake_tree),
        cmocka_unit_test(test_powercap_many_wraps),
        cmocka_unit_test(test_powercap_psys_alone_and_env),
        cmocka_unit_test(test_powercap_psys_and_dram_without_package),
        cmocka_unit_test(test_powercap_missing_and_empty),
        cmocka_unit_test(test_powercap_unreadable_counter),
        cmocka_unit_test(test_powercap_permission_denied),
        cmocka_unit_test(test_energy_sampler_thread),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_json_and_csv_writer),
        cmocka_unit_test(test_atomic_write_dev_full),
        cmocka_unit_test(test_atomic_write_file_size_limit),
        cmocka_unit_test(test_atomic_write_bad_dir),
        cmocka_unit_test(test_npy_writer),
        cmocka_unit_test(test_options_cli_wins_over_config),
        cmocka_unit_test(test_options_invalid_values),
        cmocka_unit_test(test_options_config_errors),
        cmocka_unit_test(test_options_flags_and_cpulist),
        cmocka_unit_test(test_dataset_walk),
        cmocka_unit_test(test_trace_nesting),
        cmocka_unit_test(test_font_and_draw),
        cmocka_unit_test(test_sha256_known_answers),
        cmocka_unit_test(test_minimal_shape),
        cmocka_unit_test(test_coco_map),
        cmocka_unit_test(test_memory_probes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
