/*
 * Signed audit checkpoints (docs/integrity.md, "Checkpoints"): the head of
 * the audit chain, signed with the installation key and appended to
 * <data-dir>/audit/checkpoints, so that a chain rewritten, recomputed or cut
 * short by someone with full database access no longer matches what was
 * signed. One line per checkpoint:
 *
 *   custos-checkpoint-v1 <installation> <time> <seq> <head hex> <signature base64>
 *
 * The signature is Ed25519 over the line's first five fields as written
 * (single spaces, no newline): `openssl pkeyutl -verify -rawin` checks it.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECKPOINT_MAGIC    "custos-checkpoint-v1"
#define CHECKPOINT_FILE_MAX (256L * 1024 * 1024)
#define HOOK_TIMEOUT_MS     30000

CU_METRIC_DEFINE(cp_written_metric, CU_METRIC_COUNTER, "custos_audit_checkpoints_total", "",
                 "Signed audit checkpoints written.")
CU_METRIC_DEFINE(cp_failed_metric, CU_METRIC_COUNTER, "custos_audit_checkpoint_failures_total", "",
                 "Audit checkpoints that could not be written.")
CU_METRIC_DEFINE(cp_hook_failed_metric, CU_METRIC_COUNTER,
                 "custos_audit_checkpoint_hook_failures_total", "",
                 "Runs of audit.checkpoint_command that failed or timed out.")

extern char **environ;

void ctl_checkpoint_path(const char *data_dir, char *out, size_t len)
{
    snprintf(out, len, "%s/" CTL_CHECKPOINT_FILE, data_dir);
}

/* The signed part of a line: its first five fields. */
static int signed_text(const ctl_checkpoint *c, char *out, size_t len)
{
    char head[65];
    cu_hex_encode(c->head, 32, head);
    return snprintf(out, len, CHECKPOINT_MAGIC " %s %s %lld %s", c->instance, c->at,
                    (long long)c->seq, head);
}

/* The newest line of the file (its last complete one), or "" when none. */
static cu_rc last_line(const char *path, char *out, size_t len, cu_err *err)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return e == ENOENT ? CU_OK : cu_err_set(err, CU_ERR_IO, "%s: %s", path, strerror(e));
    }
    char buf[CTL_CHECKPOINT_LINE_MAX * 2 + 1];
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)(sizeof(buf) - 1) ? size - (off_t)(sizeof(buf) - 1) : 0;
    ssize_t n = size > 0 ? pread(fd, buf, (size_t)(size - from), from) : 0;
    close(fd);
    if (n < 0)
        return cu_err_set(err, CU_ERR_IO, "%s: %s", path, strerror(errno));
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] != '\n')
        buf[--n] = '\0'; /* a torn last line is not a line */
    if (n > 0)
        buf[--n] = '\0';
    const char *start = strrchr(buf, '\n');
    cu_strlcpy(out, start ? start + 1 : buf, len);
    return CU_OK;
}

/*
 * A write cut short (a crash, a full disk) leaves a last line without its
 * newline: never a whole checkpoint. It is cut off before the next one is
 * appended, so that it cannot run into it.
 */
static cu_rc drop_torn_tail(int fd, const char *path, cu_err *err)
{
    off_t size = lseek(fd, 0, SEEK_END);
    char c = '\n';
    if (size <= 0 || (pread(fd, &c, 1, size - 1) == 1 && c == '\n'))
        return CU_OK;
    off_t end = size - 1;
    char buf[512];
    while (end > 0) {
        off_t from = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        ssize_t got = pread(fd, buf, (size_t)(end - from), from);
        if (got <= 0)
            break;
        char *nl = memrchr(buf, '\n', (size_t)got);
        if (nl) {
            end = from + (nl - buf) + 1;
            break;
        }
        end = from;
    }
    if (ftruncate(fd, end) != 0 || fdatasync(fd) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot cut the torn last line of %s: %s", path,
                          strerror(e));
    }
    CU_LOG(CU_LOG_WARN, "audit", "%s ended in a torn line (a write cut short); it was removed",
           path);
    return CU_OK;
}

/* Run audit.checkpoint_command with the line on stdin, bounded in time. */
static void run_hook(const char *command, const char *line)
{
    char with_nl[CTL_CHECKPOINT_LINE_MAX + 2], why[160];
    int len = snprintf(with_nl, sizeof(with_nl), "%s\n", line);
    if (!cu_command_run(command, with_nl, (size_t)len, HOOK_TIMEOUT_MS, why, sizeof(why))) {
        CU_LOG(CU_LOG_ERROR, "audit", "checkpoint hook (audit.checkpoint_command) failed: %s", why);
        cu_metric_inc(&cp_hook_failed_metric);
    }
}

cu_rc ctl_checkpoint_latest(const char *data_dir, char *line, size_t len, cu_err *err)
{
    char path[PATH_MAX];
    ctl_checkpoint_path(data_dir, path, sizeof(path));
    cu_rc rc = last_line(path, line, len, err);
    ctl_checkpoint c;
    if (!rc && line[0] && !ctl_checkpoint_parse(line, &c))
        line[0] = '\0'; /* (not a checkpoint: none to give) */
    return rc;
}

cu_rc ctl_checkpoint_write(PGconn *conn, keys_ring *keys, const char *data_dir, const char *hook,
                           bool force, ctl_checkpoint *out, cu_err *err)
{
    ctl_checkpoint c = {0};
    char path[PATH_MAX], dir[PATH_MAX], last[CTL_CHECKPOINT_LINE_MAX + 1];
    char line[CTL_CHECKPOINT_LINE_MAX + 1], text[CTL_CHECKPOINT_LINE_MAX];
    char sig64[KEYS_SIG_LEN * 2];
    uint8_t sig[KEYS_SIG_LEN];
    cu_rc rc = CU_OK;
    int fd = -1;
    if (out)
        memset(out, 0, sizeof(*out));

    PGresult *res = PQexec(conn, "SELECT (SELECT id::text FROM instance), l.seq, l.hash "
                                 "FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT seq, hash "
                                 "FROM audit_log ORDER BY seq DESC LIMIT 1) l ON true");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = cu_err_set(err, CU_ERR_DB, "checkpoint: %s", PQerrorMessage(conn));
        goto out;
    }
    cu_strlcpy(c.instance, PQgetvalue(res, 0, 0), sizeof(c.instance));
    if (PQgetisnull(res, 0, 1)) {
        goto out; /* an empty log: nothing to anchor yet */
    }
    c.seq = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    const char *hash = PQgetvalue(res, 0, 2);
    if (strlen(hash) != 66 || !cu_hex_decode(hash + 2, c.head, 32)) {
        rc = cu_err_set(err, CU_ERR_DB, "checkpoint: the last entry's hash cannot be read");
        goto out;
    }

    /* Entries of reads commit without waiting for the WAL flush: before their
     * head is signed, a commit that waits flushes the WAL past them, so that
     * a database crash cannot lose an entry a checkpoint covers. */
    PGresult *flush = PQexec(conn, "BEGIN; SET LOCAL synchronous_commit = on; "
                                   "SELECT txid_current(); COMMIT");
    bool flushed = PQresultStatus(flush) == PGRES_COMMAND_OK;
    PQclear(flush);
    if (!flushed) {
        rc = cu_err_set(err, CU_ERR_DB, "checkpoint: flushing the log: %s", PQerrorMessage(conn));
        PQclear(PQexec(conn, "ROLLBACK"));
        goto out;
    }
    ctl_checkpoint_path(data_dir, path, sizeof(path));
    snprintf(dir, sizeof(dir), "%s/audit", data_dir);
    rc = cu_mkdir_durable(dir, 0750, err);
    if (rc)
        goto out;
    rc = last_line(path, last, sizeof(last), err);
    if (rc)
        goto out;
    ctl_checkpoint prev;
    if (!force && last[0] && ctl_checkpoint_parse(last, &prev) && prev.seq == c.seq &&
        memcmp(prev.head, c.head, 32) == 0)
        goto out; /* the log has not moved */

    cu_time_format_ms(cu_time_ms(), c.at);
    int n = signed_text(&c, text, sizeof(text));
    rc = keys_sign(keys, text, (size_t)n, sig, err);
    if (rc)
        goto out;
    memcpy(c.sig, sig, sizeof(sig));
    cu_base64_encode(sig, sizeof(sig), sig64);
    n = snprintf(line, sizeof(line), "%s %s\n", text, sig64);

    /* Append only; one write of the whole line, then fsync: a crash leaves
     * at most a torn last line, which readers skip. */
    bool created = access(path, F_OK) != 0;
    fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd >= 0)
        rc = drop_torn_tail(fd, path, err);
    if (rc)
        goto out;
    if (fd < 0 || write(fd, line, (size_t)n) != n || fdatasync(fd) != 0) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "cannot append to %s: %s", path, strerror(e));
        goto out;
    }
    if (created && cu_fsync_dir(dir) != 0) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "cannot fsync %s: %s", dir, strerror(e));
        goto out;
    }
    cu_metric_inc(&cp_written_metric);
    line[n - 1] = '\0';
    if (hook && hook[0])
        run_hook(hook, line);
    if (out)
        *out = c;
out:
    if (fd >= 0)
        close(fd);
    PQclear(res);
    if (rc)
        cu_metric_inc(&cp_failed_metric);
    return rc;
}

bool ctl_checkpoint_parse(const char *line, ctl_checkpoint *c)
{
    char magic[32], seq[24], head[80], sig64[120];
    memset(c, 0, sizeof(*c));
    if (strlen(line) > CTL_CHECKPOINT_LINE_MAX)
        return false;
    int used = 0;
    if (sscanf(line, "%31s %36s %24s %23s %79s %119s%n", magic, c->instance, c->at, seq, head,
               sig64, &used) != 6 ||
        line[used] != '\0' || strcmp(magic, CHECKPOINT_MAGIC) != 0)
        return false;
    size_t sig_len = 0;
    int64_t v;
    if (!cu_parse_int64(seq, &v) || v < 1 || strlen(head) != 64 ||
        !cu_hex_decode(head, c->head, 32) ||
        !cu_base64_decode(sig64, strlen(sig64), c->sig, sizeof(c->sig), &sig_len) ||
        sig_len != KEYS_SIG_LEN)
        return false;
    c->seq = v;
    /* What was signed must be exactly what is written: the text re-made. */
    char text[CTL_CHECKPOINT_LINE_MAX];
    int n = signed_text(c, text, sizeof(text));
    return n > 0 && strncmp(line, text, (size_t)n) == 0 && line[n] == ' ';
}

bool ctl_checkpoint_signature_ok(const ctl_checkpoint *c, const uint8_t pub[KEYS_PUBLIC_LEN])
{
    char text[CTL_CHECKPOINT_LINE_MAX];
    int n = signed_text(c, text, sizeof(text));
    return n > 0 && keys_signature_ok(pub, text, (size_t)n, c->sig);
}

cu_rc ctl_checkpoints_load(const char *data_dir, ctl_checkpoint **out, size_t *n,
                           size_t *unreadable, cu_err *err)
{
    char path[PATH_MAX];
    ctl_checkpoint_path(data_dir, path, sizeof(path));
    *out = NULL;
    *n = 0;
    *unreadable = 0;
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        return e == ENOENT ? CU_OK : cu_err_set(err, CU_ERR_IO, "%s: %s", path, strerror(e));
    }
    size_t cap = 64, count = 0, lineno = 0;
    ctl_checkpoint *list = cu_xmalloc(cap * sizeof(*list));
    char line[CTL_CHECKPOINT_LINE_MAX + 2];
    long read_bytes = 0;
    cu_rc rc = CU_OK;
    while (fgets(line, sizeof(line), f)) {
        size_t len = strlen(line);
        read_bytes += (long)len;
        if (read_bytes > CHECKPOINT_FILE_MAX) {
            rc = cu_err_set(err, CU_ERR_INVALID, "%s is larger than %ld bytes", path,
                            CHECKPOINT_FILE_MAX);
            break;
        }
        lineno++;
        if (len == 0 || line[len - 1] != '\n') {
            if (feof(f))
                break; /* a last line a crash tore: never signed whole */
            int ch;    /* longer than any checkpoint: not one */
            while ((ch = fgetc(f)) != EOF && ch != '\n')
                ;
            (*unreadable)++;
            continue;
        }
        line[--len] = '\0';
        if (count == cap) {
            cap *= 2;
            void *bigger = realloc(list, cap * sizeof(*list));
            if (!bigger)
                abort();
            list = bigger;
        }
        if (ctl_checkpoint_parse(line, &list[count])) {
            list[count].line = lineno;
            count++;
        } else {
            (*unreadable)++;
        }
    }
    fclose(f);
    if (rc) {
        free(list);
        return rc;
    }
    *out = list;
    *n = count;
    return CU_OK;
}

/* ---------------------------------------------------------- checkpointer */

struct ctl_checkpointer {
    char data_dir[PATH_MAX];
    char *dsn;
    char *hook;
    keys_ring *keys;
    int64_t every_ns;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stop;
    PGconn *conn;
};

/* One checkpoint now, reconnecting as needed; failures are logged. */
static void checkpointer_tick(ctl_checkpointer *c)
{
    cu_err err;
    if (c->conn && PQstatus(c->conn) != CONNECTION_OK) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    if (!c->conn && db_connect(c->dsn, "custos-checkpoint", &c->conn, &err) != CU_OK) {
        c->conn = NULL;
        CU_LOG(CU_LOG_ERROR, "audit", "no checkpoint: %s", err.msg);
        cu_metric_inc(&cp_failed_metric);
        return;
    }
    if (ctl_checkpoint_write(c->conn, c->keys, c->data_dir, c->hook, false, NULL, &err) != CU_OK)
        CU_LOG(CU_LOG_ERROR, "audit", "no checkpoint: %s", err.msg);
}

static void *checkpointer_main(void *arg)
{
    ctl_checkpointer *c = arg;
    pthread_setname_np(pthread_self(), "audit-checkpt");
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += c->every_ns / 1000000000;
        ts.tv_nsec += c->every_ns % 1000000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&c->wake, &c->mu, &ts);
        if (c->stop)
            break;
        pthread_mutex_unlock(&c->mu);
        checkpointer_tick(c);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

cu_rc ctl_checkpointer_start(const cu_config *cfg, const char *data_dir, const char *dsn,
                             keys_ring *keys, ctl_checkpointer **out, cu_err *err)
{
    ctl_checkpointer *c = cu_xcalloc(1, sizeof(*c));
    cu_strlcpy(c->data_dir, data_dir, sizeof(c->data_dir));
    c->dsn = cu_xstrdup(dsn);
    c->hook = cu_xstrdup(cfg->audit_checkpoint_command);
    c->keys = keys;
    c->every_ns = cfg->audit_checkpoint_s * 1000000000;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->wake, NULL);
    /* At start: whatever was appended while no ingestd ran is anchored now. */
    checkpointer_tick(c);
    if (pthread_create(&c->thread, NULL, checkpointer_main, c) != 0) {
        PQfinish(c->conn);
        free(c->dsn);
        free(c->hook);
        free(c);
        return cu_err_set(err, CU_ERR_IO, "cannot start the audit checkpoint thread");
    }
    *out = c;
    return CU_OK;
}

void ctl_checkpointer_stop(ctl_checkpointer *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    checkpointer_tick(c); /* the last word of this run */
    PQfinish(c->conn);
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->mu);
    free(c->dsn);
    free(c->hook);
    free(c);
}
