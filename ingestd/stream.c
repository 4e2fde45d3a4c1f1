/*
 * A stream and the recording it fills (see ingest_internal.h): the pipeline
 * cuts segments; the first ones wait (a few) while the control thread opens
 * the recording; then each goes to the store without waiting. When the store
 * falls behind, the segment is counted as shortfall and the next one is
 * marked as following a gap; receiving goes on. When a write fails, the
 * damaged recording is closed (sealed over what was acknowledged) and the
 * stream goes on in a continuation recording linked to it; an open that
 * fails is tried again a second later. All on the stream's worker.
 */
#include "ingest_internal.h"

#include <stdlib.h>
#include <string.h>

#define PENDING_MAX 8 /* segments held while a recording is being opened */

CU_METRIC_DEFINE(lost_metric, CU_METRIC_COUNTER, "custos_ingest_packets_lost_total", "",
                 "Packets never received (sequence gaps past the reorder window).")
CU_METRIC_DEFINE(late_metric, CU_METRIC_COUNTER, "custos_ingest_packets_late_total", "",
                 "Packets that arrived after being counted lost.")
CU_METRIC_DEFINE(streams_metric, CU_METRIC_GAUGE, "custos_ingest_streams", "",
                 "Streams receiving now.")
CU_METRIC_DEFINE(segments_metric, CU_METRIC_COUNTER, "custos_ingest_segments_total", "",
                 "Segments handed to the store.")
CU_METRIC_DEFINE(shortfall_metric, CU_METRIC_COUNTER, "custos_ingest_shortfall_segments_total", "",
                 "Segments the store could not take (it fell behind): footage not kept.")
CU_METRIC_DEFINE(recordings_metric, CU_METRIC_COUNTER, "custos_ingest_recordings_total", "",
                 "Recordings started.")
CU_METRIC_DEFINE(continuations_metric, CU_METRIC_COUNTER, "custos_ingest_continuations_total", "",
                 "Recordings a stream went on in after a failed write damaged its recording.")

#define REOPEN_DELAY_US 1000000 /* after a failed open */

ingest_stream *ingest_stream_new(ingest_worker *w, int64_t device_id, const char *serial,
                                 const char *label)
{
    ingest_stream *st = cu_xcalloc(1, sizeof(*st));
    st->w = w;
    st->id = ++w->next_stream_id;
    st->device_id = device_id;
    cu_strlcpy(st->serial, serial, sizeof(st->serial));
    cu_strlcpy(st->label, label, sizeof(st->label));
    st->next = w->streams;
    if (w->streams)
        w->streams->prev = st;
    w->streams = st;
    return st;
}

static live_handle live_handle_of(const ingest_stream *st)
{
    return (live_handle){.worker = st->w->index, .stream_id = st->id, .epoch = st->live_epoch};
}

/* The stream's viewers have nothing more to read from its tap. */
static void tap_end(ingest_stream *st)
{
    if (!st->tap)
        return;
    pipe_tap_end(st->tap);
    pipe_tap_unref(st->tap);
    st->tap = NULL;
}

void ingest_stream_tap(ingest_worker *w, msg *m)
{
    ingest_stream *st = w->streams;
    while (st && st->id != m->stream_id)
        st = st->next;
    if (!m->attach) {
        if (st && st->tap == m->tap)
            tap_end(st);
        return;
    }
    if (st && st->pipe && st->live_epoch == m->epoch) {
        tap_end(st); /* (a tap of an earlier viewer pipeline, if any) */
        st->tap = m->tap;
    } else {
        pipe_tap_end(m->tap); /* that start of the stream is over */
        pipe_tap_unref(m->tap);
    }
    m->tap = NULL;
}

static void stream_free(ingest_stream *st)
{
    ingest_worker *w = st->w;
    if (st->prev)
        st->prev->next = st->next;
    else
        w->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    while (st->pending) {
        pending_seg *p = st->pending;
        st->pending = p->next;
        cu_chunk_put(p->data);
        free(p);
    }
    free(st->meta);
    free(st);
}

/* Ask the control thread for the stream's next recording (generation on). */
static void request_open(ingest_stream *st)
{
    ingest_worker *w = st->w;
    open_req *r = cu_xcalloc(1, sizeof(*r));
    st->generation++;
    r->worker = w->index;
    r->stream_id = st->id;
    r->generation = st->generation;
    r->device_id = st->device_id;
    r->meta = cu_xstrdup(st->meta ? st->meta : "");
    r->continues = st->continues;
    r->has_continues = st->has_continues;
    st->opening = true;
    w->opening++;
    ingest_request_open(w->svc, r);
}

/* Hold a segment for the recording being opened (a few at most). */
static void hold(ingest_stream *st, cu_chunk *data, size_t len, const store_segment_meta *m)
{
    if (st->npending >= PENDING_MAX) {
        cu_chunk_put(data);
        cu_metric_inc(&shortfall_metric);
        st->gap_next = true;
        return;
    }
    pending_seg *p = cu_xcalloc(1, sizeof(*p));
    p->data = data;
    p->len = len;
    p->meta = *m;
    p->generation = st->generation;
    pending_seg **tail = &st->pending;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    st->npending++;
}

/*
 * A write of st->rec failed: the store seals it over what it acknowledged
 * once it is closed; the stream goes on in a new recording that names it.
 */
static void continue_after_damage(ingest_stream *st)
{
    char id[37];
    store_id_format(&st->rec_id, id);
    CU_LOG(CU_LOG_ERROR, "ingest",
           "%s: a write of recording %s failed; it is sealed over its acknowledged segments and "
           "the stream goes on in a continuation recording",
           st->label, id);
    cu_metric_inc(&continuations_metric);
    store_recording_close(st->rec);
    st->rec = NULL;
    st->continues = st->rec_id;
    st->has_continues = true;
    request_open(st);
}

static void submit(ingest_stream *st, store_recording *rec, cu_chunk *data, size_t len,
                   store_segment_meta *m, bool wait)
{
    if (st->gap_next) {
        m->flags |= STORE_SEG_GAP_START;
        st->gap_next = false;
    }
    cu_rc rc = store_segment_submit(rec, data, len, m, wait, NULL);
    if (rc == CU_OK) {
        cu_metric_inc(&segments_metric);
    } else {
        /* The store fell behind (or the recording is damaged): counted, and
         * the next segment says a gap precedes it. Receiving goes on. */
        cu_metric_inc(&shortfall_metric);
        st->gap_next = true;
    }
}

static void on_segment(void *ctx, cu_chunk *data, size_t len, const pipe_segment_info *info)
{
    ingest_stream *st = ctx;
    int64_t now_us = st->last_us;
    store_segment_meta m = {.start_us = info->start_us,
                            .end_us = info->end_us,
                            .packets = info->packets,
                            .lost = info->lost,
                            .flags = (info->lost ? STORE_SEG_LOSS : 0) |
                                     (info->gap_start ? STORE_SEG_GAP_START : 0) |
                                     (info->last ? STORE_SEG_LAST : 0)};
    if (st->rec && store_recording_damaged(st->rec))
        continue_after_damage(st);
    if (st->rec) {
        submit(st, st->rec, data, len, &m, st->w->stopping);
        return;
    }
    if (!st->opening) {
        /* The last open failed: try again, a second after it. */
        if (now_us < st->reopen_at_us) {
            cu_chunk_put(data);
            cu_metric_inc(&shortfall_metric);
            st->gap_next = true;
            return;
        }
        request_open(st);
    }
    /* The recording is still being opened: hold a few segments. */
    hold(st, data, len, &m);
}

bool ingest_stream_begin(ingest_stream *st, const pipe_stream_config *pc, uint32_t ssrc,
                         const char *meta)
{
    ingest_worker *w = st->w;
    if (st->pipe || !pc->codec || strlen(meta) > INGEST_META_MAX)
        return false;
    pipe_stream_config c = *pc;
    c.pool = w->pool;
    st->pipe = pipe_stream_create(&c, ssrc, on_segment, st);
    st->live_epoch++;
    live_handle h = live_handle_of(st);
    live_publish(w->svc->live, &h, st->device_id, st->serial, c.codec, c.payload_type,
                 c.clock_rate, meta);
    st->gap_next = false;
    st->has_continues = false;
    st->reopen_at_us = 0;
    free(st->meta);
    st->meta = cu_xstrdup(meta);
    cu_metric_add(&streams_metric, 1);
    cu_metric_inc(&recordings_metric);
    request_open(st);
    return true;
}

bool ingest_stream_begin_codec(ingest_stream *st, pipe_codec codec, uint8_t payload_type,
                               uint32_t clock_rate, uint32_t ssrc, const char *meta)
{
    pipe_stream_config pc = st->w->svc->pipe_cfg;
    pc.codec = codec;
    pc.payload_type = payload_type;
    pc.clock_rate = clock_rate;
    return ingest_stream_begin(st, &pc, ssrc, meta);
}

pipe_rtp_status ingest_stream_push(ingest_stream *st, const uint8_t *pkt, size_t len,
                                   int64_t now_us)
{
    st->last_us = now_us;
    if (st->tap) /* watched: a copy for the viewers, beside the reorder window */
        pipe_tap_offer(st->tap, pkt, len, now_us);
    return pipe_stream_push(st->pipe, pkt, len, now_us);
}

void ingest_stream_end(ingest_stream *st)
{
    if (!st->pipe)
        return;
    pipe_stream_finish(st->pipe);
    pipe_stream_stats ps;
    pipe_stream_stats_get(st->pipe, &ps);
    cu_metric_add(&lost_metric, (int64_t)ps.lost);
    cu_metric_add(&late_metric, (int64_t)ps.late);
    pipe_stream_destroy(st->pipe);
    st->pipe = NULL;
    tap_end(st);
    live_handle h = live_handle_of(st);
    live_unpublish(st->w->svc->live, &h);
    cu_metric_add(&streams_metric, -1);
    if (st->rec) {
        store_recording_close(st->rec);
        st->rec = NULL;
    }
}

void ingest_stream_release(ingest_stream *st)
{
    ingest_stream_end(st);
    if (st->opening)
        st->released = true; /* ingest_stream_opened() frees it */
    else
        stream_free(st);
}

void ingest_stream_opened(ingest_worker *w, msg *m)
{
    ingest_stream *st = w->streams;
    while (st && st->id != m->stream_id)
        st = st->next;
    w->opening--;
    if (!st) {
        if (m->rec)
            store_recording_close(m->rec);
        return;
    }
    bool current = st->generation == m->generation;
    if (current)
        st->opening = false;
    if (!m->rec && current && st->pipe) {
        CU_LOG(CU_LOG_ERROR, "ingest",
               "%s: the recording could not be opened; footage until the next attempt (in a "
               "second) is not kept",
               st->label);
        st->reopen_at_us = st->last_us + REOPEN_DELAY_US;
    } else if (!m->rec) {
        CU_LOG(CU_LOG_ERROR, "ingest", "%s: no recording, its footage is not kept", st->label);
    }
    /* The segments held for this recording, in order. When its open failed
     * and the stream goes on, they wait for the next attempt (the recording
     * it opens is the next generation); else, without a recording, they are
     * lost footage, counted. Later recordings' stay held. */
    bool retry = !m->rec && current && st->pipe;
    pending_seg **link = &st->pending;
    while (*link) {
        pending_seg *p = *link;
        if (p->generation != m->generation) {
            link = &p->next;
            continue;
        }
        if (retry) {
            p->generation = m->generation + 1;
            link = &p->next;
            continue;
        }
        *link = p->next;
        st->npending--;
        if (m->rec) {
            submit(st, m->rec, p->data, p->len, &p->meta, w->stopping);
        } else {
            cu_chunk_put(p->data);
            cu_metric_inc(&shortfall_metric);
        }
        free(p);
    }
    if (m->rec) {
        if (current && st->pipe) {
            st->rec = m->rec;
            st->rec_id = m->rec_id;
            char id[37];
            store_id_format(&m->rec_id, id);
            live_handle h = live_handle_of(st);
            live_publish_recording(w->svc->live, &h, id);
        } else {
            store_recording_close(m->rec); /* it ended while being opened */
        }
    }
    if (st->released && !st->opening)
        stream_free(st);
}

/* Sender reports map RTP time to wall clock; BYE ends the recording. */
void ingest_stream_rtcp(ingest_stream *st, const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (off + 4 <= len) {
        uint8_t pt = p[off + 1];
        size_t words = (size_t)(p[off + 2] << 8 | p[off + 3]);
        size_t plen = 4 + 4 * words;
        if ((p[off] >> 6) != 2 || off + plen > len)
            return;
        if (pt == 200 && plen >= 28 && st->pipe) {
            uint64_t ntp_sec = (uint64_t)p[off + 8] << 24 | (uint64_t)p[off + 9] << 16 |
                               (uint64_t)p[off + 10] << 8 | p[off + 11];
            uint64_t ntp_frac = (uint64_t)p[off + 12] << 24 | (uint64_t)p[off + 13] << 16 |
                                (uint64_t)p[off + 14] << 8 | p[off + 15];
            uint32_t rtp_ts = (uint32_t)p[off + 16] << 24 | (uint32_t)p[off + 17] << 16 |
                              (uint32_t)p[off + 18] << 8 | p[off + 19];
            if (ntp_sec > 2208988800u) {
                int64_t us = (int64_t)(ntp_sec - 2208988800u) * 1000000 +
                             (int64_t)((ntp_frac * 1000000) >> 32);
                pipe_stream_clock(st->pipe, rtp_ts, us);
            }
        } else if (pt == 203) {
            ingest_stream_end(st);
        }
        off += plen;
    }
}

void ingest_streams_tick(ingest_worker *w, int64_t now_us)
{
    for (ingest_stream *st = w->streams; st; st = st->next) {
        if (!st->pipe)
            continue;
        if (now_us - st->last_us >= w->svc->idle_us)
            ingest_stream_end(st);
        else
            pipe_stream_tick(st->pipe, now_us);
    }
}

void ingest_streams_end_all(ingest_worker *w)
{
    for (ingest_stream *st = w->streams; st; st = st->next)
        ingest_stream_end(st);
}
