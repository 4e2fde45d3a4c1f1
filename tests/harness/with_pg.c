/*
 * with-pg COMMAND [ARG...]: run COMMAND with a throwaway PostgreSQL cluster.
 * Sets CUSTOS_TEST_DSN (the custos database as the application role),
 * CUSTOS_TEST_OWNER_DSN (the same as its owner) and CUSTOS_TEST_ADMIN_DSN (the
 * superuser) for it, and removes the cluster afterwards whatever COMMAND did.
 * Exits with COMMAND's status (128+N if it died of signal N).
 */
#include "pgtest.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig)
{
    if (child_pid > 0)
        kill((pid_t)child_pid, sig);
}

int main(int argc, char **argv)
{
    pgtest *t = NULL;
    cu_err err;
    int status = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: with-pg COMMAND [ARG...]\n");
        return 2;
    }
    atomic_store(&cu_log_threshold, CU_LOG_WARN);
    if (pgtest_start(&t, &err) != CU_OK) {
        fprintf(stderr, "with-pg: %s\n", err.msg);
        return 1;
    }
    setenv("CUSTOS_TEST_DSN", pgtest_dsn(t), 1);
    setenv("CUSTOS_TEST_OWNER_DSN", pgtest_owner_dsn(t), 1);
    setenv("CUSTOS_TEST_ADMIN_DSN", pgtest_admin_dsn(t), 1);
    setenv("CUSTOS_TEST_PGDIR", pgtest_dir(t), 1);

    struct sigaction sa = {.sa_handler = forward_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "with-pg: fork: %s\n", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        execvp(argv[1], argv + 1);
        fprintf(stderr, "with-pg: cannot run %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    child_pid = pid;
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(ws))
        status = WEXITSTATUS(ws);
    else if (WIFSIGNALED(ws))
        status = 128 + WTERMSIG(ws);
out:
    pgtest_stop(t);
    return status;
}
