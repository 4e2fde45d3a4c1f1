/*
 * Live view over the API (docs/live.md): WHEP sessions (POST an offer,
 * DELETE the session), the minimal page /live/{serial} and its assets, and
 * the audit of every session's start (by the handler that answered it)
 * and end (by the live auditor thread, from the live service's hook: a
 * session may end on the live thread, which never waits on PostgreSQL).
 */
#include "api_internal.h"
#include "db/db.h"
#include "live/live.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The page and its assets, embedded at build time (web/live/). */
extern const unsigned char live_page_html[], live_page_js[], live_page_css[];

#define AUDITOR_QUEUE_MAX 4096

typedef struct ended_item {
    live_ended e;
    struct ended_item *next;
} ended_item;

struct api_live_auditor {
    char *dsn;
    ctl_audit_group *audit; /* the API's */
    PGconn *db;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ended_item *head, **tail;
    int queued;
    uint64_t lost; /* entries the queue could not hold (logged) */
    bool stopping;
};

/* ----------------------------------------------------------- the auditor */

/* "recording:<id> live <kind> session <id> of <serial>: <reason> after 12.3 s, N frames" */
static void ended_object(const live_ended *e, char *out, size_t n)
{
    snprintf(out, n, "recording:%s live %s session %s of %s: %s after %.1f s, %llu frames",
             e->recording, e->kind, e->id, e->serial, e->reason,
             (double)(e->ended_us - e->started_us) / 1e6, (unsigned long long)e->frames_sent);
}

static void write_ended(api_live_auditor *a, const live_ended *e)
{
    char object[384];
    ended_object(e, object, sizeof(object));
    ctl_audit_entry entry = {.actor = e->actor,
                             .action = "live.end",
                             .object = object,
                             .outcome = "ok",
                             .source = e->source};
    for (int attempt = 0; attempt < 3; attempt++) {
        cu_err err;
        if (!a->db || PQstatus(a->db) != CONNECTION_OK) {
            PQfinish(a->db);
            a->db = NULL;
            if (db_connect(a->dsn, "custos-live-audit", &a->db, &err) != CU_OK) {
                CU_LOG(CU_LOG_WARN, "live", "no database for the audit of live sessions: %s",
                       err.msg);
                sleep(1);
                continue;
            }
        }
        if (ctl_audit_group_append(a->audit, a->db, &entry, &err) == CU_OK)
            return;
        CU_LOG(CU_LOG_WARN, "live", "audit entry not written (%s): %s", object, err.msg);
        PQreset(a->db);
    }
    CU_LOG(CU_LOG_ERROR, "live", "the end of a live session was not audited: %s %s", e->actor,
           object);
}

static void *auditor_main(void *arg)
{
    api_live_auditor *a = arg;
    pthread_setname_np(pthread_self(), "api-live-audit");
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->head && !a->stopping)
            pthread_cond_wait(&a->cv, &a->mu);
        if (!a->head)
            break; /* stopping, and everything is written */
        ended_item *it = a->head;
        a->head = it->next;
        if (!a->head)
            a->tail = &a->head;
        a->queued--;
        pthread_mutex_unlock(&a->mu);
        write_ended(a, &it->e);
        free(it);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

cu_rc api_live_auditor_start(const char *dsn, ctl_audit_group *audit, api_live_auditor **out,
                             cu_err *err)
{
    api_live_auditor *a = cu_xcalloc(1, sizeof(*a));
    a->dsn = cu_xstrdup(dsn);
    a->audit = audit;
    a->tail = &a->head;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (pthread_create(&a->thread, NULL, auditor_main, a) != 0) {
        free(a->dsn);
        free(a);
        return cu_err_set(err, CU_ERR_IO, "cannot start the live auditor thread");
    }
    *out = a;
    return CU_OK;
}

void api_live_auditor_stop(api_live_auditor *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    PQfinish(a->db);
    free(a->dsn);
    free(a);
}

void ctl_api_live_ended(ctl_api *api, const live_ended *e)
{
    api_live_auditor *a = api ? api_live_auditor_of(api) : NULL;
    if (!a)
        return;
    ended_item *it = cu_xcalloc(1, sizeof(*it));
    it->e = *e;
    pthread_mutex_lock(&a->mu);
    bool full = a->queued >= AUDITOR_QUEUE_MAX;
    if (!full) {
        *a->tail = it;
        a->tail = &it->next;
        a->queued++;
        pthread_cond_signal(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    if (full) {
        char object[384];
        ended_object(e, object, sizeof(object));
        CU_LOG(CU_LOG_ERROR, "live", "audit queue full: the end of %s (%s) is only logged", object,
               e->actor);
        free(it);
    }
}

/* ------------------------------------------------------------- handlers */

static bool is_sdp(const char *content_type)
{
    if (!content_type)
        return false;
    size_t n = strcspn(content_type, ";");
    while (n && content_type[n - 1] == ' ')
        n--;
    return n == strlen("application/sdp") && strncasecmp(content_type, "application/sdp", n) == 0;
}

void api_live_whep(request *r, const caller *who, const char *serial)
{
    live_service *l = api_live_of(r->a);
    if (!is_sdp(r->content_type)) {
        api_reply_error(r, 415, "unsupported_media_type",
                        "a WHEP offer is sent as Content-Type: application/sdp", NULL);
        return;
    }
    live_viewer v = {.user_id = who->user_id, .actor = who->actor, .source = r->source};
    char *answer = NULL, id[33];
    const char *why = "";
    live_status st = live_whep_start(l, serial, &v, r->body, r->body_len, &answer, id, &why);
    switch (st) {
    case LIVE_OK: break;
    case LIVE_NOT_LIVE: api_reply_error(r, 404, "not_found", why, NULL); return;
    case LIVE_LIMIT_STREAM:
    case LIVE_LIMIT_USER:
        r->retry_after_s = 10;
        api_reply_error(r, 429, "too_many_viewers", why, NULL);
        return;
    case LIVE_LIMIT_TOTAL:
    case LIVE_LIMIT_TRANSCODES:
        r->retry_after_s = 30;
        api_reply_error(r, 503, "busy", why, NULL);
        return;
    case LIVE_BAD_OFFER: api_reply_error(r, 400, "bad_offer", why, NULL); return;
    case LIVE_FAILED: api_reply_error(r, 500, "internal", why, NULL); return;
    }
    char rec[37] = "", object[256];
    live_recording_of(l, serial, rec);
    snprintf(object, sizeof(object), "recording:%s live whep session %s of %s", rec, id, serial);
    if (!api_audit_or_503(r, who->actor, "live.start", object, "ok")) {
        live_whep_stop(l, id, who->user_id); /* not audited: not watched */
        free(answer);
        return;
    }
    char location[96];
    snprintf(location, sizeof(location), "/api/v1/live/sessions/%s", id);
    api_reply_text(r, 201, "application/sdp", answer, location);
}

void api_live_session_end(request *r, const caller *who, const char *id)
{
    /* (api_decide() allowed it: the session is the caller's) */
    if (!live_whep_stop(api_live_of(r->a), id, who->user_id)) {
        api_reply_error(r, 404, "not_found", "no such live session", NULL);
        return;
    }
    api_reply_empty(r, 200);
}

void api_live_page(request *r, const caller *who, const char *serial)
{
    (void)who;
    (void)serial; /* (the page reads it from its own address) */
    r->page = true;
    api_reply_text(r, 200, "text/html; charset=utf-8", cu_xstrdup((const char *)live_page_html),
                   NULL);
}

void api_live_asset(request *r, const caller *who, const char *name)
{
    (void)who;
    r->page = true;
    if (strcmp(name, "live.js") == 0)
        api_reply_text(r, 200, "text/javascript; charset=utf-8",
                       cu_xstrdup((const char *)live_page_js), NULL);
    else if (strcmp(name, "live.css") == 0)
        api_reply_text(r, 200, "text/css; charset=utf-8", cu_xstrdup((const char *)live_page_css),
                       NULL);
    else
        api_reply_error(r, 404, "not_found", "no such asset", NULL);
}
