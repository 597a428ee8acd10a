/*
 * Energy measurement: RAPL through powercap (/sys/class/powercap, domains
 * recognised by their `name` file, intel-rapl-mmio skipped, counter
 * wrap-around handled), else the perf `power` PMU, else an honest
 * "unavailable" with the reason. A sampler thread reads the counters often
 * enough (<= 0.5 s) that no wrap is missed and keeps a power time series.
 */
#ifndef BENCH_ENERGY_H
#define BENCH_ENERGY_H

#include <stddef.h>
#include <stdint.h>

#include "ticker.h"

#define ENERGY_MAX_DOMAINS 32

typedef enum { DOM_PACKAGE, DOM_CORE, DOM_UNCORE, DOM_DRAM, DOM_PSYS, DOM_OTHER } domain_kind;
typedef enum { ENERGY_NONE = 0, ENERGY_POWERCAP, ENERGY_PERF } energy_source;

typedef struct {
    char name[64];       /* from the `name` file, e.g. "package-0" */
    char path[512];      /* energy_uj (powercap) or the event name (perf) */
    domain_kind kind;
    uint64_t max_range;  /* powercap: max_energy_range_uj; perf: 0 (64-bit) */
    uint64_t last_raw;
    double total_j;      /* accumulated since open */
    double scale;        /* joules per raw unit */
    int fd;              /* perf event fd, -1 for powercap */
    int read_errors;
} energy_domain;

typedef struct {
    uint64_t t_ns;
    double j[ENERGY_MAX_DOMAINS];
} energy_snapshot;

typedef struct {
    uint64_t t_ns;
    double total_j; /* counted total (package + dram, or psys alone) */
} energy_sample;

typedef struct {
    energy_source source;
    char reason[512];       /* why unavailable (source NONE), or notes */
    energy_domain dom[ENERGY_MAX_DOMAINS];
    int ndom;
    ticker tk;              /* the sampler thread; its mutex guards dom and samples */
    energy_sample *samples;
    size_t nsamples, cap;
} energy_meter;

/* Counter difference with wrap-around at max (e1 < e0 means it wrapped). */
uint64_t energy_wrap_delta(uint64_t e0, uint64_t e1, uint64_t max);

/* Reads an unsigned decimal file. 0, or -1 with errno (EACCES, EISDIR, ...). */
int energy_read_u64(const char *path, uint64_t *out);

/* Finds the RAPL zones under root. 0 when at least one is readable; -1 with
 * the reason in m->reason otherwise. */
int energy_scan_powercap(energy_meter *m, const char *root);

/* Tries powercap at root (NULL: $BENCH_POWERCAP_ROOT or /sys/class/powercap),
 * then the perf power PMU. Always succeeds: m->source says which, m->reason
 * says why none. */
void energy_open(energy_meter *m, const char *root, int interval_ms);
int energy_start(energy_meter *m);   /* starts the sampler thread */
void energy_stop(energy_meter *m);   /* joins it */
void energy_close(energy_meter *m);
/* Reads every domain now (accumulating) and copies the totals. */
void energy_snapshot_now(energy_meter *m, energy_snapshot *s);
/* Joules between two snapshots counted once: the package domains plus DRAM
 * (core and uncore are inside the package; psys only when nothing else). */
double energy_total_between(const energy_meter *m, const energy_snapshot *a,
                            const energy_snapshot *b);
const char *energy_kind_name(domain_kind k);
const char *energy_source_name(energy_source s);

#endif /* BENCH_ENERGY_H */
