/*
 * The FAST backend's thread pool: a fixed set of worker threads owned by one
 * yolo_ctx (so there is no global state and two contexts never share
 * threads). tpool_run hands one function to every thread, the caller being
 * thread 0, and waits for all of them: one fork/join per layer.
 *
 * Workers wait on a generation counter. A layer takes a few hundred
 * microseconds at least, and a condition-variable wake-up costs tens of
 * microseconds, so waiting spins briefly before it sleeps: back-to-back
 * layers then start without a system call.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "internal.h"

/* Spin iterations before blocking (a few tens of microseconds). */
#define POOL_SPIN 20000

struct yolo_pool {
    int n;                  /* threads including the caller */
    pthread_t *threads;     /* n - 1 workers */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_uint generation; /* bumped by each tpool_run */
    atomic_int pending;     /* workers still running this generation */
    atomic_int quit;
    tpool_fn fn;
    void *arg;
};

typedef struct {
    yolo_pool *pool;
    int tid;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until the generation differs from seen; returns the new one. */
static unsigned wait_generation(yolo_pool *p, unsigned seen)
{
    for (int i = 0; i < POOL_SPIN; i++) {
        unsigned g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen)
            return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    unsigned g;
    while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen)
        pthread_cond_wait(&p->wake, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *varg)
{
    worker_arg *wa = varg;
    yolo_pool *p = wa->pool;
    int tid = wa->tid;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        seen = wait_generation(p, seen);
        if (atomic_load_explicit(&p->quit, memory_order_acquire))
            return NULL;
        p->fn(p->arg, tid, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int tpool_threads(const yolo_pool *pool)
{
    return pool ? pool->n : 1;
}

/* Publishes a new generation to the workers. */
static void publish(yolo_pool *p)
{
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
}

void tpool_run(yolo_pool *pool, tpool_fn fn, void *arg)
{
    if (!pool || pool->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, pool->n - 1, memory_order_release);
    publish(pool);
    fn(arg, 0, pool->n);
    for (int i = 0; i < POOL_SPIN; i++) {
        if (atomic_load_explicit(&pool->pending, memory_order_acquire) == 0)
            return;
        cpu_relax();
    }
    pthread_mutex_lock(&pool->mu);
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0)
        pthread_cond_wait(&pool->done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}

static void stop_workers(yolo_pool *p, int started)
{
    atomic_store_explicit(&p->quit, 1, memory_order_release);
    publish(p);
    for (int i = 0; i < started; i++)
        pthread_join(p->threads[i], NULL);
}

yolo_status tpool_create(int threads, yolo_pool **out)
{
    *out = NULL;
    if (threads < 1)
        threads = 1;
    yolo_pool *p = calloc(1, sizeof *p);
    if (!p)
        return yolo_fail(YOLO_ERR_NOMEM, "thread pool: out of memory");
    p->n = threads;
    p->threads = calloc((size_t)threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return yolo_fail(YOLO_ERR_NOMEM, "thread pool: out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->quit, 0);
    for (int i = 0; i + 1 < threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        int err = wa ? 0 : 1;
        if (wa) {
            wa->pool = p;
            wa->tid = i + 1;
            err = pthread_create(&p->threads[i], NULL, worker_main, wa);
            if (err)
                free(wa);
        }
        if (err) {
            p->n = i + 1;
            stop_workers(p, i);
            tpool_free(p);
            return yolo_fail(YOLO_ERR_NOMEM, "thread pool: cannot start thread %d of %d", i + 2,
                             threads);
        }
    }
    *out = p;
    return YOLO_OK;
}

void tpool_free(yolo_pool *pool)
{
    if (!pool)
        return;
    if (!atomic_load_explicit(&pool->quit, memory_order_acquire))
        stop_workers(pool, pool->n - 1);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    free(pool->threads);
    free(pool);
}

/* ---- static range split -------------------------------------------------------- */

typedef struct {
    size_t n;
    tpool_range_fn fn;
    void *arg;
} range_job;

static void range_worker(void *arg, int tid, int nthreads)
{
    const range_job *j = arg;
    size_t begin = j->n * (size_t)tid / (size_t)nthreads;
    size_t end = j->n * (size_t)(tid + 1) / (size_t)nthreads;
    if (begin < end)
        j->fn(j->arg, begin, end, tid);
}

void tpool_for(yolo_pool *pool, size_t n, tpool_range_fn fn, void *arg)
{
    if (n == 0)
        return;
    if (!pool || pool->n == 1 || n == 1) {
        fn(arg, 0, n, 0);
        return;
    }
    range_job j = {n, fn, arg};
    tpool_run(pool, range_worker, &j);
}
