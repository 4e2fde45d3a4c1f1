/*
 * Security alerts over the API (docs/alerts.md), for admins: the list, each
 * with its state (new, acknowledged, closed) and delivery, and the two
 * changes of state, each with who made it and why, kept as a history
 * (alert_states) and audited.
 */
#include "api_internal.h"

#include <stdlib.h>
#include <string.h>

/* ?state=new|acknowledged|closed into @p state ("" when absent); false after a 400. */
static bool state_filter(request *r, char state[16])
{
    if (!api_query_text(r, "state", state, 16))
        return false;
    if (!state[0] || strcmp(state, "new") == 0 || strcmp(state, "acknowledged") == 0 ||
        strcmp(state, "closed") == 0)
        return true;
    api_reply_error(r, 400, "invalid_value", "new, acknowledged or closed", "state");
    return false;
}

void api_alerts_list(request *r, const caller *who, const char *param)
{
    (void)param;
    char state[16];
    if (!state_filter(r, state))
        return;
    const char *p[1] = {state};
    PGresult *res = api_query(
        r->a,
        "SELECT a.id, to_char(a.at AT TIME ZONE 'UTC', " TS_FORMAT "), a.kind, a.username, "
        "a.source, a.detail, coalesce(s.state, 'new'), coalesce(to_char(s.at AT TIME ZONE "
        "'UTC', " TS_FORMAT "), ''), coalesce(u.username, ''), coalesce(s.note, ''), "
        "d.delivered_at IS NOT NULL, coalesce(d.attempts, 0) "
        "FROM security_alerts a LEFT JOIN LATERAL (SELECT x.state, x.at, x.by_user, x.note FROM "
        "alert_states x WHERE x.alert_id = a.id ORDER BY x.at DESC LIMIT 1) s ON true "
        "LEFT JOIN users u ON u.id = s.by_user LEFT JOIN alert_deliveries d ON d.alert_id = a.id "
        "WHERE $1 = '' OR coalesce(s.state, 'new') = $1 ORDER BY a.at DESC, a.id LIMIT 200",
        1, p);
    if (api_db_unavailable(r, res))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:{s:b, s:I}}", "id",
                              (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "at",
                              PQgetvalue(res, i, 1), "kind", PQgetvalue(res, i, 2), "username",
                              PQgetvalue(res, i, 3), "source", PQgetvalue(res, i, 4), "detail",
                              PQgetvalue(res, i, 5), "state", PQgetvalue(res, i, 6), "delivery",
                              "delivered", *PQgetvalue(res, i, 10) == 't', "attempts",
                              (json_int_t)strtoll(PQgetvalue(res, i, 11), NULL, 10));
        if (PQgetvalue(res, i, 7)[0])
            json_object_set_new(j, "state_change",
                                json_pack("{s:s, s:s, s:s}", "at", PQgetvalue(res, i, 7), "by",
                                          PQgetvalue(res, i, 8), "note", PQgetvalue(res, i, 9)));
        json_array_append_new(arr, j);
    }
    PQclear(res);
    if (!api_audit_or_503(r, who->actor, "alert.list", state, "ok")) {
        json_decref(arr);
        return;
    }
    api_reply_json(r, 200, json_pack("{s:o}", "alerts", arr));
}

static const char *const state_fields[] = {"note"};

/* new -> acknowledged, or new|acknowledged -> closed; anything else is 409 with the state. */
static void change_state(request *r, const caller *who, const char *param, const char *to)
{
    char id[24], object[48], action[32];
    if (!api_parse_id(param, id)) {
        api_reply_error(r, 404, "not_found", "no such alert", NULL);
        return;
    }
    snprintf(object, sizeof(object), "alert %s", id);
    snprintf(action, sizeof(action), "alert.%s",
             strcmp(to, "closed") == 0 ? "close" : "acknowledge");
    json_t *body = NULL;
    const char *note = NULL;
    if (r->body_len) {
        body = api_read_object(r, state_fields, 1);
        if (!body)
            return;
        json_t *n = json_object_get(body, "note");
        if (n && (!json_is_string(n) || json_string_length(n) > 2000)) {
            api_reply_error(r, 400, "invalid_type", "a string of at most 2000 bytes", "note");
            goto out;
        }
        note = n ? json_string_value(n) : NULL;
    }
    const char *from = strcmp(to, "closed") == 0 ? "{new,acknowledged}" : "{new}";
    const char *p[5] = {id, to, who->uid, note, from};
    if (!api_change_begin(r))
        goto out;
    PGresult *res = api_query(
        r->a,
        "INSERT INTO alert_states (alert_id, state, by_user, note) SELECT $1, $2, $3, $4 "
        "WHERE coalesce((SELECT x.state FROM alert_states x WHERE x.alert_id = $1 ORDER BY x.at "
        "DESC LIMIT 1), 'new') = ANY ($5::text[]) RETURNING alert_id",
        5, p);
    if (!res) {
        api_change_abort(r);
        api_reply_unavailable(r);
        goto out;
    }
    bool moved = PQntuples(res) == 1;
    PQclear(res);
    if (!moved) {
        api_change_abort(r);
        res = api_query(r->a,
                        "SELECT coalesce((SELECT x.state FROM alert_states x WHERE x.alert_id = "
                        "$1 ORDER BY x.at DESC LIMIT 1), 'new')",
                        1, p);
        if (!api_db_unavailable(r, res)) {
            api_reply_conflict(r, "the alert is not in a state this applies to",
                               PQgetvalue(res, 0, 0));
            PQclear(res);
        }
        goto out;
    }
    if (api_change_commit(r, who->actor, action, object))
        api_reply_json(r, 200, json_pack("{s:s, s:s}", "id", id, "state", to));
out:
    json_decref(body);
}

void api_alert_acknowledge(request *r, const caller *who, const char *id)
{
    change_state(r, who, id, "acknowledged");
}

void api_alert_close(request *r, const caller *who, const char *id)
{
    change_state(r, who, id, "closed");
}
