/* Preloaded before libfaketime by `make test-moved-clock`.
 *
 * Moving the clock with libfaketime while its monotonic clock stays real (FAKETIME_DONT_FAKE_MONOTONIC,
 * without which every timed wait in Python computes a deadline a year away) breaks Python's
 * time.sleep: it sleeps with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), and libfaketime shifts
 * that real monotonic deadline by the fake offset, which the kernel refuses (EINVAL). This passes
 * clock_nanosleep straight to the kernel. Sleeps on CLOCK_REALTIME deadlines would then be off by the
 * offset; Python does not make them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *request, struct timespec *remain) {
    return syscall(SYS_clock_nanosleep, clock_id, flags, request, remain) == -1 ? errno : 0;
}
