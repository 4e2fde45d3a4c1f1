/* RTP validation, keyframe peeks, the reorder window and the segmenter. */
#include "pipeline/pipeline.h"
#include "tests/testlib.h"

#include <stdlib.h>

/* ------------------------------------------------------------ RTP parse */

static size_t rtp_packet(uint8_t *out, uint16_t seq, uint32_t ts, uint32_t ssrc, uint8_t pt,
                         const uint8_t *payload, size_t n)
{
    out[0] = 0x80;
    out[1] = pt;
    out[2] = (uint8_t)(seq >> 8);
    out[3] = (uint8_t)seq;
    for (int i = 0; i < 4; i++) {
        out[4 + i] = (uint8_t)(ts >> (24 - 8 * i));
        out[8 + i] = (uint8_t)(ssrc >> (24 - 8 * i));
    }
    memcpy(out + 12, payload, n);
    return 12 + n;
}

static void test_rtp_parse(void)
{
    uint8_t pkt[64], pl[4] = {0x41, 1, 2, 3};
    pipe_rtp r;
    size_t n = rtp_packet(pkt, 7, 9000, 0xdeadbeef, 96, pl, 4);
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_OK);
    CHECK_EQ_INT(r.seq, 7);
    CHECK_EQ_INT(r.timestamp, 9000);
    CHECK_EQ_INT(r.ssrc, 0xdeadbeef);
    CHECK_EQ_INT(r.payload_type, 96);
    CHECK_EQ_INT(r.payload_len, 4);
    CHECK(r.payload == pkt + 12);

    CHECK_EQ_INT(pipe_rtp_parse(pkt, 11, &r), PIPE_RTP_SHORT);
    pkt[0] = 0x40;
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_VERSION);
    pkt[0] = 0x82; /* two CSRCs: 8 bytes, payload has only 4 */
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_CSRC);
    pkt[0] = 0x81; /* one CSRC eats the whole payload */
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_EMPTY);
    pkt[0] = 0x90; /* extension header, length word says 1 word: 4 + 4 bytes > 4 */
    pkt[12] = 0xbe;
    pkt[13] = 0xde;
    pkt[14] = 0;
    pkt[15] = 1;
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_EXTENSION);
    pkt[0] = 0x90;
    CHECK_EQ_INT(pipe_rtp_parse(pkt, 14, &r), PIPE_RTP_EXTENSION);
    n = rtp_packet(pkt, 7, 9000, 1, 96, pl, 4);
    pkt[0] = 0xa0; /* padding */
    pkt[n - 1] = 0;
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_PADDING);
    pkt[n - 1] = 5;
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_PADDING);
    pkt[n - 1] = 4;
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_EMPTY);
    pkt[n - 1] = 2;
    CHECK_EQ_INT(pipe_rtp_parse(pkt, n, &r), PIPE_RTP_OK);
    CHECK_EQ_INT(r.payload_len, 2);
    uint8_t big[PIPE_RTP_MAX + 1] = {0x80};
    CHECK_EQ_INT(pipe_rtp_parse(big, sizeof(big), &r), PIPE_RTP_TOO_LONG);

    uint8_t rtcp[8] = {0x80, 200, 0, 6, 0xca, 0xfe, 0xba, 0xbe};
    uint32_t ssrc = 0;
    CHECK(pipe_is_rtcp(rtcp, 8));
    CHECK(pipe_peek_ssrc(rtcp, 8, &ssrc) && ssrc == 0xcafebabe);
    CHECK(!pipe_is_rtcp(pkt, n));
    CHECK(!pipe_peek_ssrc(rtcp, 7, &ssrc));
}

static void test_keyframes(void)
{
    uint8_t idr[] = {0x65, 0x88}, pframe[] = {0x41, 0x9a}, sps[] = {0x67, 0x42};
    CHECK_EQ_INT(pipe_h264_keyframe(idr, 2), 1);
    CHECK_EQ_INT(pipe_h264_keyframe(pframe, 2), 0);
    CHECK_EQ_INT(pipe_h264_keyframe(sps, 2), 0);
    uint8_t forbidden[] = {0xe5, 0};
    CHECK_EQ_INT(pipe_h264_keyframe(forbidden, 2), -1);
    uint8_t reserved[] = {0x00};
    CHECK_EQ_INT(pipe_h264_keyframe(reserved, 1), -1);
    CHECK_EQ_INT(pipe_h264_keyframe(idr, 0), -1);
    uint8_t stap[] = {0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88};
    CHECK_EQ_INT(pipe_h264_keyframe(stap, sizeof(stap)), 1);
    CHECK_EQ_INT(pipe_h264_keyframe(stap, 8), -1); /* the PPS unit runs past the end */
    uint8_t stap_bad[] = {0x78, 0, 9, 0x67, 0x42};
    CHECK_EQ_INT(pipe_h264_keyframe(stap_bad, sizeof(stap_bad)), -1);
    uint8_t stap_zero[] = {0x78, 0, 0};
    CHECK_EQ_INT(pipe_h264_keyframe(stap_zero, sizeof(stap_zero)), -1);
    uint8_t stap_empty[] = {0x78};
    CHECK_EQ_INT(pipe_h264_keyframe(stap_empty, 1), -1);
    uint8_t fu_start[] = {0x7c, 0x85, 0}, fu_mid[] = {0x7c, 0x05, 0}, fu_se[] = {0x7c, 0xc5, 0};
    uint8_t fu_p[] = {0x7c, 0x81, 0};
    CHECK_EQ_INT(pipe_h264_keyframe(fu_start, 3), 1);
    CHECK_EQ_INT(pipe_h264_keyframe(fu_mid, 3), 0);
    CHECK_EQ_INT(pipe_h264_keyframe(fu_se, 3), -1);
    CHECK_EQ_INT(pipe_h264_keyframe(fu_p, 3), 0);
    CHECK_EQ_INT(pipe_h264_keyframe(fu_start, 2), -1);

    uint8_t h5_idr[] = {0x26, 0x01, 0xaf}, h5_trail[] = {0x02, 0x01, 0xaf};
    uint8_t h5_cra[] = {0x2a, 0x01, 0x00}, h5_tid0[] = {0x26, 0x00, 0x00};
    CHECK_EQ_INT(pipe_h265_keyframe(h5_idr, 3), 1);
    CHECK_EQ_INT(pipe_h265_keyframe(h5_cra, 3), 1);
    CHECK_EQ_INT(pipe_h265_keyframe(h5_trail, 3), 0);
    CHECK_EQ_INT(pipe_h265_keyframe(h5_tid0, 3), -1);
    uint8_t h5_ap[] = {0x60, 0x01, 0, 3, 0x40, 0x01, 0x0c, 0, 3, 0x26, 0x01, 0xaf};
    CHECK_EQ_INT(pipe_h265_keyframe(h5_ap, sizeof(h5_ap)), 1);
    uint8_t h5_ap_bad[] = {0x60, 0x01, 0, 9, 0x40, 0x01};
    CHECK_EQ_INT(pipe_h265_keyframe(h5_ap_bad, sizeof(h5_ap_bad)), -1);
    uint8_t h5_fu[] = {0x62, 0x01, 0x93, 0x00}, h5_fu_mid[] = {0x62, 0x01, 0x13, 0x00};
    CHECK_EQ_INT(pipe_h265_keyframe(h5_fu, 4), 1);
    CHECK_EQ_INT(pipe_h265_keyframe(h5_fu_mid, 4), 0);
    CHECK_EQ_INT(pipe_h265_keyframe(h5_fu, 3), -1);
    CHECK_EQ_INT(pipe_codec_parse("h265"), PIPE_CODEC_H265);
    CHECK_EQ_INT(pipe_codec_parse("vp8"), 0);
}

/* ------------------------------------------------------------ streams */

typedef struct {
    int count;
    pipe_segment_info info[64];
    uint8_t *data[64];
    size_t len[64];
} sink;

static void collect(void *ctx, cu_chunk *chain, size_t len, const pipe_segment_info *info)
{
    sink *k = ctx;
    REQUIRE(k->count < 64);
    uint8_t *data = cu_xmalloc(len);
    cu_chunk_copy_out(chain, 0, data, len);
    size_t chained = 0;
    for (const cu_chunk *c = chain; c; c = c->next)
        chained += c->len;
    CHECK_EQ_INT(chained, len);
    cu_chunk_put(chain);
    k->info[k->count] = *info;
    k->data[k->count] = data;
    k->len[k->count] = len;
    k->count++;
}

static void sink_free(sink *k)
{
    for (int i = 0; i < k->count; i++)
        free(k->data[i]);
    k->count = 0;
}

/* A synthetic H.264 stream: 30 fps, an IDR every 30 frames, each frame in
 * 3 packets (an IDR frame: STAP-A SPS+PPS, then FU-A). */
typedef struct {
    uint8_t pkt[PIPE_RTP_MAX];
    size_t len;
    uint16_t seq;
    int64_t arrival;
    bool key_start;
} gen_packet;

static int gen_h264(gen_packet *out, int frames, int gop)
{
    int n = 0;
    for (int f = 0; f < frames; f++) {
        uint32_t ts = 1000 + (uint32_t)f * 3000;
        int64_t at = 1700000000000000 + (int64_t)f * 33333;
        bool idr = f % gop == 0;
        for (int p = 0; p < 3; p++) {
            uint8_t pl[300];
            size_t pn;
            memset(pl, 0xab, sizeof(pl));
            if (idr && p == 0) {
                uint8_t stap[] = {0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce};
                memcpy(pl, stap, sizeof(stap));
                pn = sizeof(stap);
            } else {
                uint8_t nal = idr ? 5 : 1;
                pl[0] = 0x7c;
                pl[1] = (uint8_t)(((p == (idr ? 1 : 0)) ? 0x80 : 0) | (p == 2 ? 0x40 : 0) | nal);
                pn = 200;
            }
            gen_packet *g = &out[n];
            g->seq = (uint16_t)(65500 + n); /* wraps */
            g->len = rtp_packet(g->pkt, g->seq, ts, 42, 96, pl, pn);
            g->arrival = at + p * 100;
            g->key_start = idr && p == 0;
            n++;
        }
    }
    return n;
}

static pipe_stream_config h264_cfg(pipe_pool *pool)
{
    return (pipe_stream_config){.codec = PIPE_CODEC_H264,
                                .payload_type = 96,
                                .clock_rate = 90000,
                                .target_us = 2000000,
                                .max_us = 10000000,
                                .reorder_packets = 64,
                                .reorder_us = 100000,
                                .pool = pool};
}

/* The first record of a segment starts an IDR access unit (STAP-A here). */
static bool starts_with_key(const uint8_t *data, size_t len)
{
    if (len < PIPE_PAYLOAD_HEADER + PIPE_RECORD_HEADER + 13)
        return false;
    const uint8_t *rtp = data + PIPE_PAYLOAD_HEADER + PIPE_RECORD_HEADER;
    return rtp[12] == 0x78; /* the STAP-A with SPS and PPS that opens an IDR frame */
}

static uint32_t count_records(const uint8_t *data, size_t len, uint32_t *lost)
{
    size_t off = PIPE_PAYLOAD_HEADER;
    uint32_t n = 0;
    *lost = 0;
    while (off + PIPE_RECORD_HEADER <= len) {
        size_t plen = (size_t)(data[off] << 8 | data[off + 1]);
        *lost += (uint32_t)(data[off + 2] << 8 | data[off + 3]);
        off += PIPE_RECORD_HEADER + plen;
        n++;
    }
    return off == len ? n : 0xffffffff;
}

static void test_segments_in_order(void)
{
    static gen_packet g[600];
    int n = gen_h264(g, 150, 30); /* 5 s */
    pipe_pool *pool = pipe_pool_create(256);
    pipe_stream_config cfg = h264_cfg(pool);
    sink k = {0};
    pipe_stream *s = pipe_stream_create(&cfg, 42, collect, &k);
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(pipe_stream_push(s, g[i].pkt, g[i].len, g[i].arrival), PIPE_RTP_OK);
    pipe_stream_finish(s);
    CHECK_EQ_INT(k.count, 3); /* [0,2) [2,4) [4,5) */
    uint32_t total = 0;
    for (int i = 0; i < k.count; i++) {
        uint32_t lost;
        CHECK_EQ_INT(count_records(k.data[i], k.len[i], &lost), k.info[i].packets);
        CHECK_EQ_INT(lost, 0);
        CHECK(k.info[i].keyframe_start);
        CHECK(starts_with_key(k.data[i], k.len[i]));
        CHECK(!k.info[i].gap_start);
        CHECK(k.info[i].end_us >= k.info[i].start_us);
        total += k.info[i].packets;
    }
    CHECK_EQ_INT(total, n);
    CHECK_EQ_INT(k.info[0].packets, 180); /* 60 frames */
    CHECK(k.info[2].last && !k.info[0].last);
    CHECK_EQ_INT(k.info[1].start_us - k.info[0].start_us, 2000000);
    CHECK(memcmp(k.data[0], "CRTP", 4) == 0 && k.data[0][5] == PIPE_CODEC_H264);
    sink_free(&k);
    pipe_stream_destroy(s);
    CHECK_EQ_INT(pipe_pool_free_slots(pool), 256);
    pipe_pool_destroy(pool);
}

static void test_reorder_and_loss(void)
{
    static gen_packet g[600];
    int n = gen_h264(g, 150, 30);
    pipe_pool *pool = pipe_pool_create(256);
    pipe_stream_config cfg = h264_cfg(pool);
    sink k = {0};
    pipe_stream *s = pipe_stream_create(&cfg, 42, collect, &k);
    /* Swap neighbours everywhere; drop packet 100 and 101; duplicate 200. */
    for (int i = 0; i + 1 < n; i += 2) {
        if (i == 100)
            continue;
        CHECK_EQ_INT(pipe_stream_push(s, g[i + 1].pkt, g[i + 1].len, g[i + 1].arrival),
                     PIPE_RTP_OK);
        CHECK_EQ_INT(pipe_stream_push(s, g[i].pkt, g[i].len, g[i].arrival), PIPE_RTP_OK);
        if (i == 200)
            pipe_stream_push(s, g[i].pkt, g[i].len, g[i].arrival);
        pipe_stream_tick(s, g[i].arrival);
    }
    pipe_stream_finish(s);
    pipe_stream_stats st;
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.lost, 2);
    CHECK_EQ_INT(st.late, 1);
    CHECK_EQ_INT(st.packets, (uint64_t)n - 2);
    uint32_t total_lost = 0, total_packets = 0;
    for (int i = 0; i < k.count; i++) {
        uint32_t lost;
        CHECK_EQ_INT(count_records(k.data[i], k.len[i], &lost), k.info[i].packets);
        CHECK_EQ_INT(lost, k.info[i].lost);
        total_lost += lost;
        total_packets += k.info[i].packets;
    }
    CHECK_EQ_INT(total_lost, 2);
    CHECK_EQ_INT(total_packets, n - 2);
    /* Records are in sequence order despite the swaps. */
    const uint8_t *d = k.data[0];
    size_t off = PIPE_PAYLOAD_HEADER;
    uint16_t prev = 0;
    bool ordered = true;
    for (int i = 0; off < k.len[0]; i++) {
        size_t plen = (size_t)(d[off] << 8 | d[off + 1]);
        uint16_t seq =
            (uint16_t)(d[off + PIPE_RECORD_HEADER + 2] << 8 | d[off + PIPE_RECORD_HEADER + 3]);
        if (i > 0 && seq != (uint16_t)(prev + 1) && !(d[off + 2] | d[off + 3]))
            ordered = false;
        prev = seq;
        off += PIPE_RECORD_HEADER + plen;
    }
    CHECK(ordered);
    sink_free(&k);
    pipe_stream_destroy(s);
    pipe_pool_destroy(pool);
}

static void test_window_timeout_and_jump(void)
{
    static gen_packet g[600];
    int n = gen_h264(g, 30, 30);
    pipe_pool *pool = pipe_pool_create(256);
    pipe_stream_config cfg = h264_cfg(pool);
    sink k = {0};
    pipe_stream *s = pipe_stream_create(&cfg, 42, collect, &k);
    pipe_stream_push(s, g[0].pkt, g[0].len, g[0].arrival);
    pipe_stream_stats st;
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.packets, 0); /* the start is held for the window's time */
    pipe_stream_tick(s, g[0].arrival + 100000);
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.packets, 1);
    pipe_stream_push(s, g[2].pkt, g[2].len, g[2].arrival); /* 1 is missing */
    pipe_stream_tick(s, g[2].arrival + 50000);
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.packets, 1); /* still waiting */
    pipe_stream_tick(s, g[2].arrival + 100000);
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.packets, 2);
    CHECK_EQ_INT(st.lost, 1);
    pipe_stream_push(s, g[1].pkt, g[1].len, g[1].arrival); /* too late now */
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.late, 1);
    /* A jump far past the window counts every skipped number as lost. */
    pipe_stream_push(s, g[3].pkt, g[3].len, g[3].arrival);
    g[10].pkt[2] = (uint8_t)((g[3].seq + 1000) >> 8);
    g[10].pkt[3] = (uint8_t)(g[3].seq + 1000);
    pipe_stream_push(s, g[10].pkt, g[10].len, g[10].arrival);
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.lost, 1 + 999);
    (void)n;
    pipe_stream_finish(s);
    sink_free(&k);
    pipe_stream_destroy(s);
    pipe_pool_destroy(pool);
}

static void test_pool_exhaustion(void)
{
    static gen_packet g[600];
    gen_h264(g, 30, 30);
    pipe_pool *pool = pipe_pool_create(2);
    pipe_stream_config cfg = h264_cfg(pool);
    sink k = {0};
    pipe_stream *s = pipe_stream_create(&cfg, 42, collect, &k);
    pipe_stream_push(s, g[0].pkt, g[0].len, g[0].arrival);
    pipe_stream_tick(s, g[0].arrival + 100000);
    for (int i = 2; i < 8; i++) /* 1 never comes; only 2 slots to hold the rest */
        CHECK_EQ_INT(pipe_stream_push(s, g[i].pkt, g[i].len, g[i].arrival), PIPE_RTP_OK);
    pipe_stream_stats st;
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.lost, 1);
    CHECK(st.packets >= 5);
    pipe_stream_finish(s);
    pipe_stream_stats_get(s, &st);
    CHECK_EQ_INT(st.packets, 7);
    CHECK_EQ_INT(pipe_pool_free_slots(pool), 2);
    sink_free(&k);
    pipe_stream_destroy(s);
    pipe_pool_destroy(pool);
}

static void test_audio_and_cap(void)
{
    pipe_pool *pool = pipe_pool_create(16);
    pipe_stream_config cfg = {.codec = PIPE_CODEC_AUDIO,
                              .payload_type = 97,
                              .clock_rate = 48000,
                              .target_us = 2000000,
                              .max_us = 10000000,
                              .reorder_packets = 16,
                              .reorder_us = 100000,
                              .pool = pool};
    sink k = {0};
    pipe_stream *s = pipe_stream_create(&cfg, 7, collect, &k);
    uint8_t pkt[200], pl[100] = {1};
    for (int i = 0; i < 250; i++) { /* 20 ms frames, 5 s */
        size_t n = rtp_packet(pkt, (uint16_t)i, (uint32_t)i * 960, 7, 97, pl, sizeof(pl));
        CHECK_EQ_INT(pipe_stream_push(s, pkt, n, 1000000 + i * 20000), PIPE_RTP_OK);
    }
    pipe_stream_finish(s);
    CHECK_EQ_INT(k.count, 3);
    CHECK_EQ_INT(k.info[0].packets, 100);
    CHECK_EQ_INT(k.info[1].start_us - k.info[0].start_us, 2000000);
    uint8_t wrong[200];
    size_t n = rtp_packet(wrong, 250, 0, 7, 96, pl, sizeof(pl));
    CHECK_EQ_INT(pipe_stream_push(s, wrong, n, 0), PIPE_RTP_PAYLOAD_TYPE);
    sink_free(&k);
    pipe_stream_destroy(s);

    /* Video without keyframes after the first: cut at the hard cap. */
    static gen_packet g[2000];
    int frames = 400; /* 13.3 s, one GOP */
    int np = gen_h264(g, frames, 100000);
    cfg = h264_cfg(pool);
    s = pipe_stream_create(&cfg, 42, collect, &k);
    for (int i = 0; i < np; i++)
        pipe_stream_push(s, g[i].pkt, g[i].len, g[i].arrival);
    pipe_stream_finish(s);
    CHECK_EQ_INT(k.count, 2);
    CHECK(k.info[0].end_us - k.info[0].start_us < 10000000);
    CHECK(k.info[0].end_us - k.info[0].start_us >= 9900000);
    CHECK(k.info[0].keyframe_start && !k.info[1].keyframe_start);
    sink_free(&k);
    pipe_stream_destroy(s);
    pipe_pool_destroy(pool);
}

int main(void)
{
    test_rtp_parse();
    test_keyframes();
    test_segments_in_order();
    test_reorder_and_loss();
    test_window_timeout_and_jump();
    test_pool_exhaustion();
    test_audio_and_cap();
    return test_finish("test_pipeline");
}
