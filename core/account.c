/*
 * The service account (docs/operations.md, "Least privilege"): run as root,
 * ingestd and ingestctl make sure the account exists (db.pg_user, `custos` by
 * default: created as a system account when missing), hand it the data
 * directory and the keys directory the first time, and become it — ingestd
 * keeping only CAP_NET_BIND_SERVICE and CAP_NET_ADMIN (low ports, receive
 * buffers past the sysctl limit) until its sockets are open, then none
 * (core/capabilities.c). The embedded PostgreSQL runs as it too.
 *
 * The hand-over is done as root on paths others may have prepared, so it
 * trusts nothing below a directory someone else controls: it hands over only
 * a directory under root's alone, empty or recognisably Custos's, walks it
 * by descriptor without following a link, and changes the top last (so that
 * an interrupted hand-over is finished at the next start).
 */
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

cu_rc cu_account_ensure(const char *name, cu_err *err)
{
    if (getpwnam(name))
        return CU_OK;
    if (strcmp(name, CU_SERVICE_ACCOUNT) != 0)
        return cu_err_set(err, CU_ERR_NOTFOUND,
                          "account '%s' (db.pg_user) does not exist; create it, set db.pg_user, "
                          "or run as an unprivileged user",
                          name);
    char *const argv[] = {"useradd",    "--system",     "--user-group", "--no-create-home",
                          "--home-dir", "/nonexistent", "--shell",      "/usr/sbin/nologin",
                          "--comment",  "Custos",       (char *)name,   NULL};
    pid_t pid;
    int e = posix_spawnp(&pid, "useradd", NULL, NULL, argv, environ);
    int status = 0;
    if (e == 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
        (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 9 /* made meanwhile */) &&
        getpwnam(name)) {
        CU_LOG(CU_LOG_INFO, "account", "created the system account '%s'", name);
        return CU_OK;
    }
    return cu_err_set(err, CU_ERR_IO, "cannot create the system account '%s' (useradd %s)", name,
                      e ? strerror(e) : "failed");
}

/* Whether @p dir is root's and writable by nobody else (unless sticky, as /tmp). */
static bool root_only(const char *dir)
{
    struct stat st;
    return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 &&
           (!(st.st_mode & (S_IWGRP | S_IWOTH)) || (st.st_mode & S_ISVTX));
}

/* Whether every directory from / down to the parent of @p path (absolute,
 * resolved) is root_only(): otherwise another account could swap what lies
 * below it. */
static bool root_controlled(const char *path)
{
    const char *last = strrchr(path, '/');
    if (path[0] != '/' || !last || !root_only("/"))
        return false;
    char prefix[PATH_MAX];
    for (const char *p = strchr(path + 1, '/'); p && p <= last; p = strchr(p + 1, '/')) {
        size_t n = (size_t)(p - path);
        memcpy(prefix, path, n);
        prefix[n] = '\0';
        if (!root_only(prefix))
            return false;
    }
    return true;
}

/* @p path with its parent resolved, its last name kept as it is (a link
 * stays a link) into @p out. */
static bool resolve_parent(const char *path, char out[PATH_MAX])
{
    char copy[PATH_MAX];
    if (!cu_strlcpy(copy, path, sizeof(copy)))
        return false;
    size_t len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/')
        copy[--len] = '\0';
    char *slash = strrchr(copy, '/');
    const char *name = slash ? slash + 1 : copy;
    char parent[PATH_MAX];
    if (!realpath(!slash ? "." : slash == copy ? "/" : (*slash = '\0', copy), parent))
        return false;
    return snprintf(out, PATH_MAX, "%s/%s", strcmp(parent, "/") == 0 ? "" : parent, name) <
           PATH_MAX;
}

/* Whether the directory @p dfd is empty or Custos's: a data dir (its lock
 * file) or a keys dir (its active KEK's name). */
static bool empty_or_custos(int dfd)
{
    struct stat st;
    if ((fstatat(dfd, "lock", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) ||
        (fstatat(dfd, "active", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)))
        return true;
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    bool empty = true;
    struct dirent *de;
    while (empty && (de = readdir(d)))
        empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
    closedir(d);
    return empty;
}

/* Whether a process holds the data dir @p dfd (its lock file flock()ed). */
static bool in_use(int dfd)
{
    int fd = openat(dfd, "lock", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool held = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd); /* (releases it) */
    return held;
}

/* Give everything in the directory @p dfd (taken), then it, to @p uid:@p gid;
 * by descriptor, never following a link. A file with another name elsewhere
 * (a hard link) is refused: it is not only this tree's. */
static cu_rc chown_tree(int dfd, const char *top, uid_t uid, gid_t gid, int depth, cu_err *err)
{
    DIR *d = depth <= 64 ? fdopendir(dfd) : NULL;
    if (!d) {
        close(dfd);
        return cu_err_set(err, CU_ERR_IO, "cannot walk %s: %s", top,
                          depth > 64 ? "nested too deep" : strerror(errno));
    }
    cu_rc rc = CU_OK;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = cu_err_set(err, CU_ERR_IO, "cannot hand over %s: %s: %s", top, de->d_name,
                            strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            rc = sub < 0 ? cu_err_set(err, CU_ERR_IO, "cannot hand over %s: %s: %s", top,
                                      de->d_name, strerror(errno))
                         : chown_tree(sub, top, uid, gid, depth + 1, err);
        } else if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
            rc = cu_err_set(err, CU_ERR_PERM,
                            "will not hand over %s: %s has another name elsewhere (a hard link)",
                            top, de->d_name);
        } else if (fchownat(dirfd(d), de->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = cu_err_set(err, CU_ERR_IO, "cannot hand over %s: %s: %s", top, de->d_name,
                            strerror(errno));
        }
    }
    if (!rc && fchown(dirfd(d), uid, gid) != 0)
        rc = cu_err_set(err, CU_ERR_IO, "cannot hand over %s: %s", top, strerror(errno));
    closedir(d);
    return rc;
}

/*
 * @p dir (made, with its parents, if missing) and everything in it to @p pw,
 * unless it is already the account's. A path that is not a directory, or a
 * data dir another process holds, is left to whoever opens it to report.
 */
static cu_rc hand_over(const char *dir, const struct passwd *pw, cu_err *err)
{
    struct stat st;
    char real[PATH_MAX], named[PATH_MAX];
    if (lstat(dir, &st) != 0) {
        if (errno != ENOENT)
            return CU_OK;
        /* (in a directory of the account's already: it makes it itself) */
        if (resolve_parent(dir, named)) {
            *strrchr(named, '/') = '\0';
            if (stat(named[0] ? named : "/", &st) == 0 && st.st_uid == pw->pw_uid)
                return CU_OK;
        }
        if (cu_mkdir_parents(dir, 0700) != 0)
            return CU_OK;
    }
    if (!realpath(dir, real) || !resolve_parent(dir, named))
        return CU_OK;
    int fd = open(real, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return CU_OK;
    cu_rc rc = CU_OK;
    if (fstat(fd, &st) != 0 || st.st_uid == pw->pw_uid || in_use(fd))
        goto out;
    /* Where it is named (a link there was put by whoever controls it) and
     * where it is. */
    if (!root_controlled(named) || !root_controlled(real)) {
        bool linked = strcmp(named, real) != 0;
        rc = cu_err_set(err, CU_ERR_PERM,
                        "will not hand %s%s%s to the '%s' account: a directory above it is not "
                        "root's alone; use a directory under /var/lib or /srv, or chown -R %s "
                        "it yourself",
                        real, linked ? ", reached through the link " : "", linked ? named : "",
                        pw->pw_name, pw->pw_name);
        goto out;
    }
    if (!empty_or_custos(fd)) {
        rc = cu_err_set(err, CU_ERR_PERM,
                        "will not hand %s to the '%s' account: it belongs to uid %u and holds "
                        "files that are not Custos's; use an empty directory, or chown -R %s "
                        "it yourself",
                        real, pw->pw_name, (unsigned)st.st_uid, pw->pw_name);
        goto out;
    }
    rc = chown_tree(fd, real, pw->pw_uid, pw->pw_gid, 0, err);
    fd = -1; /* (taken) */
    if (!rc)
        CU_LOG(CU_LOG_INFO, "account", "%s now belongs to the '%s' account", real, pw->pw_name);
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Run as the account: each directory on the way to @p dir is traversable. */
static cu_rc check_reachable(const char *name, const char *dir, cu_err *err)
{
    char prefix[PATH_MAX];
    if (!cu_strlcpy(prefix, dir, sizeof(prefix)))
        return CU_OK;
    for (char *slash = strchr(prefix + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash)
            *slash = '\0';
        struct stat st;
        if (stat(prefix, &st) == 0 && S_ISDIR(st.st_mode) && access(prefix, X_OK) != 0)
            return cu_err_set(err, CU_ERR_PERM,
                              "the '%s' account cannot reach %s: %s (mode %04o) is not "
                              "traversable by it; use a directory outside it (e.g. under "
                              "/var/lib or /srv)",
                              name, dir, prefix, (unsigned)(st.st_mode & 07777));
        if (!slash)
            return CU_OK;
        *slash = '/';
    }
}

cu_rc cu_account_become(const char *name, const char *const *dirs, size_t ndirs, bool keep_net,
                        cu_err *err)
{
    if (geteuid() != 0)
        return CU_OK;
    if (strcmp(name, "postgres") == 0 || strcmp(name, "root") == 0)
        return cu_err_set(err, CU_ERR_CONFIG,
                          "db.pg_user '%s': Custos runs as an account of its own (the default, "
                          "custos), not a shared one",
                          name);
    cu_rc rc = cu_account_ensure(name, err);
    if (rc)
        return rc;
    struct passwd *pw = getpwnam(name);
    if (!pw)
        return cu_err_set(err, CU_ERR_NOTFOUND, "account '%s' does not exist", name);
    if (pw->pw_uid == 0)
        return cu_err_set(err, CU_ERR_CONFIG, "db.pg_user '%s' has uid 0", name);
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    for (size_t i = 0; i < ndirs; i++) {
        rc = hand_over(dirs[i], pw, err);
        if (rc)
            return rc;
    }
    cu_log_give_to(uid, gid); /* (a log.file reopened on SIGHUP) */
    gid_t groups[64];
    int ngroups = 64;
    if (getgrouplist(pw->pw_name, gid, groups, &ngroups) < 0) {
        groups[0] = gid;
        ngroups = 1;
    }
    /* A change of credentials clears the parent-death signal (a service
     * manager's or scripts/demo's setpriv --pdeathsig): set it again after. */
    int death_signal = 0;
    pid_t parent = getppid();
    prctl(PR_GET_PDEATHSIG, &death_signal, 0, 0, 0);
    if (keep_net && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
        return cu_err_set(err, CU_ERR_PERM, "prctl(PR_SET_KEEPCAPS): %s", strerror(errno));
    if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        int e = errno;
        return cu_err_set(err, CU_ERR_PERM, "cannot become the '%s' account: %s", name,
                          strerror(e));
    }
    /* (those the process may hold: a container or a service manager may
     * have bounded them; without one, its socket option falls back) */
    uint64_t kept = 0;
    if (keep_net && !cu_caps_keep(CU_CAP_NET, &kept))
        return cu_err_set(err, CU_ERR_PERM, "capset: %s", strerror(errno));
    if (keep_net)
        prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    if (death_signal) {
        prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0);
        if (getppid() != parent) /* (it died meanwhile) */
            raise(death_signal);
    }
    /* No way back. */
    if (setuid(0) == 0 || setgid(0) == 0)
        return cu_err_set(err, CU_ERR_PERM, "still able to become root after dropping to '%s'",
                          name);
    for (size_t i = 0; i < ndirs; i++) {
        rc = check_reachable(name, dirs[i], err);
        if (rc)
            return rc;
    }
    CU_LOG(CU_LOG_INFO, "account", "running as '%s' (uid %u)%s", name, (unsigned)uid,
           !keep_net ? ""
           : kept == CU_CAP_NET
               ? ", keeping only CAP_NET_BIND_SERVICE and CAP_NET_ADMIN until its sockets are open"
               : ", keeping what it may of CAP_NET_BIND_SERVICE and CAP_NET_ADMIN until its "
                 "sockets are open");
    return CU_OK;
}
