/*
 * The live service (live.h, docs/live.md): the directory of live streams,
 * the watched streams' source pipelines, and the live thread that feeds
 * them from their taps and reaps sessions.
 *
 * A watched stream (a source) has one pipeline, shared by its viewers:
 *   appsrc "in" (RTP as the recorder sent it) → depay → parse
 *   [→ decode → x264enc, for H.265] → byte-stream access units → appsink
 * and, in the same pipeline, one bin per viewer (whep.c):
 *   appsrc → rtph264pay → webrtcbin.
 * The appsink's callback (the source's streaming thread) keeps the frames
 * since the last keyframe (the GOP) and hands each frame to every connected
 * viewer's appsrc, stamped in that viewer's own time line; a viewer that
 * has fallen behind loses frames up to the next keyframe, nobody else's.
 *
 * Locking: everything below is under l->mu; GStreamer state changes are
 * made without it (a streaming thread may be waiting for it).
 */
#include "live_internal.h"

#include <stdlib.h>
#include <string.h>

#define DRAIN_MS  2    /* the live thread empties the taps this often */
#define REAP_MS   500  /* and looks for sessions to end this often */
#define TAP_SLOTS 2048 /* packets a tap holds (3 MB): ~1 s of a 20 Mbit/s stream */
#define GOP_MAX   600  /* frames kept from the last keyframe (20 s at 30 fps) */
#define IN_QUEUE_MAX                                                                               \
    (512u << 10) /* RTP waiting in a source's appsrc (1 s at 4 Mbit/s): older goes, live skips,    \
                    never lags */

CU_METRIC_DEFINE(live_sources_metric, CU_METRIC_GAUGE, "custos_live_streams", "",
                 "Streams someone watches live now (each has one pipeline).")
CU_METRIC_DEFINE(live_tap_dropped_metric, CU_METRIC_COUNTER, "custos_live_tap_dropped_total", "",
                 "Packets a watched stream's tap dropped because the live thread was behind.")

/* ------------------------------------------------------------ directory */

static live_pub *pub_find(live_service *l, const live_handle *h)
{
    for (live_pub *p = l->pubs; p; p = p->next)
        if (p->h.worker == h->worker && p->h.stream_id == h->stream_id)
            return p;
    return NULL;
}

static bool video(pipe_codec c)
{
    return c == PIPE_CODEC_H264 || c == PIPE_CODEC_H265;
}

live_pub *live_pub_video(live_service *l, const char *serial)
{
    live_pub *best = NULL;
    for (live_pub *p = l->pubs; p; p = p->next)
        if (video(p->codec) && strcmp(p->serial, serial) == 0 && p->rec[0] &&
            (!best || p->h.epoch > best->h.epoch))
            best = p;
    return best;
}

/* The source a publication lost: its viewers end at the next reap. */
static void pub_orphan(live_pub *p)
{
    if (p->src) {
        p->src->pub = NULL;
        p->src->ended = true;
        p->src = NULL;
    }
}

void live_publish(live_service *l, const live_handle *h, int64_t device_id, const char *serial,
                  pipe_codec codec, uint8_t pt, uint32_t clock_rate, const char *meta)
{
    if (!l || !video(codec))
        return; /* (audio is not offered live yet: docs/live.md) */
    cu_buf caps;
    cu_buf_init(&caps, 16384);
    export_sprop_caps(meta, strlen(meta), codec, pt, &caps);
    pthread_mutex_lock(&l->mu);
    live_pub *p = pub_find(l, h);
    if (p) {
        pub_orphan(p);
    } else {
        p = cu_xcalloc(1, sizeof(*p));
        p->next = l->pubs;
        l->pubs = p;
    }
    p->h = *h;
    p->device_id = device_id;
    cu_strlcpy(p->serial, serial, sizeof(p->serial));
    p->codec = codec;
    p->pt = pt;
    p->clock_rate = clock_rate;
    p->rec[0] = '\0';
    free(p->sprop);
    p->sprop = cu_xstrdup(caps.len ? (const char *)caps.data : "");
    pthread_mutex_unlock(&l->mu);
    cu_buf_free(&caps);
}

void live_publish_recording(live_service *l, const live_handle *h, const char *rec_id)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    live_pub *p = pub_find(l, h);
    if (p && p->h.epoch == h->epoch)
        cu_strlcpy(p->rec, rec_id, sizeof(p->rec));
    pthread_mutex_unlock(&l->mu);
}

void live_unpublish(live_service *l, const live_handle *h)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    for (live_pub **link = &l->pubs; *link; link = &(*link)->next) {
        live_pub *p = *link;
        if (p->h.worker != h->worker || p->h.stream_id != h->stream_id || p->h.epoch != h->epoch)
            continue;
        *link = p->next;
        pub_orphan(p);
        free(p->sprop);
        free(p);
        break;
    }
    pthread_mutex_unlock(&l->mu);
}

bool live_recording_of(live_service *l, const char *serial, char rec_id[37])
{
    if (!l)
        return false;
    pthread_mutex_lock(&l->mu);
    live_pub *p = live_pub_video(l, serial);
    if (p)
        cu_strlcpy(rec_id, p->rec, 37);
    pthread_mutex_unlock(&l->mu);
    return p != NULL;
}

/* ------------------------------------------------------------- sources */

/* Under l->mu, on the source's streaming thread: a new access unit. */
static void gop_keep(live_source *s, GstBuffer *b, bool key)
{
    if (key) {
        for (int i = 0; i < s->ngop; i++)
            gst_buffer_unref(s->gop[i]);
        s->ngop = 0;
        s->have_key = true;
    }
    if (!s->have_key)
        return;
    if (s->ngop == GOP_MAX) { /* a GOP longer than we keep: wait for the next */
        for (int i = 0; i < s->ngop; i++)
            gst_buffer_unref(s->gop[i]);
        s->ngop = 0;
        s->have_key = false;
        return;
    }
    s->gop[s->ngop++] = gst_buffer_ref(b);
}

static GstFlowReturn on_access_unit(GstAppSink *sink, gpointer data)
{
    live_source *s = data;
    GstSample *smp = gst_app_sink_pull_sample(sink);
    if (!smp)
        return GST_FLOW_EOS;
    GstBuffer *b = gst_sample_get_buffer(smp);
    bool key = !GST_BUFFER_FLAG_IS_SET(b, GST_BUFFER_FLAG_DELTA_UNIT);
    live_service *l = s->l;
    pthread_mutex_lock(&l->mu);
    gop_keep(s, b, key);
    for (live_viewer_s *v = s->viewers; v; v = v->next)
        live_viewer_send(v, b, key);
    pthread_mutex_unlock(&l->mu);
    gst_sample_unref(smp);
    return GST_FLOW_OK;
}

/* Bus messages of a source pipeline (its own thread's): errors are logged,
 * and the source ends (its viewers with it) at the next reap. */
static GstBusSyncReply on_bus(GstBus *bus, GstMessage *m, gpointer data)
{
    (void)bus;
    live_source *s = data;
    if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR) {
        GError *e = NULL;
        gchar *debug = NULL;
        gst_message_parse_error(m, &e, &debug);
        CU_LOG(CU_LOG_WARN, "live", "%s: pipeline error from %s: %s (%s)", s->serial,
               GST_OBJECT_NAME(GST_MESSAGE_SRC(m)), e ? e->message : "?", debug ? debug : "");
        g_clear_error(&e);
        g_free(debug);
        pthread_mutex_lock(&s->l->mu);
        s->failed = true;
        pthread_mutex_unlock(&s->l->mu);
    }
    return GST_BUS_DROP;
}

/* The RTP caps of @p p's stream, its SDP's parameter sets included. */
static GstCaps *source_caps(const live_pub *p)
{
    char *text = g_strdup_printf("application/x-rtp,media=video,encoding-name=%s,"
                                 "clock-rate=%u,payload=%u%s",
                                 p->codec == PIPE_CODEC_H264 ? "H264" : "H265", p->clock_rate,
                                 p->pt, p->sprop);
    GstCaps *caps = gst_caps_from_string(text);
    g_free(text);
    return caps;
}

/* The source pipeline (gst-launch syntax): H.264 is parsed, H.265 transcoded. */
static const char source_h264[] =
    "appsrc name=in is-live=true format=time do-timestamp=true ! rtph264depay ! "
    "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! "
    "appsink name=out sync=false max-buffers=64 drop=true";
static const char source_h265[] =
    "appsrc name=in is-live=true format=time do-timestamp=true ! rtph265depay ! h265parse ! "
    "queue max-size-buffers=30 leaky=downstream ! avdec_h265 ! videoconvert ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 bitrate=2500 ! "
    "video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 ! "
    "video/x-h264,stream-format=byte-stream,alignment=au ! "
    "appsink name=out sync=false max-buffers=64 drop=true";

live_source *live_source_start(live_service *l, live_pub *p, const char **why)
{
    live_source *s = cu_xcalloc(1, sizeof(*s));
    s->l = l;
    s->pub = p;
    s->h = p->h;
    s->transcode = p->codec == PIPE_CODEC_H265;
    s->pt = p->pt;
    cu_strlcpy(s->serial, p->serial, sizeof(s->serial));
    cu_strlcpy(s->rec, p->rec, sizeof(s->rec));
    s->gop = cu_xcalloc(GOP_MAX, sizeof(*s->gop));
    GError *e = NULL;
    s->pipeline = gst_parse_launch(s->transcode ? source_h265 : source_h264, &e);
    if (!s->pipeline || e) {
        CU_LOG(CU_LOG_ERROR, "live", "%s: no pipeline: %s", p->serial, e ? e->message : "?");
        g_clear_error(&e);
        goto fail;
    }
    s->in = gst_bin_get_by_name(GST_BIN(s->pipeline), "in");
    GstElement *out = gst_bin_get_by_name(GST_BIN(s->pipeline), "out");
    GstCaps *caps = source_caps(p);
    if (!caps) {
        gst_object_unref(out);
        goto fail;
    }
    g_object_set(s->in, "caps", caps, "max-bytes", (guint64)IN_QUEUE_MAX, NULL);
    gst_caps_unref(caps);
    gst_util_set_object_arg(G_OBJECT(s->in), "leaky-type", "downstream");
    GstAppSinkCallbacks cb = {.new_sample = on_access_unit};
    gst_app_sink_set_callbacks(GST_APP_SINK(out), &cb, s, NULL);
    gst_object_unref(out);
    GstBus *bus = gst_element_get_bus(s->pipeline);
    gst_bus_set_sync_handler(bus, on_bus, s, NULL);
    gst_object_unref(bus);
    if (gst_element_set_state(s->pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
        CU_LOG(CU_LOG_ERROR, "live", "%s: the pipeline does not start", p->serial);
        goto fail;
    }
    s->clock = gst_pipeline_get_clock(GST_PIPELINE(s->pipeline));
    s->base_time = gst_element_get_base_time(s->pipeline);
    s->tap = pipe_tap_create(TAP_SLOTS);
    if (!s->tap)
        goto fail;
    cu_metric_add(&live_sources_metric, 1);
    return s;
fail:
    *why = "the live pipeline could not be started";
    live_source_free(s);
    return NULL;
}

void live_source_free(live_source *s)
{
    if (!s)
        return;
    if (s->pipeline) {
        gst_element_set_state(s->pipeline, GST_STATE_NULL);
        gst_object_unref(s->pipeline);
    }
    if (s->in)
        gst_object_unref(s->in);
    if (s->clock)
        gst_object_unref(s->clock);
    for (int i = 0; i < s->ngop; i++)
        gst_buffer_unref(s->gop[i]);
    free(s->gop);
    pipe_tap_unref(s->tap);
    free(s);
}

/* Under l->mu: take @p s out of the service (no more feeding, no viewers). */
static void source_unlink(live_service *l, live_source *s)
{
    for (live_source **link = &l->sources; *link; link = &(*link)->next)
        if (*link == s) {
            *link = s->next;
            break;
        }
    if (s->pub && s->pub->src == s)
        s->pub->src = NULL;
    if (s->transcode)
        l->ntranscodes--;
}

/* Without l->mu: detach the tap from its worker and free the pipeline. */
static void source_stop(live_service *l, live_source *s)
{
    cu_metric_add(&live_sources_metric, -1);
    cu_metric_add(&live_tap_dropped_metric, (int64_t)pipe_tap_dropped(s->tap));
    l->hooks.attach(l->hooks.attach_ctx, &s->h, s->tap, false);
    live_source_free(s);
}

/* ------------------------------------------------------- the live thread */

/* Every DRAIN_MS: each watched stream's tap into its pipeline. */
static gboolean on_drain(gpointer data)
{
    live_service *l = data;
    static uint8_t pkt[PIPE_RTP_MAX];
    pthread_mutex_lock(&l->mu);
    for (live_source *s = l->sources; s; s = s->next) {
        size_t len;
        int64_t arrival;
        while (pipe_tap_take(s->tap, pkt, &len, &arrival)) {
            pipe_rtp rtp;
            if (pipe_rtp_parse(pkt, len, &rtp) != PIPE_RTP_OK || rtp.payload_type != s->pt)
                continue;
            GstBuffer *b = gst_buffer_new_memdup(pkt, len);
            gst_app_src_push_buffer(GST_APP_SRC(s->in), b);
        }
        if (pipe_tap_ended(s->tap))
            s->ended = true;
    }
    pthread_mutex_unlock(&l->mu);
    return G_SOURCE_CONTINUE;
}

/* Every REAP_MS: sessions that never connected, went silent, failed or
 * lost their stream end; sources without viewers stop. */
static gboolean on_reap(gpointer data)
{
    live_service *l = data;
    int64_t now = cu_time_us();
    live_viewer_s *dead = NULL;
    live_source *idle = NULL;
    pthread_mutex_lock(&l->mu);
    for (live_source *s = l->sources, *next; s; s = next) {
        next = s->next;
        for (live_viewer_s **link = &s->viewers; *link;) {
            live_viewer_s *v = *link;
            const char *why = live_viewer_reap_reason(v, now);
            if (!why && !v->negotiating && !v->feed_pending && (s->ended || s->failed))
                why = s->failed ? "failed" : "stream ended";
            if (!why) {
                link = &v->next;
                continue;
            }
            *link = v->next;
            live_viewer_unlink(l, v, why);
            v->next = dead;
            dead = v;
        }
        if (!s->viewers) {
            source_unlink(l, s);
            s->next = idle;
            idle = s;
        }
    }
    pthread_mutex_unlock(&l->mu);
    while (dead) {
        live_viewer_s *v = dead;
        dead = v->next;
        live_viewer_finish(l, v);
    }
    while (idle) {
        live_source *s = idle;
        idle = s->next;
        source_stop(l, s);
    }
    return G_SOURCE_CONTINUE;
}

static gpointer live_thread(gpointer data)
{
    live_service *l = data;
    g_main_context_push_thread_default(l->ctx);
    g_main_loop_run(l->loop);
    g_main_context_pop_thread_default(l->ctx);
    return NULL;
}

static void add_timer(live_service *l, guint ms, GSourceFunc fn)
{
    GSource *t = g_timeout_source_new(ms);
    g_source_set_callback(t, fn, l, NULL);
    g_source_attach(t, l->ctx);
    g_source_unref(t);
}

cu_rc live_service_start(const cu_config *cfg, const char *data_dir, const live_hooks *hooks,
                         live_service **out, cu_err *err)
{
    live_service *l = cu_xcalloc(1, sizeof(*l));
    l->cfg = cfg;
    cu_strlcpy(l->data_dir, data_dir, sizeof(l->data_dir));
    l->hooks = *hooks;
    pthread_mutex_init(&l->mu, NULL);
    if (!live_ice_parse(l, cfg->live_ice_addresses[0] ? cfg->live_ice_addresses : cfg->api_bind)) {
        free(l);
        return cu_err_set(err, CU_ERR_CONFIG,
                          "live.ice_addresses: \"%s\" is not a list of IP addresses",
                          cfg->live_ice_addresses);
    }
    *out = l;
    return CU_OK;
}

/* (GLib and GStreamer only from the first viewer on: a server nobody watches
 * runs none of it.) */
bool live_ensure_started(live_service *l, const char **why)
{
    pthread_mutex_lock(&l->mu);
    bool ready = l->loop != NULL;
    pthread_mutex_unlock(&l->mu);
    if (ready)
        return true;
    cu_err err;
    if (export_init(l->data_dir, &err) != CU_OK) {
        CU_LOG(CU_LOG_ERROR, "live", "GStreamer: %s", err.msg);
        *why = "live view is not available (GStreamer)";
        return false;
    }
    pthread_mutex_lock(&l->mu);
    if (!l->loop && !l->stopping) {
        l->ctx = g_main_context_new();
        l->loop = g_main_loop_new(l->ctx, FALSE);
        add_timer(l, DRAIN_MS, on_drain);
        add_timer(l, REAP_MS, on_reap);
        l->thread = g_thread_new("live", live_thread, l);
    }
    ready = l->loop != NULL;
    pthread_mutex_unlock(&l->mu);
    if (!ready)
        *why = "the server is stopping";
    return ready;
}

void live_service_stop(live_service *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    bool started = l->loop != NULL;
    pthread_mutex_unlock(&l->mu);
    if (!started)
        return;
    g_main_loop_quit(l->loop);
    g_thread_join(l->thread);
    /* The live thread has stopped: one last reap, here, ends every session. */
    pthread_mutex_lock(&l->mu);
    for (live_source *s = l->sources; s; s = s->next)
        s->ended = true;
    pthread_mutex_unlock(&l->mu);
    on_reap(l);
    g_main_loop_unref(l->loop);
    g_main_context_unref(l->ctx);
    l->loop = NULL;
}

void live_service_free(live_service *l)
{
    if (!l)
        return;
    live_service_stop(l);
    while (l->pubs) {
        live_pub *p = l->pubs;
        l->pubs = p->next;
        free(p->sprop);
        free(p);
    }
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void live_stats_get(live_service *l, live_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    for (live_source *s = l->sources; s; s = s->next) {
        out->sources++;
        out->dropped += pipe_tap_dropped(s->tap);
    }
    for (live_source *s = l->sources; s; s = s->next)
        for (live_viewer_s *v = s->viewers; v; v = v->next)
            out->viewers += !v->deleted;
    out->transcodes = l->ntranscodes;
    out->frames = l->frames;
    out->frames_dropped = l->frames_dropped;
    pthread_mutex_unlock(&l->mu);
}
