/* Connections and plain statements. */
#include "db.h"

#include <string.h>

/* libpq messages end with a newline and may span lines: keep the first. */
static void first_line(const char *msg, char *out, size_t len)
{
    cu_strlcpy(out, msg ? msg : "", len);
    out[strcspn(out, "\n")] = '\0';
}

/* Server notices (NOTICE, WARNING) go to the log instead of stderr. */
static void log_notice(void *arg, const char *message)
{
    (void)arg;
    char line[400];
    first_line(message, line, sizeof(line));
    CU_LOG(CU_LOG_DEBUG, "db", "server says: %s", line);
}

cu_rc db_connect(const char *dsn, const char *app_name, PGconn **out, cu_err *err)
{
    /* With expand_dbname, libpq parses the DSN in place of "dbname"; keys
     * from the DSN override those listed before it, so an operator's
     * application_name or connect_timeout wins over these defaults. */
    const char *keys[] = {"application_name", "connect_timeout", "dbname", NULL};
    const char *vals[] = {app_name, "10", dsn, NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (!conn)
        return cu_err_set(err, CU_ERR_NOMEM, "cannot allocate a PostgreSQL connection");
    if (PQstatus(conn) != CONNECTION_OK) {
        char line[400];
        first_line(PQerrorMessage(conn), line, sizeof(line));
        PQfinish(conn);
        return cu_err_set(err, CU_ERR_DB, "cannot connect to PostgreSQL: %s", line);
    }
    PQsetNoticeProcessor(conn, log_notice, NULL);
    *out = conn;
    return CU_OK;
}

cu_rc db_array_add(cu_buf *b, const char *item)
{
    cu_rc rc = cu_buf_append(b, b->len ? ",\"" : "{\"", 2);
    for (const char *run = item; !rc && *run;) {
        size_t n = strcspn(run, "\"\\");
        rc = cu_buf_append(b, run, n);
        if (!rc && run[n])
            rc = cu_buf_append(b, run[n] == '"' ? "\\\"" : "\\\\", 2);
        run += n + (run[n] != '\0');
    }
    return rc ? rc : cu_buf_append(b, "\"", 1);
}

cu_rc db_array_end(cu_buf *b)
{
    return b->len ? cu_buf_append(b, "}", 1) : cu_buf_append(b, "{}", 2);
}

cu_rc db_exec(PGconn *conn, const char *sql, cu_err *err)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    cu_rc rc = CU_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char line[400];
        first_line(PQerrorMessage(conn), line, sizeof(line));
        rc = cu_err_set(err, CU_ERR_DB, "%s", line);
    }
    PQclear(res);
    return rc;
}
