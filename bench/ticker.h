/*
 * The monotonic clock every bench/ timing uses, and a ticker: a thread that
 * calls a function every interval until stopped (the RSS and energy
 * samplers). The function runs with the ticker's mutex held, so readers that
 * take ticker_lock see consistent samples.
 */
#ifndef BENCH_TICKER_H
#define BENCH_TICKER_H

#include <pthread.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int running, stop;
    int interval_ms;
    void (*tick)(void *arg, uint64_t now_ns);
    void *arg;
} ticker;

/* Sets up the mutex; the thread starts with ticker_start. */
void ticker_init(ticker *t, int interval_ms, void (*tick)(void *, uint64_t), void *arg);
/* Starts the thread (ticks at once, then every interval). 0 or -1. */
int ticker_start(ticker *t);
/* Stops and joins the thread; harmless when not running. */
void ticker_stop(ticker *t);
/* ticker_stop, then frees the mutex. */
void ticker_destroy(ticker *t);
void ticker_lock(ticker *t);
void ticker_unlock(ticker *t);

#endif /* BENCH_TICKER_H */
