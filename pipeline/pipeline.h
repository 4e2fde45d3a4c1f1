/*
 * pipeline — from RTP packets to segments: RTP validation, the reorder
 * window, keyframe detection (H.264, H.265) and keyframe-aligned
 * segmentation with gap accounting. No I/O, no locks; one stream belongs to
 * one thread. See docs/pipeline.md. Prefix pipe_.
 */
#ifndef CUSTOS_PIPELINE_H
#define CUSTOS_PIPELINE_H

#include "core/core.h"

/* -------------------------------------------------------------------- RTP */

#define PIPE_RTP_MAX 1500 /* the largest RTP packet a stream accepts */

/** A validated RTP packet; pointers borrow from the parsed buffer. */
typedef struct {
    uint8_t payload_type;
    bool marker;
    uint16_t seq;
    uint32_t timestamp;
    uint32_t ssrc;
    const uint8_t *payload;
    size_t payload_len;
} pipe_rtp;

/** Why a packet was refused. Also the label of its drop counter. */
typedef enum {
    PIPE_RTP_OK = 0,
    PIPE_RTP_SHORT,        /* shorter than its own header */
    PIPE_RTP_VERSION,      /* not version 2 */
    PIPE_RTP_CSRC,         /* CSRC list past the end */
    PIPE_RTP_EXTENSION,    /* header extension past the end */
    PIPE_RTP_PADDING,      /* padding count zero or past the payload */
    PIPE_RTP_EMPTY,        /* no payload left */
    PIPE_RTP_TOO_LONG,     /* more than PIPE_RTP_MAX bytes */
    PIPE_RTP_PAYLOAD_TYPE, /* not the stream's payload type */
    PIPE_RTP_NOMEM,        /* no memory for the segment (it was cut short) */
} pipe_rtp_status;

const char *pipe_rtp_status_name(pipe_rtp_status st);

/** Parse and check every length of an RTP packet (RFC 3550, 5.1). */
pipe_rtp_status pipe_rtp_parse(const uint8_t *buf, size_t len, pipe_rtp *out);

/**
 * RTP and RTCP share a port (RFC 5761): true when the second byte is an RTCP
 * packet type (192..223). Needs at least 2 bytes.
 */
bool pipe_is_rtcp(const uint8_t *buf, size_t len);

/** The SSRC of an RTP (bytes 8..11) or RTCP (bytes 4..7) packet; false if too short. */
bool pipe_peek_ssrc(const uint8_t *buf, size_t len, uint32_t *ssrc);

/* ---------------------------------------------------------------- codecs */

typedef enum {
    PIPE_CODEC_H264 = 1,
    PIPE_CODEC_H265 = 2,
    PIPE_CODEC_AUDIO = 3,
} pipe_codec;

/** "h264", "h265", "audio"; parse returns 0 for anything else. */
const char *pipe_codec_name(pipe_codec c);
pipe_codec pipe_codec_parse(const char *name);

/**
 * Does this H.264 RTP payload (RFC 6184) carry an IDR slice, or the first
 * fragment of one? 1 yes, 0 no, -1 malformed (every inner length checked).
 */
int pipe_h264_keyframe(const uint8_t *payload, size_t len);

/** The same for H.265 (RFC 7798): an IRAP picture (NAL types 16..23). */
int pipe_h265_keyframe(const uint8_t *payload, size_t len);

/* ------------------------------------------------------------ packet pool */

/**
 * Fixed-size slots for packets held in reorder windows, shared by the
 * streams of one thread. Allocated once; taking and returning a slot is O(1).
 */
typedef struct pipe_pool pipe_pool;

/** A pool of @p slots packets. Destroy with pipe_pool_destroy(). */
pipe_pool *pipe_pool_create(int slots);
void pipe_pool_destroy(pipe_pool *p);
int pipe_pool_free_slots(const pipe_pool *p);

/* ---------------------------------------------------------------- streams */

typedef struct {
    pipe_codec codec;
    uint8_t payload_type;
    uint32_t clock_rate;
    int64_t target_us;   /* cut at the first keyframe after this */
    int64_t max_us;      /* cut at the next access unit after this */
    int reorder_packets; /* window size, 1..1024 */
    int64_t reorder_us;  /* longest wait for a missing packet */
    pipe_pool *pool;     /* borrowed; the stream returns its slots */
} pipe_stream_config;

/** What the segmenter knows about a segment it hands over. */
typedef struct {
    int64_t start_us, end_us; /* capture times of the first and last packet */
    uint32_t packets;
    uint32_t lost;       /* packets lost inside it */
    bool gap_start;      /* packets were lost just before its first one */
    bool keyframe_start; /* starts with a keyframe's access unit */
    bool last;           /* the stream ended with it */
} pipe_segment_info;

/**
 * Receives each finished segment. Takes ownership of @p data, a chain of
 * chunks holding @p len bytes (docs/pipeline.md "Segment payload").
 */
typedef void (*pipe_segment_fn)(void *ctx, cu_chunk *data, size_t len,
                                const pipe_segment_info *info);

/** Counters of one stream. */
typedef struct {
    uint64_t packets; /* accepted into segments */
    uint64_t bytes;
    uint64_t lost;    /* declared lost by the window */
    uint64_t late;    /* arrived after being declared lost, or duplicates */
    uint64_t invalid; /* failed validation or the wrong payload type */
    uint64_t segments;
} pipe_stream_stats;

typedef struct pipe_stream pipe_stream;

/** A stream for @p ssrc; segments go to @p fn. Destroy with pipe_stream_destroy(). */
pipe_stream *pipe_stream_create(const pipe_stream_config *cfg, uint32_t ssrc, pipe_segment_fn fn,
                                void *ctx);

/**
 * One RTP packet (SRTP already removed) that arrived at @p arrival_us.
 * Returns PIPE_RTP_OK when taken (in order, held, or counted late), else
 * why it was refused.
 */
pipe_rtp_status pipe_stream_push(pipe_stream *s, const uint8_t *pkt, size_t len,
                                 int64_t arrival_us);

/** Release packets held too long by the window (call every few tens of ms). */
void pipe_stream_tick(pipe_stream *s, int64_t now_us);

/** An RTCP sender report: @p rtp_ts was captured at @p wall_us. */
void pipe_stream_clock(pipe_stream *s, uint32_t rtp_ts, int64_t wall_us);

/** End of stream: release the window and hand over the last segment (last = true). */
void pipe_stream_finish(pipe_stream *s);

void pipe_stream_stats_get(const pipe_stream *s, pipe_stream_stats *out);

/** Free the stream and any held packets. Segments not finished are discarded. */
void pipe_stream_destroy(pipe_stream *s);

#define PIPE_PAYLOAD_HEADER 16
#define PIPE_RECORD_HEADER  12

/* ------------------------------------------------------ segment payloads */

/** Reads back a segment payload (docs/pipeline.md); checks every length. */
typedef struct {
    const uint8_t *data;
    size_t len, off;
    pipe_codec codec;
    uint8_t payload_type;
    uint32_t clock_rate;
    uint32_t ssrc;
} pipe_payload_reader;

/** One packet record of a payload; @p pkt borrows from the payload. */
typedef struct {
    uint16_t lost_before;
    int64_t arrival_us;
    const uint8_t *pkt;
    size_t len;
} pipe_record;

/** Start reading @p data (borrowed). False when the header is not a payload's. */
CU_WUR bool pipe_payload_open(pipe_payload_reader *r, const uint8_t *data, size_t len);

/** The next record: 1, 0 at the end, -1 when a record runs past the end. */
int pipe_payload_next(pipe_payload_reader *r, pipe_record *out);

/* ---------------------------------------------------------- the live tap */

/*
 * What a watched stream's worker hands its viewers (docs/live.md "The tap"):
 * a single-producer, single-consumer ring of fixed slots, preallocated,
 * holding RTP packets as they arrived (after SRTP, beside the reorder
 * window). The producer (the ingest worker) never waits, allocates, locks
 * or logs: when the ring is full the packet is dropped for the viewers and
 * counted. Shared by the two sides with a reference count; the producer
 * marks it ended when its stream ends.
 */
typedef struct pipe_tap pipe_tap;

/** A tap of @p slots packets (a power of two, 16..65536), one reference held. */
pipe_tap *pipe_tap_create(uint32_t slots);
void pipe_tap_ref(pipe_tap *t);
/** Drop a reference; the last frees the tap. */
void pipe_tap_unref(pipe_tap *t);

/** Producer: offer one packet (at most PIPE_RTP_MAX bytes); false when dropped. */
bool pipe_tap_offer(pipe_tap *t, const uint8_t *pkt, size_t len, int64_t arrival_us);

/** Consumer: the oldest packet into @p out (PIPE_RTP_MAX bytes); false when empty. */
bool pipe_tap_take(pipe_tap *t, uint8_t *out, size_t *len, int64_t *arrival_us);

/** Producer: the stream has ended; nothing more comes. */
void pipe_tap_end(pipe_tap *t);
bool pipe_tap_ended(const pipe_tap *t);

/** Packets dropped because the consumer was behind (the ring full). */
uint64_t pipe_tap_dropped(const pipe_tap *t);

#endif /* CUSTOS_PIPELINE_H */
