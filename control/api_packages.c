/*
 * Evidence packages over the API (docs/package.md):
 *
 *   POST /api/v1/recordings/{id}/packages   ask for one: {start?, end?, reason}; 202 queued
 *   GET  /api/v1/recordings/{id}/packages   the recording's packages, newest first
 *   GET  /api/v1/packages/{id}/status       one package's state
 *   GET  /api/v1/packages/{id}              the ZIP, once ready
 *
 * Who may ask for, see and download a package is who may read its
 * recording (rule 4; 404 otherwise), decided by api_decide(). A package is
 * built once, off the handler threads, by the packager: one thread with its
 * own connection that takes queued packages in order, writes each to
 * <data-dir>/packages/<id>.zip (a .part renamed when complete and durable)
 * and records its size and SHA-256 with an audit entry. A download is
 * checked against that SHA-256 as it is sent (a file changed on disk is cut
 * off, never delivered) and audited with it. Packages left building by a
 * stop or a crash are queued again at the next start; ready ones are
 * removed after export.package_keep_h.
 */
#include "api_internal.h"

#include "export/export.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PACKAGE_REASON_MAX 500
#define PACKAGER_IDLE_S    10
#define PACKAGES_DIR       "packages"
#define PACKAGE_LIST_MAX   100
#define STR_(x)            #x
#define STR(x)             STR_(x)

struct api_packager {
    const cu_config *cfg;
    char data_dir[PATH_MAX];
    char *dsn;
    keys_ring *keys;
    PGconn *db;
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool wake, stopping;
    bool requeue_pending; /* packages left 'building' to be queued again */
};

static void package_path(const char *data_dir, const char *id, const char *suffix, char *out)
{
    snprintf(out, PATH_MAX, "%s/" PACKAGES_DIR "/%s.zip%s", data_dir, id, suffix);
}

static void range_text(int64_t start_us, int64_t end_us, char from[CU_TIME_TEXT_LEN],
                       char to[CU_TIME_TEXT_LEN])
{
    snprintf(from, CU_TIME_TEXT_LEN, "start");
    snprintf(to, CU_TIME_TEXT_LEN, "end");
    if (start_us)
        cu_time_format_ms(start_us / 1000, from);
    if (end_us)
        cu_time_format_ms(end_us / 1000, to);
}

/* ------------------------------------------------------------- packager */

/* A statement of the packager's; false (logged) when it failed. */
static bool packager_exec(api_packager *p, const char *sql, int n, const char *const *params,
                          PGresult **out)
{
    PGresult *res = PQexecParams(p->db, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        CU_LOG(CU_LOG_ERROR, "packages", "%s", PQerrorMessage(p->db));
        PQclear(res);
        return false;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return true;
}

/* One change of a package's row with its audit entry, in one transaction. */
static bool packager_change(api_packager *p, const char *sql, int n, const char *const *params,
                            const char *action, const char *object, const char *outcome)
{
    ctl_audit_entry e = {.actor = "system",
                         .action = action,
                         .object = object,
                         .outcome = outcome,
                         .source = "local"};
    cu_err err;
    if (!packager_exec(p, "BEGIN", 0, NULL, NULL))
        return false;
    if (packager_exec(p, sql, n, params, NULL) &&
        ctl_audit_append(p->db, &e, NULL, &err) == CU_OK &&
        packager_exec(p, "COMMIT", 0, NULL, NULL))
        return true;
    packager_exec(p, "ROLLBACK", 0, NULL, NULL);
    return false;
}

typedef struct {
    api_packager *p;
    int fd;
    int error;
} package_file;

static bool package_write(void *ctx, const uint8_t *data, size_t len)
{
    package_file *f = ctx;
    if (__atomic_load_n(&f->p->stopping, __ATOMIC_RELAXED)) {
        f->error = ECANCELED;
        return false;
    }
    if (!cu_write_all(f->fd, data, len)) {
        f->error = errno;
        return false;
    }
    return true;
}

/* Build package @p id of recording @p rec into its file; CU_OK with its
 * report, or why not (ECANCELED in *@p stopped: the service is stopping). */
static cu_rc build_file(api_packager *p, const char *id, const char *rec, const char *requester,
                        int64_t start_us, int64_t end_us, const char *reason, const char *actor,
                        export_package_report *rep, bool *stopped, cu_err *err)
{
    char dir[PATH_MAX], tmp[PATH_MAX], path[PATH_MAX];
    char checkpoint[CTL_CHECKPOINT_LINE_MAX + 1] = "";
    snprintf(dir, sizeof(dir), "%s/" PACKAGES_DIR, p->data_dir);
    package_path(p->data_dir, id, ".part", tmp);
    package_path(p->data_dir, id, "", path);
    *stopped = false;
    store_id rid;
    if (!store_id_parse(rec, &rid))
        return cu_err_set(err, CU_ERR_INVALID, "recording %s: not an id", rec);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cu_err_set(err, CU_ERR_IO, "%s: %s", dir, strerror(errno));
    package_file f = {.p = p, .fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (f.fd < 0)
        return cu_err_set(err, CU_ERR_IO, "%s: %s", tmp, strerror(errno));
    export_source src = {0};
    cu_rc rc = ctl_checkpoint_latest(p->data_dir, checkpoint, sizeof(checkpoint), err);
    if (!rc) /* (with the capture's other tracks that the requester may read) */
        rc = export_source_open(p->data_dir, p->db, p->keys, &rid, requester, &src, err);
    if (!rc) {
        export_package_opts o = {.package_id = id,
                                 .tracks = src.tracks,
                                 .ntracks = src.ntracks,
                                 .start_us = start_us,
                                 .end_us = end_us,
                                 .reason = reason,
                                 .made_by = actor,
                                 .conn = p->db,
                                 .keys = p->keys,
                                 .checkpoint = checkpoint};
        rc = export_package(src.rd, &o, package_write, &f, rep, err);
    }
    export_source_close(&src);
    if (f.error == ECANCELED)
        *stopped = true;
    else if (f.error)
        rc = cu_err_set(err, CU_ERR_IO, "%s: %s", tmp, strerror(f.error));
    if (!rc && (fsync(f.fd) != 0 || rename(tmp, path) != 0))
        rc = cu_err_set(err, CU_ERR_IO, "%s: %s", path, strerror(errno));
    close(f.fd);
    if (!rc) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            rc = cu_err_set(err, CU_ERR_IO, "%s: %s", dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
    }
    if (rc || *stopped) {
        unlink(tmp);
        unlink(path); /* (renamed, but its directory not durable: not a package) */
    }
    return *stopped && !rc ? CU_ERR_BUSY : rc;
}

/* The oldest queued package, claimed and built; false when none was queued. */
static bool build_next(api_packager *p)
{
    PGresult *res = NULL;
    if (!packager_exec(
            p,
            "UPDATE packages SET state = 'building', started_at = now() WHERE id = "
            "(SELECT id FROM packages WHERE state = 'queued' ORDER BY requested_at "
            "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id::text, recording_id::text, "
            "coalesce(start_us, 0), coalesce(end_us, 0), reason, actor, requested_by::text",
            0, NULL, &res))
        return false;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return false;
    }
    char id[37], rec[37], actor[200], from[CU_TIME_TEXT_LEN], to[CU_TIME_TEXT_LEN];
    int64_t start_us = 0, end_us = 0;
    cu_strlcpy(id, PQgetvalue(res, 0, 0), sizeof(id));
    cu_strlcpy(rec, PQgetvalue(res, 0, 1), sizeof(rec));
    if (!cu_parse_int64(PQgetvalue(res, 0, 2), &start_us) ||
        !cu_parse_int64(PQgetvalue(res, 0, 3), &end_us))
        start_us = end_us = 0; /* (bigint columns: cannot happen) */
    char *reason = cu_xstrdup(PQgetvalue(res, 0, 4));
    cu_strlcpy(actor, PQgetvalue(res, 0, 5), sizeof(actor));
    char requester[24];
    cu_strlcpy(requester, PQgetvalue(res, 0, 6), sizeof(requester));
    PQclear(res);
    range_text(start_us, end_us, from, to);

    export_package_report rep;
    cu_err err;
    bool stopped;
    int64_t t0 = cu_time_us();
    cu_rc rc =
        build_file(p, id, rec, requester, start_us, end_us, reason, actor, &rep, &stopped, &err);
    free(reason);
    char object[4096], sha[65], bytes[24], keep[24];
    const char *params[4] = {id, bytes, sha, keep};
    if (stopped || rc == CU_ERR_DB) { /* (again: at the next start, or once the database is back) */
        packager_exec(p, "UPDATE packages SET state = 'queued', started_at = NULL WHERE id = $1", 1,
                      params, NULL);
        return false;
    }
    if (rc) {
        CU_LOG(CU_LOG_ERROR, "packages", "package %s of recording %s failed: %s", id, rec, err.msg);
        snprintf(object, sizeof(object), "recording:%s package %s from %s to %s: %s", rec, id, from,
                 to, err.msg);
        const char *fp[2] = {id, err.msg};
        if (!packager_change(p,
                             "UPDATE packages SET state = 'failed', error = left($2, 600) "
                             "WHERE id = $1",
                             2, fp, "recording.package", object, "failed")) {
            CU_LOG(CU_LOG_ERROR, "packages", "package %s: its failure could not be recorded", id);
            p->requeue_pending = true; /* (tried again, and recorded then) */
        }
        return true;
    }
    cu_hex_encode(rep.sha256, 32, sha);
    snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)rep.bytes);
    snprintf(keep, sizeof(keep), "%lld", (long long)p->cfg->export_package_keep_h);
    snprintf(object, sizeof(object),
             "recording:%s package %s from %s to %s ready zip %s bytes sha256 %s", rec, id, from,
             to, bytes, sha);
    if (!packager_change(p,
                         "UPDATE packages SET state = 'ready', ready_at = now(), bytes = $2, "
                         "sha256 = decode($3, 'hex'), expires_at = now() + $4 * interval '1 hour' "
                         "WHERE id = $1",
                         4, params, "recording.package", object, "ok")) {
        char path[PATH_MAX];
        package_path(p->data_dir, id, "", path);
        unlink(path); /* (unrecorded, it is not delivered: queued again) */
        if (!packager_exec(p, "UPDATE packages SET state = 'queued' WHERE id = $1", 1, params,
                           NULL))
            p->requeue_pending = true;
        return false;
    }
    CU_LOG(CU_LOG_INFO, "packages", "package %s of recording %s: %s bytes in %.1f s", id, rec,
           bytes, (double)(cu_time_us() - t0) / 1e6);
    return true;
}

/* Ready packages past their time: the file removed, the row 'expired'. */
static void expire_old(api_packager *p)
{
    PGresult *res = NULL;
    if (!packager_exec(p,
                       "SELECT id::text, recording_id::text FROM packages WHERE state = 'ready' "
                       "AND expires_at < now() ORDER BY expires_at LIMIT 100",
                       0, NULL, &res))
        return;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0);
        char path[PATH_MAX], object[200];
        snprintf(object, sizeof(object), "recording:%s package %s expired (file removed)",
                 PQgetvalue(res, i, 1), id);
        const char *params[1] = {id};
        if (packager_change(p, "UPDATE packages SET state = 'expired' WHERE id = $1", 1, params,
                            "recording.package.expire", object, "ok")) {
            package_path(p->data_dir, id, "", path);
            if (unlink(path) != 0 && errno != ENOENT)
                CU_LOG(CU_LOG_ERROR, "packages", "%s: %s", path, strerror(errno));
        }
    }
    PQclear(res);
}

static void *packager_main(void *arg)
{
    api_packager *p = arg;
    pthread_setname_np(pthread_self(), "api-packager");
    p->requeue_pending = true; /* (those a stop or a crash left building) */
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (!p->wake && !p->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += PACKAGER_IDLE_S;
            pthread_cond_timedwait(&p->cv, &p->mu, &until);
        }
        p->wake = false;
        bool stop = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        if (!p->db || PQstatus(p->db) != CONNECTION_OK) {
            cu_err err;
            PQfinish(p->db);
            p->db = NULL;
            if (db_connect(p->dsn, "custos-packager", &p->db, &err) != CU_OK) {
                CU_LOG(CU_LOG_WARN, "packages", "no database: %s", err.msg);
                continue;
            }
            p->requeue_pending = true;
        }
        /* Left building by a stop, a crash or a lost connection: again, from
         * the start (only this thread builds, so none is being built now). */
        if (p->requeue_pending)
            p->requeue_pending = !packager_exec(p,
                                                "UPDATE packages SET state = 'queued', "
                                                "started_at = NULL WHERE state = 'building'",
                                                0, NULL, NULL);
        expire_old(p);
        while (!__atomic_load_n(&p->stopping, __ATOMIC_RELAXED) && build_next(p))
            ;
    }
    return NULL;
}

cu_rc api_packager_start(const cu_config *cfg, const char *data_dir, const char *dsn,
                         keys_ring *keys, api_packager **out, cu_err *err)
{
    api_packager *p = cu_xcalloc(1, sizeof(*p));
    p->cfg = cfg;
    cu_strlcpy(p->data_dir, data_dir, sizeof(p->data_dir));
    p->dsn = cu_xstrdup(dsn);
    p->keys = keys;
    p->wake = true; /* (recovery and the queue at once) */
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, packager_main, p) != 0) {
        api_packager_stop(p);
        return cu_err_set(err, CU_ERR_IO, "cannot start the packager thread");
    }
    p->running = true;
    *out = p;
    return CU_OK;
}

void api_packager_wake(api_packager *p)
{
    pthread_mutex_lock(&p->mu);
    p->wake = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void api_packager_stop(api_packager *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->stopping, true, __ATOMIC_RELAXED);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->running)
        pthread_join(p->thread, NULL);
    PQfinish(p->db);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->dsn);
    free(p);
}

/* ------------------------------------------------------------- handlers */

static const char *const package_fields[] = {"start", "end", "reason"};

/* An optional RFC 3339 member into *@p us (0 when absent); false after a 400. */
static bool time_member(request *r, json_t *body, const char *name, int64_t *us)
{
    json_t *v = json_object_get(body, name);
    *us = 0;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v) || !cu_time_parse_us(json_string_value(v), us)) {
        api_reply_error(r, 400, "invalid_value", "an RFC 3339 time", name);
        return false;
    }
    return true;
}

static json_t *package_json(PGresult *res, int i)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", PQgetvalue(res, i, 0),
                          "recording", PQgetvalue(res, i, 1), "state", PQgetvalue(res, i, 2),
                          "reason", PQgetvalue(res, i, 3), "requested_by", PQgetvalue(res, i, 4),
                          "requested_at", PQgetvalue(res, i, 5));
    static const char *const optional[] = {"start",      "end",    "ready_at",
                                           "expires_at", "sha256", "error"};
    for (int c = 0; c < 6; c++)
        json_object_set_new(j, optional[c],
                            PQgetisnull(res, i, 6 + c) ? json_null()
                                                       : json_string(PQgetvalue(res, i, 6 + c)));
    json_object_set_new(j, "bytes",
                        PQgetisnull(res, i, 12)
                            ? json_null()
                            : json_integer(strtoll(PQgetvalue(res, i, 12), NULL, 10)));
    char link[80];
    snprintf(link, sizeof(link), "/api/v1/packages/%s", PQgetvalue(res, i, 0));
    json_object_set_new(j, "location", json_string(link));
    return j;
}

#define PACKAGE_COLUMNS                                                                            \
    "p.id::text, p.recording_id::text, p.state, p.reason, u.username, "                            \
    "to_char(p.requested_at AT TIME ZONE 'UTC', " TS_FORMAT "), "                                  \
    "to_char(to_timestamp(p.start_us / 1e6) AT TIME ZONE 'UTC', " TS_FORMAT "), "                  \
    "to_char(to_timestamp(p.end_us / 1e6) AT TIME ZONE 'UTC', " TS_FORMAT "), "                    \
    "to_char(p.ready_at AT TIME ZONE 'UTC', " TS_FORMAT "), "                                      \
    "to_char(p.expires_at AT TIME ZONE 'UTC', " TS_FORMAT "), encode(p.sha256, 'hex'), "           \
    "p.error, p.bytes FROM packages p JOIN users u ON u.id = p.requested_by "

/* Queue a package of @p rec for @p uid (audited as @p actor; @p share, the
 * share link it is made through, or NULL), its range in @p body; answers 202. */
static void package_queue(request *r, const char *uid, const char *actor, const char *share,
                          const char *rec, json_t *body, const char *reason,
                          const char *location_prefix)
{
    int64_t start_us, end_us;
    if (!time_member(r, body, "start", &start_us) || !time_member(r, body, "end", &end_us))
        return;
    if (!reason[0] || !cu_utf8_valid(reason) || cu_utf8_chars(reason) > PACKAGE_REASON_MAX) {
        api_reply_error(r, 400, "invalid_value", "1 to 500 characters of why it is made", "reason");
        return;
    }
    if (start_us && end_us && end_us <= start_us) {
        api_reply_error(r, 400, "invalid_value", "after start", "end");
        return;
    }
    char s[24], e[24], from[CU_TIME_TEXT_LEN], to[CU_TIME_TEXT_LEN];
    snprintf(s, sizeof(s), "%lld", (long long)start_us);
    snprintf(e, sizeof(e), "%lld", (long long)end_us);
    range_text(start_us, end_us, from, to);
    /* Something of the recording in the range, or nothing to package. */
    const char *rp[3] = {rec, s, e};
    PGresult *res = api_query(r->a,
                              "SELECT EXISTS (SELECT 1 FROM segments WHERE recording_id = $1 "
                              "AND ($2::bigint = 0 OR end_us >= $2) "
                              "AND ($3::bigint = 0 OR start_us <= $3))",
                              3, rp);
    if (api_db_unavailable(r, res))
        return;
    bool any = PQntuples(res) == 1 && *PQgetvalue(res, 0, 0) == 't';
    PQclear(res);
    if (!any) {
        api_reply_error(r, 422, "empty_range", "nothing of the recording lies in that range", NULL);
        return;
    }
    if (!api_change_begin(r))
        return;
    const char *ip[7] = {rec, s, e, reason, uid, actor, share};
    res = api_query(r->a,
                    "INSERT INTO packages (id, recording_id, start_us, end_us, reason, "
                    "requested_by, actor, share_id) VALUES (gen_random_uuid(), $1, "
                    "nullif($2::bigint, 0), nullif($3::bigint, 0), $4, $5, $6, $7::bigint) "
                    "RETURNING id::text",
                    7, ip);
    if (!res || PQntuples(res) != 1) {
        if (res)
            PQclear(res);
        api_change_abort(r);
        api_reply_unavailable(r);
        return;
    }
    char id[37], object[4096];
    cu_strlcpy(id, PQgetvalue(res, 0, 0), sizeof(id));
    PQclear(res);
    snprintf(object, sizeof(object), "recording:%s package %s requested from %s to %s: %s", rec, id,
             from, to, reason);
    if (!api_change_commit(r, actor, "recording.package", object))
        return;
    api_packager_wake(api_packager_of(r->a));
    char link[200];
    snprintf(link, sizeof(link), "%s%s", location_prefix, id);
    api_reply_json(r, 202,
                   json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", id, "recording", rec,
                             "state", "queued", "start", from, "end", to, "reason", reason,
                             "location", link));
}

void api_package_create(request *r, const caller *who, const char *rec)
{
    json_t *body = api_read_object(r, package_fields, 3);
    if (!body)
        return;
    const char *reason = api_string_field(r, body, "reason", PACKAGE_REASON_MAX * 4);
    if (reason)
        package_queue(r, who->uid, who->actor, NULL, rec, body, reason, "/api/v1/packages/");
    json_decref(body);
}

static const char *const shared_package_fields[] = {"recording", "start", "end"};

void api_shared_package_create(request *r, const api_share *sh)
{
    json_t *body = api_read_object(r, shared_package_fields, 3);
    if (!body)
        return;
    const char *rec = api_string_field(r, body, "recording", 36);
    if (rec && api_share_holds(r, sh, rec)) {
        char reason[400], prefix[160];
        snprintf(reason, sizeof(reason), "for %s, through share %s", sh->recipient, sh->id);
        snprintf(prefix, sizeof(prefix), "/api/v1/shared/%s/package?id=", sh->token);
        package_queue(r, sh->requester_uid, sh->actor, sh->id, rec, body, reason, prefix);
    }
    json_decref(body);
}

void api_packages_list(request *r, const caller *who, const char *rec)
{
    (void)who;
    const char *p[1] = {rec};
    PGresult *res = api_query(r->a,
                              "SELECT " PACKAGE_COLUMNS "WHERE p.recording_id = $1 "
                              "ORDER BY p.requested_at DESC LIMIT " STR(PACKAGE_LIST_MAX),
                              1, p);
    if (api_db_unavailable(r, res))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(arr, package_json(res, i));
    PQclear(res);
    api_reply_json(r, 200, json_pack("{s:o}", "packages", arr));
}

/* The package's row (one), or NULL after a 404/503. */
static PGresult *package_row(request *r, const char *id)
{
    const char *p[1] = {id};
    PGresult *res = api_query(r->a, "SELECT " PACKAGE_COLUMNS "WHERE p.id = $1::uuid", 1, p);
    if (api_db_unavailable(r, res))
        return NULL;
    if (PQntuples(res) != 1) { /* (authorized a moment ago: cannot happen) */
        PQclear(res);
        api_reply_error(r, 404, "not_found", "no such package", NULL);
        return NULL;
    }
    return res;
}

void api_package_status(request *r, const caller *who, const char *id)
{
    (void)who;
    PGresult *res = package_row(r, id);
    if (!res)
        return;
    api_reply_json(r, 200, package_json(res, 0));
    PQclear(res);
}

/* Whether the file behind @p fd hashes to @p want (hex); it is read from the start. */
static bool file_sha_is(int fd, const char *want)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t *buf = cu_xmalloc(1u << 20), sha[32];
    char hex[65];
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    for (off_t at = 0; ok;) {
        ssize_t n = pread(fd, buf, 1u << 20, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ok = n == 0;
            break;
        }
        EVP_DigestUpdate(md, buf, (size_t)n);
        at += n;
    }
    if (ok) {
        EVP_DigestFinal_ex(md, sha, NULL);
        cu_hex_encode(sha, 32, hex);
        ok = strcmp(hex, want) == 0;
    }
    EVP_MD_CTX_free(md);
    free(buf);
    return ok;
}

/* Send ready package @p id, audited as @p actor's download. */
static void package_send(request *r, const char *actor, const char *id)
{
    PGresult *res = package_row(r, id);
    if (!res)
        return;
    char state[16], rec[37], sha_want[65] = "", object[400], path[PATH_MAX];
    cu_strlcpy(state, PQgetvalue(res, 0, 2), sizeof(state));
    cu_strlcpy(rec, PQgetvalue(res, 0, 1), sizeof(rec));
    cu_strlcpy(sha_want, PQgetvalue(res, 0, 10), sizeof(sha_want));
    long long bytes = PQgetisnull(res, 0, 12) ? 0 : strtoll(PQgetvalue(res, 0, 12), NULL, 10);
    PQclear(res);
    if (strcmp(state, "ready") != 0) {
        bool later = strcmp(state, "queued") == 0 || strcmp(state, "building") == 0;
        if (later)
            r->retry_after_s = 2;
        api_reply_conflict(r,
                           later ? "the package is being made: ask again shortly"
                           : strcmp(state, "failed") == 0
                               ? "the package could not be made (its status says why)"
                               : "the package was removed after its keeping time; ask for "
                                 "a new one",
                           state);
        return;
    }
    api_worker *w = r->a; /* (r is the stream's, and may be gone, once it ends) */
    if (!api_export_slot_take(r))
        return;
    package_path(w->data_dir, id, "", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    /* Checked whole before the first byte leaves (a file changed on disk is
     * never delivered), and again as it is sent. */
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size != bytes || !file_sha_is(fd, sha_want)) {
        CU_LOG(CU_LOG_ERROR, "api", "package %s: %s is missing, not its size or not its SHA-256",
               id, path);
        if (fd >= 0)
            close(fd);
        snprintf(object, sizeof(object),
                 "recording:%s package %s download: file missing or changed", rec, id);
        api_audit(r, actor, "recording.package.download", object, "failed");
        api_reply_error(r, 500, "package_damaged",
                        "the package's file is missing or damaged; ask for a new one", NULL);
        api_export_slot_give(w);
        return;
    }
    char disposition[96];
    snprintf(disposition, sizeof(disposition), "attachment; filename=\"custos-package-%s.zip\"",
             id);
    api_stream *s = api_stream_start(r, 200, "application/zip", disposition);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    uint8_t *buf = cu_xmalloc(1u << 20);
    bool sent = true;
    long long done = 0;
    for (;;) {
        ssize_t n = read(fd, buf, 1u << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sent = n == 0;
            break;
        }
        EVP_DigestUpdate(md, buf, (size_t)n);
        done += n;
        if (!api_stream_write(s, buf, (size_t)n)) {
            sent = false;
            break;
        }
    }
    close(fd);
    free(buf);
    uint8_t sha[32];
    char sha_hex[65];
    EVP_DigestFinal_ex(md, sha, NULL);
    EVP_MD_CTX_free(md);
    cu_hex_encode(sha, 32, sha_hex);
    bool intact = sent && done == bytes && strcmp(sha_hex, sha_want) == 0;
    snprintf(object, sizeof(object), "recording:%s package %s download zip %lld bytes sha256 %s%s",
             rec, id, done, sha_hex,
             intact ? ""
             : sent ? " (not the package made: cut off)"
                    : "");
    if (sent && !intact)
        CU_LOG(CU_LOG_ERROR, "api", "package %s: its file changed since it was made; cut off", id);
    /* Logged before it ends: unlogged, the client gets an incomplete body. */
    bool logged =
        api_audit(r, actor, "recording.package.download", object, intact ? "ok" : "failed");
    api_stream_end(s, intact && logged);
    api_export_slot_give(w);
}

void api_package_download(request *r, const caller *who, const char *id)
{
    package_send(r, who->actor, id);
}

void api_shared_package_get(request *r, const api_share *sh)
{
    char id[40];
    if (!api_query_text(r, "id", id, sizeof(id)))
        return;
    const char *p[2] = {id, sh->id};
    PGresult *res = api_uuid_ok(id) ? api_query(r->a,
                                                "SELECT 1 FROM packages WHERE id = $1::uuid AND "
                                                "share_id = $2::bigint",
                                                2, p)
                                    : NULL;
    if (api_uuid_ok(id) && api_db_unavailable(r, res))
        return;
    bool ours = res && PQntuples(res) == 1;
    if (res)
        PQclear(res);
    if (!ours) { /* (a package not made through this link is not reachable with it) */
        api_audit(r, sh->actor, "recording.package.download", "", "denied");
        api_reply_error(r, 404, "not_found", "no such package made through this link", NULL);
        return;
    }
    package_send(r, sh->actor, id);
}
