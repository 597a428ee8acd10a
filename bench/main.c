/*
 * bench/run: the benchmark driver's entry point. Everything else lives in
 * the other files of bench/ so the tests can link it.
 */
#include "bench.h"

int main(int argc, char **argv) { return bench_main(argc, argv); }
