/* ingestctl audit verify|list, and the entries ingestctl's own changes leave. */
#include "ingestctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ctl_change_begin(ctl_env *env)
{
    cu_err err;
    /* A failure here makes the change's statements fail, and ctl_audited say so. */
    if (db_exec(db_service_conn(env->db), "BEGIN", &err) != CU_OK)
        fprintf(stderr, "ingestctl: %s\n", err.msg);
}

/* Anchor what was just appended in a signed checkpoint (docs/integrity.md). */
static void checkpoint(ctl_env *env)
{
    cu_err err;
    keys_ring *keys = ctl_keys(env);
    if (keys && ctl_checkpoint_write(db_service_conn(env->db), keys, ctl_data_dir(env),
                                     env->cfg.audit_checkpoint_command, false, NULL, &err) != CU_OK)
        fprintf(stderr, "ingestctl: warning: no audit checkpoint written: %s\n", err.msg);
}

int ctl_audited(ctl_env *env, const char *action, const char *object, const cu_err *failure)
{
    char actor[96];
    PGconn *conn = db_service_conn(env->db);
    bool in_tx = PQtransactionStatus(conn) != PQTRANS_IDLE;
    snprintf(actor, sizeof(actor), "ingestctl:%s", env->invoker[0] ? env->invoker : "?");
    ctl_audit_entry e = {.actor = actor,
                         .action = action,
                         .object = object ? object : "",
                         .outcome = failure ? "failed" : "ok",
                         .source = "local"};
    cu_err err;
    if (failure && in_tx) { /* nothing of a failed change is kept; its entry is */
        PQclear(PQexec(conn, "ROLLBACK"));
        in_tx = false;
    }
    cu_rc rc = ctl_audit_append(conn, &e, NULL, &err);
    if (!rc && in_tx)
        rc = db_exec(conn, "COMMIT", &err);
    if (rc) {
        if (in_tx)
            PQclear(PQexec(conn, "ROLLBACK"));
        fprintf(stderr, "ingestctl: the audit entry cannot be written: %s (%s)\n", err.msg,
                failure ? "the change itself failed"
                : in_tx ? "so nothing was changed"
                        : "the change itself was made");
        return 1;
    }
    checkpoint(env);
    if (failure) {
        fprintf(stderr, "ingestctl: %s\n", failure->msg);
        return 1;
    }
    return 0;
}

/* "the checkpoint of <time> (line N, entry S)", or "none". */
static const char *checkpoint_name(const ctl_checkpoint *c, char *out, size_t len)
{
    if (!c)
        return "none";
    snprintf(out, len, "the checkpoint of %s (line %zu, entry %lld)", c->at, c->line,
             (long long)c->seq);
    return out;
}

int cmd_audit_verify(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl audit verify\n");
        return 2;
    }
    ctl_audit_report r;
    ctl_checkpoint *cps = NULL;
    size_t n = 0, unreadable = 0;
    uint8_t pub[KEYS_PUBLIC_LEN];
    cu_err err;
    char name[160];
    int status = 1;
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;
    if (keys_public(keys, pub, &err) != CU_OK ||
        ctl_checkpoints_load(ctl_data_dir(env), &cps, &n, &unreadable, &err) != CU_OK ||
        ctl_audit_verify(db_service_conn(env->db), cps, n, pub, &r, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        goto out;
    }
    bool bad = r.first_bad || r.rewritten || r.truncated || r.checkpoints_bad || unreadable;
    if (r.first_bad)
        printf("audit log: BROKEN at entry %lld: %s (%lld entries before it check out)\n",
               (long long)r.first_bad, r.why, (long long)r.entries);
    if (r.rewritten || r.truncated)
        printf("audit log: %s: %s\n", r.truncated && !r.rewritten ? "TRUNCATED" : "REWRITTEN",
               r.checkpoint_why);
    if (r.checkpoints_bad)
        printf("audit checkpoints: %zu whose signature does not verify (the checkpoint file was "
               "altered, or is another installation's)\n",
               r.checkpoints_bad);
    if (unreadable)
        printf("audit checkpoints: %zu lines that are not checkpoints\n", unreadable);
    if (bad) {
        printf("last checkpoint that still holds: %s\n",
               checkpoint_name(r.holds, name, sizeof(name)));
        goto out;
    }
    printf("audit log: %lld entries, chain intact; %zu signed checkpoints, the last that holds: "
           "%s\n",
           (long long)r.entries, r.checkpoints, checkpoint_name(r.holds, name, sizeof(name)));
    status = 0;
out:
    free(cps);
    return status;
}

int cmd_audit_checkpoint(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    ctl_checkpoint c;
    cu_err err;
    char head[65];
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl audit checkpoint\n");
        return 2;
    }
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;
    if (ctl_checkpoint_write(db_service_conn(env->db), keys, ctl_data_dir(env),
                             env->cfg.audit_checkpoint_command, true, &c, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    if (!c.seq) {
        printf("the audit log is empty: nothing to checkpoint\n");
        return 0;
    }
    cu_hex_encode(c.head, 32, head);
    printf("checkpoint of entry %lld (%s) at %s\n", (long long)c.seq, head, c.at);
    return 0;
}

int cmd_keys_public(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    cu_buf pem;
    cu_err err;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl keys public\n");
        return 2;
    }
    keys_ring *keys = ctl_keys(env);
    if (!keys)
        return 1;
    cu_buf_init(&pem, 4096);
    int status = 1;
    if (keys_public_pem(keys, &pem, &err) != CU_OK)
        fprintf(stderr, "ingestctl: %s\n", err.msg);
    else
        status = fputs(pem.data, stdout) < 0;
    cu_buf_free(&pem);
    return status;
}

int cmd_audit_list(ctl_env *env, int argc, char **argv)
{
    long last = 20;
    if (argc == 3 && strcmp(argv[1], "--last") == 0) {
        char *end;
        last = strtol(argv[2], &end, 10);
        if (*end || last < 1 || last > 1000000) {
            fprintf(stderr, "ingestctl: --last takes 1..1000000\n");
            return 2;
        }
    } else if (argc != 1) {
        fprintf(stderr, "usage: ingestctl audit list [--last N]\n");
        return 2;
    }
    char limit[24];
    snprintf(limit, sizeof(limit), "%ld", last);
    const char *params[1] = {limit};
    PGconn *conn = db_service_conn(env->db);
    PGresult *res = PQexecParams(
        conn,
        "SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), actor, "
        "action, object, outcome, source FROM (SELECT * FROM audit_log ORDER BY seq DESC "
        "LIMIT $1::bigint) t ORDER BY seq",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "ingestctl: %s", PQerrorMessage(conn));
        PQclear(res);
        return 1;
    }
    printf("%-8s %-24s %-24s %-20s %-7s %-15s %s\n", "seq", "at", "actor", "action", "outcome",
           "source", "object");
    for (int i = 0; i < PQntuples(res); i++)
        printf("%-8s %-24s %-24s %-20s %-7s %-15s %s\n", PQgetvalue(res, i, 0),
               PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
               PQgetvalue(res, i, 5), PQgetvalue(res, i, 6), PQgetvalue(res, i, 4));
    PQclear(res);
    return 0;
}
