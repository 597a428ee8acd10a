/*
 * The library's one clock: CLOCK_MONOTONIC in nanoseconds, read only when a
 * caller asked for per-layer timing.
 */
#include <time.h>

#include "internal.h"

uint64_t yolo_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
