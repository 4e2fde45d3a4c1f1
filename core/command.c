/*
 * Running an operator's command (audit.checkpoint_command, alerts.command):
 * /bin/sh -c COMMAND with INPUT on its standard input, bounded in time.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

bool cu_command_run(const char *command, const char *input, size_t len, int timeout_ms, char *why,
                    size_t why_cap)
{
    int pipefd[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    pid_t pid = -1;
    why[0] = '\0';
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(why, why_cap, "pipe: %s", strerror(errno));
        return false;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[0], STDIN_FILENO);
    char *const argv[] = {"/bin/sh", "-c", (char *)command, NULL};
    int e = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[0]);
    if (e != 0) {
        close(pipefd[1]);
        snprintf(why, why_cap, "cannot run /bin/sh: %s", strerror(e));
        return false;
    }
    /* What the pipe takes at once (the input is small); a child that does
     * not read it is not waited for here. */
    fcntl(pipefd[1], F_SETFL, O_NONBLOCK);
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigaction(SIGPIPE, &ign, &old);
    ssize_t w = len ? write(pipefd[1], input, len) : 0;
    sigaction(SIGPIPE, &old, NULL);
    close(pipefd[1]);
    int status = 0;
    int64_t deadline = cu_mono_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            snprintf(why, why_cap, "waitpid: %s", strerror(errno));
            return false;
        }
        if (cu_mono_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            snprintf(why, why_cap, "did not finish within %d ms; killed", timeout_ms);
            return false;
        }
        nanosleep(&(struct timespec){0, 20 * 1000000}, NULL);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, why_cap, "%s %d", WIFEXITED(status) ? "exit status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return false;
    }
    if (w != (ssize_t)len) {
        snprintf(why, why_cap, "its input was not all written");
        return false;
    }
    return true;
}
