/*
 * Private to the HTTPS API (control/api*.c): the server, a request and its
 * caller, and the helpers every handler uses. Handlers reply exactly once
 * (api_reply_* or an error from a helper that returns false/NULL).
 */
#ifndef CUSTOS_API_INTERNAL_H
#define CUSTOS_API_INTERNAL_H

#include "control.h"

#include <arpa/inet.h>
#include <event2/http.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>

/*
 * The API runs on two kinds of thread (docs/control.md, "Threads"): one I/O
 * thread with the event loop, evhttp and TLS, which copies each request
 * into a request and queues it; and api.workers handler threads, each with
 * its own database connection, which take requests off the queue, run the
 * handler (blocking on PostgreSQL is fine there) and hand the reply back to
 * the I/O thread to send. A slow query holds one handler, never the loop.
 */
/* Login throttling and argon2 slots (api_session.c), shared by the handler threads. */
typedef struct api_logins api_logins;
api_logins *api_logins_new(const cu_config *cfg);
void api_logins_free(api_logins *l);

/* One handler thread. Everything a handler touches is its thread's. */
typedef struct api_worker {
    ctl_api *api;
    const cu_config *cfg;
    int index;
    PGconn *db;
    keys_ring *keys;        /* borrowed: TOTP secrets are wrapped by its KEKs */
    const char *data_dir;   /* the store's (exports read it) */
    bool streamed;          /* its request now belongs to an api_stream (set in it) */
    ctl_audit_group *audit; /* the service's, shared: one group commit for all threads */
    api_logins *logins;     /* the service's, shared */
    pthread_t thread;
    bool running;
    char dummy_hash[CTL_PASSWORD_HASH_MAX]; /* verified against for unknown users */
} api_worker;

/*
 * One request as the handlers see it: copies of what they may read (made
 * on the I/O thread, so a handler never touches evhttp), and the reply
 * they set exactly once (api_reply_*). Owned by the queue it is on.
 */
typedef struct request {
    api_worker *a;              /* the handler running it */
    struct evhttp_request *req; /* the I/O thread's only */
    enum evhttp_cmd_type method;
    char *path;          /* NULL when the URI had none */
    char *query;         /* NULL when none */
    char *authorization; /* the header, NULL when absent */
    char *content_type;  /* the header, NULL when absent */
    char *body;          /* NUL-terminated copy, body_len bytes */
    size_t body_len;
    char source[INET6_ADDRSTRLEN + 1];
    size_t size;       /* what it holds, counted against api.queue_max_bytes */
    int status;        /* the reply: 0 until a handler sets it */
    int retry_after_s; /* a Retry-After header with the reply when set */
    char *reply;       /* JSON text (malloc) or NULL for an empty body */
    const char *reply_type; /* the reply's Content-Type when not JSON (static) */
    char *location;         /* a Location header with the reply (malloc) or NULL */
    bool page;              /* a page of the browser's: its security headers */
    struct request *next;
} request;

/*
 * A reply streamed from a handler (api_stream.c): a body too large to hold,
 * sent chunked as it is made. The handler writes; the I/O thread sends, at
 * most API_STREAM_QUEUE_MAX bytes ahead of the client; a client that goes
 * away makes the next write fail. From api_stream_start() the stream owns
 * the request: the handler returns without a reply of its own.
 */
typedef struct api_stream api_stream;
#define API_STREAM_QUEUE_MAX (8u * 1024 * 1024)

/** Start @p r's reply: @p status, @p content_type and an optional
 * Content-Disposition @p disposition (NULL: none). */
api_stream *api_stream_start(request *r, int status, const char *content_type,
                             const char *disposition);
/** Queue @p len bytes (waiting while the client is far behind); false once it has gone. */
bool api_stream_write(api_stream *s, const void *data, size_t len);
/** The end: @p complete, the reply ends normally; else the connection is
 * cut, so that the client sees an incomplete body. @p s is gone after. */
void api_stream_end(api_stream *s, bool complete);

/** Reply @p status with @p text (taken, malloc) of type @p type (static), and an
 * optional Location (@p location, copied; NULL: none). */
void api_reply_text(request *r, int status, const char *type, char *text, const char *location);

/** Free @p r (its evhttp request is evhttp's). */
void api_request_free(request *r);

/** The event loop the replies are sent from (api.c). */
struct event_base *api_io_base(const api_worker *w);

/* Who is asking: from a valid session. */
typedef struct {
    int64_t session_id, user_id;
    char username[65];
    char role[16];
    char actor[80]; /* "user:<name>" */
    char uid[24];   /* user_id in decimal, for query parameters */
} caller;

/* A timestamptz as RFC 3339 UTC with milliseconds: to_char(x AT TIME ZONE 'UTC', TS_FORMAT). */
#define TS_FORMAT "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"

/* What a caller asks to do: api_decide() decides, the one place that does. */
typedef enum {
    ACT_LOGIN,                /* anyone (anonymous) */
    ACT_SHARED_LINK,          /* anyone with the link (anonymous) */
    ACT_SESSION_SELF,         /* their own session */
    ACT_SESSION_END,          /* one of their own sessions */
    ACT_PASSWORD_CHANGE,      /* their own */
    ACT_USER_UNLOCK,          /* admin */
    ACT_USER_DISABLE,         /* admin (disable and enable) */
    ACT_ALERT_LIST,           /* admin */
    ACT_ALERT_MANAGE,         /* admin: acknowledge, close */
    ACT_REQUEST_CREATE,       /* anyone, for themselves */
    ACT_REQUEST_LIST,         /* anyone: their own, their department's as head, all as group */
    ACT_REQUEST_DECIDE_FIRST, /* the head of its department, not its requester */
    ACT_REQUEST_DECIDE_FINAL, /* the permission group, not its requester or first decider */
    ACT_GRANT_LIST,           /* anyone: their own; admin: all */
    ACT_GRANT_REVOKE,         /* admin */
    ACT_NOTICE_LIST,          /* their own */
    ACT_RECORDING_LIST,       /* anyone: what may_read_recording() lets them */
    ACT_RECORDING_READ,       /* may_read_recording() */
    ACT_FORM_READ,            /* may_read_recording() */
    ACT_FORM_EDIT,            /* readable and may_edit_form() */
    ACT_SHARE_CREATE,         /* anyone, of recordings they may read */
    ACT_SHARE_LIST,           /* their own; group and admin: all */
    ACT_SHARE_APPROVE,        /* admin or the permission group, not its requester */
    ACT_SHARE_REVOKE,         /* its requester or an admin */
    ACT_PACKAGE_READ,         /* may_read_recording() of its recording */
    ACT_LIVE_WATCH,           /* may_read_recording() of the recording being made */
    ACT_LIVE_END,             /* their own live session */
    ACT_PAGE,                 /* anyone: the pages and their assets (no data in them) */
} api_action;

/* What a route's path parameter names. */
typedef enum {
    OBJ_NONE,
    OBJ_USER,
    OBJ_SESSION,
    OBJ_REQUEST,
    OBJ_GRANT,
    OBJ_SHARE,
    OBJ_RECORDING,
    OBJ_ALERT,
    OBJ_PACKAGE,
    OBJ_LIVE,         /* a device's live video, by serial: as the recording it fills */
    OBJ_LIVE_SESSION, /* a WHEP session */
} api_object_kind;

/* What an object is to the caller, as the database says now (api_object_load). */
typedef struct {
    api_object_kind kind;
    bool exists;
    bool own;           /* theirs: their request, grant, share or session */
    bool head;          /* they head the request's department */
    bool member;        /* they are in the permission group */
    bool decided_first; /* they decided the request's first level */
    bool readable;      /* a recording: may_read_recording() (grants, rule 4's scope) */
    bool editable;      /* a recording's form: may_edit_form() */
} api_object;

typedef enum { API_ALLOW, API_FORBID, API_HIDE } api_verdict;

/**
 * The one authorization function: may @p who do @p action on @p o? API_FORBID
 * comes with *@p why; API_HIDE means "as if it did not exist" (404).
 */
api_verdict api_decide(const caller *who, api_action action, const api_object *o, const char **why);

/** What object @p id of @p kind is to @p who (nothing for OBJ_NONE/OBJ_USER); false after a 503. */
bool api_object_load(request *r, const caller *who, api_object_kind kind, const char *id,
                     api_object *o);

/**
 * Load, decide, and when refused audit @p audit_action on @p object as
 * denied and answer 403 or 404. True when allowed.
 */
bool api_authorize(request *r, const caller *who, api_action action, api_object_kind kind,
                   const char *id, const char *audit_action, const char *object);

/* ----------------------------------------------------- the route table */

#define API_PARAM_MAX 63 /* bytes of a path parameter */

/* A handler: @p who is NULL on an anonymous route; @p param the path's {...} ("" when none). */
typedef void (*api_handler)(request *r, const caller *who, const char *param);

typedef struct {
    enum evhttp_cmd_type method;
    const char *method_name;
    const char *pattern; /* at most one "{...}" segment */
    api_action action;
    api_object_kind object;    /* what the parameter names, decided on */
    const char *audit;         /* the action a denial is audited as */
    const char *object_prefix; /* the audited object: prefix ‖ parameter */
    api_handler fn;            /* NULL: answered on the I/O thread (api_read.c) */
    bool anonymous;            /* no session needed */
} api_route;

/** Every route (api_routes.c). */
const api_route *api_routes(size_t *n);

/** The route for @p method on @p path (its parameter into @p param), or NULL; then
 * @p allowed lists the methods the path has ("" when none: 404). */
const api_route *api_route_find(enum evhttp_cmd_type method, const char *path,
                                char param[API_PARAM_MAX + 1], char allowed[64]);

/** Route @p r: authenticate, authorize, run its handler (a handler thread). */
void api_dispatch(request *r);

#define API_TOKEN_CHARS 43 /* base64url of 32 random bytes */

/** A fresh token (API_TOKEN_CHARS + NUL) and its SHA-256 as a bytea literal (\x + 64 hex). */
bool api_new_token(char token[48], char hash_hex[67]);

/** The SHA-256 of @p token as a bytea literal. */
void api_token_hash_hex(const char *token, char hash_hex[67]);

/** Query parameter @p name as a number in 1..@p max into *@p out (left alone when absent);
 * false after a 400 naming it. */
bool api_query_number(request *r, const char *name, long max, long *out);

/** Query parameter @p name into @p out ("" when absent); false after a 400
 * naming it when it is longer than @p size - 1 bytes or the query is malformed. */
bool api_query_text(request *r, const char *name, char *out, size_t size);

/**
 * JSON array @p arr (request member @p field) of @p min..@p max strings,
 * each accepted by @p valid, as a PostgreSQL array literal appended to @p out
 * (empty, its cap set by the caller); false after a 400 naming the member or
 * the item (field[i]; @p what says what an item must be), or a 413 past the cap.
 */
bool api_string_array(request *r, json_t *arr, const char *field, size_t min, size_t max,
                      bool (*valid)(const char *s, size_t n), const char *what, cu_buf *out);

/** A decimal id of 1 to 18 digits, copied to @p out. */
bool api_parse_id(const char *s, char out[24]);

void api_reply_json(request *r, int status, json_t *body); /* takes @p body */
void api_reply_error(request *r, int status, const char *code, const char *message,
                     const char *field);
void api_reply_empty(request *r, int status);
void api_reply_unavailable(request *r); /* 503: the database failed */
/** 409 {"error": "conflict", "message", "state": what the object is now}. */
void api_reply_conflict(request *r, const char *message, const char *state);

/**
 * An audit entry with the request's source, committed before it returns;
 * false (logged) if it could not be written: a handler that is about to
 * hand out data then answers 503 instead (api_audit_or_503).
 */
bool api_audit(request *r, const char *actor, const char *action, const char *object,
               const char *outcome);

/** api_audit(), or a 503 when the entry could not be written. */
bool api_audit_or_503(request *r, const char *actor, const char *action, const char *object,
                      const char *outcome);

/*
 * A change of state commits with its audit entry, in one transaction
 * (docs/control.md, "Audit log"):
 *
 *     if (!api_change_begin(r)) return;            // 503 sent
 *     ... the change's statements (api_query) ...
 *     if (!ok) { api_change_abort(r); reply 4xx/503; return; }
 *     if (!api_change_commit(r, actor, action, object)) return;  // 503 sent
 *     reply 2xx
 *
 * If the entry cannot be written (the audit function fails, a field is not
 * valid UTF-8 or too long), the change is rolled back and the caller gets 503.
 */
bool api_change_begin(request *r);
/** Another entry of the open change (a lock beside a failed login ...); false: abort. */
bool api_change_audit(request *r, const char *actor, const char *action, const char *object,
                      const char *outcome);
/** The change's entry (outcome ok), then COMMIT. False: rolled back and 503 sent. */
bool api_change_commit(request *r, const char *actor, const char *action, const char *object);
/** As api_change_commit with an outcome of @p outcome (a failed login is recorded so). */
bool api_change_commit_as(request *r, const char *actor, const char *action, const char *object,
                          const char *outcome);
/** Roll the open change back; the caller replies. */
void api_change_abort(request *r);

/** A statement with text parameters; NULL (logged) on a database error. */
PGresult *api_query(api_worker *a, const char *sql, int n, const char *const *params);
bool api_exec_ok(api_worker *a, const char *sql, int n, const char *const *params);

/** api_query() of a statement prepared once per connection under @p name (planned once). */
PGresult *api_query_prepared(api_worker *a, const char *name, const char *sql, int n,
                             const char *const *params);

/** The body as an object with only @p allowed members; NULL after a 4xx reply. */
json_t *api_read_object(request *r, const char *const *allowed, size_t n);

/** A required string member of at most @p max bytes; NULL after a 4xx reply. */
const char *api_string_field(request *r, json_t *j, const char *name, size_t max);

/** The SHA-256 of the request's bearer token (a bytea literal); false after a 401 when
 * there is none or it cannot be one this server issued. */
bool api_bearer_hash(request *r, char hash_hex[67]);

/** The caller from the bearer token; false after a 401 (or 503). */
bool api_authenticate(request *r, caller *who);

/*
 * api_read.c: the read path, GET /api/v1/recordings answered on the I/O
 * thread over a pipelined connection (docs/control.md, "Read path"). Every
 * authenticated user may list; which rows they get is reader_scope()'s
 * decision, in the same statement.
 */
typedef struct api_reads api_reads;

/** Connect to @p dsn for @p base's thread; *@p out is the caller's (api_reads_free). */
CU_WUR cu_rc api_reads_new(struct event_base *base, const char *dsn, api_reads **out, cu_err *err);
void api_reads_free(api_reads *rd); /* in-flight requests are answered 503 */

/** Answer @p r (taken: replied and freed, now or once its statement commits). */
void api_reads_list(api_reads *rd, request *r);

/** Send @p r's reply and free it (I/O thread only). */
void api_send_reply(request *r);

/* api_access.c: permission workflow, grants, notices, recordings (handlers). */
void api_request_create(request *r, const caller *who, const char *param);
void api_requests_list(request *r, const caller *who, const char *param);
void api_request_decide_first(request *r, const caller *who, const char *id);
void api_request_decide_final(request *r, const caller *who, const char *id);
void api_grants_list(request *r, const caller *who, const char *param);
void api_grant_revoke(request *r, const caller *who, const char *id);
void api_notices_list(request *r, const caller *who, const char *param);
void api_recording_get(request *r, const caller *who, const char *id);
/* api_export.c */
void api_recording_clip(request *r, const caller *who, const char *id);
/** The clip of recording @p id (?start=&end=) with the capture's audio that user @p uid
 * may read, its export audited as @p actor's. */
void api_clip_send(request *r, const char *uid, const char *actor, const char *id);

/* A live share link (api_shares.c): approved, not expired, its requester
 * still able to read all it shares. */
typedef struct {
    char id[24];
    char token[48];
    char recipient[201];
    char requester_uid[24];
    char expires_at[CU_TIME_TEXT_LEN];
    char actor[48]; /* "share:<id>" */
} api_share;
/** The live share of link @p token, or false after a 404 (audited as a refused use) or 503. */
bool api_share_open(request *r, const char *token, api_share *out);
/** Whether recording @p rec is one @p sh shares; false after a 404 (audited). */
bool api_share_holds(request *r, const api_share *sh, const char *rec);

/* Clips and package downloads streaming at once, bounded by export.max_concurrent
 * (api.c): false after a 503 busy. A slot taken is given back when the reply ends. */
bool api_export_slot_take(request *r);
void api_export_slot_give(api_worker *w);

/* api_packages.c: evidence packages, built by one packager thread per API. */
typedef struct api_packager api_packager;
CU_WUR cu_rc api_packager_start(const cu_config *cfg, const char *data_dir, const char *dsn,
                                keys_ring *keys, api_packager **out, cu_err *err);
/** A package was queued: build it now. */
void api_packager_wake(api_packager *p);
/** Stop (a package being built is queued again for the next start). NULL is a no-op. */
void api_packager_stop(api_packager *p);
api_packager *api_packager_of(const api_worker *w);
void api_package_create(request *r, const caller *who, const char *recording);
void api_packages_list(request *r, const caller *who, const char *recording);
void api_package_status(request *r, const caller *who, const char *id);
void api_package_download(request *r, const caller *who, const char *id);
/* Through a share link: a package of one of its recordings ({recording, start?, end?}),
 * and a package made through it (?id=). */
void api_shared_package_create(request *r, const api_share *sh);
void api_shared_package_get(request *r, const api_share *sh);

/** An RFC 3339 time as milliseconds since the epoch (text); false if malformed or unreal. */
bool api_parse_time(const char *s, char out[24]);

/** 8-4-4-4-12 hexadecimal. */
bool api_uuid_ok(const char *s);

/** True (after a 503) when @p res is NULL: the database failed. */
bool api_db_unavailable(request *r, PGresult *res);

/* api_shares.c: external sharing (handlers). */
void api_share_create(request *r, const caller *who, const char *param);
void api_shares_list(request *r, const caller *who, const char *param);
void api_share_decide(request *r, const caller *who, const char *id);
void api_share_revoke(request *r, const caller *who, const char *id);
void api_share_use(request *r, const caller *who, const char *token); /* who: NULL */
void api_shared_clip(request *r, const caller *who, const char *token);
void api_shared_packages_post(request *r, const caller *who, const char *token);
void api_shared_package(request *r, const caller *who, const char *token);

/* api_session.c: accounts and sessions (docs/control.md, "Logins"), handlers. */
void api_login(request *r, const caller *who, const char *param); /* who: NULL */
/* api_live.c: live view (docs/live.md) */
typedef struct api_live_auditor api_live_auditor;
/** The thread that audits the end of live sessions, with its own connection to @p dsn. */
CU_WUR cu_rc api_live_auditor_start(const char *dsn, ctl_audit_group *audit,
                                    api_live_auditor **out, cu_err *err);
/** Write what is queued, then stop. NULL is a no-op. */
void api_live_auditor_stop(api_live_auditor *a);
api_live_auditor *api_live_auditor_of(ctl_api *api);
struct live_service *api_live_of(const api_worker *w);
void api_live_whep(request *r, const caller *who, const char *serial);
void api_live_session_end(request *r, const caller *who, const char *id);
void api_live_page(request *r, const caller *who, const char *serial);
void api_live_asset(request *r, const caller *who, const char *name);

void api_whoami(request *r, const caller *who, const char *param);
void api_logout(request *r, const caller *who, const char *param);
void api_sessions_list(request *r, const caller *who, const char *param);
void api_session_end(request *r, const caller *who, const char *id);
void api_password_change(request *r, const caller *who, const char *param);
void api_user_unlock(request *r, const caller *who, const char *username);
void api_user_disable(request *r, const caller *who, const char *username);
void api_user_enable(request *r, const caller *who, const char *username);

/* api_alerts.c: security alerts and their states (docs/alerts.md), handlers. */
void api_alerts_list(request *r, const caller *who, const char *param);
void api_alert_acknowledge(request *r, const caller *who, const char *id);
void api_alert_close(request *r, const caller *who, const char *id);

/* api_forms.c: GET (latest, or ?version=N) or PUT (a new version) of
 * recording @p id's enforcement record form (handlers). */
void api_form_get(request *r, const caller *who, const char *id);
void api_form_put(request *r, const caller *who, const char *id);

#endif /* CUSTOS_API_INTERNAL_H */
