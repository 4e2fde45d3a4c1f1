/* core: buffers, metrics text, the data dir lock, logging. */
#include "core/core.h"
#include "tests/testlib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/custos-test-core-XXXXXX";

CU_METRIC_DEFINE(test_requests_a, CU_METRIC_COUNTER, "custos_test_requests_total", "kind=\"a\"",
                 "Test counter.")
CU_METRIC_DEFINE(test_gauge, CU_METRIC_GAUGE, "custos_test_depth", "", "Test gauge.")
CU_METRIC_DEFINE(test_requests_b, CU_METRIC_COUNTER, "custos_test_requests_total", "kind=\"b\"",
                 "Test counter.")

static void test_buf(void)
{
    cu_buf b;
    cu_buf_init(&b, 10);
    CHECK_EQ_INT(cu_buf_append(&b, "12345", 5), CU_OK);
    CHECK_EQ_INT(cu_buf_printf(&b, "%d", 6789), CU_OK);
    CHECK(strcmp(b.data, "123456789") == 0);
    CHECK_EQ_INT(cu_buf_append(&b, "ab", 2), CU_ERR_NOMEM); /* 11 > cap 10 */
    CHECK(strcmp(b.data, "123456789") == 0);                /* unchanged */
    CHECK_EQ_INT(cu_buf_append(&b, "a", 1), CU_OK);
    CHECK_EQ_INT(b.len, 10);
    cu_buf_reset(&b);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_INT(cu_buf_append(&b, "x", SIZE_MAX), CU_ERR_NOMEM); /* no overflow */
    cu_buf_free(&b);
}

static void test_metrics(void)
{
    cu_metric_add(&test_requests_a, 3);
    cu_metric_inc(&test_requests_b);
    cu_metric_set(&test_gauge, -7);
    cu_buf out;
    cu_buf_init(&out, 1 << 20);
    CHECK_EQ_INT(cu_metrics_render(&out), CU_OK);
    const char *family = "# HELP custos_test_requests_total Test counter.\n"
                         "# TYPE custos_test_requests_total counter\n"
                         "custos_test_requests_total{kind=\"a\"} 3\n"
                         "custos_test_requests_total{kind=\"b\"} 1\n";
    CHECK_STR_CONTAINS(out.data, family);
    CHECK_STR_CONTAINS(out.data, "# TYPE custos_test_depth gauge\ncustos_test_depth -7\n");
    CHECK_STR_CONTAINS(out.data, "custos_build_info{version=\"" CUSTOS_VERSION "\"} 1\n");
    CHECK_STR_CONTAINS(out.data, "process_open_fds ");
    CHECK_STR_CONTAINS(out.data, "process_resident_memory_bytes ");
    /* One HELP line per family, even with two series. */
    const char *first = strstr(out.data, "# HELP custos_test_requests_total");
    CHECK(first && !strstr(first + 1, "# HELP custos_test_requests_total"));
    cu_buf_free(&out);

    cu_buf small;
    cu_buf_init(&small, 64);
    CHECK_EQ_INT(cu_metrics_render(&small), CU_ERR_NOMEM);
    cu_buf_free(&small);
}

static void test_datadir(void)
{
    char path[512];
    cu_datadir *a = NULL, *b = NULL;
    cu_err err = {""};
    snprintf(path, sizeof(path), "%s/sub/var", tmpdir);
    CHECK_EQ_INT(cu_datadir_open(path, "first", &a, &err), CU_OK);
    REQUIRE(a);
    CHECK(cu_datadir_path(a)[0] == '/');
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0711);

    /* A second holder is refused, naming the first. */
    CHECK_EQ_INT(cu_datadir_open(path, "second", &b, &err), CU_ERR_BUSY);
    CHECK_STR_CONTAINS(err.msg, "is in use by another process (first pid");
    CHECK(b == NULL);

    /* A child process cannot take it either. */
    pid_t pid = fork();
    if (pid == 0) {
        cu_datadir *c = NULL;
        cu_err e;
        _exit(cu_datadir_open(path, "child", &c, &e) == CU_ERR_BUSY ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* A program we exec does not inherit the lock (close-on-exec): while
     * one still runs, the lock is free again once we let it go. */
    pid = fork();
    if (pid == 0) {
        execl("/bin/sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    REQUIRE(pid > 0);
    char fd_dir[64], lock_path[600], target[600];
    snprintf(fd_dir, sizeof(fd_dir), "/proc/%d/exe", (int)pid);
    for (int i = 0; i < 200; i++) { /* until the exec has happened */
        ssize_t n = readlink(fd_dir, target, sizeof(target) - 1);
        if (n > 0 && (target[n] = '\0', strstr(target, "sleep")))
            break;
        usleep(10000);
    }
    snprintf(lock_path, sizeof(lock_path), "%s/lock", cu_datadir_path(a));
    snprintf(fd_dir, sizeof(fd_dir), "/proc/%d/fd", (int)pid);
    DIR *fds = opendir(fd_dir);
    REQUIRE(fds);
    struct dirent *de;
    int inherited = 0;
    while ((de = readdir(fds))) {
        char link[600];
        snprintf(link, sizeof(link), "%s/%s", fd_dir, de->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n > 0 && (target[n] = '\0', strcmp(target, lock_path) == 0))
            inherited++;
    }
    closedir(fds);
    CHECK_EQ_INT(inherited, 0);
    cu_datadir_close(a);
    CHECK_EQ_INT(cu_datadir_open(path, "second", &b, &err), CU_OK);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    cu_datadir_close(b);
    cu_datadir_close(NULL);

    /* Not a directory; below a file. */
    char file[512];
    snprintf(file, sizeof(file), "%s/plainfile", tmpdir);
    int fd = open(file, O_CREAT | O_WRONLY, 0600);
    close(fd);
    CHECK_EQ_INT(cu_datadir_open(file, "x", &b, &err), CU_ERR_IO);
    CHECK_STR_CONTAINS(err.msg, "is not a directory");
    snprintf(path, sizeof(path), "%s/plainfile/var", tmpdir);
    CHECK(cu_datadir_open(path, "x", &b, &err) != CU_OK);
    CHECK_STR_CONTAINS(err.msg, "Not a directory");
}

static int evaluated;
static const char *count_eval(void)
{
    evaluated++;
    return "x";
}

static void test_log(void)
{
    char path[512], text[4096];
    cu_err err = {""};
    snprintf(path, sizeof(path), "%s/custos.log", tmpdir);
    CHECK_EQ_INT(cu_log_open("testprog", path, &err), CU_OK);
    atomic_store(&cu_log_threshold, CU_LOG_INFO);
    CU_LOG(CU_LOG_INFO, "unit", "hello %d", 42);
    CU_LOG(CU_LOG_DEBUG, "unit", "never %s", count_eval());
    CHECK_EQ_INT(evaluated, 0); /* level checked before arguments are evaluated */
    CU_LOG(CU_LOG_WARN, "peer 1.2.3.4", "injected\nline\r%s", "end");
    CU_LOG_ERRNO(CU_LOG_ERROR, "io", ENOENT, "open %s", "/x");

    /* Rotation: move the file away, reopen, keep writing. */
    char rotated[600];
    snprintf(rotated, sizeof(rotated), "%s.1", path);
    CHECK(rename(path, rotated) == 0);
    CHECK_EQ_INT(cu_log_reopen(&err), CU_OK);
    CU_LOG(CU_LOG_INFO, "unit", "after rotation");
    cu_log_close();

    FILE *f = fopen(rotated, "r");
    REQUIRE(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    CHECK_STR_CONTAINS(text, "testprog[");
    CHECK_STR_CONTAINS(text, "] info  unit: hello 42\n");
    CHECK(strstr(text, "never") == NULL);
    CHECK_STR_CONTAINS(text, "warn  peer 1.2.3.4: injected?line?end\n");
    CHECK_STR_CONTAINS(text, "error io: open /x: No such file or directory\n");
    CHECK(strstr(text, "after rotation") == NULL);

    f = fopen(path, "r");
    REQUIRE(f);
    n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    CHECK_STR_CONTAINS(text, "unit: after rotation\n");

    CHECK_EQ_INT(cu_log_level_parse("warn"), CU_LOG_WARN);
    CHECK_EQ_INT(cu_log_level_parse("WARN"), -1);
    CHECK_EQ_INT(cu_log_open("x", "/nonexistent/dir/log", &err), CU_ERR_IO);
    CHECK_STR_CONTAINS(err.msg, "cannot open log file /nonexistent/dir/log");
}

static void test_helpers(void)
{
    int64_t v;
    CHECK(cu_parse_int64("-12", &v) && v == -12);
    CHECK(!cu_parse_int64("", &v));
    CHECK(!cu_parse_int64("1 ", &v));
    CHECK(!cu_parse_int64("9223372036854775808", &v));
    char small[4];
    CHECK(!cu_strlcpy(small, "abcdef", sizeof(small)));
    CHECK(strcmp(small, "abc") == 0);
    CHECK(cu_strlcpy(small, "ab", sizeof(small)));
    char *s = cu_xasprintf("%s-%d", "a", 7);
    CHECK(strcmp(s, "a-7") == 0);
    free(s);
    CHECK(strcmp(cu_rc_str(CU_ERR_BUSY), "busy") == 0);
}

static void test_time_parse(void)
{
    int64_t us = 0;
    CHECK(cu_time_parse_us("1970-01-01T00:00:00Z", &us) && us == 0);
    CHECK(cu_time_parse_us("2026-12-01T10:30:30.123456Z", &us) && us == 1796121030123456LL);
    CHECK(cu_time_parse_us("2026-12-01T10:30:30.5Z", &us) && us == 1796121030500000LL);
    CHECK(cu_time_parse_us("2026-12-01T12:30:30+02:00", &us) && us == 1796121030000000LL);
    CHECK(cu_time_parse_us("2024-02-29T00:00:00Z", &us) && us == 1709164800000000LL);
    CHECK(!cu_time_parse_us("2023-02-29T00:00:00Z", &us)); /* not a leap year */
    CHECK(!cu_time_parse_us("2026-13-01T00:00:00Z", &us));
    CHECK(!cu_time_parse_us("2026-12-01T24:00:00Z", &us));
    CHECK(!cu_time_parse_us("2026-12-01T10:30:30", &us)); /* no zone */
    CHECK(!cu_time_parse_us("2026-12-01T10:30:30.Z", &us));
    CHECK(!cu_time_parse_us("2026-12-01T10:30:30Zjunk", &us));
    CHECK(!cu_time_parse_us("1969-12-31T23:59:59Z", &us));
    char text[CU_TIME_TEXT_LEN];
    CHECK(cu_time_parse_us("2026-12-01T10:30:30.123Z", &us));
    cu_time_format_ms(us / 1000, text);
    CHECK(strcmp(text, "2026-12-01T10:30:30.123Z") == 0);
}

int main(void)
{
    REQUIRE(mkdtemp(tmpdir));
    test_buf();
    test_metrics();
    test_datadir();
    test_log();
    test_helpers();
    test_time_parse();
    test_remove_tree(tmpdir);
    return test_finish("test_core");
}
