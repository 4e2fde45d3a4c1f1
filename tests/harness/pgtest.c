/* Throwaway PostgreSQL clusters for tests. */
#include "pgtest.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PGTEST_PREFIX "custos-pgtest-"

struct pgtest {
    char dir[256];
    char pg_dir[300];
    char *dsn, *owner_dsn, *admin_dsn; /* stay valid while the server is stopped */
    db_cluster *cluster;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if ((flag == FTW_DP ? rmdir(path) : unlink(path)) != 0 && errno != ENOENT)
        fprintf(stderr, "pgtest: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void remove_tree(const char *path)
{
    nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}

static const char *tmp_root(void)
{
    const char *t = getenv("TMPDIR");
    return t && t[0] == '/' ? t : "/tmp";
}

/* Remove directories of earlier runs whose owning process is gone. */
static void reap_stale(void)
{
    DIR *d = opendir(tmp_root());
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, PGTEST_PREFIX, strlen(PGTEST_PREFIX)) != 0)
            continue;
        long pid = strtol(de->d_name + strlen(PGTEST_PREFIX), NULL, 10);
        if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", tmp_root(), de->d_name);
        remove_tree(path);
    }
    closedir(d);
}

cu_rc pgtest_start(pgtest **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    pgtest *t = cu_xcalloc(1, sizeof(*t));
    reap_stale();
    if (snprintf(t->dir, sizeof(t->dir), "%s/" PGTEST_PREFIX "%ld-XXXXXX", tmp_root(),
                 (long)getpid()) >= (int)sizeof(t->dir)) {
        rc = cu_err_set(err, CU_ERR_INVALID, "TMPDIR is too long");
        t->dir[0] = '\0';
        goto out;
    }
    if (!mkdtemp(t->dir)) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "mkdtemp %s: %s", t->dir, strerror(e));
        t->dir[0] = '\0';
        goto out;
    }
    /* mkdtemp makes it 0700; the postgres account must traverse it. */
    if (chmod(t->dir, 0711) != 0) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "chmod %s: %s", t->dir, strerror(e));
        goto out;
    }
    snprintf(t->pg_dir, sizeof(t->pg_dir), "%s/pg", t->dir);
    rc = pgtest_server_start(t, err);
    if (rc)
        goto out;
    t->dsn = cu_xstrdup(db_cluster_dsn(t->cluster));
    t->owner_dsn = cu_xstrdup(db_cluster_owner_dsn(t->cluster));
    t->admin_dsn = cu_xstrdup(db_cluster_admin_dsn(t->cluster));
    *out = t;
    t = NULL;
out:
    pgtest_stop(t);
    return rc;
}

const char *pgtest_dsn(const pgtest *t)
{
    return t->dsn;
}

const char *pgtest_owner_dsn(const pgtest *t)
{
    return t->owner_dsn;
}

const char *pgtest_admin_dsn(const pgtest *t)
{
    return t->admin_dsn;
}

void pgtest_server_stop(pgtest *t)
{
    db_cluster_stop(t->cluster);
    t->cluster = NULL;
}

cu_rc pgtest_server_start(pgtest *t, cu_err *err)
{
    db_cluster_opts opts = {
        .dir = t->pg_dir, .run_as = "postgres", .start_timeout_s = 60, .stop_timeout_s = 10};
    return db_cluster_start(&opts, &t->cluster, err);
}

const char *pgtest_dir(const pgtest *t)
{
    return t->dir;
}

void pgtest_stop(pgtest *t)
{
    if (!t)
        return;
    db_cluster_stop(t->cluster);
    if (t->dir[0])
        remove_tree(t->dir);
    free(t->dsn);
    free(t->owner_dsn);
    free(t->admin_dsn);
    free(t);
}

char *pgtest_fresh_database(const char *name, char **owner_dsn)
{
    const char *admin = getenv("CUSTOS_TEST_ADMIN_DSN");
    if (!admin) {
        fprintf(stderr, "pgtest: CUSTOS_TEST_ADMIN_DSN is not set; run this test under with-pg\n");
        exit(1);
    }
    PGconn *conn = NULL;
    cu_err err;
    if (db_connect(admin, "pgtest", &conn, &err) != CU_OK) {
        fprintf(stderr, "pgtest: %s\n", err.msg);
        exit(1);
    }
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", name);
    if (db_exec(conn, sql, &err) == CU_OK) {
        snprintf(sql, sizeof(sql), "CREATE DATABASE \"%s\" OWNER custos_owner TEMPLATE template0",
                 name);
        if (db_exec(conn, sql, &err) != CU_OK) {
            fprintf(stderr, "pgtest: %s\n", err.msg);
            exit(1);
        }
    } else {
        fprintf(stderr, "pgtest: %s\n", err.msg);
        exit(1);
    }
    /* Same server and roles as the test DSNs, another database. */
    char *dsn = cu_xasprintf("%s dbname=%s", getenv("CUSTOS_TEST_DSN"), name);
    if (owner_dsn)
        *owner_dsn = cu_xasprintf("%s dbname=%s", getenv("CUSTOS_TEST_OWNER_DSN"), name);
    PQfinish(conn);
    return dsn;
}

long long pgtest_query_int(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    long long v = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else
        fprintf(stderr, "query failed: %s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    return v;
}

char *pgtest_superuser_dsn(void)
{
    const char *admin = getenv("CUSTOS_TEST_ADMIN_DSN");
    if (!admin) {
        fprintf(stderr, "pgtest: CUSTOS_TEST_ADMIN_DSN is not set; run this test under with-pg\n");
        exit(1);
    }
    return cu_xasprintf("%s dbname=custos", admin);
}
