/*
 * Logging: one line per call, written with a single write(2) so lines from
 * several threads never interleave. The level is checked by the CU_LOG macro
 * before anything is formatted.
 */
#include "core.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Atomic int cu_log_threshold = CU_LOG_INFO;

/* Where lines go: stderr until cu_log_open() names a file. Reopening swaps
 * the file under the same descriptor number with dup2(), so a writer on
 * another thread never writes to a closed descriptor. */
static _Atomic int log_fd = STDERR_FILENO;
static pthread_mutex_t log_config_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_path[PATH_MAX];
static char log_program[32] = "custos";

CU_METRIC_DEFINE(log_lines_error, CU_METRIC_COUNTER, "custos_log_messages_total", "level=\"error\"",
                 "Log lines written, by level.")
CU_METRIC_DEFINE(log_lines_warn, CU_METRIC_COUNTER, "custos_log_messages_total", "level=\"warn\"",
                 "Log lines written, by level.")

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *cu_log_level_name(cu_log_level lvl)
{
    if ((unsigned)lvl < CU_ARRAY_LEN(level_names))
        return level_names[lvl];
    return "?";
}

int cu_log_level_parse(const char *name)
{
    for (size_t i = 0; i < CU_ARRAY_LEN(level_names); i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

/* Replace control characters (a peer's bytes can end up in a message) so
 * that one call is always exactly one line. */
static void log_sanitize(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 && c != '\t')
            s[i] = '?';
        else if (c == 0x7f)
            s[i] = '?';
    }
}

void cu_log_write(cu_log_level lvl, const char *ctx, int err, const char *fmt, ...)
{
    int saved_errno = errno;
    char line[2048];
    struct timespec ts;
    size_t pos = 0;
    int n;

    char when[CU_TIME_TEXT_LEN];
    clock_gettime(CLOCK_REALTIME, &ts);
    cu_time_format_ms((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, when);
    n = snprintf(line, sizeof(line), "%s %s[%ld] %-5s %s: ", when, log_program, (long)getpid(),
                 cu_log_level_name(lvl), ctx ? ctx : "-");
    if (n > 0)
        pos = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;

    size_t msg_start = pos;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(line + pos, sizeof(line) - pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        pos += (size_t)n < sizeof(line) - pos ? (size_t)n : sizeof(line) - pos - 1;

    if (err && pos < sizeof(line) - 1) {
        char ebuf[128];
        const char *etext = strerror_r(err, ebuf, sizeof(ebuf));
        n = snprintf(line + pos, sizeof(line) - pos, ": %s", etext);
        if (n > 0)
            pos += (size_t)n < sizeof(line) - pos ? (size_t)n : sizeof(line) - pos - 1;
    }
    log_sanitize(line + msg_start, pos - msg_start);
    if (pos >= sizeof(line) - 1)
        pos = sizeof(line) - 2;
    line[pos++] = '\n';

    int fd = atomic_load_explicit(&log_fd, memory_order_acquire);
    ssize_t w = write(fd, line, pos);
    (void)w; /* nowhere left to report a failed log write */

    if (lvl == CU_LOG_ERROR)
        cu_metric_inc(&log_lines_error);
    else if (lvl == CU_LOG_WARN)
        cu_metric_inc(&log_lines_warn);
    errno = saved_errno;
}

static int log_open_path(const char *path, cu_err *err)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        int e = errno;
        cu_err_set(err, CU_ERR_IO, "cannot open log file %s: %s", path, strerror(e));
    }
    return fd;
}

cu_rc cu_log_open(const char *program, const char *path, cu_err *err)
{
    cu_rc rc = CU_OK;
    pthread_mutex_lock(&log_config_lock);
    if (program)
        cu_strlcpy(log_program, program, sizeof(log_program));
    if (!path || !*path) {
        int old = atomic_exchange(&log_fd, STDERR_FILENO);
        if (old != STDERR_FILENO)
            close(old);
        log_path[0] = '\0';
        goto out;
    }
    if (!cu_strlcpy(log_path, path, sizeof(log_path))) {
        rc = cu_err_set(err, CU_ERR_CONFIG, "log file path is too long");
        log_path[0] = '\0';
        goto out;
    }
    int fd = log_open_path(path, err);
    if (fd < 0) {
        rc = CU_ERR_IO;
        goto out;
    }
    int old = atomic_exchange(&log_fd, fd);
    if (old != STDERR_FILENO)
        close(old);
out:
    pthread_mutex_unlock(&log_config_lock);
    return rc;
}

cu_rc cu_log_reopen(cu_err *err)
{
    cu_rc rc = CU_OK;
    pthread_mutex_lock(&log_config_lock);
    int cur = atomic_load(&log_fd);
    if (!log_path[0] || cur == STDERR_FILENO)
        goto out;
    int fd = log_open_path(log_path, err);
    if (fd < 0) {
        rc = CU_ERR_IO;
        goto out;
    }
    /* dup2 replaces the file behind `cur` atomically for every writer. */
    if (dup2(fd, cur) < 0) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "cannot reopen log file %s: %s", log_path, strerror(e));
    }
    close(fd);
out:
    pthread_mutex_unlock(&log_config_lock);
    return rc;
}

void cu_log_give_to(uid_t uid, gid_t gid)
{
    pthread_mutex_lock(&log_config_lock);
    int cur = atomic_load(&log_fd);
    if (log_path[0] && cur != STDERR_FILENO && fchown(cur, uid, gid) != 0)
        fprintf(stderr, "cannot give the log file %s to uid %u: %s\n", log_path, (unsigned)uid,
                strerror(errno));
    pthread_mutex_unlock(&log_config_lock);
}

void cu_log_close(void)
{
    pthread_mutex_lock(&log_config_lock);
    int old = atomic_exchange(&log_fd, STDERR_FILENO);
    if (old != STDERR_FILENO)
        close(old);
    log_path[0] = '\0';
    pthread_mutex_unlock(&log_config_lock);
}

/* ------------------------------------------------------------- libevent */

static void log_from_libevent(int severity, const char *msg)
{
    cu_log_level lvl = CU_LOG_DEBUG;
    switch (severity) {
    case EVENT_LOG_ERR: lvl = CU_LOG_ERROR; break;
    case EVENT_LOG_WARN: lvl = CU_LOG_WARN; break;
    case EVENT_LOG_MSG: lvl = CU_LOG_INFO; break;
    default: lvl = CU_LOG_DEBUG; break;
    }
    CU_LOG(lvl, "libevent", "%s", msg);
}

static void fatal_from_libevent(int code)
{
    cu_log_write(CU_LOG_ERROR, "libevent", 0, "fatal internal error %d", code);
    abort();
}

void cu_log_route_libevent(void)
{
    event_set_log_callback(log_from_libevent);
    event_set_fatal_callback(fatal_from_libevent);
}
