/*
 * Evidence out over the API (docs/export.md): GET
 * /api/v1/recordings/{id}/clip.mp4[?start=&end=] streams a fragmented MP4
 * of the recording or of that range of capture times. The route's
 * authorization (rule 4: who may read the recording; 404 otherwise) is the
 * table's; here every segment of the range is verified before the first
 * byte leaves (export_clip), and the export is audited with its range and
 * the SHA-256 of what was sent before the reply ends: a clip whose entry
 * cannot be written is cut off, never completed unlogged.
 */
#include "api_internal.h"

#include "export/export.h"

#include <stdio.h>
#include <string.h>

/* ?start= and ?end= (RFC 3339) into @p o; false after a 400. */
static bool clip_range(request *r, export_clip_opts *o, char from[CU_TIME_TEXT_LEN],
                       char to[CU_TIME_TEXT_LEN])
{
    char text[2][64];
    const char *names[2] = {"start", "end"};
    int64_t *at[2] = {&o->start_us, &o->end_us};
    for (int i = 0; i < 2; i++) {
        if (!api_query_text(r, names[i], text[i], sizeof(text[i])))
            return false;
        if (text[i][0] && !cu_time_parse_us(text[i], at[i])) {
            api_reply_error(r, 400, "invalid_value", "an RFC 3339 time", names[i]);
            return false;
        }
    }
    if (o->start_us && o->end_us && o->end_us <= o->start_us) {
        api_reply_error(r, 400, "invalid_value", "after start", "end");
        return false;
    }
    snprintf(from, CU_TIME_TEXT_LEN, "start");
    snprintf(to, CU_TIME_TEXT_LEN, "end");
    if (o->start_us)
        cu_time_format_ms(o->start_us / 1000, from);
    if (o->end_us)
        cu_time_format_ms(o->end_us / 1000, to);
    return true;
}

typedef struct {
    request *r;
    const char *id;
    api_stream *stream; /* from the first byte */
} clip_out;

static bool clip_write(void *ctx, const uint8_t *data, size_t len)
{
    clip_out *c = ctx;
    if (!c->stream) {
        char disposition[96];
        snprintf(disposition, sizeof(disposition), "attachment; filename=\"%s.mp4\"", c->id);
        c->stream = api_stream_start(c->r, 200, "video/mp4", disposition);
    }
    return api_stream_write(c->stream, data, len);
}

static void clip_send(request *r, const char *uid, const char *actor, const char *id)
{
    export_clip_opts o = {.fragmented = true};
    char from[CU_TIME_TEXT_LEN], to[CU_TIME_TEXT_LEN], object[400];
    store_id rid;
    if (!store_id_parse(id, &rid)) { /* (the route's object is a recording: cannot happen) */
        api_reply_error(r, 404, "not_found", "no such recording", NULL);
        return;
    }
    if (!clip_range(r, &o, from, to))
        return;
    cu_err err;
    export_clip_report rep;
    clip_out out = {.r = r, .id = id};
    cu_rc rc = export_init(r->a->data_dir, &err);
    export_source src = {0};
    if (!rc) /* (with the capture's other tracks that the caller may read: its audio) */
        rc = export_source_open(r->a->data_dir, r->a->db, r->a->keys, &rid, uid, &src, &err);
    o.audio = src.tracks;
    o.naudio = src.ntracks;
    if (!rc)
        rc = export_clip(src.rd, &o, clip_write, &out, &rep, &err);
    export_source_close(&src);
    if (rc) {
        snprintf(object, sizeof(object), "recording:%s from %s to %s", id, from, to);
        api_audit(r, actor, "recording.export", object, "failed");
        if (out.stream) { /* (after the first byte: the muxer failed, or the client left) */
            CU_LOG(CU_LOG_WARN, "api", "clip of %s cut off: %s", id, err.msg);
            api_stream_end(out.stream, false);
        } else if (rc == CU_ERR_NOTFOUND) {
            api_reply_error(r, 422, "empty_range", err.msg, NULL);
        } else if (rc == CU_ERR_DB) {
            api_reply_unavailable(r);
        } else {
            /* a segment that does not verify, a codec that cannot be muxed */
            CU_LOG(CU_LOG_ERROR, "api", "clip of %s refused: %s", id, err.msg);
            api_reply_error(r, 409, "not_exportable", err.msg, NULL);
        }
        return;
    }
    char sha[65];
    cu_hex_encode(rep.sha256, 32, sha);
    snprintf(object, sizeof(object),
             "recording:%s from %s to %s mp4 %llu bytes sha256 %s audio tracks %u", id, from, to,
             (unsigned long long)rep.bytes, sha, rep.audio_tracks);
    /* Logged before it ends: unlogged, the client gets an incomplete body. */
    bool logged = api_audit(r, actor, "recording.export", object, "ok");
    api_stream_end(out.stream, logged);
}

void api_clip_send(request *r, const char *uid, const char *actor, const char *id)
{
    api_worker *w = r->a; /* (r may be the stream's, and gone, after clip_send) */
    if (!api_export_slot_take(r))
        return;
    clip_send(r, uid, actor, id);
    api_export_slot_give(w);
}

void api_recording_clip(request *r, const caller *who, const char *id)
{
    api_clip_send(r, who->uid, who->actor, id);
}
