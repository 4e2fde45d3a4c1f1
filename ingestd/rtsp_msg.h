/*
 * RTSP/1.0 framing (RFC 2326 §4, §10.12): requests, responses and
 * $-interleaved binary frames, parsed from a contiguous buffer without
 * copying. Internal to ingestd; docs/rtsp.md says why the framing is ours.
 *
 * Everything is bounded: the header block by max_header_bytes, the body by
 * max_body_bytes, the number of headers by RTSP_MAX_HEADERS. Pointers in a
 * parsed message point into the caller's buffer and are valid until the
 * caller consumes those bytes.
 */
#ifndef CUSTOS_RTSP_MSG_H
#define CUSTOS_RTSP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RTSP_MAX_HEADERS 64
#define RTSP_MAX_METHOD  32
#define RTSP_MAX_URI     2048

typedef struct {
    size_t max_header_bytes; /* request/status line and headers, with the blank line */
    size_t max_body_bytes;
} rtsp_limits;

typedef struct {
    const char *p;
    size_t len;
} rtsp_str;

typedef struct {
    rtsp_str name, value;
} rtsp_header;

typedef enum {
    RTSP_NEED_MORE = 0, /* not a whole message yet: read more */
    RTSP_REQUEST,
    RTSP_RESPONSE,
    RTSP_FRAME, /* a $-interleaved binary frame */
    RTSP_BAD,   /* answer rtsp_parsed.status and close the connection */
} rtsp_kind;

typedef struct {
    rtsp_kind kind;
    size_t consumed; /* bytes of input this message or frame took */
    /* RTSP_BAD: the status to answer (400, 413, 505) and why */
    int status;
    const char *why;
    /* RTSP_REQUEST */
    rtsp_str method, uri;
    /* RTSP_RESPONSE */
    int code;
    rtsp_str reason;
    /* both */
    rtsp_header headers[RTSP_MAX_HEADERS];
    int nheaders;
    const uint8_t *body;
    size_t body_len;
    /* RTSP_FRAME */
    uint8_t channel;
    const uint8_t *frame;
    size_t frame_len;
} rtsp_parsed;

/**
 * Parse the message or frame at the start of @p buf. RTSP_NEED_MORE also
 * when @p len is 0. Never reads past @p len.
 */
rtsp_kind rtsp_parse(const uint8_t *buf, size_t len, const rtsp_limits *lim, rtsp_parsed *out);

/** The first header named @p name (case-insensitive), or NULL. */
const rtsp_str *rtsp_header_get(const rtsp_parsed *m, const char *name);

/** True when @p s equals @p lit ignoring ASCII case. */
bool rtsp_str_ieq(rtsp_str s, const char *lit);

/** Parse a decimal in @p s (no sign, at most 18 digits) into *@p out. */
bool rtsp_str_uint(rtsp_str s, uint64_t *out);

#endif /* CUSTOS_RTSP_MSG_H */
