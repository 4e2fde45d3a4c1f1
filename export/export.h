/*
 * Evidence out of the store (docs/export.md): MP4 clips of a recording or
 * of a time range, muxed by GStreamer from the stored RTP packets. Nothing
 * here runs on the ingest path; a clip is made on the caller's thread (and
 * GStreamer's streaming threads), from a store_reader.
 */
#ifndef CUSTOS_EXPORT_H
#define CUSTOS_EXPORT_H

#include "core/core.h"
#include "storage/store.h"

/** GStreamer, once per process; its registry cached under @p cache_dir. */
CU_WUR cu_rc export_init(const char *cache_dir, cu_err *err);

typedef struct {
    int64_t start_us; /* capture time (Unix µs); from the keyframe at or before it; 0: the start */
    int64_t end_us;   /* capture time; the last access unit at or before it; 0: the end */
    bool fragmented;  /* fragmented MP4 written as it is made (a stream); else progressive,
                         moov first, written when complete (a file) */
} export_clip_opts;

typedef struct {
    char codec[8];          /* h264, h265 */
    int64_t first_us;       /* capture time of the first packet muxed (the clip's creation_time) */
    int64_t last_us;        /* ... and of the last */
    uint64_t first_segment; /* the segments used */
    uint64_t last_segment;
    uint64_t packets;        /* RTP packets given to the muxer */
    uint64_t lost;           /* packets the recording lost inside the range (gaps kept as gaps) */
    bool sdp_parameter_sets; /* the SDP's sprop-* given to the depayloader */
    uint64_t bytes;          /* MP4 bytes written */
    uint8_t sha256[32];      /* of those bytes */
} export_clip_report;

/** Where the MP4 goes, as it is made; false stops the export (a client gone). */
typedef bool (*export_write_fn)(void *ctx, const uint8_t *data, size_t len);

/**
 * The MP4 of @p rd's recording (or of @p o's range) to @p write. Every
 * segment used is read and verified (store_reader) before the first byte
 * is written; one that fails stops the export with an error naming it.
 * CU_ERR_NOTFOUND: nothing of the recording lies in the range;
 * CU_ERR_INVALID: not a recording this can mux (audio alone, for now).
 */
CU_WUR cu_rc export_clip(store_reader *rd, const export_clip_opts *o, export_write_fn write,
                         void *ctx, export_clip_report *rep, cu_err *err);

/* --------------------------------------------------------------- MP4 boxes */

/**
 * Rewrites the creation and modification times of a MP4's movie, tracks
 * and media (mvhd, tkhd, mdhd) as bytes pass: everything up to the end of
 * moov is held, patched, then let through with the rest. GStreamer's
 * muxer stamps the time of muxing; an evidence clip carries the capture's.
 */
typedef struct {
    uint64_t mp4_seconds; /* since 1904-01-01 */
    cu_buf held;          /* until moov is complete */
    bool passed;          /* moov patched: the rest goes through */
} export_mp4_times;

void export_mp4_times_init(export_mp4_times *t, int64_t unix_us);
/** Feed @p len bytes; what may go on is given to @p write. False: @p write
 * refused, or no moov within the first 64 MiB (*@p bad set). */
bool export_mp4_times_feed(export_mp4_times *t, const uint8_t *data, size_t len,
                           export_write_fn write, void *ctx, bool *bad);
void export_mp4_times_free(export_mp4_times *t);

#endif /* CUSTOS_EXPORT_H */
