/* ingestctl audit verify|list, and the entries ingestctl's own changes leave. */
#include "ingestctl.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ctl_audited(ctl_env *env, const char *action, const char *object, const cu_err *failure)
{
    char actor[96];
    const struct passwd *pw = getpwuid(geteuid());
    snprintf(actor, sizeof(actor), "ingestctl:%s", pw ? pw->pw_name : "?");
    ctl_audit_entry e = {.actor = actor,
                         .action = action,
                         .object = object ? object : "",
                         .outcome = failure ? "failed" : "ok",
                         .source = "local"};
    cu_err err;
    if (ctl_audit_append(db_service_conn(env->db), &e, NULL, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s (the change itself %s)\n", err.msg,
                failure ? "failed" : "was made");
        return 1;
    }
    if (failure) {
        fprintf(stderr, "ingestctl: %s\n", failure->msg);
        return 1;
    }
    return 0;
}

int cmd_audit_verify(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: ingestctl audit verify\n");
        return 2;
    }
    ctl_audit_report r;
    cu_err err;
    if (ctl_audit_verify(db_service_conn(env->db), &r, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    if (r.first_bad) {
        printf("audit log: BROKEN at entry %lld: %s (%lld entries before it check out)\n",
               (long long)r.first_bad, r.why, (long long)r.entries);
        return 1;
    }
    printf("audit log: %lld entries, chain intact\n", (long long)r.entries);
    return 0;
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
