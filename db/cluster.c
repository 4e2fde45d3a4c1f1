/*
 * The embedded PostgreSQL cluster: <dir>/data is PGDATA, <dir> holds the
 * Unix socket, postgres.log, pg_hba.conf and pg_ident.conf. No TCP listener;
 * the socket directory is 0700, so only its owner (and root) can reach the
 * socket, and authentication is peer: the connecting process's account must
 * be the cluster's (or root), mapped to the roles (pg_ident.conf). Nothing
 * is trusted.
 */
#include "db.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CLUSTER_PORT      "5432"
#define CLUSTER_SUPERUSER "postgres"
#define CLUSTER_DATABASE  "custos"
#define CLUSTER_ROLE      "custos"       /* the application's login role */
#define CLUSTER_OWNER     "custos_owner" /* owns the schema, runs migrations */
#define CLUSTER_APP_GROUP "custos_app"   /* holds every right of the application */
#define MAX_GROUPS        64

/* Path fields are sized from the socket path limit (sun_path, 108 bytes),
 * which db_cluster_start() checks first. */
struct db_cluster {
    char dir[112];
    char data[128];
    char log_path[136];
    char bindir[1024];
    char *dsn;             /* custos database, as the custos role */
    char *admin_dsn;       /* postgres database, as the superuser */
    char *owner_dsn;       /* custos database, as the owner role */
    char *owner_admin_dsn; /* custos database, as the superuser */
    pid_t pid;
    int stop_timeout_s;
    /* the account the server runs as */
    bool drop_privileges;
    uid_t uid;
    gid_t gid;
    gid_t groups[MAX_GROUPS];
    int ngroups;
    char user[64];
};

/* ------------------------------------------------------------ processes */

typedef struct {
    const db_cluster *c; /* whose account to run as */
    int out_fd;          /* stdout and stderr; -1 = /dev/null */
    bool detach;         /* new session, dies with us */
} spawn_opts;

/*
 * fork + exec @p argv as the cluster's account. Between fork and exec only
 * async-signal-safe calls are made (the account was resolved beforehand).
 * An exec failure comes back through a close-on-exec pipe as an errno.
 */
static cu_rc spawn(char *const argv[], const spawn_opts *o, pid_t *pid_out, cu_err *err)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "pipe: %s", strerror(e));
    }
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        if (null_fd >= 0)
            close(null_fd);
        return cu_err_set(err, CU_ERR_IO, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        int e = 0;
        int out = o->out_fd >= 0 ? o->out_fd : null_fd;
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (null_fd >= 0 && dup2(null_fd, STDIN_FILENO) < 0)
            goto fail;
        if (out >= 0 && (dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0))
            goto fail;
        if (o->detach && setsid() < 0)
            goto fail;
        if (o->c->drop_privileges) {
            if (setgroups((size_t)o->c->ngroups, o->c->groups) != 0 || setgid(o->c->gid) != 0 ||
                setuid(o->c->uid) != 0)
                goto fail;
        }
        umask(077);
        /* After the credential change, which clears it. */
        if (o->detach) {
            if (prctl(PR_SET_PDEATHSIG, SIGINT) != 0)
                goto fail;
            if (getppid() != parent)
                _exit(1); /* we were orphaned before the line above */
        }
        execv(argv[0], argv);
    fail:
        e = errno;
        if (write(pipefd[1], &e, sizeof(e)) < 0)
            _exit(127);
        _exit(127);
    }
    close(pipefd[1]);
    if (null_fd >= 0)
        close(null_fd);
    int child_errno = 0;
    ssize_t n;
    do
        n = read(pipefd[0], &child_errno, sizeof(child_errno));
    while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof(child_errno)) {
        waitpid(pid, NULL, 0);
        return cu_err_set(err, CU_ERR_IO, "cannot run %s as %s: %s", argv[0], o->c->user,
                          strerror(child_errno));
    }
    *pid_out = pid;
    return CU_OK;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Wait up to @p timeout_ms for @p pid. Returns true with *status when it ended. */
static bool wait_for_exit(pid_t pid, int timeout_ms, int *status)
{
    int waited = 0;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return true;
        if (r < 0 && errno != EINTR)
            return true; /* not our child any more (already reaped) */
        if (waited >= timeout_ms)
            return false;
        sleep_ms(20);
        waited += 20;
    }
}

static void describe_status(int status, char *out, size_t len)
{
    if (WIFEXITED(status))
        snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, len, "ended (status 0x%x)", status);
}

/* The last non-empty line of a log file, to explain a failure in one line. */
static void log_last_line(const char *path, char *out, size_t len)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[4096];
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    char *line = strrchr(buf, '\n');
    cu_strlcpy(out, line ? line + 1 : buf, len);
}

/* ------------------------------------------------------------ file system */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : -1;
}

/* rm -rf, not following symlinks. */
static int remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}

static bool is_executable(const char *dir, const char *name)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return false;
    return access(path, X_OK) == 0;
}

static bool bindir_usable(const char *dir)
{
    return is_executable(dir, "initdb") && is_executable(dir, "postgres");
}

static int filter_numeric(const struct dirent *de)
{
    return de->d_name[0] >= '1' && de->d_name[0] <= '9';
}

cu_rc db_find_bindir(const char *configured, char *out, size_t len, cu_err *err)
{
    if (configured && *configured) {
        if (!bindir_usable(configured))
            return cu_err_set(err, CU_ERR_NOTFOUND,
                              "PostgreSQL server binaries not found: db.pg_bindir=%s has no "
                              "executable initdb and postgres",
                              configured);
        cu_strlcpy(out, configured, len);
        return CU_OK;
    }

    char from_pg_config[PATH_MAX] = "";
    FILE *p = popen("pg_config --bindir 2>/dev/null", "r");
    if (p) {
        if (!fgets(from_pg_config, sizeof(from_pg_config), p))
            from_pg_config[0] = '\0';
        pclose(p);
        from_pg_config[strcspn(from_pg_config, "\n")] = '\0';
    }
    if (from_pg_config[0] && bindir_usable(from_pg_config)) {
        cu_strlcpy(out, from_pg_config, len);
        return CU_OK;
    }

    struct dirent **list = NULL;
    int n = scandir("/usr/lib/postgresql", &list, filter_numeric, versionsort);
    bool found = false;
    for (int i = n - 1; i >= 0; i--) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "/usr/lib/postgresql/%s/bin", list[i]->d_name);
        if (!found && bindir_usable(dir)) {
            cu_strlcpy(out, dir, len);
            found = true;
        }
    }
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
    if (found)
        return CU_OK;
    return cu_err_set(err, CU_ERR_NOTFOUND,
                      "PostgreSQL server binaries not found (pg_config --bindir: %s; "
                      "/usr/lib/postgresql/*/bin: none); install the postgresql package, "
                      "set db.pg_bindir, or set db.dsn to use an external server",
                      from_pg_config[0] ? from_pg_config : "unavailable");
}

/*
 * An existing cluster must be run by the major version that made it: when
 * no bindir is configured and PGDATA says "15", /usr/lib/postgresql/15/bin
 * wins over a newer default, so an upgrade of the OS does not strand it.
 */
static cu_rc cluster_pick_bindir(db_cluster *c, const char *configured, cu_err *err)
{
    char path[PATH_MAX], major[16] = "";
    if (!configured || !*configured) {
        snprintf(path, sizeof(path), "%s/PG_VERSION", c->data);
        FILE *f = fopen(path, "re");
        if (f) {
            if (!fgets(major, sizeof(major), f))
                major[0] = '\0';
            fclose(f);
            major[strcspn(major, "\n")] = '\0';
        }
        snprintf(path, sizeof(path), "/usr/lib/postgresql/%s/bin", major);
        if (major[0] && !strchr(major, '/') && bindir_usable(path)) {
            cu_strlcpy(c->bindir, path, sizeof(c->bindir));
            return CU_OK;
        }
    }
    return db_find_bindir(configured, c->bindir, sizeof(c->bindir), err);
}

/* ------------------------------------------------------------ the account */

static cu_rc cluster_resolve_account(db_cluster *c, const char *run_as, cu_err *err)
{
    if (geteuid() != 0) {
        struct passwd *pw = getpwuid(geteuid());
        if (!pw) /* (PostgreSQL needs it, and peer authentication maps it) */
            return cu_err_set(err, CU_ERR_CONFIG, "uid %u has no account name",
                              (unsigned)geteuid());
        c->drop_privileges = false;
        c->uid = geteuid();
        c->gid = getegid();
        cu_strlcpy(c->user, pw->pw_name, sizeof(c->user));
        return CU_OK;
    }
    /* PostgreSQL refuses to run as root: the service account (made when missing). */
    cu_rc rc = cu_account_ensure(run_as, err);
    if (rc)
        return rc;
    struct passwd *pw = getpwnam(run_as);
    if (!pw)
        return cu_err_set(err, CU_ERR_NOTFOUND, "account '%s' (db.pg_user) does not exist", run_as);
    if (pw->pw_uid == 0)
        return cu_err_set(err, CU_ERR_CONFIG,
                          "db.pg_user '%s' is root; PostgreSQL refuses to run as root", run_as);
    c->drop_privileges = true;
    c->uid = pw->pw_uid;
    c->gid = pw->pw_gid;
    c->ngroups = MAX_GROUPS;
    if (getgrouplist(pw->pw_name, pw->pw_gid, c->groups, &c->ngroups) < 0) {
        c->groups[0] = pw->pw_gid;
        c->ngroups = 1;
    }
    cu_strlcpy(c->user, pw->pw_name, sizeof(c->user));
    return CU_OK;
}

/*
 * Can the account reach @p path? Checked in a child that takes on the
 * account's identity, because only the kernel knows the answer (ACLs,
 * groups). Reports the first parent directory it cannot traverse.
 */
static cu_rc cluster_check_reachable(const db_cluster *c, const char *path, cu_err *err)
{
    if (!c->drop_privileges)
        return CU_OK;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "pipe: %s", strerror(e));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        return cu_err_set(err, CU_ERR_IO, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        char prefix[PATH_MAX];
        size_t len = strlen(path);
        if (setgroups((size_t)c->ngroups, c->groups) != 0 || setgid(c->gid) != 0 ||
            setuid(c->uid) != 0)
            _exit(2);
        for (size_t i = 1; i <= len && i < sizeof(prefix); i++) {
            if (path[i] != '/' && path[i] != '\0')
                continue;
            memcpy(prefix, path, i);
            prefix[i] = '\0';
            if (access(prefix, X_OK) != 0) {
                if (write(pipefd[1], prefix, i) < 0)
                    _exit(1);
                _exit(1);
            }
        }
        _exit(0);
    }
    close(pipefd[1]);
    char blocked[PATH_MAX] = "";
    ssize_t n = read(pipefd[0], blocked, sizeof(blocked) - 1);
    blocked[n > 0 ? n : 0] = '\0';
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return CU_OK;
    if (blocked[0]) {
        struct stat st;
        unsigned mode = stat(blocked, &st) == 0 ? (unsigned)(st.st_mode & 07777) : 0;
        return cu_err_set(err, CU_ERR_PERM,
                          "the '%s' account that runs the embedded PostgreSQL cannot reach %s: "
                          "%s (mode %04o) is not traversable by it; use a data dir outside it "
                          "(e.g. under /var/lib or /srv), or set db.dsn",
                          c->user, path, blocked, mode);
    }
    return cu_err_set(err, CU_ERR_PERM, "cannot switch to the '%s' account to check %s", c->user,
                      path);
}

/* ------------------------------------------------------------ the server */

/* Append a libpq conninfo value, quoted. */
static char *dsn_for(const char *socket_dir, const char *user, const char *dbname)
{
    char quoted[PATH_MAX * 2 + 3];
    size_t o = 0;
    quoted[o++] = '\'';
    for (const char *p = socket_dir; *p && o < sizeof(quoted) - 3; p++) {
        if (*p == '\'' || *p == '\\')
            quoted[o++] = '\\';
        quoted[o++] = *p;
    }
    quoted[o++] = '\'';
    quoted[o] = '\0';
    return cu_xasprintf("host=%s port=" CLUSTER_PORT " user=%s dbname=%s", quoted, user, dbname);
}

/*
 * A postmaster from an earlier run of this cluster (a crash of ours leaves
 * one shutting down) would make the new one fail. Identify it by its
 * postmaster.pid and its command line naming our data directory, ask it to
 * stop and wait.
 */
static cu_rc cluster_stop_leftover(const db_cluster *c, cu_err *err)
{
    char pidfile[PATH_MAX];
    snprintf(pidfile, sizeof(pidfile), "%s/postmaster.pid", c->data);
    FILE *f = fopen(pidfile, "re");
    if (!f)
        return CU_OK;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid <= 0 || kill((pid_t)pid, 0) != 0)
        return CU_OK; /* stale file: postgres itself copes with it */

    char cmdline_path[64], cmdline[PATH_MAX + 256];
    snprintf(cmdline_path, sizeof(cmdline_path), "/proc/%ld/cmdline", pid);
    int fd = open(cmdline_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return CU_OK;
    ssize_t n = read(fd, cmdline, sizeof(cmdline) - 1);
    close(fd);
    if (n <= 0)
        return CU_OK;
    for (ssize_t i = 0; i < n; i++)
        if (cmdline[i] == '\0')
            cmdline[i] = ' ';
    cmdline[n] = '\0';
    if (!strstr(cmdline, c->data))
        return CU_OK; /* the pid was reused by something else */

    CU_LOG(CU_LOG_WARN, "db", "stopping PostgreSQL (pid %ld) left running on %s", pid, c->data);
    kill((pid_t)pid, SIGINT);
    for (int waited = 0; waited < c->stop_timeout_s * 1000; waited += 50) {
        if (kill((pid_t)pid, 0) != 0)
            return CU_OK;
        sleep_ms(50);
    }
    kill((pid_t)pid, SIGQUIT);
    sleep_ms(1000);
    if (kill((pid_t)pid, 0) == 0)
        return cu_err_set(err, CU_ERR_BUSY,
                          "a PostgreSQL server (pid %ld) still runs on %s and does not stop", pid,
                          c->data);
    return CU_OK;
}

static cu_rc cluster_initdb(db_cluster *c, cu_err *err)
{
    cu_rc rc = CU_OK;
    char staging[PATH_MAX], initdb[PATH_MAX];
    int log_fd = -1;

    snprintf(staging, sizeof(staging), "%s.init", c->data);
    snprintf(initdb, sizeof(initdb), "%s/initdb", c->bindir);
    /* A half-made cluster from an interrupted initdb: start over. */
    if (remove_tree(staging) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot remove %s: %s", staging, strerror(e));
    }
    log_fd = open(c->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot open %s: %s", c->log_path, strerror(e));
    }
    if (c->drop_privileges && fchown(log_fd, c->uid, c->gid) != 0) {
        int e = errno;
        rc = cu_err_set(err, CU_ERR_IO, "cannot chown %s: %s", c->log_path, strerror(e));
        goto out;
    }
    CU_LOG(CU_LOG_INFO, "db", "creating the embedded PostgreSQL cluster in %s", c->data);
    /* (its pg_hba.conf is never used: the server is given ours, cluster_write_auth) */
    char *argv[] = {initdb, "-D", staging, "-U",          CLUSTER_SUPERUSER,  "-A",
                    "peer", "-E", "UTF8",  "--no-locale", "--data-checksums", NULL};
    spawn_opts so = {.c = c, .out_fd = log_fd, .detach = false};
    pid_t pid;
    rc = spawn(argv, &so, &pid, err);
    if (rc)
        goto out;
    int status = 0;
    if (!wait_for_exit(pid, 300 * 1000, &status)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        rc = cu_err_set(err, CU_ERR_TIMEOUT, "initdb did not finish within 300 s");
        goto out;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[64], last[256];
        describe_status(status, how, sizeof(how));
        log_last_line(c->log_path, last, sizeof(last));
        rc = cu_err_set(err, CU_ERR_DB, "initdb %s: %s (see %s)", how, last, c->log_path);
        goto out;
    }
    if (rename(staging, c->data) != 0) {
        int e = errno;
        rc =
            cu_err_set(err, CU_ERR_IO, "cannot rename %s to %s: %s", staging, c->data, strerror(e));
        goto out;
    }
out:
    if (rc)
        remove_tree(staging);
    close(log_fd);
    return rc;
}

/* Write @p text to @p path for the cluster's account, 0600. */
static cu_rc write_private(const db_cluster *c, const char *path, const char *text, cu_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t len = strlen(text);
    errno = EIO; /* (a short write sets none) */
    bool ok = fd >= 0 && fchmod(fd, 0600) == 0 && write(fd, text, len) == (ssize_t)len &&
              (!c->drop_privileges || fchown(fd, c->uid, c->gid) == 0) && fsync(fd) == 0;
    int e = errno;
    if (fd >= 0)
        close(fd);
    return ok ? CU_OK : cu_err_set(err, CU_ERR_IO, "cannot write %s: %s", path, strerror(e));
}

/*
 * Who may connect, written at every start (so that a cluster made before
 * this, with trust, is closed too): over the socket only, by peer
 * authentication, the cluster's account (or root) as any of its roles.
 */
static cu_rc cluster_write_auth(const db_cluster *c, cu_err *err)
{
    char path[PATH_MAX], ident[1024];
    snprintf(path, sizeof(path), "%s/pg_hba.conf", c->dir);
    cu_rc rc = write_private(c, path,
                             "# Written by Custos at every start (db/cluster.c): nothing else "
                             "is allowed.\n"
                             "local all all peer map=custos\n",
                             err);
    if (rc)
        return rc;
    static const char *const roles[] = {CLUSTER_SUPERUSER, CLUSTER_ROLE, CLUSTER_OWNER};
    size_t n = (size_t)snprintf(ident, sizeof(ident),
                                "# Written by Custos at every start (db/cluster.c).\n");
    for (size_t i = 0; i < CU_ARRAY_LEN(roles); i++) {
        n += (size_t)snprintf(ident + n, sizeof(ident) - n, "custos %s %s\n", c->user, roles[i]);
        if (strcmp(c->user, "root") != 0)
            n += (size_t)snprintf(ident + n, sizeof(ident) - n, "custos root %s\n", roles[i]);
    }
    snprintf(path, sizeof(path), "%s/pg_ident.conf", c->dir);
    return write_private(c, path, ident, err);
}

static cu_rc cluster_spawn_server(db_cluster *c, cu_err *err)
{
    cu_rc arc = cluster_write_auth(c, err);
    if (arc)
        return arc;
    char hba[PATH_MAX + 16], ident[PATH_MAX + 16];
    snprintf(hba, sizeof(hba), "hba_file=%s/pg_hba.conf", c->dir);
    snprintf(ident, sizeof(ident), "ident_file=%s/pg_ident.conf", c->dir);
    char postgres[PATH_MAX];
    snprintf(postgres, sizeof(postgres), "%s/postgres", c->bindir);
    int log_fd = open(c->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot open %s: %s", c->log_path, strerror(e));
    }
    if (c->drop_privileges && fchown(log_fd, c->uid, c->gid) != 0) {
        /* best effort: the server writes through our descriptor anyway */
    }
    /* Settings on the command line rather than in postgresql.conf, so that
     * a moved data dir (a new socket path) still starts. */
    char *argv[] = {postgres,
                    "-D",
                    c->data,
                    "-k",
                    c->dir,
                    "-p",
                    CLUSTER_PORT,
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "unix_socket_permissions=0700",
                    "-c",
                    hba,
                    "-c",
                    ident,
                    "-c",
                    "logging_collector=off",
                    "-c",
                    "log_line_prefix=%m [%p] ",
                    NULL};
    spawn_opts so = {.c = c, .out_fd = log_fd, .detach = true};
    cu_rc rc = spawn(argv, &so, &c->pid, err);
    close(log_fd);
    return rc;
}

static cu_rc cluster_wait_ready(db_cluster *c, int timeout_s, cu_err *err)
{
    int64_t deadline = cu_mono_ns() + (int64_t)timeout_s * 1000000000;
    char ping_dsn[PATH_MAX * 2 + 128];
    snprintf(ping_dsn, sizeof(ping_dsn), "%s connect_timeout=2", c->admin_dsn);
    for (;;) {
        if (PQping(ping_dsn) == PQPING_OK)
            return CU_OK;
        int status = 0;
        if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
            char how[64], last[256];
            c->pid = -1;
            describe_status(status, how, sizeof(how));
            log_last_line(c->log_path, last, sizeof(last));
            return cu_err_set(err, CU_ERR_DB, "embedded PostgreSQL %s during start: %s (see %s)",
                              how, last, c->log_path);
        }
        if (cu_mono_ns() > deadline)
            return cu_err_set(err, CU_ERR_TIMEOUT,
                              "embedded PostgreSQL not ready after %d s (db.start_timeout_s); "
                              "see %s",
                              timeout_s, c->log_path);
        sleep_ms(50);
    }
}

/* One bootstrap statement; a failure names it. */
static cu_rc boot_exec(PGconn *conn, const char *sql, cu_err *err)
{
    cu_rc rc = db_exec(conn, sql, err);
    if (rc) {
        cu_err inner = *err;
        cu_err_set(err, rc, "bootstrap: %s", inner.msg);
    }
    return rc;
}

/* The roles (docs/database.md, "Roles") and the database, made once; a
 * cluster made before the split (the database owned by the application's
 * role) is handed to the owner role. Idempotent. */
static cu_rc cluster_bootstrap(db_cluster *c, cu_err *err)
{
    PGconn *conn = NULL;
    cu_rc rc = db_connect(c->admin_dsn, "custos-bootstrap", &conn, err);
    if (rc)
        return rc;
    rc = boot_exec(conn,
                   "DO $$ BEGIN "
                   "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" CLUSTER_OWNER "') "
                   "THEN CREATE ROLE " CLUSTER_OWNER " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; "
                   "END IF; "
                   "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" CLUSTER_APP_GROUP "') "
                   "THEN CREATE ROLE " CLUSTER_APP_GROUP " NOLOGIN; END IF; "
                   "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" CLUSTER_ROLE "') "
                   "THEN CREATE ROLE " CLUSTER_ROLE " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; "
                   "END IF; END $$",
                   err);
    if (!rc)
        rc = boot_exec(conn, "GRANT " CLUSTER_APP_GROUP " TO " CLUSTER_ROLE, err);
    PGresult *res = rc ? NULL
                       : PQexec(conn, "SELECT pg_get_userbyid(datdba) FROM pg_database "
                                      "WHERE datname = '" CLUSTER_DATABASE "'");
    if (!rc && PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = cu_err_set(err, CU_ERR_DB, "bootstrap: %s", PQerrorMessage(conn));
    bool exists = !rc && PQntuples(res) == 1;
    bool handed_over = exists && strcmp(PQgetvalue(res, 0, 0), CLUSTER_OWNER) != 0;
    PQclear(res);
    if (!rc && !exists)
        rc = boot_exec(conn,
                       "CREATE DATABASE " CLUSTER_DATABASE " OWNER " CLUSTER_OWNER
                       " ENCODING 'UTF8' TEMPLATE template0",
                       err);
    if (!rc && handed_over)
        rc = boot_exec(conn, "ALTER DATABASE " CLUSTER_DATABASE " OWNER TO " CLUSTER_OWNER, err);
    PQfinish(conn);
    conn = NULL;
    if (rc)
        return rc;
    /* Before the split the application's role owned the schema: whatever it
     * still owns goes to the owner (migration 0009 then grants the
     * application its rights). Checked at every start, so that a hand-over
     * cut short is finished by the next one. */
    rc = db_connect(c->owner_admin_dsn, "custos-bootstrap", &conn, err);
    if (rc)
        return rc;
    res =
        PQexec(conn, "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relowner = '" CLUSTER_ROLE
                     "'::regrole) OR EXISTS (SELECT 1 FROM pg_proc WHERE proowner = '" CLUSTER_ROLE
                     "'::regrole)");
    bool owns = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                PQgetvalue(res, 0, 0)[0] == 't';
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = cu_err_set(err, CU_ERR_DB, "bootstrap: %s", PQerrorMessage(conn));
    PQclear(res);
    if (!rc && owns) {
        rc = boot_exec(conn, "REASSIGN OWNED BY " CLUSTER_ROLE " TO " CLUSTER_OWNER, err);
        if (!rc)
            CU_LOG(CU_LOG_INFO, "db",
                   "the schema now belongs to " CLUSTER_OWNER "; " CLUSTER_ROLE " owns nothing");
    }
    PQfinish(conn);
    return rc;
}

/* Create <dir> for the account, or check an existing one is theirs. */
static cu_rc cluster_prepare_dir(db_cluster *c, cu_err *err)
{
    struct stat st;
    if (mkdir(c->dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot create %s: %s", c->dir, strerror(e));
    }
    if (stat(c->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cu_err_set(err, CU_ERR_IO, "%s is not a directory", c->dir);
    if (st.st_uid != c->uid) {
        if (!c->drop_privileges)
            return cu_err_set(err, CU_ERR_PERM, "%s belongs to uid %u, not to us (uid %u)", c->dir,
                              (unsigned)st.st_uid, (unsigned)c->uid);
        /* Only the empty shell we just made, or one whose PGDATA is
         * already the account's, is handed over. */
        struct stat data_st;
        if (stat(c->data, &data_st) == 0 && data_st.st_uid != c->uid)
            return cu_err_set(err, CU_ERR_PERM, "%s belongs to uid %u, not to %s", c->data,
                              (unsigned)data_st.st_uid, c->user);
        if (chown(c->dir, c->uid, c->gid) != 0) {
            int e = errno;
            return cu_err_set(err, CU_ERR_IO, "cannot chown %s to %s: %s", c->dir, c->user,
                              strerror(e));
        }
    }
    if (chmod(c->dir, 0700) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_IO, "cannot chmod %s: %s", c->dir, strerror(e));
    }
    return CU_OK;
}

cu_rc db_cluster_start(const db_cluster_opts *opts, db_cluster **out, cu_err *err)
{
    cu_rc rc = CU_OK;
    db_cluster *c = cu_xcalloc(1, sizeof(*c));
    c->pid = -1;
    c->stop_timeout_s = opts->stop_timeout_s > 0 ? opts->stop_timeout_s : 10;

    if (opts->dir[0] != '/') {
        rc = cu_err_set(err, CU_ERR_INVALID, "cluster directory %s is not absolute", opts->dir);
        goto out;
    }
    struct sockaddr_un sun;
    if (strlen(opts->dir) + strlen("/.s.PGSQL." CLUSTER_PORT) >= sizeof(sun.sun_path)) {
        rc = cu_err_set(err, CU_ERR_INVALID,
                        "data dir path is too long for the PostgreSQL socket (%s/.s.PGSQL.%s "
                        "exceeds %zu bytes); use a shorter data dir",
                        opts->dir, CLUSTER_PORT, sizeof(sun.sun_path) - 1);
        goto out;
    }
    if (!cu_strlcpy(c->dir, opts->dir, sizeof(c->dir))) {
        rc = cu_err_set(err, CU_ERR_INVALID, "cluster directory %s is too long", opts->dir);
        goto out;
    }
    snprintf(c->data, sizeof(c->data), "%s/data", c->dir);
    snprintf(c->log_path, sizeof(c->log_path), "%s/postgres.log", c->dir);
    c->dsn = dsn_for(c->dir, CLUSTER_ROLE, CLUSTER_DATABASE);
    c->admin_dsn = dsn_for(c->dir, CLUSTER_SUPERUSER, "postgres");
    c->owner_dsn = dsn_for(c->dir, CLUSTER_OWNER, CLUSTER_DATABASE);
    c->owner_admin_dsn = dsn_for(c->dir, CLUSTER_SUPERUSER, CLUSTER_DATABASE);

    rc = cluster_pick_bindir(c, opts->bindir, err);
    if (rc)
        goto out;
    rc = cluster_resolve_account(c, opts->run_as ? opts->run_as : "postgres", err);
    if (rc)
        goto out;
    rc = cluster_prepare_dir(c, err);
    if (rc)
        goto out;
    rc = cluster_check_reachable(c, c->dir, err);
    if (rc)
        goto out;

    char version_file[PATH_MAX];
    snprintf(version_file, sizeof(version_file), "%s/PG_VERSION", c->data);
    if (access(version_file, F_OK) != 0) {
        rc = cluster_initdb(c, err);
        if (rc)
            goto out;
    } else {
        rc = cluster_stop_leftover(c, err);
        if (rc)
            goto out;
    }
    rc = cluster_spawn_server(c, err);
    if (rc)
        goto out;
    rc = cluster_wait_ready(c, opts->start_timeout_s > 0 ? opts->start_timeout_s : 60, err);
    if (rc)
        goto out;
    rc = cluster_bootstrap(c, err);
    if (rc)
        goto out;
    CU_LOG(CU_LOG_INFO, "db", "embedded PostgreSQL ready (pid %ld, socket in %s, runs as %s)",
           (long)c->pid, c->dir, c->user);
    *out = c;
    c = NULL;
out:
    db_cluster_stop(c);
    return rc;
}

const char *db_cluster_dsn(const db_cluster *c)
{
    return c->dsn;
}

const char *db_cluster_owner_dsn(const db_cluster *c)
{
    return c->owner_dsn;
}

const char *db_cluster_admin_dsn(const db_cluster *c)
{
    return c->admin_dsn;
}

pid_t db_cluster_pid(const db_cluster *c)
{
    return c->pid;
}

bool db_cluster_alive(db_cluster *c, cu_err *err)
{
    if (c->pid < 0) {
        cu_err_set(err, CU_ERR_DB, "the embedded PostgreSQL is not running");
        return false;
    }
    int status = 0;
    pid_t r = waitpid(c->pid, &status, WNOHANG);
    if (r == 0)
        return true;
    char how[64] = "is gone", last[256];
    if (r == c->pid)
        describe_status(status, how, sizeof(how));
    log_last_line(c->log_path, last, sizeof(last));
    cu_err_set(err, CU_ERR_DB, "embedded PostgreSQL (pid %ld) %s: %s", (long)c->pid, how, last);
    c->pid = -1;
    return false;
}

void db_cluster_stop(db_cluster *c)
{
    if (!c)
        return;
    if (c->pid > 0) {
        int status = 0;
        /* SIGINT is PostgreSQL's fast shutdown: clients are disconnected,
         * a checkpoint is written, nothing committed is lost. */
        kill(c->pid, SIGINT);
        if (!wait_for_exit(c->pid, c->stop_timeout_s * 1000, &status)) {
            CU_LOG(CU_LOG_WARN, "db", "PostgreSQL did not stop within %d s; forcing it",
                   c->stop_timeout_s);
            kill(c->pid, SIGQUIT);
            if (!wait_for_exit(c->pid, 5000, &status)) {
                kill(c->pid, SIGKILL);
                waitpid(c->pid, &status, 0);
            }
        }
        CU_LOG(CU_LOG_INFO, "db", "embedded PostgreSQL stopped");
    }
    free(c->dsn);
    free(c->admin_dsn);
    free(c->owner_dsn);
    free(c->owner_admin_dsn);
    free(c);
}
