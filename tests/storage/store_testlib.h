/* Helpers shared by the storage tests (run under with-pg). */
#ifndef CUSTOS_STORE_TESTLIB_H
#define CUSTOS_STORE_TESTLIB_H

#include "storage/store_internal.h"
#include "tests/harness/pgtest.h"
#include "tests/testlib.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh data dir under /tmp; the caller removes it with test_remove_tree. */
static inline void st_make_data_dir(char *out, size_t len, const char *name)
{
    snprintf(out, len, "/tmp/custos-%s-XXXXXX", name);
    REQUIRE(mkdtemp(out));
}

/* Connect to @p dsn and bring the schema up to date. */
static inline PGconn *st_connect(const char *dsn)
{
    PGconn *conn = NULL;
    cu_err err;
    if (db_connect(dsn, "store-test", &conn, &err) != CU_OK ||
        db_migrate(conn, db_schema_migrations, db_schema_migrations_count, NULL, &err) != CU_OK) {
        fprintf(stderr, "database: %s\n", err.msg);
        exit(1);
    }
    return conn;
}

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
    store_verify_opts o = {.recording = one, .quick = quick, .out = out};
    r.rc = store_verify(data_dir, conn, &o, &r.rep, &err);
    fclose(out);
    if (r.rc)
        fprintf(stderr, "verify: %s\n", err.msg);
    return r;
}

#endif
