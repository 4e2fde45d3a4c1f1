/* A small blocking RTSP publisher: see rtsp_client.h. */
#include "rtsp_client.h"

#include "ingestd/rtsp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RESPONSE_MAX 16384

bool rtsp_client_open(rtsp_client *c, const char *host, int port, const char *serial,
                      const char *password)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    snprintf(c->url, sizeof(c->url), "rtsp://%s:%d/live/%s", host, port, serial);
    snprintf(c->user, sizeof(c->user), "%s", serial);
    snprintf(c->password, sizeof(c->password), "%s", password);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) {
        snprintf(c->error, sizeof(c->error), "not an IPv4 address: %s", host);
        return false;
    }
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, buf = 4 << 20;
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
        snprintf(c->error, sizeof(c->error), "connect %s:%d: %s", host, port, strerror(errno));
        rtsp_client_close(c);
        return false;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    return true;
}

void rtsp_client_close(rtsp_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

bool rtsp_client_write(rtsp_client *c, const void *p, size_t len)
{
    const uint8_t *b = p;
    while (len) {
        ssize_t n = send(c->fd, b, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(c->error, sizeof(c->error), "send: %s", strerror(errno));
            return false;
        }
        b += n;
        len -= (size_t)n;
    }
    return true;
}

/* Read one response; interleaved frames the server might send are skipped. */
static int read_response(rtsp_client *c, char *hdr_out, size_t cap)
{
    static __thread uint8_t buf[RESPONSE_MAX];
    static __thread rtsp_parsed m;
    size_t len = 0;
    rtsp_limits lim = {.max_header_bytes = 8192, .max_body_bytes = 8192};
    for (;;) {
        rtsp_kind k = rtsp_parse(buf, len, &lim, &m);
        if (k == RTSP_RESPONSE)
            break;
        if (k == RTSP_FRAME) {
            memmove(buf, buf + m.consumed, len - m.consumed);
            len -= m.consumed;
            continue;
        }
        if (k == RTSP_BAD || k == RTSP_REQUEST || len == sizeof(buf)) {
            snprintf(c->error, sizeof(c->error), "unexpected data from the server");
            return -1;
        }
        ssize_t n = recv(c->fd, buf + len, sizeof(buf) - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(c->error, sizeof(c->error), "the server closed the connection");
            return -1;
        }
        len += (size_t)n;
    }
    size_t hl = m.consumed - m.body_len;
    if (hdr_out) {
        size_t n = hl < cap - 1 ? hl : cap - 1;
        memcpy(hdr_out, buf, n);
        hdr_out[n] = '\0';
    }
    const rtsp_str *s = rtsp_header_get(&m, "Session");
    if (s) {
        size_t n = 0;
        while (n < s->len && s->p[n] != ';' && n < sizeof(c->session) - 1)
            n++;
        memcpy(c->session, s->p, n);
        c->session[n] = '\0';
    }
    if (m.code == 401) {
        /* The first challenge (SHA-256, ours offers it first): its nonce. */
        for (int i = 0; i < m.nheaders; i++) {
            if (!rtsp_str_ieq(m.headers[i].name, "WWW-Authenticate"))
                continue;
            const char *v = m.headers[i].value.p, *end = v + m.headers[i].value.len;
            const char *nn = memmem(v, (size_t)(end - v), "nonce=\"", 7);
            if (nn) {
                nn += 7;
                const char *q = memchr(nn, '"', (size_t)(end - nn));
                if (q && (size_t)(q - nn) < sizeof(c->nonce)) {
                    memcpy(c->nonce, nn, (size_t)(q - nn));
                    c->nonce[q - nn] = '\0';
                }
            }
            break;
        }
    }
    int code = m.code;
    memmove(buf, buf + m.consumed, len - m.consumed);
    return code;
}

static void authorization(rtsp_client *c, const char *method, const char *url, char *out,
                          size_t cap)
{
    out[0] = '\0';
    if (!c->nonce[0])
        return;
    char draft[1024], hex[65];
    snprintf(draft, sizeof(draft),
             "Digest username=\"%s\", realm=\"" RTSP_REALM "\", nonce=\"%s\", uri=\"%s\", "
             "algorithm=SHA-256, qop=auth, nc=%08x, cnonce=\"bench%d\", response=\"x\"",
             c->user, c->nonce, url, (unsigned)c->cseq, c->cseq);
    rtsp_digest d;
    if (!rtsp_digest_parse((rtsp_str){draft, strlen(draft)}, &d))
        return;
    rtsp_digest_response(RTSP_DIGEST_SHA256, &d, c->password, method, hex);
    char *r = strstr(draft, "response=\"x\"");
    snprintf(r, sizeof(draft) - (size_t)(r - draft), "response=\"%s\"", hex);
    snprintf(out, cap, "Authorization: %s\r\n", draft);
}

int rtsp_client_request(rtsp_client *c, const char *method, const char *url, const char *headers,
                        const char *body)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        char req[4096], auth[1200], session[96] = "";
        c->cseq++;
        authorization(c, method, url, auth, sizeof(auth));
        if (c->session[0])
            snprintf(session, sizeof(session), "Session: %s\r\n", c->session);
        size_t blen = body ? strlen(body) : 0;
        int n = snprintf(req, sizeof(req), "%s %s RTSP/1.0\r\nCSeq: %d\r\n%s%s%s", method, url,
                         c->cseq, auth, session, headers ? headers : "");
        if (blen)
            n += snprintf(req + n, sizeof(req) - (size_t)n, "Content-Length: %zu\r\n", blen);
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n%s", body ? body : "");
        if (n >= (int)sizeof(req) || !rtsp_client_write(c, req, (size_t)n))
            return -1;
        c->status = read_response(c, NULL, 0);
        if (c->status != 401 || attempt == 1)
            return c->status;
    }
    return c->status;
}

bool rtsp_client_publish(rtsp_client *c, const char *sdp)
{
    char track[600];
    snprintf(track, sizeof(track), "%s/streamid=0", c->url);
    if (rtsp_client_request(c, "ANNOUNCE", c->url, "Content-Type: application/sdp\r\n", sdp) != 200)
        return false;
    if (rtsp_client_request(c, "SETUP", track,
                            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n",
                            NULL) != 200)
        return false;
    return rtsp_client_request(c, "RECORD", c->url, NULL, NULL) == 200;
}

bool rtsp_client_teardown(rtsp_client *c)
{
    bool ok = rtsp_client_request(c, "TEARDOWN", c->url, NULL, NULL) == 200;
    rtsp_client_close(c);
    return ok;
}
