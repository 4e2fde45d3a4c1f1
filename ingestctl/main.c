/*
 * ingestctl — the operator CLI. Works on a data dir whether or not ingestd
 * runs: if ingestd holds the data dir, commands use its database; if not,
 * ingestctl takes the lock and runs the embedded PostgreSQL for its own run.
 */
#include "ingestctl.h"

#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SETS 256

static const struct {
    const char *group;
    const char *name; /* NULL: a one-word command */
    ctl_command_fn fn;
    const char *usage;
} commands[] = {
    {"verify", NULL, cmd_verify,
     "verify [--recording ID] [--quick]\n"
     "      check every segment (GCM tag, SHA-256, chain, seal) and that the index and\n"
     "      the files agree; --quick: XXH3 and headers only, no keys"},
    {"reindex", NULL, cmd_reindex,
     "reindex\n      rebuild the recordings and segments index from the files"},
    {"packets", NULL, cmd_packets,
     "packets --recording ID [--summary]\n"
     "      decrypt a recording and list its packets (sequence, timestamp, gaps, keyframes)"},
    {"export", NULL, cmd_export,
     "export --recording ID [--start RFC3339] [--end RFC3339] --out FILE.mp4|-\n"
     "      an MP4 of the recording or of that range (from the keyframe at or before\n"
     "      --start), every segment verified first; audited with its SHA-256"},
    {"package", NULL, cmd_package,
     "package --recording ID [--start RFC3339] [--end RFC3339] [--reason TEXT] --out FILE.zip|-\n"
     "      the evidence package of the recording or of that range: a BagIt bag with\n"
     "      the original packets, hashes, chain, custody log and signed statement, which\n"
     "      verifier/custos-verify.c inside it checks offline; audited with its SHA-256"},
    {"recordings", NULL, cmd_recordings,
     "recordings [--json] [--limit N]\n      recordings, newest first"},
    {"device", "add", cmd_device_add,
     "device add --serial S [--officer USER] [--suite aes_cm_128_hmac_sha1_80|aead_aes_256_gcm]\n"
     "           [--codec h264|h265|audio] [--payload-type PT] [--count N] [--json]\n"
     "      provision a device: SSRC and SRTP master key (shown once)"},
    {"device", "list", cmd_device_list, "device list [--json]"},
    {"device", "revoke", cmd_device_revoke,
     "device revoke ID|SERIAL\n      its packets are refused within a second"},
    {"device", "assign", cmd_device_assign,
     "device assign ID|SERIAL --officer USER\n      who carries it from now on"},
    {"user", "add", cmd_user_add,
     "user add --username U --role officer|reviewer|admin [--department D] [--name N]\n"
     "         [--password-stdin]\n"
     "      the password (12+ characters, not common) is read from one line of stdin;\n"
     "      an admin also gets a TOTP secret (shown once)"},
    {"user", "list", cmd_user_list, "user list"},
    {"user", "totp", cmd_user_totp,
     "user totp USERNAME\n      a new TOTP secret (admins must give a code at login); the old one "
     "stops working"},
    {"department", "add", cmd_department_add, "department add NAME [--parent NAME]"},
    {"department", "head", cmd_department_head,
     "department head NAME USERNAME\n      who decides its permission requests first"},
    {"permission-group", "add", cmd_permission_group_add,
     "permission-group add USERNAME\n      a member of the group that decides permission "
     "requests finally"},
    {"keys", "rotate", cmd_keys_rotate,
     "keys rotate\n      add a key-encryption key and re-wrap every data and device key"},
    {"keys", "list", cmd_keys_list,
     "keys list\n      key-encryption keys and what each still wraps"},
    {"keys", "retire", cmd_keys_retire,
     "keys retire KEKID\n      destroy a key-encryption key that wraps nothing any more (after "
     "a rotation)"},
    {"audit", "verify", cmd_audit_verify,
     "audit verify\n      recompute the audit log's hash chain and hold it against the signed "
     "checkpoints;\n      names the first bad entry and the last checkpoint that holds"},
    {"audit", "list", cmd_audit_list, "audit list [--last N]"},
    {"audit", "checkpoint", cmd_audit_checkpoint,
     "audit checkpoint\n      sign the audit log's head now (ingestd does every "
     "audit.checkpoint_s)"},
    {"keys", "public", cmd_keys_public,
     "keys public\n      the installation signing key's public half (PEM), to check checkpoints"},
    {"db", "status", cmd_db_status, "db status\n      installation id, database, schema"},
    {"db", "migrate", cmd_db_migrate, "db migrate\n      apply the schema migrations"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: ingestctl [--config FILE] [--data-dir DIR] [--set KEY=VALUE]... COMMAND\n"
                 "\ncommands:\n");
    for (size_t i = 0; i < CU_ARRAY_LEN(commands); i++)
        fprintf(out, "  %s\n", commands[i].usage);
    fprintf(out, "  version\n\nSettings are read as ingestd reads them (ingestd --help).\n");
}

const char *ctl_data_dir(const ctl_env *env)
{
    return env->datadir ? cu_datadir_path(env->datadir) : env->attached_dir;
}

keys_ring *ctl_keys(ctl_env *env)
{
    char dir[PATH_MAX];
    cu_err err;
    if (env->keys)
        return env->keys;
    cu_config_keys_dir(&env->cfg, ctl_data_dir(env), dir, sizeof(dir));
    if (keys_open(dir, true, &env->keys, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        env->keys = NULL;
    }
    return env->keys;
}

/* Open the data dir and its database for one command. */
static int ctl_open(ctl_env *env)
{
    cu_err err;
    cu_rc rc = cu_datadir_open(env->cfg.data_dir, "ingestctl", &env->datadir, &err);
    if (rc == CU_ERR_BUSY) {
        /* ingestd (or another ingestctl) runs on it: use its database. */
        env->mode = DB_ATTACH;
        env->attached_dir = realpath(env->cfg.data_dir, NULL);
        if (!env->attached_dir) {
            fprintf(stderr, "ingestctl: data dir %s: cannot resolve it\n", env->cfg.data_dir);
            return 1;
        }
    } else if (rc != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    } else {
        env->mode = DB_OWN;
    }
    if (db_service_start(&env->cfg, ctl_data_dir(env), env->mode, "custos-ingestctl", &env->db,
                         &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        return 1;
    }
    return 0;
}

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

    opterr = 0; /* one line of our own instead of getopt's */
    /* '+': stop at the command, so its own options are left to it. */
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
    int word = optind; /* the command's last word: its argv[0] */
    for (size_t i = 0; i < CU_ARRAY_LEN(commands) && !fn; i++) {
        if (strcmp(argv[optind], commands[i].group) != 0)
            continue;
        if (!commands[i].name) {
            fn = commands[i].fn;
        } else if (optind + 1 < argc && strcmp(argv[optind + 1], commands[i].name) == 0) {
            fn = commands[i].fn;
            word = optind + 1;
        }
    }
    if (!fn) {
        fprintf(stderr, "ingestctl: unknown command '%s%s%s' (try ingestctl help)\n", argv[optind],
                optind + 1 < argc ? " " : "", optind + 1 < argc ? argv[optind + 1] : "");
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
    /* Started as root: the service account's, like ingestd (what is made in
     * the data dir stays readable to it). */
    const struct passwd *pw = getpwuid(getuid());
    snprintf(env.invoker, sizeof(env.invoker), "%s", pw ? pw->pw_name : "?");
    char keys_dir[PATH_MAX];
    cu_config_keys_dir(&env.cfg, env.cfg.data_dir, keys_dir, sizeof(keys_dir));
    const char *own[2] = {env.cfg.data_dir, keys_dir};
    if (cu_account_become(env.cfg.db_pg_user, own, 2, false, &err) != CU_OK) {
        fprintf(stderr, "ingestctl: %s\n", err.msg);
        status = 1;
        goto out;
    }
    if (ctl_open(&env) != 0)
        goto out;
    status = fn(&env, argc - word, argv + word);
out:
    keys_close(env.keys);
    db_service_stop(env.db);
    cu_datadir_close(env.datadir);
    free(env.attached_dir);
    cu_config_free(&env.cfg);
    return status;
}
