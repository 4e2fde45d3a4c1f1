/* Private to ingestctl: the environment a command runs in, and the commands. */
#ifndef CUSTOS_INGESTCTL_H
#define CUSTOS_INGESTCTL_H

#include "control/control.h"

/** What every command gets: settings, the data dir, its database. */
typedef struct {
    cu_config cfg;
    cu_datadir *datadir; /* NULL when attached to a running ingestd */
    db_service *db;
    db_mode mode;
    char *attached_dir; /* absolute data dir when attached */
    keys_ring *keys;    /* opened by the first ctl_keys() */
    char invoker[64];   /* the account that ran ingestctl (before it became the service's) */
} ctl_env;

/** Runs one command; argv[0] is the command's last word. Returns the exit status. */
typedef int (*ctl_command_fn)(ctl_env *env, int argc, char **argv);

/** The data dir's absolute path, whether this process holds its lock or not. */
const char *ctl_data_dir(const ctl_env *env);

/**
 * The keys directory (keys.dir), opened on first use (made if missing, as
 * ingestd does), owned by @p env. NULL after printing why it cannot be.
 */
keys_ring *ctl_keys(ctl_env *env);

/* cmd_store.c */
int cmd_db_status(ctl_env *env, int argc, char **argv);
int cmd_db_migrate(ctl_env *env, int argc, char **argv);
int cmd_verify(ctl_env *env, int argc, char **argv);
int cmd_reindex(ctl_env *env, int argc, char **argv);
int cmd_keys_rotate(ctl_env *env, int argc, char **argv);
int cmd_keys_list(ctl_env *env, int argc, char **argv);
int cmd_keys_retire(ctl_env *env, int argc, char **argv);
int cmd_packets(ctl_env *env, int argc, char **argv);

/* cmd_export.c */
int cmd_export(ctl_env *env, int argc, char **argv);
int cmd_package(ctl_env *env, int argc, char **argv);

/* cmd_audit.c */
/**
 * Record an ingestctl change in the audit log: ok, or failed with
 * @p failure (printed), in the change's transaction when one is open
 * (ctl_change_begin), then a signed checkpoint. Returns the exit status:
 * 0, or 1 when the change or its audit entry failed.
 */
int ctl_audited(ctl_env *env, const char *action, const char *object, const cu_err *failure);
/**
 * Open the transaction of a change: its statements, then ctl_audited(),
 * which commits them together with their audit entry (or rolls them back,
 * keeping a "failed" entry, when the change failed or its entry cannot be
 * written).
 */
void ctl_change_begin(ctl_env *env);
int cmd_audit_verify(ctl_env *env, int argc, char **argv);
int cmd_audit_checkpoint(ctl_env *env, int argc, char **argv);
int cmd_keys_public(ctl_env *env, int argc, char **argv);
int cmd_audit_list(ctl_env *env, int argc, char **argv);

/* cmd_devices.c */
int cmd_department_add(ctl_env *env, int argc, char **argv);
int cmd_department_head(ctl_env *env, int argc, char **argv);
int cmd_permission_group_add(ctl_env *env, int argc, char **argv);
int cmd_user_add(ctl_env *env, int argc, char **argv);
int cmd_user_list(ctl_env *env, int argc, char **argv);
int cmd_user_totp(ctl_env *env, int argc, char **argv);
int cmd_device_add(ctl_env *env, int argc, char **argv);
int cmd_device_list(ctl_env *env, int argc, char **argv);
int cmd_device_revoke(ctl_env *env, int argc, char **argv);
int cmd_device_assign(ctl_env *env, int argc, char **argv);
int cmd_recordings(ctl_env *env, int argc, char **argv);

#endif
