/*
 * The RTSP server recorders publish to (docs/rtsp.md): ANNOUNCE with an SDP,
 * SETUP of each track (RTP interleaved in the TCP connection, or UDP),
 * RECORD, keep-alives, TEARDOWN. Each worker listens on the RTSP and RTSPS
 * ports with SO_REUSEPORT; a connection and its session then live on that
 * worker. A session belongs to its connection: it ends when the connection
 * does. Each track's media goes to its own ingest_stream (and recording).
 *
 * Shared between workers, under rtsp_service.lock: the device directory
 * (serial -> id, state, RTSP password), connections per client address,
 * sessions per device, UDP ports in use. Only requests take the lock.
 */
#include "rtsp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <gst/rtsp/gstrtsptransport.h>
#include <gst/rtsp/gstrtspurl.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DIR_BUCKETS  1024
#define ADDR_BUCKETS 1024
#define LIVE_PREFIX  "/live/"
#define TIMER_MS     500
#define FRAME_MAX    65535

/* --------------------------------------------------------------- metrics */

CU_METRIC_DEFINE(conns_metric, CU_METRIC_GAUGE, "custos_rtsp_connections", "",
                 "RTSP and RTSPS connections open.")
CU_METRIC_DEFINE(requests_metric, CU_METRIC_COUNTER, "custos_rtsp_requests_total", "",
                 "RTSP requests answered.")
CU_METRIC_DEFINE(frames_metric, CU_METRIC_COUNTER, "custos_rtsp_packets_total", "",
                 "RTP and RTCP packets received over RTSP (interleaved or UDP).")

typedef enum {
    REFUSE_UNAUTHORIZED,
    REFUSE_REVOKED,
    REFUSE_NOT_FOUND,
    REFUSE_BAD_REQUEST,
    REFUSE_TOO_LARGE,
    REFUSE_STATE,
    REFUSE_SESSION,
    REFUSE_TRANSPORT,
    REFUSE_LIMIT_ADDRESS,
    REFUSE_LIMIT_TOTAL,
    REFUSE_LIMIT_DEVICE,
    REFUSE_SLOW,
    REFUSE_SESSION_TIMEOUT,
    REFUSE_BAD_FRAME,
    REFUSE_MEDIA,
    REFUSE_OUTPUT,
    REFUSE_REASONS
} refuse_reason;

#define REFUSED(var, reason)                                                                       \
    CU_METRIC_DEFINE(var, CU_METRIC_COUNTER, "custos_rtsp_refused_total", "reason=\"" reason "\"", \
                     "RTSP requests, connections and frames refused, by reason.")
REFUSED(ref_unauthorized, "unauthorized")
REFUSED(ref_revoked, "revoked")
REFUSED(ref_not_found, "not_found")
REFUSED(ref_bad_request, "bad_request")
REFUSED(ref_too_large, "too_large")
REFUSED(ref_state, "wrong_state")
REFUSED(ref_session, "no_session")
REFUSED(ref_transport, "transport")
REFUSED(ref_limit_address, "limit_address")
REFUSED(ref_limit_total, "limit_total")
REFUSED(ref_limit_device, "limit_device")
REFUSED(ref_slow, "slow_request")
REFUSED(ref_session_timeout, "session_timeout")
REFUSED(ref_bad_frame, "bad_frame")
REFUSED(ref_media, "media")
REFUSED(ref_output, "output_not_read")
static cu_metric *const refuse_metrics[REFUSE_REASONS] = {
    &ref_unauthorized,    &ref_revoked,     &ref_not_found,    &ref_bad_request,
    &ref_too_large,       &ref_state,       &ref_session,      &ref_transport,
    &ref_limit_address,   &ref_limit_total, &ref_limit_device, &ref_slow,
    &ref_session_timeout, &ref_bad_frame,   &ref_media,        &ref_output,
};

static void refused(refuse_reason r)
{
    cu_metric_inc(refuse_metrics[r]);
}

/* ------------------------------------------------------ shared directory */

typedef struct dir_entry {
    char serial[65];
    int64_t id;
    bool active;
    char password[CTL_RTSP_PASSWORD_LEN + 1];
    int sessions; /* RTSP sessions it holds now */
    struct dir_entry *next;
} dir_entry;

typedef struct addr_entry {
    uint8_t addr[16];
    int family;
    int conns;
    struct addr_entry *next;
} addr_entry;

struct rtsp_service {
    const cu_config *cfg;
    rtsp_nonces nonces;
    SSL_CTX *ssl;
    pthread_mutex_t lock; /* guards what follows */
    dir_entry *dir[DIR_BUCKETS];
    addr_entry *addrs[ADDR_BUCKETS];
    int conns;
    uint8_t *udp_pairs; /* in use, per port pair in [udp_port_min, udp_port_max] */
    int udp_npairs, udp_next;
};

static uint32_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

/* Under lock. */
static dir_entry *dir_find(rtsp_service *r, const char *serial)
{
    dir_entry *e = r->dir[hash_bytes(serial, strlen(serial)) % DIR_BUCKETS];
    while (e && strcmp(e->serial, serial) != 0)
        e = e->next;
    return e;
}

void rtsp_service_device(rtsp_service *r, const ctl_device *d)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    dir_entry *e = dir_find(r, d->serial);
    if (!e) {
        e = cu_xcalloc(1, sizeof(*e));
        cu_strlcpy(e->serial, d->serial, sizeof(e->serial));
        uint32_t b = hash_bytes(d->serial, strlen(d->serial)) % DIR_BUCKETS;
        e->next = r->dir[b];
        r->dir[b] = e;
    }
    e->id = d->id;
    e->active = d->active;
    OPENSSL_cleanse(e->password, sizeof(e->password));
    if (d->active)
        cu_strlcpy(e->password, d->rtsp_password, sizeof(e->password));
    pthread_mutex_unlock(&r->lock);
}

static void addr_key(const struct sockaddr *sa, uint8_t out[16], int *family)
{
    memset(out, 0, 16);
    *family = sa->sa_family;
    if (sa->sa_family == AF_INET)
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (sa->sa_family == AF_INET6)
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

/* Count a new connection from @p sa: false (and nothing counted) over a limit. */
static bool conn_admit(rtsp_service *r, const struct sockaddr *sa, refuse_reason *why)
{
    uint8_t key[16];
    int family;
    addr_key(sa, key, &family);
    uint32_t b = hash_bytes(key, 16) % ADDR_BUCKETS;
    bool ok = false;
    pthread_mutex_lock(&r->lock);
    addr_entry *e = r->addrs[b];
    while (e && (e->family != family || memcmp(e->addr, key, 16) != 0))
        e = e->next;
    if (r->conns >= r->cfg->rtsp_max_connections) {
        *why = REFUSE_LIMIT_TOTAL;
    } else if (e && e->conns >= r->cfg->rtsp_max_connections_per_address) {
        *why = REFUSE_LIMIT_ADDRESS;
    } else {
        if (!e) {
            e = cu_xcalloc(1, sizeof(*e));
            memcpy(e->addr, key, 16);
            e->family = family;
            e->next = r->addrs[b];
            r->addrs[b] = e;
        }
        e->conns++;
        r->conns++;
        ok = true;
    }
    pthread_mutex_unlock(&r->lock);
    return ok;
}

static void conn_leave(rtsp_service *r, const struct sockaddr *sa)
{
    uint8_t key[16];
    int family;
    addr_key(sa, key, &family);
    uint32_t b = hash_bytes(key, 16) % ADDR_BUCKETS;
    pthread_mutex_lock(&r->lock);
    addr_entry **link = &r->addrs[b];
    while (*link && ((*link)->family != family || memcmp((*link)->addr, key, 16) != 0))
        link = &(*link)->next;
    if (*link && --(*link)->conns == 0) {
        addr_entry *gone = *link;
        *link = gone->next;
        free(gone);
    }
    r->conns--;
    pthread_mutex_unlock(&r->lock);
}

/* A free UDP port pair (even RTP port), or 0. */
static int udp_pair_take(rtsp_service *r)
{
    int port = 0;
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < r->udp_npairs; i++) {
        int k = (r->udp_next + i) % r->udp_npairs;
        if (!r->udp_pairs[k]) {
            r->udp_pairs[k] = 1;
            r->udp_next = k + 1;
            port = (int)((r->cfg->rtsp_udp_port_min + 1) & ~1) + 2 * k;
            break;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return port;
}

static void udp_pair_put(rtsp_service *r, int port)
{
    int k = (port - (int)((r->cfg->rtsp_udp_port_min + 1) & ~1)) / 2;
    pthread_mutex_lock(&r->lock);
    if (k >= 0 && k < r->udp_npairs)
        r->udp_pairs[k] = 0;
    pthread_mutex_unlock(&r->lock);
}

static bool bind_udp(const cu_config *cfg, int port, int *fd_out)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    if (strchr(cfg->rtsp_bind, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, cfg->rtsp_bind, &a->sin6_addr);
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, cfg->rtsp_bind, &a->sin_addr);
        sl = sizeof(*a);
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    *fd_out = fd;
    return true;
}

void rtsp_udp_pair_init(rtsp_udp_pair *u)
{
    *u = (rtsp_udp_pair){.rtp_fd = -1, .rtcp_fd = -1};
}

bool rtsp_udp_pair_open(rtsp_service *r, rtsp_udp_pair *u)
{
    int port = 0;
    rtsp_udp_pair_init(u);
    /* A pair another program holds is skipped (and left marked). */
    for (int attempt = 0; attempt < 16 && u->rtcp_fd < 0; attempt++) {
        if (u->rtp_fd >= 0)
            close(u->rtp_fd);
        u->rtp_fd = -1;
        port = udp_pair_take(r);
        if (!port)
            break;
        if (bind_udp(r->cfg, port, &u->rtp_fd))
            bind_udp(r->cfg, port + 1, &u->rtcp_fd);
    }
    if (port && u->rtcp_fd >= 0) {
        u->port = port;
        return true;
    }
    if (u->rtp_fd >= 0)
        close(u->rtp_fd);
    u->rtp_fd = -1;
    if (port)
        udp_pair_put(r, port);
    return false;
}

bool rtsp_udp_pair_watch(rtsp_udp_pair *u, struct event_base *base, event_callback_fn cb, void *arg)
{
    u->rtp_ev = event_new(base, u->rtp_fd, EV_READ | EV_PERSIST, cb, arg);
    u->rtcp_ev = event_new(base, u->rtcp_fd, EV_READ | EV_PERSIST, cb, arg);
    return u->rtp_ev && u->rtcp_ev && event_add(u->rtp_ev, NULL) == 0 &&
           event_add(u->rtcp_ev, NULL) == 0;
}

void rtsp_udp_pair_close(rtsp_service *r, rtsp_udp_pair *u)
{
    if (u->rtp_ev)
        event_free(u->rtp_ev);
    if (u->rtcp_ev)
        event_free(u->rtcp_ev);
    if (u->rtp_fd >= 0)
        close(u->rtp_fd);
    if (u->rtcp_fd >= 0)
        close(u->rtcp_fd);
    if (u->port)
        udp_pair_put(r, u->port);
    rtsp_udp_pair_init(u);
}

static int addr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return -1;
}

ssize_t rtsp_udp_recv(int fd, const struct sockaddr_storage *host, int port, uint8_t *buf,
                      bool *usable)
{
    struct sockaddr_storage from;
    socklen_t fl = sizeof(from);
    ssize_t n = recvfrom(fd, buf, PIPE_RTP_MAX + 1, MSG_DONTWAIT | MSG_TRUNC,
                         (struct sockaddr *)&from, &fl);
    if (n < 0)
        return -1;
    uint8_t a[16], b[16];
    int fa, fb;
    addr_key((struct sockaddr *)&from, a, &fa);
    addr_key((const struct sockaddr *)host, b, &fb);
    *usable = fa == fb && memcmp(a, b, 16) == 0 &&
              (port == 0 || addr_port((struct sockaddr *)&from) == port) && n >= 8 &&
              (size_t)n <= PIPE_RTP_MAX;
    return n;
}

/* ------------------------------------------------------------ connections */

typedef enum { ST_INIT, ST_ANNOUNCED, ST_READY, ST_RECORDING } conn_state;

typedef struct rtsp_conn rtsp_conn;
typedef struct rtsp_worker rtsp_worker;

typedef struct {
    rtsp_conn *conn;
    int index;
    rtsp_sdp_track d; /* its control is relative, or an absolute URL's path */
    bool setup;
    uint8_t rtp_channel, rtcp_channel; /* interleaved */
    rtsp_udp_pair udp_ports;           /* over UDP (port != 0): ours, where the publisher sends */
    struct sockaddr_storage client;    /* UDP: datagrams accepted only from its address */
    int client_rtp_port, client_rtcp_port; /* and from the ports it declared in SETUP */
    ingest_stream *st;
    rtsp_meta_source src; /* where its recordings come from, set with the stream */
} rtsp_track;

struct rtsp_conn {
    struct rtsp_worker *rw;
    struct bufferevent *bev;
    struct sockaddr_storage peer;
    char peer_text[64];
    bool tls;
    bool closing;
    int64_t linger_until_us; /* closed for writing: its input dropped until EOF or then */
    int64_t opened_us, last_us;
    int64_t partial_since_us; /* an incomplete request or frame waits since */
    size_t scanned;           /* bytes of it looked at for a line end */
    /* the presentation announced */
    conn_state state;
    int64_t device_id;
    char serial[65];
    char path[256]; /* "/live/<serial>" */
    char *sdp;
    size_t sdp_len;
    rtsp_track tracks[RTSP_TRACKS_MAX];
    int ntracks;
    char session[17]; /* "" until the first SETUP */
    char capture[37]; /* the session's capture id, made with it */
    bool holds_device_slot;
    uint8_t auth_salt[RTSP_CONN_SALT_LEN]; /* binds our nonces to this connection */
    rtsp_nc_seen auth_seen;
    rtsp_conn *prev, *next;
};

struct rtsp_worker {
    ingest_worker *w;
    rtsp_service *r;
    struct evconnlistener *plain, *tls;
    struct event *timer;
    rtsp_conn *conns;
};

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Request Entity Too Large";
    case 415: return "Unsupported Media Type";
    case 453: return "Not Enough Bandwidth";
    case 454: return "Session Not Found";
    case 455: return "Method Not Valid in This State";
    case 459: return "Aggregate Operation Not Allowed";
    case 460: return "Only Aggregate Operation Allowed";
    case 461: return "Unsupported Transport";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "RTSP Version Not Supported";
    default: return "Error";
    }
}

/* ------------------------------------------------------------- replies */

/* Answer @p code; @p extra is further header lines, each ending in CRLF. */
static void reply(rtsp_conn *c, int code, const char *cseq, const char *extra, const char *body,
                  size_t body_len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "RTSP/1.0 %d %s\r\n", code, reason_phrase(code));
    if (cseq)
        evbuffer_add_printf(out, "CSeq: %s\r\n", cseq);
    evbuffer_add_printf(out, "Server: Custos\r\n");
    if (c->session[0] && code < 300)
        evbuffer_add_printf(out, "Session: %s;timeout=%lld\r\n", c->session,
                            (long long)c->rw->r->cfg->rtsp_session_timeout_s);
    if (extra)
        evbuffer_add(out, extra, strlen(extra));
    if (body_len)
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", body_len);
    evbuffer_add(out, "\r\n", 2);
    if (body_len)
        evbuffer_add(out, body, body_len);
    cu_metric_inc(&requests_metric);
}

static void conn_free(rtsp_conn *c);

#define LINGER_US 2000000

/*
 * The answers are written: end the connection without losing them. Closing
 * a socket whose peer's bytes are still unread sends a reset, which can
 * destroy the last answer before the client reads it; so a plain
 * connection is shut for writing and its input read and dropped until the
 * client closes (or LINGER_US passes), as a lingering close. TLS ends at
 * once (its close_notify is the end).
 */
static void finish_close(rtsp_conn *c)
{
    if (c->tls) {
        conn_free(c);
        return;
    }
    if (c->linger_until_us)
        return;
    c->linger_until_us = cu_time_us() + LINGER_US;
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    bufferevent_enable(c->bev, EV_READ);
}

/* Close once what was answered has been written. */
static void close_after_reply(rtsp_conn *c)
{
    c->closing = true;
    if (c->tls)
        bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        finish_close(c);
}

/* -------------------------------------------------------------- tracks */

static void track_stop(rtsp_track *t)
{
    if (t->st) {
        ingest_stream_release(t->st);
        t->st = NULL;
    }
    rtsp_udp_pair_close(t->conn->rw->r, &t->udp_ports);
    t->setup = false;
}

/* End the session: every track's recording sealed with its tail. */
static void session_end(rtsp_conn *c)
{
    for (int i = 0; i < c->ntracks; i++)
        track_stop(&c->tracks[i]);
    if (c->holds_device_slot) {
        rtsp_service *r = c->rw->r;
        pthread_mutex_lock(&r->lock);
        dir_entry *e = dir_find(r, c->serial);
        if (e && e->sessions > 0)
            e->sessions--;
        pthread_mutex_unlock(&r->lock);
        c->holds_device_slot = false;
    }
    c->session[0] = '\0';
    c->ntracks = 0;
    free(c->sdp);
    c->sdp = NULL;
    c->sdp_len = 0;
    c->state = ST_INIT;
}

static void conn_free(rtsp_conn *c)
{
    rtsp_worker *rw = c->rw;
    session_end(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        rw->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    conn_leave(rw->r, (struct sockaddr *)&c->peer);
    bufferevent_free(c->bev);
    cu_metric_add(&conns_metric, -1);
    free(c);
}

CU_METRIC_DEFINE(revoked_cut_metric, CU_METRIC_COUNTER, "custos_rtsp_revoked_disconnects_total", "",
                 "RTSP connections closed because their device was revoked.")

void rtsp_worker_device_revoked(ingest_worker *w, int64_t device_id, const char *serial)
{
    rtsp_worker *rw = w->rtsp;
    if (!rw)
        return;
    for (rtsp_conn *c = rw->conns, *next; c; c = next) {
        next = c->next;
        if (c->device_id != device_id)
            continue;
        CU_LOG(CU_LOG_WARN, "rtsp", "%s: device %s revoked: connection closed", c->peer_text,
               serial);
        cu_metric_inc(&revoked_cut_metric);
        conn_free(c); /* its streams end: the tail is stored, the recording sealed */
    }
}

/* One RTP or RTCP packet for track @p t (interleaved or UDP), received at @p now_us. */
static void track_packet(rtsp_conn *c, rtsp_track *t, bool rtcp, const uint8_t *p, size_t len,
                         int64_t now_us)
{
    cu_metric_inc(&frames_metric);
    c->last_us = now_us;
    if (!t->st || c->state != ST_RECORDING)
        return;
    if (!rtsp_track_push(t->st, &t->src, t->index, &t->d, rtcp, p, len, now_us))
        refused(REFUSE_MEDIA);
}

/* An interleaved frame. False: a bad frame, the connection must close. */
static bool on_frame(rtsp_conn *c, uint8_t channel, const uint8_t *p, size_t len, int64_t now_us)
{
    for (int i = 0; i < c->ntracks; i++) {
        rtsp_track *t = &c->tracks[i];
        if (!t->setup || t->udp_ports.port ||
            (channel != t->rtp_channel && channel != t->rtcp_channel))
            continue;
        bool rtcp = channel == t->rtcp_channel;
        if (len < (rtcp ? 8u : 12u) || (!rtcp && len > PIPE_RTP_MAX)) {
            refused(REFUSE_BAD_FRAME);
            CU_LOG(CU_LOG_WARN, "rtsp", "%s: interleaved frame of %zu bytes on channel %u; closing",
                   c->peer_text, len, channel);
            return false;
        }
        track_packet(c, t, rtcp, p, len, now_us);
        return true;
    }
    refused(REFUSE_MEDIA); /* a channel nothing was set up on: ignored */
    return true;
}

static void on_udp(evutil_socket_t fd, short what, void *arg)
{
    rtsp_track *t = arg;
    rtsp_conn *c = t->conn;
    (void)what;
    uint8_t buf[PIPE_RTP_MAX + 1];
    bool usable;
    ssize_t n;
    int64_t now_us = cu_time_us();
    bool rtcp = fd == t->udp_ports.rtcp_fd;
    int from_port = rtcp ? t->client_rtcp_port : t->client_rtp_port;
    for (int i = 0; i < 64 && (n = rtsp_udp_recv(fd, &t->client, from_port, buf, &usable)) >= 0;
         i++) {
        if (usable)
            track_packet(c, t, rtcp, buf, (size_t)n, now_us);
        else
            refused(REFUSE_MEDIA); /* from another address or port, or not an RTP size */
    }
}

/* ------------------------------------------------------------ requests */

typedef struct {
    const rtsp_parsed *m;
    char cseq[16];
    char method[RTSP_MAX_METHOD + 1];
    char uri[RTSP_MAX_URI + 1];
    char abspath[RTSP_MAX_URI + 1]; /* of the URI; "" for "*" */
    char serial[65];                /* from /live/<serial>[/...]; "" when not such a path */
    const char *rest;               /* what follows /live/<serial>, in abspath */
} request;

/* "/live/<serial>[/rest]" */
static bool parse_live_path(request *q)
{
    if (strncmp(q->abspath, LIVE_PREFIX, strlen(LIVE_PREFIX)) != 0)
        return false;
    const char *s = q->abspath + strlen(LIVE_PREFIX);
    size_t n = strcspn(s, "/");
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    memcpy(q->serial, s, n);
    q->serial[n] = '\0';
    q->rest = s + n;
    return true;
}

static bool session_matches(const rtsp_conn *c, const rtsp_parsed *m, bool *present)
{
    const rtsp_str *h = rtsp_header_get(m, "Session");
    *present = h != NULL;
    if (!h)
        return true;
    size_t n = 0;
    while (n < h->len && h->p[n] != ';' && h->p[n] != ' ')
        n++;
    return c->session[0] && n == strlen(c->session) && memcmp(h->p, c->session, n) == 0;
}

/*
 * Authenticate a request for device q->serial. Answers (401, 403) and
 * returns false when it may not go on. A connection that authenticated once
 * for a device is trusted for it from then on.
 */
static bool authorize(rtsp_conn *c, request *q)
{
    rtsp_service *r = c->rw->r;
    if (c->device_id && strcmp(c->serial, q->serial) == 0)
        return true;
    char password[CTL_RTSP_PASSWORD_LEN + 1] = "";
    int64_t id = 0;
    bool known = false, active = false;
    pthread_mutex_lock(&r->lock);
    dir_entry *e = dir_find(r, q->serial);
    if (e) {
        known = true;
        active = e->active;
        id = e->id;
        cu_strlcpy(password, e->password, sizeof(password));
    }
    pthread_mutex_unlock(&r->lock);
    if (known && !active) {
        refused(REFUSE_REVOKED);
        ingest_alert_note(c->rw->w->svc, INGEST_ALERT_REVOKED, q->serial, c->peer_text, 1);
        reply(c, 403, q->cseq, NULL, NULL, 0);
        return false;
    }
    const rtsp_str *h = rtsp_header_get(q->m, "Authorization");
    rtsp_auth_result res = RTSP_AUTH_MISSING;
    rtsp_digest d;
    int64_t now_s = cu_time_ms() / 1000;
    rtsp_auth_binding bind = {.peer = (struct sockaddr *)&c->peer,
                              .salt = c->auth_salt,
                              .allow_md5 = r->cfg->rtsp_allow_md5 != 0,
                              .seen = &c->auth_seen};
    if (h) {
        if (!rtsp_digest_parse(*h, &d))
            res = RTSP_AUTH_MALFORMED;
        else if (!known || !rtsp_str_ieq(d.username, q->serial) || !password[0])
            res = RTSP_AUTH_BAD;
        else
            res = rtsp_auth_check(&r->nonces, &bind, now_s, &d, q->m->method, q->m->uri, password);
    }
    OPENSSL_cleanse(password, sizeof(password));
    if (res == RTSP_AUTH_OK) {
        c->device_id = id;
        cu_strlcpy(c->serial, q->serial, sizeof(c->serial));
        return true;
    }
    if (res == RTSP_AUTH_BAD || res == RTSP_AUTH_MALFORMED) {
        refused(REFUSE_UNAUTHORIZED);
        ingest_alert_note(c->rw->w->svc, INGEST_ALERT_RTSP_AUTH, q->serial, c->peer_text, 1);
        CU_LOG(CU_LOG_INFO, "rtsp", "%s: authentication failed for %s", c->peer_text, q->serial);
    }
    char challenge[512];
    if (!rtsp_auth_challenge(&r->nonces, &bind, now_s, res == RTSP_AUTH_STALE, challenge,
                             sizeof(challenge)))
        challenge[0] = '\0';
    reply(c, 401, q->cseq, challenge, NULL, 0);
    return false;
}

static const char ALLOW[] =
    "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/* The tracks of an announced SDP. Returns an HTTP-like status: 200 or why not. */
static int announce_tracks(rtsp_conn *c, const uint8_t *body, size_t len)
{
    rtsp_sdp_track found[RTSP_TRACKS_MAX];
    int n = 0;
    int status = rtsp_sdp_tracks(body, len, found, RTSP_TRACKS_MAX, &n);
    c->ntracks = 0;
    if (status != 200)
        return status;
    for (int i = 0; i < n; i++) {
        rtsp_track *t = &c->tracks[i];
        memset(t, 0, sizeof(*t));
        t->conn = c;
        t->index = i;
        rtsp_udp_pair_init(&t->udp_ports);
        t->d = found[i];
        if (strncmp(t->d.control, "rtsp://", 7) == 0 ||
            strncmp(t->d.control, "rtsps://", 8) == 0) { /* absolute: keep its path */
            GstRTSPUrl *u = NULL;
            if (gst_rtsp_url_parse(found[i].control, &u) == GST_RTSP_OK && u->abspath)
                cu_strlcpy(t->d.control, u->abspath, sizeof(t->d.control));
            gst_rtsp_url_free(u);
        }
    }
    c->ntracks = n;
    return 200;
}

static void do_announce(rtsp_conn *c, request *q)
{
    if (c->state != ST_INIT) {
        refused(REFUSE_STATE);
        reply(c, 455, q->cseq, NULL, NULL, 0);
        return;
    }
    if (q->rest[0] && strcmp(q->rest, "/") != 0) {
        refused(REFUSE_NOT_FOUND);
        reply(c, 404, q->cseq, NULL, NULL, 0);
        return;
    }
    const rtsp_str *ct = rtsp_header_get(q->m, "Content-Type");
    if (!ct || ct->len < 15 || !rtsp_str_ieq((rtsp_str){ct->p, 15}, "application/sdp")) {
        refused(REFUSE_BAD_REQUEST);
        reply(c, 415, q->cseq, NULL, NULL, 0);
        return;
    }
    if (q->m->body_len > RTSP_SDP_MAX) {
        refused(REFUSE_TOO_LARGE);
        reply(c, 413, q->cseq, NULL, NULL, 0);
        return;
    }
    int status = announce_tracks(c, q->m->body, q->m->body_len);
    if (status != 200) {
        refused(status == 400 ? REFUSE_BAD_REQUEST : REFUSE_MEDIA);
        reply(c, status, q->cseq, NULL, NULL, 0);
        return;
    }
    c->sdp = cu_xmalloc(q->m->body_len + 1);
    memcpy(c->sdp, q->m->body, q->m->body_len);
    c->sdp[q->m->body_len] = '\0';
    c->sdp_len = q->m->body_len;
    snprintf(c->path, sizeof(c->path), LIVE_PREFIX "%s", q->serial);
    c->state = ST_ANNOUNCED;
    CU_LOG(CU_LOG_INFO, "rtsp", "%s: %s announced %d track(s)", c->peer_text, c->serial,
           c->ntracks);
    reply(c, 200, q->cseq, NULL, NULL, 0);
}

/* The track a SETUP names, by its control (relative to the presentation, or absolute). */
static rtsp_track *track_for(rtsp_conn *c, request *q)
{
    const char *rel = q->rest[0] == '/' ? q->rest + 1 : q->rest;
    for (int i = 0; i < c->ntracks; i++) {
        rtsp_track *t = &c->tracks[i];
        if (t->d.control[0] == '/' ? strcmp(t->d.control, q->abspath) == 0
                                   : strcmp(t->d.control, rel) == 0)
            return t;
    }
    /* One track, SETUP on the presentation itself (some publishers do). */
    return c->ntracks == 1 && !rel[0] ? &c->tracks[0] : NULL;
}

/* Take the first transport in @p value we serve; fills @p t and the answer. */
static bool choose_transport(rtsp_conn *c, rtsp_track *t, rtsp_str value, char *answer, size_t cap)
{
    char text[1024];
    if (value.len >= sizeof(text))
        return false;
    memcpy(text, value.p, value.len);
    text[value.len] = '\0';
    bool ok = false;
    gchar **specs = g_strsplit(text, ",", 8);
    for (int i = 0; specs[i] && !ok; i++) {
        GstRTSPTransport *tr = NULL;
        if (gst_rtsp_transport_new(&tr) != GST_RTSP_OK)
            break;
        if (gst_rtsp_transport_parse(g_strstrip(specs[i]), tr) != GST_RTSP_OK ||
            tr->trans != GST_RTSP_TRANS_RTP || tr->profile != GST_RTSP_PROFILE_AVP) {
            gst_rtsp_transport_free(tr);
            continue;
        }
        if (tr->lower_transport == GST_RTSP_LOWER_TRANS_TCP) {
            int lo = tr->interleaved.min, hi = tr->interleaved.max;
            if (lo < 0) { /* none asked: the next free pair */
                lo = 0;
                for (int k = 0; k < c->ntracks; k++)
                    if (c->tracks[k].setup && !c->tracks[k].udp_ports.port &&
                        c->tracks[k].rtp_channel >= lo)
                        lo = c->tracks[k].rtp_channel + 2;
                hi = lo + 1;
            }
            if (hi < 0)
                hi = lo + 1;
            if (lo <= 254 && hi <= 255 && lo != hi) {
                t->rtp_channel = (uint8_t)lo;
                t->rtcp_channel = (uint8_t)hi;
                snprintf(answer, cap, "RTP/AVP/TCP;unicast;interleaved=%d-%d;mode=record", lo, hi);
                ok = true;
            }
        } else if (tr->lower_transport == GST_RTSP_LOWER_TRANS_UDP && tr->client_port.min > 0 &&
                   !(tr->destination && tr->destination[0])) {
            if (rtsp_udp_pair_open(c->rw->r, &t->udp_ports)) {
                int port = t->udp_ports.port;
                t->client = c->peer;
                int cmax = tr->client_port.max > 0 ? tr->client_port.max : tr->client_port.min + 1;
                t->client_rtp_port = tr->client_port.min;
                t->client_rtcp_port = cmax;
                snprintf(answer, cap,
                         "RTP/AVP;unicast;client_port=%d-%d;server_port=%d-%d;mode=record",
                         tr->client_port.min, cmax, port, port + 1);
                ok = true;
            }
        }
        gst_rtsp_transport_free(tr);
    }
    g_strfreev(specs);
    return ok;
}

static void do_setup(rtsp_conn *c, request *q)
{
    rtsp_service *r = c->rw->r;
    bool present;
    if (c->state != ST_ANNOUNCED && c->state != ST_READY) {
        refused(REFUSE_STATE);
        reply(c, 455, q->cseq, NULL, NULL, 0);
        return;
    }
    if (!session_matches(c, q->m, &present) || (present && !c->session[0])) {
        refused(REFUSE_SESSION);
        reply(c, 454, q->cseq, NULL, NULL, 0);
        return;
    }
    if (strcmp(q->serial, c->serial) != 0 || (q->rest[0] && q->rest[0] != '/')) {
        refused(REFUSE_STATE);
        reply(c, 459, q->cseq, NULL, NULL, 0);
        return;
    }
    rtsp_track *t = track_for(c, q);
    if (!t) {
        refused(REFUSE_NOT_FOUND);
        reply(c, 404, q->cseq, NULL, NULL, 0);
        return;
    }
    if (t->setup) {
        refused(REFUSE_STATE);
        reply(c, 455, q->cseq, NULL, NULL, 0);
        return;
    }
    const rtsp_str *tr = rtsp_header_get(q->m, "Transport");
    char transport[200], extra[256];
    if (!tr) {
        refused(REFUSE_BAD_REQUEST);
        reply(c, 400, q->cseq, NULL, NULL, 0);
        return;
    }
    if (!c->holds_device_slot) {
        bool slot = false;
        pthread_mutex_lock(&r->lock);
        dir_entry *e = dir_find(r, c->serial);
        if (e && e->sessions < r->cfg->rtsp_max_sessions_per_device) {
            e->sessions++;
            slot = true;
        }
        pthread_mutex_unlock(&r->lock);
        if (!slot) {
            refused(REFUSE_LIMIT_DEVICE);
            reply(c, 453, q->cseq, NULL, NULL, 0);
            return;
        }
        c->holds_device_slot = true;
    }
    if (!choose_transport(c, t, *tr, transport, sizeof(transport))) {
        refused(REFUSE_TRANSPORT);
        reply(c, 461, q->cseq, NULL, NULL, 0);
        return;
    }
    if (t->udp_ports.port) {
        if (!rtsp_udp_pair_watch(&t->udp_ports, c->rw->w->base, on_udp, t)) {
            track_stop(t);
            reply(c, 500, q->cseq, NULL, NULL, 0);
            return;
        }
    }
    if (!c->session[0]) {
        uint8_t raw[8];
        if (RAND_bytes(raw, sizeof(raw)) != 1) {
            track_stop(t);
            reply(c, 500, q->cseq, NULL, NULL, 0);
            return;
        }
        if (!rtsp_capture_new(c->capture)) {
            track_stop(t);
            reply(c, 500, q->cseq, NULL, NULL, 0);
            return;
        }
        cu_hex_encode(raw, sizeof(raw), c->session);
    }
    char label[128];
    snprintf(label, sizeof(label), "rtsp %s track %d", c->serial, t->index);
    t->st = ingest_stream_new(c->rw->w, c->device_id, c->serial, label);
    t->src = (rtsp_meta_source){.source = "rtsp",
                                .device_id = c->device_id,
                                .serial = c->serial,
                                .udp = t->udp_ports.port != 0,
                                .tls = c->tls,
                                .peer = c->peer_text,
                                .session = c->session,
                                .capture = c->capture,
                                .sdp = c->sdp,
                                .sdp_len = c->sdp_len};
    t->setup = true;
    c->state = ST_READY;
    snprintf(extra, sizeof(extra), "Transport: %s\r\n", transport);
    reply(c, 200, q->cseq, extra, NULL, 0);
}

static void do_record(rtsp_conn *c, request *q)
{
    bool present;
    if (!c->session[0] || !session_matches(c, q->m, &present) || !present) {
        refused(REFUSE_SESSION);
        reply(c, 454, q->cseq, NULL, NULL, 0);
        return;
    }
    if (c->state != ST_READY) {
        refused(REFUSE_STATE);
        reply(c, 455, q->cseq, NULL, NULL, 0);
        return;
    }
    if (q->rest[0] && strcmp(q->rest, "/") != 0) {
        refused(REFUSE_STATE);
        reply(c, 460, q->cseq, NULL, NULL, 0);
        return;
    }
    c->state = ST_RECORDING;
    CU_LOG(CU_LOG_INFO, "rtsp", "%s: %s recording (session %s)", c->peer_text, c->serial,
           c->session);
    reply(c, 200, q->cseq, NULL, NULL, 0);
}

static void do_teardown(rtsp_conn *c, request *q)
{
    bool present;
    if (!c->session[0] || !session_matches(c, q->m, &present) || !present) {
        refused(REFUSE_SESSION);
        reply(c, 454, q->cseq, NULL, NULL, 0);
        return;
    }
    CU_LOG(CU_LOG_INFO, "rtsp", "%s: %s teardown (session %s)", c->peer_text, c->serial,
           c->session);
    char cseq[16];
    cu_strlcpy(cseq, q->cseq, sizeof(cseq));
    session_end(c);
    reply(c, 200, cseq, NULL, NULL, 0);
}

static void handle_request(rtsp_conn *c, const rtsp_parsed *m)
{
    request q;
    memset(&q, 0, sizeof(q));
    q.m = m;
    q.rest = "";
    const rtsp_str *cseq = rtsp_header_get(m, "CSeq");
    uint64_t cseq_n;
    if (!cseq || cseq->len >= sizeof(q.cseq) || !rtsp_str_uint(*cseq, &cseq_n)) {
        refused(REFUSE_BAD_REQUEST);
        reply(c, 400, NULL, NULL, NULL, 0);
        return;
    }
    memcpy(q.cseq, cseq->p, cseq->len);
    memcpy(q.method, m->method.p, m->method.len);
    memcpy(q.uri, m->uri.p, m->uri.len);

    bool options = strcmp(q.method, "OPTIONS") == 0;
    if (strcmp(q.uri, "*") != 0) {
        GstRTSPUrl *u = NULL;
        if (gst_rtsp_url_parse(q.uri, &u) != GST_RTSP_OK || !u || !u->abspath) {
            gst_rtsp_url_free(u);
            refused(REFUSE_BAD_REQUEST);
            reply(c, 400, q.cseq, NULL, NULL, 0);
            return;
        }
        cu_strlcpy(q.abspath, u->abspath, sizeof(q.abspath));
        gst_rtsp_url_free(u);
    } else if (!options) {
        refused(REFUSE_BAD_REQUEST);
        reply(c, 400, q.cseq, NULL, NULL, 0);
        return;
    }
    if (options) {
        char extra[128];
        snprintf(extra, sizeof(extra), "Public: %s\r\n", ALLOW);
        reply(c, 200, q.cseq, extra, NULL, 0);
        return;
    }
    typedef void (*handler)(rtsp_conn *, request *);
    handler h = strcmp(q.method, "ANNOUNCE") == 0   ? do_announce
                : strcmp(q.method, "SETUP") == 0    ? do_setup
                : strcmp(q.method, "RECORD") == 0   ? do_record
                : strcmp(q.method, "TEARDOWN") == 0 ? do_teardown
                                                    : NULL;
    bool keepalive =
        strcmp(q.method, "GET_PARAMETER") == 0 || strcmp(q.method, "SET_PARAMETER") == 0;
    bool known = h || keepalive || strcmp(q.method, "DESCRIBE") == 0 ||
                 strcmp(q.method, "PLAY") == 0 || strcmp(q.method, "PAUSE") == 0 ||
                 strcmp(q.method, "REDIRECT") == 0;
    if (!known) {
        refused(REFUSE_BAD_REQUEST);
        reply(c, 501, q.cseq, NULL, NULL, 0);
        return;
    }
    if (!parse_live_path(&q)) {
        refused(REFUSE_NOT_FOUND);
        reply(c, 404, q.cseq, NULL, NULL, 0);
        return;
    }
    /* A presentation is announced on this connection: operations on another
     * device's presentation cannot join its session. */
    if (c->state != ST_INIT && strcmp(q.serial, c->serial) != 0 &&
        (h == do_setup || h == do_record || h == do_teardown)) {
        refused(REFUSE_STATE);
        reply(c, 459, q.cseq, NULL, NULL, 0);
        return;
    }
    if (!authorize(c, &q))
        return;
    if (keepalive) {
        bool present;
        if (!session_matches(c, m, &present)) {
            refused(REFUSE_SESSION);
            reply(c, 454, q.cseq, NULL, NULL, 0);
        } else {
            reply(c, 200, q.cseq, NULL, NULL, 0);
        }
        return;
    }
    if (!h) {
        char extra[128];
        snprintf(extra, sizeof(extra), "Allow: %s\r\n", ALLOW);
        refused(REFUSE_STATE);
        reply(c, 405, q.cseq, extra, NULL, 0);
        return;
    }
    h(c, &q);
}

/* ------------------------------------------------------------ reading */

static void on_read(struct bufferevent *bev, void *arg)
{
    rtsp_conn *c = arg;
    const cu_config *cfg = c->rw->r->cfg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->closing) { /* (what comes after the last answer is dropped) */
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    rtsp_limits lim = {.max_header_bytes = (size_t)cfg->rtsp_max_header_bytes,
                       .max_body_bytes = (size_t)cfg->rtsp_max_body_bytes};
    int64_t now = cu_time_us();
    c->last_us = now;
    while (!c->closing) {
        uint8_t channel;
        const uint8_t *frame;
        size_t flen;
        rtsp_in_kind kind = rtsp_in_peek(in, &channel, &frame, &flen);
        if (kind == RTSP_IN_EMPTY) {
            c->partial_since_us = 0;
            c->scanned = 0;
            return;
        }
        if (kind == RTSP_IN_FRAME_PARTIAL) {
            if (!c->partial_since_us)
                c->partial_since_us = now;
            return;
        }
        if (kind == RTSP_IN_FRAME) {
            bool ok = on_frame(c, channel, frame, flen, now);
            evbuffer_drain(in, 4 + flen);
            c->partial_since_us = 0;
            c->scanned = 0;
            if (!ok) {
                conn_free(c);
                return;
            }
            continue;
        }
        size_t len = evbuffer_get_length(in);
        size_t n = len < lim.max_header_bytes + lim.max_body_bytes
                       ? len
                       : lim.max_header_bytes + lim.max_body_bytes;
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)n);
        /* Nothing new to finish a line with: do not parse the same bytes again. */
        if (c->scanned && c->scanned < n && !memchr(p + c->scanned, '\n', n - c->scanned) &&
            n < lim.max_header_bytes) {
            c->scanned = n;
            return;
        }
        static __thread rtsp_parsed m;
        rtsp_kind k = rtsp_parse(p, n, &lim, &m);
        if (k == RTSP_NEED_MORE) {
            if (!c->partial_since_us)
                c->partial_since_us = now;
            c->scanned = n;
            return;
        }
        c->partial_since_us = 0;
        c->scanned = 0;
        if (k == RTSP_BAD) {
            refused(m.status == 413 ? REFUSE_TOO_LARGE : REFUSE_BAD_REQUEST);
            CU_LOG(CU_LOG_INFO, "rtsp", "%s: %s; closing", c->peer_text, m.why);
            reply(c, m.status, NULL, "Connection: close\r\n", NULL, 0);
            close_after_reply(c);
            return;
        }
        if (k == RTSP_REQUEST)
            handle_request(c, &m);
        /* a response from the client: nothing we asked, ignored */
        evbuffer_drain(in, m.consumed);
        /* A client that asks and never reads: its answers are not kept without end. */
        if (evbuffer_get_length(bufferevent_get_output(bev)) > (size_t)cfg->rtsp_max_output_bytes) {
            refused(REFUSE_OUTPUT);
            CU_LOG(CU_LOG_INFO, "rtsp", "%s: over %lld bytes of answers not read; closing",
                   c->peer_text, (long long)cfg->rtsp_max_output_bytes);
            conn_free(c);
            return;
        }
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    rtsp_conn *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        finish_close(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    rtsp_conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        unsigned long tls_error = c->tls ? bufferevent_get_openssl_error(bev) : 0;
        char why[160] = "closed by the client";
        if (tls_error)
            ERR_error_string_n(tls_error, why, sizeof(why));
        else if (what & BEV_EVENT_ERROR)
            snprintf(why, sizeof(why), "%s", strerror(EVUTIL_SOCKET_ERROR()));
        if (c->session[0])
            CU_LOG(CU_LOG_INFO, "rtsp", "%s: %s disconnected (session %s): %s", c->peer_text,
                   c->serial, c->session, why);
        else
            CU_LOG(CU_LOG_DEBUG, "rtsp", "%s: disconnected: %s", c->peer_text, why);
        conn_free(c);
    }
}

/* Slow requests, silent sessions and idle connections end here. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    rtsp_worker *rw = arg;
    (void)fd;
    (void)what;
    const cu_config *cfg = rw->r->cfg;
    int64_t now = cu_time_us();
    rtsp_conn *next;
    for (rtsp_conn *c = rw->conns; c; c = next) {
        next = c->next;
        if (c->closing) {
            if (c->linger_until_us && now > c->linger_until_us)
                conn_free(c);
            continue;
        }
        if (c->partial_since_us &&
            now - c->partial_since_us > cfg->rtsp_request_timeout_s * 1000000) {
            refused(REFUSE_SLOW);
            CU_LOG(CU_LOG_INFO, "rtsp", "%s: request not complete within %llds; closing",
                   c->peer_text, (long long)cfg->rtsp_request_timeout_s);
            conn_free(c);
        } else if (now - c->last_us > cfg->rtsp_session_timeout_s * 1000000) {
            if (c->session[0]) {
                refused(REFUSE_SESSION_TIMEOUT);
                CU_LOG(CU_LOG_INFO, "rtsp", "%s: session %s of %s timed out", c->peer_text,
                       c->session, c->serial);
            }
            conn_free(c);
        }
    }
}

/* ---------------------------------------------------------- accepting */

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    rtsp_worker *rw = arg;
    bool tls = l == rw->tls;
    refuse_reason why;
    uint8_t salt[RTSP_CONN_SALT_LEN];
    if (RAND_bytes(salt, sizeof(salt)) != 1) {
        close(fd);
        return;
    }
    if (!conn_admit(rw->r, sa, &why)) {
        refused(why);
        close(fd);
        return;
    }
    rtsp_conn *c = cu_xcalloc(1, sizeof(*c));
    c->rw = rw;
    c->tls = tls;
    memcpy(c->auth_salt, salt, sizeof(salt));
    memcpy(&c->peer, sa, (size_t)salen < sizeof(c->peer) ? (size_t)salen : sizeof(c->peer));
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
        port = ntohs(((struct sockaddr_in *)sa)->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
        port = ntohs(((struct sockaddr_in6 *)sa)->sin6_port);
    }
    snprintf(c->peer_text, sizeof(c->peer_text), "%s:%d%s", host, port, tls ? " (tls)" : "");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct event_base *base = rw->w->base;
    if (tls) {
        SSL *ssl = SSL_new(rw->r->ssl);
        c->bev = ssl ? bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL;
        if (c->bev)
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        else if (ssl)
            SSL_free(ssl);
    } else {
        c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        close(fd);
        conn_leave(rw->r, sa);
        free(c);
        return;
    }
    /* No read watermark: what a connection may hold unparsed is bounded by
     * on_read (a message over the caps is refused, a frame is at most 64 KiB),
     * and with TLS a suspended read would not resume while the decrypted
     * bytes wait inside OpenSSL rather than in the socket. */
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->opened_us = c->last_us = c->partial_since_us = cu_time_us();
    c->next = rw->conns;
    if (rw->conns)
        rw->conns->prev = c;
    rw->conns = c;
    cu_metric_add(&conns_metric, 1);
}

/* ------------------------------------------------------------ lifecycle */

static cu_rc listen_reuseport(const char *addr, int port, const char *what, int *fd_out,
                              cu_err *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, addr, &a->sin6_addr);
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, addr, &a->sin_addr);
        sl = sizeof(*a);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 511) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return cu_err_set(err, e == EADDRINUSE ? CU_ERR_BUSY : CU_ERR_IO,
                          "%s: cannot listen on %s:%d/tcp: %s", what, addr, port, strerror(e));
    }
    *fd_out = fd;
    return CU_OK;
}

cu_rc rtsp_service_create(const cu_config *cfg, const char *data_dir, rtsp_service **out,
                          cu_err *err)
{
    cu_rc rc = CU_OK;
    *out = NULL;
    if (cfg->rtsp_udp_port_max <= cfg->rtsp_udp_port_min + 1)
        return cu_err_set(err, CU_ERR_INVALID,
                          "rtsp.udp_port_min (%lld) must be below rtsp.udp_port_max (%lld) by "
                          "at least a pair",
                          (long long)cfg->rtsp_udp_port_min, (long long)cfg->rtsp_udp_port_max);
    if (cfg->rtsp_port && cfg->rtsp_port == cfg->rtsps_port)
        return cu_err_set(err, CU_ERR_INVALID, "rtsp.port and rtsps.port are both %lld",
                          (long long)cfg->rtsp_port);
    rtsp_service *r = cu_xcalloc(1, sizeof(*r));
    r->cfg = cfg;
    pthread_mutex_init(&r->lock, NULL);
    int first = (int)((cfg->rtsp_udp_port_min + 1) & ~1);
    r->udp_npairs = ((int)cfg->rtsp_udp_port_max - first + 1) / 2;
    r->udp_pairs = cu_xcalloc((size_t)r->udp_npairs, 1);
    if (!rtsp_nonces_init(&r->nonces)) {
        rc = cu_err_set(err, CU_ERR_IO, "the random number generator failed");
        goto fail;
    }
    if (cfg->rtsps_port) {
        ctl_tls_spec tls = {.what = "RTSPS",
                            .cert_file = cfg->rtsps_cert_file,
                            .key_file = cfg->rtsps_key_file,
                            .cert_setting = "rtsps.cert_file",
                            .key_setting = "rtsps.key_file",
                            .host = cfg->rtsp_public_host,
                            .data_dir = data_dir,
                            .stem = "rtsps"};
        rc = ctl_tls_server_context(&tls, &r->ssl, err);
        if (rc)
            goto fail;
    }
    /* The ports must be free: another process must not share them with us. */
    int ports[2] = {(int)cfg->rtsp_port, (int)cfg->rtsps_port};
    const char *names[2] = {"rtsp (rtsp.bind, rtsp.port)", "rtsps (rtsp.bind, rtsps.port)"};
    for (int i = 0; i < 2; i++) {
        int fd;
        if (!ports[i])
            continue;
        rc = ingest_listen_tcp(cfg->rtsp_bind, ports[i], names[i], &fd, err);
        if (rc)
            goto fail;
        close(fd);
    }
    *out = r;
    return CU_OK;
fail:
    rtsp_service_free(r);
    return rc;
}

void rtsp_service_free(rtsp_service *r)
{
    if (!r)
        return;
    for (int b = 0; b < DIR_BUCKETS; b++)
        while (r->dir[b]) {
            dir_entry *e = r->dir[b];
            r->dir[b] = e->next;
            OPENSSL_cleanse(e, sizeof(*e));
            free(e);
        }
    for (int b = 0; b < ADDR_BUCKETS; b++)
        while (r->addrs[b]) {
            addr_entry *e = r->addrs[b];
            r->addrs[b] = e->next;
            free(e);
        }
    free(r->udp_pairs);
    SSL_CTX_free(r->ssl);
    pthread_mutex_destroy(&r->lock);
    OPENSSL_cleanse(&r->nonces, sizeof(r->nonces));
    free(r);
}

cu_rc rtsp_worker_start(ingest_worker *w, rtsp_service *r, cu_err *err)
{
    const cu_config *cfg = r->cfg;
    rtsp_worker *rw = cu_xcalloc(1, sizeof(*rw));
    rw->w = w;
    rw->r = r;
    w->rtsp = rw;
    int fd;
    cu_rc rc;
    if (cfg->rtsp_port) {
        rc = listen_reuseport(cfg->rtsp_bind, (int)cfg->rtsp_port, "rtsp (rtsp.bind, rtsp.port)",
                              &fd, err);
        if (rc)
            return rc;
        rw->plain = evconnlistener_new(w->base, on_accept, rw, LEV_OPT_CLOSE_ON_FREE, -1, fd);
        if (!rw->plain) {
            close(fd);
            return cu_err_set(err, CU_ERR_NOMEM, "cannot create the RTSP listener");
        }
    }
    if (cfg->rtsps_port) {
        rc = listen_reuseport(cfg->rtsp_bind, (int)cfg->rtsps_port, "rtsps (rtsp.bind, rtsps.port)",
                              &fd, err);
        if (rc)
            return rc;
        rw->tls = evconnlistener_new(w->base, on_accept, rw, LEV_OPT_CLOSE_ON_FREE, -1, fd);
        if (!rw->tls) {
            close(fd);
            return cu_err_set(err, CU_ERR_NOMEM, "cannot create the RTSPS listener");
        }
    }
    struct timeval tv = {0, TIMER_MS * 1000};
    rw->timer = event_new(w->base, -1, EV_PERSIST, on_timer, rw);
    if (!rw->timer || event_add(rw->timer, &tv) != 0)
        return cu_err_set(err, CU_ERR_NOMEM, "cannot create the RTSP timer");
    return CU_OK;
}

void rtsp_worker_close_all(ingest_worker *w)
{
    rtsp_worker *rw = w->rtsp;
    if (!rw)
        return;
    if (rw->plain)
        evconnlistener_disable(rw->plain);
    if (rw->tls)
        evconnlistener_disable(rw->tls);
    while (rw->conns)
        conn_free(rw->conns);
}

void rtsp_worker_free(ingest_worker *w)
{
    rtsp_worker *rw = w->rtsp;
    if (!rw)
        return;
    while (rw->conns)
        conn_free(rw->conns);
    if (rw->plain)
        evconnlistener_free(rw->plain);
    if (rw->tls)
        evconnlistener_free(rw->tls);
    if (rw->timer)
        event_free(rw->timer);
    free(rw);
    w->rtsp = NULL;
}
