/*
 * Accounts and sessions over the API (docs/control.md, "Logins"): login,
 * who am I, logout, a user's own sessions and password, an admin's unlock
 * and disable, and the security alerts logins raise.
 *
 * A login flood must neither lock out every account nor starve the API:
 *  - each source address may fail api.login_failures_per_source times a
 *    minute (finding the server busy counts too); beyond, its logins are
 *    answered 429 before any database or argon2 work (kept in memory:
 *    api_logins);
 *  - at most api.login_concurrency argon2 verifications run at once (64 MiB
 *    each), one more for an account logging in from an address it logged in
 *    from before; beyond, 503 at once rather than a handler thread waiting;
 *  - lockout keys on (account, address): LOCK_FAILURES failures from one
 *    address within LOCK_WINDOW lock that address out of the account; past
 *    ACCOUNT_FAILURES from all addresses the account is locked to addresses
 *    it never logged in from. An admin's unlock ends both.
 * A refused login says the same whatever the reason (unknown user, wrong
 * password, missing or wrong TOTP, a lock), and does the same work.
 */
#include "api_internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_FAILURES    5
#define ACCOUNT_FAILURES 25
#define LOCK_WINDOW      "15 minutes"
#define THROTTLE_SLOTS   4096
#define THROTTLE_US      60000000 /* the window api.login_failures_per_source counts in */
/* The session timeouts as replies state them; session_check() (migration 0008) enforces them. */
#define IDLE_TIMEOUT_S     1800  /* 30 minutes */
#define ABSOLUTE_TIMEOUT_S 43200 /* 12 hours */
#define STR_(x)            #x
#define STR(x)             STR_(x)

#define LOGINS(var, outcome)                                                                       \
    CU_METRIC_DEFINE(var, CU_METRIC_COUNTER, "custos_api_logins_total", "outcome=\"" outcome "\"", \
                     "Login attempts, by outcome.")
LOGINS(logins_ok, "ok")
LOGINS(logins_failed, "failed")
LOGINS(logins_locked, "locked")
LOGINS(logins_throttled, "throttled")
LOGINS(logins_busy, "busy")
CU_METRIC_DEFINE(locks_address, CU_METRIC_COUNTER, "custos_api_login_locks_total",
                 "scope=\"address\"", "Lockouts, of one address from an account or of an account.")
CU_METRIC_DEFINE(locks_account, CU_METRIC_COUNTER, "custos_api_login_locks_total",
                 "scope=\"account\"", "Lockouts, of one address from an account or of an account.")
CU_METRIC_DEFINE(throttles_metric, CU_METRIC_COUNTER, "custos_api_login_throttles_total", "",
                 "Source addresses that reached api.login_failures_per_source.")

/* ------------------------------------------------------ flood defences */

typedef struct {
    char source[INET6_ADDRSTRLEN + 1];
    int64_t since_us; /* the window's start */
    int64_t failures;
} throttle_slot;

struct api_logins {
    pthread_mutex_t mu;
    int64_t max_failures, concurrency;
    int64_t hashing; /* argon2 verifications running */
    throttle_slot slots[THROTTLE_SLOTS];
};

api_logins *api_logins_new(const cu_config *cfg)
{
    api_logins *l = cu_xcalloc(1, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    l->max_failures = cfg->api_login_failures_per_source;
    l->concurrency = cfg->api_login_concurrency;
    return l;
}

void api_logins_free(api_logins *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static throttle_slot *slot_of(api_logins *l, const char *source)
{
    uint32_t h = 2166136261u;
    for (const char *p = source; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return &l->slots[h % THROTTLE_SLOTS];
}

/* Whether @p source has used up its failures for now. */
static bool throttled(api_logins *l, const char *source)
{
    int64_t now = cu_time_us();
    pthread_mutex_lock(&l->mu);
    throttle_slot *s = slot_of(l, source);
    bool over = strcmp(s->source, source) == 0 && now - s->since_us < THROTTLE_US &&
                s->failures >= l->max_failures;
    pthread_mutex_unlock(&l->mu);
    return over;
}

/* Count a failure from @p source; true when it is the one that reaches the limit. */
static bool note_failure(api_logins *l, const char *source)
{
    int64_t now = cu_time_us();
    pthread_mutex_lock(&l->mu);
    throttle_slot *s = slot_of(l, source);
    if (strcmp(s->source, source) != 0 || now - s->since_us >= THROTTLE_US) {
        cu_strlcpy(s->source, source, sizeof(s->source));
        s->since_us = now;
        s->failures = 0;
    }
    bool reached = ++s->failures == l->max_failures;
    pthread_mutex_unlock(&l->mu);
    if (reached)
        cu_metric_inc(&throttles_metric);
    return reached;
}

/* A place for one argon2 verification (one more for a known address); false: none now. */
static bool hash_slot_take(api_logins *l, bool known)
{
    pthread_mutex_lock(&l->mu);
    bool ok = l->hashing < l->concurrency + (known ? 1 : 0);
    if (ok)
        l->hashing++;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

static void hash_slot_give(api_logins *l)
{
    pthread_mutex_lock(&l->mu);
    l->hashing--;
    pthread_mutex_unlock(&l->mu);
}

static void reply_throttled(request *r)
{
    cu_metric_inc(&logins_throttled);
    r->retry_after_s = 60;
    api_reply_error(r, 429, "too_many_attempts",
                    "too many failed logins from this address; try again in a minute", NULL);
}

/* Verify @p password against @p hash (or the dummy, at the same cost) in an
 * argon2 slot; false with *@p busy when there was none. */
static bool verify_in_slot(request *r, const char *hash, const char *password, bool known,
                           bool *busy)
{
    *busy = !hash_slot_take(r->a->logins, known);
    if (*busy)
        return false;
    bool match = ctl_password_verify(hash[0] ? hash : r->a->dummy_hash, password) && hash[0];
    hash_slot_give(r->a->logins);
    return match;
}

/* ------------------------------------------------------------- helpers */

static void alert(request *r, const char *kind, const char *username, const char *detail)
{
    const char *p[4] = {kind, username, r->source, detail};
    if (!api_exec_ok(r->a,
                     "INSERT INTO security_alerts (kind, username, source, detail) "
                     "VALUES ($1, $2, $3, $4)",
                     4, p))
        return;
    CU_LOG(CU_LOG_WARN, "api", "security alert %s: %s from %s: %s", kind, username, r->source,
           detail);
}

static void record_attempt(request *r, const char *user_id, const char *username, bool ok)
{
    const char *p[4] = {user_id, username, r->source, ok ? "t" : "f"};
    api_exec_ok(
        r->a, "INSERT INTO login_attempts (user_id, username, source, ok) VALUES ($1, $2, $3, $4)",
        4, p);
}

/* The alert of an address that reached api.login_failures_per_source (in the open change). */
static void throttle_alert(request *r, const char *username)
{
    char detail[160];
    snprintf(detail, sizeof(detail),
             "%lld failed or busy logins from this address within a minute; its logins are "
             "refused for a minute",
             (long long)r->a->cfg->api_login_failures_per_source);
    alert(r, "login_throttled", username, detail);
}

/* 503 busy: no argon2 slot. It counts against the address like a failure (a
 * flood would otherwise never be throttled), with its alert when it is the
 * one that reaches the limit. */
static void reply_busy(request *r, const char *username)
{
    cu_metric_inc(&logins_busy);
    if (note_failure(r->a->logins, r->source)) {
        if (!api_change_begin(r))
            return; /* 503 sent */
        throttle_alert(r, username);
        if (!api_change_commit_as(r, "anonymous", "session.login", username, "denied"))
            return; /* 503 sent */
    }
    r->retry_after_s = 1;
    api_reply_error(r, 503, "busy", "too many logins are being checked; try again", NULL);
}

static const char refused_text[] = "wrong username or password, or the account is locked";

/*
 * A refused login in its change (already begun): its attempt, the locks and
 * alerts it causes, its entry with @p outcome, then 401. @p user_id is ""
 * for an unknown user.
 */
static void refuse_login(request *r, const char *user_id, const char *username, const char *outcome)
{
    api_worker *a = r->a;
    record_attempt(r, user_id[0] ? user_id : NULL, username, false);
    if (note_failure(a->logins, r->source))
        throttle_alert(r, username);
    if (user_id[0] && strcmp(outcome, "failed") == 0) {
        const char *p[2] = {user_id, r->source};
        PGresult *c =
            api_query(a,
                      "SELECT count(*) FILTER (WHERE l.source = $2), count(*), "
                      "u.new_sources_locked_at IS NOT NULL FROM login_attempts l JOIN users u ON "
                      "u.id = l.user_id WHERE l.user_id = $1 AND NOT l.ok AND l.at > "
                      "greatest(now() - interval '" LOCK_WINDOW "', "
                      "coalesce(u.unlocked_at, '-infinity')) GROUP BY u.new_sources_locked_at",
                      2, p);
        long here = c && PQntuples(c) ? strtol(PQgetvalue(c, 0, 0), NULL, 10) : 0;
        long all = c && PQntuples(c) ? strtol(PQgetvalue(c, 0, 1), NULL, 10) : 0;
        bool account_locked = c && PQntuples(c) && *PQgetvalue(c, 0, 2) == 't';
        PQclear(c);
        if (here == LOCK_FAILURES) {
            char detail[160];
            snprintf(detail, sizeof(detail),
                     "%d failed logins from this address within " LOCK_WINDOW
                     "; the address is locked out of the account",
                     LOCK_FAILURES);
            alert(r, "failure_burst", username, detail);
            cu_metric_inc(&locks_address);
            if (!api_change_audit(r, "system", "user.lock", username, "ok"))
                goto fail;
        }
        if (all >= ACCOUNT_FAILURES && !account_locked &&
            api_exec_ok(a, "UPDATE users SET new_sources_locked_at = now() WHERE id = $1", 1, p)) {
            char detail[160];
            snprintf(detail, sizeof(detail),
                     "%ld failed logins from all addresses within " LOCK_WINDOW
                     "; locked to addresses it never logged in from",
                     all);
            alert(r, "account_locked", username, detail);
            cu_metric_inc(&locks_account);
            if (!api_change_audit(r, "system", "user.lock", username, "ok"))
                goto fail;
        }
    }
    cu_metric_inc(strcmp(outcome, "failed") == 0 ? &logins_failed : &logins_locked);
    if (api_change_commit_as(r, "anonymous", "session.login", username, outcome))
        api_reply_error(r, 401, "invalid_credentials", refused_text, NULL);
    return;
fail:
    api_change_abort(r);
    api_reply_unavailable(r);
}

/* -------------------------------------------------------------- login */

static const char *const login_fields[] = {"username", "password", "totp"};

void api_login(request *r, const caller *who, const char *param)
{
    (void)who, (void)param;
    api_worker *a = r->a;
    if (throttled(a->logins, r->source)) {
        reply_throttled(r);
        return;
    }
    json_t *body = api_read_object(r, login_fields, 3);
    if (!body)
        return;
    const char *name = api_string_field(r, body, "username", 64);
    const char *password = name ? api_string_field(r, body, "password", CTL_PASSWORD_MAX) : NULL;
    if (!password) {
        json_decref(body);
        return;
    }
    char username[65], totp[8] = "";
    cu_strlcpy(username, name, sizeof(username));
    if (json_object_get(body, "totp")) {
        const char *code = api_string_field(r, body, "totp", 6);
        if (code && (strlen(code) != 6 || strspn(code, "0123456789") != 6)) {
            api_reply_error(r, 400, "invalid_value", "a TOTP code is 6 digits", "totp");
            code = NULL;
        }
        if (!code) {
            json_decref(body);
            return;
        }
        cu_strlcpy(totp, code, sizeof(totp));
    }
    const char *p1[2] = {username, r->source};
    PGresult *res =
        api_query(a,
                  "SELECT u.id, u.password_hash, u.role, u.disabled_at IS NOT NULL, "
                  "u.new_sources_locked_at IS NOT NULL, "
                  "EXISTS (SELECT 1 FROM login_attempts k WHERE k.user_id = u.id AND k.source = $2 "
                  "AND k.ok), "
                  "(SELECT count(*) FROM login_attempts f WHERE f.user_id = u.id AND f.source = $2 "
                  "AND NOT f.ok AND f.at > greatest(now() - interval '" LOCK_WINDOW "', "
                  "coalesce(u.unlocked_at, '-infinity'))) "
                  "FROM users u WHERE u.username = $1",
                  2, p1);
    if (!res) {
        json_decref(body);
        api_reply_unavailable(r);
        return;
    }
    bool known = PQntuples(res) == 1;
    char user_id[24] = "", role[16] = "";
    char hash[CTL_PASSWORD_HASH_MAX] = "";
    bool disabled = false, new_sources_locked = false, known_source = false;
    long failures_here = 0;
    if (known) {
        cu_strlcpy(user_id, PQgetvalue(res, 0, 0), sizeof(user_id));
        cu_strlcpy(hash, PQgetvalue(res, 0, 1), sizeof(hash));
        cu_strlcpy(role, PQgetvalue(res, 0, 2), sizeof(role));
        disabled = *PQgetvalue(res, 0, 3) == 't';
        new_sources_locked = *PQgetvalue(res, 0, 4) == 't';
        known_source = *PQgetvalue(res, 0, 5) == 't';
        failures_here = strtol(PQgetvalue(res, 0, 6), NULL, 10);
    }
    PQclear(res);
    /* The same work whether or not the user exists, or is locked: timing tells nothing. */
    bool busy;
    bool match = verify_in_slot(r, hash, password, known_source, &busy);
    OPENSSL_cleanse(hash, sizeof(hash));
    json_decref(body); /* the password with it */
    if (busy) {
        reply_busy(r, username);
        return;
    }
    if (!api_change_begin(r))
        return;
    if (!known || disabled) {
        refuse_login(r, user_id, username, "failed");
        return;
    }
    bool locked_here = failures_here >= LOCK_FAILURES || (new_sources_locked && !known_source);
    if (locked_here) {
        alert(r, "locked_account_attempt", username,
              match ? "correct password refused: the account is locked for this address"
                    : "wrong password for an account locked for this address");
        refuse_login(r, user_id, username, "denied");
        return;
    }
    /* Admins give a TOTP code too; a missing, wrong or replayed one is a wrong password. */
    bool admin = strcmp(role, "admin") == 0;
    if (match && admin) {
        cu_err terr;
        ctl_totp_result t =
            totp[0] ? ctl_totp_check(a->db, a->keys, username, totp, &terr) : CTL_TOTP_NOT_ENROLLED;
        if (t == CTL_TOTP_ERROR) {
            CU_LOG(CU_LOG_ERROR, "api", "TOTP check for %s: %s", username, terr.msg);
            api_change_abort(r);
            api_reply_error(r, 503, "unavailable", "the second factor cannot be checked now", NULL);
            return;
        }
        if (t == CTL_TOTP_NOT_ENROLLED && totp[0])
            CU_LOG(CU_LOG_WARN, "api", "admin %s has no TOTP secret: ingestctl user totp",
                   username);
        match = t == CTL_TOTP_OK;
    }
    if (!match) {
        refuse_login(r, user_id, username, "failed");
        return;
    }
    /* A successful login: its attempt, its session and its entry commit together. */
    if (admin && !known_source) {
        const char *p3[1] = {user_id};
        PGresult *seen =
            api_query(a, "SELECT count(*) FROM login_attempts WHERE user_id = $1 AND ok", 1, p3);
        if (seen && strcmp(PQgetvalue(seen, 0, 0), "0") != 0)
            alert(r, "privileged_new_source", username, "admin login from a new address");
        PQclear(seen);
    }
    record_attempt(r, user_id, username, true);
    char token[48], thex[67];
    if (!api_new_token(token, thex)) {
        api_change_abort(r);
        api_reply_error(r, 503, "unavailable", "no random bytes for a token", NULL);
        return;
    }
    const char *p4[3] = {thex, user_id, r->source};
    PGresult *s = api_query(a,
                            "INSERT INTO sessions (token_hash, user_id, source) VALUES ($1::bytea, "
                            "$2, $3) RETURNING to_char((created_at + interval '" STR(
                                ABSOLUTE_TIMEOUT_S) " seconds') AT TIME ZONE 'UTC', "
                                                    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                            3, p4);
    if (!s) {
        OPENSSL_cleanse(token, sizeof(token));
        api_change_abort(r);
        api_reply_unavailable(r);
        return;
    }
    char actor[80];
    snprintf(actor, sizeof(actor), "user:%s", username);
    char expires[40];
    cu_strlcpy(expires, PQgetvalue(s, 0, 0), sizeof(expires));
    PQclear(s);
    if (!api_change_commit(r, actor, "session.login", username)) {
        OPENSSL_cleanse(token, sizeof(token));
        return;
    }
    cu_metric_inc(&logins_ok);
    json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:{s:s, s:s}}", "token", token, "token_type",
                          "Bearer", "idle_timeout_s", IDLE_TIMEOUT_S, "expires_at", expires, "user",
                          "username", username, "role", role);
    OPENSSL_cleanse(token, sizeof(token));
    api_reply_json(r, 201, j);
}

/* ---------------------------------------------------------- sessions */

void api_whoami(request *r, const caller *who, const char *param)
{
    (void)param;
    char sid[24];
    snprintf(sid, sizeof(sid), "%lld", (long long)who->session_id);
    const char *p[1] = {sid};
    PGresult *res = api_query(
        r->a,
        "SELECT to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
        "to_char((s.created_at + interval '" STR(
            ABSOLUTE_TIMEOUT_S) " seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                                "coalesce(d.name, ''), u.display_name FROM sessions s JOIN users "
                                "u ON u.id = s.user_id LEFT JOIN departments d ON d.id = "
                                "u.department_id WHERE s.id = $1",
        1, p);
    if (!res || PQntuples(res) != 1) {
        PQclear(res);
        api_reply_unavailable(r);
        return;
    }
    json_t *j = json_pack("{s:{s:s, s:s, s:s, s:s}, s:s, s:s, s:i}", "user", "username",
                          who->username, "role", who->role, "department", PQgetvalue(res, 0, 2),
                          "name", PQgetvalue(res, 0, 3), "created_at", PQgetvalue(res, 0, 0),
                          "expires_at", PQgetvalue(res, 0, 1), "idle_timeout_s", IDLE_TIMEOUT_S);
    PQclear(res);
    api_reply_json(r, 200, j);
}

void api_logout(request *r, const caller *who, const char *param)
{
    (void)param;
    char sid[24];
    snprintf(sid, sizeof(sid), "%lld", (long long)who->session_id);
    const char *p[1] = {sid};
    if (!api_change_begin(r))
        return;
    if (!api_exec_ok(r->a, "UPDATE sessions SET revoked_at = now() WHERE id = $1", 1, p)) {
        api_change_abort(r);
        api_reply_unavailable(r);
        return;
    }
    if (api_change_commit(r, who->actor, "session.logout", who->username))
        api_reply_empty(r, 204);
}

/* The caller's sessions still in force, newest first; "current" marks this one. */
void api_sessions_list(request *r, const caller *who, const char *param)
{
    (void)param;
    char sid[24];
    snprintf(sid, sizeof(sid), "%lld", (long long)who->session_id);
    const char *p[2] = {who->uid, sid};
    PGresult *res =
        api_query(r->a,
                  "SELECT public_id, to_char(created_at AT TIME ZONE 'UTC', " TS_FORMAT "), "
                  "to_char(last_seen_at AT TIME ZONE 'UTC', " TS_FORMAT "), source, id = $2 "
                  "FROM sessions WHERE user_id = $1 AND revoked_at IS NULL "
                  "AND now() - last_seen_at <= interval '" STR(
                      IDLE_TIMEOUT_S) " seconds' "
                                      "AND now() - created_at <= interval '" STR(
                                          ABSOLUTE_TIMEOUT_S) " seconds' "
                                                              "ORDER BY created_at DESC LIMIT 100",
                  2, p);
    if (api_db_unavailable(r, res))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s, s:s, s:b}", "id", PQgetvalue(res, i, 0), "created_at",
                           PQgetvalue(res, i, 1), "last_seen_at", PQgetvalue(res, i, 2), "source",
                           PQgetvalue(res, i, 3), "current", *PQgetvalue(res, i, 4) == 't'));
    PQclear(res);
    if (!api_audit_or_503(r, who->actor, "session.list", who->username, "ok")) {
        json_decref(arr);
        return;
    }
    api_reply_json(r, 200, json_pack("{s:o}", "sessions", arr));
}

/* End one of the caller's own sessions (another's, or none: 404). */
void api_session_end(request *r, const caller *who, const char *id)
{
    if (!api_uuid_ok(id)) {
        api_reply_error(r, 404, "not_found", "no such session", NULL);
        return;
    }
    const char *p[2] = {id, who->uid};
    if (!api_change_begin(r))
        return;
    PGresult *res = api_query(r->a,
                              "UPDATE sessions SET revoked_at = now() WHERE public_id = $1::uuid "
                              "AND user_id = $2 AND revoked_at IS NULL RETURNING id",
                              2, p);
    if (!res) {
        api_change_abort(r);
        api_reply_unavailable(r);
        return;
    }
    bool found = PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        api_change_abort(r);
        api_reply_error(r, 404, "not_found", "no such session", NULL);
        return;
    }
    if (api_change_commit(r, who->actor, "session.end", id))
        api_reply_empty(r, 204);
}

/* ----------------------------------------------------------- password */

static const char *const password_fields[] = {"current_password", "new_password"};

/*
 * A user's new password: the current one again first (a stolen session
 * cannot take the account), then every other session of theirs ends.
 */
void api_password_change(request *r, const caller *who, const char *param)
{
    (void)param;
    api_worker *a = r->a;
    if (throttled(a->logins, r->source)) {
        reply_throttled(r);
        return;
    }
    json_t *body = api_read_object(r, password_fields, 2);
    if (!body)
        return;
    const char *current = api_string_field(r, body, "current_password", CTL_PASSWORD_MAX);
    const char *fresh =
        current ? api_string_field(r, body, "new_password", CTL_PASSWORD_MAX) : NULL;
    char hash[CTL_PASSWORD_HASH_MAX] = "", new_hash[CTL_PASSWORD_HASH_MAX] = "";
    PGresult *res = NULL;
    if (!fresh)
        goto out;
    cu_err perr;
    if (ctl_password_check(who->username, fresh, &perr) != CU_OK) {
        api_reply_error(r, 400, "invalid_value", perr.msg, "new_password");
        goto out;
    }
    if (strcmp(fresh, current) == 0) {
        api_reply_error(r, 400, "invalid_value", "the new password is the current one",
                        "new_password");
        goto out;
    }
    const char *p1[1] = {who->uid};
    res = api_query(a, "SELECT coalesce(password_hash, '') FROM users WHERE id = $1", 1, p1);
    if (api_db_unavailable(r, res)) {
        res = NULL;
        goto out;
    }
    cu_strlcpy(hash, PQntuples(res) ? PQgetvalue(res, 0, 0) : "", sizeof(hash));
    PQclear(res);
    res = NULL;
    bool busy;
    bool match = verify_in_slot(r, hash, current, true, &busy);
    if (busy) {
        reply_busy(r, who->username);
        goto out;
    }
    if (!match) {
        if (!api_change_begin(r))
            goto out;
        record_attempt(r, who->uid, who->username, false);
        if (note_failure(a->logins, r->source))
            throttle_alert(r, who->username);
        if (api_change_commit_as(r, who->actor, "user.password", who->username, "denied"))
            api_reply_error(r, 403, "invalid_credentials", "the current password is wrong",
                            "current_password");
        goto out;
    }
    cu_err err;
    if (!hash_slot_take(a->logins, true)) {
        reply_busy(r, who->username);
        goto out;
    }
    cu_rc rc = ctl_password_hash(fresh, new_hash, &err);
    hash_slot_give(a->logins);
    if (rc != CU_OK) {
        CU_LOG(CU_LOG_ERROR, "api", "password for %s: %s", who->username, err.msg);
        api_reply_error(r, 503, "unavailable", "the password cannot be stored now", NULL);
        goto out;
    }
    char sid[24];
    snprintf(sid, sizeof(sid), "%lld", (long long)who->session_id);
    const char *p2[2] = {who->uid, new_hash}, *p3[2] = {who->uid, sid};
    if (!api_change_begin(r))
        goto out;
    if (!api_exec_ok(a, "UPDATE users SET password_hash = $2 WHERE id = $1", 2, p2) ||
        !api_exec_ok(a,
                     "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND id <> $2 "
                     "AND revoked_at IS NULL",
                     2, p3)) {
        api_change_abort(r);
        api_reply_unavailable(r);
        goto out;
    }
    if (api_change_commit(r, who->actor, "user.password", who->username))
        api_reply_empty(r, 204);
out:
    OPENSSL_cleanse(hash, sizeof(hash));
    OPENSSL_cleanse(new_hash, sizeof(new_hash));
    PQclear(res);
    json_decref(body); /* the passwords with it */
}

/* -------------------------------------------------------------- users */

/* UPDATE users ... WHERE username = $1 RETURNING id, with its entry; 404 when no such user. */
static void user_change(request *r, const caller *who, const char *username, const char *sql,
                        const char *also_sql, const char *action, json_t *answer)
{
    const char *p[1] = {username};
    if (!api_change_begin(r)) {
        json_decref(answer);
        return;
    }
    PGresult *res = api_query(r->a, sql, 1, p);
    if (!res || (also_sql && PQntuples(res) == 1 &&
                 !api_exec_ok(r->a, also_sql, 1, (const char *const[]){PQgetvalue(res, 0, 0)}))) {
        PQclear(res);
        json_decref(answer);
        api_change_abort(r);
        api_reply_unavailable(r);
        return;
    }
    bool found = PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        json_decref(answer);
        api_change_abort(r);
        api_reply_error(r, 404, "not_found", "no such user", NULL);
        return;
    }
    if (api_change_commit(r, who->actor, action, username))
        api_reply_json(r, 200, answer);
    else
        json_decref(answer);
}

void api_user_unlock(request *r, const caller *who, const char *username)
{
    user_change(r, who, username,
                "UPDATE users SET locked_at = NULL, new_sources_locked_at = NULL, "
                "unlocked_at = now() WHERE username = $1 RETURNING id",
                NULL, "user.unlock", json_pack("{s:s, s:b}", "username", username, "locked", 0));
}

/* Disable an account: its sessions end at once. */
void api_user_disable(request *r, const caller *who, const char *username)
{
    if (strcmp(username, who->username) == 0) {
        api_audit(r, who->actor, "user.disable", username, "denied");
        api_reply_error(r, 409, "conflict", "an admin does not disable their own account", NULL);
        return;
    }
    user_change(r, who, username,
                "UPDATE users SET disabled_at = coalesce(disabled_at, now()) "
                "WHERE username = $1 RETURNING id",
                "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
                "user.disable", json_pack("{s:s, s:b}", "username", username, "disabled", 1));
}

void api_user_enable(request *r, const caller *who, const char *username)
{
    user_change(r, who, username,
                "UPDATE users SET disabled_at = NULL WHERE username = $1 RETURNING id", NULL,
                "user.enable", json_pack("{s:s, s:b}", "username", username, "disabled", 0));
}
