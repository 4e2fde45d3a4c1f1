/*
 * MP4 clips (docs/export.md): the stored RTP packets of a recording, from
 * the keyframe at or before the range's start to the last access unit at
 * or before its end, through GStreamer: appsrc → rtph264depay/rtph265depay
 * → h264parse/h265parse → mp4mux → appsink.
 *
 * Timestamps are the packets' own: each RTP timestamp is extended past its
 * 32-bit wrap and made relative to the clip's first packet, so a gap in the
 * recording stays a gap in the clip (never stretched, never filled). The
 * capture time of a packet is its segment's (from RTCP sender reports, as
 * ingest mapped it) plus its RTP time since the segment's first packet; the
 * clip's creation_time is its first packet's.
 *
 * First every segment in the range is read and verified; only then is the
 * pipeline built and fed, reading each again.
 */
#include "export.h"

#include "pipeline/pipeline.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUEUE_MAX_BYTES (4u * 1024 * 1024) /* appsrc's queue: fed while below */
#define EOS_WAIT_NS     (120 * GST_SECOND)

/* ------------------------------------------------------------------- init */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static char init_error[256];
static char registry_path[PATH_MAX];

static void init_gstreamer(void)
{
    /* The registry cache where the account running us may write. */
    if (registry_path[0])
        setenv("GST_REGISTRY_1_0", registry_path, 0);
    GError *e = NULL;
    if (!gst_init_check(NULL, NULL, &e)) {
        snprintf(init_error, sizeof(init_error), "GStreamer: %s",
                 e && e->message ? e->message : "cannot initialise");
        g_clear_error(&e);
    }
}

cu_rc export_init(const char *cache_dir, cu_err *err)
{
    if (cache_dir && !registry_path[0])
        snprintf(registry_path, sizeof(registry_path), "%s/gst-registry.bin", cache_dir);
    pthread_once(&init_once, init_gstreamer);
    if (init_error[0])
        return cu_err_set(err, CU_ERR_IO, "%s", init_error);
    return CU_OK;
}

/* ---------------------------------------------------------------- output */

typedef struct {
    export_write_fn write;
    void *ctx;
    export_mp4_times times;
    EVP_MD_CTX *sha;
    uint64_t bytes;
    bool refused; /* the receiver stopped */
    bool bad_mp4;
} output;

static bool hashed_write(void *ctx, const uint8_t *data, size_t len)
{
    output *o = ctx;
    EVP_DigestUpdate(o->sha, data, len);
    o->bytes += len;
    if (!o->write(o->ctx, data, len)) {
        o->refused = true;
        return false;
    }
    return true;
}

static GstFlowReturn on_sample(GstAppSink *sink, gpointer data)
{
    output *o = data;
    GstSample *sample = gst_app_sink_pull_sample(sink);
    if (!sample)
        return GST_FLOW_EOS;
    GstBuffer *b = gst_sample_get_buffer(sample);
    GstMapInfo map;
    bool ok = b && gst_buffer_map(b, &map, GST_MAP_READ);
    if (ok) {
        bool bad = false;
        ok = export_mp4_times_feed(&o->times, map.data, map.size, hashed_write, o, &bad);
        o->bad_mp4 |= bad;
        gst_buffer_unmap(b, &map);
    }
    gst_sample_unref(sample);
    return ok ? GST_FLOW_OK : GST_FLOW_ERROR;
}

/* ------------------------------------------------------------------ plan */

/* What of the recording the clip takes. */
typedef struct {
    uint64_t first, last; /* segments */
    pipe_codec codec;
    uint8_t payload_type;
    uint32_t clock_rate;
    uint32_t start_ts; /* the access unit it starts on, in the first segment */
} plan;

/* Capture time of RTP timestamp @p ts in a segment that starts at @p seg_start_us with @p seg_ts.
 */
static int64_t capture_us(const store_segment_meta *m, uint32_t seg_ts, uint32_t ts, uint32_t clock)
{
    return m->start_us + (int64_t)(int32_t)(ts - seg_ts) * 1000000 / (int64_t)clock;
}

static int keyframe(pipe_codec codec, const pipe_rtp *p)
{
    return codec == PIPE_CODEC_H264   ? pipe_h264_keyframe(p->payload, p->payload_len)
           : codec == PIPE_CODEC_H265 ? pipe_h265_keyframe(p->payload, p->payload_len)
                                      : 0;
}

/* One segment's payload: RTP of the plan's codec and clock, every record
 * whole. The first segment sets them. */
static cu_rc check_payload(const cu_buf *plain, uint64_t i, plan *pl, bool first, cu_err *err)
{
    pipe_payload_reader r;
    if (!pipe_payload_open(&r, (const uint8_t *)plain->data, plain->len))
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu: not an RTP payload",
                          (unsigned long long)i);
    if (first) {
        pl->codec = r.codec;
        pl->payload_type = r.payload_type;
        pl->clock_rate = r.clock_rate;
        if (r.codec != PIPE_CODEC_H264 && r.codec != PIPE_CODEC_H265)
            return cu_err_set(err, CU_ERR_INVALID,
                              "a %s recording: clips are made of video (H.264, H.265)",
                              pipe_codec_name(r.codec));
        if (r.clock_rate == 0)
            return cu_err_set(err, CU_ERR_INVALID, "segment %llu: no clock rate",
                              (unsigned long long)i);
    } else if (r.codec != pl->codec || r.clock_rate != pl->clock_rate) {
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu: another codec or clock",
                          (unsigned long long)i);
    }
    pipe_record rec;
    int more;
    while ((more = pipe_payload_next(&r, &rec)) == 1)
        ;
    if (more < 0)
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu: a packet record runs past its end",
                          (unsigned long long)i);
    return CU_OK;
}

/* The verification of a range, shared by its threads: each takes the next
 * segment; the failure kept is the earliest segment's (the one named). */
typedef struct {
    const store_reader *rd;
    plan *pl;
    pthread_mutex_t mu;
    uint64_t next, last;
    cu_rc rc;
    uint64_t failed; /* the segment of rc */
    cu_err err;
} verification;

static void *verify_segments(void *arg)
{
    verification *v = arg;
    cu_buf plain;
    cu_buf_init(&plain, STORE_READ_BUF_MAX);
    for (;;) {
        pthread_mutex_lock(&v->mu);
        uint64_t i = v->next++;
        bool done = i > v->last || (v->rc && i > v->failed);
        pthread_mutex_unlock(&v->mu);
        if (done)
            break;
        cu_err e;
        plan mine = *v->pl; /* (the first segment's fields, read only) */
        cu_rc rc = store_reader_read(v->rd, i, &plain, &e);
        if (!rc)
            rc = check_payload(&plain, i, &mine, false, &e);
        if (rc) {
            pthread_mutex_lock(&v->mu);
            if (!v->rc || i < v->failed) {
                v->rc = rc;
                v->failed = i;
                v->err = e;
            }
            pthread_mutex_unlock(&v->mu);
        }
    }
    cu_buf_free(&plain);
    return NULL;
}

#define VERIFY_THREADS_MAX 4

/* The segments in range, each read and verified (on up to one thread per
 * core); the keyframe to start on. */
static cu_rc make_plan(store_reader *rd, const export_clip_opts *o, cu_buf *plain, plan *pl,
                       cu_err *err)
{
    uint64_t n = store_reader_count(rd);
    if (n == 0)
        return cu_err_set(err, CU_ERR_NOTFOUND, "the recording has no segments");
    pl->first = 0;
    pl->last = n - 1;
    for (uint64_t i = 0; i < n; i++) {
        const store_segment_meta *m = store_reader_meta(rd, i);
        if (o->start_us && m->start_us <= o->start_us)
            pl->first = i;
        if (o->end_us && m->start_us <= o->end_us)
            pl->last = i;
    }
    const store_segment_meta *first = store_reader_meta(rd, pl->first);
    const store_segment_meta *last = store_reader_meta(rd, n - 1);
    if ((o->end_us && o->end_us < store_reader_meta(rd, 0)->start_us) ||
        (o->start_us && o->start_us > last->end_us) || pl->first > pl->last)
        return cu_err_set(err, CU_ERR_NOTFOUND, "nothing of the recording lies in that range");

    /* The first segment here: its codec, and the keyframe to start on. */
    cu_rc rc = store_reader_read(rd, pl->first, plain, err);
    if (!rc)
        rc = check_payload(plain, pl->first, pl, true, err);
    if (rc)
        return rc;
    pipe_payload_reader r;
    if (!pipe_payload_open(&r, (const uint8_t *)plain->data, plain->len))
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu: not an RTP payload",
                          (unsigned long long)pl->first); /* (checked above) */
    pipe_record rec;
    bool have_seg_ts = false, have_start = false;
    uint32_t seg_ts = 0;
    while (pipe_payload_next(&r, &rec) == 1) {
        pipe_rtp p;
        if (pipe_rtp_parse(rec.pkt, rec.len, &p) != PIPE_RTP_OK)
            continue;
        if (!have_seg_ts) {
            seg_ts = p.timestamp;
            have_seg_ts = true;
        }
        if (keyframe(pl->codec, &p) != 1)
            continue;
        if (!have_start || (o->start_us && capture_us(first, seg_ts, p.timestamp, pl->clock_rate) <=
                                               o->start_us)) {
            pl->start_ts = p.timestamp;
            have_start = true;
        }
    }
    if (!have_start)
        return cu_err_set(err, CU_ERR_INVALID, "segment %llu: no keyframe to start on",
                          (unsigned long long)pl->first);

    if (o->verified)
        return CU_OK; /* (the caller read and verified every one already) */
    /* The rest, in parallel. */
    verification v = {.rd = rd, .pl = pl, .next = pl->first + 1, .last = pl->last};
    pthread_mutex_init(&v.mu, NULL);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cores < 1 ? 1 : cores > VERIFY_THREADS_MAX ? VERIFY_THREADS_MAX : (int)cores;
    pthread_t helpers[VERIFY_THREADS_MAX];
    int started = 0;
    for (int t = 1; t < threads; t++)
        if (pthread_create(&helpers[started], NULL, verify_segments, &v) == 0)
            started++;
    verify_segments(&v);
    for (int t = 0; t < started; t++)
        pthread_join(helpers[t], NULL);
    pthread_mutex_destroy(&v.mu);
    if (v.rc) {
        *err = v.err;
        return v.rc;
    }
    return CU_OK;
}

/* ------------------------------------------------- parameter sets (SDP) */

#define SDP_MAX 49152

/* Whether @p v (@p n bytes) is base64 and commas only (safe inside caps). */
static bool sprop_value_ok(const char *v, size_t n)
{
    if (n == 0 || n > 4096)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= 'a' && v[i] <= 'z') ||
              (v[i] >= '0' && v[i] <= '9') || v[i] == '+' || v[i] == '/' || v[i] == '=' ||
              v[i] == ','))
            return false;
    return true;
}

/* The fmtp parameters of @p fmtp ("a=fmtp:PT k=v;k=v", @p n bytes) that carry
 * parameter sets, as caps fields appended to @p out. */
static void sprop_fields(const char *fmtp, size_t n, pipe_codec codec, cu_buf *out)
{
    static const char *const h264[] = {"sprop-parameter-sets", NULL};
    static const char *const h265[] = {"sprop-vps", "sprop-sps", "sprop-pps", NULL};
    const char *const *keys = codec == PIPE_CODEC_H264 ? h264 : h265;
    const char *p = memchr(fmtp, ' ', n), *end = fmtp + n;
    while (p && p < end) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *stop = memchr(p, ';', (size_t)(end - p));
        if (!stop)
            stop = end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        for (int k = 0; eq && keys[k]; k++) {
            size_t kl = strlen(keys[k]);
            const char *v = eq + 1;
            size_t vl = (size_t)(stop - v);
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\r'))
                vl--;
            if ((size_t)(eq - p) == kl && memcmp(p, keys[k], kl) == 0 && sprop_value_ok(v, vl)) {
                char head[64];
                int hl = snprintf(head, sizeof(head), ",%s=(string)\"", keys[k]);
                if (cu_buf_append(out, head, (size_t)hl) || cu_buf_append(out, v, vl) ||
                    cu_buf_append(out, "\"", 1))
                    return;
            }
        }
        p = stop;
    }
}

/*
 * Parameter sets that travel only in the SDP (an RTSP publisher's
 * sprop-parameter-sets; a payloader without config-interval sends none in
 * band): from the meta file's SDP, the video section's fmtp for the
 * recording's payload type, as caps fields for the depayloader. Empty when
 * there are none.
 */
static void sprop_caps(const char *meta, size_t meta_len, const plan *pl, cu_buf *out)
{
    static const char key[] = "sdp_b64=";
    const char *line = meta, *end = meta + meta_len;
    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (n > sizeof(key) - 1 && memcmp(line, key, sizeof(key) - 1) == 0) {
            uint8_t *sdp = cu_xmalloc(SDP_MAX);
            size_t sdp_len = 0;
            if (cu_base64_decode(line + sizeof(key) - 1, n - (sizeof(key) - 1), sdp, SDP_MAX,
                                 &sdp_len)) {
                bool video = false;
                const char *l = (const char *)sdp, *se = l + sdp_len;
                char fmtp[32];
                int fl = snprintf(fmtp, sizeof(fmtp), "a=fmtp:%u ", pl->payload_type);
                while (l < se) {
                    const char *e = memchr(l, '\n', (size_t)(se - l));
                    size_t ln = e ? (size_t)(e - l) : (size_t)(se - l);
                    if (ln >= 2 && l[0] == 'm' && l[1] == '=')
                        video = ln >= 7 && memcmp(l, "m=video", 7) == 0;
                    else if (video && ln > (size_t)fl && memcmp(l, fmtp, (size_t)fl) == 0)
                        sprop_fields(l, ln, pl->codec, out);
                    l += ln + 1;
                }
            }
            free(sdp);
            return;
        }
        line += n + 1;
    }
}

/* -------------------------------------------------------------- pipeline */

static GstElement *build(const plan *pl, const export_clip_opts *o, const char *sprop, output *out,
                         GstElement **src_out, char *desc, size_t desc_len, cu_err *err)
{
    const char *name = pl->codec == PIPE_CODEC_H264 ? "H264" : "H265";
    const char *lower = pl->codec == PIPE_CODEC_H264 ? "264" : "265";
    snprintf(desc, desc_len,
             "appsrc name=src format=time stream-type=stream "
             "! rtph%sdepay ! h%sparse ! video/x-h%s,stream-format=%s,alignment=au "
             "! mp4mux name=mux %s ! appsink name=sink sync=false",
             lower, lower, lower, pl->codec == PIPE_CODEC_H264 ? "avc" : "hvc1",
             o->fragmented ? "fragment-duration=1000 streamable=true" : "faststart=true");
    /* (the caps apart: the SDP's parameter sets are quoted strings) */
    size_t caps_len = strlen(sprop) + 160;
    char *caps_text = cu_xmalloc(caps_len);
    snprintf(caps_text, caps_len,
             "application/x-rtp,media=(string)video,encoding-name=(string)%s,clock-rate=(int)%u,"
             "payload=(int)%u%s",
             name, pl->clock_rate, pl->payload_type, sprop);
    GstCaps *caps = gst_caps_from_string(caps_text);
    free(caps_text);
    if (!caps) {
        cu_err_set(err, CU_ERR_INVALID, "the recording's RTP caps do not parse");
        return NULL;
    }
    GError *e = NULL;
    GstElement *pipeline = gst_parse_launch(desc, &e);
    if (!pipeline || e) {
        cu_err_set(err, CU_ERR_IO, "GStreamer pipeline: %s", e ? e->message : "cannot build");
        g_clear_error(&e);
        if (pipeline)
            gst_object_unref(pipeline);
        gst_caps_unref(caps);
        return NULL;
    }
    GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
    GstAppSinkCallbacks cb = {.new_sample = on_sample};
    gst_app_sink_set_callbacks(GST_APP_SINK(sink), &cb, out, NULL);
    gst_object_unref(sink);
    *src_out = gst_bin_get_by_name(GST_BIN(pipeline), "src");
    g_object_set(*src_out, "caps", caps, NULL);
    gst_caps_unref(caps);
    return pipeline;
}

/* The first error on @p bus (waiting up to @p wait_ns), as text; false when none. */
static bool bus_error(GstBus *bus, GstClockTime wait_ns, bool *eos, char *why, size_t why_len)
{
    GstMessage *m = gst_bus_timed_pop_filtered(bus, wait_ns, GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
    if (!m)
        return false;
    bool error = GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR;
    if (error) {
        GError *e = NULL;
        gst_message_parse_error(m, &e, NULL);
        snprintf(why, why_len, "%s: %s", GST_OBJECT_NAME(GST_MESSAGE_SRC(m)),
                 e ? e->message : "error");
        g_clear_error(&e);
    } else {
        *eos = true;
    }
    gst_message_unref(m);
    return error;
}

/* ----------------------------------------------------------------- clip */

cu_rc export_clip(store_reader *rd, const export_clip_opts *o, export_write_fn write, void *ctx,
                  export_clip_report *rep, cu_err *err)
{
    memset(rep, 0, sizeof(*rep));
    cu_rc rc = export_init(NULL, err);
    if (rc)
        return rc;
    cu_buf plain;
    cu_buf_init(&plain, STORE_READ_BUF_MAX);
    plan pl;
    memset(&pl, 0, sizeof(pl));
    output out = {.write = write, .ctx = ctx, .sha = EVP_MD_CTX_new()};
    GstElement *pipeline = NULL, *src = NULL;
    GstBus *bus = NULL;
    char why[512] = "";
    bool eos = false, started = false, done = false;
    int64_t ext = 0; /* RTP time since the clip's first packet, past 32-bit wraps */
    uint32_t prev_ts = 0, last_pushed_ts = 0;

    rc = make_plan(rd, o, &plain, &pl, err);
    if (rc)
        goto out;
    if (!out.sha || EVP_DigestInit_ex(out.sha, EVP_sha256(), NULL) != 1) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "no SHA-256 context");
        goto out;
    }
    cu_buf sprop;
    cu_buf_init(&sprop, 12288);
    size_t meta_len;
    const char *meta = store_reader_meta_file(rd, &meta_len);
    sprop_caps(meta, meta_len, &pl, &sprop);
    rep->sdp_parameter_sets = sprop.len > 0;
    if (cu_buf_append(&sprop, "", 1) != CU_OK) { /* (NUL) */
        cu_buf_free(&sprop);
        rc = cu_err_set(err, CU_ERR_INVALID, "the SDP's parameter sets are too long");
        goto out;
    }
    pipeline = build(&pl, o, sprop.data, &out, &src, rep->pipeline, sizeof(rep->pipeline), err);
    cu_buf_free(&sprop);
    if (!pipeline) {
        rc = CU_ERR_IO;
        goto out;
    }
    bus = gst_element_get_bus(pipeline);
    cu_strlcpy(rep->codec, pl.codec == PIPE_CODEC_H264 ? "h264" : "h265", sizeof(rep->codec));
    rep->first_segment = pl.first;
    rep->last_segment = pl.last;

    /* The capture time the clip carries is its first packet's: the muxer's
     * output waits for it (the pipeline plays from that packet on). */
    for (uint64_t i = pl.first; i <= pl.last && !done && !rc; i++) {
        const store_segment_meta *m = store_reader_meta(rd, i);
        rc = store_reader_read(rd, i, &plain, err);
        if (rc)
            break;
        pipe_payload_reader r;
        if (!pipe_payload_open(&r, (const uint8_t *)plain.data, plain.len)) {
            rc = cu_err_set(err, CU_ERR_INVALID, "segment %llu: not an RTP payload",
                            (unsigned long long)i);
            break;
        }
        pipe_record rec;
        bool have_seg_ts = false;
        uint32_t seg_ts = 0;
        bool discont = false;
        while (pipe_payload_next(&r, &rec) == 1) {
            pipe_rtp p;
            discont |= rec.lost_before > 0;
            if (pipe_rtp_parse(rec.pkt, rec.len, &p) != PIPE_RTP_OK)
                continue;
            if (!have_seg_ts) {
                seg_ts = p.timestamp;
                have_seg_ts = true;
            }
            if (!started) {
                if (i != pl.first || p.timestamp != pl.start_ts)
                    continue;
                started = true;
                ext = 0;
                prev_ts = p.timestamp;
                last_pushed_ts = p.timestamp;
                rep->first_us = capture_us(m, seg_ts, p.timestamp, pl.clock_rate);
                export_mp4_times_init(&out.times, rep->first_us);
                if (gst_element_set_state(pipeline, GST_STATE_PLAYING) ==
                    GST_STATE_CHANGE_FAILURE) {
                    rc = cu_err_set(err, CU_ERR_IO, "GStreamer: the pipeline does not start");
                    break;
                }
            }
            int64_t at = capture_us(m, seg_ts, p.timestamp, pl.clock_rate);
            if (o->end_us && at > o->end_us && p.timestamp != last_pushed_ts) {
                done = true; /* the first access unit past the end */
                break;
            }
            ext += (int32_t)(p.timestamp - prev_ts);
            prev_ts = p.timestamp;
            GstBuffer *b = gst_buffer_new_memdup(rec.pkt, rec.len);
            GST_BUFFER_PTS(b) =
                ext < 0 ? 0 : gst_util_uint64_scale((uint64_t)ext, GST_SECOND, pl.clock_rate);
            if (discont) {
                GST_BUFFER_FLAG_SET(b, GST_BUFFER_FLAG_DISCONT);
                discont = false;
            }
            /* Fed while the queue is short; meanwhile, watch for errors. */
            while (gst_app_src_get_current_level_bytes(GST_APP_SRC(src)) > QUEUE_MAX_BYTES)
                if (bus_error(bus, 5 * GST_MSECOND, &eos, why, sizeof(why)))
                    break;
            if (why[0] || gst_app_src_push_buffer(GST_APP_SRC(src), b) != GST_FLOW_OK) {
                rc = cu_err_set(err, out.refused ? CU_ERR_IO : CU_ERR_INVALID, "%s",
                                out.refused ? "the receiver stopped taking the clip"
                                : why[0]    ? why
                                            : "GStreamer refused a packet");
                break;
            }
            rep->packets++;
            rep->lost += rec.lost_before;
            rep->last_us = at;
            last_pushed_ts = p.timestamp;
        }
    }
    if (!rc && !started)
        rc = cu_err_set(err, CU_ERR_NOTFOUND, "nothing of the recording lies in that range");
    if (rc)
        goto out;
    gst_app_src_end_of_stream(GST_APP_SRC(src));
    while (!eos && !why[0])
        if (!bus_error(bus, EOS_WAIT_NS, &eos, why, sizeof(why)) && !eos) {
            snprintf(why, sizeof(why), "the muxer did not finish within 120 s");
            break;
        }
    if (why[0] || out.refused || out.bad_mp4 || !out.times.passed) {
        rc = cu_err_set(err, out.refused ? CU_ERR_IO : CU_ERR_INVALID, "%s",
                        out.refused   ? "the receiver stopped taking the clip"
                        : why[0]      ? why
                        : out.bad_mp4 ? "the muxer's output has no movie header in its first 64 MiB"
                                      : "the muxer wrote no movie header");
        goto out;
    }
    unsigned int len = 0;
    EVP_DigestFinal_ex(out.sha, rep->sha256, &len);
    rep->bytes = out.bytes;
out:
    if (pipeline) {
        gst_element_set_state(pipeline, GST_STATE_NULL);
        gst_object_unref(pipeline);
    }
    if (src)
        gst_object_unref(src);
    if (bus)
        gst_object_unref(bus);
    if (started)
        export_mp4_times_free(&out.times);
    EVP_MD_CTX_free(out.sha);
    cu_buf_free(&plain);
    return rc;
}
