/* Result names, error buffers, bounded buffers, small helpers. */
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *cu_rc_str(cu_rc rc)
{
    switch (rc) {
    case CU_OK: return "ok";
    case CU_ERR_NOMEM: return "out of memory";
    case CU_ERR_IO: return "i/o error";
    case CU_ERR_CONFIG: return "configuration error";
    case CU_ERR_INVALID: return "invalid input";
    case CU_ERR_BUSY: return "busy";
    case CU_ERR_NOTFOUND: return "not found";
    case CU_ERR_EXISTS: return "already exists";
    case CU_ERR_DB: return "database error";
    case CU_ERR_VERSION: return "version mismatch";
    case CU_ERR_PERM: return "permission denied";
    case CU_ERR_TIMEOUT: return "timed out";
    }
    return "unknown error";
}

cu_rc cu_err_set(cu_err *err, cu_rc rc, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ------------------------------------------------------------- allocation */

static void cu_oom_abort(size_t n)
{
    /* Internal allocations are small; failing one means the process is
     * beyond saving. Write without allocating and stop. */
    char line[96];
    int len = snprintf(line, sizeof(line), "fatal: out of memory allocating %zu bytes\n", n);
    if (len > 0 && fwrite(line, 1, (size_t)len, stderr) == 0)
        abort();
    abort();
}

void *cu_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        cu_oom_abort(n);
    return p;
}

void *cu_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        cu_oom_abort(n * size);
    return p;
}

void *cu_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        cu_oom_abort(n);
    return q;
}

char *cu_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = cu_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

char *cu_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        cu_oom_abort(0);
    char *p = cu_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

bool cu_strlcpy(char *dst, const char *src, size_t size)
{
    if (size == 0)
        return false;
    size_t n = strlen(src);
    bool fits = n < size;
    if (!fits)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return fits;
}

bool cu_parse_int64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

int64_t cu_time_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cu_time_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t cu_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ----------------------------------------------------------------- cu_buf */

void cu_buf_init(cu_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->max = max;
}

void cu_buf_free(cu_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
}

void cu_buf_reset(cu_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* Make room for @p extra more bytes plus the terminator. */
static cu_rc cu_buf_reserve(cu_buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return CU_ERR_NOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->alloc)
        return CU_OK;
    size_t alloc = b->alloc ? b->alloc : 256;
    while (alloc < need)
        alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
    char *p = realloc(b->data, alloc);
    if (!p)
        return CU_ERR_NOMEM;
    b->data = p;
    b->alloc = alloc;
    return CU_OK;
}

cu_rc cu_buf_append(cu_buf *b, const void *data, size_t len)
{
    cu_rc rc = cu_buf_reserve(b, len);
    if (rc)
        return rc;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return CU_OK;
}

cu_rc cu_buf_printf(cu_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return CU_ERR_INVALID;
    cu_rc rc = cu_buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return CU_OK;
}
