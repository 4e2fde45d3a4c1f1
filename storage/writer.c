/*
 * The write path: submit → worker (hash, chain, encrypt, write a temp file)
 * → syncer (fsync, rename) → committer (group fsync of directories, in-order
 * acknowledgement, seals) → index thread.
 *
 * Why this order: a segment is acknowledged only when its bytes and its
 * directory entry are on stable storage — data fsync before the rename, so a
 * name never points at partial data; directory fsync before the ack, so an
 * acknowledged name survives a crash. Directory fsyncs are shared by every
 * segment renamed in the same batch (group commit), and several fsyncs are in
 * flight at once (one per syncer) so the disk queue stays full.
 */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define SYNC_QUEUE_MAX 256
#define FSYNC_SAMPLES  4096
#define WORKER_NICE    5 /* see worker_main */

CU_METRIC_DEFINE(st_acked_metric, CU_METRIC_COUNTER, "custos_store_segments_total",
                 "result=\"acked\"", "Segments by outcome.")
CU_METRIC_DEFINE(st_failed_metric, CU_METRIC_COUNTER, "custos_store_segments_total",
                 "result=\"failed\"", "Segments by outcome.")
CU_METRIC_DEFINE(st_orphan_metric, CU_METRIC_COUNTER, "custos_store_segments_total",
                 "result=\"orphaned\"", "Segments by outcome.")
CU_METRIC_DEFINE(st_bytes_metric, CU_METRIC_COUNTER, "custos_store_bytes_total", "",
                 "Plaintext bytes of acknowledged segments.")
CU_METRIC_DEFINE(st_queue_full_metric, CU_METRIC_COUNTER, "custos_store_queue_full_total", "",
                 "Segments refused because the store fell behind.")
CU_METRIC_DEFINE(st_fsync_metric, CU_METRIC_COUNTER, "custos_store_fsyncs_total", "",
                 "File and directory fsyncs issued.")
CU_METRIC_DEFINE(st_fsync_us_metric, CU_METRIC_COUNTER, "custos_store_fsync_microseconds_total", "",
                 "Time spent in fsync.")
CU_METRIC_DEFINE(st_damaged_metric, CU_METRIC_COUNTER, "custos_store_recordings_damaged_total", "",
                 "Recordings marked damaged by a write or fsync error.")
CU_METRIC_DEFINE(st_open_metric, CU_METRIC_GAUGE, "custos_store_recordings_open", "",
                 "Recordings open for writing.")

typedef enum { JOB_SEGMENT, JOB_CLOSE } job_kind;

typedef struct job {
    job_kind kind;
    store_recording *rec;
    uint64_t index; /* segment index; for a close, the count submitted */
    cu_chunk *data; /* plaintext, until encrypted */
    size_t len;
    store_segment_meta meta;
    int fd; /* the temp file, until fsynced */
    bool ok;
    bool renamed;      /* under its final name (to be removed if it is not acknowledged) */
    int err;           /* errno of the failure */
    const char *stage; /* what failed */
    store_found_segment found;
    struct job *next;
} job;

typedef struct {
    job **ring;
    int cap, head, count;
    pthread_mutex_t lock;
    pthread_cond_t nonempty, nonfull;
    bool stop;
} job_queue;

typedef struct {
    store *s;
    pthread_t thread;
    job_queue q;
    uint8_t *out; /* the file image: header, ciphertext, tag; 4096-aligned */
    size_t out_cap;
} worker;

struct store_recording {
    store *s;
    store_id id;
    store_dek dek;
    char dir[PATH_MAX];
    int64_t opened_us;
    store_origin origin;
    int worker;
    /* submit side, under the worker queue's lock */
    uint64_t next_index;
    bool closing;
    /* worker side: the chain value of the last segment hashed */
    uint8_t chain[32];
    /* committer side */
    uint64_t next_ack;
    uint64_t acked;
    uint8_t acked_head[32];
    job *held; /* settled out of order, sorted by index */
    _Atomic bool damaged;
    /* committer side, once closed: a seal that could not be written yet */
    int seal_attempts;
    int64_t seal_retry_ns;
    struct store_recording *next_unsealed;
    struct store_recording *next_open; /* in s->open list */
};

struct store {
    char data_dir[PATH_MAX];
    keys_ring *keys; /* borrowed */
    store_index *index;
    store_ack_fn on_ack;
    void *ack_ctx;
    int nworkers, nsyncers;
    worker *workers;
    pthread_t *syncers;
    job_queue sync_q;
    pthread_t committer;
    /* commit queue: a plain list */
    pthread_mutex_t commit_lock;
    pthread_cond_t commit_cond;
    job *commit_head, *commit_tail;
    bool commit_stop;
    /* closed recordings whose seal waits to be retried (committer only) */
    store_recording *unsealed;
    /* while stopping: when a seal that still cannot be written is given up */
    _Atomic int64_t seal_give_up_ns;
    /* open recordings, for flush and recovery */
    pthread_mutex_t open_lock;
    pthread_cond_t open_cond; /* a recording was sealed */
    store_recording *open;
    uint64_t inflight; /* submitted segments and closes not yet settled */
    int next_worker;
    /* O_DIRECT until the file system refuses it */
    _Atomic bool direct_io;
    /* stats */
    _Atomic uint64_t acked, failed, bytes, queue_full, fsyncs;
    pthread_mutex_t fsync_lock;
    uint32_t fsync_us[FSYNC_SAMPLES];
    uint64_t fsync_n;
};

/* ------------------------------------------------------------- queues */

static void queue_init(job_queue *q, int cap)
{
    q->ring = cu_xcalloc((size_t)cap, sizeof(job *));
    q->cap = cap;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->nonempty, NULL);
    pthread_cond_init(&q->nonfull, NULL);
}

static void queue_destroy(job_queue *q)
{
    free(q->ring);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->nonempty);
    pthread_cond_destroy(&q->nonfull);
}

/* Called with q->lock held and room available. */
static void queue_put_locked(job_queue *q, job *j)
{
    q->ring[(q->head + q->count) % q->cap] = j;
    q->count++;
    pthread_cond_signal(&q->nonempty);
}

static void queue_put_wait(job_queue *q, job *j)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == q->cap)
        pthread_cond_wait(&q->nonfull, &q->lock);
    queue_put_locked(q, j);
    pthread_mutex_unlock(&q->lock);
}

/* NULL once stopped and drained. */
static job *queue_take(job_queue *q)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == 0 && !q->stop)
        pthread_cond_wait(&q->nonempty, &q->lock);
    job *j = NULL;
    if (q->count) {
        j = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_cond_signal(&q->nonfull);
    }
    pthread_mutex_unlock(&q->lock);
    return j;
}

static void queue_stop(job_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_broadcast(&q->nonempty);
    pthread_mutex_unlock(&q->lock);
}

static void commit_put(store *s, job *j)
{
    pthread_mutex_lock(&s->commit_lock);
    j->next = NULL;
    if (s->commit_tail)
        s->commit_tail->next = j;
    else
        s->commit_head = j;
    s->commit_tail = j;
    pthread_cond_signal(&s->commit_cond);
    pthread_mutex_unlock(&s->commit_lock);
}

/* --------------------------------------------------------------- paths */

static void temp_path(const store_recording *r, uint64_t index, char out[PATH_MAX])
{
    snprintf(out, PATH_MAX, "%s/%08llu.seg.tmp", r->dir, (unsigned long long)index);
}

static void fail_job(job *j, const char *stage, int err)
{
    j->ok = false;
    j->stage = stage;
    j->err = err;
}

/* --------------------------------------------------------------- worker */

#define DIRECT_ALIGN 4096

static bool write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return false;
        }
        p += w;
        len -= (size_t)w;
    }
    return true;
}

/*
 * Write a segment image of @p len bytes. With O_DIRECT the whole blocks go
 * straight from @p img; the last partial block, if any, is then written
 * through the page cache (O_DIRECT cleared). Padding and truncating instead
 * would make the file system read the last block back to zero its tail.
 */
static bool write_image(int fd, const uint8_t *img, size_t len, bool direct)
{
    size_t body = direct ? len & ~(size_t)(DIRECT_ALIGN - 1) : len;
    if (!write_all(fd, img, body))
        return false;
    if (body == len)
        return true;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_DIRECT) != 0)
        return false;
    return write_all(fd, img + body, len - body);
}

/* Open the temp file, with O_DIRECT while the file system takes it. */
static int open_temp(store *s, const char *path, bool *direct)
{
    int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    *direct = atomic_load(&s->direct_io);
    if (*direct) {
        int fd = open(path, flags | O_DIRECT, 0640);
        if (fd >= 0 || errno != EINVAL)
            return fd;
        CU_LOG(CU_LOG_INFO, "store",
               "the file system does not take O_DIRECT; using the page "
               "cache");
        atomic_store(&s->direct_io, false);
        *direct = false;
    }
    return open(path, flags, 0640);
}

/*
 * Hash, chain, encrypt into the worker's file image, write the temp file.
 * The image is written with O_DIRECT: the bytes go from this buffer to the
 * disk without a copy through the page cache (which cost more CPU than the
 * encryption here): whole blocks direct, the tail through the page cache.
 */
static void worker_segment(worker *w, EVP_CIPHER_CTX *gcm, job *j)
{
    store_recording *r = j->rec;
    store_header *h = &j->found.h;
    char path[PATH_MAX];
    int n = 0;
    size_t file_len = STORE_HEADER_LEN + j->len + STORE_TAG_LEN;
    size_t padded = (file_len + DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1);

    if (padded > w->out_cap) {
        free(w->out);
        w->out = NULL;
        if (posix_memalign((void **)&w->out, DIRECT_ALIGN, padded) != 0) {
            w->out_cap = 0;
            fail_job(j, "allocate", ENOMEM);
            goto out;
        }
        w->out_cap = padded;
    }
    uint8_t *img = w->out;

    memset(h, 0, sizeof(*h));
    h->flags = j->meta.flags;
    h->recording = r->id;
    h->index = j->index;
    h->key_id = r->dek.key_id;
    store_nonce_for(j->index, h->nonce);
    h->start_us = j->meta.start_us;
    h->end_us = j->meta.end_us;
    h->packets = j->meta.packets;
    h->lost = j->meta.lost;
    h->plaintext_len = j->len;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        fail_job(j, "hash", ENOMEM);
        goto out;
    }
    for (const cu_chunk *c = j->data; c; c = c->next)
        EVP_DigestUpdate(md, c->data, c->len);
    EVP_DigestFinal_ex(md, h->sha256, NULL);
    EVP_MD_CTX_free(md);
    store_chain_next(r->chain, h, h->chain);
    memcpy(r->chain, h->chain, 32);
    store_header_encode(h, img);

    /* The whole header is the additional data: any change to it fails the tag. */
    uint8_t *ct = img + STORE_HEADER_LEN, *tag = ct + j->len;
    bool ok = EVP_EncryptInit_ex(gcm, NULL, NULL, r->dek.key, h->nonce) == 1 &&
              EVP_EncryptUpdate(gcm, NULL, &n, img, STORE_HEADER_LEN) == 1;
    size_t done = 0;
    for (const cu_chunk *c = j->data; ok && c; c = c->next) {
        ok = EVP_EncryptUpdate(gcm, ct + done, &n, c->data, (int)c->len) == 1;
        done += (size_t)n;
    }
    ok = ok && done == j->len && EVP_EncryptFinal_ex(gcm, ct + done, &n) == 1 &&
         EVP_CIPHER_CTX_ctrl(gcm, EVP_CTRL_GCM_GET_TAG, STORE_TAG_LEN, tag) == 1;
    /* The plaintext is no longer needed: its chunks go back at once. */
    cu_chunk_put(j->data);
    j->data = NULL;
    if (!ok) {
        fail_job(j, "encrypt", EIO);
        goto out;
    }
    store_xxh3(img, file_len, j->found.xxh3);
    j->found.file_len = file_len;

    bool direct;
    temp_path(r, j->index, path);
    j->fd = open_temp(w->s, path, &direct);
    if (j->fd < 0) {
        fail_job(j, "create", errno);
        goto out;
    }
    if (!write_image(j->fd, img, file_len, direct))
        fail_job(j, "write", errno);
out:
    cu_chunk_put(j->data);
    j->data = NULL;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_setname_np(pthread_self(), "store-work");
    /* Below the receive threads: when the CPUs are short, a segment can wait
     * in this queue, a datagram cannot wait in a full socket buffer. */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), WORKER_NICE) != 0)
        CU_LOG(CU_LOG_DEBUG, "store", "setpriority: %s", strerror(errno));
    EVP_CIPHER_CTX *gcm = EVP_CIPHER_CTX_new();
    if (!gcm || EVP_EncryptInit_ex(gcm, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1)
        abort();
    job *j;
    while ((j = queue_take(&w->q))) {
        j->ok = true;
        j->fd = -1;
        worker_segment(w, gcm, j);
        queue_put_wait(&w->s->sync_q, j);
    }
    EVP_CIPHER_CTX_free(gcm);
    free(w->out);
    w->out = NULL;
    return NULL;
}

/* --------------------------------------------------------------- syncer */

static void record_fsync(store *s, int64_t ns)
{
    uint32_t us = (uint32_t)(ns / 1000);
    pthread_mutex_lock(&s->fsync_lock);
    s->fsync_us[s->fsync_n % FSYNC_SAMPLES] = us;
    s->fsync_n++;
    pthread_mutex_unlock(&s->fsync_lock);
    atomic_fetch_add(&s->fsyncs, 1);
    cu_metric_inc(&st_fsync_metric);
    cu_metric_add(&st_fsync_us_metric, us);
}

static void *syncer_main(void *arg)
{
    store *s = arg;
    pthread_setname_np(pthread_self(), "store-sync");
    job *j;
    while ((j = queue_take(&s->sync_q))) {
        char tmp[PATH_MAX], final[PATH_MAX];
        temp_path(j->rec, j->index, tmp);
        if (j->fd >= 0) {
            if (j->ok) {
                int64_t t0 = cu_mono_ns();
                /* Never retried: after a failed fsync the page cache may
                 * already have dropped the dirty pages it could not write. */
                if (fsync(j->fd) != 0)
                    fail_job(j, "fsync", errno);
                record_fsync(s, cu_mono_ns() - t0);
            }
            if (close(j->fd) != 0 && j->ok)
                fail_job(j, "close", errno);
            j->fd = -1;
        }
        if (j->ok) {
            store_segment_path(j->rec->dir, j->index, final);
            if (rename(tmp, final) != 0) {
                fail_job(j, "rename", errno);
                unlink(final); /* a rename that failed half-way leaves nothing behind */
            } else {
                j->renamed = true;
            }
        }
        if (!j->ok)
            unlink(tmp);
        commit_put(s, j);
    }
    return NULL;
}

/* ------------------------------------------------------------ committer */

#define SEAL_RETRY_MIN_MS 200
#define SEAL_RETRY_MAX_MS 5000
#define SEAL_GIVE_UP_MS   10000 /* at a stop: then the next start seals it */

CU_METRIC_DEFINE(st_seal_failed_metric, CU_METRIC_COUNTER, "custos_store_seal_failures_total", "",
                 "Seal writes that failed (each is retried until it is on disk).")

/* Write @p r's seal durably; only then does the index learn it. */
static bool seal_write(store *s, store_recording *r)
{
    cu_err err;
    char id[37];
    store_seal seal = {
        .reason = atomic_load(&r->damaged) ? STORE_SEAL_DAMAGED : STORE_SEAL_CLOSED,
        .recording = r->id,
        .key_id = r->dek.key_id,
        .count = r->acked,
        .opened_us = r->opened_us,
        .sealed_us = cu_time_ms() * 1000,
    };
    uint8_t buf[STORE_SEAL_LEN];
    memcpy(seal.head, r->acked_head, 32);
    store_seal_encode(&seal, r->dek.key, buf);
    if (cu_file_write_durably(r->dir, "seal", buf, sizeof(buf), 0640, &err) != CU_OK) {
        store_id_format(&r->id, id);
        cu_metric_inc(&st_seal_failed_metric);
        CU_LOG(CU_LOG_ERROR, "store", "recording %s: sealing failed (attempt %d): %s; retrying", id,
               r->seal_attempts + 1, err.msg);
        return false;
    }
    store_index_push_seal(s->index, &seal, r->opened_us, &r->origin);
    return true;
}
static void recording_free(store *s, store_recording *r)
{
    pthread_mutex_lock(&s->open_lock);
    for (store_recording **p = &s->open; *p; p = &(*p)->next_open) {
        if (*p == r) {
            *p = r->next_open;
            break;
        }
    }
    cu_metric_add(&st_open_metric, -1);
    pthread_mutex_unlock(&s->open_lock);
    store_dek_wipe(&r->dek);
    free(r);
}

static void settle_done(store *s)
{
    pthread_mutex_lock(&s->open_lock);
    s->inflight--;
    pthread_cond_broadcast(&s->open_cond);
    pthread_mutex_unlock(&s->open_lock);
}

/* Settle the next job of @p r in index order. Returns true if it freed @p r. */
static bool settle(store *s, store_recording *r, job *j)
{
    char id[37];
    if (j->kind == JOB_CLOSE) {
        free(j);
        if (seal_write(s, r)) {
            recording_free(s, r);
            settle_done(s);
        } else {
            /* Kept (key, list entry, in-flight count) until its seal is on
             * disk: the committer retries it. */
            r->seal_attempts = 1;
            r->seal_retry_ns = cu_mono_ns() + (int64_t)SEAL_RETRY_MIN_MS * 1000000;
            r->next_unsealed = s->unsealed;
            s->unsealed = r;
        }
        return true;
    }
    bool ok = j->ok && !atomic_load(&r->damaged);
    if (j->ok && !ok) {
        /* Durable, but after a failed segment: kept, never acknowledged. */
        char final[PATH_MAX], orphan[PATH_MAX + 8];
        store_segment_path(r->dir, j->index, final);
        snprintf(orphan, sizeof(orphan), "%s.orphan", final);
        if (rename(final, orphan) != 0)
            CU_LOG_ERRNO(CU_LOG_ERROR, "store", errno, "cannot set aside %s", final);
        cu_metric_inc(&st_orphan_metric);
    }
    if (!j->ok && j->renamed) {
        /* Renamed, but its directory entry is not known to be durable: never
         * left under a segment's name. The damaged seal's own directory
         * fsync makes the removal durable. */
        char final[PATH_MAX];
        store_segment_path(r->dir, j->index, final);
        if (unlink(final) != 0 && errno != ENOENT)
            CU_LOG_ERRNO(CU_LOG_ERROR, "store", errno, "cannot remove %s", final);
    }
    if (!j->ok) {
        store_id_format(&r->id, id);
        CU_LOG_ERRNO(CU_LOG_ERROR, "store", j->err,
                     "recording %s segment %llu not stored (%s failed); recording marked damaged",
                     id, (unsigned long long)j->index, j->stage);
        if (!atomic_exchange(&r->damaged, true))
            cu_metric_inc(&st_damaged_metric);
        atomic_fetch_add(&s->failed, 1);
        cu_metric_inc(&st_failed_metric);
    }
    if (ok) {
        r->acked++;
        memcpy(r->acked_head, j->found.h.chain, 32);
        atomic_fetch_add(&s->acked, 1);
        atomic_fetch_add(&s->bytes, j->len);
        cu_metric_inc(&st_acked_metric);
        cu_metric_add(&st_bytes_metric, (int64_t)j->len);
        store_index_push_segment(s->index, &j->found);
    }
    if (s->on_ack)
        s->on_ack(s->ack_ctx, &r->id, j->index, ok);
    r->next_ack++;
    free(j);
    settle_done(s);
    return false;
}

/* Hold @p j until every earlier index of its recording has settled. */
static void deliver(store *s, job *j)
{
    store_recording *r = j->rec;
    job **p = &r->held;
    while (*p && (*p)->index < j->index)
        p = &(*p)->next;
    j->next = *p;
    *p = j;
    while (r->held && r->held->index == r->next_ack) {
        job *next = r->held;
        r->held = next->next;
        if (settle(s, r, next))
            return; /* the close: r is gone */
    }
}

/* Seals due for another attempt; returns when the next one is due (0: none). */
static int64_t retry_seals(store *s)
{
    int64_t now = cu_mono_ns(), next = 0;
    int64_t give_up = atomic_load(&s->seal_give_up_ns);
    store_recording **p = &s->unsealed;
    while (*p) {
        store_recording *r = *p;
        bool done = false;
        if (r->seal_retry_ns <= now) {
            done = seal_write(s, r);
            r->seal_attempts++;
            if (!done && give_up && now >= give_up) {
                char id[37];
                store_id_format(&r->id, id);
                CU_LOG(CU_LOG_ERROR, "store",
                       "recording %s: seal still not written after %d attempts; stopping "
                       "without it (its key stays pending: the next start seals it)",
                       id, r->seal_attempts);
                done = true;
            }
            if (!done) {
                int64_t wait_ms = (int64_t)SEAL_RETRY_MIN_MS
                                  << (r->seal_attempts < 5 ? r->seal_attempts : 5);
                if (wait_ms > SEAL_RETRY_MAX_MS)
                    wait_ms = SEAL_RETRY_MAX_MS;
                r->seal_retry_ns = now + wait_ms * 1000000;
            }
        }
        if (done) {
            *p = r->next_unsealed;
            recording_free(s, r);
            settle_done(s);
            continue;
        }
        if (!next || r->seal_retry_ns < next)
            next = r->seal_retry_ns;
        p = &r->next_unsealed;
    }
    return next;
}

static void *committer_main(void *arg)
{
    store *s = arg;
    pthread_setname_np(pthread_self(), "store-commit");
    for (;;) {
        int64_t due = s->unsealed ? retry_seals(s) : 0;
        pthread_mutex_lock(&s->commit_lock);
        while (!s->commit_head && (!s->commit_stop || due)) {
            if (!due) {
                pthread_cond_wait(&s->commit_cond, &s->commit_lock);
                continue;
            }
            int64_t wait_ns = due - cu_mono_ns();
            if (wait_ns <= 0)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait_ns / 1000000000;
            ts.tv_nsec += wait_ns % 1000000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&s->commit_cond, &s->commit_lock, &ts);
            if (cu_mono_ns() >= due)
                break;
        }
        job *batch = s->commit_head;
        s->commit_head = s->commit_tail = NULL;
        bool stop = s->commit_stop;
        pthread_mutex_unlock(&s->commit_lock);
        if (!batch && stop && !s->unsealed)
            break;
        if (!batch)
            continue;

        /* Group commit: one fsync per directory for the whole batch. */
        for (job *j = batch; j; j = j->next) {
            if (j->kind != JOB_SEGMENT || !j->ok)
                continue;
            bool first = true;
            for (job *k = batch; k != j; k = k->next)
                if (k->kind == JOB_SEGMENT && k->rec == j->rec && k->ok)
                    first = false;
            if (!first)
                continue;
            int64_t t0 = cu_mono_ns();
            int rc = cu_fsync_dir(j->rec->dir);
            int e = errno;
            record_fsync(s, cu_mono_ns() - t0);
            if (rc != 0)
                for (job *k = j; k; k = k->next)
                    if (k->kind == JOB_SEGMENT && k->rec == j->rec && k->ok)
                        fail_job(k, "directory fsync", e);
        }
        while (batch) {
            job *next = batch->next;
            deliver(s, batch);
            batch = next;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ recordings */

static bool store_is_open(void *ctx, const store_id *recording)
{
    store *s = ctx;
    bool found = false;
    pthread_mutex_lock(&s->open_lock);
    for (store_recording *r = s->open; r && !found; r = r->next_open)
        found = store_id_equal(&r->id, recording);
    pthread_mutex_unlock(&s->open_lock);
    return found;
}

cu_rc store_recording_open(store *s, const store_recording_attrs *attrs, store_recording **out,
                           store_id *id_out, cu_err *err)
{
    cu_rc rc = CU_OK;
    store_recording *r = cu_xcalloc(1, sizeof(*r));
    char fan[PATH_MAX];
    bool listed = false;
    const char *given = attrs && attrs->meta ? attrs->meta : "";
    char *meta = NULL;
    uint8_t meta_sha[32];

    /* What a continuation goes on from is the meta file's first line: the
     * chain's genesis binds it. */
    if (attrs && attrs->continues) {
        char prev[37];
        store_id_format(attrs->continues, prev);
        meta = cu_xasprintf("continues=%s\n%s", prev, given);
        r->origin.continues = *attrs->continues;
        r->origin.has_continues = true;
    } else {
        meta = cu_xstrdup(given);
    }
    size_t meta_len = strlen(meta);
    if (meta_len > STORE_META_MAX) {
        free(meta);
        free(r);
        return cu_err_set(err, CU_ERR_INVALID, "recording meta is larger than %d bytes",
                          STORE_META_MAX);
    }
    r->s = s;
    r->origin.device_id = attrs ? attrs->device_id : 0;
    {
        store_origin from_meta = {0}; /* (the capture a track belongs to) */
        store_origin_parse(meta, meta_len, &from_meta);
        r->origin.capture = from_meta.capture;
        r->origin.has_capture = from_meta.has_capture;
    }
    r->opened_us = cu_time_ms() * 1000;
    if (RAND_bytes(r->id.b, 16) != 1) {
        rc = cu_err_set(err, CU_ERR_IO, "the random number generator failed");
        goto out;
    }
    rc = store_dek_new(s->keys, &r->id, &r->dek, err);
    if (rc)
        goto out;
    store_recording_dir(s->data_dir, &r->id, r->dir);
    EVP_Digest(meta, meta_len, meta_sha, NULL, EVP_sha256(), NULL);
    store_chain_genesis(&r->id, meta_sha, r->chain);
    memcpy(r->acked_head, r->chain, 32);
    /* Listed as open before its pending key exists, so that the index
     * thread's catch-up never takes it for a crashed recording. */
    pthread_mutex_lock(&s->open_lock);
    r->worker = s->next_worker++ % s->nworkers;
    r->next_open = s->open;
    s->open = r;
    cu_metric_add(&st_open_metric, 1);
    pthread_mutex_unlock(&s->open_lock);
    listed = true;
    /* The wrapped key is durable before any footage is written under it. */
    rc = store_pending_write(s->data_dir, &r->id, &r->dek, err);
    if (rc)
        goto out;
    cu_strlcpy(fan, r->dir, sizeof(fan));
    *strrchr(fan, '/') = '\0';
    rc = cu_mkdir_durable(fan, 0750, err);
    if (!rc)
        rc = cu_mkdir_durable(r->dir, 0750, err);
    if (!rc)
        rc = cu_file_write_durably(r->dir, "meta", meta, meta_len, 0640, err);
    if (rc) {
        store_pending_remove(s->data_dir, &r->id);
        goto out;
    }
    store_index_push_open(s->index, &r->id, &r->dek.key_id, r->opened_us, &r->origin, &r->dek);
    if (id_out)
        *id_out = r->id;
    *out = r;
    r = NULL;
out:
    free(meta);
    if (r && listed) {
        recording_free(s, r);
    } else if (r) {
        store_dek_wipe(&r->dek);
        free(r);
    }
    return rc;
}

cu_rc store_segment_submit(store_recording *r, cu_chunk *data, size_t len,
                           const store_segment_meta *meta, bool wait, uint64_t *index_out)
{
    store *s = r->s;
    worker *w = &s->workers[r->worker];
    size_t chained = 0;
    for (const cu_chunk *c = data; c; c = c->next)
        chained += c->len;
    if (chained != len || len > STORE_SEGMENT_MAX || meta->end_us < meta->start_us ||
        (meta->flags & ~(uint32_t)(STORE_SEG_LOSS | STORE_SEG_GAP_START | STORE_SEG_LAST)) ||
        atomic_load(&r->damaged)) {
        cu_chunk_put(data);
        return CU_ERR_INVALID;
    }
    job *j = cu_xcalloc(1, sizeof(*j));
    j->kind = JOB_SEGMENT;
    j->rec = r;
    j->data = data;
    j->len = len;
    j->meta = *meta;
    j->fd = -1;

    pthread_mutex_lock(&w->q.lock);
    if (r->closing) {
        pthread_mutex_unlock(&w->q.lock);
        cu_chunk_put(data);
        free(j);
        return CU_ERR_INVALID;
    }
    while (w->q.count == w->q.cap) {
        if (!wait) {
            pthread_mutex_unlock(&w->q.lock);
            cu_chunk_put(data);
            free(j);
            atomic_fetch_add(&s->queue_full, 1);
            cu_metric_inc(&st_queue_full_metric);
            return CU_ERR_BUSY;
        }
        pthread_cond_wait(&w->q.nonfull, &w->q.lock);
    }
    uint64_t index = j->index = r->next_index++;
    pthread_mutex_lock(&s->open_lock);
    s->inflight++;
    pthread_mutex_unlock(&s->open_lock);
    queue_put_locked(&w->q, j); /* the job is the worker's from here: it may be freed at once */
    pthread_mutex_unlock(&w->q.lock);
    if (index_out)
        *index_out = index;
    return CU_OK;
}

bool store_recording_damaged(const store_recording *r)
{
    return atomic_load(&r->damaged);
}

void store_recording_close(store_recording *r)
{
    store *s = r->s;
    worker *w = &s->workers[r->worker];
    job *j = cu_xcalloc(1, sizeof(*j));
    j->kind = JOB_CLOSE;
    j->rec = r;
    j->fd = -1;
    pthread_mutex_lock(&w->q.lock);
    r->closing = true;
    j->index = r->next_index; /* settles after every segment before it */
    pthread_mutex_unlock(&w->q.lock);
    pthread_mutex_lock(&s->open_lock);
    s->inflight++;
    pthread_mutex_unlock(&s->open_lock);
    commit_put(s, j);
}

void store_flush(store *s)
{
    pthread_mutex_lock(&s->open_lock);
    while (s->inflight)
        pthread_cond_wait(&s->open_cond, &s->open_lock);
    pthread_mutex_unlock(&s->open_lock);
}

bool store_index_wait(store *s, int timeout_ms)
{
    return store_index_wait_idle(s->index, timeout_ms);
}

/* ------------------------------------------------------------ lifecycle */

/* Temp files are never segments: remove those a crash left. Only
 * recordings with a pending key can have any (the rest are sealed). */
static cu_rc remove_crash_leftovers(const char *data_dir, cu_err *err)
{
    store_id *list = NULL;
    size_t n = 0;
    cu_rc rc = store_pending_list(data_dir, &list, &n, err);
    for (size_t i = 0; !rc && i < n; i++) {
        char dir[PATH_MAX], seal[PATH_MAX + 8];
        store_recording_dir(data_dir, &list[i], dir);
        snprintf(seal, sizeof(seal), "%s/seal", dir);
        if (access(seal, F_OK) != 0)
            store_remove_temp_files(dir);
    }
    free(list);
    return rc;
}

cu_rc store_open(const store_opts *o, store **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    store *s = cu_xcalloc(1, sizeof(*s));
    char path[PATH_MAX + 16];
    int started_workers = 0, started_syncers = 0;
    bool committer_started = false;

    cu_strlcpy(s->data_dir, o->data_dir, sizeof(s->data_dir));
    atomic_store(&s->direct_io, true);
    s->on_ack = o->on_ack;
    s->ack_ctx = o->ack_ctx;
    /* Four per CPU: a worker spends much of its time waiting on its O_DIRECT
     * write or on the CPU, and a recording is pinned to one worker. */
    s->nworkers = o->workers > 0 ? o->workers : 4 * (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s->nworkers < 1)
        s->nworkers = 1;
    s->nsyncers = o->syncers > 0 ? o->syncers : 4;
    int qcap = o->queue_segments > 0 ? o->queue_segments : 64;
    pthread_mutex_init(&s->commit_lock, NULL);
    pthread_cond_init(&s->commit_cond, NULL);
    pthread_mutex_init(&s->open_lock, NULL);
    pthread_cond_init(&s->open_cond, NULL);
    pthread_mutex_init(&s->fsync_lock, NULL);
    queue_init(&s->sync_q, SYNC_QUEUE_MAX);
    s->workers = cu_xcalloc((size_t)s->nworkers, sizeof(worker));
    s->syncers = cu_xcalloc((size_t)s->nsyncers, sizeof(pthread_t));
    for (int i = 0; i < s->nworkers; i++) {
        s->workers[i].s = s;
        queue_init(&s->workers[i].q, qcap);
    }

    s->keys = o->keys;
    if (!s->keys) {
        rc = cu_err_set(err, CU_ERR_INVALID, "store: no keys given");
        goto out;
    }
    /* Pending data keys stay in the data dir wherever the KEKs live. */
    static const char *const dirs[] = {"segments", "keys", "keys/pending"};
    for (size_t i = 0; i < CU_ARRAY_LEN(dirs); i++) {
        snprintf(path, sizeof(path), "%s/%s", s->data_dir, dirs[i]);
        rc = cu_mkdir_durable(path, 0700, err);
        if (rc)
            goto out;
    }
    rc = remove_crash_leftovers(s->data_dir, err);
    if (rc)
        goto out;
    rc = store_index_start(s->data_dir, o->dsn, s->keys, store_is_open, s, &s->index, err);
    if (rc)
        goto out;

    for (; started_workers < s->nworkers; started_workers++)
        if (pthread_create(&s->workers[started_workers].thread, NULL, worker_main,
                           &s->workers[started_workers]) != 0)
            break;
    for (; started_syncers < s->nsyncers; started_syncers++)
        if (pthread_create(&s->syncers[started_syncers], NULL, syncer_main, s) != 0)
            break;
    committer_started = pthread_create(&s->committer, NULL, committer_main, s) == 0;
    if (started_workers < s->nworkers || started_syncers < s->nsyncers || !committer_started) {
        rc = cu_err_set(err, CU_ERR_IO, "cannot start the store's threads");
        goto out;
    }
    *out = s;
    return CU_OK;
out:
    for (int i = 0; i < started_workers; i++) {
        queue_stop(&s->workers[i].q);
        pthread_join(s->workers[i].thread, NULL);
    }
    queue_stop(&s->sync_q);
    for (int i = 0; i < started_syncers; i++)
        pthread_join(s->syncers[i], NULL);
    if (committer_started) {
        pthread_mutex_lock(&s->commit_lock);
        s->commit_stop = true;
        pthread_cond_signal(&s->commit_cond);
        pthread_mutex_unlock(&s->commit_lock);
        pthread_join(s->committer, NULL);
    }
    store_index_stop(s->index, 0);
    for (int i = 0; i < s->nworkers; i++)
        queue_destroy(&s->workers[i].q);
    queue_destroy(&s->sync_q);
    free(s->workers);
    free(s->syncers);
    free(s);
    return rc;
}

void store_close(store *s, int index_wait_ms)
{
    if (!s)
        return;
    /* Seal what is still open, then let every job settle. */
    for (;;) {
        pthread_mutex_lock(&s->open_lock);
        store_recording *r = s->open;
        while (r && r->closing)
            r = r->next_open;
        pthread_mutex_unlock(&s->open_lock);
        if (!r)
            break;
        store_recording_close(r);
    }
    /* A seal the disk keeps refusing is given up after a while: the
     * recording's pending key makes the next start seal it. */
    atomic_store(&s->seal_give_up_ns, cu_mono_ns() + (int64_t)SEAL_GIVE_UP_MS * 1000000);
    pthread_mutex_lock(&s->commit_lock);
    pthread_cond_signal(&s->commit_cond);
    pthread_mutex_unlock(&s->commit_lock);
    store_flush(s);

    for (int i = 0; i < s->nworkers; i++) {
        queue_stop(&s->workers[i].q);
        pthread_join(s->workers[i].thread, NULL);
    }
    queue_stop(&s->sync_q);
    for (int i = 0; i < s->nsyncers; i++)
        pthread_join(s->syncers[i], NULL);
    pthread_mutex_lock(&s->commit_lock);
    s->commit_stop = true;
    pthread_cond_signal(&s->commit_cond);
    pthread_mutex_unlock(&s->commit_lock);
    pthread_join(s->committer, NULL);
    store_index_stop(s->index, index_wait_ms);
    for (int i = 0; i < s->nworkers; i++)
        queue_destroy(&s->workers[i].q);
    queue_destroy(&s->sync_q);
    pthread_mutex_destroy(&s->commit_lock);
    pthread_cond_destroy(&s->commit_cond);
    pthread_mutex_destroy(&s->open_lock);
    pthread_cond_destroy(&s->open_cond);
    pthread_mutex_destroy(&s->fsync_lock);
    free(s->workers);
    free(s->syncers);
    free(s);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void store_stats_get(store *s, store_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->segments_acked = atomic_load(&s->acked);
    out->segments_failed = atomic_load(&s->failed);
    out->bytes_acked = atomic_load(&s->bytes);
    out->queue_full = atomic_load(&s->queue_full);
    out->fsyncs = atomic_load(&s->fsyncs);
    pthread_mutex_lock(&s->fsync_lock);
    size_t n = s->fsync_n < FSYNC_SAMPLES ? (size_t)s->fsync_n : FSYNC_SAMPLES;
    uint32_t *copy = cu_xmalloc((n ? n : 1) * sizeof(uint32_t));
    memcpy(copy, s->fsync_us, n * sizeof(uint32_t));
    pthread_mutex_unlock(&s->fsync_lock);
    if (n) {
        qsort(copy, n, sizeof(uint32_t), cmp_u32);
        out->fsync_ms_p50 = copy[n / 2] / 1000.0;
        out->fsync_ms_p99 = copy[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] / 1000.0;
    }
    free(copy);
    store_index_stats(s->index, &out->index_rows, &out->index_pending, &out->index_connected);
}
