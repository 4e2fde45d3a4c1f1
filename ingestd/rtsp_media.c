/*
 * A track's packets into its stream, for the RTSP server and the pull client
 * alike: RTCP to the stream, RTP to the pipeline, the recording begun at the
 * first RTP packet with a meta saying where it came from.
 */
#include "rtsp.h"

#include <openssl/evp.h>
#include <stdio.h>

static bool track_meta(const rtsp_meta_source *src, int index, const rtsp_sdp_track *t,
                       uint32_t ssrc, char *out, size_t cap)
{
    int n = snprintf(
        out, cap,
        "source=%s\ndevice_id=%lld\ndevice_serial=%s\n%s%s%stransport=%s\ntls=%s\npeer=%s\n"
        "rtsp_session=%s\ntrack=%d\ncontrol=%s\nmedia=%s\nencoding=%s\ncodec=%s\nssrc=%u\n"
        "payload_type=%u\nclock_rate=%u\nsdp_b64=",
        src->source, (long long)src->device_id, src->serial, src->url ? "url=" : "",
        src->url ? src->url : "", src->url ? "\n" : "", src->udp ? "udp" : "tcp",
        src->tls ? "yes" : "no", src->peer, src->session, index, t->control, t->media, t->encoding,
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
