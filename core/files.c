/* Small files written so that a crash leaves either the old or the new one. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool cu_write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

int cu_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

cu_rc cu_mkdir_durable(const char *path, mode_t mode, cu_err *err)
{
    char parent[PATH_MAX];
    if (mkdir(path, mode) != 0) {
        int e = errno;
        if (e == EEXIST)
            return CU_OK;
        return cu_err_set(err, CU_ERR_IO, "cannot create %s: %s", path, strerror(e));
    }
    /* The new name is in the parent: without this, a power cut can lose the
     * directory and everything later written under it. */
    if (!cu_strlcpy(parent, path, sizeof(parent)))
        return cu_err_set(err, CU_ERR_INVALID, "path too long: %s", path);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof(parent), ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    if (cu_fsync_dir(parent) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot fsync %s: %s", parent, strerror(e));
    }
    return CU_OK;
}

cu_rc cu_file_write_durably(const char *dir, const char *name, const void *data, size_t len,
                            mode_t mode, cu_err *err)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        goto fail;
    const uint8_t *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            unlink(tmp);
            errno = e;
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        goto fail;
    }
    close(fd);
    if (rename(tmp, path) != 0 || cu_fsync_dir(dir) != 0)
        goto fail;
    return CU_OK;
fail:;
    int e = errno;
    return cu_err_set(err, CU_ERR_IO, "cannot write %s: %s", path, strerror(e));
}
