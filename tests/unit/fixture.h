/* fixture.h - the temporary-repository set-up that unit tests share: a scratch directory of
 * their own under $TMPDIR (made by fixture_setup, removed with everything in it by
 * fixture_teardown, both cmocka group set-up functions), fresh repository locations in it, and
 * repositories created with the cheapest key derivation (keyfile_params_min) and opened with the
 * default settings. Header-only, included by one test file each; not thread-safe (set-up runs on
 * the test's main thread). Errors are returned, for the test to assert on. */
#ifndef PV_TESTS_FIXTURE_H
#define PV_TESTS_FIXTURE_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo/repo.h"

#define FIXTURE_LOC_MAX 600

static char fixture_base[512];
static int fixture_counter;

/* Makes a new private directory "$TMPDIR/<tag>-XXXXXX" (TMPDIR unset or empty: /tmp) into `dir`.
 * Returns 0, or -1 when it cannot be made. */
static __attribute__((unused)) int fixture_mkdtemp(char *dir, size_t size, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, size, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    return mkdtemp(dir) ? 0 : -1;
}

static __attribute__((unused)) int fixture_rm_entry(const char *path, const struct stat *st,
                                                    int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes `dir` and everything below it (never following a symbolic link). */
static __attribute__((unused)) int fixture_rmtree(const char *dir)
{
    return nftw(dir, fixture_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static __attribute__((unused)) int fixture_setup(void **state)
{
    (void)state;
    return fixture_mkdtemp(fixture_base, sizeof fixture_base, "pv-unit");
}

static __attribute__((unused)) int fixture_teardown(void **state)
{
    (void)state;
    return fixture_rmtree(fixture_base);
}

/* A fresh repository location in the scratch directory (nothing is created there yet). */
static __attribute__((unused)) void fixture_location(char loc[FIXTURE_LOC_MAX])
{
    snprintf(loc, FIXTURE_LOC_MAX, "%s/r%d", fixture_base, fixture_counter++);
}

/* Creates a repository at `loc` with the default config but for its pack size and zstd level.
 * Returns repo_create's result. */
static __attribute__((unused)) int fixture_create(const char *loc, const char *password,
                                                  uint32_t pack_size, int zstd_level, struct err *e)
{
    struct repo_create_params p;
    memset(&p, 0, sizeof p);
    config_default(&p.config);
    p.config.pack_size = pack_size;
    p.config.zstd_level = zstd_level;
    keyfile_params_min(&p.kdf);
    return repo_create(loc, password, &p, NULL, e);
}

#endif
