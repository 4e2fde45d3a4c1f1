/*
 * The capture's time in a MP4 (export/export.h): the creation and
 * modification times of mvhd, every trak's tkhd and every mdia's mdhd.
 * Boxes are walked from their sizes, each checked against its parent's end.
 */
#include "export.h"

#include <string.h>

#define MP4_EPOCH_OFFSET 2082844800ULL /* seconds from 1904-01-01 to 1970-01-01 */
#define HELD_MAX         (64u * 1024 * 1024)

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* The box at @p p (at most @p avail bytes): its header length and total
 * size; false when it does not fit. */
static bool box_at(const uint8_t *p, size_t avail, size_t *header, uint64_t *size)
{
    if (avail < 8)
        return false;
    *size = get_be(p, 4);
    *header = 8;
    if (*size == 1) {
        if (avail < 16)
            return false;
        *size = get_be(p + 8, 8);
        *header = 16;
    } else if (*size == 0) {
        *size = avail; /* to the end */
    }
    return *size >= *header && *size <= avail;
}

/* Set both times of the full box (mvhd, tkhd, mdhd) whose body is @p body. */
static void set_times(uint8_t *body, size_t len, uint64_t t)
{
    if (len < 4)
        return;
    int width = body[0] == 1 ? 8 : 4;
    if (len < 4 + 2 * (size_t)width)
        return;
    uint64_t v = width == 4 ? t & 0xffffffffu : t;
    put_be(body + 4, v, width);
    put_be(body + 4 + width, v, width);
}

/* Walk the children of a container box's body. */
static void patch_children(uint8_t *p, size_t len, uint64_t t, int depth)
{
    size_t off = 0;
    while (off < len && depth < 8) {
        size_t header;
        uint64_t size;
        if (!box_at(p + off, len - off, &header, &size))
            return;
        uint8_t *body = p + off + header;
        size_t body_len = (size_t)size - header;
        if (!memcmp(p + off + 4, "mvhd", 4) || !memcmp(p + off + 4, "tkhd", 4) ||
            !memcmp(p + off + 4, "mdhd", 4))
            set_times(body, body_len, t);
        else if (!memcmp(p + off + 4, "trak", 4) || !memcmp(p + off + 4, "mdia", 4))
            patch_children(body, body_len, t, depth + 1);
        off += (size_t)size;
    }
}

void export_mp4_times_init(export_mp4_times *t, int64_t unix_us)
{
    memset(t, 0, sizeof(*t));
    t->mp4_seconds = (uint64_t)(unix_us > 0 ? unix_us / 1000000 : 0) + MP4_EPOCH_OFFSET;
    cu_buf_init(&t->held, HELD_MAX);
}

bool export_mp4_times_feed(export_mp4_times *t, const uint8_t *data, size_t len,
                           export_write_fn write, void *ctx, bool *bad)
{
    *bad = false;
    if (t->passed)
        return write(ctx, data, len);
    if (cu_buf_append(&t->held, data, len) != CU_OK) {
        *bad = true;
        return false;
    }
    /* Top-level boxes, up to the end of moov. */
    uint8_t *p = (uint8_t *)t->held.data;
    size_t off = 0;
    for (;;) {
        size_t header;
        uint64_t size;
        if (t->held.len - off < 8)
            return true; /* more to come */
        uint64_t declared = get_be(p + off, 4);
        if (declared == 0 || (declared == 1 && t->held.len - off < 16))
            return true;
        if (!box_at(p + off, t->held.len - off, &header, &size))
            return true; /* not whole yet */
        if (!memcmp(p + off + 4, "moov", 4)) {
            patch_children(p + off + header, (size_t)size - header, t->mp4_seconds, 0);
            t->passed = true;
            bool ok = write(ctx, p, t->held.len);
            cu_buf_free(&t->held);
            return ok;
        }
        off += (size_t)size;
    }
}

void export_mp4_times_free(export_mp4_times *t)
{
    cu_buf_free(&t->held);
}
