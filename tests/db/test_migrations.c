/* Migrations on a real PostgreSQL (run under with-pg). */
#include "db/db.h"
#include "tests/harness/pgtest.h"
#include "tests/testlib.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static PGconn *connect_or_die(const char *dsn)
{
    PGconn *conn = NULL;
    cu_err err;
    if (db_connect(dsn, "test_migrations", &conn, &err) != CU_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return conn;
}

static const db_migration good[] = {
    {1, "0001_a", "CREATE TABLE a (x int); INSERT INTO a VALUES (1);"},
    {2, "0002_b", "CREATE TABLE b (y text);"},
};
static const db_migration with_bad[] = {
    {1, "0001_a", "CREATE TABLE a (x int); INSERT INTO a VALUES (1);"},
    {2, "0002_b", "CREATE TABLE b (y text);"},
    {3, "0003_bad", "CREATE TABLE c (z int); INSERT INTO a VALUES (1/0);"},
};
static const db_migration edited[] = {
    {1, "0001_a", "CREATE TABLE a (x bigint); INSERT INTO a VALUES (1);"},
};

static void test_real_schema(void)
{
    char *dsn = pgtest_fresh_database("mig_real");
    PGconn *conn = connect_or_die(dsn);
    cu_err err = {""};
    int applied = -1;
    CHECK_EQ_INT(db_schema_version(conn, &err), 0);
    CHECK_EQ_INT(db_migrate(conn, db_schema_migrations, db_schema_migrations_count, &applied, &err),
                 CU_OK);
    CHECK_EQ_INT(applied, db_schema_migrations_count);
    CHECK_EQ_INT(db_schema_version(conn, &err),
                 db_schema_migrations[db_schema_migrations_count - 1].version);
    CHECK_EQ_INT(pgtest_query_int(conn, "SELECT count(*) FROM schema_version"),
                 db_schema_migrations_count);
    CHECK_EQ_INT(pgtest_query_int(conn, "SELECT count(*) FROM instance"), 1);

    /* Idempotent: nothing applied the second time, nothing changed. */
    CHECK_EQ_INT(db_migrate(conn, db_schema_migrations, db_schema_migrations_count, &applied, &err),
                 CU_OK);
    CHECK_EQ_INT(applied, 0);
    CHECK_EQ_INT(pgtest_query_int(conn, "SELECT count(*) FROM schema_version"),
                 db_schema_migrations_count);
    CHECK_EQ_INT(pgtest_query_int(conn, "SELECT count(*) FROM instance"), 1);
    /* The singleton table refuses a second installation id. */
    PGresult *res = PQexec(conn, "INSERT INTO instance DEFAULT VALUES");
    CHECK(PQresultStatus(res) == PGRES_FATAL_ERROR);
    PQclear(res);
    PQfinish(conn);
    free(dsn);
}

static void test_failure_rolls_back(void)
{
    char *dsn = pgtest_fresh_database("mig_fail");
    PGconn *conn = connect_or_die(dsn);
    cu_err err = {""};
    int applied = -1;
    CHECK_EQ_INT(db_migrate(conn, with_bad, 3, &applied, &err), CU_ERR_DB);
    CHECK_STR_CONTAINS(err.msg, "migration 0003_bad failed: ERROR:  division by zero");
    CHECK_EQ_INT(applied, 2);
    CHECK_EQ_INT(db_schema_version(conn, &err), 2);
    CHECK_EQ_INT(pgtest_query_int(conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'c'"), 0);
    CHECK_EQ_INT(pgtest_query_int(conn, "SELECT count(*) FROM a"), 1);
    /* The connection is usable afterwards and a fixed list succeeds. */
    CHECK_EQ_INT(db_migrate(conn, good, 2, &applied, &err), CU_OK);
    CHECK_EQ_INT(applied, 0);
    PQfinish(conn);
    free(dsn);
}

static void test_newer_database_refused(void)
{
    char *dsn = pgtest_fresh_database("mig_newer");
    PGconn *conn = connect_or_die(dsn);
    cu_err err = {""};
    int applied = 0;
    CHECK_EQ_INT(db_migrate(conn, good, 2, &applied, &err), CU_OK);
    CHECK_EQ_INT(db_migrate(conn, good, 1, &applied, &err), CU_ERR_VERSION);
    CHECK_STR_CONTAINS(err.msg, "the database schema is at version 2 (0002_b), newer than this "
                                "build of Custos knows (1); run a newer Custos");
    CHECK_EQ_INT(db_migrate(conn, edited, 1, &applied, &err), CU_ERR_VERSION);
    CHECK_STR_CONTAINS(err.msg, "migration 0001_a was changed after it was applied");
    PQfinish(conn);
    free(dsn);
}

typedef struct {
    const char *dsn;
    cu_rc rc;
    int applied;
} migrate_job;

static void *migrate_thread(void *arg)
{
    migrate_job *job = arg;
    cu_err err;
    PGconn *conn = connect_or_die(job->dsn);
    job->rc = db_migrate(conn, good, 2, &job->applied, &err);
    PQfinish(conn);
    return NULL;
}

static void test_concurrent(void)
{
    char *dsn = pgtest_fresh_database("mig_concurrent");
    migrate_job jobs[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (migrate_job){.dsn = dsn, .rc = CU_ERR_IO, .applied = -1};
        REQUIRE(pthread_create(&threads[i], NULL, migrate_thread, &jobs[i]) == 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ_INT(jobs[i].rc, CU_OK);
        total += jobs[i].applied;
    }
    CHECK_EQ_INT(total, 2); /* each migration applied exactly once */
    PGconn *conn = connect_or_die(dsn);
    CHECK_EQ_INT(pgtest_query_int(conn, "SELECT count(*) FROM a"), 1);
    PQfinish(conn);
    free(dsn);
}

static void test_instance_binding(void)
{
    char dir[] = "/tmp/custos-test-instance-XXXXXX";
    REQUIRE(mkdtemp(dir));
    char *dsn1 = pgtest_fresh_database("inst_one");
    char *dsn2 = pgtest_fresh_database("inst_two");
    PGconn *one = connect_or_die(dsn1), *two = connect_or_die(dsn2);
    cu_err err = {""};
    char id1[37], id2[37];
    CHECK_EQ_INT(db_migrate(one, db_schema_migrations, db_schema_migrations_count, NULL, &err),
                 CU_OK);
    CHECK_EQ_INT(db_migrate(two, db_schema_migrations, db_schema_migrations_count, NULL, &err),
                 CU_OK);
    CHECK_EQ_INT(db_instance_bind(one, dir, id1, &err), CU_OK);
    CHECK_EQ_INT(strlen(id1), 36);
    CHECK_EQ_INT(db_instance_bind(one, dir, id2, &err), CU_OK);
    CHECK(strcmp(id1, id2) == 0);
    /* The same data dir with another installation's database is refused. */
    CHECK_EQ_INT(db_instance_bind(two, dir, id2, &err), CU_ERR_VERSION);
    CHECK_STR_CONTAINS(err.msg, "belongs to installation");
    CHECK_STR_CONTAINS(err.msg, "check db.dsn");
    PQfinish(one);
    PQfinish(two);
    free(dsn1);
    free(dsn2);
    char path[128];
    snprintf(path, sizeof(path), "%s/instance", dir);
    unlink(path);
    rmdir(dir);
}

/* db_service on an external server (db.dsn), as ingestd uses it. */
static void test_service_external(void)
{
    char dir[] = "/tmp/custos-test-service-XXXXXX";
    REQUIRE(mkdtemp(dir));
    char *dsn = pgtest_fresh_database("svc_ext");
    cu_config cfg;
    cu_err err = {""};
    char *sets[1];
    char *assignment = cu_xasprintf("db.dsn=%s", dsn);
    sets[0] = assignment;
    CHECK_EQ_INT(cu_config_load(&cfg, NULL, dir, sets, 1, &err), CU_OK);
    db_service *svc = NULL;
    CHECK_EQ_INT(db_service_start(&cfg, dir, DB_OWN, "test", &svc, &err), CU_OK);
    REQUIRE(svc);
    CHECK(db_service_cluster(svc) == NULL);
    CHECK(db_service_healthy(svc, &err));
    CHECK_EQ_INT(db_schema_version(db_service_conn(svc), &err),
                 db_schema_migrations[db_schema_migrations_count - 1].version);
    db_service_stop(svc);

    /* Unreachable external server: one clear line. */
    cu_config_free(&cfg);
    char *bad[] = {"db.dsn=host=/nonexistent-socket-dir port=5999 dbname=x connect_timeout=2"};
    CHECK_EQ_INT(cu_config_load(&cfg, NULL, dir, bad, 1, &err), CU_OK);
    svc = NULL;
    CHECK_EQ_INT(db_service_start(&cfg, dir, DB_OWN, "test", &svc, &err), CU_ERR_DB);
    CHECK_STR_CONTAINS(err.msg, "cannot connect to PostgreSQL");
    CHECK(svc == NULL);
    cu_config_free(&cfg);
    free(assignment);
    free(dsn);
    char path[128];
    snprintf(path, sizeof(path), "%s/instance", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    if (!getenv("CUSTOS_TEST_DSN")) {
        fprintf(stderr, "test_migrations: run under with-pg\n");
        return 1;
    }
    atomic_store(&cu_log_threshold, CU_LOG_WARN);
    test_real_schema();
    test_failure_rolls_back();
    test_newer_database_refused();
    test_concurrent();
    test_instance_binding();
    test_service_external();
    return test_finish("test_migrations");
}
