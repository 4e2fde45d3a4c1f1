/*
 * fsshim.so — an LD_PRELOAD library that makes a process's file system fail
 * the way a failing disk or a power cut does, for the store's fault tests.
 * Inert unless configured; it reads its settings once and removes them from
 * the environment, so programs the process starts (PostgreSQL, hooks) run
 * without it.
 *
 * Fault injection: CUSTOS_FAULT="OP:CLASS:N:ERRNO[,...]" fails the Nth call
 * (from 1; "N+" the Nth and every later one) of OP on files of CLASS with
 * ERRNO (EIO, ENOSPC, EROFS). OP: write, fsync, fdatasync, rename, dirfsync
 * (fsync of a directory). CLASS: seg (a segment being written, *.seg.tmp, and
 * its recording directory), seal (seal.tmp, and the directory fsync that
 * follows its rename). Each failure is appended to CUSTOS_FAULT_LOG.
 *
 * Power cut: CUSTOS_POWERCUT=N cuts the power at the Nth file operation
 * (write, fsync, rename, unlink, mkdir, create) under CUSTOS_POWERCUT_ROOT
 * (PostgreSQL's pg/ excluded): every other operation is frozen, every write
 * not covered by a completed fsync is dropped (a file keeps a random length
 * between what was fsynced and what was written: torn writes), every
 * directory change (create, rename, unlink, mkdir) not covered by an fsync of
 * its directory is undone (a random prefix of each directory's changes
 * survives, in order, as a journaling file system keeps them), and the
 * process exits with status 77 at once. CUSTOS_POWERCUT_SEED seeds the
 * choices; CUSTOS_FAULT_LOG gets a line saying where the cut fell.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FDS    4096
#define MAX_SPECS  8
#define MAX_FILES  65536
#define MAX_DIROPS 65536
#define KEEP_DIR   ".powercut-keep" /* replaced and unlinked files, kept for undo */

typedef enum { OP_WRITE, OP_FSYNC, OP_FDATASYNC, OP_RENAME, OP_DIRFSYNC, OP_COUNT } fault_op;
typedef enum { CLASS_NONE, CLASS_SEG, CLASS_SEAL } fault_class;

typedef struct {
    fault_op op;
    fault_class cls;
    long nth;
    bool onward;
    int err;
    long seen;
} fault_spec;

/* ------------------------------------------------------------- real calls */

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_unlink)(const char *);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_rmdir)(const char *);
static int (*real_ftruncate)(int, off_t);

/* ---------------------------------------------------------------- state */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bool active_fault, active_cut;
static fault_spec specs[MAX_SPECS];
static int nspecs;
static char log_path[PATH_MAX];
static char root[PATH_MAX];
static size_t root_len;
static long cut_at, cut_ops;
static uint64_t rng = 88172645463325252ULL;

typedef struct {
    bool used;
    bool is_dir;
    fault_class cls;
    char path[PATH_MAX];
    int file; /* index into files[] when tracked for the power cut, else -1 */
} fd_info;
static fd_info fds[MAX_FDS];

/* The power cut's view of a file: by inode, with where it is now. */
typedef struct {
    dev_t dev;
    ino_t ino;
    char path[PATH_MAX];
    off_t synced; /* length covered by the last fsync */
    off_t size;   /* length written */
    bool dirty;
} file_state;
static file_state files[MAX_FILES];
static int nfiles;

typedef enum { DOP_CREATE, DOP_RENAME, DOP_UNLINK, DOP_MKDIR, DOP_RMDIR } dirop_kind;
typedef struct {
    dirop_kind kind;
    char dir[PATH_MAX];  /* the directory whose entry changed */
    char path[PATH_MAX]; /* the entry (new name for a rename) */
    char from[PATH_MAX]; /* rename: old name */
    char kept[PATH_MAX]; /* a replaced or unlinked file's copy, or "" */
    bool synced;
} dirop;
static dirop *dirops;
static int ndirops;
static long keep_seq;

static __thread char last_seal_dir[PATH_MAX]; /* this thread renamed a seal here */

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void note(const char *fmt, ...)
{
    if (!log_path[0])
        return;
    char line[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    int fd = real_open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (real_write(fd, line, (size_t)n) < 0) {
        }
        real_close(fd);
    }
}

static int parse_errno(const char *s)
{
    if (strcmp(s, "EIO") == 0)
        return EIO;
    if (strcmp(s, "ENOSPC") == 0)
        return ENOSPC;
    if (strcmp(s, "EROFS") == 0)
        return EROFS;
    return 0;
}

static void parse_specs(const char *text)
{
    static const char *const ops[] = {"write", "fsync", "fdatasync", "rename", "dirfsync"};
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", text);
    for (char *save = NULL, *one = strtok_r(buf, ",", &save); one && nspecs < MAX_SPECS;
         one = strtok_r(NULL, ",", &save)) {
        char op[16], cls[16], nth[24], err[16];
        if (sscanf(one, "%15[^:]:%15[^:]:%23[^:]:%15s", op, cls, nth, err) != 4)
            continue;
        fault_spec s = {.op = OP_COUNT};
        for (int i = 0; i < OP_COUNT; i++)
            if (strcmp(op, ops[i]) == 0)
                s.op = (fault_op)i;
        s.cls = strcmp(cls, "seg") == 0    ? CLASS_SEG
                : strcmp(cls, "seal") == 0 ? CLASS_SEAL
                                           : CLASS_NONE;
        s.nth = strtol(nth, NULL, 10);
        s.onward = strchr(nth, '+') != NULL;
        s.err = parse_errno(err);
        if (s.op != OP_COUNT && s.cls != CLASS_NONE && s.nth > 0 && s.err)
            specs[nspecs++] = s;
    }
}

__attribute__((constructor)) static void shim_init(void)
{
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_close = dlsym(RTLD_NEXT, "close");
    real_open = dlsym(RTLD_NEXT, "open");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_rename = dlsym(RTLD_NEXT, "rename");
    real_renameat = dlsym(RTLD_NEXT, "renameat");
    real_unlink = dlsym(RTLD_NEXT, "unlink");
    real_mkdir = dlsym(RTLD_NEXT, "mkdir");
    real_rmdir = dlsym(RTLD_NEXT, "rmdir");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    const char *v;
    if ((v = getenv("CUSTOS_FAULT_LOG")))
        snprintf(log_path, sizeof(log_path), "%s", v);
    if ((v = getenv("CUSTOS_FAULT"))) {
        parse_specs(v);
        active_fault = nspecs > 0;
    }
    if ((v = getenv("CUSTOS_POWERCUT")) && getenv("CUSTOS_POWERCUT_ROOT")) {
        cut_at = strtol(v, NULL, 10);
        snprintf(root, sizeof(root), "%s", getenv("CUSTOS_POWERCUT_ROOT"));
        root_len = strlen(root);
        if ((v = getenv("CUSTOS_POWERCUT_SEED")))
            rng = strtoull(v, NULL, 10) * 2654435761u + 1;
        dirops = calloc(MAX_DIROPS, sizeof(*dirops));
        active_cut = cut_at > 0 && dirops;
        if (active_cut) {
            char keep[PATH_MAX + 32];
            snprintf(keep, sizeof(keep), "%s/" KEEP_DIR, root);
            real_mkdir(keep, 0700);
        }
    }
    /* Children (PostgreSQL, hooks) run without it. */
    unsetenv("CUSTOS_FAULT");
    unsetenv("CUSTOS_POWERCUT");
    unsetenv("LD_PRELOAD");
}

/* ------------------------------------------------------------- classify */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static fault_class class_of_path(const char *path)
{
    if (ends_with(path, ".seg.tmp"))
        return CLASS_SEG;
    if (ends_with(path, "/seal.tmp"))
        return CLASS_SEAL;
    return CLASS_NONE;
}

/* A recording directory: .../segments/xx/<36-character id>. */
static bool is_recording_dir(const char *path)
{
    const char *last = strrchr(path, '/');
    return last && strlen(last + 1) == 36 && strstr(path, "/segments/");
}

/* Should this call fail? With mu held. */
static int injected(fault_op op, fault_class cls, const char *path)
{
    for (int i = 0; i < nspecs; i++) {
        fault_spec *s = &specs[i];
        if (s->op != op || s->cls != cls)
            continue;
        s->seen++;
        if (s->seen == s->nth || (s->onward && s->seen > s->nth)) {
            static const char *const names[] = {"write", "fsync", "fdatasync", "rename",
                                                "dirfsync"};
            note("fault %s %s %ld %s %s\n", names[op], cls == CLASS_SEG ? "seg" : "seal", s->seen,
                 s->err == EIO      ? "EIO"
                 : s->err == ENOSPC ? "ENOSPC"
                                    : "EROFS",
                 path);
            return s->err;
        }
    }
    return 0;
}

/* --------------------------------------------------------- the power cut */

static bool under_root(const char *path)
{
    if (!active_cut || strncmp(path, root, root_len) != 0 || path[root_len] != '/')
        return false;
    const char *rest = path + root_len + 1;
    return strncmp(rest, "pg/", 3) != 0 && strcmp(rest, "pg") != 0 &&
           strncmp(rest, KEEP_DIR, strlen(KEEP_DIR)) != 0 && strncmp(rest, "lock", 4) != 0;
}

static void dir_of(const char *path, char *out)
{
    snprintf(out, PATH_MAX, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash && slash != out)
        *slash = '\0';
}

static int file_find(dev_t dev, ino_t ino)
{
    for (int i = 0; i < nfiles; i++)
        if (files[i].dev == dev && files[i].ino == ino)
            return i;
    return -1;
}

static int file_track(int fd, const char *path, bool created)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    int i = file_find(st.st_dev, st.st_ino);
    if (i < 0 && nfiles < MAX_FILES) {
        i = nfiles++;
        files[i] = (file_state){.dev = st.st_dev, .ino = st.st_ino};
        files[i].synced = files[i].size = st.st_size;
    }
    /* A file made now has nothing durable yet, whatever an earlier file
     * with the same inode number had. */
    if (i >= 0 && created) {
        files[i].synced = files[i].size = 0;
        files[i].dirty = false;
    }
    if (i >= 0)
        snprintf(files[i].path, PATH_MAX, "%s", path);
    return i;
}

static void dirop_add(dirop_kind kind, const char *path, const char *from, const char *kept)
{
    if (ndirops >= MAX_DIROPS)
        return;
    dirop *d = &dirops[ndirops++];
    d->kind = kind;
    dir_of(path, d->dir);
    snprintf(d->path, PATH_MAX, "%s", path);
    snprintf(d->from, PATH_MAX, "%s", from ? from : "");
    snprintf(d->kept, PATH_MAX, "%s", kept ? kept : "");
    d->synced = false;
}

/* A file about to be replaced or unlinked: a hard link keeps it for undo. */
static void keep_copy(const char *path, char *kept)
{
    kept[0] = '\0';
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    snprintf(kept, PATH_MAX, "%s/" KEEP_DIR "/%ld", root, ++keep_seq);
    if (link(path, kept) != 0)
        kept[0] = '\0';
}

static void dir_synced(const char *dir)
{
    for (int i = 0; i < ndirops; i++) {
        if (dirops[i].synced || strcmp(dirops[i].dir, dir) != 0)
            continue;
        dirops[i].synced = true;
        if (dirops[i].kept[0])
            real_unlink(dirops[i].kept);
    }
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char sub[PATH_MAX + 256];
            snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(sub);
            else
                real_unlink(sub);
        }
        closedir(d);
    }
    real_rmdir(path);
}

/* The power goes: what no fsync covered is lost. Never returns. */
/* A file's path changed back by an undo: follow it. */
static void file_moved(const char *from, const char *to)
{
    for (int i = 0; i < nfiles; i++)
        if (strcmp(files[i].path, from) == 0)
            snprintf(files[i].path, PATH_MAX, "%s", to);
}

/* The power goes: what no fsync covered is lost. Never returns. */
static void power_cut(void)
{
    int torn = 0, undone = 0;
    /* Each directory keeps a random prefix of its unsynced changes. */
    int *cut_from = calloc((size_t)ndirops + 1, sizeof(int));
    for (int i = 0; i < ndirops; i++) {
        if (dirops[i].synced)
            continue;
        int first = -1, count = 0;
        for (int j = 0; j < ndirops; j++) /* this directory's unsynced changes */
            if (!dirops[j].synced && strcmp(dirops[j].dir, dirops[i].dir) == 0) {
                if (first < 0)
                    first = j;
                count++;
            }
        if (first != i)
            continue; /* decided at its first change */
        int keep = (int)(next_random() % (uint64_t)(count + 1)), seen = 0;
        for (int j = 0; j < ndirops; j++)
            if (!dirops[j].synced && strcmp(dirops[j].dir, dirops[i].dir) == 0)
                cut_from[j] = seen++ >= keep;
    }
    for (int i = ndirops - 1; i >= 0; i--) {
        dirop *d = &dirops[i];
        if (d->synced || !cut_from[i])
            continue;
        undone++;
        switch (d->kind) {
        case DOP_CREATE: real_unlink(d->path); break;
        case DOP_MKDIR: remove_tree(d->path); break;
        case DOP_RMDIR: real_mkdir(d->path, 0750); break;
        case DOP_RENAME:
            if (real_rename(d->path, d->from) == 0)
                file_moved(d->path, d->from);
            if (d->kept[0])
                real_rename(d->kept, d->path);
            break;
        case DOP_UNLINK:
            if (d->kept[0])
                real_rename(d->kept, d->path);
            break;
        }
    }
    free(cut_from);
    /* Then the data: wherever each file is now (a removal undone brings it
     * back), it keeps what its last fsync covered and a random part of the rest. */
    for (int i = 0; i < nfiles; i++) {
        file_state *f = &files[i];
        if (!f->dirty || f->size <= f->synced)
            continue;
        off_t span = f->size - f->synced;
        off_t keep = f->synced + (off_t)(next_random() % (uint64_t)(span + 1));
        if (truncate(f->path, keep) == 0)
            torn++;
    }
    note("powercut at %ld: %d files torn, %d directory changes undone\n", cut_ops, torn, undone);
    _exit(77);
}

/* One more operation under the root: the cut may fall here. With mu held. */
static void count_op(void)
{
    if (++cut_ops >= cut_at)
        power_cut();
}

/* ------------------------------------------------------------ interposed */

static int track_open(int fd, const char *path, int flags)
{
    if (fd < 0 || fd >= MAX_FDS || (!active_fault && !active_cut))
        return fd;
    char abs[PATH_MAX];
    if (path[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)))
            return fd;
        snprintf(abs, sizeof(abs), "%s/%s", cwd, path);
    } else {
        snprintf(abs, sizeof(abs), "%s", path);
    }
    pthread_mutex_lock(&mu);
    fd_info *f = &fds[fd];
    memset(f, 0, sizeof(*f));
    f->used = true;
    f->is_dir = (flags & O_DIRECTORY) != 0;
    f->cls = class_of_path(abs);
    f->file = -1;
    snprintf(f->path, sizeof(f->path), "%s", abs);
    if (under_root(abs) && !f->is_dir) {
        struct stat st;
        bool existed = (flags & O_CREAT) == 0;
        f->file = file_track(fd, abs, !existed);
        if (!existed && f->file >= 0 && fstat(fd, &st) == 0 && st.st_size == 0 &&
            (flags & O_CREAT)) {
            dirop_add(DOP_CREATE, abs, NULL, NULL);
            count_op();
        }
        if (f->file >= 0 && (flags & O_TRUNC)) {
            /* Strictest: what it held before need not come back either. */
            files[f->file].size = files[f->file].synced = 0;
            files[f->file].dirty = true;
        }
    }
    pthread_mutex_unlock(&mu);
    return fd;
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (!real_open)
        shim_init();
    bool existed = active_cut && (flags & O_CREAT) && access(path, F_OK) == 0;
    int fd = real_open(path, flags, mode);
    return track_open(fd, path, existed ? flags & ~O_CREAT : flags);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    int fd = real_openat(dirfd, path, flags, mode);
    if (dirfd == AT_FDCWD || path[0] == '/')
        return track_open(fd, path, flags);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int close(int fd)
{
    if (fd >= 0 && fd < MAX_FDS && fds[fd].used) {
        pthread_mutex_lock(&mu);
        fds[fd].used = false;
        pthread_mutex_unlock(&mu);
    }
    return real_close(fd);
}

static ssize_t do_write(int fd, const void *buf, size_t len, off_t off, bool positioned)
{
    if (fd < 0 || fd >= MAX_FDS || !fds[fd].used)
        return positioned ? real_pwrite(fd, buf, len, off) : real_write(fd, buf, len);
    pthread_mutex_lock(&mu);
    fd_info *f = &fds[fd];
    int e = active_fault && f->cls != CLASS_NONE ? injected(OP_WRITE, f->cls, f->path) : 0;
    if (e) {
        pthread_mutex_unlock(&mu);
        errno = e;
        return -1;
    }
    if (f->file >= 0)
        count_op();
    ssize_t w = positioned ? real_pwrite(fd, buf, len, off) : real_write(fd, buf, len);
    if (w > 0 && f->file >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0)
            files[f->file].size = st.st_size;
        files[f->file].dirty = true;
    }
    pthread_mutex_unlock(&mu);
    return w;
}

ssize_t write(int fd, const void *buf, size_t len)
{
    return do_write(fd, buf, len, 0, false);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    return do_write(fd, buf, len, off, true);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));

int ftruncate(int fd, off_t len)
{
    int r = real_ftruncate(fd, len);
    if (r == 0 && fd >= 0 && fd < MAX_FDS && fds[fd].used && fds[fd].file >= 0) {
        pthread_mutex_lock(&mu);
        files[fds[fd].file].size = len;
        files[fds[fd].file].dirty = true;
        pthread_mutex_unlock(&mu);
    }
    return r;
}

static int do_sync(int fd, bool data_only)
{
    if (fd < 0 || fd >= MAX_FDS || !fds[fd].used)
        return data_only ? real_fdatasync(fd) : real_fsync(fd);
    pthread_mutex_lock(&mu);
    fd_info *f = &fds[fd];
    int e = 0;
    if (active_fault) {
        if (f->is_dir && is_recording_dir(f->path)) {
            bool seal = strcmp(last_seal_dir, f->path) == 0;
            last_seal_dir[0] = '\0';
            e = injected(OP_DIRFSYNC, seal ? CLASS_SEAL : CLASS_SEG, f->path);
        } else if (!f->is_dir && f->cls != CLASS_NONE) {
            e = injected(data_only ? OP_FDATASYNC : OP_FSYNC, f->cls, f->path);
        }
    }
    if (e) {
        pthread_mutex_unlock(&mu);
        errno = e;
        return -1;
    }
    bool tracked = f->file >= 0 || (f->is_dir && under_root(f->path));
    if (tracked)
        count_op();
    int r = data_only ? real_fdatasync(fd) : real_fsync(fd);
    if (r == 0 && f->file >= 0) {
        files[f->file].synced = files[f->file].size;
        files[f->file].dirty = false;
    }
    if (r == 0 && f->is_dir && active_cut)
        dir_synced(f->path);
    pthread_mutex_unlock(&mu);
    return r;
}

int fsync(int fd)
{
    return do_sync(fd, false);
}

int fdatasync(int fd)
{
    return do_sync(fd, true);
}

int rename(const char *from, const char *to)
{
    pthread_mutex_lock(&mu);
    fault_class cls = class_of_path(from);
    int e = active_fault && cls != CLASS_NONE ? injected(OP_RENAME, cls, from) : 0;
    if (e) {
        pthread_mutex_unlock(&mu);
        errno = e;
        return -1;
    }
    bool tracked = under_root(from) && under_root(to);
    char kept[PATH_MAX] = "";
    if (tracked) {
        count_op();
        keep_copy(to, kept);
    }
    int r = real_rename(from, to);
    if (r == 0 && tracked) {
        dirop_add(DOP_RENAME, to, from, kept);
        struct stat st;
        if (stat(to, &st) == 0) {
            int i = file_find(st.st_dev, st.st_ino);
            if (i >= 0)
                snprintf(files[i].path, PATH_MAX, "%s", to);
        }
    } else if (kept[0]) {
        real_unlink(kept);
    }
    if (r == 0 && ends_with(to, "/seal"))
        dir_of(to, last_seal_dir);
    pthread_mutex_unlock(&mu);
    return r;
}

int renameat(int olddir, const char *from, int newdir, const char *to)
{
    if ((olddir == AT_FDCWD || from[0] == '/') && (newdir == AT_FDCWD || to[0] == '/'))
        return rename(from, to);
    return real_renameat(olddir, from, newdir, to);
}

int unlink(const char *path)
{
    if (!active_cut || !under_root(path))
        return real_unlink(path);
    pthread_mutex_lock(&mu);
    count_op();
    char kept[PATH_MAX];
    keep_copy(path, kept);
    int r = real_unlink(path);
    if (r == 0)
        dirop_add(DOP_UNLINK, path, NULL, kept);
    else if (kept[0])
        real_unlink(kept);
    pthread_mutex_unlock(&mu);
    return r;
}

int mkdir(const char *path, mode_t mode)
{
    if (!active_cut || !under_root(path))
        return real_mkdir(path, mode);
    pthread_mutex_lock(&mu);
    count_op();
    int r = real_mkdir(path, mode);
    if (r == 0)
        dirop_add(DOP_MKDIR, path, NULL, NULL);
    pthread_mutex_unlock(&mu);
    return r;
}

int rmdir(const char *path)
{
    if (!active_cut || !under_root(path))
        return real_rmdir(path);
    pthread_mutex_lock(&mu);
    count_op();
    int r = real_rmdir(path);
    if (r == 0)
        dirop_add(DOP_RMDIR, path, NULL, NULL);
    pthread_mutex_unlock(&mu);
    return r;
}
