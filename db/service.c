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
    char *dsn;
    char instance_id[37];
};

CU_METRIC_DEFINE(db_up_metric, CU_METRIC_GAUGE, "custos_db_up", "",
                 "1 when the database connection is usable, else 0.")

cu_rc db_service_start(const cu_config *cfg, const char *data_dir, db_mode mode,
                       const char *app_name, db_service **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    db_service *s = cu_xcalloc(1, sizeof(*s));
    char pg_dir[PATH_MAX];
    int applied = 0;

    if (snprintf(pg_dir, sizeof(pg_dir), "%s/pg", data_dir) >= (int)sizeof(pg_dir)) {
        rc = cu_err_set(err, CU_ERR_INVALID, "data dir path too long");
        goto out;
    }
    if (cfg->db_dsn[0]) {
        s->dsn = cu_xstrdup(cfg->db_dsn);
    } else if (mode == DB_ATTACH) {
        s->dsn = cu_xasprintf("host='%s' port=5432 user=custos dbname=custos", pg_dir);
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
    if (rc)
        goto out;
    rc = db_migrate(s->conn, db_schema_migrations, db_schema_migrations_count, &applied, err);
    if (rc)
        goto out;
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
