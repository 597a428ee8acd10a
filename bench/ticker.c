/*
 * Periodic sampler threads. pthread_cond_timedwait (rather than sleep) lets
 * ticker_stop wake the thread at once instead of waiting out the interval.
 */
#include "ticker.h"

#include <string.h>
#include <time.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ticker_init(ticker *t, int interval_ms, void (*tick)(void *, uint64_t), void *arg)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->interval_ms = interval_ms < 1 ? 1 : interval_ms;
    t->tick = tick;
    t->arg = arg;
}

/* The deadline one interval from now on CLOCK_REALTIME, the clock
 * pthread_cond_timedwait measures by default. */
static struct timespec deadline_after(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)ms * 1000000L;
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    return ts;
}

static void *ticker_main(void *arg)
{
    ticker *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        t->tick(t->arg, bench_now_ns());
        struct timespec ts = deadline_after(t->interval_ms);
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

int ticker_start(ticker *t)
{
    if (t->running)
        return 0;
    t->stop = 0;
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0)
        return -1;
    t->running = 1;
    return 0;
}

void ticker_stop(ticker *t)
{
    if (!t->running)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    t->running = 0;
}

void ticker_destroy(ticker *t)
{
    ticker_stop(t);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

void ticker_lock(ticker *t) { pthread_mutex_lock(&t->mu); }
void ticker_unlock(ticker *t) { pthread_mutex_unlock(&t->mu); }
