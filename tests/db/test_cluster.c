/* The embedded cluster: start, restart after a crash, and its refusals. */
#include "db/db.h"
#include "tests/testlib.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/custos-test-cluster-XXXXXX";

static db_cluster_opts opts_for(const char *dir)
{
    return (db_cluster_opts){
        .dir = dir, .run_as = "postgres", .start_timeout_s = 60, .stop_timeout_s = 10};
}

static bool can_query(const char *dsn)
{
    PGconn *conn = NULL;
    cu_err err;
    if (db_connect(dsn, "test_cluster", &conn, &err) != CU_OK)
        return false;
    bool ok = db_exec(conn, "SELECT 1", &err) == CU_OK;
    PQfinish(conn);
    return ok;
}

static void test_binaries_missing(void)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/nobin", tmpdir);
    db_cluster_opts o = opts_for(dir);
    o.bindir = "/nonexistent/pg/bin";
    db_cluster *c = NULL;
    cu_err err = {""};
    CHECK_EQ_INT(db_cluster_start(&o, &c, &err), CU_ERR_NOTFOUND);
    CHECK_STR_CONTAINS(err.msg,
                       "PostgreSQL server binaries not found: db.pg_bindir=/nonexistent/pg/bin");
    CHECK(c == NULL);
    char found[4096];
    CHECK_EQ_INT(db_find_bindir(NULL, found, sizeof(found), &err), CU_OK);
    CHECK_STR_CONTAINS(found, "/bin");
}

static void test_start_stop_restart(void)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/pg", tmpdir);
    db_cluster_opts o = opts_for(dir);
    db_cluster *c = NULL;
    cu_err err = {""};

    /* A half-made cluster from an interrupted initdb does not block. */
    REQUIRE(mkdir(dir, 0700) == 0);
    char junk[600];
    snprintf(junk, sizeof(junk), "%s/data.init", dir);
    REQUIRE(mkdir(junk, 0700) == 0);

    CHECK_EQ_INT(db_cluster_start(&o, &c, &err), CU_OK);
    REQUIRE(c);
    pid_t pid = db_cluster_pid(c);
    CHECK(pid > 0);
    CHECK(can_query(db_cluster_dsn(c)));
    CHECK(access(junk, F_OK) != 0);
    struct stat st;
    CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
    if (geteuid() == 0)
        CHECK(st.st_uid != 0); /* the server's account owns it, not root */
    CHECK(db_cluster_alive(c, &err));
    db_cluster_stop(c);
    CHECK(kill(pid, 0) != 0); /* gone */

    /* A process running the cluster is killed outright: the server dies
     * with it, and the next start succeeds on the same directory. */
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t owner = fork();
    if (owner == 0) {
        db_cluster *cc = NULL;
        cu_err e;
        if (db_cluster_start(&o, &cc, &e) != CU_OK) {
            fprintf(stderr, "child: %s\n", e.msg);
            _exit(1);
        }
        pid_t p = db_cluster_pid(cc);
        if (write(ready[1], &p, sizeof(p)) != sizeof(p))
            _exit(1);
        pause();
        _exit(0);
    }
    close(ready[1]);
    pid_t server = -1;
    CHECK(read(ready[0], &server, sizeof(server)) == sizeof(server));
    close(ready[0]);
    CHECK(server > 0);
    kill(owner, SIGKILL);
    waitpid(owner, NULL, 0);

    /* Start again at once, while the orphaned server may still be stopping. */
    c = NULL;
    CHECK_EQ_INT(db_cluster_start(&o, &c, &err), CU_OK);
    if (c) {
        CHECK(can_query(db_cluster_dsn(c)));
        CHECK(db_cluster_pid(c) != server);
        CHECK(kill(server, 0) != 0);
        /* An unexpected exit is noticed. */
        pid_t p = db_cluster_pid(c);
        kill(p, SIGQUIT);
        for (int i = 0; i < 200 && db_cluster_alive(c, &err); i++)
            usleep(50000);
        CHECK(!db_cluster_alive(c, &err));
        CHECK_STR_CONTAINS(err.msg, "embedded PostgreSQL");
        db_cluster_stop(c);
    } else {
        fprintf(stderr, "restart failed: %s\n", err.msg);
    }
}

/* As root, a directory the postgres account cannot traverse is named. */
static void test_unreachable_as_root(void)
{
    if (geteuid() != 0) {
        printf("test_cluster: not root; the traversal check applies only to root\n");
        return;
    }
    char closed[512], dir[600];
    snprintf(closed, sizeof(closed), "%s/closed", tmpdir);
    REQUIRE(mkdir(closed, 0700) == 0);
    snprintf(dir, sizeof(dir), "%s/pg", closed);
    db_cluster_opts o = opts_for(dir);
    db_cluster *c = NULL;
    cu_err err = {""};
    CHECK_EQ_INT(db_cluster_start(&o, &c, &err), CU_ERR_PERM);
    CHECK_STR_CONTAINS(err.msg, "cannot reach");
    CHECK_STR_CONTAINS(err.msg, "(mode 0700) is not traversable");
    CHECK_STR_CONTAINS(err.msg, closed);

    o.run_as = "no-such-account-here";
    CHECK_EQ_INT(db_cluster_start(&o, &c, &err), CU_ERR_NOTFOUND);
    CHECK_STR_CONTAINS(err.msg, "account 'no-such-account-here' (db.pg_user) does not exist");
    o.run_as = "root";
    CHECK_EQ_INT(db_cluster_start(&o, &c, &err), CU_ERR_CONFIG);
    CHECK_STR_CONTAINS(err.msg, "PostgreSQL refuses to run as root");
}

int main(void)
{
    atomic_store(&cu_log_threshold, CU_LOG_WARN);
    REQUIRE(mkdtemp(tmpdir));
    REQUIRE(chmod(tmpdir, 0711) == 0);
    test_binaries_missing();
    test_start_stop_restart();
    test_unreachable_as_root();
    test_remove_tree(tmpdir);
    return test_finish("test_cluster");
}
