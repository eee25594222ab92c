/* A storage fault for tests, injected under a real server process with LD_PRELOAD.
 *
 * While the file named by EIO_SHIM_TRIGGER exists, fdatasync() and fsync() of any file whose path ends
 * with EIO_SHIM_MATCH fail with EIO, as a failing disk's would. LMDB syncs the data pages before it writes
 * the meta page, so a failed sync makes the commit fail cleanly (the environment stays usable): exactly a
 * transient I/O error. Everything else (the audit trail, sockets) is untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int faulty(int fd) {
    const char *trigger = getenv("EIO_SHIM_TRIGGER");
    const char *match = getenv("EIO_SHIM_MATCH");
    if (trigger == NULL || match == NULL || access(trigger, F_OK) != 0) {
        return 0;
    }
    char link[64];
    char path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) {
        return 0;
    }
    path[n] = '\0';
    size_t m = strlen(match);
    return (size_t)n >= m && strcmp(path + n - m, match) == 0;
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    if (faulty(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    if (faulty(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}
