/*
 * bench/recorders: N simulated body-worn recorders streaming a real H.264
 * clip as SRTP, at real-time pace, to ingestd.
 *
 * The clip (Annex B, made once with x264enc by bench/make-clip) is split into
 * access units and packetized once (RFC 6184: single NAL, STAP-A for small
 * NALs, FU-A for large ones; 1200-byte packets). Each stream copies those
 * packets, rewrites SSRC, sequence number and timestamp, protects them with
 * its device's SRTP key and sends them with sendmmsg. Streams are spread
 * evenly over the frame interval and their start times over two seconds;
 * each streams for S seconds. Every 5 s a stream sends an SRTCP sender
 * report; when it has sent its last frame, a BYE (unless --no-bye).
 *
 * usage: recorders --devices FILE --seconds S [--target 127.0.0.1:5004]
 *                  [--clip FILE] [--streams N] [--drop K,K...] [--no-bye]
 * --port-per-stream sends stream i to port+i; --no-rtcp sends RTP only;
 * --no-gso sends one datagram per message instead of UDP GSO runs.
 * --speed N sends N seconds of media each second (1..64), the recorders'
 * clock (sender reports) running as fast: long recordings for the export
 * bench in a fraction of their length.
 * --state FILE goes on from where the last run with FILE left each SSRC's
 * SRTP and SRTCP indexes, as a real recorder must with the same key (RFC
 * 3711: an index is never used twice), and saves them at the end; one line
 * per SSRC: "SSRC NEXT_RTP_INDEX NEXT_SRTCP_INDEX". Without it each run
 * starts at a random sequence number, which ingestd refuses as a replay
 * when an earlier run with that device went further.
 * FILE holds one JSON object per line, as `ingestctl device add --json`
 * prints them. Prints one JSON object: what was sent.
 */
#include "ingestd/ingestd.h"
#include "rtsp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <srtp2/srtp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MTU_PAYLOAD 1200 /* RTP packet size before SRTP */
#define RTP_HDR     12
#define BATCH       1024
#define FPS         30
#define FRAME_US    (1000000 / FPS)
#define MAX_DROPS   64

typedef struct {
    uint32_t off, len; /* in the packet pool: a complete RTP packet template */
    bool marker;
} tpl_packet;

typedef struct {
    uint32_t first, count; /* packets of this access unit */
} tpl_frame;

typedef struct {
    uint8_t *pool;
    size_t pool_len, pool_cap;
    tpl_packet *pkts;
    size_t npkts, cappkts;
    tpl_frame *frames;
    size_t nframes, capframes;
} clip;

typedef struct {
    uint32_t ssrc;
    srtp_t srtp;
    uint16_t seq0;
    uint32_t roc0;       /* --state: the rollover counter it starts at */
    uint32_t srtcp_used; /* SRTCP indexes used so far */
    uint32_t ts0;
    uint64_t sent; /* packets sent */
    uint64_t octets;
    uint64_t frame;       /* frames sent */
    int64_t phase_us;     /* offset within the frame interval */
    uint64_t start_frame; /* the frame tick at which this recorder switches on */
    struct sockaddr_in to;
    int fd; /* its own socket: distinct recorders have distinct source ports,
             * which is what spreads them over ingestd's SO_REUSEPORT workers */
    int64_t next_sr_us;
    /* --transport rtsp-tcp */
    char serial[80];
    char rtsp_password[64];
    rtsp_client rtsp;
} stream;

/* ------------------------------------------------------------ the clip */

static void pool_put(clip *c, const uint8_t *p, size_t n)
{
    if (c->pool_len + n > c->pool_cap) {
        c->pool_cap = (c->pool_cap + n) * 2;
        c->pool = realloc(c->pool, c->pool_cap);
        if (!c->pool)
            abort();
    }
    memcpy(c->pool + c->pool_len, p, n);
    c->pool_len += n;
}

/* Start a packet: an RTP header template (SSRC, seq and ts rewritten later). */
static void packet_begin(clip *c, uint32_t frame)
{
    uint8_t h[RTP_HDR] = {0x80, 96};
    uint32_t ts = frame * (90000 / FPS);
    h[4] = (uint8_t)(ts >> 24);
    h[5] = (uint8_t)(ts >> 16);
    h[6] = (uint8_t)(ts >> 8);
    h[7] = (uint8_t)ts;
    if (c->npkts == c->cappkts) {
        c->cappkts = c->cappkts ? c->cappkts * 2 : 1024;
        c->pkts = realloc(c->pkts, c->cappkts * sizeof(*c->pkts));
        if (!c->pkts)
            abort();
    }
    c->pkts[c->npkts].off = (uint32_t)c->pool_len;
    c->pkts[c->npkts].marker = false;
    pool_put(c, h, RTP_HDR);
}

static void packet_end(clip *c)
{
    c->pkts[c->npkts].len = (uint32_t)(c->pool_len - c->pkts[c->npkts].off);
    c->npkts++;
}

/* Packetize one access unit (its NAL units, start codes removed). */
static void packetize_au(clip *c, uint32_t frame, const uint8_t **nal, const size_t *len, int n)
{
    uint32_t first = (uint32_t)c->npkts;
    const size_t room = MTU_PAYLOAD - RTP_HDR;
    for (int i = 0; i < n;) {
        /* STAP-A for a run of small NAL units that fit together. */
        size_t total = 1;
        int j = i;
        while (j < n && len[j] < room / 2 && total + 2 + len[j] <= room) {
            total += 2 + len[j];
            j++;
        }
        if (j - i >= 2) {
            packet_begin(c, frame);
            uint8_t nri = 0;
            for (int k = i; k < j; k++)
                nri |= nal[k][0] & 0x60;
            uint8_t hdr = (uint8_t)(nri | 24);
            pool_put(c, &hdr, 1);
            for (int k = i; k < j; k++) {
                uint8_t sz[2] = {(uint8_t)(len[k] >> 8), (uint8_t)len[k]};
                pool_put(c, sz, 2);
                pool_put(c, nal[k], len[k]);
            }
            packet_end(c);
            i = j;
            continue;
        }
        if (len[i] <= room) { /* single NAL unit packet */
            packet_begin(c, frame);
            pool_put(c, nal[i], len[i]);
            packet_end(c);
            i++;
            continue;
        }
        /* FU-A */
        uint8_t ind = (uint8_t)((nal[i][0] & 0xe0) | 28), type = nal[i][0] & 0x1f;
        size_t off = 1;
        while (off < len[i]) {
            size_t chunk = len[i] - off < room - 2 ? len[i] - off : room - 2;
            uint8_t fu[2] = {
                ind, (uint8_t)((off == 1 ? 0x80 : 0) | (off + chunk == len[i] ? 0x40 : 0) | type)};
            packet_begin(c, frame);
            pool_put(c, fu, 2);
            pool_put(c, nal[i] + off, chunk);
            packet_end(c);
            off += chunk;
        }
        i++;
    }
    c->pkts[c->npkts - 1].marker = true;
    if (c->nframes == c->capframes) {
        c->capframes = c->capframes ? c->capframes * 2 : 256;
        c->frames = realloc(c->frames, c->capframes * sizeof(*c->frames));
        if (!c->frames)
            abort();
    }
    c->frames[c->nframes++] = (tpl_frame){first, (uint32_t)c->npkts - first};
}

/*
 * --stamp (bench/live): an SEI NAL, user data unregistered (payload type 5),
 * with our UUID and the send time (Unix µs, 16 hex digits: no zero bytes, so
 * no emulation prevention), sent as a single-NAL packet before each frame
 * with the frame's timestamp. bench/whep_viewers reads it back.
 */
#define SEI_STAMP_LEN (1 + 2 + 16 + 16 + 1)
static const uint8_t stamp_uuid[16] = {0x43, 0x75, 0x73, 0x74, 0x6f, 0x73, 0x2d, 0x6c,
                                       0x69, 0x76, 0x65, 0x2d, 0x74, 0x73, 0x2d, 0x31};

static void sei_stamp(uint8_t *out, const uint8_t *frame_hdr, int64_t send_us)
{
    memcpy(out, frame_hdr, RTP_HDR); /* the frame's timestamp; seq and SSRC are set later */
    uint8_t *p = out + RTP_HDR;
    *p++ = 0x06; /* NAL: SEI */
    *p++ = 5;    /* user data unregistered */
    *p++ = 32;   /* its size */
    memcpy(p, stamp_uuid, 16);
    p += 16;
    char hex[17];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)send_us);
    memcpy(p, hex, 16);
    p += 16;
    *p = 0x80; /* rbsp trailing bits */
}

static bool is_vcl(uint8_t type)
{
    return type >= 1 && type <= 5;
}

/* Split an Annex B stream into access units and packetize them. */
static bool clip_load(const char *path, clip *c)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc((size_t)size);
    if (!d || fread(d, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(d);
        return false;
    }
    fclose(f);
    const uint8_t *nal[512];
    size_t len[512];
    int n = 0;
    bool au_has_vcl = false;
    uint32_t frame = 0;
    size_t i = 0, start = 0;
    bool have = false;
    for (;;) {
        size_t next = i;
        size_t sc = 0;
        while (next + 3 <= (size_t)size) {
            if (d[next] == 0 && d[next + 1] == 0 && d[next + 2] == 1) {
                sc = 3;
                break;
            }
            next++;
        }
        if (next + 3 > (size_t)size)
            next = (size_t)size;
        if (have) {
            size_t end = next;
            while (end > start && d[end - 1] == 0 && end < (size_t)size)
                end--; /* the leading zero of a 4-byte start code */
            if (end > start) {
                uint8_t type = d[start] & 0x1f;
                bool new_pic = is_vcl(type) && end > start + 1 && (d[start + 1] & 0x80);
                if (au_has_vcl && (!is_vcl(type) || new_pic) && n > 0) {
                    packetize_au(c, frame++, nal, len, n);
                    n = 0;
                    au_has_vcl = false;
                }
                if (n < 512) {
                    nal[n] = d + start;
                    len[n] = end - start;
                    n++;
                }
                au_has_vcl |= is_vcl(type);
            }
        }
        if (next >= (size_t)size)
            break;
        start = next + sc;
        i = start;
        have = true;
    }
    if (n > 0 && au_has_vcl)
        packetize_au(c, frame, nal, len, n);
    /* The pool is kept; the NAL pointers were only for packetizing. */
    free(d);
    return c->nframes > 0;
}

/* ------------------------------------------------------------ streams */

static bool b64_decode(const char *in, uint8_t *out, size_t cap, size_t *len)
{
    size_t n = strlen(in);
    if (n % 4 || n / 4 * 3 > cap + 2)
        return false;
    uint8_t tmp[128];
    if (n / 4 * 3 > sizeof(tmp))
        return false;
    int r = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
    if (r < 0)
        return false;
    size_t pad = (n && in[n - 1] == '=') + (n > 1 && in[n - 2] == '=');
    *len = (size_t)r - pad;
    if (*len > cap)
        return false;
    memcpy(out, tmp, *len);
    return true;
}

static bool stream_setup(stream *s, json_t *dev)
{
    const char *suite = json_string_value(json_object_get(dev, "suite"));
    const char *key_b64 = json_string_value(json_object_get(dev, "key_b64"));
    json_int_t ssrc = json_integer_value(json_object_get(dev, "ssrc"));
    uint8_t key[64];
    size_t klen = 0;
    if (!suite || !key_b64 || !ssrc || !b64_decode(key_b64, key, sizeof(key), &klen))
        return false;
    srtp_policy_t p;
    memset(&p, 0, sizeof(p));
    if (strcmp(suite, "aead_aes_256_gcm") == 0) {
        if (klen != 44)
            return false;
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtcp);
    } else {
        if (klen != 30)
            return false;
        srtp_crypto_policy_set_rtp_default(&p.rtp);
        srtp_crypto_policy_set_rtcp_default(&p.rtcp);
    }
    p.ssrc.type = ssrc_specific;
    p.ssrc.value = (uint32_t)ssrc;
    p.key = key;
    p.window_size = 256;
    s->ssrc = (uint32_t)ssrc;
    const char *serial = json_string_value(json_object_get(dev, "serial"));
    const char *pw = json_string_value(json_object_get(dev, "rtsp_password"));
    snprintf(s->serial, sizeof(s->serial), "%s", serial ? serial : "");
    snprintf(s->rtsp_password, sizeof(s->rtsp_password), "%s", pw ? pw : "");
    bool ok = srtp_create(&s->srtp, &p) == srtp_err_status_ok;
    memset(key, 0, sizeof(key));
    if (RAND_bytes((uint8_t *)&s->seq0, sizeof(s->seq0)) != 1 ||
        RAND_bytes((uint8_t *)&s->ts0, sizeof(s->ts0)) != 1)
        return false;
    return ok;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An SRTCP sender report (and a BYE after it when @p bye); plain RTCP when
 * @p plain (RTSP interleaved). */
static int rtcp_packet(stream *s, int64_t now_us, bool bye, bool plain, uint8_t *out)
{
    uint64_t ntp_sec = (uint64_t)(now_us / 1000000) + 2208988800u;
    uint64_t ntp_frac = ((uint64_t)(now_us % 1000000) << 32) / 1000000;
    /* The frame just sent was captured "now". */
    uint32_t rtp_ts = s->ts0 + (uint32_t)((s->frame ? s->frame - 1 : 0) * (90000 / FPS));
    out[0] = 0x80;
    out[1] = 200;
    out[2] = 0;
    out[3] = 6;
    put32(out + 4, s->ssrc);
    put32(out + 8, (uint32_t)ntp_sec);
    put32(out + 12, (uint32_t)ntp_frac);
    put32(out + 16, rtp_ts);
    put32(out + 20, (uint32_t)s->sent);
    put32(out + 24, (uint32_t)s->octets);
    int len = 28;
    if (bye) {
        out[28] = 0x81;
        out[29] = 203;
        out[30] = 0;
        out[31] = 1;
        put32(out + 32, s->ssrc);
        len = 36;
    }
    if (!plain && srtp_protect_rtcp(s->srtp, out, &len) != srtp_err_status_ok)
        return -1;
    if (!plain)
        s->srtcp_used++;
    return len;
}

/* ---------------------------------------------------------------- state */

typedef struct {
    uint32_t ssrc;
    uint64_t rtp_next;
    uint32_t srtcp_next;
} index_state;

/* The lines of @p path (none when it does not exist yet). */
static index_state *state_load(const char *path, size_t *n)
{
    index_state *st = NULL;
    size_t cap = 0;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    unsigned long ssrc;
    unsigned long long rtp;
    unsigned long srtcp;
    while (fscanf(f, "%lu %llu %lu", &ssrc, &rtp, &srtcp) == 3) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            st = realloc(st, cap * sizeof(*st));
            if (!st)
                abort();
        }
        st[(*n)++] = (index_state){(uint32_t)ssrc, rtp, (uint32_t)srtcp};
    }
    fclose(f);
    return st;
}

/* Start @p s where the state says: its ROC and sequence number, and its
 * SRTCP index (libsrtp has no setter for it: the indexes are used up). */
static bool state_apply(stream *s, const index_state *st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (st[i].ssrc != s->ssrc)
            continue;
        s->seq0 = (uint16_t)st[i].rtp_next;
        s->roc0 = (uint32_t)(st[i].rtp_next >> 16);
        if (s->roc0 && srtp_set_stream_roc(s->srtp, s->ssrc, s->roc0) != srtp_err_status_ok)
            return false;
        while (s->srtcp_used + 1 < st[i].srtcp_next) {
            uint8_t rr[8 + 64] = {0x80, 201, 0, 1};
            put32(rr + 4, s->ssrc);
            int len = 8;
            if (srtp_protect_rtcp(s->srtp, rr, &len) != srtp_err_status_ok)
                return false;
            s->srtcp_used++;
        }
        return true;
    }
    return true;
}

static bool state_save(const char *path, index_state *st, size_t n, const stream *streams,
                       size_t nstreams)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return false;
    for (size_t k = 0; k < nstreams; k++) {
        const stream *s = &streams[k];
        index_state now = {s->ssrc, ((uint64_t)s->roc0 << 16 | s->seq0) + s->sent,
                           s->srtcp_used + 1};
        size_t i = 0;
        while (i < n && st[i].ssrc != s->ssrc)
            i++;
        if (i < n)
            st[i] = now;
        else
            fprintf(f, "%u %llu %u\n", now.ssrc, (unsigned long long)now.rtp_next, now.srtcp_next);
    }
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%u %llu %u\n", st[i].ssrc, (unsigned long long)st[i].rtp_next,
                st[i].srtcp_next);
    return fclose(f) == 0 && rename(tmp, path) == 0;
}

/* ----------------------------------------------------------------- send */

/*
 * Outgoing datagrams, batched for sendmmsg. Consecutive datagrams of one
 * stream with the same size go out as one UDP GSO message (UDP_SEGMENT):
 * one trip through the stack for a run of packets, the kernel cutting it
 * into datagrams. All but a run's last datagram have the run's size.
 */
typedef struct {
    int fd; /* the socket the queued messages go out on */
    bool gso;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    char ctrl[BATCH][CMSG_SPACE(sizeof(uint16_t))];
    uint8_t (*bufs)[1600];
    int n;     /* datagrams queued */
    int nmsg;  /* messages queued */
    bool open; /* the last message can take another datagram */
    size_t seg, bytes;
    uint64_t send_errors;
} sender;

static void flush(sender *x)
{
    int off = 0;
    while (off < x->nmsg) {
        int r = sendmmsg(x->fd, x->msgs + off, (unsigned)(x->nmsg - off), 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == ENOBUFS) {
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
                continue;
            }
            for (int i = off; i < x->nmsg; i++)
                x->send_errors += x->msgs[i].msg_hdr.msg_iovlen;
            break;
        }
        off += r;
    }
    x->n = x->nmsg = 0;
    x->open = false;
}

static uint8_t *slot(sender *x)
{
    if (x->n == BATCH)
        flush(x);
    return x->bufs[x->n];
}

static void queue(sender *x, int len, struct sockaddr_in *to)
{
    struct iovec *v = &x->iov[x->n];
    v->iov_base = x->bufs[x->n];
    v->iov_len = (size_t)len;
    x->n++;
    struct msghdr *last = x->nmsg ? &x->msgs[x->nmsg - 1].msg_hdr : NULL;
    if (x->gso && x->open && last->msg_name == to && last->msg_iovlen < 64 &&
        x->bytes + (size_t)len <= 65000 && (size_t)len <= x->seg) {
        last->msg_iovlen++;
        x->bytes += (size_t)len;
        if (last->msg_iovlen == 2) {
            struct cmsghdr *c = (struct cmsghdr *)x->ctrl[x->nmsg - 1];
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t seg = (uint16_t)x->seg;
            memcpy(CMSG_DATA(c), &seg, sizeof(seg));
            last->msg_control = x->ctrl[x->nmsg - 1];
            last->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        }
        if ((size_t)len < x->seg)
            x->open = false; /* a shorter datagram ends the run */
        return;
    }
    x->msgs[x->nmsg].msg_hdr =
        (struct msghdr){.msg_name = to, .msg_namelen = sizeof(*to), .msg_iov = v, .msg_iovlen = 1};
    x->nmsg++;
    x->open = true;
    x->seg = x->bytes = (size_t)len;
}

/* The 4-byte header of an interleaved frame (RFC 2326 §10.12) before @p len bytes. */
static void interleave(uint8_t *hdr, uint8_t channel, size_t len)
{
    hdr[0] = '$';
    hdr[1] = channel;
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
}

static uint8_t ibuf[1 << 18]; /* one frame's interleaved packets */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"devices", required_argument, NULL, 'd'},   {"seconds", required_argument, NULL, 's'},
        {"target", required_argument, NULL, 't'},    {"clip", required_argument, NULL, 'c'},
        {"streams", required_argument, NULL, 'n'},   {"drop", required_argument, NULL, 'x'},
        {"no-bye", no_argument, NULL, 'b'},          {"port-per-stream", no_argument, NULL, 'p'},
        {"no-rtcp", no_argument, NULL, 'r'},         {"no-gso", no_argument, NULL, 'g'},
        {"transport", required_argument, NULL, 'T'}, {"state", required_argument, NULL, 'S'},
        {"speed", required_argument, NULL, 'V'},     {"stamp", no_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    const char *state_path = NULL;
    int64_t speed = 1; /* --speed: media seconds per wall second */
    const char *devices_path = NULL, *target = "127.0.0.1:5004", *clip_path = NULL;
    int64_t seconds = 10, want_streams = 0;
    uint64_t drops[MAX_DROPS];
    int ndrops = 0;
    bool bye = true, port_per_stream = false, rtcp = true, gso = true, rtsp = false;
    bool stamp = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'd': devices_path = optarg; break;
        case 's':
            if (!cu_parse_int64(optarg, &seconds) || seconds < 1)
                return 2;
            break;
        case 't': target = optarg; break;
        case 'c': clip_path = optarg; break;
        case 'n':
            if (!cu_parse_int64(optarg, &want_streams) || want_streams < 1)
                return 2;
            break;
        case 'x':
            for (char *tok = optarg; *tok && ndrops < MAX_DROPS;) {
                drops[ndrops++] = strtoull(tok, &tok, 10);
                if (*tok == ',')
                    tok++;
                else if (*tok)
                    return 2;
            }
            break;
        case 'b': bye = false; break;
        case 'm': stamp = true; break;
        case 'p': port_per_stream = true; break;
        case 'r': rtcp = false; break;
        case 'g': gso = false; break;
        case 'S': state_path = optarg; break;
        case 'V':
            if (!cu_parse_int64(optarg, &speed) || speed < 1 || speed > 64)
                return 2;
            break;
        case 'T':
            if (strcmp(optarg, "rtsp-tcp") == 0)
                rtsp = true;
            else if (strcmp(optarg, "srtp") != 0)
                return 2;
            break;
        default:
            fprintf(stderr, "usage: recorders --devices FILE --seconds S [--target HOST:PORT] "
                            "[--clip FILE] [--streams N] [--drop K,...] [--no-bye] "
                            "[--transport srtp|rtsp-tcp] [--state FILE] [--speed N] [--stamp]\n");
            return 2;
        }
    }
    if (!devices_path || !clip_path) {
        fprintf(stderr, "recorders: --devices and --clip are required\n");
        return 2;
    }
    cu_err err;
    if (ingest_srtp_init(&err) != CU_OK) {
        fprintf(stderr, "recorders: %s\n", err.msg);
        return 1;
    }
    clip c = {0};
    if (!clip_load(clip_path, &c)) {
        fprintf(stderr, "recorders: cannot read the clip %s\n", clip_path);
        return 1;
    }

    /* Devices, one JSON object per line. */
    FILE *df = fopen(devices_path, "r");
    if (!df) {
        fprintf(stderr, "recorders: cannot read %s\n", devices_path);
        return 1;
    }
    stream *streams = NULL;
    size_t nstreams = 0, cap = 0;
    char line[4096];
    while (fgets(line, sizeof(line), df)) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j)
            continue;
        if (nstreams == cap) {
            cap = cap ? cap * 2 : 64;
            streams = realloc(streams, cap * sizeof(*streams));
            if (!streams)
                abort();
        }
        memset(&streams[nstreams], 0, sizeof(*streams));
        if (stream_setup(&streams[nstreams], j))
            nstreams++;
        else
            fprintf(stderr, "recorders: skipping a device line without a usable key\n");
        json_decref(j);
        if (want_streams && (int64_t)nstreams == want_streams)
            break;
    }
    fclose(df);
    if (!nstreams) {
        fprintf(stderr, "recorders: no devices\n");
        return 1;
    }
    size_t nstate = 0;
    index_state *state = state_path ? state_load(state_path, &nstate) : NULL;
    for (size_t i = 0; i < nstreams && state_path; i++)
        if (!state_apply(&streams[i], state, nstate)) {
            fprintf(stderr, "recorders: cannot go on from %s\n", state_path);
            return 1;
        }

    /* Where to: loopback unless told otherwise. */
    char host[64];
    int port = 5004;
    const char *colon = strrchr(target, ':');
    if (!colon || (size_t)(colon - target) >= sizeof(host))
        return 2;
    memcpy(host, target, (size_t)(colon - target));
    host[colon - target] = '\0';
    int64_t port64;
    if (!cu_parse_int64(colon + 1, &port64) || port64 < 1 || port64 > 65535) {
        fprintf(stderr, "recorders: bad port in %s\n", target);
        return 2;
    }
    port = (int)port64;
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) {
        fprintf(stderr, "recorders: %s is not an IPv4 address\n", host);
        return 2;
    }
    sender x = {.fd = -1};
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nstreams + 64) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    for (size_t i = 0; i < nstreams && rtsp; i++) {
        stream *s = &streams[i];
        char sdp[512];
        snprintf(sdp, sizeof(sdp),
                 "v=0\r\no=- %u 0 IN IP4 127.0.0.1\r\ns=Custos bench recorder\r\n"
                 "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
                 "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
                 "a=control:streamid=0\r\n",
                 s->ssrc);
        if (!rtsp_client_open(&s->rtsp, host, port, s->serial, s->rtsp_password) ||
            !rtsp_client_publish(&s->rtsp, sdp)) {
            fprintf(stderr, "recorders: RTSP publish of %s: status %d %s\n", s->serial,
                    s->rtsp.status, s->rtsp.error);
            return 1;
        }
        s->fd = s->rtsp.fd;
    }
    for (size_t i = 0; i < nstreams && !rtsp; i++) {
        int sndbuf = 1 << 20;
        streams[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (streams[i].fd < 0) {
            fprintf(stderr, "recorders: socket: %s\n", strerror(errno));
            return 1;
        }
        setsockopt(streams[i].fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        streams[i].to = dst;
        if (port_per_stream)
            streams[i].to.sin_port = htons((uint16_t)(port + (int)i));
    }
    x.bufs = malloc(sizeof(*x.bufs) * BATCH);
    x.gso = gso;

    /* Spread the streams over the frame interval, and their start over two
     * seconds, as recorders switched on at unrelated moments are: their
     * keyframes (1 s GOP) and 2-second segment cuts then fall at all phases
     * instead of all at once. Each stream sends for @p seconds. */
    int64_t t0 = now_us() + 50000;
    for (size_t i = 0; i < nstreams; i++) {
        streams[i].phase_us = (int64_t)(i * FRAME_US / nstreams);
        streams[i].start_frame = (uint64_t)(i * 2 * FPS / nstreams);
        streams[i].next_sr_us =
            t0 + 1000000 + (int64_t)streams[i].start_frame * FRAME_US + streams[i].phase_us;
    }
    uint64_t stream_frames = (uint64_t)seconds * FPS;
    uint64_t total_frames = stream_frames + streams[nstreams - 1].start_frame;
    uint64_t late_frames = 0, dropped = 0, rtcp_sent = 0;
    size_t next = 0; /* the stream whose frame is due next */
    uint64_t frame_no = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    while (frame_no < total_frames) {
        if (frame_no < streams[next].start_frame || streams[next].frame >= stream_frames) {
            if (++next == nstreams) { /* this recorder is off for this tick */
                next = 0;
                frame_no++;
            }
            continue;
        }
        int64_t due = t0 + ((int64_t)frame_no * FRAME_US + streams[next].phase_us) / speed;
        int64_t now = now_us();
        /* --speed: the recorders' clock (capture times, sender reports) runs
         * that much faster than the wall's. */
        int64_t clock_us = t0 + (now - t0) * speed;
        if (due > now) {
            flush(&x);
            if (due - now > 200) {
                struct timespec ts = {0, (due - now - 100) * 1000};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        if (now - due > FRAME_US / speed)
            late_frames++;
        stream *s = &streams[next];
        if (!rtsp && x.fd != s->fd) {
            flush(&x);
            x.fd = s->fd;
        }
        size_t ilen = 0; /* --transport rtsp-tcp: the frame's interleaved bytes */
        const tpl_frame *fr = &c.frames[s->frame % c.nframes];
        uint32_t loop = (uint32_t)(s->frame / c.nframes);
        uint32_t ts_loop = loop * (uint32_t)c.nframes * (90000 / FPS);
        /* --stamp: the frame's first packet is an SEI NAL with its send time. */
        uint8_t sei[RTP_HDR + SEI_STAMP_LEN];
        if (stamp)
            sei_stamp(sei, c.pool + c.pkts[fr->first].off, now_us()); /* (the wall clock, as the viewer's) */
        for (int k = stamp ? -1 : 0; k < (int)fr->count; k++) {
            const tpl_packet sei_tp = {0, sizeof(sei), false};
            const tpl_packet *tp = k < 0 ? &sei_tp : &c.pkts[fr->first + (uint32_t)k];
            const uint8_t *tpl = k < 0 ? sei : c.pool + tp->off;
            if (rtsp && ilen + 4 + tp->len > sizeof(ibuf)) {
                if (!rtsp_client_write(&s->rtsp, ibuf, ilen))
                    x.send_errors++;
                ilen = 0;
            }
            uint8_t *b = rtsp ? ibuf + ilen + 4 : slot(&x);
            memcpy(b, tpl, tp->len);
            uint16_t seq = (uint16_t)(s->seq0 + s->sent);
            uint32_t ts =
                s->ts0 + ts_loop +
                ((uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7]);
            b[1] = (uint8_t)(96 | (tp->marker ? 0x80 : 0));
            b[2] = (uint8_t)(seq >> 8);
            b[3] = (uint8_t)seq;
            put32(b + 4, ts);
            put32(b + 8, s->ssrc);
            int len = (int)tp->len;
            if (!rtsp && srtp_protect(s->srtp, b, &len) != srtp_err_status_ok)
                continue;
            /* --drop: packets by their number in the stream (0, 1, ...),
             * protected (so the sequence advances) but never sent. */
            bool skip = false;
            for (int q = 0; q < ndrops; q++)
                skip |= drops[q] == s->sent;
            s->sent++;
            s->octets += tp->len - RTP_HDR;
            if (skip) {
                dropped++;
                continue;
            }
            if (rtsp) {
                interleave(ibuf + ilen, 0, (size_t)len);
                ilen += 4 + (size_t)len;
            } else {
                queue(&x, len, &s->to);
            }
        }
        s->frame++;
        if (rtcp && clock_us >= s->next_sr_us) {
            int len = rtcp_packet(s, clock_us, false, rtsp, rtsp ? ibuf + ilen + 4 : slot(&x));
            if (len > 0 && rtsp) {
                interleave(ibuf + ilen, 1, (size_t)len);
                ilen += 4 + (size_t)len;
                rtcp_sent++;
            } else if (len > 0) {
                queue(&x, len, &s->to);
                rtcp_sent++;
            }
            s->next_sr_us += 5000000;
        }
        if (rtsp && ilen && !rtsp_client_write(&s->rtsp, ibuf, ilen))
            x.send_errors++;
        /* A recorder that stops says so at once (RFC 3550 §6.6; for RTSP,
         * TEARDOWN: RFC 2326 §10.12). */
        if (bye && rtsp && s->frame == stream_frames) {
            if (!rtsp_client_teardown(&s->rtsp)) {
                fprintf(stderr, "recorders: TEARDOWN of %s: status %d %s\n", s->serial,
                        s->rtsp.status, s->rtsp.error);
                x.send_errors++;
            }
            s->fd = -1;
        } else if (bye && rtcp && s->frame == stream_frames) {
            int len = rtcp_packet(s, clock_us, true, false, slot(&x));
            if (len > 0) {
                queue(&x, len, &s->to);
                rtcp_sent++;
            }
        }
        if (++next == nstreams) {
            next = 0;
            frame_no++;
        }
    }
    flush(&x);
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
                          ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
                          ru0.ru_stime.tv_usec) /
                     1e6;
    if (state_path && !state_save(state_path, state, nstate, streams, nstreams))
        fprintf(stderr, "recorders: cannot save %s\n", state_path);
    free(state);
    uint64_t sent = 0, octets = 0;
    json_t *list = json_array();
    for (size_t i = 0; i < nstreams; i++) {
        sent += streams[i].sent;
        octets += streams[i].octets;
        json_array_append_new(
            list, json_pack("{s:I, s:i, s:I}", "ssrc", (json_int_t)streams[i].ssrc, "first_seq",
                            streams[i].seq0, "packets", (json_int_t)streams[i].sent));
        srtp_dealloc(streams[i].srtp);
        if (streams[i].fd >= 0)
            close(streams[i].fd);
    }
    json_t *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:o}", "streams",
                            (json_int_t)nstreams, "seconds", (json_int_t)seconds, "packets_sent",
                            (json_int_t)(sent - dropped), "rtcp_sent", (json_int_t)rtcp_sent,
                            "packets_dropped_on_purpose", (json_int_t)dropped, "payload_bytes",
                            (json_int_t)octets, "clip_frames", (json_int_t)c.nframes,
                            "sender_cpu_s", cpu, "late_frames", (json_int_t)late_frames,
                            "send_errors", (json_int_t)x.send_errors, "per_stream", list);
    char *text = json_dumps(out, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(out);
    free(streams);
    free(x.bufs);
    free(c.pool);
    free(c.pkts);
    free(c.frames);
    return 0;
}
