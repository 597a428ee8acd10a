/*
 * RAPL energy through powercap or the perf power PMU, with a sampler thread.
 * Energy is package-wide and counts every process on the machine: it is
 * attributed to phases of the run (warm-up, timed passes), never to layers.
 */
#include "energy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

uint64_t energy_wrap_delta(uint64_t e0, uint64_t e1, uint64_t max)
{
    if (e1 >= e0)
        return e1 - e0;
    return max >= e0 ? e1 + (max - e0) : e1; /* max unknown/bogus: count from 0 */
}

static int read_text(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return -1;
    }
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    return 0;
}

int energy_read_u64(const char *path, uint64_t *out)
{
    char buf[64];
    if (read_text(path, buf, sizeof buf) != 0)
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf || *end || errno) {
        errno = EINVAL;
        return -1;
    }
    *out = v;
    return 0;
}

static domain_kind kind_of(const char *name)
{
    if (strncmp(name, "package", 7) == 0)
        return DOM_PACKAGE;
    if (strcmp(name, "core") == 0 || strcmp(name, "cores") == 0)
        return DOM_CORE;
    if (strcmp(name, "uncore") == 0)
        return DOM_UNCORE;
    if (strcmp(name, "dram") == 0 || strcmp(name, "ram") == 0)
        return DOM_DRAM;
    if (strcmp(name, "psys") == 0)
        return DOM_PSYS;
    return DOM_OTHER;
}

const char *energy_kind_name(domain_kind k)
{
    static const char *n[] = {"package", "core", "uncore", "dram", "psys", "other"};
    return (unsigned)k < 6 ? n[k] : "other";
}

const char *energy_source_name(energy_source s)
{
    return s == ENERGY_POWERCAP ? "powercap" : s == ENERGY_PERF ? "perf-power-pmu" : "unavailable";
}

static int cmp_dom(const void *a, const void *b)
{
    return strcmp(((const energy_domain *)a)->path, ((const energy_domain *)b)->path);
}

int energy_scan_powercap(energy_meter *m, const char *root)
{
    DIR *d = opendir(root);
    if (!d) {
        snprintf(m->reason, sizeof m->reason, "no powercap: %.400s: %.60s", root, strerror(errno));
        return -1;
    }
    char first_err[400] = "";
    int zones = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && m->ndom < ENERGY_MAX_DOMAINS) {
        /* "intel-rapl:0", "intel-rapl:0:1"; not "intel-rapl" (the control
         * type) nor "intel-rapl-mmio:0" (same energy again: double count). */
        if (strncmp(e->d_name, "intel-rapl:", 11) != 0)
            continue;
        zones++;
        energy_domain *dm = &m->dom[m->ndom];
        memset(dm, 0, sizeof *dm);
        dm->fd = -1;
        dm->scale = 1e-6;
        char p[700];
        snprintf(p, sizeof p, "%s/%s/name", root, e->d_name);
        if (read_text(p, dm->name, sizeof dm->name) != 0) {
            if (!first_err[0])
                snprintf(first_err, sizeof first_err, "%.200s: %.100s", p, strerror(errno));
            continue;
        }
        dm->kind = kind_of(dm->name);
        snprintf(dm->path, sizeof dm->path, "%s/%s/energy_uj", root, e->d_name);
        snprintf(p, sizeof p, "%s/%s/max_energy_range_uj", root, e->d_name);
        if (energy_read_u64(p, &dm->max_range) != 0)
            dm->max_range = 0;
        if (energy_read_u64(dm->path, &dm->last_raw) != 0) {
            int err = errno;
            if (!first_err[0])
                snprintf(first_err, sizeof first_err, "%.150s: %.60s%s", dm->path, strerror(err),
                         err == EACCES || err == EPERM
                             ? " (energy_uj is root-only since Linux 5.10; run as root or "
                               "make it readable, e.g. a sysfs.conf mode 0444 line)"
                             : "");
            continue;
        }
        m->ndom++;
    }
    closedir(d);
    if (m->ndom > 0) {
        qsort(m->dom, (size_t)m->ndom, sizeof m->dom[0], cmp_dom);
        if (first_err[0])
            snprintf(m->reason, sizeof m->reason, "some zones skipped: %.400s", first_err);
        return 0;
    }
    if (zones == 0)
        snprintf(m->reason, sizeof m->reason, "no RAPL zone (intel-rapl:*) in %.400s", root);
    else
        snprintf(m->reason, sizeof m->reason, "no readable RAPL zone: %.400s", first_err);
    return -1;
}

/* ---- perf power PMU ---------------------------------------------------------- */

static long perf_open(struct perf_event_attr *a, int cpu)
{
    return syscall(SYS_perf_event_open, a, -1, cpu, -1, 0);
}

static int perf_first_cpu_list(const char *mask, int *cpus, int max)
{
    int n = 0;
    const char *p = mask;
    while (*p && n < max) {
        char *end;
        long a = strtol(p, &end, 10);
        if (end == p)
            break;
        long b = a;
        if (*end == '-')
            b = strtol(end + 1, &end, 10);
        /* one CPU per package is what the PMU lists; a range means all of
         * them are equivalent, so take only its first */
        (void)b;
        cpus[n++] = (int)a;
        p = *end == ',' ? end + 1 : end;
        if (*p == '\0' || *end != ',')
            break;
    }
    return n;
}

static int energy_scan_perf(energy_meter *m, const char *pmu, char *why, size_t why_size)
{
    char p[600], buf[128];
    uint64_t type;
    snprintf(p, sizeof p, "%s/type", pmu);
    if (energy_read_u64(p, &type) != 0) {
        snprintf(why, why_size, "no perf power PMU (%.200s: %.60s)", p, strerror(errno));
        return -1;
    }
    int cpus[16];
    snprintf(p, sizeof p, "%s/cpumask", pmu);
    int ncpu = read_text(p, buf, sizeof buf) == 0 ? perf_first_cpu_list(buf, cpus, 16) : 0;
    if (ncpu == 0) {
        cpus[0] = 0;
        ncpu = 1;
    }
    static const char *events[] = {"energy-pkg", "energy-ram", "energy-cores", "energy-psys"};
    static const char *names[] = {"package", "dram", "core", "psys"};
    int last_errno = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/events/%s", pmu, events[i]);
        if (read_text(p, buf, sizeof buf) != 0)
            continue;
        const char *ev = strstr(buf, "event=");
        if (!ev)
            continue;
        unsigned long long config = strtoull(ev + 6, NULL, 0);
        double scale = 2.3283064365386962890625e-10;
        snprintf(p, sizeof p, "%s/events/%s.scale", pmu, events[i]);
        if (read_text(p, buf, sizeof buf) == 0)
            scale = strtod(buf, NULL);
        for (int c = 0; c < ncpu && m->ndom < ENERGY_MAX_DOMAINS; c++) {
            struct perf_event_attr a;
            memset(&a, 0, sizeof a);
            a.size = sizeof a;
            a.type = (uint32_t)type;
            a.config = config;
            long fd = perf_open(&a, cpus[c]);
            if (fd < 0) {
                last_errno = errno;
                continue;
            }
            energy_domain *dm = &m->dom[m->ndom++];
            memset(dm, 0, sizeof *dm);
            snprintf(dm->name, sizeof dm->name, "%s-%d", names[i], c);
            snprintf(dm->path, sizeof dm->path, "perf:power/%s/cpu%d", events[i], cpus[c]);
            dm->kind = kind_of(names[i]);
            dm->fd = (int)fd;
            dm->scale = scale;
            uint64_t v = 0;
            if (read(dm->fd, &v, sizeof v) == (ssize_t)sizeof v)
                dm->last_raw = v;
        }
    }
    if (m->ndom > 0)
        return 0;
    if (last_errno)
        snprintf(why, why_size, "perf power PMU present but perf_event_open failed: %s%s",
                 strerror(last_errno),
                 last_errno == EACCES || last_errno == EPERM
                     ? " (needs perf_event_paranoid <= 0 or CAP_PERFMON)"
                     : "");
    else
        snprintf(why, why_size, "perf power PMU has no energy events");
    return -1;
}

static void energy_tick(void *arg, uint64_t now);

void energy_open(energy_meter *m, const char *root, int interval_ms)
{
    memset(m, 0, sizeof *m);
    ticker_init(&m->tk, interval_ms > 500 ? 500 : interval_ms, energy_tick, m);
    if (!root)
        root = getenv("BENCH_POWERCAP_ROOT");
    if (!root || !*root)
        root = "/sys/class/powercap";
    if (energy_scan_powercap(m, root) == 0) {
        m->source = ENERGY_POWERCAP;
        return;
    }
    char pc_reason[512];
    snprintf(pc_reason, sizeof pc_reason, "%s", m->reason);
    const char *pmu = getenv("BENCH_PERF_POWER_PMU");
    if (!pmu || !*pmu)
        pmu = "/sys/bus/event_source/devices/power";
    char why[300];
    m->ndom = 0;
    if (energy_scan_perf(m, pmu, why, sizeof why) == 0) {
        m->source = ENERGY_PERF;
        snprintf(m->reason, sizeof m->reason, "powercap unusable (%.200s)", pc_reason);
        return;
    }
    m->source = ENERGY_NONE;
    snprintf(m->reason, sizeof m->reason, "%.250s; %.250s", pc_reason, why);
}

/* Reads every domain once and accumulates; caller holds mu. */
static void update_locked(energy_meter *m)
{
    for (int i = 0; i < m->ndom; i++) {
        energy_domain *d = &m->dom[i];
        uint64_t v;
        if (d->fd >= 0) {
            if (read(d->fd, &v, sizeof v) != (ssize_t)sizeof v) {
                d->read_errors++;
                continue;
            }
        } else if (energy_read_u64(d->path, &v) != 0) {
            d->read_errors++;
            continue;
        }
        uint64_t delta = d->fd >= 0 ? v - d->last_raw : energy_wrap_delta(d->last_raw, v, d->max_range);
        d->total_j += (double)delta * d->scale;
        d->last_raw = v;
    }
}

/* Package zones plus DRAM (core and uncore are inside the package). psys
 * may already hold package and DRAM, so it is never added to them: it is
 * the total only when there is no package zone. */
static double counted_total(const energy_meter *m, const double *j)
{
    double pkg = 0, dram = 0, psys = 0;
    int have_pkg = 0, have_psys = 0;
    for (int i = 0; i < m->ndom; i++) {
        domain_kind k = m->dom[i].kind;
        if (k == DOM_PACKAGE) {
            pkg += j[i];
            have_pkg = 1;
        } else if (k == DOM_DRAM) {
            dram += j[i];
        } else if (k == DOM_PSYS) {
            psys += j[i];
            have_psys = 1;
        }
    }
    if (have_pkg)
        return pkg + dram;
    return have_psys ? psys : dram;
}

static void record_sample_locked(energy_meter *m, uint64_t t)
{
    if (m->nsamples == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        if (cap > 1000000)
            return;
        energy_sample *s = realloc(m->samples, cap * sizeof *s);
        if (!s)
            return;
        m->samples = s;
        m->cap = cap;
    }
    double j[ENERGY_MAX_DOMAINS];
    for (int i = 0; i < m->ndom; i++)
        j[i] = m->dom[i].total_j;
    m->samples[m->nsamples].t_ns = t;
    m->samples[m->nsamples].total_j = counted_total(m, j);
    m->nsamples++;
}

/* The sampler: reads often enough that no counter wrap is missed and keeps
 * the power time series of the trace. */
static void energy_tick(void *arg, uint64_t now)
{
    energy_meter *m = arg;
    update_locked(m);
    record_sample_locked(m, now);
}

int energy_start(energy_meter *m)
{
    return m->source == ENERGY_NONE ? 0 : ticker_start(&m->tk);
}

void energy_stop(energy_meter *m) { ticker_stop(&m->tk); }

void energy_close(energy_meter *m)
{
    ticker_destroy(&m->tk);
    for (int i = 0; i < m->ndom; i++)
        if (m->dom[i].fd >= 0)
            close(m->dom[i].fd);
    free(m->samples);
    m->samples = NULL;
    m->nsamples = m->cap = 0;
}

void energy_snapshot_now(energy_meter *m, energy_snapshot *s)
{
    memset(s, 0, sizeof *s);
    ticker_lock(&m->tk);
    if (m->source != ENERGY_NONE)
        update_locked(m);
    s->t_ns = bench_now_ns();
    for (int i = 0; i < m->ndom; i++)
        s->j[i] = m->dom[i].total_j;
    ticker_unlock(&m->tk);
}

double energy_total_between(const energy_meter *m, const energy_snapshot *a,
                            const energy_snapshot *b)
{
    double d[ENERGY_MAX_DOMAINS];
    for (int i = 0; i < m->ndom; i++)
        d[i] = b->j[i] - a->j[i];
    return counted_total(m, d);
}
