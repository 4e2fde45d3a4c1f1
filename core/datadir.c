/* The data directory and its exclusive lock. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct cu_datadir {
    char *path;  /* absolute */
    int lock_fd; /* flock()ed, close-on-exec */
};

int cu_mkdir_parents(const char *path, mode_t leaf_mode)
{
    char tmp[PATH_MAX];
    if (!cu_strlcpy(tmp, path, sizeof(tmp))) {
        errno = ENAMETOOLONG;
        return -1;
    }
    size_t len = strlen(tmp);
    while (len > 1 && tmp[len - 1] == '/')
        tmp[--len] = '\0';
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, leaf_mode) != 0)
        return -1;
    /* umask may have narrowed it; the mode is part of the design. */
    if (chmod(tmp, leaf_mode) != 0)
        return -1;
    /* Its name must survive a power cut, with everything stored under it. */
    char *slash = strrchr(tmp, '/');
    if (slash && slash != tmp) {
        *slash = '\0';
        return cu_fsync_dir(tmp);
    }
    return 0;
}

cu_rc cu_datadir_open(const char *path, const char *holder, cu_datadir **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    cu_datadir *dd = NULL;
    char *abs = NULL;
    int fd = -1;
    struct stat st;

    if (stat(path, &st) != 0) {
        int e = errno;
        if (e != ENOENT)
            return cu_err_set(err, CU_ERR_IO, "data dir %s: %s", path, strerror(e));
        if (cu_mkdir_parents(path, 0711) != 0 && errno != EEXIST) {
            e = errno;
            return cu_err_set(err, CU_ERR_IO, "data dir %s: cannot create it: %s", path,
                              strerror(e));
        }
        if (stat(path, &st) != 0) {
            e = errno;
            return cu_err_set(err, CU_ERR_IO, "data dir %s: %s", path, strerror(e));
        }
    }
    if (!S_ISDIR(st.st_mode))
        return cu_err_set(err, CU_ERR_IO, "data dir %s is not a directory", path);
    if (access(path, R_OK | W_OK | X_OK) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_PERM, "data dir %s is not readable and writable: %s", path,
                          strerror(e));
    }
    abs = realpath(path, NULL);
    if (!abs) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "data dir %s: %s", path, strerror(e));
    }

    if (strlen(abs) > 3800) {
        rc = cu_err_set(err, CU_ERR_INVALID, "data dir %s: resolved path is longer than 3800 bytes",
                        path);
        goto out;
    }
    char lock_path[PATH_MAX];
    if (snprintf(lock_path, sizeof(lock_path), "%s/lock", abs) >= (int)sizeof(lock_path)) {
        rc = cu_err_set(err, CU_ERR_INVALID, "data dir %s: path too long", abs);
        goto out;
    }
    /* O_CLOEXEC matters: a child (the embedded postgres) must not inherit the
     * lock and keep the data dir locked after we are gone. */
    fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "data dir %s: cannot open lock file: %s", abs, strerror(e));
        goto out;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e != EWOULDBLOCK) {
            rc = cu_err_set(err, CU_ERR_IO, "data dir %s: cannot lock: %s", abs, strerror(e));
            goto out;
        }
        char who[128] = "";
        ssize_t n = pread(fd, who, sizeof(who) - 1, 0);
        who[n > 0 ? n : 0] = '\0';
        who[strcspn(who, "\n")] = '\0';
        rc = cu_err_set(err, CU_ERR_BUSY, "data dir %s is in use by another process (%s)", abs,
                        who[0] ? who : "unknown");
        goto out;
    }
    char who[128];
    int n = snprintf(who, sizeof(who), "%s pid %ld\n", holder, (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, who, (size_t)n, 0) != n) {
        int e = errno;
        rc =
            cu_err_set(err, CU_ERR_IO, "data dir %s: cannot write lock file: %s", abs, strerror(e));
        goto out;
    }

    dd = cu_xcalloc(1, sizeof(*dd));
    dd->path = abs;
    dd->lock_fd = fd;
    abs = NULL;
    fd = -1;
    *out = dd;
out:
    if (fd >= 0)
        close(fd);
    free(abs);
    return rc;
}

const char *cu_datadir_path(const cu_datadir *dd)
{
    return dd->path;
}

void cu_datadir_close(cu_datadir *dd)
{
    if (!dd)
        return;
    /* Leave the file: removing it would race with a process about to lock it. */
    if (ftruncate(dd->lock_fd, 0) != 0) {
        /* harmless: the next holder rewrites it */
    }
    close(dd->lock_fd);
    free(dd->path);
    free(dd);
}
