/*
 * The HTTPS JSON API (docs/control.md, docs/api.yaml): libevent's evhttp
 * over OpenSSL bufferevents on one I/O thread; handlers on api.workers
 * threads, each with its own PostgreSQL connection (api_internal.h); JSON via
 * jansson. Every request goes through one route table (api_routes.c), is
 * authenticated (except login and shared links) and authorized by
 * api_decide() (api_authz.c), the one place that decides; every login, read,
 * denial and change is audited before its answer leaves.
 *
 * Accounts and sessions are in api_session.c, the permission workflow in
 * api_access.c, sharing in api_shares.c, forms in api_forms.c, the read
 * path in api_read.c.
 */
#include "api_internal.h"

#include "export/export.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define TOKEN_BYTES 32
#define HEADERS_MAX 16384

/* --------------------------------------------------------------- replies */

/* Handlers reply once; a second reply (a bug) is dropped and logged. */
static bool reply_once(request *r)
{
    if (!r->status)
        return true;
    CU_LOG(CU_LOG_ERROR, "api", "a second reply to %s was dropped", r->path ? r->path : "?");
    return false;
}

void api_reply_json(request *r, int status, json_t *body)
{
    if (reply_once(r)) {
        r->status = status;
        r->reply = body ? json_dumps(body, JSON_COMPACT) : NULL;
    }
    json_decref(body);
}

void api_reply_text(request *r, int status, const char *type, char *text, const char *location)
{
    if (!reply_once(r)) {
        free(text);
        return;
    }
    r->status = status;
    r->reply = text;
    r->reply_type = type;
    free(r->location);
    r->location = location ? cu_xstrdup(location) : NULL;
}

void api_reply_error(request *r, int status, const char *code, const char *message,
                     const char *field)
{
    json_t *j = json_pack("{s:s, s:s}", "error", code, "message", message);
    if (j && field)
        json_object_set_new(j, "field", json_string(field));
    api_reply_json(r, status, j);
}

void api_reply_conflict(request *r, const char *message, const char *state)
{
    api_reply_json(
        r, 409,
        json_pack("{s:s, s:s, s:s}", "error", "conflict", "message", message, "state", state));
}

void api_reply_unavailable(request *r)
{
    api_reply_error(r, 503, "unavailable", "the database is not reachable; try again", NULL);
}

void api_reply_empty(request *r, int status)
{
    if (reply_once(r))
        r->status = status;
}

/* ----------------------------------------------------------------- audit */

bool api_audit(request *r, const char *actor, const char *action, const char *object,
               const char *outcome)
{
    /* Reads that succeeded need not wait for the disk; everything else does. */
    static const char *const reads[] = {"recording.list", "recording.read", "permission.list",
                                        "grant.list",     "alert.list",     "form.read"};
    bool relaxed = false;
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]) && !strcmp(outcome, "ok"); i++)
        relaxed |= strcmp(action, reads[i]) == 0;
    ctl_audit_entry e = {.actor = actor,
                         .action = action,
                         .object = object ? object : "",
                         .outcome = outcome,
                         .source = r->source,
                         .relaxed = relaxed};
    cu_err err;
    if (ctl_audit_group_append(r->a->audit, r->a->db, &e, &err) == CU_OK)
        return true;
    CU_LOG(CU_LOG_ERROR, "api", "audit entry not written (%s %s %s): %s", actor, action, outcome,
           err.msg);
    if (PQstatus(r->a->db) != CONNECTION_OK)
        PQreset(r->a->db);
    return false;
}

bool api_audit_or_503(request *r, const char *actor, const char *action, const char *object,
                      const char *outcome)
{
    if (api_audit(r, actor, action, object, outcome))
        return true;
    api_reply_error(r, 503, "unavailable", "the audit log cannot be written; try again", NULL);
    return false;
}

/* ---------------------------------------------------------------- changes */

bool api_change_begin(request *r)
{
    cu_err err;
    if (db_exec(r->a->db, "BEGIN", &err) == CU_OK)
        return true;
    CU_LOG(CU_LOG_ERROR, "api", "database: %s", err.msg);
    if (PQstatus(r->a->db) != CONNECTION_OK)
        PQreset(r->a->db);
    api_reply_unavailable(r);
    return false;
}

void api_change_abort(request *r)
{
    PQclear(PQexec(r->a->db, "ROLLBACK"));
    if (PQstatus(r->a->db) != CONNECTION_OK)
        PQreset(r->a->db);
}

bool api_change_audit(request *r, const char *actor, const char *action, const char *object,
                      const char *outcome)
{
    ctl_audit_entry e = {.actor = actor,
                         .action = action,
                         .object = object ? object : "",
                         .outcome = outcome,
                         .source = r->source};
    cu_err err;
    if (ctl_audit_append(r->a->db, &e, NULL, &err) == CU_OK)
        return true;
    CU_LOG(CU_LOG_ERROR, "api", "audit entry not written, change rolled back (%s %s %s): %s", actor,
           action, outcome, err.msg);
    return false;
}

bool api_change_commit_as(request *r, const char *actor, const char *action, const char *object,
                          const char *outcome)
{
    cu_err err;
    bool ok = api_change_audit(r, actor, action, object, outcome);
    if (ok && db_exec(r->a->db, "COMMIT", &err) != CU_OK) {
        CU_LOG(CU_LOG_ERROR, "api", "commit of %s failed: %s", action, err.msg);
        ok = false;
    }
    if (!ok) {
        api_change_abort(r);
        api_reply_error(r, 503, "unavailable",
                        "the audit log cannot be written, so nothing was changed; try again", NULL);
    }
    return ok;
}

bool api_change_commit(request *r, const char *actor, const char *action, const char *object)
{
    return api_change_commit_as(r, actor, action, object, "ok");
}

/* -------------------------------------------------------------- database */

PGresult *api_query(api_worker *a, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(a->db, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        CU_LOG(CU_LOG_ERROR, "api", "database: %s", PQerrorMessage(a->db));
        PQclear(res);
        if (PQstatus(a->db) != CONNECTION_OK)
            PQreset(a->db);
        return NULL;
    }
    return res;
}

PGresult *api_query_prepared(api_worker *a, const char *name, const char *sql, int n,
                             const char *const *params)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        PGresult *res = PQexecPrepared(a->db, name, n, params, NULL, NULL, 0);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
            return res;
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool unprepared = state && strcmp(state, "26000") == 0; /* a new connection */
        PQclear(res);
        if (!unprepared || attempt)
            break;
        res = PQprepare(a->db, name, sql, n, NULL);
        st = PQresultStatus(res);
        PQclear(res);
        if (st != PGRES_COMMAND_OK)
            break;
    }
    CU_LOG(CU_LOG_ERROR, "api", "database (%s): %s", name, PQerrorMessage(a->db));
    if (PQstatus(a->db) != CONNECTION_OK)
        PQreset(a->db);
    return NULL;
}

bool api_exec_ok(api_worker *a, const char *sql, int n, const char *const *params)
{
    PGresult *res = api_query(a, sql, n, params);
    PQclear(res);
    return res != NULL;
}

/* ------------------------------------------------------------ JSON bodies */

/*
 * The request's body as a JSON object whose members are all in @p allowed;
 * NULL after an error reply (413, 400 naming the problem and the field).
 */
json_t *api_read_object(request *r, const char *const *allowed, size_t n)
{
    size_t len = r->body_len;
    if (len > (size_t)r->a->cfg->api_max_body_bytes) {
        api_reply_error(r, 413, "body_too_large",
                        "the request body is larger than api.max_body_bytes", NULL);
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(r->body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        char msg[300];
        snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        api_reply_error(r, 400, "malformed_json", msg, NULL);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_reply_error(r, 400, "invalid_type", "the body must be a JSON object", NULL);
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        size_t k = 0;
        while (k < n && strcmp(key, allowed[k]) != 0)
            k++;
        if (k == n) {
            api_reply_error(r, 400, "unknown_field", "this field is not part of the request", key);
            json_decref(j);
            return NULL;
        }
    }
    return j;
}

/* A required string member of at most @p max bytes; NULL after an error reply. */
const char *api_string_field(request *r, json_t *j, const char *name, size_t max)
{
    json_t *v = json_object_get(j, name);
    if (!v) {
        api_reply_error(r, 400, "missing_field", "this field is required", name);
        return NULL;
    }
    if (!json_is_string(v)) {
        api_reply_error(r, 400, "invalid_type", "this field must be a string", name);
        return NULL;
    }
    if (json_string_length(v) > max || strlen(json_string_value(v)) != json_string_length(v)) {
        api_reply_error(r, 400, "invalid_value", "too long, or contains a NUL character", name);
        return NULL;
    }
    return json_string_value(v);
}

/* -------------------------------------------------------------- sessions */

void api_token_hash_hex(const char *token, char hash_hex[67])
{
    uint8_t h[32];
    EVP_Digest(token, strlen(token), h, NULL, EVP_sha256(), NULL);
    memcpy(hash_hex, "\\x", 2);
    cu_hex_encode(h, 32, hash_hex + 2);
}

bool api_new_token(char token[48], char hash_hex[67])
{
    uint8_t raw[TOKEN_BYTES];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return false;
    EVP_EncodeBlock((unsigned char *)token, raw, sizeof(raw)); /* then made base64url */
    for (char *c = token; *c; c++)
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    token[API_TOKEN_CHARS] = '\0';
    OPENSSL_cleanse(raw, sizeof(raw));
    api_token_hash_hex(token, hash_hex);
    return true;
}

bool api_bearer_hash(request *r, char hash_hex[67])
{
    const char *h = r->authorization;
    if (!h || strncmp(h, "Bearer ", 7) != 0) {
        api_reply_error(r, 401, "unauthenticated", "log in first: Authorization: Bearer <token>",
                        NULL);
        return false;
    }
    const char *token = h + 7;
    if (strlen(token) != API_TOKEN_CHARS) {
        api_reply_error(r, 401, "invalid_token", "the token is not one this server issued", NULL);
        return false;
    }
    api_token_hash_hex(token, hash_hex);
    return true;
}

/*
 * The caller of @p r from its bearer token; false after a 401 (no token,
 * unknown, revoked, idle for 30 minutes, older than 12 hours, or the account
 * disabled or locked: session_check() in migration 0008 decides, at use).
 */
bool api_authenticate(request *r, caller *who)
{
    char thex[67];
    if (!api_bearer_hash(r, thex))
        return false;
    const char *params[1] = {thex};
    PGresult *res = api_query_prepared(r->a, "session_check",
                                       "SELECT session_id, user_id, username, role, refused, "
                                       "refused_why FROM session_check($1::bytea)",
                                       1, params);
    if (!res) {
        api_reply_unavailable(r);
        return false;
    }
    if (PQntuples(res) != 1 || !PQgetisnull(res, 0, 4)) {
        bool known = PQntuples(res) == 1;
        api_reply_error(r, 401, known ? PQgetvalue(res, 0, 4) : "invalid_token",
                        known ? PQgetvalue(res, 0, 5) : "the token is not one this server issued",
                        NULL);
        PQclear(res);
        return false;
    }
    who->session_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    who->user_id = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    cu_strlcpy(who->username, PQgetvalue(res, 0, 2), sizeof(who->username));
    cu_strlcpy(who->role, PQgetvalue(res, 0, 3), sizeof(who->role));
    snprintf(who->actor, sizeof(who->actor), "user:%s", who->username);
    snprintf(who->uid, sizeof(who->uid), "%lld", (long long)who->user_id);
    PQclear(res);
    return true;
}

/* ---------------------------------------------------------------- routing */

/* Route @p rq to its handler (on a handler thread): api_routes.c's table. */
static void handle(request *rq)
{
    if (!rq->path) {
        api_reply_error(rq, 400, "bad_request", "no path", NULL);
        return;
    }
    /* Path pieces become SQL parameters and audit fields: UTF-8 only. */
    if (!cu_utf8_valid(rq->path)) {
        api_reply_error(rq, 400, "invalid_path", "the path is not valid UTF-8", NULL);
        return;
    }
    api_dispatch(rq);
}

/* -------------------------------------------------------------- lifecycle */

#define QUEUE_MAX 4096 /* requests waiting for a handler; beyond, 503 at once */

struct ctl_api {
    const cu_config *cfg;
    const char *dsn;
    SSL_CTX *ssl;
    ctl_audit_group *audit;
    /* the I/O thread's */
    struct event_base *base;
    struct evhttp *http;
    struct event *replies_ev; /* replies_fd readable: replies are waiting */
    int replies_fd;           /* eventfd */
    api_reads *reads;         /* GET /api/v1/recordings */
    pthread_t io_thread;
    bool io_running;
    /* the handlers', under mu */
    api_worker *workers;
    int nworkers;
    api_logins *logins; /* login throttling and argon2 slots, shared by the handlers */
    pthread_mutex_t mu;
    pthread_cond_t queued;
    request *queue, **queue_tail; /* waiting for a handler */
    size_t queue_len, queue_bytes;
    request *replies, **replies_tail; /* answered, waiting for the I/O thread */
    bool stopping;
    int exports; /* clips and package downloads streaming now (export.max_concurrent) */
    api_packager *packager;
    live_service *live;             /* borrowed; NULL: no live view */
    api_live_auditor *live_auditor; /* the end of live sessions, audited */
};

live_service *api_live_of(const api_worker *w)
{
    return w->api->live;
}

api_live_auditor *api_live_auditor_of(ctl_api *api)
{
    return api->live_auditor;
}

api_packager *api_packager_of(const api_worker *w)
{
    return w->api->packager;
}

bool api_export_slot_take(request *r)
{
    ctl_api *a = r->a->api;
    pthread_mutex_lock(&a->mu);
    bool ok = a->exports < (int)a->cfg->export_max_concurrent;
    if (ok)
        a->exports++;
    pthread_mutex_unlock(&a->mu);
    if (!ok) {
        r->retry_after_s = 5;
        api_reply_error(r, 503, "busy",
                        "as many clips and packages as allowed are being sent "
                        "(export.max_concurrent); try again shortly",
                        NULL);
    }
    return ok;
}

void api_export_slot_give(api_worker *w)
{
    pthread_mutex_lock(&w->api->mu);
    w->api->exports--;
    pthread_mutex_unlock(&w->api->mu);
}

struct event_base *api_io_base(const api_worker *w)
{
    return w->api->base;
}

void api_request_free(request *r)
{
    free(r->path);
    free(r->query);
    free(r->authorization);
    free(r->content_type);
    free(r->body);
    free(r->reply);
    free(r->location);
    free(r);
}

static char *dup_or_null(const char *s)
{
    return s ? cu_xstrdup(s) : NULL;
}

/* A copy of what handlers may read of @p req (I/O thread). */
static request *request_copy(struct evhttp_request *req)
{
    request *r = cu_xcalloc(1, sizeof(*r));
    r->req = req;
    r->method = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    r->path = dup_or_null(uri ? evhttp_uri_get_path(uri) : NULL);
    r->query = dup_or_null(uri ? evhttp_uri_get_query(uri) : NULL);
    r->authorization =
        dup_or_null(evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization"));
    r->content_type =
        dup_or_null(evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type"));
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    r->body_len = evbuffer_get_length(in); /* at most evhttp's max body size */
    r->body = cu_xmalloc(r->body_len + 1);
    evbuffer_copyout(in, r->body, r->body_len);
    r->body[r->body_len] = '\0';
    char *peer = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &port);
    cu_strlcpy(r->source, peer ? peer : "?", sizeof(r->source));
    return r;
}

static void free_text(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

/* If the client has gone, evhttp frees the request instead of sending. */
void api_send_reply(request *r)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(h, "Cache-Control", "no-store");
    /* HTTPS only, from now on, for a year: a browser never tries plain HTTP. */
    evhttp_add_header(h, "Strict-Transport-Security", "max-age=31536000");
    if (r->retry_after_s) {
        char v[16];
        snprintf(v, sizeof(v), "%d", r->retry_after_s);
        evhttp_add_header(h, "Retry-After", v);
    }
    if (r->location)
        evhttp_add_header(h, "Location", r->location);
    if (r->page) {
        /* A page of the browser's: its own scripts and styles only, never framed. */
        evhttp_add_header(h, "Content-Security-Policy",
                          "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "connect-src 'self'; media-src 'self' blob:; img-src 'self'; "
                          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
        evhttp_add_header(h, "Referrer-Policy", "no-referrer");
        evhttp_add_header(h, "X-Frame-Options", "DENY");
    }
    struct evbuffer *out = NULL;
    if (r->reply) {
        evhttp_add_header(h, "Content-Type", r->reply_type ? r->reply_type : "application/json");
        out = evbuffer_new();
        if (out && evbuffer_add_reference(out, r->reply, strlen(r->reply), free_text, NULL) == 0)
            r->reply = NULL; /* the buffer frees it once written */
    }
    evhttp_send_reply(r->req, r->status, NULL, out);
    if (out)
        evbuffer_free(out);
    api_request_free(r);
}

/* evhttp's callback (I/O thread): queue the request for a handler. */
static void on_request(struct evhttp_request *req, void *arg)
{
    ctl_api *api = arg;
    request *r = request_copy(req);
    if (r->method == EVHTTP_REQ_GET && r->path && strcmp(r->path, "/api/v1/recordings") == 0) {
        api_reads_list(api->reads, r);
        return;
    }
    /* Bounded in count and in bytes: a flood of large bodies does not take the memory. */
    r->size = sizeof(*r) + r->body_len + (r->path ? strlen(r->path) : 0) +
              (r->query ? strlen(r->query) : 0) + (r->authorization ? strlen(r->authorization) : 0);
    pthread_mutex_lock(&api->mu);
    bool full = api->queue_len >= QUEUE_MAX ||
                api->queue_bytes + r->size > (size_t)api->cfg->api_queue_max_bytes;
    if (!full) {
        *api->queue_tail = r;
        api->queue_tail = &r->next;
        api->queue_len++;
        api->queue_bytes += r->size;
        pthread_cond_signal(&api->queued);
    }
    pthread_mutex_unlock(&api->mu);
    if (full) {
        r->status = 503;
        r->reply = cu_xstrdup("{\"error\":\"busy\",\"message\":\"too many requests are "
                              "waiting; try again\"}");
        api_send_reply(r);
    }
}

/* Handlers have answered (I/O thread): send every waiting reply. */
static void on_replies(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    ctl_api *api = arg;
    uint64_t n;
    if (read(fd, &n, sizeof(n)) < 0) {
        /* EAGAIN: another wake-up already took them */
    }
    pthread_mutex_lock(&api->mu);
    request *r = api->replies;
    api->replies = NULL;
    api->replies_tail = &api->replies;
    pthread_mutex_unlock(&api->mu);
    while (r) {
        request *next = r->next;
        api_send_reply(r);
        r = next;
    }
}

static void *io_main(void *arg)
{
    ctl_api *api = arg;
    pthread_setname_np(pthread_self(), "api-io");
    event_base_dispatch(api->base);
    return NULL;
}

/* A handler thread: take a request, run it, hand the reply back. */
static void *handler_main(void *arg)
{
    api_worker *w = arg;
    ctl_api *api = w->api;
    char name[16];
    snprintf(name, sizeof(name), "api-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    pthread_mutex_lock(&api->mu);
    for (;;) {
        while (!api->queue && !api->stopping)
            pthread_cond_wait(&api->queued, &api->mu);
        request *r = api->queue;
        if (!r)
            break; /* stopping, and nothing left */
        api->queue = r->next;
        if (!api->queue)
            api->queue_tail = &api->queue;
        api->queue_len--;
        api->queue_bytes -= r->size;
        pthread_mutex_unlock(&api->mu);
        r->a = w;
        r->next = NULL;
        w->streamed = false;
        handle(r);
        if (w->streamed) { /* its stream answers it, and frees it */
            pthread_mutex_lock(&api->mu);
            continue;
        }
        if (!r->status) {
            CU_LOG(CU_LOG_ERROR, "api", "no reply to %s", r->path ? r->path : "?");
            api_reply_error(r, 500, "internal", "the server did not answer this request", NULL);
        }
        pthread_mutex_lock(&api->mu);
        bool wake = !api->replies;
        *api->replies_tail = r;
        api->replies_tail = &r->next;
        if (wake) {
            uint64_t one = 1;
            if (write(api->replies_fd, &one, sizeof(one)) < 0) {
                /* the counter cannot overflow at one per batch */
            }
        }
    }
    pthread_mutex_unlock(&api->mu);
    return NULL;
}

static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    ctl_api *api = arg;
    SSL *ssl = SSL_new(api->ssl);
    if (!ssl)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        SSL_free(ssl);
    return bev;
}

/* The listening socket on api.bind:api.port. */
static cu_rc listen_shared(const cu_config *cfg, int *fd_out, cu_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (strchr(cfg->api_bind, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)cfg->api_port);
        inet_pton(AF_INET6, cfg->api_bind, &a6->sin6_addr);
        sl = sizeof(*a6);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)cfg->api_port);
        inet_pton(AF_INET, cfg->api_bind, &a4->sin_addr);
        sl = sizeof(*a4);
    }
    int one = 1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        /* accepted connections inherit it: a response's TLS records go out at
         * once instead of waiting for the client's delayed ACK */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return cu_err_set(err, CU_ERR_IO, "api (api.bind, api.port): cannot listen on %s:%lld: %s",
                          cfg->api_bind, (long long)cfg->api_port, strerror(e));
    }
    *fd_out = fd;
    return CU_OK;
}

static cu_rc worker_start(api_worker *w, const char *dsn, const char *dummy_hash, cu_err *err)
{
    cu_strlcpy(w->dummy_hash, dummy_hash, sizeof(w->dummy_hash));
    return db_connect(dsn, "custos-api", &w->db, err);
}

/* The event loop, evhttp on the listening socket, and the replies' eventfd. */
static cu_rc io_start(ctl_api *api, cu_err *err)
{
    const cu_config *cfg = api->cfg;
    api->base = event_base_new();
    api->http = api->base ? evhttp_new(api->base) : NULL;
    api->replies_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!api->http || api->replies_fd < 0)
        return cu_err_set(err, CU_ERR_NOMEM, "cannot create the API's HTTP server");
    api->replies_ev = event_new(api->base, api->replies_fd, EV_READ | EV_PERSIST, on_replies, api);
    if (!api->replies_ev || event_add(api->replies_ev, NULL) != 0)
        return cu_err_set(err, CU_ERR_NOMEM, "cannot create the API's HTTP server");
    evhttp_set_bevcb(api->http, tls_bev, api);
    evhttp_set_gencb(api->http, on_request, api);
    evhttp_set_timeout(api->http, (int)cfg->http_timeout_s);
    evhttp_set_max_headers_size(api->http, HEADERS_MAX);
    /* Bodies up to 4x the cap are read and answered 413 in JSON; larger ones
     * evhttp refuses itself while reading. */
    evhttp_set_max_body_size(api->http, (ev_ssize_t)cfg->api_max_body_bytes * 4);
    evhttp_set_allowed_methods(api->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                              EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH);
    int fd = -1;
    cu_rc rc = api_reads_new(api->base, api->dsn, &api->reads, err);
    if (rc)
        return rc;
    rc = listen_shared(cfg, &fd, err);
    if (rc)
        return rc;
    if (!evhttp_accept_socket_with_handle(api->http, fd)) {
        close(fd);
        return cu_err_set(err, CU_ERR_NOMEM, "cannot serve the API socket");
    }
    return CU_OK;
}

cu_rc ctl_api_start(const cu_config *cfg, const char *data_dir, const char *dsn, keys_ring *keys,
                    live_service *live, ctl_api **out, cu_err *err)
{
    *out = NULL;
    if (!cfg->api_port)
        return CU_OK;
    ctl_api *a = cu_xcalloc(1, sizeof(*a));
    a->cfg = cfg;
    a->dsn = dsn;
    a->audit = ctl_audit_group_new();
    a->replies_fd = -1;
    a->queue_tail = &a->queue;
    a->replies_tail = &a->replies;
    a->logins = api_logins_new(cfg);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->queued, NULL);
    char dummy[CTL_PASSWORD_HASH_MAX];
    ctl_tls_spec tls = {.what = "HTTPS API",
                        .cert_file = cfg->api_cert_file,
                        .key_file = cfg->api_key_file,
                        .cert_setting = "api.cert_file",
                        .key_setting = "api.key_file",
                        .host = "",
                        .data_dir = data_dir,
                        .stem = "api"};
    cu_rc rc = ctl_tls_server_context(&tls, &a->ssl, err);
    if (rc)
        goto fail;
    /* A hash to verify unknown users' attempts against (same cost). */
    rc = ctl_password_hash("no user has this password, it only costs time", dummy, err);
    if (rc)
        goto fail;
    rc = io_start(a, err);
    if (rc)
        goto fail;
        /* GStreamer (clips) loads its plugins now, not at the first export
         * (~0.6 s). Not in a sanitizer build: GLib then leaks its first quark
         * block on purpose, which only the export tests expect (tests/lsan.supp). */
#ifndef __SANITIZE_ADDRESS__
    cu_err gst_err;
    if (export_init(data_dir, &gst_err) != CU_OK)
        CU_LOG(CU_LOG_WARN, "api", "clips cannot be made: %s", gst_err.msg);
#endif
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    a->nworkers = cfg->api_workers ? (int)cfg->api_workers : cpus > 0 ? 2 * (int)cpus : 2;
    a->workers = cu_xcalloc((size_t)a->nworkers, sizeof(api_worker));
    for (int i = 0; i < a->nworkers; i++) {
        api_worker *w = &a->workers[i];
        w->api = a;
        w->cfg = cfg;
        w->index = i;
        w->audit = a->audit;
        w->keys = keys;
        w->data_dir = data_dir;
        w->logins = a->logins;
        rc = worker_start(w, dsn, dummy, err);
        if (rc)
            goto fail;
    }
    for (int i = 0; i < a->nworkers; i++) {
        if (pthread_create(&a->workers[i].thread, NULL, handler_main, &a->workers[i]) != 0) {
            rc = cu_err_set(err, CU_ERR_IO, "cannot start API thread %d", i);
            goto fail;
        }
        a->workers[i].running = true;
    }
    rc = api_packager_start(cfg, data_dir, dsn, keys, &a->packager, err);
    if (rc)
        goto fail;
    a->live = live;
    rc = api_live_auditor_start(dsn, a->audit, &a->live_auditor, err);
    if (rc)
        goto fail;
    if (pthread_create(&a->io_thread, NULL, io_main, a) != 0) {
        rc = cu_err_set(err, CU_ERR_IO, "cannot start the API's I/O thread");
        goto fail;
    }
    a->io_running = true;
    CU_LOG(CU_LOG_INFO, "api", "HTTPS API on %s:%lld (/api/v1/) with %d handler thread(s)",
           cfg->api_bind, (long long)cfg->api_port, a->nworkers);
    *out = a;
    return CU_OK;
fail:
    ctl_api_stop(a);
    return rc;
}

static void free_list(request *r)
{
    while (r) {
        request *next = r->next;
        api_request_free(r);
        r = next;
    }
}

void ctl_api_stop(ctl_api *a)
{
    if (!a)
        return;
    /* No new requests, then the handlers finish what is queued; replies
     * left unsent go with evhttp's connections. */
    if (a->io_running) {
        event_base_loopexit(a->base, NULL);
        pthread_join(a->io_thread, NULL);
    }
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_broadcast(&a->queued);
    pthread_mutex_unlock(&a->mu);
    for (int i = 0; i < a->nworkers; i++) {
        api_worker *w = &a->workers[i];
        if (w->running)
            pthread_join(w->thread, NULL);
        PQfinish(w->db);
    }
    api_packager_stop(a->packager);
    api_live_auditor_stop(a->live_auditor);
    free_list(a->queue);
    free_list(a->replies);
    api_reads_free(a->reads);
    api_logins_free(a->logins);
    if (a->replies_ev)
        event_free(a->replies_ev);
    if (a->http)
        evhttp_free(a->http);
    if (a->base)
        event_base_free(a->base);
    if (a->replies_fd >= 0)
        close(a->replies_fd);
    free(a->workers);
    ctl_audit_group_free(a->audit);
    pthread_cond_destroy(&a->queued);
    pthread_mutex_destroy(&a->mu);
    SSL_CTX_free(a->ssl);
    free(a);
}
