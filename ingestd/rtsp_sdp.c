/*
 * The tracks of a presentation, from its SDP (parsed by GStreamer's SDP
 * library): what the RTSP server (ANNOUNCE) and the pull client (DESCRIBE)
 * both read.
 */
#include "rtsp.h"

#include <gst/sdp/gstsdpmessage.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pipe_codec codec_of(const char *media, const char *encoding)
{
    if (strcmp(media, "video") == 0) {
        if (g_ascii_strcasecmp(encoding, "H264") == 0)
            return PIPE_CODEC_H264;
        if (g_ascii_strcasecmp(encoding, "H265") == 0)
            return PIPE_CODEC_H265;
        return 0;
    }
    return strcmp(media, "audio") == 0 ? PIPE_CODEC_AUDIO : 0;
}

/* The encoding and clock rate of payload type @p pt in media @p m; false if none. */
static bool payload_format(const GstSDPMedia *m, int pt, char encoding[32], unsigned *clock)
{
    for (guint k = 0;; k++) {
        const char *rtpmap = gst_sdp_media_get_attribute_val_n(m, "rtpmap", k);
        if (!rtpmap)
            break;
        char enc[32];
        int mpt = -1;
        unsigned rate = 0;
        if (sscanf(rtpmap, "%d %31[^/]/%u", &mpt, enc, &rate) == 3 && mpt == pt) {
            cu_strlcpy(encoding, enc, 32);
            *clock = rate;
            return true;
        }
    }
    if (pt < 96) { /* static payload types (RFC 3551) */
        cu_strlcpy(encoding, pt == 0 ? "PCMU" : pt == 8 ? "PCMA" : "static", 32);
        *clock = 8000;
        return true;
    }
    return false;
}

int rtsp_sdp_tracks(const uint8_t *sdp_text, size_t len, rtsp_sdp_track *out, int max, int *n)
{
    GstSDPMessage *sdp = NULL;
    int status = 415;
    bool video = false;
    *n = 0;
    if (gst_sdp_message_new(&sdp) != GST_SDP_OK)
        return 500;
    if (gst_sdp_message_parse_buffer(sdp_text, (guint)len, sdp) != GST_SDP_OK ||
        gst_sdp_message_medias_len(sdp) == 0) {
        status = 400;
        goto out;
    }
    for (guint i = 0; i < gst_sdp_message_medias_len(sdp); i++) {
        const GstSDPMedia *m = gst_sdp_message_get_media(sdp, i);
        const char *media = gst_sdp_media_get_media(m);
        const char *fmt = gst_sdp_media_formats_len(m) ? gst_sdp_media_get_format(m, 0) : NULL;
        const char *proto = gst_sdp_media_get_proto(m);
        uint64_t pt;
        if (!media || !fmt || !proto || strcmp(proto, "RTP/AVP") != 0 ||
            !rtsp_str_uint((rtsp_str){fmt, strlen(fmt)}, &pt) || pt > 127)
            continue; /* not RTP, or a format that is not a payload type number */
        char encoding[32] = "";
        unsigned clock = 0;
        if (!payload_format(m, (int)pt, encoding, &clock))
            continue;
        pipe_codec codec = codec_of(media, encoding);
        if (!codec || clock < 1000 || clock > 192000)
            continue; /* a track we do not record (application data, unknown codec) */
        if (*n == max) {
            status = 400;
            goto out;
        }
        rtsp_sdp_track *t = &out[*n];
        memset(t, 0, sizeof(*t));
        const char *control = gst_sdp_media_get_attribute_val(m, "control");
        if (control && strlen(control) >= sizeof(t->control)) {
            status = 400;
            goto out;
        }
        if (control)
            cu_strlcpy(t->control, control, sizeof(t->control));
        else
            snprintf(t->control, sizeof(t->control), "trackID=%d", *n);
        cu_strlcpy(t->media, media, sizeof(t->media));
        cu_strlcpy(t->encoding, encoding, sizeof(t->encoding));
        t->codec = codec;
        t->payload_type = (uint8_t)pt;
        t->clock_rate = clock;
        video |= codec != PIPE_CODEC_AUDIO;
        (*n)++;
    }
    status = video ? 200 : 415;
out:
    if (status != 200)
        *n = 0;
    gst_sdp_message_free(sdp);
    return status;
}
