/* RTP validation (RFC 3550) and codec peeks (RFC 6184, RFC 7798). Untrusted input. */
#include "pipeline.h"

#include <string.h>

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

const char *pipe_rtp_status_name(pipe_rtp_status st)
{
    switch (st) {
    case PIPE_RTP_OK: return "ok";
    case PIPE_RTP_SHORT: return "short";
    case PIPE_RTP_VERSION: return "version";
    case PIPE_RTP_CSRC: return "csrc";
    case PIPE_RTP_EXTENSION: return "extension";
    case PIPE_RTP_PADDING: return "padding";
    case PIPE_RTP_EMPTY: return "empty";
    case PIPE_RTP_TOO_LONG: return "too_long";
    case PIPE_RTP_PAYLOAD_TYPE: return "payload_type";
    case PIPE_RTP_NOMEM: return "nomem";
    }
    return "unknown";
}

pipe_rtp_status pipe_rtp_parse(const uint8_t *buf, size_t len, pipe_rtp *out)
{
    if (len > PIPE_RTP_MAX)
        return PIPE_RTP_TOO_LONG;
    if (len < 12)
        return PIPE_RTP_SHORT;
    if ((buf[0] >> 6) != 2)
        return PIPE_RTP_VERSION;
    bool padding = buf[0] & 0x20, extension = buf[0] & 0x10;
    size_t csrc = buf[0] & 0x0f;
    size_t off = 12 + 4 * csrc;
    if (off > len)
        return PIPE_RTP_CSRC;
    if (extension) {
        if (off + 4 > len)
            return PIPE_RTP_EXTENSION;
        size_t words = rd16(buf + off + 2);
        off += 4 + 4 * words;
        if (off > len)
            return PIPE_RTP_EXTENSION;
    }
    size_t end = len;
    if (padding) {
        uint8_t pad = buf[len - 1];
        if (pad == 0 || pad > end - off)
            return PIPE_RTP_PADDING;
        end -= pad;
    }
    if (end == off)
        return PIPE_RTP_EMPTY;
    out->marker = buf[1] & 0x80;
    out->payload_type = buf[1] & 0x7f;
    out->seq = rd16(buf + 2);
    out->timestamp = rd32(buf + 4);
    out->ssrc = rd32(buf + 8);
    out->payload = buf + off;
    out->payload_len = end - off;
    return PIPE_RTP_OK;
}

bool pipe_is_rtcp(const uint8_t *buf, size_t len)
{
    return len >= 2 && buf[1] >= 192 && buf[1] <= 223;
}

bool pipe_peek_ssrc(const uint8_t *buf, size_t len, uint32_t *ssrc)
{
    if (pipe_is_rtcp(buf, len)) {
        if (len < 8)
            return false;
        *ssrc = rd32(buf + 4);
        return true;
    }
    if (len < 12)
        return false;
    *ssrc = rd32(buf + 8);
    return true;
}

const char *pipe_codec_name(pipe_codec c)
{
    switch (c) {
    case PIPE_CODEC_H264: return "h264";
    case PIPE_CODEC_H265: return "h265";
    case PIPE_CODEC_AUDIO: return "audio";
    }
    return "unknown";
}

pipe_codec pipe_codec_parse(const char *name)
{
    if (strcmp(name, "h264") == 0)
        return PIPE_CODEC_H264;
    if (strcmp(name, "h265") == 0)
        return PIPE_CODEC_H265;
    if (strcmp(name, "audio") == 0)
        return PIPE_CODEC_AUDIO;
    return 0;
}

/* -------------------------------------------------------------- H.264 */

static int h264_nal_is_idr(uint8_t nal_header)
{
    return (nal_header & 0x1f) == 5;
}

/* Walk the (size, NAL) units of an aggregation packet from @p off. */
static int h264_aggregate(const uint8_t *p, size_t len, size_t off)
{
    int key = 0;
    if (off >= len)
        return -1;
    while (off < len) {
        if (off + 2 > len)
            return -1;
        size_t n = rd16(p + off);
        off += 2;
        if (n == 0 || off + n > len)
            return -1;
        if (p[off] & 0x80)
            return -1; /* forbidden zero bit */
        if (h264_nal_is_idr(p[off]))
            key = 1;
        off += n;
    }
    return key;
}

int pipe_h264_keyframe(const uint8_t *p, size_t len)
{
    if (len < 1 || (p[0] & 0x80))
        return -1;
    uint8_t type = p[0] & 0x1f;
    switch (type) {
    case 0:
    case 30:
    case 31: return -1;                                       /* reserved / unspecified */
    case 24: return h264_aggregate(p, len, 1);                /* STAP-A */
    case 25: return len < 3 ? -1 : h264_aggregate(p, len, 3); /* STAP-B: DON first */
    case 26: /* MTAP16, MTAP24: interleaved mode; counted as data, never a cut point */
    case 27: return len < 3 ? -1 : 0;
    case 28:   /* FU-A */
    case 29: { /* FU-B */
        size_t need = type == 28 ? 2 : 4;
        if (len < need + 1)
            return -1;
        uint8_t fu = p[1];
        if ((fu & 0xc0) == 0xc0)
            return -1; /* start and end in one fragment */
        return (fu & 0x80) && (fu & 0x1f) == 5;
    }
    default: return h264_nal_is_idr(p[0]);
    }
}

/* -------------------------------------------------------------- H.265 */

static int h265_type(const uint8_t *nal)
{
    return (nal[0] >> 1) & 0x3f;
}

static bool h265_header_ok(const uint8_t *nal)
{
    return !(nal[0] & 0x80) && (nal[1] & 0x07) != 0; /* F = 0, TID > 0 */
}

static bool h265_irap(int type)
{
    return type >= 16 && type <= 23;
}

int pipe_h265_keyframe(const uint8_t *p, size_t len)
{
    if (len < 3 || !h265_header_ok(p))
        return -1;
    int type = h265_type(p);
    if (type == 48) { /* aggregation packet (no DONL: sprop-max-don-diff = 0) */
        size_t off = 2;
        int key = 0;
        while (off < len) {
            if (off + 2 > len)
                return -1;
            size_t n = rd16(p + off);
            off += 2;
            if (n < 2 || off + n > len || !h265_header_ok(p + off))
                return -1;
            if (h265_irap(h265_type(p + off)))
                key = 1;
            off += n;
        }
        return key;
    }
    if (type == 49) { /* fragmentation unit */
        uint8_t fu = p[2];
        if ((fu & 0xc0) == 0xc0 || len < 4)
            return -1;
        return (fu & 0x80) && h265_irap(fu & 0x3f);
    }
    if (type == 50) /* PACI: never a cut point */
        return 0;
    if (type > 50)
        return -1;
    return h265_irap(type);
}

/* ------------------------------------------------------ segment payloads */

bool pipe_payload_open(pipe_payload_reader *r, const uint8_t *data, size_t len)
{
    if (len < PIPE_PAYLOAD_HEADER || memcmp(data, "CRTP", 4) != 0 || data[4] != 1 ||
        data[5] < PIPE_CODEC_H264 || data[5] > PIPE_CODEC_AUDIO || data[7] != 0)
        return false;
    r->data = data;
    r->len = len;
    r->off = PIPE_PAYLOAD_HEADER;
    r->codec = (pipe_codec)data[5];
    r->payload_type = data[6];
    r->clock_rate = rd32(data + 8);
    r->ssrc = rd32(data + 12);
    return true;
}

int pipe_payload_next(pipe_payload_reader *r, pipe_record *out)
{
    if (r->off == r->len)
        return 0;
    if (r->len - r->off < PIPE_RECORD_HEADER)
        return -1;
    const uint8_t *p = r->data + r->off;
    size_t n = rd16(p);
    if (n == 0 || n > PIPE_RTP_MAX || r->len - r->off - PIPE_RECORD_HEADER < n)
        return -1;
    out->lost_before = rd16(p + 2);
    out->arrival_us = (int64_t)((uint64_t)rd32(p + 4) << 32 | rd32(p + 8));
    out->pkt = p + PIPE_RECORD_HEADER;
    out->len = n;
    r->off += PIPE_RECORD_HEADER + n;
    return 1;
}
