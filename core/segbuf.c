/*
 * Large buffers, recycled. A segment buffer is filled on an ingest thread
 * and freed on a store thread; fresh memory of that size comes from mmap, so
 * each one would cost a page fault per 4 KiB on the first thread and a
 * cross-CPU TLB shootdown when the second unmaps it. Keeping freed buffers
 * for reuse removes both. Blocks are grouped in power-of-two classes.
 */
#include "core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CLASS_MIN_SHIFT 16 /* 64 KiB */
#define CLASSES         12 /* ... 128 MiB */
#define HEADER          64 /* keeps the caller's pointer 64-byte aligned */
#define CACHE_MAX       ((size_t)512 << 20)

typedef struct block {
    struct block *next;
    uint32_t class_idx;
} block;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static block *free_lists[CLASSES];
static size_t cached_bytes;

CU_METRIC_DEFINE(segbuf_cached_metric, CU_METRIC_GAUGE, "custos_segment_buffers_cached_bytes", "",
                 "Bytes of segment buffers kept for reuse.")

static int class_for(size_t size)
{
    for (int c = 0; c < CLASSES; c++)
        if (size + HEADER <= (size_t)1 << (CLASS_MIN_SHIFT + c))
            return c;
    return -1;
}

static size_t class_bytes(int c)
{
    return (size_t)1 << (CLASS_MIN_SHIFT + c);
}

void *cu_segbuf_alloc(size_t size, size_t *cap)
{
    int c = class_for(size);
    if (c < 0)
        return NULL;
    pthread_mutex_lock(&pool_lock);
    block *b = free_lists[c];
    if (b) {
        free_lists[c] = b->next;
        cached_bytes -= class_bytes(c);
        cu_metric_set(&segbuf_cached_metric, (int64_t)cached_bytes);
    }
    pthread_mutex_unlock(&pool_lock);
    if (!b) {
        if (posix_memalign((void **)&b, HEADER, class_bytes(c)) != 0)
            return NULL;
    }
    b->class_idx = (uint32_t)c;
    if (cap)
        *cap = class_bytes(c) - HEADER;
    return (uint8_t *)b + HEADER;
}

void cu_segbuf_free(void *p)
{
    if (!p)
        return;
    block *b = (block *)(void *)((uint8_t *)p - HEADER);
    int c = (int)b->class_idx;
    pthread_mutex_lock(&pool_lock);
    if (cached_bytes + class_bytes(c) <= CACHE_MAX) {
        b->next = free_lists[c];
        free_lists[c] = b;
        cached_bytes += class_bytes(c);
        cu_metric_set(&segbuf_cached_metric, (int64_t)cached_bytes);
        b = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    free(b);
}

void *cu_segbuf_grow(void *p, size_t used, size_t need, size_t *cap)
{
    void *q = cu_segbuf_alloc(need, cap);
    if (!q)
        return NULL;
    if (p) {
        memcpy(q, p, used);
        cu_segbuf_free(p);
    }
    return q;
}
