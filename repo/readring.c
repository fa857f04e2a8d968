/* readring.c - the backup's read ring and worker pool; see readring.h. */
#include "repo/readring.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/held.h"

struct rr_span {
    uint64_t end;
    bool done;
};

/* The ring's order (see readring.h); O(1). Caller holds mu. */
static void order_check(const struct rr *p)
{
    assert(p->tail <= p->cut && p->cut <= p->head && p->head - p->tail <= p->size);
    (void)p;
}

void rr_init(struct rr *p)
{
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->walker_cv, NULL);
}

unsigned rr_workers(unsigned threads)
{
    unsigned n = threads;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    return n > 256 ? 256 : n;
}

/* Maps `want` bytes (rounded up to pages) twice in a row: two shared views of one memfd placed
 * back to back in a reserved area, so a chunk that wraps around the ring is still contiguous. */
static int ring_map(struct rr *p, size_t want, struct err *e)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t size = (want + page - 1) / page * page;
    int fd = memfd_create("podvault-read-ring", MFD_CLOEXEC);
    if (fd < 0) return err_sys(e, errno, "creating the read buffer");
    if (ftruncate(fd, (off_t)size) < 0) {
        int en = errno;
        close(fd);
        return err_sys(e, en, "sizing the read buffer to %zu bytes", size);
    }
    uint8_t *area = mmap(NULL, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) {
        int en = errno;
        close(fd);
        return err_sys(e, en, "reserving %zu bytes for reading", 2 * size);
    }
    int prot = PROT_READ | PROT_WRITE, flags = MAP_SHARED | MAP_FIXED;
    if (mmap(area, size, prot, flags, fd, 0) == MAP_FAILED ||
        mmap(area + size, size, prot, flags, fd, 0) == MAP_FAILED) {
        int en = errno;
        munmap(area, 2 * size);
        close(fd);
        return err_sys(e, en, "mapping the read buffer");
    }
    close(fd); /* the mappings keep the memory */
    p->base = area;
    p->size = size;
    return 0;
}

/* A span that wraps around the end of the ring is read partly through the second view. Its
 * page table entries there are dropped once it is done: the pages stay in the memfd, mapped by
 * the first view (a later access through the second view maps them again), and are no longer
 * counted twice in the process's resident size. */
static void unmap_wrapped(const struct rr *p, uint64_t start, size_t len)
{
    size_t off = (size_t)(start % p->size);
    if (off + len <= p->size) return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t over = (off + len - p->size + page - 1) / page * page;
    madvise(p->base + p->size, over, MADV_DONTNEED);
}

/* Job j is over (id NULL: not stored): tells the caller, then releases the spans done in issue
 * order. Caller holds mu. */
static void job_end(struct rr *p, const struct rr_job *j, const struct oid *id, bool added)
{
    PV_ASSERT_HELD(&p->mu);
    p->par.done(p->par.ctx, j, id, added);
    if (id && added) p->bytes_new += j->len;
    p->spans[j->seq % p->max_jobs].done = true;
    while (p->released < p->issued && p->spans[p->released % p->max_jobs].done) {
        uint64_t end = p->spans[p->released++ % p->max_jobs].end;
        assert(end >= p->tail && end <= p->cut);
        p->tail = end;
    }
    pthread_cond_signal(&p->walker_cv);
}

static void *worker_main(void *arg)
{
    struct rr *p = arg;
    struct err e;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->q_len == 0 && !p->stop)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->q_len == 0) break;
        struct rr_job j = p->q[p->q_head];
        p->q_head = (p->q_head + 1) % p->max_jobs;
        p->q_len--;
        bool skip = p->abort || p->failed;
        p->active++;
        pthread_mutex_unlock(&p->mu);

        struct oid id;
        bool added = false;
        int rc = 0;
        if (!skip) {
            const uint8_t *data = p->base + j.start % p->size;
            err_clear(&e);
            rc = crypt_blob_id(p->par.keys, data, j.len, &id, &e);
            if (rc == 0) rc = store_add(p->par.store, BLOB_DATA, &id, data, j.len, &added, &e);
            unmap_wrapped(p, j.start, j.len);
        }

        pthread_mutex_lock(&p->mu);
        assert(p->active > 0);
        p->active--;
        if (rc < 0 && !p->failed) {
            p->failed = true;
            p->fail = e;
        }
        job_end(p, &j, !skip && rc == 0 ? &id : NULL, added);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int rr_start(struct rr *p, const struct rr_params *par, struct err *e)
{
    p->par = *par;
    unsigned n = rr_workers(par->threads);
    /* Job slots only bound the queue; the ring bounds the bytes. Many slots keep the workers
     * busy on small files, whose chunks are small. */
    p->max_jobs = 16 * (size_t)n;
    p->q = calloc(p->max_jobs, sizeof *p->q);
    p->spans = calloc(p->max_jobs, sizeof *p->spans);
    p->workers = calloc(n, sizeof *p->workers);
    if (!p->q || !p->spans || !p->workers) return err_set(e, ERR_FAIL, "out of memory");
    int rc = ring_map(p, par->ring_bytes, e);
    if (rc < 0) return rc;
    for (unsigned i = 0; i < n; i++) {
        rc = pthread_create(&p->workers[i], NULL, worker_main, p);
        if (rc) return err_sys(e, rc, "starting worker thread");
        p->n_workers++;
    }
    return 0;
}

int rr_failure_locked(struct rr *p, struct err *e)
{
    PV_ASSERT_HELD(&p->mu);
    if (!p->failed) return 0;
    *e = p->fail;
    return p->fail.code < 0 ? p->fail.code : ERR_FAIL;
}

int rr_check(struct rr *p, struct err *e)
{
    pthread_mutex_lock(&p->mu);
    int rc = rr_failure_locked(p, e);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int rr_wait_room(struct rr *p, size_t min, size_t *free_bytes, struct err *e)
{
    assert(min <= p->size);
    pthread_mutex_lock(&p->mu);
    order_check(p);
    while (!p->failed && p->size - (p->head - p->tail) < min)
        pthread_cond_wait(&p->walker_cv, &p->mu);
    *free_bytes = p->size - (size_t)(p->head - p->tail);
    int rc = rr_failure_locked(p, e);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int rr_submit(struct rr *p, void *owner, size_t node, size_t len, struct err *e)
{
    pthread_mutex_lock(&p->mu);
    while (!p->failed && p->issued - p->released == p->max_jobs)
        pthread_cond_wait(&p->walker_cv, &p->mu);
    assert(p->q_len < p->max_jobs || p->failed);
    struct rr_job j = {.start = p->cut, .len = len, .seq = p->issued, .owner = owner, .node = node};
    int rc = rr_failure_locked(p, e);
    if (rc == 0) rc = p->par.claim(p->par.ctx, &j, e);
    if (rc == 0) {
        assert(len > 0 && p->cut + len <= p->head);
        p->spans[p->issued % p->max_jobs] = (struct rr_span){.end = p->cut + len, .done = false};
        p->q[(p->q_head + p->q_len) % p->max_jobs] = j;
        p->issued++;
        p->q_len++;
        p->cut += len;
        order_check(p);
        pthread_cond_signal(&p->work_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void rr_drain(struct rr *p)
{
    pthread_mutex_lock(&p->mu);
    p->abort = true;
    pthread_cond_broadcast(&p->work_cv);
    while (p->q_len || p->active)
        pthread_cond_wait(&p->walker_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void rr_stop(struct rr *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n_workers; i++)
        pthread_join(p->workers[i], NULL);
    p->n_workers = 0;
}

void rr_free(struct rr *p)
{
    rr_stop(p);
    free(p->q);
    free(p->workers);
    free(p->spans);
    if (p->base) munmap(p->base, 2 * p->size);
    p->base = NULL;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->walker_cv);
}
