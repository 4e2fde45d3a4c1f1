/*
 * Rule 4 against an independent model (run under with-pg): a random world of
 * departments (a tree), users (roles, departments, disabled, locked), grants
 * (windows, revoked) and recordings is written to a real PostgreSQL with the
 * real schema; then 10,000 random (user, recording, time) cases ask the
 * database's may_read_recording() and compare with the model below, written
 * from the rule's text (docs/control.md), not from the SQL. Times are drawn
 * to hit windows' exact ends often. Then visible_recordings() (the list) is
 * compared with the model for 300 random (user, time) pairs, and so are the
 * API's pages for 200 (recordings_page, walked 7 at a time: every recording
 * the model allows exactly once, newest first, ties by id); grant 0 covers
 * more than 64 officers, so that the page's other plan is walked too. Zero
 * leaks and zero wrong denials are required. CUSTOS_SEED=N replays a world.
 */
#include "db/db.h"
#include "tests/harness/pgtest.h"
#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NDEPT   12
#define NUSER   120
#define WIDE    70
#define NGRANT  60
#define NREC    120
#define CASES   10000
#define LISTS   300
#define PAGES   200
#define PER     7
#define STR_(x) #x
#define STR(x)  STR_(x)
#define T0      1800000000LL /* seconds: the world's times are offsets from here */
#define SPAN    7200         /* windows fall within two hours after T0 */

typedef struct {
    int parent; /* -1 at the top */
} dept;
typedef struct {
    int64_t id;
    const char *role;
    int dept; /* -1: none */
    bool disabled, locked;
} user;
typedef struct {
    int user, dept;
    int64_t from, until; /* seconds after T0; until exclusive */
    bool revoked;
} grant;
typedef struct {
    char id[37];
    int officer; /* -1: none */
} recording;

static dept depts[NDEPT];
static int64_t dept_ids[NDEPT];
static user users[NUSER];
static grant grants[NGRANT];
static recording recs[NREC];
static uint64_t rng;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static int pick(int n)
{
    return (int)(next() % (uint64_t)n);
}

/* Is department @p d at or below department @p top? */
static bool under(int d, int top)
{
    for (int steps = 0; d >= 0 && steps <= NDEPT; steps++, d = depts[d].parent)
        if (d == top)
            return true;
    return false;
}

/* The rule, from its text. @p t in seconds after T0 (may be fractional: microseconds). */
static bool model_may_read(int u, int r, double t)
{
    const user *x = &users[u];
    if (x->disabled || x->locked)
        return false;
    if (strcmp(x->role, "admin") == 0)
        return true;
    int officer = recs[r].officer;
    if (officer == u)
        return true;
    if (officer < 0 || users[officer].dept < 0)
        return false;
    for (int g = 0; g < NGRANT; g++) {
        const grant *y = &grants[g];
        if (y->user == u && !y->revoked && y->from <= t && t < y->until &&
            under(users[officer].dept, y->dept))
            return true;
    }
    return false;
}

static PGresult *exec_ok(PGconn *c, const char *sql, int n, const char *const *p)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fprintf(stderr, "SQL failed: %s\n%s\n", PQerrorMessage(c), sql);
        exit(1);
    }
    return res;
}

static void build_world(PGconn *c)
{
    char a[32], b[32], d[32], e[32], f[32];
    for (int i = 0; i < NDEPT; i++) {
        depts[i].parent = i && pick(3) ? pick(i) : -1;
        snprintf(a, sizeof(a), "dept-%d", i);
        snprintf(b, sizeof(b), "%lld",
                 depts[i].parent >= 0 ? (long long)dept_ids[depts[i].parent] : 0LL);
        const char *p[2] = {a, depts[i].parent >= 0 ? b : NULL};
        PGresult *res = exec_ok(
            c, "INSERT INTO departments (name, parent_id) VALUES ($1, $2) RETURNING id", 2, p);
        dept_ids[i] = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    static const char *const roles[] = {"officer",  "officer",  "officer",
                                        "reviewer", "reviewer", "admin"};
    for (int i = 0; i < NUSER; i++) {
        user *x = &users[i];
        x->role = roles[pick(6)];
        /* the first WIDE users in department 0, so that a grant there (grant 0)
         * holds more than 64 officers: the page's other plan */
        x->dept = i < WIDE ? 0 : pick(8) ? pick(NDEPT) : -1;
        x->disabled = pick(20) == 0;
        x->locked = pick(20) == 0;
        snprintf(a, sizeof(a), "user-%d", i);
        snprintf(b, sizeof(b), "%lld", x->dept >= 0 ? (long long)dept_ids[x->dept] : 0LL);
        const char *p[5] = {a, x->role, x->dept >= 0 ? b : NULL, x->disabled ? "t" : "f",
                            x->locked ? "t" : "f"};
        PGresult *res = exec_ok(c,
                                "INSERT INTO users (username, role, department_id, disabled_at, "
                                "locked_at) VALUES ($1, $2, $3, CASE WHEN $4::bool THEN now() "
                                "END, CASE WHEN $5::bool THEN now() END) RETURNING id",
                                5, p);
        x->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    for (int i = 0; i < NGRANT; i++) {
        grant *g = &grants[i];
        g->user = pick(NUSER);
        g->dept = pick(NDEPT);
        g->from = pick(SPAN);
        g->until = g->from + 1 + pick(SPAN / 2);
        g->revoked = pick(10) == 0;
        if (i == 0) { /* an active reviewer's, over department 0 and the whole span */
            while (strcmp(users[g->user].role, "reviewer") != 0 || users[g->user].disabled ||
                   users[g->user].locked)
                g->user = pick(NUSER);
            g->dept = 0;
            g->from = 0;
            g->until = 2 * SPAN;
            g->revoked = false;
        }
        snprintf(a, sizeof(a), "%lld", (long long)users[g->user].id);
        snprintf(b, sizeof(b), "%lld", (long long)dept_ids[g->dept]);
        snprintf(d, sizeof(d), "%lld", (long long)(T0 + g->from));
        snprintf(e, sizeof(e), "%lld", (long long)(T0 + g->until));
        snprintf(f, sizeof(f), "%s", g->revoked ? "t" : "f");
        const char *p[6] = {a, pick(4) ? "reviewer" : "admin", b, d, e, f};
        PQclear(exec_ok(c,
                        "INSERT INTO grants (user_id, permission, department_id, valid_from, "
                        "valid_until, revoked_at) VALUES ($1, $2, $3, to_timestamp($4), "
                        "to_timestamp($5), CASE WHEN $6::bool THEN now() END)",
                        6, p));
    }
    for (int i = 0; i < NREC; i++) {
        recs[i].officer = pick(20) ? pick(NUSER) : -1;
        snprintf(a, sizeof(a), "%lld",
                 recs[i].officer >= 0 ? (long long)users[recs[i].officer].id : 0LL);
        char minutes[16];
        snprintf(minutes, sizeof(minutes), "%d", pick(10)); /* many ties: ordered by id */
        const char *p[2] = {recs[i].officer >= 0 ? a : NULL, minutes};
        PGresult *res = exec_ok(c,
                                "INSERT INTO recordings (id, key_id, opened_at, officer_id) "
                                "VALUES (gen_random_uuid(), decode(md5(random()::text), 'hex'), "
                                "now() - $2::integer * interval '1 minute', $1) RETURNING id::text",
                                2, p);
        cu_strlcpy(recs[i].id, PQgetvalue(res, 0, 0), sizeof(recs[i].id));
        PQclear(res);
    }
}

/* A time to ask at: anywhere, or exactly at (or a microsecond before) a window's edge. */
static double draw_time(void)
{
    const grant *g = &grants[pick(NGRANT)];
    switch (pick(5)) {
    case 0: return (double)g->from;
    case 1: return (double)g->until;
    case 2: return (double)g->until - 1e-6;
    case 3: return (double)g->from - 1e-6;
    default: return (double)pick(SPAN * 2) - SPAN / 4;
    }
}

/* @p t as microseconds since the epoch, exactly (t is whole seconds or a microsecond off). */
static void time_text(double t, char out[48])
{
    long long whole = (long long)(t >= 0 ? t + 0.5 : t - 0.5);
    long long us = (long long)T0 * 1000000 + whole * 1000000;
    if (t < (double)whole - 1e-9)
        us -= 1;
    snprintf(out, 48, "%lld", us);
}

int main(void)
{
    const char *seed_env = getenv("CUSTOS_SEED");
    rng = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    if (!rng)
        rng = 88172645463325252ULL;
    printf("test_access_model: seed %llu (CUSTOS_SEED=%llu replays it)\n", (unsigned long long)rng,
           (unsigned long long)rng);
    char *owner_dsn = NULL;
    char *dsn = pgtest_fresh_database("access_model", &owner_dsn);
    PGconn *c = NULL, *owner = NULL;
    cu_err err;
    if (db_connect(owner_dsn, "test_access_model", &owner, &err) != CU_OK ||
        db_connect(dsn, "test_access_model", &c, &err) != CU_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int applied;
    CHECK_EQ_INT(
        db_migrate(owner, db_schema_migrations, db_schema_migrations_count, &applied, &err), CU_OK);
    PQfinish(owner);
    free(owner_dsn);
    build_world(c);

    int leaks = 0, wrong_denials = 0, granted = 0;
    PQclear(exec_ok(c,
                    "PREPARE may(bigint, uuid, bigint) AS SELECT may_read_recording($1, $2, "
                    "'epoch'::timestamptz + $3 * interval '1 microsecond')",
                    0, NULL));
    for (int i = 0; i < CASES; i++) {
        int u = pick(NUSER), r = pick(NREC);
        double t = draw_time();
        char uid[24], ts[48];
        snprintf(uid, sizeof(uid), "%lld", (long long)users[u].id);
        time_text(t, ts);
        const char *p[3] = {uid, recs[r].id, ts};
        PGresult *res = PQexecPrepared(c, "may", 3, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "may_read_recording failed: %s\n", PQerrorMessage(c));
            return 1;
        }
        bool db = *PQgetvalue(res, 0, 0) == 't', model = model_may_read(u, r, t);
        PQclear(res);
        granted += model;
        if (db && !model && leaks++ < 5)
            fprintf(stderr, "LEAK: user-%d (%s) reads recording %d at %s\n", u, users[u].role, r,
                    ts);
        if (!db && model && wrong_denials++ < 5)
            fprintf(stderr, "WRONG DENIAL: user-%d (%s) recording %d at %s\n", u, users[u].role, r,
                    ts);
    }
    printf("test_access_model: %d cases, %d allowed by the model, %d leaks, %d wrong denials\n",
           CASES, granted, leaks, wrong_denials);
    CHECK_EQ_INT(leaks, 0);
    CHECK_EQ_INT(wrong_denials, 0);
    CHECK(granted > CASES / 100 && granted < CASES - CASES / 100); /* both answers exercised */

    /* The list is the same rule. */
    int list_mismatch = 0;
    for (int i = 0; i < LISTS; i++) {
        int u = pick(NUSER);
        double t = draw_time();
        char uid[24], ts[48];
        snprintf(uid, sizeof(uid), "%lld", (long long)users[u].id);
        time_text(t, ts);
        const char *p[2] = {uid, ts};
        PGresult *res = exec_ok(c,
                                "SELECT id::text FROM visible_recordings($1, 'epoch'::timestamptz "
                                "+ $2::bigint * interval '1 microsecond')",
                                2, p);
        int n = PQntuples(res), expected = 0;
        for (int r = 0; r < NREC; r++) {
            bool model = model_may_read(u, r, t), listed = false;
            for (int k = 0; k < n && !listed; k++)
                listed = strcmp(PQgetvalue(res, k, 0), recs[r].id) == 0;
            expected += model;
            if (model != listed)
                list_mismatch++;
        }
        if (n != expected)
            list_mismatch++;
        PQclear(res);
    }
    CHECK_EQ_INT(list_mismatch, 0);

    /* The API's pages are the same rule, each allowed recording once, in order. */
    int page_mismatch = 0, paged = 0, big_scopes = 0;
    for (int i = 0; i < PAGES; i++) {
        /* half of them a grant's holder inside its window, where scopes are wide */
        const grant *g = &grants[i % 10 == 0 ? 0 : pick(NGRANT)];
        int u = i % 2 ? pick(NUSER) : g->user;
        double t = i % 2 ? draw_time() : (double)g->from; /* its first microsecond */
        char uid[24], ts[48], offset[24], last[80] = "";
        snprintf(uid, sizeof(uid), "%lld", (long long)users[u].id);
        time_text(t, ts);
        bool seen[NREC] = {false};
        const char *sp[2] = {uid, ts};
        PGresult *scope = exec_ok(c,
                                  "SELECT coalesce(max(cardinality(officers)), 0) FROM "
                                  "reader_scope($1, 'epoch'::timestamptz + $2::bigint * "
                                  "interval '1 microsecond')",
                                  2, sp);
        big_scopes += strtol(PQgetvalue(scope, 0, 0), NULL, 10) > 64;
        PQclear(scope);
        for (int off = 0;; off += PER) {
            snprintf(offset, sizeof(offset), "%d", off);
            const char *p[3] = {uid, ts, offset};
            PGresult *res = exec_ok(c,
                                    "SELECT to_char(opened_at, 'YYYYMMDDHH24MISSUS') || id::text, "
                                    "id::text FROM recordings_page($1, 'epoch'::timestamptz + "
                                    "$2::bigint * interval '1 microsecond', $3, " STR(PER) ")",
                                    3, p);
            int n = PQntuples(res);
            for (int k = 0; k < n; k++) {
                const char *key = PQgetvalue(res, k, 0), *id = PQgetvalue(res, k, 1);
                int r = 0;
                while (r < NREC && strcmp(recs[r].id, id) != 0)
                    r++;
                if (r == NREC || seen[r] || (last[0] && strcmp(key, last) >= 0))
                    page_mismatch++; /* unknown, twice, or out of order */
                if (r < NREC)
                    seen[r] = true;
                cu_strlcpy(last, key, sizeof(last));
            }
            PQclear(res);
            if (n < PER)
                break;
        }
        for (int r = 0; r < NREC; r++) {
            page_mismatch += seen[r] != model_may_read(u, r, t);
            paged += seen[r];
        }
    }
    CHECK_EQ_INT(page_mismatch, 0);
    CHECK(paged > 0);
    fprintf(stderr, "pages: %d cases, %d with more than 64 officers in scope\n", PAGES, big_scopes);
    CHECK(big_scopes > 0); /* both of the page's plans were walked */
    PQfinish(c);
    free(dsn);
    return test_finish("test_access_model");
}
