/*
 * What the RTSP server and the pull client share on the media path: what a
 * connection's input starts with (a message or a $-interleaved frame), and a
 * track's packets into its stream (RTCP to the stream, RTP to the pipeline,
 * the recording begun at the first RTP packet with a meta saying where it
 * came from).
 */
#include "rtsp.h"

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>

static bool track_meta(const rtsp_meta_source *src, int index, const rtsp_sdp_track *t,
                       uint32_t ssrc, char *out, size_t cap)
{
    int n = snprintf(
        out, cap,
        "source=%s\ndevice_id=%lld\ndevice_serial=%s\n%s%s%stransport=%s\ntls=%s\npeer=%s\n"
        "rtsp_session=%s\ncapture=%s\ntrack=%d\ncontrol=%s\nmedia=%s\nencoding=%s\ncodec=%s\n"
        "ssrc=%u\npayload_type=%u\nclock_rate=%u\nsdp_b64=",
        src->source, (long long)src->device_id, src->serial, src->url ? "url=" : "",
        src->url ? src->url : "", src->url ? "\n" : "", src->udp ? "udp" : "tcp",
        src->tls ? "yes" : "no", src->peer, src->session, src->capture, index, t->control, t->media,
        t->encoding,
        t->codec == PIPE_CODEC_H264   ? "h264"
        : t->codec == PIPE_CODEC_H265 ? "h265"
                                      : "audio",
        ssrc, t->payload_type, t->clock_rate);
    if (n < 0 || (size_t)n + 4 * (src->sdp_len / 3 + 1) + 2 > cap)
        return false;
    n += EVP_EncodeBlock((unsigned char *)out + n, (const unsigned char *)src->sdp,
                         (int)src->sdp_len);
    out[n++] = '\n';
    out[n] = '\0';
    return true;
}

bool rtsp_capture_new(char out[37])
{
    store_id id;
    if (RAND_bytes(id.b, sizeof(id.b)) != 1)
        return false;
    store_id_format(&id, out);
    return true;
}

bool rtsp_track_push(ingest_stream *st, const rtsp_meta_source *src, int index,
                     const rtsp_sdp_track *t, bool rtcp, const uint8_t *p, size_t len,
                     int64_t now_us)
{
    if (rtcp) {
        ingest_stream_rtcp(st, p, len);
        return true;
    }
    uint32_t ssrc;
    if (!pipe_peek_ssrc(p, len, &ssrc))
        return false;
    if (!st->pipe) {
        static __thread char meta[STORE_META_MAX];
        if (!track_meta(src, index, t, ssrc, meta, sizeof(meta)) ||
            !ingest_stream_begin_codec(st, t->codec, t->payload_type, t->clock_rate, ssrc, meta))
            return false;
    }
    return ingest_stream_push(st, p, len, now_us) == PIPE_RTP_OK;
}

rtsp_in_kind rtsp_in_peek(struct evbuffer *in, uint8_t *channel, const uint8_t **payload,
                          size_t *len)
{
    size_t have = evbuffer_get_length(in);
    uint8_t head[4];
    if (have == 0)
        return RTSP_IN_EMPTY;
    evbuffer_copyout(in, head, have < 4 ? have : 4);
    if (head[0] != '$')
        return RTSP_IN_MESSAGE;
    size_t flen = have >= 4 ? (size_t)head[2] << 8 | head[3] : 0;
    if (have < 4 || have < 4 + flen)
        return RTSP_IN_FRAME_PARTIAL;
    *channel = head[1];
    *payload = evbuffer_pullup(in, (ev_ssize_t)(4 + flen)) + 4;
    *len = flen;
    return RTSP_IN_FRAME;
}
