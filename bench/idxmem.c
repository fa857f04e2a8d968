/* idxmem.c - measures the in-memory index: bytes per blob and lookups per second.
 *
 * Usage: idxmem [N ...] (default 1000000 5000000). Each N runs in a child process so that its
 * peak RSS is its own; blobs are random IDs added in packs of 1000, as an index load would. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/prng.h"
#include "repo/index.h"

#define PACK_BLOBS 1000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int run(size_t n)
{
    struct err e;
    struct idx *x;
    static struct pack_entry batch[PACK_BLOBS];
    long rss0 = peak_rss_kib();
    if (idx_new(&x, &e) < 0) {
        fprintf(stderr, "idxmem: %s\n", e.msg);
        return 1;
    }
    uint64_t seed = 42, pseed = 7;
    double t0 = now();
    for (size_t done = 0; done < n;) {
        size_t k = n - done < PACK_BLOBS ? n - done : PACK_BLOBS;
        for (size_t i = 0; i < k; i++) {
            prng_oid(&seed, &batch[i].id);
            batch[i].type = BLOB_DATA;
            batch[i].offset = (uint32_t)i * 1000;
            batch[i].stored_len = 1000;
            batch[i].raw_len = 2000;
        }
        struct oid pack;
        prng_oid(&pseed, &pack);
        if (idx_add_pack(x, &pack, batch, k, &e) < 0) {
            fprintf(stderr, "idxmem: %s\n", e.msg);
            idx_free(x);
            return 1;
        }
        done += k;
    }
    double t_add = now() - t0;
    long rss1 = peak_rss_kib();

    seed = 42;
    size_t found = 0;
    t0 = now();
    for (size_t i = 0; i < n; i++) {
        struct oid id;
        struct idx_loc loc;
        prng_oid(&seed, &id);
        found += idx_lookup(x, &id, &loc);
    }
    double t_hit = now() - t0;
    uint64_t miss_seed = 99;
    size_t false_hits = 0;
    t0 = now();
    for (size_t i = 0; i < n; i++) {
        struct oid id;
        prng_oid(&miss_seed, &id);
        false_hits += idx_lookup(x, &id, NULL);
    }
    double t_miss = now() - t0;

    printf("N=%zu blobs: idx_memory %.2f B/blob, peak RSS delta %.2f B/blob, "
           "add %.0f blobs/s, lookup hit %.0f/s, miss %.0f/s%s\n",
           n, (double)idx_memory(x) / (double)idx_blob_count(x),
           (double)(rss1 - rss0) * 1024.0 / (double)n, n / t_add, n / t_hit, n / t_miss,
           found == n && !false_hits ? "" : " (LOOKUP MISMATCH)");
    idx_free(x);
    return found == n && !false_hits ? 0 : 1;
}

int main(int argc, char **argv)
{
    size_t defaults[] = {1000000, 5000000};
    size_t count = argc > 1 ? (size_t)argc - 1 : 2;
    int status = 0;
    for (size_t i = 0; i < count; i++) {
        size_t n = argc > 1 ? strtoull(argv[i + 1], NULL, 10) : defaults[i];
        if (!n) {
            fprintf(stderr, "idxmem: N must be a positive number\n");
            return 2;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("idxmem: fork");
            return 1;
        }
        if (pid == 0) {
            int rc = run(n);
            fflush(stdout);
            _exit(rc);
        }
        int ws;
        if (waitpid(pid, &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws)) status = 1;
    }
    return status;
}
