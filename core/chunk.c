/*
 * Chunks: the memory segments are built in. A stream's segment grows one
 * 64 KiB chunk at a time, so a stream holds about what it has received
 * (not a buffer sized for its largest segment); the store returns chunks
 * as soon as it has encrypted them. Freed chunks are kept for reuse, which
 * spares the page faults of fresh memory and the TLB shootdowns of giving it
 * back from another thread.
 */
#include "core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX_CHUNKS 4096 /* 256 MiB */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static cu_chunk *pool;
static size_t pooled;

CU_METRIC_DEFINE(chunks_cached_metric, CU_METRIC_GAUGE, "custos_chunks_cached", "",
                 "64 KiB chunks kept for reuse.")
CU_METRIC_DEFINE(chunks_live_metric, CU_METRIC_GAUGE, "custos_chunks_in_use", "",
                 "64 KiB chunks holding segment data now.")

cu_chunk *cu_chunk_get(void)
{
    pthread_mutex_lock(&pool_lock);
    cu_chunk *c = pool;
    if (c) {
        pool = c->next;
        pooled--;
    }
    pthread_mutex_unlock(&pool_lock);
    if (!c) {
        c = malloc(sizeof(*c));
        if (!c)
            return NULL;
    } else {
        cu_metric_add(&chunks_cached_metric, -1);
    }
    cu_metric_inc(&chunks_live_metric);
    c->next = NULL;
    c->len = 0;
    return c;
}

void cu_chunk_put(cu_chunk *chain)
{
    while (chain) {
        cu_chunk *next = chain->next;
        cu_metric_add(&chunks_live_metric, -1);
        pthread_mutex_lock(&pool_lock);
        bool keep = pooled < CACHE_MAX_CHUNKS;
        if (keep) {
            chain->next = pool;
            pool = chain;
            pooled++;
        }
        pthread_mutex_unlock(&pool_lock);
        if (keep)
            cu_metric_inc(&chunks_cached_metric);
        else
            free(chain);
        chain = next;
    }
}

bool cu_chunk_append(cu_chunk **head, cu_chunk **tail, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        if (!*tail || (*tail)->len == CU_CHUNK_SIZE) {
            cu_chunk *c = cu_chunk_get();
            if (!c)
                return false;
            if (*tail)
                (*tail)->next = c;
            else
                *head = c;
            *tail = c;
        }
        size_t room = CU_CHUNK_SIZE - (*tail)->len;
        size_t n = len < room ? len : room;
        memcpy((*tail)->data + (*tail)->len, p, n);
        (*tail)->len += n;
        p += n;
        len -= n;
    }
    return true;
}

void cu_chunk_copy_out(const cu_chunk *c, size_t off, void *out, size_t len)
{
    uint8_t *o = out;
    while (c && off >= c->len) {
        off -= c->len;
        c = c->next;
    }
    while (c && len) {
        size_t n = c->len - off < len ? c->len - off : len;
        memcpy(o, c->data + off, n);
        o += n;
        len -= n;
        off = 0;
        c = c->next;
    }
}
