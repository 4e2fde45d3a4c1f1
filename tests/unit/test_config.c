/* Configuration: defaults, INI files, --set, every bad-input class, print round trip. */
#include "core/core.h"
#include "tests/testlib.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/custos-test-config-XXXXXX";

/* Write @p text to a fresh file in tmpdir and return its path (static). */
static const char *write_file(const char *name, const char *text, size_t len)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    REQUIRE(fwrite(text, 1, len, f) == len);
    fclose(f);
    return path;
}

static const char *ini(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

/* Load @p text as a file; expect failure whose message contains @p needle. */
static void expect_file_error(const char *text, const char *needle)
{
    cu_config cfg;
    cu_err err = {""};
    cu_config_init(&cfg);
    cu_rc rc = cu_config_load_file(&cfg, ini("bad.ini", text), &err);
    CHECK_EQ_INT(rc, CU_ERR_CONFIG);
    CHECK_STR_CONTAINS(err.msg, needle);
    cu_config_free(&cfg);
}

static void expect_set_error(const char *assignment, const char *needle)
{
    cu_config cfg;
    cu_err err = {""};
    cu_config_init(&cfg);
    CHECK_EQ_INT(cu_config_set_assignment(&cfg, assignment, &err), CU_ERR_CONFIG);
    CHECK_STR_CONTAINS(err.msg, needle);
    cu_config_free(&cfg);
}

static void test_defaults(void)
{
    cu_config cfg;
    cu_config_init(&cfg);
    CHECK(strcmp(cfg.data_dir, "./var") == 0);
    CHECK_EQ_INT(cfg.http_port, 8080);
    CHECK(strcmp(cfg.http_bind, "127.0.0.1") == 0);
    CHECK_EQ_INT(cfg.log_level, CU_LOG_INFO);
    CHECK(strcmp(cfg.db_dsn, "") == 0);
    CHECK(strcmp(cfg.db_pg_user, "custos") == 0);
    cu_config_free(&cfg);
}

static void test_good_file(void)
{
    cu_config cfg;
    cu_err err = {""};
    cu_config_init(&cfg);
    const char *path = ini("good.ini", "; a comment\n"
                                       "# another\n"
                                       "[http]\n"
                                       "port = 9090\n"
                                       "bind = ::1\n"
                                       "\n"
                                       "[log]\n"
                                       "level = debug\n"
                                       "file = \"/tmp/x y.log\"\n"
                                       "[db]\n"
                                       "dsn = \"host=/tmp port=5 password=a;b\"\n");
    CHECK_EQ_INT(cu_config_load_file(&cfg, path, &err), CU_OK);
    CHECK_EQ_INT(cfg.http_port, 9090);
    CHECK(strcmp(cfg.http_bind, "::1") == 0);
    CHECK_EQ_INT(cfg.log_level, CU_LOG_DEBUG);
    CHECK(strcmp(cfg.log_file, "/tmp/x y.log") == 0);
    CHECK(strcmp(cfg.db_dsn, "host=/tmp port=5 password=a;b") == 0);
    cu_config_free(&cfg);
}

static void test_bad_files(void)
{
    expect_file_error("[http]\nprot = 1\n",
                      "unknown setting 'http.prot' (did you mean 'http.port'?)");
    expect_file_error("[http]\n\nport = 1\n[zzz]\nqqq = 1\n",
                      "bad.ini:5: unknown setting 'zzz.qqq'");
    expect_file_error("[http]\nport = 70000\n",
                      "bad.ini:2: http.port: 70000 is out of range (allowed 1..65535)");
    expect_file_error("[http]\nport = 0\n", "out of range (allowed 1..65535)");
    expect_file_error("[http]\nport = -5\n", "out of range");
    expect_file_error("[http]\nport = 99999999999999999999\n", "is not an integer");
    expect_file_error("[http]\nport = 80a\n",
                      "http.port: '80a' is not an integer (allowed 1..65535)");
    expect_file_error("[http]\nport =\n", "is not an integer");
    expect_file_error("[http]\nbind = localhost\n",
                      "http.bind: 'localhost' is not an IPv4 or IPv6 address");
    expect_file_error("[log]\nlevel = info ; not a comment\n",
                      "log.level: 'info ; not a comment' is not one of");
    expect_file_error("[log]\nlevel = loud\n",
                      "log.level: 'loud' is not one of: error, warn, info, debug");
    expect_file_error("[data]\ndir =\n", "data.dir: must not be empty");
    expect_file_error("[db]\npg_user = a b\n", "db.pg_user: 'a b' is not a valid user name");
    expect_file_error("[http]\nport = 1\nport = 2\n",
                      "bad.ini:3: http.port is already set on line 2");
    expect_file_error("[http]\nthis line has no equals sign\n", "bad.ini:2: syntax error");
    expect_file_error("[http\nport = 1\n", "bad.ini:1: syntax error");

    char longline[5000];
    memset(longline, 'x', sizeof(longline));
    memcpy(longline, "[db]\ndsn = ", 11);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    expect_file_error(longline, "bad.ini:2: line is longer than 4096 bytes");

    /* A NUL byte, a directory, a missing file, an oversized file. */
    cu_config cfg;
    cu_err err = {""};
    cu_config_init(&cfg);
    CHECK_EQ_INT(cu_config_load_file(&cfg, write_file("nul.ini", "[a]\0x=1\n", 8), &err),
                 CU_ERR_CONFIG);
    CHECK_STR_CONTAINS(err.msg, "contains a NUL byte");
    CHECK_EQ_INT(cu_config_load_file(&cfg, tmpdir, &err), CU_ERR_CONFIG);
    CHECK_STR_CONTAINS(err.msg, "is not a regular file");
    CHECK_EQ_INT(cu_config_load_file(&cfg, "/nonexistent/custos.ini", &err), CU_ERR_CONFIG);
    CHECK_STR_CONTAINS(err.msg, "cannot read config file /nonexistent/custos.ini: No such file");
    size_t big = 1024 * 1024 + 1;
    char *huge = malloc(big);
    REQUIRE(huge);
    memset(huge, '\n', big);
    CHECK_EQ_INT(cu_config_load_file(&cfg, write_file("huge.ini", huge, big), &err), CU_ERR_CONFIG);
    CHECK_STR_CONTAINS(err.msg, "is larger than 1048576 bytes");
    free(huge);
    /* Settings parsed before an error are not half-applied silently:
     * the caller refuses to start, so only the error matters. */
    cu_config_free(&cfg);
}

static void test_set(void)
{
    cu_config cfg;
    cu_err err = {""};
    cu_config_init(&cfg);
    CHECK_EQ_INT(cu_config_set_assignment(&cfg, "http.port=1234", &err), CU_OK);
    CHECK_EQ_INT(cfg.http_port, 1234);
    CHECK_EQ_INT(cu_config_set_assignment(&cfg, "db.dsn=host=x port=1", &err), CU_OK);
    CHECK(strcmp(cfg.db_dsn, "host=x port=1") == 0);
    cu_config_free(&cfg);

    expect_set_error("http.port", "is not of the form KEY=VALUE");
    expect_set_error("=5", "is not of the form KEY=VALUE");
    expect_set_error("http.portt=5", "did you mean 'http.port'");
    expect_set_error("nothing.like.it=5", "unknown setting 'nothing.like.it'");
    expect_set_error("http.timeout_s=0", "http.timeout_s: 0 is out of range (allowed 1..3600)");
    expect_set_error("db.start_timeout_s=ten", "is not an integer");
}

static void test_precedence(void)
{
    cu_config cfg;
    cu_err err = {""};
    const char *path =
        ini("prec.ini", "[http]\nport = 1111\n[data]\ndir = /from/file\n[log]\nlevel = warn\n");
    char *sets[] = {"http.port=2222", "log.level=error"};
    CHECK_EQ_INT(cu_config_load(&cfg, path, "/from/flag", sets, 2, &err), CU_OK);
    CHECK_EQ_INT(cfg.http_port, 2222);
    CHECK(strcmp(cfg.data_dir, "/from/flag") == 0);
    CHECK_EQ_INT(cfg.log_level, CU_LOG_ERROR);
    cu_config_free(&cfg);

    char *bad[] = {"http.port=70000"};
    CHECK_EQ_INT(cu_config_load(&cfg, NULL, NULL, bad, 1, &err), CU_ERR_CONFIG);
    CHECK_STR_CONTAINS(err.msg, "--set http.port=70000: http.port: 70000 is out of range");
    cu_config_free(&cfg);
}

/* --print-config output is a config file that reads back to the same values. */
static void test_print_round_trip(void)
{
    cu_config a, b;
    cu_err err = {""};
    char *sets[] = {"http.port=4321", "log.file=/tmp/with ; semicolon", "db.pg_bindir= lead",
                    "db.dsn=host=/x password=secret user=u"};
    CHECK_EQ_INT(cu_config_load(&a, NULL, "/data dir", sets, 4, &err), CU_OK);
    char path[512];
    snprintf(path, sizeof(path), "%s/printed.ini", tmpdir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    cu_config_print(&a, f);
    fclose(f);

    f = fopen(path, "r");
    REQUIRE(f);
    char text[16384];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    CHECK_STR_CONTAINS(text, "[http]\n");
    CHECK_STR_CONTAINS(text, "port = 4321\n");
    CHECK_STR_CONTAINS(text, "; default 8080, allowed 1..65535\n");
    CHECK_STR_CONTAINS(text, "password=********");
    CHECK(strstr(text, "secret") == NULL);

    cu_config_init(&b);
    CHECK_EQ_INT(cu_config_load_file(&b, path, &err), CU_OK);
    CHECK_EQ_INT(b.http_port, 4321);
    CHECK(strcmp(b.data_dir, "/data dir") == 0);
    CHECK(strcmp(b.log_file, "/tmp/with ; semicolon") == 0);
    CHECK(strcmp(b.db_pg_bindir, " lead") == 0);
    CHECK(strcmp(b.db_dsn, "host=/x password=******** user=u") == 0);
    cu_config_free(&a);
    cu_config_free(&b);

    /* URI form */
    char *uri[] = {"db.dsn=postgresql://me:topsecret@db.example/custos"};
    CHECK_EQ_INT(cu_config_load(&a, NULL, NULL, uri, 1, &err), CU_OK);
    f = fopen(path, "w");
    REQUIRE(f);
    cu_config_print(&a, f);
    fclose(f);
    f = fopen(path, "r");
    REQUIRE(f);
    n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    CHECK_STR_CONTAINS(text, "postgresql://me:********@db.example/custos");
    CHECK(strstr(text, "topsecret") == NULL);
    cu_config_free(&a);
}

int main(void)
{
    REQUIRE(mkdtemp(tmpdir));
    test_defaults();
    test_good_file();
    test_bad_files();
    test_set();
    test_precedence();
    test_print_round_trip();
    test_remove_tree(tmpdir);
    return test_finish("test_config");
}
