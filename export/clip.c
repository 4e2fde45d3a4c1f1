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
/* The next "key=value" of an fmtp parameter list (*@p p up to @p end,
 * ';'-separated), the value without trailing spaces or CR; false at the end. */
static bool fmtp_next(const char **p, const char *end, const char **key, size_t *klen,
                      const char **val, size_t *vlen)
{
    while (*p < end) {
        const char *q = *p;
        while (q < end && (*q == ' ' || *q == ';'))
            q++;
        const char *stop = q < end ? memchr(q, ';', (size_t)(end - q)) : NULL;
        if (!stop)
            stop = end;
        *p = stop;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (!eq)
            continue;
        *key = q;
        *klen = (size_t)(eq - q);
        *val = eq + 1;
        *vlen = (size_t)(stop - eq - 1);
        while (*vlen && ((*val)[*vlen - 1] == ' ' || (*val)[*vlen - 1] == '\r'))
            (*vlen)--;
        return true;
    }
    return false;
}

static void sprop_fields(const char *fmtp, size_t n, pipe_codec codec, cu_buf *out)
{
    static const char *const h264[] = {"sprop-parameter-sets", NULL};
    static const char *const h265[] = {"sprop-vps", "sprop-sps", "sprop-pps", NULL};
    const char *const *keys = codec == PIPE_CODEC_H264 ? h264 : h265;
    const char *p = memchr(fmtp, ' ', n), *end = fmtp + n, *key, *v;
    size_t kl, vl;
    while (p && fmtp_next(&p, end, &key, &kl, &v, &vl)) {
        for (int k = 0; keys[k]; k++) {
            if (kl != strlen(keys[k]) || memcmp(key, keys[k], kl) != 0 || !sprop_value_ok(v, vl))
                continue;
            char head[64];
            int hl = snprintf(head, sizeof(head), ",%s=(string)\"", keys[k]);
            if (cu_buf_append(out, head, (size_t)hl) || cu_buf_append(out, v, vl) ||
                cu_buf_append(out, "\"", 1))
                return;
        }
    }
}

/* The SDP of @p meta (its sdp_b64 line), decoded into @p out (SDP_MAX); false when none. */
static bool meta_sdp(const char *meta, size_t meta_len, uint8_t *out, size_t *len)
{
    static const char key[] = "sdp_b64=";
    for (const char *line = meta, *end = meta + meta_len; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (n > sizeof(key) - 1 && memcmp(line, key, sizeof(key) - 1) == 0)
            return cu_base64_decode(line + sizeof(key) - 1, n - (sizeof(key) - 1), out, SDP_MAX,
                                    len);
        line += n + 1;
    }
    return false;
}

/*
 * Parameter sets that travel only in the SDP (an RTSP publisher's
 * sprop-parameter-sets; a payloader without config-interval sends none in
 * band): from the meta file's SDP, the video section's fmtp for the
 * recording's payload type, as caps fields for the depayloader. Empty when
 * there are none.
 */
void export_sprop_caps(const char *meta, size_t meta_len, pipe_codec codec, uint8_t pt,
                       cu_buf *out)
{
    uint8_t *sdp = cu_xmalloc(SDP_MAX);
    size_t sdp_len = 0;
    if (meta_sdp(meta, meta_len, sdp, &sdp_len)) {
        bool video = false;
        const char *l = (const char *)sdp, *se = l + sdp_len;
        char fmtp[32];
        int fl = snprintf(fmtp, sizeof(fmtp), "a=fmtp:%u ", pt);
        while (l < se) {
            const char *e = memchr(l, '\n', (size_t)(se - l));
            size_t ln = e ? (size_t)(e - l) : (size_t)(se - l);
            if (ln >= 2 && l[0] == 'm' && l[1] == '=')
                video = ln >= 7 && memcmp(l, "m=video", 7) == 0;
            else if (video && ln > (size_t)fl && memcmp(l, fmtp, (size_t)fl) == 0)
                sprop_fields(l, ln, codec, out);
            l += ln + 1;
        }
    }
    free(sdp);
}

/* ---------------------------------------------------------- audio tracks */

/* A caps-safe fmtp token: letters, digits, '-', '.'. */
static bool token_ok(const char *v, size_t n)
{
    if (n == 0 || n > 256)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= 'a' && v[i] <= 'z') ||
              (v[i] >= '0' && v[i] <= '9') || v[i] == '-' || v[i] == '.'))
            return false;
    return true;
}

/*
 * The caps of an AAC track (RTP MPEG4-GENERIC, RFC 3640, for rtpmp4gdepay;
 * or MP4A-LATM, RFC 6416, for rtpmp4adepay):
 * the audio section's rtpmap and fmtp for @p pt, every parameter as a
 * (string) field, as GStreamer's SDP parsing makes them. False when the
 * SDP has no such track.
 */
static bool aac_caps(const char *meta, size_t meta_len, const char *encoding, unsigned pt,
                     unsigned clock, cu_buf *out)
{
    uint8_t *sdp = cu_xmalloc(SDP_MAX);
    size_t sdp_len = 0;
    bool found = false;
    if (!meta_sdp(meta, meta_len, sdp, &sdp_len))
        goto out;
    if (cu_buf_printf(out,
                      "application/x-rtp,media=(string)audio,encoding-name=(string)%s,"
                      "clock-rate=(int)%u,payload=(int)%u",
                      encoding, clock, pt) != CU_OK)
        goto out;
    char fmtp[32], rtpmap[32];
    int fl = snprintf(fmtp, sizeof(fmtp), "a=fmtp:%u ", pt);
    int rl = snprintf(rtpmap, sizeof(rtpmap), "a=rtpmap:%u ", pt);
    bool audio = false;
    for (const char *l = (const char *)sdp, *se = l + sdp_len; l < se;) {
        const char *e = memchr(l, '\n', (size_t)(se - l));
        size_t ln = e ? (size_t)(e - l) : (size_t)(se - l);
        while (ln && l[ln - 1] == '\r')
            ln--;
        if (ln >= 2 && l[0] == 'm' && l[1] == '=') {
            audio = ln >= 7 && memcmp(l, "m=audio", 7) == 0;
        } else if (audio && ln > (size_t)rl && memcmp(l, rtpmap, (size_t)rl) == 0) {
            /* "MPEG4-GENERIC/44100/2": the channels */
            const char *slash = memrchr(l, '/', ln);
            const char *first = memchr(l, '/', ln);
            if (slash && first && slash != first &&
                token_ok(slash + 1, (size_t)(l + ln - slash - 1)))
                if (cu_buf_printf(out, ",encoding-params=(string)%.*s", (int)(l + ln - slash - 1),
                                  slash + 1) != CU_OK) {
                    found = false;
                    goto out;
                }
            found = true;
        } else if (audio && ln > (size_t)fl && memcmp(l, fmtp, (size_t)fl) == 0) {
            const char *p = l + fl, *key, *v;
            size_t kl, vl;
            while (fmtp_next(&p, l + ln, &key, &kl, &v, &vl)) {
                if (!token_ok(key, kl) || !token_ok(v, vl))
                    continue;
                char lower[64];
                size_t n = kl < sizeof(lower) - 1 ? kl : sizeof(lower) - 1;
                for (size_t k = 0; k < n; k++)
                    lower[k] = (char)(key[k] >= 'A' && key[k] <= 'Z' ? key[k] + 32 : key[k]);
                lower[n] = '\0';
                if (cu_buf_printf(out, ",%s=(string)%.*s", lower, (int)vl, v) != CU_OK) {
                    found = false;
                    goto out;
                }
            }
            found = true;
        }
        l = (e ? e + 1 : se);
    }
out:
    free(sdp);
    return found && cu_buf_append(out, "", 1) == CU_OK;
}

/* One audio track of the capture, fed beside the video in capture-time order. */
typedef struct {
    store_reader *rd;
    GstElement *src;
    cu_buf plain;
    uint64_t seg;          /* the segment being read */
    pipe_payload_reader r; /* over plain, when open */
    bool open, end;
    uint32_t seg_ts, clock;
    bool have_seg_ts;
    bool pending; /* rec below is the next packet */
    pipe_record rec;
    int64_t at_us;
    bool discont;
    uint64_t packets;
    const char *depay; /* rtpmp4gdepay, rtpmp4adepay */
    bool anchored;     /* the first packet muxed: the PTS origin below */
    int64_t anchor_us; /* its capture time */
    uint32_t prev_ts;
    int64_t ext; /* RTP time since it, past 32-bit wraps */
} audio_track;

/* The track's next packet (pending), reading on through its segments; false at its end. */
static bool audio_peek(audio_track *t, cu_err *err, cu_rc *rc)
{
    while (!t->pending && !t->end) {
        if (!t->open) {
            if (t->seg >= store_reader_count(t->rd)) {
                t->end = true;
                break;
            }
            *rc = store_reader_read(t->rd, t->seg, &t->plain, err);
            if (*rc)
                return false;
            if (!pipe_payload_open(&t->r, (const uint8_t *)t->plain.data, t->plain.len)) {
                *rc = cu_err_set(err, CU_ERR_INVALID, "audio segment %llu: not an RTP payload",
                                 (unsigned long long)t->seg);
                return false;
            }
            t->open = true;
            t->have_seg_ts = false;
        }
        if (pipe_payload_next(&t->r, &t->rec) != 1) {
            t->open = false;
            t->seg++;
            continue;
        }
        pipe_rtp p;
        t->discont |= t->rec.lost_before > 0;
        if (pipe_rtp_parse(t->rec.pkt, t->rec.len, &p) != PIPE_RTP_OK)
            continue;
        if (!t->have_seg_ts) {
            t->seg_ts = p.timestamp;
            t->have_seg_ts = true;
        }
        t->at_us = capture_us(store_reader_meta(t->rd, t->seg), t->seg_ts, p.timestamp, t->clock);
        t->pending = true;
    }
    return t->pending;
}

/* Push the track's packets captured up to @p until_us (those before the
 * clip's first, @p first_us, are passed over); false on a failure. */
static bool audio_feed(audio_track *t, int64_t first_us, int64_t until_us, cu_err *err, cu_rc *rc)
{
    while (audio_peek(t, err, rc) && t->at_us <= until_us) {
        t->pending = false;
        if (t->at_us < first_us)
            continue;
        /* Its PTS from its own RTP clock, extended past wraps, from the
         * capture time of the first audio packet muxed: steady across
         * segments, a gap kept as a gap. */
        pipe_rtp p;
        if (pipe_rtp_parse(t->rec.pkt, t->rec.len, &p) != PIPE_RTP_OK)
            continue;
        if (!t->anchored) {
            t->anchored = true;
            t->anchor_us = t->at_us;
            t->prev_ts = p.timestamp;
            t->ext = 0;
        }
        t->ext += (int32_t)(p.timestamp - t->prev_ts);
        t->prev_ts = p.timestamp;
        if (t->ext < 0)
            continue; /* (reordered before the first: nothing to place it by) */
        GstBuffer *b = gst_buffer_new_memdup(t->rec.pkt, t->rec.len);
        GST_BUFFER_PTS(b) = (GstClockTime)(t->anchor_us - first_us) * GST_USECOND +
                            gst_util_uint64_scale((uint64_t)t->ext, GST_SECOND, t->clock);
        if (t->discont) {
            GST_BUFFER_FLAG_SET(b, GST_BUFFER_FLAG_DISCONT);
            t->discont = false;
        }
        if (gst_app_src_push_buffer(GST_APP_SRC(t->src), b) != GST_FLOW_OK) {
            *rc = cu_err_set(err, CU_ERR_INVALID, "GStreamer refused an audio packet");
            return false;
        }
        t->packets++;
    }
    return *rc == CU_OK;
}

/* Start the track at the segment holding @p first_us. */
static void audio_start(audio_track *t, store_reader *rd, int64_t first_us)
{
    memset(t, 0, sizeof(*t));
    t->rd = rd;
    cu_buf_init(&t->plain, STORE_READ_BUF_MAX);
    for (uint64_t i = 0; i < store_reader_count(rd); i++)
        if (store_reader_meta(rd, i)->end_us < first_us)
            t->seg = i + 1;
}

/* -------------------------------------------------------------- pipeline */

static GstElement *build(const plan *pl, const export_clip_opts *o, const char *sprop, output *out,
                         GstElement **src_out, audio_track *audio, size_t naudio, char *desc,
                         size_t desc_len, cu_err *err)
{
    const char *name = pl->codec == PIPE_CODEC_H264 ? "H264" : "H265";
    const char *lower = pl->codec == PIPE_CODEC_H264 ? "264" : "265";
    snprintf(desc, desc_len,
             "appsrc name=src format=time stream-type=stream "
             "! rtph%sdepay ! h%sparse ! video/x-h%s,stream-format=%s,alignment=au "
             "! mp4mux name=mux %s ! appsink name=sink sync=false",
             lower, lower, lower, pl->codec == PIPE_CODEC_H264 ? "avc" : "hvc1",
             o->fragmented ? "fragment-duration=1000 streamable=true" : "faststart=true");
    for (size_t i = 0; i < naudio; i++) { /* AAC stays AAC */
        size_t at = strlen(desc);
        snprintf(desc + at, desc_len - at,
                 " appsrc name=a%zu format=time stream-type=stream ! %s ! aacparse ! mux.", i,
                 audio[i].depay);
    }
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
    for (size_t i = 0; i < naudio; i++) {
        char src_name[16];
        snprintf(src_name, sizeof(src_name), "a%zu", i);
        audio[i].src = gst_bin_get_by_name(GST_BIN(pipeline), src_name);
        GstCaps *ac = gst_caps_from_string(audio[i].plain.data);
        if (!audio[i].src || !ac) {
            if (ac)
                gst_caps_unref(ac);
            cu_err_set(err, CU_ERR_INVALID, "the audio track's RTP caps do not parse");
            gst_object_unref(pipeline);
            return NULL;
        }
        g_object_set(audio[i].src, "caps", ac, NULL);
        gst_caps_unref(ac);
        cu_buf_reset(&audio[i].plain); /* (it held the caps; segments from now on) */
    }
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
    audio_track audio[EXPORT_AUDIO_MAX];
    size_t naudio = 0;
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
    export_sprop_caps(meta, meta_len, pl.codec, pl.payload_type, &sprop);
    rep->sdp_parameter_sets = sprop.len > 0;
    if (cu_buf_append(&sprop, "", 1) != CU_OK) { /* (NUL) */
        cu_buf_free(&sprop);
        rc = cu_err_set(err, CU_ERR_INVALID, "the SDP's parameter sets are too long");
        goto out;
    }
    /* The capture's audio tracks that an MP4 takes as they are (AAC). */
    for (size_t i = 0; i < o->naudio && naudio < EXPORT_AUDIO_MAX; i++) {
        cu_err aerr;
        size_t mlen;
        const char *ameta = store_reader_meta_file(o->audio[i], &mlen);
        pipe_payload_reader ar;
        audio_track *t = &audio[naudio];
        audio_start(t, o->audio[i], 0);
        const char *encoding = memmem(ameta, mlen, "\nencoding=MPEG4-GENERIC\n", 24)
                                   ? "MPEG4-GENERIC"
                               : memmem(ameta, mlen, "\nencoding=MP4A-LATM\n", 20) ? "MP4A-LATM"
                                                                                   : NULL;
        bool aac = encoding && store_reader_count(o->audio[i]) > 0 &&
                   store_reader_read(o->audio[i], 0, &t->plain, &aerr) == CU_OK &&
                   pipe_payload_open(&ar, (const uint8_t *)t->plain.data, t->plain.len) &&
                   ar.codec == PIPE_CODEC_AUDIO && ar.clock_rate > 0;
        unsigned apt = aac ? ar.payload_type : 0, aclock = aac ? ar.clock_rate : 0;
        cu_buf_reset(&t->plain);
        if (aac && aac_caps(ameta, mlen, encoding, apt, aclock, &t->plain)) {
            t->clock = aclock;
            t->depay = encoding[0] == 'M' && encoding[1] == 'P' && encoding[2] == 'E'
                           ? "rtpmp4gdepay"
                           : "rtpmp4adepay";
            naudio++;
        } else {
            cu_buf_free(&t->plain);
            rep->audio_skipped++; /* (not AAC, or its SDP says too little to mux it) */
        }
    }
    pipeline = build(&pl, o, sprop.data, &out, &src, audio, naudio, rep->pipeline,
                     sizeof(rep->pipeline), err);
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
                for (size_t a = 0; a < naudio; a++) {
                    store_reader *ard = audio[a].rd;
                    uint64_t seg = 0;
                    for (uint64_t k = 0; k < store_reader_count(ard); k++)
                        if (store_reader_meta(ard, k)->end_us < rep->first_us)
                            seg = k + 1;
                    audio[a].seg = seg;
                }
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
            for (size_t a = 0; a < naudio && !rc; a++)
                audio_feed(&audio[a], rep->first_us, at, err, &rc);
            if (rc)
                break;
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
    for (size_t a = 0; a < naudio && !rc; a++) /* (the audio up to the last video) */
        audio_feed(&audio[a], rep->first_us, rep->last_us, err, &rc);
    if (rc)
        goto out;
    gst_app_src_end_of_stream(GST_APP_SRC(src));
    for (size_t a = 0; a < naudio; a++) {
        gst_app_src_end_of_stream(GST_APP_SRC(audio[a].src));
        rep->audio_packets += audio[a].packets;
    }
    rep->audio_tracks = (unsigned)naudio;
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
    for (size_t a = 0; a < naudio; a++) {
        if (audio[a].src)
            gst_object_unref(audio[a].src);
        cu_buf_free(&audio[a].plain);
    }
    if (bus)
        gst_object_unref(bus);
    if (started)
        export_mp4_times_free(&out.times);
    EVP_MD_CTX_free(out.sha);
    cu_buf_free(&plain);
    return rc;
}

/* ------------------------------------------------------------- captures */

cu_rc export_capture_open(const char *data_dir, PGconn *conn, keys_ring *keys,
                          const store_id *recording, const char *reader_uid, store_reader **out,
                          size_t max, size_t *n, cu_err *err)
{
    *n = 0;
    char id[37];
    store_id_format(recording, id);
    const char *params[2] = {id, reader_uid};
    PGresult *res = PQexecParams(conn,
                                 "SELECT o.id::text FROM recordings r JOIN recordings o "
                                 "ON o.capture_id = r.capture_id AND o.id <> r.id "
                                 "WHERE r.id = $1::uuid AND o.state <> 'erased' AND "
                                 "($2::bigint IS NULL OR may_read_recording($2::bigint, o.id, "
                                 "now())) ORDER BY o.opened_at, o.id LIMIT 8",
                                 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cu_rc rc = cu_err_set(err, CU_ERR_DB, "the capture's tracks: %s", PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    cu_rc rc = CU_OK;
    for (int i = 0; i < PQntuples(res) && *n < max && !rc; i++) {
        store_id other;
        if (!store_id_parse(PQgetvalue(res, i, 0), &other))
            continue;
        rc = store_reader_open(data_dir, conn, keys, &other, &out[*n], err);
        if (!rc)
            (*n)++;
        else { /* (a track that does not verify stops the clip: never one silently missing) */
            char why[sizeof(err->msg)];
            cu_strlcpy(why, err->msg, sizeof(why));
            cu_err_set(err, rc, "track %s of the capture: %s", PQgetvalue(res, i, 0), why);
        }
    }
    PQclear(res);
    if (rc) {
        export_capture_close(out, *n);
        *n = 0;
    }
    return rc;
}

void export_capture_close(store_reader **readers, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_reader_close(readers[i]);
}

cu_rc export_source_open(const char *data_dir, PGconn *conn, keys_ring *keys,
                         const store_id *recording, const char *reader_uid, export_source *src,
                         cu_err *err)
{
    memset(src, 0, sizeof(*src));
    cu_rc rc = store_reader_open(data_dir, conn, keys, recording, &src->rd, err);
    if (!rc)
        rc = export_capture_open(data_dir, conn, keys, recording, reader_uid, src->tracks,
                                 EXPORT_AUDIO_MAX, &src->ntracks, err);
    if (rc)
        export_source_close(src);
    return rc;
}

void export_source_close(export_source *src)
{
    export_capture_close(src->tracks, src->ntracks);
    store_reader_close(src->rd);
    memset(src, 0, sizeof(*src));
}
