/* Paths, durable small files, directory scans. */
#include "store_internal.h"

#include <openssl/evp.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void store_recording_dir(const char *data_dir, const store_id *recording, char out[PATH_MAX])
{
    char id[37];
    store_id_format(recording, id);
    snprintf(out, PATH_MAX, "%s/segments/%.2s/%s", data_dir, id, id);
}

void store_segment_path(const char *rec_dir, uint64_t index, char out[PATH_MAX])
{
    snprintf(out, PATH_MAX, "%s/%08llu.seg", rec_dir, (unsigned long long)index);
}

cu_rc store_read_file(const char *path, size_t max, cu_buf *out, cu_err *err)
{
    cu_rc rc = CU_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        return cu_err_set(err, e == ENOENT ? CU_ERR_NOTFOUND : CU_ERR_IO, "%s: %s", path,
                          strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        rc = cu_err_set(err, CU_ERR_INVALID, "%s: %lld bytes, more than %zu", path,
                        (long long)st.st_size, max);
        goto out;
    }
    cu_buf_reset(out);
    char chunk[65536];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            rc = cu_err_set(err, CU_ERR_IO, "%s: %s", path, strerror(e));
            goto out;
        }
        if (r == 0)
            break;
        if (cu_buf_append(out, chunk, (size_t)r) != CU_OK) {
            rc = cu_err_set(err, CU_ERR_INVALID, "%s: grew beyond %zu bytes", path, max);
            goto out;
        }
    }
out:
    close(fd);
    return rc;
}

static bool is_hex2(const char *s)
{
    return strlen(s) == 2 && strspn(s, "0123456789abcdef") == 2;
}

cu_rc store_scan_recordings(const char *data_dir, store_dir_fn fn, void *ctx, cu_err *err)
{
    char root[PATH_MAX];
    snprintf(root, sizeof(root), "%s/segments", data_dir);
    DIR *top = opendir(root);
    if (!top) {
        if (errno == ENOENT)
            return CU_OK;
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "%s: %s", root, strerror(e));
    }
    cu_rc rc = CU_OK;
    struct dirent *fan;
    bool go_on = true;
    while (go_on && (fan = readdir(top))) {
        if (!is_hex2(fan->d_name))
            continue;
        char fan_dir[PATH_MAX];
        snprintf(fan_dir, sizeof(fan_dir), "%s/%s", root, fan->d_name);
        DIR *d = opendir(fan_dir);
        if (!d) {
            int e = errno;
            rc = cu_err_set(err, CU_ERR_IO, "%s: %s", fan_dir, strerror(e));
            break;
        }
        struct dirent *de;
        while (go_on && (de = readdir(d))) {
            store_id id;
            if (!store_id_parse(de->d_name, &id))
                continue;
            char dir[PATH_MAX];
            snprintf(dir, sizeof(dir), "%s/%s", fan_dir, de->d_name);
            go_on = fn(ctx, &id, dir);
        }
        closedir(d);
    }
    closedir(top);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

cu_rc store_list_segments(const char *dir, uint64_t **out, size_t *n, cu_err *err)
{
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return cu_err_set(err, e == ENOENT ? CU_ERR_NOTFOUND : CU_ERR_IO, "%s: %s", dir,
                          strerror(e));
    }
    size_t cap = 64, count = 0;
    uint64_t *list = cu_xmalloc(cap * sizeof(*list));
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        if (len < 5 || len > 24 || strcmp(name + len - 4, ".seg") != 0)
            continue;
        if (strspn(name, "0123456789") != len - 4)
            continue;
        char digits[24];
        memcpy(digits, name, len - 4);
        digits[len - 4] = '\0';
        int64_t v;
        if (!cu_parse_int64(digits, &v) || v < 0)
            continue;
        if (count == cap) {
            cap *= 2;
            uint64_t *bigger = realloc(list, cap * sizeof(*list));
            if (!bigger)
                abort();
            list = bigger;
        }
        list[count++] = (uint64_t)v;
    }
    closedir(d);
    qsort(list, count, sizeof(*list), cmp_u64);
    *out = list;
    *n = count;
    return CU_OK;
}

/* One "key=value" line of a meta file: the value of @p key, or NULL. */
static const char *meta_value(const char *line, size_t n, const char *key, size_t *vlen)
{
    size_t k = strlen(key);
    if (n <= k + 1 || strncmp(line, key, k) != 0 || line[k] != '=')
        return NULL;
    *vlen = n - k - 1;
    return line + k + 1;
}

void store_origin_parse(const char *meta, size_t len, store_origin *origin)
{
    for (const char *line = meta, *end_all = meta + len; line < end_all;) {
        const char *end = memchr(line, '\n', (size_t)(end_all - line));
        size_t n = end ? (size_t)(end - line) : (size_t)(end_all - line), vlen = 0;
        const char *v;
        char text[40];
        if ((v = meta_value(line, n, "device_id", &vlen)) && vlen < sizeof(text)) {
            int64_t id;
            memcpy(text, v, vlen);
            text[vlen] = '\0';
            if (cu_parse_int64(text, &id) && id > 0)
                origin->device_id = id;
        } else if ((v = meta_value(line, n, "continues", &vlen)) && vlen == 36) {
            memcpy(text, v, vlen);
            text[vlen] = '\0';
            origin->has_continues = store_id_parse(text, &origin->continues);
        } else if ((v = meta_value(line, n, "capture", &vlen)) && vlen == 36) {
            memcpy(text, v, vlen);
            text[vlen] = '\0';
            origin->has_capture = store_id_parse(text, &origin->capture);
        }
        line = end ? end + 1 : end_all;
    }
}

cu_rc store_recording_genesis(const char *dir, const store_id *recording, uint8_t out[32],
                              store_origin *origin, cu_err *err)
{
    char path[PATH_MAX + 8];
    cu_buf meta;
    uint8_t sha[32];
    cu_rc rc = CU_OK;
    snprintf(path, sizeof(path), "%s/meta", dir);
    cu_buf_init(&meta, STORE_META_MAX);
    memset(origin, 0, sizeof(*origin));
    cu_rc r = store_read_file(path, STORE_META_MAX, &meta, err);
    if (r != CU_OK && r != CU_ERR_NOTFOUND) {
        rc = r;
        goto out;
    }
    EVP_Digest(meta.data ? meta.data : "", meta.len, sha, NULL, EVP_sha256(), NULL);
    store_chain_genesis(recording, sha, out);
    store_origin_parse(meta.data ? meta.data : "", meta.len, origin);
out:
    cu_buf_free(&meta);
    return rc;
}
