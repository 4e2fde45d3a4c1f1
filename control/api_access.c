/*
 * The permission workflow (rule 1) and reading recordings (rule 4) over the
 * API (docs/control.md):
 *
 *   POST /api/v1/permission-requests               ask (for yourself)
 *   GET  /api/v1/permission-requests               yours, and those you decide
 *   POST /api/v1/permission-requests/{id}/preliminary   the department head
 *   POST /api/v1/permission-requests/{id}/final          the permission group
 *   GET  /api/v1/grants, POST /api/v1/grants/{id}/revoke (admin, notice first)
 *   GET  /api/v1/notices
 *   GET  /api/v1/recordings[?page=N], GET /api/v1/recordings/{id}
 *
 * Illegal transitions answer 409 with the request's current state. Which
 * recordings a caller sees is decided by may_read_recording() in the
 * database (migration 0006), the same predicate for lists and single reads;
 * a recording the caller may not read is 404, as if it did not exist.
 */
#include "api_internal.h"

#include <event2/keyvalq_struct.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool api_parse_id(const char *s, char out[24])
{
    size_t n = strlen(s);
    if (n == 0 || n > 18)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

/*
 * An RFC 3339 time ("2026-11-28T10:00:00Z", optional fraction, Z or ±hh:mm)
 * as milliseconds since the epoch, in text for a query. False if malformed
 * or not a real date.
 */
bool api_parse_time(const char *s, char out[24])
{
    int y, mo, d, h, mi, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
        return false;
    const char *p = s + 19;
    int ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; isdigit((unsigned char)*p); p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        if (digits == 0)
            return false;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int offset = 0;
    if (*p == 'Z' && p[1] == '\0') {
        offset = 0;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':' &&
               isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2]) &&
               isdigit((unsigned char)p[4]) && isdigit((unsigned char)p[5])) {
        offset = ((p[1] - '0') * 10 + (p[2] - '0')) * 60 + (p[4] - '0') * 10 + (p[5] - '0');
        if (*p == '-')
            offset = -offset;
    } else {
        return false;
    }
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    /* timegm normalizes: a 30th of February comes back as another date. */
    if (y < 1970 || y > 9999 || tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d ||
        tm.tm_hour != h || tm.tm_min != mi || tm.tm_sec != sec)
        return false;
    snprintf(out, 24, "%lld", ((long long)t - offset * 60) * 1000 + ms);
    return true;
}

bool api_db_unavailable(request *r, PGresult *res)
{
    if (res)
        return false;
    api_reply_unavailable(r);
    return true;
}

/* ------------------------------------------------------ permission requests */

static const char *const request_fields[] = {"permission", "department",  "reason",
                                             "valid_from", "valid_until", "changes_grant"};

void api_request_create(request *r, const caller *who, const char *param)
{
    (void)param;
    json_t *body = api_read_object(r, request_fields, 6);
    if (!body)
        return;
    const char *perm = api_string_field(r, body, "permission", 16);
    const char *dept = perm ? api_string_field(r, body, "department", 200) : NULL;
    const char *reason = dept ? api_string_field(r, body, "reason", 2000) : NULL;
    const char *from = reason ? api_string_field(r, body, "valid_from", 40) : NULL;
    const char *until = from ? api_string_field(r, body, "valid_until", 40) : NULL;
    char from_ms[24], until_ms[24], change[24] = "";
    json_t *cg = json_object_get(body, "changes_grant");
    if (!until)
        goto out;
    if (strcmp(perm, "reviewer") != 0 && strcmp(perm, "admin") != 0) {
        api_reply_error(r, 400, "invalid_value", "reviewer or admin", "permission");
        goto out;
    }
    if (!reason[0]) {
        api_reply_error(r, 400, "invalid_value", "a reason is required", "reason");
        goto out;
    }
    if (!api_parse_time(from, from_ms)) {
        api_reply_error(r, 400, "invalid_value", "an RFC 3339 time", "valid_from");
        goto out;
    }
    if (!api_parse_time(until, until_ms)) {
        api_reply_error(r, 400, "invalid_value", "an RFC 3339 time", "valid_until");
        goto out;
    }
    if (strtoll(until_ms, NULL, 10) <= strtoll(from_ms, NULL, 10)) {
        api_reply_error(r, 400, "invalid_value", "must be after valid_from", "valid_until");
        goto out;
    }
    if (cg) {
        if (!json_is_integer(cg) || json_integer_value(cg) <= 0) {
            api_reply_error(r, 400, "invalid_type", "a grant id", "changes_grant");
            goto out;
        }
        snprintf(change, sizeof(change), "%lld", (long long)json_integer_value(cg));
    }
    const char *uid = who->uid;
    const char *p[8] = {uid,
                        perm,
                        dept,
                        reason,
                        from_ms,
                        until_ms,
                        change[0] ? change : NULL,
                        change[0] ? "change" : "new"};
    /* The department must exist; a changed grant must be the requester's own. */
    if (!api_change_begin(r))
        goto out;
    PGresult *res = api_query(
        r->a,
        "INSERT INTO permission_requests (requester_id, kind, permission, department_id, reason, "
        "valid_from, valid_until, changes_grant_id) "
        "SELECT $1, $8, $2, d.id, $4, 'epoch'::timestamptz + $5::bigint * interval '1 ms', "
        "'epoch'::timestamptz + $6::bigint * interval '1 ms', $7::bigint FROM departments d "
        "WHERE d.name = $3 AND ($7::bigint IS NULL OR EXISTS (SELECT 1 FROM grants g WHERE "
        "g.id = $7::bigint AND g.user_id = $1 AND g.revoked_at IS NULL)) RETURNING id",
        8, p);
    if (!res || PQntuples(res) != 1)
        api_change_abort(r);
    if (api_db_unavailable(r, res))
        goto out;
    if (PQntuples(res) != 1) {
        PQclear(res);
        api_reply_error(r, 400, "invalid_value",
                        change[0] ? "no such department, or the grant is not yours and active"
                                  : "no such department",
                        change[0] ? "changes_grant" : "department");
        goto out;
    }
    long long id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    char object[64];
    snprintf(object, sizeof(object), "permission-request %lld", id);
    if (api_change_commit(r, who->actor, "permission.request", object))
        api_reply_json(r, 201, json_pack("{s:I, s:s}", "id", (json_int_t)id, "state", "submitted"));
out:
    json_decref(body);
}

/* The request's JSON, from a row of REQUEST_COLUMNS. */
#define REQUEST_COLUMNS                                                                            \
    "q.id, u.username, q.kind, q.permission, d.name, q.reason, to_char(q.valid_from AT TIME "      \
    "ZONE 'UTC', " TS_FORMAT "), to_char(q.valid_until AT TIME ZONE 'UTC', " TS_FORMAT "), "       \
    "q.state, coalesce(q.changes_grant_id, 0) "

static json_t *request_json(PGresult *res, int i)
{
    json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                          (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "requester",
                          PQgetvalue(res, i, 1), "kind", PQgetvalue(res, i, 2), "permission",
                          PQgetvalue(res, i, 3), "department", PQgetvalue(res, i, 4), "reason",
                          PQgetvalue(res, i, 5), "valid_from", PQgetvalue(res, i, 6), "valid_until",
                          PQgetvalue(res, i, 7), "state", PQgetvalue(res, i, 8));
    long long cg = strtoll(PQgetvalue(res, i, 9), NULL, 10);
    if (j && cg)
        json_object_set_new(j, "changes_grant", json_integer(cg));
    return j;
}

void api_requests_list(request *r, const caller *who, const char *param)
{
    (void)param;
    const char *uid = who->uid;
    const char *p[2] = {uid, who->role};
    /* Yours; those your departments' heads (you) decide first; those the
     * group (if you are in it) decides next; all for admins. */
    PGresult *res = api_query(
        r->a,
        "SELECT " REQUEST_COLUMNS "FROM permission_requests q JOIN users u ON u.id = "
        "q.requester_id JOIN departments d ON d.id = q.department_id WHERE $2 = 'admin' OR "
        "q.requester_id = $1 OR d.head_user_id = $1 OR EXISTS (SELECT 1 FROM "
        "permission_group_members m WHERE m.user_id = $1) ORDER BY q.created_at DESC, q.id LIMIT "
        "500",
        2, p);
    if (api_db_unavailable(r, res))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr, request_json(res, i));
    PQclear(res);
    if (!api_audit_or_503(r, who->actor, "permission.list", "", "ok")) {
        json_decref(arr);
        return;
    }
    api_reply_json(r, 200, json_pack("{s:o}", "requests", arr));
}

static const char *const decision_fields[] = {"approve", "note"};

/*
 * A decision on request @p id: @p final false = the department head's
 * preliminary one (submitted -> preliminary_approved | rejected), true = the
 * permission group's (preliminary_approved -> granted | rejected, and the
 * grant made). Only the head of the request's department, or a member of the
 * group, decides; never on their own request.
 */
/* Who may decide was api_decide()'s; what is left is the request's state. */
static void decide(request *r, const caller *who, const char *param, bool final)
{
    char id[24];
    if (!api_parse_id(param, id)) {
        api_reply_error(r, 404, "not_found", "no such permission request", NULL);
        return;
    }
    const char *action = final ? "permission.final" : "permission.preliminary";
    char object[64];
    snprintf(object, sizeof(object), "permission-request %s", id);
    json_t *body = api_read_object(r, decision_fields, 2);
    if (!body)
        return;
    json_t *approve = json_object_get(body, "approve");
    json_t *note = json_object_get(body, "note");
    if (!approve || !json_is_boolean(approve)) {
        api_reply_error(r, 400, approve ? "invalid_type" : "missing_field", "true or false",
                        "approve");
        goto out;
    }
    if (note && (!json_is_string(note) || json_string_length(note) > 2000)) {
        api_reply_error(r, 400, "invalid_type", "a string of at most 2000 bytes", "note");
        goto out;
    }
    const char *uid = who->uid;
    const char *p1[2] = {id, uid}; /* (the state query takes the first) */
    PGresult *res = api_query(r->a, "SELECT state FROM permission_requests WHERE id = $1", 1, p1);
    if (api_db_unavailable(r, res))
        goto out;
    if (PQntuples(res) != 1) {
        PQclear(res);
        api_reply_error(r, 404, "not_found", "no such permission request", NULL);
        goto out;
    }
    char state[32];
    cu_strlcpy(state, PQgetvalue(res, 0, 0), sizeof(state));
    PQclear(res);
    const char *from = final ? "preliminary_approved" : "submitted";
    bool yes = json_is_true(approve);
    const char *to = !yes ? "rejected" : final ? "granted" : "preliminary_approved";
    const char *p2[5] = {id, uid, from, to, note ? json_string_value(note) : NULL};
    if (!api_change_begin(r))
        goto out;
    res = api_query(r->a,
                    final ? "UPDATE permission_requests SET state = $4, group_id = $2, "
                            "group_decided_at = now(), group_note = $5 WHERE id = $1 AND state = "
                            "$3 AND head_id IS DISTINCT FROM $2::bigint RETURNING requester_id"
                          : "UPDATE permission_requests SET state = $4, head_id = $2, "
                            "head_decided_at = now(), head_note = $5 WHERE id = $1 AND state = $3 "
                            "RETURNING requester_id",
                    5, p2);
    bool ok = res != NULL, moved = ok && PQntuples(res) == 1;
    PQclear(res);
    if (moved && final && yes) {
        /* The grant, valid only inside the requested window; a change ends the old grant. */
        ok = api_exec_ok(r->a,
                         "INSERT INTO grants (user_id, permission, department_id, valid_from, "
                         "valid_until, request_id) SELECT requester_id, permission, "
                         "department_id, valid_from, valid_until, id FROM permission_requests "
                         "WHERE id = $1",
                         1, p1) &&
             api_exec_ok(r->a,
                         "UPDATE grants g SET revoked_at = now(), revoked_by = $2, revoke_reason "
                         "= 'replaced by request ' || q.id FROM permission_requests q WHERE q.id "
                         "= $1 AND g.id = q.changes_grant_id AND g.revoked_at IS NULL",
                         2, p1);
    }
    if (moved && ok) {
        char text[200];
        snprintf(text, sizeof(text), "your permission request %s: %s", id, to);
        const char *p3[2] = {id, text};
        ok = api_exec_ok(r->a,
                         "INSERT INTO notices (user_id, kind, text) SELECT requester_id, "
                         "'request_decided', $2 FROM permission_requests WHERE id = $1",
                         2, p3);
    }
    if (!ok || !moved) {
        api_change_abort(r);
        if (!ok) {
            api_reply_unavailable(r);
            goto out;
        }
        /* Someone else moved it meanwhile, or it was never in the state this needs. */
        res = api_query(r->a, "SELECT state FROM permission_requests WHERE id = $1", 1, p1);
        if (!api_db_unavailable(r, res)) {
            api_reply_conflict(r,
                               final ? "a final decision needs a preliminary approval first"
                                     : "the preliminary decision was already made",
                               PQntuples(res) ? PQgetvalue(res, 0, 0) : state);
            PQclear(res);
            api_audit(r, who->actor, action, object, "failed");
        }
        goto out;
    }
    if (api_change_commit(r, who->actor, action, object))
        api_reply_json(r, 200, json_pack("{s:s, s:s}", "id", id, "state", to));
out:
    json_decref(body);
}

/* ----------------------------------------------------------------- grants */

void api_grants_list(request *r, const caller *who, const char *param)
{
    (void)param;
    const char *uid = who->uid;
    const char *p[2] = {uid, who->role};
    PGresult *res = api_query(
        r->a,
        "SELECT g.id, u.username, g.permission, d.name, to_char(g.valid_from AT TIME ZONE "
        "'UTC', " TS_FORMAT "), to_char(g.valid_until AT TIME ZONE 'UTC', " TS_FORMAT "), "
        "CASE WHEN g.revoked_at IS NOT NULL THEN 'revoked' WHEN now() < g.valid_from THEN "
        "'pending' WHEN now() >= g.valid_until THEN 'expired' ELSE 'active' END "
        "FROM grants g JOIN users u ON u.id = g.user_id JOIN departments d ON d.id = "
        "g.department_id WHERE $2 = 'admin' OR g.user_id = $1 ORDER BY g.created_at DESC, g.id "
        "LIMIT 500",
        2, p);
    if (api_db_unavailable(r, res))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(
            arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                           (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "user",
                           PQgetvalue(res, i, 1), "permission", PQgetvalue(res, i, 2), "department",
                           PQgetvalue(res, i, 3), "valid_from", PQgetvalue(res, i, 4),
                           "valid_until", PQgetvalue(res, i, 5), "status", PQgetvalue(res, i, 6)));
    PQclear(res);
    if (!api_audit_or_503(r, who->actor, "grant.list", "", "ok")) {
        json_decref(arr);
        return;
    }
    api_reply_json(r, 200, json_pack("{s:o}", "grants", arr));
}

static const char *const revoke_fields[] = {"reason"};

/* An admin revokes a grant: the holder's notice is written first, in the same transaction. */
void api_grant_revoke(request *r, const caller *who, const char *param)
{
    char id[24], object[64];
    if (!api_parse_id(param, id)) { /* (api_decide() hid it already) */
        api_reply_error(r, 404, "not_found", "no such grant", NULL);
        return;
    }
    snprintf(object, sizeof(object), "grant %s", id);
    json_t *body = api_read_object(r, revoke_fields, 1);
    if (!body)
        return;
    const char *reason = api_string_field(r, body, "reason", 2000);
    const char *uid = who->uid;
    char text[2200];
    if (!reason)
        goto out;
    if (!reason[0]) {
        api_reply_error(r, 400, "invalid_value", "a reason is required", "reason");
        goto out;
    }
    snprintf(text, sizeof(text), "your grant %s is revoked: %s", id, reason);
    const char *p[3] = {id, uid, reason}, *pn[2] = {id, text};
    if (!api_change_begin(r))
        goto out;
    PGresult *res = api_query(r->a,
                              "INSERT INTO notices (user_id, kind, grant_id, text) SELECT user_id, "
                              "'grant_revoked', id, $2 FROM grants WHERE id = $1 AND revoked_at "
                              "IS NULL RETURNING id",
                              2, pn);
    bool db_ok = res != NULL, noticed = db_ok && PQntuples(res) == 1;
    PQclear(res);
    bool ok = noticed && api_exec_ok(r->a,
                                     "UPDATE grants SET revoked_at = clock_timestamp(), "
                                     "revoked_by = $2, revoke_reason = $3 WHERE id = $1",
                                     3, p);
    if (!ok) {
        api_change_abort(r);
        if (!db_ok) {
            api_reply_error(r, 503, "unavailable", "the database is not reachable", NULL);
        } else {
            const char *p1[1] = {id};
            PGresult *s = api_query(r->a, "SELECT 1 FROM grants WHERE id = $1", 1, p1);
            bool exists = s && PQntuples(s) == 1;
            PQclear(s);
            if (exists)
                api_reply_conflict(r, "the grant is already revoked", "revoked");
            else
                api_reply_error(r, 404, "not_found", "no such grant", NULL);
        }
        goto out;
    }
    if (api_change_commit(r, who->actor, "grant.revoke", object))
        api_reply_json(r, 200, json_pack("{s:s, s:s}", "id", id, "status", "revoked"));
out:
    json_decref(body);
}

void api_notices_list(request *r, const caller *who, const char *param)
{
    (void)param;
    const char *uid = who->uid;
    const char *p[1] = {uid};
    PGresult *res =
        api_query(r->a,
                  "SELECT id, to_char(at AT TIME ZONE 'UTC', " TS_FORMAT "), kind, text, "
                  "coalesce(grant_id, 0) FROM notices WHERE user_id = $1 ORDER BY at DESC, id "
                  "LIMIT 200",
                  1, p);
    if (api_db_unavailable(r, res))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr,
                              json_pack("{s:I, s:s, s:s, s:s, s:I}", "id",
                                        (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "at",
                                        PQgetvalue(res, i, 1), "kind", PQgetvalue(res, i, 2),
                                        "text", PQgetvalue(res, i, 3), "grant",
                                        (json_int_t)strtoll(PQgetvalue(res, i, 4), NULL, 10)));
    PQclear(res);
    api_reply_json(r, 200, json_pack("{s:o}", "notices", arr));
}

/* ------------------------------------------------------------- recordings */

#define RECORDING_COLUMNS                                                                          \
    "r.id::text, coalesce(dv.serial, ''), coalesce(o.username, ''), coalesce(od.name, ''), "       \
    "to_char(r.opened_at AT TIME ZONE 'UTC', " TS_FORMAT "), coalesce(to_char(r.sealed_at AT "     \
    "TIME ZONE 'UTC', " TS_FORMAT "), ''), r.state, coalesce(r.segment_count, "                    \
    "r.acked_segments), r.acked_bytes, coalesce((r.last_end_us - r.first_start_us) / 1000, 0), "   \
    "coalesce(r.continues::text, ''), coalesce(r.capture_id::text, ''), "                          \
    "coalesce((SELECT string_agg(t.id::text, ',' ORDER BY t.opened_at, t.id) FROM recordings t "   \
    "WHERE t.capture_id = r.capture_id AND t.id <> r.id AND may_read_recording($1, t.id, "         \
    "now())), "                                                                                    \
    "'') "
#define RECORDING_NCOLUMNS 13 /* what RECORDING_COLUMNS selects ($1: the caller's id) */
#define RECORDING_JOINS                                                                            \
    "FROM recordings r LEFT JOIN devices dv ON dv.id = r.device_id LEFT JOIN users o ON o.id = "   \
    "r.officer_id LEFT JOIN departments od ON od.id = o.department_id "

static json_t *recording_json(PGresult *res, int i)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "id",
                          PQgetvalue(res, i, 0), "device", PQgetvalue(res, i, 1), "officer",
                          PQgetvalue(res, i, 2), "department", PQgetvalue(res, i, 3), "opened_at",
                          PQgetvalue(res, i, 4), "state", PQgetvalue(res, i, 6), "segments",
                          (json_int_t)strtoll(PQgetvalue(res, i, 7), NULL, 10), "bytes",
                          (json_int_t)strtoll(PQgetvalue(res, i, 8), NULL, 10), "duration_ms",
                          (json_int_t)strtoll(PQgetvalue(res, i, 9), NULL, 10));
    if (j && PQgetvalue(res, i, 5)[0])
        json_object_set_new(j, "sealed_at", json_string(PQgetvalue(res, i, 5)));
    if (j && PQgetvalue(res, i, 10)[0])
        json_object_set_new(j, "continues", json_string(PQgetvalue(res, i, 10)));
    if (j &&
        PQgetvalue(res, i, 11)[0]) { /* the capture, and its other tracks the caller may read */
        json_object_set_new(j, "capture", json_string(PQgetvalue(res, i, 11)));
        json_t *tracks = json_array();
        for (const char *t = PQgetvalue(res, i, 12); *t;) {
            size_t n = strcspn(t, ",");
            json_array_append_new(tracks, json_stringn(t, n));
            t += n + (t[n] == ',');
        }
        json_object_set_new(j, "tracks", tracks);
    }
    return j;
}

bool api_uuid_ok(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

void api_recording_get(request *r, const caller *who, const char *id)
{
    char object[64];
    snprintf(object, sizeof(object), "recording %s", id);
    if (!api_uuid_ok(id)) {
        api_reply_error(r, 404, "not_found", "no such recording", NULL);
        return;
    }
    const char *uid = who->uid;
    const char *p[2] = {uid, id};
    PGresult *res =
        api_query(r->a,
                  "SELECT " RECORDING_COLUMNS
                  ", may_read_recording($1, r.id, now()) " RECORDING_JOINS "WHERE r.id = $2::uuid",
                  2, p);
    if (api_db_unavailable(r, res))
        return;
    bool visible = PQntuples(res) == 1 && *PQgetvalue(res, 0, RECORDING_NCOLUMNS) == 't';
    if (!visible) {
        /* The same answer whether it does not exist or may not be seen. */
        PQclear(res);
        api_audit(r, who->actor, "recording.read", object, "denied");
        api_reply_error(r, 404, "not_found", "no such recording", NULL);
        return;
    }
    json_t *j = recording_json(res, 0);
    PQclear(res);
    if (!api_audit_or_503(r, who->actor, "recording.read", object, "ok")) {
        json_decref(j);
        return;
    }
    api_reply_json(r, 200, j);
}

/* ---------------------------------------------------------------- helpers */

bool api_string_array(request *r, json_t *arr, const char *field, size_t min, size_t max,
                      bool (*valid)(const char *s, size_t n), const char *what, cu_buf *out)
{
    if (!json_is_array(arr)) {
        api_reply_error(r, 400, "invalid_type", "an array of strings", field);
        return false;
    }
    if (json_array_size(arr) < min || json_array_size(arr) > max) {
        char why[64];
        snprintf(why, sizeof(why), "from %zu to %zu items", min, max);
        api_reply_error(r, 400, "invalid_value", why, field);
        return false;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        char item[64];
        snprintf(item, sizeof(item), "%s[%zu]", field, i);
        if (!json_is_string(v)) {
            api_reply_error(r, 400, "invalid_type", "a string", item);
            return false;
        }
        const char *str = json_string_value(v);
        size_t n = json_string_length(v);
        if (strlen(str) != n || !valid(str, n)) {
            api_reply_error(r, 400, "invalid_value", what, item);
            return false;
        }
        if (db_array_add(out, str) != CU_OK) {
            api_reply_error(r, 413, "body_too_large", "too many or too long items", field);
            return false;
        }
    }
    if (db_array_end(out) != CU_OK) {
        api_reply_error(r, 413, "body_too_large", "too many or too long items", field);
        return false;
    }
    return true;
}

bool api_query_number(request *r, const char *name, long max, long *out)
{
    const char *q = r->query;
    if (!q)
        return true;
    struct evkeyvalq params;
    if (evhttp_parse_query_str(q, &params) != 0) {
        api_reply_error(r, 400, "invalid_value", "a malformed query string", NULL);
        return false;
    }
    const char *v = evhttp_find_header(&params, name);
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : 0;
    bool bad = v && (!*v || *end || n < 1 || n > max);
    evhttp_clear_headers(&params);
    if (bad) {
        char why[64];
        snprintf(why, sizeof(why), "a number from 1 to %ld", max);
        api_reply_error(r, 400, "invalid_value", why, name);
        return false;
    }
    if (v)
        *out = n;
    return true;
}

bool api_query_text(request *r, const char *name, char *out, size_t size)
{
    out[0] = '\0';
    if (!r->query)
        return true;
    struct evkeyvalq params;
    if (evhttp_parse_query_str(r->query, &params) != 0) {
        api_reply_error(r, 400, "invalid_value", "a malformed query string", NULL);
        return false;
    }
    const char *v = evhttp_find_header(&params, name);
    bool ok = !v || cu_strlcpy(out, v, size);
    evhttp_clear_headers(&params);
    if (!ok) {
        out[0] = '\0';
        char why[64];
        snprintf(why, sizeof(why), "at most %zu bytes", size - 1);
        api_reply_error(r, 400, "invalid_value", why, name);
    }
    return ok;
}

/* ---------------------------------------------------------------- handlers */

void api_request_decide_first(request *r, const caller *who, const char *id)
{
    decide(r, who, id, false);
}

void api_request_decide_final(request *r, const caller *who, const char *id)
{
    decide(r, who, id, true);
}
