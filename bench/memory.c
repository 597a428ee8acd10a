/*
 * RSS sampling and peak (high-water mark) per phase. The sampler can miss a
 * short peak; VmHWM cannot, so both are reported.
 */
#include "memory.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t mem_rss_bytes(void)
{
    /* statm: size resident shared ... in pages; cheaper than status. */
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long long size, resident;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return 0;
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

int64_t mem_status_field(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    size_t fl = strlen(field);
    int64_t v = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            long long kb;
            if (sscanf(line + fl + 1, "%lld", &kb) == 1)
                v = (int64_t)kb * 1024;
            break;
        }
    }
    fclose(f);
    return v;
}

int mem_reset_peak(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, "5", 1);
    int e = errno;
    close(fd);
    if (n != 1) {
        errno = n < 0 ? e : EIO;
        return -1;
    }
    return 0;
}

static void push_sample(mem_sampler *s, uint64_t t, uint64_t rss)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        if (cap > 4000000)
            return; /* hours of samples: keep the first ones */
        mem_sample *p = realloc(s->samples, cap * sizeof *p);
        if (!p)
            return;
        s->samples = p;
        s->cap = cap;
    }
    s->samples[s->n].t_ns = t;
    s->samples[s->n].rss_bytes = rss;
    s->n++;
}

static void *sampler(void *arg)
{
    mem_sampler *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        uint64_t rss = mem_rss_bytes();
        push_sample(s, now_ns(), rss);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)s->interval_ms * 1000000L;
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int mem_sampler_start(mem_sampler *s, int interval_ms)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->interval_ms = interval_ms < 1 ? 1 : interval_ms;
    if (pthread_create(&s->thread, NULL, sampler, s) != 0)
        return -1;
    s->running = 1;
    return 0;
}

void mem_sampler_stop(mem_sampler *s)
{
    if (!s->running)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->running = 0;
}

void mem_sampler_free(mem_sampler *s)
{
    mem_sampler_stop(s);
    free(s->samples);
    s->samples = NULL;
    s->n = s->cap = 0;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

uint64_t mem_sampler_max(mem_sampler *s, uint64_t t0, uint64_t t1)
{
    uint64_t m = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++)
        if (s->samples[i].t_ns >= t0 && s->samples[i].t_ns <= t1 && s->samples[i].rss_bytes > m)
            m = s->samples[i].rss_bytes;
    pthread_mutex_unlock(&s->mu);
    return m;
}
