/*
 * Evidence packages (docs/package.md): a BagIt bag, streamed as a ZIP, that
 * a third party checks offline with the verifier inside it. What goes in is
 * read from the store through a store_reader (every segment verified before
 * its packets are written) and from the index (the recording's row, its
 * custody log); the statement that binds it all is signed with the
 * installation key. Nothing is written to disk here: the caller's write
 * function gets the archive as it is made.
 */
#include "export.h"

#include <gst/gst.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline.h"

/* The verifier's source and the format's spec, embedded at build time
 * (cmake/EmbedFiles.cmake). */
extern const unsigned char export_verifier_c[];
extern const size_t export_verifier_c_len;
extern const unsigned char export_verifier_spec[];
extern const size_t export_verifier_spec_len;

#define PCAPNG_FLUSH  (1u << 20)
#define CUSTODY_MAX   1000000
#define TAG_FILES_MAX 16
#define LINKTYPE_RAW  101
#define RTP_UDP_PORT  5004

/* ------------------------------------------------------------------ bag */

typedef struct {
    char name[64];
    uint8_t sha256[32];
} tag_file;

/* The bag as it is written: the archive, and what its manifests list. */
typedef struct {
    export_zip zip;
    char top[64];    /* "custos-package-<id>/" */
    cu_buf manifest; /* manifest-sha256.txt */
    uint64_t payload_bytes, payload_files;
    tag_file tags[TAG_FILES_MAX];
    size_t ntags;
    uint8_t entry_sha[32];
} bag;

static bool manifest_line(cu_buf *m, const uint8_t sha[32], const char *name)
{
    char hex[65];
    cu_hex_encode(sha, 32, hex);
    return cu_buf_printf(m, "%s  %s\n", hex, name) == CU_OK;
}

/* Start entry @p name of the bag; @p hash false: its SHA-256 is given at the end. */
static bool bag_begin_hashed(bag *b, const char *name, bool hash)
{
    char full[600];
    snprintf(full, sizeof(full), "%s%s", b->top, name);
    return export_zip_begin(&b->zip, full, hash);
}

static bool bag_begin(bag *b, const char *name)
{
    return bag_begin_hashed(b, name, true);
}

/* End the open entry, a payload file under data/ (its name given again;
 * @p sha256 when it was begun without hashing, else NULL). */
static bool bag_payload_end_with(bag *b, const char *name, const uint8_t *sha256)
{
    if (sha256)
        memcpy(b->entry_sha, sha256, 32);
    if (!export_zip_end(&b->zip, b->entry_sha))
        return false;
    b->payload_files++;
    b->payload_bytes += b->zip.entries[b->zip.count - 1].size;
    return manifest_line(&b->manifest, b->entry_sha, name);
}

static bool bag_payload_end(bag *b, const char *name)
{
    return bag_payload_end_with(b, name, NULL);
}

static bool bag_payload(bag *b, const char *name, const void *data, size_t len)
{
    return bag_begin(b, name) && export_zip_data(&b->zip, data, len) && bag_payload_end(b, name);
}

static bool bag_tag(bag *b, const char *name, const void *data, size_t len)
{
    if (b->ntags == TAG_FILES_MAX || !bag_begin(b, name) || !export_zip_data(&b->zip, data, len) ||
        !export_zip_end(&b->zip, b->tags[b->ntags].sha256))
        return false;
    cu_strlcpy(b->tags[b->ntags++].name, name, sizeof(b->tags[0].name));
    return true;
}

static bool bag_json(bag *b, const char *name, json_t *doc, bool tag)
{
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_ENSURE_ASCII);
    if (!text)
        return false;
    size_t n = strlen(text);
    text = cu_xrealloc(text, n + 2);
    text[n++] = '\n';
    text[n] = '\0';
    bool ok = tag ? bag_tag(b, name, text, n) : bag_payload(b, name, text, n);
    free(text);
    return ok;
}

/* --------------------------------------------------------------- pcapng */

static size_t pad4(size_t n)
{
    return (n + 3) & ~(size_t)3;
}

/* One option (code, value) into @p p; its padded length. */
static size_t pcapng_option(uint8_t *p, uint16_t code, const void *value, size_t len)
{
    cu_put_le16(p, code);
    cu_put_le16(p + 2, (uint32_t)len);
    memcpy(p + 4, value, len);
    memset(p + 4 + len, 0, pad4(len) - len);
    return 4 + pad4(len);
}

/* Section header and the one interface: raw IPv4, microsecond times. */
static bool pcapng_start(bag *b)
{
    uint8_t blk[256];
    size_t n = 0;
    char appl[64];
    snprintf(appl, sizeof(appl), "custos %s", CUSTOS_VERSION);
    cu_put_le32(blk, 0x0A0D0D0A);
    cu_put_le32(blk + 8, 0x1A2B3C4D);
    cu_put_le16(blk + 12, 1);
    cu_put_le16(blk + 14, 0);
    memset(blk + 16, 0xff, 8); /* section length: not given */
    n = 24;
    n += pcapng_option(blk + n, 4, appl, strlen(appl)); /* shb_userappl */
    n += pcapng_option(blk + n, 0, "", 0);
    cu_put_le32(blk + 4, (uint32_t)(n + 4));
    cu_put_le32(blk + n, (uint32_t)(n + 4));
    n += 4;
    size_t shb = n;
    cu_put_le32(blk + n, 1);
    cu_put_le16(blk + n + 8, LINKTYPE_RAW);
    cu_put_le16(blk + n + 10, 0);
    cu_put_le32(blk + n + 12, 0); /* snaplen: none */
    size_t i = n + 16;
    uint8_t tsresol = 6;
    i += pcapng_option(blk + i, 2, "custos-rtp", 10); /* if_name */
    i += pcapng_option(blk + i, 9, &tsresol, 1);      /* if_tsresol: µs */
    i += pcapng_option(blk + i, 0, "", 0);
    cu_put_le32(blk + n + 4, (uint32_t)(i - n + 4));
    cu_put_le32(blk + i, (uint32_t)(i - n + 4));
    i += 4;
    (void)shb;
    return export_zip_data(&b->zip, blk, i);
}

static uint16_t ip_checksum(const uint8_t *h)
{
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2)
        sum += (uint32_t)h[i] << 8 | h[i + 1];
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* One packet as an Enhanced Packet Block: IPv4/UDP (documentation
 * addresses, docs/package.md) around the RTP packet, the arrival time as
 * its timestamp, and the record's segment and loss in its comment. */
static cu_rc pcapng_packet(cu_buf *out, uint64_t seg, const pipe_record *rec)
{
    char comment[64];
    int clen = snprintf(comment, sizeof(comment), "custos seg=%llu lost=%u",
                        (unsigned long long)seg, rec->lost_before);
    size_t caplen = 28 + rec->len;
    size_t total = 28 + pad4(caplen) + 4 + pad4((size_t)clen) + 4 + 4;
    size_t at = out->len;
    uint8_t hdr[28 + 28];
    cu_put_le32(hdr, 6);
    cu_put_le32(hdr + 4, (uint32_t)total);
    cu_put_le32(hdr + 8, 0);
    uint64_t ts = (uint64_t)rec->arrival_us;
    cu_put_le32(hdr + 12, (uint32_t)(ts >> 32));
    cu_put_le32(hdr + 16, (uint32_t)ts);
    cu_put_le32(hdr + 20, (uint32_t)caplen);
    cu_put_le32(hdr + 24, (uint32_t)caplen);
    uint8_t *ip = hdr + 28;
    uint32_t ip_len = caplen > 65535 ? 0 : (uint32_t)caplen;
    memset(ip, 0, 28);
    ip[0] = 0x45;
    ip[2] = (uint8_t)(ip_len >> 8);
    ip[3] = (uint8_t)ip_len;
    ip[6] = 0x40; /* don't fragment */
    ip[8] = 64;
    ip[9] = 17;
    memcpy(ip + 12, (const uint8_t[]){192, 0, 2, 1}, 4);
    memcpy(ip + 16, (const uint8_t[]){192, 0, 2, 2}, 4);
    uint16_t sum = ip_checksum(ip);
    ip[10] = (uint8_t)(sum >> 8);
    ip[11] = (uint8_t)sum;
    uint8_t *udp = ip + 20;
    udp[0] = udp[2] = RTP_UDP_PORT >> 8;
    udp[1] = udp[3] = RTP_UDP_PORT & 0xff;
    uint32_t udp_len = ip_len ? ip_len - 20 : 0;
    udp[4] = (uint8_t)(udp_len >> 8);
    udp[5] = (uint8_t)udp_len; /* checksum 0: none (IPv4) */
    static const uint8_t zero[4] = {0};
    uint8_t opt[4], tail[4];
    cu_put_le16(opt, 1); /* opt_comment */
    cu_put_le16(opt + 2, (uint32_t)clen);
    cu_put_le32(tail, 0); /* opt_endofopt */
    uint8_t len_again[4];
    cu_put_le32(len_again, (uint32_t)total);
    cu_rc rc = cu_buf_append(out, hdr, sizeof(hdr));
    if (!rc)
        rc = cu_buf_append(out, rec->pkt, rec->len);
    if (!rc)
        rc = cu_buf_append(out, zero, pad4(caplen) - caplen);
    if (!rc)
        rc = cu_buf_append(out, opt, 4);
    if (!rc)
        rc = cu_buf_append(out, comment, (size_t)clen);
    if (!rc)
        rc = cu_buf_append(out, zero, pad4((size_t)clen) - (size_t)clen);
    if (!rc)
        rc = cu_buf_append(out, tail, 4);
    if (!rc)
        rc = cu_buf_append(out, len_again, 4);
    if (!rc && out->len - at != total)
        rc = CU_ERR_INVALID;
    return rc;
}

/* -------------------------------------------------------------- queries */

static json_t *hex_json(const uint8_t *b, size_t n)
{
    char hex[129];
    cu_hex_encode(b, n, hex);
    return json_string(hex);
}

static json_t *time_json(int64_t us)
{
    char t[CU_TIME_TEXT_LEN];
    cu_time_format_ms(us / 1000, t);
    return json_string(t);
}

static json_t *text_or_null(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

static PGresult *query(PGconn *conn, const char *sql, int n, const char *const *params,
                       const char *what, cu_err *err)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        return res;
    cu_err_set(err, CU_ERR_DB, "reading %s: %s", what, PQerrorMessage(conn));
    PQclear(res);
    return NULL;
}

/* The meta file's "key=value" for @p key, as a JSON string (or null). */
static json_t *meta_value(const char *meta, size_t len, const char *key)
{
    size_t klen = strlen(key);
    for (const char *line = meta, *end = meta + len; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (n > klen && memcmp(line, key, klen) == 0 && line[klen] == '=') {
            char *v = strndup(line + klen + 1, n - klen - 1);
            json_t *j = cu_utf8_valid(v) ? json_string(v) : json_null();
            free(v);
            return j;
        }
        line += n + 1;
    }
    return json_null();
}

/* recording.json: who and what, from the index and the meta file. */
static json_t *recording_doc(PGconn *conn, const char *rec, store_reader *rd, cu_rc *rc,
                             cu_err *err)
{
    const char *params[1] = {rec};
    *rc = CU_ERR_DB;
    PGresult *res = query(conn,
                          "SELECT r.state, r.opened_at, r.sealed_at, r.segment_count, "
                          "encode(r.chain_head, 'hex'), r.continues::text, d.serial, u.username, "
                          "dep.name, r.device_id "
                          "FROM recordings r LEFT JOIN devices d ON d.id = r.device_id "
                          "LEFT JOIN users u ON u.id = r.officer_id "
                          "LEFT JOIN departments dep ON dep.id = u.department_id WHERE r.id = $1",
                          1, params, "the recording", err);
    if (!res)
        return NULL;
    if (PQntuples(res) != 1) {
        PQclear(res);
        *rc = cu_err_set(err, CU_ERR_NOTFOUND, "recording %s: not in the index", rec);
        return NULL;
    }
    *rc = CU_OK;
    size_t mlen;
    const char *meta = store_reader_meta_file(rd, &mlen);
    json_t *sdp = json_null();
    json_t *b64 = meta_value(meta, mlen, "sdp_b64");
    if (json_is_string(b64)) {
        const char *t = json_string_value(b64);
        size_t tl = strlen(t), got = 0;
        uint8_t *raw = cu_xmalloc(tl + 1);
        if (cu_base64_decode(t, tl, raw, tl, &got)) {
            raw[got] = '\0';
            if (cu_utf8_valid((char *)raw)) {
                json_decref(sdp);
                sdp = json_string((char *)raw);
            }
        }
        free(raw);
    }
    json_decref(b64);
    json_t *doc = json_pack(
        "{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s, "
        "s:o}",
        "format", "custos-recording-v1", "recording", rec, "state", text_or_null(res, 0, 0),
        "opened_at", text_or_null(res, 0, 1), "sealed_at", text_or_null(res, 0, 2), "segments",
        text_or_null(res, 0, 3), "chain_head", text_or_null(res, 0, 4), "continues",
        text_or_null(res, 0, 5), "device_serial", text_or_null(res, 0, 6), "officer",
        text_or_null(res, 0, 7), "department", text_or_null(res, 0, 8), "source",
        meta_value(meta, mlen, "source"), "codec", meta_value(meta, mlen, "codec"), "transport",
        meta_value(meta, mlen, "transport"), "rtsp_session", meta_value(meta, mlen, "rtsp_session"),
        "peer", meta_value(meta, mlen, "peer"), "capture_clock",
        "RTP timestamps through the latest RTCP sender report (NTP), anchored on the first "
        "packet's arrival before one came (docs/pipeline.md)",
        "sdp", sdp);
    PQclear(res);
    return doc;
}

/* custody.json: every audit entry about the recording, with its chain
 * values; the statement gets their (seq, hash). */
static json_t *custody_doc(PGconn *conn, const char *const *recs, size_t nrecs,
                           const char *instance, json_t *signed_list, uint64_t *n_out, cu_rc *rc,
                           cu_err *err)
{
    *rc = CU_ERR_DB;
    /* {"recording:<id>%",...}: a text[] literal (ids are UUIDs: nothing to quote) */
    char pattern[64 * (EXPORT_AUDIO_MAX + 1) + 4];
    size_t used = 0;
    for (size_t i = 0; i < nrecs && used < sizeof(pattern); i++)
        used +=
            (size_t)snprintf(pattern + used, sizeof(pattern) - used, "%s\"recording:%.36s%%\"%s",
                             i ? "," : "{", recs[i], i + 1 == nrecs ? "}" : "");
    const char *params[1] = {pattern};
    PGresult *res = query(conn,
                          "SELECT seq, (extract(epoch FROM at) * 1000)::bigint, actor, action, "
                          "object, outcome, source, encode(prev_hash, 'hex'), encode(hash, 'hex') "
                          "FROM audit_log WHERE object LIKE ANY ($1::text[]) ORDER BY seq "
                          "LIMIT 1000001",
                          1, params, "the custody log", err);
    if (!res)
        return NULL;
    int n = PQntuples(res);
    if (n > CUSTODY_MAX) {
        PQclear(res);
        *rc = cu_err_set(err, CU_ERR_INVALID,
                         "the recording's custody log holds more than %d entries", CUSTODY_MAX);
        return NULL;
    }
    json_t *entries = json_array();
    for (int i = 0; i < n; i++) {
        int64_t seq = 0, ms = 0;
        if (!cu_parse_int64(PQgetvalue(res, i, 0), &seq) ||
            !cu_parse_int64(PQgetvalue(res, i, 1), &ms)) {
            PQclear(res);
            json_decref(entries);
            *rc = cu_err_set(err, CU_ERR_DB, "the custody log: an entry without seq or time");
            return NULL;
        }
        char at[CU_TIME_TEXT_LEN];
        cu_time_format_ms(ms, at);
        json_array_append_new(
            entries,
            json_pack("{s:I, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "seq", (json_int_t)seq,
                      "at", at, "at_ms", (json_int_t)ms, "actor", PQgetvalue(res, i, 2), "action",
                      PQgetvalue(res, i, 3), "object", PQgetvalue(res, i, 4), "outcome",
                      PQgetvalue(res, i, 5), "source", PQgetvalue(res, i, 6), "prev_hash",
                      PQgetvalue(res, i, 7), "hash", PQgetvalue(res, i, 8)));
        json_array_append_new(signed_list,
                              json_pack("[I, s]", (json_int_t)seq, PQgetvalue(res, i, 8)));
    }
    PQclear(res);
    *n_out = (uint64_t)n;
    *rc = CU_OK;
    return json_pack("{s:s, s:s, s:s, s:s, s:o}", "format", "custos-custody-v1", "installation",
                     instance, "entries_about", pattern, "hash",
                     "SHA-256(prev_hash || int64 seq || int64 at_ms || field(actor) || "
                     "field(action) || field(object) || field(outcome) || field(source)), "
                     "field(s) = uint32 length || UTF-8 bytes, integers big-endian",
                     "entries", entries);
}

/* ---------------------------------------------------------------- build */

/* The whole archive's size and SHA-256, on the way to the caller. */
typedef struct {
    export_write_fn write;
    void *ctx;
    EVP_MD_CTX *sha;
    uint64_t bytes;
} sink;

static bool sink_write(void *ctx, const uint8_t *data, size_t len)
{
    sink *s = ctx;
    EVP_DigestUpdate(s->sha, data, len);
    s->bytes += len;
    return s->write(s->ctx, data, len);
}

/* The segments whose packets go in: those of the range (as a clip picks them). */
static cu_rc pick_range(const store_reader *rd, const export_package_opts *o, uint64_t *first,
                        uint64_t *last, cu_err *err)
{
    uint64_t n = store_reader_count(rd);
    if (n == 0)
        return cu_err_set(err, CU_ERR_NOTFOUND, "the recording has no segments");
    *first = 0;
    *last = n - 1;
    for (uint64_t i = 0; i < n; i++) {
        const store_segment_meta *m = store_reader_meta(rd, i);
        if (o->start_us && m->start_us <= o->start_us)
            *first = i;
        if (o->end_us && m->start_us <= o->end_us)
            *last = i;
    }
    if ((o->end_us && o->end_us < store_reader_meta(rd, 0)->start_us) ||
        (o->start_us && o->start_us > store_reader_meta(rd, n - 1)->end_us) || *first > *last)
        return cu_err_set(err, CU_ERR_NOTFOUND, "nothing of the recording lies in that range");
    return CU_OK;
}

/* Segments read (and verified) one ahead of the one being written, on a
 * thread of their own: decryption and hashing overlap the pcapng's making. */
typedef struct {
    const store_reader *rd;
    uint64_t first, last;
    cu_buf buf[2];
    cu_rc rc[2];
    cu_err err[2];
    bool ready[2];
    bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running;
} read_ahead;

static void *read_ahead_main(void *arg)
{
    read_ahead *ra = arg;
    for (uint64_t i = ra->first; i <= ra->last; i++) {
        int slot = (int)((i - ra->first) % 2);
        pthread_mutex_lock(&ra->mu);
        while (ra->ready[slot] && !ra->stop)
            pthread_cond_wait(&ra->cv, &ra->mu);
        bool stop = ra->stop;
        pthread_mutex_unlock(&ra->mu);
        if (stop)
            break;
        cu_rc rc = store_reader_read(ra->rd, i, &ra->buf[slot], &ra->err[slot]);
        pthread_mutex_lock(&ra->mu);
        ra->rc[slot] = rc;
        ra->ready[slot] = true;
        pthread_cond_broadcast(&ra->cv);
        pthread_mutex_unlock(&ra->mu);
        if (rc)
            break;
    }
    return NULL;
}

static void read_ahead_start(read_ahead *ra, const store_reader *rd, uint64_t first, uint64_t last)
{
    memset(ra, 0, sizeof(*ra));
    ra->rd = rd;
    ra->first = first;
    ra->last = last;
    cu_buf_init(&ra->buf[0], STORE_READ_BUF_MAX);
    cu_buf_init(&ra->buf[1], STORE_READ_BUF_MAX);
    pthread_mutex_init(&ra->mu, NULL);
    pthread_cond_init(&ra->cv, NULL);
    ra->running = pthread_create(&ra->thread, NULL, read_ahead_main, ra) == 0;
}

/* Segment @p i (the next in order), read and verified; NULL with @p err set. */
static cu_buf *read_ahead_take(read_ahead *ra, uint64_t i, cu_err *err)
{
    int slot = (int)((i - ra->first) % 2);
    if (!ra->running) { /* (no thread: read here) */
        return store_reader_read(ra->rd, i, &ra->buf[slot], err) == CU_OK ? &ra->buf[slot] : NULL;
    }
    pthread_mutex_lock(&ra->mu);
    while (!ra->ready[slot])
        pthread_cond_wait(&ra->cv, &ra->mu);
    cu_rc rc = ra->rc[slot];
    if (rc)
        *err = ra->err[slot];
    pthread_mutex_unlock(&ra->mu);
    return rc ? NULL : &ra->buf[slot];
}

/* Segment @p i written: its buffer may take the one after next. */
static void read_ahead_done(read_ahead *ra, uint64_t i)
{
    pthread_mutex_lock(&ra->mu);
    ra->ready[(i - ra->first) % 2] = false;
    pthread_cond_broadcast(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
}

static void read_ahead_stop(read_ahead *ra)
{
    pthread_mutex_lock(&ra->mu);
    ra->stop = true;
    pthread_cond_broadcast(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    if (ra->running)
        pthread_join(ra->thread, NULL);
    cu_buf_free(&ra->buf[0]);
    cu_buf_free(&ra->buf[1]);
    pthread_cond_destroy(&ra->cv);
    pthread_mutex_destroy(&ra->mu);
}

/* packets.pcapng, segment by segment (each read and verified first), and
 * the segments' entries of segments.json. */
static cu_rc write_packets(bag *b, const store_reader *rd, const char *dir, uint64_t first,
                           uint64_t last, json_t *segments, pipe_codec *codec,
                           export_package_report *rep, cu_err *err)
{
    char pcap[96];
    snprintf(pcap, sizeof(pcap), "%spackets.pcapng", dir);
    cu_buf blocks;
    read_ahead ra;
    read_ahead_start(&ra, rd, first, last);
    cu_buf_init(&blocks, PCAPNG_FLUSH + 2 * 65536 + 256);
    cu_rc rc = bag_begin(b, pcap) && pcapng_start(b) ? CU_OK : CU_ERR_IO;
    uint64_t n = store_reader_count(rd);
    for (uint64_t i = 0; !rc && i < n; i++) {
        const store_segment_meta *m = store_reader_meta(rd, i);
        uint8_t sha[32], chain[32];
        (void)store_reader_chain(rd, (int64_t)i, sha, chain);
        json_t *seg = json_pack(
            "{s:I, s:I, s:I, s:o, s:o, s:i, s:i, s:i, s:o, s:o, s:b}", "index", (json_int_t)i,
            "start_us", (json_int_t)m->start_us, "end_us", (json_int_t)m->end_us, "start",
            time_json(m->start_us), "end", time_json(m->end_us), "packets", (int)m->packets, "lost",
            (int)m->lost, "flags", (int)m->flags, "sha256", hex_json(sha, 32), "chain",
            hex_json(chain, 32), "in_package", i >= first && i <= last);
        json_array_append_new(segments, seg);
        if (i < first || i > last)
            continue;
        cu_buf *plain_p = read_ahead_take(&ra, i, err);
        if (!plain_p) {
            rc = CU_ERR_INVALID;
            break;
        }
        const cu_buf plain = *plain_p;
        pipe_payload_reader r;
        if (!pipe_payload_open(&r, (const uint8_t *)plain.data, plain.len)) {
            rc = cu_err_set(err, CU_ERR_INVALID, "segment %llu: not an RTP payload",
                            (unsigned long long)i);
            break;
        }
        json_object_set_new(seg, "payload_header",
                            hex_json((const uint8_t *)plain.data, PIPE_PAYLOAD_HEADER));
        if (i == first)
            *codec = r.codec;
        json_object_set_new(seg, "codec", json_string(pipe_codec_name(r.codec)));
        json_object_set_new(seg, "payload_type", json_integer(r.payload_type));
        json_object_set_new(seg, "clock_rate", json_integer(r.clock_rate));
        json_object_set_new(seg, "ssrc", json_integer(r.ssrc));
        json_object_set_new(seg, "plaintext_bytes", json_integer((json_int_t)plain.len));
        pipe_record rec;
        int more;
        uint64_t records = 0;
        while (!rc && (more = pipe_payload_next(&r, &rec)) == 1) {
            records++;
            rc = pcapng_packet(&blocks, i, &rec);
            if (!rc && blocks.len >= PCAPNG_FLUSH) {
                if (!export_zip_data(&b->zip, blocks.data, blocks.len))
                    rc = CU_ERR_IO;
                cu_buf_reset(&blocks);
            }
        }
        if (rc) {
            rc = rc == CU_ERR_IO ? cu_err_set(err, CU_ERR_IO, "the package could not be written")
                                 : cu_err_set(err, CU_ERR_INVALID,
                                              "segment %llu: a packet does "
                                              "not fit a pcapng block",
                                              (unsigned long long)i);
            break;
        }
        if (more < 0 || records != m->packets) {
            rc = cu_err_set(err, CU_ERR_INVALID,
                            "segment %llu: its packet records do not match its header",
                            (unsigned long long)i);
            break;
        }
        rep->packets += records;
        read_ahead_done(&ra, i);
    }
    if (!rc && blocks.len && !export_zip_data(&b->zip, blocks.data, blocks.len))
        rc = cu_err_set(err, CU_ERR_IO, "the package could not be written");
    if (!rc && !bag_payload_end(b, pcap))
        rc = cu_err_set(err, CU_ERR_IO, "the package could not be written");
    read_ahead_stop(&ra);
    cu_buf_free(&blocks);
    return rc;
}

/* One track's files under @p dir ("data/", "data/tracks/<id>/"): its meta,
 * its packets, segments.json and recording.json (@p recording, taken);
 * *@p signed_part gets what the statement says of it. */
static cu_rc write_track(bag *b, const store_reader *rd, const char *dir, uint64_t first,
                         uint64_t last, json_t *recording, pipe_codec *codec,
                         export_package_report *rep, json_t **signed_part, cu_err *err)
{
    char rec[37], name[128];
    store_id_format(store_reader_id(rd), rec);
    size_t meta_len;
    const char *meta = store_reader_meta_file(rd, &meta_len);
    json_t *segments = json_array();
    snprintf(name, sizeof(name), "%smeta", dir);
    cu_rc rc = bag_payload(b, name, meta, meta_len)
                   ? write_packets(b, rd, dir, first, last, segments, codec, rep, err)
                   : cu_err_set(err, CU_ERR_IO, "the package could not be written");
    if (rc) {
        json_decref(segments);
        json_decref(recording);
        return rc;
    }
    uint8_t sha[32], genesis[32], chain_before[32], chain_last[32], sealed_head[32], meta_sha[32];
    bool sealed = store_reader_sealed(rd, sealed_head);
    (void)store_reader_chain(rd, (int64_t)first - 1, sha, chain_before);
    (void)store_reader_chain(rd, (int64_t)last, sha, chain_last);
    (void)store_reader_chain(rd, -1, sha, genesis);
    EVP_Digest(meta, meta_len, meta_sha, NULL, EVP_sha256(), NULL);
    json_t *doc = json_pack(
        "{s:s, s:s, s:o, s:o, s:s, s:I, s:I, s:I, s:o, s:o}", "format", "custos-segments-v1",
        "recording", rec, "meta_sha256", hex_json(meta_sha, 32), "genesis", hex_json(genesis, 32),
        "chain",
        "c_-1 = SHA-256(\"custos-chain-v1\" || recording id (16 bytes) || meta_sha256); c_i = "
        "SHA-256(c_i-1 || sha256_i || int64 index || int64 start_us || int64 end_us), big-endian",
        "count", (json_int_t)store_reader_count(rd), "first_in_package", (json_int_t)first,
        "last_in_package", (json_int_t)last, "sealed_head",
        sealed ? hex_json(sealed_head, 32) : json_null(), "segments", segments);
    snprintf(name, sizeof(name), "%ssegments.json", dir);
    bool ok = doc && bag_json(b, name, doc, false);
    snprintf(name, sizeof(name), "%srecording.json", dir);
    ok = ok && bag_json(b, name, recording, false);
    json_decref(doc);
    json_decref(recording);
    if (!ok)
        return cu_err_set(err, CU_ERR_IO, "the package could not be written");
    *signed_part = json_pack("{s:s, s:{s:I, s:I, s:I, s:o, s:o}, s:o}", "recording", rec,
                             "segments", "first", (json_int_t)first, "last", (json_int_t)last,
                             "count", (json_int_t)store_reader_count(rd), "chain_before",
                             hex_json(chain_before, 32), "chain_last", hex_json(chain_last, 32),
                             "sealed_head", sealed ? hex_json(sealed_head, 32) : json_null());
    return CU_OK;
}

/* derived/clip.mp4 and its provenance; a recording that is not video has none. */
static cu_rc write_clip(bag *b, store_reader *rd, const export_package_opts *o,
                        export_package_report *rep, cu_err *err)
{
    export_clip_opts co = {.start_us = o->start_us,
                           .end_us = o->end_us,
                           .fragmented = false,
                           .verified = true,
                           .audio = o->tracks, /* (their packets are in the package too) */
                           .naudio = o->ntracks};
    export_clip_report *cr = &rep->clip_report;
    /* (the clip's SHA-256 is export_clip's: the bytes are not hashed twice) */
    if (!bag_begin_hashed(b, "data/derived/clip.mp4", false))
        return cu_err_set(err, CU_ERR_IO, "the package could not be written");
    cu_rc rc = export_clip(rd, &co, export_zip_write, &b->zip, cr, err);
    if (rc)
        return rc;
    if (!bag_payload_end_with(b, "data/derived/clip.mp4", cr->sha256))
        return cu_err_set(err, CU_ERR_IO, "the package could not be written");
    rep->clip = true;
    char sha[65];
    cu_hex_encode(cr->sha256, 32, sha);
    gchar *gst_version = gst_version_string();
    json_t *prov = json_pack(
        "{s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:[I,I], s:I, s:I, s:I, s:s, s:s}",
        "format", "custos-provenance-v1", "file", "data/derived/clip.mp4", "derived", 1, "note",
        "A derived copy for viewing, made from the packets of data/packets.pcapng; the packets "
        "are the evidence.",
        "pipeline", cr->pipeline, "gstreamer", gst_version, "custos", CUSTOS_VERSION, "container",
        "MP4, moov first; creation_time = capture time of the first packet", "first",
        time_json(cr->first_us), "last", time_json(cr->last_us), "segments",
        (json_int_t)cr->first_segment, (json_int_t)cr->last_segment, "packets",
        (json_int_t)cr->packets, "lost", (json_int_t)cr->lost, "bytes", (json_int_t)cr->bytes,
        "codec", cr->codec, "sha256", sha);
    g_free(gst_version);
    bool ok = prov && bag_json(b, "data/derived/provenance.json", prov, false);
    json_decref(prov);
    return ok ? CU_OK : cu_err_set(err, CU_ERR_IO, "the package could not be written");
}

cu_rc export_package(store_reader *rd, const export_package_opts *o, export_write_fn write,
                     void *ctx, export_package_report *rep, cu_err *err)
{
    memset(rep, 0, sizeof(*rep));
    char rec[37], instance[64] = "", head_hex[65] = "";
    store_id_format(store_reader_id(rd), rec);
    int64_t now_us = o->now_us ? o->now_us : cu_time_ms() * 1000;
    sink out = {.write = write, .ctx = ctx, .sha = EVP_MD_CTX_new()};
    bag b;
    memset(&b, 0, sizeof(b));
    cu_buf_init(&b.manifest, 64u << 20);
    cu_buf statement_sig;
    cu_buf_init(&statement_sig, 256);
    json_t *segments = json_array(), *custody_list = json_array();
    json_t *custody = NULL, *recording = NULL, *doc = NULL, *statement = NULL;
    PGresult *res = NULL;
    char *statement_text = NULL;
    uint64_t first = 0, last = 0;
    bool own_tx = false; /* a read transaction of ours is open */
    uint64_t track_first[EXPORT_AUDIO_MAX], track_last[EXPORT_AUDIO_MAX];
    char track_ids[EXPORT_AUDIO_MAX][37];
    json_t *track_docs[EXPORT_AUDIO_MAX] = {NULL};
    json_t *main_part = NULL, *tracks_signed = json_array();
    cu_rc rc = pick_range(rd, o, &first, &last, err);
    if (rc)
        goto out;
    if (!out.sha || EVP_DigestInit_ex(out.sha, EVP_sha256(), NULL) != 1) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "no SHA-256 context");
        goto out;
    }
    rep->first_segment = first;
    rep->last_segment = last;
    /* The audit head, the recording's row and its custody log as of one
     * moment (an entry appended meanwhile is in all three or in none). */
    own_tx = PQtransactionStatus(o->conn) == PQTRANS_IDLE;
    if (own_tx) {
        PGresult *b0 = PQexec(o->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        bool begun = PQresultStatus(b0) == PGRES_COMMAND_OK;
        PQclear(b0);
        if (!begun) {
            rc = cu_err_set(err, CU_ERR_DB, "reading the custody log: %s", PQerrorMessage(o->conn));
            goto out;
        }
    }
    res = query(o->conn,
                "SELECT i.id::text, (SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1), "
                "(SELECT encode(hash, 'hex') FROM audit_log ORDER BY seq DESC LIMIT 1) "
                "FROM instance i",
                0, NULL, "the installation", err);
    if (!res) {
        rc = CU_ERR_DB;
        goto out;
    }
    if (PQntuples(res) != 1) {
        rc = cu_err_set(err, CU_ERR_DB, "the installation has no id");
        goto out;
    }
    cu_strlcpy(instance, PQgetvalue(res, 0, 0), sizeof(instance));
    int64_t audit_seq = 0;
    if (!PQgetisnull(res, 0, 1) && !cu_parse_int64(PQgetvalue(res, 0, 1), &audit_seq)) {
        rc = cu_err_set(err, CU_ERR_DB, "the audit log's head has no seq");
        goto out;
    }
    cu_strlcpy(head_hex, PQgetvalue(res, 0, 2), sizeof(head_hex));
    PQclear(res);
    res = NULL;
    recording = recording_doc(o->conn, rec, rd, &rc, err);
    if (!recording)
        goto out;
    /* The capture's other tracks with something in the range: theirs too. */
    const char *recs[EXPORT_AUDIO_MAX + 1] = {rec};
    size_t nrecs = 1;
    for (size_t t = 0; t < o->ntracks && t < EXPORT_AUDIO_MAX; t++) {
        cu_err ignore;
        if (pick_range(o->tracks[t], o, &track_first[t], &track_last[t], &ignore) != CU_OK)
            continue; /* (nothing of it in the range) */
        store_id_format(store_reader_id(o->tracks[t]), track_ids[t]);
        track_docs[t] = recording_doc(o->conn, track_ids[t], o->tracks[t], &rc, err);
        if (!track_docs[t])
            goto out;
        recs[nrecs++] = track_ids[t];
    }
    custody =
        custody_doc(o->conn, recs, nrecs, instance, custody_list, &rep->custody_entries, &rc, err);
    if (!custody)
        goto out;
    if (own_tx) {
        PGresult *c0 = PQexec(o->conn, "COMMIT");
        PQclear(c0);
        own_tx = false;
    }

    export_zip_init(&b.zip, now_us, sink_write, &out);
    snprintf(b.top, sizeof(b.top), "custos-package-%.40s/", o->package_id ? o->package_id : rec);
    static const char bagit[] = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n";
    if (!bag_tag(&b, "bagit.txt", bagit, sizeof(bagit) - 1)) {
        rc = cu_err_set(err, CU_ERR_IO, "the package could not be written");
        goto out;
    }
    pipe_codec codec = PIPE_CODEC_AUDIO;
    rc = write_track(&b, rd, "data/", first, last, recording, &codec, rep, &main_part, err);
    recording = NULL; /* (taken) */
    for (size_t t = 0; !rc && t < o->ntracks && t < EXPORT_AUDIO_MAX; t++) {
        if (!track_docs[t])
            continue;
        char dir[64];
        pipe_codec track_codec;
        json_t *part = NULL;
        export_package_report track_rep;
        memset(&track_rep, 0, sizeof(track_rep));
        snprintf(dir, sizeof(dir), "data/tracks/%s/", track_ids[t]);
        rc = write_track(&b, o->tracks[t], dir, track_first[t], track_last[t], track_docs[t],
                         &track_codec, &track_rep, &part, err);
        track_docs[t] = NULL; /* (taken) */
        if (!rc)
            json_array_append_new(tracks_signed, part);
    }
    if (!rc && (codec == PIPE_CODEC_H264 || codec == PIPE_CODEC_H265))
        rc = write_clip(&b, rd, o, rep, err); /* (audio alone has no derived MP4, for now) */
    if (rc)
        goto out;
    bool ok = bag_json(&b, "data/custody.json", custody, false);
    if (ok && o->checkpoint && o->checkpoint[0]) {
        char *line = cu_xasprintf("%s\n", o->checkpoint);
        ok = bag_payload(&b, "data/checkpoint.txt", line, strlen(line));
        free(line);
    }
    if (!ok) {
        rc = cu_err_set(err, CU_ERR_IO, "the package could not be written");
        goto out;
    }
    cu_buf pem;
    cu_buf_init(&pem, 4096);
    rc = keys_public_pem(o->keys, &pem, err);
    if (!rc && !bag_payload(&b, "data/installation-key.pem", pem.data, pem.len))
        rc = cu_err_set(err, CU_ERR_IO, "the package could not be written");
    cu_buf_free(&pem);
    if (rc)
        goto out;

    /* The tag files: bag-info, the payload manifest, the signed statement. */
    char bag_info[1024], from[CU_TIME_TEXT_LEN] = "start", to[CU_TIME_TEXT_LEN] = "end";
    char date[CU_TIME_TEXT_LEN];
    if (o->start_us)
        cu_time_format_ms(o->start_us / 1000, from);
    if (o->end_us)
        cu_time_format_ms(o->end_us / 1000, to);
    cu_time_format_ms(now_us / 1000, date);
    int bi = snprintf(bag_info, sizeof(bag_info),
                      "Source-Organization: Custos installation %s\n"
                      "Bagging-Date: %.10s\n"
                      "External-Identifier: %s\n"
                      "External-Description: evidence package of recording %s, %s to %s\n"
                      "Payload-Oxum: %llu.%llu\n"
                      "Custos-Package: %s\n"
                      "Custos-Version: %s\n",
                      instance, date, rec, rec, from, to, (unsigned long long)b.payload_bytes,
                      (unsigned long long)b.payload_files, o->package_id ? o->package_id : "-",
                      CUSTOS_VERSION);
    uint8_t manifest_sha[32], info_sha[32], verifier_sha[32], spec_sha[32];
    EVP_Digest(b.manifest.data, b.manifest.len, manifest_sha, NULL, EVP_sha256(), NULL);
    EVP_Digest(bag_info, (size_t)bi, info_sha, NULL, EVP_sha256(), NULL);
    EVP_Digest(export_verifier_c, export_verifier_c_len, verifier_sha, NULL, EVP_sha256(), NULL);
    EVP_Digest(export_verifier_spec, export_verifier_spec_len, spec_sha, NULL, EVP_sha256(), NULL);
    statement = json_pack(
        "{s:s, s:s, s:s, s:s, s:{s:s, s:s}, s:s, s:s, s:s, s:O, s:O, s:O, s:o, s:O, s:{s:I, s:s}, "
        "s:{s:o, s:o, s:o, s:o}}",
        "format", "custos-statement-v1", "installation", instance, "package",
        o->package_id ? o->package_id : "", "recording", rec, "range", "start", from, "end", to,
        "reason", o->reason ? o->reason : "", "made_by", o->made_by ? o->made_by : "", "made_at",
        date, "segments", json_object_get(main_part, "segments"), "sealed_head",
        json_object_get(main_part, "sealed_head"), "tracks", tracks_signed, "manifest_sha256",
        hex_json(manifest_sha, 32), "custody", custody_list, "audit_head", "seq",
        (json_int_t)audit_seq, "hash", head_hex, "tag_files", "bagit.txt",
        hex_json(b.tags[0].sha256, 32), "bag-info.txt", hex_json(info_sha, 32),
        "verifier/custos-verify.c", hex_json(verifier_sha, 32), "verifier/SPEC.md",
        hex_json(spec_sha, 32));
    statement_text = statement ? json_dumps(statement, JSON_INDENT(1) | JSON_ENSURE_ASCII) : NULL;
    if (!statement_text) {
        rc = cu_err_set(err, CU_ERR_NOMEM, "the statement could not be made");
        goto out;
    }
    size_t st_len = strlen(statement_text);
    statement_text = cu_xrealloc(statement_text, st_len + 2);
    statement_text[st_len++] = '\n';
    statement_text[st_len] = '\0';
    uint8_t sig[KEYS_SIG_LEN];
    char sig64[KEYS_SIG_LEN * 2 + 2];
    rc = keys_sign(o->keys, statement_text, st_len, sig, err);
    if (rc)
        goto out;
    cu_base64_encode(sig, sizeof(sig), sig64);
    size_t sig64_len = strlen(sig64);
    sig64[sig64_len++] = '\n'; /* (room: sig64 holds the base64, a newline and NUL) */
    sig64[sig64_len] = '\0';
    if (!bag_tag(&b, "bag-info.txt", bag_info, (size_t)bi) ||
        !bag_tag(&b, "manifest-sha256.txt", b.manifest.data, b.manifest.len) ||
        !bag_tag(&b, "statement.json", statement_text, st_len) ||
        !bag_tag(&b, "statement.sig", sig64, strlen(sig64)) ||
        !bag_tag(&b, "verifier/custos-verify.c", export_verifier_c, export_verifier_c_len) ||
        !bag_tag(&b, "verifier/SPEC.md", export_verifier_spec, export_verifier_spec_len)) {
        rc = cu_err_set(err, CU_ERR_IO, "the package could not be written");
        goto out;
    }
    cu_buf tagm;
    cu_buf_init(&tagm, 8192);
    ok = true;
    for (size_t i = 0; i < b.ntags; i++)
        ok = ok && manifest_line(&tagm, b.tags[i].sha256, b.tags[i].name);
    ok = ok && bag_begin(&b, "tagmanifest-sha256.txt") &&
         export_zip_data(&b.zip, tagm.data, tagm.len) && export_zip_end(&b.zip, NULL) &&
         export_zip_finish(&b.zip);
    cu_buf_free(&tagm);
    if (!ok) {
        rc = cu_err_set(err, CU_ERR_IO, "the package could not be written");
        goto out;
    }
    EVP_DigestFinal_ex(out.sha, rep->sha256, NULL);
    rep->bytes = out.bytes;
out:
    if (res)
        PQclear(res);
    if (own_tx)
        PQclear(PQexec(o->conn, "ROLLBACK"));
    free(statement_text);
    json_decref(statement);
    json_decref(doc);
    json_decref(segments);
    json_decref(custody_list);
    json_decref(custody);
    json_decref(recording);
    json_decref(main_part);
    json_decref(tracks_signed);
    for (size_t t = 0; t < EXPORT_AUDIO_MAX; t++)
        json_decref(track_docs[t]);
    cu_buf_free(&b.manifest);
    cu_buf_free(&statement_sig);
    export_zip_free(&b.zip);
    if (out.sha)
        EVP_MD_CTX_free(out.sha);
    return rc;
}
