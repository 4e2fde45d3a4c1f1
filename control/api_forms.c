/*
 * Enforcement record forms (docs/control.md): a structured form attached to
 * a recording — case number, location, time, parties, summary — validated
 * field by field (an error names the field, parties[i] included), every
 * edit a new version. Whoever may read the recording may read its form
 * (visible_recordings); its officer and admins may edit (may_edit_form).
 */
#include "api_internal.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARTIES_MAX 50

static const char *const form_fields[] = {"case_number", "location", "occurred_at", "parties",
                                          "summary"};

static bool case_number_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 40)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              strchr("/_.-", *p)))
            return false;
    return true;
}

static bool party_ok(const char *s, size_t n)
{
    (void)s;
    return n >= 1 && n <= 200;
}

static void put_form(request *r, const caller *who, const char *id, const char *uid,
                     const char *object)
{
    json_t *body = api_read_object(r, form_fields, 5);
    if (!body)
        return;
    cu_buf parties;
    cu_buf_init(&parties, PARTIES_MAX * 410 + 8);
    char at_ms[24];
    const char *cn = api_string_field(r, body, "case_number", 40);
    const char *loc = cn ? api_string_field(r, body, "location", 200) : NULL;
    const char *at = loc ? api_string_field(r, body, "occurred_at", 40) : NULL;
    const char *summary = at ? api_string_field(r, body, "summary", 5000) : NULL;
    if (!summary)
        goto out;
    if (!case_number_ok(cn)) {
        api_reply_error(r, 400, "invalid_value", "1 to 40 of A-Z a-z 0-9 / _ . -", "case_number");
        goto out;
    }
    if (!loc[0]) {
        api_reply_error(r, 400, "invalid_value", "1 to 200 characters", "location");
        goto out;
    }
    if (!api_parse_time(at, at_ms)) {
        api_reply_error(r, 400, "invalid_value", "an RFC 3339 time", "occurred_at");
        goto out;
    }
    if (!summary[0]) {
        api_reply_error(r, 400, "invalid_value", "1 to 5000 characters", "summary");
        goto out;
    }
    json_t *pa = json_object_get(body, "parties");
    if (!pa) {
        api_reply_error(r, 400, "missing_field", "this field is required", "parties");
        goto out;
    }
    if (!api_string_array(r, pa, "parties", 0, PARTIES_MAX, party_ok, "1 to 200 characters",
                          &parties))
        goto out;
    const char *p2[7] = {id, cn, loc, at_ms, parties.data, summary, uid};
    if (!api_change_begin(r))
        goto out;
    PGresult *res =
        api_query(r->a,
                  "INSERT INTO record_forms (recording_id, version, case_number, location, "
                  "occurred_at, parties, summary, edited_by) SELECT $1::uuid, coalesce(max("
                  "version), 0) + 1, $2, $3, 'epoch'::timestamptz + $4::bigint * interval "
                  "'1 ms', $5::text[], $6, $7 FROM record_forms WHERE recording_id = $1::uuid "
                  "RETURNING version",
                  7, p2);
    if (!res)
        api_change_abort(r);
    if (api_db_unavailable(r, res))
        goto out;
    int version = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    char what[96];
    snprintf(what, sizeof(what), "%s version %d", object, version);
    if (api_change_commit(r, who->actor, "form.edit", what))
        api_reply_json(r, 200, json_pack("{s:s, s:i}", "recording", id, "version", version));
out:
    cu_buf_free(&parties);
    json_decref(body);
}

static void get_form(request *r, const caller *who, const char *id, const char *uid,
                     const char *object)
{
    long version = 0;
    if (!api_query_number(r, "version", 1000000000, &version))
        return;
    char vtext[24];
    snprintf(vtext, sizeof(vtext), "%ld", version);
    const char *p[3] = {uid, id, vtext};
    PGresult *res = api_query(
        r->a,
        "SELECT f.version, f.case_number, f.location, to_char(f.occurred_at AT TIME ZONE "
        "'UTC', " TS_FORMAT "), array_to_json(f.parties)::text, f.summary, u.username, "
        "to_char(f.edited_at AT TIME ZONE 'UTC', " TS_FORMAT "), (SELECT max(version) FROM "
        "record_forms WHERE recording_id = $2::uuid) FROM record_forms f JOIN users u ON u.id = "
        "f.edited_by WHERE f.recording_id = $2::uuid AND may_read_recording($1, $2::uuid, now()) "
        "AND f.version = CASE WHEN $3::int > 0 THEN $3::int ELSE (SELECT max(version) FROM "
        "record_forms WHERE recording_id = $2::uuid) END",
        3, p);
    if (api_db_unavailable(r, res))
        return;
    if (PQntuples(res) != 1) {
        PQclear(res);
        api_audit(r, who->actor, "form.read", object, "denied");
        api_reply_error(r, 404, "not_found", "no such recording, form or version", NULL);
        return;
    }
    json_t *parties = json_loads(PQgetvalue(res, 0, 4), 0, NULL);
    json_t *j = json_pack("{s:s, s:i, s:i, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "recording", id,
                          "version", (int)strtol(PQgetvalue(res, 0, 0), NULL, 10), "versions",
                          (int)strtol(PQgetvalue(res, 0, 8), NULL, 10), "case_number",
                          PQgetvalue(res, 0, 1), "location", PQgetvalue(res, 0, 2), "occurred_at",
                          PQgetvalue(res, 0, 3), "parties", parties ? parties : json_array(),
                          "summary", PQgetvalue(res, 0, 5), "edited_by", PQgetvalue(res, 0, 6),
                          "edited_at", PQgetvalue(res, 0, 7));
    PQclear(res);
    if (!api_audit_or_503(r, who->actor, "form.read", object, "ok")) {
        json_decref(j);
        return;
    }
    api_reply_json(r, 200, j);
}

/* Who may read or edit was api_decide()'s (may_read_recording, may_edit_form). */
void api_form_get(request *r, const caller *who, const char *id)
{
    char object[64];
    snprintf(object, sizeof(object), "form of recording %s", id);
    get_form(r, who, id, who->uid, object);
}

void api_form_put(request *r, const caller *who, const char *id)
{
    char object[64];
    snprintf(object, sizeof(object), "form of recording %s", id);
    put_form(r, who, id, who->uid, object);
}
