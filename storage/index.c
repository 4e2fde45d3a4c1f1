/*
 * The index writer thread. Writers hand it rows and never wait; it commits
 * them to PostgreSQL in batches. While the database is away, rows queue in
 * memory (bounded) and the thread reconnects with back-off. If rows had to
 * be dropped, a marker file makes the next connection rebuild the index from
 * the files (store_reindex), so the index always catches up.
 */
#include "store_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define INDEX_QUEUE_MAX  200000
#define INDEX_BATCH_MAX  500
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 5000
#define REINDEX_MARKER   "segments/.reindex-needed"

CU_METRIC_DEFINE(ix_rows_metric, CU_METRIC_COUNTER, "custos_index_rows_total", "",
                 "Index rows committed to PostgreSQL.")
CU_METRIC_DEFINE(ix_dropped_metric, CU_METRIC_COUNTER, "custos_index_rows_dropped_total", "",
                 "Index rows dropped from a full queue (rebuilt from the files later).")
CU_METRIC_DEFINE(ix_pending_metric, CU_METRIC_GAUGE, "custos_index_queue_rows", "",
                 "Index rows waiting for PostgreSQL.")
CU_METRIC_DEFINE(ix_connected_metric, CU_METRIC_GAUGE, "custos_index_connected", "",
                 "1 while the index writer is connected to PostgreSQL.")

typedef enum { IX_OPEN, IX_SEGMENT, IX_SEAL } ix_kind;

typedef struct ix_item {
    ix_kind kind;
    struct ix_item *next;
    store_id recording;
    int64_t opened_us;
    store_origin origin;
    store_dek dek; /* IX_OPEN: wrapped key only; the plain key is never copied */
    store_found_segment seg;
    store_seal seal;
    bool applied; /* committed: only then may a pending key file go */
} ix_item;

struct store_index {
    char data_dir[PATH_MAX];
    char *dsn;
    store_is_open_fn is_open;
    void *is_open_ctx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* work arrived, or stop */
    pthread_cond_t idle; /* queue and batch empty */
    ix_item *head, *tail;
    size_t queued;
    size_t in_batch;
    bool dropped; /* rows were dropped: rebuild on connection */
    bool stopping;
    int64_t stop_deadline_ns;
    /* thread-only */
    PGconn *conn;
    keys_ring *keys; /* borrowed from the store */
    int backoff_ms;
    int64_t next_attempt_ns;
    _Atomic uint64_t rows;
    _Atomic bool connected;
};

static void index_enqueue(store_index *ix, ix_item *it)
{
    pthread_mutex_lock(&ix->lock);
    if (ix->queued >= INDEX_QUEUE_MAX) {
        ix->dropped = true;
        pthread_mutex_unlock(&ix->lock);
        cu_metric_inc(&ix_dropped_metric);
        free(it);
        return;
    }
    it->next = NULL;
    if (ix->tail)
        ix->tail->next = it;
    else
        ix->head = it;
    ix->tail = it;
    ix->queued++;
    cu_metric_set(&ix_pending_metric, (int64_t)(ix->queued + ix->in_batch));
    pthread_cond_signal(&ix->wake);
    pthread_mutex_unlock(&ix->lock);
}

void store_index_push_open(store_index *ix, const store_id *recording, const store_id *key_id,
                           int64_t opened_us, const store_origin *origin, const store_dek *dek)
{
    ix_item *it = cu_xcalloc(1, sizeof(*it));
    it->kind = IX_OPEN;
    it->recording = *recording;
    it->opened_us = opened_us;
    it->origin = *origin;
    it->dek.key_id = *key_id;
    memcpy(it->dek.kek_id, dek->kek_id, sizeof(it->dek.kek_id));
    memcpy(it->dek.wrapped, dek->wrapped, sizeof(it->dek.wrapped));
    index_enqueue(ix, it);
}

void store_index_push_segment(store_index *ix, const store_found_segment *seg)
{
    ix_item *it = cu_xcalloc(1, sizeof(*it));
    it->kind = IX_SEGMENT;
    it->recording = seg->h.recording;
    it->seg = *seg;
    index_enqueue(ix, it);
}

void store_index_push_seal(store_index *ix, const store_seal *seal, int64_t opened_us,
                           const store_origin *origin)
{
    ix_item *it = cu_xcalloc(1, sizeof(*it));
    it->kind = IX_SEAL;
    it->origin = *origin;
    it->recording = seal->recording;
    it->seal = *seal;
    it->opened_us = opened_us;
    index_enqueue(ix, it);
}

static cu_rc item_apply(store_index *ix, const ix_item *it, cu_err *err)
{
    switch (it->kind) {
    case IX_OPEN: {
        cu_rc rc = store_sql_recording_open(ix->conn, &it->recording, &it->dek.key_id,
                                            it->opened_us, &it->origin, err);
        return rc ? rc : store_sql_key_insert(ix->conn, &it->recording, &it->dek, err);
    }
    case IX_SEGMENT: return store_sql_segment_insert(ix->conn, &it->seg, err);
    case IX_SEAL:
        return store_sql_recording_seal(ix->conn, &it->seal, it->opened_us, &it->origin, err);
    }
    return CU_ERR_INVALID;
}

static void index_disconnect(store_index *ix, const char *why)
{
    if (ix->conn) {
        CU_LOG(CU_LOG_WARN, "index",
               "lost the database (%s); segments keep landing on disk, "
               "the index catches up when it returns",
               why);
        PQfinish(ix->conn);
        ix->conn = NULL;
    }
    atomic_store(&ix->connected, false);
    cu_metric_set(&ix_connected_metric, 0);
    ix->backoff_ms = ix->backoff_ms ? ix->backoff_ms * 2 : RECONNECT_MIN_MS;
    if (ix->backoff_ms > RECONNECT_MAX_MS)
        ix->backoff_ms = RECONNECT_MAX_MS;
    ix->next_attempt_ns = cu_mono_ns() + (int64_t)ix->backoff_ms * 1000000;
}

static bool marker_exists(const store_index *ix)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/" REINDEX_MARKER, ix->data_dir);
    return access(path, F_OK) == 0;
}

static void marker_set(const store_index *ix, bool on)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/" REINDEX_MARKER, ix->data_dir);
    if (on) {
        FILE *f = fopen(path, "we");
        if (f)
            fclose(f);
    } else {
        unlink(path);
    }
}

/* Work that needs the database and is owed since the last connection. */
static void index_on_connect(store_index *ix)
{
    cu_err err;
    bool rebuild;
    pthread_mutex_lock(&ix->lock);
    rebuild = ix->dropped;
    ix->dropped = false;
    pthread_mutex_unlock(&ix->lock);
    if (rebuild)
        marker_set(ix, true);
    if (rebuild || marker_exists(ix)) {
        store_reindex_report rep;
        CU_LOG(CU_LOG_INFO, "index", "rebuilding the index from the segment files");
        if (store_reindex(ix->data_dir, ix->conn, &rep, &err) == CU_OK) {
            marker_set(ix, false);
            CU_LOG(CU_LOG_INFO, "index", "index rebuilt: %llu recordings, %llu segments",
                   (unsigned long long)rep.recordings, (unsigned long long)rep.segments);
        } else {
            CU_LOG(CU_LOG_ERROR, "index", "rebuilding the index: %s", err.msg);
        }
    }
    int finished = 0;
    if (store_erasures_finish(ix->data_dir, ix->conn, &finished, &err) != CU_OK)
        CU_LOG(CU_LOG_ERROR, "index", "finishing interrupted erasures: %s", err.msg);
    store_catch_up_report rep;
    if (store_catch_up(ix->data_dir, ix->conn, ix->keys, ix->is_open, ix->is_open_ctx, &rep,
                       &err) != CU_OK)
        CU_LOG(CU_LOG_ERROR, "index", "catching up: %s", err.msg);
    if (rep.sealed)
        CU_LOG(CU_LOG_WARN, "index", "sealed %d recording(s) interrupted by a crash", rep.sealed);
    if (rep.reindexed)
        CU_LOG(CU_LOG_INFO, "index", "indexed %d recording(s) the index had not caught up with",
               rep.reindexed);
    if (rep.waiting)
        CU_LOG(CU_LOG_WARN, "index", "%d interrupted recording(s) wait for their data keys",
               rep.waiting);
}

static void index_connect(store_index *ix)
{
    cu_err err;
    if (cu_mono_ns() < ix->next_attempt_ns)
        return;
    if (db_connect(ix->dsn, "custos-index", &ix->conn, &err) != CU_OK) {
        ix->conn = NULL;
        if (ix->backoff_ms == 0 || ix->backoff_ms >= RECONNECT_MAX_MS)
            CU_LOG(CU_LOG_WARN, "index", "%s; retrying", err.msg);
        index_disconnect(ix, err.msg);
        return;
    }
    if (ix->backoff_ms)
        CU_LOG(CU_LOG_INFO, "index", "database reachable again; catching up");
    ix->backoff_ms = 0;
    atomic_store(&ix->connected, true);
    cu_metric_set(&ix_connected_metric, 1);
    index_on_connect(ix);
}

/* Remove a pending key file once the database provably holds the key. */
static void index_release_pending(store_index *ix, const store_id *recording)
{
    char id[37];
    store_id_format(recording, id);
    const char *params[1] = {id};
    PGresult *res = PQexecParams(ix->conn, "SELECT 1 FROM recording_keys WHERE recording_id = $1",
                                 1, NULL, params, NULL, NULL, 0);
    bool present = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    PQclear(res);
    if (present) {
        store_pending_remove(ix->data_dir, recording);
        return;
    }
    CU_LOG(CU_LOG_WARN, "index",
           "recording %s sealed but its key is not indexed yet; kept "
           "pending",
           id);
    pthread_mutex_lock(&ix->lock);
    ix->dropped = true;
    pthread_mutex_unlock(&ix->lock);
}

/* Commit a batch in one transaction. On a data error (not a lost
 * connection), apply item by item so one bad row cannot block the rest. */
static bool index_commit(store_index *ix, ix_item *batch, size_t n)
{
    cu_err err;
    cu_rc rc = db_exec(ix->conn, "BEGIN", &err);
    for (ix_item *it = batch; !rc && it; it = it->next)
        rc = item_apply(ix, it, &err);
    if (!rc)
        rc = db_exec(ix->conn, "COMMIT", &err);
    if (!rc)
        for (ix_item *it = batch; it; it = it->next)
            it->applied = true;
    if (rc) {
        cu_err ignore;
        if (PQstatus(ix->conn) != CONNECTION_OK ||
            db_exec(ix->conn, "ROLLBACK", &ignore) != CU_OK) {
            index_disconnect(ix, err.msg);
            return false;
        }
        CU_LOG(CU_LOG_WARN, "index", "batch of %zu rows failed (%s); applying one by one", n,
               err.msg);
        for (ix_item *it = batch; it; it = it->next) {
            it->applied = item_apply(ix, it, &err) == CU_OK;
            if (!it->applied) {
                if (PQstatus(ix->conn) != CONNECTION_OK) {
                    index_disconnect(ix, err.msg);
                    return false;
                }
                CU_LOG(CU_LOG_ERROR, "index", "row dropped, rebuilt from files later: %s", err.msg);
                pthread_mutex_lock(&ix->lock);
                ix->dropped = true;
                pthread_mutex_unlock(&ix->lock);
            }
        }
    }
    /* A recording's pending key file marks it as not fully indexed; with
     * its seal committed, the database holds everything, key included. */
    for (ix_item *it = batch; it; it = it->next)
        if (it->kind == IX_SEAL && it->applied)
            index_release_pending(ix, &it->recording);
    atomic_fetch_add(&ix->rows, n);
    cu_metric_add(&ix_rows_metric, (int64_t)n);
    return true;
}

static void *index_main(void *arg)
{
    store_index *ix = arg;
    pthread_setname_np(pthread_self(), "store-index");
    ix_item *batch = NULL;
    size_t n = 0;

    for (;;) {
        if (!ix->conn)
            index_connect(ix);

        pthread_mutex_lock(&ix->lock);
        if (!batch && ix->head) {
            ix_item **tail = &batch;
            while (ix->head && n < INDEX_BATCH_MAX) {
                ix_item *it = ix->head;
                ix->head = it->next;
                it->next = NULL;
                *tail = it;
                tail = &it->next;
                n++;
                ix->queued--;
            }
            if (!ix->head)
                ix->tail = NULL;
            ix->in_batch = n;
        }
        bool give_up = ix->stopping && (cu_mono_ns() > ix->stop_deadline_ns);
        if (ix->stopping && ((!batch && !ix->head) || give_up)) {
            if (batch || ix->head) {
                ix->dropped = true;
                CU_LOG(CU_LOG_WARN, "index",
                       "stopping with %zu rows not indexed; they are "
                       "rebuilt from the files at the next start",
                       ix->queued + n);
            }
            pthread_mutex_unlock(&ix->lock);
            break;
        }
        if (!batch || !ix->conn) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            if (!batch)
                pthread_cond_broadcast(&ix->idle);
            pthread_cond_timedwait(&ix->wake, &ix->lock, &ts);
            pthread_mutex_unlock(&ix->lock);
            continue;
        }
        pthread_mutex_unlock(&ix->lock);

        if (index_commit(ix, batch, n)) {
            while (batch) {
                ix_item *next = batch->next;
                free(batch);
                batch = next;
            }
            pthread_mutex_lock(&ix->lock);
            n = 0;
            ix->in_batch = 0;
            cu_metric_set(&ix_pending_metric, (int64_t)ix->queued);
            if (!ix->head)
                pthread_cond_broadcast(&ix->idle);
            pthread_mutex_unlock(&ix->lock);
        }
    }
    while (batch) {
        ix_item *next = batch->next;
        free(batch);
        batch = next;
    }
    bool dropped;
    pthread_mutex_lock(&ix->lock);
    dropped = ix->dropped;
    pthread_mutex_unlock(&ix->lock);
    if (dropped)
        marker_set(ix, true);
    return NULL;
}

cu_rc store_index_start(const char *data_dir, const char *dsn, keys_ring *keys,
                        store_is_open_fn is_open, void *ctx, store_index **out, cu_err *err)
{
    store_index *ix = cu_xcalloc(1, sizeof(*ix));
    cu_strlcpy(ix->data_dir, data_dir, sizeof(ix->data_dir));
    ix->dsn = cu_xstrdup(dsn);
    ix->is_open = is_open;
    ix->is_open_ctx = ctx;
    pthread_mutex_init(&ix->lock, NULL);
    pthread_cond_init(&ix->wake, NULL);
    pthread_cond_init(&ix->idle, NULL);
    cu_rc rc = CU_OK;
    ix->keys = keys;
    if (pthread_create(&ix->thread, NULL, index_main, ix) != 0) {
        rc = cu_err_set(err, CU_ERR_IO, "cannot start the index thread");
        goto fail;
    }
    *out = ix;
    return CU_OK;
fail:
    free(ix->dsn);
    free(ix);
    return rc;
}

bool store_index_wait_idle(store_index *ix, int timeout_ms)
{
    int64_t deadline = cu_mono_ns() + (int64_t)timeout_ms * 1000000;
    pthread_mutex_lock(&ix->lock);
    while (ix->head || ix->in_batch) {
        if (cu_mono_ns() >= deadline)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&ix->idle, &ix->lock, &ts);
    }
    bool idle = !ix->head && !ix->in_batch;
    pthread_mutex_unlock(&ix->lock);
    return idle;
}

void store_index_stats(store_index *ix, uint64_t *rows, uint64_t *pending, bool *connected)
{
    pthread_mutex_lock(&ix->lock);
    *pending = ix->queued + ix->in_batch;
    pthread_mutex_unlock(&ix->lock);
    *rows = atomic_load(&ix->rows);
    *connected = atomic_load(&ix->connected);
}

void store_index_stop(store_index *ix, int wait_ms)
{
    if (!ix)
        return;
    pthread_mutex_lock(&ix->lock);
    ix->stopping = true;
    ix->stop_deadline_ns = cu_mono_ns() + (int64_t)wait_ms * 1000000;
    pthread_cond_signal(&ix->wake);
    pthread_mutex_unlock(&ix->lock);
    pthread_join(ix->thread, NULL);
    while (ix->head) {
        ix_item *next = ix->head->next;
        free(ix->head);
        ix->head = next;
    }
    if (ix->conn)
        PQfinish(ix->conn);
    cu_metric_set(&ix_connected_metric, 0);
    cu_metric_set(&ix_pending_metric, 0);
    pthread_cond_destroy(&ix->wake);
    pthread_cond_destroy(&ix->idle);
    pthread_mutex_destroy(&ix->lock);
    free(ix->dsn);
    free(ix);
}
