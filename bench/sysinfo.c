/*
 * Machine description, FMA peak microbenchmark, hardware counters, pinning.
 */
#include "sysinfo.h"

#include <dirent.h>
#include <errno.h>
#include <immintrin.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "ticker.h"
#include "yolo.h"

/* OpenBLAS entry points, if OpenBLAS is what got linked; weak so bench/run
 * still links against another BLAS. */
extern char *openblas_get_config(void) __attribute__((weak));
extern int openblas_get_num_threads(void) __attribute__((weak));

static double now_s(void) { return (double)bench_now_ns() * 1e-9; }

static void read_line(const char *path, char *buf, size_t size)
{
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fgets(buf, (int)size, f)) {
        size_t n = strlen(buf);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
            buf[--n] = 0;
    }
    fclose(f);
}

static void cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ')
                    c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, size, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

static void compile_flags(char *buf, size_t size)
{
    buf[0] = 0;
    size_t n = 0;
#define ADD(s) n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%s%s", n ? " " : "", s)
#ifdef BENCH_CFLAGS
    ADD(BENCH_CFLAGS); /* the build may pass the exact flags */
#else
#ifdef __OPTIMIZE__
    ADD("optimized(__OPTIMIZE__)");
#else
    ADD("unoptimized");
#endif
#ifdef __AVX512F__
    ADD("avx512f");
#endif
#ifdef __AVX2__
    ADD("avx2");
#endif
#ifdef __FMA__
    ADD("fma");
#endif
#ifdef __SSE4_2__
    ADD("sse4.2");
#endif
#if defined(__SANITIZE_ADDRESS__)
    ADD("asan");
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    ADD("asan");
#endif
#endif
#endif
#undef ADD
    if (n >= size && size)
        buf[size - 1] = 0;
}

void sysinfo_collect(sysinfo *s)
{
    memset(s, 0, sizeof *s);
    cpu_model(s->cpu_model, sizeof s->cpu_model);
    s->cpus_online = (int)sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    s->cpus_allowed = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
    read_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", s->governor,
              sizeof s->governor);
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(s->kernel, sizeof s->kernel, "%.60s %.60s %.80s %.30s", u.sysname, u.release,
                 u.version, u.machine);
        snprintf(s->hostname, sizeof s->hostname, "%.100s", u.nodename);
    }
    if (openblas_get_config)
        snprintf(s->blas_config, sizeof s->blas_config, "%s", openblas_get_config());
    s->blas_threads = openblas_get_num_threads ? openblas_get_num_threads() : -1;
#ifdef __clang__
    snprintf(s->compiler, sizeof s->compiler, "clang %s", __clang_version__);
#else
    snprintf(s->compiler, sizeof s->compiler, "gcc %s", __VERSION__);
#endif
    compile_flags(s->compile_flags, sizeof s->compile_flags);
}

/* ---- FMA peak ------------------------------------------------------------------ */

/* Twelve independent accumulators in named variables (so they stay in
 * registers at -O2) cover FMA latency x throughput (4 x 2) on current
 * cores; each loop iteration does NACC vector FMAs. */
#define NACC 12
#define FMA_BODY(FMA)                                                                   \
    x0 = FMA(x0, a, b); x1 = FMA(x1, a, b); x2 = FMA(x2, a, b); x3 = FMA(x3, a, b);   \
    x4 = FMA(x4, a, b); x5 = FMA(x5, a, b); x6 = FMA(x6, a, b); x7 = FMA(x7, a, b);   \
    x8 = FMA(x8, a, b); x9 = FMA(x9, a, b); x10 = FMA(x10, a, b); x11 = FMA(x11, a, b)
#define FMA_SUM(ADD) \
    ADD(ADD(ADD(ADD(x0, x1), ADD(x2, x3)), ADD(ADD(x4, x5), ADD(x6, x7))), ADD(ADD(x8, x9), ADD(x10, x11)))
#define FMA_DECL(T, SET)                                                              \
    T x0 = SET(0), x1 = SET(1), x2 = SET(2), x3 = SET(3), x4 = SET(4), x5 = SET(5),  \
      x6 = SET(6), x7 = SET(7), x8 = SET(8), x9 = SET(9), x10 = SET(10), x11 = SET(11)

__attribute__((target("avx512f"))) static float fma_loop_avx512(long iters)
{
    __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    FMA_DECL(__m512, _mm512_set1_ps);
    for (long k = 0; k < iters; k++) {
        FMA_BODY(_mm512_fmadd_ps);
    }
    return _mm512_reduce_add_ps(FMA_SUM(_mm512_add_ps));
}

__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long iters)
{
    __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    FMA_DECL(__m256, _mm256_set1_ps);
    for (long k = 0; k < iters; k++) {
        FMA_BODY(_mm256_fmadd_ps);
    }
    float out[8];
    _mm256_storeu_ps(out, FMA_SUM(_mm256_add_ps));
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

/* What generic code built for the x86-64 baseline can do at best: 4-lane
 * SSE multiplies and adds (no FMA below x86-64-v3), two FLOPs a lane. */
static __m128 sse_muladd(__m128 x, __m128 a, __m128 b) { return _mm_add_ps(_mm_mul_ps(x, a), b); }

static float fma_loop_sse(long iters)
{
    __m128 a = _mm_set1_ps(0.999999f), b = _mm_set1_ps(1e-7f);
    FMA_DECL(__m128, _mm_set1_ps);
    for (long k = 0; k < iters; k++) {
        FMA_BODY(sse_muladd);
    }
    float out[4];
    _mm_storeu_ps(out, FMA_SUM(_mm_add_ps));
    return out[0] + out[1] + out[2] + out[3];
}

typedef struct {
    int lanes; /* floats per vector */
    long iters;
    volatile float sink;
} fma_job;

static void *fma_thread(void *arg)
{
    fma_job *j = arg;
    float r;
    if (j->lanes == 16)
        r = fma_loop_avx512(j->iters);
    else if (j->lanes == 8)
        r = fma_loop_avx2(j->iters);
    else
        r = fma_loop_sse(j->iters);
    j->sink = r;
    return NULL;
}

static double run_fma(int nthreads, int lanes, long iters)
{
    pthread_t th[256];
    fma_job jobs[256];
    if (nthreads > 256)
        nthreads = 256;
    double t0 = now_s();
    int started = 0;
    for (int i = 0; i < nthreads; i++) {
        jobs[i].lanes = lanes;
        jobs[i].iters = iters;
        if (pthread_create(&th[i], NULL, fma_thread, &jobs[i]) == 0)
            started++;
        else
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    double flops = 2.0 * NACC * lanes * (double)iters * started;
    return dt > 0 ? flops / dt / 1e9 : 0;
}

double fma_peak_gflops(yolo_isa isa, int nthreads, double seconds, char *name, int name_size)
{
    /* The library ran its kernels on isa, so the CPU has it. */
    int lanes = 4;
    const char *loop = "sse mul+add";
    if (isa == YOLO_ISA_AVX512) {
        lanes = 16;
        loop = "avx512f";
    } else if (isa == YOLO_ISA_AVX2) {
        lanes = 8;
        loop = "avx2+fma";
    }
    if (name)
        snprintf(name, (size_t)name_size, "%s", loop);
    if (nthreads < 1)
        nthreads = 1;
    /* Calibrate on one thread, then size the run to about `seconds`. */
    long iters = 100000;
    double t0 = now_s();
    fma_job j = {lanes, iters, 0};
    fma_thread(&j);
    double dt = now_s() - t0;
    if (dt > 0)
        iters = (long)((double)iters * seconds / dt);
    if (iters < 1000)
        iters = 1000;
    /* best of two: the first may pay for frequency ramp-up */
    double a = run_fma(nthreads, lanes, iters / 2);
    double b = run_fma(nthreads, lanes, iters / 2);
    return a > b ? a : b;
}

/* ---- hardware counters ------------------------------------------------------------ */

static int perf_open_hw(uint64_t config)
{
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.type = PERF_TYPE_HARDWARE;
    a.config = config;
    a.disabled = 1;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    /* pid 0 = this thread only: BLAS worker threads already exist and are not
     * inherited; the report says so. */
    return (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
}

void hw_counters_open(hw_counters *h)
{
    memset(h, 0, sizeof *h);
    h->fd_cycles = perf_open_hw(PERF_COUNT_HW_CPU_CYCLES);
    if (h->fd_cycles < 0) {
        int e = errno;
        snprintf(h->reason, sizeof h->reason, "perf_event_open(cycles): %s%s", strerror(e),
                 e == ENOENT || e == EOPNOTSUPP
                     ? " (no hardware PMU exposed, e.g. a virtual machine)"
                     : e == EACCES || e == EPERM
                           ? " (needs perf_event_paranoid <= 2 for own-process counting, or "
                             "CAP_PERFMON)"
                           : "");
        h->fd_instr = -1;
        return;
    }
    h->fd_instr = perf_open_hw(PERF_COUNT_HW_INSTRUCTIONS);
    if (h->fd_instr < 0) {
        snprintf(h->reason, sizeof h->reason, "perf_event_open(instructions): %s",
                 strerror(errno));
        close(h->fd_cycles);
        h->fd_cycles = -1;
        return;
    }
    h->available = 1;
    snprintf(h->reason, sizeof h->reason, "main thread only (BLAS worker threads not counted)");
}

void hw_counters_start(hw_counters *h)
{
    if (!h->available)
        return;
    ioctl(h->fd_cycles, PERF_EVENT_IOC_RESET, 0);
    ioctl(h->fd_instr, PERF_EVENT_IOC_RESET, 0);
    ioctl(h->fd_cycles, PERF_EVENT_IOC_ENABLE, 0);
    ioctl(h->fd_instr, PERF_EVENT_IOC_ENABLE, 0);
}

void hw_counters_stop(hw_counters *h)
{
    if (!h->available)
        return;
    ioctl(h->fd_cycles, PERF_EVENT_IOC_DISABLE, 0);
    ioctl(h->fd_instr, PERF_EVENT_IOC_DISABLE, 0);
    uint64_t c = 0, i = 0;
    if (read(h->fd_cycles, &c, sizeof c) == (ssize_t)sizeof c)
        h->cycles += c;
    if (read(h->fd_instr, &i, sizeof i) == (ssize_t)sizeof i)
        h->instructions += i;
}

void hw_counters_close(hw_counters *h)
{
    if (h->fd_cycles >= 0)
        close(h->fd_cycles);
    if (h->fd_instr >= 0)
        close(h->fd_instr);
    h->fd_cycles = h->fd_instr = -1;
    h->available = 0;
}

/* ---- pinning -------------------------------------------------------------------- */

int pin_all_threads(const unsigned char *mask, int max)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c = 0; c < max && c < CPU_SETSIZE; c++)
        if (mask[c])
            CPU_SET(c, &set);
    /* sched_setaffinity(0) pins only the calling thread; BLAS workers created
     * before main() need pinning one by one. */
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        return -1;
    int pinned = 1;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return pinned;
    struct dirent *e;
    pid_t self = (pid_t)syscall(SYS_gettid);
    while ((e = readdir(d)) != NULL) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || tid == self)
            continue;
        if (sched_setaffinity(tid, sizeof set, &set) == 0)
            pinned++;
    }
    closedir(d);
    return pinned;
}
