/*
 * The evidence store on a real PostgreSQL: round trip, nonces, key rotation,
 * erasure, every kind of tampering, a write failure, and a database outage
 * while segments are written.
 */
#include "store_testlib.h"
#include "tests/harness/pgtest.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

static char data_dir[128];
static PGconn *conn;

typedef struct {
    _Atomic int acked, failed;
} ack_counts;

static void count_ack(void *ctx, const store_id *rec, uint64_t index, bool ok)
{
    ack_counts *c = ctx;
    (void)rec;
    (void)index;
    if (ok)
        atomic_fetch_add(&c->acked, 1);
    else
        atomic_fetch_add(&c->failed, 1);
}

static store *open_store(const char *dsn, ack_counts *acks)
{
    return st_open_store(data_dir, dsn, acks ? count_ack : NULL, acks);
}

/* Write a recording of @p n segments; keep copies of the plaintexts. */
static store_id write_recording(store *s, int n, uint8_t **plain, size_t *lens)
{
    store_recording *r = NULL;
    store_id id;
    cu_err err;
    REQUIRE(store_recording_open(s, NULL, &r, &id, &err) == CU_OK);
    for (int i = 0; i < n; i++) {
        size_t len = i == 0 ? 0 : 1000 + (size_t)i * 7919; /* an empty one too */
        uint8_t *copy = NULL;
        cu_chunk *data = st_random_chain(len, &copy);
        if (plain) {
            plain[i] = copy;
            lens[i] = len;
        } else {
            free(copy);
        }
        store_segment_meta m = {.start_us = 1700000000000000 + i * 2000000,
                                .end_us = 1700000000000000 + i * 2000000 + 1999000,
                                .packets = 100 + (uint32_t)i,
                                .lost = i == 2 ? 3 : 0,
                                .flags = i == 2 ? STORE_SEG_LOSS : 0};
        uint64_t idx = 99;
        REQUIRE(store_segment_submit(r, data, len, &m, true, &idx) == CU_OK);
        CHECK_EQ_INT(idx, i);
    }
    store_recording_close(r);
    return id;
}

static void seg_path(const store_id *rec, uint64_t idx, char out[PATH_MAX])
{
    char dir[PATH_MAX];
    store_recording_dir(data_dir, rec, dir);
    store_segment_path(dir, idx, out);
}

static void test_round_trip(store *s, ack_counts *acks)
{
    uint8_t *plain[6];
    size_t lens[6];
    cu_err err = {""};
    store_id id = write_recording(s, 6, plain, lens);
    store_flush(s);
    CHECK(store_index_wait(s, 10000));
    CHECK_EQ_INT(atomic_load(&acks->acked), 6);
    CHECK_EQ_INT(atomic_load(&acks->failed), 0);

    cu_buf back;
    cu_buf_init(&back, STORE_SEGMENT_MAX);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_INT(
            store_segment_read(data_dir, conn, st_keys(data_dir), &id, (uint64_t)i, &back, &err),
            CU_OK);
        CHECK_EQ_INT(back.len, lens[i]);
        CHECK(back.len == lens[i] && memcmp(back.data, plain[i], lens[i]) == 0);
        free(plain[i]);
    }
    CHECK_EQ_INT(store_segment_read(data_dir, conn, st_keys(data_dir), &id, 6, &back, &err),
                 CU_ERR_INVALID);
    cu_buf_free(&back);

    /* Index: rows, seal, key; no pending key left. */
    char sql[256], idtext[37];
    store_id_format(&id, idtext);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM segments WHERE recording_id = '%s'", idtext);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), 6);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM recordings WHERE id = '%s' AND state = 'sealed' AND "
             "segment_count = 6",
             idtext);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), 1);
    snprintf(sql, sizeof(sql), "SELECT lost_packets FROM recording_stats WHERE recording_id = '%s'",
             idtext);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), 3);
    store_dek dek;
    CHECK_EQ_INT(store_pending_read(data_dir, &id, &dek, &err), CU_ERR_NOTFOUND);

    /* Nonces: the construction, and never repeated within the recording. */
    uint8_t seen[6][STORE_NONCE_LEN];
    for (int i = 0; i < 6; i++) {
        char path[PATH_MAX], why[200];
        cu_buf f;
        store_header h;
        cu_buf_init(&f, STORE_SEGMENT_MAX + 200);
        seg_path(&id, (uint64_t)i, path);
        REQUIRE(store_read_file(path, STORE_SEGMENT_MAX + 200, &f, &err) == CU_OK);
        CHECK_EQ_INT(store_header_parse((uint8_t *)f.data, f.len, f.len, &h, why, sizeof(why)),
                     CU_OK);
        uint8_t expect[STORE_NONCE_LEN];
        store_nonce_for((uint64_t)i, expect);
        CHECK(memcmp(h.nonce, expect, STORE_NONCE_LEN) == 0);
        memcpy(seen[i], h.nonce, STORE_NONCE_LEN);
        for (int j = 0; j < i; j++)
            CHECK(memcmp(seen[i], seen[j], STORE_NONCE_LEN) != 0);
        cu_buf_free(&f);
    }

    st_verify_result v = st_verify(data_dir, conn, &id, false);
    CHECK_EQ_INT(v.rc, CU_OK);
    CHECK_EQ_INT(v.rep.problems, 0);
    CHECK_EQ_INT(v.rep.segments, 6);
    if (v.rep.problems)
        fprintf(stderr, "%s", v.text);
    free(v.text);
    v = st_verify(data_dir, conn, &id, true);
    CHECK_EQ_INT(v.rep.problems, 0);
    free(v.text);
}

static void test_submit_limits(store *s)
{
    store_recording *r = NULL;
    cu_err err;
    REQUIRE(store_recording_open(s, NULL, &r, NULL, &err) == CU_OK);
    store_segment_meta bad_time = {.start_us = 10, .end_us = 5};
    CHECK_EQ_INT(store_segment_submit(r, st_random(10), 10, &bad_time, true, NULL), CU_ERR_INVALID);
    store_segment_meta bad_flags = {.start_us = 1, .end_us = 2, .flags = 0x80};
    CHECK_EQ_INT(store_segment_submit(r, st_random(10), 10, &bad_flags, true, NULL),
                 CU_ERR_INVALID);
    store_segment_meta ok = {.start_us = 1, .end_us = 2};
    /* A length that is not the chain's. */
    CHECK_EQ_INT(store_segment_submit(r, st_random(1), 2, &ok, true, NULL), CU_ERR_INVALID);
    /* The limit itself: a chain of STORE_SEGMENT_MAX + 1 bytes is refused,
     * one of STORE_SEGMENT_MAX taken. */
    static uint8_t zeros[CU_CHUNK_SIZE];
    cu_chunk *head = NULL, *tail = NULL;
    for (size_t left = STORE_SEGMENT_MAX + 1; left;) {
        size_t n = left < sizeof(zeros) ? left : sizeof(zeros);
        REQUIRE(cu_chunk_append(&head, &tail, zeros, n));
        left -= n;
    }
    CHECK_EQ_INT(store_segment_submit(r, head, STORE_SEGMENT_MAX + 1, &ok, true, NULL),
                 CU_ERR_INVALID);
    head = tail = NULL;
    for (size_t left = STORE_SEGMENT_MAX; left;) {
        size_t n = left < sizeof(zeros) ? left : sizeof(zeros);
        REQUIRE(cu_chunk_append(&head, &tail, zeros, n));
        left -= n;
    }
    uint64_t idx = 99;
    CHECK_EQ_INT(store_segment_submit(r, head, STORE_SEGMENT_MAX, &ok, true, &idx), CU_OK);
    CHECK_EQ_INT(idx, 0);
    store_recording_close(r);
    store_flush(s);
}

static void test_rotation(store *s)
{
    cu_err err = {""};
    store_id id = write_recording(s, 3, NULL, NULL);
    store_flush(s);
    REQUIRE(store_index_wait(s, 10000));
    char path[PATH_MAX];
    struct stat before, after;
    seg_path(&id, 1, path);
    REQUIRE(stat(path, &before) == 0);
    uint8_t xxh_before[16], xxh_after[16];
    cu_buf f;
    cu_buf_init(&f, 1 << 20);
    REQUIRE(store_read_file(path, 1 << 20, &f, &err) == CU_OK);
    store_xxh3(f.data, f.len, xxh_before);

    long long keys = pgtest_query_int(conn, "SELECT count(*) FROM recording_keys");
    store_rotate_report rep;
    CHECK_EQ_INT(store_keys_rotate(data_dir, conn, st_keys(data_dir), &rep, &err), CU_OK);
    CHECK_EQ_INT(rep.rewrapped, keys);
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM recording_keys WHERE kek_id = '%s'",
             rep.new_kek);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), keys);
    CHECK_EQ_INT(pgtest_query_int(conn, "SELECT count(DISTINCT kek_id) FROM recording_keys"), 1);

    /* Segment files untouched, still readable and verified. */
    REQUIRE(stat(path, &after) == 0);
    CHECK(before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
          before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
    REQUIRE(store_read_file(path, 1 << 20, &f, &err) == CU_OK);
    store_xxh3(f.data, f.len, xxh_after);
    CHECK(memcmp(xxh_before, xxh_after, 16) == 0);
    cu_buf back;
    cu_buf_init(&back, STORE_SEGMENT_MAX);
    CHECK_EQ_INT(store_segment_read(data_dir, conn, st_keys(data_dir), &id, 2, &back, &err), CU_OK);
    cu_buf_free(&back);
    cu_buf_free(&f);
    st_verify_result v = st_verify(data_dir, conn, NULL, false);
    CHECK_EQ_INT(v.rep.problems, 0);
    if (v.rep.problems)
        fprintf(stderr, "%s", v.text);
    free(v.text);

    /* New recordings are wrapped by the new KEK. */
    store_id fresh = write_recording(s, 1, NULL, NULL);
    store_flush(s);
    REQUIRE(store_index_wait(s, 10000));
    char idtext[37];
    store_id_format(&fresh, idtext);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM recording_keys WHERE recording_id = '%s' AND kek_id = '%s'",
             idtext, rep.new_kek);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), 1);
}

static void test_erase(store *s)
{
    cu_err err = {""};
    store_id id = write_recording(s, 4, NULL, NULL);
    store_flush(s);
    REQUIRE(store_index_wait(s, 10000));
    char dir[PATH_MAX], idtext[37], sql[256];
    store_recording_dir(data_dir, &id, dir);
    store_id_format(&id, idtext);
    store_erasure rec;
    CHECK_EQ_INT(store_recording_erase(data_dir, conn, &id, &st_erase_why, &rec, &err), CU_OK);
    CHECK(rec.audit_seq > 0);
    CHECK_EQ_INT(rec.segments, 4);
    CHECK(rec.bytes > 0);
    CHECK(rec.sealed);
    CHECK(store_id_equal(&rec.recording, &id));
    CHECK(access(dir, F_OK) != 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM recording_keys WHERE recording_id = '%s'",
             idtext);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), 0);
    /* The index rows stay as the record of what existed (hashes, not footage). */
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM segments WHERE recording_id = '%s'", idtext);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), 4);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM recordings WHERE id = '%s' AND state = 'erased'", idtext);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), 1);
    /* The deletion record is in the audit chain, in the same transaction. */
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM audit_log WHERE seq = %lld AND action = 'recording.erase' "
             "AND object LIKE 'recording:%s state=sealed segments=4 head=%%reason=test'",
             (long long)rec.audit_seq, idtext);
    CHECK_EQ_INT(pgtest_query_int(conn, sql), 1);
    /* Erasing it again changes nothing and writes no second record. */
    store_erasure again;
    CHECK_EQ_INT(store_recording_erase(data_dir, conn, &id, &st_erase_why, &again, &err), CU_OK);
    CHECK_EQ_INT(again.audit_seq, 0);
    store_dek dek;
    CHECK_EQ_INT(store_dek_load(data_dir, conn, st_keys(data_dir), &id, &dek, &err),
                 CU_ERR_NOTFOUND);
    cu_buf back;
    cu_buf_init(&back, STORE_SEGMENT_MAX);
    CHECK_EQ_INT(store_segment_read(data_dir, conn, st_keys(data_dir), &id, 0, &back, &err),
                 CU_ERR_NOTFOUND);
    cu_buf_free(&back);
    st_verify_result v = st_verify(data_dir, conn, &id, false);
    CHECK_EQ_INT(v.rep.problems, 0);
    CHECK_EQ_INT(v.rep.erased, 1);
    free(v.text);

    /* An open recording cannot be erased. */
    store_recording *r = NULL;
    store_id open_id;
    REQUIRE(store_recording_open(s, NULL, &r, &open_id, &err) == CU_OK);
    REQUIRE(store_index_wait(s, 10000));
    CHECK_EQ_INT(store_recording_erase(data_dir, conn, &open_id, &st_erase_why, &rec, &err),
                 CU_ERR_BUSY);
    store_recording_close(r);
    store_flush(s);
}

/* ------------------------------------------------------------ tampering */

static void flip_byte(const char *path, off_t offset)
{
    int fd = open(path, O_RDWR);
    REQUIRE(fd >= 0);
    uint8_t b;
    REQUIRE(pread(fd, &b, 1, offset) == 1);
    b ^= 0x01;
    REQUIRE(pwrite(fd, &b, 1, offset) == 1);
    close(fd);
}

static void copy_file(const char *from, const char *to)
{
    cu_buf b;
    cu_err err;
    cu_buf_init(&b, STORE_SEGMENT_MAX + 200);
    REQUIRE(store_read_file(from, STORE_SEGMENT_MAX + 200, &b, &err) == CU_OK);
    int fd = open(to, O_WRONLY | O_TRUNC | O_CREAT, 0640);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, b.data, b.len) == (ssize_t)b.len);
    close(fd);
    cu_buf_free(&b);
}

/* Expect verify (full, and quick when @p quick_too) to report @p needle for @p id. */
static void expect_detected(const store_id *id, const char *what, const char *needle,
                            const char *quick_needle)
{
    st_verify_result v = st_verify(data_dir, conn, id, false);
    CHECK_EQ_INT(v.rc, CU_OK);
    if (v.rep.problems == 0 || !strstr(v.text, needle))
        fprintf(stderr, "tamper '%s' not reported as '%s'; verify said:\n%s", what, needle, v.text);
    CHECK(v.rep.problems > 0);
    CHECK_STR_CONTAINS(v.text, needle);
    printf("detected %-28s %s", what, v.text);
    free(v.text);
    if (quick_needle) {
        v = st_verify(data_dir, conn, id, true);
        if (!strstr(v.text, quick_needle))
            fprintf(stderr, "quick verify missed '%s': %s", what, v.text);
        CHECK(v.rep.problems > 0);
        CHECK_STR_CONTAINS(v.text, quick_needle);
        free(v.text);
    }
}

static void test_tampering(store *s)
{
    store_id rec[9];
    for (int i = 0; i < 9; i++)
        rec[i] = write_recording(s, 5, NULL, NULL);
    store_flush(s);
    REQUIRE(store_index_wait(s, 10000));
    for (int i = 0; i < 9; i++) {
        st_verify_result v = st_verify(data_dir, conn, &rec[i], false);
        CHECK_EQ_INT(v.rep.problems, 0);
        free(v.text);
    }
    char a[PATH_MAX], b[PATH_MAX], tmp[PATH_MAX + 8], idtext[37], sql[512];

    seg_path(&rec[0], 2, a);
    flip_byte(a, STORE_HEADER_LEN + 500);
    expect_detected(&rec[0], "ciphertext bit flip", "authentication failed (GCM tag)", "XXH3");

    seg_path(&rec[1], 2, a);
    flip_byte(a, 87); /* packet count: still a well-formed header */
    expect_detected(&rec[1], "header bit flip", "authentication failed (GCM tag)", "XXH3");
    flip_byte(a, 87);
    flip_byte(a, 68); /* start time: now after the end */
    expect_detected(&rec[1], "header bit flip (times)", "end time before start time", "XXH3");

    seg_path(&rec[2], 3, a);
    REQUIRE(truncate(a, 1000) == 0);
    expect_detected(&rec[2], "truncation", "header says", "header says");

    seg_path(&rec[3], 2, a);
    REQUIRE(unlink(a) == 0);
    expect_detected(&rec[3], "middle segment removed", "segment 2: missing", "segment 2: missing");

    seg_path(&rec[4], 1, a);
    seg_path(&rec[4], 3, b);
    snprintf(tmp, sizeof(tmp), "%s.x", a);
    REQUIRE(rename(a, tmp) == 0 && rename(b, a) == 0 && rename(tmp, b) == 0);
    expect_detected(&rec[4], "two segments swapped", "file holds segment 3 (moved or swapped)",
                    "file holds segment 3");

    seg_path(&rec[5], 2, a);
    seg_path(&rec[6], 2, b);
    copy_file(b, a);
    expect_detected(&rec[5], "copied from another recording", "file belongs to recording",
                    "file belongs to recording");

    store_id_format(&rec[7], idtext);
    snprintf(sql, sizeof(sql),
             "UPDATE segments SET sha256 = sha256(sha256), xxh3 = substring(sha256 from 1 for 16) "
             "WHERE recording_id = '%s' AND idx = 1",
             idtext);
    PGconn *insider = st_insider();
    PGresult *res = PQexec(insider, sql);
    REQUIRE(PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(res), "1") == 0);
    PQclear(res);
    expect_detected(&rec[7], "index row altered", "index row differs from the file", "XXH3");

    char dir[PATH_MAX], seal[PATH_MAX + 8];
    store_recording_dir(data_dir, &rec[8], dir);
    snprintf(seal, sizeof(seal), "%s/seal", dir);
    flip_byte(seal, 60); /* inside the chain head */
    expect_detected(&rec[8], "sealed head altered (file)", "sealed head does not match the chain",
                    "sealed head does not match");
    flip_byte(seal, 60); /* put it back, alter the index's copy instead */
    st_verify_result v = st_verify(data_dir, conn, &rec[8], false);
    CHECK_EQ_INT(v.rep.problems, 0);
    free(v.text);
    store_id_format(&rec[8], idtext);
    snprintf(sql, sizeof(sql),
             "UPDATE recordings SET chain_head = sha256(chain_head) WHERE id = '%s'", idtext);
    res = PQexec(insider, sql);
    REQUIRE(PQresultStatus(res) == PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(insider);
    expect_detected(&rec[8], "sealed head altered (index)",
                    "index seal (count or chain head) "
                    "differs",
                    NULL);

    /* A seal rewritten consistently (head and count of a shorter chain)
     * without the data key: the MAC catches it. */
    store_id_format(&rec[6], idtext);
    store_recording_dir(data_dir, &rec[6], dir);
    snprintf(seal, sizeof(seal), "%s/seal", dir);
    flip_byte(seal, 95); /* sealed_at: not checked against anything but the MAC */
    expect_detected(&rec[6], "seal forged without the key", "seal MAC invalid", NULL);

    /* The meta file (device, codec) starts the chain: changing it shows. */
    store_recording *mr = NULL;
    store_id meta_rec;
    cu_err merr;
    store_recording_attrs attrs = {.device_id = 0, .meta = "source=test\ncodec=h264\n"};
    REQUIRE(store_recording_open(s, &attrs, &mr, &meta_rec, &merr) == CU_OK);
    store_segment_meta mm = {.start_us = 1, .end_us = 2};
    REQUIRE(store_segment_submit(mr, st_random(100), 100, &mm, true, NULL) == CU_OK);
    store_recording_close(mr);
    store_flush(s);
    REQUIRE(store_index_wait(s, 10000));
    v = st_verify(data_dir, conn, &meta_rec, false);
    CHECK_EQ_INT(v.rep.problems, 0);
    free(v.text);
    store_recording_dir(data_dir, &meta_rec, dir);
    REQUIRE(cu_file_write_durably(dir, "meta", "source=test\ncodec=h265\n", 24, 0640, &merr) ==
            CU_OK);
    expect_detected(&meta_rec, "meta file altered", "segment 0: hash chain broken",
                    "segment 0: hash chain broken");
    store_erasure mer;
    CHECK_EQ_INT(store_recording_erase(data_dir, conn, &meta_rec, &st_erase_why, &mer, &merr),
                 CU_OK);

    /* Everything else still verifies: problems are confined. */
    v = st_verify(data_dir, conn, NULL, false);
    CHECK(v.rep.problems >= 9);
    free(v.text);
    /* Clean up the tampered recordings so later checks see a clean store. */
    for (int i = 0; i < 9; i++) {
        store_erasure er;
        cu_err err;
        CHECK_EQ_INT(store_recording_erase(data_dir, conn, &rec[i], &st_erase_why, &er, &err),
                     CU_OK);
    }
}

/* ---------------------------------------------------------- write failure */

/* A segment that cannot be written (file size limit: EFBIG) is not
 * acknowledged, the recording is damaged and sealed at its last good
 * segment; later segments are refused. Runs in a child: the limit is
 * per process. */
static void test_write_failure(const char *dsn)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit lim = {.rlim_cur = 64 * 1024, .rlim_max = 64 * 1024};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
            _exit(10);
        ack_counts acks = {0};
        store *s = open_store(dsn, &acks);
        store_recording *r = NULL;
        store_id id;
        cu_err err;
        if (store_recording_open(s, NULL, &r, &id, &err) != CU_OK)
            _exit(11);
        store_segment_meta m = {.start_us = 1, .end_us = 2};
        if (store_segment_submit(r, st_random(1000), 1000, &m, true, NULL) != CU_OK ||
            store_segment_submit(r, st_random(200000), 200000, &m, true, NULL) != CU_OK)
            _exit(12);
        store_flush(s);
        /* After the failure the recording takes nothing more. */
        int late = store_segment_submit(r, st_random(100), 100, &m, true, NULL);
        bool damaged = store_recording_damaged(r);
        store_recording_close(r);
        store_flush(s);
        store_stats st;
        store_stats_get(s, &st);
        store_close(s, 5000);
        char idtext[37];
        store_id_format(&id, idtext);
        printf("write-failure recording %s\n", idtext);
        fflush(stdout);
        _exit(acks.acked == 1 && acks.failed == 1 && damaged && late == CU_ERR_INVALID &&
                      st.segments_failed == 1
                  ? 0
                  : 13);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "write-failure child: status %d\n", status);
    CHECK_EQ_INT(pgtest_query_int(conn,
                                  "SELECT count(*) FROM recordings WHERE state = 'damaged' AND "
                                  "segment_count = 1"),
                 1);
    st_verify_result v = st_verify(data_dir, conn, NULL, false);
    CHECK_EQ_INT(v.rep.problems, 0);
    if (v.rep.problems)
        fprintf(stderr, "%s", v.text);
    free(v.text);
}

/* ------------------------------------------------------- database outage */

static void test_database_outage(void)
{
    pgtest *pg = NULL;
    cu_err err = {""};
    char dir_save[sizeof(data_dir)];
    memcpy(dir_save, data_dir, sizeof(data_dir));
    st_make_data_dir(data_dir, sizeof(data_dir), "store-outage");

    REQUIRE(pgtest_start(&pg, &err) == CU_OK);
    PGconn *c = st_connect_as(pgtest_dsn(pg), pgtest_owner_dsn(pg));
    PQfinish(c);
    ack_counts acks = {0};
    store *s = open_store(pgtest_dsn(pg), &acks);
    store_recording *r = NULL;
    store_id id;
    REQUIRE(store_recording_open(s, NULL, &r, &id, &err) == CU_OK);
    store_segment_meta m = {.start_us = 1000, .end_us = 2000};
    for (int i = 0; i < 10; i++)
        REQUIRE(store_segment_submit(r, st_random(5000), 5000, &m, true, NULL) == CU_OK);
    store_flush(s);
    REQUIRE(store_index_wait(s, 10000));

    pgtest_server_stop(pg);
    /* While the database is away, segments keep landing and are acknowledged;
     * a second recording starts too (its key waits in keys/pending). */
    for (int i = 0; i < 20; i++)
        REQUIRE(store_segment_submit(r, st_random(5000), 5000, &m, true, NULL) == CU_OK);
    store_recording *r2 = NULL;
    store_id id2;
    REQUIRE(store_recording_open(s, NULL, &r2, &id2, &err) == CU_OK);
    for (int i = 0; i < 5; i++)
        REQUIRE(store_segment_submit(r2, st_random(3000), 3000, &m, true, NULL) == CU_OK);
    store_recording_close(r);
    store_recording_close(r2);
    store_flush(s);
    CHECK_EQ_INT(atomic_load(&acks.acked), 35);
    store_stats st;
    store_stats_get(s, &st);
    CHECK(!st.index_connected);
    CHECK(st.index_pending > 0);
    store_dek dek;
    CHECK_EQ_INT(store_pending_read(data_dir, &id2, &dek, &err), CU_OK);

    usleep(300000);
    REQUIRE(pgtest_server_start(pg, &err) == CU_OK);
    CHECK(store_index_wait(s, 30000));
    store_stats_get(s, &st);
    CHECK(st.index_connected);
    CHECK_EQ_INT(st.index_pending, 0);
    store_close(s, 10000);

    c = st_connect_as(pgtest_dsn(pg), pgtest_owner_dsn(pg));
    char sql[256], idtext[37];
    store_id_format(&id, idtext);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM segments WHERE recording_id = '%s'", idtext);
    CHECK_EQ_INT(pgtest_query_int(c, sql), 30);
    store_id_format(&id2, idtext);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM segments WHERE recording_id = '%s'", idtext);
    CHECK_EQ_INT(pgtest_query_int(c, sql), 5);
    CHECK_EQ_INT(pgtest_query_int(c, "SELECT count(*) FROM recordings WHERE state = 'sealed'"), 2);
    CHECK_EQ_INT(pgtest_query_int(c, "SELECT count(*) FROM recording_keys"), 2);
    CHECK_EQ_INT(store_pending_read(data_dir, &id2, &dek, &err), CU_ERR_NOTFOUND);
    st_verify_result v = st_verify(data_dir, c, NULL, false);
    CHECK_EQ_INT(v.rep.problems, 0);
    CHECK_EQ_INT(v.rep.segments, 35);
    if (v.rep.problems)
        fprintf(stderr, "%s", v.text);
    free(v.text);

    /* reindex from the files alone rebuilds the same index. */
    /* (the index rows lost as a restored backup loses them: only with the
     * superuser's help, triggers off) */
    PGconn *insider = NULL;
    char *insider_dsn = cu_xasprintf("%s dbname=custos", pgtest_admin_dsn(pg));
    REQUIRE(db_connect(insider_dsn, "insider", &insider, &err) == CU_OK);
    free(insider_dsn);
    REQUIRE(db_exec(insider, "SET session_replication_role = replica", &err) == CU_OK);
    REQUIRE(db_exec(insider, "DELETE FROM segments", &err) == CU_OK);
    PQfinish(insider);
    store_reindex_report rep;
    CHECK_EQ_INT(store_reindex(data_dir, c, &rep, &err), CU_OK);
    CHECK_EQ_INT(rep.segments, 35);
    CHECK_EQ_INT(rep.recordings, 2);
    CHECK_EQ_INT(pgtest_query_int(c, "SELECT count(*) FROM segments"), 35);
    v = st_verify(data_dir, c, NULL, false);
    CHECK_EQ_INT(v.rep.problems, 0);
    free(v.text);

    PQfinish(c);
    pgtest_stop(pg);
    test_remove_tree(data_dir);
    memcpy(data_dir, dir_save, sizeof(data_dir));
}

int main(void)
{
    const char *dsn = getenv("CUSTOS_TEST_DSN");
    if (!dsn) {
        fprintf(stderr, "test_store: run under with-pg\n");
        return 1;
    }
    atomic_store(&cu_log_threshold, CU_LOG_ERROR);
    st_make_data_dir(data_dir, sizeof(data_dir), "store");
    REQUIRE(chmod(data_dir, 0711) == 0);
    conn = st_connect(dsn);
    ack_counts acks = {0};
    store *s = open_store(dsn, &acks);
    test_round_trip(s, &acks);
    test_submit_limits(s);
    test_rotation(s);
    test_erase(s);
    test_tampering(s);
    store_close(s, 10000);
    test_write_failure(dsn);
    test_database_outage();
    PQfinish(conn);
    test_remove_tree(data_dir);
    return test_finish("test_store");
}
