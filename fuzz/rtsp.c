/*
 * libFuzzer target: the RTSP framing of ingestd (rtsp_msg.c) on a byte
 * stream as a connection delivers it — requests, responses and interleaved
 * frames back to back, read in pieces whose sizes come from the input.
 * Every message parsed must lie inside the bytes given, and the same bytes
 * one short of a complete message must parse as "need more". Each request's
 * Authorization header goes through the digest parser and check, as the
 * server does before it knows who is asking; each response's
 * WWW-Authenticate goes through the challenge parser and each body through
 * the SDP reader, as the pull client does with a camera's answers.
 */
#include "ingestd/rtsp.h"

#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(const void *p, size_t n, const uint8_t *buf, size_t len)
{
    const uint8_t *q = p;
    if (n && (q < buf || q + n > buf + len))
        abort();
}

static void check(const rtsp_parsed *m, const uint8_t *buf, size_t len)
{
    if (m->consumed > len || m->nheaders > RTSP_MAX_HEADERS)
        abort();
    if (m->kind == RTSP_FRAME) {
        inside(m->frame, m->frame_len, buf, len);
        return;
    }
    if (m->kind == RTSP_REQUEST) {
        inside(m->method.p, m->method.len, buf, len);
        inside(m->uri.p, m->uri.len, buf, len);
        if (!m->method.len || m->method.len > RTSP_MAX_METHOD || !m->uri.len ||
            m->uri.len > RTSP_MAX_URI)
            abort();
    }
    for (int i = 0; i < m->nheaders; i++) {
        inside(m->headers[i].name.p, m->headers[i].name.len, buf, len);
        inside(m->headers[i].value.p, m->headers[i].value.len, buf, len);
    }
    inside(m->body, m->body_len, buf, len);
}

static void check_auth(const rtsp_parsed *m)
{
    static rtsp_nonces nonces;
    static bool ready;
    if (!ready)
        ready = rtsp_nonces_init(&nonces);
    const rtsp_str *h = rtsp_header_get(m, "Authorization");
    rtsp_digest d;
    if (!h || !rtsp_digest_parse(*h, &d))
        return;
    struct sockaddr_in peer = {.sin_family = AF_INET};
    uint8_t salt[RTSP_CONN_SALT_LEN] = {0};
    rtsp_nc_seen seen = {0};
    rtsp_auth_binding b = {
        .peer = (struct sockaddr *)&peer, .salt = salt, .allow_md5 = true, .seen = &seen};
    rtsp_auth_result r =
        rtsp_auth_check(&nonces, &b, 1800000000, &d, m->method, m->uri, "password");
    if (r == RTSP_AUTH_OK)
        abort(); /* a forged nonce that checks out */
}

static void check_camera_answer(const rtsp_parsed *m, const uint8_t *buf, size_t len)
{
    for (int i = 0; i < m->nheaders; i++) {
        rtsp_digest d;
        if (!rtsp_str_ieq(m->headers[i].name, "WWW-Authenticate") ||
            !rtsp_digest_parse_challenge(m->headers[i].value, &d))
            continue;
        if (!d.realm.p || !d.nonce.p)
            abort();
        inside(d.realm.p, d.realm.len, buf, len);
        inside(d.nonce.p, d.nonce.len, buf, len);
    }
    if (!m->body_len)
        return;
    rtsp_sdp_track tracks[RTSP_TRACKS_MAX];
    int n = -1;
    int status = rtsp_sdp_tracks(m->body, m->body_len, tracks, RTSP_TRACKS_MAX, &n);
    if (n < 0 || n > RTSP_TRACKS_MAX || (status == 200) != (n > 0))
        abort();
    for (int i = 0; i < n; i++)
        if (!memchr(tracks[i].control, '\0', sizeof(tracks[i].control)) || !tracks[i].codec)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static rtsp_parsed m, whole;
    if (size < 1)
        return 0;
    /* The first byte sets the limits, so that both caps get exercised. */
    rtsp_limits lim = {.max_header_bytes = 64 + (size_t)(data[0] & 0x0f) * 256,
                       .max_body_bytes = (size_t)(data[0] >> 4) * 64};
    data++;
    size--;
    size_t off = 0;
    while (off < size) {
        const uint8_t *buf = data + off;
        size_t len = size - off;
        rtsp_kind k = rtsp_parse(buf, len, &lim, &whole);
        check(&whole, buf, len);
        if (k == RTSP_NEED_MORE || k == RTSP_BAD)
            break;
        if (whole.consumed == 0)
            abort();
        if (k == RTSP_REQUEST)
            check_auth(&whole);
        else if (k == RTSP_RESPONSE)
            check_camera_answer(&whole, buf, len);
        /* One byte short of a whole message is never a message, nor an
         * error: the reader must simply wait for more. */
        size_t cut = whole.consumed - 1;
        if (rtsp_parse(buf, cut, &lim, &m) != RTSP_NEED_MORE)
            abort();
        off += whole.consumed;
    }
    return 0;
}
