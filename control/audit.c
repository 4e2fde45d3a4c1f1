/*
 * The audit log (docs/control.md): append-only, each entry SHA-256-chained
 * to the previous one. Appends are one call of audit_append() (migration
 * 0008), which serializes on an advisory lock; threads of one process that
 * append at once share a call (group commit). Verification recomputes the
 * chain from the rows alone, in C, independently of the SQL that wrote it.
 */
#include "control.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GENESIS_LABEL "custos-audit-v1:"
#define FETCH_ROWS    5000

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
static cu_rc genesis(PGconn *conn, uint8_t out[32], char *instance, size_t instance_len,
                     cu_err *err)
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
    cu_strlcpy(instance, PQgetvalue(res, 0, 0), instance_len);
    PQclear(res);
    EVP_Digest(text, (size_t)n, out, NULL, EVP_sha256(), NULL);
    return CU_OK;
}

/* bytea in text form: \x followed by 64 hex digits. */
static bool unhex32(const char *hex, uint8_t out[32])
{
    return strncmp(hex, "\\x", 2) == 0 && strlen(hex) == 66 && cu_hex_decode(hex + 2, out, 32);
}

/* End a failed or read-only transaction; a failure here leaves nothing to undo. */
static void rollback(PGconn *conn)
{
    PQclear(PQexec(conn, "ROLLBACK"));
}

/* A field PostgreSQL will take: valid UTF-8 (the database's encoding) of
 * at most @p max characters (what the table's CHECK counts). */
static bool field_ok(const char *s, size_t min, size_t max)
{
    if (!s)
        return min == 0;
    size_t n = cu_utf8_chars(s); /* (as the table's CHECKs count) */
    return n >= min && n <= max && cu_utf8_valid(s);
}

/* What audit_log's CHECKs accept, tested before an entry joins a batch so
 * that one bad entry cannot fail the others. */
static bool entry_ok(const ctl_audit_entry *e)
{
    const char *o = e->outcome ? e->outcome : "";
    return field_ok(e->actor, 1, 200) && field_ok(e->action, 1, 100) &&
           field_ok(e->object, 0, 1000) && field_ok(e->source, 0, 100) &&
           (strcmp(o, "ok") == 0 || strcmp(o, "denied") == 0 || strcmp(o, "failed") == 0);
}

bool ctl_audit_entry_valid(const ctl_audit_entry *e)
{
    return entry_ok(e);
}

enum { F_ACTOR, F_ACTION, F_OBJECT, F_OUTCOME, F_SOURCE };

static const char *field_of(const ctl_audit_entry *e, int f)
{
    switch (f) {
    case F_ACTOR: return e->actor;
    case F_ACTION: return e->action;
    case F_OBJECT: return e->object ? e->object : "";
    case F_OUTCOME: return e->outcome;
    default: return e->source ? e->source : "";
    }
}

const char ctl_audit_append_sql[] =
    "SELECT audit_append($1, $2, $3, $4, $5), set_config('synchronous_commit', $6, true)";

cu_rc ctl_audit_batch_build(ctl_audit_batch *b, const ctl_audit_entry *const *e, size_t n,
                            cu_err *err)
{
    bool relaxed = true;
    cu_rc rc = n ? CU_OK : cu_err_set(err, CU_ERR_INVALID, "audit: no entries");
    for (int f = 0; f < CTL_AUDIT_FIELDS; f++)
        cu_buf_init(&b->arrays[f], CTL_AUDIT_BATCH_MAX * 2100);
    for (size_t i = 0; i < n && !rc; i++) {
        if (!entry_ok(e[i]))
            rc = cu_err_set(err, CU_ERR_INVALID,
                            "audit: an entry without actor, action or outcome, too long, or not "
                            "valid UTF-8");
        relaxed &= e[i]->relaxed;
        for (int f = 0; f < CTL_AUDIT_FIELDS && !rc; f++)
            if (db_array_add(&b->arrays[f], field_of(e[i], f)) != CU_OK)
                rc = cu_err_set(err, CU_ERR_INVALID, "audit: entries too long");
    }
    for (int f = 0; f < CTL_AUDIT_FIELDS && !rc; f++) {
        if (db_array_end(&b->arrays[f]) != CU_OK)
            rc = cu_err_set(err, CU_ERR_INVALID, "audit: entries too long");
        b->params[f] = b->arrays[f].data;
    }
    /* set_config(..., true) lasts to the end of the statement's own
     * transaction: it decides how this commit waits, and nothing after. */
    b->params[CTL_AUDIT_FIELDS] = relaxed ? "off" : "on";
    if (rc)
        ctl_audit_batch_free(b);
    return rc;
}

void ctl_audit_batch_free(ctl_audit_batch *b)
{
    for (int f = 0; f < CTL_AUDIT_FIELDS; f++)
        cu_buf_free(&b->arrays[f]);
}

/*
 * One call of audit_append() (migration 0008) for @p e[0..n): one statement
 * and one commit, which waits for the WAL flush unless every entry is relaxed.
 */
static cu_rc append_entries(PGconn *conn, const ctl_audit_entry *const *e, size_t n,
                            int64_t *seq_out, cu_err *err)
{
    ctl_audit_batch b;
    cu_rc rc = ctl_audit_batch_build(&b, e, n, err);
    if (rc)
        return rc;
    PGresult *res = PQexecParams(conn, ctl_audit_append_sql, CTL_AUDIT_FIELDS + 1, NULL, b.params,
                                 NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        rc = cu_err_set(err, CU_ERR_DB, "audit: %s", PQerrorMessage(conn));
    else if (seq_out)
        *seq_out = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    ctl_audit_batch_free(&b);
    return rc;
}

cu_rc ctl_audit_append(PGconn *conn, const ctl_audit_entry *e, int64_t *seq_out, cu_err *err)
{
    return append_entries(conn, &e, 1, seq_out, err);
}

/* ------------------------------------------------------------ group commit */

/* One thread's entry, on its stack until it is written. */
typedef struct audit_waiter {
    const ctl_audit_entry *e;
    struct audit_waiter *next;
    bool done;
    cu_rc rc;
    char why[sizeof(((cu_err *)0)->msg)];
} audit_waiter;

struct ctl_audit_group {
    pthread_mutex_t mu;
    pthread_cond_t written;
    audit_waiter *head, **tail; /* queued, not taken by a writer yet */
    bool writing;               /* a thread is writing a batch */
};

ctl_audit_group *ctl_audit_group_new(void)
{
    ctl_audit_group *g = cu_xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->written, NULL);
    g->tail = &g->head;
    return g;
}

void ctl_audit_group_free(ctl_audit_group *g)
{
    if (!g)
        return;
    pthread_cond_destroy(&g->written);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* Take up to CTL_AUDIT_BATCH_MAX queued entries (under the lock). */
static size_t take_batch(ctl_audit_group *g, audit_waiter **batch)
{
    size_t n = 0;
    while (g->head && n < CTL_AUDIT_BATCH_MAX) {
        batch[n++] = g->head;
        g->head = g->head->next;
    }
    if (!g->head)
        g->tail = &g->head;
    return n;
}

cu_rc ctl_audit_group_append(ctl_audit_group *g, PGconn *conn, const ctl_audit_entry *e,
                             cu_err *err)
{
    audit_waiter me = {.e = e};
    if (!entry_ok(e))
        return cu_err_set(err, CU_ERR_INVALID,
                          "audit: an entry without actor, action or outcome, too long, or not "
                          "valid UTF-8");
    pthread_mutex_lock(&g->mu);
    *g->tail = &me;
    g->tail = &me.next;
    while (!me.done) {
        if (g->writing) {
            pthread_cond_wait(&g->written, &g->mu);
            continue;
        }
        /* Nobody is writing: this thread writes what is queued, its own
         * entry included unless the queue is longer than a batch. */
        audit_waiter *batch[CTL_AUDIT_BATCH_MAX];
        const ctl_audit_entry *entries[CTL_AUDIT_BATCH_MAX];
        size_t n = take_batch(g, batch);
        g->writing = true;
        pthread_mutex_unlock(&g->mu);
        for (size_t i = 0; i < n; i++)
            entries[i] = batch[i]->e;
        cu_err batch_err;
        cu_rc rc = append_entries(conn, entries, n, NULL, &batch_err);
        cu_rc each[CTL_AUDIT_BATCH_MAX];
        for (size_t i = 0; i < n; i++) {
            each[i] = rc;
            if (rc)
                cu_strlcpy(batch[i]->why, batch_err.msg, sizeof(batch[i]->why));
        }
        /* A batch that failed as a whole is tried entry by entry, so that
         * whatever made it fail costs only the entry it belongs to. */
        for (size_t i = 0; rc && n > 1 && i < n && PQstatus(conn) == CONNECTION_OK; i++) {
            cu_err one;
            each[i] = append_entries(conn, &entries[i], 1, NULL, &one);
            if (each[i])
                cu_strlcpy(batch[i]->why, one.msg, sizeof(batch[i]->why));
        }
        pthread_mutex_lock(&g->mu);
        for (size_t i = 0; i < n; i++) {
            batch[i]->rc = each[i];
            batch[i]->done = true;
        }
        g->writing = false;
        pthread_cond_broadcast(&g->written);
    }
    pthread_mutex_unlock(&g->mu);
    return me.rc ? cu_err_set(err, me.rc, "%s", me.why) : CU_OK;
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

/* Checkpoints by seq, then file line: the order the walk meets them. */
static int cmp_checkpoint(const void *a, const void *b)
{
    const ctl_checkpoint *x = *(const ctl_checkpoint *const *)a;
    const ctl_checkpoint *y = *(const ctl_checkpoint *const *)b;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

/* The walk's view of the checkpoints: the usable ones, sorted. */
typedef struct {
    const ctl_checkpoint **list;
    size_t n, next; /* next: the first not yet met */
} checkpoint_walk;

static void checkpoint_walk_init(checkpoint_walk *w, const ctl_checkpoint *cps, size_t n,
                                 const uint8_t *pub, const char *instance, ctl_audit_report *r)
{
    w->list = cu_xcalloc(n ? n : 1, sizeof(*w->list));
    w->n = w->next = 0;
    for (size_t i = 0; i < n; i++) {
        if (pub && strcmp(cps[i].instance, instance) == 0 &&
            ctl_checkpoint_signature_ok(&cps[i], pub))
            w->list[w->n++] = &cps[i];
        else
            r->checkpoints_bad++;
    }
    r->checkpoints = w->n;
    if (w->n)
        qsort(w->list, w->n, sizeof(*w->list), cmp_checkpoint);
}

/* Entry @p seq, hashing to @p hash, checked out: hold the checkpoints at it against it. */
static void checkpoint_walk_entry(checkpoint_walk *w, int64_t seq, const uint8_t hash[32],
                                  ctl_audit_report *r)
{
    while (w->next < w->n && w->list[w->next]->seq <= seq) {
        const ctl_checkpoint *c = w->list[w->next++];
        if (c->seq < seq)
            continue; /* met only past a gap: the chain check names that */
        if (memcmp(c->head, hash, 32) == 0) {
            if (!r->fails)
                r->holds = c;
            continue;
        }
        if (!r->fails) {
            r->fails = c;
            r->rewritten = true;
            snprintf(r->checkpoint_why, sizeof(r->checkpoint_why),
                     "entry %lld differs from the checkpoint of %s (line %zu): the log was "
                     "rewritten %s%lld and the chain recomputed",
                     (long long)seq, c->at, c->line, r->holds ? "after entry " : "up to entry ",
                     (long long)(r->holds ? r->holds->seq : seq));
        }
    }
}

/* After the last entry: checkpoints beyond it cover entries that are gone. */
static void checkpoint_walk_end(checkpoint_walk *w, ctl_audit_report *r)
{
    if (r->first_bad || w->next >= w->n)
        return;
    const ctl_checkpoint *c = w->list[w->n - 1];
    if (c->seq <= r->last_seq)
        return;
    r->truncated = true;
    if (!r->fails) {
        r->fails = w->list[w->next];
        snprintf(r->checkpoint_why, sizeof(r->checkpoint_why),
                 "the log ends at entry %lld, but the checkpoint of %s (line %zu) covers entry "
                 "%lld: entries %lld to %lld were removed",
                 (long long)r->last_seq, c->at, c->line, (long long)c->seq,
                 (long long)r->last_seq + 1, (long long)c->seq);
    }
}

cu_rc ctl_audit_verify(PGconn *conn, const ctl_checkpoint *cps, size_t ncps,
                       const uint8_t pub[KEYS_PUBLIC_LEN], ctl_audit_report *r, cu_err *err)
{
    memset(r, 0, sizeof(*r));
    uint8_t prev[32];
    int64_t expect = 1;
    char instance[64] = "";
    checkpoint_walk walk = {0};
    cu_rc rc = genesis(conn, prev, instance, sizeof(instance), err);
    if (rc)
        return rc;
    checkpoint_walk_init(&walk, cps, ncps, pub, instance, r);
    rc = db_exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err);
    if (rc)
        goto out;
    rc = db_exec(conn,
                 "DECLARE audit_rows NO SCROLL CURSOR FOR SELECT seq, "
                 "(extract(epoch FROM at) * 1000)::bigint, actor, action, object, outcome, "
                 "source, prev_hash, hash FROM audit_log ORDER BY seq",
                 err);
    if (rc)
        goto done;
    for (;;) {
        PGresult *res = PQexec(conn, "FETCH 5000 FROM audit_rows");
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = cu_err_set(err, CU_ERR_DB, "audit: %s", PQerrorMessage(conn));
            PQclear(res);
            goto done;
        }
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            if (!check_row(res, i, &expect, prev, r)) {
                PQclear(res);
                goto done;
            }
            r->last_seq = expect - 1;
            checkpoint_walk_entry(&walk, r->last_seq, prev, r);
        }
        PQclear(res);
        if (n < FETCH_ROWS)
            break;
    }
    checkpoint_walk_end(&walk, r);
done:
    rollback(conn);
out:
    free(walk.list);
    return rc;
}
