/*
 * Versioned schema migrations. Each migration and its schema_version row
 * commit together, so a failed one leaves the schema exactly as it was.
 */
#include "db.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* Advisory lock key shared by every Custos process migrating a database. */
#define MIGRATE_LOCK_KEY "7307195200"

static void sql_sha256_hex(const char *sql, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(sql, strlen(sql), md, &len, EVP_sha256(), NULL);
    cu_hex_encode(md, 32, out);
}

static cu_rc ensure_version_table(PGconn *conn, cu_err *err)
{
    return db_exec(conn,
                   "CREATE TABLE IF NOT EXISTS schema_version ("
                   " version    integer PRIMARY KEY,"
                   " name       text NOT NULL,"
                   " sha256     text NOT NULL,"
                   " applied_at timestamptz NOT NULL DEFAULT now())",
                   err);
}

int db_schema_version(PGconn *conn, cu_err *err)
{
    PGresult *res = PQexec(conn, "SELECT to_regclass('schema_version') IS NOT NULL");
    int version = -1;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cu_err_set(err, CU_ERR_DB, "%s", PQerrorMessage(conn));
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        version = 0;
        goto out;
    }
    PQclear(res);
    res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cu_err_set(err, CU_ERR_DB, "%s", PQerrorMessage(conn));
        goto out;
    }
    version = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
out:
    PQclear(res);
    return version;
}

/* Check what is applied against @p list; returns how many are applied. */
static cu_rc check_applied(PGconn *conn, const db_migration *list, size_t n, size_t *applied,
                           cu_err *err)
{
    cu_rc rc = CU_OK;
    PGresult *res =
        PQexec(conn, "SELECT version, name, sha256 FROM schema_version ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "reading schema_version: %s", PQerrorMessage(conn));
        goto out;
    }
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        int version = (int)strtol(PQgetvalue(res, i, 0), NULL, 10);
        const char *name = PQgetvalue(res, i, 1);
        if ((size_t)i >= n || version > list[n - 1].version) {
            rc = cu_err_set(err, CU_ERR_VERSION,
                            "the database schema is at version %d (%s), newer than this build "
                            "of Custos knows (%d); run a newer Custos",
                            version, name, n ? list[n - 1].version : 0);
            goto out;
        }
        if (version != list[i].version) {
            rc = cu_err_set(err, CU_ERR_VERSION,
                            "the database has schema version %d where this build expects %d "
                            "(%s): the schema was not made by this line of Custos",
                            version, list[i].version, list[i].name);
            goto out;
        }
        char sha[65];
        sql_sha256_hex(list[i].sql, sha);
        if (strcmp(sha, PQgetvalue(res, i, 2)) != 0) {
            rc = cu_err_set(err, CU_ERR_VERSION,
                            "migration %s was changed after it was applied to this database "
                            "(SHA-256 differs)",
                            list[i].name);
            goto out;
        }
    }
    *applied = (size_t)rows;
out:
    PQclear(res);
    return rc;
}

static cu_rc apply_one(PGconn *conn, const db_migration *m, cu_err *err)
{
    cu_err inner;
    cu_rc rc = db_exec(conn, "BEGIN", &inner);
    if (rc)
        return cu_err_set(err, rc, "migration %s: %s", m->name, inner.msg);
    rc = db_exec(conn, m->sql, &inner);
    if (rc) {
        cu_err_set(err, rc, "migration %s failed: %s", m->name, inner.msg);
        goto rollback;
    }
    char sha[65], version[16];
    sql_sha256_hex(m->sql, sha);
    snprintf(version, sizeof(version), "%d", m->version);
    const char *params[] = {version, m->name, sha};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO schema_version (version, name, sha256) "
                                 "VALUES ($1, $2, $3)",
                                 3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = cu_err_set(err, CU_ERR_DB, "migration %s: recording it failed: %s", m->name,
                        PQerrorMessage(conn));
        PQclear(res);
        goto rollback;
    }
    PQclear(res);
    rc = db_exec(conn, "COMMIT", &inner);
    if (rc)
        return cu_err_set(err, rc, "migration %s: commit failed: %s", m->name, inner.msg);
    CU_LOG(CU_LOG_INFO, "db", "applied schema migration %s", m->name);
    return CU_OK;
rollback:
    if (db_exec(conn, "ROLLBACK", &inner) != CU_OK)
        CU_LOG(CU_LOG_WARN, "db", "rollback of %s failed: %s", m->name, inner.msg);
    return rc;
}

cu_rc db_migrate(PGconn *conn, const db_migration *list, size_t n, int *applied_now, cu_err *err)
{
    cu_err inner;
    size_t applied = 0;
    int count = 0;
    cu_rc rc = db_exec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", &inner);
    if (rc)
        return cu_err_set(err, rc, "cannot take the migration lock: %s", inner.msg);
    rc = ensure_version_table(conn, &inner);
    if (rc) {
        cu_err_set(err, rc, "cannot create schema_version: %s", inner.msg);
        goto out;
    }
    rc = check_applied(conn, list, n, &applied, err);
    if (rc)
        goto out;
    for (size_t i = applied; i < n; i++) {
        rc = apply_one(conn, &list[i], err);
        if (rc)
            goto out;
        count++;
    }
out:
    if (db_exec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", &inner) != CU_OK)
        CU_LOG(CU_LOG_WARN, "db", "releasing the migration lock failed: %s", inner.msg);
    if (applied_now)
        *applied_now = count;
    return rc;
}
