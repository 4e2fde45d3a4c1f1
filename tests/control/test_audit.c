/*
 * The audit log's writers on a real PostgreSQL: a change and its entry
 * commit together or not at all; entries that are not valid UTF-8 or too
 * long are refused before they reach a batch; one entry the database refuses
 * costs only that entry, never the others of its batch; concurrent appenders
 * all get their entries written, chained in one order.
 */
#include "control/control.h"
#include "tests/harness/pgtest.h"
#include "tests/testlib.h"

#include <pthread.h>
#include <stdatomic.h>

static char *app_dsn, *owner_dsn;

static PGconn *connect_or_die(const char *dsn)
{
    PGconn *c = NULL;
    cu_err err;
    if (db_connect(dsn, "test_audit", &c, &err) != CU_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return c;
}

static long long count_where(PGconn *c, const char *cond)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM audit_log WHERE %s", cond);
    return pgtest_query_int(c, sql);
}

static void test_validation(void)
{
    static const char *const bad[] = {"\xff", "ok\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                      "\xe2\x82"};
    for (size_t i = 0; i < CU_ARRAY_LEN(bad); i++) {
        ctl_audit_entry e = {.actor = "test", .action = "x", .object = bad[i], .outcome = "ok"};
        CHECK(!ctl_audit_entry_valid(&e));
    }
    char long_object[1200];
    memset(long_object, 'a', sizeof(long_object) - 1);
    long_object[sizeof(long_object) - 1] = '\0';
    ctl_audit_entry too_long = {
        .actor = "t", .action = "x", .object = long_object, .outcome = "ok"};
    CHECK(!ctl_audit_entry_valid(&too_long));
    ctl_audit_entry good = {
        .actor = "user:名前", .action = "x", .object = "錄影 🎥", .outcome = "ok"};
    CHECK(ctl_audit_entry_valid(&good));
    ctl_audit_entry bad_outcome = {.actor = "t", .action = "x", .outcome = "maybe"};
    CHECK(!ctl_audit_entry_valid(&bad_outcome));
}

/* A change whose entry cannot be written is not applied. */
static void test_change_with_entry(PGconn *c)
{
    cu_err err;
    /* The entry refused before it is sent: the change rolls back. */
    REQUIRE(db_exec(c, "BEGIN", &err) == CU_OK);
    REQUIRE(db_exec(c, "INSERT INTO departments (name) VALUES ('Rollback')", &err) == CU_OK);
    ctl_audit_entry e = {.actor = "user:\xff", .action = "department.add", .outcome = "ok"};
    CHECK_EQ_INT(ctl_audit_append(c, &e, NULL, &err), CU_ERR_INVALID);
    CHECK_STR_CONTAINS(err.msg, "not valid UTF-8");
    REQUIRE(db_exec(c, "ROLLBACK", &err) == CU_OK);
    CHECK_EQ_INT(pgtest_query_int(c, "SELECT count(*) FROM departments WHERE name = 'Rollback'"),
                 0);

    /* The entry refused by the database (audit_append made to fail for it):
     * the change's transaction fails with it. */
    REQUIRE(db_exec(c, "BEGIN", &err) == CU_OK);
    REQUIRE(db_exec(c, "INSERT INTO departments (name) VALUES ('Rollback')", &err) == CU_OK);
    ctl_audit_entry refused = {.actor = "refuse-me", .action = "department.add", .outcome = "ok"};
    CHECK_EQ_INT(ctl_audit_append(c, &refused, NULL, &err), CU_ERR_DB);
    CHECK(db_exec(c, "COMMIT", &err) != CU_OK || PQtransactionStatus(c) == PQTRANS_IDLE);
    PQclear(PQexec(c, "ROLLBACK"));
    CHECK_EQ_INT(pgtest_query_int(c, "SELECT count(*) FROM departments WHERE name = 'Rollback'"),
                 0);

    /* And with a good entry, both are there. */
    long long before = count_where(c, "action = 'department.add'");
    REQUIRE(db_exec(c, "BEGIN", &err) == CU_OK);
    REQUIRE(db_exec(c, "INSERT INTO departments (name) VALUES ('Kept')", &err) == CU_OK);
    ctl_audit_entry ok = {
        .actor = "test", .action = "department.add", .object = "Kept", .outcome = "ok"};
    CHECK_EQ_INT(ctl_audit_append(c, &ok, NULL, &err), CU_OK);
    REQUIRE(db_exec(c, "COMMIT", &err) == CU_OK);
    CHECK_EQ_INT(pgtest_query_int(c, "SELECT count(*) FROM departments WHERE name = 'Kept'"), 1);
    CHECK_EQ_INT(count_where(c, "action = 'department.add'"), before + 1);
}

/* ------------------------------------------------- concurrent appenders */

#define THREADS    8
#define PER_THREAD 150

typedef struct {
    ctl_audit_group *g;
    int index;
    int written, refused;
} appender;

static void *append_main(void *arg)
{
    appender *a = arg;
    PGconn *c = connect_or_die(app_dsn);
    for (int i = 0; i < PER_THREAD; i++) {
        char actor[32], object[64];
        snprintf(actor, sizeof(actor), "thread:%d", a->index);
        /* Every 10th entry is one the database refuses (actor refuse-me),
         * every 15th one that is not UTF-8: neither may cost another's. */
        bool db_refuses = i % 10 == 5, invalid = i % 15 == 7;
        snprintf(object, sizeof(object), "%s%d", invalid ? "\xff" : "", i);
        ctl_audit_entry e = {.actor = db_refuses ? "refuse-me" : actor,
                             .action = "test.concurrent",
                             .object = object,
                             .outcome = "ok",
                             .relaxed = i % 2 == 0};
        cu_err err;
        cu_rc rc = ctl_audit_group_append(a->g, c, &e, &err);
        if (rc == CU_OK)
            a->written++;
        else
            a->refused++;
        if ((rc == CU_OK) == (db_refuses || invalid))
            fprintf(stderr, "thread %d entry %d: %s (%s)\n", a->index, i, cu_rc_str(rc), err.msg);
    }
    PQfinish(c);
    return NULL;
}

static void test_concurrent(PGconn *c)
{
    ctl_audit_group *g = ctl_audit_group_new();
    appender a[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (appender){.g = g, .index = i};
        REQUIRE(pthread_create(&t[i], NULL, append_main, &a[i]) == 0);
    }
    int written = 0, refused = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        written += a[i].written;
        refused += a[i].refused;
    }
    ctl_audit_group_free(g);
    int expect_refused = 0;
    for (int i = 0; i < PER_THREAD; i++)
        expect_refused += i % 10 == 5 || i % 15 == 7;
    CHECK_EQ_INT(refused, expect_refused * THREADS);
    CHECK_EQ_INT(written, (PER_THREAD - expect_refused) * THREADS);
    CHECK_EQ_INT(count_where(c, "action = 'test.concurrent'"), written);
    CHECK_EQ_INT(count_where(c, "actor = 'refuse-me'"), 0);
    ctl_audit_report rep;
    cu_err err;
    CHECK_EQ_INT(ctl_audit_verify(c, NULL, 0, NULL, &rep, &err), CU_OK);
    CHECK_EQ_INT(rep.first_bad, 0);
    printf("test_audit: %d threads, %d entries written, %d refused one by one, chain intact\n",
           THREADS, written, refused);
}

int main(void)
{
    if (!getenv("CUSTOS_TEST_DSN")) {
        fprintf(stderr, "test_audit: run under with-pg\n");
        return 1;
    }
    atomic_store(&cu_log_threshold, CU_LOG_ERROR);
    app_dsn = pgtest_fresh_database("audit", &owner_dsn);
    cu_err err;
    PGconn *owner = connect_or_die(owner_dsn);
    REQUIRE(db_migrate(owner, db_schema_migrations, db_schema_migrations_count, NULL, &err) ==
            CU_OK);
    PQfinish(owner);
    /* audit_append made to fail for one actor: a trigger the superuser adds. */
    char *super = cu_xasprintf("%s dbname=audit", getenv("CUSTOS_TEST_ADMIN_DSN"));
    PGconn *su = connect_or_die(super);
    REQUIRE(db_exec(su,
                    "CREATE FUNCTION refuse_me() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'refused for the test'; END $$; "
                    "CREATE TRIGGER refuse_me BEFORE INSERT ON audit_log FOR EACH ROW "
                    "WHEN (NEW.actor = 'refuse-me') EXECUTE FUNCTION refuse_me()",
                    &err) == CU_OK);
    PQfinish(su);
    free(super);
    PGconn *c = connect_or_die(app_dsn);
    test_validation();
    test_change_with_entry(c);
    test_concurrent(c);
    PQfinish(c);
    free(app_dsn);
    free(owner_dsn);
    return test_finish("test_audit");
}
