/*
 * The one authorization function (docs/control.md, "Authorization"): every
 * action of every route is decided by api_decide() from who asks (role),
 * their capacities toward the object (its owner, the head of its
 * department, a member of the permission group), their grants and rule 4's
 * data scope (may_read_recording(), migration 0006, which also scopes every
 * list in SQL). What the object is to the caller is loaded by one statement
 * per kind (api_object_load); handlers never decide.
 *
 * Three answers: allowed; forbidden (403: the caller may know the object,
 * or the action is not their role's at all, which says nothing about any
 * object); hidden (404: the object does not exist or the caller may not see
 * it — the same answer either way).
 */
#include "api_internal.h"
#include "live/live.h"

#include <stdlib.h>
#include <string.h>

static const char *const not_found[] = {
    [OBJ_NONE] = "no such resource",       [OBJ_USER] = "no such user",
    [OBJ_SESSION] = "no such session",     [OBJ_REQUEST] = "no such permission request",
    [OBJ_GRANT] = "no such grant",         [OBJ_SHARE] = "no such share",
    [OBJ_RECORDING] = "no such recording", [OBJ_ALERT] = "no such alert",
    [OBJ_PACKAGE] = "no such package",     [OBJ_LIVE] = "no such live stream",
    [OBJ_LIVE_SESSION] = "no such live session",
};

api_verdict api_decide(const caller *who, api_action action, const api_object *o, const char **why)
{
    bool admin = strcmp(who->role, "admin") == 0;
    *why = "your role does not allow this";
    switch (action) {
    case ACT_LOGIN:
    case ACT_SHARED_LINK:
    case ACT_SESSION_SELF:
    case ACT_PASSWORD_CHANGE:
    /* Lists: everyone, each row scoped in SQL by the same rules (own, head,
     * group, may_read_recording). */
    case ACT_REQUEST_CREATE:
    case ACT_REQUEST_LIST:
    case ACT_GRANT_LIST:
    case ACT_NOTICE_LIST:
    case ACT_RECORDING_LIST:
    case ACT_SHARE_CREATE:
    case ACT_SHARE_LIST:
    case ACT_PAGE: return API_ALLOW;
    case ACT_LIVE_WATCH: return o->readable ? API_ALLOW : API_HIDE;
    case ACT_LIVE_END: return o->exists && o->own ? API_ALLOW : API_HIDE;
    case ACT_SESSION_END: return o->exists && o->own ? API_ALLOW : API_HIDE;
    case ACT_USER_UNLOCK:
    case ACT_USER_DISABLE:
    case ACT_ALERT_LIST: return admin ? API_ALLOW : API_FORBID;
    case ACT_ALERT_MANAGE:
    case ACT_GRANT_REVOKE:
        if (!admin)
            return API_FORBID;
        return o->exists ? API_ALLOW : API_HIDE;
    case ACT_REQUEST_DECIDE_FIRST:
    case ACT_REQUEST_DECIDE_FINAL: {
        bool final = action == ACT_REQUEST_DECIDE_FINAL;
        if (!o->exists || !(o->own || o->head || o->member || admin))
            return API_HIDE;
        if (o->own) {
            *why = "nobody decides their own request";
            return API_FORBID;
        }
        /* Two levels are two people: who decided first does not decide finally. */
        if (final && o->decided_first) {
            *why = "the final decision is not the preliminary decider's";
            return API_FORBID;
        }
        if (final ? !o->member : !o->head) {
            *why = final ? "only the permission group decides finally"
                         : "only the head of the request's department decides first";
            return API_FORBID;
        }
        return API_ALLOW;
    }
    case ACT_SHARE_APPROVE:
        if (!o->exists || !(o->own || o->member || admin))
            return API_HIDE;
        if (o->own) {
            *why = "nobody approves their own share";
            return API_FORBID;
        }
        return API_ALLOW; /* an admin or the permission group */
    case ACT_SHARE_REVOKE:
        if (!o->exists || !(o->own || o->member || admin))
            return API_HIDE;
        if (!o->own && !admin) {
            *why = "only the requester or an admin revokes a share";
            return API_FORBID;
        }
        return API_ALLOW;
    case ACT_RECORDING_READ:
    case ACT_PACKAGE_READ:
    case ACT_FORM_READ: return o->readable ? API_ALLOW : API_HIDE;
    case ACT_FORM_EDIT:
        if (!o->readable)
            return API_HIDE;
        if (!o->editable) {
            *why = "only the recording's officer or an admin edits";
            return API_FORBID;
        }
        return API_ALLOW;
    }
    return API_FORBID;
}

bool api_object_load(request *r, const caller *who, api_object_kind kind, const char *id,
                     api_object *o)
{
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    const char *sql = NULL;
    char num[24];
    switch (kind) {
    case OBJ_NONE:
    case OBJ_USER: return true; /* (users are an admin's: decided by role) */
    case OBJ_SESSION:
        if (!api_uuid_ok(id))
            return true;
        sql = "SELECT user_id = $2, false, false, false, false, false FROM sessions "
              "WHERE public_id = $1::uuid";
        break;
    case OBJ_REQUEST:
        if (!api_parse_id(id, num))
            return true;
        id = num;
        sql = "SELECT q.requester_id = $2, d.head_user_id IS NOT DISTINCT FROM $2::bigint, "
              "EXISTS (SELECT 1 FROM permission_group_members m WHERE m.user_id = $2), "
              "q.head_id IS NOT DISTINCT FROM $2::bigint, false, false "
              "FROM permission_requests q JOIN departments d ON d.id = q.department_id "
              "WHERE q.id = $1";
        break;
    case OBJ_GRANT:
        if (!api_parse_id(id, num))
            return true;
        id = num;
        sql = "SELECT user_id = $2, false, false, false, false, false FROM grants WHERE id = $1";
        break;
    case OBJ_SHARE:
        if (!api_parse_id(id, num))
            return true;
        id = num;
        sql = "SELECT requester_id = $2, false, EXISTS (SELECT 1 FROM permission_group_members m "
              "WHERE m.user_id = $2), false, false, false FROM shares WHERE id = $1";
        break;
    case OBJ_ALERT:
        if (!api_parse_id(id, num))
            return true;
        id = num;
        sql = "SELECT false, false, false, false, false, false FROM security_alerts WHERE id = $1 "
              "AND $2::bigint IS NOT NULL";
        break;
    case OBJ_RECORDING:
        if (!api_uuid_ok(id))
            return true;
        sql = "SELECT false, false, false, false, may_read_recording($2, $1::uuid, now()), "
              "may_edit_form($2, $1::uuid)";
        break;
    case OBJ_LIVE: { /* (as the recording it fills now) */
        static __thread char rec[37];
        if (strlen(id) > 64 || !live_recording_of(api_live_of(r->a), id, rec))
            return true;
        id = rec;
        sql = "SELECT false, false, false, false, may_read_recording($2, $1::uuid, now()), "
              "false";
        break;
    }
    case OBJ_LIVE_SESSION: { /* (the live service knows whose it is) */
        int64_t user_id;
        if (live_session_user(api_live_of(r->a), id, &user_id)) {
            o->exists = true;
            o->own = user_id == who->user_id;
        }
        return true;
    }
    case OBJ_PACKAGE: /* (as its recording) */
        if (!api_uuid_ok(id))
            return true;
        sql = "SELECT requested_by = $2, false, false, false, "
              "may_read_recording($2, recording_id, now()), false FROM packages "
              "WHERE id = $1::uuid";
        break;
    }
    const char *p[2] = {id, who->uid};
    PGresult *res = api_query(r->a, sql, 2, p);
    if (api_db_unavailable(r, res))
        return false;
    if (PQntuples(res) == 1) {
        o->exists = true;
        o->own = *PQgetvalue(res, 0, 0) == 't';
        o->head = *PQgetvalue(res, 0, 1) == 't';
        o->member = *PQgetvalue(res, 0, 2) == 't';
        o->decided_first = *PQgetvalue(res, 0, 3) == 't';
        o->readable = *PQgetvalue(res, 0, 4) == 't';
        o->editable = *PQgetvalue(res, 0, 5) == 't';
    }
    PQclear(res);
    return true;
}

bool api_authorize(request *r, const caller *who, api_action action, api_object_kind kind,
                   const char *id, const char *audit_action, const char *object)
{
    api_object o;
    if (!api_object_load(r, who, kind, id, &o))
        return false; /* 503 sent */
    const char *why;
    api_verdict v = api_decide(who, action, &o, &why);
    if (v == API_ALLOW)
        return true;
    api_audit(r, who->actor, audit_action, object, "denied");
    if (v == API_HIDE)
        api_reply_error(r, 404, "not_found", not_found[kind], NULL);
    else
        api_reply_error(r, 403, "forbidden", why, NULL);
    return false;
}
