/*
 * The store against a failing disk and against power cuts, through the
 * fsshim.so LD_PRELOAD library (tests/faults/fsshim.c). Each case runs a
 * writer in a child process with the shim loaded; the parent, without it,
 * then does what the next start does and checks what is on disk and in the
 * index. Three modes (the first argument):
 *
 *   faults    for each failure point (write, fsync, rename, directory fsync;
 *             of a segment or of a seal; EIO or ENOSPC): no segment that was
 *             not acknowledged is indexed or left under a segment's name,
 *             every acknowledged one verifies, the stream goes on in a
 *             continuation recording, the damaged recording's seal is on
 *             disk, verify finds no problem.
 *   powercut  POWERCUT_RUNS cuts at random points of a writer that never
 *             stops, each dropping whatever no fsync covered; after each,
 *             recovery, then every segment ever acknowledged must read back
 *             with its SHA-256, and verify finds no problem.
 *   erase     an erasure cut at each of its steps in turn: afterwards the
 *             recording is either intact (the cut came before the commit)
 *             or erased (never decryptable again, verify says erased, the
 *             next start removes what is left), never anything else.
 *
 * Run under with-pg; FSSHIM names the shim (ctest sets it).
 */
#include "store_testlib.h"

#include <openssl/evp.h>
#include <sys/wait.h>
#include <time.h>

#define POWERCUT_RUNS  100
#define FAULT_SEGMENTS 12

static char data_dir[128];
static int report_fd = -1;

/* ------------------------------------------------------------- reports */

static void report_line(const char *fmt, ...) CU_PRINTF(1, 2);
static void report_line(const char *fmt, ...)
{
    char line[200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* One write below PIPE_BUF: never torn, whenever the process dies. */
    if (write(report_fd, line, (size_t)n) != n)
        _exit(3);
}

static void on_ack(void *ctx, const store_id *rec, uint64_t index, bool ok)
{
    char id[37];
    (void)ctx;
    store_id_format(rec, id);
    report_line("%c %s %llu\n", ok ? 'A' : 'F', id, (unsigned long long)index);
}

/* What a child reported: recordings (with what they continue), segments. */
typedef struct {
    store_id rec;
    uint64_t idx;
    uint8_t sha[32];
    bool acked, failed;
} seg_report;

typedef struct {
    store_id id;
    bool has_continues;
    store_id continues;
} rec_report;

typedef struct {
    seg_report *segs;
    size_t nsegs;
    rec_report *recs;
    size_t nrecs;
} child_report;

static seg_report *find_seg(child_report *r, const store_id *rec, uint64_t idx)
{
    for (size_t i = 0; i < r->nsegs; i++)
        if (r->segs[i].idx == idx && store_id_equal(&r->segs[i].rec, rec))
            return &r->segs[i];
    return NULL;
}

static void parse_report(const char *text, child_report *r)
{
    size_t cap = 64;
    memset(r, 0, sizeof(*r));
    r->segs = cu_xcalloc(cap, sizeof(*r->segs));
    r->recs = cu_xcalloc(cap, sizeof(*r->recs));
    const char *p = text;
    while (p && *p) {
        const char *end = strchr(p, '\n');
        char line[200], kind, id[40], extra[80] = "";
        unsigned long long idx = 0;
        size_t n = end ? (size_t)(end - p) : strlen(p);
        snprintf(line, sizeof(line), "%.*s", (int)n, p);
        p = end ? end + 1 : NULL;
        int got = sscanf(line, "%c %39s %llu %79s", &kind, id, &idx, extra);
        store_id rec;
        if (got < 2 || !store_id_parse(id, &rec))
            continue;
        if (r->nsegs == cap || r->nrecs == cap) {
            cap *= 2;
            r->segs = realloc(r->segs, cap * sizeof(*r->segs));
            r->recs = realloc(r->recs, cap * sizeof(*r->recs));
            REQUIRE(r->segs && r->recs);
        }
        if (kind == 'R') {
            rec_report *rr = &r->recs[r->nrecs++];
            memset(rr, 0, sizeof(*rr));
            rr->id = rec;
            sscanf(line, "R %*s %*s %39s", extra);
            rr->has_continues = store_id_parse(extra, &rr->continues);
        } else if (kind == 'S' && got == 4) {
            seg_report *s = &r->segs[r->nsegs++];
            memset(s, 0, sizeof(*s));
            s->rec = rec;
            s->idx = idx;
            REQUIRE(cu_hex_decode(extra, s->sha, 32));
        } else if (kind == 'A' || kind == 'F') {
            seg_report *s = find_seg(r, &rec, idx);
            if (s && kind == 'A')
                s->acked = true;
            if (s && kind == 'F')
                s->failed = true;
        }
    }
}

static void report_free(child_report *r)
{
    free(r->segs);
    free(r->recs);
}

/* --------------------------------------------------------------- children */

static store *child_store(const char *dsn)
{
    return st_open_store(data_dir, dsn, on_ack, NULL);
}

static store_recording *child_open(store *s, const store_id *continues, store_id *id_out)
{
    store_recording *r = NULL;
    store_id id;
    cu_err err;
    char idtext[37], prev[37] = "-";
    store_recording_attrs attrs = {.meta = "source=test\n", .continues = continues};
    if (store_recording_open(s, &attrs, &r, &id, &err) != CU_OK) {
        fprintf(stderr, "child: %s\n", err.msg);
        _exit(4);
    }
    store_id_format(&id, idtext);
    if (continues)
        store_id_format(continues, prev);
    report_line("R %s 0 %s\n", idtext, prev);
    *id_out = id;
    return r;
}

/* Submit one random segment of @p len bytes, its SHA-256 reported first. */
static void child_submit(store_recording *r, const store_id *id, uint64_t expect_idx, size_t len,
                         int64_t t)
{
    uint8_t *copy = NULL, sha[32];
    char idtext[37], hex[65];
    cu_chunk *data = st_random_chain(len, &copy);
    EVP_Digest(copy, len, sha, NULL, EVP_sha256(), NULL);
    free(copy);
    store_id_format(id, idtext);
    cu_hex_encode(sha, 32, hex);
    report_line("S %s %llu %s\n", idtext, (unsigned long long)expect_idx, hex);
    store_segment_meta m = {.start_us = t, .end_us = t + 999, .packets = 1};
    uint64_t idx = 0;
    if (store_segment_submit(r, data, len, &m, true, &idx) != CU_OK || idx != expect_idx)
        _exit(5);
}

/*
 * As a stream does in ingestd: segments one after another; when a write
 * failed, the damaged recording is closed and the rest goes into a
 * continuation recording that names it.
 */
static void child_faults(const char *dsn)
{
    store *s = child_store(dsn);
    store_id id, prev;
    store_recording *r = child_open(s, NULL, &id);
    uint64_t next = 0;
    for (int i = 0; i < FAULT_SEGMENTS; i++) {
        if (store_recording_damaged(r)) {
            prev = id;
            store_recording_close(r);
            r = child_open(s, &prev, &id);
            next = 0;
        }
        child_submit(r, &id, next++, 2000 + (size_t)i * 3001, i * 1000000LL);
        store_flush(s); /* settled before the next one, as 2-s segments are */
    }
    store_recording_close(r);
    store_close(s, 10000);
    _exit(0);
}

static void child_powercut(const char *dsn, unsigned seed)
{
    store *s = child_store(dsn);
    srand(seed);
    for (;;) {
        store_id id;
        store_recording *r = child_open(s, NULL, &id);
        int n = 1 + rand() % 10;
        for (int i = 0; i < n; i++)
            child_submit(r, &id, (uint64_t)i, 1 + (size_t)(rand() % 20000), i * 1000000LL);
        store_recording_close(r);
    }
}

static void child_erase(const char *dsn, const char *rec_text)
{
    store_id rec;
    store_erasure er;
    cu_err err;
    PGconn *conn = NULL;
    if (!store_id_parse(rec_text, &rec) || db_connect(dsn, "erase-child", &conn, &err) != CU_OK)
        _exit(2);
    cu_rc rc = store_recording_erase(data_dir, conn, &rec, &st_erase_why, &er, &err);
    PQfinish(conn);
    _exit(rc == CU_OK ? 0 : 6);
}

/* Run this program again as a child with the shim loaded and @p env added. */
static int run_child(const char *mode, const char *arg, char *const *env, size_t nenv, cu_buf *out)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        char fd_text[16];
        snprintf(fd_text, sizeof(fd_text), "%d", fds[1]);
        setenv("LD_PRELOAD", getenv("FSSHIM"), 1);
        /* The shim comes before ASan's runtime in a sanitizer build. */
        setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
        for (size_t i = 0; i < nenv; i++)
            putenv(env[i]);
        char *argv[] = {"test_store_faults",      "--child", (char *)mode, fd_text, data_dir,
                        (char *)(arg ? arg : ""), NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fds[1]);
    cu_buf_reset(out);
    char chunk[4096];
    ssize_t got;
    while ((got = read(fds[0], chunk, sizeof(chunk))) > 0)
        REQUIRE(cu_buf_append(out, chunk, (size_t)got) == CU_OK);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ------------------------------------------------------------ the parent */

/* What the next start does: the store opened (catch-up, erasures finished) and closed. */
static void next_start(const char *dsn)
{
    store *s = NULL;
    cu_err err = {""};
    store_opts o = {.data_dir = data_dir, .dsn = dsn, .keys = st_keys(data_dir)};
    REQUIRE(store_open(&o, &s, &err) == CU_OK);
    REQUIRE(store_index_wait(s, 20000));
    store_close(s, 10000);
}

static char *read_text(const char *path)
{
    cu_buf b;
    cu_err err;
    cu_buf_init(&b, 1 << 20);
    if (store_read_file(path, 1 << 20, &b, &err) != CU_OK) {
        cu_buf_free(&b);
        return cu_xstrdup("");
    }
    char *s = cu_xstrdup(b.data ? b.data : "");
    cu_buf_free(&b);
    return s;
}

/* Every acknowledged segment reads back with the SHA-256 it was submitted with. */
static size_t check_acked(PGconn *conn, const child_report *r, size_t *lost)
{
    cu_buf plain;
    cu_err err;
    size_t n = 0;
    cu_buf_init(&plain, STORE_SEGMENT_MAX);
    for (size_t i = 0; i < r->nsegs; i++) {
        const seg_report *s = &r->segs[i];
        if (!s->acked)
            continue;
        n++;
        uint8_t sha[32];
        cu_rc rc =
            store_segment_read(data_dir, conn, st_keys(data_dir), &s->rec, s->idx, &plain, &err);
        if (rc == CU_OK)
            EVP_Digest(plain.data, plain.len, sha, NULL, EVP_sha256(), NULL);
        if (rc != CU_OK || memcmp(sha, s->sha, 32) != 0) {
            char id[37];
            store_id_format(&s->rec, id);
            fprintf(stderr, "acknowledged segment %s/%llu %s: %s\n", id, (unsigned long long)s->idx,
                    rc ? "lost" : "corrupt", rc ? err.msg : "");
            (*lost)++;
        }
    }
    cu_buf_free(&plain);
    return n;
}

static long long query_int(PGconn *conn, const char *fmt, const store_id *rec)
{
    char id[37], sql[512];
    store_id_format(rec, id);
    snprintf(sql, sizeof(sql), fmt, id);
    return pgtest_query_int(conn, sql);
}

typedef struct {
    const char *spec;
    bool damages; /* a segment fails: the recording is damaged and continued */
} fault_case;

static const fault_case fault_cases[] = {
    {"write:seg:4:EIO", true},
    {"write:seg:4:ENOSPC", true},
    {"fsync:seg:4:EIO", true},
    {"fsync:seg:4:ENOSPC", true},
    {"rename:seg:4:EIO", true},
    {"dirfsync:seg:4:EIO", true},
    {"write:seal:1:ENOSPC", false},
    {"fsync:seal:1:EIO", false},
    {"rename:seal:1:EIO", false},
    {"dirfsync:seal:1:EIO", false},
    {"write:seg:4:EIO,fsync:seal:1:EIO", true},
};

static void test_faults(const char *dsn, PGconn *conn)
{
    cu_buf out;
    cu_buf_init(&out, 16 << 20);
    printf("%-34s %-8s %-44s %s\n", "failure point", "injected", "recordings (segments)", "verify");
    for (size_t c = 0; c < CU_ARRAY_LEN(fault_cases); c++) {
        const fault_case *fc = &fault_cases[c];
        st_make_data_dir(data_dir, sizeof(data_dir), "faults");
        char spec[128], log_env[PATH_MAX + 32], log_path[PATH_MAX];
        snprintf(spec, sizeof(spec), "CUSTOS_FAULT=%s", fc->spec);
        snprintf(log_path, sizeof(log_path), "%s.log", data_dir);
        snprintf(log_env, sizeof(log_env), "CUSTOS_FAULT_LOG=%s", log_path);
        char *env[] = {spec, log_env};
        int status = run_child("faults", NULL, env, 2, &out);
        CHECK_EQ_INT(status, 0);
        char *log = read_text(log_path);
        int injected = 0;
        for (const char *p = log; (p = strstr(p, "fault ")); p++)
            injected++;
        /* Else the case tests nothing. */
        if (!injected)
            fprintf(stderr, "%s: the fault was never injected\n", fc->spec);
        CHECK(injected >= 1);
        child_report r;
        parse_report(out.data ? out.data : "", &r);
        next_start(dsn);

        size_t lost = 0, acked = check_acked(conn, &r, &lost);
        CHECK_EQ_INT(lost, 0);
        char summary[200] = "";
        size_t problems = 0;
        for (size_t i = 0; i < r.nrecs; i++) {
            const rec_report *rr = &r.recs[i];
            size_t rec_acked = 0, max_acked_plus1 = 0;
            for (size_t k = 0; k < r.nsegs; k++)
                if (r.segs[k].acked && store_id_equal(&r.segs[k].rec, &rr->id)) {
                    rec_acked++;
                    if (r.segs[k].idx + 1 > max_acked_plus1)
                        max_acked_plus1 = r.segs[k].idx + 1;
                }
            /* Acknowledged segments are a prefix, and exactly what is indexed. */
            CHECK_EQ_INT(max_acked_plus1, rec_acked);
            CHECK_EQ_INT(
                query_int(conn, "SELECT count(*) FROM segments WHERE recording_id = '%s'", &rr->id),
                rec_acked);
            CHECK_EQ_INT(query_int(conn,
                                   "SELECT segment_count FROM recordings WHERE id = '%s' AND "
                                   "state IN ('sealed', 'damaged')",
                                   &rr->id),
                         rec_acked);
            /* No other file passes for a segment. */
            char dir[PATH_MAX], seal[PATH_MAX + 8];
            uint64_t *list = NULL;
            size_t nfiles = 0;
            cu_err err;
            store_recording_dir(data_dir, &rr->id, dir);
            snprintf(seal, sizeof(seal), "%s/seal", dir);
            CHECK(access(seal, F_OK) == 0);
            REQUIRE(store_list_segments(dir, &list, &nfiles, &err) == CU_OK);
            CHECK_EQ_INT(nfiles, rec_acked);
            for (size_t k = 0; k < nfiles; k++)
                CHECK_EQ_INT(list[k], k);
            free(list);
            st_verify_result v = st_verify(data_dir, conn, &rr->id, false);
            CHECK_EQ_INT(v.rc, CU_OK);
            problems += v.rep.problems;
            if (v.rep.problems)
                fprintf(stderr, "%s:\n%s", fc->spec, v.text);
            free(v.text);
            char one[64];
            long long damaged = query_int(
                conn, "SELECT count(*) FROM recordings WHERE id = '%s' AND state = 'damaged'",
                &rr->id);
            snprintf(one, sizeof(one), "%s%s %zu%s", i ? ", " : "", damaged ? "damaged" : "sealed",
                     rec_acked, rr->has_continues ? " (continues)" : "");
            strncat(summary, one, sizeof(summary) - strlen(summary) - 1);
            if (rr->has_continues)
                CHECK_EQ_INT(query_int(conn,
                                       "SELECT count(*) FROM recordings r JOIN recordings p ON "
                                       "p.id = r.continues WHERE r.id = '%s' AND p.state = "
                                       "'damaged'",
                                       &rr->id),
                             1);
        }
        if (fc->damages) {
            /* Damaged, then continued: the stream's footage kept going. */
            CHECK_EQ_INT(r.nrecs, 2);
            CHECK(r.nrecs == 2 && r.recs[1].has_continues &&
                  store_id_equal(&r.recs[1].continues, &r.recs[0].id));
            CHECK_EQ_INT(acked, FAULT_SEGMENTS - 1);
            CHECK_EQ_INT(query_int(conn,
                                   "SELECT count(*) FROM security_alerts WHERE kind = "
                                   "'recording_damaged' AND detail LIKE '%%%s%%'",
                                   &r.recs[0].id),
                         1);
        } else {
            /* A seal that failed once was written on the next attempt. */
            CHECK_EQ_INT(r.nrecs, 1);
            CHECK_EQ_INT(acked, FAULT_SEGMENTS);
        }
        if (fc->damages && r.nrecs == 2) {
            /* The index lost (a restored backup) and rebuilt from the files:
             * the continuation is linked again whichever comes first. */
            PGconn *insider = st_insider();
            char sql[400], a_id[37], b_id[37];
            store_id_format(&r.recs[0].id, a_id);
            store_id_format(&r.recs[1].id, b_id);
            snprintf(sql, sizeof(sql),
                     "DELETE FROM segments WHERE recording_id IN ('%s', '%s'); "
                     "DELETE FROM recordings WHERE id IN ('%s', '%s')",
                     a_id, b_id, a_id, b_id);
            cu_err err;
            REQUIRE(db_exec(insider, sql, &err) == CU_OK);
            PQfinish(insider);
            store_reindex_report rr;
            CHECK_EQ_INT(store_reindex(data_dir, conn, &rr, &err), CU_OK);
            CHECK_EQ_INT(rr.recordings, 2);
            CHECK_EQ_INT(query_int(conn,
                                   "SELECT count(*) FROM recordings r JOIN recordings p ON "
                                   "p.id = r.continues WHERE r.id = '%s' AND p.state = 'damaged'",
                                   &r.recs[1].id),
                         1);
            for (size_t i = 0; i < r.nrecs; i++) {
                st_verify_result v = st_verify(data_dir, conn, &r.recs[i].id, false);
                CHECK_EQ_INT(v.rep.problems, 0);
                if (v.rep.problems)
                    fprintf(stderr, "%s, after reindex:\n%s", fc->spec, v.text);
                free(v.text);
            }
        }
        printf("%-34s %-8d %-44s %zu problems\n", fc->spec, injected, summary, problems);
        report_free(&r);
        free(log);
        unlink(log_path);
        test_remove_tree(data_dir);
    }
    cu_buf_free(&out);
}

static void test_powercut(const char *dsn, PGconn *conn)
{
    cu_buf out, all;
    cu_buf_init(&out, 16 << 20);
    cu_buf_init(&all, 256 << 20);
    st_make_data_dir(data_dir, sizeof(data_dir), "powercut");
    char log_path[PATH_MAX];
    snprintf(log_path, sizeof(log_path), "%s.log", data_dir);
    unsigned seed = (unsigned)time(NULL);
    const char *given = getenv("CUSTOS_SEED");
    if (given)
        seed = (unsigned)strtoul(given, NULL, 10);
    srand(seed);
    printf("powercut: seed %u (CUSTOS_SEED replays it)\n", seed);
    size_t total_acked = 0, lost = 0, cuts = 0;
    for (int run = 0; run < POWERCUT_RUNS; run++) {
        char cut[64], root[PATH_MAX + 32], seed_env[64], log_env[PATH_MAX + 32], arg[16];
        /* Early cuts land in start-up (keys, recovery); most in writing. */
        long at = run < 10 ? 1 + rand() % 60 : 1 + rand() % 1500;
        snprintf(cut, sizeof(cut), "CUSTOS_POWERCUT=%ld", at);
        snprintf(root, sizeof(root), "CUSTOS_POWERCUT_ROOT=%s", data_dir);
        snprintf(seed_env, sizeof(seed_env), "CUSTOS_POWERCUT_SEED=%u", seed + (unsigned)run);
        snprintf(log_env, sizeof(log_env), "CUSTOS_FAULT_LOG=%s", log_path);
        snprintf(arg, sizeof(arg), "%u", seed + (unsigned)run);
        char *env[] = {cut, root, seed_env, log_env};
        int status = run_child("powercut", arg, env, 4, &out);
        CHECK_EQ_INT(status, 77);
        cuts += status == 77;
        REQUIRE(cu_buf_append(&all, out.data ? out.data : "", out.len) == CU_OK);

        next_start(dsn);
        /* This run's acknowledged segments now; every run's every 25 runs
         * (a later recovery must not harm an earlier one's) and at the end. */
        size_t before = lost;
        child_report mine;
        parse_report(out.data ? out.data : "", &mine);
        size_t mine_lost = 0;
        total_acked += check_acked(conn, &mine, &mine_lost);
        lost += mine_lost;
        if (run % 25 == 24) {
            child_report r;
            size_t again = 0;
            parse_report(all.data ? all.data : "", &r);
            check_acked(conn, &r, &again);
            lost += again;
            report_free(&r);
        }
        for (size_t i = 0; i < mine.nrecs; i++) {
            char dir[PATH_MAX];
            store_recording_dir(data_dir, &mine.recs[i].id, dir);
            if (access(dir, F_OK) != 0)
                continue; /* cut before its directory was durable: no segment acked */
            st_verify_result v = st_verify(data_dir, conn, &mine.recs[i].id, false);
            CHECK_EQ_INT(v.rep.problems, 0);
            if (v.rep.problems)
                fprintf(stderr, "run %d (cut at %ld):\n%s", run, at, v.text);
            free(v.text);
        }
        report_free(&mine);
        if (lost != before || test_failures) {
            fprintf(stderr, "run %d: cut at operation %ld (seed %u)\n", run, at, seed);
            break;
        }
    }
    st_verify_result v = st_verify(data_dir, conn, NULL, false);
    char *log = read_text(log_path);
    size_t torn = 0, undone = 0;
    for (const char *p = log; (p = strstr(p, "powercut at ")); p++) {
        long a;
        int t, u;
        if (sscanf(p, "powercut at %ld: %d files torn, %d directory changes undone", &a, &t, &u) ==
            3)
            torn += (size_t)t, undone += (size_t)u;
    }
    printf("powercut: %zu cuts, %zu unsynced writes torn, %zu directory changes undone; "
           "%zu acknowledged segments, %zu lost or corrupt; the whole store: %llu recordings, "
           "%llu segments, %llu problems\n",
           cuts, torn, undone, total_acked, lost, (unsigned long long)v.rep.recordings,
           (unsigned long long)v.rep.segments, (unsigned long long)v.rep.problems);
    CHECK_EQ_INT(lost, 0);
    CHECK_EQ_INT(v.rep.problems, 0);
    if (v.rep.problems)
        fprintf(stderr, "%s", v.text);
    CHECK(torn > 0 && undone > 0); /* the cuts did drop something */
    free(v.text);
    free(log);
    unlink(log_path);
    cu_buf_free(&out);
    cu_buf_free(&all);
    test_remove_tree(data_dir);
}

static void test_erase(const char *dsn, PGconn *conn)
{
    cu_buf out;
    cu_buf_init(&out, 1 << 20);
    int intact = 0, erased = 0;
    for (long at = 1;; at++) {
        st_make_data_dir(data_dir, sizeof(data_dir), "erase");
        /* A sealed recording of 5 segments, its key still pending on
         * alternate rounds (the index has not caught up yet). */
        store *s = NULL;
        cu_err err = {""};
        store_opts o = {.data_dir = data_dir, .dsn = dsn, .keys = st_keys(data_dir)};
        REQUIRE(store_open(&o, &s, &err) == CU_OK);
        store_recording *r = NULL;
        store_id id;
        REQUIRE(store_recording_open(s, NULL, &r, &id, &err) == CU_OK);
        for (int i = 0; i < 5; i++) {
            store_segment_meta m = {.start_us = i, .end_us = i + 1};
            REQUIRE(store_segment_submit(r, st_random(3000), 3000, &m, true, NULL) == CU_OK);
        }
        store_recording_close(r);
        store_flush(s);
        REQUIRE(store_index_wait(s, 10000));
        store_close(s, 10000);
        if (at % 2 == 0) { /* a pending key file as well as the row */
            store_dek dek;
            REQUIRE(store_dek_load(data_dir, conn, st_keys(data_dir), &id, &dek, &err) == CU_OK);
            REQUIRE(store_pending_write(data_dir, &id, &dek, &err) == CU_OK);
            store_dek_wipe(&dek);
        }
        char idtext[37], cut[64], root[PATH_MAX + 32];
        store_id_format(&id, idtext);
        snprintf(cut, sizeof(cut), "CUSTOS_POWERCUT=%ld", at);
        snprintf(root, sizeof(root), "CUSTOS_POWERCUT_ROOT=%s", data_dir);
        char *env[] = {cut, root};
        int status = run_child("erase", idtext, env, 2, &out);
        bool finished = status == 0;
        CHECK(status == 0 || status == 77);

        /* What every later look sees, before and after the next start. */
        for (int pass = 0; pass < 2; pass++) {
            if (pass)
                next_start(dsn);
            long long is_erased = query_int(
                conn, "SELECT count(*) FROM recordings WHERE id = '%s' AND state = 'erased'", &id);
            st_verify_result v = st_verify(data_dir, conn, &id, false);
            CHECK_EQ_INT(v.rep.problems, 0);
            if (v.rep.problems)
                fprintf(stderr, "erase cut at %ld, pass %d:\n%s", at, pass, v.text);
            cu_buf plain;
            cu_buf_init(&plain, STORE_SEGMENT_MAX);
            cu_rc rc = store_segment_read(data_dir, conn, st_keys(data_dir), &id, 0, &plain, &err);
            cu_buf_free(&plain);
            store_dek dek;
            bool pending = store_pending_read(data_dir, &id, &dek, &err) == CU_OK;
            if (is_erased) {
                /* Erased: no key anywhere, nothing decrypts, verify says erased. */
                CHECK_EQ_INT(rc, CU_ERR_NOTFOUND);
                CHECK(!pending);
                CHECK_EQ_INT(query_int(conn,
                                       "SELECT count(*) FROM recording_keys WHERE recording_id = "
                                       "'%s'",
                                       &id),
                             0);
                CHECK_EQ_INT(v.rep.erased, 1);
                if (pass) {
                    char dir[PATH_MAX];
                    store_recording_dir(data_dir, &id, dir);
                    CHECK(access(dir, F_OK) != 0); /* the next start finished it */
                }
            } else {
                /* Intact: every segment reads, verify finds nothing wrong. */
                CHECK(!finished);
                CHECK_EQ_INT(rc, CU_OK);
                CHECK_EQ_INT(v.rep.segments, 5);
            }
            if (pass)
                is_erased ? erased++ : intact++;
            free(v.text);
        }
        test_remove_tree(data_dir);
        if (finished || test_failures)
            break;
    }
    printf("erase: cut at each of its steps: %d times before its commit (intact), %d after "
           "(erased), then the whole erasure\n",
           intact, erased);
    CHECK(intact >= 2 && erased >= 2);
    cu_buf_free(&out);
}

int main(int argc, char **argv)
{
    const char *dsn = getenv("CUSTOS_TEST_DSN");
    if (argc >= 6 && strcmp(argv[1], "--child") == 0) {
        report_fd = atoi(argv[3]);
        snprintf(data_dir, sizeof(data_dir), "%s", argv[4]);
        atomic_store(&cu_log_threshold, CU_LOG_ERROR);
        if (strcmp(argv[2], "faults") == 0)
            child_faults(dsn);
        if (strcmp(argv[2], "powercut") == 0)
            child_powercut(dsn, (unsigned)strtoul(argv[5], NULL, 10));
        if (strcmp(argv[2], "erase") == 0)
            child_erase(dsn, argv[5]);
        return 2;
    }
    if (!dsn || !getenv("FSSHIM") || argc != 2) {
        fprintf(stderr,
                "usage: FSSHIM=fsshim.so with-pg test_store_faults faults|powercut|erase\n");
        return 1;
    }
    atomic_store(&cu_log_threshold, CU_LOG_ERROR);
    PGconn *conn = st_connect(dsn);
    if (strcmp(argv[1], "faults") == 0)
        test_faults(dsn, conn);
    else if (strcmp(argv[1], "powercut") == 0)
        test_powercut(dsn, conn);
    else if (strcmp(argv[1], "erase") == 0)
        test_erase(dsn, conn);
    else
        return 1;
    PQfinish(conn);
    return test_finish("test_store_faults");
}
