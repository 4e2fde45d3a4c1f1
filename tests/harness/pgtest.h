/*
 * Throwaway PostgreSQL clusters for tests. A cluster lives in a fresh
 * directory under $TMPDIR (or /tmp), made traversable for the postgres
 * account when the tests run as root, and is removed by pgtest_stop().
 * If a test process dies without stopping it, the server dies with it
 * (PR_SET_PDEATHSIG) and the next pgtest_start() removes the directory.
 */
#ifndef CUSTOS_PGTEST_H
#define CUSTOS_PGTEST_H

#include "db/db.h"

typedef struct pgtest pgtest;

/** Start a cluster. On success *@p out is the caller's. */
CU_WUR cu_rc pgtest_start(pgtest **out, cu_err *err);

/** DSN of the "custos" database as the application role custos (borrowed). */
const char *pgtest_dsn(const pgtest *t);

/** DSN of the "custos" database as its owner, custos_owner, who migrates (borrowed). */
const char *pgtest_owner_dsn(const pgtest *t);

/** DSN of the "postgres" database as the superuser (borrowed). */
const char *pgtest_admin_dsn(const pgtest *t);

/** The directory holding everything of this cluster (borrowed). */
const char *pgtest_dir(const pgtest *t);

/** Stop the server, keeping its directory (to test an outage). */
void pgtest_server_stop(pgtest *t);

/** Start the server again on the same directory and socket. */
CU_WUR cu_rc pgtest_server_start(pgtest *t, cu_err *err);

/** Stop the server and remove its directory. NULL is a no-op. */
void pgtest_stop(pgtest *t);

/**
 * Create a fresh, empty database @p name owned by custos_owner, using the
 * superuser DSN from $CUSTOS_TEST_ADMIN_DSN, and return a DSN for it as the
 * application role (caller frees); *@p owner_dsn (may be NULL) gets one as
 * the owner. Aborts the test when the harness is not set up.
 */
char *pgtest_fresh_database(const char *name, char **owner_dsn);

/** DSN of the "custos" database as the superuser: for tests that play an insider. Caller frees. */
char *pgtest_superuser_dsn(void);

/** The single integer a query returns, or -1 (and a message) on error. */
long long pgtest_query_int(PGconn *conn, const char *sql);

#endif
