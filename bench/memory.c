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
#include <unistd.h>

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

static void sample_rss(void *arg, uint64_t now)
{
    push_sample(arg, now, mem_rss_bytes());
}

int mem_sampler_start(mem_sampler *s, int interval_ms)
{
    memset(s, 0, sizeof *s);
    ticker_init(&s->tk, interval_ms, sample_rss, s);
    return ticker_start(&s->tk);
}

void mem_sampler_stop(mem_sampler *s) { ticker_stop(&s->tk); }

void mem_sampler_free(mem_sampler *s)
{
    ticker_destroy(&s->tk);
    free(s->samples);
    s->samples = NULL;
    s->n = s->cap = 0;
}

uint64_t mem_sampler_max(mem_sampler *s, uint64_t t0, uint64_t t1)
{
    uint64_t m = 0;
    ticker_lock(&s->tk);
    for (size_t i = 0; i < s->n; i++)
        if (s->samples[i].t_ns >= t0 && s->samples[i].t_ns <= t1 && s->samples[i].rss_bytes > m)
            m = s->samples[i].rss_bytes;
    ticker_unlock(&s->tk);
    return m;
}
