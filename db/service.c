/* The database as a process sees it: cluster, connection, schema, identity. */
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct db_service {
    db_cluster *cluster; /* NULL unless we run the embedded cluster */
    PGconn *conn;
    char *dsn;       /* the application role */
    char *owner_dsn; /* the schema's owner: migrations only ("" = none) */
    char instance_id[37];
};

CU_METRIC_DEFINE(db_up_metric, CU_METRIC_GAUGE, "custos_db_up", "",
                 "1 when the database connection is usable, else 0.")

/* The roles the application must not be (docs/database.md, "Roles"). */
static cu_rc check_app_role(PGconn *conn, cu_err *err)
{
    cu_rc rc = CU_OK;
    PGresult *res = PQexec(
        conn, "SELECT current_user, r.rolsuper, pg_has_role(current_user, 'custos_app', 'MEMBER'), "
              "EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
              "        WHERE n.nspname = 'public' AND (c.relowner = r.oid "
              "              OR pg_has_role(current_user, c.relowner, 'MEMBER'))), "
              "EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
              "        WHERE n.nspname = 'public' AND p.proowner = r.oid), "
              "pg_has_role(current_user, (SELECT datdba FROM pg_database "
              "                           WHERE datname = current_database()), 'MEMBER') "
              "FROM pg_roles r WHERE r.rolname = current_user");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = cu_err_set(err, CU_ERR_DB, "checking the database role: %s", PQerrorMessage(conn));
        goto out;
    }
    const char *who = PQgetvalue(res, 0, 0);
    bool super = PQgetvalue(res, 0, 1)[0] == 't', member = PQgetvalue(res, 0, 2)[0] == 't';
    bool owns = PQgetvalue(res, 0, 3)[0] == 't' || PQgetvalue(res, 0, 4)[0] == 't';
    bool db_owner = PQgetvalue(res, 0, 5)[0] == 't';
    if (super || owns || db_owner)
        rc = cu_err_set(err, CU_ERR_PERM,
                        "the database role %s %s: the application's role (db.dsn) must own "
                        "nothing and not be a superuser, so that it cannot rewrite the audit log "
                        "(docs/database.md, \"Roles\")",
                        who,
                        super  ? "is a superuser"
                        : owns ? "owns (or may act as the owner of) the schema"
                               : "may act as the owner of the database");
    else if (!member)
        rc = cu_err_set(err, CU_ERR_PERM,
                        "the database role %s is not a member of custos_app, which holds the "
                        "application's rights (docs/database.md, \"Roles\")",
                        who);
out:
    PQclear(res);
    return rc;
}

/* Bring the schema to this build's version as the owner role, or, with no
 * owner to run migrations, check that it already is. */
static cu_rc schema_prepare(const char *owner_dsn, PGconn *app, cu_err *err)
{
    int applied = 0;
    if (!owner_dsn || !owner_dsn[0]) {
        int v = db_schema_version(app, err);
        if (v < 0)
            return CU_ERR_DB;
        if (v != (int)db_schema_migrations_count)
            return cu_err_set(err, CU_ERR_VERSION,
                              "the database schema is at version %d, this build needs %zu: run "
                              "ingestctl db migrate with db.owner_dsn set (docs/database.md)",
                              v, db_schema_migrations_count);
        return CU_OK;
    }
    PGconn *owner = NULL;
    cu_rc rc = db_connect(owner_dsn, "custos-migrate", &owner, err);
    if (!rc)
        rc = db_exec(owner, "SET lock_timeout = '30s'", err);
    if (!rc)
        rc = db_migrate(owner, db_schema_migrations, db_schema_migrations_count, &applied, err);
    PQfinish(owner);
    return rc;
}

cu_rc db_service_start(const cu_config *cfg, const char *data_dir, db_mode mode,
                       const char *app_name, db_service **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    db_service *s = cu_xcalloc(1, sizeof(*s));
    char pg_dir[PATH_MAX];

    if (snprintf(pg_dir, sizeof(pg_dir), "%s/pg", data_dir) >= (int)sizeof(pg_dir)) {
        rc = cu_err_set(err, CU_ERR_INVALID, "data dir path too long");
        goto out;
    }
    if (cfg->db_dsn[0]) {
        s->dsn = cu_xstrdup(cfg->db_dsn);
        s->owner_dsn = cu_xstrdup(cfg->db_owner_dsn);
    } else if (mode == DB_ATTACH) {
        s->dsn = cu_xasprintf("host='%s' port=5432 user=custos dbname=custos", pg_dir);
        s->owner_dsn = cu_xasprintf("host='%s' port=5432 user=custos_owner dbname=custos", pg_dir);
    } else {
        db_cluster_opts opts = {
            .dir = pg_dir,
            .bindir = cfg->db_pg_bindir,
            .run_as = cfg->db_pg_user,
            .start_timeout_s = (int)cfg->db_start_timeout_s,
            .stop_timeout_s = (int)cfg->db_stop_timeout_s,
        };
        rc = db_cluster_start(&opts, &s->cluster, err);
        if (rc)
            goto out;
        s->dsn = cu_xstrdup(db_cluster_dsn(s->cluster));
        s->owner_dsn = cu_xstrdup(db_cluster_owner_dsn(s->cluster));
    }

    rc = db_connect(s->dsn, app_name, &s->conn, err);
    if (rc) {
        if (mode == DB_ATTACH && !cfg->db_dsn[0]) {
            cu_err inner = *err;
            rc = cu_err_set(err, rc,
                            "the data dir is in use by a running ingestd, but its database "
                            "is not reachable (%s)",
                            inner.msg);
        }
        goto out;
    }
    /* Our own session's work must not wait on a lock forever. */
    rc = db_exec(s->conn, "SET lock_timeout = '30s'", err);
    if (!rc)
        rc = check_app_role(s->conn, err);
    if (!rc)
        rc = schema_prepare(mode == DB_ATTACH && !cfg->db_dsn[0] ? NULL : s->owner_dsn, s->conn,
                            err);
    if (!rc)
        rc = db_instance_bind(s->conn, data_dir, s->instance_id, err);
    if (rc)
        goto out;
    cu_metric_set(&db_up_metric, 1);
    *out = s;
    s = NULL;
out:
    db_service_stop(s);
    return rc;
}

cu_rc db_service_migrate(db_service *s, int *applied, cu_err *err)
{
    if (!s->owner_dsn || !s->owner_dsn[0])
        return cu_err_set(err, CU_ERR_CONFIG,
                          "migrations run as the schema's owner: set db.owner_dsn "
                          "(docs/database.md, \"Roles\")");
    PGconn *owner = NULL;
    cu_rc rc = db_connect(s->owner_dsn, "custos-migrate", &owner, err);
    if (!rc)
        rc = db_migrate(owner, db_schema_migrations, db_schema_migrations_count, applied, err);
    PQfinish(owner);
    return rc;
}

PGconn *db_service_conn(db_service *s)
{
    return s->conn;
}

const char *db_service_dsn(const db_service *s)
{
    return s->dsn;
}

const char *db_service_instance_id(const db_service *s)
{
    return s->instance_id;
}

db_cluster *db_service_cluster(db_service *s)
{
    return s->cluster;
}

bool db_service_healthy(db_service *s, cu_err *why)
{
    bool ok = true;
    if (s->cluster && !db_cluster_alive(s->cluster, why)) {
        ok = false;
    } else if (PQstatus(s->conn) != CONNECTION_OK) {
        cu_err_set(why, CU_ERR_DB, "the database connection is broken");
        ok = false;
    }
    cu_metric_set(&db_up_metric, ok ? 1 : 0);
    return ok;
}

void db_service_stop(db_service *s)
{
    if (!s)
        return;
    PQfinish(s->conn);
    db_cluster_stop(s->cluster);
    free(s->dsn);
    free(s->owner_dsn);
    free(s);
    cu_metric_set(&db_up_metric, 0);
}

/* ------------------------------------------------------------- identity */

static bool uuid_text_valid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

cu_rc db_instance_bind(PGconn *conn, const char *data_dir, char id_out[37], cu_err *err)
{
    cu_rc rc = CU_OK;
    char path[PATH_MAX];
    PGresult *res = PQexec(conn, "SELECT id::text FROM instance");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc =
            cu_err_set(err, CU_ERR_DB, "cannot read the installation id: %s", PQerrorMessage(conn));
        goto out;
    }
    const char *db_id = PQgetvalue(res, 0, 0);
    snprintf(path, sizeof(path), "%s/instance", data_dir);
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno != ENOENT) {
            int e = errno;
            rc = cu_err_set(err, CU_ERR_IO, "cannot read %s: %s", path, strerror(e));
            goto out;
        }
        rc = cu_file_write_durably(data_dir, "instance", db_id, strlen(db_id), 0644, err);
        if (rc)
            goto out;
        CU_LOG(CU_LOG_INFO, "db", "data dir bound to installation %s", db_id);
    } else {
        char file_id[64] = "";
        if (!fgets(file_id, sizeof(file_id), f))
            file_id[0] = '\0';
        fclose(f);
        file_id[strcspn(file_id, "\r\n")] = '\0';
        if (!uuid_text_valid(file_id)) {
            rc = cu_err_set(err, CU_ERR_INVALID, "%s does not hold an installation id", path);
            goto out;
        }
        if (strcmp(file_id, db_id) != 0) {
            rc = cu_err_set(err, CU_ERR_VERSION,
                            "data dir %s belongs to installation %s, but the database belongs "
                            "to %s; check db.dsn",
                            data_dir, file_id, db_id);
            goto out;
        }
    }
    cu_strlcpy(id_out, db_id, 37);
out:
    PQclear(res);
    return rc;
}
