/*
 * Private to the live service (live/live.c, live/whep.c): the directory's publications,
 * the watched streams (sources) and their viewers. Every field marked
 * "mu" is read and written under live_service.mu only.
 */
#ifndef CUSTOS_LIVE_INTERNAL_H
#define CUSTOS_LIVE_INTERNAL_H

#include "export/export.h"
#include "live.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <pthread.h>
#include <stdatomic.h>

#define LIVE_ICE_MAX 8

typedef struct live_source live_source;
typedef struct live_viewer_s live_viewer_s;

/* One live stream of a device, as its ingest worker published it (mu). */
typedef struct live_pub {
    live_handle h;
    int64_t device_id;
    char serial[65];
    pipe_codec codec;
    uint8_t pt;
    uint32_t clock_rate;
    char *sprop;      /* parameter sets from its SDP, as caps fields ("" when none) */
    char rec[37];     /* the recording it fills; "" until opened */
    live_source *src; /* its pipeline while watched */
    struct live_pub *next;
} live_pub;

/* A watched stream: its pipeline, shared by its viewers. */
struct live_source {
    live_service *l;
    live_pub *pub; /* mu: NULL once the stream ended */
    live_handle h;
    char serial[65];
    char rec[37];
    uint8_t pt;
    bool transcode; /* H.265 → H.264 */
    pipe_tap *tap;  /* one reference; the worker holds another while attached */
    GstElement *pipeline;
    GstElement *in;  /* appsrc of RTP */
    GstClock *clock; /* the pipeline's, and its base time, from its start */
    GstClockTime base_time;
    GstBuffer **gop; /* mu: the access units since the last keyframe */
    int ngop;
    bool have_key;
    bool ended, failed;     /* mu */
    live_viewer_s *viewers; /* mu */
    live_source *next;      /* mu */
};

/* One WHEP session. */
struct live_viewer_s {
    live_service *l;
    live_source *src;
    char id[33];
    int64_t user_id;
    char actor[80];
    char source[64];
    GstElement *bin; /* appsrc → rtph264pay → webrtcbin, in src->pipeline */
    GstElement *appsrc;
    GstElement *webrtc;
    GstElement *rtpbin; /* webrtcbin's own (its RTCP tells the viewer is there) */
    /* negotiation (its own lock: webrtcbin's threads signal it) */
    GMutex lock;
    GCond cond;
    bool gathered;
    GString *candidates; /* "a=candidate:..." lines gathered */
    /* mu */
    bool negotiating;  /* an API thread is answering its offer: not reaped meanwhile */
    bool feed_pending; /* connected: its first frames are due on the live thread */
    bool connected, failed, deleted;
    const char *reason; /* why it ended */
    bool waiting_key;   /* after a drop, or before its first frame: from the next keyframe */
    int64_t started_us, connected_us;
    _Atomic int64_t last_rtcp_us; /* the last RTCP from the viewer */
    int64_t answered_us;
    bool added; /* its bin is in the pipeline */
    GstClockTime last_pts;
    uint64_t frames, dropped;
    live_viewer_s *next; /* mu: its source's viewers */
};

struct live_service {
    const cu_config *cfg;
    char data_dir[4096];
    live_hooks hooks;
    bool stopping; /* mu: no new sessions */
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *thread;
    pthread_mutex_t mu;
    live_pub *pubs;                  /* mu */
    live_source *sources;            /* mu */
    int ntranscodes;                 /* mu */
    uint64_t frames, frames_dropped; /* mu */
    char ice[LIVE_ICE_MAX][48];      /* the addresses ICE may offer; none: any */
    int nice;
};

/* live.c */
live_pub *live_pub_video(live_service *l, const char *serial); /* mu */
live_source *live_source_start(live_service *l, live_pub *p, const char **why);
/** GStreamer and the live thread, started by the first viewer; false (*@p why) if not. */
bool live_ensure_started(live_service *l, const char **why);
void live_source_free(live_source *s);

/* whep.c */
#define GST_USE_UNSTABLE_API
#include <gst/webrtc/webrtc.h>
bool live_ice_parse(live_service *l, const char *list);
/** ICE on @p addresses only (none: every interface), UDP, without UPnP. */
void live_ice_prepare(GstWebRTCICE *ice, const char (*addresses)[48], int n);
/** mu held: hand access unit @p b (a keyframe when @p key) to @p v. */
void live_viewer_send(live_viewer_s *v, GstBuffer *b, bool key);
/** mu held: why @p v should end now, or NULL. */
const char *live_viewer_reap_reason(const live_viewer_s *v, int64_t now_us);
/** mu held: @p v, already out of its source's list, leaves the counts; @p why kept. */
void live_viewer_unlink(live_service *l, live_viewer_s *v, const char *why);
/** Without mu: take its bin out of the pipeline, call the ended hook, free @p v. */
void live_viewer_finish(live_service *l, live_viewer_s *v);

#endif /* CUSTOS_LIVE_INTERNAL_H */
