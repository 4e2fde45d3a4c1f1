/* Helpers shared by the storage tests (run under with-pg). */
#ifndef CUSTOS_STORE_TESTLIB_H
#define CUSTOS_STORE_TESTLIB_H

#include "storage/store_internal.h"
#include "tests/harness/pgtest.h"
#include "tests/testlib.h"

#include <limits.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh data dir under /tmp; the caller removes it with test_remove_tree. */
static inline void st_make_data_dir(char *out, size_t len, const char *name)
{
    snprintf(out, len, "/tmp/custos-%s-XXXXXX", name);
    REQUIRE(mkdtemp(out));
}

/* The keys of @p data_dir (<data_dir>/keys, made on first use), kept open
 * for the process; reopened when another data dir is asked for. */
static inline keys_ring *st_keys(const char *data_dir)
{
    static keys_ring *ring;
    static char ring_dir[PATH_MAX];
    char dir[PATH_MAX];
    cu_err err;
    snprintf(dir, sizeof(dir), "%s/keys", data_dir);
    if (ring && strcmp(dir, ring_dir) == 0)
        return ring;
    keys_close(ring);
    ring = NULL;
    if (keys_open(dir, true, &ring, &err) != CU_OK) {
        fprintf(stderr, "keys: %s\n", err.msg);
        exit(1);
    }
    snprintf(ring_dir, sizeof(ring_dir), "%s", dir);
    return ring;
}

/* A store on @p data_dir (2 workers, 2 syncers) reporting to @p on_ack; exits on failure. */
static inline store *st_open_store(const char *data_dir, const char *dsn, store_ack_fn on_ack,
                                   void *ctx)
{
    store *s = NULL;
    cu_err err;
    store_opts o = {.data_dir = data_dir,
                    .dsn = dsn,
                    .keys = st_keys(data_dir),
                    .workers = 2,
                    .syncers = 2,
                    .on_ack = on_ack,
                    .ack_ctx = ctx};
    if (store_open(&o, &s, &err) != CU_OK) {
        fprintf(stderr, "store_open: %s\n", err.msg);
        exit(2);
    }
    return s;
}

/* Bring the schema up to date as its owner, then connect to @p dsn (the
 * application role). */
static inline PGconn *st_connect_as(const char *dsn, const char *owner_dsn)
{
    PGconn *conn = NULL, *owner = NULL;
    cu_err err;
    if (!owner_dsn || db_connect(owner_dsn, "store-test-migrate", &owner, &err) != CU_OK ||
        db_migrate(owner, db_schema_migrations, db_schema_migrations_count, NULL, &err) != CU_OK ||
        db_connect(dsn, "store-test", &conn, &err) != CU_OK) {
        fprintf(stderr, "database: %s\n", owner_dsn ? err.msg : "CUSTOS_TEST_OWNER_DSN not set");
        exit(1);
    }
    PQfinish(owner);
    return conn;
}

/* The same on the cluster of with-pg. */
static inline PGconn *st_connect(const char *dsn)
{
    return st_connect_as(dsn, getenv("CUSTOS_TEST_OWNER_DSN"));
}

/* An insider with full database access: the superuser, triggers off (as
 * `session_replication_role = replica` allows), to tamper with the index. */
static inline PGconn *st_insider(void)
{
    PGconn *conn = NULL;
    cu_err err;
    char *dsn = pgtest_superuser_dsn();
    if (db_connect(dsn, "store-test-insider", &conn, &err) != CU_OK ||
        db_exec(conn, "SET session_replication_role = replica", &err) != CU_OK) {
        fprintf(stderr, "database: %s\n", err.msg);
        exit(1);
    }
    free(dsn);
    return conn;
}

/* Who the tests' erasures are by. */
static const store_erase_request st_erase_why = {
    .actor = "ingestctl:test", .reason = "test", .source = "local"};

/* Random bytes in a chain of chunks (what the store takes and gives back);
 * @p copy (may be NULL) receives a plain copy, which the caller frees. */
static inline cu_chunk *st_random_chain(size_t len, uint8_t **copy)
{
    uint8_t *p = cu_xmalloc(len ? len : 1);
    REQUIRE(RAND_bytes(p, (int)(len ? len : 1)) == 1);
    cu_chunk *head = NULL, *tail = NULL;
    REQUIRE(cu_chunk_append(&head, &tail, p, len));
    if (copy)
        *copy = p;
    else
        free(p);
    return head;
}

static inline cu_chunk *st_random(size_t len)
{
    return st_random_chain(len, NULL);
}

/* Run verify and keep what it printed. */
typedef struct {
    store_verify_report rep;
    char *text;
    size_t len;
    cu_rc rc;
} st_verify_result;

static inline st_verify_result st_verify(const char *data_dir, PGconn *conn, const store_id *one,
                                         bool quick)
{
    st_verify_result r = {0};
    cu_err err = {""};
    FILE *out = open_memstream(&r.text, &r.len);
    REQUIRE(out);
    store_verify_opts o = {
        .recording = one, .quick = quick, .out = out, .keys = quick ? NULL : st_keys(data_dir)};
    r.rc = store_verify(data_dir, conn, &o, &r.rep, &err);
    fclose(out);
    if (r.rc)
        fprintf(stderr, "verify: %s\n", err.msg);
    return r;
}

#endif
