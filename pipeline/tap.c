/*
 * The live tap (pipeline.h, docs/live.md "The tap"): a single-producer,
 * single-consumer ring of preallocated packet slots. The producer owns the
 * tail, the consumer the head; each publishes its index with a release
 * store and reads the other's with an acquire load, so a slot is never
 * read while written. Nothing here allocates after pipe_tap_create().
 */
#include "pipeline.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t arrival_us;
    uint16_t len;
    uint8_t data[PIPE_RTP_MAX];
} tap_slot;

struct pipe_tap {
    atomic_uint refs;
    atomic_bool ended;
    uint32_t mask;
    /* Each side's index on its own cache line: the two do not bounce one. */
    _Alignas(64) atomic_size_t tail; /* written by the producer */
    atomic_uint_least64_t dropped;
    _Alignas(64) atomic_size_t head; /* written by the consumer */
    _Alignas(64) tap_slot slots[];
};

pipe_tap *pipe_tap_create(uint32_t slots)
{
    if (slots < 16 || slots > 65536 || (slots & (slots - 1)))
        return NULL;
    pipe_tap *t = aligned_alloc(64, (sizeof(*t) + slots * sizeof(tap_slot) + 63) / 64 * 64);
    if (!t)
        return NULL;
    memset(t, 0, sizeof(*t));
    atomic_init(&t->refs, 1);
    atomic_init(&t->ended, false);
    atomic_init(&t->tail, 0);
    atomic_init(&t->head, 0);
    atomic_init(&t->dropped, 0);
    t->mask = slots - 1;
    return t;
}

void pipe_tap_ref(pipe_tap *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void pipe_tap_unref(pipe_tap *t)
{
    if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        free(t);
}

bool pipe_tap_offer(pipe_tap *t, const uint8_t *pkt, size_t len, int64_t arrival_us)
{
    size_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&t->head, memory_order_acquire);
    if (len > PIPE_RTP_MAX || tail - head > t->mask) {
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
        return false;
    }
    tap_slot *s = &t->slots[tail & t->mask];
    memcpy(s->data, pkt, len);
    s->len = (uint16_t)len;
    s->arrival_us = arrival_us;
    atomic_store_explicit(&t->tail, tail + 1, memory_order_release);
    return true;
}

bool pipe_tap_take(pipe_tap *t, uint8_t *out, size_t *len, int64_t *arrival_us)
{
    size_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&t->tail, memory_order_acquire);
    if (head == tail)
        return false;
    const tap_slot *s = &t->slots[head & t->mask];
    memcpy(out, s->data, s->len);
    *len = s->len;
    *arrival_us = s->arrival_us;
    atomic_store_explicit(&t->head, head + 1, memory_order_release);
    return true;
}

void pipe_tap_end(pipe_tap *t)
{
    atomic_store_explicit(&t->ended, true, memory_order_release);
}

bool pipe_tap_ended(const pipe_tap *t)
{
    return atomic_load_explicit(&((pipe_tap *)t)->ended, memory_order_acquire);
}

uint64_t pipe_tap_dropped(const pipe_tap *t)
{
    return atomic_load_explicit(&((pipe_tap *)t)->dropped, memory_order_relaxed);
}
