/*
 * live — watching recorders as they record (docs/live.md): WHEP (WebRTC by
 * webrtcbin) and HLS for the streams someone watches, fed from their
 * ingest workers' live taps. Nothing here runs on an ingest worker except
 * the directory calls (live_publish & co.), once per stream start and end.
 *
 * Threads: one live thread (a GLib main loop) drains the taps of watched
 * streams and runs the sessions' timers; GStreamer's own streaming threads
 * carry the media; API handler threads start and end sessions. All shared
 * state is under one mutex, never taken per packet. Prefix live_.
 */
#ifndef CUSTOS_LIVE_H
#define CUSTOS_LIVE_H

#include "core/core.h"
#include "pipeline/pipeline.h"

typedef struct live_service live_service;

/** Which ingest stream, and which start of it, a publication names. */
typedef struct {
    int worker;
    uint64_t stream_id;
    uint64_t epoch; /* its ingest_stream_begin(): a tap for an older one is refused */
} live_handle;

/**
 * Attach (@p tap, a reference the callee takes) to or detach (@p tap NULL
 * ... the given one) from the stream @p h names, on its worker. Called by
 * the live service, on its thread, with no lock held.
 */
typedef void (*live_attach_fn)(void *ctx, const live_handle *h, pipe_tap *tap, bool attach);

/** A session that ended (for its audit entry): called on the live thread. */
typedef struct {
    char id[33];
    int64_t user_id;
    char actor[80];
    char source[64];
    char recording[37];
    char serial[65];
    const char *kind;   /* "whep", "hls" */
    const char *reason; /* "deleted", "reaped", "stream ended", "stopped", "failed" */
    int64_t started_us, ended_us;
    uint64_t frames_sent;
} live_ended;

typedef void (*live_ended_fn)(void *ctx, const live_ended *e);

typedef struct {
    live_attach_fn attach;
    void *attach_ctx;
    live_ended_fn ended; /* NULL: none */
    void *ended_ctx;
} live_hooks;

/**
 * Start the live thread. GStreamer is initialised (its registry cached
 * under @p data_dir) at the first viewer, not before.
 */
CU_WUR cu_rc live_service_start(const cu_config *cfg, const char *data_dir, const live_hooks *hooks,
                                live_service **out, cu_err *err);
/** End every session (their ended hook called) and stop the live thread; the
 * directory calls still work (ingest stops after). NULL is a no-op. */
void live_service_stop(live_service *l);
/** Free the service, once nothing publishes any more. NULL is a no-op. */
void live_service_free(live_service *l);

/* -------------------------------------------- the directory (ingest side) */

/**
 * Stream @p h of device @p device_id (@p serial) receives @p codec on
 * payload type @p pt at @p clock_rate; @p meta is its recording's meta
 * (its SDP gives parameter sets). Replaces an older publication of @p h.
 */
void live_publish(live_service *l, const live_handle *h, int64_t device_id, const char *serial,
                  pipe_codec codec, uint8_t pt, uint32_t clock_rate, const char *meta);
/** The recording @p h fills now (@p rec_id, 36 characters). */
void live_publish_recording(live_service *l, const live_handle *h, const char *rec_id);
/** Stream @p h ended (its worker has already ended any tap it had). */
void live_unpublish(live_service *l, const live_handle *h);

/* ---------------------------------------------------- sessions (API side) */

/** The recording device @p serial's live video fills now: false when not live. */
bool live_recording_of(live_service *l, const char *serial, char rec_id[37]);

typedef enum {
    LIVE_OK,
    LIVE_NOT_LIVE,         /* 404: no live video from that device */
    LIVE_LIMIT_STREAM,     /* 429: live.max_viewers_per_stream */
    LIVE_LIMIT_USER,       /* 429: live.max_viewers_per_user */
    LIVE_LIMIT_TOTAL,      /* 503: live.max_viewers */
    LIVE_LIMIT_TRANSCODES, /* 503: live.max_transcodes (an H.265 stream) */
    LIVE_BAD_OFFER,        /* 400: the offer is not SDP we can answer (message says why) */
    LIVE_FAILED,           /* 500: negotiation failed here */
} live_status;

typedef struct {
    int64_t user_id;
    const char *actor;  /* "user:<name>" */
    const char *source; /* the client's address */
} live_viewer;

/**
 * A WHEP session for @p v on device @p serial's live video, answering the
 * SDP @p offer: the answer in *@p answer (malloc, the caller frees), its id
 * in @p id. Blocks the caller (an API handler) until ICE gathering ends
 * (a few ms on the configured addresses). *@p why explains a refusal.
 */
live_status live_whep_start(live_service *l, const char *serial, const live_viewer *v,
                            const char *offer, size_t offer_len, char **answer, char id[33],
                            const char **why);

/** Whose session @p id is: false when there is none. */
bool live_session_user(live_service *l, const char *id, int64_t *user_id);

/** End session @p id of user @p user_id (DELETE): false when there is no such session of theirs. */
bool live_whep_stop(live_service *l, const char *id, int64_t user_id);

/** Live figures for /metrics and the bench. */
typedef struct {
    int sources;             /* watched streams */
    int viewers;             /* sessions */
    int transcodes;          /* H.265 streams transcoded now */
    uint64_t dropped;        /* packets the taps dropped (a live thread behind) */
    uint64_t frames;         /* frames sent to viewers */
    uint64_t frames_dropped; /* frames a slow viewer's queue dropped */
} live_stats;

void live_stats_get(live_service *l, live_stats *out);

#endif /* CUSTOS_LIVE_H */
