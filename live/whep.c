/*
 * WHEP sessions (RFC 9725; docs/live.md "WHEP"): a viewer's offer is
 * answered by a webrtcbin in its stream's pipeline, sending H.264 only
 * (sendonly), without trickle: the answer carries every candidate, once
 * ICE gathering on the allowed addresses (live.ice_addresses) is complete.
 * A viewer is fed from its first keyframe after DTLS is up (the stream's
 * kept GOP first), each frame stamped on its own time line.
 */
#include "live_internal.h"

#include <arpa/inet.h>
#include <gst/sdp/sdp.h>
#define GST_USE_UNSTABLE_API
#include <gst/webrtc/webrtc.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define NEGOTIATE_TIMEOUT_US (5 * G_USEC_PER_SEC) /* for ICE gathering */
#define CONNECT_TIMEOUT_US   10000000             /* offer answered, DTLS not up: reaped */
#define VIEWER_QUEUE_MAX     8 /* frames waiting for a viewer (0.27 s): more, it skips to a key */
#define OFFER_MAX            65536
#define FEED_DELAY_MS                                                                              \
    250 /* after our DTLS is up: the SRTP keys of both ends are set a little after */

CU_METRIC_DEFINE(live_viewers_metric, CU_METRIC_GAUGE, "custos_live_viewers", "",
                 "Live viewers (WHEP sessions) now.")
CU_METRIC_DEFINE(live_frames_metric, CU_METRIC_COUNTER, "custos_live_frames_total", "",
                 "Frames handed to live viewers.")
CU_METRIC_DEFINE(live_skipped_metric, CU_METRIC_COUNTER, "custos_live_frames_skipped_total", "",
                 "Frames a live viewer that had fallen behind did not get (up to a keyframe).")

/* ------------------------------------------------------------ ICE addresses */

bool live_ice_parse(live_service *l, const char *list)
{
    l->nice = 0;
    char *copy = cu_xstrdup(list), *save = NULL;
    bool ok = true;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        uint8_t a[16];
        bool v4 = inet_pton(AF_INET, t, a) == 1, v6 = !v4 && inet_pton(AF_INET6, t, a) == 1;
        if ((!v4 && !v6) || l->nice == LIVE_ICE_MAX || strlen(t) >= sizeof(l->ice[0])) {
            ok = false;
            break;
        }
        if (strcmp(t, "0.0.0.0") == 0 || strcmp(t, "::") == 0)
            continue; /* any address: ICE gathers on every interface */
        cu_strlcpy(l->ice[l->nice++], t, sizeof(l->ice[0]));
    }
    free(copy);
    return ok;
}

void live_ice_prepare(GstWebRTCICE *ice, const char (*addresses)[48], int n)
{
    if (!ice)
        return;
    /* UDP host candidates only: no UPnP discovery (it holds gathering back
     * 200 ms), no ICE-TCP. (A viewer that has gone is found by its RTCP
     * stopping: live.viewer_timeout_s.) */
    g_object_set(ice, "ice-tcp", FALSE, NULL);
    GObject *agent = NULL;
    g_object_get(ice, "agent", &agent, NULL);
    if (agent) {
        g_object_set(agent, "upnp", FALSE, NULL);
        g_object_unref(agent);
    }
    for (int i = 0; i < n; i++) {
        gboolean added = FALSE;
        g_signal_emit_by_name(ice, "add-local-ip-address", addresses[i], &added);
    }
}

/* Is candidate line @p c ("candidate:F C UDP P ADDR PORT typ ...") on an allowed address? */
static bool candidate_allowed(const live_service *l, const char *c)
{
    if (l->nice == 0)
        return true;
    char addr[64] = "";
    if (sscanf(c, "candidate:%*s %*s %*s %*s %63s", addr) != 1)
        return false;
    for (int i = 0; i < l->nice; i++)
        if (strcmp(addr, l->ice[i]) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------ the offer */

/*
 * The payload type to answer in @p sdp's first video section: an H.264
 * format with packetization-mode 1, constrained baseline preferred (every
 * decoder has it); its profile-level-id into @p profile. -1 when none.
 */
static int offer_h264(const GstSDPMessage *sdp, char profile[16], const char **why)
{
    int best = -1, rank = -1;
    for (guint i = 0; i < gst_sdp_message_medias_len(sdp); i++) {
        const GstSDPMedia *m = gst_sdp_message_get_media(sdp, i);
        if (strcmp(gst_sdp_media_get_media(m), "video") != 0)
            continue;
        if (gst_sdp_media_get_attribute_val(m, "sendonly") ||
            gst_sdp_media_get_attribute_val(m, "inactive")) {
            *why = "the offer's video is not for receiving (sendonly or inactive)";
            return -1;
        }
        /* (from the attributes themselves: GStreamer's caps of a format turn
         * profile-level-id into a profile name, and the level is lost) */
        for (guint a = 0; a < gst_sdp_media_attributes_len(m); a++) {
            const GstSDPAttribute *at = gst_sdp_media_get_attribute(m, a);
            int pt = -1, used = 0;
            if (strcmp(at->key, "rtpmap") != 0 || !at->value ||
                sscanf(at->value, "%d H264/90000%n", &pt, &used) != 1 || used == 0 || pt < 96 ||
                pt > 127)
                continue;
            char plid[16] = "";
            bool mode1 = false;
            for (guint b = 0; b < gst_sdp_media_attributes_len(m); b++) {
                const GstSDPAttribute *f = gst_sdp_media_get_attribute(m, b);
                int fpt = -1, off = 0;
                if (strcmp(f->key, "fmtp") != 0 || !f->value ||
                    sscanf(f->value, "%d %n", &fpt, &off) != 1 || fpt != pt)
                    continue;
                const char *pm = strstr(f->value + off, "packetization-mode=1");
                mode1 = pm && (pm[20] == '\0' || pm[20] == ';' || pm[20] == ' ');
                const char *pl = strstr(f->value + off, "profile-level-id=");
                if (pl && strspn(pl + 17, "0123456789abcdefABCDEF") >= 6) {
                    memcpy(plid, pl + 17, 6);
                    plid[6] = '\0';
                }
            }
            if (!mode1 || !plid[0])
                continue;
            int r = g_ascii_strncasecmp(plid, "42e0", 4) == 0 ? 2 : 1;
            if (r > rank) {
                rank = r;
                best = pt;
                cu_strlcpy(profile, plid, 16);
            }
        }
        if (best < 0)
            *why = "the offer's video has no H.264 with packetization-mode=1";
        return best; /* the first video section is the one answered */
    }
    *why = "the offer has no video section";
    return -1;
}

/* -------------------------------------------------------- webrtcbin events */

static void on_candidate(GstElement *webrtc, guint mline, gchar *candidate, gpointer data)
{
    (void)webrtc;
    live_viewer_s *v = data;
    if (mline != 0 || !candidate_allowed(v->l, candidate))
        return; /* (one bundle: everything goes on the first section's transport) */
    g_mutex_lock(&v->lock);
    g_string_append_printf(v->candidates, "a=%s\r\n", candidate);
    g_mutex_unlock(&v->lock);
}

static void on_gathering(GstElement *webrtc, GParamSpec *ps, gpointer data)
{
    (void)ps;
    live_viewer_s *v = data;
    GstWebRTCICEGatheringState st;
    g_object_get(webrtc, "ice-gathering-state", &st, NULL);
    if (st != GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
        return;
    g_mutex_lock(&v->lock);
    v->gathered = true;
    g_cond_broadcast(&v->cond);
    g_mutex_unlock(&v->lock);
}

/* On the live thread, a moment after DTLS is up (its SRTP keys are set on
 * the sender just after the state changes): the stream's last GOP at once,
 * then live. */
static gboolean start_feeding(gpointer data)
{
    live_viewer_s *v = data;
    live_service *l = v->l;
    pthread_mutex_lock(&l->mu);
    v->feed_pending = false;
    if (!v->deleted && !v->failed && v->src) {
        v->connected = true;
        v->waiting_key = true;
        live_source *s = v->src;
        for (int i = 0; i < s->ngop; i++)
            live_viewer_send(v, s->gop[i], i == 0);
    }
    pthread_mutex_unlock(&l->mu);
    return G_SOURCE_REMOVE;
}

static void on_connection(GstElement *webrtc, GParamSpec *ps, gpointer data)
{
    (void)ps;
    live_viewer_s *v = data;
    GstWebRTCPeerConnectionState st;
    g_object_get(webrtc, "connection-state", &st, NULL);
    live_service *l = v->l;
    pthread_mutex_lock(&l->mu);
    if (st == GST_WEBRTC_PEER_CONNECTION_STATE_CONNECTED && !v->connected_us) {
        v->connected_us = cu_time_us();
        atomic_store(&v->last_rtcp_us, v->connected_us);
        v->feed_pending = true; /* (not reaped before its timer has run) */
        GSource *t = g_timeout_source_new(FEED_DELAY_MS);
        g_source_set_callback(t, start_feeding, v, NULL);
        g_source_attach(t, l->ctx);
        g_source_unref(t);
    } else if (st == GST_WEBRTC_PEER_CONNECTION_STATE_FAILED ||
               st == GST_WEBRTC_PEER_CONNECTION_STATE_CLOSED) {
        v->failed = true;
    }
    pthread_mutex_unlock(&l->mu);
}

/* RTCP from the viewer (its receiver reports): it is still there. */
static void on_ssrc_active(GstElement *rtpbin, guint session, guint ssrc, gpointer data)
{
    (void)rtpbin;
    (void)session;
    (void)ssrc;
    live_viewer_s *v = data;
    atomic_store_explicit(&v->last_rtcp_us, cu_time_us(), memory_order_relaxed);
}

/* webrtcbin's rtpbin, to hear of the viewer's RTCP. */
static void watch_rtcp(live_viewer_s *v)
{
    GstIterator *it = gst_bin_iterate_elements(GST_BIN(v->webrtc));
    GValue item = G_VALUE_INIT;
    while (gst_iterator_next(it, &item) == GST_ITERATOR_OK) {
        GstElement *e = g_value_get_object(&item);
        GstElementFactory *f = gst_element_get_factory(e);
        if (f && strcmp(GST_OBJECT_NAME(f), "rtpbin") == 0 && !v->rtpbin) {
            v->rtpbin = e; /* (webrtcbin's: lives as long as it) */
            g_signal_connect(e, "on-ssrc-active", G_CALLBACK(on_ssrc_active), v);
        }
        g_value_reset(&item);
    }
    g_value_unset(&item);
    gst_iterator_free(it);
}

/* Wait for @p p's reply (webrtcbin answers on its own thread); NULL on error. */
static const GstStructure *promise_wait(GstPromise *p)
{
    if (gst_promise_wait(p) != GST_PROMISE_RESULT_REPLIED)
        return NULL;
    return gst_promise_get_reply(p);
}

/* ------------------------------------------------------------- feeding */

void live_viewer_send(live_viewer_s *v, GstBuffer *b, bool key)
{
    if (!v->connected || v->deleted || v->failed)
        return;
    live_service *l = v->l;
    if (v->waiting_key && !key)
        return;
    if (gst_app_src_get_current_level_buffers(GST_APP_SRC(v->appsrc)) >= VIEWER_QUEUE_MAX) {
        /* It is behind: it loses frames up to the next keyframe, nobody else does. */
        v->waiting_key = true;
        v->dropped++;
        l->frames_dropped++;
        cu_metric_inc(&live_skipped_metric);
        return;
    }
    v->waiting_key = false;
    /* (the source's clock and base time, kept at its start: asking the
     * pipeline would take its lock under l->mu, the reverse of a bin
     * removal's order) */
    live_source *src = v->src;
    GstClockTime now = src->clock ? gst_clock_get_time(src->clock) - src->base_time : 0;
    /* Its own time line: now, but always after its last frame (a burst of the
     * kept GOP goes out a millisecond apart and is shown at once). */
    GstClockTime pts =
        v->frames && now <= v->last_pts + GST_MSECOND ? v->last_pts + GST_MSECOND : now;
    GstBuffer *copy = gst_buffer_copy(b); /* (the memory is shared, not copied) */
    GST_BUFFER_PTS(copy) = pts;
    GST_BUFFER_DTS(copy) = pts;
    GST_BUFFER_DURATION(copy) = GST_CLOCK_TIME_NONE;
    v->last_pts = pts;
    gst_app_src_push_buffer(GST_APP_SRC(v->appsrc), copy);
    v->frames++;
    l->frames++;
    cu_metric_inc(&live_frames_metric);
}

/* ------------------------------------------------------------ sessions */

const char *live_viewer_reap_reason(const live_viewer_s *v, int64_t now_us)
{
    if (v->negotiating || v->feed_pending)
        return NULL;
    if (v->deleted)
        return "deleted";
    if (v->failed)
        return "failed";
    if (!v->connected)
        return now_us - v->started_us > CONNECT_TIMEOUT_US ? "never connected" : NULL;
    int64_t last = atomic_load_explicit(&((live_viewer_s *)v)->last_rtcp_us, memory_order_relaxed);
    if (now_us - last > v->l->cfg->live_viewer_timeout_s * 1000000)
        return "silent"; /* gone without a DELETE, or it stopped reading */
    return NULL;
}

void live_viewer_unlink(live_service *l, live_viewer_s *v, const char *why)
{
    (void)l;
    if (!v->reason)
        v->reason = why;
}

/* What a viewer owns besides its pipeline elements. */
static void viewer_free(live_viewer_s *v)
{
    if (v->candidates)
        g_string_free(v->candidates, TRUE);
    g_mutex_clear(&v->lock);
    g_cond_clear(&v->cond);
    free(v);
}

void live_viewer_finish(live_service *l, live_viewer_s *v)
{
    live_source *s = v->src;
    /* Nothing of webrtcbin's calls back into v while it is taken down. */
    if (v->webrtc)
        g_signal_handlers_disconnect_by_data(v->webrtc, v);
    if (v->rtpbin)
        g_signal_handlers_disconnect_by_data(v->rtpbin, v);
    if (v->bin && v->added) {
        gst_element_set_state(v->bin, GST_STATE_NULL);
        gst_bin_remove(GST_BIN(s->pipeline), v->bin); /* (the pipeline's reference) */
    } else if (v->bin) {
        gst_object_unref(gst_object_ref_sink(v->bin));
    }
    if (v->answered_us)
        cu_metric_add(&live_viewers_metric, -1);
    if (l->hooks.ended && v->answered_us) {
        live_ended e = {.user_id = v->user_id,
                        .kind = "whep",
                        .reason = v->reason ? v->reason : "stopped",
                        .started_us = v->started_us,
                        .ended_us = cu_time_us(),
                        .frames_sent = v->frames};
        cu_strlcpy(e.id, v->id, sizeof(e.id));
        cu_strlcpy(e.actor, v->actor, sizeof(e.actor));
        cu_strlcpy(e.source, v->source, sizeof(e.source));
        cu_strlcpy(e.recording, s->rec, sizeof(e.recording));
        cu_strlcpy(e.serial, s->serial, sizeof(e.serial));
        l->hooks.ended(l->hooks.ended_ctx, &e);
    }
    viewer_free(v);
}

/* Count what @p serial's stream and @p user_id watch now, and everything (mu). */
static live_status limits(live_service *l, const live_source *src, int64_t user_id,
                          const char **why)
{
    int total = 0, mine = 0, here = 0;
    for (live_source *s = l->sources; s; s = s->next)
        for (live_viewer_s *v = s->viewers; v; v = v->next) {
            if (v->deleted)
                continue;
            total++;
            mine += v->user_id == user_id;
            here += s == src;
        }
    if (total >= l->cfg->live_max_viewers) {
        *why = "the server has as many live viewers as it takes (live.max_viewers); try later";
        return LIVE_LIMIT_TOTAL;
    }
    if (here >= l->cfg->live_max_viewers_per_stream) {
        *why = "this stream has as many viewers as it takes (live.max_viewers_per_stream)";
        return LIVE_LIMIT_STREAM;
    }
    if (mine >= l->cfg->live_max_viewers_per_user) {
        *why = "you watch as many live streams as you may at once (live.max_viewers_per_user); "
               "end one first";
        return LIVE_LIMIT_USER;
    }
    return LIVE_OK;
}

/* The viewer's bin: appsrc → rtph264pay → capssetter → webrtcbin (sendonly). */
static bool viewer_bin(live_viewer_s *v, int pt, const char *profile)
{
    v->bin = gst_bin_new(NULL);
    v->appsrc = gst_element_factory_make("appsrc", NULL);
    GstElement *pay = gst_element_factory_make("rtph264pay", NULL);
    GstElement *filter = gst_element_factory_make("capssetter", NULL);
    v->webrtc = gst_element_factory_make("webrtcbin", NULL);
    if (!v->appsrc || !pay || !filter || !v->webrtc)
        return false;
    GstCaps *in = gst_caps_from_string("video/x-h264,stream-format=byte-stream,alignment=au");
    g_object_set(v->appsrc, "is-live", TRUE, "format", GST_FORMAT_TIME, "caps", in, NULL);
    gst_caps_unref(in);
    g_object_set(pay, "config-interval", -1, "pt", (guint)pt, "mtu", 1200, NULL);
    gst_util_set_object_arg(G_OBJECT(pay), "aggregate-mode", "zero-latency");
    /* The answer names the offer's format, its profile-level-id included; the
     * payloader's caps (its profile is the stream's) are set to it, as
     * level-asymmetry-allowed lets a sender do. (Browsers' H.264 decoders
     * take every profile a recorder sends: baseline, main, high.) */
    char *text = g_strdup_printf("application/x-rtp,media=video,encoding-name=H264,"
                                 "clock-rate=90000,payload=%d,packetization-mode=(string)1,"
                                 "profile-level-id=(string)%s,level-asymmetry-allowed=(string)1",
                                 pt, profile);
    GstCaps *out = gst_caps_from_string(text);
    g_free(text);
    g_object_set(filter, "caps", out, "join", TRUE, "replace", FALSE, NULL);
    gst_util_set_object_arg(G_OBJECT(v->webrtc), "bundle-policy", "max-bundle");
    gst_bin_add_many(GST_BIN(v->bin), v->appsrc, pay, filter, v->webrtc, NULL);
    bool ok = gst_element_link_many(v->appsrc, pay, filter, NULL);
    GstPad *sink = ok ? gst_element_request_pad_simple(v->webrtc, "sink_%u") : NULL;
    GstPad *src = gst_element_get_static_pad(filter, "src");
    ok = sink && gst_pad_link(src, sink) == GST_PAD_LINK_OK;
    gst_object_unref(src);
    if (ok) {
        GstWebRTCRTPTransceiver *t = NULL;
        g_object_get(sink, "transceiver", &t, NULL);
        if (t) {
            g_object_set(t, "direction", GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_SENDONLY,
                         "codec-preferences", out, NULL);
            gst_object_unref(t);
        }
    }
    if (sink)
        gst_object_unref(sink);
    gst_caps_unref(out);
    if (!ok)
        return false;
    GstWebRTCICE *ice = NULL;
    g_object_get(v->webrtc, "ice-agent", &ice, NULL);
    live_ice_prepare(ice, v->l->ice, v->l->nice);
    if (ice)
        gst_object_unref(ice);
    g_signal_connect(v->webrtc, "on-ice-candidate", G_CALLBACK(on_candidate), v);
    g_signal_connect(v->webrtc, "notify::ice-gathering-state", G_CALLBACK(on_gathering), v);
    g_signal_connect(v->webrtc, "notify::connection-state", G_CALLBACK(on_connection), v);
    watch_rtcp(v);
    return true;
}

/* The answer's SDP text with the gathered candidates in its first media section. */
static char *answer_text(live_viewer_s *v, const GstSDPMessage *sdp)
{
    char *text = gst_sdp_message_as_text(sdp);
    if (strstr(text, "a=candidate:"))
        return text;
    const char *first = strstr(text, "\r\nm=");
    if (!first)
        return text;
    const char *second = strstr(first + 2, "\r\nm=");
    size_t at = second ? (size_t)(second - text) + 2 : strlen(text);
    g_mutex_lock(&v->lock);
    GString *out = g_string_new_len(text, (gssize)at);
    g_string_append(out, v->candidates->str);
    g_string_append(out, "a=end-of-candidates\r\n");
    g_mutex_unlock(&v->lock);
    g_string_append(out, text + at);
    g_free(text);
    return g_string_free(out, FALSE);
}

/* Answer @p offer on @p v's webrtcbin; the answer text (g_malloc) or NULL. */
static char *negotiate(live_viewer_s *v, GstSDPMessage *offer, const char **why)
{
    GstSDPMessage *copy = NULL;
    gst_sdp_message_copy(offer, &copy); /* (the description takes it) */
    GstWebRTCSessionDescription *remote =
        gst_webrtc_session_description_new(GST_WEBRTC_SDP_TYPE_OFFER, copy);
    GstPromise *p = gst_promise_new();
    g_signal_emit_by_name(v->webrtc, "set-remote-description", remote, p);
    const GstStructure *r = promise_wait(p);
    bool ok = r == NULL || !gst_structure_has_field(r, "error");
    gst_promise_unref(p);
    gst_webrtc_session_description_free(remote);
    if (!ok) {
        *why = "the offer was refused by WebRTC (set-remote-description)";
        return NULL;
    }
    p = gst_promise_new();
    g_signal_emit_by_name(v->webrtc, "create-answer", NULL, p);
    r = promise_wait(p);
    GstWebRTCSessionDescription *answer = NULL;
    if (r)
        gst_structure_get(r, "answer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &answer, NULL);
    gst_promise_unref(p);
    if (!answer) {
        *why = "no answer could be made to the offer";
        return NULL;
    }
    p = gst_promise_new();
    g_signal_emit_by_name(v->webrtc, "set-local-description", answer, p);
    promise_wait(p);
    gst_promise_unref(p);
    gst_webrtc_session_description_free(answer);
    /* Without trickle: every candidate goes in the answer. */
    gint64 deadline = g_get_monotonic_time() + NEGOTIATE_TIMEOUT_US;
    g_mutex_lock(&v->lock);
    while (!v->gathered)
        if (!g_cond_wait_until(&v->cond, &v->lock, deadline))
            break;
    bool gathered = v->gathered;
    g_mutex_unlock(&v->lock);
    if (!gathered) {
        *why = "ICE gathering did not complete";
        return NULL;
    }
    GstWebRTCSessionDescription *local = NULL;
    g_object_get(v->webrtc, "local-description", &local, NULL);
    if (!local) {
        *why = "no local description";
        return NULL;
    }
    char *text = answer_text(v, local->sdp);
    gst_webrtc_session_description_free(local);
    return text;
}

live_status live_whep_start(live_service *l, const char *serial, const live_viewer *who,
                            const char *offer, size_t offer_len, char **answer, char id[33],
                            const char **why)
{
    *answer = NULL;
    GstSDPMessage *sdp = NULL;
    char profile[16];
    if (!l) {
        *why = "live view is off";
        return LIVE_NOT_LIVE;
    }
    pthread_mutex_lock(&l->mu);
    bool stopping = l->stopping;
    pthread_mutex_unlock(&l->mu);
    if (stopping) {
        *why = "the server is stopping";
        return LIVE_LIMIT_TOTAL;
    }
    if (!live_ensure_started(l, why))
        return LIVE_FAILED;
    if (offer_len == 0 || offer_len > OFFER_MAX || strlen(offer) != offer_len) {
        *why = "the body must be an SDP offer (application/sdp, at most 64 KiB)";
        return LIVE_BAD_OFFER;
    }
    if (gst_sdp_message_new_from_text(offer, &sdp) != GST_SDP_OK ||
        gst_sdp_message_medias_len(sdp) == 0) {
        if (sdp)
            gst_sdp_message_free(sdp);
        *why = "the body is not an SDP offer";
        return LIVE_BAD_OFFER;
    }
    int pt = offer_h264(sdp, profile, why);
    if (pt < 0) {
        gst_sdp_message_free(sdp);
        return LIVE_BAD_OFFER;
    }
    uint8_t raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        gst_sdp_message_free(sdp);
        *why = "no random bytes";
        return LIVE_FAILED;
    }
    live_viewer_s *v = cu_xcalloc(1, sizeof(*v));
    v->l = l;
    cu_hex_encode(raw, sizeof(raw), v->id);
    v->user_id = who->user_id;
    cu_strlcpy(v->actor, who->actor, sizeof(v->actor));
    cu_strlcpy(v->source, who->source, sizeof(v->source));
    v->candidates = g_string_new(NULL);
    g_mutex_init(&v->lock);
    g_cond_init(&v->cond);
    v->started_us = cu_time_us();
    v->negotiating = true;

    /* The stream's source (started with its first viewer), and the limits. */
    live_status st = LIVE_OK;
    pipe_tap *attach = NULL;
    pthread_mutex_lock(&l->mu);
    live_pub *p = l->stopping ? NULL : live_pub_video(l, serial);
    live_source *s = p ? p->src : NULL;
    if (!p) {
        *why = "that device is not streaming video now";
        st = LIVE_NOT_LIVE;
    } else {
        st = limits(l, s, who->user_id, why);
    }
    if (st == LIVE_OK && !s && p->codec == PIPE_CODEC_H265 &&
        l->ntranscodes >= l->cfg->live_max_transcodes) {
        *why = "this stream is H.265, and the server transcodes as many streams for browsers as "
               "it may (live.max_transcodes); try later";
        st = LIVE_LIMIT_TRANSCODES;
    }
    if (st == LIVE_OK && !s) {
        s = live_source_start(l, p, why);
        if (!s) {
            st = LIVE_FAILED;
        } else {
            p->src = s;
            s->next = l->sources;
            l->sources = s;
            l->ntranscodes += s->transcode;
            pipe_tap_ref(s->tap);
            attach = s->tap;
        }
    }
    if (st == LIVE_OK) {
        v->src = s;
        v->next = s->viewers;
        s->viewers = v;
    }
    live_handle h = s ? s->h : (live_handle){0};
    pthread_mutex_unlock(&l->mu);
    if (attach)
        l->hooks.attach(l->hooks.attach_ctx, &h, attach, true);
    if (st != LIVE_OK) {
        gst_sdp_message_free(sdp);
        viewer_free(v);
        return st;
    }

    /* Negotiate, outside the lock (webrtcbin's threads take it). */
    char *text = NULL;
    if (!viewer_bin(v, pt, profile)) {
        *why = "the WebRTC elements could not be made";
    } else if (!gst_bin_add(GST_BIN(s->pipeline), v->bin)) {
        *why = "the viewer could not join the pipeline";
    } else {
        v->added = true;
        gst_element_sync_state_with_parent(v->bin);
        text = negotiate(v, sdp, why);
    }
    gst_sdp_message_free(sdp);
    pthread_mutex_lock(&l->mu);
    v->negotiating = false;
    if (!text)
        v->failed = true; /* reaped, its bin with it */
    else
        v->answered_us = cu_time_us();
    if (text)
        cu_metric_add(&live_viewers_metric, 1);
    pthread_mutex_unlock(&l->mu);
    if (!text)
        return LIVE_FAILED;
    *answer = cu_xstrdup(text);
    g_free(text);
    memcpy(id, v->id, 33);
    return LIVE_OK;
}

/* mu held: session @p id, NULL when there is none (or it is being ended). */
static live_viewer_s *viewer_find(live_service *l, const char *id)
{
    for (live_source *s = l->sources; s; s = s->next)
        for (live_viewer_s *v = s->viewers; v; v = v->next)
            if (!v->deleted && strcmp(v->id, id) == 0)
                return v;
    return NULL;
}

bool live_whep_stop(live_service *l, const char *id, int64_t user_id)
{
    if (!l)
        return false;
    pthread_mutex_lock(&l->mu);
    live_viewer_s *v = viewer_find(l, id);
    bool found = v && v->user_id == user_id;
    if (found)
        v->deleted = true; /* the live thread takes it down within REAP_MS */
    pthread_mutex_unlock(&l->mu);
    return found;
}

bool live_session_user(live_service *l, const char *id, int64_t *user_id)
{
    if (!l)
        return false;
    pthread_mutex_lock(&l->mu);
    live_viewer_s *v = viewer_find(l, id);
    if (v)
        *user_id = v->user_id;
    pthread_mutex_unlock(&l->mu);
    return v != NULL;
}
