/*
 * bench/whep_viewers: V live viewers doing WHEP (RFC 9725) against ingestd,
 * each a GStreamer webrtcbin (recvonly H.264), in one process — the bench's
 * and the tests' WebRTC client.
 *
 * Each viewer makes its offer, waits for ICE gathering (loopback only),
 * POSTs it with the bearer token, applies the answer, and from then on
 * reads every access unit the server sends (after depayloading):
 *   - join: from the POST to the first whole keyframe received;
 *   - first_key: whether the first access unit was a keyframe;
 *   - latency: each access unit from the second keyframe on (the first GOP
 *     is the server's kept one, sent at once) carrying the recorders' SEI send-time stamp
 *     (bench/recorders --stamp: user data unregistered, our UUID, the send
 *     time in µs as 16 hex digits) gives now - stamp, same clock;
 *   - decoded: the first --decode viewers also decode (avdec_h264) and
 *     count the frames that come out; the rest only depayload.
 * After --seconds each session is DELETEd, and one JSON object is printed:
 * per-viewer figures and their percentiles.
 *
 * usage: whep_viewers --api https://127.0.0.1:PORT --cacert FILE --token T
 *                     --serial S[,S...] [--viewers V] [--seconds S] [--decode K]
 *                     [--stagger-ms M] [--jitter-ms J] [--no-delete]
 * Viewer i watches serial i mod n. --jitter-ms is the client's jitter buffer
 * (webrtcbin latency; default 10, what a browser holds on a clean network).
 * --no-delete leaves without DELETE (a viewer that crashed).
 */
#define GST_USE_UNSTABLE_API
#include <curl/curl.h>
#include <getopt.h>
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/sdp/sdp.h>
#include <gst/webrtc/webrtc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define SAMPLES_MAX 20000

/* The stamp's UUID, as bench/recorders writes it (no zero bytes: no emulation prevention). */
static const uint8_t stamp_uuid[16] = {0x43, 0x75, 0x73, 0x74, 0x6f, 0x73, 0x2d, 0x6c,
                                       0x69, 0x76, 0x65, 0x2d, 0x74, 0x73, 0x2d, 0x31};

typedef struct viewer {
    int index;
    const char *serial;
    GstElement *pipeline, *webrtc;
    char *location; /* the session, from the answer's Location */
    int status;     /* the POST's */
    char error[256];
    gint64 post_us, answer_us, join_us;
    bool got_first, first_key, decode;
    GMutex lock;
    uint64_t frames, keyframes, decoded;
    double *latency_ms;
    size_t nlatency;
    int64_t packets_lost, packets_received;
    bool negotiated;
} viewer;

static struct {
    const char *api, *cacert, *token;
    char **serials;
    int nserials;
    int viewers, seconds, decode, stagger_ms, jitter_ms;
    bool no_delete;
    GMainLoop *loop;
    viewer *v;
    int pending_stats;
} opt = {.viewers = 1, .seconds = 10, .stagger_ms = 50, .jitter_ms = 10};

/* ------------------------------------------------------------------ HTTP */

typedef struct {
    GString *body;
    char location[512];
    char error[CURL_ERROR_SIZE];
} http_reply;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    g_string_append_len(((http_reply *)arg)->body, p, (gssize)(size * n));
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    http_reply *r = arg;
    size_t len = size * n;
    if (len > 10 && g_ascii_strncasecmp(p, "Location:", 9) == 0) {
        size_t start = 9;
        while (start < len && p[start] == ' ')
            start++;
        size_t end = len;
        while (end > start && (p[end - 1] == '\r' || p[end - 1] == '\n'))
            end--;
        size_t l = end - start < sizeof(r->location) - 1 ? end - start : sizeof(r->location) - 1;
        memcpy(r->location, p + start, l);
        r->location[l] = '\0';
    }
    return len;
}

/* One request; the status (0: no answer). */
static long http(const char *method, const char *url, const char *type, const char *body,
                 http_reply *out)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char auth[512];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", opt.token);
    h = curl_slist_append(h, auth);
    if (type) {
        char ct[128];
        snprintf(ct, sizeof(ct), "Content-Type: %s", type);
        h = curl_slist_append(h, ct);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CAINFO, opt.cacert);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(out->error, sizeof(out->error), "%s", curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* --------------------------------------------------------- access units */

/* The stamp of an SEI NAL (@p n bytes after the NAL header), or -1. */
static int64_t sei_stamp(const uint8_t *p, size_t n)
{
    if (n < 2 + 16 + 16 || p[0] != 5 || p[1] != 32 || memcmp(p + 2, stamp_uuid, 16) != 0)
        return -1;
    char hex[17];
    memcpy(hex, p + 18, 16);
    hex[16] = '\0';
    return (int64_t)g_ascii_strtoull(hex, NULL, 16);
}

static GstFlowReturn on_access_unit(GstAppSink *sink, gpointer data)
{
    viewer *v = data;
    GstSample *s = gst_app_sink_pull_sample(sink);
    if (!s)
        return GST_FLOW_EOS;
    gint64 now = g_get_real_time();
    GstMapInfo m;
    GstBuffer *b = gst_sample_get_buffer(s);
    bool key = false;
    int64_t stamp = -1;
    if (gst_buffer_map(b, &m, GST_MAP_READ)) {
        /* Annex B: walk the start codes. */
        size_t i = 0;
        while (i + 3 < m.size) {
            if (!(m.data[i] == 0 && m.data[i + 1] == 0 && m.data[i + 2] == 1)) {
                i++;
                continue;
            }
            size_t start = i + 3, end = start;
            while (end + 3 <= m.size &&
                   !(m.data[end] == 0 && m.data[end + 1] == 0 &&
                     (m.data[end + 2] == 1 ||
                      (m.data[end + 2] == 0 && end + 3 < m.size && m.data[end + 3] == 1))))
                end++;
            if (end + 3 > m.size)
                end = m.size;
            if (start < end) {
                uint8_t type = m.data[start] & 0x1f;
                if (type == 5)
                    key = true;
                else if (type == 6 && stamp < 0)
                    stamp = sei_stamp(m.data + start + 1, end - start - 1);
            }
            i = end;
        }
        gst_buffer_unmap(b, &m);
    }
    g_mutex_lock(&v->lock);
    if (!v->got_first) {
        v->got_first = true;
        v->first_key = key;
    }
    if (key && !v->join_us)
        v->join_us = now;
    v->frames++;
    v->keyframes += key;
    /* Live from the second keyframe on: the first GOP is the one the server
     * kept, sent at once on joining (its stamps are as old as the GOP). */
    if (stamp > 0 && v->keyframes >= 2 && v->nlatency < SAMPLES_MAX)
        v->latency_ms[v->nlatency++] = (double)(now - stamp) / 1000.0;
    g_mutex_unlock(&v->lock);
    gst_sample_unref(s);
    return GST_FLOW_OK;
}

static void on_decoded(GstElement *sink, GstBuffer *b, GstPad *pad, gpointer data)
{
    (void)sink;
    (void)b;
    (void)pad;
    viewer *v = data;
    g_mutex_lock(&v->lock);
    v->decoded++;
    g_mutex_unlock(&v->lock);
}

static void on_pad(GstElement *webrtc, GstPad *pad, gpointer data)
{
    viewer *v = data;
    if (GST_PAD_DIRECTION(pad) != GST_PAD_SRC)
        return;
    const char *desc = v->decode
                           ? "rtph264depay ! video/x-h264,stream-format=byte-stream,alignment=au ! "
                             "tee name=t ! queue ! appsink name=au sync=false "
                             "t. ! queue ! h264parse ! avdec_h264 ! fakesink name=dec sync=false "
                             "signal-handoffs=true"
                           : "rtph264depay ! video/x-h264,stream-format=byte-stream,alignment=au ! "
                             "appsink name=au sync=false";
    GError *e = NULL;
    GstElement *bin = gst_parse_bin_from_description(desc, TRUE, &e);
    if (!bin) {
        fprintf(stderr, "whep_viewers: %s\n", e ? e->message : "no bin");
        return;
    }
    GstElement *au = gst_bin_get_by_name(GST_BIN(bin), "au");
    GstAppSinkCallbacks cb = {.new_sample = on_access_unit};
    gst_app_sink_set_callbacks(GST_APP_SINK(au), &cb, v, NULL);
    gst_object_unref(au);
    if (v->decode) {
        GstElement *dec = gst_bin_get_by_name(GST_BIN(bin), "dec");
        g_signal_connect(dec, "handoff", G_CALLBACK(on_decoded), v);
        gst_object_unref(dec);
    }
    gst_bin_add(GST_BIN(v->pipeline), bin);
    gst_element_sync_state_with_parent(bin);
    GstPad *sink = gst_element_get_static_pad(bin, "sink");
    gst_pad_link(pad, sink);
    gst_object_unref(sink);
    (void)webrtc;
}

/* ------------------------------------------------------------ negotiation */

typedef struct {
    viewer *v;
    char *offer;
    char *answer;
} post_job;

static gboolean apply_answer(gpointer data)
{
    post_job *j = data;
    viewer *v = j->v;
    if (j->answer) {
        GstSDPMessage *sdp;
        gst_sdp_message_new_from_text(j->answer, &sdp);
        GstWebRTCSessionDescription *d =
            gst_webrtc_session_description_new(GST_WEBRTC_SDP_TYPE_ANSWER, sdp);
        g_signal_emit_by_name(v->webrtc, "set-remote-description", d, NULL);
        gst_webrtc_session_description_free(d);
        v->negotiated = true;
    }
    g_free(j->offer);
    g_free(j->answer);
    g_free(j);
    return G_SOURCE_REMOVE;
}

static gpointer post_offer(gpointer data)
{
    post_job *j = data;
    viewer *v = j->v;
    char url[1024];
    snprintf(url, sizeof(url), "%s/api/v1/live/%s/whep", opt.api, v->serial);
    http_reply r = {.body = g_string_new(NULL)};
    v->post_us = g_get_real_time();
    v->status = (int)http("POST", url, "application/sdp", j->offer, &r);
    v->answer_us = g_get_real_time();
    if (v->status == 201 && r.location[0]) {
        v->location = g_strdup_printf("%s%s", opt.api, r.location);
        j->answer = g_strdup(r.body->str);
    } else {
        snprintf(v->error, sizeof(v->error), "%.200s%.55s", r.body->str, r.error);
    }
    g_string_free(r.body, TRUE);
    g_main_context_invoke(NULL, apply_answer, j);
    return NULL;
}

/* Every 10 ms after the offer is set (a notification may be missed): once
 * ICE gathering is complete, the offer is POSTed. */
static gboolean poll_gathering(gpointer data)
{
    viewer *v = data;
    GstWebRTCICEGatheringState st;
    g_object_get(v->webrtc, "ice-gathering-state", &st, NULL);
    if (st != GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
        return G_SOURCE_CONTINUE;
    if (v->location || v->status)
        return G_SOURCE_REMOVE;
    GstElement *webrtc = v->webrtc;
    GstWebRTCSessionDescription *local = NULL;
    g_object_get(webrtc, "local-description", &local, NULL);
    if (!local)
        return G_SOURCE_CONTINUE;
    post_job *j = g_new0(post_job, 1);
    j->v = v;
    j->offer = gst_sdp_message_as_text(local->sdp);
    gst_webrtc_session_description_free(local);
    v->status = -1; /* (posting) */
    g_thread_unref(g_thread_new("whep-post", post_offer, j));
    return G_SOURCE_REMOVE;
}

static void on_offer(GstPromise *p, gpointer data)
{
    viewer *v = data;
    const GstStructure *r = gst_promise_get_reply(p);
    GstWebRTCSessionDescription *offer = NULL;
    if (r)
        gst_structure_get(r, "offer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &offer, NULL);
    gst_promise_unref(p);
    if (!offer) {
        snprintf(v->error, sizeof(v->error), "no offer");
        return;
    }
    g_signal_emit_by_name(v->webrtc, "set-local-description", offer, NULL);
    gst_webrtc_session_description_free(offer);
    g_timeout_add(10, poll_gathering, v);
}

static gboolean start_viewer(gpointer data)
{
    viewer *v = data;
    v->pipeline = gst_pipeline_new(NULL);
    v->webrtc = gst_element_factory_make("webrtcbin", NULL);
    gst_util_set_object_arg(G_OBJECT(v->webrtc), "bundle-policy", "max-bundle");
    g_object_set(v->webrtc, "latency", (guint)opt.jitter_ms, NULL);
    gst_bin_add(GST_BIN(v->pipeline), v->webrtc);
    GstWebRTCICE *ice = NULL;
    g_object_get(v->webrtc, "ice-agent", &ice, NULL);
    gboolean ok = FALSE;
    if (ice) { /* loopback, UDP, no UPnP discovery (it holds gathering back 200 ms) */
        g_signal_emit_by_name(ice, "add-local-ip-address", "127.0.0.1", &ok);
        g_object_set(ice, "ice-tcp", FALSE, NULL);
        GObject *agent = NULL;
        g_object_get(ice, "agent", &agent, NULL);
        if (agent) {
            g_object_set(agent, "upnp", FALSE, NULL);
            g_object_unref(agent);
        }
        gst_object_unref(ice);
    }
    g_signal_connect(v->webrtc, "pad-added", G_CALLBACK(on_pad), v);
    GstCaps *caps = gst_caps_from_string(
        "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
        "packetization-mode=(string)1,profile-level-id=(string)42e01f");
    GstWebRTCRTPTransceiver *t = NULL;
    g_signal_emit_by_name(v->webrtc, "add-transceiver",
                          GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_RECVONLY, caps, &t);
    gst_caps_unref(caps);
    if (t)
        gst_object_unref(t);
    gst_element_set_state(v->pipeline, GST_STATE_PLAYING);
    /* The offer at once (not on negotiation-needed, which may come before
     * anyone listens). */
    GstPromise *p = gst_promise_new_with_change_func(on_offer, v, NULL);
    g_signal_emit_by_name(v->webrtc, "create-offer", NULL, p);
    return G_SOURCE_REMOVE;
}

/* ------------------------------------------------------------------ end */

static void on_stats(GstPromise *p, gpointer data)
{
    viewer *v = data;
    const GstStructure *r = gst_promise_get_reply(p);
    for (int i = 0; r && i < gst_structure_n_fields(r); i++) {
        const GValue *val = gst_structure_get_value(r, gst_structure_nth_field_name(r, i));
        if (!GST_VALUE_HOLDS_STRUCTURE(val))
            continue;
        const GstStructure *s = gst_value_get_structure(val);
        GstWebRTCStatsType type;
        if (!gst_structure_get(s, "type", GST_TYPE_WEBRTC_STATS_TYPE, &type, NULL) ||
            type != GST_WEBRTC_STATS_INBOUND_RTP)
            continue;
        gint64 lost = 0;
        guint64 received = 0;
        gst_structure_get_int64(s, "packets-lost", &lost);
        gst_structure_get_uint64(s, "packets-received", &received);
        v->packets_lost += lost;
        v->packets_received += (int64_t)received;
    }
    gst_promise_unref(p);
    if (g_atomic_int_dec_and_test(&opt.pending_stats))
        g_main_loop_quit(opt.loop);
}

static gboolean on_done(gpointer data)
{
    /* Offers still being answered are waited for (20 s at most). */
    static int waits;
    for (int i = 0; i < opt.viewers && waits < 200; i++)
        if (opt.v[i].status == -1 || !opt.v[i].pipeline) {
            waits++;
            g_timeout_add(100, on_done, data);
            return G_SOURCE_REMOVE;
        }
    g_atomic_int_set(&opt.pending_stats, opt.viewers);
    for (int i = 0; i < opt.viewers; i++) {
        GstPromise *p = gst_promise_new_with_change_func(on_stats, &opt.v[i], NULL);
        g_signal_emit_by_name(opt.v[i].webrtc, "get-stats", NULL, p);
    }
    return G_SOURCE_REMOVE;
}

/* This process's CPU time so far (user and system), in seconds. */
static double cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *s, size_t n, double p)
{
    if (n == 0)
        return -1;
    qsort(s, n, sizeof(*s), cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return s[i < n ? i : n - 1];
}

/* A decimal option in [min, max], or -1 (then the usage is printed). */
static int int_arg(const char *s, int min, int max)
{
    char *end;
    long v = strtol(s, &end, 10);
    return end != s && *end == '\0' && v >= min && v <= max ? (int)v : -1;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {{"api", 1, 0, 'a'},
                                          {"cacert", 1, 0, 'c'},
                                          {"token", 1, 0, 't'},
                                          {"serial", 1, 0, 's'},
                                          {"viewers", 1, 0, 'v'},
                                          {"seconds", 1, 0, 'S'},
                                          {"decode", 1, 0, 'd'},
                                          {"stagger-ms", 1, 0, 'g'},
                                          {"jitter-ms", 1, 0, 'j'},
                                          {"no-delete", 0, 0, 'n'},
                                          {0, 0, 0, 0}};
    const char *serials = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'a': opt.api = optarg; break;
        case 'c': opt.cacert = optarg; break;
        case 't': opt.token = optarg; break;
        case 's': serials = optarg; break;
        case 'v': opt.viewers = int_arg(optarg, 1, 10000); break;
        case 'S': opt.seconds = int_arg(optarg, 1, 86400); break;
        case 'd': opt.decode = int_arg(optarg, 0, 10000); break;
        case 'g': opt.stagger_ms = int_arg(optarg, 0, 60000); break;
        case 'j': opt.jitter_ms = int_arg(optarg, 0, 10000); break;
        case 'n': opt.no_delete = true; break;
        default: goto usage;
        }
    }
    if (!opt.api || !opt.cacert || !opt.token || !serials || opt.viewers < 1 || opt.seconds < 1 ||
        opt.decode < 0 || opt.stagger_ms < 0 || opt.jitter_ms < 0)
        goto usage;
    gst_init(NULL, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    opt.serials = g_strsplit(serials, ",", -1);
    opt.nserials = (int)g_strv_length(opt.serials);
    opt.loop = g_main_loop_new(NULL, FALSE);
    opt.v = g_new0(viewer, (gsize)opt.viewers);
    for (int i = 0; i < opt.viewers; i++) {
        viewer *v = &opt.v[i];
        v->index = i;
        v->serial = opt.serials[i % opt.nserials];
        v->decode = i < opt.decode;
        v->latency_ms = g_new0(double, SAMPLES_MAX);
        g_mutex_init(&v->lock);
        g_timeout_add((guint)(i * opt.stagger_ms), start_viewer, v);
    }
    g_timeout_add((guint)(opt.viewers * opt.stagger_ms + opt.seconds * 1000), on_done, NULL);
    g_main_loop_run(opt.loop);

    /* End the sessions (or not: --no-delete), then report. */
    int deleted = 0;
    for (int i = 0; i < opt.viewers; i++) {
        viewer *v = &opt.v[i];
        if (v->location && !opt.no_delete) {
            http_reply r = {.body = g_string_new(NULL)};
            deleted += http("DELETE", v->location, NULL, NULL, &r) == 200;
            g_string_free(r.body, TRUE);
        }
        gst_element_set_state(v->pipeline, GST_STATE_NULL);
    }
    double *joins = g_new0(double, (gsize)opt.viewers), *lat = NULL;
    size_t njoins = 0, nlat = 0, all = 0;
    int ok = 0, first_key = 0, answered = 0;
    uint64_t frames = 0, decoded = 0;
    int64_t lost = 0, received = 0;
    for (int i = 0; i < opt.viewers; i++)
        all += opt.v[i].nlatency;
    lat = g_new0(double, all + 1);
    printf("{\"viewers\":%d,\"seconds\":%d,\"jitter_ms\":%d,\"per_viewer\":[", opt.viewers,
           opt.seconds, opt.jitter_ms);
    for (int i = 0; i < opt.viewers; i++) {
        viewer *v = &opt.v[i];
        double join = v->join_us && v->post_us ? (double)(v->join_us - v->post_us) / 1000.0 : -1;
        if (join >= 0)
            joins[njoins++] = join;
        memcpy(lat + nlat, v->latency_ms, v->nlatency * sizeof(double));
        nlat += v->nlatency;
        answered += v->status == 201;
        ok += v->frames > 0;
        first_key += v->got_first && v->first_key;
        frames += v->frames;
        decoded += v->decoded;
        lost += v->packets_lost;
        received += v->packets_received;
        double vlat = pct(v->latency_ms, v->nlatency, 95);
        printf("%s{\"serial\":\"%s\",\"status\":%d,\"answer_ms\":%.1f,\"join_ms\":%.1f,\"first_"
               "key\":%s,"
               "\"frames\":%llu,\"keyframes\":%llu,\"decoded\":%llu,\"stamps\":%zu,"
               "\"latency_ms_p95\":%.1f,\"packets_received\":%lld,\"packets_lost\":%lld%s%s%s}",
               i ? "," : "", v->serial, v->status,
               v->answer_us ? (double)(v->answer_us - v->post_us) / 1000.0 : -1, join,
               v->first_key ? "true" : "false", (unsigned long long)v->frames,
               (unsigned long long)v->keyframes, (unsigned long long)v->decoded, v->nlatency, vlat,
               (long long)v->packets_received, (long long)v->packets_lost,
               v->error[0] ? ",\"error\":\"" : "", v->error[0] ? g_strescape(v->error, NULL) : "",
               v->error[0] ? "\"" : "");
    }
    printf("],\"answered\":%d,\"receiving\":%d,\"first_frame_keyframe\":%d,\"deleted\":%d,"
           "\"frames\":%llu,\"decoded\":%llu,\"join_ms_p50\":%.1f,\"join_ms_p95\":%.1f,"
           "\"latency_samples\":%zu,\"latency_ms_p50\":%.1f,\"latency_ms_p95\":%.1f,"
           "\"latency_ms_p99\":%.1f,\"packets_received\":%lld,\"packets_lost\":%lld,"
           "\"cpu_s\":%.2f}\n",
           answered, ok, first_key, deleted, (unsigned long long)frames,
           (unsigned long long)decoded, pct(joins, njoins, 50), pct(joins, njoins, 95), nlat,
           pct(lat, nlat, 50), pct(lat, nlat, 95), pct(lat, nlat, 99), (long long)received,
           (long long)lost, cpu_s());
    return answered == opt.viewers ? 0 : 1;
usage:
    fprintf(stderr, "usage: whep_viewers --api URL --cacert FILE --token T --serial S[,S...] "
                    "[--viewers V] [--seconds S] [--decode K] [--stagger-ms M] [--jitter-ms J] "
                    "[--no-delete]\n");
    return 2;
}
