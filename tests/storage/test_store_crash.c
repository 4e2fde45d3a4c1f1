/*
 * Crash test: a writer process is killed with SIGKILL at a random moment,
 * again and again (CRASH_ROUNDS times). After each kill, recovery runs as the
 * next start would, and then every segment the writer had acknowledged must
 * read back and verify, and no partial file may pass for a segment.
 */
#include "store_testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define CRASH_ROUNDS      200
#define MAX_KILL_DELAY_US 80000

static char data_dir[128];

typedef struct {
    store_id rec;
    uint64_t idx;
} acked_seg;

static int report_fd = -1;

static void report(const char *kind, const store_id *rec, uint64_t idx)
{
    char id[37], line[80];
    store_id_format(rec, id);
    int n = snprintf(line, sizeof(line), "%s %s %llu\n", kind, id, (unsigned long long)idx);
    /* One write of less than PIPE_BUF bytes: atomic, never torn by the kill. */
    if (write(report_fd, line, (size_t)n) != n)
        _exit(3);
}

static void on_ack(void *ctx, const store_id *rec, uint64_t index, bool ok)
{
    (void)ctx;
    if (ok)
        report("A", rec, index);
}

/* The writer: recordings of a few segments each, as fast as it can. */
static void writer(const char *dsn, unsigned seed)
{
    cu_err err;
    store *s = st_open_store(data_dir, dsn, on_ack, NULL);
    srand(seed);
    for (;;) {
        store_recording *r = NULL;
        store_id id;
        if (store_recording_open(s, NULL, &r, &id, &err) != CU_OK)
            _exit(4);
        report("R", &id, 0);
        int n = 1 + rand() % 12;
        for (int i = 0; i < n; i++) {
            size_t len = 1 + (size_t)(rand() % 32768);
            store_segment_meta m = {.start_us = i * 1000, .end_us = i * 1000 + 999, .packets = 1};
            if (store_segment_submit(r, st_random(len), len, &m, true, NULL) != CU_OK)
                _exit(5);
        }
        store_recording_close(r);
    }
}

/* Until no other client session is left on the test's database (5 s at most). */
static void wait_for_writer_sessions(PGconn *conn)
{
    for (int i = 0; i < 500; i++) {
        PGresult *res = PQexec(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                     "current_database() AND pid <> pg_backend_pid() AND "
                                     "backend_type = 'client backend'");
        bool none =
            PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "0") == 0;
        PQclear(res);
        if (none)
            return;
        usleep(10000);
    }
    fprintf(stderr, "test_store_crash: the dead writer's sessions are still there after 5 s\n");
}

int main(void)
{
    const char *dsn = getenv("CUSTOS_TEST_DSN");
    if (!dsn) {
        fprintf(stderr, "test_store_crash: run under with-pg\n");
        return 1;
    }
    atomic_store(&cu_log_threshold, CU_LOG_ERROR);
    st_make_data_dir(data_dir, sizeof(data_dir), "crash");
    PGconn *conn = st_connect(dsn);
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    printf("test_store_crash: seed %u\n", seed);

    uint64_t total_acked = 0, total_recordings = 0, kills_mid_write = 0;
    cu_buf plain;
    cu_buf_init(&plain, STORE_SEGMENT_MAX);
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            report_fd = fds[1];
            writer(dsn, seed + (unsigned)round);
        }
        close(fds[1]);
        usleep((useconds_t)(rand() % MAX_KILL_DELAY_US));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        /* A restart meets a database whose sessions of the dead process are
         * gone: a backend still finishing its last COMMIT must not race the
         * recovery (seen under ASan, where the server lags further). */
        wait_for_writer_sessions(conn);

        /* What the writer reported before it died. */
        cu_buf text;
        cu_buf_init(&text, 16 << 20);
        char chunk[4096];
        ssize_t got;
        while ((got = read(fds[0], chunk, sizeof(chunk))) > 0)
            REQUIRE(cu_buf_append(&text, chunk, (size_t)got) == CU_OK);
        close(fds[0]);
        size_t nacked = 0, nrecs = 0;
        acked_seg *acked = cu_xcalloc(text.len / 40 + 1, sizeof(*acked));
        store_id *recs = cu_xcalloc(text.len / 40 + 1, sizeof(*recs));
        char *save = NULL;
        for (char *line = text.data ? strtok_r(text.data, "\n", &save) : NULL; line;
             line = strtok_r(NULL, "\n", &save)) {
            char kind, id[40];
            unsigned long long idx;
            if (sscanf(line, "%c %39s %llu", &kind, id, &idx) != 3)
                continue;
            store_id rec;
            REQUIRE(store_id_parse(id, &rec));
            if (kind == 'R')
                recs[nrecs++] = rec;
            else
                acked[nacked++] = (acked_seg){rec, idx};
        }
        cu_buf_free(&text);
        if (nrecs)
            kills_mid_write++;

        /* The next start's recovery. */
        cu_err err = {""};
        int sealed = 0;
        cu_rc recovered = store_recover(data_dir, conn, st_keys(data_dir), &sealed, &err);
        if (recovered != CU_OK)
            fprintf(stderr, "round %d: recovery: %s\n", round, err.msg);
        CHECK_EQ_INT(recovered, CU_OK);

        /* Every acknowledged segment reads back and checks out. */
        for (size_t i = 0; i < nacked; i++) {
            cu_rc rc = store_segment_read(data_dir, conn, st_keys(data_dir), &acked[i].rec,
                                          acked[i].idx, &plain, &err);
            if (rc != CU_OK)
                fprintf(stderr, "round %d: acknowledged segment lost: %s\n", round, err.msg);
            CHECK_EQ_INT(rc, CU_OK);
        }
        /* Each recording it touched verifies whole, sealed, no temp files. */
        for (size_t i = 0; i < nrecs; i++) {
            char dir[PATH_MAX], seal[PATH_MAX + 8];
            store_recording_dir(data_dir, &recs[i], dir);
            snprintf(seal, sizeof(seal), "%s/seal", dir);
            if (access(dir, F_OK) != 0)
                continue; /* killed before the directory was made */
            CHECK(access(seal, F_OK) == 0);
            /* Its segment files are exactly 0 .. n-1, every acknowledged one
             * among them, and the seal covers all n. */
            uint64_t *list = NULL;
            size_t n = 0;
            REQUIRE(store_list_segments(dir, &list, &n, &err) == CU_OK);
            for (size_t k = 0; k < n; k++)
                CHECK_EQ_INT(list[k], k);
            for (size_t k = 0; k < nacked; k++)
                if (store_id_equal(&acked[k].rec, &recs[i]))
                    CHECK(acked[k].idx < n);
            free(list);
            cu_buf sealbuf;
            store_seal sl;
            char why[200];
            cu_buf_init(&sealbuf, STORE_SEAL_LEN);
            CHECK(store_read_file(seal, STORE_SEAL_LEN, &sealbuf, &err) == CU_OK &&
                  store_seal_parse((const uint8_t *)sealbuf.data, sealbuf.len, &sl, why,
                                   sizeof(why)) == CU_OK &&
                  sl.count == n);
            cu_buf_free(&sealbuf);
            char cmd[PATH_MAX + 64];
            snprintf(cmd, sizeof(cmd), "ls '%s' | grep -q '\\.tmp$'", dir);
            CHECK(system(cmd) != 0);
            st_verify_result v = st_verify(data_dir, conn, &recs[i], false);
            CHECK_EQ_INT(v.rc, CU_OK);
            CHECK_EQ_INT(v.rep.problems, 0);
            if (v.rep.problems)
                fprintf(stderr, "round %d:\n%s", round, v.text);
            free(v.text);
        }
        total_acked += nacked;
        total_recordings += nrecs;
        free(acked);
        free(recs);
        if (test_failures)
            break;
    }
    cu_buf_free(&plain);

    /* And the whole store, index included, at the end. */
    st_verify_result v = st_verify(data_dir, conn, NULL, false);
    CHECK_EQ_INT(v.rep.problems, 0);
    if (v.rep.problems)
        fprintf(stderr, "%s", v.text);
    free(v.text);
    printf("test_store_crash: %d kills (%llu mid-write), %llu recordings, %llu acknowledged "
           "segments, all verified; %llu segments in the store\n",
           CRASH_ROUNDS, (unsigned long long)kills_mid_write, (unsigned long long)total_recordings,
           (unsigned long long)total_acked, (unsigned long long)v.rep.segments);
    PQfinish(conn);
    test_remove_tree(data_dir);
    return test_finish("test_store_crash");
}
