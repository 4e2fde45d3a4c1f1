/* Migrations on a real PostgreSQL (run under with-pg). */
#include "control/control.h"
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

/* @p sql, run as the application role, must be refused for want of rights. */
static void expect_refused(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (PQresultStatus(res) != PGRES_FATAL_ERROR || !state || strcmp(state, "42501") != 0) {
        fprintf(stderr, "FAIL: the application role was not refused: %s (%s: %s)\n", sql,
                state ? state : "no error", PQresultErrorMessage(res));
        CHECK(false);
    }
    PQclear(res);
}

/*
 * What the application's role (owns nothing, member of custos_app) cannot
 * do to the audit log and the evidence index: each is refused by a right it
 * does not have, not by courtesy.
 */
static void test_app_role(const char *app_dsn)
{
    PGconn *app = connect_or_die(app_dsn);
    cu_err err = {""};
    CHECK_EQ_INT(pgtest_query_int(app, "SELECT count(*) FROM pg_roles WHERE rolname = current_user "
                                       "AND NOT rolsuper AND pg_has_role(current_user, "
                                       "'custos_app', 'MEMBER')"),
                 1);
    static const char *const refused[] = {
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
        "ALTER TABLE audit_log DISABLE TRIGGER ALL",
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "INSERT INTO audit_log (seq, at, actor, action, object, outcome, source, prev_hash, hash) "
        "VALUES (1000, now(), 'x', 'x', '', 'ok', '', sha256(''), sha256(''))",
        "ALTER TABLE audit_log OWNER TO custos",
        "CREATE OR REPLACE FUNCTION audit_append(text[], text[], text[], text[], text[]) "
        "RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'",
        "DROP FUNCTION audit_append(text[], text[], text[], text[], text[])",
        "DROP TRIGGER audit_log_no_update ON audit_log",
        "CREATE FUNCTION public.sha256(bytea) RETURNS bytea LANGUAGE sql AS 'SELECT $1'",
        "ALTER FUNCTION audit_append(text[], text[], text[], text[], text[]) SECURITY INVOKER",
        "UPDATE segments SET sha256 = sha256(sha256)",
        "DELETE FROM segments",
        "TRUNCATE segments",
        "DELETE FROM recordings",
        "UPDATE recordings SET opened_at = now()",
        "UPDATE recordings SET erased_at = now()",
        "DELETE FROM recording_keys",
        "UPDATE recording_keys SET recording_id = recording_id",
        "ALTER TABLE segments DISABLE TRIGGER segments_history",
        "UPDATE instance SET id = gen_random_uuid()",
        "DELETE FROM schema_version",
        "CREATE TABLE public.intruder (x int)",
        "UPDATE record_forms SET summary = 'rewritten'",
        "DELETE FROM record_forms",
        "DELETE FROM security_alerts",
        "UPDATE login_attempts SET ok = true",
    };
    for (size_t i = 0; i < CU_ARRAY_LEN(refused); i++)
        expect_refused(app, refused[i]);
    /* A GRANT by a role without the grant option grants nothing (a warning). */
    CHECK_EQ_INT(db_exec(app, "GRANT UPDATE, DELETE, TRUNCATE ON audit_log TO custos", &err),
                 CU_OK);
    CHECK_EQ_INT(db_exec(app, "GRANT ALL ON audit_log TO custos_app", &err), CU_OK);
    CHECK_EQ_INT(pgtest_query_int(app, "SELECT count(*) FROM unnest(ARRAY['INSERT', 'UPDATE', "
                                       "'DELETE', 'TRUNCATE', 'TRIGGER']) p "
                                       "WHERE has_table_privilege('audit_log', p)"),
                 0);

    /* A closed recording: its counts are its rows', it is erased only by
     * recording_erase(), with its deletion record, and its key never returns. */
    CHECK_EQ_INT(db_exec(app,
                         "INSERT INTO recordings (id, key_id, opened_at, state, segment_count, "
                         "chain_head) VALUES ('00000000-0000-0000-0000-0000000000e1', "
                         "decode(repeat('ab', 16), 'hex'), now(), 'sealed', 0, sha256('x'))",
                         &err),
                 CU_OK);
    expect_refused(app, "UPDATE recordings SET acked_bytes = 12345 WHERE id = "
                        "'00000000-0000-0000-0000-0000000000e1'");
    expect_refused(app, "UPDATE recordings SET state = 'erased' WHERE id = "
                        "'00000000-0000-0000-0000-0000000000e1'");
    CHECK(pgtest_query_int(app, "SELECT recording_erase('00000000-0000-0000-0000-0000000000e1', "
                                "'test', 'retention_expired', 'local')") > 0);
    CHECK_EQ_INT(pgtest_query_int(app, "SELECT count(*) FROM audit_log WHERE action = "
                                       "'recording.erase' AND object LIKE "
                                       "'recording:00000000-0000-0000-0000-0000000000e1 %'"),
                 1);
    expect_refused(app, "INSERT INTO recording_keys (recording_id, key_id, kek_id, wrapped) VALUES "
                        "('00000000-0000-0000-0000-0000000000e1', decode(repeat('ab', 16), "
                        "'hex'), '0000000000000000', '\\x00')");

    /* It appends through the one function, whose search_path it cannot
     * bend: a sha256() of its own in pg_temp changes nothing. */
    CHECK_EQ_INT(db_exec(app,
                         "CREATE FUNCTION pg_temp.sha256(bytea) RETURNS bytea LANGUAGE sql "
                         "AS 'SELECT ''\\x00''::bytea'",
                         &err),
                 CU_OK);
    ctl_audit_entry e = {.actor = "test", .action = "role.check", .outcome = "ok"};
    int64_t seq = 0;
    CHECK_EQ_INT(ctl_audit_append(app, &e, &seq, &err), CU_OK);
    CHECK(seq > 0);
    ctl_audit_report rep;
    CHECK_EQ_INT(ctl_audit_verify(app, NULL, 0, NULL, &rep, &err), CU_OK);
    CHECK_EQ_INT(rep.first_bad, 0);
    CHECK(rep.entries >= 1);
    PQfinish(app);
}

static void test_real_schema(void)
{
    char *app_dsn = NULL, *dsn = NULL;
    app_dsn = pgtest_fresh_database("mig_real", &dsn);
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
    test_app_role(app_dsn);
    free(dsn);
    free(app_dsn);
}

/* Recordings closed before migration 0009 get their seals anchored by it. */
static void test_seal_backfill(void)
{
    char *dsn = NULL;
    free(pgtest_fresh_database("mig_backfill", &dsn));
    PGconn *conn = connect_or_die(dsn);
    cu_err err = {""};
    REQUIRE(db_schema_migrations_count >= 9 && db_schema_migrations[8].version == 9);
    CHECK_EQ_INT(db_migrate(conn, db_schema_migrations, 8, NULL, &err), CU_OK);
    CHECK_EQ_INT(db_exec(conn,
                         "INSERT INTO recordings (id, key_id, opened_at, state, segment_count, "
                         "chain_head) VALUES ('00000000-0000-0000-0000-00000000b001', "
                         "decode(repeat('cd', 16), 'hex'), now(), 'sealed', 3, "
                         "decode(repeat('ef', 32), 'hex'))",
                         &err),
                 CU_OK);
    cu_rc rc = db_migrate(conn, db_schema_migrations, db_schema_migrations_count, NULL, &err);
    CHECK_EQ_INT(rc, CU_OK);
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    CHECK_EQ_INT(
        pgtest_query_int(conn, "SELECT count(*) FROM audit_log WHERE actor = 'system' AND "
                               "action = 'recording.seal' AND object = "
                               "'recording:00000000-0000-0000-0000-00000000b001 state=sealed "
                               "segments=3 head="
                               "efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef'"),
        1);
    PQfinish(conn);
    free(dsn);
}

static void test_failure_rolls_back(void)
{
    char *dsn = NULL;
    free(pgtest_fresh_database("mig_fail", &dsn));
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
    char *dsn = NULL;
    free(pgtest_fresh_database("mig_newer", &dsn));
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
    char *dsn = NULL;
    free(pgtest_fresh_database("mig_concurrent", &dsn));
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
    char *dsn1 = NULL, *dsn2 = NULL;
    free(pgtest_fresh_database("inst_one", &dsn1));
    free(pgtest_fresh_database("inst_two", &dsn2));
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
    char *owner_dsn = NULL;
    char *dsn = pgtest_fresh_database("svc_ext", &owner_dsn);
    cu_config cfg;
    cu_err err = {""};
    db_service *svc = NULL;
    char *assignment = cu_xasprintf("db.dsn=%s", dsn);
    char *owner_assignment = cu_xasprintf("db.owner_dsn=%s", owner_dsn);
    char *as_owner = cu_xasprintf("db.dsn=%s", owner_dsn);
    char *super_dsn = cu_xasprintf("db.dsn=%s dbname=svc_ext", getenv("CUSTOS_TEST_ADMIN_DSN"));

    /* Without the owner nothing migrates: a schema behind is refused. */
    char *app_only[] = {assignment};
    CHECK_EQ_INT(cu_config_load(&cfg, NULL, dir, app_only, 1, &err), CU_OK);
    CHECK_EQ_INT(db_service_start(&cfg, dir, DB_OWN, "test", &svc, &err), CU_ERR_VERSION);
    CHECK_STR_CONTAINS(err.msg, "run ingestctl db migrate with db.owner_dsn set");
    cu_config_free(&cfg);
    /* The owner, or a superuser, as the application's role: refused. */
    char *owner_as_app[] = {as_owner, owner_assignment};
    CHECK_EQ_INT(cu_config_load(&cfg, NULL, dir, owner_as_app, 2, &err), CU_OK);
    CHECK_EQ_INT(db_service_start(&cfg, dir, DB_OWN, "test", &svc, &err), CU_ERR_PERM);
    CHECK_STR_CONTAINS(err.msg, "must own nothing and not be a superuser");
    cu_config_free(&cfg);
    char *super_as_app[] = {super_dsn, owner_assignment};
    CHECK_EQ_INT(cu_config_load(&cfg, NULL, dir, super_as_app, 2, &err), CU_OK);
    CHECK_EQ_INT(db_service_start(&cfg, dir, DB_OWN, "test", &svc, &err), CU_ERR_PERM);
    CHECK_STR_CONTAINS(err.msg, "is a superuser");
    cu_config_free(&cfg);

    char *sets[] = {assignment, owner_assignment};
    CHECK_EQ_INT(cu_config_load(&cfg, NULL, dir, sets, 2, &err), CU_OK);
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
    free(owner_assignment);
    free(as_owner);
    free(super_dsn);
    free(owner_dsn);
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
    test_seal_backfill();
    test_failure_rolls_back();
    test_newer_database_refused();
    test_concurrent();
    test_instance_binding();
    test_service_external();
    return test_finish("test_migrations");
}
