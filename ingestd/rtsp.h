/*
 * RTSP ingest, private to ingestd (docs/rtsp.md): HTTP Digest
 * authentication (rtsp_auth.c), the server that recorders publish to
 * (rtsp_server.c) and the client that pulls from cameras (rtsp_pull.c).
 */
#ifndef CUSTOS_RTSP_H
#define CUSTOS_RTSP_H

#include "ingest_internal.h"
#include "rtsp_msg.h"

#include <sys/socket.h>

/* ------------------------------------------------------------ digest auth */

#define RTSP_REALM          "custos"
#define RTSP_NONCE_LIFETIME 300 /* seconds */

typedef enum { RTSP_DIGEST_MD5, RTSP_DIGEST_SHA256 } rtsp_digest_alg;

/** The directives of an Authorization: Digest header (borrowed from the request). */
typedef struct {
    rtsp_str username, realm, nonce, uri, response, algorithm, qop, nc, cnonce, opaque, stale;
} rtsp_digest;

/** Parse the value of an Authorization header. False unless it is a well-formed Digest. */
bool rtsp_digest_parse(rtsp_str value, rtsp_digest *out);

/** Parse a WWW-Authenticate: Digest challenge (realm and nonce required). */
bool rtsp_digest_parse_challenge(rtsp_str value, rtsp_digest *out);

/**
 * The response a client with @p password must send (RFC 7616 §3.4.1; with
 * no qop, the RFC 2069 form older devices use), as lowercase hex into @p hex
 * (65 bytes). Strings are NUL-terminated except those of @p d.
 */
void rtsp_digest_response(rtsp_digest_alg alg, const rtsp_digest *d, const char *password,
                          const char *method, char hex[65]);

/** A server's nonces: stateless, bound to time, the client's address and its connection. */
typedef struct {
    uint8_t secret[32];
} rtsp_nonces;

/** A fresh random secret (per process). */
bool rtsp_nonces_init(rtsp_nonces *n);

#define RTSP_CONN_SALT_LEN 16

/**
 * What a nonce is bound to and what a response must meet: the client's
 * address and its connection (a random salt per connection, so that a
 * captured Authorization header cannot be replayed on another connection),
 * whether MD5 is accepted (rtsp.allow_md5), and the nonce count last
 * accepted on the connection (qop=auth: each response on one nonce must
 * count higher than the one before; a new nonce starts again).
 */
typedef struct {
    int64_t nonce_time; /* of the nonce last accepted, 0 before any */
    uint32_t nc;
} rtsp_nc_seen;

typedef struct {
    const struct sockaddr *peer;
    const uint8_t *salt; /* RTSP_CONN_SALT_LEN bytes */
    bool allow_md5;
    rtsp_nc_seen *seen; /* the connection's; updated when a response is accepted */
} rtsp_auth_binding;

/** A nonce for @p b at @p now_s into @p out (at least 48 bytes), NUL-terminated. */
void rtsp_nonce_make(const rtsp_nonces *n, const rtsp_auth_binding *b, int64_t now_s, char *out);

typedef enum {
    RTSP_AUTH_OK,
    RTSP_AUTH_MISSING,   /* no Authorization header */
    RTSP_AUTH_MALFORMED, /* not a Digest we understand */
    RTSP_AUTH_STALE,     /* a nonce of ours, expired: challenge again with stale=true */
    RTSP_AUTH_BAD,       /* wrong password, foreign nonce, wrong realm or URI */
} rtsp_auth_result;

/**
 * Check @p d for a request with @p method on @p uri on the connection of
 * @p b, against @p password (the device's). Comparison in constant time. An
 * MD5 response when MD5 is not allowed, or a nonce count that does not grow,
 * is RTSP_AUTH_BAD.
 */
rtsp_auth_result rtsp_auth_check(const rtsp_nonces *n, const rtsp_auth_binding *b, int64_t now_s,
                                 const rtsp_digest *d, rtsp_str method, rtsp_str uri,
                                 const char *password);

/**
 * The WWW-Authenticate header lines of a 401 (SHA-256, then MD5 when it is
 * allowed), each ending in CRLF, into @p out. Returns the length, or 0 if it
 * did not fit.
 */
size_t rtsp_auth_challenge(const rtsp_nonces *n, const rtsp_auth_binding *b, int64_t now_s,
                           bool stale, char *out, size_t cap);

/* ------------------------------------------------------------ SDP, meta */

#define RTSP_TRACKS_MAX 4
#define RTSP_SDP_MAX    16384 /* an SDP kept in a recording's meta */

/** A track of a presentation we record (H.264/H.265 video, or audio). */
typedef struct {
    char control[1024]; /* a=control as given (relative, absolute URL or "*") */
    char media[16];     /* video, audio */
    char encoding[32];  /* H264, H265, PCMA ... */
    pipe_codec codec;
    uint8_t payload_type;
    uint32_t clock_rate;
} rtsp_sdp_track;

/**
 * The tracks of an SDP into @p out (at most @p max; *@p n of them). Returns
 * 200, 400 (not an SDP, a control too long, more tracks than @p max) or 415
 * (no H.264 or H.265 video track).
 */
int rtsp_sdp_tracks(const uint8_t *sdp, size_t len, rtsp_sdp_track *out, int max, int *n);

/** Where a track's recording came from, for its meta. Strings borrowed. */
typedef struct {
    const char *source; /* "rtsp" (published to us) or "rtsp-pull" */
    int64_t device_id;
    const char *serial;
    const char *url; /* pulled from (no credentials), or NULL */
    bool udp, tls;
    const char *peer, *session;
    const char *capture; /* the session's capture id (a UUID): its tracks' recordings together */
    const char *sdp;
    size_t sdp_len;
} rtsp_meta_source;

/** A fresh capture id (36 characters and NUL) for a session's tracks; false when the
 * random number generator fails. */
CU_WUR bool rtsp_capture_new(char out[37]);

/**
 * An RTP or RTCP packet of track @p t (number @p index) into stream @p st.
 * The first RTP packet begins the recording, its meta (docs/rtsp.md) made
 * from @p src. False when the packet is refused (malformed, or no recording
 * could begin).
 */
bool rtsp_track_push(ingest_stream *st, const rtsp_meta_source *src, int index,
                     const rtsp_sdp_track *t, bool rtcp, const uint8_t *p, size_t len,
                     int64_t now_us);

/* ------------------------------------------------------- connection input */

struct evbuffer;

typedef enum {
    RTSP_IN_EMPTY,
    RTSP_IN_MESSAGE,       /* a request or response starts here (rtsp_parse it) */
    RTSP_IN_FRAME_PARTIAL, /* a $-interleaved frame, not all here yet */
    RTSP_IN_FRAME,         /* a whole frame: drain 4 + *len bytes once handled */
} rtsp_in_kind;

/** What starts a connection's input @p in; for a whole frame, its channel and payload. */
rtsp_in_kind rtsp_in_peek(struct evbuffer *in, uint8_t *channel, const uint8_t **payload,
                          size_t *len);

/* --------------------------------------------------------------- server */

/** What the RTSP side shares between workers (locked inside). */
typedef struct rtsp_service rtsp_service;

/**
 * Check the RTSP settings, make the TLS context when RTSPS is on, and check
 * that the ports are free. Nothing listens until rtsp_worker_start().
 */
CU_WUR cu_rc rtsp_service_create(const cu_config *cfg, const char *data_dir, rtsp_service **out,
                                 cu_err *err);

/** Free, after every worker has been freed. NULL is a no-op. */
void rtsp_service_free(rtsp_service *r);

/** A device was added or changed (control thread); @p d is borrowed. */
void rtsp_service_device(rtsp_service *r, const ctl_device *d);

/** A track's UDP port pair (RTP on an even port, RTCP on the next), and its watchers. */
typedef struct {
    int port; /* the RTP port; 0 when not open */
    int rtp_fd, rtcp_fd;
    struct event *rtp_ev, *rtcp_ev;
} rtsp_udp_pair;

/** Nothing open (fds -1). */
void rtsp_udp_pair_init(rtsp_udp_pair *u);

/** A free pair from rtsp.udp_port_min..max, bound on rtsp.bind. False if none. */
bool rtsp_udp_pair_open(rtsp_service *r, rtsp_udp_pair *u);

/** Call @p cb(fd, EV_READ, @p arg) whenever either socket is readable. */
bool rtsp_udp_pair_watch(rtsp_udp_pair *u, struct event_base *base, event_callback_fn cb,
                         void *arg);

/** Close both sockets and give the ports back. Safe on a pair never opened. */
void rtsp_udp_pair_close(rtsp_service *r, rtsp_udp_pair *u);

/**
 * One datagram from @p fd into @p buf (PIPE_RTP_MAX + 1 bytes): its length,
 * or -1 when nothing is left. *@p usable says whether it came from @p host's
 * address and from @p port (host order; 0: any port), and is an RTP/RTCP
 * size (8..PIPE_RTP_MAX bytes).
 */
ssize_t rtsp_udp_recv(int fd, const struct sockaddr_storage *host, int port, uint8_t *buf,
                      bool *usable);

/** Listen on the RTSP and RTSPS ports in worker @p w (before its thread starts). */
CU_WUR cu_rc rtsp_worker_start(ingest_worker *w, rtsp_service *r, cu_err *err);

/** On the worker's thread when stopping: close every connection, ending its streams. */
void rtsp_worker_close_all(ingest_worker *w);

/**
 * Device @p device_id was revoked: close every RTSP connection of it on
 * @p w now; their recordings end with their tail stored and are sealed.
 */
void rtsp_worker_device_revoked(ingest_worker *w, int64_t device_id, const char *serial);

/** Free what rtsp_worker_start() made, once the worker's thread has ended. NULL-safe. */
void rtsp_worker_free(ingest_worker *w);

/* ----------------------------------------------------------------- pull */

/**
 * Device @p d was added or changed (on worker @p w's thread, the worker of
 * device id mod workers): start pulling from its pull URL, restart when the
 * URL or transport changed, stop when it has none or is revoked.
 */
void rtsp_pull_device(ingest_worker *w, const ctl_device *d);

/** On the worker's thread when stopping: every pull ends (TEARDOWN sent, recordings sealed). */
void rtsp_pull_close_all(ingest_worker *w);

/** Free what the pulls of @p w hold, once its thread has ended. */
void rtsp_pull_free(ingest_worker *w);

#endif /* CUSTOS_RTSP_H */
