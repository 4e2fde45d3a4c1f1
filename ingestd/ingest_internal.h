/*
 * Private to the ingest service: ingest.c (workers, UDP/SRTP, devices, the
 * control thread), stream.c (a stream and the recording it fills) and the
 * RTSP side (rtsp_*.c).
 *
 * Threads: each worker owns its event loop and everything hanging off it
 * (devices it is steered, streams, RTSP connections) outright; other threads
 * reach a worker only through its inbox (worker_post). The control thread
 * does what may block: reading devices from PostgreSQL, opening recordings.
 */
#ifndef CUSTOS_INGEST_INTERNAL_H
#define CUSTOS_INGEST_INTERNAL_H

#include "control/control.h"
#include "live/live.h"
#include "ingestd_internal.h"
#include "pipeline/pipeline.h"

#include <event2/event.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#define INGEST_BATCH    64
#define INGEST_RX_BUF   65536 /* room for a UDP GRO train of datagrams */
#define INGEST_META_MAX 16384 /* a recording's meta file, SDP included */

/* ------------------------------------------------------------- messages */

/* MSG_REVOKED goes to every worker: a revoked device's RTSP sessions may be on any. */
typedef enum { MSG_DEVICE, MSG_PULL, MSG_OPENED, MSG_REVOKED, MSG_TAP } msg_kind;

typedef struct msg {
    msg_kind kind;
    struct msg *next;
    ctl_device device;    /* MSG_DEVICE, MSG_PULL (its secrets are wiped when freed) */
    uint64_t stream_id;   /* MSG_OPENED: for which stream */
    uint64_t generation;  /* ... and which of its recordings */
    store_recording *rec; /* NULL when the open failed */
    store_id rec_id;
    pipe_tap *tap;       /* MSG_TAP: attach (a reference, taken) or detach this one */
    bool attach;
    uint64_t epoch;      /* MSG_TAP: which start of the stream */
} msg;

void msg_free(msg *m);

/* --------------------------------------------------------------- streams */

typedef struct pending_seg {
    cu_chunk *data;
    size_t len;
    store_segment_meta meta;
    uint64_t generation; /* the recording it belongs to */
    struct pending_seg *next;
} pending_seg;

/*
 * A stream of one device on one worker, from its first packet to its end,
 * and the recording it fills. Between recordings pipe is NULL. Owned by
 * whoever made it (an SRTP device, an RTSP session) until released; a
 * released stream whose recording is still being opened lives on until the
 * open completes, so that nothing it received is lost.
 */
typedef struct ingest_stream {
    struct ingest_worker *w;
    uint64_t id; /* unique in its worker: names it in MSG_OPENED */
    int64_t device_id;
    char serial[65];
    char label[80]; /* for log lines: "device BWC-1" */
    pipe_stream *pipe;
    uint64_t generation; /* which recording: open results for older ones are stale */
    store_recording *rec;
    store_id rec_id;
    char *meta; /* the recordings' meta (owned), kept for a continuation */
    /* After a failed write: the damaged recording the next one continues. */
    store_id continues;
    bool has_continues;
    int64_t reopen_at_us; /* an open failed: the next attempt, not before */
    bool opening;
    bool released;
    pending_seg *pending;
    int npending;
    int64_t last_us; /* last packet, for the idle timeout */
    bool gap_next;
    /* Live view (docs/live.md): the tap while someone watches (one reference),
     * and which start of the stream its publication names. */
    pipe_tap *tap;
    uint64_t live_epoch;
    struct ingest_stream *prev, *next; /* the worker's streams */
} ingest_stream;

/** A stream for device @p device_id (@p serial) on @p w, not yet receiving. */
ingest_stream *ingest_stream_new(struct ingest_worker *w, int64_t device_id, const char *serial,
                                 const char *label);

/** A live tap to attach to, or detach from, stream m->stream_id (MSG_TAP). */
void ingest_stream_tap(struct ingest_worker *w, msg *m);

/**
 * Start a recording: the pipeline with @p pc (its pool is the worker's) for
 * packets of @p ssrc, and a request to the control thread to open the
 * recording with @p meta (copied; at most INGEST_META_MAX bytes).
 */
bool ingest_stream_begin(ingest_stream *st, const pipe_stream_config *pc, uint32_t ssrc,
                         const char *meta);

/** ingest_stream_begin() with the service's pipeline settings and this codec. */
bool ingest_stream_begin_codec(ingest_stream *st, pipe_codec codec, uint8_t payload_type,
                               uint32_t clock_rate, uint32_t ssrc, const char *meta);

/** One RTP packet (no SRTP) for the pipeline, which must be begun. */
pipe_rtp_status ingest_stream_push(ingest_stream *st, const uint8_t *pkt, size_t len,
                                   int64_t now_us);

/** An RTCP compound packet (SRTCP removed): a sender report sets the capture
 * clock, a BYE ends the recording. Every length is checked. */
void ingest_stream_rtcp(ingest_stream *st, const uint8_t *p, size_t len);

/** End the recording: its last segment is stored and it is sealed. */
void ingest_stream_end(ingest_stream *st);

/** The owner lets go: ended, and freed now or once its recording is open. */
void ingest_stream_release(ingest_stream *st);

/** A recording was opened (or failed to) for stream m->stream_id. */
void ingest_stream_opened(struct ingest_worker *w, msg *m);

/** Every tick: reorder timeouts, and streams idle for ingest.idle_timeout_s end. */
void ingest_streams_tick(struct ingest_worker *w, int64_t now_us);

/** Stopping: end every stream. */
void ingest_streams_end_all(struct ingest_worker *w);

/* ---------------------------------------------------------------- workers */

struct dev;
struct rtsp_worker;
struct rtsp_pulls;

typedef struct ingest_worker {
    struct ingest_service *svc;
    int index;
    pthread_t thread;
    struct event_base *base;
    int fd;
    struct event *rx_ev, *rx_timer, *tick_ev, *inbox_ev;
    struct timeval coalesce;
    pipe_pool *pool;
    /* SRTP devices steered here: open addressing on SSRC, indices into devs[] */
    struct dev **devs;
    size_t ndevs, capdevs;
    uint32_t *slot_ssrc;
    int32_t *slot_dev;
    size_t slots; /* power of two */
    /* streams */
    ingest_stream *streams;
    uint64_t next_stream_id;
    int opening; /* streams waiting for their recording */
    struct rtsp_worker *rtsp;
    struct rtsp_pulls *pulls; /* cameras this worker pulls from */
    /* inbox */
    pthread_mutex_t inbox_lock;
    pthread_cond_t inbox_cond;
    msg *inbox, *inbox_tail;
    bool stopping;
    /* receive buffers */
    struct mmsghdr msgs[INGEST_BATCH];
    struct iovec iov[INGEST_BATCH];
    uint8_t (*bufs)[INGEST_RX_BUF];
    uint8_t ctrl[INGEST_BATCH][CMSG_SPACE(sizeof(int))];
    /* SRTP replay marks (docs/srtp-replay.md) */
    int64_t next_mark_save_us;
    uint8_t roc_scratch[INGEST_RX_BUF]; /* a packet kept while its ROC is looked for */
} ingest_worker;

/** Hand @p m (taken) to worker @p w's thread. Any thread. */
void worker_post(ingest_worker *w, msg *m);

/* Requests to the control thread. */
typedef struct open_req {
    int worker;
    uint64_t stream_id;
    uint64_t generation;
    int64_t device_id;
    char *meta;         /* owned */
    store_id continues; /* the damaged recording this one goes on from */
    bool has_continues;
    struct open_req *next;
} open_req;

/** Queue @p r (taken) for the control thread. Any thread. */
void ingest_request_open(struct ingest_service *s, open_req *r);

/* Alerts ingest raises (docs/alerts.md), counted where they are seen and
 * raised by the control thread, at most one per subject and kind in 10 minutes. */
typedef enum {
    INGEST_ALERT_REVOKED,   /* device_revoked_attempt: a revoked device still sends or connects */
    INGEST_ALERT_REPLAY,    /* srtp_replay: replayed SRTP packets */
    INGEST_ALERT_RTSP_AUTH, /* rtsp_auth_failures: 5 failed RTSP logins in a minute */
    INGEST_ALERT_KINDS
} ingest_alert_kind;

#define INGEST_ALERT_SLOTS 128

typedef struct {
    bool used;
    ingest_alert_kind kind;
    char subject[65]; /* the device's serial */
    char source[64];
    uint64_t count;
    int64_t since_us, raised_us;
} ingest_alert_slot;

/** Count @p n sightings of @p kind for @p subject from @p source (any thread; not per packet). */
void ingest_alert_note(struct ingest_service *s, ingest_alert_kind kind, const char *subject,
                       const char *source, uint64_t n);

struct ingest_service {
    const cu_config *cfg;
    char data_dir[PATH_MAX];
    char *dsn;
    store *store;
    keys_ring *keys; /* borrowed */
    ingest_worker *workers;
    int nworkers;
    pipe_stream_config pipe_cfg;
    int64_t idle_us;
    pthread_t control;
    bool control_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    open_req *opens, *opens_tail;
    bool stop_control;
    int64_t device_version;
    int device_errors;
    /* replay marks handed by the workers, saved by the control thread (under lock) */
    ctl_replay_mark *marks;
    size_t nmarks, capmarks;
    int mark_errors;
    ingest_alert_slot alerts[INGEST_ALERT_SLOTS]; /* under lock */
    struct rtsp_service *rtsp;                    /* RTSP and RTSPS (rtsp_server.c) */
    live_service *live;                           /* borrowed; NULL: no live view */
};

#endif /* CUSTOS_INGEST_INTERNAL_H */
