/*
 * ingestctl — the operator CLI. Works on a data dir whether or not ingestd
 * runs: if ingestd holds the data dir, commands use its database; if not,
 * ingestctl takes the lock and runs the embedded PostgreSQL for its own run.
 */
#include "storage/store.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SETS 256

typedef struct {
    cu_config cfg;
    cu_datadir *datadir; /* NULL when attached to a running ingestd */
    db_service *db;
    db_mode mode;
    char *attached_dir; /* absolute data dir when attached */
} ctl_env;

typedef int (*ctl_command_fn)(ctl_env *env, int argc, char **argv);

static void usage(FILE *out)
{
    fprintf(out, "usage: ingestctl [--config FILE] [--data-dir DIR] [--set KEY=VALUE]... COMMAND\n"
                 "\n"
                 "commands:\n"
                 "  db status     installation id, database, schema version\n"
                 "  db migrate    apply schema migrations this build carries\n"
                 "  version       print the version\n"
                 "\n"
                 "Settings are read as ingestd reads them (ingestd --help).\n");
}

/* The data dir's absolute path, whether we hold its lock or not. */
static const char *cu_datadir_path_or(const ctl_env *env)
{
    return env->datadir ? cu_datadir_path(env->datadir) : env->attached_dir;
}

/* Open the data dir and its database for one command. */
static int ctl_open(ctl_env *env)
{
    cu_err err;
    cu_rc rc = cu_datadir_open(env->cfg.data_dir, "ingestctl", &env->datadir, &err);
    const char *dir = NULL;
    int status = 1;

    if (rc == CU_ERR_BUSY) {
        /* ingestd (or another ingestctl) runs on it: use its database. */
        env->mode = DB_ATTACH;
        env->attached_dir = realpath(env->cfg.data_dir, NULL);
        dir = env->attached_dir;
    } else if (rc != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        goto out;
    } else {
        env->mode = DB_OWN;
        dir = cu_datadir_path(env->datadir);
    }
    if (!dir) {
        fprintf(stderr, "ingestctl: data dir %s: cannot resolve it\n", env->cfg.data_dir);
        goto out;
    }
    if (db_service_start(&env->cfg, dir, env->mode, "custos-ingestctl", &env->db, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        goto out;
    }
    status = 0;
out:
    return status;
}

static int cmd_db_status(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    cu_err err;
    if (argc != 0) {
        fprintf(stderr, "usage: ingestctl db status\n");
        return 2;
    }
    int version = db_schema_version(db_service_conn(env->db), &err);
    if (version < 0) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    const db_migration *newest = &db_schema_migrations[db_schema_migrations_count - 1];
    printf("installation  %s\n", db_service_instance_id(env->db));
    if (env->cfg.db_dsn[0])
        printf("database      external (db.dsn)\n");
    else if (env->mode == DB_ATTACH)
        printf("database      embedded, run by the ingestd that holds the data dir\n");
    else
        printf("database      embedded, started for this command\n");
    printf("schema        version %d of %d (%s)\n", version, newest->version,
           version == newest->version ? "up to date" : "behind");
    return 0;
}

static int cmd_db_migrate(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    cu_err err;
    int applied = 0;
    if (argc != 0) {
        fprintf(stderr, "usage: ingestctl db migrate\n");
        return 2;
    }
    /* db_service_start already migrated; running it again reports the state. */
    if (db_migrate(db_service_conn(env->db), db_schema_migrations, db_schema_migrations_count,
                   &applied, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    printf("schema at version %d (%s)\n",
           db_schema_migrations[db_schema_migrations_count - 1].version,
           db_schema_migrations[db_schema_migrations_count - 1].name);
    return 0;
}

static int cmd_verify(ctl_env *env, int argc, char **argv)
{
    static const struct option options[] = {
        {"recording", required_argument, NULL, 'r'},
        {"quick", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    store_id one;
    store_verify_opts o = {.out = stdout,
                           .progress = isatty(STDERR_FILENO) != 0,
                           .writer_running = env->mode == DB_ATTACH};
    store_verify_report rep;
    cu_err err;
    int opt;
    optind = 0; /* the command's own options start at argv[0] */
    while ((opt = getopt_long(argc + 1, argv - 1, "+r:q", options, NULL)) != -1) {
        switch (opt) {
        case 'r':
            if (!store_id_parse(optarg, &one)) {
                fprintf(stderr, "ingestctl: '%s' is not a recording id\n", optarg);
                return 2;
            }
            o.recording = &one;
            break;
        case 'q': o.quick = true; break;
        default: fprintf(stderr, "usage: ingestctl verify [--recording ID] [--quick]\n"); return 2;
        }
    }
    if (store_verify(cu_datadir_path_or(env), db_service_conn(env->db), &o, &rep, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    printf("verified %llu recordings, %llu segments, %llu problems\n",
           (unsigned long long)rep.recordings, (unsigned long long)rep.segments,
           (unsigned long long)rep.problems);
    return rep.problems ? 1 : 0;
}

static int cmd_reindex(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    store_reindex_report rep;
    cu_err err;
    if (argc != 0) {
        fprintf(stderr, "usage: ingestctl reindex\n");
        return 2;
    }
    if (store_reindex(cu_datadir_path_or(env), db_service_conn(env->db), &rep, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    printf("reindexed %llu recordings, %llu segments; %llu keys imported",
           (unsigned long long)rep.recordings, (unsigned long long)rep.segments,
           (unsigned long long)rep.keys_imported);
    if (rep.rows_without_file)
        printf("; %llu index rows have no file (run ingestctl verify)",
               (unsigned long long)rep.rows_without_file);
    printf("\n");
    return 0;
}

static int cmd_keys_rotate(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    store_rotate_report rep;
    cu_err err;
    if (argc != 0) {
        fprintf(stderr, "usage: ingestctl keys rotate\n");
        return 2;
    }
    if (store_keys_rotate(cu_datadir_path_or(env), db_service_conn(env->db), &rep, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    printf("key-encryption key %s is active; %llu data keys re-wrapped (%llu pending)\n",
           rep.new_kek, (unsigned long long)rep.rewrapped,
           (unsigned long long)rep.pending_rewrapped);
    return 0;
}

static int cmd_keys_list(ctl_env *env, int argc, char **argv)
{
    (void)argv;
    if (argc != 0) {
        fprintf(stderr, "usage: ingestctl keys list\n");
        return 2;
    }
    PGconn *conn = db_service_conn(env->db);
    PGresult *res = PQexec(conn, "SELECT kek_id, count(*) FROM recording_keys GROUP BY kek_id "
                                 "ORDER BY kek_id");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "ingestctl: %s", PQerrorMessage(conn));
        PQclear(res);
        return 1;
    }
    char active[64] = "";
    char *path = cu_xasprintf("%s/keys/active", cu_datadir_path_or(env));
    FILE *f = fopen(path, "re");
    if (f) {
        if (!fgets(active, sizeof(active), f))
            active[0] = '\0';
        fclose(f);
        active[strcspn(active, "\n")] = '\0';
    }
    free(path);
    printf("%-18s %10s\n", "kek", "data keys");
    bool active_listed = false;
    for (int i = 0; i < PQntuples(res); i++) {
        bool is_active = strcmp(PQgetvalue(res, i, 0), active) == 0;
        active_listed |= is_active;
        printf("%-18s %10s%s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
               is_active ? "  (active)" : "");
    }
    if (active[0] && !active_listed)
        printf("%-18s %10s  (active)\n", active, "0");
    PQclear(res);
    return 0;
}

static const struct {
    const char *group;
    const char *name;
    ctl_command_fn fn;
} commands[] = {
    {"db", "status", cmd_db_status},     {"db", "migrate", cmd_db_migrate},
    {"keys", "rotate", cmd_keys_rotate}, {"keys", "list", cmd_keys_list},
    {"verify", NULL, cmd_verify},        {"reindex", NULL, cmd_reindex},
};

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"data-dir", required_argument, NULL, 'd'},
        {"set", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_file = NULL, *data_dir = NULL;
    char *sets[MAX_SETS];
    size_t nsets = 0;
    ctl_env env = {0};
    cu_err err;
    int status = 1;
    int opt;

    /* '+': stop at the command, so its own options are left to it. */
    opterr = 0; /* one line of our own instead of getopt's */
    while ((opt = getopt_long(argc, argv, "+c:d:s:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_file = optarg; break;
        case 'd': data_dir = optarg; break;
        case 's':
            if (nsets == MAX_SETS) {
                fprintf(stderr, "ingestctl: more than %d --set options\n", MAX_SETS);
                return 2;
            }
            sets[nsets++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "ingestctl: bad option '%s' (try ingestctl --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[optind], "version") == 0) {
        printf("ingestctl (Custos) %s\n", CUSTOS_VERSION);
        return 0;
    }
    if (strcmp(argv[optind], "help") == 0) {
        usage(stdout);
        return 0;
    }
    ctl_command_fn fn = NULL;
    int sub = optind + 1;
    for (size_t i = 0; i < CU_ARRAY_LEN(commands) && !fn; i++) {
        if (strcmp(argv[optind], commands[i].group) != 0)
            continue;
        if (!commands[i].name) {
            fn = commands[i].fn;
            sub = optind; /* a one-word command: its options follow it */
        } else if (sub < argc && strcmp(argv[sub], commands[i].name) == 0) {
            fn = commands[i].fn;
        }
    }
    if (!fn) {
        fprintf(stderr, "ingestctl: unknown command '%s%s%s' (try ingestctl help)\n", argv[optind],
                sub < argc ? " " : "", sub < argc ? argv[sub] : "");
        return 2;
    }

    if (cu_config_load(&env.cfg, config_file, data_dir, sets, nsets, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        status = 2;
        goto out;
    }
    /* Operators read the command's output; only warnings go to stderr. */
    atomic_store(&cu_log_threshold, CU_LOG_WARN);
    if (cu_log_open("ingestctl", NULL, &err) != CU_OK)
        goto out;
    if (ctl_open(&env) != 0)
        goto out;
    status = fn(&env, argc - sub - 1, argv + sub + 1);
out:
    db_service_stop(env.db);
    cu_datadir_close(env.datadir);
    free(env.attached_dir);
    cu_config_free(&env.cfg);
    return status;
}
