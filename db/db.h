/*
 * db — PostgreSQL for Custos: the embedded cluster (initdb + postgres run as
 * a child under the data dir), connections and versioned schema migrations.
 * See docs/database.md.
 */
#ifndef CUSTOS_DB_H
#define CUSTOS_DB_H

#include "core/core.h"

#include <libpq-fe.h>
#include <sys/types.h>

/* ------------------------------------------------------- embedded cluster */

/** A private PostgreSQL cluster: PGDATA, Unix socket and log in one directory. */
typedef struct db_cluster db_cluster;

typedef struct {
    const char *dir;     /* cluster directory; created 0700 (borrowed) */
    const char *bindir;  /* holds initdb and postgres; NULL or "" = discover */
    const char *run_as;  /* account that runs the server when we are root */
    int start_timeout_s; /* ready within this long, or fail */
    int stop_timeout_s;  /* fast shutdown within this long, else forced */
} db_cluster_opts;

/**
 * Create the cluster on first use (initdb into a temporary name, renamed
 * when complete, so a failed initdb never blocks the next start), then start
 * postgres as a child listening only on a Unix socket in @p opts->dir.
 * As root the server runs as @p opts->run_as: that account must be able to
 * traverse every parent of the directory, or this fails naming the parent.
 * A server left from an earlier run of the same cluster is stopped first.
 * The child dies with its parent (PR_SET_PDEATHSIG), so a crash of ours
 * leaves no server behind.
 * On success *@p out is the caller's; stop it with db_cluster_stop().
 */
CU_WUR cu_rc db_cluster_start(const db_cluster_opts *opts, db_cluster **out, cu_err *err);

/** libpq DSN of the cluster's "custos" database as the application role. Borrowed. */
const char *db_cluster_dsn(const db_cluster *c);

/** The same database as the owner role, which runs migrations. Borrowed. */
const char *db_cluster_owner_dsn(const db_cluster *c);

/** libpq DSN of the cluster's "postgres" database as the superuser. Borrowed. */
const char *db_cluster_admin_dsn(const db_cluster *c);

/** Process id of the running postmaster, or -1 once it has exited. */
pid_t db_cluster_pid(const db_cluster *c);

/**
 * Reap the server if it has exited (call on SIGCHLD). Returns true while it
 * runs; false once it has exited, with @p err saying how.
 */
bool db_cluster_alive(db_cluster *c, cu_err *err);

/**
 * Stop the server (fast shutdown; after stop_timeout_s immediate, then
 * SIGKILL), wait for it and free @p c. NULL is a no-op.
 */
void db_cluster_stop(db_cluster *c);

/**
 * Find the directory holding initdb and postgres: @p configured if given,
 * else `pg_config --bindir`, else the newest /usr/lib/postgresql/N/bin.
 * Writes it to @p out (size @p len).
 */
CU_WUR cu_rc db_find_bindir(const char *configured, char *out, size_t len, cu_err *err);

/* ------------------------------------------------------------ connections */

/**
 * Connect to @p dsn with @p app_name as application_name. On success
 * *@p out is the caller's (PQfinish). On failure @p err carries libpq's
 * reason, never the password.
 */
CU_WUR cu_rc db_connect(const char *dsn, const char *app_name, PGconn **out, cu_err *err);

/**
 * Run one statement without result rows (DDL, SET ...). On failure @p err
 * holds PostgreSQL's message.
 */
CU_WUR cu_rc db_exec(PGconn *conn, const char *sql, cu_err *err);

/**
 * Add @p item to the PostgreSQL array literal in @p b ("{" before the
 * first item, "," between, each quoted with " and \ escaped); close it
 * with db_array_end(). Fails (CU_ERR_NOMEM) when @p b would exceed its cap.
 */
CU_WUR cu_rc db_array_add(cu_buf *b, const char *item);
/** "}" after the last item, or "{}" for none. */
CU_WUR cu_rc db_array_end(cu_buf *b);

/* ------------------------------------------------------------- migrations */

/** One versioned schema change. */
typedef struct {
    int version;      /* 1, 2, 3 ... without gaps */
    const char *name; /* file name without ".sql", e.g. "0001_instance" */
    const char *sql;  /* statements, applied in one transaction */
} db_migration;

/** The migrations compiled into this build (db/migrations/NNNN_*.sql). */
extern const db_migration db_schema_migrations[];
extern const size_t db_schema_migrations_count;

/**
 * Bring the schema to the newest of @p list: every migration not yet in
 * the schema_version table is applied in order, each in its own transaction
 * together with its schema_version row (version, name, SHA-256, time).
 * Concurrent callers are serialized by an advisory lock.
 * CU_ERR_VERSION: the database holds a version this build does not know
 * (written by a newer Custos), or an applied migration whose text differs.
 * @p applied (may be NULL) receives how many were applied now.
 */
CU_WUR cu_rc db_migrate(PGconn *conn, const db_migration *list, size_t n, int *applied,
                        cu_err *err);

/** Highest applied version, 0 for an empty database, -1 on error. */
int db_schema_version(PGconn *conn, cu_err *err);

/* ---------------------------------------------------------------- service */

/**
 * The database as a Custos process uses it: the embedded cluster under the
 * data dir (or the external server of db.dsn), one connection, the schema
 * migrated, and the data dir bound to the installation (see
 * db_instance_bind()).
 */
typedef struct db_service db_service;

typedef enum {
    DB_OWN,    /* we hold the data dir lock: start the embedded cluster */
    DB_ATTACH, /* another process (ingestd) holds it: use its running cluster */
} db_mode;

/**
 * Start or attach to the database for @p data_dir (absolute) per @p cfg,
 * connect as @p app_name, check that the connection's role is the
 * application's (owns nothing, not a superuser, a member of custos_app),
 * migrate as the owner (embedded cluster, or db.owner_dsn; without one the
 * schema must be current) and bind the instance id.
 * On success *@p out is the caller's; release with db_service_stop().
 */
CU_WUR cu_rc db_service_start(const cu_config *cfg, const char *data_dir, db_mode mode,
                              const char *app_name, db_service **out, cu_err *err);

/**
 * Apply this build's migrations as the schema's owner (the embedded
 * cluster's custos_owner, or db.owner_dsn). CU_ERR_CONFIG when no owner is
 * configured. @p applied (may be NULL) receives how many ran.
 */
CU_WUR cu_rc db_service_migrate(db_service *s, int *applied, cu_err *err);

/** The service's connection, borrowed. Single-threaded use only. */
PGconn *db_service_conn(db_service *s);

/** DSN to open more connections with, borrowed. */
const char *db_service_dsn(const db_service *s);

/** This installation's id (a UUID string), borrowed. */
const char *db_service_instance_id(const db_service *s);

/** The embedded cluster we run, or NULL (external server, or attached). */
db_cluster *db_service_cluster(db_service *s);

/**
 * Is the database usable? Reaps an exited embedded server (call on SIGCHLD)
 * and checks the connection, without a round trip. @p why (may be NULL)
 * says what is wrong.
 */
bool db_service_healthy(db_service *s, cu_err *why);

/** Disconnect, stop the embedded cluster if we run it, free. NULL is a no-op. */
void db_service_stop(db_service *s);

/**
 * Pair @p data_dir with the database's installation id: the first time,
 * write <data_dir>/instance (durably); afterwards refuse (CU_ERR_VERSION)
 * a database whose id differs. @p id_out receives the id.
 */
CU_WUR cu_rc db_instance_bind(PGconn *conn, const char *data_dir, char id_out[37], cu_err *err);

#endif /* CUSTOS_DB_H */
