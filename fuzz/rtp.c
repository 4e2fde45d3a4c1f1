/*
 * libFuzzer target: everything the pipeline does with bytes from the
 * network after SRTP — RTP validation, the H.264/H.265 keyframe peeks, the
 * reorder window and the segmenter — and the segment payload reader.
 * The input is a sequence of packets, each prefixed by a 2-byte length; the
 * first byte picks the codec. Segments produced are read back with the
 * payload reader, which must accept every one of them.
 */
#include "pipeline/pipeline.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_segment(void *ctx, cu_chunk *chain, size_t len, const pipe_segment_info *info)
{
    (void)ctx;
    pipe_payload_reader r;
    pipe_record rec;
    uint32_t n = 0;
    uint8_t *seg = malloc(len ? len : 1);
    if (!seg)
        abort();
    cu_chunk_copy_out(chain, 0, seg, len);
    cu_chunk_put(chain);
    if (!pipe_payload_open(&r, seg, len))
        abort();
    int more;
    while ((more = pipe_payload_next(&r, &rec)) == 1)
        n++;
    if (more < 0 || n != info->packets || info->end_us < info->start_us)
        abort();
    free(seg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    pipe_codec codec = (pipe_codec)(1 + data[0] % 3);
    static pipe_pool *pool;
    if (!pool)
        pool = pipe_pool_create(64);
    pipe_stream_config cfg = {.codec = codec,
                              .payload_type = 96,
                              .clock_rate = 90000,
                              .target_us = 20000,
                              .max_us = 100000,
                              .reorder_packets = 8,
                              .reorder_us = 5000,
                              .pool = pool};
    pipe_stream *s = pipe_stream_create(&cfg, 1, check_segment, NULL);
    size_t off = 1;
    int64_t now = 1000000;
    while (off + 2 <= size) {
        size_t n = (size_t)(data[off] << 8 | data[off + 1]);
        off += 2;
        if (n > size - off)
            n = size - off;
        const uint8_t *pkt = data + off;
        off += n;
        /* The peeks on their own, as ingest calls them. */
        pipe_rtp r;
        uint32_t ssrc;
        (void)pipe_peek_ssrc(pkt, n, &ssrc);
        (void)pipe_is_rtcp(pkt, n);
        if (pipe_rtp_parse(pkt, n, &r) == PIPE_RTP_OK) {
            (void)pipe_h264_keyframe(r.payload, r.payload_len);
            (void)pipe_h265_keyframe(r.payload, r.payload_len);
        }
        (void)pipe_h264_keyframe(pkt, n);
        (void)pipe_h265_keyframe(pkt, n);
        pipe_stream_push(s, pkt, n, now);
        now += 3000;
        pipe_stream_tick(s, now);
    }
    pipe_stream_finish(s);
    pipe_stream_destroy(s);
    if (pipe_pool_free_slots(pool) != 64)
        abort(); /* every held packet went back to the pool */
    /* Arbitrary bytes as a segment payload. */
    pipe_payload_reader pr;
    pipe_record rec;
    if (pipe_payload_open(&pr, data, size))
        while (pipe_payload_next(&pr, &rec) == 1)
            if (rec.len == 0 || rec.pkt < data || rec.pkt + rec.len > data + size)
                abort();
    return 0;
}
