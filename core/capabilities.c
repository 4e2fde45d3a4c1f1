/*
 * Capabilities of a process that became the service account
 * (core/account.c): the few kept across the change of user, and their drop
 * from every thread once the sockets that needed them are open.
 * Capabilities belong to each thread (capset changes only the caller's), so
 * the drop asks every thread, by a signal of ours, to clear its own, then
 * reads every thread's sets back from /proc.
 */
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DROP_SIGNAL  (SIGRTMIN + 4) /* (glibc uses the first two itself) */
#define DROP_WAIT_MS 2000

/* The calling thread's permitted set, as two 32-bit words. */
static bool caps_get(uint32_t permitted[2])
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0)
        return false;
    permitted[0] = d[0].permitted;
    permitted[1] = d[1].permitted;
    return true;
}

/* The calling thread keeps exactly @p permitted (effective too), nothing
 * inheritable. One system call: async-signal-safe. */
static bool caps_set(const uint32_t permitted[2])
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    for (int i = 0; i < 2; i++)
        d[i].effective = d[i].permitted = permitted[i];
    return syscall(SYS_capset, &h, d) == 0;
}

uint64_t cu_caps_permitted(void)
{
    uint32_t p[2];
    return caps_get(p) ? (uint64_t)p[1] << 32 | p[0] : 0;
}

bool cu_caps_keep(uint64_t wanted, uint64_t *kept)
{
    uint32_t p[2];
    if (!caps_get(p))
        return false;
    uint64_t have = (uint64_t)p[1] << 32 | p[0], keep = wanted & have;
    uint32_t k[2] = {(uint32_t)keep, (uint32_t)(keep >> 32)};
    *kept = keep;
    return caps_set(k);
}

static atomic_int threads_dropped;

static void on_drop_signal(int sig)
{
    (void)sig;
    int saved = errno;
    static const uint32_t none[2] = {0, 0};
    if (caps_set(none))
        atomic_fetch_add(&threads_dropped, 1);
    errno = saved;
}

/* Whether any thread of this process still holds a capability. */
static bool some_thread_capable(void)
{
    DIR *tasks = opendir("/proc/self/task");
    if (!tasks)
        return true;
    bool capable = false;
    struct dirent *de;
    while (!capable && (de = readdir(tasks))) {
        if (de->d_name[0] == '.')
            continue;
        char path[64], line[128];
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", de->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue; /* (it ended) */
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "CapPrm:", 7) == 0 || strncmp(line, "CapEff:", 7) == 0)
                capable |= strtoull(line + 7, NULL, 16) != 0;
        fclose(f);
    }
    closedir(tasks);
    return capable;
}

cu_rc cu_caps_drop_all(cu_err *err)
{
    if (!cu_caps_permitted())
        return CU_OK; /* none were kept */
    struct sigaction sa = {.sa_handler = on_drop_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(DROP_SIGNAL, &sa, NULL); /* (left in place: a late one is harmless) */
    static const uint32_t none[2] = {0, 0};
    if (!caps_set(none))
        return cu_err_set(err, CU_ERR_PERM, "cannot drop capabilities: %s", strerror(errno));
    pid_t self = (pid_t)syscall(SYS_gettid);
    int asked = 0;
    DIR *tasks = opendir("/proc/self/task");
    struct dirent *de;
    while (tasks && (de = readdir(tasks))) {
        int64_t tid = 0;
        if (cu_parse_int64(de->d_name, &tid) && tid > 0 && tid != self &&
            syscall(SYS_tgkill, getpid(), (pid_t)tid, DROP_SIGNAL) == 0)
            asked++;
    }
    if (tasks)
        closedir(tasks);
    for (int ms = 0; atomic_load(&threads_dropped) < asked && ms < DROP_WAIT_MS; ms++)
        usleep(1000);
    if (some_thread_capable())
        return cu_err_set(err, CU_ERR_PERM,
                          "a thread still holds capabilities after the drop (%d of %d answered)",
                          atomic_load(&threads_dropped), asked);
    CU_LOG(CU_LOG_INFO, "account",
           "every socket is open: no capabilities from here on, in any of %d threads", asked + 1);
    return CU_OK;
}
