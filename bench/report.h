/*
 * The terminal summary printed at the end of a run (declared in bench.h as
 * report_print; this header exists so the file pairs with its .c).
 */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H
#include "bench.h"
#endif
