/*
 * Live SRTP/RTP ingest: worker threads, each with its own event loop and
 * SO_REUSEPORT socket, receive datagrams in recvmmsg batches; per packet:
 * device lookup by SSRC, SRTP unprotect, the pipeline (validation, reorder,
 * keyframes, segments). Segments go to the store without waiting.
 *
 * The kernel steers each datagram to the worker that owns its SSRC (see
 * steer_by_ssrc), so one device has one SRTP session and one replay window.
 * The hot path takes no lock and makes no allocation or system call beyond
 * the batched receive: a worker owns its devices and streams outright.
 * Other threads talk to a worker through its inbox (a mutex and an event),
 * which it drains between batches. Two service threads do what may block:
 * the control thread polls the database for device changes (so a revocation
 * takes effect within ingest.device_poll_ms) and opens recordings (fsyncs).
 */
#include "ingest_internal.h"
#include "rtsp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <srtp2/srtp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH            INGEST_BATCH
#define BATCHES_PER_WAKE 16 /* then let timers and the inbox run */
#define RX_BUF           INGEST_RX_BUF
#define SRTP_OVERHEAD    32   /* tag and MKI room beyond the largest RTP packet */
#define POOL_SLOTS       4096 /* reorder-window packets per worker */

/* ----------------------------------------------------------------- drops */

typedef enum {
    DROP_UNKNOWN_SSRC,
    DROP_REVOKED,
    DROP_SRTP_AUTH,
    DROP_REPLAY,
    DROP_SRTP_OTHER,
    DROP_MALFORMED,
    DROP_OVERSIZE,
    DROP_PAYLOAD_TYPE,
    DROP_NOMEM,
    DROP_REASONS
} drop_reason;

static const char *const drop_names[DROP_REASONS] = {
    "unknown_ssrc", "revoked",  "srtp_auth",    "replay", "srtp_other",
    "malformed",    "oversize", "payload_type", "nomem",
};

CU_METRIC_DEFINE(drop_unknown, CU_METRIC_COUNTER, "custos_ingest_dropped_total",
                 "reason=\"unknown_ssrc\"", "Packets dropped, by reason.")
CU_METRIC_DEFINE(drop_revoked, CU_METRIC_COUNTER, "custos_ingest_dropped_total",
                 "reason=\"revoked\"", "Packets dropped, by reason.")
CU_METRIC_DEFINE(drop_auth, CU_METRIC_COUNTER, "custos_ingest_dropped_total",
                 "reason=\"srtp_auth\"", "Packets dropped, by reason.")
CU_METRIC_DEFINE(drop_replay, CU_METRIC_COUNTER, "custos_ingest_dropped_total", "reason=\"replay\"",
                 "Packets dropped, by reason.")
CU_METRIC_DEFINE(drop_srtp_other, CU_METRIC_COUNTER, "custos_ingest_dropped_total",
                 "reason=\"srtp_other\"", "Packets dropped, by reason.")
CU_METRIC_DEFINE(drop_malformed, CU_METRIC_COUNTER, "custos_ingest_dropped_total",
                 "reason=\"malformed\"", "Packets dropped, by reason.")
CU_METRIC_DEFINE(drop_oversize, CU_METRIC_COUNTER, "custos_ingest_dropped_total",
                 "reason=\"oversize\"", "Packets dropped, by reason.")
CU_METRIC_DEFINE(drop_pt, CU_METRIC_COUNTER, "custos_ingest_dropped_total",
                 "reason=\"payload_type\"", "Packets dropped, by reason.")
CU_METRIC_DEFINE(drop_nomem, CU_METRIC_COUNTER, "custos_ingest_dropped_total", "reason=\"nomem\"",
                 "Packets dropped, by reason.")
static cu_metric *const drop_metrics[DROP_REASONS] = {
    &drop_unknown,   &drop_revoked,  &drop_auth, &drop_replay, &drop_srtp_other,
    &drop_malformed, &drop_oversize, &drop_pt,   &drop_nomem,
};

CU_METRIC_DEFINE(rx_packets_metric, CU_METRIC_COUNTER, "custos_ingest_packets_total", "",
                 "Packets received and accepted (RTP and RTCP).")
CU_METRIC_DEFINE(rx_reads_metric, CU_METRIC_COUNTER, "custos_ingest_reads_total", "",
                 "Datagrams or GRO trains of datagrams read from the sockets.")
CU_METRIC_DEFINE(rx_rtcp_metric, CU_METRIC_COUNTER, "custos_ingest_rtcp_packets_total", "",
                 "Of the accepted packets, those that were RTCP.")
CU_METRIC_DEFINE(rx_bytes_metric, CU_METRIC_COUNTER, "custos_ingest_bytes_total", "",
                 "Bytes of accepted RTP packets after SRTP.")
/* At most one log line per second per reason, across workers. */
static _Atomic int64_t drop_last_log_us[DROP_REASONS];

/* ------------------------------------------------------------- messages */

void msg_free(msg *m)
{
    if (m->kind == MSG_TAP && m->attach && m->tap) { /* never delivered */
        pipe_tap_end(m->tap);
        pipe_tap_unref(m->tap);
    }
    ctl_device_wipe(&m->device);
    free(m);
}

/*
 * An SRTP device as the worker it is steered to knows it, with its replay
 * marks (docs/srtp-replay.md): what was accepted before the last restart is
 * refused (the floor), and what is accepted now is saved from time to time.
 */
typedef struct dev {
    ctl_device info; /* secrets wiped once the SRTP session exists */
    srtp_t srtp;
    ingest_worker *w;
    ingest_stream *st;
    bool active;
    bool has_floor;      /* a mark was saved before this start */
    uint64_t rtp_floor;  /* refuse RTP whose index is at or below it */
    uint32_t rtcp_floor; /* and SRTCP */
    uint32_t floor_roc;  /* the ROC the session was started with */
    bool authenticated;  /* a packet authenticated since then */
    bool roc_found;      /* one above the floor: the stream's ROC is known */
    bool seen_rtp, seen_rtcp;
    uint64_t rtp_high; /* highest index accepted */
    uint32_t rtcp_high;
    uint64_t saved_rtp; /* as last handed to be saved */
    uint32_t saved_rtcp;
    bool dirty;
    uint64_t revoked_drops, replay_drops; /* since the last tick: alerts */
} dev;

#define REPLAY_SLACK  64 /* packets added to a margin after a crash */
#define ROC_HUNT      4  /* ROCs beyond the saved one tried after a restart */
#define RTP_INDEX_MAX ((UINT64_C(1) << 48) - 1)

void worker_post(ingest_worker *w, msg *m)
{
    pthread_mutex_lock(&w->inbox_lock);
    m->next = NULL;
    if (w->inbox_tail)
        w->inbox_tail->next = m;
    else
        w->inbox = m;
    w->inbox_tail = m;
    pthread_cond_signal(&w->inbox_cond);
    pthread_mutex_unlock(&w->inbox_lock);
    event_active(w->inbox_ev, EV_READ, 0);
}

static void drop(drop_reason r, uint32_t ssrc)
{
    cu_metric_inc(drop_metrics[r]);
    int64_t now = cu_time_ms() * 1000;
    int64_t last = atomic_load_explicit(&drop_last_log_us[r], memory_order_relaxed);
    if (now - last >= 1000000 && atomic_compare_exchange_strong(&drop_last_log_us[r], &last, now))
        CU_LOG(CU_LOG_WARN, "ingest", "dropping packets: %s (ssrc %u; at most one line a second)",
               drop_names[r], ssrc);
}

/* ----------------------------------------------------- device table */

static dev *dev_find(ingest_worker *w, uint32_t ssrc)
{
    if (!w->slots)
        return NULL;
    size_t mask = w->slots - 1;
    for (size_t i = (ssrc * 2654435761u) & mask;; i = (i + 1) & mask) {
        if (w->slot_dev[i] < 0)
            return NULL;
        if (w->slot_ssrc[i] == ssrc)
            return w->devs[w->slot_dev[i]];
    }
}

static void dev_rehash(ingest_worker *w)
{
    size_t slots = 64;
    while (slots < w->ndevs * 2)
        slots <<= 1;
    free(w->slot_ssrc);
    free(w->slot_dev);
    w->slot_ssrc = cu_xcalloc(slots, sizeof(uint32_t));
    w->slot_dev = cu_xmalloc(slots * sizeof(int32_t));
    for (size_t i = 0; i < slots; i++)
        w->slot_dev[i] = -1;
    w->slots = slots;
    for (size_t d = 0; d < w->ndevs; d++) {
        uint32_t ssrc = w->devs[d]->info.ssrc;
        size_t i = (ssrc * 2654435761u) & (slots - 1);
        while (w->slot_dev[i] >= 0)
            i = (i + 1) & (slots - 1);
        w->slot_ssrc[i] = ssrc;
        w->slot_dev[i] = (int32_t)d;
    }
}

/* ------------------------------------------------------------ streams */

/* Begin a recording for @p d's stream: its meta names the device and format. */
static bool dev_stream_begin(ingest_worker *w, dev *d)
{
    char meta[512];
    pipe_stream_config pc = w->svc->pipe_cfg;
    pc.codec = pipe_codec_parse(d->info.codec);
    pc.payload_type = (uint8_t)d->info.payload_type;
    pc.clock_rate = (uint32_t)d->info.clock_rate;
    snprintf(meta, sizeof(meta),
             "source=srtp\ndevice_id=%lld\ndevice_serial=%s\nssrc=%u\nsuite=%s\ncodec=%s\n"
             "payload_type=%d\nclock_rate=%d\n",
             (long long)d->info.id, d->info.serial, d->info.ssrc, d->info.suite, d->info.codec,
             d->info.payload_type, d->info.clock_rate);
    return ingest_stream_begin(d->st, &pc, d->info.ssrc, meta);
}

/* ------------------------------------------------------------ devices */

static void dev_free(dev *d)
{
    ingest_stream_release(d->st);
    if (d->srtp)
        srtp_dealloc(d->srtp);
    ctl_device_wipe(&d->info);
    free(d);
}

static bool dev_srtp(dev *d)
{
    srtp_policy_t p;
    memset(&p, 0, sizeof(p));
    if (strcmp(d->info.suite, "aead_aes_256_gcm") == 0) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtcp);
    } else {
        srtp_crypto_policy_set_rtp_default(&p.rtp);
        srtp_crypto_policy_set_rtcp_default(&p.rtcp);
    }
    p.ssrc.type = ssrc_specific;
    p.ssrc.value = d->info.ssrc;
    p.key = d->info.key;
    p.window_size = 256; /* replay protection: 4x the reorder window; each
                          * arrival shifts this bitmap, so it is not larger */
    p.allow_repeat_tx = 0;
    bool ok = srtp_create(&d->srtp, &p) == srtp_err_status_ok;
    ctl_device_wipe(&d->info); /* the session holds the derived keys now */
    if (ok && d->has_floor && d->floor_roc)
        ok = srtp_set_stream_roc(d->srtp, d->info.ssrc, d->floor_roc) == srtp_err_status_ok;
    return ok;
}

/*
 * The floor from the mark saved before this start: exact after a clean
 * stop; after a crash, what may have been accepted since the last save is
 * refused too (twice the last interval's advance, plus slack).
 */
static void dev_floor(dev *d, const ctl_replay_mark *m)
{
    if (!m->known)
        return;
    uint64_t rtp_margin = m->clean ? 0 : 2 * m->rtp_step + REPLAY_SLACK;
    uint64_t rtcp_margin = m->clean ? 0 : 2 * (uint64_t)m->rtcp_step + REPLAY_SLACK;
    d->has_floor = true;
    d->rtp_floor =
        m->rtp_index + rtp_margin > RTP_INDEX_MAX ? RTP_INDEX_MAX : m->rtp_index + rtp_margin;
    d->rtcp_floor = m->rtcp_index + rtcp_margin > 0x7fffffff
                        ? 0x7fffffff
                        : (uint32_t)(m->rtcp_index + rtcp_margin);
    /* Packets go on from the highest accepted, not from the floor. */
    d->floor_roc = (uint32_t)(m->rtp_index >> 16);
    d->saved_rtp = m->rtp_index;
    d->saved_rtcp = m->rtcp_index;
}

static void device_update(ingest_worker *w, const ctl_device *info)
{
    dev *d = dev_find(w, info->ssrc);
    if (d && d->info.id != info->id)
        d = NULL; /* an SSRC reused by another device: cannot happen (unique) */
    if (d) {
        if (!info->active && d->active) {
            /* Revoked: end what it was sending; its packets are refused from now. */
            ingest_stream_end(d->st);
            d->active = false;
        }
        d->info.version = info->version;
        return;
    }
    d = cu_xcalloc(1, sizeof(*d));
    d->info = *info;
    d->w = w;
    dev_floor(d, &info->replay);
    char label[80];
    snprintf(label, sizeof(label), "device %s", info->serial);
    d->st = ingest_stream_new(w, info->id, info->serial, label);
    d->active = info->active;
    if (d->active && !dev_srtp(d)) {
        CU_LOG(CU_LOG_ERROR, "ingest", "device %s: cannot create its SRTP session", info->serial);
        d->active = false;
    }
    if (w->ndevs == w->capdevs) {
        w->capdevs = w->capdevs ? w->capdevs * 2 : 64;
        dev **bigger = realloc(w->devs, w->capdevs * sizeof(*bigger));
        if (!bigger)
            abort();
        w->devs = bigger;
    }
    w->devs[w->ndevs++] = d;
    dev_rehash(w);
}

/* -------------------------------------------------------- replay marks */

/* The SRTCP index of a protected packet (0 when it is too short to hold one). */
static uint32_t srtcp_index(const dev *d, const uint8_t *buf, size_t len)
{
    /* AES-CM: ... ‖ E+index ‖ tag (10); AEAD: ... ‖ tag ‖ E+index */
    size_t tail = strcmp(d->info.suite, "aead_aes_256_gcm") == 0 ? 4 : 4 + 10;
    if (len < 8 + tail)
        return 0;
    const uint8_t *t = buf + len - tail;
    return ((uint32_t)t[0] << 24 | (uint32_t)t[1] << 16 | (uint32_t)t[2] << 8 | t[3]) & 0x7fffffff;
}

/*
 * After a restart the session starts at the saved ROC (as libsrtp's
 * "pending" ROC, which decides a packet's index until it is cleared). A
 * recorder that went on sending while ingestd was down may be a few
 * rollovers further, and a replayed packet from just before a rollover one
 * behind: try those (a copy of the packet each time). Whatever
 * authenticates, the pending ROC is cleared, so that libsrtp follows the
 * stream's rollovers itself from then on.
 */
static srtp_err_status_t roc_hunt(ingest_worker *w, dev *d, uint8_t *buf, size_t len, int *n)
{
    for (int k = -1; k <= ROC_HUNT; k++) {
        if (k == 0 || (k < 0 && d->floor_roc == 0))
            continue;
        memcpy(buf, w->roc_scratch, len);
        *n = (int)len;
        if (srtp_set_stream_roc(d->srtp, d->info.ssrc, d->floor_roc + (uint32_t)k) !=
            srtp_err_status_ok)
            break;
        if (srtp_unprotect(d->srtp, buf, n) == srtp_err_status_ok) {
            srtp_set_stream_roc(d->srtp, d->info.ssrc, 0); /* none pending */
            return srtp_err_status_ok;
        }
    }
    /* As before: the saved ROC until something authenticated, then libsrtp's own. */
    srtp_set_stream_roc(d->srtp, d->info.ssrc, d->authenticated ? 0 : d->floor_roc);
    return srtp_err_status_auth_fail;
}

/* The 48-bit index of @p seq: the one nearest @p high (RFC 3711, 3.3.1). */
static uint64_t index_near(uint64_t high, uint16_t seq)
{
    uint64_t roc = high >> 16;
    int32_t diff = (int32_t)seq - (int32_t)(uint16_t)high;
    if (diff > 32768 && roc > 0)
        roc--;
    else if (diff < -32768)
        roc++;
    return roc << 16 | seq;
}

/*
 * An authenticated packet: false when it was accepted before the last
 * restart (at or below the floor); otherwise its index raises the marks.
 */
static bool replay_mark(dev *d, bool rtcp, const uint8_t *buf, uint32_t rtcp_index)
{
    if (rtcp) {
        if (d->has_floor && rtcp_index <= d->rtcp_floor)
            return false;
        if (!d->seen_rtcp || rtcp_index > d->rtcp_high) {
            d->rtcp_high = rtcp_index;
            d->seen_rtcp = d->dirty = true;
        }
        return true;
    }
    uint16_t seq = (uint16_t)(buf[2] << 8 | buf[3]);
    uint64_t index;
    if (d->seen_rtp) {
        index = index_near(d->rtp_high, seq);
    } else {
        uint32_t roc = 0;
        if (srtp_get_stream_roc(d->srtp, d->info.ssrc, &roc) != srtp_err_status_ok)
            return false;
        index = (uint64_t)roc << 16 | seq;
    }
    if (d->has_floor && index <= d->rtp_floor)
        return false;
    d->roc_found = true; /* (not on a replay: an attacker must not settle it) */
    if (!d->seen_rtp || index > d->rtp_high) {
        d->rtp_high = index;
        d->seen_rtp = d->dirty = true;
    }
    return true;
}

static ctl_replay_mark dev_mark(dev *d, bool clean)
{
    ctl_replay_mark m = {.device_id = d->info.id, .known = true, .clean = clean};
    m.rtp_index = d->seen_rtp ? d->rtp_high : d->saved_rtp;
    m.rtcp_index = d->seen_rtcp ? d->rtcp_high : d->saved_rtcp;
    m.rtp_step = m.rtp_index > d->saved_rtp ? m.rtp_index - d->saved_rtp : 0;
    m.rtcp_step = m.rtcp_index > d->saved_rtcp ? m.rtcp_index - d->saved_rtcp : 0;
    d->saved_rtp = m.rtp_index;
    d->saved_rtcp = m.rtcp_index;
    d->dirty = false;
    return m;
}

/* Hand marks to the control thread, which saves them. */
static void marks_hand(ingest_service *s, const ctl_replay_mark *m, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->nmarks + n > s->capmarks) {
        size_t cap = s->capmarks ? s->capmarks : 64;
        while (cap < s->nmarks + n)
            cap *= 2;
        ctl_replay_mark *bigger = realloc(s->marks, cap * sizeof(*bigger));
        if (!bigger)
            abort();
        s->marks = bigger;
        s->capmarks = cap;
    }
    memcpy(s->marks + s->nmarks, m, n * sizeof(*m));
    s->nmarks += n;
    pthread_mutex_unlock(&s->lock);
}

/* Every device whose marks moved (all that saw packets when @p clean: a stop). */
static void worker_hand_marks(ingest_worker *w, bool clean)
{
    ctl_replay_mark batch[64];
    size_t n = 0;
    for (size_t i = 0; i < w->ndevs; i++) {
        dev *d = w->devs[i];
        if (!d->dirty && !(clean && (d->seen_rtp || d->seen_rtcp)))
            continue;
        batch[n++] = dev_mark(d, clean);
        if (n == 64) {
            marks_hand(w->svc, batch, n);
            n = 0;
        }
    }
    marks_hand(w->svc, batch, n);
}

/* -------------------------------------------------------------- alerts */

static const char *const alert_kinds[INGEST_ALERT_KINDS] = {"device_revoked_attempt", "srtp_replay",
                                                            "rtsp_auth_failures"};
static const uint64_t alert_threshold[INGEST_ALERT_KINDS] = {1, 1, 5};
#define ALERT_WINDOW_US 60000000LL  /* the threshold counts within a minute */
#define ALERT_REPEAT_US 600000000LL /* one alert per subject and kind in 10 minutes */

void ingest_alert_note(ingest_service *s, ingest_alert_kind kind, const char *subject,
                       const char *source, uint64_t n)
{
    int64_t now = cu_time_us();
    pthread_mutex_lock(&s->lock);
    ingest_alert_slot *slot = NULL, *oldest = &s->alerts[0];
    for (int i = 0; i < INGEST_ALERT_SLOTS && !slot; i++) {
        ingest_alert_slot *a = &s->alerts[i];
        if (a->used && a->kind == kind && strcmp(a->subject, subject) == 0)
            slot = a;
        else if (!a->used || (oldest->used && a->since_us < oldest->since_us))
            oldest = a;
    }
    if (!slot) {
        slot = oldest;
        memset(slot, 0, sizeof(*slot));
        slot->used = true;
        slot->kind = kind;
        cu_strlcpy(slot->subject, subject, sizeof(slot->subject));
        slot->since_us = now;
    }
    cu_strlcpy(slot->source, source, sizeof(slot->source));
    slot->count += n;
    pthread_mutex_unlock(&s->lock);
}

/* The devices' counts since the last tick, to the service. */
static void worker_hand_alerts(ingest_worker *w)
{
    for (size_t i = 0; i < w->ndevs; i++) {
        dev *d = w->devs[i];
        if (d->revoked_drops)
            ingest_alert_note(w->svc, INGEST_ALERT_REVOKED, d->info.serial, "srtp",
                              d->revoked_drops);
        if (d->replay_drops)
            ingest_alert_note(w->svc, INGEST_ALERT_REPLAY, d->info.serial, "srtp", d->replay_drops);
        d->revoked_drops = d->replay_drops = 0;
    }
}

/* The alerts due (control thread; called with s->lock held, returns with it held). */
static void raise_alerts(ingest_service *s, PGconn **conn)
{
    ingest_alert_slot due[INGEST_ALERT_SLOTS];
    int n = 0;
    int64_t now = cu_time_us();
    for (int i = 0; i < INGEST_ALERT_SLOTS; i++) {
        ingest_alert_slot *a = &s->alerts[i];
        if (!a->used)
            continue;
        bool recent = a->raised_us && now - a->raised_us < ALERT_REPEAT_US;
        if (a->count >= alert_threshold[a->kind] && !recent) {
            due[n++] = *a;
            a->raised_us = now;
            a->count = 0;
            a->since_us = now;
        } else if (!recent && now - a->since_us > ALERT_WINDOW_US) {
            a->used = false; /* below the threshold for a whole minute: forgotten */
        }
    }
    if (!n)
        return;
    pthread_mutex_unlock(&s->lock);
    cu_err err;
    for (int i = 0; i < n; i++) {
        static const char *const what[INGEST_ALERT_KINDS] = {
            "packets or connections from the revoked device refused",
            "replayed SRTP packets refused", "failed RTSP authentications"};
        char detail[200];
        snprintf(detail, sizeof(detail), "%llu %s (last from %s)", (unsigned long long)due[i].count,
                 what[due[i].kind], due[i].source);
        const char *p[4] = {alert_kinds[due[i].kind], due[i].subject, due[i].source, detail};
        if (!*conn && db_connect(s->dsn, "custos-ingest", conn, &err) != CU_OK) {
            *conn = NULL;
            CU_LOG(CU_LOG_WARN, "ingest", "alert %s for %s not raised: %s",
                   alert_kinds[due[i].kind], due[i].subject, err.msg);
            continue;
        }
        PGresult *res =
            PQexecParams(*conn, "SELECT alert_raise($1, $2, $3, $4)", 4, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            CU_LOG(CU_LOG_WARN, "ingest", "alert %s for %s not raised: %s",
                   alert_kinds[due[i].kind], due[i].subject, PQerrorMessage(*conn));
            PQfinish(*conn);
            *conn = NULL;
        } else {
            CU_LOG(CU_LOG_WARN, "ingest", "security alert %s: %s: %s", alert_kinds[due[i].kind],
                   due[i].subject, detail);
        }
        PQclear(res);
    }
    pthread_mutex_lock(&s->lock);
}

/* ----------------------------------------------------------------- RTCP */

/* ------------------------------------------------------------- receive */

static void on_packet(ingest_worker *w, uint8_t *buf, size_t len, bool truncated, int64_t now_us)
{
    uint32_t ssrc = 0;
    if (truncated || len > PIPE_RTP_MAX + SRTP_OVERHEAD) {
        drop(DROP_OVERSIZE, 0);
        return;
    }
    if (!pipe_peek_ssrc(buf, len, &ssrc)) {
        drop(DROP_MALFORMED, 0);
        return;
    }
    dev *d = dev_find(w, ssrc);
    if (!d) {
        drop(DROP_UNKNOWN_SSRC, ssrc);
        return;
    }
    if (!d->active) {
        drop(DROP_REVOKED, ssrc);
        d->revoked_drops++;
        return;
    }
    int n = (int)len;
    bool rtcp = pipe_is_rtcp(buf, len);
    uint32_t rtcp_index = rtcp ? srtcp_index(d, buf, len) : 0;
    bool hunting = !rtcp && d->has_floor && !d->roc_found;
    if (hunting)
        memcpy(w->roc_scratch, buf, len); /* unprotect may leave it garbled */
    srtp_err_status_t st =
        rtcp ? srtp_unprotect_rtcp(d->srtp, buf, &n) : srtp_unprotect(d->srtp, buf, &n);
    if (st == srtp_err_status_auth_fail && hunting)
        st = roc_hunt(w, d, buf, len, &n);
    else if (st == srtp_err_status_ok && hunting && !d->authenticated)
        srtp_set_stream_roc(d->srtp, d->info.ssrc, 0); /* none pending from now */
    if (st == srtp_err_status_ok && hunting)
        d->authenticated = true;
    if (st == srtp_err_status_ok && !replay_mark(d, rtcp, buf, rtcp_index))
        st = srtp_err_status_replay_old; /* accepted before the last restart */
    if (st != srtp_err_status_ok) {
        bool replay = st == srtp_err_status_replay_fail || st == srtp_err_status_replay_old;
        drop(st == srtp_err_status_auth_fail ? DROP_SRTP_AUTH
             : replay                        ? DROP_REPLAY
                                             : DROP_SRTP_OTHER,
             ssrc);
        d->replay_drops += replay;
        return;
    }
    cu_metric_inc(&rx_packets_metric);
    d->st->last_us = now_us;
    if (rtcp) {
        cu_metric_inc(&rx_rtcp_metric);
        ingest_stream_rtcp(d->st, buf, (size_t)n);
        return;
    }
    if (!d->st->pipe && !dev_stream_begin(w, d)) {
        drop(DROP_MALFORMED, ssrc);
        return;
    }
    pipe_rtp_status ps = ingest_stream_push(d->st, buf, (size_t)n, now_us);
    if (ps == PIPE_RTP_OK)
        cu_metric_add(&rx_bytes_metric, n);
    else
        drop(ps == PIPE_RTP_PAYLOAD_TYPE ? DROP_PAYLOAD_TYPE
             : ps == PIPE_RTP_NOMEM      ? DROP_NOMEM
             : ps == PIPE_RTP_TOO_LONG   ? DROP_OVERSIZE
                                         : DROP_MALFORMED,
             ssrc);
}

/* Read everything the socket holds (up to BATCHES_PER_WAKE batches). */
/* The datagram size of a UDP GRO train, or 0 for a single datagram. */
static size_t gro_size(struct msghdr *m)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int size;
            memcpy(&size, CMSG_DATA(c), sizeof(size));
            return size > 0 ? (size_t)size : 0;
        }
    }
    return 0;
}

/*
 * Read everything the socket holds (up to BATCHES_PER_WAKE batches). With
 * UDP_GRO the kernel hands over runs of same-flow datagrams as one buffer
 * and their size; they are split here, each still its own datagram.
 */
static int drain_socket(ingest_worker *w)
{
    int total = 0;
    for (int round = 0; round < BATCHES_PER_WAKE; round++) {
        for (int i = 0; i < BATCH; i++) {
            w->iov[i].iov_base = w->bufs[i];
            w->iov[i].iov_len = RX_BUF;
            w->msgs[i].msg_hdr = (struct msghdr){.msg_iov = &w->iov[i],
                                                 .msg_iovlen = 1,
                                                 .msg_control = w->ctrl[i],
                                                 .msg_controllen = sizeof(w->ctrl[i])};
        }
        int n = recvmmsg(w->fd, w->msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break; /* EAGAIN: drained */
        int64_t now_us = cu_time_us();
        cu_metric_add(&rx_reads_metric, n);
        for (int i = 0; i < n; i++) {
            struct msghdr *m = &w->msgs[i].msg_hdr;
            size_t len = w->msgs[i].msg_len, seg = gro_size(m);
            bool truncated = (m->msg_flags & MSG_TRUNC) != 0;
            if (!seg || seg >= len) {
                on_packet(w, w->bufs[i], len, truncated, now_us);
                continue;
            }
            for (size_t off = 0; off < len; off += seg)
                on_packet(w, w->bufs[i] + off, len - off < seg ? len - off : seg, false, now_us);
        }
        total += n;
        if (n < BATCH)
            break;
    }
    return total;
}

/*
 * Waking for every few datagrams costs more than the datagrams (a context
 * switch is several microseconds here): once a socket is busy, it is read
 * every ingest.coalesce_us instead of on each arrival, so each wake takes a
 * full batch. An idle socket goes back to waking on arrival.
 */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    ingest_worker *w = arg;
    (void)fd;
    (void)what;
    drain_socket(w);
    if (w->coalesce.tv_usec > 0) {
        event_del(w->rx_ev);
        event_add(w->rx_timer, &w->coalesce);
    }
}

static void on_rx_timer(evutil_socket_t fd, short what, void *arg)
{
    ingest_worker *w = arg;
    (void)fd;
    (void)what;
    if (drain_socket(w) > 0)
        event_add(w->rx_timer, &w->coalesce);
    else
        event_add(w->rx_ev, NULL);
}

/* Reorder timeouts every tick; idle streams end. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    ingest_worker *w = arg;
    (void)fd;
    (void)what;
    int64_t now = cu_time_ms() * 1000;
    ingest_streams_tick(w, now);
    if (now >= w->next_mark_save_us) {
        worker_hand_marks(w, false);
        worker_hand_alerts(w);
        w->next_mark_save_us = now + w->svc->cfg->ingest_replay_save_ms * 1000;
    }
}

static void drain_inbox(ingest_worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    msg *m = w->inbox;
    w->inbox = w->inbox_tail = NULL;
    pthread_mutex_unlock(&w->inbox_lock);
    while (m) {
        msg *next = m->next;
        if (m->kind == MSG_DEVICE) {
            device_update(w, &m->device);
        } else if (m->kind == MSG_PULL) {
            rtsp_pull_device(w, &m->device);
        } else if (m->kind == MSG_REVOKED) {
            rtsp_worker_device_revoked(w, m->device.id, m->device.serial);
        } else if (m->kind == MSG_TAP) {
            ingest_stream_tap(w, m);
        } else {
            ingest_stream_opened(w, m);
        }
        msg_free(m);
        m = next;
    }
}

static void on_inbox(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain_inbox(arg);
}

static void *worker_main(void *arg)
{
    ingest_worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "ingest-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    event_base_dispatch(w->base);
    /* Stopping: end every stream, waiting for recordings still being opened
     * so that no received footage is dropped. */
    w->stopping = true;
    drain_inbox(w);
    rtsp_worker_close_all(w);
    rtsp_pull_close_all(w);
    ingest_streams_end_all(w);
    pthread_mutex_lock(&w->inbox_lock);
    while (w->opening > 0) {
        while (!w->inbox)
            pthread_cond_wait(&w->inbox_cond, &w->inbox_lock);
        pthread_mutex_unlock(&w->inbox_lock);
        drain_inbox(w);
        pthread_mutex_lock(&w->inbox_lock);
    }
    pthread_mutex_unlock(&w->inbox_lock);
    return NULL;
}

/* -------------------------------------------------------- control thread */

/* The worker the kernel steers this SSRC's datagrams to (see steer_by_ssrc). */
static int owner_of(const ingest_service *s, uint32_t ssrc)
{
    return (int)(ssrc % (uint32_t)s->nworkers);
}

static void on_device(void *ctx, const ctl_device *d)
{
    ingest_service *s = ctx;
    msg *m = cu_xcalloc(1, sizeof(*m));
    m->kind = MSG_DEVICE;
    m->device = *d;
    worker_post(&s->workers[owner_of(s, d->ssrc)], m);
    /* Pulls are spread by device id; the worker ignores a device it neither
     * pulls from nor should. */
    m = cu_xcalloc(1, sizeof(*m));
    m->kind = MSG_PULL;
    m->device = *d;
    worker_post(&s->workers[(size_t)d->id % (size_t)s->nworkers], m);
    rtsp_service_device(s->rtsp, d);
    if (!d->active) {
        /* Cut off at once, wherever it is connected. */
        for (int i = 0; i < s->nworkers; i++) {
            m = cu_xcalloc(1, sizeof(*m));
            m->kind = MSG_REVOKED;
            m->device.id = d->id;
            cu_strlcpy(m->device.serial, d->serial, sizeof(m->device.serial));
            worker_post(&s->workers[i], m);
        }
    }
    CU_LOG(CU_LOG_INFO, "ingest", "device %s (ssrc %u) %s", d->serial, d->ssrc,
           d->active ? "active" : "revoked");
}

static void poll_devices(ingest_service *s, PGconn **conn)
{
    cu_err err;
    if (!*conn && db_connect(s->dsn, "custos-ingest", conn, &err) != CU_OK) {
        *conn = NULL;
        if (s->device_errors++ % 20 == 0)
            CU_LOG(CU_LOG_WARN, "ingest", "device list: %s (known devices keep working)", err.msg);
        return;
    }
    int64_t max = s->device_version;
    if (ctl_devices_changed(*conn, s->keys, s->device_version, on_device, s, &max, &err) != CU_OK) {
        if (s->device_errors++ % 20 == 0)
            CU_LOG(CU_LOG_WARN, "ingest", "device list: %s", err.msg);
        PQfinish(*conn);
        *conn = NULL;
        return;
    }
    s->device_errors = 0;
    s->device_version = max;
}

void ingest_request_open(ingest_service *s, open_req *r)
{
    r->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->opens_tail)
        s->opens_tail->next = r;
    else
        s->opens = r;
    s->opens_tail = r;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void do_open(ingest_service *s, open_req *r)
{
    cu_err err;
    msg *m = cu_xcalloc(1, sizeof(*m));
    m->kind = MSG_OPENED;
    m->stream_id = r->stream_id;
    m->generation = r->generation;
    store_recording_attrs attrs = {.device_id = r->device_id,
                                   .meta = r->meta,
                                   .continues = r->has_continues ? &r->continues : NULL};
    if (store_recording_open(s->store, &attrs, &m->rec, &m->rec_id, &err) != CU_OK) {
        CU_LOG(CU_LOG_ERROR, "ingest", "cannot start a recording for device %lld: %s",
               (long long)r->device_id, err.msg);
        m->rec = NULL;
    }
    worker_post(&s->workers[r->worker], m);
}

static int mark_order(const void *a, const void *b)
{
    const ctl_replay_mark *x = a, *y = b;
    if (x->device_id != y->device_id)
        return x->device_id < y->device_id ? -1 : 1;
    return x->rtp_index < y->rtp_index ? -1 : x->rtp_index > y->rtp_index ? 1 : 0;
}

/* Keep one mark per device, the highest (waiting marks stay bounded while
 * the database is away). */
static size_t marks_compact(ctl_replay_mark *m, size_t n)
{
    if (n < 2)
        return n;
    qsort(m, n, sizeof(*m), mark_order);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (out && m[out - 1].device_id == m[i].device_id) {
            ctl_replay_mark *k = &m[out - 1];
            uint32_t rtcp = k->rtcp_index > m[i].rtcp_index ? k->rtcp_index : m[i].rtcp_index;
            bool clean = k->clean || m[i].clean;
            *k = m[i]; /* the higher RTP index, sorted last */
            k->rtcp_index = rtcp;
            k->clean = clean;
        } else {
            m[out++] = m[i];
        }
    }
    return out;
}

/* Called with s->lock held; returns with it held. */
static void save_marks(ingest_service *s, PGconn **conn)
{
    ctl_replay_mark *marks = s->marks;
    size_t n = s->nmarks;
    s->marks = NULL;
    s->nmarks = s->capmarks = 0;
    pthread_mutex_unlock(&s->lock);
    n = marks_compact(marks, n);
    cu_err err;
    bool saved = false;
    if (*conn || db_connect(s->dsn, "custos-ingest", conn, &err) == CU_OK) {
        saved = ctl_replay_marks_save(*conn, marks, n, &err) == CU_OK;
        if (!saved) {
            PQfinish(*conn);
            *conn = NULL;
        }
    } else {
        *conn = NULL;
    }
    if (!saved && s->mark_errors++ % 20 == 0)
        CU_LOG(CU_LOG_WARN, "ingest", "SRTP replay marks not saved (kept, tried again): %s",
               err.msg);
    if (saved)
        s->mark_errors = 0;
    pthread_mutex_lock(&s->lock);
    if (!saved) {
        /* Back in front of what came meanwhile; one per device at most. */
        size_t total = n + s->nmarks;
        ctl_replay_mark *all = realloc(marks, (total ? total : 1) * sizeof(*all));
        if (!all)
            abort();
        if (s->nmarks)
            memcpy(all + n, s->marks, s->nmarks * sizeof(*all));
        free(s->marks);
        s->marks = all;
        s->nmarks = marks_compact(all, total);
        s->capmarks = total ? total : 1;
    } else {
        free(marks);
    }
}

static void *control_main(void *arg)
{
    ingest_service *s = arg;
    pthread_setname_np(pthread_self(), "ingest-control");
    PGconn *conn = NULL;
    int64_t next_poll = 0, next_mark_save = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->opens) {
            open_req *r = s->opens;
            s->opens = r->next;
            if (!s->opens)
                s->opens_tail = NULL;
            pthread_mutex_unlock(&s->lock);
            do_open(s, r);
            free(r->meta);
            free(r);
            pthread_mutex_lock(&s->lock);
        }
        raise_alerts(s, &conn);
        if (s->nmarks && (s->stop_control || cu_mono_ns() >= next_mark_save)) {
            save_marks(s, &conn);
            next_mark_save = cu_mono_ns() + s->cfg->ingest_replay_save_ms * 1000000;
        }
        if (s->stop_control) {
            /* The stop's exact marks may have come while the save above ran. */
            if (s->nmarks)
                save_marks(s, &conn);
            break;
        }
        int64_t now = cu_mono_ns();
        if (now >= next_poll) {
            pthread_mutex_unlock(&s->lock);
            poll_devices(s, &conn);
            pthread_mutex_lock(&s->lock);
            next_poll = cu_mono_ns() + s->cfg->ingest_device_poll_ms * 1000000;
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t wake = s->nmarks && next_mark_save < next_poll ? next_mark_save : next_poll;
        int64_t wait_ns = wake > now ? wake - now : 0;
        ts.tv_sec += wait_ns / 1000000000;
        ts.tv_nsec += wait_ns % 1000000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    PQfinish(conn);
    return NULL;
}

/* ----------------------------------------------------------- lifecycle */

static void ingest_service_free(ingest_service *s);

static cu_rc open_socket(const ingest_service *s, int *fd_out, cu_err *err)
{
    const cu_config *cfg = s->cfg;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (strchr(cfg->ingest_bind, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)cfg->ingest_udp_port);
        inet_pton(AF_INET6, cfg->ingest_bind, &a->sin6_addr);
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)cfg->ingest_udp_port);
        inet_pton(AF_INET, cfg->ingest_bind, &a->sin_addr);
        sl = sizeof(*a);
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return cu_err_set(err, e == EADDRINUSE ? CU_ERR_BUSY : CU_ERR_IO,
                          "ingest (ingest.bind, ingest.udp_port): cannot listen on %s:%lld/udp: %s",
                          cfg->ingest_bind, (long long)cfg->ingest_udp_port, strerror(e));
    }
    /* Let the kernel hand over trains of same-flow datagrams at once. */
    if (setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) != 0)
        CU_LOG(CU_LOG_INFO, "ingest", "UDP GRO unavailable; one datagram per read");
    int want = (int)cfg->ingest_rcvbuf_bytes, got = 0;
    socklen_t gl = sizeof(got);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &gl);
    if (got / 2 < want) /* the kernel reports twice what it grants */
        CU_LOG(CU_LOG_WARN, "ingest",
               "receive buffer capped by the kernel at %d bytes (asked %d; raise "
               "net.core.rmem_max)",
               got / 2, want);
    *fd_out = fd;
    return CU_OK;
}

/*
 * Steer each datagram to the worker that owns its SSRC (SSRC mod workers), by
 * a classic BPF program on the SO_REUSEPORT group, which sees the UDP payload.
 * Without it the kernel would pick a worker by the source address, and a
 * recorder whose NAT mapping changes, or a replayed packet sent from another
 * port, would reach a worker holding a second SRTP session (and replay
 * window) for the same device. RTCP (RFC 5761: second octet 192-223) carries
 * its SSRC at offset 4, RTP at offset 8; a datagram too short for either goes
 * to worker 0, which drops it. Socket i of the group is worker i: sockets are
 * bound in worker order and none leaves the group while the service runs.
 */
static bool steer_by_ssrc(int fd, int nworkers)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 1),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 192, 0, 3),
        BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 223, 2, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4), /* RTCP: sender SSRC */
        BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 8), /* RTP: SSRC */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t)nworkers),
        BPF_STMT(BPF_RET | BPF_A, 0),
    };
    struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) == 0;
}

/* The port must be free: a socket without SO_REUSEPORT fails if anyone,
 * another ingestd included, holds it. */
static cu_rc check_port_free(const ingest_service *s, cu_err *err)
{
    return ingest_udp_port_free(s->cfg->ingest_bind, (int)s->cfg->ingest_udp_port,
                                "ingest (ingest.bind, ingest.udp_port)", err);
}

void ingest_live_attach(ingest_service *s, int worker, uint64_t stream_id, uint64_t epoch,
                        pipe_tap *tap, bool attach)
{
    if (worker < 0 || worker >= s->nworkers) {
        if (attach) {
            pipe_tap_end(tap);
            pipe_tap_unref(tap);
        }
        return;
    }
    msg *m = cu_xcalloc(1, sizeof(*m));
    m->kind = MSG_TAP;
    m->stream_id = stream_id;
    m->epoch = epoch;
    m->tap = tap;
    m->attach = attach;
    worker_post(&s->workers[worker], m);
}

cu_rc ingest_service_start(const cu_config *cfg, const char *data_dir, const char *dsn, store *st,
                           keys_ring *keys, live_service *live, ingest_service **out,
                           cu_err *err)
{
    cu_rc rc = ingest_srtp_init(err);
    if (rc)
        return rc;
    ingest_service *s = cu_xcalloc(1, sizeof(*s));
    s->cfg = cfg;
    cu_strlcpy(s->data_dir, data_dir, sizeof(s->data_dir));
    s->dsn = cu_xstrdup(dsn);
    s->store = st;
    s->live = live;
    s->idle_us = cfg->ingest_idle_timeout_s * 1000000;
    s->pipe_cfg = (pipe_stream_config){.target_us = cfg->segment_target_ms * 1000,
                                       .max_us = cfg->segment_max_ms * 1000,
                                       .reorder_packets = (int)cfg->ingest_reorder_packets,
                                       .reorder_us = cfg->ingest_reorder_ms * 1000};
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->nworkers =
        cfg->ingest_workers > 0 ? (int)cfg->ingest_workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s->nworkers < 1)
        s->nworkers = 1;
    s->workers = cu_xcalloc((size_t)s->nworkers, sizeof(ingest_worker));

    s->keys = keys;
    rc = check_port_free(s, err);
    if (rc)
        goto fail;
    rc = rtsp_service_create(cfg, data_dir, &s->rtsp, err);
    if (rc)
        goto fail;
    for (int i = 0; i < s->nworkers; i++) {
        ingest_worker *w = &s->workers[i];
        w->svc = s;
        w->index = i;
        w->fd = -1;
        pthread_mutex_init(&w->inbox_lock, NULL);
        pthread_cond_init(&w->inbox_cond, NULL);
        w->bufs = cu_xmalloc(sizeof(*w->bufs) * BATCH);
        w->pool = pipe_pool_create(POOL_SLOTS);
        rc = open_socket(s, &w->fd, err);
        if (rc)
            goto fail;
        if (i == 0 && s->nworkers > 1 && !steer_by_ssrc(w->fd, s->nworkers)) {
            CU_LOG(CU_LOG_WARN, "ingest",
                   "cannot steer datagrams by SSRC (%s); receiving with one worker",
                   strerror(errno));
            s->nworkers = 1;
        }
        w->base = event_base_new();
        if (!w->base) {
            rc = cu_err_set(err, CU_ERR_NOMEM, "cannot create an event loop");
            goto fail;
        }
        w->rx_ev = event_new(w->base, w->fd, EV_READ | EV_PERSIST, on_readable, w);
        w->rx_timer = event_new(w->base, -1, 0, on_rx_timer, w);
        w->coalesce = (struct timeval){0, (suseconds_t)cfg->ingest_coalesce_us};
        w->tick_ev = event_new(w->base, -1, EV_PERSIST, on_tick, w);
        w->inbox_ev = event_new(w->base, -1, 0, on_inbox, w);
        struct timeval tick = {0, 50000};
        if (!w->rx_ev || !w->rx_timer || !w->tick_ev || !w->inbox_ev ||
            event_add(w->rx_ev, NULL) != 0 || event_add(w->tick_ev, &tick) != 0) {
            rc = cu_err_set(err, CU_ERR_NOMEM, "cannot create ingest events");
            goto fail;
        }
        rc = rtsp_worker_start(w, s->rtsp, err);
        if (rc)
            goto fail;
    }
    /* Devices first, so that the first packets find them. */
    PGconn *first = NULL;
    poll_devices(s, &first);
    PQfinish(first);
    for (int i = 0; i < s->nworkers; i++)
        drain_inbox(&s->workers[i]);
    if (pthread_create(&s->control, NULL, control_main, s) != 0) {
        rc = cu_err_set(err, CU_ERR_IO, "cannot start the ingest control thread");
        goto fail;
    }
    s->control_started = true;
    for (int i = 0; i < s->nworkers; i++)
        if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0) {
            rc = cu_err_set(err, CU_ERR_IO, "cannot start ingest worker %d", i);
            /* Workers already started stop with the service. */
            s->nworkers = i;
            ingest_service_stop(s);
            return rc;
        }
    CU_LOG(CU_LOG_INFO, "ingest", "receiving SRTP/RTP on %s:%lld/udp with %d worker(s)",
           cfg->ingest_bind, (long long)cfg->ingest_udp_port, s->nworkers);
    if (cfg->rtsp_port || cfg->rtsps_port)
        CU_LOG(CU_LOG_INFO, "ingest",
               "RTSP publish on %s port %lld (rtsp) and %lld (rtsps); 0 is off", cfg->rtsp_bind,
               (long long)cfg->rtsp_port, (long long)cfg->rtsps_port);
    *out = s;
    return CU_OK;
fail:
    ingest_service_free(s);
    return rc;
}

static void ingest_service_free(ingest_service *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        ingest_worker *w = &s->workers[i];
        drain_inbox(w);
        rtsp_worker_free(w);
        rtsp_pull_free(w);
        for (size_t d = 0; d < w->ndevs; d++)
            dev_free(w->devs[d]);
        free(w->devs);
        free(w->slot_ssrc);
        free(w->slot_dev);
        if (w->rx_ev)
            event_free(w->rx_ev);
        if (w->rx_timer)
            event_free(w->rx_timer);
        if (w->tick_ev)
            event_free(w->tick_ev);
        if (w->inbox_ev)
            event_free(w->inbox_ev);
        if (w->base)
            event_base_free(w->base);
        if (w->fd >= 0)
            close(w->fd);
        pipe_pool_destroy(w->pool);
        free(w->bufs);
        pthread_mutex_destroy(&w->inbox_lock);
        pthread_cond_destroy(&w->inbox_cond);
    }
    while (s->opens) {
        open_req *r = s->opens;
        s->opens = r->next;
        free(r->meta);
        free(r);
    }
    free(s->marks);
    rtsp_service_free(s->rtsp);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s->workers);
    free(s->dsn);
    free(s);
}

void ingest_service_stop(ingest_service *s)
{
    if (!s)
        return;
    /* Workers first: each ends its streams and waits for recordings still
     * being opened, which the control thread keeps serving meanwhile. */
    for (int i = 0; i < s->nworkers; i++)
        event_base_loopexit(s->workers[i].base, NULL);
    for (int i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i].thread, NULL);
    /* The exact marks, saved as clean: no margin at the next start. */
    for (int i = 0; i < s->nworkers; i++)
        worker_hand_marks(&s->workers[i], true);
    if (s->control_started) {
        pthread_mutex_lock(&s->lock);
        s->stop_control = true;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->control, NULL);
    }
    ingest_service_free(s);
}
