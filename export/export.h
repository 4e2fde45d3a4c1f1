/*
 * Evidence out of the store (docs/export.md): MP4 clips of a recording or
 * of a time range, muxed by GStreamer from the stored RTP packets. Nothing
 * here runs on the ingest path; a clip is made on the caller's thread (and
 * GStreamer's streaming threads), from a store_reader.
 */
#ifndef CUSTOS_EXPORT_H
#define CUSTOS_EXPORT_H

#include "core/core.h"
#include "pipeline/pipeline.h"
#include "storage/store.h"

/** GStreamer, once per process; its registry cached under @p cache_dir. */
CU_WUR cu_rc export_init(const char *cache_dir, cu_err *err);

typedef struct {
    int64_t start_us; /* capture time (Unix µs); from the keyframe at or before it; 0: the start */
    int64_t end_us;   /* capture time; the last access unit at or before it; 0: the end */
    bool fragmented;  /* fragmented MP4 written as it is made (a stream); else progressive,
                         moov first, written when complete (a file) */
    /* The capture's audio tracks (their recordings, borrowed), muxed beside the
     * video in capture-time sync: AAC as it is; others are skipped (counted). */
    store_reader *const *audio;
    size_t naudio;
    bool verified;    /* the caller has just read and verified every segment of the range (a
                         package): no pass over them before muxing (each is still verified as
                         it is read) */
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
    char pipeline[768];      /* the GStreamer pipeline that made it (gst-launch syntax) */
    unsigned audio_tracks;   /* audio tracks muxed */
    unsigned audio_skipped;  /* audio tracks given that an MP4 cannot take as they are */
    uint64_t audio_packets;
} export_clip_report;

/**
 * Parameter sets that travel only in a recording's SDP (@p meta, its meta
 * file): the video section's sprop-* for payload type @p pt, appended to
 * @p out as caps fields (",sprop-parameter-sets=(string)\"...\""); nothing
 * when there are none. For depayloaders of @p codec (H.264, H.265).
 */
void export_sprop_caps(const char *meta, size_t meta_len, pipe_codec codec, uint8_t pt,
                       cu_buf *out);

#define EXPORT_AUDIO_MAX 4 /* audio tracks a clip carries at most */

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

/**
 * The other tracks of @p recording's capture (the recordings an RTSP session
 * made beside it, docs/export.md "Captures"), opened for reading into
 * @p out (at most @p max; *@p n of them): what export_clip_opts.audio takes.
 * With @p reader_uid (a user id in decimal), only those that user may read.
 * A track that does not open (verify) fails the call, naming it.
 */
CU_WUR cu_rc export_capture_open(const char *data_dir, PGconn *conn, keys_ring *keys,
                                 const store_id *recording, const char *reader_uid,
                                 store_reader **out, size_t max, size_t *n, cu_err *err);
void export_capture_close(store_reader **readers, size_t n);

/** A recording opened for export with its capture's other tracks (what clips and
 * packages read): store_reader_open() and export_capture_open() together. */
typedef struct {
    store_reader *rd;
    store_reader *tracks[EXPORT_AUDIO_MAX];
    size_t ntracks;
} export_source;

CU_WUR cu_rc export_source_open(const char *data_dir, PGconn *conn, keys_ring *keys,
                                const store_id *recording, const char *reader_uid,
                                export_source *src, cu_err *err);
/** Close what export_source_open() opened (a zeroed source: nothing). */
void export_source_close(export_source *src);

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

/* ------------------------------------------------------------ ZIP, streamed */

/** One entry written. */
typedef struct {
    char *name;
    uint64_t offset, size;
    uint32_t crc;
    uint8_t sha256[32];
} export_zip_entry;

/**
 * A ZIP archive written front to back through a write function (entries
 * stored, each with a data descriptor, ZIP64 throughout: export/zip.c).
 * Any failed write sticks: every later call returns false.
 */
typedef struct {
    export_write_fn write;
    void *ctx;
    bool ok, open;
    bool hash; /* the open entry's SHA-256 is computed here */
    uint64_t offset;
    uint16_t dos_date, dos_time;
    export_zip_entry *entries;
    size_t count, cap;
    void *sha; /* EVP_MD_CTX of the open entry */
} export_zip;

void export_zip_init(export_zip *z, int64_t mtime_us, export_write_fn write, void *ctx);
/** Start entry @p name ("dir/file", UTF-8); its bytes follow with export_zip_data().
 * With @p hash false, the caller computes the entry's SHA-256 and gives it to
 * export_zip_end(). */
bool export_zip_begin(export_zip *z, const char *name, bool hash);
bool export_zip_data(export_zip *z, const void *data, size_t len);
/** An export_write_fn over export_zip_data() (@p zip is the export_zip). */
bool export_zip_write(void *zip, const uint8_t *data, size_t len);
/** End the open entry; @p sha256 (may be NULL) gets the SHA-256 of its bytes (or,
 * for an entry begun without @p hash, gives it). */
bool export_zip_end(export_zip *z, uint8_t sha256[32]);
/** A whole entry at once. */
bool export_zip_file(export_zip *z, const char *name, const void *data, size_t len,
                     uint8_t sha256[32]);
/** The central directory: the archive is complete. */
bool export_zip_finish(export_zip *z);
void export_zip_free(export_zip *z);

/* --------------------------------------------------------- evidence package */

/** What a package says about the recording beyond its store (from the index). */
typedef struct {
    const char *package_id; /* shown in bag-info.txt and the statement */
    int64_t start_us;       /* the range asked for (0: the start) */
    int64_t end_us;         /* (0: the end) */
    const char *reason;     /* why it was made (in the statement) */
    const char *made_by;    /* the audit actor who asked ("user:ana") */
    PGconn *conn;           /* the recording's row and custody log */
    keys_ring *keys;        /* signs the statement */
    const char *checkpoint; /* the latest signed audit checkpoint line, or NULL */
    /* The capture's other tracks (export_capture_open; borrowed): their packets,
     * segments, meta and recording under data/tracks/<id>/, their custody
     * entries beside the recording's, and their AAC in the derived MP4. */
    store_reader *const *tracks;
    size_t ntracks;
    int64_t now_us;         /* the bag's date (0: now) */
} export_package_opts;

typedef struct {
    uint64_t first_segment, last_segment; /* whose packets are in it */
    uint64_t packets;
    uint64_t custody_entries;
    bool clip;                        /* a derived MP4 is in it (video) */
    export_clip_report clip_report;   /* when clip */
    uint64_t bytes;                   /* of the ZIP */
    uint8_t sha256[32];               /* of the ZIP */
} export_package_report;

/**
 * The evidence package (docs/package.md) of @p rd's recording, or of a
 * range, as a ZIP to @p write: a BagIt bag with the original packets
 * (pcapng), every segment's hashes and chain values, the metadata, the
 * custody log, a statement signed with the installation key, the latest
 * checkpoint, the derived MP4 and the stand-alone verifier's source.
 * Every segment whose packets go in is verified before it is written; one
 * that fails stops the package with an error naming it.
 */
CU_WUR cu_rc export_package(store_reader *rd, const export_package_opts *o, export_write_fn write,
                            void *ctx, export_package_report *rep, cu_err *err);

#endif /* CUSTOS_EXPORT_H */
