/*
 * The audit log (docs/control.md): append-only, each entry SHA-256-chained
 * to the previous one. Appends serialize on an advisory lock; verification
 * recomputes the chain from the rows alone.
 */
#include "control.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUDIT_LOCK_KEY 7263840001LL /* pg_advisory_xact_lock: one appender at a time */
#define GENESIS_LABEL  "custos-audit-v1:"
#define FETCH_ROWS     5000

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_field(EVP_MD_CTX *md, const char *s)
{
    size_t n = strlen(s);
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    EVP_DigestUpdate(md, len, 4);
    EVP_DigestUpdate(md, s, n);
}

void ctl_audit_hash(const uint8_t prev[32], int64_t seq, int64_t at_ms, const ctl_audit_entry *e,
                    uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t num[16];
    unsigned int n = 0;
    if (!md)
        abort(); /* no memory for a digest context: nothing sensible to go on with */
    put_be64(num, (uint64_t)seq);
    put_be64(num + 8, (uint64_t)at_ms);
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, prev, 32);
    EVP_DigestUpdate(md, num, 16);
    put_field(md, e->actor);
    put_field(md, e->action);
    put_field(md, e->object);
    put_field(md, e->outcome);
    put_field(md, e->source);
    EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
}

/* The first entry's prev_hash: SHA-256("custos-audit-v1:" ‖ installation id). */
static cu_rc genesis(PGconn *conn, uint8_t out[32], cu_err *err)
{
    PGresult *res = PQexec(conn, "SELECT id::text FROM instance");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        cu_rc rc =
            cu_err_set(err, CU_ERR_DB, "audit: no installation id: %s", PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    char text[128];
    int n = snprintf(text, sizeof(text), GENESIS_LABEL "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    EVP_Digest(text, (size_t)n, out, NULL, EVP_sha256(), NULL);
    return CU_OK;
}

static bool unhex32(const char *hex, uint8_t out[32])
{
    /* bytea in text form: \x followed by 64 hex digits */
    if (strncmp(hex, "\\x", 2) != 0 || strlen(hex) != 66)
        return false;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(hex + 2 + 2 * i, "%2x", &v) != 1)
            return false;
        out[i] = (uint8_t)v;
    }
    return true;
}

/* End a failed or read-only transaction; a failure here leaves nothing to undo. */
static void rollback(PGconn *conn)
{
    PQclear(PQexec(conn, "ROLLBACK"));
}

static bool valid_outcome(const char *o)
{
    return strcmp(o, "ok") == 0 || strcmp(o, "denied") == 0 || strcmp(o, "failed") == 0;
}

cu_rc ctl_audit_append_in_tx(PGconn *conn, const ctl_audit_entry *e, int64_t *seq_out, cu_err *err)
{
    if (!e->actor[0] || !e->action[0] || !valid_outcome(e->outcome))
        return cu_err_set(err, CU_ERR_INVALID, "audit: entry without actor, action or outcome");
    cu_rc rc;
    PGresult *res = PQexec(conn, "SELECT pg_advisory_xact_lock(7263840001)");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "audit: %s", PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    PQclear(res);
    res = PQexec(conn, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "audit: %s", PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    uint8_t prev[32], hash[32];
    int64_t seq = 1;
    if (PQntuples(res) == 1) {
        seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10) + 1;
        if (!unhex32(PQgetvalue(res, 0, 1), prev)) {
            PQclear(res);
            return cu_err_set(err, CU_ERR_DB, "audit: the last entry's hash cannot be read");
        }
        PQclear(res);
    } else {
        PQclear(res);
        rc = genesis(conn, prev, err);
        if (rc)
            return rc;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    ctl_audit_hash(prev, seq, at_ms, e, hash);
    char seq_text[24], at_text[24];
    snprintf(seq_text, sizeof(seq_text), "%lld", (long long)seq);
    snprintf(at_text, sizeof(at_text), "%lld", (long long)at_ms);
    const char *params[9] = {seq_text,          at_text,    e->actor,  e->action,
                             e->object,         e->outcome, e->source, (const char *)prev,
                             (const char *)hash};
    int lengths[9] = {0, 0, 0, 0, 0, 0, 0, 32, 32};
    int formats[9] = {0, 0, 0, 0, 0, 0, 0, 1, 1};
    res = PQexecParams(conn,
                       "INSERT INTO audit_log (seq, at, actor, action, object, outcome, source, "
                       "prev_hash, hash) VALUES ($1, 'epoch'::timestamptz + $2::bigint * "
                       "interval '1 millisecond', $3, $4, $5, $6, $7, $8, $9)",
                       9, NULL, params, lengths, formats, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "audit: %s", PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    PQclear(res);
    if (seq_out)
        *seq_out = seq;
    return CU_OK;
}

cu_rc ctl_audit_append(PGconn *conn, const ctl_audit_entry *e, int64_t *seq_out, cu_err *err)
{
    cu_rc rc = db_exec(conn, "BEGIN", err);
    if (!rc && e->relaxed)
        rc = db_exec(conn, "SET LOCAL synchronous_commit = off", err);
    if (rc) {
        rollback(conn);
        return rc;
    }
    rc = ctl_audit_append_in_tx(conn, e, seq_out, err);
    if (rc) {
        rollback(conn);
        return rc;
    }
    return db_exec(conn, "COMMIT", err);
}

/* Check one row against the chain so far; false (with the reason) if it breaks it. */
static bool check_row(PGresult *res, int i, int64_t *expect_seq, uint8_t prev[32],
                      ctl_audit_report *r)
{
    int64_t seq = strtoll(PQgetvalue(res, i, 0), NULL, 10);
    int64_t at_ms = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    ctl_audit_entry e = {.actor = PQgetvalue(res, i, 2),
                         .action = PQgetvalue(res, i, 3),
                         .object = PQgetvalue(res, i, 4),
                         .outcome = PQgetvalue(res, i, 5),
                         .source = PQgetvalue(res, i, 6)};
    uint8_t stored_prev[32], stored_hash[32], hash[32];
    r->first_bad = seq;
    if (seq != *expect_seq) {
        snprintf(r->why, sizeof(r->why),
                 "entry %lld follows entry %lld: %lld entr%s missing (removed)", (long long)seq,
                 (long long)(*expect_seq - 1), (long long)(seq - *expect_seq),
                 seq - *expect_seq == 1 ? "y is" : "ies are");
        if (seq < *expect_seq)
            snprintf(r->why, sizeof(r->why), "entry %lld is out of order", (long long)seq);
        return false;
    }
    if (!unhex32(PQgetvalue(res, i, 7), stored_prev) ||
        !unhex32(PQgetvalue(res, i, 8), stored_hash)) {
        snprintf(r->why, sizeof(r->why), "entry %lld: its hashes cannot be read", (long long)seq);
        return false;
    }
    if (memcmp(stored_prev, prev, 32) != 0) {
        snprintf(r->why, sizeof(r->why),
                 "entry %lld does not chain to entry %lld (an entry was removed, inserted or "
                 "replaced before it)",
                 (long long)seq, (long long)(seq - 1));
        return false;
    }
    ctl_audit_hash(prev, seq, at_ms, &e, hash);
    if (memcmp(hash, stored_hash, 32) != 0) {
        snprintf(r->why, sizeof(r->why),
                 "entry %lld was altered: its fields do not match its hash (%s %s %s)",
                 (long long)seq, e.actor, e.action, e.outcome);
        return false;
    }
    memcpy(prev, hash, 32);
    (*expect_seq)++;
    r->entries++;
    r->first_bad = 0;
    return true;
}

cu_rc ctl_audit_verify(PGconn *conn, ctl_audit_report *r, cu_err *err)
{
    memset(r, 0, sizeof(*r));
    uint8_t prev[32];
    int64_t expect = 1;
    cu_rc rc = genesis(conn, prev, err);
    if (rc)
        return rc;
    rc = db_exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err);
    if (rc)
        return rc;
    rc = db_exec(conn,
                 "DECLARE audit_rows NO SCROLL CURSOR FOR SELECT seq, "
                 "(extract(epoch FROM at) * 1000)::bigint, actor, action, object, outcome, "
                 "source, prev_hash, hash FROM audit_log ORDER BY seq",
                 err);
    if (rc)
        goto out;
    for (;;) {
        PGresult *res = PQexec(conn, "FETCH 5000 FROM audit_rows");
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = cu_err_set(err, CU_ERR_DB, "audit: %s", PQerrorMessage(conn));
            PQclear(res);
            goto out;
        }
        int n = PQntuples(res);
        for (int i = 0; i < n; i++)
            if (!check_row(res, i, &expect, prev, r)) {
                PQclear(res);
                goto out;
            }
        PQclear(res);
        if (n < FETCH_ROWS)
            break;
    }
out:
    rollback(conn);
    return rc;
}
