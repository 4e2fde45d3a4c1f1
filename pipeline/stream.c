/*
 * One stream: the reorder window and the segmenter (docs/pipeline.md).
 * In-order packets are copied once, from the receive buffer into the
 * segment buffer; only packets that arrive ahead of a gap are held, in
 * slots of the thread's pool.
 */
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>

#define SEGMENT_MAX (60u * 1024 * 1024) /* under the store's 64 MiB */

/* ------------------------------------------------------------------ pool */

typedef struct {
    uint16_t len;
    int64_t arrival_us;
    uint8_t data[PIPE_RTP_MAX];
} pool_slot;

struct pipe_pool {
    pool_slot *slots;
    int *free_list;
    int nfree, nslots;
};

pipe_pool *pipe_pool_create(int slots)
{
    pipe_pool *p = cu_xcalloc(1, sizeof(*p));
    p->slots = cu_xcalloc((size_t)slots, sizeof(pool_slot));
    p->free_list = cu_xcalloc((size_t)slots, sizeof(int));
    p->nslots = slots;
    for (int i = 0; i < slots; i++)
        p->free_list[p->nfree++] = i;
    return p;
}

void pipe_pool_destroy(pipe_pool *p)
{
    if (!p)
        return;
    free(p->slots);
    free(p->free_list);
    free(p);
}

int pipe_pool_free_slots(const pipe_pool *p)
{
    return p->nfree;
}

static int pool_take(pipe_pool *p)
{
    return p->nfree ? p->free_list[--p->nfree] : -1;
}

static void pool_give(pipe_pool *p, int slot)
{
    p->free_list[p->nfree++] = slot;
}

/* ---------------------------------------------------------------- stream */

struct pipe_stream {
    pipe_stream_config cfg;
    uint32_t ssrc;
    pipe_segment_fn fn;
    void *ctx;
    pipe_stream_stats stats;

    /* reorder window: ring of pool slots, indexed by seq & mask */
    bool started;
    bool starting; /* the first reorder_us: everything is held, the
                    * lowest sequence number seen becomes the start */
    int64_t start_deadline_us;
    uint16_t top; /* highest sequence number held while starting */
    uint16_t expected;
    uint32_t mask;
    int *held_slot; /* -1 when empty */
    int held;
    int64_t oldest_held_us;
    uint32_t pending_lost; /* lost before the next packet emitted */

    /* capture clock */
    bool have_anchor;
    uint32_t anchor_ts;
    int64_t anchor_us;

    /* segment being built */
    cu_chunk *head, *tail; /* the segment being built; NULL before the first packet */
    size_t len;
    uint32_t seg_packets, seg_lost;
    int64_t seg_start_us, seg_end_us;
    uint32_t seg_start_ts; /* durations for cutting are measured in RTP time:
                            * a sender report may move the wall-clock mapping */
    bool seg_gap_start, seg_key_start;

    /* the access unit being appended (a run of one RTP timestamp) */
    bool au_open, au_key;
    uint32_t au_ts;
    size_t au_off;
    uint32_t au_packets, au_lost;
    int64_t au_start_us, au_prev_end_us;
};

static uint32_t round_pow2(int n)
{
    uint32_t v = 1;
    while ((int)v < n)
        v <<= 1;
    return v;
}

pipe_stream *pipe_stream_create(const pipe_stream_config *cfg, uint32_t ssrc, pipe_segment_fn fn,
                                void *ctx)
{
    pipe_stream *s = cu_xcalloc(1, sizeof(*s));
    s->cfg = *cfg;
    if (s->cfg.reorder_packets < 1)
        s->cfg.reorder_packets = 1;
    if (s->cfg.reorder_packets > 1024)
        s->cfg.reorder_packets = 1024;
    if (s->cfg.clock_rate == 0)
        s->cfg.clock_rate = 90000;
    s->ssrc = ssrc;
    s->fn = fn;
    s->ctx = ctx;
    s->mask = round_pow2(s->cfg.reorder_packets) - 1;
    s->held_slot = cu_xmalloc((s->mask + 1) * sizeof(int));
    for (uint32_t i = 0; i <= s->mask; i++)
        s->held_slot[i] = -1;
    return s;
}

/* A difference of RTP timestamps in microseconds (it may be negative). */
static int64_t ticks_to_us(const pipe_stream *s, uint32_t diff)
{
    return (int64_t)(int32_t)diff * 1000000 / s->cfg.clock_rate;
}

static int64_t capture_us(pipe_stream *s, uint32_t ts, int64_t arrival_us)
{
    if (!s->have_anchor) {
        s->have_anchor = true;
        s->anchor_ts = ts;
        s->anchor_us = arrival_us;
    }
    int32_t diff = (int32_t)(ts - s->anchor_ts);
    int64_t us = s->anchor_us + (int64_t)diff * 1000000 / s->cfg.clock_rate;
    /* Keep the anchor near: a 32-bit difference wraps after 2^31 ticks. */
    if (diff > (1 << 30) || diff < -(1 << 30)) {
        s->anchor_ts = ts;
        s->anchor_us = us;
    }
    return us;
}

void pipe_stream_clock(pipe_stream *s, uint32_t rtp_ts, int64_t wall_us)
{
    s->have_anchor = true;
    s->anchor_ts = rtp_ts;
    s->anchor_us = wall_us;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* A fresh segment holding only the payload header. */
static bool segment_begin(pipe_stream *s)
{
    uint8_t hdr[PIPE_PAYLOAD_HEADER];
    memcpy(hdr, "CRTP", 4);
    hdr[4] = 1;
    hdr[5] = (uint8_t)s->cfg.codec;
    hdr[6] = s->cfg.payload_type;
    hdr[7] = 0;
    put32(hdr + 8, s->cfg.clock_rate);
    put32(hdr + 12, s->ssrc);
    s->head = s->tail = NULL;
    if (!cu_chunk_append(&s->head, &s->tail, hdr, sizeof(hdr))) {
        cu_chunk_put(s->head);
        s->head = s->tail = NULL;
        return false;
    }
    s->len = PIPE_PAYLOAD_HEADER;
    s->seg_packets = s->seg_lost = 0;
    s->seg_gap_start = false;
    s->seg_key_start = false;
    return true;
}

/* Detach bytes [cut, len) of the chain into *@p rest (a new chain) and keep
 * [0, cut) in @p head. */
static bool chain_split(cu_chunk *head, size_t cut, cu_chunk **rest_head, cu_chunk **rest_tail)
{
    cu_chunk *c = head;
    size_t off = cut;
    while (c && off > c->len) {
        off -= c->len;
        c = c->next;
    }
    *rest_head = *rest_tail = NULL;
    if (!c)
        return true;
    bool ok = true;
    if (off < c->len)
        ok = cu_chunk_append(rest_head, rest_tail, c->data + off, c->len - off);
    for (cu_chunk *n = c->next; ok && n; n = n->next)
        ok = cu_chunk_append(rest_head, rest_tail, n->data, n->len);
    cu_chunk_put(c->next);
    c->next = NULL;
    c->len = off;
    return ok;
}

/* Hand over bytes [0, cut) as a segment; bytes [cut, len) (the access unit
 * in progress) start the next one. */
static void segment_cut(pipe_stream *s, size_t cut, bool last)
{
    cu_chunk *old = s->head;
    size_t tail = s->len - cut;
    bool tail_is_au = tail > 0 && s->au_open && s->au_off == cut;
    pipe_segment_info info = {
        .start_us = s->seg_start_us,
        .end_us = tail_is_au ? s->au_prev_end_us : s->seg_end_us,
        .packets = s->seg_packets - (tail_is_au ? s->au_packets : 0),
        .lost = s->seg_lost - (tail_is_au ? s->au_lost : 0),
        .gap_start = s->seg_gap_start,
        .keyframe_start = s->seg_key_start,
        .last = last,
    };
    if (info.end_us < info.start_us)
        info.end_us = info.start_us;

    uint8_t first_lost[2] = {0, 0};
    if (tail_is_au)
        cu_chunk_copy_out(old, cut + 2, first_lost, 2);
    cu_chunk *rest = NULL, *rest_tail = NULL;
    bool split_ok = chain_split(old, cut, &rest, &rest_tail);
    s->head = s->tail = NULL;
    s->len = 0;
    if (tail > 0 || !last) {
        /* The next segment, with the access unit carried over. */
        if (split_ok && segment_begin(s)) {
            s->tail->next = rest;
            if (rest)
                s->tail = rest_tail;
            rest = NULL;
            s->len += tail;
            if (tail_is_au) {
                s->seg_packets = s->au_packets;
                s->seg_lost = s->au_lost;
                s->seg_start_us = s->au_start_us;
                s->seg_start_ts = s->au_ts;
                s->seg_gap_start = s->seg_gap_start || first_lost[0] || first_lost[1];
                s->seg_key_start = s->au_key;
                s->au_off = PIPE_PAYLOAD_HEADER;
            }
        }
    }
    cu_chunk_put(rest);
    if (info.packets > 0) {
        s->stats.segments++;
        s->fn(s->ctx, old, cut, &info);
    } else {
        cu_chunk_put(old);
    }
}

/* Append one in-order packet to the segment: cut first where the rules say. */
static pipe_rtp_status emit(pipe_stream *s, const uint8_t *pkt, size_t len, int64_t arrival_us,
                            uint32_t lost_before)
{
    pipe_rtp r;
    pipe_rtp_status st = pipe_rtp_parse(pkt, len, &r);
    if (st)
        return st; /* checked on the way in; a held copy is the same bytes */
    int64_t cap = capture_us(s, r.timestamp, arrival_us);
    size_t need = PIPE_RECORD_HEADER + len;

    if (!s->head) {
        if (!segment_begin(s))
            return PIPE_RTP_NOMEM;
        s->au_open = false;
    }
    bool new_au = !s->au_open || r.timestamp != s->au_ts;
    if (new_au) {
        int64_t dur = ticks_to_us(s, r.timestamp - s->seg_start_ts);
        bool by_time =
            s->cfg.codec == PIPE_CODEC_AUDIO ? dur >= s->cfg.target_us : dur >= s->cfg.max_us;
        if (s->seg_packets > 0 && by_time) {
            s->au_open = false;
            segment_cut(s, s->len, false);
            if (!s->head)
                return PIPE_RTP_NOMEM;
        }
        s->au_open = true;
        s->au_key = false;
        s->au_ts = r.timestamp;
        s->au_off = s->len;
        s->au_packets = s->au_lost = 0;
        s->au_start_us = cap;
        s->au_prev_end_us = s->seg_end_us;
    }
    if (s->cfg.codec != PIPE_CODEC_AUDIO && !s->au_key) {
        int key = s->cfg.codec == PIPE_CODEC_H264 ? pipe_h264_keyframe(r.payload, r.payload_len)
                                                  : pipe_h265_keyframe(r.payload, r.payload_len);
        if (key == 1) {
            s->au_key = true;
            bool au_first = s->au_off == PIPE_PAYLOAD_HEADER;
            if (au_first)
                s->seg_key_start = true;
            else if (ticks_to_us(s, s->au_ts - s->seg_start_ts) >= s->cfg.target_us)
                segment_cut(s, s->au_off, false);
            if (!s->head)
                return PIPE_RTP_NOMEM;
        }
    }
    /* Too big for one segment (a pathological bitrate): cut here. */
    if (s->len + need > SEGMENT_MAX && s->seg_packets > 0) {
        s->au_open = false;
        segment_cut(s, s->len, false);
        if (!s->head)
            return PIPE_RTP_NOMEM;
        s->au_open = true;
        s->au_off = s->len;
        s->au_packets = s->au_lost = 0;
        s->au_start_us = cap;
    }
    uint8_t rec[PIPE_RECORD_HEADER];
    put16(rec, (uint16_t)len);
    put16(rec + 2, lost_before > 0xffff ? 0xffff : (uint16_t)lost_before);
    put64(rec + 4, (uint64_t)arrival_us);
    if (!cu_chunk_append(&s->head, &s->tail, rec, sizeof(rec)) ||
        !cu_chunk_append(&s->head, &s->tail, pkt, len)) {
        /* Out of memory: drop what was half appended, keep the segment. */
        size_t keep = s->len;
        cu_chunk *rest, *rest_tail;
        (void)chain_split(s->head, keep, &rest, &rest_tail);
        cu_chunk_put(rest);
        for (s->tail = s->head; s->tail->next; s->tail = s->tail->next) {
        }
        return PIPE_RTP_NOMEM;
    }
    s->len += need;

    if (s->seg_packets == 0) {
        s->seg_start_us = cap;
        s->seg_start_ts = r.timestamp;
        s->seg_end_us = cap;
        if (lost_before)
            s->seg_gap_start = true;
    }
    if (cap > s->seg_end_us)
        s->seg_end_us = cap;
    s->seg_packets++;
    s->seg_lost += lost_before;
    s->au_packets++;
    s->au_lost += lost_before;
    s->stats.packets++;
    s->stats.bytes += len;
    return PIPE_RTP_OK;
}

/* ---------------------------------------------------------------- window */

static void emit_held(pipe_stream *s, uint32_t idx)
{
    pool_slot *slot = &s->cfg.pool->slots[s->held_slot[idx]];
    if (emit(s, slot->data, slot->len, slot->arrival_us, s->pending_lost) == PIPE_RTP_OK)
        s->pending_lost = 0;
    pool_give(s->cfg.pool, s->held_slot[idx]);
    s->held_slot[idx] = -1;
    s->held--;
}

/* Emit held packets that are now in order. */
static void drain(pipe_stream *s)
{
    while (s->held && s->held_slot[s->expected & s->mask] >= 0) {
        emit_held(s, s->expected & s->mask);
        s->expected++;
    }
}

static void recompute_oldest(pipe_stream *s)
{
    s->oldest_held_us = INT64_MAX;
    for (uint32_t i = 0; s->held && i <= s->mask; i++)
        if (s->held_slot[i] >= 0) {
            int64_t a = s->cfg.pool->slots[s->held_slot[i]].arrival_us;
            if (a < s->oldest_held_us)
                s->oldest_held_us = a;
        }
}

/* Give up on the missing packet(s) before the first held one. */
static void skip_to_next_held(pipe_stream *s)
{
    for (uint32_t n = 0; s->held && n <= s->mask; n++) {
        if (s->held_slot[s->expected & s->mask] >= 0) {
            drain(s);
            break;
        }
        s->pending_lost++;
        s->stats.lost++;
        s->expected++;
    }
    recompute_oldest(s);
}

pipe_rtp_status pipe_stream_push(pipe_stream *s, const uint8_t *pkt, size_t len, int64_t arrival_us)
{
    pipe_rtp r;
    pipe_rtp_status st = pipe_rtp_parse(pkt, len, &r);
    if (st == PIPE_RTP_OK && r.payload_type != s->cfg.payload_type)
        st = PIPE_RTP_PAYLOAD_TYPE;
    if (st) {
        s->stats.invalid++;
        return st;
    }
    if (!s->started) {
        s->started = true;
        s->starting = true;
        s->start_deadline_us = arrival_us + s->cfg.reorder_us;
        s->expected = s->top = r.seq;
    }
    int16_t d = (int16_t)(uint16_t)(r.seq - s->expected);
    if (s->starting) {
        /* Until the window's time has passed once, a packet from before the
         * first one seen moves the start back instead of being late. */
        if (d < 0 && (uint16_t)(s->top - r.seq) <= s->mask && s->held_slot[r.seq & s->mask] < 0) {
            s->expected = r.seq;
            d = 1; /* held below, like any packet ahead */
        } else if (d >= 0 && (uint32_t)d <= s->mask) {
            if ((int16_t)(uint16_t)(r.seq - s->top) > 0)
                s->top = r.seq;
            if (d == 0)
                d = 1;
        } else {
            s->starting = false;
            d = (int16_t)(uint16_t)(r.seq - s->expected);
        }
    }
    if (d < 0) {
        s->stats.late++;
        return PIPE_RTP_OK;
    }
    if ((uint32_t)d > s->mask) {
        /* Far ahead: release everything held, count the jump as lost. */
        while (s->held)
            skip_to_next_held(s);
        uint16_t jump = (uint16_t)(r.seq - s->expected);
        s->pending_lost += jump;
        s->stats.lost += jump;
        s->expected = r.seq;
        d = 0;
    }
    if (d == 0) {
        st = emit(s, pkt, len, arrival_us, s->pending_lost);
        if (st == PIPE_RTP_OK)
            s->pending_lost = 0;
        s->expected++;
        drain(s);
        if (s->held)
            recompute_oldest(s);
        return st;
    }
    uint32_t idx = r.seq & s->mask;
    if (s->held_slot[idx] >= 0) {
        s->stats.late++; /* a duplicate of a held packet */
        return PIPE_RTP_OK;
    }
    int slot = pool_take(s->cfg.pool);
    if (slot < 0) {
        /* The thread's pool is exhausted: stop waiting for this gap. */
        skip_to_next_held(s);
        while (s->expected != r.seq) {
            s->pending_lost++;
            s->stats.lost++;
            s->expected++;
        }
        st = emit(s, pkt, len, arrival_us, s->pending_lost);
        if (st == PIPE_RTP_OK)
            s->pending_lost = 0;
        s->expected++;
        drain(s);
        return st;
    }
    pool_slot *ps = &s->cfg.pool->slots[slot];
    ps->len = (uint16_t)len;
    ps->arrival_us = arrival_us;
    memcpy(ps->data, pkt, len);
    s->held_slot[idx] = slot;
    if (s->held++ == 0 || arrival_us < s->oldest_held_us)
        s->oldest_held_us = arrival_us;
    return PIPE_RTP_OK;
}

static void end_start(pipe_stream *s)
{
    s->starting = false;
    drain(s);
    if (s->held)
        recompute_oldest(s);
}

void pipe_stream_tick(pipe_stream *s, int64_t now_us)
{
    if (s->starting && now_us >= s->start_deadline_us)
        end_start(s);
    while (s->held && now_us - s->oldest_held_us >= s->cfg.reorder_us)
        skip_to_next_held(s);
}

void pipe_stream_finish(pipe_stream *s)
{
    if (s->starting)
        end_start(s);
    while (s->held)
        skip_to_next_held(s);
    if (s->head) {
        s->au_open = false;
        segment_cut(s, s->len, true);
    }
}

void pipe_stream_stats_get(const pipe_stream *s, pipe_stream_stats *out)
{
    *out = s->stats;
}

void pipe_stream_destroy(pipe_stream *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i <= s->mask; i++)
        if (s->held_slot[i] >= 0)
            pool_give(s->cfg.pool, s->held_slot[i]);
    free(s->held_slot);
    cu_chunk_put(s->head);
    free(s);
}
