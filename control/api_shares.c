/*
 * External sharing (docs/control.md):
 *
 *   POST /api/v1/shares                 ask: recipient, recordings, reason, expiry
 *   GET  /api/v1/shares                 yours (all for admins and the permission group)
 *   POST /api/v1/shares/{id}/decide     an admin or the permission group, never the requester;
 *                                       approval answers the link, once
 *   POST /api/v1/shares/{id}/revoke     the requester or an admin
 *   GET  /api/v1/shared/{token}         the recipient, without an account: what it shares
 *   GET  /api/v1/shared/{token}/clip.mp4?recording=ID[&start=&end=]   a clip of one of them
 *   POST /api/v1/shared/{token}/packages    {recording, start?, end?}: an evidence package
 *   GET  /api/v1/shared/{token}/package?id=ID   a package made through this link
 *
 * The requester must be able to read every recording asked for. A link
 * works while approved, not revoked and not expired (checked at use); each
 * use, and each refused use, is audited.
 */
#include "api_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARE_RECORDINGS_MAX 100
#define SHARE_DAYS_MAX       90
#define STR_(x)              #x
#define STR(x)               STR_(x)

static const char *const share_fields[] = {"recipient", "recordings", "reason", "expires_at"};

static bool recording_id_ok(const char *s, size_t n)
{
    (void)n;
    return api_uuid_ok(s);
}

void api_share_create(request *r, const caller *who, const char *param)
{
    (void)param;
    json_t *body = api_read_object(r, share_fields, 4);
    if (!body)
        return;
    cu_buf recs;
    cu_buf_init(&recs, SHARE_RECORDINGS_MAX * 80 + 8);
    const char *uid = who->uid;
    char exp_ms[24];
    const char *recipient = api_string_field(r, body, "recipient", 200);
    const char *reason = recipient ? api_string_field(r, body, "reason", 2000) : NULL;
    const char *expires = reason ? api_string_field(r, body, "expires_at", 40) : NULL;
    if (!expires)
        goto out;
    if (!recipient[0] || !reason[0]) {
        api_reply_error(r, 400, "invalid_value", "required", recipient[0] ? "reason" : "recipient");
        goto out;
    }
    json_t *arr = json_object_get(body, "recordings");
    if (!arr) {
        api_reply_error(r, 400, "missing_field", "this field is required", "recordings");
        goto out;
    }
    if (!api_string_array(r, arr, "recordings", 1, SHARE_RECORDINGS_MAX, recording_id_ok,
                          "a recording id", &recs))
        goto out;
    if (!api_parse_time(expires, exp_ms)) {
        api_reply_error(r, 400, "invalid_value", "an RFC 3339 time", "expires_at");
        goto out;
    }
    /* Every recording must be one the requester may read (the first that is not, named). */
    const char *p1[2] = {uid, recs.data};
    PGresult *res = api_query(r->a,
                              "SELECT i - 1 FROM unnest($2::uuid[]) WITH ORDINALITY AS t(id, i) "
                              "WHERE NOT may_read_recording($1, t.id, now()) ORDER BY i LIMIT 1",
                              2, p1);
    if (api_db_unavailable(r, res))
        goto out;
    if (PQntuples(res) == 1) {
        char field[32];
        snprintf(field, sizeof(field), "recordings[%s]", PQgetvalue(res, 0, 0));
        PQclear(res);
        api_audit(r, who->actor, "share.request", "", "denied");
        api_reply_error(r, 404, "not_found", "no such recording", field);
        goto out;
    }
    PQclear(res);
    const char *p2[5] = {uid, recipient, reason, exp_ms, recs.data};
    if (!api_change_begin(r))
        goto out;
    res = api_query(
        r->a,
        "WITH s AS (INSERT INTO shares (requester_id, recipient, reason, expires_at) SELECT $1, "
        "$2, $3, 'epoch'::timestamptz + $4::bigint * interval '1 ms' WHERE 'epoch'::timestamptz "
        "+ $4::bigint * interval '1 ms' BETWEEN now() AND now() + interval '" STR(
            SHARE_DAYS_MAX) " days' RETURNING id), r AS (INSERT INTO share_recordings SELECT "
                            "s.id, t.id FROM s, (SELECT DISTINCT unnest($5::uuid[]) AS id) t) "
                            "SELECT id FROM s",
        5, p2);
    if (!res || PQntuples(res) != 1)
        api_change_abort(r);
    if (api_db_unavailable(r, res))
        goto out;
    if (PQntuples(res) != 1) {
        PQclear(res);
        api_reply_error(r, 400, "invalid_value", "in the future, at most 90 days ahead",
                        "expires_at");
        goto out;
    }
    char object[48];
    snprintf(object, sizeof(object), "share %s", PQgetvalue(res, 0, 0));
    json_t *j = json_pack("{s:I, s:s}", "id", (json_int_t)strtoll(PQgetvalue(res, 0, 0), NULL, 10),
                          "state", "requested");
    PQclear(res);
    if (api_change_commit(r, who->actor, "share.request", object))
        api_reply_json(r, 201, j);
    else
        json_decref(j);
out:
    cu_buf_free(&recs);
    json_decref(body);
}

void api_shares_list(request *r, const caller *who, const char *param)
{
    (void)param;
    const char *uid = who->uid;
    const char *p[2] = {uid, who->role};
    PGresult *res = api_query(
        r->a,
        "SELECT s.id, u.username, s.recipient, s.reason, to_char(s.expires_at AT TIME ZONE "
        "'UTC', " TS_FORMAT "), CASE WHEN s.state = 'approved' AND now() >= s.expires_at THEN "
        "'expired' ELSE s.state END, (SELECT count(*) FROM share_recordings x WHERE x.share_id = "
        "s.id) FROM shares s JOIN users u ON u.id = s.requester_id WHERE $2 = 'admin' OR "
        "s.requester_id = $1 OR EXISTS (SELECT 1 FROM permission_group_members m WHERE "
        "m.user_id = $1) ORDER BY s.created_at DESC, s.id LIMIT 500",
        2, p);
    if (api_db_unavailable(r, res))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:I}", "id",
                                             (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10),
                                             "requester", PQgetvalue(res, i, 1), "recipient",
                                             PQgetvalue(res, i, 2), "reason", PQgetvalue(res, i, 3),
                                             "expires_at", PQgetvalue(res, i, 4), "state",
                                             PQgetvalue(res, i, 5), "recordings",
                                             (json_int_t)strtoll(PQgetvalue(res, i, 6), NULL, 10)));
    PQclear(res);
    if (!api_audit_or_503(r, who->actor, "share.list", "", "ok")) {
        json_decref(arr);
        return;
    }
    api_reply_json(r, 200, json_pack("{s:o}", "shares", arr));
}

static const char *const decide_fields[] = {"approve", "note"};

/* Who may approve was api_decide()'s; what is left is the share's state and
 * whether its requester may still read what it holds. */
void api_share_decide(request *r, const caller *who, const char *param)
{
    const char *uid = who->uid;
    char id[24], object[48];
    if (!api_parse_id(param, id)) {
        api_reply_error(r, 404, "not_found", "no such share", NULL);
        return;
    }
    snprintf(object, sizeof(object), "share %s", id);
    json_t *body = api_read_object(r, decide_fields, 2);
    if (!body)
        return;
    json_t *approve = json_object_get(body, "approve"), *note = json_object_get(body, "note");
    if (!approve || !json_is_boolean(approve)) {
        api_reply_error(r, 400, approve ? "invalid_type" : "missing_field", "true or false",
                        "approve");
        goto out;
    }
    if (note && (!json_is_string(note) || json_string_length(note) > 2000)) {
        api_reply_error(r, 400, "invalid_type", "a string of at most 2000 bytes", "note");
        goto out;
    }
    const char *p1[2] = {id, uid};
    PGresult *res;
    bool yes = json_is_true(approve);
    if (yes) {
        /* What goes out is what the requester may read now, not when they asked. */
        res = api_query(r->a,
                        "SELECT x.recording_id::text FROM shares s JOIN share_recordings x ON "
                        "x.share_id = s.id WHERE s.id = $1 AND NOT may_read_recording("
                        "s.requester_id, x.recording_id, now()) LIMIT 1",
                        1, p1);
        if (api_db_unavailable(r, res))
            goto out;
        bool lost = PQntuples(res) > 0;
        PQclear(res);
        if (lost) {
            api_audit(r, who->actor, "share.decide", object, "failed");
            api_reply_conflict(r,
                               "the requester may no longer read every shared recording: "
                               "reject it, or ask for a new share",
                               "requested");
            goto out;
        }
    }
    char token[48] = "", thex[67] = "";
    if (yes && !api_new_token(token, thex)) {
        api_reply_error(r, 503, "unavailable", "no random bytes for a link", NULL);
        goto out;
    }
    const char *p2[5] = {id, uid, yes ? "approved" : "rejected", yes ? thex : NULL,
                         note ? json_string_value(note) : NULL};
    if (!api_change_begin(r))
        goto out;
    res = api_query(r->a,
                    "UPDATE shares SET state = $3, approver_id = $2, decided_at = now(), "
                    "token_hash = $4::bytea, note = $5 WHERE id = $1 AND state = 'requested' "
                    "RETURNING state",
                    5, p2);
    if (!res || PQntuples(res) != 1)
        api_change_abort(r);
    if (api_db_unavailable(r, res))
        goto out;
    if (PQntuples(res) != 1) {
        PQclear(res);
        res = api_query(r->a, "SELECT state FROM shares WHERE id = $1", 1, p1);
        if (!api_db_unavailable(r, res)) {
            api_reply_conflict(r, "the share was already decided",
                               PQntuples(res) ? PQgetvalue(res, 0, 0) : "?");
            PQclear(res);
            api_audit(r, who->actor, "share.decide", object, "failed");
        }
        goto out;
    }
    PQclear(res);
    if (!api_change_commit(r, who->actor, "share.decide", object))
        goto out;
    json_t *j = json_pack("{s:s, s:s}", "id", id, "state", yes ? "approved" : "rejected");
    if (yes) {
        char link[80];
        snprintf(link, sizeof(link), "/api/v1/shared/%s", token);
        json_object_set_new(j, "link", json_string(link)); /* shown here only */
    }
    api_reply_json(r, 200, j);
out:
    json_decref(body);
}

/* Its requester or an admin (api_decide()); a share no longer live is 409. */
void api_share_revoke(request *r, const caller *who, const char *param)
{
    char id[24], object[48];
    if (!api_parse_id(param, id)) {
        api_reply_error(r, 404, "not_found", "no such share", NULL);
        return;
    }
    snprintf(object, sizeof(object), "share %s", id);
    const char *p[2] = {id, who->uid};
    if (!api_change_begin(r))
        return;
    PGresult *res = api_query(r->a,
                              "UPDATE shares SET state = 'revoked', revoked_at = now(), "
                              "revoked_by = $2 WHERE id = $1 AND state IN ('requested', "
                              "'approved') RETURNING id",
                              2, p);
    if (!res || PQntuples(res) != 1)
        api_change_abort(r);
    if (api_db_unavailable(r, res))
        return;
    bool done = PQntuples(res) == 1;
    PQclear(res);
    if (done) {
        if (api_change_commit(r, who->actor, "share.revoke", object))
            api_reply_json(r, 200, json_pack("{s:s, s:s}", "id", id, "state", "revoked"));
        return;
    }
    res = api_query(r->a, "SELECT state FROM shares WHERE id = $1", 1, p);
    if (api_db_unavailable(r, res))
        return;
    if (PQntuples(res) != 1) {
        PQclear(res);
        api_reply_error(r, 404, "not_found", "no such share", NULL);
        return;
    }
    api_reply_conflict(r, "the share is no longer live", PQgetvalue(res, 0, 0));
    PQclear(res);
}

bool api_share_open(request *r, const char *token, api_share *out)
{
    memset(out, 0, sizeof(*out));
    if (strlen(token) != API_TOKEN_CHARS) { /* (not a token this server issues) */
        api_reply_error(r, 404, "not_found", "no such link, or it expired or was revoked", NULL);
        return false;
    }
    char thex[67];
    api_token_hash_hex(token, thex);
    const char *p[1] = {thex};
    PGresult *res = api_query(
        r->a,
        "SELECT s.id, s.recipient, s.requester_id, to_char(s.expires_at AT TIME ZONE "
        "'UTC', " TS_FORMAT
        ") FROM shares s WHERE s.token_hash = $1::bytea AND s.state = 'approved' AND "
        "now() < s.expires_at AND NOT EXISTS (SELECT 1 FROM share_recordings y "
        "WHERE y.share_id = s.id AND NOT may_read_recording(s.requester_id, y.recording_id, "
        "now()))",
        1, p);
    if (api_db_unavailable(r, res))
        return false;
    if (PQntuples(res) != 1) {
        PQclear(res);
        api_audit(r, "anonymous", "share.use", "", "denied");
        api_reply_error(r, 404, "not_found",
                        "no such link, or it expired, was revoked, or its requester may no "
                        "longer read what it shares",
                        NULL);
        return false;
    }
    cu_strlcpy(out->id, PQgetvalue(res, 0, 0), sizeof(out->id));
    cu_strlcpy(out->recipient, PQgetvalue(res, 0, 1), sizeof(out->recipient));
    cu_strlcpy(out->requester_uid, PQgetvalue(res, 0, 2), sizeof(out->requester_uid));
    cu_strlcpy(out->expires_at, PQgetvalue(res, 0, 3), sizeof(out->expires_at));
    cu_strlcpy(out->token, token, sizeof(out->token));
    snprintf(out->actor, sizeof(out->actor), "share:%s", out->id);
    PQclear(res);
    return true;
}

bool api_share_holds(request *r, const api_share *sh, const char *rec)
{
    PGresult *res = NULL;
    if (api_uuid_ok(rec)) {
        const char *p[2] = {sh->id, rec};
        res = api_query(r->a,
                        "SELECT 1 FROM share_recordings WHERE share_id = $1::bigint AND "
                        "recording_id = $2::uuid",
                        2, p);
        if (api_db_unavailable(r, res))
            return false;
    }
    bool held = res && PQntuples(res) == 1;
    if (res)
        PQclear(res);
    if (!held) { /* (nothing else is reachable with the link) */
        char object[120];
        snprintf(object, sizeof(object), "share %s recording %.40s", sh->id, rec);
        api_audit(r, sh->actor, "share.use", object, "denied");
        api_reply_error(r, 404, "not_found", "no such recording in this share", NULL);
    }
    return held;
}

void api_shared_clip(request *r, const caller *who, const char *token)
{
    (void)who;
    api_share sh;
    char rec[40];
    if (!api_share_open(r, token, &sh) || !api_query_text(r, "recording", rec, sizeof(rec)) ||
        !api_share_holds(r, &sh, rec))
        return;
    api_clip_send(r, sh.requester_uid, sh.actor, rec);
}

void api_shared_packages_post(request *r, const caller *who, const char *token)
{
    (void)who;
    api_share sh;
    if (api_share_open(r, token, &sh))
        api_shared_package_create(r, &sh);
}

void api_shared_package(request *r, const caller *who, const char *token)
{
    (void)who;
    api_share sh;
    if (api_share_open(r, token, &sh))
        api_shared_package_get(r, &sh);
}

/* The recipient's side: no account, only the link's token. */
void api_share_use(request *r, const caller *who, const char *token)
{
    (void)who;
    api_share sh;
    if (!api_share_open(r, token, &sh))
        return;
    const char *p[1] = {sh.id};
    PGresult *res = api_query(
        r->a,
        "SELECT r.id::text, to_char(r.opened_at AT TIME ZONE 'UTC', " TS_FORMAT "), r.state, "
        "coalesce(r.segment_count, r.acked_segments) FROM share_recordings x "
        "JOIN recordings r ON r.id = x.recording_id WHERE x.share_id = $1::bigint "
        "ORDER BY r.opened_at",
        1, p);
    if (api_db_unavailable(r, res))
        return;
    char object[48];
    snprintf(object, sizeof(object), "share %s", sh.id);
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I}", "id", PQgetvalue(res, i, 0),
                                             "opened_at", PQgetvalue(res, i, 1), "state",
                                             PQgetvalue(res, i, 2), "segments",
                                             (json_int_t)strtoll(PQgetvalue(res, i, 3), NULL, 10)));
    json_t *j = json_pack("{s:s, s:s, s:o}", "recipient", sh.recipient, "expires_at", sh.expires_at,
                          "recordings", arr);
    PQclear(res);
    if (!api_audit_or_503(r, sh.actor, "share.use", object, "ok")) {
        json_decref(j);
        return;
    }
    api_reply_json(r, 200, j);
}
