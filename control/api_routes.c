/*
 * Every route of the API in one table (docs/control.md, "Authorization";
 * docs/api.yaml): method, path pattern, the action it is, what its path
 * parameter names, and its handler. A request reaches a handler only
 * through this table, after its session is checked (unless the route is
 * anonymous) and its action allowed by api_decide() for that object; a path
 * not in it is 404, a method not listed for a path 405.
 */
#include "api_internal.h"

#include <stdio.h>
#include <string.h>

#define R(m, pattern, action, kind, audit, object, fn)                                             \
    {                                                                                              \
        EVHTTP_REQ_##m, #m, pattern, action, kind, audit, object, fn, false                        \
    }
#define ANON(m, pattern, action, fn)                                                               \
    {                                                                                              \
        EVHTTP_REQ_##m, #m, pattern, action, OBJ_NONE, "", "", fn, true                            \
    }

static const api_route routes[] = {
    ANON(POST, "/api/v1/session", ACT_LOGIN, api_login),
    R(GET, "/api/v1/session", ACT_SESSION_SELF, OBJ_NONE, "session.read", "", api_whoami),
    R(DELETE, "/api/v1/session", ACT_SESSION_SELF, OBJ_NONE, "session.logout", "", api_logout),
    R(POST, "/api/v1/session/password", ACT_PASSWORD_CHANGE, OBJ_NONE, "user.password", "",
      api_password_change),
    R(GET, "/api/v1/sessions", ACT_SESSION_SELF, OBJ_NONE, "session.list", "", api_sessions_list),
    R(DELETE, "/api/v1/sessions/{id}", ACT_SESSION_END, OBJ_SESSION, "session.end", "",
      api_session_end),
    R(POST, "/api/v1/users/{username}/unlock", ACT_USER_UNLOCK, OBJ_USER, "user.unlock", "",
      api_user_unlock),
    R(POST, "/api/v1/users/{username}/disable", ACT_USER_DISABLE, OBJ_USER, "user.disable", "",
      api_user_disable),
    R(POST, "/api/v1/users/{username}/enable", ACT_USER_DISABLE, OBJ_USER, "user.enable", "",
      api_user_enable),
    R(GET, "/api/v1/alerts", ACT_ALERT_LIST, OBJ_NONE, "alert.list", "", api_alerts_list),
    R(POST, "/api/v1/alerts/{id}/acknowledge", ACT_ALERT_MANAGE, OBJ_ALERT, "alert.acknowledge",
      "alert ", api_alert_acknowledge),
    R(POST, "/api/v1/alerts/{id}/close", ACT_ALERT_MANAGE, OBJ_ALERT, "alert.close", "alert ",
      api_alert_close),
    R(POST, "/api/v1/permission-requests", ACT_REQUEST_CREATE, OBJ_NONE, "permission.request", "",
      api_request_create),
    R(GET, "/api/v1/permission-requests", ACT_REQUEST_LIST, OBJ_NONE, "permission.list", "",
      api_requests_list),
    R(POST, "/api/v1/permission-requests/{id}/preliminary", ACT_REQUEST_DECIDE_FIRST, OBJ_REQUEST,
      "permission.preliminary", "permission-request ", api_request_decide_first),
    R(POST, "/api/v1/permission-requests/{id}/final", ACT_REQUEST_DECIDE_FINAL, OBJ_REQUEST,
      "permission.final", "permission-request ", api_request_decide_final),
    R(GET, "/api/v1/grants", ACT_GRANT_LIST, OBJ_NONE, "grant.list", "", api_grants_list),
    R(POST, "/api/v1/grants/{id}/revoke", ACT_GRANT_REVOKE, OBJ_GRANT, "grant.revoke", "grant ",
      api_grant_revoke),
    R(GET, "/api/v1/notices", ACT_NOTICE_LIST, OBJ_NONE, "notice.list", "", api_notices_list),
    /* answered on the I/O thread by api_read.c; its rows scoped by may_read_recording() */
    R(GET, "/api/v1/recordings", ACT_RECORDING_LIST, OBJ_NONE, "recording.list", "", NULL),
    R(GET, "/api/v1/recordings/{id}", ACT_RECORDING_READ, OBJ_RECORDING, "recording.read",
      "recording ", api_recording_get),
    R(GET, "/api/v1/recordings/{id}/clip.mp4", ACT_RECORDING_READ, OBJ_RECORDING,
      "recording.export", "recording ", api_recording_clip),
    R(POST, "/api/v1/recordings/{id}/packages", ACT_RECORDING_READ, OBJ_RECORDING,
      "recording.package", "recording:", api_package_create),
    R(GET, "/api/v1/recordings/{id}/packages", ACT_RECORDING_READ, OBJ_RECORDING,
      "recording.package.list", "recording:", api_packages_list),
    R(GET, "/api/v1/packages/{id}", ACT_PACKAGE_READ, OBJ_PACKAGE, "recording.package.download",
      "package ", api_package_download),
    R(GET, "/api/v1/packages/{id}/status", ACT_PACKAGE_READ, OBJ_PACKAGE, "recording.package.read",
      "package ", api_package_status),
    R(GET, "/api/v1/recordings/{id}/form", ACT_FORM_READ, OBJ_RECORDING, "form.read",
      "form of recording ", api_form_get),
    R(PUT, "/api/v1/recordings/{id}/form", ACT_FORM_EDIT, OBJ_RECORDING, "form.edit",
      "form of recording ", api_form_put),
    R(POST, "/api/v1/shares", ACT_SHARE_CREATE, OBJ_NONE, "share.request", "", api_share_create),
    R(GET, "/api/v1/shares", ACT_SHARE_LIST, OBJ_NONE, "share.list", "", api_shares_list),
    R(POST, "/api/v1/shares/{id}/decide", ACT_SHARE_APPROVE, OBJ_SHARE, "share.decide", "share ",
      api_share_decide),
    R(POST, "/api/v1/shares/{id}/revoke", ACT_SHARE_REVOKE, OBJ_SHARE, "share.revoke", "share ",
      api_share_revoke),
    ANON(GET, "/api/v1/shared/{token}", ACT_SHARED_LINK, api_share_use),
    ANON(GET, "/api/v1/shared/{token}/clip.mp4", ACT_SHARED_LINK, api_shared_clip),
    ANON(POST, "/api/v1/shared/{token}/packages", ACT_SHARED_LINK, api_shared_packages_post),
    ANON(GET, "/api/v1/shared/{token}/package", ACT_SHARED_LINK, api_shared_package),
    R(POST, "/api/v1/live/{serial}/whep", ACT_LIVE_WATCH, OBJ_LIVE, "live.watch", "live ",
      api_live_whep),
    R(DELETE, "/api/v1/live/sessions/{id}", ACT_LIVE_END, OBJ_LIVE_SESSION, "live.end",
      "live session ", api_live_session_end),
    ANON(GET, "/live/{serial}", ACT_PAGE, api_live_page),
    ANON(GET, "/assets/{name}", ACT_PAGE, api_live_asset),
};

const api_route *api_routes(size_t *n)
{
    *n = sizeof(routes) / sizeof(routes[0]);
    return routes;
}

/* @p path against @p pattern: its one "{...}" segment (if any) into @p param. */
static bool match(const char *pattern, const char *path, char param[API_PARAM_MAX + 1])
{
    param[0] = '\0';
    const char *open = strchr(pattern, '{');
    if (!open)
        return strcmp(pattern, path) == 0;
    size_t head = (size_t)(open - pattern);
    const char *tail = strchr(open, '}') + 1;
    size_t tl = strlen(tail), n = strlen(path);
    if (n < head + tl || strncmp(path, pattern, head) != 0 || strcmp(path + n - tl, tail) != 0)
        return false;
    size_t len = n - head - tl;
    if (len == 0 || len > API_PARAM_MAX || memchr(path + head, '/', len))
        return false;
    memcpy(param, path + head, len);
    param[len] = '\0';
    return true;
}

const api_route *api_route_find(enum evhttp_cmd_type method, const char *path,
                                char param[API_PARAM_MAX + 1], char allowed[64])
{
    size_t n;
    const api_route *t = api_routes(&n);
    allowed[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char p[API_PARAM_MAX + 1];
        if (!match(t[i].pattern, path, p))
            continue;
        if (t[i].method == method) {
            memcpy(param, p, sizeof(p));
            return &t[i];
        }
        size_t len = strlen(allowed);
        snprintf(allowed + len, 64 - len, "%s%s", len ? ", " : "", t[i].method_name);
    }
    return NULL;
}

void api_dispatch(request *r)
{
    char param[API_PARAM_MAX + 1], allowed[64];
    const api_route *rt = api_route_find(r->method, r->path, param, allowed);
    if (!rt) {
        if (allowed[0])
            api_reply_error(r, 405, "method_not_allowed", allowed, NULL);
        else
            api_reply_error(r, 404, "not_found", "no such resource", NULL);
        return;
    }
    if (!rt->fn) { /* (the I/O thread answers it before it is queued) */
        api_reply_error(r, 500, "internal", "this route is not answered here", NULL);
        return;
    }
    if (rt->anonymous) {
        rt->fn(r, NULL, param);
        return;
    }
    caller who;
    if (!api_authenticate(r, &who))
        return;
    char object[128];
    snprintf(object, sizeof(object), "%s%s", rt->object_prefix, param);
    if (api_authorize(r, &who, rt->action, rt->object, param, rt->audit, object))
        rt->fn(r, &who, param);
}

void ctl_api_print_routes(FILE *out)
{
    size_t n;
    const api_route *t = api_routes(&n);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s %s %s\n", t[i].method_name, t[i].pattern,
                t[i].anonymous ? "anonymous" : "session");
}
