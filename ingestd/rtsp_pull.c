/*
 * Pulling from cameras (docs/rtsp.md, "Pull"): for each active device with a
 * pull URL, its worker (device id mod workers) connects, asks OPTIONS,
 * DESCRIBE, SETUP for each track we record (RTP interleaved in the TCP
 * connection, or UDP), PLAY, and keeps the session alive with GET_PARAMETER
 * (or OPTIONS). Each connected period is a recording per track: the
 * streams begin at the first packet after PLAY and end, sealed with their
 * tail, when the connection ends. A failure of any kind closes the
 * connection and retries after a back-off that doubles from 1 s up to
 * rtsp.pull_backoff_max_s, and starts again from 1 s once a session has
 * played for PLAYED_LONG_US.
 *
 * Everything here runs on the worker's thread; the pulls of a worker hang
 * off ingest_worker.pulls.
 */
#include "rtsp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <gst/rtsp/gstrtsptransport.h>
#include <gst/rtsp/gstrtspurl.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define TIMER_MS       500
#define PLAYED_LONG_US (10 * 1000000LL) /* a session this long resets the back-off */
#define SESSION_MAX    128
#define AUTH_RETRIES   2 /* a fresh challenge (stale nonce) may come once more */
#define REDIRECTS_MAX  3

CU_METRIC_DEFINE(pull_playing_metric, CU_METRIC_GAUGE, "custos_rtsp_pull_sessions", "",
                 "Cameras being pulled from now (PLAY answered).")
CU_METRIC_DEFINE(pull_attempts_metric, CU_METRIC_COUNTER, "custos_rtsp_pull_attempts_total", "",
                 "Connections made to pull from a camera.")
CU_METRIC_DEFINE(pull_failures_metric, CU_METRIC_COUNTER, "custos_rtsp_pull_failures_total", "",
                 "Pull connections that failed or ended, each followed by a retry.")
CU_METRIC_DEFINE(pull_packets_metric, CU_METRIC_COUNTER, "custos_rtsp_pull_packets_total", "",
                 "RTP and RTCP packets received from cameras pulled from.")

typedef enum {
    P_WAIT,       /* until next_attempt_us */
    P_CONNECTING, /* resolving and connecting */
    P_OPTIONS,
    P_DESCRIBE,
    P_SETUP, /* of tracks[setup_next] */
    P_PLAY,
    P_PLAYING,
} pull_state;

static const char *const state_names[] = {"waiting", "connecting", "OPTIONS", "DESCRIBE",
                                          "SETUP",   "PLAY",       "playing"};

typedef struct rtsp_pull rtsp_pull;

typedef struct {
    rtsp_pull *p;
    int index;
    rtsp_sdp_track d;
    char url[RTSP_MAX_URI + 1]; /* its SETUP URL */
    bool setup;
    uint8_t rtp_channel, rtcp_channel;     /* interleaved */
    rtsp_udp_pair udp_ports;               /* ours over UDP; port 0 over TCP */
    int camera_rtp_port, camera_rtcp_port; /* its server_port (0: it named none) */
    ingest_stream *st;
    rtsp_meta_source src; /* where its recordings come from, set with the stream */
} pull_track;

struct rtsp_pull {
    ingest_worker *w;
    int64_t device_id;
    char serial[65];
    char configured[CTL_PULL_URL_MAX + 1]; /* the device's pull URL: credentials inside */
    bool udp;
    bool tls; /* rtsps:// */
    /* from the URL */
    char url[RTSP_MAX_URI + 1]; /* without credentials: what requests name */
    char host[256];
    int port;
    char *user, *password;          /* NULL without credentials; wiped when freed */
    char peer[300];                 /* host:port, for log lines and meta */
    struct sockaddr_storage camera; /* its address once connected: UDP media only from it */
    /* the connection */
    pull_state state;
    struct bufferevent *bev;
    struct event *timer;
    int64_t next_attempt_us, deadline_us, playing_since_us, last_media_us, next_keepalive_us;
    int backoff_s;
    int redirects;
    unsigned cseq, pending_cseq;
    char req_method[16], req_url[RTSP_MAX_URI + 1], req_extra[256]; /* to send again after 401 */
    bool get_parameter; /* the camera lists GET_PARAMETER in Public */
    /* authentication: the challenge we answer */
    enum { AUTH_NONE, AUTH_BASIC, AUTH_DIGEST } auth;
    rtsp_digest_alg alg;
    char realm[128], nonce[256], opaque[256];
    bool qop_auth;
    unsigned nc;
    int auth_tries;
    /* the presentation */
    char session[SESSION_MAX];
    char capture[37]; /* this session's capture id (a new one at each PLAY) */
    int session_timeout_s;
    char base[RTSP_MAX_URI + 1];
    char *sdp;
    size_t sdp_len;
    pull_track tracks[RTSP_TRACKS_MAX];
    int ntracks, setup_next;
    rtsp_pull *next;
};

struct rtsp_pulls {
    struct evdns_base *dns;
    SSL_CTX *tls; /* made at the first rtsps:// pull */
    rtsp_pull *list;
};

static void pull_connect(rtsp_pull *p);

/* ------------------------------------------------------------- helpers */

static const cu_config *cfg_of(const rtsp_pull *p)
{
    return p->w->svc->cfg;
}

static void track_close(pull_track *t)
{
    if (t->st) {
        ingest_stream_release(t->st);
        t->st = NULL;
    }
    rtsp_udp_pair_close(t->p->w->svc->rtsp, &t->udp_ports);
    t->setup = false;
}

/*
 * Close the connection and end the session: each track's recording is
 * sealed with what it received. With @p teardown a playing session is told
 * (best effort, written straight to the socket).
 */
static void pull_disconnect(rtsp_pull *p, bool teardown)
{
    if (p->bev) {
        if (teardown && p->state == P_PLAYING && p->session[0]) {
            char req[RTSP_MAX_URI + 256];
            int n = snprintf(req, sizeof(req),
                             "TEARDOWN %s RTSP/1.0\r\nCSeq: %u\r\nSession: %s\r\n"
                             "User-Agent: Custos\r\n\r\n",
                             p->base, ++p->cseq, p->session);
            evutil_socket_t fd = bufferevent_getfd(p->bev);
            if (fd >= 0 && n > 0 && (size_t)n < sizeof(req) &&
                evbuffer_get_length(bufferevent_get_output(p->bev)) == 0 &&
                send(fd, req, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                CU_LOG(CU_LOG_DEBUG, "rtsp", "pull %s: TEARDOWN not sent: %s", p->serial,
                       strerror(errno));
        }
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    for (int i = 0; i < p->ntracks; i++)
        track_close(&p->tracks[i]);
    if (p->state == P_PLAYING)
        cu_metric_add(&pull_playing_metric, -1);
    p->ntracks = 0;
    p->session[0] = '\0';
    p->base[0] = '\0';
    free(p->sdp);
    p->sdp = NULL;
    p->sdp_len = 0;
    p->auth = AUTH_NONE;
    p->auth_tries = 0;
}

/* The connection failed or ended: close it and retry after the back-off. */
static void pull_fail(rtsp_pull *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pull_fail(rtsp_pull *p, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    int64_t now = cu_time_us();
    if (p->state == P_PLAYING && now - p->playing_since_us >= PLAYED_LONG_US)
        p->backoff_s = 1;
    cu_metric_inc(&pull_failures_metric);
    CU_LOG(CU_LOG_WARN, "rtsp", "pull %s from %s: %s (while %s); retrying in %d s", p->serial,
           p->url, why, state_names[p->state], p->backoff_s);
    pull_disconnect(p, true);
    p->state = P_WAIT;
    p->next_attempt_us = now + (int64_t)p->backoff_s * 1000000;
    int64_t max = cfg_of(p)->rtsp_pull_backoff_max_s;
    p->backoff_s = p->backoff_s * 2 > max ? (int)max : p->backoff_s * 2;
}

static bool str_copy(char *dst, size_t cap, rtsp_str s)
{
    if (s.len >= cap)
        return false;
    memcpy(dst, s.p, s.len);
    dst[s.len] = '\0';
    return true;
}

/* ------------------------------------------------------- authorization */

/* The Authorization header line for @p method on @p uri, or "" without a challenge. */
static bool authorization(rtsp_pull *p, const char *method, const char *uri, char *out, size_t cap)
{
    out[0] = '\0';
    if (p->auth == AUTH_NONE)
        return true;
    if (p->auth == AUTH_BASIC) {
        char plain[600];
        int n = snprintf(plain, sizeof(plain), "%s:%s", p->user, p->password);
        if (n < 0 || (size_t)n >= sizeof(plain) || cap < 32 + 4 * ((size_t)n / 3 + 1))
            return false;
        int len = snprintf(out, cap, "Authorization: Basic ");
        len += EVP_EncodeBlock((unsigned char *)out + len, (unsigned char *)plain, n);
        snprintf(out + len, cap - (size_t)len, "\r\n");
        OPENSSL_cleanse(plain, sizeof(plain));
        return true;
    }
    char cnonce[17] = "", nc[9] = "";
    if (p->qop_auth) {
        uint8_t raw[8];
        if (RAND_bytes(raw, sizeof(raw)) != 1)
            return false;
        cu_hex_encode(raw, sizeof(raw), cnonce);
        snprintf(nc, sizeof(nc), "%08x", ++p->nc);
    }
    rtsp_digest d = {
        .username = {p->user, strlen(p->user)},
        .realm = {p->realm, strlen(p->realm)},
        .nonce = {p->nonce, strlen(p->nonce)},
        .uri = {uri, strlen(uri)},
    };
    if (p->qop_auth) {
        d.qop = (rtsp_str){"auth", 4};
        d.nc = (rtsp_str){nc, 8};
        d.cnonce = (rtsp_str){cnonce, 16};
    }
    char response[65];
    rtsp_digest_response(p->alg, &d, p->password, method, response);
    char opaque[300] = "";
    if (p->opaque[0])
        snprintf(opaque, sizeof(opaque), ", opaque=\"%s\"", p->opaque);
    char qop[80] = "";
    if (p->qop_auth)
        snprintf(qop, sizeof(qop), ", qop=auth, nc=%s, cnonce=\"%s\"", nc, cnonce);
    int n = snprintf(out, cap,
                     "Authorization: Digest username=\"%s\", realm=\"%s\", nonce=\"%s\", "
                     "uri=\"%s\", response=\"%s\", algorithm=%s%s%s\r\n",
                     p->user, p->realm, p->nonce, uri, response,
                     p->alg == RTSP_DIGEST_SHA256 ? "SHA-256" : "MD5", opaque, qop);
    return n > 0 && (size_t)n < cap;
}

/*
 * Pick the strongest challenge of a 401 we may answer. False: none. Basic
 * sends the password itself, so only inside TLS; MD5 only when
 * rtsp.allow_md5 says so (a captured MD5 exchange is cheap to crack).
 */
static bool take_challenge(rtsp_pull *p, const rtsp_parsed *m)
{
    int best = 0; /* 1 Basic, 2 Digest MD5, 3 Digest SHA-256 */
    bool md5_ok = cfg_of(p)->rtsp_allow_md5 != 0;
    for (int i = 0; i < m->nheaders; i++) {
        const rtsp_header *h = &m->headers[i];
        if (!rtsp_str_ieq(h->name, "WWW-Authenticate"))
            continue;
        if (h->value.len >= 6 && rtsp_str_ieq((rtsp_str){h->value.p, 6}, "Basic ") && best < 1 &&
            p->tls) {
            best = 1;
            p->auth = AUTH_BASIC;
            continue;
        }
        rtsp_digest d;
        if (!rtsp_digest_parse_challenge(h->value, &d))
            continue;
        int rank;
        if (!d.algorithm.p || rtsp_str_ieq(d.algorithm, "MD5"))
            rank = md5_ok ? 2 : 0;
        else if (rtsp_str_ieq(d.algorithm, "SHA-256"))
            rank = 3;
        else
            continue; /* -sess variants and others */
        if (rank == 0 || rank <= best || !str_copy(p->realm, sizeof(p->realm), d.realm) ||
            !str_copy(p->nonce, sizeof(p->nonce), d.nonce))
            continue;
        p->opaque[0] = '\0';
        if (d.opaque.p && !str_copy(p->opaque, sizeof(p->opaque), d.opaque))
            continue;
        p->qop_auth = false;
        for (size_t k = 0; d.qop.p && k + 4 <= d.qop.len; k++)
            if (memcmp(d.qop.p + k, "auth", 4) == 0 &&
                (k + 4 == d.qop.len || d.qop.p[k + 4] == ',' || d.qop.p[k + 4] == ' '))
                p->qop_auth = true;
        p->alg = rank == 3 ? RTSP_DIGEST_SHA256 : RTSP_DIGEST_MD5;
        p->auth = AUTH_DIGEST;
        p->nc = 0;
        best = rank;
    }
    return best > 0;
}

/* ------------------------------------------------------------ requests */

static bool send_request(rtsp_pull *p)
{
    char auth[1200], session[SESSION_MAX + 16] = "";
    if (!authorization(p, p->req_method, p->req_url, auth, sizeof(auth))) {
        pull_fail(p, "credentials do not fit in a request");
        return false;
    }
    if (p->session[0])
        snprintf(session, sizeof(session), "Session: %s\r\n", p->session);
    p->pending_cseq = ++p->cseq;
    if (evbuffer_add_printf(bufferevent_get_output(p->bev),
                            "%s %s RTSP/1.0\r\nCSeq: %u\r\nUser-Agent: Custos\r\n%s%s%s\r\n",
                            p->req_method, p->req_url, p->pending_cseq, auth, session,
                            p->req_extra) < 0) {
        OPENSSL_cleanse(auth, sizeof(auth));
        pull_fail(p, "cannot queue a request");
        return false;
    }
    OPENSSL_cleanse(auth, sizeof(auth));
    p->deadline_us = cu_time_us() + cfg_of(p)->rtsp_request_timeout_s * 1000000;
    return true;
}

static bool request(rtsp_pull *p, pull_state state, const char *method, const char *url,
                    const char *extra)
{
    p->state = state;
    cu_strlcpy(p->req_method, method, sizeof(p->req_method));
    cu_strlcpy(p->req_url, url, sizeof(p->req_url));
    cu_strlcpy(p->req_extra, extra ? extra : "", sizeof(p->req_extra));
    p->auth_tries = 0;
    return send_request(p);
}

/* A keep-alive while playing: its answer is not waited for. */
static void keepalive(rtsp_pull *p)
{
    char session[SESSION_MAX + 16], auth[1200];
    snprintf(session, sizeof(session), "Session: %s\r\n", p->session);
    const char *method = p->get_parameter ? "GET_PARAMETER" : "OPTIONS";
    if (!authorization(p, method, p->base, auth, sizeof(auth)))
        auth[0] = '\0';
    evbuffer_add_printf(bufferevent_get_output(p->bev),
                        "%s %s RTSP/1.0\r\nCSeq: %u\r\nUser-Agent: Custos\r\n%s%s\r\n", method,
                        p->base, ++p->cseq, auth, session);
    OPENSSL_cleanse(auth, sizeof(auth));
}

/* The URL of a control attribute, against the presentation's base. */
static bool control_url(const rtsp_pull *p, const char *control, char *out, size_t cap)
{
    int n;
    if (strncmp(control, "rtsp://", 7) == 0 || strncmp(control, "rtsps://", 8) == 0)
        n = snprintf(out, cap, "%s", control);
    else if (strcmp(control, "*") == 0)
        n = snprintf(out, cap, "%s", p->base);
    else
        n = snprintf(out, cap, "%s%s%s", p->base,
                     p->base[0] && p->base[strlen(p->base) - 1] == '/' ? "" : "/", control);
    return n > 0 && (size_t)n < cap;
}

static bool setup_next_track(rtsp_pull *p)
{
    pull_track *t = &p->tracks[p->setup_next];
    char transport[160];
    if (p->udp) {
        if (!rtsp_udp_pair_open(p->w->svc->rtsp, &t->udp_ports)) {
            pull_fail(p, "no free UDP port pair in rtsp.udp_port_min..max");
            return false;
        }
        snprintf(transport, sizeof(transport), "Transport: RTP/AVP;unicast;client_port=%d-%d\r\n",
                 t->udp_ports.port, t->udp_ports.port + 1);
    } else {
        snprintf(transport, sizeof(transport),
                 "Transport: RTP/AVP/TCP;unicast;interleaved=%d-%d\r\n", 2 * t->index,
                 2 * t->index + 1);
    }
    return request(p, P_SETUP, "SETUP", t->url, transport);
}

static bool start_play(rtsp_pull *p)
{
    return request(p, P_PLAY, "PLAY", p->base, "Range: npt=0.000-\r\n");
}

/* ------------------------------------------------------------- media */

static void track_packet(pull_track *t, bool rtcp, const uint8_t *pkt, size_t len, int64_t now_us)
{
    rtsp_pull *p = t->p;
    cu_metric_inc(&pull_packets_metric);
    p->last_media_us = now_us;
    if (p->state != P_PLAYING || !t->st)
        return;
    rtsp_track_push(t->st, &t->src, t->index, &t->d, rtcp, pkt, len, now_us);
}

/* An interleaved frame. False: a bad frame, the connection was closed. */
static bool on_frame(rtsp_pull *p, uint8_t channel, const uint8_t *data, size_t len, int64_t now_us)
{
    for (int i = 0; i < p->ntracks; i++) {
        pull_track *t = &p->tracks[i];
        if (!t->setup || t->udp_ports.port ||
            (channel != t->rtp_channel && channel != t->rtcp_channel))
            continue;
        bool rtcp = channel == t->rtcp_channel;
        if (len < (rtcp ? 8u : 12u) || (!rtcp && len > PIPE_RTP_MAX)) {
            pull_fail(p, "interleaved frame of %zu bytes on channel %u", len, channel);
            return false;
        }
        track_packet(t, rtcp, data, len, now_us);
        return true;
    }
    return true; /* a channel we did not set up: ignored */
}

static void on_udp(evutil_socket_t fd, short what, void *arg)
{
    pull_track *t = arg;
    (void)what;
    uint8_t buf[PIPE_RTP_MAX + 1];
    bool usable;
    ssize_t n;
    int64_t now_us = cu_time_us();
    /* Only from the camera's address; anything else is dropped. */
    bool rtcp = fd == t->udp_ports.rtcp_fd;
    int from_port = rtcp ? t->camera_rtcp_port : t->camera_rtp_port;
    for (int i = 0; i < 64 && (n = rtsp_udp_recv(fd, &t->p->camera, from_port, buf, &usable)) >= 0;
         i++)
        if (usable)
            track_packet(t, rtcp, buf, (size_t)n, now_us);
}

/* ----------------------------------------------------------- responses */

static bool on_describe(rtsp_pull *p, const rtsp_parsed *m)
{
    const rtsp_str *ct = rtsp_header_get(m, "Content-Type");
    if (!ct || ct->len < 15 || !rtsp_str_ieq((rtsp_str){ct->p, 15}, "application/sdp") ||
        !m->body_len) {
        pull_fail(p, "DESCRIBE answered without an SDP");
        return false;
    }
    if (m->body_len > RTSP_SDP_MAX) {
        pull_fail(p, "SDP of %zu bytes (at most %d)", m->body_len, RTSP_SDP_MAX);
        return false;
    }
    const rtsp_str *base = rtsp_header_get(m, "Content-Base");
    if (!base)
        base = rtsp_header_get(m, "Content-Location");
    if (!base || !str_copy(p->base, sizeof(p->base), *base) ||
        (strncmp(p->base, "rtsp://", 7) != 0 && strncmp(p->base, "rtsps://", 8) != 0))
        cu_strlcpy(p->base, p->url, sizeof(p->base));
    rtsp_sdp_track found[RTSP_TRACKS_MAX];
    int n = 0;
    int status = rtsp_sdp_tracks(m->body, m->body_len, found, RTSP_TRACKS_MAX, &n);
    if (status != 200) {
        pull_fail(p, status == 415 ? "the SDP has no H.264 or H.265 video track"
                                   : "the SDP cannot be read");
        return false;
    }
    p->sdp = cu_xmalloc(m->body_len + 1);
    memcpy(p->sdp, m->body, m->body_len);
    p->sdp[m->body_len] = '\0';
    p->sdp_len = m->body_len;
    for (int i = 0; i < n; i++) {
        pull_track *t = &p->tracks[i];
        memset(t, 0, sizeof(*t));
        t->p = p;
        t->index = i;
        t->d = found[i];
        rtsp_udp_pair_init(&t->udp_ports);
        if (!control_url(p, t->d.control, t->url, sizeof(t->url))) {
            pull_fail(p, "track %d: control URL too long", i);
            return false;
        }
    }
    p->ntracks = n;
    p->setup_next = 0;
    return setup_next_track(p);
}

/* The session id (and its timeout) of a SETUP answer. */
static bool take_session(rtsp_pull *p, const rtsp_parsed *m)
{
    const rtsp_str *s = rtsp_header_get(m, "Session");
    if (!s)
        return p->session[0] != '\0';
    size_t id = 0;
    while (id < s->len && s->p[id] != ';' && s->p[id] != ' ')
        id++;
    if (!id || id >= sizeof(p->session))
        return false;
    char now[SESSION_MAX];
    memcpy(now, s->p, id);
    now[id] = '\0';
    if (p->session[0] && strcmp(now, p->session) != 0)
        return false; /* a second session for one presentation */
    cu_strlcpy(p->session, now, sizeof(p->session));
    p->session_timeout_s = 60;
    for (size_t k = id; k + 8 <= s->len; k++)
        if (rtsp_str_ieq((rtsp_str){s->p + k, 8}, "timeout=")) {
            size_t start = k + 8, end = start;
            while (end < s->len && s->p[end] >= '0' && s->p[end] <= '9')
                end++;
            uint64_t v;
            if (rtsp_str_uint((rtsp_str){s->p + start, end - start}, &v) && v >= 5 && v <= 3600)
                p->session_timeout_s = (int)v;
        }
    return true;
}

static bool on_setup(rtsp_pull *p, const rtsp_parsed *m)
{
    pull_track *t = &p->tracks[p->setup_next];
    bool ok = m->code == 200;
    if (ok && !take_session(p, m)) {
        pull_fail(p, "SETUP answered without a usable Session");
        return false;
    }
    const rtsp_str *tv = rtsp_header_get(m, "Transport");
    char text[512];
    GstRTSPTransport *tr = NULL;
    if (ok && tv && str_copy(text, sizeof(text), *tv) &&
        gst_rtsp_transport_new(&tr) == GST_RTSP_OK &&
        gst_rtsp_transport_parse(text, tr) == GST_RTSP_OK) {
        if (!p->udp && tr->lower_transport == GST_RTSP_LOWER_TRANS_TCP) {
            int lo = tr->interleaved.min >= 0 ? tr->interleaved.min : 2 * t->index;
            int hi = tr->interleaved.max >= 0 ? tr->interleaved.max : lo + 1;
            ok = lo >= 0 && lo <= 255 && hi >= 0 && hi <= 255 && lo != hi;
            t->rtp_channel = (uint8_t)lo;
            t->rtcp_channel = (uint8_t)hi;
        } else if (p->udp && tr->lower_transport == GST_RTSP_LOWER_TRANS_UDP) {
            t->camera_rtp_port = tr->server_port.min > 0 ? tr->server_port.min : 0;
            t->camera_rtcp_port = tr->server_port.max > 0  ? tr->server_port.max
                                  : t->camera_rtp_port > 0 ? t->camera_rtp_port + 1
                                                           : 0;
            ok = rtsp_udp_pair_watch(&t->udp_ports, p->w->base, on_udp, t);
        } else {
            ok = false;
        }
    } else {
        ok = false;
    }
    if (tr)
        gst_rtsp_transport_free(tr);
    if (ok) {
        t->setup = true;
    } else if (t->d.codec != PIPE_CODEC_AUDIO) {
        pull_fail(p, "SETUP of video track %d: %d %.*s", t->index, m->code, (int)m->reason.len,
                  m->reason.p);
        return false;
    } else {
        CU_LOG(CU_LOG_WARN, "rtsp", "pull %s: audio track %d not set up (%d); video only",
               p->serial, t->index, m->code);
        track_close(t);
    }
    p->setup_next++;
    if (p->setup_next < p->ntracks)
        return setup_next_track(p);
    return start_play(p);
}

static void on_play(rtsp_pull *p)
{
    int64_t now = cu_time_us();
    int recorded = 0;
    if (!rtsp_capture_new(p->capture))
        p->capture[0] = '\0'; /* (its tracks then go unlinked) */
    for (int i = 0; i < p->ntracks; i++) {
        pull_track *t = &p->tracks[i];
        if (!t->setup)
            continue;
        char label[128];
        snprintf(label, sizeof(label), "pull %s track %d", p->serial, t->index);
        t->st = ingest_stream_new(p->w, p->device_id, p->serial, label);
        t->src = (rtsp_meta_source){.source = "rtsp-pull",
                                    .device_id = p->device_id,
                                    .serial = p->serial,
                                    .url = p->url,
                                    .udp = p->udp,
                                    .tls = p->tls,
                                    .peer = p->peer,
                                    .session = p->session,
                                    .capture = p->capture,
                                    .sdp = p->sdp,
                                    .sdp_len = p->sdp_len};
        recorded++;
    }
    p->state = P_PLAYING;
    p->playing_since_us = p->last_media_us = now;
    int every = p->session_timeout_s / 2 > 5 ? p->session_timeout_s / 2 : 5;
    p->next_keepalive_us = now + (int64_t)every * 1000000;
    p->redirects = 0;
    cu_metric_add(&pull_playing_metric, 1);
    CU_LOG(CU_LOG_INFO, "rtsp", "pull %s from %s: playing %d track(s) over %s (session %s)",
           p->serial, p->url, recorded, p->udp ? "UDP" : "TCP", p->session);
}

/* Follow a redirect of DESCRIBE: connect again to its Location. */
static bool redirect(rtsp_pull *p, const rtsp_parsed *m)
{
    const rtsp_str *loc = rtsp_header_get(m, "Location");
    char url[RTSP_MAX_URI + 1];
    GstRTSPUrl *u = NULL;
    const char *scheme = p->tls ? "rtsps://" : "rtsp://"; /* never from TLS to plain */
    if (!loc || !str_copy(url, sizeof(url), *loc) || strncmp(url, scheme, strlen(scheme)) != 0 ||
        gst_rtsp_url_parse(url, &u) != GST_RTSP_OK || !u->host ||
        strlen(u->host) >= sizeof(p->host) || p->redirects >= REDIRECTS_MAX) {
        gst_rtsp_url_free(u);
        pull_fail(p, "DESCRIBE redirected (%d) to an unusable location", m->code);
        return false;
    }
    /* The credentials follow a redirect: to another host only when allowed. */
    if (strcasecmp(u->host, p->host) != 0 && !cfg_of(p)->rtsp_pull_redirect_any_host) {
        pull_fail(p, "DESCRIBE redirected (%d) to another host, %s (rtsp.pull_redirect_any_host=0)",
                  m->code, u->host);
        gst_rtsp_url_free(u);
        return false;
    }
    cu_strlcpy(p->host, u->host, sizeof(p->host));
    p->port = u->port ? u->port : p->tls ? 322 : 554;
    cu_strlcpy(p->url, url, sizeof(p->url));
    snprintf(p->peer, sizeof(p->peer), "%s:%d", p->host, p->port);
    gst_rtsp_url_free(u);
    p->redirects++;
    CU_LOG(CU_LOG_INFO, "rtsp", "pull %s: redirected to %s", p->serial, p->url);
    pull_disconnect(p, false);
    pull_connect(p);
    return false;
}

/* A response. False: the connection was closed (or replaced) meanwhile. */
static bool on_response(rtsp_pull *p, const rtsp_parsed *m)
{
    const rtsp_str *cs = rtsp_header_get(m, "CSeq");
    uint64_t cseq;
    if (p->state == P_PLAYING) { /* a keep-alive's answer */
        if (m->code == 454) {
            pull_fail(p, "the camera ended the session (454)");
            return false;
        }
        return true;
    }
    if (!cs || !rtsp_str_uint(*cs, &cseq) || cseq != p->pending_cseq)
        return true; /* not the answer we wait for */
    if (m->code == 401) {
        if (!p->user) {
            pull_fail(p, "%s needs credentials and the pull URL has none", p->req_method);
            return false;
        }
        if (p->auth_tries >= AUTH_RETRIES) {
            pull_fail(p, "credentials refused (401)");
            return false;
        }
        if (!take_challenge(p, m)) {
            pull_fail(p, "the camera offers no authentication we accept (Basic only over "
                         "rtsps://, Digest MD5 only with rtsp.allow_md5=1)");
            return false;
        }
        p->auth_tries++;
        return send_request(p);
    }
    switch (p->state) {
    case P_OPTIONS: {
        const rtsp_str *pub = rtsp_header_get(m, "Public");
        p->get_parameter = false;
        for (size_t k = 0; pub && k + 13 <= pub->len; k++)
            if (rtsp_str_ieq((rtsp_str){pub->p + k, 13}, "GET_PARAMETER"))
                p->get_parameter = true;
        /* Some cameras refuse OPTIONS; DESCRIBE decides. */
        return request(p, P_DESCRIBE, "DESCRIBE", p->url, "Accept: application/sdp\r\n");
    }
    case P_DESCRIBE:
        if (m->code >= 300 && m->code < 400)
            return redirect(p, m);
        if (m->code != 200) {
            pull_fail(p, "DESCRIBE: %d %.*s", m->code, (int)m->reason.len, m->reason.p);
            return false;
        }
        return on_describe(p, m);
    case P_SETUP: return on_setup(p, m);
    case P_PLAY:
        if (m->code != 200) {
            pull_fail(p, "PLAY: %d %.*s", m->code, (int)m->reason.len, m->reason.p);
            return false;
        }
        on_play(p);
        return true;
    default: return true;
    }
}

/* A request from the camera (some send OPTIONS or GET_PARAMETER as keep-alives). */
static void on_camera_request(rtsp_pull *p, const rtsp_parsed *m)
{
    const rtsp_str *cs = rtsp_header_get(m, "CSeq");
    char cseq[16] = "0";
    if (cs && cs->len < sizeof(cseq))
        str_copy(cseq, sizeof(cseq), *cs);
    bool ok = rtsp_str_ieq(m->method, "OPTIONS") || rtsp_str_ieq(m->method, "GET_PARAMETER") ||
              rtsp_str_ieq(m->method, "SET_PARAMETER");
    evbuffer_add_printf(bufferevent_get_output(p->bev), "RTSP/1.0 %s\r\nCSeq: %s\r\n\r\n",
                        ok ? "200 OK" : "501 Not Implemented", cseq);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    rtsp_pull *p = arg;
    const cu_config *cfg = cfg_of(p);
    struct evbuffer *in = bufferevent_get_input(bev);
    rtsp_limits lim = {.max_header_bytes = (size_t)cfg->rtsp_max_header_bytes,
                       .max_body_bytes = RTSP_SDP_MAX};
    int64_t now_us = cu_time_us();
    for (;;) {
        uint8_t channel;
        const uint8_t *frame;
        size_t flen;
        rtsp_in_kind kind = rtsp_in_peek(in, &channel, &frame, &flen);
        if (kind == RTSP_IN_EMPTY || kind == RTSP_IN_FRAME_PARTIAL)
            return;
        if (kind == RTSP_IN_FRAME) {
            if (!on_frame(p, channel, frame, flen, now_us))
                return;
            evbuffer_drain(in, 4 + flen);
            continue;
        }
        size_t len = evbuffer_get_length(in);
        size_t cap = lim.max_header_bytes + lim.max_body_bytes;
        size_t n = len < cap ? len : cap;
        const uint8_t *buf = evbuffer_pullup(in, (ev_ssize_t)n);
        static __thread rtsp_parsed m;
        rtsp_kind k = rtsp_parse(buf, n, &lim, &m);
        if (k == RTSP_NEED_MORE)
            return;
        if (k == RTSP_BAD) {
            pull_fail(p, "the camera sent a malformed message: %s", m.why);
            return;
        }
        if (k == RTSP_RESPONSE) {
            if (!on_response(p, &m))
                return;
        } else if (k == RTSP_REQUEST) {
            on_camera_request(p, &m);
        }
        evbuffer_drain(in, m.consumed);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    rtsp_pull *p = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        evutil_socket_t fd = bufferevent_getfd(p->bev);
        socklen_t cl = sizeof(p->camera);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (getpeername(fd, (struct sockaddr *)&p->camera, &cl) != 0)
            memset(&p->camera, 0, sizeof(p->camera)); /* matches no datagram */
        request(p, P_OPTIONS, "OPTIONS", p->url, NULL);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        pull_fail(p, "the camera closed the connection");
    } else if (what & BEV_EVENT_ERROR) {
        int dns = bufferevent_socket_get_dns_error(p->bev);
        unsigned long tls_error = p->tls ? bufferevent_get_openssl_error(p->bev) : 0;
        char tls_why[200];
        if (dns) {
            pull_fail(p, "cannot resolve %s: %s", p->host, evutil_gai_strerror(dns));
        } else if (tls_error) {
            ERR_error_string_n(tls_error, tls_why, sizeof(tls_why));
            pull_fail(p, "TLS: %s", tls_why);
        } else
            pull_fail(p, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
}

/* ----------------------------------------------------------- lifecycle */

/*
 * A TLS session for @p p: TLS 1.2 or later, the camera's certificate checked
 * against rtsp.pull_ca_file (or the system's trust store) and the URL's host
 * name or address.
 */
static SSL *tls_session(rtsp_pull *p, char *why, size_t cap)
{
    struct rtsp_pulls *ps = p->w->pulls;
    const char *ca = cfg_of(p)->rtsp_pull_ca_file;
    if (!ps->tls) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
            (ca[0] ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
                   : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
            unsigned long e = ERR_get_error();
            snprintf(why, cap, "cannot load the trusted certificates %s: %s",
                     ca[0] ? ca : "(system)", e ? ERR_reason_error_string(e) : "no memory");
            SSL_CTX_free(ctx);
            ERR_clear_error();
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        ps->tls = ctx;
    }
    SSL *ssl = SSL_new(ps->tls);
    if (!ssl) {
        snprintf(why, cap, "no memory");
        return NULL;
    }
    unsigned char addr[16];
    bool numeric =
        inet_pton(AF_INET, p->host, addr) == 1 || inet_pton(AF_INET6, p->host, addr) == 1;
    bool ok = numeric
                  ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), p->host) == 1
                  : SSL_set_tlsext_host_name(ssl, p->host) == 1 && SSL_set1_host(ssl, p->host) == 1;
    if (!ok) {
        snprintf(why, cap, "cannot check the certificate against %s", p->host);
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

static void pull_connect(rtsp_pull *p)
{
    cu_metric_inc(&pull_attempts_metric);
    p->state = P_CONNECTING;
    p->deadline_us = cu_time_us() + cfg_of(p)->rtsp_request_timeout_s * 1000000;
    if (p->tls) {
        char why[200];
        SSL *ssl = tls_session(p, why, sizeof(why));
        if (!ssl) {
            pull_fail(p, "TLS: %s", why);
            return;
        }
        p->bev = bufferevent_openssl_socket_new(p->w->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (!p->bev)
            SSL_free(ssl);
    } else {
        p->bev = bufferevent_socket_new(p->w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!p->bev) {
        pull_fail(p, "cannot create a connection");
        return;
    }
    bufferevent_setcb(p->bev, on_read, NULL, on_event, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect_hostname(p->bev, p->w->pulls->dns, AF_UNSPEC, p->host,
                                            p->port) != 0 &&
        p->bev) /* a synchronous failure has already been reported through on_event */
        pull_fail(p, "cannot connect to %s", p->peer);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    rtsp_pull *p = arg;
    (void)fd;
    (void)what;
    const cu_config *cfg = cfg_of(p);
    int64_t now = cu_time_us();
    switch (p->state) {
    case P_WAIT:
        if (now >= p->next_attempt_us)
            pull_connect(p);
        break;
    case P_PLAYING:
        if (now - p->last_media_us > cfg->rtsp_session_timeout_s * 1000000) {
            pull_fail(p, "no media for %lld s", (long long)cfg->rtsp_session_timeout_s);
        } else if (now >= p->next_keepalive_us) {
            keepalive(p);
            int every = p->session_timeout_s / 2 > 5 ? p->session_timeout_s / 2 : 5;
            p->next_keepalive_us = now + (int64_t)every * 1000000;
        }
        break;
    default:
        if (now > p->deadline_us)
            pull_fail(p, "no answer within %lld s", (long long)cfg->rtsp_request_timeout_s);
        break;
    }
}

static void pull_free(rtsp_pull *p)
{
    pull_disconnect(p, true);
    if (p->timer)
        event_free(p->timer);
    if (p->password) {
        OPENSSL_cleanse(p->password, strlen(p->password));
        g_free(p->password);
    }
    g_free(p->user);
    OPENSSL_cleanse(p->configured, sizeof(p->configured));
    free(p);
}

/* A pull of device @p d, or NULL (logged) when its URL cannot be used. */
static rtsp_pull *pull_new(ingest_worker *w, const ctl_device *d)
{
    bool tls = strncmp(d->pull_url, "rtsps://", 8) == 0;
    if (!tls && strncmp(d->pull_url, "rtsp://", 7) != 0) {
        CU_LOG(CU_LOG_ERROR, "rtsp", "pull %s: only rtsp:// and rtsps:// URLs can be pulled",
               d->serial);
        return NULL;
    }
    GstRTSPUrl *u = NULL;
    if (gst_rtsp_url_parse(d->pull_url, &u) != GST_RTSP_OK || !u || !u->host || !u->host[0] ||
        strlen(u->host) >= sizeof(((rtsp_pull *)0)->host)) {
        gst_rtsp_url_free(u);
        CU_LOG(CU_LOG_ERROR, "rtsp", "pull %s: the pull URL cannot be read", d->serial);
        return NULL;
    }
    rtsp_pull *p = cu_xcalloc(1, sizeof(*p));
    p->w = w;
    p->device_id = d->id;
    cu_strlcpy(p->serial, d->serial, sizeof(p->serial));
    cu_strlcpy(p->configured, d->pull_url, sizeof(p->configured));
    p->udp = d->pull_udp;
    p->tls = tls;
    cu_strlcpy(p->host, u->host, sizeof(p->host));
    p->port = u->port ? u->port : tls ? 322 : 554;
    snprintf(p->peer, sizeof(p->peer), "%s:%d", p->host, p->port);
    bool credentials_ok = true;
    if (u->user) {
        p->user = g_uri_unescape_string(u->user, NULL);
        p->password = g_uri_unescape_string(u->passwd ? u->passwd : "", NULL);
        credentials_ok = p->user && p->password;
    }
    /* What requests name: the URL without its credentials. */
    bool v6 = strchr(p->host, ':') != NULL;
    int n = snprintf(p->url, sizeof(p->url), "%s://%s%s%s:%d%s%s%s", tls ? "rtsps" : "rtsp",
                     v6 ? "[" : "", p->host, v6 ? "]" : "", p->port,
                     u->abspath && u->abspath[0] ? u->abspath : "/", u->query ? "?" : "",
                     u->query ? u->query : "");
    bool fits = n > 0 && (size_t)n < sizeof(p->url);
    if (u->passwd)
        OPENSSL_cleanse(u->passwd, strlen(u->passwd));
    gst_rtsp_url_free(u);
    if (!fits || !credentials_ok) {
        CU_LOG(CU_LOG_ERROR, "rtsp", "pull %s: the pull URL cannot be used (%s)", d->serial,
               fits ? "bad %-escapes in its credentials" : "too long");
        pull_free(p);
        return NULL;
    }
    p->backoff_s = 1;
    p->timer = event_new(w->base, -1, EV_PERSIST, on_timer, p);
    struct timeval tv = {0, TIMER_MS * 1000};
    if (!p->timer || event_add(p->timer, &tv) != 0) {
        pull_free(p);
        return NULL;
    }
    return p;
}

static struct rtsp_pulls *pulls_of(ingest_worker *w)
{
    if (!w->pulls) {
        w->pulls = cu_xcalloc(1, sizeof(*w->pulls));
        w->pulls->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (!w->pulls->dns) { /* no resolv.conf: numeric addresses still work */
            CU_LOG(CU_LOG_WARN, "rtsp", "no DNS resolver configured: pull URLs need addresses");
            w->pulls->dns = evdns_base_new(w->base, 0);
        }
    }
    return w->pulls;
}

void rtsp_pull_device(ingest_worker *w, const ctl_device *d)
{
    bool want = d->active && d->pull_url[0] && !w->stopping;
    if (!want && !w->pulls)
        return;
    struct rtsp_pulls *ps = pulls_of(w);
    rtsp_pull **link = &ps->list;
    while (*link && (*link)->device_id != d->id)
        link = &(*link)->next;
    rtsp_pull *p = *link;
    if (p && want && strcmp(p->configured, d->pull_url) == 0 && p->udp == d->pull_udp)
        return; /* unchanged */
    if (p) {
        CU_LOG(CU_LOG_INFO, "rtsp", "pull %s from %s: stopped (%s)", p->serial, p->url,
               !d->active        ? "device revoked"
               : !d->pull_url[0] ? "no pull URL"
                                 : "URL changed");
        *link = p->next;
        pull_free(p);
    }
    if (!want)
        return;
    p = pull_new(w, d);
    if (!p)
        return;
    p->next = ps->list;
    ps->list = p;
    CU_LOG(CU_LOG_INFO, "rtsp", "pull %s from %s over %s", p->serial, p->url,
           p->udp ? "UDP" : "TCP");
    pull_connect(p);
}

void rtsp_pull_close_all(ingest_worker *w)
{
    if (!w->pulls)
        return;
    while (w->pulls->list) {
        rtsp_pull *p = w->pulls->list;
        w->pulls->list = p->next;
        pull_free(p);
    }
}

void rtsp_pull_free(ingest_worker *w)
{
    if (!w->pulls)
        return;
    rtsp_pull_close_all(w);
    if (w->pulls->dns)
        evdns_base_free(w->pulls->dns, 0);
    SSL_CTX_free(w->pulls->tls);
    free(w->pulls);
    w->pulls = NULL;
}
