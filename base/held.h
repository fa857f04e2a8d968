/* held.h - assert that a lock is held, where a function's contract says "caller holds X".
 *
 * A trylock on a held mutex fails with EBUSY, so the check costs one atomic operation and is
 * compiled out with NDEBUG like any assert(). It tells that some thread holds the lock, not
 * which one: a caller on another thread holding it too is not caught (the sanitizer and valgrind
 * passes of run-tests.sh catch the races that follow). A lock that nobody held is taken by the
 * check, which then aborts. */
#ifndef PV_BASE_HELD_H
#define PV_BASE_HELD_H

#include <assert.h>
#include <errno.h>
#include <pthread.h>

#define PV_ASSERT_HELD(mutex) assert(pthread_mutex_trylock(mutex) == EBUSY)

#endif
